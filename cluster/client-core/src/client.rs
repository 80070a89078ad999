//! The client state machine: connections, pending requests and what each answer means.
//!
//! Every request sent is remembered in `pending` under (connection, msg_id) with what to
//! do with its answer; a lost connection answers all its requests with a failure, so each
//! operation has exactly one place that decides its fate. Requests to a storage whose
//! identification is not yet accepted wait in that storage's queue.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use neo_node::{ConnId, Input, Node, NodeTable, Outbox, PartitionTable, Rng, Time};
use neo_protocol::{
    self as protocol, Bytes, Dict, ErrorCode, Nid, NodeType, Oid, PackRequest, Packet, Tid, Value,
    INVALID_PARTITION, ZERO_HASH,
};

use crate::cache::Cache;
use crate::codec;
use crate::{
    ClientError, Config, Conflict, HistoryEntry, Invalidation, ObjectRecord, OpId, Operation,
    Reply, TransactionInfo, TransactionMeta, MAX_FAILURE_AGE, OID_BATCH, RECONNECT_DELAY,
};

/// Read rounds over all replicas before giving up (each round after a master sync).
const MAX_READ_ROUNDS: u32 = 4;

/// The NEO client's logic; see the crate documentation.
pub struct Client {
    config: Config,
    rng: Rng,
    now: Time,
    nid: Option<Nid>,
    id_timestamp: Option<f64>,
    nodes: NodeTable,
    pt: Option<PartitionTable>,
    master: Master,
    storages: BTreeMap<Nid, StorageLink>,
    /// Which peer a connection is.
    peers: BTreeMap<ConnId, Peer>,
    pending: BTreeMap<(ConnId, u32), Pending>,
    /// Failure expiry time per storage.
    failures: BTreeMap<Nid, Time>,
    cache: Cache,
    /// Deflate and inflate states reused for every object.
    codec: codec::Codec,
    last_tid: Option<Tid>,
    ignore_invalidations: bool,
    new_oids: VecDeque<Oid>,
    oid_waiters: VecDeque<OpId>,
    asking_oids: bool,
    txns: BTreeMap<Tid, Txn>,
    /// Operations waiting for the master connection to be ready.
    waiting: Vec<(OpId, Operation)>,
    /// Boxed: a `Read` is a few hundred bytes, which the map would copy as it moves
    /// entries (one insert and one removal per load).
    reads: BTreeMap<u64, Box<Read>>,
    next_read: u64,
    multis: BTreeMap<OpId, Multi>,
    completions: Vec<(OpId, Result<Reply, ClientError>)>,
    invalidations: Vec<Invalidation>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    Master,
    Storage(Nid),
}

#[derive(Debug, Default)]
struct Master {
    conn: Option<ConnId>,
    state: MasterState,
    /// Wanted by some operation (the connection is lazy, then kept).
    wanted: bool,
    next_index: usize,
    /// The primary named by a NotPrimaryMaster redirection.
    hint: Option<protocol::Address>,
    /// Last connection attempt per master address (attempts are rate limited).
    attempts: BTreeMap<protocol::Address, Time>,
    /// The first NotifyNodeInformation after identification is a full list.
    full_list_expected: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum MasterState {
    #[default]
    Idle,
    /// Identification asked.
    Identifying,
    /// Identified; AskLastTransaction sent.
    Bootstrapping,
    Ready,
}

#[derive(Debug)]
struct StorageLink {
    conn: ConnId,
    ready: bool,
    queue: Vec<(Packet, Option<Pending>)>,
}

#[derive(Debug, Clone)]
enum Pending {
    MasterIdentify,
    StorageIdentify(Nid),
    LastTransaction,
    NewOids,
    Begin {
        op: OpId,
        meta: TransactionMeta,
    },
    Ping(PingFor),
    WaitForPack(OpId),
    Store {
        ttid: Tid,
        oid: Oid,
        nid: Nid,
        version: u32,
    },
    Relock {
        ttid: Tid,
        oid: Oid,
    },
    Vote {
        ttid: Tid,
        nid: Nid,
    },
    FailedVote(Tid),
    Finish(Tid),
    FinalTid(Tid),
    Read {
        read: u64,
        nid: Nid,
    },
}

#[derive(Debug, Clone)]
enum PingFor {
    Sync(OpId),
    /// A vote met conflicts newer than the last invalidation: wait for it first.
    Vote(Tid),
    /// A read round failed everywhere: get PT updates, then retry.
    Read(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ObjectKind {
    Store,
    Delete,
    Check,
}

#[derive(Debug)]
struct TxnObject {
    kind: ObjectKind,
    serial: Tid,
    /// Uncompressed data kept for the cache and conflict resolution.
    data: Option<Bytes>,
    /// An undo's back-pointer: the cache keeps no such record (it has no room for it, and
    /// loads must return it).
    data_serial: Option<Tid>,
    version: u32,
    pending: BTreeSet<Nid>,
    /// Nodes that accepted (locked or lockless).
    accepted: BTreeSet<Nid>,
}

#[derive(Debug)]
enum Phase {
    Open,
    /// Waiting for stores before voting.
    WaitStores(OpId),
    /// AskStoreTransaction / AskVoteTransaction sent.
    Voting {
        op: OpId,
        left: usize,
    },
    FailedVote(OpId),
    Voted,
    Finishing(OpId),
    /// The master was lost after AskFinishTransaction: ask the final TID once back.
    Recovering(OpId),
}

#[derive(Debug)]
struct Txn {
    meta: TransactionMeta,
    objects: BTreeMap<Oid, TxnObject>,
    /// OIDs in the order of their first store: the transaction's OID list keeps it, as
    /// NEO/py's client does, so that an exported transaction lists its records as the
    /// application wrote them.
    order: Vec<Oid>,
    /// Unresolved conflicts: oid → committed serial.
    conflicts: BTreeMap<Oid, Tid>,
    resolved: BTreeMap<Oid, Tid>,
    read_conflict: Option<(Oid, Tid, Tid)>,
    /// Every node written to.
    involved: BTreeSet<Nid>,
    failed: BTreeSet<Nid>,
    /// (partition, node) answered ZERO_TID.
    lockless: BTreeSet<(u32, Nid)>,
    /// (partition, node) that locked normally.
    locked: BTreeSet<(u32, Nid)>,
    relocks: usize,
    error: Option<String>,
    pack: Option<PackRequest>,
    synced_for_conflicts: bool,
    phase: Phase,
}

#[derive(Debug)]
struct Read {
    op: OpId,
    target: ReadTarget,
    packet: Packet,
    tried: Vec<Nid>,
    failures: usize,
    rounds: u32,
    /// Invalidations of the object received while an object read is in flight.
    invalidated: Vec<Tid>,
    cache_epoch: u64,
    wrong_checksum: Option<ObjectRecord>,
    /// The checked, decompressed record of an AskObject answer.
    record: Option<ObjectRecord>,
    /// A load of the current revision: "nothing before our view" means no such object.
    load_current: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadTarget {
    Partition(u32),
    /// A request for one node only (undo log): its failure gives an empty answer.
    Node(Nid),
}

/// An operation made of several reads whose answers are combined.
#[derive(Debug)]
struct Multi {
    kind: MultiKind,
    left: usize,
    answers: Vec<Packet>,
    error: Option<ClientError>,
}

#[derive(Debug)]
enum MultiKind {
    History(Vec<(Tid, u64)>),
    UndoLog {
        count: usize,
    },
    TidsFrom {
        length: usize,
    },
    /// First stage of undo: the undone transaction's OIDs.
    UndoInfo {
        ttid: Tid,
        undone_tid: Tid,
    },
    UndoSerial,
}

impl Client {
    pub fn new(config: Config) -> Client {
        let cache = Cache::new(config.cache_size);
        let codec = codec::Codec::new(config.compress, config.compression_level);
        Client {
            codec,
            rng: Rng::new(config.seed),
            config,
            now: 0.0,
            nid: None,
            id_timestamp: None,
            nodes: NodeTable::new(),
            pt: None,
            master: Master::default(),
            storages: BTreeMap::new(),
            peers: BTreeMap::new(),
            pending: BTreeMap::new(),
            failures: BTreeMap::new(),
            cache,
            last_tid: None,
            ignore_invalidations: true,
            new_oids: VecDeque::new(),
            oid_waiters: VecDeque::new(),
            asking_oids: false,
            txns: BTreeMap::new(),
            waiting: Vec::new(),
            reads: BTreeMap::new(),
            next_read: 0,
            multis: BTreeMap::new(),
            completions: Vec::new(),
            invalidations: Vec::new(),
        }
    }

    /// Starts an operation; its result comes out of [`Client::take_completions`].
    pub fn submit(&mut self, now: Time, op: OpId, operation: Operation, out: &mut Outbox) {
        self.now = now;
        self.run(op, operation, out);
    }

    /// Finished operations, in completion order.
    pub fn take_completions(&mut self) -> Vec<(OpId, Result<Reply, ClientError>)> {
        std::mem::take(&mut self.completions)
    }

    /// Invalidations from other clients' commits, in commit order.
    pub fn take_invalidations(&mut self) -> Vec<Invalidation> {
        std::mem::take(&mut self.invalidations)
    }

    /// The last TID known (from the master, invalidations and own commits).
    pub fn last_tid(&self) -> Option<Tid> {
        self.last_tid
    }

    /// Our node id, once identified by the master.
    pub fn nid(&self) -> Option<Nid> {
        self.nid
    }

    pub fn is_ready(&self) -> bool {
        self.master.state == MasterState::Ready
    }

    /// The connection to the primary master, once opened.
    pub fn master_conn(&self) -> Option<ConnId> {
        self.master.conn
    }

    /// Whether the client waits for something from the master: an answer, or the steps of
    /// identification and bootstrap. When it does not, the master only sends notifications
    /// (invalidations, node and partition changes, pings), which a driver may read a few
    /// milliseconds late, so as to read many at once.
    pub fn awaits_master(&self) -> bool {
        let Some(conn) = self.master.conn else {
            return false;
        };
        self.master.state != MasterState::Ready
            || self
                .pending
                .range((conn, 0)..=(conn, u32::MAX))
                .next()
                .is_some()
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    pub fn partition_table(&self) -> Option<&PartitionTable> {
        self.pt.as_ref()
    }

    /// Whether a storage is in the failure list at `now`.
    pub fn recently_failed(&self, nid: Nid, now: Time) -> bool {
        self.failures.get(&nid).is_some_and(|&t| t > now)
    }

    fn complete(&mut self, op: OpId, result: Result<Reply, ClientError>) {
        self.completions.push((op, result));
    }

    // -----------------------------------------------------------------------------------
    // Operations.

    fn run(&mut self, op: OpId, operation: Operation, out: &mut Outbox) {
        let writes = matches!(
            operation,
            Operation::TpcBegin { .. }
                | Operation::Store { .. }
                | Operation::StoreEncoded { .. }
                | Operation::DeleteObject { .. }
                | Operation::CheckCurrentSerial { .. }
                | Operation::ObjectUndoSerial { .. }
        );
        if writes && self.config.read_only {
            return self.complete(op, Err(ClientError::ReadOnly));
        }
        // Operations on an existing transaction never wait for the master: a transaction
        // that lost it has failed, which its own checks report.
        let on_txn = matches!(
            operation,
            Operation::Store { .. }
                | Operation::StoreEncoded { .. }
                | Operation::DeleteObject { .. }
                | Operation::CheckCurrentSerial { .. }
                | Operation::SetPackOrder { .. }
                | Operation::TpcVote { .. }
                | Operation::TpcFinish { .. }
                | Operation::TpcAbort { .. }
        );
        let cached = match &operation {
            Operation::Load { oid } => self.cache.load(*oid, None),
            Operation::LoadBefore { oid, before } => self.cache.load(*oid, Some(*before)),
            Operation::LoadSerial { oid, serial } => self.cache.load_serial(*oid, *serial),
            _ => None,
        };
        if let Some(revision) = cached {
            return self.complete(
                op,
                Ok(Reply::Object(ObjectRecord {
                    data: Some(revision.data),
                    serial: revision.serial,
                    next_serial: revision.next_serial,
                    data_serial: None,
                })),
            );
        }
        if matches!(operation, Operation::NewOid) {
            if let Some(oid) = self.new_oids.pop_front() {
                return self.complete(op, Ok(Reply::Oid(oid)));
            }
        }
        if !on_txn && !self.is_ready() {
            self.master.wanted = true;
            self.waiting.push((op, operation));
            self.connect_master(out);
            return;
        }
        match operation {
            Operation::NewOid => {
                self.oid_waiters.push_back(op);
                self.ask_oids(out);
            }
            Operation::Load { oid } => {
                let before = self.last_tid.map(|t| Tid(t.0 + 1));
                let partition = self.partition_of(oid.0);
                self.start_read_with(
                    op,
                    ReadTarget::Partition(partition),
                    protocol::AskObject {
                        oid,
                        at: None,
                        before,
                    }
                    .into(),
                    true,
                    out,
                );
            }
            Operation::LoadBefore { oid, before } => {
                self.read_object(op, oid, None, Some(before), out)
            }
            Operation::LoadSerial { oid, serial } => {
                self.read_object(op, oid, Some(serial), None, out)
            }
            Operation::LastTransaction => {
                let tid = self.last_tid.unwrap_or(Tid::ZERO);
                self.complete(op, Ok(Reply::Tid(tid)));
            }
            Operation::History { oid, size } => {
                let partition = self.partition_of(oid.0);
                self.start_read(
                    op,
                    ReadTarget::Partition(partition),
                    protocol::AskObjectHistory {
                        oid,
                        first: 0,
                        last: size,
                    }
                    .into(),
                    out,
                );
            }
            Operation::TransactionInformation { tid } => {
                let partition = self.partition_of(tid.0);
                self.start_read(
                    op,
                    ReadTarget::Partition(partition),
                    protocol::AskTransactionInformation { tid }.into(),
                    out,
                );
            }
            Operation::UndoLogTids { first, last } => {
                let nodes: Vec<Nid> = self
                    .pt
                    .as_ref()
                    .map(|pt| {
                        let mut nids = BTreeSet::new();
                        for p in 0..pt.np() {
                            nids.extend(pt.readable_cells(p));
                        }
                        nids.into_iter()
                            .filter(|n| self.nodes.is_running(*n))
                            .collect()
                    })
                    .unwrap_or_default();
                let count = last.saturating_sub(first) as usize;
                let packet: Packet = protocol::AskTIDs {
                    first,
                    last,
                    partition: INVALID_PARTITION,
                }
                .into();
                let targets = nodes.into_iter().map(ReadTarget::Node).collect();
                self.start_multi(
                    op,
                    MultiKind::UndoLog { count },
                    targets,
                    |_| packet.clone(),
                    out,
                );
            }
            Operation::TidsFrom { min, max, length } => {
                let np = self.pt.as_ref().map_or(0, |pt| pt.np());
                let targets = (0..np).map(ReadTarget::Partition).collect();
                self.start_multi(
                    op,
                    MultiKind::TidsFrom {
                        length: length as usize,
                    },
                    targets,
                    |target| match target {
                        ReadTarget::Partition(partition) => protocol::AskTIDsFrom {
                            min_tid: min,
                            max_tid: max,
                            length,
                            partition,
                        }
                        .into(),
                        ReadTarget::Node(_) => unreachable!("partition targets only"),
                    },
                    out,
                );
            }
            Operation::TpcBegin { tid, meta } => {
                if let Some(conn) = self.master.conn {
                    let msg_id = out.ask(conn, protocol::AskBeginTransaction { tid });
                    self.pending
                        .insert((conn, msg_id), Pending::Begin { op, meta });
                }
            }
            Operation::Store {
                ttid,
                oid,
                serial,
                data,
                data_serial,
            } => self.store(
                op,
                ttid,
                oid,
                serial,
                Some(data),
                data_serial,
                ObjectKind::Store,
                None,
                out,
            ),
            Operation::StoreEncoded {
                ttid,
                oid,
                serial,
                data,
                encoded,
                data_serial,
            } => self.store(
                op,
                ttid,
                oid,
                serial,
                Some(data),
                data_serial,
                ObjectKind::Store,
                Some(encoded),
                out,
            ),
            Operation::DeleteObject { ttid, oid, serial } => self.store(
                op,
                ttid,
                oid,
                serial,
                None,
                None,
                ObjectKind::Delete,
                None,
                out,
            ),
            Operation::CheckCurrentSerial { ttid, oid, serial } => self.store(
                op,
                ttid,
                oid,
                serial,
                None,
                None,
                ObjectKind::Check,
                None,
                out,
            ),
            Operation::SetPackOrder {
                ttid,
                oids,
                pack_tid,
            } => match self.txns.get_mut(&ttid) {
                Some(txn) => {
                    txn.pack = Some(PackRequest {
                        oids: oids.map(|mut oids| {
                            oids.sort();
                            oids
                        }),
                        pack_tid,
                    });
                    self.complete(op, Ok(Reply::Done));
                }
                None => self.complete(op, Err(ClientError::UnknownTransaction(ttid))),
            },
            Operation::ObjectUndoSerial { ttid, undone_tid } => {
                self.undo_serial(op, ttid, undone_tid, out)
            }
            Operation::TpcVote { ttid } => self.vote(op, ttid, out),
            Operation::TpcFinish { ttid } => self.finish(op, ttid, out),
            Operation::TpcAbort { ttid } => self.abort(op, ttid, out),
            Operation::WaitForPack { tid } => {
                if let Some(conn) = self.master.conn {
                    let msg_id = out.ask(conn, protocol::WaitForPack { tid });
                    self.pending
                        .insert((conn, msg_id), Pending::WaitForPack(op));
                }
            }
            Operation::Sync => self.ping_master(PingFor::Sync(op), out),
        }
    }

    fn ping_master(&mut self, purpose: PingFor, out: &mut Outbox) {
        match self.master.conn.filter(|_| self.is_ready()) {
            Some(conn) => {
                let msg_id = out.ask(conn, protocol::Ping {});
                self.pending.insert((conn, msg_id), Pending::Ping(purpose));
            }
            None => self.ping_failed(purpose, out),
        }
    }

    fn ping_failed(&mut self, purpose: PingFor, out: &mut Outbox) {
        match purpose {
            PingFor::Sync(op) => self.waiting.push((op, Operation::Sync)),
            PingFor::Vote(ttid) => {
                if let Some(txn) = self.txns.get_mut(&ttid) {
                    txn.synced_for_conflicts = true;
                }
                self.try_vote(ttid, out);
            }
            PingFor::Read(read) => self.read_failed(read, ClientError::PrimaryMasterLost, out),
        }
    }

    fn ask_oids(&mut self, out: &mut Outbox) {
        if self.asking_oids || self.oid_waiters.is_empty() {
            return;
        }
        if let Some(conn) = self.master.conn.filter(|_| self.is_ready()) {
            let msg_id = out.ask(
                conn,
                protocol::AskNewOIDs {
                    num_oids: OID_BATCH,
                },
            );
            self.pending.insert((conn, msg_id), Pending::NewOids);
            self.asking_oids = true;
        }
    }

    fn partition_of(&self, value: u64) -> u32 {
        self.pt.as_ref().map_or(0, |pt| pt.partition_of(value))
    }

    // -----------------------------------------------------------------------------------
    // Master connection.

    fn connect_master(&mut self, out: &mut Outbox) {
        if self.master.state != MasterState::Idle || self.config.masters.is_empty() {
            return;
        }
        let address = match self.master.hint.take() {
            Some(address) => address,
            None => {
                let index = self.master.next_index % self.config.masters.len();
                self.master.next_index = index + 1;
                self.config.masters[index].clone()
            }
        };
        if let Some(&last) = self.master.attempts.get(&address) {
            if self.now < last + RECONNECT_DELAY {
                // The timer comes back at the deadline.
                self.master.hint = Some(address);
                return;
            }
        }
        self.master.attempts.insert(address.clone(), self.now);
        tracing::debug!(%address, "connecting to master");
        let conn = out.connect(address);
        self.peers.insert(conn, Peer::Master);
        self.master.conn = Some(conn);
        self.master.state = MasterState::Identifying;
        let mut extra = Dict::new();
        if self.config.read_only {
            extra
                .0
                .push((Bytes::from_static(b"read_only"), Value::Bool(true)));
        }
        let msg_id = out.ask(
            conn,
            protocol::RequestIdentification {
                node_type: NodeType::Client,
                nid: self.nid,
                address: None,
                cluster_name: Bytes::from(self.config.cluster.clone().into_bytes()),
                id_timestamp: None,
                extra,
            },
        );
        self.pending.insert((conn, msg_id), Pending::MasterIdentify);
    }

    /// Gives up the master connection (closed by either side).
    fn master_lost(&mut self, close: bool, out: &mut Outbox) {
        let Some(conn) = self.master.conn.take() else {
            return;
        };
        tracing::warn!("connection to the primary master lost");
        if close {
            out.close(conn);
        }
        self.peers.remove(&conn);
        self.master.state = MasterState::Idle;
        self.ignore_invalidations = true;
        self.pt = None;
        self.new_oids.clear();
        self.asking_oids = false;
        for txn in self.txns.values_mut() {
            txn.error = Some("connection to primary master node closed".into());
        }
        // Storages drop us when the master forgets us; our NID may change: start over.
        let storages: Vec<Nid> = self.storages.keys().copied().collect();
        for nid in storages {
            self.storage_lost(nid, false, true, out);
        }
        self.fail_pending(conn, out);
        if self.master.wanted {
            self.connect_master(out);
        }
    }

    fn master_ready(&mut self, out: &mut Outbox) {
        self.master.state = MasterState::Ready;
        tracing::info!(nid = ?self.nid, "connected to the primary master and ready");
        for (op, operation) in std::mem::take(&mut self.waiting) {
            self.run(op, operation, out);
        }
        self.ask_oids(out);
        // Transactions whose finish was in flight learn their fate.
        let recovering: Vec<Tid> = self
            .txns
            .iter()
            .filter(|(_, t)| matches!(t.phase, Phase::Recovering(_)))
            .map(|(&ttid, _)| ttid)
            .collect();
        for ttid in recovering {
            if let Some(conn) = self.master.conn {
                let msg_id = out.ask(conn, protocol::AskFinalTID { ttid });
                self.pending.insert((conn, msg_id), Pending::FinalTid(ttid));
            }
        }
    }

    fn master_packet(&mut self, conn: ConnId, msg_id: u32, packet: Packet, out: &mut Outbox) {
        match packet {
            Packet::NotPrimaryMaster(p) => {
                self.master.hint = p
                    .primary
                    .and_then(|index| p.known_master_list.get(index as usize).cloned());
                for address in p.known_master_list {
                    if !self.config.masters.contains(&address) {
                        self.config.masters.push(address);
                    }
                }
                tracing::info!(primary = ?self.master.hint, "redirected to the primary master");
                if let Some(hint) = &self.master.hint {
                    // A redirection is not a failure: do not wait before following it.
                    self.master.attempts.remove(hint);
                }
                self.master_lost(true, out);
            }
            Packet::NotifyNodeInformation(p) => {
                if let Some(me) = self
                    .nid
                    .and_then(|nid| p.node_list.iter().find(|n| n.nid == Some(nid)))
                {
                    self.id_timestamp = me.id_timestamp;
                }
                let full = std::mem::take(&mut self.master.full_list_expected);
                let touched = self.nodes.apply_notification(&p.node_list, full);
                for entry in touched {
                    if let Some(nid) = entry.nid {
                        if !self.nodes.is_running(nid) && self.storages.contains_key(&nid) {
                            self.storage_lost(nid, false, true, out);
                        }
                    }
                }
            }
            Packet::SendPartitionTable(p) => {
                self.pt = Some(PartitionTable::from_rows(
                    p.ptid,
                    p.num_replicas,
                    p.row_list,
                ));
            }
            Packet::NotifyPartitionChanges(p) => {
                let applied = match &mut self.pt {
                    Some(pt) => pt.apply_changes(p.ptid, p.num_replicas, &p.cell_list),
                    None => Ok(()),
                };
                if let Err(e) = applied {
                    tracing::error!("bad partition table update: {e}");
                    self.master_lost(true, out);
                }
            }
            Packet::InvalidateObjects(p) => self.invalidate(p.tid, p.oid_list),
            Packet::Ping(_) => out.answer(conn, msg_id, protocol::Pong {}),
            Packet::StopOperation(_) => tracing::warn!("the master asks to stop operation"),
            Packet::NotifyClusterInformation(p) => {
                tracing::info!("cluster switching to {}", p.state.py_name())
            }
            other => tracing::debug!(packet = other.name(), "ignored from the master"),
        }
    }

    fn invalidate(&mut self, tid: Tid, oids: Vec<Oid>) {
        if self.ignore_invalidations {
            return;
        }
        for &oid in &oids {
            self.cache.invalidate(oid, tid);
            self.note_invalidation(oid, tid);
        }
        self.invalidations.push(Invalidation::Objects { tid, oids });
        self.last_tid = Some(tid);
    }

    /// Object reads in flight must not cache a revision as current past `tid`.
    fn note_invalidation(&mut self, oid: Oid, tid: Tid) {
        for read in self.reads.values_mut() {
            if let Packet::AskObject(ask) = &read.packet {
                if ask.oid == oid {
                    read.invalidated.push(tid);
                }
            }
        }
    }

    fn last_transaction(&mut self, ltid: Tid) {
        if self.last_tid != Some(ltid) {
            match self.last_tid {
                Some(known) if known > ltid => self.cache.clear(),
                _ => self.cache.clear_current(),
            }
            // Reads in flight must not fill the cache with what may be stale.
            for read in self.reads.values_mut() {
                read.cache_epoch = u64::MAX;
            }
            if self.last_tid.is_some() {
                self.invalidations
                    .push(Invalidation::All { last_tid: ltid });
            }
            self.last_tid = Some(ltid);
        }
        self.ignore_invalidations = false;
    }

    // -----------------------------------------------------------------------------------
    // Storage connections.

    /// Sends a request to a storage, connecting and identifying first if needed. Returns
    /// false if the node cannot be reached (not running, no address, failed to connect).
    fn send_storage(
        &mut self,
        nid: Nid,
        packet: Packet,
        pending: Option<Pending>,
        out: &mut Outbox,
    ) -> bool {
        if let Some(link) = self.storages.get_mut(&nid) {
            if link.ready {
                let conn = link.conn;
                let msg_id = send(out, conn, packet);
                if let Some(pending) = pending {
                    self.pending.insert((conn, msg_id), pending);
                }
            } else {
                link.queue.push((packet, pending));
            }
            return true;
        }
        let Some(entry) = self.nodes.get(nid) else {
            return false;
        };
        if !entry.is_running() || self.master.state != MasterState::Ready {
            return false;
        }
        let Some(address) = entry.address.clone() else {
            return false;
        };
        let conn = out.connect(address);
        self.peers.insert(conn, Peer::Storage(nid));
        let msg_id = out.ask(
            conn,
            protocol::RequestIdentification {
                node_type: NodeType::Client,
                nid: self.nid,
                address: None,
                cluster_name: Bytes::from(self.config.cluster.clone().into_bytes()),
                id_timestamp: self.id_timestamp,
                extra: Dict::new(),
            },
        );
        self.pending
            .insert((conn, msg_id), Pending::StorageIdentify(nid));
        self.storages.insert(
            nid,
            StorageLink {
                conn,
                ready: false,
                queue: vec![(packet, pending)],
            },
        );
        true
    }

    /// A storage connection is gone: every request on it fails.
    fn storage_lost(&mut self, nid: Nid, mark_failed: bool, close: bool, out: &mut Outbox) {
        if mark_failed {
            self.failures.insert(nid, self.now + MAX_FAILURE_AGE);
        }
        let Some(link) = self.storages.remove(&nid) else {
            return;
        };
        if close {
            out.close(link.conn);
        }
        self.peers.remove(&link.conn);
        // A storage forgets what a client stored in a transaction it has not voted when
        // the client's connection goes (cluster.md 5.11): the node failed for those
        // transactions, even where its stores were answered, so that the vote reports it.
        for txn in self.txns.values_mut() {
            if matches!(txn.phase, Phase::Open | Phase::WaitStores(_))
                && txn.involved.contains(&nid)
            {
                txn.failed.insert(nid);
            }
        }
        for (_, pending) in link.queue {
            if let Some(pending) = pending {
                self.dispatch(
                    pending,
                    Err(ClientError::Storage("connection lost".into())),
                    out,
                );
            }
        }
        self.fail_pending(link.conn, out);
    }

    fn fail_pending(&mut self, conn: ConnId, out: &mut Outbox) {
        let mut lost: Vec<(u32, Pending)> = Vec::new();
        self.pending.retain(|&(c, msg_id), pending| {
            if c == conn {
                lost.push((msg_id, pending.clone()));
                false
            } else {
                true
            }
        });
        // Fail in sending order, so that operations see their failures in order.
        lost.sort_by_key(|(msg_id, _)| *msg_id);
        for (_, pending) in lost {
            let error = match pending {
                Pending::Read { .. }
                | Pending::Store { .. }
                | Pending::Relock { .. }
                | Pending::Vote { .. } => ClientError::Storage("connection lost".into()),
                _ => ClientError::PrimaryMasterLost,
            };
            self.dispatch(pending, Err(error), out);
        }
    }

    fn storage_packet(&mut self, conn: ConnId, msg_id: u32, packet: Packet, out: &mut Outbox) {
        match packet {
            Packet::NotifyDeadlock(p) => {
                let Some(Peer::Storage(nid)) = self.peers.get(&conn).copied() else {
                    return;
                };
                let Some(txn) = self.txns.get_mut(&p.ttid) else {
                    return;
                };
                // Once voting, our locks are final: the storage gives the older
                // transaction its turn by itself.
                if !matches!(txn.phase, Phase::Open | Phase::WaitStores(_)) {
                    return;
                }
                txn.relocks += 1;
                let sent = self.send_storage(
                    nid,
                    protocol::AskRelockObject {
                        ttid: p.ttid,
                        oid: p.oid,
                    }
                    .into(),
                    Some(Pending::Relock {
                        ttid: p.ttid,
                        oid: p.oid,
                    }),
                    out,
                );
                if !sent {
                    if let Some(txn) = self.txns.get_mut(&p.ttid) {
                        txn.relocks -= 1;
                    }
                }
            }
            Packet::Ping(_) => out.answer(conn, msg_id, protocol::Pong {}),
            other => tracing::debug!(packet = other.name(), "ignored from a storage"),
        }
    }

    // -----------------------------------------------------------------------------------
    // Answers.

    fn dispatch(
        &mut self,
        pending: Pending,
        answer: Result<Packet, ClientError>,
        out: &mut Outbox,
    ) {
        match pending {
            Pending::MasterIdentify => match answer {
                Ok(Packet::AcceptIdentification(p)) if p.node_type == NodeType::Master => {
                    self.nid = p.your_nid;
                    self.master.state = MasterState::Bootstrapping;
                    self.master.full_list_expected = true;
                    if let Some(conn) = self.master.conn {
                        let msg_id = out.ask(conn, protocol::AskLastTransaction {});
                        self.pending
                            .insert((conn, msg_id), Pending::LastTransaction);
                    }
                }
                Ok(other) => {
                    tracing::info!(answer = ?other, "master refused identification");
                    self.master_lost(true, out);
                }
                Err(_) => self.master_lost(false, out),
            },
            Pending::LastTransaction => match answer {
                Ok(Packet::AnswerLastTransaction(p)) => {
                    self.last_transaction(p.tid);
                    let operational = self
                        .pt
                        .as_ref()
                        .is_some_and(|pt| pt.is_operational(|nid| self.nodes.is_running(nid), &[]));
                    if operational {
                        self.master_ready(out);
                    } else {
                        tracing::info!("partition table not operational: reconnecting");
                        self.master_lost(true, out);
                    }
                }
                Ok(_) => self.master_lost(true, out),
                Err(_) => {}
            },
            Pending::StorageIdentify(nid) => match answer {
                Ok(Packet::AcceptIdentification(p)) if p.node_type == NodeType::Storage => {
                    self.failures.remove(&nid);
                    if let Some(link) = self.storages.get_mut(&nid) {
                        link.ready = true;
                        let conn = link.conn;
                        for (packet, pending) in std::mem::take(&mut link.queue) {
                            let msg_id = send(out, conn, packet);
                            if let Some(pending) = pending {
                                self.pending.insert((conn, msg_id), pending);
                            }
                        }
                    }
                }
                Ok(other) => {
                    tracing::info!(%nid, answer = ?other, "storage refused identification");
                    self.storage_lost(nid, true, true, out);
                }
                Err(_) => self.storage_lost(nid, true, false, out),
            },
            Pending::NewOids => {
                self.asking_oids = false;
                if let Ok(Packet::AnswerNewOIDs(p)) = answer {
                    self.new_oids.extend(p.oid_list);
                }
                while !self.new_oids.is_empty() {
                    let Some(op) = self.oid_waiters.pop_front() else {
                        break;
                    };
                    let oid = self.new_oids.pop_front().expect("checked non-empty");
                    self.complete(op, Ok(Reply::Oid(oid)));
                }
                // Waiters left get the next batch (after a reconnection if need be).
                if !self.oid_waiters.is_empty() {
                    if self.is_ready() {
                        self.ask_oids(out);
                    } else {
                        for op in std::mem::take(&mut self.oid_waiters) {
                            self.waiting.push((op, Operation::NewOid));
                        }
                    }
                }
            }
            Pending::Begin { op, meta } => match answer {
                Ok(Packet::AnswerBeginTransaction(p)) => {
                    self.txns.insert(p.ttid, Txn::new(meta));
                    self.complete(op, Ok(Reply::Tid(p.ttid)));
                }
                other => {
                    let error = answer_error(other);
                    self.complete(op, Err(error));
                }
            },
            Pending::Ping(purpose) => match answer {
                Ok(Packet::Pong(_)) => match purpose {
                    PingFor::Sync(op) => self.complete(op, Ok(Reply::Done)),
                    PingFor::Vote(ttid) => {
                        if let Some(txn) = self.txns.get_mut(&ttid) {
                            txn.synced_for_conflicts = true;
                        }
                        self.try_vote(ttid, out);
                    }
                    PingFor::Read(read) => self.retry_read(read, out),
                },
                _ => self.ping_failed(purpose, out),
            },
            Pending::WaitForPack(op) => match answer {
                Ok(Packet::WaitedForPack(_)) => {
                    self.cache.clear();
                    self.complete(op, Ok(Reply::Done));
                }
                other => self.complete(op, Err(answer_error(other))),
            },
            Pending::Store {
                ttid,
                oid,
                nid,
                version,
            } => self.store_answered(ttid, oid, nid, version, answer, out),
            Pending::Relock { ttid, oid } => {
                if let Some(txn) = self.txns.get_mut(&ttid) {
                    txn.relocks = txn.relocks.saturating_sub(1);
                    match answer {
                        Ok(Packet::AnswerRelockObject(p)) => {
                            if let Some(conflict) = p.conflict {
                                txn.add_conflict(oid, conflict.conflict_serial);
                            }
                        }
                        Ok(other) => txn.error = Some(format!("relock refused: {other:?}")),
                        Err(_) => {}
                    }
                    self.try_vote(ttid, out);
                }
            }
            Pending::Vote { ttid, nid } => {
                let Some(txn) = self.txns.get_mut(&ttid) else {
                    return;
                };
                match answer {
                    Ok(Packet::AnswerStoreTransaction(_) | Packet::AnswerVoteTransaction(_)) => {}
                    _ => {
                        txn.failed.insert(nid);
                    }
                }
                if let Phase::Voting { op, left } = &mut txn.phase {
                    *left -= 1;
                    if *left == 0 {
                        let op = *op;
                        self.votes_done(op, ttid, out);
                    }
                }
            }
            Pending::FailedVote(ttid) => {
                let Some(txn) = self.txns.get_mut(&ttid) else {
                    return;
                };
                let Phase::FailedVote(op) = txn.phase else {
                    return;
                };
                match answer {
                    Ok(Packet::Error(e)) if e.code == ErrorCode::Ack => {
                        txn.phase = Phase::Voted;
                        let resolved = txn.resolved.keys().copied().collect();
                        self.complete(op, Ok(Reply::Voted { resolved }));
                    }
                    Ok(Packet::Error(e)) if e.code == ErrorCode::IncompleteTransaction => {
                        txn.phase = Phase::Open;
                        self.complete(op, Err(ClientError::IncompleteTransaction));
                    }
                    other => {
                        txn.phase = Phase::Open;
                        self.complete(op, Err(answer_error(other)));
                    }
                }
            }
            Pending::Finish(ttid) => {
                let Some(txn) = self.txns.get_mut(&ttid) else {
                    return;
                };
                let Phase::Finishing(op) = txn.phase else {
                    return;
                };
                match answer {
                    Ok(Packet::AnswerTransactionFinished(p)) => self.committed(ttid, p.tid),
                    Err(ClientError::PrimaryMasterLost) => {
                        // The transaction may have committed: ask once reconnected.
                        txn.phase = Phase::Recovering(op);
                    }
                    other => {
                        self.txns.remove(&ttid);
                        self.complete(op, Err(answer_error(other)));
                    }
                }
            }
            Pending::FinalTid(ttid) => {
                let Some(txn) = self.txns.get(&ttid) else {
                    return;
                };
                let Phase::Recovering(op) = txn.phase else {
                    return;
                };
                match answer {
                    Ok(Packet::AnswerFinalTID(p)) => match p.tid {
                        Some(tid) if tid == Tid::MAX => {
                            // Not pending on the master any more: the storages know.
                            let partition = self.partition_of(ttid.0);
                            self.start_read(
                                op,
                                ReadTarget::Partition(partition),
                                protocol::AskFinalTID { ttid }.into(),
                                out,
                            );
                        }
                        Some(tid) => self.committed(ttid, tid),
                        None => {
                            self.txns.remove(&ttid);
                            self.complete(
                                op,
                                Err(ClientError::Transaction("transaction aborted".into())),
                            );
                        }
                    },
                    // Still lost: master_ready asks again.
                    Err(ClientError::PrimaryMasterLost) => {}
                    other => {
                        self.txns.remove(&ttid);
                        self.complete(op, Err(answer_error(other)));
                    }
                }
            }
            Pending::Read { read, nid } => self.read_answered(read, nid, answer, out),
        }
    }

    // -----------------------------------------------------------------------------------
    // Reads.

    fn read_object(
        &mut self,
        op: OpId,
        oid: Oid,
        at: Option<Tid>,
        before: Option<Tid>,
        out: &mut Outbox,
    ) {
        let partition = self.partition_of(oid.0);
        self.start_read(
            op,
            ReadTarget::Partition(partition),
            protocol::AskObject { oid, at, before }.into(),
            out,
        );
    }

    fn start_read(&mut self, op: OpId, target: ReadTarget, packet: Packet, out: &mut Outbox) {
        self.start_read_with(op, target, packet, false, out)
    }

    fn start_read_with(
        &mut self,
        op: OpId,
        target: ReadTarget,
        packet: Packet,
        load_current: bool,
        out: &mut Outbox,
    ) {
        let read = self.next_read;
        self.next_read += 1;
        self.reads.insert(
            read,
            Box::new(Read {
                op,
                target,
                packet,
                tried: Vec::new(),
                failures: 0,
                rounds: 0,
                invalidated: Vec::new(),
                cache_epoch: 0,
                wrong_checksum: None,
                record: None,
                load_current,
            }),
        );
        self.send_read(read, out);
    }

    /// Candidates in preference order: readable cells not recently failed, randomly,
    /// then the failed ones by failure expiry. Each comes with its sort key (kept rather
    /// than collected into another vector: this runs at every load).
    fn read_candidates(&mut self, partition: u32) -> Vec<(f64, Nid)> {
        let Some(pt) = &self.pt else {
            return Vec::new();
        };
        let mut keyed: Vec<(f64, Nid)> = Vec::new();
        for nid in pt.readable_cells(partition) {
            if !self.nodes.is_running(nid) {
                continue;
            }
            let key = match self.failures.get(&nid) {
                Some(&expiry) if expiry > self.now => expiry,
                _ => self.rng.unit(),
            };
            keyed.push((key, nid));
        }
        keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
        keyed
    }

    fn send_read(&mut self, read: u64, out: &mut Outbox) {
        let Some(r) = self.reads.get(&read) else {
            return;
        };
        let target = r.target;
        let candidates = match target {
            ReadTarget::Node(nid) => vec![(0.0, nid)],
            ReadTarget::Partition(partition) => {
                if self.pt.is_none() {
                    return self.read_failed(read, ClientError::PrimaryMasterLost, out);
                }
                self.read_candidates(partition)
            }
        };
        loop {
            let Some(r) = self.reads.get_mut(&read) else {
                return;
            };
            let Some(nid) = candidates
                .iter()
                .map(|&(_, nid)| nid)
                .find(|n| !r.tried.contains(n))
            else {
                break;
            };
            r.tried.push(nid);
            let packet = r.packet.clone();
            if self.send_storage(nid, packet, Some(Pending::Read { read, nid }), out) {
                return;
            }
            if let Some(r) = self.reads.get_mut(&read) {
                r.failures += 1;
            }
        }
        // A round without success.
        let Some(r) = self.reads.get_mut(&read) else {
            return;
        };
        r.rounds += 1;
        if matches!(target, ReadTarget::Node(_)) {
            return self.read_done(
                read,
                Err(ClientError::Storage("node unreachable".into())),
                out,
            );
        }
        let give_up =
            r.rounds >= MAX_READ_ROUNDS || (r.failures > candidates.len() && r.rounds > 1);
        if give_up || candidates.is_empty() && r.rounds > 1 {
            let error = match r.wrong_checksum.clone() {
                Some(record) if self.config.ignore_wrong_checksum => {
                    let oid = match &r.packet {
                        Packet::AskObject(ask) => ask.oid,
                        _ => Oid::ZERO,
                    };
                    let answer = decoded_answer(oid, &record);
                    r.record = Some(record);
                    return self.read_done(read, Ok(answer), out);
                }
                Some(record) => match &r.packet {
                    Packet::AskObject(ask) => ClientError::WrongChecksum {
                        oid: ask.oid,
                        serial: record.serial,
                    },
                    _ => ClientError::Storage("wrong checksum".into()),
                },
                None => ClientError::Storage("no storage node could serve the request".into()),
            };
            return self.read_failed(read, error, out);
        }
        // Get partition table updates before trying again.
        self.ping_master(PingFor::Read(read), out);
    }

    fn retry_read(&mut self, read: u64, out: &mut Outbox) {
        if let Some(r) = self.reads.get_mut(&read) {
            r.tried.clear();
            self.send_read(read, out);
        }
    }

    fn read_failed(&mut self, read: u64, error: ClientError, out: &mut Outbox) {
        self.read_done(read, Err(error), out);
    }

    fn read_answered(
        &mut self,
        read: u64,
        nid: Nid,
        answer: Result<Packet, ClientError>,
        out: &mut Outbox,
    ) {
        let Some(r) = self.reads.get_mut(&read) else {
            return;
        };
        match answer {
            Err(_) => {
                r.failures += 1;
                self.send_read(read, out);
            }
            Ok(Packet::Error(e)) if e.code == ErrorCode::NonReadableCell => {
                // Our table and the storage's differ: not the node's fault.
                self.send_read(read, out);
            }
            Ok(Packet::Error(e)) if e.code == ErrorCode::NotReady => {
                r.failures += 1;
                self.failures.insert(nid, self.now + MAX_FAILURE_AGE);
                self.send_read(read, out);
            }
            Ok(Packet::AnswerObject(p)) => {
                let has_data = !p.data.is_empty() || p.checksum != ZERO_HASH;
                let data = if has_data {
                    match self
                        .codec
                        .decode(p.compression.unwrap_or(0), &p.checksum, &p.data)
                    {
                        Ok(data) => Some(data),
                        Err(e) => {
                            tracing::error!(%nid, oid = %p.oid, serial = %p.serial, "{e}");
                            r.failures += 1;
                            let fallback = self
                                .codec
                                .decompress(p.compression.unwrap_or(0), &p.data)
                                .unwrap_or_default();
                            r.wrong_checksum.get_or_insert(ObjectRecord {
                                data: Some(fallback),
                                serial: p.serial,
                                next_serial: p.next_serial,
                                data_serial: p.data_serial,
                            });
                            return self.send_read(read, out);
                        }
                    }
                } else {
                    None
                };
                let record = ObjectRecord {
                    data,
                    serial: p.serial,
                    next_serial: p.next_serial,
                    data_serial: p.data_serial,
                };
                let answer = decoded_answer(p.oid, &record);
                r.record = Some(record);
                self.read_done(read, Ok(answer), out);
            }
            Ok(packet) => self.read_done(read, Ok(packet), out),
        }
    }

    /// A read is over: give its answer to its operation.
    fn read_done(&mut self, read: u64, answer: Result<Packet, ClientError>, out: &mut Outbox) {
        let Some(r) = self.reads.remove(&read) else {
            return;
        };
        let op = r.op;
        if self.multis.contains_key(&op) {
            return self.multi_answer(op, r.target, answer, out);
        }
        // A final TID asked to a storage during finish recovery.
        if let Packet::AskFinalTID(ask) = &r.packet {
            let ttid = ask.ttid;
            return match answer {
                Ok(Packet::AnswerFinalTID(p)) if p.tid.is_some() => {
                    self.committed(ttid, p.tid.unwrap_or(ttid))
                }
                other => {
                    self.txns.remove(&ttid);
                    let error = match other {
                        Ok(Packet::AnswerFinalTID(_)) => {
                            ClientError::Transaction("transaction aborted".into())
                        }
                        other => answer_error(other),
                    };
                    self.complete(op, Err(error));
                }
            };
        }
        let result = match (&r.packet, answer) {
            (Packet::AskObject(ask), Ok(Packet::AnswerObject(_))) => {
                let Some(record) = r.record.clone() else {
                    return self.complete(op, Err(ClientError::Storage("no record".into())));
                };
                if let (Some(data), None) = (&record.data, record.data_serial) {
                    if r.cache_epoch == 0 {
                        let next = record.next_serial.or_else(|| {
                            r.invalidated
                                .iter()
                                .copied()
                                .filter(|&t| t > record.serial)
                                .min()
                        });
                        self.cache.store(ask.oid, data.clone(), record.serial, next);
                    }
                }
                Ok(Reply::Object(record))
            }
            (Packet::AskObject(ask), Ok(Packet::Error(e))) => match e.code {
                ErrorCode::OidNotFound if ask.before.is_some() && ask.at.is_none() => {
                    // Load (current) maps to KeyError: the object is newer than our view.
                    Ok(Reply::None)
                }
                ErrorCode::OidNotFound => Err(ClientError::OidNotFound(ask.oid)),
                ErrorCode::OidDoesNotExist => Err(ClientError::OidDoesNotExist(ask.oid)),
                code => Err(remote(code, &e.message)),
            },
            (Packet::AskObjectHistory(_), Ok(Packet::AnswerObjectHistory(p))) => {
                let serials = p.history_list;
                let targets: Vec<ReadTarget> = serials
                    .iter()
                    .map(|(tid, _)| ReadTarget::Partition(self.partition_of(tid.0)))
                    .collect();
                let packets: Vec<Packet> = serials
                    .iter()
                    .map(|(tid, _)| protocol::AskTransactionInformation { tid: *tid }.into())
                    .collect();
                self.start_multi_packets(op, MultiKind::History(serials), targets, packets, out);
                return;
            }
            (Packet::AskObjectHistory(ask), Ok(Packet::Error(e))) => match e.code {
                ErrorCode::OidNotFound | ErrorCode::OidDoesNotExist => {
                    Err(ClientError::OidDoesNotExist(ask.oid))
                }
                code => Err(remote(code, &e.message)),
            },
            (Packet::AskTransactionInformation(_), Ok(Packet::AnswerTransactionInformation(p))) => {
                Ok(Reply::Transaction(transaction_info(p)))
            }
            (Packet::AskTransactionInformation(ask), Ok(Packet::Error(e))) => match e.code {
                ErrorCode::TidNotFound => Err(ClientError::TidNotFound(ask.tid)),
                code => Err(remote(code, &e.message)),
            },
            (_, other) => Err(answer_error(other)),
        };
        // A load of the current revision that finds nothing before our view: POSKeyError.
        let result = match (result, &r.packet) {
            (Ok(Reply::None), Packet::AskObject(ask)) if r.load_current => {
                Err(ClientError::OidDoesNotExist(ask.oid))
            }
            (result, _) => result,
        };
        self.complete(op, result);
    }

    fn start_multi(
        &mut self,
        op: OpId,
        kind: MultiKind,
        targets: Vec<ReadTarget>,
        packet: impl Fn(ReadTarget) -> Packet,
        out: &mut Outbox,
    ) {
        let packets = targets.iter().map(|&t| packet(t)).collect();
        self.start_multi_packets(op, kind, targets, packets, out);
    }

    fn start_multi_packets(
        &mut self,
        op: OpId,
        kind: MultiKind,
        targets: Vec<ReadTarget>,
        packets: Vec<Packet>,
        out: &mut Outbox,
    ) {
        self.multis.insert(
            op,
            Multi {
                kind,
                left: targets.len(),
                answers: Vec::new(),
                error: None,
            },
        );
        if targets.is_empty() {
            return self.multi_finish(op, out);
        }
        for (target, packet) in targets.into_iter().zip(packets) {
            self.start_read(op, target, packet, out);
        }
    }

    fn multi_answer(
        &mut self,
        op: OpId,
        target: ReadTarget,
        answer: Result<Packet, ClientError>,
        out: &mut Outbox,
    ) {
        let Some(multi) = self.multis.get_mut(&op) else {
            return;
        };
        multi.left -= 1;
        match answer {
            Ok(Packet::Error(e)) => {
                let error = match (&multi.kind, e.code) {
                    // A transaction of the history that vanished (pack) is just not shown.
                    (MultiKind::History(_), ErrorCode::TidNotFound) => None,
                    (
                        MultiKind::UndoSerial | MultiKind::UndoInfo { .. },
                        ErrorCode::OidNotFound | ErrorCode::UndoPackError | ErrorCode::TidNotFound,
                    ) => Some(ClientError::Undo("non-undoable transaction".into())),
                    (_, code) => Some(remote(code, &e.message)),
                };
                if let Some(error) = error {
                    multi.error.get_or_insert(error);
                }
            }
            Ok(packet) => multi.answers.push(packet),
            // An unreachable node only makes the undo log less complete (as NEO/py).
            Err(_) if matches!(target, ReadTarget::Node(_)) => {}
            Err(e) => {
                multi.error.get_or_insert(e);
            }
        }
        if multi.left == 0 {
            self.multi_finish(op, out);
        }
    }

    fn multi_finish(&mut self, op: OpId, out: &mut Outbox) {
        let Some(multi) = self.multis.remove(&op) else {
            return;
        };
        if let Some(error) = multi.error {
            return self.complete(op, Err(error));
        }
        let reply = match multi.kind {
            MultiKind::History(serials) => {
                let mut infos: BTreeMap<Tid, TransactionInfo> = BTreeMap::new();
                for packet in multi.answers {
                    if let Packet::AnswerTransactionInformation(p) = packet {
                        infos.insert(p.tid, transaction_info(p));
                    }
                }
                Reply::History(
                    serials
                        .into_iter()
                        .map(|(serial, size)| HistoryEntry {
                            serial,
                            size,
                            transaction: infos.get(&serial).cloned(),
                        })
                        .collect(),
                )
            }
            MultiKind::UndoLog { count } => {
                let mut tids = BTreeSet::new();
                for packet in multi.answers {
                    if let Packet::AnswerTIDs(p) = packet {
                        tids.extend(p.tid_list);
                    }
                }
                Reply::Tids(tids.into_iter().rev().take(count).collect())
            }
            MultiKind::TidsFrom { length } => {
                let mut tids = BTreeSet::new();
                for packet in multi.answers {
                    if let Packet::AnswerTIDsFrom(p) = packet {
                        tids.extend(p.tid_list);
                    }
                }
                Reply::Tids(tids.into_iter().take(length).collect())
            }
            MultiKind::UndoInfo { ttid, undone_tid } => {
                let oids = multi.answers.into_iter().find_map(|packet| match packet {
                    Packet::AnswerTransactionInformation(p) => Some(p.oid_list),
                    _ => None,
                });
                let Some(oids) = oids else {
                    return self.complete(op, Err(ClientError::Undo("no transaction".into())));
                };
                let mut by_partition: BTreeMap<u32, Vec<Oid>> = BTreeMap::new();
                for oid in oids {
                    by_partition
                        .entry(self.partition_of(oid.0))
                        .or_default()
                        .push(oid);
                }
                let ltid = Tid(self.last_tid.unwrap_or(Tid::ZERO).0 + 1);
                let targets = by_partition
                    .keys()
                    .map(|&p| ReadTarget::Partition(p))
                    .collect();
                let packets = by_partition
                    .into_values()
                    .map(|oid_list| {
                        protocol::AskObjectUndoSerial {
                            ttid,
                            ltid,
                            undone_tid,
                            oid_list,
                        }
                        .into()
                    })
                    .collect();
                return self.start_multi_packets(op, MultiKind::UndoSerial, targets, packets, out);
            }
            MultiKind::UndoSerial => {
                let mut all = BTreeMap::new();
                for packet in multi.answers {
                    if let Packet::AnswerObjectUndoSerial(p) = packet {
                        all.extend(p.object_tid_dict.0);
                    }
                }
                Reply::UndoSerials(all.into_iter().collect())
            }
        };
        self.complete(op, Ok(reply));
    }

    // -----------------------------------------------------------------------------------
    // Undo.

    fn undo_serial(&mut self, op: OpId, ttid: Tid, undone_tid: Tid, out: &mut Outbox) {
        if !self.txns.contains_key(&ttid) {
            return self.complete(op, Err(ClientError::UnknownTransaction(ttid)));
        }
        let partition = self.partition_of(undone_tid.0);
        self.start_multi_packets(
            op,
            MultiKind::UndoInfo { ttid, undone_tid },
            vec![ReadTarget::Partition(partition)],
            vec![protocol::AskTransactionInformation { tid: undone_tid }.into()],
            out,
        );
    }

    // -----------------------------------------------------------------------------------
    // Two-phase commit.

    #[allow(clippy::too_many_arguments)]
    fn store(
        &mut self,
        op: OpId,
        ttid: Tid,
        oid: Oid,
        serial: Tid,
        data: Option<Bytes>,
        data_serial: Option<Tid>,
        kind: ObjectKind,
        encoded: Option<codec::Encoded>,
        out: &mut Outbox,
    ) {
        let Some(txn) = self.txns.get_mut(&ttid) else {
            return self.complete(op, Err(ClientError::UnknownTransaction(ttid)));
        };
        if let Some(error) = &txn.error {
            let error = ClientError::Transaction(error.clone());
            return self.complete(op, Err(error));
        }
        if !matches!(txn.phase, Phase::Open) {
            return self.complete(op, Err(ClientError::Transaction("already voting".into())));
        }
        // Storing again an object in conflict, based on the committed serial, resolves it.
        if txn.conflicts.get(&oid) == Some(&serial) {
            txn.conflicts.remove(&oid);
            txn.resolved.insert(oid, serial);
        }
        let encoded = match (encoded, &data, kind) {
            (Some(encoded), _, ObjectKind::Store) => encoded,
            (None, Some(data), ObjectKind::Store) => self.codec.encode(data),
            _ => codec::no_data(),
        };
        let version = txn.objects.get(&oid).map_or(0, |o| o.version + 1);
        let Some(pt) = &self.pt else {
            txn.error = Some("primary master lost".into());
            return self.complete(op, Err(ClientError::PrimaryMasterLost));
        };
        let partition = pt.partition_of(oid.0);
        // Every cell of a running node, whatever its state (cluster.md 5.3).
        let nodes: Vec<Nid> = pt
            .row(partition)
            .iter()
            .map(|cell| cell.nid)
            .filter(|nid| self.nodes.is_running(*nid) && !txn.failed.contains(nid))
            .collect();
        let packet: Packet = match kind {
            ObjectKind::Check => protocol::AskCheckCurrentSerial { ttid, oid, serial }.into(),
            _ => protocol::AskStoreObject {
                oid,
                serial,
                compression: encoded.compression,
                checksum: encoded.checksum,
                data: encoded.data.clone(),
                data_serial,
                ttid,
            }
            .into(),
        };
        let mut sent = BTreeSet::new();
        for nid in nodes {
            let pending = Pending::Store {
                ttid,
                oid,
                nid,
                version,
            };
            if self.send_storage(nid, packet.clone(), Some(pending), out) {
                sent.insert(nid);
            } else if let Some(txn) = self.txns.get_mut(&ttid) {
                txn.failed.insert(nid);
            }
        }
        let Some(txn) = self.txns.get_mut(&ttid) else {
            return;
        };
        if sent.is_empty() {
            txn.error = Some(format!("no storage node to write {oid}"));
            return self.complete(
                op,
                Err(ClientError::Storage(format!(
                    "no storage node to write {oid}"
                ))),
            );
        }
        txn.involved.extend(sent.iter().copied());
        if !txn.objects.contains_key(&oid) {
            txn.order.push(oid);
        }
        // The data is kept for stores only (cache after commit, conflict resolution).
        txn.objects.insert(
            oid,
            TxnObject {
                kind,
                serial,
                data: if kind == ObjectKind::Store {
                    data
                } else {
                    None
                },
                data_serial,
                version,
                pending: sent,
                accepted: BTreeSet::new(),
            },
        );
        self.complete(op, Ok(Reply::Done));
    }

    fn store_answered(
        &mut self,
        ttid: Tid,
        oid: Oid,
        nid: Nid,
        version: u32,
        answer: Result<Packet, ClientError>,
        out: &mut Outbox,
    ) {
        let partition = self.partition_of(oid.0);
        let Some(txn) = self.txns.get_mut(&ttid) else {
            return;
        };
        let Some(object) = txn.objects.get_mut(&oid) else {
            return;
        };
        if object.version != version {
            // An answer to a store replaced since (after a conflict resolution).
            return;
        }
        object.pending.remove(&nid);
        let conflict = match answer {
            Ok(Packet::AnswerStoreObject(p)) => p.conflict,
            Ok(Packet::AnswerCheckCurrentSerial(p)) => p.conflict,
            Ok(other) => {
                tracing::warn!(%nid, %oid, answer = ?other, "store refused");
                txn.failed.insert(nid);
                return self.try_vote(ttid, out);
            }
            Err(_) => {
                txn.failed.insert(nid);
                return self.try_vote(ttid, out);
            }
        };
        match conflict {
            None => {
                object.accepted.insert(nid);
                txn.locked.insert((partition, nid));
            }
            Some(tid) if tid == Tid::ZERO => {
                object.accepted.insert(nid);
                txn.lockless.insert((partition, nid));
            }
            Some(committed) => {
                if object.kind == ObjectKind::Check {
                    let serial = object.serial;
                    txn.read_conflict.get_or_insert((oid, serial, committed));
                } else if committed > object.serial {
                    txn.add_conflict(oid, committed);
                } else {
                    // A conflict with what we already based this store on: stale.
                    object.accepted.insert(nid);
                }
            }
        }
        self.try_vote(ttid, out);
    }

    fn vote(&mut self, op: OpId, ttid: Tid, out: &mut Outbox) {
        let Some(txn) = self.txns.get_mut(&ttid) else {
            return self.complete(op, Err(ClientError::UnknownTransaction(ttid)));
        };
        match txn.phase {
            Phase::Open => {}
            Phase::Voted => {
                let resolved = txn.resolved.keys().copied().collect();
                return self.complete(op, Ok(Reply::Voted { resolved }));
            }
            _ => {
                return self.complete(op, Err(ClientError::Transaction("vote in progress".into())))
            }
        }
        txn.phase = Phase::WaitStores(op);
        self.try_vote(ttid, out);
    }

    /// Goes on with a vote waiting for stores, if every store was answered.
    fn try_vote(&mut self, ttid: Tid, out: &mut Outbox) {
        let Some(txn) = self.txns.get_mut(&ttid) else {
            return;
        };
        let Phase::WaitStores(op) = txn.phase else {
            return;
        };
        if txn.relocks > 0 || txn.objects.values().any(|o| !o.pending.is_empty()) {
            return;
        }
        let fail = |txn: &mut Txn, error: ClientError| {
            txn.phase = Phase::Open;
            error
        };
        if let Some(error) = txn.error.clone() {
            let error = fail(txn, ClientError::Transaction(error));
            return self.complete(op, Err(error));
        }
        if let Some((oid, serial, committed)) = txn.read_conflict {
            let error = fail(
                txn,
                ClientError::ReadConflict {
                    oid,
                    serial,
                    committed,
                },
            );
            return self.complete(op, Err(error));
        }
        if let Some((&oid, _)) = txn
            .objects
            .iter()
            .find(|(oid, o)| o.accepted.is_empty() && !txn.conflicts.contains_key(oid))
        {
            let error = fail(txn, ClientError::Storage(format!("could not store {oid}")));
            return self.complete(op, Err(error));
        }
        if !txn.conflicts.is_empty() {
            let newest = txn.conflicts.values().max().copied().unwrap_or(Tid::ZERO);
            if !txn.synced_for_conflicts && self.last_tid.is_some_and(|l| newest > l) {
                // The invalidation of that commit is on its way: let ZODB see it first.
                self.ping_master(PingFor::Vote(ttid), out);
                return;
            }
            let Some(txn) = self.txns.get_mut(&ttid) else {
                return;
            };
            txn.synced_for_conflicts = false;
            txn.phase = Phase::Open;
            let conflicts = txn
                .conflicts
                .iter()
                .map(|(&oid, &committed_serial)| {
                    let object = txn.objects.get(&oid);
                    Conflict {
                        oid,
                        serial: object.map_or(Tid::ZERO, |o| o.serial),
                        committed_serial,
                        data: object.and_then(|o| o.data.clone()).unwrap_or_default(),
                    }
                })
                .collect();
            return self.complete(op, Ok(Reply::Conflicts(conflicts)));
        }
        // Send the vote: metadata to the cells of the TTID's partition, a plain vote to
        // every other node written to.
        let Some(pt) = &self.pt else {
            let error = fail(txn, ClientError::PrimaryMasterLost);
            return self.complete(op, Err(error));
        };
        let partition = pt.partition_of(ttid.0);
        let metadata_nodes: Vec<Nid> = pt
            .row(partition)
            .iter()
            .map(|cell| cell.nid)
            .filter(|nid| self.nodes.is_running(*nid) && !txn.failed.contains(nid))
            .collect();
        // Every object enters a transaction through a store, which records its order.
        let oids = txn.order.clone();
        let store_txn: Packet = protocol::AskStoreTransaction {
            ttid,
            user: txn.meta.user.clone(),
            description: txn.meta.description.clone(),
            extension: txn.meta.extension.clone(),
            oid_list: oids,
            pack: txn.pack.clone(),
        }
        .into();
        let others: Vec<Nid> = txn
            .involved
            .iter()
            .copied()
            .filter(|nid| !metadata_nodes.contains(nid) && !txn.failed.contains(nid))
            .collect();
        let mut left = 0;
        let mut metadata_sent = false;
        for nid in metadata_nodes {
            if self.send_storage(
                nid,
                store_txn.clone(),
                Some(Pending::Vote { ttid, nid }),
                out,
            ) {
                left += 1;
                metadata_sent = true;
            } else if let Some(txn) = self.txns.get_mut(&ttid) {
                txn.failed.insert(nid);
            }
        }
        for nid in others {
            let vote = protocol::AskVoteTransaction { ttid }.into();
            if self.send_storage(nid, vote, Some(Pending::Vote { ttid, nid }), out) {
                left += 1;
            } else if let Some(txn) = self.txns.get_mut(&ttid) {
                txn.failed.insert(nid);
            }
        }
        let Some(txn) = self.txns.get_mut(&ttid) else {
            return;
        };
        if !metadata_sent {
            let error = fail(
                txn,
                ClientError::Storage("no storage node for the transaction metadata".into()),
            );
            return self.complete(op, Err(error));
        }
        txn.phase = Phase::Voting { op, left };
    }

    /// Every vote answered: check failures, tell the master about them.
    fn votes_done(&mut self, op: OpId, ttid: Tid, out: &mut Outbox) {
        let Some(txn) = self.txns.get_mut(&ttid) else {
            return;
        };
        if let Some(error) = txn.error.clone() {
            txn.phase = Phase::Open;
            return self.complete(op, Err(ClientError::Transaction(error)));
        }
        if txn.failed.is_empty() {
            txn.phase = Phase::Voted;
            let resolved = txn.resolved.keys().copied().collect();
            return self.complete(op, Ok(Reply::Voted { resolved }));
        }
        // Lockless rule (cluster.md 5.6): every partition written locklessly somewhere
        // needs a node that locked it for real and did not fail.
        for &(partition, _) in &txn.lockless {
            let checked = txn
                .locked
                .iter()
                .any(|&(p, nid)| p == partition && !txn.failed.contains(&nid));
            if !checked {
                txn.phase = Phase::Open;
                return self.complete(
                    op,
                    Err(ClientError::Storage(format!(
                        "partition {partition} not fully write-locked"
                    ))),
                );
            }
        }
        let failed: Vec<Nid> = txn
            .failed
            .iter()
            .copied()
            .filter(|nid| self.nodes.is_running(*nid))
            .collect();
        match self
            .master
            .conn
            .filter(|_| self.master.state == MasterState::Ready)
        {
            Some(conn) => {
                txn.phase = Phase::FailedVote(op);
                let msg_id = out.ask(conn, protocol::FailedVote { ttid, failed });
                self.pending
                    .insert((conn, msg_id), Pending::FailedVote(ttid));
            }
            None => {
                txn.phase = Phase::Open;
                self.complete(op, Err(ClientError::PrimaryMasterLost));
            }
        }
    }

    fn finish(&mut self, op: OpId, ttid: Tid, out: &mut Outbox) {
        let Some(txn) = self.txns.get_mut(&ttid) else {
            return self.complete(op, Err(ClientError::UnknownTransaction(ttid)));
        };
        if !matches!(txn.phase, Phase::Voted) {
            return self.complete(op, Err(ClientError::Transaction("not voted".into())));
        }
        if let Some(error) = &txn.error {
            let error = ClientError::Transaction(error.clone());
            return self.complete(op, Err(error));
        }
        let Some(conn) = self
            .master
            .conn
            .filter(|_| self.master.state == MasterState::Ready)
        else {
            return self.complete(op, Err(ClientError::PrimaryMasterLost));
        };
        let np = self.pt.as_ref().map_or(1, |pt| pt.np()) as u64;
        let mut oid_list = Vec::new();
        let mut deleted = BTreeSet::new();
        let mut checked = BTreeSet::new();
        for (&oid, object) in &txn.objects {
            let partition = (oid.0 % np.max(1)) as u32;
            match object.kind {
                ObjectKind::Store => oid_list.push(oid),
                ObjectKind::Delete => {
                    deleted.insert(partition);
                }
                ObjectKind::Check => {
                    checked.insert(partition);
                }
            }
        }
        txn.phase = Phase::Finishing(op);
        let msg_id = out.ask(
            conn,
            protocol::AskFinishTransaction {
                ttid,
                oid_list,
                deleted: deleted.into_iter().collect(),
                checked: checked.into_iter().collect(),
                pack: txn.pack.clone(),
            },
        );
        self.pending.insert((conn, msg_id), Pending::Finish(ttid));
    }

    /// The transaction is committed at `tid`: the cache learns our own stores.
    fn committed(&mut self, ttid: Tid, tid: Tid) {
        let Some(txn) = self.txns.remove(&ttid) else {
            return;
        };
        let op = match txn.phase {
            Phase::Finishing(op) | Phase::Recovering(op) => op,
            _ => return,
        };
        // A finish recovered after a reconnection (AskFinalTID) may be older than commits
        // we already heard of: then our data is not current and the cache must not say so.
        let superseded = self.last_tid.is_some_and(|last| tid < last);
        for (&oid, object) in &txn.objects {
            if object.kind == ObjectKind::Check || superseded {
                continue;
            }
            self.cache.invalidate(oid, tid);
            self.note_invalidation(oid, tid);
            if let (Some(data), None) = (&object.data, object.data_serial) {
                self.cache.store(oid, data.clone(), tid, None);
            }
        }
        if self.last_tid.is_none_or(|last| tid > last) {
            self.last_tid = Some(tid);
        }
        self.complete(op, Ok(Reply::Tid(tid)));
    }

    fn abort(&mut self, op: OpId, ttid: Tid, out: &mut Outbox) {
        let Some(txn) = self.txns.remove(&ttid) else {
            // Aborting what does not exist (begin failed, already aborted) is harmless.
            return self.complete(op, Ok(Reply::Done));
        };
        match txn.phase {
            Phase::WaitStores(waiting)
            | Phase::Voting { op: waiting, .. }
            | Phase::FailedVote(waiting) => {
                self.complete(waiting, Err(ClientError::Transaction("aborted".into())));
            }
            _ => {}
        }
        // On each storage connection, after what was sent for this transaction.
        for &nid in &txn.involved {
            if self.storages.contains_key(&nid) {
                let packet = protocol::AbortTransaction {
                    ttid,
                    nid_list: Vec::new(),
                }
                .into();
                self.send_storage(nid, packet, None, out);
            }
        }
        if let Some(conn) = self
            .master
            .conn
            .filter(|_| self.master.state == MasterState::Ready)
        {
            out.notify(
                conn,
                protocol::AbortTransaction {
                    ttid,
                    nid_list: txn.involved.iter().copied().collect(),
                },
            );
        }
        self.complete(op, Ok(Reply::Done));
    }
}

impl Txn {
    fn new(meta: TransactionMeta) -> Txn {
        Txn {
            meta,
            objects: BTreeMap::new(),
            order: Vec::new(),
            conflicts: BTreeMap::new(),
            resolved: BTreeMap::new(),
            read_conflict: None,
            involved: BTreeSet::new(),
            failed: BTreeSet::new(),
            lockless: BTreeSet::new(),
            locked: BTreeSet::new(),
            relocks: 0,
            error: None,
            pack: None,
            synced_for_conflicts: false,
            phase: Phase::Open,
        }
    }

    /// Records a conflict unless a newer one (or its resolution) is already known.
    fn add_conflict(&mut self, oid: Oid, committed: Tid) {
        if self.resolved.get(&oid).is_some_and(|&r| r >= committed) {
            return;
        }
        let entry = self.conflicts.entry(oid).or_insert(committed);
        if *entry < committed {
            *entry = committed;
        }
    }
}

impl Node for Client {
    fn handle(&mut self, now: Time, input: Input, out: &mut Outbox) {
        self.now = now;
        match input {
            Input::Start | Input::Timer => {
                if self.master.wanted {
                    self.connect_master(out);
                }
            }
            Input::Idle => {}
            Input::Accepted { conn, .. } => out.close(conn),
            Input::Connected { .. } => {}
            Input::ConnectFailed { conn } | Input::Closed { conn } => {
                out.forget(conn);
                match self.peers.get(&conn).copied() {
                    Some(Peer::Master) => self.master_lost(false, out),
                    Some(Peer::Storage(nid)) => self.storage_lost(nid, true, false, out),
                    None => {}
                }
            }
            Input::Packet {
                conn,
                msg_id,
                packet,
            } => match self.peers.get(&conn).copied() {
                Some(Peer::Master) => self.master_packet(conn, msg_id, packet, out),
                Some(Peer::Storage(_)) => self.storage_packet(conn, msg_id, packet, out),
                None => {}
            },
            Input::Answer {
                conn,
                msg_id,
                packet,
            } => {
                let Some(pending) = self.pending.remove(&(conn, msg_id)) else {
                    return;
                };
                // NOT_READY and PROTOCOL_ERROR are followed by the peer closing; errors
                // are data for the request's handler.
                self.dispatch(pending, Ok(packet), out);
            }
            Input::Shutdown => {
                for (op, _) in std::mem::take(&mut self.waiting) {
                    self.complete(op, Err(ClientError::Closed));
                }
                if let Some(conn) = self.master.conn.take() {
                    out.close(conn);
                }
                for (_, link) in std::mem::take(&mut self.storages) {
                    out.close(link.conn);
                }
                out.exit(0, "client closed");
            }
        }
    }

    fn deadline(&self) -> Option<Time> {
        if !self.master.wanted || self.master.state != MasterState::Idle {
            return None;
        }
        // The next address tried is the hint or the next in turn; it may wait for the
        // rate limit.
        let address = self.master.hint.clone().or_else(|| {
            let n = self.config.masters.len();
            (n > 0).then(|| self.config.masters[self.master.next_index % n].clone())
        })?;
        Some(
            self.master
                .attempts
                .get(&address)
                .map_or(self.now, |&t| t + RECONNECT_DELAY),
        )
    }
}

/// What to do with an Error or failure for requests answered by a specific packet.
fn answer_error(answer: Result<Packet, ClientError>) -> ClientError {
    match answer {
        Ok(Packet::Error(e)) => remote(e.code, &e.message),
        Ok(other) => ClientError::Storage(format!("unexpected answer {}", other.name())),
        Err(e) => e,
    }
}

fn remote(code: ErrorCode, message: &Bytes) -> ClientError {
    ClientError::Remote {
        code,
        message: String::from_utf8_lossy(message).into_owned(),
    }
}

fn transaction_info(p: protocol::AnswerTransactionInformation) -> TransactionInfo {
    TransactionInfo {
        tid: p.tid,
        user: p.user,
        description: p.description,
        extension: p.extension,
        packed: p.packed,
        oids: p.oid_list,
    }
}

/// A stand-in answer for a read whose decoded record is kept in the read itself.
fn decoded_answer(oid: Oid, record: &ObjectRecord) -> Packet {
    protocol::AnswerObject {
        oid,
        serial: record.serial,
        next_serial: record.next_serial,
        compression: Some(0),
        checksum: ZERO_HASH,
        data: Bytes::new(),
        data_serial: record.data_serial,
    }
    .into()
}

fn send(out: &mut Outbox, conn: ConnId, packet: Packet) -> u32 {
    if packet.kind().expects_answer() {
        out.ask(conn, packet)
    } else {
        out.notify(conn, packet)
    }
}
