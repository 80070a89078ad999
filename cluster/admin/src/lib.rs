//! The admin node as a sans-IO state machine: it finds the primary master and identifies
//! to it as ADMIN, keeps the cluster view the master pushes (node table, partition table,
//! cluster state), answers `neoctl` from that view, relays the operator's orders to the
//! master and the master's answers back, and computes the health summary (tools.md
//! section 3, cluster.md 1.4-1.6 and 2.9). It also takes part in cross-cluster monitoring:
//! as upstream it accepts the admins of the backup clusters it monitors, as backup it
//! reports to the upstream admin the master tells it about.
//!
//! Ports the behaviour of NEO/py's `neo/admin/{app,handler}.py`, not their code. E-mail
//! notifications (`--monitor-email`) are not done here: sending mail is I/O, and the
//! summary they would carry is what `print summary` returns.
//!
//! Must not depend on tokio, `neo-net`, the master or the storage: inputs come from
//! [`neo_node::Node::handle`], actions go to the [`Outbox`].

pub mod monitor;

use std::collections::HashMap;

use neo_node::{ConnId, Input, Node, NodeTable, Outbox, PartitionTable, Time};
use neo_protocol::*;

use monitor::{CellCounts, Monitor};

/// The text of the NOT_READY error and of the summary while no master is connected.
pub const NOT_CONNECTED_MESSAGE: &str = "Not connected to a primary master.";

/// Seconds the admin waits for last-TID answers before giving up on a monitored cluster.
pub const MONITOR_TIMEOUT: f64 = 60.0;

/// Connection attempts to one address are at least this far apart (cluster.md 1.6).
pub const RECONNECT_DELAY: f64 = 1.0;

/// How an admin is configured (`neoadmin` options, tools.md 1.4).
#[derive(Debug, Clone)]
pub struct Config {
    /// The cluster name; must not be empty.
    pub cluster: String,
    /// Our listening address (already bound by the driver), announced to the master.
    pub address: Address,
    /// The masters to look for the primary among.
    pub masters: Vec<Address>,
    /// Force this NID (testing).
    pub nid: Option<Nid>,
    /// A backup cluster lagging more than this many seconds is a warning.
    pub monitor_maxlag: f64,
    /// Names of the backup clusters whose admins may connect to report their health.
    pub monitor_backup: Vec<String>,
}

/// The admin node.
#[derive(Debug)]
pub struct Admin {
    config: Config,
    /// Known master addresses: the configured ones and those a secondary told us about.
    masters: Vec<Address>,
    /// Which master the bootstrap loop tries next.
    next_master: usize,
    /// When each address was last tried, to space attempts.
    last_attempt: HashMap<Address, Time>,
    master: MasterLink,
    /// Our NID as the primary master gave it (kept across reconnections only if forced).
    nid: Option<Nid>,
    nodes: NodeTable,
    /// The next NotifyNodeInformation is the full list sent after identification.
    first_node_notification: bool,
    pt: Option<PartitionTable>,
    /// Our own cluster's health (state, down nodes, cells, last TID).
    own: Monitor,
    /// Monitored backup clusters, in configuration order.
    backups: Vec<Backup>,
    /// Requests relayed to the master: master msg_id → (requester connection, its msg_id).
    relayed: HashMap<u32, (ConnId, u32)>,
    /// Clusters whose last TIDs are being asked (`None` = our own); the summary waits.
    notifying: Vec<Option<usize>>,
    /// When the last-TID round times out.
    notify_deadline: Option<Time>,
    /// `print summary` requests waiting for the round to finish.
    asking_summary: Vec<(ConnId, u32)>,
    /// Connections accepted on our listening address and not closed.
    accepted: Vec<ConnId>,
    /// The upstream admin we report to, when this cluster is a backup.
    upstream: Option<UpstreamAdmin>,
    /// Set when a FlushLog arrives; the driver flushes its log and clears it.
    flush_log: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum MasterLink {
    /// Before Start, or waiting until `at` to try the next master.
    Idle { at: Option<Time> },
    /// A connection is being opened; `identify` is the RequestIdentification msg_id once
    /// sent.
    Bootstrap {
        conn: ConnId,
        address: Address,
        identify: Option<u32>,
    },
    /// Identified to the primary master.
    Ready { conn: ConnId, primary: Option<Nid> },
}

#[derive(Debug)]
struct Backup {
    name: String,
    monitor: Monitor,
    conn: Option<ConnId>,
}

#[derive(Debug)]
struct UpstreamAdmin {
    address: Address,
    conn: Option<ConnId>,
    identify: Option<u32>,
    identified: bool,
    /// When to reconnect after a failure.
    retry_at: Option<Time>,
}

impl Admin {
    pub fn new(config: Config) -> Admin {
        let backups = config
            .monitor_backup
            .iter()
            .map(|name| Backup {
                name: name.clone(),
                monitor: Monitor {
                    max_lag: config.monitor_maxlag,
                    ..Monitor::default()
                },
                conn: None,
            })
            .collect();
        Admin {
            masters: config.masters.clone(),
            nid: config.nid,
            config,
            next_master: 0,
            last_attempt: HashMap::new(),
            master: MasterLink::Idle { at: None },
            nodes: NodeTable::new(),
            first_node_notification: false,
            pt: None,
            own: Monitor::default(),
            backups,
            relayed: HashMap::new(),
            notifying: Vec::new(),
            notify_deadline: None,
            asking_summary: Vec::new(),
            accepted: Vec::new(),
            upstream: None,
            flush_log: false,
        }
    }

    /// The cluster state as last notified by the master (`None` when not connected).
    pub fn cluster_state(&self) -> Option<ClusterState> {
        self.own.cluster_state
    }

    /// The node table as the master announced it.
    pub fn nodes(&self) -> &NodeTable {
        &self.nodes
    }

    /// The partition table as the master sent it, once received.
    pub fn partition_table(&self) -> Option<&PartitionTable> {
        self.pt.as_ref()
    }

    /// Our NID, once the primary master gave one.
    pub fn nid(&self) -> Option<Nid> {
        self.nid
    }

    /// Whether the admin is identified to the primary master.
    pub fn is_connected(&self) -> bool {
        matches!(self.master, MasterLink::Ready { .. })
    }

    /// Whether a FlushLog arrived since the last call: the driver then flushes the node's
    /// log buffer (logging is the driver's business, not the logic's).
    pub fn take_flush_log(&mut self) -> bool {
        std::mem::take(&mut self.flush_log)
    }

    /// The health of our own cluster as last computed.
    pub fn monitor(&self) -> &Monitor {
        &self.own
    }
}

impl Node for Admin {
    fn handle(&mut self, now: Time, input: Input, out: &mut Outbox) {
        match input {
            Input::Start => {
                if self.config.cluster.is_empty() {
                    out.exit(1, "cluster name must be non-empty");
                    return;
                }
                if self.masters.is_empty() {
                    out.exit(1, "no master address given");
                    return;
                }
                self.try_master(now, out);
            }
            Input::Accepted { conn, .. } => self.accepted.push(conn),
            Input::Connected { conn } => self.connected(conn, out),
            Input::ConnectFailed { conn } => self.lost(now, conn, out),
            Input::Closed { conn } => {
                out.forget(conn);
                self.lost(now, conn, out);
            }
            Input::Packet {
                conn,
                msg_id,
                packet,
            } => self.packet(now, conn, msg_id, packet, out),
            Input::Answer {
                conn,
                msg_id,
                packet,
            } => self.answer(now, conn, msg_id, packet, out),
            Input::Idle => {}
            Input::Timer => self.timer(now, out),
            Input::Shutdown => out.exit(0, "shutdown requested"),
        }
    }

    fn deadline(&self) -> Option<Time> {
        let bootstrap = match self.master {
            MasterLink::Idle { at } => at,
            _ => None,
        };
        let upstream = self.upstream.as_ref().and_then(|u| u.retry_at);
        [bootstrap, self.notify_deadline, upstream]
            .into_iter()
            .flatten()
            .min_by(f64::total_cmp)
    }
}

// ---------------------------------------------------------------------------------------
// The primary master: bootstrap loop and what it sends.

impl Admin {
    /// Starts (or schedules) a connection attempt to the next master.
    fn try_master(&mut self, now: Time, out: &mut Outbox) {
        let index = self.next_master % self.masters.len();
        let address = self.masters[index].clone();
        let earliest = self
            .last_attempt
            .get(&address)
            .map_or(now, |last| last + RECONNECT_DELAY);
        if earliest > now {
            self.master = MasterLink::Idle { at: Some(earliest) };
            return;
        }
        self.last_attempt.insert(address.clone(), now);
        tracing::info!(master = %display_address(&address), "connecting to a primary master node");
        let conn = out.connect(address.clone());
        self.master = MasterLink::Bootstrap {
            conn,
            address,
            identify: None,
        };
    }

    /// The current master attempt failed: go on with the next master.
    fn next_master(&mut self, now: Time, out: &mut Outbox) {
        self.next_master = (self.next_master + 1) % self.masters.len();
        self.try_master(now, out);
    }

    fn master_conn(&self) -> Option<ConnId> {
        match self.master {
            MasterLink::Ready { conn, .. } => Some(conn),
            _ => None,
        }
    }

    fn connected(&mut self, conn: ConnId, out: &mut Outbox) {
        if let MasterLink::Bootstrap {
            conn: master,
            identify,
            ..
        } = &mut self.master
        {
            if *master == conn {
                let backup = self
                    .config
                    .monitor_backup
                    .iter()
                    .map(|name| Value::Bin(Bytes::from(name.clone())))
                    .collect();
                *identify = Some(out.ask(
                    conn,
                    RequestIdentification {
                        node_type: NodeType::Admin,
                        nid: self.nid,
                        address: Some(self.config.address.clone()),
                        cluster_name: Bytes::from(self.config.cluster.clone()),
                        id_timestamp: None,
                        extra: Dict(vec![(Bytes::from_static(b"backup"), Value::Array(backup))]),
                    },
                ));
                return;
            }
        }
        if let Some(upstream) = &mut self.upstream {
            if upstream.conn == Some(conn) {
                upstream.identify = Some(out.ask(
                    conn,
                    RequestIdentification {
                        node_type: NodeType::Admin,
                        nid: None,
                        address: None,
                        cluster_name: Bytes::from(self.config.cluster.clone()),
                        id_timestamp: None,
                        extra: Dict::new(),
                    },
                ));
            }
        }
    }

    /// A connection closed or failed, whichever it was.
    fn lost(&mut self, now: Time, conn: ConnId, out: &mut Outbox) {
        match &self.master {
            MasterLink::Bootstrap { conn: master, .. } if *master == conn => {
                self.next_master(now, out);
                return;
            }
            MasterLink::Ready { conn: master, .. } if *master == conn => {
                self.master_lost(now, out);
                return;
            }
            _ => {}
        }
        if self.upstream.as_ref().is_some_and(|u| u.conn == Some(conn)) {
            self.upstream_lost(now);
            return;
        }
        if let Some(index) = self.backups.iter().position(|b| b.conn == Some(conn)) {
            self.backup_lost(now, index, out);
        }
        self.accepted.retain(|c| *c != conn);
        self.asking_summary.retain(|(c, _)| *c != conn);
    }

    /// The identified master connection is gone: NEO/py's PrimaryFailure.
    fn master_lost(&mut self, now: Time, out: &mut Outbox) {
        if self.own.cluster_state == Some(ClusterState::Stopping) {
            out.exit(0, "cluster stopped");
            return;
        }
        tracing::error!("primary master is down");
        // Relayed requests will never be answered: tell the requesters, as NEO/py does
        // when it cancels the requests of a closed connection.
        let mut relayed: Vec<_> = self.relayed.drain().map(|(_, v)| v).collect();
        relayed.sort_unstable();
        for (conn, msg_id) in relayed {
            out.error(
                conn,
                msg_id,
                ErrorCode::ProtocolError,
                "connection to master lost",
            );
            self.close_peer(conn, out);
        }
        self.master = MasterLink::Idle { at: None };
        self.nid = None;
        self.notifying.clear();
        self.notify_deadline = None;
        self.update_own(now, out, MonitorUpdate::state(None));
        self.nodes = NodeTable::new();
        self.next_master(now, out);
    }

    fn identified(&mut self, now: Time, conn: ConnId, packet: Packet, out: &mut Outbox) {
        let accept = match packet {
            Packet::AcceptIdentification(accept) => accept,
            Packet::Error(error) => {
                tracing::warn!(code = ?error.code, message = %String::from_utf8_lossy(&error.message), "master refused identification");
                out.close(conn);
                self.next_master(now, out);
                return;
            }
            other => {
                tracing::warn!(packet = other.name(), "unexpected answer to identification");
                out.close(conn);
                self.next_master(now, out);
                return;
            }
        };
        let (Some(your_nid), NodeType::Master) = (accept.your_nid, accept.node_type) else {
            tracing::warn!("identification accepted without a NID or not by a master");
            out.close(conn);
            self.next_master(now, out);
            return;
        };
        tracing::info!("connected to a primary master node");
        self.nid = Some(your_nid);
        self.master = MasterLink::Ready {
            conn,
            primary: accept.nid,
        };
        self.nodes = NodeTable::new();
        self.first_node_notification = true;
        out.ask(conn, AskClusterState {});
    }

    /// A request or notification from the primary master.
    fn master_packet(
        &mut self,
        now: Time,
        conn: ConnId,
        msg_id: u32,
        packet: Packet,
        out: &mut Outbox,
    ) {
        match packet {
            Packet::NotifyNodeInformation(p) => {
                let full = std::mem::take(&mut self.first_node_notification);
                self.nodes.apply_notification(&p.node_list, full);
                self.pt_updated(now, out);
            }
            Packet::SendPartitionTable(p) => {
                self.pt = Some(PartitionTable::from_rows(
                    p.ptid,
                    p.num_replicas,
                    p.row_list,
                ));
                self.pt_updated(now, out);
            }
            Packet::NotifyPartitionChanges(p) => match &mut self.pt {
                Some(pt) => match pt.apply_changes(p.ptid, p.num_replicas, &p.cell_list) {
                    Ok(()) => self.pt_updated(now, out),
                    Err(e) => tracing::warn!(error = %e, "partition changes refused"),
                },
                None => tracing::warn!("partition changes before any partition table"),
            },
            Packet::NotifyClusterInformation(p) => {
                self.update_own(now, out, MonitorUpdate::state(Some(p.state)))
            }
            Packet::NotifyUpstreamAdmin(p) => self.upstream_admin(now, p.address, out),
            Packet::FlushLog(_) => self.flush_log = true,
            Packet::Ping(_) => out.answer(conn, msg_id, Pong {}),
            Packet::CloseClient(_) => {}
            other => tracing::warn!(packet = other.name(), "unexpected packet from the master"),
        }
    }

    /// An answer from the primary master: relayed, or to one of our own requests.
    fn master_answer(&mut self, now: Time, msg_id: u32, packet: Packet, out: &mut Outbox) {
        if let Some((peer, peer_msg_id)) = self.relayed.remove(&msg_id) {
            if !self.is_open(peer) {
                return;
            }
            let abort = matches!(&packet, Packet::Error(e) if e.code == ErrorCode::ProtocolError);
            out.answer(peer, peer_msg_id, packet);
            if abort {
                self.close_peer(peer, out);
            }
            return;
        }
        match packet {
            Packet::AnswerClusterState(p) => {
                self.update_own(now, out, MonitorUpdate::state(p.state))
            }
            Packet::AnswerLastTransaction(p) => {
                self.own.ltid = Some(p.tid);
                self.maybe_notify(now, None, out);
            }
            Packet::AnswerRecovery(p) => self.own.backup_tid = Some(p.backup_tid),
            Packet::Error(e) => {
                tracing::warn!(code = ?e.code, message = %String::from_utf8_lossy(&e.message), "error from the master")
            }
            other => tracing::warn!(packet = other.name(), "unexpected answer from the master"),
        }
    }

    /// Recomputes down nodes and cell counts after a node or partition-table change.
    fn pt_updated(&mut self, now: Time, out: &mut Outbox) {
        let Some(pt) = &self.pt else {
            return;
        };
        let mut down = Vec::new();
        let mut counts = CellCounts::new();
        for row in pt.rows() {
            for cell in row {
                if !self.nodes.is_running(cell.nid) && !down.contains(&cell.nid) {
                    down.push(cell.nid);
                }
                *counts.entry(cell.state.value()).or_insert(0) += 1;
            }
        }
        self.update_own(
            now,
            out,
            MonitorUpdate {
                cluster_state: None,
                down: Some(down.len() as u32),
                pt_summary: Some(Some(counts)),
            },
        );
    }
}

// ---------------------------------------------------------------------------------------
// neoctl and other peers connected to us.

impl Admin {
    fn packet(&mut self, now: Time, conn: ConnId, msg_id: u32, packet: Packet, out: &mut Outbox) {
        match &self.master {
            MasterLink::Ready { conn: master, .. } if *master == conn => {
                return self.master_packet(now, conn, msg_id, packet, out);
            }
            MasterLink::Bootstrap { conn: master, .. } if *master == conn => {
                return self.bootstrap_packet(now, conn, msg_id, packet, out);
            }
            _ => {}
        }
        if let Some(index) = self.backups.iter().position(|b| b.conn == Some(conn)) {
            return self.backup_packet(now, index, conn, msg_id, packet, out);
        }
        self.request(now, conn, msg_id, packet, out);
    }

    fn bootstrap_packet(
        &mut self,
        now: Time,
        conn: ConnId,
        msg_id: u32,
        packet: Packet,
        out: &mut Outbox,
    ) {
        match packet {
            Packet::NotPrimaryMaster(p) => {
                for address in &p.known_master_list {
                    if !self.masters.contains(address) {
                        self.masters.push(address.clone());
                    }
                }
                let primary = p
                    .primary
                    .and_then(|i| p.known_master_list.get(i as usize))
                    .filter(|a| **a != self.config.address)
                    .cloned();
                if let Some(primary) = primary {
                    out.close(conn);
                    self.next_master = self.masters.iter().position(|a| *a == primary).unwrap_or(0);
                    self.try_master(now, out);
                }
                // Otherwise the secondary closes the connection and the loop goes on.
            }
            Packet::Ping(_) => out.answer(conn, msg_id, Pong {}),
            other => tracing::debug!(packet = other.name(), "ignored during bootstrap"),
        }
    }

    /// A request from neoctl (or from the upstream admin, which uses the same set).
    fn request(&mut self, now: Time, conn: ConnId, msg_id: u32, packet: Packet, out: &mut Outbox) {
        match &packet {
            Packet::Ping(_) => return out.answer(conn, msg_id, Pong {}),
            Packet::CloseClient(_) => return,
            _ => {}
        }
        let Some(master) = self.master_conn() else {
            out.error(conn, msg_id, ErrorCode::NotReady, NOT_CONNECTED_MESSAGE);
            self.close_peer(conn, out);
            return;
        };
        match packet {
            Packet::AskPartitionList(p) => {
                // Before the master sent a table, answer as for a table without rows.
                let (ptid, num_replicas, rows) = match &self.pt {
                    Some(pt) => (pt.ptid(), pt.replicas(), pt.rows()),
                    None => (None, 0, Vec::new()),
                };
                let max = if p.max_offset == 0 {
                    rows.len()
                } else {
                    p.max_offset as usize
                };
                match rows.get(p.min_offset as usize..max) {
                    Some(slice) if p.min_offset as usize <= max => out.answer(
                        conn,
                        msg_id,
                        AnswerPartitionList {
                            ptid,
                            num_replicas,
                            row_list: slice.to_vec(),
                        },
                    ),
                    _ => {
                        out.error(
                            conn,
                            msg_id,
                            ErrorCode::ProtocolError,
                            "invalid partition table offset",
                        );
                        self.close_peer(conn, out);
                    }
                }
            }
            Packet::AskNodeList(p) => {
                let node_list = self
                    .nodes
                    .iter()
                    .filter(|e| p.node_type.is_none_or(|t| t == e.node_type))
                    .map(|e| e.info())
                    .collect();
                out.answer(conn, msg_id, AnswerNodeList { node_list });
            }
            Packet::AskClusterState(_) => out.answer(
                conn,
                msg_id,
                AnswerClusterState {
                    state: self.own.cluster_state,
                },
            ),
            Packet::AskPrimary(_) => match self.master {
                MasterLink::Ready {
                    primary: Some(primary_nid),
                    ..
                } => out.answer(conn, msg_id, AnswerPrimary { primary_nid }),
                _ => out.error(conn, msg_id, ErrorCode::NotReady, NOT_CONNECTED_MESSAGE),
            },
            Packet::AskMonitorInformation(_) => {
                let busy = !self.asking_summary.is_empty() || !self.notifying.is_empty();
                self.asking_summary.push((conn, msg_id));
                if !busy {
                    let ask = self.own.operational();
                    self.notify(now, ask, out);
                }
            }
            Packet::FlushLog(_) => {
                out.notify(master, FlushLog {});
                self.flush_log = true;
            }
            Packet::RequestIdentification(p) => self.backup_identification(conn, msg_id, p, out),
            packet @ (Packet::AddPendingNodes(_)
            | Packet::AskLastIDs(_)
            | Packet::AskLastTransaction(_)
            | Packet::AskRecovery(_)
            | Packet::CheckReplicas(_)
            | Packet::Repair(_)
            | Packet::SetClusterState(_)
            | Packet::SetNodeState(_)
            | Packet::SetNumReplicas(_)
            | Packet::Truncate(_)
            | Packet::TweakPartitionTable(_)) => {
                let master_msg_id = out.ask(master, packet);
                self.relayed.insert(master_msg_id, (conn, msg_id));
            }
            other => {
                let message = format!("unexpected packet: {}", other.name());
                if other.kind().expects_answer() {
                    out.error(conn, msg_id, ErrorCode::ProtocolError, message);
                }
                self.close_peer(conn, out);
            }
        }
    }

    fn answer(&mut self, now: Time, conn: ConnId, msg_id: u32, packet: Packet, out: &mut Outbox) {
        match &self.master {
            MasterLink::Ready { conn: master, .. } if *master == conn => {
                return self.master_answer(now, msg_id, packet, out);
            }
            MasterLink::Bootstrap {
                conn: master,
                identify: Some(identify),
                ..
            } if *master == conn && *identify == msg_id => {
                return self.identified(now, conn, packet, out);
            }
            _ => {}
        }
        if self.upstream.as_ref().is_some_and(|u| u.conn == Some(conn)) {
            return self.upstream_answer(now, conn, msg_id, packet, out);
        }
        if let Some(index) = self.backups.iter().position(|b| b.conn == Some(conn)) {
            return self.backup_packet(now, index, conn, msg_id, packet, out);
        }
        tracing::debug!(packet = packet.name(), "answer on an unknown connection");
    }

    fn is_open(&self, conn: ConnId) -> bool {
        self.accepted.contains(&conn)
            || self.upstream.as_ref().is_some_and(|u| u.conn == Some(conn))
    }

    /// Closes a peer connection (neoctl, backup or upstream admin) and does what its
    /// closure implies, since no Closed input follows our own close.
    fn close_peer(&mut self, conn: ConnId, out: &mut Outbox) {
        out.close(conn);
        self.accepted.retain(|c| *c != conn);
        self.asking_summary.retain(|(c, _)| *c != conn);
        if let Some(upstream) = &mut self.upstream {
            if upstream.conn == Some(conn) {
                upstream.conn = None;
                upstream.identified = false;
                upstream.retry_at = Some(f64::NEG_INFINITY);
            }
        }
        if let Some(backup) = self.backups.iter_mut().find(|b| b.conn == Some(conn)) {
            backup.conn = None;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Monitoring (tools.md 3.3).

/// Changed monitored values: `None` leaves a value alone.
#[derive(Debug, Default)]
struct MonitorUpdate {
    cluster_state: Option<Option<ClusterState>>,
    down: Option<u32>,
    pt_summary: Option<Option<CellCounts>>,
}

impl MonitorUpdate {
    fn state(state: Option<ClusterState>) -> MonitorUpdate {
        MonitorUpdate {
            cluster_state: Some(state),
            ..MonitorUpdate::default()
        }
    }

    /// Keeps only what differs from `monitor`; returns whether anything is left.
    fn retain_changes(&mut self, monitor: &Monitor) -> bool {
        if self.cluster_state == Some(monitor.cluster_state) {
            self.cluster_state = None;
        }
        if self.down == Some(monitor.down) {
            self.down = None;
        }
        if self.pt_summary.as_ref() == Some(&monitor.pt_summary) {
            self.pt_summary = None;
        }
        self.cluster_state.is_some() || self.down.is_some() || self.pt_summary.is_some()
    }

    fn apply(&self, monitor: &mut Monitor) {
        if let Some(state) = self.cluster_state {
            monitor.cluster_state = state;
        }
        if let Some(down) = self.down {
            monitor.down = down;
        }
        if let Some(counts) = &self.pt_summary {
            monitor.pt_summary = counts.clone();
        }
        monitor.changed = true;
    }

    /// The NotifyMonitorInformation payload of these changes.
    fn to_info(&self) -> Dict<Bytes, Value> {
        let mut info = Vec::new();
        if let Some(state) = self.cluster_state {
            let value = state.map_or(Value::Nil, |s| Value::Enum(EnumValue::ClusterState(s)));
            info.push((Bytes::from_static(b"cluster_state"), value));
        }
        if let Some(down) = self.down {
            info.push((Bytes::from_static(b"down"), Value::Int(down as i128)));
        }
        if let Some(counts) = &self.pt_summary {
            let value = counts.as_ref().map_or(Value::Nil, |counts| {
                Value::Map(
                    counts
                        .iter()
                        .filter_map(|(state, n)| {
                            let state = CellState::from_value(*state as i128)?;
                            Some((
                                Value::Enum(EnumValue::CellState(state)),
                                Value::Int(*n as i128),
                            ))
                        })
                        .collect(),
                )
            });
            info.push((Bytes::from_static(b"pt_summary"), value));
        }
        Dict(info)
    }

    /// Reads a NotifyMonitorInformation payload; unknown keys and bad values are skipped.
    fn from_info(info: &Dict<Bytes, Value>) -> MonitorUpdate {
        let mut update = MonitorUpdate::default();
        for (key, value) in &info.0 {
            match (&key[..], value) {
                (b"cluster_state", Value::Nil) => update.cluster_state = Some(None),
                (b"cluster_state", Value::Enum(EnumValue::ClusterState(s))) => {
                    update.cluster_state = Some(Some(*s))
                }
                (b"down", Value::Int(n)) => update.down = u32::try_from(*n).ok(),
                (b"pt_summary", Value::Nil) => update.pt_summary = Some(None),
                (b"pt_summary", Value::Map(pairs)) => {
                    let mut counts = CellCounts::new();
                    for pair in pairs {
                        if let (Value::Enum(EnumValue::CellState(state)), Value::Int(n)) = pair {
                            counts.insert(state.value(), u32::try_from(*n).unwrap_or(u32::MAX));
                        }
                    }
                    update.pt_summary = Some(Some(counts));
                }
                _ => {
                    tracing::debug!(key = %String::from_utf8_lossy(key), "ignored monitor information")
                }
            }
        }
        update
    }
}

impl Admin {
    /// NEO/py's `updateMonitorInformation(None, ...)`.
    fn update_own(&mut self, now: Time, out: &mut Outbox, mut update: MonitorUpdate) {
        if !update.retain_changes(&self.own) {
            return;
        }
        update.apply(&mut self.own);
        if let Some(UpstreamAdmin {
            conn: Some(conn),
            identified: true,
            ..
        }) = &self.upstream
        {
            out.notify(
                *conn,
                NotifyMonitorInformation {
                    info: update.to_info(),
                },
            );
        }
        if self.notifying.is_empty() {
            self.notify_deadline = None;
            let ask = self.own.operational();
            self.notify(now, ask, out);
        }
    }

    fn update_backup(
        &mut self,
        now: Time,
        index: usize,
        out: &mut Outbox,
        mut update: MonitorUpdate,
    ) {
        if !update.retain_changes(&self.backups[index].monitor) {
            return;
        }
        update.apply(&mut self.backups[index].monitor);
        if self.notifying.is_empty() {
            self.notify_deadline = None;
            let ask = self.own.operational();
            self.notify(now, ask, out);
        }
    }

    /// NEO/py's `_notify`: optionally asks the last TIDs of every operational cluster, and
    /// once all answered, builds the summary and answers the waiting `print summary`.
    fn notify(&mut self, now: Time, ask_ids: bool, out: &mut Outbox) {
        if ask_ids {
            if let Some(master) = self.master_conn() {
                ask_last_ids(&self.own, master, out);
            }
            self.notifying = vec![None];
            for (index, backup) in self.backups.iter().enumerate() {
                if let (true, Some(conn)) = (backup.monitor.operational(), backup.conn) {
                    ask_last_ids(&backup.monitor, conn, out);
                    self.notifying.push(Some(index));
                }
            }
            self.notify_deadline = Some(now + MONITOR_TIMEOUT);
        }
        let connected = self.master_conn().is_some();
        if !self.notifying.is_empty() || (self.own.cluster_state.is_none() && connected) {
            return;
        }
        let mut severity: [Vec<Option<Bytes>>; 3] = Default::default();
        let own_severity = self.own.severity(false);
        let body = if connected {
            let (upstream, line) = self.own.format_summary(None);
            let mut body = vec![line];
            for backup in &mut self.backups {
                let (_, line) = backup.monitor.format_summary(upstream);
                body.push(String::new());
                body.push(backup.name.clone());
                body.push(format!("    {line}"));
                let level = match backup.monitor.severity(true) {
                    0 => backup.monitor.lagging as usize,
                    level => level,
                };
                severity[level].push(Some(Bytes::from(backup.name.clone())));
            }
            body.join("\n")
        } else {
            NOT_CONNECTED_MESSAGE.to_string()
        };
        // Nothing is mailed (see the crate documentation), so the change flags are only
        // reset, as NEO/py does when it reports.
        self.own.changed = false;
        for backup in &mut self.backups {
            backup.monitor.changed = false;
        }
        if self.asking_summary.is_empty() {
            return;
        }
        severity[1].sort();
        severity[2].sort();
        severity[own_severity].insert(0, None);
        let [_, warning, problem] = severity;
        let answer = AnswerMonitorInformation {
            warning,
            problem,
            summary: Bytes::from(body),
        };
        for (conn, msg_id) in std::mem::take(&mut self.asking_summary) {
            out.answer(conn, msg_id, answer.clone());
        }
    }

    /// NEO/py's `maybeNotify`: cluster `name` answered its last TIDs.
    fn maybe_notify(&mut self, now: Time, name: Option<usize>, out: &mut Outbox) {
        let Some(position) = self.notifying.iter().position(|n| *n == name) else {
            return;
        };
        self.notifying.remove(position);
        if self.notifying.is_empty() {
            self.notify_deadline = None;
        }
        self.notify(now, false, out);
    }

    fn timer(&mut self, now: Time, out: &mut Outbox) {
        if let MasterLink::Idle { at: Some(at) } = self.master {
            if at <= now {
                self.try_master(now, out);
            }
        }
        if let Some(upstream) = &mut self.upstream {
            if upstream.retry_at.is_some_and(|at| at <= now) {
                upstream.retry_at = None;
                self.connect_upstream(now, out);
            }
        }
        if self.notify_deadline.is_some_and(|at| at <= now) {
            self.notify_deadline = None;
            // Clusters that did not answer in time: close their connections, as NEO/py
            // does; the master's loss sends us back to the bootstrap loop.
            for name in std::mem::take(&mut self.notifying) {
                match name {
                    Some(index) => {
                        if let Some(conn) = self.backups[index].conn {
                            out.close(conn);
                            self.backup_lost(now, index, out);
                        }
                    }
                    None => {
                        if let Some(master) = self.master_conn() {
                            out.close(master);
                            self.master_lost(now, out);
                        }
                    }
                }
            }
        }
    }
}

fn ask_last_ids(monitor: &Monitor, conn: ConnId, out: &mut Outbox) {
    if monitor.cluster_state == Some(ClusterState::BackingUp) {
        out.ask(conn, AskRecovery {});
    }
    out.ask(conn, AskLastTransaction {});
}

// ---------------------------------------------------------------------------------------
// Cross-cluster monitoring (tools.md 3.4).

impl Admin {
    /// An admin of a backup cluster identifies to us to report its health.
    fn backup_identification(
        &mut self,
        conn: ConnId,
        msg_id: u32,
        p: RequestIdentification,
        out: &mut Outbox,
    ) {
        let name = String::from_utf8_lossy(&p.cluster_name).into_owned();
        let refusal = if p.node_type != NodeType::Admin {
            Some("reject non-admin node".to_string())
        } else {
            match self.backups.iter().position(|b| b.name == name) {
                None => Some(format!("unknown backup cluster {}", py_str_repr(&name))),
                Some(index) if self.backups[index].conn.is_some() => {
                    Some("already connected".to_string())
                }
                Some(index) => {
                    self.backups[index].conn = Some(conn);
                    None
                }
            }
        };
        match refusal {
            Some(message) => {
                out.error(conn, msg_id, ErrorCode::ProtocolError, message);
                self.close_peer(conn, out);
            }
            None => out.answer(
                conn,
                msg_id,
                AcceptIdentification {
                    node_type: NodeType::Admin,
                    nid: None,
                    your_nid: None,
                },
            ),
        }
    }

    fn backup_packet(
        &mut self,
        now: Time,
        index: usize,
        conn: ConnId,
        msg_id: u32,
        packet: Packet,
        out: &mut Outbox,
    ) {
        match packet {
            Packet::NotifyMonitorInformation(p) => {
                self.update_backup(now, index, out, MonitorUpdate::from_info(&p.info))
            }
            Packet::AnswerRecovery(p) => {
                self.backups[index].monitor.backup_tid = Some(p.backup_tid)
            }
            Packet::AnswerLastTransaction(p) => {
                self.backups[index].monitor.ltid = Some(p.tid);
                self.maybe_notify(now, Some(index), out);
            }
            Packet::Ping(_) => out.answer(conn, msg_id, Pong {}),
            other => {
                tracing::warn!(packet = other.name(), backup = %self.backups[index].name, "unexpected packet from a backup admin")
            }
        }
    }

    /// A backup admin left: forget what it said (NEO/py makes a fresh monitor).
    fn backup_lost(&mut self, now: Time, index: usize, out: &mut Outbox) {
        let backup = &mut self.backups[index];
        backup.conn = None;
        backup.monitor = Monitor {
            max_lag: backup.monitor.max_lag,
            ..Monitor::default()
        };
        self.maybe_notify(now, Some(index), out);
    }

    /// The master says which upstream admin monitors this (backup) cluster.
    fn upstream_admin(&mut self, now: Time, address: Address, out: &mut Outbox) {
        match &mut self.upstream {
            Some(upstream) if upstream.address == address => {}
            Some(upstream) => {
                upstream.address = address;
                if let Some(conn) = upstream.conn.take() {
                    out.close(conn);
                }
                upstream.identified = false;
                self.connect_upstream(now, out);
            }
            None => {
                self.upstream = Some(UpstreamAdmin {
                    address,
                    conn: None,
                    identify: None,
                    identified: false,
                    retry_at: None,
                });
                self.connect_upstream(now, out);
            }
        }
    }

    fn connect_upstream(&mut self, now: Time, out: &mut Outbox) {
        let Some(upstream) = &mut self.upstream else {
            return;
        };
        let earliest = self
            .last_attempt
            .get(&upstream.address)
            .map_or(now, |last| last + RECONNECT_DELAY);
        if earliest > now {
            upstream.retry_at = Some(earliest);
            return;
        }
        self.last_attempt.insert(upstream.address.clone(), now);
        upstream.conn = Some(out.connect(upstream.address.clone()));
        upstream.identify = None;
        upstream.identified = false;
    }

    fn upstream_lost(&mut self, now: Time) {
        if let Some(upstream) = &mut self.upstream {
            upstream.conn = None;
            upstream.identified = false;
            let earliest = self
                .last_attempt
                .get(&upstream.address)
                .map_or(now, |last| last + RECONNECT_DELAY);
            upstream.retry_at = Some(earliest.max(now));
        }
    }

    fn upstream_answer(
        &mut self,
        _now: Time,
        conn: ConnId,
        msg_id: u32,
        packet: Packet,
        out: &mut Outbox,
    ) {
        let Some(upstream) = &mut self.upstream else {
            return;
        };
        if upstream.identify != Some(msg_id) {
            tracing::debug!(
                packet = packet.name(),
                "unexpected answer from the upstream admin"
            );
            return;
        }
        match packet {
            Packet::AcceptIdentification(_) => {
                upstream.identified = true;
                let info = MonitorUpdate {
                    cluster_state: Some(self.own.cluster_state),
                    down: Some(self.own.down),
                    pt_summary: Some(self.own.pt_summary.clone()),
                }
                .to_info();
                out.notify(conn, NotifyMonitorInformation { info });
            }
            other => {
                tracing::warn!(
                    packet = other.name(),
                    "upstream admin refused identification"
                );
                out.close(conn);
                upstream.conn = None;
                upstream.retry_at = Some(f64::NEG_INFINITY);
            }
        }
    }
}

/// Python's `repr()` of a text, as NEO/py puts names in its error messages.
fn py_str_repr(text: &str) -> String {
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut repr = String::from(quote);
    for c in text.chars() {
        match c {
            '\\' => repr.push_str("\\\\"),
            '\n' => repr.push_str("\\n"),
            '\r' => repr.push_str("\\r"),
            '\t' => repr.push_str("\\t"),
            c if c == quote => {
                repr.push('\\');
                repr.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                repr.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => repr.push(c),
        }
    }
    repr.push(quote);
    repr
}

/// `host:port`, `[host]:port` for IPv6, as NEO/py prints addresses.
pub fn display_address(address: &Address) -> String {
    let host = String::from_utf8_lossy(&address.host);
    if host.contains(':') {
        format!("[{host}]:{}", address.port)
    } else {
        format!("{host}:{}", address.port)
    }
}
