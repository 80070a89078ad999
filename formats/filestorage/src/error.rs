//! Errors of the FileStorage library. Every error about file contents names
//! the file and the byte offset where the problem was found.

use std::path::PathBuf;

use crate::tid::{Oid, Tid};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {action}: {source}", path = path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        source: std::io::Error,
    },

    #[error("{path}: not a FileStorage file: {what}", path = path.display())]
    NotFileStorage { path: PathBuf, what: String },

    #[error("{path}: corrupt at byte {offset}: {what}", path = path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        what: String,
    },

    #[error("{path}: records with a version (vlen={vlen}) at byte {offset} are not supported: \
             the file predates ZODB 3.9", path = path.display())]
    Version {
        path: PathBuf,
        offset: u64,
        vlen: u16,
    },

    #[error("oid {oid}: no such object")]
    NoSuchObject { oid: Oid },

    #[error("oid {oid}: no data (object deleted or its creation undone)")]
    NoData { oid: Oid },

    #[error("oid {oid}: no revision with serial {serial}")]
    NoSuchRevision { oid: Oid, serial: Tid },

    #[error("no transaction with tid {tid}")]
    NoSuchTransaction { tid: Tid },

    #[error("{path}: read-only", path = path.display())]
    ReadOnly { path: PathBuf },

    #[error("{path}: locked by another process ({lock})", path = path.display(), lock = lock.display())]
    Locked { path: PathBuf, lock: PathBuf },

    #[error("tid {tid} is not greater than the last tid {last}")]
    TidNotIncreasing { tid: Tid, last: Tid },

    #[error("{field} too long: {len} bytes (at most 65535)")]
    MetadataTooLong { field: &'static str, len: usize },

    #[error("oid {oid} stored twice in one transaction")]
    DuplicateOid { oid: Oid },

    #[error("conflict on oid {oid}: expected serial {expected}, current is {current}")]
    Conflict {
        oid: Oid,
        expected: Tid,
        current: Tid,
    },

    #[error("cannot undo transaction {tid}: {why}")]
    Undo { tid: Tid, why: String },

    #[error("pack: {0}")]
    Pack(String),

    #[error("oid {oid}: unreadable pickle: {what}")]
    Pickle { oid: Oid, what: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn corrupt(path: &std::path::Path, offset: u64, what: impl Into<String>) -> Error {
        Error::Corrupt {
            path: path.to_path_buf(),
            offset,
            what: what.into(),
        }
    }

    pub(crate) fn io(
        path: &std::path::Path,
        action: &'static str,
        source: std::io::Error,
    ) -> Error {
        Error::Io {
            path: path.to_path_buf(),
            action,
            source,
        }
    }
}
