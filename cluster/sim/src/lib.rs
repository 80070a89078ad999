//! The deterministic cluster simulator: NEO's real node state machines (`neo-master`,
//! `neo-storage` on memory disks, `neo-admin`) run on one thread with a virtual clock,
//! one seed for every random choice, FIFO connections that can be delayed, cut or
//! partitioned, and nodes that can be killed and restarted on the same disk. Checkers
//! look at every packet and at every node after every event (see [`check`]). Clients
//! (`neo-client-core`) run a transactional workload ([`workload`]) whose model is checked
//! against what the storages hold at the end ([`history`]).
//!
//! [`World`] is the harness (clock, event queue, connections, faults); [`Cluster`] builds
//! a cluster in it from a [`Spec`] and answers the questions scenarios ask; [`Ctl`] is a
//! scripted neoctl. The scenarios themselves live in `tests/sim.rs`. This replaces the
//! Patch/ConnectionFilter machinery of NEO/py's functional tests; it ports no NEO/py
//! code. Must not be a dependency of any node crate.

pub mod check;
pub mod cluster;
pub mod ctl;
pub mod history;
pub mod workload;
pub mod world;

pub use cluster::{Cluster, MemoryStorage, Spec};
pub use ctl::{Ctl, Reply};
pub use history::{check_model, Committed, History};
pub use workload::{Model, Workload, WorkloadConfig};
pub use world::{address_of, NetConfig, NodeId, SimNode, Status, World, EPOCH};
