//! RUNNING: storages starting operation and reporting readiness, storages lost and back,
//! replication bookkeeping (updatable cells, NotifyReplicationDone), leaving service when
//! the table stops being operational, and the orderly shutdown (cluster.md 2.6, 2.7,
//! 3.5-3.7, 6.1 step 2).

use neo_node::{ConnId, Outbox, Time};
use neo_protocol::{ClusterState, ErrorCode, Nid, NodeState, NodeType, Packet};

use crate::{Master, Role};

impl Master {
    pub(crate) fn enter_running(&mut self, now: Time, out: &mut Outbox) {
        self.verification = None;
        self.change_cluster_state(out, ClusterState::Running);
        let running: Vec<Nid> = self
            .nodes
            .of_type(NodeType::Storage)
            .filter(|e| e.state == NodeState::Running && e.conn.is_some())
            .filter_map(|e| e.nid)
            .collect();
        for nid in running {
            self.start_storage(now, out, nid);
        }
    }

    /// StartOperation; the storage answers NotifyReady once operational.
    pub(crate) fn start_storage(&mut self, _now: Time, out: &mut Outbox, nid: Nid) {
        if let Some(conn) = self.node_conn(nid) {
            out.notify(conn, neo_protocol::StartOperation { backup: false });
            self.starting.insert(nid);
        }
    }

    pub(crate) fn storage_packet(
        &mut self,
        now: Time,
        out: &mut Outbox,
        conn: ConnId,
        nid: Nid,
        msg_id: u32,
        packet: Packet,
    ) {
        match packet {
            Packet::NotifyReady(_) => {
                if self.starting.remove(&nid) {
                    self.readiness += 1;
                    self.ready.insert(nid, self.readiness);
                    self.send_pack_signatures(out, conn);
                }
                self.retry_delayed_begins(now, out);
            }
            Packet::AskFinalTID(p) => self.ask_final_tid(out, conn, msg_id, p.ttid),
            Packet::AskUnfinishedTransactions(request) => {
                for p in request.offset_list {
                    if let Some(state) = self.pt.cell(p, nid) {
                        if !state_is_readable(state) {
                            self.updatable.insert((p, nid));
                        }
                    }
                }
                let (max_tid, ttid_list) = self.unfinished_transactions(nid);
                out.answer(
                    conn,
                    msg_id,
                    neo_protocol::AnswerUnfinishedTransactions { max_tid, ttid_list },
                );
            }
            Packet::NotifyReplicationDone(n) => {
                let updatable = self.updatable.contains(&(n.partition, nid));
                match self.pt.replication_done(nid, n.partition, updatable) {
                    Ok(changes) => {
                        if !changes.is_empty() {
                            self.updatable.remove(&(n.partition, nid));
                            tracing::info!(
                                "{nid} replicated partition {} up to {}",
                                n.partition,
                                n.tid
                            );
                            self.broadcast_pt_changes(out, changes);
                        }
                    }
                    Err(e) => {
                        let reason = format!("NotifyReplicationDone: {e}");
                        self.protocol_error(out, conn, msg_id, &reason);
                        self.node_lost(now, out, nid, conn);
                    }
                }
            }
            Packet::NotifyPackCompleted(n) => self.pack_completed(out, nid, n.pack_id),
            Packet::AskPackOrders(p) => self.answer_pack_orders(out, conn, msg_id, p.pack_id, true),
            Packet::NotifyPartitionCorrupted(n) => {
                // NEO/py's master only logs it (cells are not marked CORRUPTED).
                let nids: Vec<String> = n.nid_list.iter().map(|n| n.to_string()).collect();
                tracing::error!(
                    "partition {} is corrupted on {} (reported by {nid})",
                    n.partition,
                    nids.join(", ")
                );
            }
            other => {
                if other.kind().expects_answer() {
                    out.error(
                        conn,
                        msg_id,
                        ErrorCode::NotReady,
                        format!("{} is not handled by this master yet", other.name()),
                    );
                } else {
                    tracing::debug!("ignoring {} from storage {nid}", other.name());
                }
            }
        }
    }

    pub(crate) fn client_packet(
        &mut self,
        now: Time,
        out: &mut Outbox,
        conn: ConnId,
        client: Nid,
        msg_id: u32,
        packet: Packet,
    ) {
        if self.read_only_clients.contains(&client)
            && matches!(
                packet,
                Packet::AskBeginTransaction(_)
                    | Packet::AskNewOIDs(_)
                    | Packet::AskFinishTransaction(_)
                    | Packet::AskFinalTID(_)
                    | Packet::FailedVote(_)
                    | Packet::AbortTransaction(_)
            )
        {
            if packet.kind().expects_answer() {
                out.error(conn, msg_id, ErrorCode::ReadOnlyAccess, "read-only access");
            }
            return;
        }
        let Some(packet) = self.client_transaction_packet(now, out, conn, client, msg_id, packet)
        else {
            return;
        };
        match packet {
            Packet::AskNewOIDs(request) => {
                let n = request.num_oids.min(100_000);
                let first = self.last_oid.0 + 1;
                let oids: Vec<neo_protocol::Oid> = (first..first + u64::from(n))
                    .map(neo_protocol::Oid)
                    .collect();
                if let Some(last) = oids.last() {
                    self.last_oid = *last;
                }
                out.answer(conn, msg_id, neo_protocol::AnswerNewOIDs { oid_list: oids });
            }
            other => {
                if other.kind().expects_answer() {
                    out.error(
                        conn,
                        msg_id,
                        ErrorCode::NotReady,
                        format!("{} is not handled by this master yet", other.name()),
                    );
                }
            }
        }
    }

    /// A storage's connection is gone (cluster.md 2.10, "storage lost").
    pub(crate) fn storage_lost(&mut self, now: Time, out: &mut Outbox, nid: Nid) {
        self.starting.remove(&nid);
        self.ready.remove(&nid);
        self.updatable.retain(|(_, n)| *n != nid);
        if self.cluster_state == ClusterState::Recovering {
            self.recovery_storage_lost(now, out, nid);
            return;
        }
        let Some(entry) = self.nodes.get_mut(nid) else {
            self.storage_lost_transactions(now, out, nid);
            return;
        };
        if entry.state == NodeState::Pending {
            entry.state = NodeState::Unknown;
            let info = entry.info();
            self.nodes.remove(nid);
            self.broadcast_nodes(out, now, &[info]);
            self.storage_lost_transactions(now, out, nid);
            return;
        }
        entry.state = NodeState::Down;
        self.broadcast_node(out, now, nid);
        if self.cluster_state == ClusterState::Verifying {
            if let Some(v) = self.verification.as_mut() {
                v.forget(nid);
            }
        }
        let nodes = &self.nodes;
        let changes = self.pt.outdate(|n| nodes.is_running(n), Some(nid));
        self.broadcast_pt_changes(out, changes);
        let must_leave = !self.operational()
            || (self.cluster_state == ClusterState::Verifying && self.truncate_tid.is_some());
        if must_leave && !self.stopping {
            // Before any transaction stops waiting for this node: one it was the last to
            // lock must not be acknowledged (leaving service forgets them all).
            tracing::warn!("the partition table is not operational any more: back to recovery");
            self.leave_service(now, out, None);
            return;
        }
        self.storage_lost_transactions(now, out, nid);
    }

    /// Leaves service (cluster.md 2.2 step 2.5): storages and clients are stopped, running
    /// storages become pending, and recovery starts again.
    pub(crate) fn leave_service(
        &mut self,
        now: Time,
        out: &mut Outbox,
        truncate: Option<neo_protocol::Tid>,
    ) {
        let mut changed = Vec::new();
        let targets: Vec<(Nid, NodeType, ConnId)> = self
            .nodes
            .iter()
            .filter(|e| matches!(e.node_type, NodeType::Storage | NodeType::Client))
            .filter_map(|e| Some((e.nid?, e.node_type, e.conn?)))
            .collect();
        for (nid, node_type, conn) in targets {
            out.notify(conn, neo_protocol::StopOperation {});
            if node_type == NodeType::Client {
                self.conns.remove(&conn);
                out.close(conn);
                if let Some(mut entry) = self.nodes.remove(nid) {
                    entry.state = NodeState::Unknown;
                    changed.push(entry.info());
                }
            } else {
                if let Some(tid) = truncate {
                    out.notify(conn, neo_protocol::Truncate { tid });
                }
                if let Some(entry) = self.nodes.get_mut(nid) {
                    if entry.state == NodeState::Running {
                        entry.state = NodeState::Pending;
                        changed.push(entry.info());
                    }
                }
            }
        }
        self.broadcast_nodes(out, now, &changed);
        self.startup_allowed = truncate.is_none();
        self.truncate_tid = truncate;
        // enter_recovery resets the table; the startup permission survives.
        let allowed = self.startup_allowed;
        self.enter_recovery(now, out);
        self.startup_allowed = allowed;
    }

    /// STOPPING: wait until no transaction is pending, then tell storages they are DOWN,
    /// close everything and exit (cluster.md 2.7).
    pub(crate) fn stopping_check(&mut self, now: Time, out: &mut Outbox) {
        if self.role != Role::Primary || self.tm.has_pending() {
            return;
        }
        let timestamp = self.monotonic(now);
        let storages: Vec<(ConnId, neo_protocol::NodeInfo)> = self
            .nodes
            .of_type(NodeType::Storage)
            .filter_map(|e| {
                let mut info = e.info();
                info.state = NodeState::Down;
                Some((e.conn?, info))
            })
            .collect();
        for (conn, info) in storages {
            out.notify(
                conn,
                neo_protocol::NotifyNodeInformation {
                    timestamp,
                    node_list: vec![info],
                },
            );
        }
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in conns {
            out.close(conn);
        }
        self.conns.clear();
        self.exit(out, 0, "cluster stopped");
    }
}

fn state_is_readable(state: neo_protocol::CellState) -> bool {
    matches!(
        state,
        neo_protocol::CellState::UpToDate | neo_protocol::CellState::Feeding
    )
}
