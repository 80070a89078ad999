//! The storage node as a sans-IO state machine (cluster.md 2.11): the bootstrap loop that
//! finds the primary master, the initialisation phase that serves recovery and
//! verification, and the operation phase that serves clients and other storages and
//! replicates (the replication itself is in `replication.rs`).
//!
//! Answers that promise durable writes (votes, locks) are held and sent after one backend
//! commit that covers every transaction that reached such a point meanwhile (group
//! commit): the commit runs on [`Input::Idle`], i.e. once the driver has no event
//! waiting, after a short wait for other transactions in progress, or before any input
//! other than plain client and commit requests.
//!
//! Every packet is checked against the phase and the peer it came from; anything
//! unexpected is answered `Error(PROTOCOL_ERROR)` and its connection closed, with the
//! reason logged, as NEO/py's handlers do. A backend error is fatal: the node exits with
//! status 1, because continuing with a database in an unknown state could lose data.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use neo_node::{ConnId, Input, Node, NodeTable, Outbox, Rng, Time};
use neo_protocol::{
    AcceptIdentification, Address, AnswerLastIDs, AnswerLockedTransactions, AnswerObject,
    AnswerObjectHistory, AnswerObjectUndoSerial, AnswerPackOrders, AnswerPartitionTable,
    AnswerRecovery, AnswerTIDs, AnswerTIDsFrom, AnswerTransactionInformation, Bytes, CellChange,
    CellState, ClusterState, Dict, ErrorCode, Nid, NodeInfo, NodeState, NodeType,
    NotifyPackCompleted, NotifyReady, PackOrder, Packet, Pong, RequestIdentification, Row, Tid,
    Value, INVALID_PARTITION, ZERO_HASH,
};
use thiserror::Error;
use tracing::{debug, error, info, warn};

use crate::backend::{format_hex_tid, Backend, BackendError};
use crate::checker::Checker;
use crate::pack::PackState;
use crate::replication::Replication;
use crate::table::Table;
use crate::transactions::TransactionManager;

/// How a storage is configured (`neostorage` options, tools.md 1.3). The backend is built
/// by the caller from `--adapter`/`--database`.
#[derive(Debug, Clone)]
pub struct Config {
    pub cluster: String,
    /// Our listening address (already bound by the driver).
    pub address: Address,
    pub masters: Vec<Address>,
    /// `--nid` (testing): proposed instead of the stored NID.
    pub nid: Option<Nid>,
    /// Topology path sent to the master (`extra.devpath`): NEO/py sends the hostname and
    /// the device number of the database file.
    pub devpath: Vec<Bytes>,
    /// Seeds the choice of replication sources.
    pub seed: u64,
    /// `--disable-drop-partitions`: keep the data of cells taken away from this node.
    pub disable_drop_partitions: bool,
}

#[derive(Debug, Error)]
pub enum StartError {
    /// NEO/py's message for a database of another cluster.
    #[error("name '{configured}' does not match with the database: '{stored}'")]
    NameMismatch { configured: String, stored: String },
    #[error("at least one master must be defined")]
    NoMaster,
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// NEO/py connects at most once a second to the same address (cluster.md 1.6).
pub(crate) const RECONNECT_DELAY: Time = 1.0;

/// A storage node over a backend.
pub struct Storage<B: Backend> {
    pub(crate) config: Config,
    pub(crate) backend: B,
    pub(crate) rng: Rng,
    pub(crate) nid: Option<Nid>,
    pub(crate) phase: Phase,
    pub(crate) now: Time,
    pub(crate) table: Table,
    pub(crate) nodes: NodeTable,
    /// Known master addresses, in the bootstrap's round-robin order.
    masters: Vec<Address>,
    master_index: usize,
    /// Where NotPrimaryMaster said the primary is.
    redirect: Option<Address>,
    pub(crate) master: Option<MasterLink>,
    master_retry_at: Option<Time>,
    /// When we last tried to connect to each address (rate limit).
    pub(crate) last_connect: HashMap<Address, Time>,
    /// Connections with other nodes (clients and storages, both directions).
    pub(crate) links: BTreeMap<ConnId, Link>,
    /// Replication and check requests from other storages, served one per
    /// `Input::Idle`, i.e. only when no client request waits (6.4).
    pub(crate) background: std::collections::VecDeque<(ConnId, u32, Packet)>,
    /// Timestamp of the last NotifyNodeInformation (1.4: identifications newer than this
    /// are delayed).
    last_node_timestamp: f64,
    /// Our own id_timestamp, learnt from the first node notification.
    pub(crate) id_timestamp: Option<f64>,
    /// The next node notification is the full list sent after identification.
    full_node_list_next: bool,
    cluster_state: Option<ClusterState>,
    pub(crate) replication: Replication,
    /// Replica checks asked by the master (6.6).
    pub(crate) checker: Checker,
    pub(crate) tm: TransactionManager,
    pub(crate) pack: PackState,
    /// Group commit: answers that promise durable writes (vote, lock), held until one
    /// backend commit covers every write made before them (see [`Storage::flush`]).
    pub(crate) held: Vec<(ConnId, u32, Packet)>,
    /// Inputs handled since the first held answer, to bound how long one waits.
    held_inputs: u32,
    /// When the first held answer was held.
    held_since: Time,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Looking for the primary master.
    Bootstrap,
    /// Identified; serving recovery and verification until StartOperation.
    Initialisation,
    /// Serving clients and storages, replicating.
    Operation,
    /// Exit was requested; every input is ignored.
    Exited,
}

#[derive(Debug, Clone)]
pub(crate) struct MasterLink {
    pub(crate) conn: ConnId,
    address: Address,
    identified: bool,
}

/// A connection with a client or a storage.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    pub(crate) kind: LinkKind,
    pub(crate) nid: Option<Nid>,
    pub(crate) outgoing: bool,
    pub(crate) identified: bool,
    /// msg_id of our RequestIdentification on an outgoing link.
    pub(crate) id_msg: Option<u32>,
    /// A RequestIdentification waiting for the master's node notification (1.4).
    pub(crate) delayed: Option<(u32, RequestIdentification)>,
    pub(crate) peer: Option<SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkKind {
    Unidentified,
    Client,
    Storage,
}

/// Why a packet could not be processed; decides what the peer is told.
#[derive(Debug)]
pub(crate) enum Fail {
    /// PROTOCOL_ERROR, then the connection is closed.
    Protocol(String),
    /// NOT_READY, then the connection is closed.
    NotReady(String),
    /// NON_READABLE_CELL; the connection stays.
    NonReadable,
    /// The database failed: the node exits.
    Backend(BackendError),
}

impl From<BackendError> for Fail {
    fn from(error: BackendError) -> Fail {
        Fail::Backend(error)
    }
}

pub(crate) type Handled = Result<(), Fail>;

fn unexpected(packet: &Packet, context: &str) -> Fail {
    Fail::Protocol(format!("unexpected packet: {} in {context}", packet.name()))
}

impl<B: Backend> Storage<B> {
    /// Opens the storage on its database: checks (or, on first start, stores) the cluster
    /// name, loads the NID (`config.nid` overrides it, as NEO/py's `--nid`) and the stored
    /// partition table.
    pub fn new(config: Config, mut backend: B) -> Result<Storage<B>, StartError> {
        if config.masters.is_empty() {
            return Err(StartError::NoMaster);
        }
        match backend.get_config("name")? {
            None => {
                backend.set_config("name", Some(&config.cluster))?;
                backend.commit()?;
            }
            Some(stored) if stored != config.cluster => {
                return Err(StartError::NameMismatch {
                    configured: config.cluster.clone(),
                    stored,
                })
            }
            Some(_) => {}
        }
        let nid = config.nid.or(backend.nid()?);
        let table = Table::from_rows(backend.ptid()?, backend.replicas()?, &backend.pt_rows()?);
        info!(
            "configuration loaded: nid {:?}, ptid {:?}, cluster {}",
            nid.map(|n| n.to_string()),
            table.ptid,
            config.cluster
        );
        let masters = config.masters.clone();
        let master_index = masters.len() - 1;
        Ok(Storage {
            rng: Rng::new(config.seed),
            config,
            backend,
            nid,
            phase: Phase::Bootstrap,
            now: 0.0,
            table,
            nodes: NodeTable::new(),
            masters,
            master_index,
            redirect: None,
            master: None,
            master_retry_at: None,
            last_connect: HashMap::new(),
            links: BTreeMap::new(),
            background: std::collections::VecDeque::new(),
            last_node_timestamp: 0.0,
            id_timestamp: None,
            full_node_list_next: true,
            cluster_state: None,
            replication: Replication::default(),
            checker: Checker::default(),
            tm: TransactionManager::default(),
            pack: PackState::default(),
            held: Vec::new(),
            held_inputs: 0,
            held_since: 0.0,
        })
    }

    pub fn nid(&self) -> Option<Nid> {
        self.nid
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn is_operational(&self) -> bool {
        self.phase == Phase::Operation
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub fn cluster_state(&self) -> Option<ClusterState> {
        self.cluster_state
    }

    /// The partition table as this node knows it: (ptid, replicas, rows).
    pub fn partition_table(&self) -> (Option<u64>, u32, &[Row]) {
        (self.table.ptid, self.table.replicas, &self.table.rows)
    }

    pub(crate) fn own(&self) -> Nid {
        // Only called once identified, when the master has given us a NID.
        self.nid.unwrap_or(Nid(0))
    }

    pub(crate) fn master_conn(&self) -> Option<ConnId> {
        self.master
            .as_ref()
            .filter(|m| m.identified)
            .map(|m| m.conn)
    }

    // --- Bootstrap -----------------------------------------------------------------------

    /// Tries the next master (or the one a NotPrimaryMaster named), at most once a second
    /// per address.
    fn bootstrap(&mut self, out: &mut Outbox) {
        self.phase = Phase::Bootstrap;
        self.master = None;
        let address = match self.redirect.take() {
            Some(address) => {
                // Round robin goes on after the primary we were sent to, as NEO/py's.
                if let Some(index) = self.masters.iter().position(|a| *a == address) {
                    self.master_index = index;
                }
                address
            }
            None => {
                self.master_index = (self.master_index + 1) % self.masters.len();
                self.masters[self.master_index].clone()
            }
        };
        if let Some(last) = self.last_connect.get(&address) {
            if self.now < last + RECONNECT_DELAY {
                self.redirect = Some(address);
                self.master_retry_at = Some(last + RECONNECT_DELAY);
                return;
            }
        }
        self.master_retry_at = None;
        self.last_connect.insert(address.clone(), self.now);
        info!("connecting to master {address}");
        let conn = out.connect(address.clone());
        self.master = Some(MasterLink {
            conn,
            address,
            identified: false,
        });
    }

    fn identify_to_master(&mut self, conn: ConnId, out: &mut Outbox) {
        let devpath = Value::Array(
            self.config
                .devpath
                .iter()
                .cloned()
                .map(Value::Bin)
                .collect(),
        );
        out.ask(
            conn,
            RequestIdentification {
                node_type: NodeType::Storage,
                nid: self.nid,
                address: Some(self.config.address.clone()),
                cluster_name: Bytes::from(self.config.cluster.clone().into_bytes()),
                id_timestamp: None,
                extra: Dict(vec![(Bytes::from_static(b"devpath"), devpath)]),
            },
        );
    }

    /// An answer or packet on the master connection before we are identified.
    fn master_bootstrap_packet(
        &mut self,
        conn: ConnId,
        packet: Packet,
        out: &mut Outbox,
    ) -> Handled {
        match packet {
            Packet::AcceptIdentification(accept) => {
                if accept.node_type != NodeType::Master {
                    warn!(
                        "{conn:x} is not a master ({:?}), trying another",
                        accept.node_type
                    );
                    self.drop_master(conn, out);
                    return Ok(());
                }
                let Some(your_nid) = accept.your_nid else {
                    return Err(Fail::Protocol("No UUID supplied".into()));
                };
                if self.backend.nid()? != Some(your_nid) {
                    self.backend.set_nid(your_nid)?;
                    self.backend.commit()?;
                }
                self.nid = Some(your_nid);
                self.id_timestamp = None;
                self.full_node_list_next = true;
                self.nodes = NodeTable::new();
                self.table = Table::from_rows(
                    self.backend.ptid()?,
                    self.backend.replicas()?,
                    &self.backend.pt_rows()?,
                );
                if let Some(master) = &mut self.master {
                    master.identified = true;
                    info!(
                        "identified as {your_nid} by the primary master {}",
                        master.address
                    );
                }
                self.phase = Phase::Initialisation;
                Ok(())
            }
            Packet::NotPrimaryMaster(not_primary) => {
                for address in &not_primary.known_master_list {
                    if !self.masters.contains(address) {
                        self.masters.push(address.clone());
                    }
                }
                if let Some(index) = not_primary.primary {
                    if let Some(primary) = not_primary.known_master_list.get(index as usize) {
                        if *primary != self.config.address {
                            info!("redirected to primary master {primary}");
                            self.redirect = Some(primary.clone());
                        }
                    }
                }
                self.drop_master(conn, out);
                Ok(())
            }
            Packet::Error(e) => {
                warn!(
                    "master refused identification: {:?} {}",
                    e.code,
                    String::from_utf8_lossy(&e.message)
                );
                self.drop_master(conn, out);
                Ok(())
            }
            other => Err(unexpected(&other, "bootstrap")),
        }
    }

    /// Gives up a master connection that is not (yet) identified, and tries again.
    fn drop_master(&mut self, conn: ConnId, out: &mut Outbox) {
        out.close(conn);
        self.master = None;
        self.bootstrap(out);
    }

    /// The primary master is gone: close everything and look for it again (2.11, 2.4).
    fn master_lost(&mut self, out: &mut Outbox, reason: &str) {
        error!("primary master is down: {reason}");
        self.close_links(out);
        self.replication = Replication::default();
        self.checker = Checker::default();
        self.forget_transactions();
        self.cluster_state = None;
        self.master = None;
        self.bootstrap(out);
    }

    fn close_links(&mut self, out: &mut Outbox) {
        for conn in std::mem::take(&mut self.links).into_keys() {
            out.close(conn);
        }
    }

    fn shutdown(&mut self, out: &mut Outbox, erase: bool, reason: &str) {
        self.close_links(out);
        if let Some(master) = self.master.take() {
            out.close(master.conn);
        }
        let mut code = 0;
        // An unlock whose commit was deferred is made durable now, as NEO/py does when
        // it closes its database; otherwise a restart would need the master to validate
        // the transaction again.
        if !erase && self.tm.commit_at.take().is_some() {
            if let Err(e) = self.backend.commit() {
                error!("could not commit before exiting: {e}");
                code = 1;
            }
        }
        if erase {
            if let Err(e) = self.backend.erase().and_then(|_| self.backend.commit()) {
                error!("could not erase the database: {e}");
                code = 1;
            }
        }
        info!("{reason}");
        self.phase = Phase::Exited;
        out.exit(code, reason);
    }

    fn fatal(&mut self, out: &mut Outbox, error: BackendError) {
        error!("backend failure: {error}");
        // What they promise may not be on disk.
        self.held.clear();
        self.close_links(out);
        if let Some(master) = self.master.take() {
            out.close(master.conn);
        }
        self.phase = Phase::Exited;
        out.exit(1, format!("backend failure: {error}"));
    }

    // --- Packets from the primary master ---------------------------------------------------

    fn master_packet(
        &mut self,
        conn: ConnId,
        msg_id: u32,
        packet: Packet,
        out: &mut Outbox,
    ) -> Handled {
        let operational = self.phase == Phase::Operation;
        match packet {
            Packet::NotifyNodeInformation(notify) => {
                self.notify_node_information(notify.timestamp, &notify.node_list, out)
            }
            Packet::NotifyClusterInformation(notify) => {
                self.cluster_state = Some(notify.state);
                Ok(())
            }
            Packet::NotifyPartitionChanges(notify) => self.notify_partition_changes(
                notify.ptid,
                notify.num_replicas,
                &notify.cell_list,
                out,
            ),
            Packet::AskFinalTID(ask) => {
                let tid = self.backend.final_tid(ask.ttid)?;
                out.answer(conn, msg_id, neo_protocol::AnswerFinalTID { tid });
                Ok(())
            }
            Packet::AskPackOrders(ask) => {
                let readable = self.table.readable(self.own());
                let pack_list = self
                    .backend
                    .pack_orders(&readable, ask.pack_id)?
                    .into_iter()
                    .map(|(pack_id, info)| PackOrder {
                        pack_id,
                        approved: info.approved,
                        partial: info.partial,
                        oids: info.oids,
                        pack_tid: info.pack_tid,
                    })
                    .collect();
                out.answer(conn, msg_id, AnswerPackOrders { pack_list });
                Ok(())
            }
            Packet::StopOperation(_) => {
                error!("operation stopped");
                self.stop_operation(out);
                Ok(())
            }
            Packet::NotifyTransactionFinished(notify) => {
                self.transaction_ended(notify.ttid, Some(notify.max_tid), out)
            }
            Packet::AbortTransaction(abort) => self.transaction_ended(abort.ttid, None, out),
            Packet::NotifyPackSigned(signed) => {
                self.pack_signed(&signed.approved, &signed.rejected, out)
            }
            Packet::NotifyRepair(_) => {
                warn!("repair requested: not implemented");
                Ok(())
            }
            Packet::Ping(_) => {
                out.answer(conn, msg_id, Pong {});
                Ok(())
            }
            Packet::FlushLog(_) => Ok(()),
            Packet::Error(e) => {
                warn!(
                    "error from the master: {:?} {}",
                    e.code,
                    String::from_utf8_lossy(&e.message)
                );
                Ok(())
            }
            // Initialisation only (InitializationHandler in NEO/py).
            Packet::AskRecovery(_) if !operational => {
                out.answer(
                    conn,
                    msg_id,
                    AnswerRecovery {
                        ptid: self.table.ptid,
                        backup_tid: self.backend.backup_tid()?,
                        truncate_tid: self.backend.truncate_tid()?,
                    },
                );
                Ok(())
            }
            Packet::AskPartitionTable(_) if !operational => {
                out.answer(
                    conn,
                    msg_id,
                    AnswerPartitionTable {
                        ptid: self.table.ptid,
                        num_replicas: self.table.replicas,
                        row_list: self.table.rows.clone(),
                    },
                );
                Ok(())
            }
            Packet::SendPartitionTable(send) if !operational => {
                self.send_partition_table(send.ptid, send.num_replicas, send.row_list)
            }
            Packet::AskLockedTransactions(_) if !operational => {
                let tid_dict = Dict(self.backend.locked_transactions()?);
                out.answer(conn, msg_id, AnswerLockedTransactions { tid_dict });
                Ok(())
            }
            Packet::ValidateTransaction(validate) if !operational => {
                // Lock with pack approval, then unlock (5.9).
                self.backend.sign_pack_orders(&[validate.ttid], &[])?;
                self.backend.lock_transaction(validate.ttid, validate.tid)?;
                self.backend
                    .unlock_transaction(validate.ttid, validate.tid)?;
                self.backend.commit()?;
                Ok(())
            }
            Packet::AskLastIDs(_) if !operational => self.ask_last_ids(conn, msg_id, out),
            Packet::Truncate(truncate) if !operational => {
                // The master sends it one-way (protocol.md): persist, no answer.
                self.backend.set_config("backup_tid", None)?;
                self.backend
                    .set_config("truncate_tid", Some(&format_hex_tid(truncate.tid)))?;
                self.backend.commit()?;
                info!("truncation at {} requested", truncate.tid);
                Ok(())
            }
            Packet::StartOperation(start) if !operational => {
                self.start_operation(start.backup, out)
            }
            // Operation only (MasterOperationHandler).
            Packet::AnswerUnfinishedTransactions(answer) if operational => {
                self.unfinished_transactions(msg_id, answer.max_tid, answer.ttid_list, out)
            }
            Packet::AskLockInformation(lock) if operational => {
                self.lock_information(conn, msg_id, lock.ttid, lock.tid, lock.pack, out)
            }
            Packet::NotifyUnlockInformation(unlock) if operational => {
                self.unlock_information(unlock.ttid, out)
            }
            Packet::Replicate(_) if operational => {
                warn!("Replicate: backup is not implemented");
                Ok(())
            }
            Packet::CheckPartition(check) if operational => {
                self.check_partition(
                    check.partition,
                    check.source,
                    check.min_tid,
                    check.max_tid,
                    out,
                );
                Ok(())
            }
            Packet::AnswerPackOrders(answer) if operational => {
                self.pack_orders_answered(answer.pack_list, out)
            }
            // Answers to what we asked during the operation we just left (StopOperation
            // crossed them): nothing waits for them any more.
            Packet::AnswerUnfinishedTransactions(_) | Packet::AnswerPackOrders(_)
                if !operational =>
            {
                Ok(())
            }
            other => Err(unexpected(
                &other,
                if operational {
                    "operation"
                } else {
                    "initialisation"
                },
            )),
        }
    }

    fn notify_node_information(
        &mut self,
        timestamp: f64,
        list: &[NodeInfo],
        out: &mut Outbox,
    ) -> Handled {
        if timestamp <= self.last_node_timestamp {
            warn!(
                "node notification timestamp {timestamp} not after {}",
                self.last_node_timestamp
            );
        }
        self.last_node_timestamp = timestamp;
        let own = self.nid;
        if self.id_timestamp.is_none() {
            if let Some(me) = list.iter().find(|i| i.nid.is_some() && i.nid == own) {
                self.id_timestamp = me.id_timestamp;
            }
        }
        let full = std::mem::replace(&mut self.full_node_list_next, false);
        self.nodes.apply_notification(list, full);
        for info in list {
            if info.nid.is_some() && info.nid == own {
                match info.state {
                    NodeState::Down => {
                        self.shutdown(out, false, "told to shut down (DOWN)");
                        return Ok(());
                    }
                    NodeState::Unknown => {
                        self.shutdown(
                            out,
                            true,
                            "dropped from the cluster (UNKNOWN): database erased",
                        );
                        return Ok(());
                    }
                    _ => {}
                }
            } else if info.node_type == NodeType::Client && info.state != NodeState::Running {
                // Its voted transactions will not be finished either (5.11).
                if let Some(nid) = info.nid {
                    info!(
                        "client {nid} is {:?}: aborting its transactions",
                        info.state
                    );
                    self.abort_for(nid, true, out)?;
                }
            }
            if info.state == NodeState::Unknown {
                if let Some(nid) = info.nid {
                    let gone: Vec<ConnId> = self
                        .links
                        .iter()
                        .filter(|(_, l)| l.nid == Some(nid))
                        .map(|(c, _)| *c)
                        .collect();
                    for conn in gone {
                        info!("closing connection with forgotten node {nid}");
                        self.close_link(conn, out);
                    }
                }
            }
        }
        // Delayed identifications may be answerable now (1.4).
        let delayed: Vec<(ConnId, u32, RequestIdentification)> = self
            .links
            .iter_mut()
            .filter_map(|(c, l)| l.delayed.take().map(|(m, r)| (*c, m, r)))
            .collect();
        for (conn, msg_id, request) in delayed {
            let result = self.request_identification(conn, msg_id, request, out);
            self.finish(conn, msg_id, result, out);
        }
        if self.phase == Phase::Operation {
            self.next_partition(out);
        }
        Ok(())
    }

    fn send_partition_table(
        &mut self,
        ptid: Option<u64>,
        replicas: u32,
        rows: Vec<Row>,
    ) -> Handled {
        let Some(ptid) = ptid else {
            return Err(Fail::Protocol("Partial partition table received".into()));
        };
        let mut table = Table::default();
        table.load(ptid, replicas, rows);
        if !table.is_filled() {
            return Err(Fail::Protocol("Partial partition table received".into()));
        }
        let own = self.own();
        let cells: Vec<(u32, Nid, CellState)> = table
            .rows
            .iter()
            .enumerate()
            .flat_map(|(p, row)| row.iter().map(move |c| (p as u32, c.nid, c.state)))
            .collect();
        self.backend
            .apply_pt_changes(ptid, replicas, &cells, true, own)?;
        // 3.12: on a full table, every partition not assigned to us is dropped.
        let assigned = table.assigned(own);
        let drop: Vec<u32> = (0..table.np()).filter(|p| !assigned.contains(p)).collect();
        self.drop_partitions(&drop)?;
        self.backend.commit()?;
        self.table = table;
        Ok(())
    }

    fn notify_partition_changes(
        &mut self,
        ptid: u64,
        replicas: u32,
        changes: &[CellChange],
        out: &mut Outbox,
    ) -> Handled {
        if self.table.ptid.map(|p| p.wrapping_add(1)) != Some(ptid) {
            return Err(Fail::Protocol("wrong partition table id".into()));
        }
        if let Some(bad) = changes.iter().find(|c| c.partition >= self.table.np()) {
            return Err(Fail::Protocol(format!("no partition {}", bad.partition)));
        }
        let own = self.own();
        let cells: Vec<(u32, Nid, CellState)> = changes
            .iter()
            .map(|c| (c.partition, c.nid, c.state))
            .collect();
        self.backend
            .apply_pt_changes(ptid, replicas, &cells, false, own)?;
        self.table.apply(ptid, replicas, changes);
        let discarded: Vec<u32> = changes
            .iter()
            .filter(|c| c.nid == own && c.state == CellState::Discarded)
            .map(|c| c.partition)
            .collect();
        self.drop_partitions(&discarded)?;
        if self.phase == Phase::Operation {
            self.replication_partition_changes(changes, out)?;
        }
        self.backend.commit()?;
        if self.phase == Phase::Operation {
            // A new readable cell may be the source a waiting partition lacked.
            self.next_partition(out);
        }
        Ok(())
    }

    /// Deletes the data of cells we no longer have. NEO/py does it in a background task;
    /// here it is done at once.
    fn drop_partitions(&mut self, partitions: &[u32]) -> Handled {
        if partitions.is_empty() || self.config.disable_drop_partitions {
            return Ok(());
        }
        debug!("dropping partitions {partitions:?}");
        self.backend.drop_partitions(partitions)?;
        Ok(())
    }

    fn ask_last_ids(&mut self, conn: ConnId, msg_id: u32, out: &mut Outbox) -> Handled {
        let own = self.own();
        if let Some(tid) = self.backend.truncate_tid()? {
            let assigned = self.table.assigned(own);
            info!("truncating partitions {assigned:?} after {tid}");
            self.backend.truncate(&assigned, own, tid)?;
            self.backend.set_config("truncate_tid", None)?;
            self.backend.commit()?;
            self.table = Table::from_rows(
                self.backend.ptid()?,
                self.backend.replicas()?,
                &self.backend.pt_rows()?,
            );
        }
        // 8.11: AnswerLastIDs is preceded by the completed pack id of our cells.
        let packed = self
            .backend
            .pt_rows()?
            .into_iter()
            .filter(|r| r.nid == own)
            .filter_map(|r| r.pack)
            .min();
        if let Some(pack_id) = packed {
            out.notify(conn, NotifyPackCompleted { pack_id });
        }
        let readable = self.table.readable(own);
        let (last_tid, last_oid, first_tid) = self.backend.last_ids(&readable)?;
        out.answer(
            conn,
            msg_id,
            AnswerLastIDs {
                last_tid,
                last_oid,
                first_tid,
            },
        );
        Ok(())
    }

    fn start_operation(&mut self, backup: bool, out: &mut Outbox) -> Handled {
        if backup {
            // Backup mode (6.7) is not implemented beyond recording it, as NEO/py does on
            // entering it, so that a restarted node knows it holds a backup.
            if self.backend.backup_tid()?.is_none() {
                let readable = self.table.readable(self.own());
                let last = self.backend.last_ids(&readable)?.0.unwrap_or(Tid(0));
                self.backend
                    .set_config("backup_tid", Some(&format_hex_tid(last)))?;
            }
        } else {
            self.backend.set_config("backup_tid", None)?;
        }
        self.backend.commit()?;
        self.phase = Phase::Operation;
        if let Some(conn) = self.master_conn() {
            out.notify(conn, NotifyReady {});
        }
        info!("operational");
        self.populate(out)?;
        // 2.11: temporary data the verification did not validate is dropped only now.
        self.backend.drop_unfinished()?;
        self.backend.commit()?;
        Ok(())
    }

    /// StopOperation: back to initialisation, keeping only the master connection.
    fn stop_operation(&mut self, out: &mut Outbox) {
        self.close_links(out);
        self.replication = Replication::default();
        self.checker = Checker::default();
        self.forget_transactions();
        self.cluster_state = None;
        if self.phase == Phase::Operation {
            self.phase = Phase::Initialisation;
        }
    }

    // --- Identification of incoming connections (1.4) -----------------------------------

    fn request_identification(
        &mut self,
        conn: ConnId,
        msg_id: u32,
        request: RequestIdentification,
        out: &mut Outbox,
    ) -> Handled {
        if request.cluster_name.as_ref() != self.config.cluster.as_bytes() {
            error!("reject an alien cluster");
            return Err(Fail::Protocol("invalid cluster name".into()));
        }
        if self.phase != Phase::Operation {
            return Err(Fail::NotReady("Retry Later".into()));
        }
        let kind = match request.nid {
            None => {
                if request.node_type != NodeType::Storage {
                    return Err(Fail::Protocol("reject anonymous non-storage node".into()));
                }
                LinkKind::Storage
            }
            Some(nid) => {
                if Some(nid) == self.nid {
                    return Err(Fail::Protocol(
                        "uuid conflict or loopback connection".into(),
                    ));
                }
                let known = self.nodes.get(nid).is_some_and(|n| {
                    n.id_timestamp.is_some() && n.id_timestamp == request.id_timestamp
                });
                if !known {
                    match request.id_timestamp {
                        Some(ts) if self.last_node_timestamp < ts => {
                            debug!(
                                "identification of {nid} delayed until the master tells about it"
                            );
                            if let Some(link) = self.links.get_mut(&conn) {
                                link.delayed = Some((msg_id, request));
                            }
                            return Ok(());
                        }
                        _ => return Err(Fail::NotReady("unknown by master".into())),
                    }
                }
                match request.node_type {
                    NodeType::Client => LinkKind::Client,
                    NodeType::Storage => LinkKind::Storage,
                    _ => return Err(Fail::Protocol("reject non-client-or-storage node".into())),
                }
            }
        };
        if let Some(link) = self.links.get_mut(&conn) {
            link.kind = kind;
            link.nid = request.nid;
            link.identified = true;
        }
        out.answer(
            conn,
            msg_id,
            AcceptIdentification {
                node_type: NodeType::Storage,
                nid: request.nid.and(self.nid),
                your_nid: request.nid,
            },
        );
        Ok(())
    }

    // --- Packets from clients and storages ------------------------------------------------

    fn link_packet(
        &mut self,
        conn: ConnId,
        msg_id: u32,
        packet: Packet,
        out: &mut Outbox,
    ) -> Handled {
        let Some(link) = self.links.get(&conn) else {
            return Ok(());
        };
        let (kind, identified) = (link.kind, link.identified);
        if link.delayed.is_some() {
            return Err(Fail::Protocol(format!(
                "{} received while identification is pending",
                packet.name()
            )));
        }
        if link.outgoing {
            // Our own connection to a replication source.
            return self.storage_packet(conn, msg_id, packet, out);
        }
        match packet {
            Packet::Ping(_) => {
                out.answer(conn, msg_id, Pong {});
                Ok(())
            }
            Packet::FlushLog(_) => Ok(()),
            Packet::CloseClient(_) => {
                if !self.replication.uses(conn) && !self.checker.uses(conn) {
                    self.close_link(conn, out);
                }
                Ok(())
            }
            Packet::RequestIdentification(request)
                if !identified && kind == LinkKind::Unidentified =>
            {
                self.request_identification(conn, msg_id, request, out)
            }
            other if !identified => Err(unexpected(&other, "identification")),
            other if kind == LinkKind::Client => self.client_packet(conn, msg_id, other, out),
            other if kind == LinkKind::Storage => self.storage_packet(conn, msg_id, other, out),
            other => Err(unexpected(&other, "connection")),
        }
    }

    fn client_packet(
        &mut self,
        conn: ConnId,
        msg_id: u32,
        packet: Packet,
        out: &mut Outbox,
    ) -> Handled {
        let own = self.own();
        match packet {
            Packet::AskObject(ask) => {
                self.check_readable(ask.oid.0)?;
                if self.tm.is_read_locked(ask.oid) {
                    self.tm.delay_read(conn, msg_id, Packet::AskObject(ask));
                    return Ok(());
                }
                match self.backend.object(ask.oid, ask.at, ask.before)? {
                    Some(record) => {
                        let (compression, checksum, data) = match record.data {
                            Some(d) => (Some(d.compression), d.checksum, d.value),
                            None => (None, ZERO_HASH, Bytes::new()),
                        };
                        out.answer(
                            conn,
                            msg_id,
                            AnswerObject {
                                oid: ask.oid,
                                serial: record.serial,
                                next_serial: record.next_serial,
                                compression,
                                checksum,
                                data,
                                data_serial: record.data_serial,
                            },
                        );
                    }
                    None => {
                        let code = if self.backend.object(ask.oid, None, None)?.is_some() {
                            ErrorCode::OidNotFound
                        } else {
                            ErrorCode::OidDoesNotExist
                        };
                        out.error(conn, msg_id, code, ask.oid.to_string());
                    }
                }
                Ok(())
            }
            Packet::AskTIDs(ask) => {
                if ask.first >= ask.last {
                    return Err(Fail::Protocol("invalid offsets".into()));
                }
                let partitions = if ask.partition == INVALID_PARTITION {
                    self.table.readable(own)
                } else {
                    vec![ask.partition]
                };
                if partitions.iter().any(|p| !self.table.is_readable(*p, own)) {
                    out.error(conn, msg_id, ErrorCode::NonReadableCell, "");
                    return Ok(());
                }
                let tid_list =
                    self.backend
                        .tids_desc(&partitions, ask.first, ask.last - ask.first)?;
                out.answer(conn, msg_id, AnswerTIDs { tid_list });
                Ok(())
            }
            Packet::AskTIDsFrom(ask) => {
                if self.tm.is_locked_tid(ask.max_tid) {
                    self.tm.delay_read(conn, msg_id, Packet::AskTIDsFrom(ask));
                    return Ok(());
                }
                let tid_list = self.backend.tids_range(
                    ask.partition,
                    ask.min_tid,
                    ask.max_tid,
                    ask.length as usize,
                )?;
                out.answer(conn, msg_id, AnswerTIDsFrom { tid_list });
                Ok(())
            }
            Packet::AskTransactionInformation(ask) => {
                self.check_readable(ask.tid.0)?;
                match self.backend.transaction(ask.tid, false)? {
                    Some(t) => out.answer(
                        conn,
                        msg_id,
                        AnswerTransactionInformation {
                            tid: ask.tid,
                            user: t.user,
                            description: t.description,
                            extension: t.extension,
                            packed: t.packed,
                            oid_list: t.oids,
                        },
                    ),
                    None => out.error(
                        conn,
                        msg_id,
                        ErrorCode::TidNotFound,
                        format!("{} does not exist", ask.tid),
                    ),
                }
                Ok(())
            }
            Packet::AskObjectHistory(ask) => {
                if ask.first >= ask.last {
                    return Err(Fail::Protocol("invalid offsets".into()));
                }
                self.check_readable(ask.oid.0)?;
                if self.tm.is_read_locked(ask.oid) {
                    self.tm
                        .delay_read(conn, msg_id, Packet::AskObjectHistory(ask));
                    return Ok(());
                }
                let history_list =
                    self.backend
                        .object_history(ask.oid, ask.first, ask.last - ask.first)?;
                if history_list.is_empty() {
                    out.error(conn, msg_id, ErrorCode::OidNotFound, ask.oid.to_string());
                } else {
                    out.answer(
                        conn,
                        msg_id,
                        AnswerObjectHistory {
                            oid: ask.oid,
                            history_list,
                        },
                    );
                }
                Ok(())
            }
            Packet::AskFinalTID(ask) => {
                let tid = match self.tm.final_tid(ask.ttid) {
                    Some(tid) => Some(tid),
                    None => self.backend.final_tid(ask.ttid)?,
                };
                out.answer(conn, msg_id, neo_protocol::AnswerFinalTID { tid });
                Ok(())
            }
            Packet::AskOIDsFrom(_) => {
                out.error(
                    conn,
                    msg_id,
                    ErrorCode::BackendNotImplemented,
                    "this backend does not implement oidsFrom",
                );
                Ok(())
            }
            Packet::AskStoreObject(store) => self.ask_store_object(conn, msg_id, store, out),
            Packet::AskCheckCurrentSerial(ask) => {
                self.ask_check_current_serial(conn, msg_id, ask.ttid, ask.oid, ask.serial, out)
            }
            Packet::AskRelockObject(ask) => {
                self.ask_relock_object(conn, msg_id, ask.ttid, ask.oid, out)
            }
            Packet::AskStoreTransaction(ask) => {
                let ttid = ask.ttid;
                self.vote(conn, msg_id, ttid, Some(ask))
            }
            Packet::AskVoteTransaction(ask) => self.vote(conn, msg_id, ask.ttid, None),
            Packet::AskObjectUndoSerial(ask) => {
                match self.ask_object_undo_serial(
                    ask.ttid,
                    ask.ltid,
                    ask.undone_tid,
                    ask.oid_list,
                )? {
                    Ok(answers) => out.answer(
                        conn,
                        msg_id,
                        AnswerObjectUndoSerial {
                            object_tid_dict: Dict(answers),
                        },
                    ),
                    Err(oid) => out.error(conn, msg_id, ErrorCode::OidNotFound, oid.to_string()),
                }
                Ok(())
            }
            Packet::AbortTransaction(abort) => self.transaction_ended(abort.ttid, None, out),
            other => Err(unexpected(&other, "client operation")),
        }
    }

    /// Runs a read that was delayed by a lock, as if it had just arrived.
    pub(crate) fn dispatch_delayed_read(
        &mut self,
        conn: ConnId,
        msg_id: u32,
        packet: Packet,
        out: &mut Outbox,
    ) {
        let result = self.link_packet(conn, msg_id, packet, out);
        self.finish(conn, msg_id, result, out);
    }

    /// Client reads need a readable cell of the partition (NON_READABLE_CELL otherwise).
    pub(crate) fn check_readable(&self, id: u64) -> Handled {
        let readable = self
            .table
            .partition_of(id)
            .is_some_and(|p| self.table.is_readable(p, self.own()));
        if readable {
            Ok(())
        } else {
            Err(Fail::NonReadable)
        }
    }

    // --- Connections ----------------------------------------------------------------------

    /// Closes a link we no longer want; aborts the replication round that used it.
    pub(crate) fn close_link(&mut self, conn: ConnId, out: &mut Outbox) {
        if let Some(link) = self.links.remove(&conn) {
            out.close(conn);
            self.link_lost(conn, &link, out);
        }
    }

    fn link_lost(&mut self, conn: ConnId, link: &Link, out: &mut Outbox) {
        if self.replication.uses(conn) {
            self.abort_replication(out, "connection lost");
        }
        self.checker_link_lost(conn, out);
        if link.kind == LinkKind::Client && link.identified && self.phase == Phase::Operation {
            if let Some(nid) = link.nid {
                // The master may still finish its voted transactions (5.11).
                if let Err(Fail::Backend(e)) = self.abort_for(nid, false, out) {
                    self.fatal(out, e);
                }
            }
        }
    }

    /// Applies the outcome of a packet handler.
    fn finish(&mut self, conn: ConnId, msg_id: u32, result: Handled, out: &mut Outbox) {
        let (code, message) = match result {
            Ok(()) => return,
            Err(Fail::Backend(e)) => return self.fatal(out, e),
            Err(Fail::NonReadable) => {
                out.error(conn, msg_id, ErrorCode::NonReadableCell, "");
                return;
            }
            Err(Fail::Protocol(m)) => (ErrorCode::ProtocolError, m),
            Err(Fail::NotReady(m)) => (ErrorCode::NotReady, m),
        };
        warn!("closing connection {conn:x}: {message}");
        out.error(conn, msg_id, code, message.clone());
        if self.master.as_ref().is_some_and(|m| m.conn == conn) {
            out.close(conn);
            self.master_lost(out, &message);
        } else {
            self.close_link(conn, out);
        }
    }
}

/// Group commit bounds: held answers are released after at most this many of them, or
/// this many inputs, even if inputs keep coming (the driver sends Idle only when none
/// waits).
const HELD_ANSWERS_MAX: usize = 256;
const HELD_INPUTS_MAX: u32 = 256;

/// How long held answers may wait for the votes and locks of other transactions in
/// progress here, so that one commit covers them too (each commit costs several fsyncs,
/// during which nothing else is served). A lone transaction does not wait.
const GROUP_DELAY: Time = 0.001;

impl<B: Backend> Storage<B> {
    /// Sends `packet` once every write made so far is durable: one commit then covers
    /// every transaction that reached a vote or a lock since the previous one (group
    /// commit). Until then the answer is not sent, so a crash loses only writes that no
    /// peer was told about.
    pub(crate) fn answer_durable(&mut self, conn: ConnId, msg_id: u32, packet: impl Into<Packet>) {
        if self.held.is_empty() {
            self.held_since = self.now;
        }
        self.held.push((conn, msg_id, packet.into()));
    }

    /// Whether the held answers should be committed now rather than wait for others:
    /// when the wait is over, or when no transaction here can bring a vote or a lock
    /// without one of them (all of those not locked yet have their vote held).
    fn flush_due(&self) -> bool {
        if self.now >= self.held_since + GROUP_DELAY {
            return true;
        }
        // Only a transaction that has not voted yet can join this commit soon: one that
        // voted brings its lock only once its client finishes, which may be waiting for
        // the very answers held here (a migration finishes in TID order).
        self.tm.unvoted_count() == 0
    }

    /// Answers held for durability (tests): (conn, msg_id, packet name).
    pub fn held_answers(&self) -> Vec<(ConnId, u32, &'static str)> {
        self.held
            .iter()
            .map(|(conn, msg_id, packet)| (*conn, *msg_id, packet.name()))
            .collect()
    }

    /// Commits the backend and sends the answers that waited for it. The driver gets
    /// there through [`Input::Idle`] once no event waits, or before any input that is not
    /// a plain client or commit request.
    fn flush(&mut self, out: &mut Outbox) {
        self.held_inputs = 0;
        if self.held.is_empty() {
            return;
        }
        debug!("group commit of {} answers", self.held.len());
        if let Err(e) = self.backend.commit() {
            return self.fatal(out, e);
        }
        for (conn, msg_id, packet) in self.held.drain(..) {
            out.answer(conn, msg_id, packet);
        }
    }
}

/// Whether an input may be handled while answers wait for a commit: requests whose
/// answers reveal nothing that is not durable yet (reads of committed data, stores,
/// votes and locks, which hold their own answers). Anything else (timers, connections,
/// phase and partition changes, final-TID queries) waits for the commit first.
fn batchable(input: &Input) -> bool {
    let (Input::Packet { packet, .. } | Input::Answer { packet, .. }) = input else {
        return false;
    };
    matches!(
        packet,
        Packet::AskObject(_)
            | Packet::AskStoreObject(_)
            | Packet::AskCheckCurrentSerial(_)
            | Packet::AskRelockObject(_)
            | Packet::AskStoreTransaction(_)
            | Packet::AskVoteTransaction(_)
            | Packet::AskLockInformation(_)
            | Packet::NotifyUnlockInformation(_)
            | Packet::NotifyTransactionFinished(_)
            | Packet::AskObjectHistory(_)
            | Packet::AskTransactionInformation(_)
            | Packet::AskTIDs(_)
    )
}

impl<B: Backend> Node for Storage<B> {
    fn handle(&mut self, now: Time, input: Input, out: &mut Outbox) {
        self.now = now;
        if self.phase == Phase::Exited {
            return;
        }
        if !self.held.is_empty() {
            if let Input::Closed { conn } | Input::ConnectFailed { conn } = input {
                // Nobody is left to read them.
                self.held.retain(|(c, _, _)| *c != conn);
            }
            if !batchable(&input) {
                let idle = matches!(input, Input::Idle);
                self.flush(out);
                if idle {
                    return;
                }
            }
        }
        self.handle_input(now, input, out);
        if !self.held.is_empty() {
            self.held_inputs += 1;
            if self.held.len() >= HELD_ANSWERS_MAX || self.held_inputs >= HELD_INPUTS_MAX {
                self.flush(out);
            }
        }
    }

    fn wants_idle(&self) -> bool {
        self.phase != Phase::Exited
            && ((!self.held.is_empty() && self.flush_due())
                || !self.background.is_empty()
                || self.checker_wants_idle())
    }

    fn deadline(&self) -> Option<Time> {
        if self.phase == Phase::Exited {
            return None;
        }
        let master = if self.master.is_none() {
            self.master_retry_at
        } else {
            None
        };
        let group = (!self.held.is_empty()).then_some(self.held_since + GROUP_DELAY);
        [master, self.replication.retry_at, self.tm.commit_at, group]
            .into_iter()
            .flatten()
            .reduce(f64::min)
    }
}

impl<B: Backend> Storage<B> {
    fn handle_input(&mut self, now: Time, input: Input, out: &mut Outbox) {
        let master_conn = self.master.as_ref().map(|m| (m.conn, m.identified));
        match input {
            Input::Start => self.bootstrap(out),
            Input::Idle => {
                // Requests of other storages first, then our own check digests.
                if let Some((conn, msg_id, result)) = self.background_step(out) {
                    self.finish(conn, msg_id, result, out);
                } else if let Err(Fail::Backend(e)) = self.checker_idle(out) {
                    self.fatal(out, e);
                }
            }
            Input::Shutdown => self.shutdown(out, false, "shutdown requested"),
            Input::Timer => {
                if self.master.is_none() && self.master_retry_at.is_some_and(|t| t <= now) {
                    self.bootstrap(out);
                }
                self.replication_timer(out);
                if let Err(Fail::Backend(e)) = self.transactions_timer() {
                    self.fatal(out, e);
                }
            }
            Input::Accepted { conn, peer } => {
                self.links.insert(
                    conn,
                    Link {
                        kind: LinkKind::Unidentified,
                        nid: None,
                        outgoing: false,
                        identified: false,
                        id_msg: None,
                        delayed: None,
                        peer: Some(peer),
                    },
                );
            }
            Input::Connected { conn } => {
                if master_conn == Some((conn, false)) {
                    self.identify_to_master(conn, out);
                } else if self.links.contains_key(&conn) {
                    self.source_connected(conn, out);
                }
            }
            Input::ConnectFailed { conn } | Input::Closed { conn } => {
                out.forget(conn);
                match master_conn {
                    Some((c, false)) if c == conn => {
                        warn!("could not reach the master");
                        self.master = None;
                        self.bootstrap(out);
                    }
                    Some((c, true)) if c == conn => self.master_lost(out, "connection lost"),
                    _ => {
                        if let Some(link) = self.links.remove(&conn) {
                            debug!(
                                "connection {conn:x} with {:?} ({:?}) closed",
                                link.nid, link.peer
                            );
                            self.link_lost(conn, &link, out);
                        }
                    }
                }
            }
            Input::Packet {
                conn,
                msg_id,
                packet,
            }
            | Input::Answer {
                conn,
                msg_id,
                packet,
            } => {
                let result = match master_conn {
                    Some((c, false)) if c == conn => {
                        self.master_bootstrap_packet(conn, packet, out)
                    }
                    Some((c, true)) if c == conn => self.master_packet(conn, msg_id, packet, out),
                    _ => self.link_packet(conn, msg_id, packet, out),
                };
                self.finish(conn, msg_id, result, out);
            }
        }
    }
}
