//! Forward scan of a FileStorage file through one large read buffer.
//!
//! The scanner is the only code that walks the file sequentially: the
//! open-time index build, the transaction iterator, `neofs verify`-style
//! walks and pack all use it. Each transaction is fully checked (records
//! inside it, `tloc`, lengths adding up, trailing length) before it is
//! handed out as a [`TxnView`] borrowing the buffer, so callers never see a
//! half-valid transaction and data are not copied.
//!
//! The end of a live file may hold a transaction that was never finished
//! (status `'c'`) or was cut by a crash; the scan stops there and reports
//! it as [`End::Torn`], as ZODB's open-time scan does (§6.1 of the spec).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::{status, DataHeader, TxnHeader, DATA_HEADER_LEN, TXN_HEADER_LEN};
use crate::tid::{Oid, Tid};

/// How a scan ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// The last transaction ended exactly at the end of the file.
    Clean { pos: u64 },
    /// Bytes at `pos` do not form a complete, finished transaction; ZODB
    /// truncates them when it opens the file for writing.
    Torn { pos: u64, why: String },
}

impl End {
    /// Position just after the last complete transaction.
    pub fn pos(&self) -> u64 {
        match self {
            End::Clean { pos } | End::Torn { pos, .. } => *pos,
        }
    }
}

/// One transaction, borrowed from the scanner's buffer.
#[derive(Clone, Copy)]
pub struct TxnView<'a> {
    pub pos: u64,
    pub header: TxnHeader,
    /// The whole record, header to trailing length included.
    bytes: &'a [u8],
}

/// One data record, borrowed from the scanner's buffer.
#[derive(Clone, Copy, Debug)]
pub struct DataView<'a> {
    pub pos: u64,
    pub header: DataHeader,
    /// Inline pickle, when `plen > 0`.
    pub data: Option<&'a [u8]>,
    /// Backpointer, meaningful when `data` is `None` (0 = no data).
    pub back: u64,
}

impl DataView<'_> {
    pub fn oid(&self) -> Oid {
        self.header.oid
    }
}

impl<'a> TxnView<'a> {
    pub fn tid(&self) -> Tid {
        self.header.tid
    }

    pub fn status(&self) -> u8 {
        self.header.status
    }

    pub fn user(&self) -> &'a [u8] {
        let start = TXN_HEADER_LEN as usize;
        &self.bytes[start..start + self.header.ulen as usize]
    }

    pub fn description(&self) -> &'a [u8] {
        let start = TXN_HEADER_LEN as usize + self.header.ulen as usize;
        &self.bytes[start..start + self.header.dlen as usize]
    }

    pub fn extension(&self) -> &'a [u8] {
        let start = TXN_HEADER_LEN as usize + self.header.ulen as usize + self.header.dlen as usize;
        &self.bytes[start..start + self.header.elen as usize]
    }

    /// Position of the first data record (fsdump's `offset=`).
    pub fn data_pos(&self) -> u64 {
        self.pos + self.header.header_len()
    }

    /// Position just after this transaction's trailing length.
    pub fn end_pos(&self) -> u64 {
        self.pos + self.header.tlen + 8
    }

    /// The data records; none for an undone (`'u'`) transaction, whose
    /// records ZODB no longer reads.
    pub fn records(&self) -> Records<'a> {
        let end = if self.header.status == status::UNDONE {
            0
        } else {
            self.header.tlen as usize
        };
        Records {
            bytes: self.bytes,
            txn_pos: self.pos,
            offset: self.header.header_len() as usize,
            end,
        }
    }

    /// The raw bytes of the whole record, trailing length included.
    pub fn raw(&self) -> &'a [u8] {
        self.bytes
    }
}

/// Iterator over the (already validated) data records of a transaction.
pub struct Records<'a> {
    bytes: &'a [u8],
    txn_pos: u64,
    offset: usize,
    end: usize,
}

impl<'a> Iterator for Records<'a> {
    type Item = DataView<'a>;

    fn next(&mut self) -> Option<DataView<'a>> {
        if self.offset >= self.end {
            return None;
        }
        let at = self.offset;
        let header_bytes: &[u8; 42] = self.bytes[at..at + 42].try_into().ok()?;
        let header = DataHeader::parse(header_bytes);
        let body = at + DATA_HEADER_LEN as usize;
        let (data, back) = if header.plen > 0 {
            (Some(&self.bytes[body..body + header.plen as usize]), 0)
        } else {
            (None, crate::format::be_u64(&self.bytes[body..body + 8]))
        };
        self.offset = at + header.record_len() as usize;
        Some(DataView {
            pos: self.txn_pos + at as u64,
            header,
            data,
            back,
        })
    }
}

/// What a scan tolerates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strictness {
    /// ZODB's open-time scan: a torn tail ends the scan; corruption before it
    /// is an error; tid order is not enforced (ZODB only logs it).
    Open,
    /// fstest/pack rules: additionally, tids must strictly increase and the
    /// status must be one of `' '`, `'p'`, `'u'`.
    Strict,
}

pub struct Scanner {
    path: PathBuf,
    file: File,
    buf: Vec<u8>,
    /// File position of `buf[0]`.
    buf_pos: u64,
    /// Valid bytes are `buf[lo..hi]`; the scan position is `buf_pos + lo`.
    lo: usize,
    hi: usize,
    /// The file size when the scan started: nothing beyond is read.
    limit: u64,
    strictness: Strictness,
    last_tid: Tid,
    end: Option<End>,
}

const BUFFER_LEN: usize = 8 << 20;

impl Scanner {
    /// Starts a scan at `pos` (4 for the first transaction) of a file whose
    /// magic the caller has already checked.
    pub fn open(path: &Path, pos: u64, strictness: Strictness) -> Result<Scanner> {
        let file = File::open(path).map_err(|e| Error::io(path, "open", e))?;
        let limit = file
            .metadata()
            .map_err(|e| Error::io(path, "stat", e))?
            .len();
        Scanner::with_file(path, file, pos, limit, strictness)
    }

    pub fn with_file(
        path: &Path,
        mut file: File,
        pos: u64,
        limit: u64,
        strictness: Strictness,
    ) -> Result<Scanner> {
        use std::io::{Seek, SeekFrom};
        file.seek(SeekFrom::Start(pos))
            .map_err(|e| Error::io(path, "seek", e))?;
        Ok(Scanner {
            path: path.to_path_buf(),
            file,
            buf: Vec::new(),
            buf_pos: pos,
            lo: 0,
            hi: 0,
            limit,
            strictness,
            last_tid: Tid::ZERO,
            end: None,
        })
    }

    /// Tid of the transaction before the scan start, for order checks.
    pub fn set_last_tid(&mut self, tid: Tid) {
        self.last_tid = tid;
    }

    pub fn pos(&self) -> u64 {
        self.buf_pos + self.lo as u64
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// How the scan ended, once `next_txn` returned `None`.
    pub fn end(&self) -> Option<&End> {
        self.end.as_ref()
    }

    /// The next complete transaction, or `None` at the end (see [`end`]).
    pub fn next_txn(&mut self) -> Result<Option<TxnView<'_>>> {
        if self.end.is_some() {
            return Ok(None);
        }
        let pos = self.pos();
        let remaining = self.limit - pos.min(self.limit);
        if remaining == 0 {
            self.end = Some(End::Clean { pos });
            return Ok(None);
        }
        if remaining < TXN_HEADER_LEN {
            self.end = Some(End::Torn {
                pos,
                why: format!("{remaining} bytes, less than a transaction header"),
            });
            return Ok(None);
        }
        self.fill(TXN_HEADER_LEN as usize)?;
        let header_bytes: [u8; 23] = self.buf[self.lo..self.lo + 23].try_into().expect("filled");
        let header = TxnHeader::parse(&header_bytes);
        let record_len = header.tlen.checked_add(8);
        let fits = record_len.is_some_and(|len| len <= remaining);
        if !fits {
            self.end = Some(End::Torn {
                pos,
                why: format!(
                    "transaction length {} runs past the end of the file ({})",
                    header.tlen, self.limit
                ),
            });
            return Ok(None);
        }
        if header.status == status::CHECKPOINT {
            self.end = Some(End::Torn {
                pos,
                why: "transaction was never finished (status 'c')".into(),
            });
            return Ok(None);
        }
        if header.tlen < header.header_len() {
            // ZODB tells a crash's garbage tail from corruption in the middle
            // by whether the last 8 bytes of the file look like a length.
            let trailing = self.read_u64_at(self.limit - 8)?;
            if self.limit - trailing.min(self.limit) < pos || trailing < TXN_HEADER_LEN {
                self.end = Some(End::Torn {
                    pos,
                    why: "invalid transaction header at the end of the file".into(),
                });
                return Ok(None);
            }
            return Err(Error::corrupt(
                &self.path,
                pos,
                format!(
                    "invalid transaction header: length {} is less than its header and metadata ({})",
                    header.tlen,
                    header.header_len()
                ),
            ));
        }
        if self.strictness == Strictness::Strict {
            if header.tid <= self.last_tid {
                return Err(Error::corrupt(
                    &self.path,
                    pos,
                    format!("time-stamp reduction: {} <= {}", header.tid, self.last_tid),
                ));
            }
            if !matches!(
                header.status,
                status::NORMAL | status::PACKED | status::UNDONE
            ) {
                return Err(Error::corrupt(
                    &self.path,
                    pos,
                    format!("invalid transaction status {:?}", header.status as char),
                ));
            }
        }
        let len = record_len.expect("checked") as usize;
        self.fill(len)?;
        let bytes_start = self.lo;
        check_records(
            &self.path,
            pos,
            &header,
            &self.buf[bytes_start..bytes_start + len],
        )?;
        self.last_tid = header.tid;
        self.lo += len;
        Ok(Some(TxnView {
            pos,
            header,
            bytes: &self.buf[bytes_start..bytes_start + len],
        }))
    }

    /// Makes `buf[lo..lo + n]` valid, reading from the file as needed.
    fn fill(&mut self, n: usize) -> Result<()> {
        if self.hi - self.lo >= n {
            return Ok(());
        }
        // Move the unread bytes to the front, grow if one record is larger
        // than the buffer, then read as much as fits (bounded by `limit`).
        self.buf.copy_within(self.lo..self.hi, 0);
        self.buf_pos += self.lo as u64;
        self.hi -= self.lo;
        self.lo = 0;
        let file_left = self.limit - self.buf_pos - self.hi as u64;
        // No larger than what is left of the file: small files and short
        // scans should not pay for zeroing a big buffer.
        let wanted_len = (self.hi as u64 + file_left).min(BUFFER_LEN as u64) as usize;
        let want = n.max(wanted_len);
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        let room = (self.buf.len() - self.hi).min(usize::try_from(file_left).unwrap_or(usize::MAX));
        let mut target = self.hi + room;
        while self.hi < n {
            let got = self
                .file
                .read(&mut self.buf[self.hi..target])
                .map_err(|e| Error::io(&self.path, "read", e))?;
            if got == 0 {
                return Err(Error::corrupt(
                    &self.path,
                    self.buf_pos + self.hi as u64,
                    "file shrank while being read",
                ));
            }
            self.hi += got;
            if self.hi >= n {
                break;
            }
            target = target.max(self.hi);
        }
        Ok(())
    }

    fn read_u64_at(&self, pos: u64) -> Result<u64> {
        use std::os::unix::fs::FileExt;
        let mut raw = [0u8; 8];
        self.file
            .read_exact_at(&mut raw, pos)
            .map_err(|e| Error::io(&self.path, "read", e))?;
        Ok(u64::from_be_bytes(raw))
    }
}

/// Checks the data records of a complete transaction record (`bytes` spans
/// header to trailing length) as ZODB's open-time scan does.
fn check_records(path: &Path, pos: u64, header: &TxnHeader, bytes: &[u8]) -> Result<()> {
    let tlen = header.tlen as usize;
    let trailing = crate::format::be_u64(&bytes[tlen..tlen + 8]);
    if trailing != header.tlen {
        return Err(Error::corrupt(
            path,
            pos + header.tlen,
            format!(
                "redundant transaction length {trailing} does not match the header's {}",
                header.tlen
            ),
        ));
    }
    if header.status == status::UNDONE {
        return Ok(());
    }
    let mut at = header.header_len() as usize;
    while at < tlen {
        let record_pos = pos + at as u64;
        if tlen - at < DATA_HEADER_LEN as usize {
            return Err(Error::corrupt(
                path,
                record_pos,
                "data record header exceeds the transaction record",
            ));
        }
        let data_header = DataHeader::parse(bytes[at..at + 42].try_into().expect("length checked"));
        if data_header.vlen != 0 {
            return Err(Error::Version {
                path: path.to_path_buf(),
                offset: record_pos,
                vlen: data_header.vlen,
            });
        }
        if data_header.tloc != pos {
            return Err(Error::corrupt(
                path,
                record_pos,
                format!(
                    "data record points to transaction {} instead of {pos}",
                    data_header.tloc
                ),
            ));
        }
        let len = data_header.record_len();
        if len > (tlen - at) as u64 {
            return Err(Error::corrupt(
                path,
                record_pos,
                format!(
                    "data record of {len} bytes exceeds the transaction record (ends at {})",
                    pos + header.tlen
                ),
            ));
        }
        at += len as usize;
    }
    Ok(())
}
