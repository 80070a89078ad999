//! The master node as a sans-IO state machine: election of the primary among masters,
//! cluster states (RECOVERING, VERIFYING, RUNNING, STOPPING), the node table, the
//! partition table and its changes, TID and OID generation, identification of peers,
//! and the admin requests. Ports the behaviour of NEO/py's `neo/master` (cluster.md
//! sections 1-4). Must not depend on tokio, `neo-net`, or the storage.

use neo_protocol::{Address, Nid};

/// How a master is configured (`neomaster` options, tools.md 1.2).
#[derive(Debug, Clone)]
pub struct Config {
    pub cluster: String,
    /// Our listening address (already bound by the driver).
    pub address: Address,
    /// Every master of the cluster, ours included or not (it is added).
    pub masters: Vec<Address>,
    pub partitions: u32,
    pub replicas: u32,
    /// Start a new cluster once this many storages are pending.
    pub autostart: Option<u32>,
    /// Force this NID (testing).
    pub nid: Option<Nid>,
    /// Seeds the master's random choices.
    pub seed: u64,
}
