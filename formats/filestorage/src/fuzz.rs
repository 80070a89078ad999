//! The entry point shared by the cargo-fuzz target (`fuzz/`) and the
//! bounded mutation test that runs on stable in every CI run: given the
//! bytes of a would-be Data.fs, exercise every reading API. Errors are
//! expected; a panic, a hang or an abort is a bug.

use std::io::Write;
use std::path::Path;

use crate::storage::{FileStorage, Options};
use crate::tid::{Oid, Tid};
use crate::{dump, pickle, refs, verify};

/// Writes `bytes` to `scratch` and reads it back in every way.
pub fn read_everything(bytes: &[u8], scratch: &Path) {
    let written = std::fs::File::create(scratch).and_then(|mut f| f.write_all(bytes));
    if written.is_err() {
        return;
    }
    exercise(scratch);
}

/// Reads everything a user could ask of a (possibly damaged) file.
pub fn exercise(path: &Path) {
    let _ = verify::check(path, 2, true, &mut std::io::sink());
    let Ok(fs) = FileStorage::open(
        path,
        Options {
            sidecar: false,
            ..Options::default()
        },
    ) else {
        return;
    };
    let _ = dump::fsdump(&fs, &mut std::io::sink());
    let _ = dump::canonical(&fs, &mut std::io::sink(), false);
    let _ = refs::check(&fs);
    let last = fs.last_transaction();
    let oids: Vec<Oid> = fs.index().iter().map(|(oid, _)| oid).take(16).collect();
    for oid in oids {
        let _ = fs.load(oid);
        let _ = fs.get_tid(oid);
        if let Ok(history) = fs.history(oid, 8) {
            for entry in history {
                let _ = fs.load_serial(oid, entry.tid);
                let _ = fs.load_before(oid, entry.tid);
            }
        }
        let _ = fs.load_before(oid, last);
    }
    let _ = fs.undo_log(0, 16);
    let _ = fs.find_txn(last);
    for start in [None, Some(Tid(last.0 / 2)), Some(last)] {
        let Ok(mut iter) = fs.iter(start, None) else {
            continue;
        };
        while let Ok(Some(txn)) = iter.next_txn() {
            for record in txn.records().flatten() {
                if let Some(data) = record.data {
                    let _ = pickle::references(&data);
                    let _ = pickle::class_name(&data);
                }
            }
        }
    }
}
