//! The storage node: its logic as a sans-IO state machine over a [`Backend`], and the
//! in-memory backend used by tests and the simulator. Ports the behaviour of NEO/py's
//! `neo/storage` (cluster.md sections 2.11, 3.12, 5, 6, 7). Must not depend on tokio,
//! `neo-net`, or the master.

pub mod backend;
mod checker;
pub mod memory;
mod node;
mod pack;
mod replication;
mod table;
mod transactions;

pub use backend::{Backend, BackendError, ObjectRecord, PtRow, StoredData, TransactionRecord};
pub use checker::CHECK_COUNT;
pub use memory::{MemoryBackend, MemoryDisk};
pub use node::{Config, Phase, StartError, Storage};
pub use replication::FETCH_COUNT;
