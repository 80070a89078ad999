//! NEO node logs in NEO/py's SQLite format (`neo/lib/logger.py` and the reading half of
//! `neo/scripts/neolog.py` in NEO/py): the schema of the `log`, `packet`, `protocol` and
//! `node` tables, a [`Logger`] that keeps records in a RAM buffer and flushes them by NEO/py's
//! rules (and also at clean shutdown), a [`LogReader`] that reads our files and NEO/py's, and
//! a small helper that turns SIGRTMIN / SIGRTMIN+1 into flags polled by a node's loop.
//!
//! This crate must not depend on tokio or on any cluster crate other than `neo-protocol`: it
//! is used by the daemons and by `neolog`. It never executes code found in a log file; the
//! `protocol` table is read as data (see [`protocol`]).

pub mod protocol;
pub mod reader;
pub mod signals;
pub mod writer;

pub use protocol::{PacketNames, ProtocolError, PROTOCOL_FORMAT};
pub use reader::{LogReader, NodeRef, ReadError, Record, RecordKind};
pub use writer::{Level, LogError, Logger, DEFAULT_MAX_SIZE};

/// The tables NEO/py creates, column for column. `WITHOUT ROWID` makes `date` the storage
/// order, which is what lets readers walk a table by date without sorting.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS log (
  date REAL PRIMARY KEY,
  node INTEGER,
  level INTEGER NOT NULL,
  pathname TEXT,
  lineno INTEGER,
  msg TEXT) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS packet (
  date REAL PRIMARY KEY,
  node INTEGER,
  msg_id INTEGER NOT NULL,
  code INTEGER NOT NULL,
  peer TEXT NOT NULL,
  body BLOB) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS protocol (
  date REAL PRIMARY KEY,
  text BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS node (
  id INTEGER PRIMARY KEY,
  name TEXT,
  cluster TEXT,
  nid INTEGER);
";

/// The smallest double above `date`: how a record whose date is already taken is moved,
/// as NEO/py does, so that the primary key stays unique without losing the record.
pub fn next_date(date: f64) -> f64 {
    if date.is_nan() || date == f64::INFINITY {
        return date;
    }
    if date == 0.0 {
        return f64::from_bits(1);
    }
    let bits = date.to_bits();
    if date > 0.0 {
        f64::from_bits(bits + 1)
    } else {
        f64::from_bits(bits - 1)
    }
}
