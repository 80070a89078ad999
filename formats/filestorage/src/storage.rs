//! A FileStorage opened for reading or for appending: the index, loads,
//! history, iteration, and the two-phase append of transactions.
//!
//! Reads use positioned reads (`pread`) so that several readers can share
//! one open file. Writes append one transaction at a time with ZODB's
//! discipline: the record goes to disk with status `'c'`, is synced, then
//! its status byte is flipped and synced again, so a crash leaves either
//! the whole transaction or a tail that the next writable open truncates
//! (saving the bytes to `<file>.trN`, as ZODB does).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::{
    status, DataHeader, Magic, TxnHeader, DATA_HEADER_LEN, STATUS_OFFSET, TXN_HEADER_LEN,
};
use crate::index::{self, Index, Sidecar};
use crate::scan::{End, Scanner, Strictness, TxnView};
use crate::tid::{Oid, Tid};

/// How to open a file.
#[derive(Clone, Debug)]
pub struct Options {
    pub read_only: bool,
    /// Create the file (with `magic`) when it does not exist.
    pub create: bool,
    pub magic: Magic,
    /// Load and save the `.neoindex` sidecar.
    pub sidecar: bool,
    /// fsync after each committed transaction. Bulk copies into a new file
    /// turn this off and sync once at the end.
    pub sync: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            read_only: true,
            create: false,
            magic: Magic::Fs30,
            sidecar: true,
            sync: true,
        }
    }
}

impl Options {
    pub fn writable() -> Options {
        Options {
            read_only: false,
            create: true,
            ..Options::default()
        }
    }
}

/// What the open-time scan found and did at the end of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    pub pos: u64,
    pub len: u64,
    pub why: String,
    /// Where the removed bytes were saved (writable opens only).
    pub saved_to: Option<PathBuf>,
}

/// Transaction metadata, as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnMeta {
    pub user: Vec<u8>,
    pub description: Vec<u8>,
    /// Raw extension bytes (a pickled dict, or empty), kept verbatim.
    pub extension: Vec<u8>,
}

/// One entry of `history(oid)`, newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    pub tid: Tid,
    pub user: Vec<u8>,
    pub description: Vec<u8>,
    pub extension: Vec<u8>,
    /// Pickle length of the record (0 for a backpointer record).
    pub size: u64,
}

/// A loaded revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded {
    pub data: Vec<u8>,
    pub serial: Tid,
    /// The serial of the next revision, for `load_before` of a non-current one.
    pub next_serial: Option<Tid>,
}

pub struct FileStorage {
    path: PathBuf,
    file: File,
    magic: Magic,
    read_only: bool,
    sync: bool,
    sidecar: bool,
    index: Index,
    /// End of the last committed transaction.
    end: u64,
    last_tid: Tid,
    last_txn_pos: u64,
    torn: Option<TornTail>,
    /// Index loaded from the sidecar and extended, or built by a full scan.
    scanned_bytes: u64,
    lock: Option<File>,
    /// tid -> transaction position, built on first need (restore with a
    /// `data_txn`), then kept up to date.
    txn_positions: Option<HashMap<u64, u64>>,
    dirty: bool,
}

impl FileStorage {
    pub fn open(path: impl AsRef<Path>, options: Options) -> Result<FileStorage> {
        let path = path.as_ref().to_path_buf();
        let lock = if options.read_only {
            None
        } else {
            Some(take_lock(&path)?)
        };
        let file = if options.read_only {
            File::open(&path).map_err(|e| Error::io(&path, "open", e))?
        } else {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(options.create)
                .truncate(false)
                .open(&path)
                .map_err(|e| Error::io(&path, "open", e))?
        };
        let size = file
            .metadata()
            .map_err(|e| Error::io(&path, "stat", e))?
            .len();
        if size == 0 && !options.read_only {
            file.write_all_at(&options.magic.bytes(), 0)
                .map_err(|e| Error::io(&path, "write", e))?;
            file.sync_all().map_err(|e| Error::io(&path, "sync", e))?;
            // A new file makes any index lying around stale.
            index::remove_if_present(&index::sidecar_path(&path))?;
            index::remove_if_present(&index::zodb_index_path(&path))?;
        }
        let magic = read_magic(&path, &file)?;
        let mut storage = FileStorage {
            path,
            file,
            magic,
            read_only: options.read_only,
            sync: options.sync,
            sidecar: options.sidecar,
            index: Index::new(),
            end: 4,
            last_tid: Tid::ZERO,
            last_txn_pos: 0,
            torn: None,
            scanned_bytes: 0,
            lock,
            txn_positions: None,
            dirty: false,
        };
        storage.build_index()?;
        Ok(storage)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn magic(&self) -> Magic {
        self.magic
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    /// End of the last committed transaction (ZODB's `getSize()`).
    pub fn end(&self) -> u64 {
        self.end
    }

    pub fn last_transaction(&self) -> Tid {
        self.last_tid
    }

    pub fn max_oid(&self) -> Option<Oid> {
        self.index.max_oid()
    }

    /// Number of objects, counting deleted ones not yet packed away.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The torn or unfinished tail found at open, if any.
    pub fn torn_tail(&self) -> Option<&TornTail> {
        self.torn.as_ref()
    }

    /// Bytes read by the open-time scan (0 when the sidecar covered all).
    pub fn scanned_bytes(&self) -> u64 {
        self.scanned_bytes
    }

    /// Data file handle for positioned reads by other modules.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    fn build_index(&mut self) -> Result<()> {
        let mut start = 4;
        if self.sidecar {
            if let Some(sidecar) = index::read_sidecar(&self.path)? {
                if self.sidecar_is_valid(&sidecar) {
                    start = sidecar.end;
                    self.index = sidecar.index;
                    self.last_tid = sidecar.last_tid;
                    self.last_txn_pos = sidecar.last_txn_pos;
                    self.end = sidecar.end;
                }
            }
        }
        let file = self
            .file
            .try_clone()
            .map_err(|e| Error::io(&self.path, "dup", e))?;
        let size = file
            .metadata()
            .map_err(|e| Error::io(&self.path, "stat", e))?
            .len();
        let mut scanner = Scanner::with_file(&self.path, file, start, size, Strictness::Open)?;
        scanner.set_last_tid(self.last_tid);
        while let Some(txn) = scanner.next_txn()? {
            for record in txn.records() {
                self.index.insert(record.header.oid, record.pos);
            }
            self.last_tid = txn.tid();
            self.last_txn_pos = txn.pos;
        }
        let end = scanner.end().cloned().expect("scan ended");
        self.end = end.pos();
        self.scanned_bytes = self.end - start;
        if let End::Torn { pos, why } = end {
            let len = size - pos;
            let saved_to = if self.read_only {
                None
            } else {
                Some(self.cut_tail(pos, size)?)
            };
            self.torn = Some(TornTail {
                pos,
                len,
                why,
                saved_to,
            });
        }
        // Saving pays off only when a scan of some size was done.
        if self.sidecar && self.scanned_bytes >= SIDECAR_MIN_SCAN {
            self.save_sidecar_quietly();
        }
        Ok(())
    }

    /// The sidecar describes this file if the transaction it names as last
    /// is where it says, ends where it says, and holds records the index
    /// points to (ZODB samples its `.index` the same way).
    fn sidecar_is_valid(&self, sidecar: &Sidecar) -> bool {
        if sidecar.magic != self.magic || sidecar.end < 4 {
            return false;
        }
        if sidecar.end == 4 {
            return sidecar.index.is_empty();
        }
        let Ok(header) = self.read_txn_header(sidecar.last_txn_pos) else {
            return false;
        };
        if header.tid != sidecar.last_tid
            || sidecar
                .last_txn_pos
                .checked_add(header.tlen)
                .and_then(|v| v.checked_add(8))
                != Some(sidecar.end)
            || header.status == status::CHECKPOINT
        {
            return false;
        }
        let Ok(trailing) = self.read_u64(sidecar.end - 8) else {
            return false;
        };
        if trailing != header.tlen {
            return false;
        }
        let mut pos = sidecar.last_txn_pos + header.header_len();
        let txn_end = sidecar.last_txn_pos.saturating_add(header.tlen);
        let mut checked = 0;
        while pos < txn_end && checked < 5 && header.status != status::UNDONE {
            let Ok((record, _)) = self.read_data_header(pos) else {
                return false;
            };
            if record.tloc != sidecar.last_txn_pos
                || sidecar.index.get(record.oid).is_none_or(|p| p < pos)
            {
                return false;
            }
            pos = pos.saturating_add(record.record_len());
            checked += 1;
        }
        true
    }

    fn save_sidecar_quietly(&self) {
        let sidecar = Sidecar {
            magic: self.magic,
            end: self.end,
            last_tid: self.last_tid,
            last_txn_pos: self.last_txn_pos,
            index: self.index.clone(),
        };
        // A sidecar is a cache: failing to write one (read-only directory)
        // only costs a scan next time.
        let _ = index::write_sidecar(&self.path, &sidecar);
    }

    /// Moves the bytes from `pos` to `size` into the first free `<file>.trN`
    /// and truncates the data file at `pos`.
    fn cut_tail(&mut self, pos: u64, size: u64) -> Result<PathBuf> {
        let mut n = 0;
        let saved = loop {
            let mut name = self.path.as_os_str().to_owned();
            name.push(format!(".tr{n}"));
            let candidate = PathBuf::from(name);
            if !candidate.exists() {
                break candidate;
            }
            n += 1;
        };
        let mut tail = vec![0u8; (size - pos) as usize];
        self.file
            .read_exact_at(&mut tail, pos)
            .map_err(|e| Error::io(&self.path, "read", e))?;
        std::fs::write(&saved, &tail).map_err(|e| Error::io(&saved, "write", e))?;
        self.file
            .set_len(pos)
            .map_err(|e| Error::io(&self.path, "truncate", e))?;
        self.file
            .sync_all()
            .map_err(|e| Error::io(&self.path, "sync", e))?;
        Ok(saved)
    }

    pub(crate) fn read_txn_header(&self, pos: u64) -> Result<TxnHeader> {
        let mut raw = [0u8; 23];
        self.read_exact_at(&mut raw, pos)?;
        Ok(TxnHeader::parse(&raw))
    }

    /// Data record header at `pos`, and its backpointer when `plen == 0`.
    pub(crate) fn read_data_header(&self, pos: u64) -> Result<(DataHeader, u64)> {
        let mut raw = [0u8; 50];
        let got = self.read_at_most(&mut raw, pos)?;
        if got < 42 {
            return Err(Error::corrupt(
                &self.path,
                pos,
                "data record header runs past the end of the file",
            ));
        }
        let header = DataHeader::parse(raw[..42].try_into().expect("42 bytes"));
        if header.vlen != 0 {
            return Err(Error::Version {
                path: self.path.clone(),
                offset: pos,
                vlen: header.vlen,
            });
        }
        let back = if header.plen == 0 {
            if got < 50 {
                return Err(Error::corrupt(
                    &self.path,
                    pos + 42,
                    "backpointer runs past the end of the file",
                ));
            }
            u64::from_be_bytes(raw[42..50].try_into().expect("8 bytes"))
        } else {
            0
        };
        Ok((header, back))
    }

    fn read_u64(&self, pos: u64) -> Result<u64> {
        let mut raw = [0u8; 8];
        self.read_exact_at(&mut raw, pos)?;
        Ok(u64::from_be_bytes(raw))
    }

    pub(crate) fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> Result<()> {
        let got = self.read_at_most(buf, pos)?;
        if got < buf.len() {
            return Err(Error::corrupt(
                &self.path,
                pos,
                format!("expected {} bytes, the file ends after {got}", buf.len()),
            ));
        }
        Ok(())
    }

    fn read_at_most(&self, buf: &mut [u8], pos: u64) -> Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], pos + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io(&self.path, "read", e)),
            }
        }
        Ok(done)
    }

    /// Data of the record at `pos`, following backpointers; `None` when the
    /// revision has no data. Also returns the tid of the record at `pos`.
    pub fn data_at(&self, pos: u64) -> Result<(Option<Vec<u8>>, Tid)> {
        let (header, back) = self.read_data_header(pos)?;
        Ok((self.data_of(pos, &header, back)?, header.tid))
    }

    fn data_of(&self, pos: u64, header: &DataHeader, back: u64) -> Result<Option<Vec<u8>>> {
        let (mut header, mut back, mut at) = (*header, back, pos);
        loop {
            if header.plen > 0 {
                let len = usize::try_from(header.plen).map_err(|_| {
                    Error::corrupt(&self.path, at, "pickle length does not fit in memory")
                })?;
                let end = at
                    .saturating_add(DATA_HEADER_LEN)
                    .saturating_add(header.plen);
                if end > self.file_len()? {
                    return Err(Error::corrupt(
                        &self.path,
                        at,
                        "pickle runs past the end of the file",
                    ));
                }
                let mut data = vec![0u8; len];
                self.read_exact_at(&mut data, at + DATA_HEADER_LEN)?;
                return Ok(Some(data));
            }
            if back == 0 {
                return Ok(None);
            }
            if back >= at {
                return Err(Error::corrupt(
                    &self.path,
                    at,
                    format!("backpointer {back} does not point backwards"),
                ));
            }
            let oid = header.oid;
            at = back;
            (header, back) = self.read_data_header(at)?;
            if header.oid != oid {
                return Err(Error::corrupt(
                    &self.path,
                    at,
                    format!(
                        "backpointer from oid {oid} reaches a record of oid {}",
                        header.oid
                    ),
                ));
            }
        }
    }

    fn file_len(&self) -> Result<u64> {
        Ok(self
            .file
            .metadata()
            .map_err(|e| Error::io(&self.path, "stat", e))?
            .len())
    }

    /// Tid of the record a backpointer points to directly (the iterator's
    /// `data_txn`, one hop, as ZODB reports it).
    pub(crate) fn tid_at(&self, pos: u64) -> Result<Tid> {
        Ok(self.read_data_header(pos)?.0.tid)
    }

    /// Current data and serial of `oid`.
    pub fn load(&self, oid: Oid) -> Result<(Vec<u8>, Tid)> {
        let pos = self.index.get(oid).ok_or(Error::NoSuchObject { oid })?;
        let (header, back) = self.read_data_header(pos)?;
        match self.data_of(pos, &header, back)? {
            Some(data) => Ok((data, header.tid)),
            None => Err(Error::NoData { oid }),
        }
    }

    /// Serial of the current revision.
    pub fn get_tid(&self, oid: Oid) -> Result<Tid> {
        let pos = self.index.get(oid).ok_or(Error::NoSuchObject { oid })?;
        let (header, back) = self.read_data_header(pos)?;
        if header.plen == 0 && back == 0 {
            return Err(Error::NoData { oid });
        }
        Ok(header.tid)
    }

    /// The revision current just before `before`: `Ok(None)` when the object
    /// did not exist yet.
    pub fn load_before(&self, oid: Oid, before: Tid) -> Result<Option<Loaded>> {
        let mut pos = self.index.get(oid).ok_or(Error::NoSuchObject { oid })?;
        let mut next_serial = None;
        loop {
            let (header, back) = self.read_data_header(pos)?;
            if header.tid < before {
                let data = self
                    .data_of(pos, &header, back)?
                    .ok_or(Error::NoData { oid })?;
                return Ok(Some(Loaded {
                    data,
                    serial: header.tid,
                    next_serial,
                }));
            }
            next_serial = Some(header.tid);
            if header.prev == 0 {
                return Ok(None);
            }
            pos = self.previous_record(pos, &header)?;
        }
    }

    /// The previous record of the same oid (`prev`), which must lie before
    /// `pos`; callers have already handled `prev == 0`.
    fn previous_record(&self, pos: u64, header: &DataHeader) -> Result<u64> {
        if header.prev >= pos {
            return Err(Error::corrupt(
                &self.path,
                pos,
                "previous-record pointer does not point backwards",
            ));
        }
        Ok(header.prev)
    }

    /// Data of the revision of `oid` written by transaction `serial`.
    pub fn load_serial(&self, oid: Oid, serial: Tid) -> Result<Vec<u8>> {
        let pos = self.find_revision(oid, serial)?;
        let (header, back) = self.read_data_header(pos)?;
        self.data_of(pos, &header, back)?
            .ok_or(Error::NoData { oid })
    }

    fn find_revision(&self, oid: Oid, serial: Tid) -> Result<u64> {
        let mut pos = self.index.get(oid).ok_or(Error::NoSuchObject { oid })?;
        loop {
            let (header, _) = self.read_data_header(pos)?;
            if header.tid == serial {
                return Ok(pos);
            }
            if header.tid < serial || header.prev == 0 {
                return Err(Error::NoSuchRevision { oid, serial });
            }
            pos = self.previous_record(pos, &header)?;
        }
    }

    /// Up to `size` revisions of `oid`, newest first.
    pub fn history(&self, oid: Oid, size: usize) -> Result<Vec<HistoryEntry>> {
        let mut pos = self.index.get(oid).ok_or(Error::NoSuchObject { oid })?;
        let mut entries = Vec::new();
        while entries.len() < size {
            let (header, _) = self.read_data_header(pos)?;
            let meta = self.read_txn_meta(header.tloc)?;
            entries.push(HistoryEntry {
                tid: header.tid,
                user: meta.user,
                description: meta.description,
                extension: meta.extension,
                size: header.plen,
            });
            if header.prev == 0 {
                break;
            }
            pos = self.previous_record(pos, &header)?;
        }
        Ok(entries)
    }

    pub(crate) fn read_txn_meta(&self, pos: u64) -> Result<TxnMeta> {
        let header = self.read_txn_header(pos)?;
        let mut raw = vec![0u8; (header.header_len() - TXN_HEADER_LEN) as usize];
        self.read_exact_at(&mut raw, pos + TXN_HEADER_LEN)?;
        let description = raw.split_off(header.ulen as usize);
        let mut description = description;
        let extension = description.split_off(header.dlen as usize);
        Ok(TxnMeta {
            user: raw,
            description,
            extension,
        })
    }

    /// The current revision of every object that has data, in file order
    /// (sequential reads): `(oid, serial, data)`. Objects whose current
    /// revision has no data (deleted, creation undone) are left out.
    pub fn current_records(&self) -> impl Iterator<Item = Result<(Oid, Tid, Vec<u8>)>> + '_ {
        let mut by_pos: Vec<(u64, Oid)> = self.index.iter().map(|(oid, pos)| (pos, oid)).collect();
        by_pos.sort_unstable();
        by_pos
            .into_iter()
            .filter_map(move |(pos, oid)| match self.data_at(pos) {
                Ok((Some(data), serial)) => Some(Ok((oid, serial, data))),
                Ok((None, _)) => None,
                Err(e) => Some(Err(e)),
            })
    }

    /// Transactions with `start <= tid <= stop`, in file order, as the file
    /// was when this call was made.
    pub fn iter(&self, start: Option<Tid>, stop: Option<Tid>) -> Result<TxnIter<'_>> {
        let file = self
            .file
            .try_clone()
            .map_err(|e| Error::io(&self.path, "dup", e))?;
        let first = match start {
            Some(tid) => self.find_txn_at_or_after(tid)?,
            None => 4,
        };
        let scanner = Scanner::with_file(&self.path, file, first, self.end, Strictness::Open)?;
        Ok(TxnIter {
            storage: self,
            scanner,
            stop,
        })
    }

    /// Position of the first transaction with tid >= `tid` (or the end),
    /// walking backwards from the end when that is nearer.
    fn find_txn_at_or_after(&self, tid: Tid) -> Result<u64> {
        if self.end <= 4 {
            return Ok(4);
        }
        let first = self.read_txn_header(4)?;
        if tid <= first.tid {
            return Ok(4);
        }
        if tid > self.last_tid {
            return Ok(self.end);
        }
        // Tids are time stamps: guess the nearer end by time.
        let from_start = tid.to_unix() - first.tid.to_unix();
        let from_end = self.last_tid.to_unix() - tid.to_unix();
        if from_end < from_start {
            let mut pos = self.last_txn_pos;
            loop {
                let header = self.read_txn_header(pos)?;
                if header.tid < tid {
                    return next_txn_pos(&self.path, pos, &header);
                }
                if pos <= 4 {
                    return Ok(4);
                }
                pos = self.previous_txn_pos(pos)?;
            }
        }
        let mut pos = 4;
        while pos < self.end {
            let header = self.read_txn_header(pos)?;
            if header.tid >= tid {
                return Ok(pos);
            }
            pos = next_txn_pos(&self.path, pos, &header)?;
        }
        Ok(self.end)
    }

    /// Position of the transaction that ends just before `pos`, read from
    /// its trailing length (the backward walk of undoLog and friends).
    fn previous_txn_pos(&self, pos: u64) -> Result<u64> {
        let len = self.read_u64(pos - 8)?;
        pos.checked_sub(8 + len.min(u64::MAX - 8))
            .filter(|p| *p >= 4)
            .ok_or_else(|| {
                Error::corrupt(
                    &self.path,
                    pos - 8,
                    "trailing length points before the file",
                )
            })
    }

    /// Position of the transaction `tid`, walking backwards from the end.
    pub fn find_txn(&self, tid: Tid) -> Result<Option<u64>> {
        if let Some(positions) = &self.txn_positions {
            return Ok(positions.get(&tid.0).copied());
        }
        let mut pos = self.end;
        while pos > 4 {
            pos = self.previous_txn_pos(pos)?;
            let header = self.read_txn_header(pos)?;
            if header.tid == tid {
                return Ok(Some(pos));
            }
            if header.tid < tid {
                return Ok(None);
            }
        }
        Ok(None)
    }

    /// Transactions walking backwards from the end, newest first, up to and
    /// excluding the first packed one (ZODB's `undoLog`).
    pub fn undo_log(&self, first: usize, last: usize) -> Result<Vec<(Tid, TxnMeta)>> {
        let mut out = Vec::new();
        let mut pos = self.end;
        let mut i = 0;
        while pos > 4 && i < last {
            pos = self.previous_txn_pos(pos)?;
            let header = self.read_txn_header(pos)?;
            if header.status == status::PACKED {
                break;
            }
            if header.status != status::NORMAL {
                continue;
            }
            if i >= first {
                out.push((header.tid, self.read_txn_meta(pos)?));
            }
            i += 1;
        }
        Ok(out)
    }

    /// Begins appending a transaction. `tid` defaults to now (forced above
    /// the last tid); a given tid must be above the last one.
    pub fn begin(
        &mut self,
        tid: Option<Tid>,
        meta: TxnMeta,
        txn_status: u8,
    ) -> Result<TxnWriter<'_>> {
        if self.read_only {
            return Err(Error::ReadOnly {
                path: self.path.clone(),
            });
        }
        for (field, len) in [
            ("user name", meta.user.len()),
            ("description", meta.description.len()),
            ("extension", meta.extension.len()),
        ] {
            if len > u16::MAX as usize {
                return Err(Error::MetadataTooLong { field, len });
            }
        }
        let tid = match tid {
            Some(tid) if tid <= self.last_tid => {
                return Err(Error::TidNotIncreasing {
                    tid,
                    last: self.last_tid,
                })
            }
            Some(tid) => tid,
            None => Tid::from_unix(unix_now()).later_than(self.last_tid),
        };
        if tid == Tid::ZERO {
            return Err(Error::TidNotIncreasing {
                tid,
                last: self.last_tid,
            });
        }
        let header_len = TXN_HEADER_LEN
            + (meta.user.len() + meta.description.len() + meta.extension.len()) as u64;
        Ok(TxnWriter {
            tid,
            status: txn_status,
            meta,
            header_len,
            records: Vec::new(),
            tindex: Vec::new(),
            storage: self,
        })
    }

    /// Makes restore's `data_txn` lookups O(1) for bulk copies.
    fn ensure_txn_positions(&mut self) -> Result<()> {
        if self.txn_positions.is_some() {
            return Ok(());
        }
        let mut positions = HashMap::new();
        let mut pos = 4;
        while pos < self.end {
            let header = self.read_txn_header(pos)?;
            positions.insert(header.tid.0, pos);
            pos = next_txn_pos(&self.path, pos, &header)?;
        }
        self.txn_positions = Some(positions);
        Ok(())
    }

    /// Writes the sidecar and ZODB's `.index` for the current end, so that
    /// neither we nor ZODB rescan the file at the next open.
    pub fn save_indexes(&self) -> Result<()> {
        let sidecar = Sidecar {
            magic: self.magic,
            end: self.end,
            last_tid: self.last_tid,
            last_txn_pos: self.last_txn_pos,
            index: self.index.clone(),
        };
        index::write_sidecar(&self.path, &sidecar)?;
        index::write_zodb_index(&self.path, self.magic, &self.index, self.end)?;
        Ok(())
    }

    /// Syncs, saves the indexes of a file we wrote to, and releases the lock.
    pub fn close(mut self) -> Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> Result<()> {
        if !self.read_only && self.dirty {
            self.file
                .sync_all()
                .map_err(|e| Error::io(&self.path, "sync", e))?;
            if self.sidecar {
                self.save_indexes()?;
            } else {
                // Never leave an index describing an older state.
                index::remove_if_present(&index::zodb_index_path(&self.path))?;
                index::remove_if_present(&index::sidecar_path(&self.path))?;
            }
            self.dirty = false;
        }
        self.lock = None;
        Ok(())
    }
}

impl Drop for FileStorage {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// Scans smaller than this do not write a sidecar at open.
const SIDECAR_MIN_SCAN: u64 = 32 << 20;

/// A transaction being written. Records are built in memory (ZODB's
/// `.tmp` file), then written and made durable by [`TxnWriter::commit`];
/// dropping the writer aborts.
pub struct TxnWriter<'a> {
    storage: &'a mut FileStorage,
    tid: Tid,
    status: u8,
    meta: TxnMeta,
    header_len: u64,
    records: Vec<u8>,
    tindex: Vec<(Oid, u64)>,
}

impl TxnWriter<'_> {
    pub fn tid(&self) -> Tid {
        self.tid
    }

    /// Stores new data for `oid`; `expected` is the serial the writer read
    /// (None for a new object), checked against the current one.
    pub fn store(&mut self, oid: Oid, expected: Option<Tid>, data: &[u8]) -> Result<()> {
        let current = match self.storage.index.get(oid) {
            Some(pos) => Some(self.storage.read_data_header(pos)?.0.tid),
            None => None,
        };
        if current != expected && current.is_some() {
            return Err(Error::Conflict {
                oid,
                expected: expected.unwrap_or(Tid::ZERO),
                current: current.unwrap_or(Tid::ZERO),
            });
        }
        self.push_record(oid, self.tid, Body::Data(data))
    }

    /// Marks `oid` as deleted (IExternalGC): a record without data.
    pub fn delete(&mut self, oid: Oid, serial: Tid) -> Result<()> {
        let pos = self
            .storage
            .index
            .get(oid)
            .ok_or(Error::NoSuchObject { oid })?;
        let current = self.storage.read_data_header(pos)?.0.tid;
        if current != serial {
            return Err(Error::Conflict {
                oid,
                expected: serial,
                current,
            });
        }
        self.push_record(oid, self.tid, Body::Back(0))
    }

    /// Copies a revision as ZODB's `restore` does: no conflict check; when
    /// `data_txn` names a transaction of this file holding a record of `oid`
    /// with the same data (or a backpointer), a backpointer to that record is
    /// written instead of the data; `None` data writes "no data".
    pub fn restore(&mut self, oid: Oid, data: Option<&[u8]>, data_txn: Option<Tid>) -> Result<()> {
        let mut back = 0;
        if let Some(data_txn) = data_txn {
            self.storage.ensure_txn_positions()?;
            if let Some(txn_pos) = self.storage.find_txn(data_txn)? {
                back = self.find_data(txn_pos, oid, data)?;
            }
        }
        let body = match (back, data) {
            (0, Some(data)) => Body::Data(data),
            (back, _) => Body::Back(back),
        };
        self.push_record(oid, self.tid, body)
    }

    /// ZODB's `_data_find`: the last record of `oid` in the transaction at
    /// `txn_pos`, if it is a backpointer or holds exactly `data`.
    fn find_data(&self, txn_pos: u64, oid: Oid, data: Option<&[u8]>) -> Result<u64> {
        let storage = &*self.storage;
        find_matching_record(
            |buf, pos| storage.read_exact_at(buf, pos),
            txn_pos,
            oid,
            data,
            Pick::Last,
        )
    }

    /// Undoes transaction `tid` as ZODB does when no later transaction
    /// changed its objects: each record becomes a backpointer to the
    /// revision before it (or "no data" when it created the object).
    /// Returns the oids undone.
    pub fn undo(&mut self, tid: Tid) -> Result<Vec<Oid>> {
        let storage = &*self.storage;
        let txn_pos = storage
            .find_txn(tid)?
            .ok_or(Error::NoSuchTransaction { tid })?;
        let header = storage.read_txn_header(txn_pos)?;
        if header.status != status::NORMAL {
            return Err(Error::Undo {
                tid,
                why: "non-undoable transaction".into(),
            });
        }
        let end = txn_pos.saturating_add(header.tlen);
        let mut pos = txn_pos + header.header_len();
        let mut plan = Vec::new();
        while pos < end {
            let (record, back) = storage.read_data_header(pos)?;
            let current = storage
                .index
                .get(record.oid)
                .ok_or(Error::NoSuchObject { oid: record.oid })?;
            let same = current == pos || {
                let (cur_header, cur_back) = storage.read_data_header(current)?;
                storage.data_of(current, &cur_header, cur_back)?
                    == storage.data_of(pos, &record, back)?
            };
            if !same {
                return Err(Error::Undo {
                    tid,
                    why: format!("oid {} was changed by a later transaction (conflict resolution is not done here)", record.oid),
                });
            }
            plan.push((record.oid, record.prev));
            pos = pos.saturating_add(record.record_len());
        }
        let mut oids = Vec::new();
        for (oid, prev) in plan {
            self.push_record(oid, self.tid, Body::Back(prev))?;
            oids.push(oid);
        }
        Ok(oids)
    }

    fn push_record(&mut self, oid: Oid, tid: Tid, body: Body<'_>) -> Result<()> {
        if self.tindex.iter().any(|(o, _)| *o == oid) {
            return Err(Error::DuplicateOid { oid });
        }
        let txn_pos = self.storage.end;
        let pos = txn_pos + self.header_len + self.records.len() as u64;
        let prev = self.storage.index.get(oid).unwrap_or(0);
        let plen = match body {
            Body::Data(data) if !data.is_empty() => data.len() as u64,
            _ => 0,
        };
        let header = DataHeader {
            oid,
            tid,
            prev,
            tloc: txn_pos,
            vlen: 0,
            plen,
        };
        self.records.extend_from_slice(&header.encode());
        match body {
            Body::Data(data) if !data.is_empty() => self.records.extend_from_slice(data),
            // An empty pickle cannot be stored inline (plen 0 means
            // backpointer): it becomes "no data", as in ZODB.
            Body::Data(_) => self.records.extend_from_slice(&0u64.to_be_bytes()),
            Body::Back(back) => self.records.extend_from_slice(&back.to_be_bytes()),
        }
        self.tindex.push((oid, pos));
        Ok(())
    }

    /// Writes the transaction durably and returns its tid.
    pub fn commit(self) -> Result<Tid> {
        let TxnWriter {
            storage,
            tid,
            status: final_status,
            meta,
            header_len,
            records,
            tindex,
        } = self;
        let pos = storage.end;
        let tlen = header_len + records.len() as u64;
        let header = TxnHeader {
            tid,
            tlen,
            status: status::CHECKPOINT,
            ulen: meta.user.len() as u16,
            dlen: meta.description.len() as u16,
            elen: meta.extension.len() as u16,
        };
        let mut bytes = Vec::with_capacity(tlen as usize + 8);
        bytes.extend_from_slice(&header.encode());
        bytes.extend_from_slice(&meta.user);
        bytes.extend_from_slice(&meta.description);
        bytes.extend_from_slice(&meta.extension);
        bytes.extend_from_slice(&records);
        bytes.extend_from_slice(&tlen.to_be_bytes());
        let path = storage.path.clone();
        let written = (|| -> Result<()> {
            storage
                .file
                .write_all_at(&bytes, pos)
                .map_err(|e| Error::io(&path, "write", e))?;
            if storage.sync {
                storage
                    .file
                    .sync_data()
                    .map_err(|e| Error::io(&path, "sync", e))?;
            }
            storage
                .file
                .write_all_at(&[final_status], pos + STATUS_OFFSET)
                .map_err(|e| Error::io(&path, "write", e))?;
            if storage.sync {
                storage
                    .file
                    .sync_data()
                    .map_err(|e| Error::io(&path, "sync", e))?;
            }
            Ok(())
        })();
        if let Err(e) = written {
            // Leave the file as it was before this transaction.
            let _ = storage.file.set_len(pos);
            return Err(e);
        }
        if !storage.dirty {
            storage.dirty = true;
            // From now on any saved index is stale until close rewrites it.
            index::remove_if_present(&index::zodb_index_path(&storage.path))?;
            index::remove_if_present(&index::sidecar_path(&storage.path))?;
        }
        for (oid, record_pos) in tindex {
            storage.index.insert(oid, record_pos);
        }
        if let Some(positions) = storage.txn_positions.as_mut() {
            positions.insert(tid.0, pos);
        }
        storage.end = pos + tlen + 8;
        storage.last_tid = tid;
        storage.last_txn_pos = pos;
        Ok(tid)
    }
}

enum Body<'a> {
    Data(&'a [u8]),
    Back(u64),
}

/// An iterator over transactions that resolves backpointers.
pub struct TxnIter<'s> {
    storage: &'s FileStorage,
    scanner: Scanner,
    stop: Option<Tid>,
}

/// One transaction yielded by [`TxnIter`], borrowing the scan buffer.
pub struct Transaction<'i> {
    pub view: TxnView<'i>,
    storage: &'i FileStorage,
}

/// A data record with its data resolved as ZODB's iterator does.
#[derive(Debug)]
pub struct Record<'i> {
    pub pos: u64,
    pub oid: Oid,
    pub tid: Tid,
    /// `None` when the revision has no data.
    pub data: Option<Cow<'i, [u8]>>,
    /// For a backpointer record: the tid of the record pointed to.
    pub data_txn: Option<Tid>,
}

impl<'s> TxnIter<'s> {
    pub fn next_txn(&mut self) -> Result<Option<Transaction<'_>>> {
        let storage = self.storage;
        match self.scanner.next_txn()? {
            Some(view) if self.stop.is_some_and(|stop| view.tid() > stop) => Ok(None),
            Some(view) => Ok(Some(Transaction { view, storage })),
            None => Ok(None),
        }
    }

    /// Position where the scan currently is.
    pub fn pos(&self) -> u64 {
        self.scanner.pos()
    }
}

impl<'i> Transaction<'i> {
    pub fn tid(&self) -> Tid {
        self.view.tid()
    }

    pub fn meta(&self) -> TxnMeta {
        TxnMeta {
            user: self.view.user().to_vec(),
            description: self.view.description().to_vec(),
            extension: self.view.extension().to_vec(),
        }
    }

    /// Records with data resolved; backpointers cost a positioned read.
    pub fn records(&self) -> impl Iterator<Item = Result<Record<'i>>> + 'i {
        let storage = self.storage;
        self.view.records().map(move |view| {
            let (data, data_txn) = match view.data {
                Some(data) => (Some(Cow::Borrowed(data)), None),
                None if view.back == 0 => (None, None),
                None => {
                    let (data, _) = storage.data_at(view.back)?;
                    let data_txn = storage.tid_at(view.back)?;
                    (data.map(Cow::Owned), Some(data_txn))
                }
            };
            Ok(Record {
                pos: view.pos,
                oid: view.header.oid,
                tid: view.header.tid,
                data,
                data_txn,
            })
        })
    }
}

fn read_magic(path: &Path, file: &File) -> Result<Magic> {
    let mut raw = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match file.read_at(&mut raw[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => return Err(Error::io(path, "read", e)),
        }
    }
    if got < 4 {
        return Err(Error::NotFileStorage {
            path: path.to_path_buf(),
            what: format!("file has {got} bytes, shorter than the 4-byte magic"),
        });
    }
    Magic::from_bytes(&raw).ok_or_else(|| Error::NotFileStorage {
        path: path.to_path_buf(),
        what: format!(
            "magic at byte 0 is {:?}, expected \"FS30\" or \"FS21\"",
            String::from_utf8_lossy(&raw)
        ),
    })
}

/// Takes `<file>.lock` as ZODB does (flock, exclusive, non-blocking) and
/// writes our pid in it.
fn take_lock(path: &Path) -> Result<File> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = PathBuf::from(name);
    let mut lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| Error::io(&lock_path, "open", e))?;
    // SAFETY: flock on a descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(Error::Locked {
            path: path.to_path_buf(),
            lock: lock_path,
        });
    }
    let _ = lock.set_len(0);
    let _ = writeln!(lock, " {}", std::process::id());
    Ok(lock)
}

/// Which record of an oid a transaction search settles on: `restore` takes
/// the last one (as loads do), pack's copier the first.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pick {
    First,
    Last,
}

/// The record of `oid` in the transaction at `txn_pos` that a new record of
/// the same data may point back to: its position if it is itself a
/// backpointer or holds exactly `data`, else 0. `read` reads the file the
/// transaction is in (the data file, or pack's output).
pub(crate) fn find_matching_record(
    read: impl Fn(&mut [u8], u64) -> Result<()>,
    txn_pos: u64,
    oid: Oid,
    data: Option<&[u8]>,
    pick: Pick,
) -> Result<u64> {
    let mut raw = [0u8; 23];
    read(&mut raw, txn_pos)?;
    let header = TxnHeader::parse(&raw);
    let end = txn_pos.saturating_add(header.tlen);
    let mut pos = txn_pos + header.header_len();
    let mut found = None;
    while pos < end {
        let mut raw = [0u8; 42];
        read(&mut raw, pos)?;
        let record = DataHeader::parse(&raw);
        if record.oid == oid {
            found = Some((pos, record));
            if pick == Pick::First {
                break;
            }
        }
        pos = pos.saturating_add(record.record_len());
    }
    let Some((pos, record)) = found else {
        return Ok(0);
    };
    if record.plen == 0 {
        return Ok(pos);
    }
    let Some(data) = data else { return Ok(0) };
    if record.plen != data.len() as u64 {
        return Ok(0);
    }
    let mut stored = vec![0u8; data.len()];
    read(&mut stored, pos + DATA_HEADER_LEN)?;
    Ok(if stored == data { pos } else { 0 })
}

/// Position of the transaction after the one at `pos`, refusing lengths
/// that run past any real file.
fn next_txn_pos(path: &Path, pos: u64, header: &TxnHeader) -> Result<u64> {
    pos.checked_add(header.tlen)
        .and_then(|v| v.checked_add(8))
        .ok_or_else(|| {
            Error::corrupt(
                path,
                pos,
                format!("transaction length {} is impossible", header.tlen),
            )
        })
}

pub(crate) fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
