//! Pack: drop the revisions that are neither current at the pack time nor
//! reachable from the root then (or from a later backpointer), as ZODB's
//! `ZODB/FileStorage/fspack.py` does, so that both keep the same records.
//!
//! The packed file is written to `<file>.pack`, then the original becomes
//! `<file>.old` and the packed file takes its name. Transactions up to the
//! pack time keep only surviving records, with data inlined, `prev = 0` and
//! status `'p'`; later transactions are copied whole, their backpointers
//! re-targeted as `restore` would.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::{status, DataHeader, TxnHeader};
use crate::index::{self, Index, OidMap, Sidecar};
use crate::pickle;
use crate::scan::{Scanner, Strictness};
use crate::storage::{find_matching_record, FileStorage, Options, Pick};
use crate::tid::{Oid, Tid};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PackReport {
    pub size_before: u64,
    pub size_after: u64,
    pub records_before: u64,
    pub records_after: u64,
    pub old_path: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PackOutcome {
    Packed(PackReport),
    /// Nothing could be freed; the file is untouched.
    NothingToPack,
    /// Already packed to a later time, and nothing committed since.
    Redundant,
}

/// Packs the storage at `pack_tid` (inclusive) and returns it reopened on
/// the packed file. `gc` = false keeps every object current at the pack
/// time (ZODB's `pack_gc = false`). `keep_old` keeps `<file>.old`.
pub fn pack(
    storage: FileStorage,
    pack_tid: Tid,
    gc: bool,
    keep_old: bool,
) -> Result<(FileStorage, PackOutcome)> {
    if storage.is_read_only() {
        return Err(Error::ReadOnly {
            path: storage.path().to_path_buf(),
        });
    }
    if pack_tid == Tid::ZERO {
        return Err(Error::Pack("invalid pack time".into()));
    }
    if storage.is_empty() {
        return Ok((storage, PackOutcome::NothingToPack));
    }
    let path = storage.path().to_path_buf();
    let old_path = with_suffix(&path, ".old");
    index::remove_if_present(&old_path)?;
    let mut gc_state = Gc::new(&storage, pack_tid);
    if gc_state.build_pack_index()? {
        return Ok((storage, PackOutcome::Redundant));
    }
    if gc {
        gc_state.find_reachable_at_pack_time(vec![Oid::ROOT.0])?;
        gc_state.find_reachable_from_future()?;
    } else {
        gc_state.reachable = std::mem::take(&mut gc_state.current);
    }
    let pack_path = with_suffix(&path, ".pack");
    let result = write_packed(&storage, &gc_state, &pack_path);
    let (new_end, new_index, last_tid, last_txn_pos, report) = match result {
        Ok(Some(done)) => done,
        Ok(None) => {
            index::remove_if_present(&pack_path)?;
            return Ok((storage, PackOutcome::NothingToPack));
        }
        Err(e) => {
            let _ = std::fs::remove_file(&pack_path);
            return Err(e);
        }
    };
    let magic = storage.magic();
    let size_before = storage.end();
    let records_before = gc_state.records_seen;
    drop(gc_state);
    drop(storage);
    std::fs::rename(&path, &old_path).map_err(|e| Error::io(&path, "rename to .old", e))?;
    std::fs::rename(&pack_path, &path)
        .map_err(|e| Error::io(&pack_path, "rename over the data file", e))?;
    // The new file's index is known: save it so the reopen below (and ZODB)
    // need no scan.
    index::remove_if_present(&index::zodb_index_path(&path))?;
    let sidecar = Sidecar {
        magic,
        end: new_end,
        last_tid,
        last_txn_pos,
        index: new_index.clone(),
    };
    index::write_sidecar(&path, &sidecar)?;
    index::write_zodb_index(&path, magic, &new_index, new_end)?;
    let reopened = FileStorage::open(
        &path,
        Options {
            read_only: false,
            create: false,
            ..Options::writable()
        },
    )?;
    let kept_old = if keep_old {
        Some(old_path)
    } else {
        index::remove_if_present(&old_path)?;
        None
    };
    Ok((
        reopened,
        PackOutcome::Packed(PackReport {
            size_before,
            size_after: new_end,
            records_before,
            records_after: report,
            old_path: kept_old,
        }),
    ))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

struct Gc<'s> {
    storage: &'s FileStorage,
    pack_tid: Tid,
    /// Position just after the last transaction at or before the pack time.
    pack_pos: u64,
    /// oid -> its record current at the pack time.
    current: OidMap<u64>,
    /// oid -> the reachable revision at the pack time.
    reachable: OidMap<u64>,
    /// Older revisions kept alive by backpointers after the pack time.
    reachable_extra: OidMap<Vec<u64>>,
    records_seen: u64,
}

impl<'s> Gc<'s> {
    fn new(storage: &'s FileStorage, pack_tid: Tid) -> Gc<'s> {
        Gc {
            storage,
            pack_tid,
            pack_pos: 4,
            current: OidMap::default(),
            reachable: OidMap::default(),
            reachable_extra: OidMap::default(),
            records_seen: 0,
        }
    }

    fn scanner(&self, from: u64) -> Result<Scanner> {
        let file = self
            .storage
            .file()
            .try_clone()
            .map_err(|e| Error::io(self.storage.path(), "dup", e))?;
        Scanner::with_file(
            self.storage.path(),
            file,
            from,
            self.storage.end(),
            Strictness::Strict,
        )
    }

    /// Finds the current record of each oid at the pack time. Returns true
    /// when the pack would be redundant.
    fn build_pack_index(&mut self) -> Result<bool> {
        let mut scanner = self.scanner(4)?;
        let mut unpacked = false;
        let mut last_status = None;
        let mut pos = 4;
        while let Some(txn) = scanner.next_txn()? {
            if txn.tid() > self.pack_tid {
                last_status = Some(txn.status());
                break;
            }
            check_pointers(self.storage.path(), &txn)?;
            if txn.status() != status::PACKED {
                unpacked = true;
            }
            last_status = Some(txn.status());
            for record in txn.records() {
                self.records_seen += 1;
                if record.data.is_some() || record.back != 0 {
                    self.current.insert(record.header.oid.0, record.pos);
                } else {
                    self.current.remove(&record.header.oid.0);
                }
            }
            pos = txn.end_pos();
        }
        self.pack_pos = pos;
        // Everything before the pack time is packed already, and the first
        // later transaction (or the last one, at the end) is packed too.
        Ok(!unpacked && last_status == Some(status::PACKED))
    }

    fn find_reachable_at_pack_time(&mut self, roots: Vec<u64>) -> Result<()> {
        let mut todo = roots;
        while let Some(oid) = todo.pop() {
            if self.reachable.contains_key(&oid) {
                continue;
            }
            let Some(&pos) = self.current.get(&oid) else {
                if oid == Oid::ROOT.0 && self.current.is_empty() {
                    continue;
                }
                return Err(Error::Pack(format!(
                    "oid {} is referenced but does not exist at the pack time (dangling reference)",
                    Oid(oid)
                )));
            };
            self.reachable.insert(oid, pos);
            for target in self.references_at(pos)? {
                if !self.reachable.contains_key(&target) {
                    todo.push(target);
                }
            }
        }
        Ok(())
    }

    fn find_reachable_from_future(&mut self) -> Result<()> {
        let mut extra_roots = Vec::new();
        let mut scanner = self.scanner(self.pack_pos)?;
        scanner.set_last_tid(self.pack_tid);
        while let Some(txn) = scanner.next_txn()? {
            check_pointers(self.storage.path(), &txn)?;
            for record in txn.records() {
                self.records_seen += 1;
                if record.data.is_none() && record.back != 0 && record.back < self.pack_pos {
                    let oid = record.header.oid.0;
                    match self.reachable.entry(oid) {
                        Entry::Occupied(_) => {
                            let extra = self.reachable_extra.entry(oid).or_default();
                            if !extra.contains(&record.back) {
                                extra.push(record.back);
                                extra_roots.push(record.back);
                            }
                        }
                        Entry::Vacant(entry) => {
                            entry.insert(record.back);
                        }
                    }
                }
            }
        }
        for pos in extra_roots {
            let refs = self.references_at(pos)?;
            self.find_reachable_at_pack_time(refs)?;
        }
        Ok(())
    }

    fn references_at(&self, pos: u64) -> Result<Vec<u64>> {
        let (data, _) = self.storage.data_at(pos)?;
        let Some(data) = data else {
            return Ok(Vec::new());
        };
        let (header, _) = self.storage.read_data_header(pos)?;
        let refs = pickle::references(&data).map_err(|e| Error::Pickle {
            oid: header.oid,
            what: e.0,
        })?;
        Ok(refs
            .into_iter()
            .filter_map(|r| {
                <[u8; 8]>::try_from(r.oid.as_slice())
                    .ok()
                    .map(u64::from_be_bytes)
            })
            .collect())
    }

    fn is_reachable(&self, oid: Oid, pos: u64) -> bool {
        match self.reachable.get(&oid.0) {
            None => false,
            Some(&rpos) if rpos == pos => true,
            Some(_) => self
                .reachable_extra
                .get(&oid.0)
                .is_some_and(|extra| extra.contains(&pos)),
        }
    }
}

/// Pack's own checks, stricter than the scan's: pointers go backwards and a
/// record has either data or a backpointer.
fn check_pointers(path: &Path, txn: &crate::scan::TxnView<'_>) -> Result<()> {
    for record in txn.records() {
        if record.header.prev >= record.pos {
            return Err(Error::corrupt(
                path,
                record.pos,
                format!("invalid previous pointer: {}", record.header.prev),
            ));
        }
        if record.data.is_none() && record.back >= record.pos {
            return Err(Error::corrupt(
                path,
                record.pos,
                format!("invalid back pointer: {}", record.back),
            ));
        }
    }
    Ok(())
}

type Written = (u64, Index, Tid, u64, u64);

/// Writes the packed file; `None` when the part before the pack time came
/// out the same size (nothing freed), as ZODB then abandons the pack.
fn write_packed(storage: &FileStorage, gc: &Gc<'_>, pack_path: &Path) -> Result<Option<Written>> {
    let out = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(pack_path)
        .map_err(|e| Error::io(pack_path, "create", e))?;
    let mut writer = PackWriter {
        path: pack_path,
        file: out,
        pos: 0,
        index: Index::new(),
        txns: HashMap::new(),
    };
    writer.append(&storage.magic().bytes())?;
    let mut last_tid = Tid::ZERO;
    let mut last_txn_pos = 0;
    let mut kept = 0u64;

    // Before the pack time: surviving records only, data inlined.
    let mut scanner = gc.scanner(4)?;
    while scanner.pos() < gc.pack_pos {
        let Some(txn) = scanner.next_txn()? else {
            break;
        };
        let mut bytes = Vec::new();
        let txn_pos = writer.pos;
        for record in txn.records() {
            if !gc.is_reachable(record.header.oid, record.pos) {
                continue;
            }
            if bytes.is_empty() {
                bytes.extend_from_slice(&[0u8; 23]);
                bytes.extend_from_slice(txn.user());
                bytes.extend_from_slice(txn.description());
                bytes.extend_from_slice(txn.extension());
            }
            let data = match record.data {
                Some(data) => Some(data.to_vec()),
                None if record.back == 0 => None,
                None => storage.data_at(record.back)?.0,
            };
            let data = data.unwrap_or_default();
            writer
                .index
                .insert(record.header.oid, txn_pos + bytes.len() as u64);
            let header = DataHeader {
                oid: record.header.oid,
                tid: record.header.tid,
                prev: 0,
                tloc: txn_pos,
                vlen: 0,
                plen: data.len() as u64,
            };
            bytes.extend_from_slice(&header.encode());
            bytes.extend_from_slice(&data);
            if data.is_empty() {
                bytes.extend_from_slice(&[0u8; 8]);
            }
            kept += 1;
        }
        if bytes.is_empty() {
            continue;
        }
        let tlen = bytes.len() as u64;
        let header = TxnHeader {
            tlen,
            status: status::PACKED,
            ..txn.header
        };
        bytes[..23].copy_from_slice(&header.encode());
        bytes.extend_from_slice(&tlen.to_be_bytes());
        writer.txns.insert(txn.tid().0, txn_pos);
        writer.append(&bytes)?;
        last_tid = txn.tid();
        last_txn_pos = txn_pos;
    }
    if writer.pos == gc.pack_pos {
        return Ok(None);
    }

    // After the pack time: every transaction, records re-emitted as restore
    // does, so backpointers are kept where their target survived.
    let mut scanner = gc.scanner(gc.pack_pos)?;
    while let Some(txn) = scanner.next_txn()? {
        let txn_pos = writer.pos;
        let mut bytes = Vec::with_capacity(txn.raw().len());
        bytes.extend_from_slice(&[0u8; 23]);
        bytes.extend_from_slice(txn.user());
        bytes.extend_from_slice(txn.description());
        bytes.extend_from_slice(txn.extension());
        let mut tindex = Vec::new();
        for record in txn.records() {
            let oid = record.header.oid;
            let (data, data_txn) = match record.data {
                Some(data) => (Some(data.to_vec()), None),
                None if record.back == 0 => (None, None),
                None => (
                    storage.data_at(record.back)?.0,
                    Some(storage.read_data_header(record.back)?.0.tid),
                ),
            };
            let back = match data_txn {
                Some(tid) => writer.find_data(tid, oid, data.as_deref())?,
                None => 0,
            };
            let here = txn_pos + bytes.len() as u64;
            let prev = writer.index.get(oid).unwrap_or(0);
            tindex.push((oid, here));
            let inline = if back == 0 {
                data.filter(|d| !d.is_empty())
            } else {
                None
            };
            let plen = inline.as_ref().map_or(0, |d| d.len() as u64);
            let header = DataHeader {
                oid,
                tid: record.header.tid,
                prev,
                tloc: txn_pos,
                vlen: 0,
                plen,
            };
            bytes.extend_from_slice(&header.encode());
            match inline {
                Some(data) => bytes.extend_from_slice(&data),
                None => bytes.extend_from_slice(&back.to_be_bytes()),
            }
            kept += 1;
        }
        let tlen = bytes.len() as u64;
        let header = TxnHeader { tlen, ..txn.header };
        bytes[..23].copy_from_slice(&header.encode());
        bytes.extend_from_slice(&tlen.to_be_bytes());
        writer.txns.insert(txn.tid().0, txn_pos);
        writer.append(&bytes)?;
        for (oid, pos) in tindex {
            writer.index.insert(oid, pos);
        }
        last_tid = txn.tid();
        last_txn_pos = txn_pos;
    }
    writer
        .file
        .sync_all()
        .map_err(|e| Error::io(pack_path, "sync", e))?;
    Ok(Some((
        writer.pos,
        writer.index,
        last_tid,
        last_txn_pos,
        kept,
    )))
}

struct PackWriter<'p> {
    path: &'p Path,
    file: File,
    pos: u64,
    index: Index,
    /// tid -> position of that transaction in the packed file.
    txns: HashMap<u64, u64>,
}

impl PackWriter<'_> {
    fn append(&mut self, bytes: &[u8]) -> Result<()> {
        self.file
            .write_all_at(bytes, self.pos)
            .map_err(|e| Error::io(self.path, "write", e))?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    /// The packer's `_data_find`: the first record of `oid` in transaction
    /// `tid` of the packed file, if it is a backpointer or holds `data`.
    fn find_data(&self, tid: Tid, oid: Oid, data: Option<&[u8]>) -> Result<u64> {
        let Some(&txn_pos) = self.txns.get(&tid.0) else {
            return Ok(0);
        };
        find_matching_record(
            |buf, pos| self.read(buf, pos),
            txn_pos,
            oid,
            data,
            Pick::First,
        )
    }

    fn read(&self, buf: &mut [u8], pos: u64) -> Result<()> {
        self.file
            .read_exact_at(buf, pos)
            .map_err(|e| Error::io(self.path, "read back", e))
    }
}
