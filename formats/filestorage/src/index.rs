//! The oid -> position index, its sidecar file, and ZODB's `.index` file.
//!
//! The index maps every oid to its newest data record (also when that record
//! says "no data"). It is built by one forward scan; to avoid rescanning a
//! large file at every open, it is saved next to the data file as
//! `<file>.neoindex` (our format, below) and extended by scanning only what
//! was appended since. ZODB's own `<file>.index` (a stream of pickles, spec
//! §9.2) is written when we finish writing a file so that ZODB reopens it
//! without a scan either.
//!
//! Sidecar layout, all integers big-endian:
//! `NEOFSIX1` | file magic (4) | end pos u64 | last tid u64 | last txn pos u64
//! | count u64 | count x (oid u64, pos u64), oids ascending | FNV-1a 64 of
//! everything before.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::Magic;
use crate::tid::{Oid, Tid};

/// A hasher for u64 keys: oids are dense and sequential, a multiply-shift
/// spreads them well and costs one instruction.
#[derive(Default, Clone, Copy)]
pub struct OidHasher(u64);

impl Hasher for OidHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.0 = (value ^ (value >> 32))
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29);
    }
}

pub type OidMap<V> = HashMap<u64, V, BuildHasherDefault<OidHasher>>;

#[derive(Clone, Default, Debug)]
pub struct Index {
    map: OidMap<u64>,
    max_oid: Option<u64>,
}

impl Index {
    pub fn new() -> Index {
        Index::default()
    }

    pub fn get(&self, oid: Oid) -> Option<u64> {
        self.map.get(&oid.0).copied()
    }

    pub fn insert(&mut self, oid: Oid, pos: u64) {
        self.map.insert(oid.0, pos);
        if self.max_oid.is_none_or(|max| oid.0 > max) {
            self.max_oid = Some(oid.0);
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn max_oid(&self) -> Option<Oid> {
        self.max_oid.map(Oid)
    }

    pub fn reserve(&mut self, extra: usize) {
        self.map.reserve(extra);
    }

    /// Entries in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (Oid, u64)> + '_ {
        self.map.iter().map(|(&oid, &pos)| (Oid(oid), pos))
    }

    /// Entries sorted by oid.
    pub fn sorted(&self) -> Vec<(u64, u64)> {
        let mut entries: Vec<(u64, u64)> = self.map.iter().map(|(&o, &p)| (o, p)).collect();
        entries.sort_unstable();
        entries
    }
}

/// What a sidecar says about the file it was written for.
pub struct Sidecar {
    pub magic: Magic,
    pub end: u64,
    pub last_tid: Tid,
    pub last_txn_pos: u64,
    pub index: Index,
}

const SIDECAR_MAGIC: &[u8; 8] = b"NEOFSIX1";

pub fn sidecar_path(data_path: &Path) -> PathBuf {
    let mut name = data_path.as_os_str().to_owned();
    name.push(".neoindex");
    PathBuf::from(name)
}

pub fn zodb_index_path(data_path: &Path) -> PathBuf {
    let mut name = data_path.as_os_str().to_owned();
    name.push(".index");
    PathBuf::from(name)
}

/// Writes the sidecar atomically (temporary file, then rename).
pub fn write_sidecar(data_path: &Path, sidecar: &Sidecar) -> Result<()> {
    let path = sidecar_path(data_path);
    let entries = sidecar.index.sorted();
    let mut out = Vec::with_capacity(48 + entries.len() * 16 + 8);
    out.extend_from_slice(SIDECAR_MAGIC);
    out.extend_from_slice(&sidecar.magic.bytes());
    out.extend_from_slice(&sidecar.end.to_be_bytes());
    out.extend_from_slice(&sidecar.last_tid.0.to_be_bytes());
    out.extend_from_slice(&sidecar.last_txn_pos.to_be_bytes());
    out.extend_from_slice(&(entries.len() as u64).to_be_bytes());
    for (oid, pos) in &entries {
        out.extend_from_slice(&oid.to_be_bytes());
        out.extend_from_slice(&pos.to_be_bytes());
    }
    let checksum = fnv1a(&out);
    out.extend_from_slice(&checksum.to_be_bytes());
    write_atomically(&path, &out)
}

/// Reads a sidecar; `Ok(None)` when it is absent, damaged or of another
/// version (the caller then scans).
pub fn read_sidecar(data_path: &Path) -> Result<Option<Sidecar>> {
    let path = sidecar_path(data_path);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&path, "read", e)),
    };
    Ok(parse_sidecar(&bytes))
}

fn parse_sidecar(bytes: &[u8]) -> Option<Sidecar> {
    const FIXED: usize = 8 + 4 + 8 * 4;
    if bytes.len() < FIXED + 8 || &bytes[..8] != SIDECAR_MAGIC {
        return None;
    }
    let (body, tail) = bytes.split_at(bytes.len() - 8);
    if fnv1a(body) != u64::from_be_bytes(tail.try_into().ok()?) {
        return None;
    }
    let magic = Magic::from_bytes(&body[8..12])?;
    let num = |at: usize| u64::from_be_bytes(body[at..at + 8].try_into().expect("in bounds"));
    let end = num(12);
    let last_tid = Tid(num(20));
    let last_txn_pos = num(28);
    let count = usize::try_from(num(36)).ok()?;
    if body.len() != FIXED.checked_add(count.checked_mul(16)?)? {
        return None;
    }
    let mut index = Index::new();
    index.reserve(count);
    for entry in body[FIXED..].chunks_exact(16) {
        let oid = u64::from_be_bytes(entry[..8].try_into().expect("chunk"));
        let pos = u64::from_be_bytes(entry[8..].try_into().expect("chunk"));
        index.insert(Oid(oid), pos);
    }
    Some(Sidecar {
        magic,
        end,
        last_tid,
        last_txn_pos,
        index,
    })
}

/// Writes ZODB's `.index` (spec §9.2): pickles of the end position, of each
/// (6-byte prefix, suffixes + 6-byte positions) bucket, then None. `FS30`
/// files get protocol 3 with bytes, `FS21` files protocol 2 with str, the
/// flavour each ZODB reads back. Returns false (and removes any old index)
/// when a position does not fit in 6 bytes.
pub fn write_zodb_index(data_path: &Path, magic: Magic, index: &Index, end: u64) -> Result<bool> {
    let path = zodb_index_path(data_path);
    if end >= 1 << 48 {
        remove_if_present(&path)?;
        return Ok(false);
    }
    let protocol = match magic {
        Magic::Fs30 => 3u8,
        Magic::Fs21 => 2u8,
    };
    let mut out = Vec::new();
    out.extend_from_slice(&[0x80, protocol]);
    pickle_int(&mut out, end);
    out.push(b'.');
    let entries = index.sorted();
    let mut start = 0;
    while start < entries.len() {
        let prefix = entries[start].0 >> 16;
        let mut stop = start;
        while stop < entries.len() && entries[stop].0 >> 16 == prefix {
            stop += 1;
        }
        let bucket = &entries[start..stop];
        let mut bucket_bytes = Vec::with_capacity(bucket.len() * 8);
        for (oid, _) in bucket {
            bucket_bytes.extend_from_slice(&(*oid as u16).to_be_bytes());
        }
        for (_, pos) in bucket {
            bucket_bytes.extend_from_slice(&pos.to_be_bytes()[2..]);
        }
        out.extend_from_slice(&[0x80, protocol]);
        pickle_bytes(&mut out, magic, &prefix.to_be_bytes()[2..]);
        pickle_bytes(&mut out, magic, &bucket_bytes);
        out.extend_from_slice(&[0x86, b'.']);
        start = stop;
    }
    out.extend_from_slice(&[0x80, protocol, b'N', b'.']);
    write_atomically(&path, &out)?;
    Ok(true)
}

pub fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, "remove", e)),
    }
}

fn pickle_int(out: &mut Vec<u8>, value: u64) {
    if value < 256 {
        out.extend_from_slice(&[b'K', value as u8]);
    } else if value < 65536 {
        out.push(b'M');
        out.extend_from_slice(&(value as u16).to_le_bytes());
    } else if value < (1 << 31) {
        out.push(b'J');
        out.extend_from_slice(&(value as u32).to_le_bytes());
    } else {
        // LONG1: little-endian two's complement, as short as possible while
        // keeping the sign bit clear.
        let mut digits = value.to_le_bytes().to_vec();
        while digits.len() > 1
            && digits[digits.len() - 1] == 0
            && digits[digits.len() - 2] & 0x80 == 0
        {
            digits.pop();
        }
        if digits[digits.len() - 1] & 0x80 != 0 {
            digits.push(0);
        }
        out.extend_from_slice(&[0x8a, digits.len() as u8]);
        out.extend_from_slice(&digits);
    }
}

fn pickle_bytes(out: &mut Vec<u8>, magic: Magic, bytes: &[u8]) {
    let (short, long) = match magic {
        Magic::Fs30 => (b'C', b'B'),
        Magic::Fs21 => (b'U', b'T'),
    };
    if bytes.len() < 256 {
        out.extend_from_slice(&[short, bytes.len() as u8]);
    } else {
        out.push(long);
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(bytes);
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let mut file = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, "create", e))?;
    file.write_all(bytes)
        .map_err(|e| Error::io(&tmp, "write", e))?;
    file.sync_all().map_err(|e| Error::io(&tmp, "sync", e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, "rename", e))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for &b in bytes {
        hash = (hash ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zodb_index_matches_spec_example() {
        // filestorage.md §15.5: the index ZODB wrote for the worked example.
        let expected: &[u8] = &[
            0x80, 0x03, 0x4d, 0x58, 0x02, 0x2e, 0x80, 0x03, 0x43, 0x06, 0, 0, 0, 0, 0, 0, 0x43,
            0x10, 0, 0, 0, 1, 0, 0, 0, 0, 0x01, 0xec, 0, 0, 0, 0, 0x02, 0x1e, 0x86, 0x2e, 0x80,
            0x03, 0x4e, 0x2e,
        ];
        let dir = std::env::temp_dir().join(format!("neofs-index-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let data = dir.join("Data.fs");
        let mut index = Index::new();
        index.insert(Oid(0), 492);
        index.insert(Oid(1), 542);
        assert!(write_zodb_index(&data, Magic::Fs30, &index, 600).unwrap());
        assert_eq!(std::fs::read(zodb_index_path(&data)).unwrap(), expected);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pickle_ints() {
        let check = |value: u64, expected: &[u8]| {
            let mut out = Vec::new();
            pickle_int(&mut out, value);
            assert_eq!(out, expected, "{value}");
        };
        check(5, &[b'K', 5]);
        check(600, &[b'M', 0x58, 0x02]);
        check(1 << 20, &[b'J', 0, 0, 0x10, 0]);
        check(1 << 31, &[0x8a, 5, 0, 0, 0, 0x80, 0]);
        check(1 << 40, &[0x8a, 6, 0, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn sidecar_round_trip_and_damage() {
        let mut index = Index::new();
        for oid in 0..1000u64 {
            index.insert(Oid(oid * 3), oid * 100 + 4);
        }
        let dir = std::env::temp_dir().join(format!("neofs-sidecar-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let data = dir.join("Data.fs");
        let sidecar = Sidecar {
            magic: Magic::Fs30,
            end: 12345,
            last_tid: Tid(77),
            last_txn_pos: 999,
            index,
        };
        write_sidecar(&data, &sidecar).unwrap();
        let back = read_sidecar(&data).unwrap().unwrap();
        assert_eq!(back.end, 12345);
        assert_eq!(back.last_tid, Tid(77));
        assert_eq!(back.index.len(), 1000);
        assert_eq!(back.index.get(Oid(300)), Some(10004));
        assert_eq!(back.index.max_oid(), Some(Oid(2997)));
        let path = sidecar_path(&data);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[100] ^= 1;
        assert!(parse_sidecar(&bytes).is_none());
        assert!(parse_sidecar(&bytes[..20]).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
