//! Integration tests of neo-storage: a storage over the in-memory backend, driven by
//! feeding inputs and reading outputs, with the master played by hand and storages wired
//! to each other by a small router.

#[path = "storage/harness.rs"]
mod harness;

#[path = "storage/bootstrap.rs"]
mod bootstrap;
#[path = "storage/checking.rs"]
mod checking;
#[path = "storage/initialisation.rs"]
mod initialisation;
#[path = "storage/operation.rs"]
mod operation;
#[path = "storage/replication.rs"]
mod replication;
#[path = "storage/transactions.rs"]
mod transactions;
