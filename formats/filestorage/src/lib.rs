//! ZODB FileStorage (`Data.fs`): reader, writer, packer and the checks and
//! dumps of ZODB's maintenance scripts.
//!
//! This crate is a leaf: it knows nothing of NEO's cluster, network or
//! tokio, and does no logging of its own (problems are returned as
//! [`Error`] values naming file and byte offset). It is what ZODB's
//! `ZODB/FileStorage/*` and `ZODB/scripts/fs*.py` are to ZODB; the byte
//! layout is described in `FORMAT.md` next to this crate.
//!
//! Main entry points: [`FileStorage`] (open, index, loads, iteration,
//! appending transactions), [`Scanner`] (fast sequential walk), [`pack`],
//! [`verify`] (fstest), [`dump`] (fsdump), [`refs`] (fsrefs).

pub mod dump;
pub mod error;
pub mod format;
#[doc(hidden)]
pub mod fuzz;
pub mod index;
pub mod pack;
pub mod pickle;
pub mod refs;
pub mod scan;
pub mod storage;
pub mod tid;
pub mod verify;

pub use error::{Error, Result};
pub use format::Magic;
pub use scan::{End, Scanner, Strictness, TxnView};
pub use storage::{
    FileStorage, HistoryEntry, Loaded, Options, Record, Transaction, TxnIter, TxnMeta, TxnWriter,
};
pub use tid::{Oid, Tid};
