//! The storage's [`Backend`](neo_storage::backend::Backend) on SQLite, with NEO/py's
//! schema (cluster.md section 7): a data directory written by NEO/py's SQLite backend
//! opens here, and one written here opens in NEO/py.
//!
//! Ports the behaviour of NEO/py's `neo/storage/database/{manager,sqlite}.py`: schema
//! version 4 and the migrations from older versions, exclusive use of the file through an
//! abstract Unix socket, data ids allocated per partition, optional deduplication, and
//! in-memory references to uncommitted data. Depends on `neo-storage` (the trait) and
//! `neo-protocol` (the id types) only; it runs on the storage node's own thread and does
//! no network I/O.

mod connection;
mod lock;
mod prepared;
mod schema;
mod sqlite;

pub use connection::ConnectionString;
pub use schema::SCHEMA_VERSION;
pub use sqlite::{OpenOptions, SqliteBackend};
