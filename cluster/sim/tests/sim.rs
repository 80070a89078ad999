//! The simulator's test binary: the harness itself (`harness`), cluster scenarios named
//! after what they prove (`scenarios`), and the random fault loop with its pinned-seed
//! replay (`seeds`), and the same for clients committing transactions
//! (`transactions`).

#[path = "sim/harness.rs"]
mod harness;
#[path = "sim/scenarios.rs"]
mod scenarios;
#[path = "sim/seeds.rs"]
mod seeds;
#[path = "sim/transactions.rs"]
mod transactions;
