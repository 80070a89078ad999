//! A NEO cluster in a [`World`]: masters, storages on memory disks, admins and a scripted
//! neoctl, built from a [`Spec`], with the questions scenarios ask ("who is primary?",
//! "is every cell up to date?") and the data model that checks what storages hold.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use neo_admin::Admin;
use neo_master::Master;
use neo_node::{NodeTable, PartitionTable};
use neo_protocol::{Address, Bytes, CellState, ClusterState, Nid, NodeState, Oid, Packet, Tid};
use neo_storage::{Backend, MemoryBackend, MemoryDisk, Storage, StoredData, TransactionRecord};
use sha1::{Digest, Sha1};

use crate::ctl::{Ctl, Reply};
use crate::workload::{Model, SharedModel, Workload, WorkloadConfig};
use crate::world::{address_of, NodeId, World};

/// The storage type the simulator runs.
pub type MemoryStorage = Storage<MemoryBackend>;

/// The shape of a cluster.
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub masters: usize,
    pub storages: usize,
    pub admins: usize,
    pub partitions: u32,
    pub replicas: u32,
    pub autostart: Option<u32>,
    /// Client nodes running [`Workload`] (added after the admins).
    pub clients: usize,
    pub workload: WorkloadConfig,
}

impl Default for Spec {
    fn default() -> Spec {
        Spec {
            name: "sim".to_string(),
            masters: 1,
            storages: 2,
            admins: 1,
            partitions: 4,
            replicas: 1,
            autostart: Some(2),
            clients: 0,
            workload: WorkloadConfig::default(),
        }
    }
}

pub struct Cluster {
    pub world: World,
    pub spec: Spec,
    pub masters: Vec<NodeId>,
    pub storages: Vec<NodeId>,
    pub admins: Vec<NodeId>,
    pub clients: Vec<NodeId>,
    /// What the clients did and saw (see [`crate::history`]).
    pub model: SharedModel,
    master_addresses: Vec<Address>,
    disks: BTreeMap<NodeId, MemoryDisk>,
    ctl: Option<NodeId>,
    /// Transactions written to the storages' disks: tid → oids (the committed history
    /// every readable cell must hold).
    pub history: BTreeMap<Tid, Vec<Oid>>,
}

impl Cluster {
    /// Builds the cluster and starts every node (masters first, so that their addresses
    /// are the first ones).
    pub fn new(seed: u64, spec: Spec) -> Cluster {
        let world = World::new(seed);
        let master_addresses: Vec<Address> = (0..spec.masters).map(address_of).collect();
        let mut cluster = Cluster {
            world,
            spec,
            masters: Vec::new(),
            storages: Vec::new(),
            admins: Vec::new(),
            clients: Vec::new(),
            model: Rc::new(RefCell::new(Model::default())),
            master_addresses,
            disks: BTreeMap::new(),
            ctl: None,
            history: BTreeMap::new(),
        };
        for _ in 0..cluster.spec.masters {
            cluster.add_master();
        }
        for _ in 0..cluster.spec.storages {
            cluster.add_storage();
        }
        for _ in 0..cluster.spec.admins {
            cluster.add_admin();
        }
        for _ in 0..cluster.spec.clients {
            cluster.add_client();
        }
        cluster
    }

    fn add_master(&mut self) -> NodeId {
        let index = self.masters.len();
        let address = self.world.next_address();
        let config = neo_master::Config {
            cluster: self.spec.name.clone(),
            address,
            masters: self.master_addresses.clone(),
            partitions: self.spec.partitions,
            replicas: self.spec.replicas,
            autostart: self.spec.autostart,
            nid: None,
            seed: 0,
        };
        let id = self.world.add_node(
            &format!("m{index}"),
            Box::new(move |seed| {
                let mut config = config.clone();
                config.seed = seed;
                Ok(Box::new(Master::new(config)))
            }),
        );
        self.masters.push(id);
        id
    }

    /// Adds a storage on a new, empty disk, and starts it.
    pub fn add_storage(&mut self) -> NodeId {
        let index = self.storages.len();
        let disk = MemoryDisk::new();
        let config = neo_storage::Config {
            cluster: self.spec.name.clone(),
            address: self.world.next_address(),
            masters: self.master_addresses.clone(),
            nid: None,
            devpath: Vec::new(),
            seed: 0,
            disable_drop_partitions: false,
        };
        let node_disk = disk.clone();
        let id = self.world.add_node(
            &format!("s{index}"),
            Box::new(move |seed| {
                let mut config = config.clone();
                config.seed = seed;
                let backend = MemoryBackend::open(node_disk.clone()).map_err(|e| e.to_string())?;
                let storage = Storage::new(config, backend).map_err(|e| e.to_string())?;
                Ok(Box::new(storage))
            }),
        );
        self.disks.insert(id, disk);
        self.storages.push(id);
        id
    }

    pub fn add_admin(&mut self) -> NodeId {
        let index = self.admins.len();
        let config = neo_admin::Config {
            cluster: self.spec.name.clone(),
            address: self.world.next_address(),
            masters: self.master_addresses.clone(),
            nid: None,
            monitor_maxlag: 0.0,
            monitor_backup: Vec::new(),
        };
        let id = self.world.add_node(
            &format!("a{index}"),
            Box::new(move |_| Ok(Box::new(Admin::new(config.clone())))),
        );
        self.admins.push(id);
        id
    }

    /// Adds a client node running the workload, and starts it.
    pub fn add_client(&mut self) -> NodeId {
        let index = self.clients.len();
        let mut config =
            neo_client_core::Config::new(self.master_addresses.clone(), self.spec.name.clone());
        // Small, so that evictions happen too.
        config.cache_size = 4096;
        let workload = self.spec.workload.clone();
        let model = self.model.clone();
        let id = self.world.add_node(
            &format!("c{index}"),
            Box::new(move |seed| {
                let mut config = config.clone();
                config.seed = seed;
                let client = neo_client_core::Client::new(config);
                Ok(Box::new(Workload::new(
                    client,
                    index,
                    workload.clone(),
                    seed.rotate_left(17),
                    model.clone(),
                )))
            }),
        );
        self.clients.push(id);
        id
    }

    pub fn workload(&self, id: NodeId) -> Option<&Workload> {
        self.world.get::<Workload>(id)
    }

    // --- Questions --------------------------------------------------------------------

    /// The running master that plays the primary role beyond RECOVERING, if exactly one
    /// does; otherwise the one primary in RECOVERING whose election others follow.
    pub fn primary(&self) -> Option<NodeId> {
        let primaries: Vec<NodeId> = self
            .masters
            .iter()
            .copied()
            .filter(|id| {
                self.world
                    .get::<Master>(*id)
                    .is_some_and(|m| m.is_primary())
            })
            .collect();
        let reigning: Vec<NodeId> = primaries
            .iter()
            .copied()
            .filter(|id| self.master(*id).cluster_state() != ClusterState::Recovering)
            .collect();
        match (reigning.as_slice(), primaries.as_slice()) {
            ([one], _) => Some(*one),
            ([], [one]) => Some(*one),
            _ => None,
        }
    }

    pub fn master(&self, id: NodeId) -> &Master {
        self.world.get::<Master>(id).expect("a running master")
    }

    pub fn storage(&self, id: NodeId) -> Option<&MemoryStorage> {
        self.world.get::<MemoryStorage>(id)
    }

    pub fn admin(&self, id: NodeId) -> Option<&Admin> {
        self.world.get::<Admin>(id)
    }

    /// The cluster state according to the primary.
    pub fn cluster_state(&self) -> Option<ClusterState> {
        self.primary().map(|id| self.master(id).cluster_state())
    }

    pub fn is_running(&self) -> bool {
        self.cluster_state() == Some(ClusterState::Running)
    }

    /// The primary's partition table and node table.
    pub fn primary_view(&self) -> Option<(&PartitionTable, &NodeTable)> {
        let master = self.master(self.primary()?);
        Some((master.partition_table(), master.nodes()))
    }

    /// The NID the storage runs under.
    pub fn nid(&self, storage: NodeId) -> Option<Nid> {
        self.storage(storage).and_then(|s| s.nid())
    }

    /// The states of a storage's cells in the primary's table.
    pub fn cells_of(&self, storage: NodeId) -> Vec<(u32, CellState)> {
        match (self.nid(storage), self.primary_view()) {
            (Some(nid), Some((pt, _))) => pt.cells_of(nid),
            _ => Vec::new(),
        }
    }

    /// The storage's state in the primary's node table.
    pub fn node_state(&self, storage: NodeId) -> Option<NodeState> {
        let nid = self.nid(storage)?;
        let (_, nodes) = self.primary_view()?;
        nodes.get(nid).map(|e| e.state)
    }

    /// RUNNING, with every cell of the table UP_TO_DATE and every storage of the table
    /// running and operational.
    pub fn is_settled(&self) -> bool {
        if !self.is_running() {
            return false;
        }
        let Some((pt, nodes)) = self.primary_view() else {
            return false;
        };
        let all_up = (0..pt.np()).all(|p| pt.row(p).iter().all(|c| c.state == CellState::UpToDate));
        let storages_ok = pt.nodes().iter().all(|nid| {
            nodes.is_running(*nid)
                && self.storages.iter().any(|id| {
                    self.storage(*id)
                        .is_some_and(|s| s.nid() == Some(*nid) && s.is_operational())
                })
        });
        all_up && storages_ok
    }

    /// NIDs in the primary's table that no storage of the world uses (running or not:
    /// a killed storage's NID is on its disk). Such a cell can never come back.
    pub fn orphan_nids(&self) -> Vec<Nid> {
        let Some((pt, _)) = self.primary_view() else {
            return Vec::new();
        };
        let used: Vec<Nid> = self
            .disks
            .values()
            .filter_map(|disk| disk_nid(disk).or(None))
            .chain(self.storages.iter().filter_map(|id| self.nid(*id)))
            .collect();
        pt.nodes()
            .into_iter()
            .filter(|n| !used.contains(n))
            .collect()
    }

    /// A multi-line picture of every node's view, for failure reports.
    pub fn describe(&self) -> String {
        let mut lines = Vec::new();
        for id in self.world.node_ids() {
            let name = self.world.name(id);
            if let Some(m) = self.world.get::<Master>(id) {
                lines.push(format!(
                    "{name}: master {:?} primary={} {} ptid={:?} rows={:?}",
                    m.nid().map(|n| n.to_string()),
                    m.is_primary(),
                    m.cluster_state(),
                    m.partition_table().ptid(),
                    m.partition_table().rows()
                ));
                for e in m.nodes().iter() {
                    lines.push(format!(
                        "    {:?} {:?} {:?} {} conn={:?}",
                        e.nid.map(|n| n.to_string()),
                        e.node_type,
                        e.address.as_ref().map(|a| a.port),
                        e.state,
                        e.conn
                    ));
                }
            } else if let Some(s) = self.world.get::<MemoryStorage>(id) {
                let (ptid, _, rows) = s.partition_table();
                lines.push(format!(
                    "{name}: storage {:?} {:?} {:?} ptid={ptid:?} rows={rows:?}",
                    s.nid().map(|n| n.to_string()),
                    s.phase(),
                    s.cluster_state()
                ));
            } else if let Some(a) = self.world.get::<Admin>(id) {
                lines.push(format!(
                    "{name}: admin connected={} {:?}",
                    a.is_connected(),
                    a.cluster_state()
                ));
            } else {
                lines.push(format!("{name}: {:?}", self.world.status(id)));
            }
        }
        lines.push(format!(
            "orphan NIDs in the primary's table: {:?}",
            self.orphan_nids()
        ));
        lines.join("\n")
    }

    // --- Actions ----------------------------------------------------------------------

    /// Runs until the predicate on the cluster holds, at most `max_seconds`.
    pub fn run_until(
        &mut self,
        mut predicate: impl FnMut(&Cluster) -> bool,
        max_seconds: f64,
    ) -> bool {
        let end = self.world.now() + max_seconds;
        loop {
            if predicate(self) {
                return true;
            }
            if !self.world.step(end) {
                return predicate(self);
            }
        }
    }

    /// Sends a request through the scripted neoctl to the first admin and waits for the
    /// answer (at most 30 s).
    pub fn neoctl(&mut self, packet: impl Into<Packet>) -> Reply {
        let ctl = match self.ctl {
            Some(ctl) => ctl,
            None => {
                let target = self.world.address(self.admins[0]);
                let ctl = self.world.add_node(
                    "ctl",
                    Box::new(move |_| Ok(Box::new(Ctl::new(target.clone())))),
                );
                self.ctl = Some(ctl);
                self.world.run_for(0.0);
                ctl
            }
        };
        let packet = packet.into();
        let ticket = self
            .world
            .act::<Ctl, _>(ctl, |c, _, out| c.request(out, packet))
            .expect("the ctl node runs");
        self.world.run_until(
            |w| {
                w.get::<Ctl>(ctl)
                    .is_some_and(|c| *c.reply(ticket) != Reply::Waiting)
            },
            30.0,
        );
        self.world
            .get::<Ctl>(ctl)
            .map_or(Reply::Lost, |c| c.reply(ticket).clone())
    }

    /// Kills every storage, writes `count` committed transactions (each storing two
    /// objects) onto every disk whose node has cells, restarts them, and records the
    /// transactions in [`Cluster::history`]. Storages must have a stored partition table.
    pub fn prefill(&mut self, count: usize) {
        let storages = self.storages.clone();
        for &id in &storages {
            self.world.kill(id);
        }
        let first = self.history.keys().next_back().map_or(1, |t| t.0 + 1);
        let mut written = Vec::new();
        for i in 0..count as u64 {
            let tid = Tid(first + i * 7);
            let oids = vec![Oid(tid.0 % 16), Oid((tid.0 + 3) % 16)];
            written.push((tid, oids));
        }
        for id in &storages {
            let disk = self.disks[id].clone();
            let mut backend = MemoryBackend::open(disk).expect("the storage was killed");
            for (tid, oids) in &written {
                write_transaction(&mut backend, *tid, oids);
            }
            backend.commit().expect("memory commit");
        }
        self.history.extend(written);
        for &id in &storages {
            self.world.restart(id);
        }
    }

    /// Writes transactions onto the disk of one (killed) storage only, as if it had
    /// committed them while its peers were away.
    pub fn write_to_disk(&mut self, storage: NodeId, count: usize) {
        assert!(
            !self.world.is_up(storage),
            "kill the storage before writing its disk"
        );
        let first = self.history.keys().next_back().map_or(1, |t| t.0 + 1);
        let disk = self.disks[&storage].clone();
        let mut backend = MemoryBackend::open(disk).expect("the storage was killed");
        for i in 0..count as u64 {
            let tid = Tid(first + i * 5);
            let oids = vec![Oid(tid.0 % 16)];
            write_transaction(&mut backend, tid, &oids);
            self.history.insert(tid, oids);
        }
        backend.commit().expect("memory commit");
    }

    /// Checks the data model: every operational storage with an UP_TO_DATE cell (in the
    /// primary's table) holds exactly the transactions and object revisions of
    /// [`Cluster::history`] that belong to that partition. Returns the mismatches.
    pub fn check_data(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let Some((pt, _)) = self.primary_view() else {
            return vec!["no primary".to_string()];
        };
        let np = pt.np() as u64;
        for &id in &self.storages {
            // Only what the cluster serves: a storage still bootstrapping may carry a NID
            // the master has since given to another node.
            let Some(storage) = self.storage(id).filter(|s| s.is_operational()) else {
                continue;
            };
            let Some(nid) = storage.nid() else {
                continue;
            };
            let backend = storage.backend();
            for (partition, state) in pt.cells_of(nid) {
                if state != CellState::UpToDate {
                    continue;
                }
                let expected_tids: Vec<Tid> = self
                    .history
                    .keys()
                    .copied()
                    .filter(|t| t.0 % np == partition as u64)
                    .collect();
                let tids = backend
                    .tids_range(partition, Tid(0), Tid(u64::MAX), usize::MAX)
                    .unwrap_or_default();
                if tids != expected_tids {
                    problems.push(format!(
                        "{} partition {partition}: transactions {tids:?}, expected {expected_tids:?}",
                        self.world.name(id)
                    ));
                }
                let mut expected_objects: Vec<(Tid, Oid)> = self
                    .history
                    .iter()
                    .flat_map(|(t, oids)| oids.iter().map(move |o| (*t, *o)))
                    .filter(|(_, o)| o.0 % np == partition as u64)
                    .collect();
                expected_objects.sort();
                expected_objects.dedup();
                let objects = backend
                    .objects_range(partition, Tid(0), Oid(0), Tid(u64::MAX), usize::MAX)
                    .unwrap_or_default();
                if objects != expected_objects {
                    problems.push(format!(
                        "{} partition {partition}: objects {objects:?}, expected {expected_objects:?}",
                        self.world.name(id)
                    ));
                }
            }
        }
        problems
    }
}

/// The NID committed on a disk, if no storage has it open.
fn disk_nid(disk: &MemoryDisk) -> Option<Nid> {
    MemoryBackend::open(disk.clone()).ok()?.nid().ok()?
}

/// One committed transaction storing a small object per oid.
fn write_transaction(backend: &mut MemoryBackend, tid: Tid, oids: &[Oid]) {
    let record = TransactionRecord {
        tid,
        ttid: tid,
        oids: oids.to_vec(),
        user: Bytes::from_static(b"sim"),
        description: Bytes::from(format!("prefill {}", tid.0)),
        extension: Bytes::new(),
        packed: false,
        pack: None,
    };
    backend
        .store_transaction(&record, false)
        .expect("memory store");
    for oid in oids {
        let value = Bytes::from(format!("object {} at {}", oid.0, tid.0));
        let checksum: [u8; 20] = Sha1::digest(&value).into();
        let data = StoredData {
            compression: 0,
            checksum,
            value,
        };
        backend
            .store_object(*oid, tid, Some(&data), None, false)
            .expect("memory store");
    }
}
