//! Requests from the admin node (relayed `neoctl` commands): cluster state changes, node
//! state changes (kill, drop), enabling pending storages, tweak, replicas, truncate
//! (cluster.md 2.9, 3.8-3.10; tools.md section 2).

use neo_node::{ConnId, Outbox, Time};
use neo_protocol::{ClusterState, ErrorCode, Nid, NodeState, NodeType, Packet};

use crate::Master;

impl Master {
    pub(crate) fn admin_packet(
        &mut self,
        now: Time,
        out: &mut Outbox,
        conn: ConnId,
        msg_id: u32,
        packet: Packet,
    ) {
        let result = match packet {
            Packet::SetClusterState(p) => self.set_cluster_state(out, p.state),
            Packet::SetNodeState(p) => self.set_node_state(now, out, p.nid, p.state),
            Packet::AddPendingNodes(p) => self.add_pending_nodes(now, out, p.nid_list),
            Packet::TweakPartitionTable(p) => match self.tweak(out, p.dry_run, &p.nid_list) {
                Ok((changed, rows)) => {
                    out.answer(
                        conn,
                        msg_id,
                        neo_protocol::AnswerTweakPartitionTable {
                            changed,
                            row_list: rows,
                        },
                    );
                    return;
                }
                Err(e) => Err(e),
            },
            Packet::SetNumReplicas(p) => self.set_num_replicas(out, p.num_replicas),
            Packet::Truncate(p) => match self.truncate_allowed(p.tid) {
                Ok(()) => {
                    out.error(conn, msg_id, ErrorCode::Ack, "");
                    self.leave_service(now, out, Some(p.tid));
                    return;
                }
                Err(e) => Err(e),
            },
            Packet::Repair(p) => self.repair(out, &p.nid_list, p.dry_run),
            Packet::FlushLog(_) => {
                let conns: Vec<ConnId> = self.nodes.iter().filter_map(|e| e.conn).collect();
                for c in conns {
                    if c != conn {
                        out.notify(c, neo_protocol::FlushLog {});
                    }
                }
                return;
            }
            Packet::CheckReplicas(p) => {
                self.check_replicas(out, p.partition_dict.0, p.min_tid, p.max_tid)
            }
            other => {
                if other.kind().expects_answer() {
                    Err(format!("{} is not handled by the master", other.name()))
                } else {
                    return;
                }
            }
        };
        match result {
            Ok(message) => out.error(conn, msg_id, ErrorCode::Ack, message),
            Err(reason) => {
                tracing::info!("admin request denied: {reason}");
                out.error(conn, msg_id, ErrorCode::Denied, reason)
            }
        }
    }

    fn set_cluster_state(
        &mut self,
        out: &mut Outbox,
        state: ClusterState,
    ) -> Result<String, String> {
        match state {
            ClusterState::Verifying => {
                if self.cluster_state != ClusterState::Recovering {
                    return Err("Can not switch to this state".into());
                }
                let storages = self.identified_storages();
                if storages.is_empty() {
                    return Err("Cannot exit recovery without any storage node".into());
                }
                if let Some(nid) = storages.iter().find(|n| self.has_pending_request(**n)) {
                    return Err(format!(
                        "Cannot exit recovery now: node {nid} is entering cluster"
                    ));
                }
                self.startup_allowed = true;
                Ok("Cluster state changed".into())
            }
            ClusterState::Stopping => {
                self.change_cluster_state(out, ClusterState::Stopping);
                self.stopping = true;
                Ok("Cluster state changed".into())
            }
            ClusterState::StartingBackup | ClusterState::StoppingBackup => {
                if self.cluster_state == ClusterState::Running
                    || self.cluster_state == ClusterState::BackingUp
                {
                    Err("No upstream cluster to backup defined in configuration".into())
                } else {
                    Err("Can not switch to this state".into())
                }
            }
            _ => Err("Invalid state requested".into()),
        }
    }

    fn set_node_state(
        &mut self,
        now: Time,
        out: &mut Outbox,
        nid: Nid,
        state: NodeState,
    ) -> Result<String, String> {
        let Some(entry) = self.nodes.get(nid).cloned() else {
            return Err("unknown node".into());
        };
        let allowed = match entry.node_type {
            NodeType::Master => state == NodeState::Down,
            NodeType::Storage => matches!(state, NodeState::Down | NodeState::Unknown),
            _ => false,
        };
        if !allowed {
            return Err(format!("can not switch node to {state} state"));
        }
        if Some(nid) == self.nid {
            return Err("can not kill primary master node".into());
        }
        let changed = entry.state != state;
        let mut message = if changed {
            "state changed".to_string()
        } else {
            format!("node already in {state} state")
        };
        if entry.node_type == NodeType::Storage {
            let keep = state == NodeState::Down;
            if entry.state == NodeState::Running && !keep {
                return Err("a running node must be stopped before removal".into());
            }
            let changes = if keep {
                self.pt.kill_check(nid).map_err(|e| e.to_string())?;
                Vec::new()
            } else {
                self.pt.drop_node(nid).map_err(|e| e.to_string())?
            };
            if let Some(e) = self.nodes.get_mut(nid) {
                e.state = state;
            }
            if let Some(conn) = entry.conn {
                let mut info = entry.info();
                info.state = state;
                let timestamp = self.monotonic(now);
                out.notify(
                    conn,
                    neo_protocol::NotifyNodeInformation {
                        timestamp,
                        node_list: vec![info],
                    },
                );
                self.conns.remove(&conn);
                out.close(conn);
                if let Some(e) = self.nodes.get_mut(nid) {
                    e.conn = None;
                }
                self.starting.remove(&nid);
                self.ready.remove(&nid);
            }
            let changes = if keep {
                let nodes = &self.nodes;
                self.pt.outdate(|n| nodes.is_running(n), None)
            } else {
                if !changes.is_empty() {
                    message = "node permanently removed".into();
                }
                self.pt.forget_node(nid);
                changes
            };
            self.broadcast_pt_changes(out, changes);
        } else if let Some(e) = self.nodes.get_mut(nid) {
            e.state = state;
            if let Some(conn) = e.conn {
                let mut info = e.info();
                info.state = state;
                let timestamp = self.monotonic(now);
                out.notify(
                    conn,
                    neo_protocol::NotifyNodeInformation {
                        timestamp,
                        node_list: vec![info],
                    },
                );
            }
        }
        if changed {
            if let Some(info) = self.nodes.get(nid).map(|e| e.info()) {
                self.broadcast_nodes(out, now, &[info]);
            } else {
                let mut info = entry.info();
                info.state = state;
                self.broadcast_nodes(out, now, &[info]);
            }
            if state == NodeState::Unknown {
                self.nodes.remove(nid);
            }
        }
        if !self.operational() && self.cluster_state == ClusterState::Running {
            self.leave_service(now, out, None);
        }
        Ok(message)
    }

    fn change_pt_allowed(&self) -> Result<(), String> {
        match self.cluster_state {
            ClusterState::Running | ClusterState::StartingBackup | ClusterState::BackingUp => {
                Ok(())
            }
            state => Err(format!("this request can not be used in {state} state")),
        }
    }

    fn add_pending_nodes(
        &mut self,
        now: Time,
        out: &mut Outbox,
        nids: Vec<Nid>,
    ) -> Result<String, String> {
        self.change_pt_allowed()?;
        let added: Vec<Nid> = self
            .nodes
            .of_type(NodeType::Storage)
            .filter(|e| e.state == NodeState::Pending)
            .filter_map(|e| e.nid)
            .filter(|n| nids.contains(n))
            .collect();
        if added.is_empty() {
            return Ok("No node added".into());
        }
        let mut infos = Vec::new();
        for nid in &added {
            self.pt.add_node(*nid);
            if let Some(e) = self.nodes.get_mut(*nid) {
                e.state = NodeState::Running;
                infos.push(e.info());
            }
            self.start_storage(now, out, *nid);
        }
        self.broadcast_nodes(out, now, &infos);
        let names: Vec<String> = added.iter().map(|n| n.to_string()).collect();
        Ok(format!("Nodes added: {}", names.join(", ")))
    }

    fn tweak(
        &mut self,
        out: &mut Outbox,
        dry_run: bool,
        excluded: &[Nid],
    ) -> Result<(bool, Vec<neo_protocol::Row>), String> {
        self.change_pt_allowed()?;
        let mut drop = Vec::new();
        for e in self.nodes.of_type(NodeType::Storage) {
            let Some(nid) = e.nid else { continue };
            if excluded.contains(&nid) || e.state == NodeState::Pending {
                drop.push(nid);
            } else if e.state != NodeState::Running {
                return Err("tweak: down nodes must be listed explicitly".into());
            }
        }
        let mut members: std::collections::BTreeSet<Nid> = self.pt.members().into_iter().collect();
        members.extend(self.pt.nodes());
        let participants: Vec<(Nid, Vec<neo_protocol::Bytes>)> = members
            .into_iter()
            .map(|n| {
                (
                    n,
                    self.nodes
                        .get(n)
                        .map(|e| e.devpath.clone())
                        .unwrap_or_default(),
                )
            })
            .collect();
        if dry_run {
            let (changes, rows) = self
                .pt
                .tweak_dry_run(&participants, &drop)
                .map_err(|e| e.to_string())?;
            return Ok((!changes.is_empty(), rows));
        }
        let changes = self
            .pt
            .tweak(&participants, &drop)
            .map_err(|e| e.to_string())?;
        let changed = !changes.is_empty();
        self.broadcast_pt_changes(out, changes);
        Ok((changed, self.pt.rows()))
    }

    fn set_num_replicas(&mut self, out: &mut Outbox, replicas: u32) -> Result<String, String> {
        self.change_pt_allowed()?;
        if self.pt.set_replicas(replicas).is_some() {
            self.send_pt_notification(out, Vec::new());
        }
        Ok(String::new())
    }

    fn truncate_allowed(&self, tid: neo_protocol::Tid) -> Result<(), String> {
        if self.cluster_state != ClusterState::Running {
            return Err(format!(
                "truncate RPC can not be used in {} state",
                self.cluster_state
            ));
        }
        if self.last_tid <= tid {
            return Err("Truncating after last transaction does nothing".into());
        }
        if self.first_tid > tid {
            return Err(
                "Truncating before first transaction is probably not what you intended to do"
                    .into(),
            );
        }
        Ok(())
    }

    fn repair(&mut self, out: &mut Outbox, nids: &[Nid], dry_run: bool) -> Result<String, String> {
        let mut conns = Vec::new();
        for nid in nids {
            match self.nodes.get(*nid) {
                Some(e) if e.node_type == NodeType::Storage && e.conn.is_some() => {
                    conns.extend(e.conn)
                }
                _ => return Err(format!("invalid storage node {nid}")),
            }
        }
        for conn in conns {
            out.notify(conn, neo_protocol::NotifyRepair { dry_run });
        }
        Ok(String::new())
    }
}
