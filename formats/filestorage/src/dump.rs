//! `fsdump`: the transaction listing of ZODB's `ZODB.FileStorage.fsdump`,
//! byte for byte, plus a canonical dump used to compare our reader with
//! ZODB's iterator.

use std::io::Write;

use crate::error::{Error, Result};
use crate::pickle;
use crate::storage::FileStorage;

/// Writes what `fsdump(path)` prints for the storage's file.
pub fn fsdump(storage: &FileStorage, out: &mut dyn Write) -> Result<()> {
    let mut iter = storage.iter(None, None)?;
    let mut i = 0u64;
    let mut line = String::new();
    while let Some(txn) = iter.next_txn()? {
        let view = txn.view;
        line.clear();
        use std::fmt::Write as _;
        let _ = writeln!(
            line,
            "Trans #{i:05} tid={} size={} time={} offset={}",
            view.tid(),
            view.header.tlen,
            view.tid().timestamp_string(),
            view.data_pos()
        );
        let _ = writeln!(
            line,
            "    status={} user={} description={}",
            py_str_repr(&(view.status() as char).to_string()),
            py_bytes_repr(view.user()),
            py_bytes_repr(view.description())
        );
        for (j, record) in txn.records().enumerate() {
            let record = record?;
            let (size, class) = match &record.data {
                None => (
                    String::new(),
                    "undo or abort of object creation".to_string(),
                ),
                Some(data) => {
                    let (module, name) = pickle::class_name(data);
                    (format!(" size={}", data.len()), format!("{module}.{name}"))
                }
            };
            let bp = match record.data_txn {
                Some(tid) => format!(" bp={tid}"),
                None => String::new(),
            };
            let _ = writeln!(
                line,
                "  data #{j:05} oid={}{size} class={class}{bp}",
                record.oid
            );
        }
        out.write_all(line.as_bytes())
            .map_err(|e| Error::io(storage.path(), "write output", e))?;
        i += 1;
    }
    Ok(())
}

/// One line per transaction and per record, every field in hex: the
/// format `tests/zodb/canon.py` prints from ZODB's own iterator, so that
/// the two readers can be compared with `diff`.
pub fn canonical(storage: &FileStorage, out: &mut dyn Write, with_data: bool) -> Result<()> {
    let mut iter = storage.iter(None, None)?;
    let mut text = String::new();
    while let Some(txn) = iter.next_txn()? {
        use std::fmt::Write as _;
        text.clear();
        let view = txn.view;
        let _ = writeln!(
            text,
            "txn {} {} user={} desc={} ext={}",
            view.tid(),
            hex(&[view.status()]),
            hex(view.user()),
            hex(view.description()),
            hex(view.extension())
        );
        for record in txn.records() {
            let record = record?;
            let data = match &record.data {
                None => "None".to_string(),
                Some(data) if with_data => hex(data),
                Some(data) => format!("len={}:{:016x}", data.len(), fnv1a(data)),
            };
            let data_txn = record
                .data_txn
                .map_or("None".to_string(), |t| t.to_string());
            let _ = writeln!(
                text,
                "  rec {} {} data_txn={} data={}",
                record.oid, record.tid, data_txn, data
            );
        }
        out.write_all(text.as_bytes())
            .map_err(|e| Error::io(storage.path(), "write output", e))?;
    }
    Ok(())
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

/// 64-bit FNV-1a, the data digest of the canonical dump (the Python side
/// computes the same).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for &b in bytes {
        hash = (hash ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Python's `repr()` of a bytes object.
pub fn py_bytes_repr(bytes: &[u8]) -> String {
    let quote = if bytes.contains(&b'\'') && !bytes.contains(&b'"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(bytes.len() + 3);
    out.push('b');
    out.push(quote);
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'\t' => out.push_str("\\t"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b if b as char == quote => {
                out.push('\\');
                out.push(quote);
            }
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push(quote);
    out
}

/// Python's `repr()` of a str.
pub fn py_str_repr(text: &str) -> String {
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(text.len() + 2);
    out.push(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(quote);
            }
            c if (c as u32) < 0x20 || (0x7f..0xa0).contains(&(c as u32)) => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reprs_match_python() {
        assert_eq!(py_bytes_repr(b""), "b''");
        assert_eq!(py_bytes_repr(b"alice"), "b'alice'");
        assert_eq!(py_bytes_repr(b"it's"), "b\"it's\"");
        assert_eq!(py_bytes_repr(b"'\""), "b'\\'\"'");
        assert_eq!(py_bytes_repr("é\n\0".as_bytes()), "b'\\xc3\\xa9\\n\\x00'");
        assert_eq!(py_str_repr(" "), "' '");
        assert_eq!(py_str_repr("<unknown>"), "'<unknown>'");
        assert_eq!(py_str_repr("é"), "'é'");
    }
}
