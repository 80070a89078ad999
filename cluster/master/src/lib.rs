//! The master node as a sans-IO state machine: election of the primary among masters,
//! cluster states (RECOVERING, VERIFYING, RUNNING, STOPPING), the node table, the
//! partition table and its changes, TID and OID generation, identification of peers,
//! and the admin requests. Ports the behaviour of NEO/py's `neo/master` (cluster.md
//! sections 1-4). Must not depend on tokio, `neo-net`, or the storage.
//!
//! The code is split by phase, as NEO/py's handlers are: `identification` (who may join
//! and what they are told), `election` (masters among themselves, and the secondary
//! role), `recovery` and `verification` (getting the cluster back from its storages),
//! `service` (RUNNING: storages coming and going, replication bookkeeping) and `admin`
//! (requests relayed by the admin node).

mod admin;
mod election;
mod identification;
mod pack;
mod recovery;
mod service;
mod transactions;
mod verification;

use std::collections::{BTreeMap, BTreeSet};

use neo_node::{ConnId, Input, Node, NodeEntry, NodeTable, Outbox, PartitionTable, Time};
use neo_protocol::{
    Address, CellChange, ClusterState, ErrorCode, Nid, NodeInfo, NodeState, NodeType, Oid, Packet,
    Tid,
};

pub use recovery::Recovery;
pub use verification::Verification;

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

/// How often the master re-evaluates its loops (NEO/py polls with a 1 s timeout).
const POLL_PERIOD: f64 = 1.0;

/// What a connection is to us.
#[derive(Debug, Clone, PartialEq)]
enum Peer {
    /// Accepted, waiting for RequestIdentification.
    Unidentified,
    /// Identified as this node (its entry in the node table has this connection).
    Node(Nid),
    /// Our connection to another master during the election (primary role).
    Election(Address),
    /// Our connection to the primary (secondary role).
    Primary(Address),
}

#[derive(Debug)]
struct Connection {
    peer: Peer,
    /// Requests we sent on it and still wait for (msg_id -> what).
    asked: BTreeMap<u32, Asked>,
    /// Set once the driver reported the connection established (outgoing ones).
    established: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Asked {
    Identification,
    Recovery,
    PartitionTable,
    LockedTransactions,
    FinalTid(Tid),
    LastIds,
    PackOrders,
    /// AskLockInformation for this TTID.
    Lock(Tid),
}

/// Which role the master plays.
#[derive(Debug, Clone, PartialEq)]
enum Role {
    Primary,
    /// Following the primary at this address.
    Secondary {
        primary: Address,
    },
}

/// The master.
pub struct Master {
    config: Config,
    nid: Option<Nid>,
    role: Role,
    nodes: NodeTable,
    conns: BTreeMap<ConnId, Connection>,
    cluster_state: ClusterState,
    pt: PartitionTable,
    /// Last value of `monotonic_time`, which must strictly increase.
    last_time: f64,
    /// The election key: when we started to play the primary role.
    primary_since: f64,
    startup_allowed: bool,
    recovery: Recovery,
    verification: Option<Verification>,
    last_tid: Tid,
    last_oid: Oid,
    first_tid: Tid,
    truncate_tid: Option<Tid>,
    backup_tid: Option<Tid>,
    /// Storages sent StartOperation that did not answer NotifyReady yet.
    starting: BTreeSet<Nid>,
    /// Readiness counter value recorded for each ready storage.
    ready: BTreeMap<Nid, u64>,
    readiness: u64,
    /// Non-readable cells (partition, nid) allowed to become UP_TO_DATE (3.5).
    updatable: BTreeSet<(u32, Nid)>,
    /// Next time to run the periodic work.
    next_poll: Option<Time>,
    /// Earliest time to retry connecting to each master (one attempt per second).
    retry_after: BTreeMap<Address, Time>,
    /// Set when shutting down; the process exits when no transaction is pending.
    stopping: bool,
    exited: bool,
    tm: transactions::TransactionManager,
    pm: pack::PackManager,
    /// Clients identified with `read_only`: they may read, not write.
    read_only_clients: BTreeSet<Nid>,
    /// When each election connection attempt last ended (failed, refused, redirected).
    election_concluded: BTreeMap<Address, Time>,
    /// When recovery's exit condition first held in this recovery.
    recovery_ready_since: Option<Time>,
}

impl Master {
    pub fn new(config: Config) -> Master {
        let mut nodes = NodeTable::new();
        let mut me = NodeEntry::new(NodeType::Master, None, Some(config.address.clone()));
        me.state = NodeState::Running;
        nodes.add(me);
        for address in &config.masters {
            if *address != config.address && nodes.by_address(address).is_none() {
                nodes.add(NodeEntry::new(
                    NodeType::Master,
                    None,
                    Some(address.clone()),
                ));
            }
        }
        let pt = PartitionTable::new(config.partitions, config.replicas);
        Master {
            nid: None,
            role: Role::Primary,
            nodes,
            conns: BTreeMap::new(),
            cluster_state: ClusterState::Recovering,
            pt,
            last_time: 0.0,
            primary_since: 0.0,
            startup_allowed: false,
            recovery: Recovery::default(),
            verification: None,
            last_tid: Tid::ZERO,
            last_oid: Oid::ZERO,
            first_tid: Tid::ZERO,
            truncate_tid: None,
            backup_tid: None,
            starting: BTreeSet::new(),
            ready: BTreeMap::new(),
            readiness: 0,
            updatable: BTreeSet::new(),
            next_poll: None,
            retry_after: BTreeMap::new(),
            stopping: false,
            exited: false,
            tm: transactions::TransactionManager::default(),
            pm: pack::PackManager::default(),
            read_only_clients: BTreeSet::new(),
            election_concluded: BTreeMap::new(),
            recovery_ready_since: None,
            config,
        }
    }

    // --- Read access, for tests, the simulator's checkers and logs ----------------------

    pub fn nid(&self) -> Option<Nid> {
        self.nid
    }

    pub fn is_primary(&self) -> bool {
        self.role == Role::Primary
    }

    /// The primary's address as this master believes it.
    pub fn primary_address(&self) -> Option<&Address> {
        match &self.role {
            Role::Primary => Some(&self.config.address),
            Role::Secondary { primary } => Some(primary),
        }
    }

    pub fn cluster_state(&self) -> ClusterState {
        self.cluster_state
    }

    pub fn partition_table(&self) -> &PartitionTable {
        &self.pt
    }

    pub fn nodes(&self) -> &NodeTable {
        &self.nodes
    }

    pub fn last_ids(&self) -> (Tid, Oid) {
        (self.last_tid, self.last_oid)
    }

    pub fn address(&self) -> &Address {
        &self.config.address
    }

    // --- Shared helpers --------------------------------------------------------------

    /// NEO/py's `monotonic_time`: wall-clock seconds, forced to increase by 1 ms when the
    /// clock did not advance (receivers assert it).
    fn monotonic(&mut self, now: Time) -> f64 {
        if now > self.last_time {
            self.last_time = now;
        } else {
            self.last_time += 1e-3;
        }
        self.last_time
    }

    fn peer(&self, conn: ConnId) -> Option<&Peer> {
        self.conns.get(&conn).map(|c| &c.peer)
    }

    fn ask(&mut self, out: &mut Outbox, conn: ConnId, packet: impl Into<Packet>, what: Asked) {
        let msg_id = out.ask(conn, packet);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.asked.insert(msg_id, what);
        }
    }

    /// Whether we wait for an answer from this node.
    fn has_pending_request(&self, nid: Nid) -> bool {
        self.nodes
            .get(nid)
            .and_then(|e| e.conn)
            .and_then(|c| self.conns.get(&c))
            .is_some_and(|c| !c.asked.is_empty())
    }

    /// Closes a connection we decided to drop, and forgets it as if it had been lost
    /// (without the loss handling, which the caller does when needed).
    fn drop_connection(&mut self, out: &mut Outbox, conn: ConnId) {
        if self.conns.remove(&conn).is_some() {
            out.close(conn);
        }
        for entry in self.nodes.iter_mut() {
            if entry.conn == Some(conn) {
                entry.conn = None;
            }
        }
    }

    fn node_conn(&self, nid: Nid) -> Option<ConnId> {
        self.nodes.get(nid).and_then(|e| e.conn)
    }

    fn identified_storages(&self) -> Vec<Nid> {
        self.nodes
            .of_type(NodeType::Storage)
            .filter(|e| e.conn.is_some())
            .filter_map(|e| e.nid)
            .collect()
    }

    fn is_running(&self, nid: Nid) -> bool {
        self.nodes.is_running(nid)
    }

    /// NotifyNodeInformation to every identified node, filtered per destination type
    /// (cluster.md 1.5); at most one packet per node.
    fn broadcast_nodes(&mut self, out: &mut Outbox, now: Time, changed: &[NodeInfo]) {
        if changed.is_empty() {
            return;
        }
        let timestamp = self.monotonic(now);
        let targets: Vec<(ConnId, NodeType)> = self
            .nodes
            .iter()
            .filter_map(|e| e.conn.map(|c| (c, e.node_type)))
            .collect();
        for (conn, node_type) in targets {
            let list: Vec<NodeInfo> = changed
                .iter()
                .filter(|info| visible_to(node_type, info.node_type))
                .cloned()
                .collect();
            if !list.is_empty() {
                out.notify(
                    conn,
                    neo_protocol::NotifyNodeInformation {
                        timestamp,
                        node_list: list,
                    },
                );
            }
        }
    }

    fn broadcast_node(&mut self, out: &mut Outbox, now: Time, nid: Nid) {
        if let Some(info) = self.nodes.get(nid).map(NodeEntry::info) {
            self.broadcast_nodes(out, now, &[info]);
        }
    }

    /// NotifyPartitionChanges to every identified non-master node; the caller has applied
    /// the changes to `self.pt`, which bumped the ptid once.
    fn broadcast_pt_changes(&mut self, out: &mut Outbox, changes: Vec<CellChange>) {
        // No change, no new ptid: receivers require ptid + 1 in every notification.
        if changes.is_empty() {
            return;
        }
        self.send_pt_notification(out, changes);
    }

    /// NotifyPartitionChanges with the current ptid, even with no cell (SetNumReplicas
    /// takes a ptid of its own).
    fn send_pt_notification(&mut self, out: &mut Outbox, changes: Vec<CellChange>) {
        let Some(ptid) = self.pt.ptid() else {
            return;
        };
        // A cell that stops being readable must ask for the unfinished transactions again
        // before it may become UP_TO_DATE (cluster.md 3.5).
        for change in &changes {
            if !matches!(
                change.state,
                neo_protocol::CellState::UpToDate | neo_protocol::CellState::Feeding
            ) {
                self.updatable.remove(&(change.partition, change.nid));
            }
        }
        let packet = neo_protocol::NotifyPartitionChanges {
            ptid,
            num_replicas: self.pt.replicas(),
            cell_list: changes,
        };
        for conn in self.non_master_conns() {
            out.notify(conn, packet.clone());
        }
    }

    fn non_master_conns(&self) -> Vec<ConnId> {
        self.nodes
            .iter()
            .filter(|e| e.node_type != NodeType::Master)
            .filter_map(|e| e.conn)
            .collect()
    }

    fn send_pt(&self, out: &mut Outbox, conn: ConnId) {
        out.notify(
            conn,
            neo_protocol::SendPartitionTable {
                ptid: self.pt.ptid(),
                num_replicas: self.pt.replicas(),
                row_list: self.pt.rows(),
            },
        );
    }

    fn admin_conns(&self) -> Vec<ConnId> {
        self.nodes
            .of_type(NodeType::Admin)
            .filter_map(|e| e.conn)
            .collect()
    }

    fn change_cluster_state(&mut self, out: &mut Outbox, state: ClusterState) {
        if self.cluster_state == state {
            return;
        }
        tracing::info!("cluster state: {} -> {}", self.cluster_state, state);
        self.cluster_state = state;
        let conns: Vec<ConnId> = self.nodes.iter().filter_map(|e| e.conn).collect();
        for conn in conns {
            out.notify(conn, neo_protocol::NotifyClusterInformation { state });
        }
    }

    /// Whether the table can serve: every partition has a readable cell on a running node.
    fn operational(&self) -> bool {
        let nodes = &self.nodes;
        self.pt.is_operational(|nid| nodes.is_running(nid), &[])
    }

    fn schedule_poll(&mut self, now: Time) {
        let at = now + POLL_PERIOD;
        if self.next_poll.is_none_or(|t| t > at) {
            self.next_poll = Some(at);
        }
    }

    fn exit(&mut self, out: &mut Outbox, code: i32, reason: &str) {
        if !self.exited {
            self.exited = true;
            out.exit(code, reason);
        }
    }
}

impl Node for Master {
    fn handle(&mut self, now: Time, input: Input, out: &mut Outbox) {
        if self.exited {
            return;
        }
        match input {
            Input::Start => self.start_primary(now, out),
            Input::Timer => {
                if self.next_poll.is_some_and(|t| t <= now) {
                    self.next_poll = None;
                    self.poll(now, out);
                }
            }
            Input::Accepted { conn, .. } => {
                self.conns.insert(
                    conn,
                    Connection {
                        peer: Peer::Unidentified,
                        asked: BTreeMap::new(),
                        established: true,
                    },
                );
            }
            Input::Connected { conn } => self.connected(out, conn),
            Input::ConnectFailed { conn } | Input::Closed { conn } => {
                out.forget(conn);
                self.connection_lost(now, out, conn);
            }
            Input::Packet {
                conn,
                msg_id,
                packet,
            } => self.packet(now, out, conn, msg_id, packet),
            Input::Answer {
                conn,
                msg_id,
                packet,
            } => {
                let asked = self
                    .conns
                    .get_mut(&conn)
                    .and_then(|c| c.asked.remove(&msg_id));
                match asked {
                    Some(asked) => self.answer(now, out, conn, asked, packet),
                    None => {
                        tracing::warn!("unexpected answer {} on {conn:x}", packet.name());
                    }
                }
            }
            Input::Idle => {}
            Input::Shutdown => self.exit(out, 0, "shutdown requested"),
        }
        if !self.exited {
            self.after_event(now, out);
        }
    }

    fn deadline(&self) -> Option<Time> {
        if self.exited {
            None
        } else {
            self.next_poll
        }
    }
}

impl Master {
    /// Work that depends on the whole state: NEO/py re-evaluates its loop conditions after
    /// every event.
    fn after_event(&mut self, now: Time, out: &mut Outbox) {
        if self.role == Role::Primary {
            match self.cluster_state {
                ClusterState::Recovering => self.recovery_check(now, out),
                ClusterState::Verifying => self.verification_check(now, out),
                _ => {}
            }
            if self.stopping {
                self.stopping_check(now, out);
            }
        }
        if self.next_poll.is_none() {
            self.schedule_poll(now);
        }
    }

    fn poll(&mut self, now: Time, out: &mut Outbox) {
        match self.role.clone() {
            Role::Primary => {
                if self.cluster_state == ClusterState::Recovering {
                    self.connect_to_masters(now, out);
                }
            }
            Role::Secondary { primary } => self.secondary_poll(now, out, primary),
        }
        self.schedule_poll(now);
    }

    fn packet(&mut self, now: Time, out: &mut Outbox, conn: ConnId, msg_id: u32, packet: Packet) {
        let Some(peer) = self.peer(conn).cloned() else {
            return;
        };
        match (&peer, packet) {
            (_, Packet::RequestIdentification(request)) => {
                if peer == Peer::Unidentified {
                    self.request_identification(now, out, conn, msg_id, request);
                } else {
                    self.protocol_error(out, conn, msg_id, "already identified");
                }
            }
            (_, Packet::Ping(_)) => out.answer(conn, msg_id, neo_protocol::Pong {}),
            (_, Packet::CloseClient(_)) => {}
            (Peer::Unidentified, packet) => {
                let reason = format!("{} before identification", packet.name());
                self.protocol_error(out, conn, msg_id, &reason);
            }
            (Peer::Primary(_), packet) => self.primary_packet(out, conn, packet),
            (Peer::Election(_), Packet::NotPrimaryMaster(p)) => {
                self.not_primary_master(now, out, conn, p)
            }
            (Peer::Election(_), packet) => {
                tracing::debug!("ignoring {} from a master", packet.name());
            }
            (Peer::Node(nid), packet) => {
                let Some(packet) = self.common_request(out, conn, msg_id, packet) else {
                    return;
                };
                let node_type = self.nodes.get(*nid).map(|e| e.node_type);
                match node_type {
                    Some(NodeType::Storage) => {
                        self.storage_packet(now, out, conn, *nid, msg_id, packet)
                    }
                    Some(NodeType::Admin) => self.admin_packet(now, out, conn, msg_id, packet),
                    Some(NodeType::Client) => {
                        self.client_packet(now, out, conn, *nid, msg_id, packet)
                    }
                    Some(NodeType::Master) => {
                        tracing::debug!("ignoring {} from secondary {nid}", packet.name())
                    }
                    None => {}
                }
            }
        }
    }

    fn answer(&mut self, now: Time, out: &mut Outbox, conn: ConnId, asked: Asked, packet: Packet) {
        if let Packet::Error(e) = &packet {
            if asked != Asked::Identification {
                tracing::warn!(
                    "{asked:?} answered by error {}: {}",
                    e.code,
                    String::from_utf8_lossy(&e.message)
                );
                self.drop_connection(out, conn);
                self.connection_lost_after_drop(now, out, conn);
                return;
            }
        }
        match asked {
            Asked::Identification => self.identification_answered(now, out, conn, packet),
            Asked::Lock(ttid) => {
                if let Some(nid) = self.nodes.by_conn(conn).and_then(|e| e.nid) {
                    self.information_locked(now, out, nid, ttid);
                }
            }
            Asked::Recovery | Asked::PartitionTable => self.recovery_answer(now, out, conn, packet),
            Asked::LockedTransactions | Asked::FinalTid(_) | Asked::LastIds | Asked::PackOrders => {
                self.verification_answer(now, out, conn, asked, packet)
            }
        }
    }

    /// Requests any identified node may send (NEO/py's generic master handler); returns
    /// the packet back if it is not one of them.
    fn common_request(
        &mut self,
        out: &mut Outbox,
        conn: ConnId,
        msg_id: u32,
        packet: Packet,
    ) -> Option<Packet> {
        match packet {
            Packet::AskClusterState(_) => out.answer(
                conn,
                msg_id,
                neo_protocol::AnswerClusterState {
                    state: Some(self.cluster_state),
                },
            ),
            Packet::AskRecovery(_) => out.answer(
                conn,
                msg_id,
                neo_protocol::AnswerRecovery {
                    ptid: self.pt.ptid(),
                    backup_tid: self.backup_tid,
                    truncate_tid: self.truncate_tid,
                },
            ),
            Packet::AskLastIDs(_) => out.answer(
                conn,
                msg_id,
                neo_protocol::AnswerLastIDs {
                    last_tid: Some(self.last_tid),
                    last_oid: Some(self.last_oid),
                    first_tid: self.first_tid,
                },
            ),
            Packet::AskLastTransaction(_) => out.answer(
                conn,
                msg_id,
                neo_protocol::AnswerLastTransaction { tid: self.last_tid },
            ),
            other => return Some(other),
        }
        None
    }

    /// A protocol violation: answer PROTOCOL_ERROR and abort the connection.
    fn protocol_error(&mut self, out: &mut Outbox, conn: ConnId, msg_id: u32, reason: &str) {
        tracing::warn!("protocol error on {conn:x}: {reason}");
        out.error(conn, msg_id, ErrorCode::ProtocolError, reason);
        self.conns.remove(&conn);
        out.close(conn);
        // The loss is handled by the caller's after_event through the node table.
        for entry in self.nodes.iter_mut() {
            if entry.conn == Some(conn) {
                entry.conn = None;
            }
        }
    }

    fn connection_lost(&mut self, now: Time, out: &mut Outbox, conn: ConnId) {
        let Some(connection) = self.conns.remove(&conn) else {
            return;
        };
        match connection.peer {
            Peer::Unidentified => {}
            Peer::Election(address) => self.election_connection_lost(now, address),
            Peer::Primary(address) => self.primary_lost(now, out, address),
            Peer::Node(nid) => self.node_lost(now, out, nid, conn),
        }
    }

    /// For connections dropped by us after an error answer.
    fn connection_lost_after_drop(&mut self, now: Time, out: &mut Outbox, conn: ConnId) {
        let nid = self
            .nodes
            .iter()
            .find(|e| e.conn == Some(conn))
            .and_then(|e| e.nid);
        if let Some(nid) = nid {
            self.node_lost(now, out, nid, conn);
        }
    }

    /// An identified node's connection is gone.
    fn node_lost(&mut self, now: Time, out: &mut Outbox, nid: Nid, conn: ConnId) {
        let Some(entry) = self.nodes.get_mut(nid) else {
            return;
        };
        if entry.conn != Some(conn) && entry.conn.is_some() {
            return; // an older connection of a node that came back
        }
        entry.conn = None;
        let node_type = entry.node_type;
        match node_type {
            NodeType::Admin => {
                self.nodes.remove(nid);
            }
            NodeType::Client => {
                self.client_lost_transactions(out, nid);
                if let Some(entry) = self.nodes.get_mut(nid) {
                    entry.state = NodeState::Unknown;
                }
                let info = self.nodes.remove(nid).map(|e| e.info());
                if let Some(info) = info {
                    self.broadcast_nodes(out, now, &[info]);
                }
            }
            NodeType::Master => {
                if let Some(entry) = self.nodes.get_mut(nid) {
                    entry.state = NodeState::Down;
                }
                self.broadcast_node(out, now, nid);
            }
            NodeType::Storage => self.storage_lost(now, out, nid),
        }
    }
}

/// Which node types a destination hears about (cluster.md 1.5).
fn visible_to(destination: NodeType, about: NodeType) -> bool {
    match destination {
        NodeType::Admin | NodeType::Storage => about != NodeType::Admin,
        NodeType::Client => matches!(about, NodeType::Master | NodeType::Storage),
        NodeType::Master => about == NodeType::Master,
    }
}

/// The smallest NID of a type's namespace free for a peer (NEO/py's getNewUUID).
fn new_nid(
    nodes: &NodeTable,
    own: Option<Nid>,
    proposed: Option<Nid>,
    address: Option<&Address>,
    node_type: NodeType,
) -> Nid {
    if let Some(p) = proposed {
        if Some(p) != own {
            match nodes.get(p) {
                None => return p,
                Some(e) if e.address.as_ref() == address => return p,
                _ => {}
            }
        }
    }
    for n in 1..0x0100_0000u32 {
        let nid = Nid::new(node_type, n);
        if Some(nid) == own {
            continue;
        }
        match nodes.get(nid) {
            None => return nid,
            Some(e) if address.is_some() && e.address.as_ref() == address => return nid,
            _ => {}
        }
    }
    // 16M nodes of one type cannot be connected at once.
    Nid::new(node_type, 0x00ff_ffff)
}
