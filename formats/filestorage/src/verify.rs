//! `fstest`: the checks of ZODB's `ZODB/scripts/fstest.py`, in its order,
//! with its messages and verbosity levels.
//!
//! Only the layout is checked (tid order, lengths, status, `tloc`), not
//! pickles or pointers; `strict` adds the checks pack makes (record tid,
//! `prev` and backpointers pointing backwards, no data together with a
//! backpointer).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::format::{status, DataHeader, Magic, TxnHeader, DATA_HEADER_LEN, TXN_HEADER_LEN};
use crate::tid::Tid;

/// The first problem found, worded as fstest words it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError {
    pub offset: u64,
    pub message: String,
}

pub struct Summary {
    pub magic: Magic,
    pub transactions: u64,
    pub records: u64,
}

/// Checks `path`; `verbose` 1 lists transactions, 2 also records, as
/// `fstest -v` / `-v -v` do.
pub fn check(
    path: &Path,
    verbose: u8,
    strict: bool,
    out: &mut dyn Write,
) -> Result<Summary, FormatError> {
    let name = path.display().to_string();
    let err = |offset: u64, message: String| FormatError { offset, message };
    let file = File::open(path).map_err(|e| err(0, format!("{name}: cannot open: {e}")))?;
    let size = file
        .metadata()
        .map_err(|e| err(0, format!("{name}: cannot stat: {e}")))?
        .len();
    if size == 0 {
        return Err(err(0, "empty file".into()));
    }
    let mut magic_bytes = [0u8; 4];
    let got = read_at(&file, &mut magic_bytes, 0)
        .map_err(|e| err(0, format!("{name}: read error: {e}")))?;
    let magic = match Magic::from_bytes(&magic_bytes[..got]) {
        Some(magic) => magic,
        None => return Err(err(0, "invalid file header".into())),
    };
    let mut pos = 4u64;
    let mut last_tid = Tid::ZERO;
    let mut transactions = 0u64;
    let mut records = 0u64;
    let io = |pos: u64, e: std::io::Error| FormatError {
        offset: pos,
        message: format!("{name}: read error at {pos}: {e}"),
    };
    loop {
        let mut raw = [0u8; 23];
        let got = read_at(&file, &mut raw, pos).map_err(|e| io(pos, e))?;
        if got == 0 {
            break;
        }
        if got != raw.len() {
            return Err(err(pos, format!("{name} truncated at {pos}")));
        }
        let header = TxnHeader::parse(&raw);
        let meta_len = header.header_len();
        if header.tid <= last_tid {
            return Err(err(
                pos,
                format!(
                    "{name} time-stamp reduction at {pos}: 0x{} <= 0x{}",
                    header.tid, last_tid
                ),
            ));
        }
        last_tid = header.tid;
        let tlen = header.tlen;
        if pos
            .checked_add(tlen)
            .and_then(|v| v.checked_add(8))
            .is_none_or(|end| end > size)
        {
            return Err(err(
                pos,
                format!("{name} truncated possibly because of damaged records at {pos}"),
            ));
        }
        if header.status == status::CHECKPOINT {
            return Err(err(
                pos,
                format!("{name} checkpoint flag was not cleared at {pos}"),
            ));
        }
        if !matches!(
            header.status,
            status::NORMAL | status::UNDONE | status::PACKED
        ) {
            // fstest formats the status bytes object with %s.
            return Err(err(
                pos,
                format!(
                    "{name} has invalid status '{}' at {pos}",
                    crate::dump::py_bytes_repr(&[header.status])
                ),
            ));
        }
        if meta_len > tlen {
            return Err(err(
                pos,
                format!("{name} has an invalid transaction header at {pos}"),
            ));
        }
        let tpos = pos;
        let tend = tpos + tlen; // cannot overflow: checked against the file size above
        if header.status != status::UNDONE {
            pos = tpos + meta_len;
            let mut i = 0u64;
            while pos < tend {
                let record_pos = pos;
                let mut raw = [0u8; 42];
                let got = read_at(&file, &mut raw, pos).map_err(|e| io(pos, e))?;
                if got != raw.len() {
                    return Err(err(pos, format!("{name} truncated at {pos}")));
                }
                let record = DataHeader::parse(&raw);
                let dlen = record.record_len();
                if record.tloc != tpos {
                    return Err(err(
                        pos,
                        format!(
                            "{name} data record exceeds transaction record at {pos}: tloc {} != tpos {tpos}",
                            record.tloc
                        ),
                    ));
                }
                pos = pos.saturating_add(dlen);
                if pos > tend {
                    return Err(err(
                        record_pos,
                        format!("{name} has data records that extend beyond the transaction record; end at {pos}"),
                    ));
                }
                if strict {
                    strict_record(&file, &name, record_pos, &record, &header)?;
                }
                chatter(
                    out,
                    verbose,
                    2,
                    &format!("{record_pos:>10}: object oid 0x{} #{i}\n", record.oid),
                );
                i += 1;
                records += 1;
            }
        }
        let mut trailing = [0u8; 8];
        let got = read_at(&file, &mut trailing, tend).map_err(|e| io(tend, e))?;
        if got != 8 || u64::from_be_bytes(trailing) != tlen {
            return Err(err(
                tend,
                format!(
                    "{name} has inconsistent transaction length for undone transaction at {pos}"
                ),
            ));
        }
        chatter(
            out,
            verbose,
            1,
            &format!(
                "{tpos:>10}: transaction tid 0x{} #{transactions} \n",
                header.tid
            ),
        );
        transactions += 1;
        pos = tend + 8;
    }
    chatter(out, verbose, 1, "no errors detected");
    Ok(Summary {
        magic,
        transactions,
        records,
    })
}

fn strict_record(
    file: &File,
    name: &str,
    pos: u64,
    record: &DataHeader,
    txn: &TxnHeader,
) -> Result<(), FormatError> {
    let err = |message: String| FormatError {
        offset: pos,
        message: format!("{name}:{pos}: {message}"),
    };
    if record.vlen != 0 {
        return Err(err(format!("record with a version (vlen {})", record.vlen)));
    }
    if record.tid != txn.tid {
        return Err(err(format!(
            "record tid {} differs from its transaction's {}",
            record.tid, txn.tid
        )));
    }
    if record.prev >= pos {
        return Err(err(format!("invalid previous pointer: {}", record.prev)));
    }
    if record.plen == 0 {
        let mut raw = [0u8; 8];
        let got = read_at(file, &mut raw, pos + DATA_HEADER_LEN)
            .map_err(|e| err(format!("read error: {e}")))?;
        let back = u64::from_be_bytes(raw);
        if got == 8 && back != 0 && back >= pos {
            return Err(err(format!("invalid back pointer: {back}")));
        }
        if got == 8 && back != 0 && back < TXN_HEADER_LEN + 4 {
            return Err(err(format!(
                "back pointer {back} points into the file header"
            )));
        }
    }
    Ok(())
}

fn chatter(out: &mut dyn Write, verbose: u8, level: u8, text: &str) {
    if verbose >= level {
        let _ = out.write_all(text.as_bytes());
    }
}

fn read_at(file: &File, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], pos + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}
