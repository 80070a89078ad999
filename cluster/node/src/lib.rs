//! The sans-IO contract of NEO's node logic, shared by master, storage, admin and client.
//!
//! A node is a state machine: [`Node::handle`] takes one [`Input`] (a packet, a connection
//! event, a timer) with the current time, and pushes what it wants done to an [`Outbox`]
//! (connect, send, close, exit). The same node runs under tokio in the daemons (`neo-net`
//! drives it) and under the deterministic simulator (`neo-sim`), which is why nothing here,
//! nor in any logic crate, may touch sockets, threads, the OS clock or a global RNG: time
//! comes in with every call, randomness from a seeded [`Rng`].
//!
//! Also here: NEO's TID arithmetic ([`tid`]), the node table every node keeps ([`nodes`]),
//! and the partition table with the master's algorithms on it ([`pt`]).
//! Ports the ideas of NEO/py's `neo/lib/{node,pt,util}.py`, not their code.

pub mod io;
pub mod nodes;
pub mod pt;
pub mod rng;
pub mod tid;

pub use io::{ConnId, Input, Node, Outbox, Output, Time};
pub use nodes::{NodeEntry, NodeTable};
pub use pt::{PartitionTable, PtError};
pub use rng::Rng;
