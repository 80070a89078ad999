//! RECOVERING: gather the newest partition table from the storages, wait for the ones
//! holding data (or for the operator), then build or outdate the table (cluster.md 2.4).

use std::collections::BTreeMap;

use neo_node::{ConnId, Outbox, PartitionTable, Time};
use neo_protocol::{ClusterState, Nid, NodeState, NodeType, Packet, Tid};

use crate::{Asked, Master};

/// What recovery learned from each storage.
#[derive(Debug, Default, Clone)]
pub struct Recovery {
    /// The greatest ptid reported so far.
    target_ptid: u64,
    /// Storages to ask for the table of `target_ptid`, the first one being asked; `None`
    /// once the table was loaded.
    ask_pt: Option<Vec<Nid>>,
    backup_tid: BTreeMap<Nid, Option<Tid>>,
    truncate_tid: BTreeMap<Nid, Option<Tid>>,
}

impl Master {
    pub(crate) fn enter_recovery(&mut self, now: Time, out: &mut Outbox) {
        self.pt = PartitionTable::new(self.config.partitions, self.config.replicas);
        self.recovery = Recovery {
            ask_pt: Some(Vec::new()),
            ..Recovery::default()
        };
        self.verification = None;
        self.recovery_ready_since = None;
        self.tm = crate::transactions::TransactionManager::default();
        self.pm = crate::pack::PackManager::default();
        self.starting.clear();
        self.ready.clear();
        self.updatable.clear();
        self.change_cluster_state(out, ClusterState::Recovering);
        let storages: Vec<(Nid, ConnId)> = self
            .nodes
            .of_type(NodeType::Storage)
            .filter_map(|e| Some((e.nid?, e.conn?)))
            .collect();
        for (_, conn) in storages {
            self.ask_recovery(out, conn);
        }
        self.connect_to_masters(now, out);
    }

    pub(crate) fn ask_recovery(&mut self, out: &mut Outbox, conn: ConnId) {
        self.ask(out, conn, neo_protocol::AskRecovery {}, Asked::Recovery);
    }

    pub(crate) fn recovery_answer(
        &mut self,
        now: Time,
        out: &mut Outbox,
        conn: ConnId,
        packet: Packet,
    ) {
        let Some(nid) = self.nodes.by_conn(conn).and_then(|e| e.nid) else {
            return;
        };
        if self.cluster_state != ClusterState::Recovering {
            return;
        }
        match packet {
            Packet::AnswerRecovery(answer) => {
                if let Some(ptid) = answer.ptid {
                    if ptid > 0 && self.recovery.target_ptid <= ptid {
                        let asking = self.recovery.ask_pt.as_ref().is_some_and(|l| !l.is_empty());
                        if self.recovery.target_ptid == ptid && asking {
                            if let Some(list) = self.recovery.ask_pt.as_mut() {
                                list.push(nid);
                            }
                        } else if self.recovery.target_ptid < ptid || self.recovery.ask_pt.is_some()
                        {
                            self.recovery.target_ptid = ptid;
                            self.recovery.ask_pt = Some(vec![nid]);
                            self.ask(
                                out,
                                conn,
                                neo_protocol::AskPartitionTable {},
                                Asked::PartitionTable,
                            );
                        }
                    }
                }
                self.recovery.backup_tid.insert(nid, answer.backup_tid);
                self.recovery.truncate_tid.insert(nid, answer.truncate_tid);
            }
            Packet::AnswerPartitionTable(answer) => {
                if answer.ptid != Some(self.recovery.target_ptid) {
                    return;
                }
                self.pt = PartitionTable::from_rows(
                    answer.ptid,
                    answer.num_replicas,
                    answer.row_list.clone(),
                );
                // Nodes named by the table become known (DOWN) storages.
                let mut new_nodes = Vec::new();
                for nid in self.pt.nodes() {
                    if self.nodes.get(nid).is_none() {
                        let entry = neo_node::NodeEntry::new(NodeType::Storage, Some(nid), None);
                        new_nodes.push(entry.info());
                        self.nodes.add(entry);
                    }
                }
                let timestamp = self.monotonic(now);
                for admin in self.admin_conns() {
                    if !new_nodes.is_empty() {
                        out.notify(
                            admin,
                            neo_protocol::NotifyNodeInformation {
                                timestamp,
                                node_list: new_nodes.clone(),
                            },
                        );
                    }
                    self.send_pt(out, admin);
                }
                self.recovery.ask_pt = None;
                self.backup_tid = self.recovery.backup_tid.get(&nid).copied().flatten();
                self.truncate_tid = self.recovery.truncate_tid.get(&nid).copied().flatten();
            }
            other => tracing::warn!("unexpected {} during recovery", other.name()),
        }
    }

    /// A storage lost during RECOVERING stays known, DOWN; if it was the one asked for
    /// the table, ask the next one with the same ptid.
    pub(crate) fn recovery_storage_lost(&mut self, now: Time, out: &mut Outbox, nid: Nid) {
        self.recovery.backup_tid.remove(&nid);
        self.recovery.truncate_tid.remove(&nid);
        if let Some(list) = self.recovery.ask_pt.as_mut() {
            if let Some(i) = list.iter().position(|n| *n == nid) {
                list.remove(i);
                if i == 0 {
                    if let Some(next) = list.first().copied() {
                        if let Some(conn) = self.node_conn(next) {
                            self.ask(
                                out,
                                conn,
                                neo_protocol::AskPartitionTable {},
                                Asked::PartitionTable,
                            );
                        }
                    } else {
                        tracing::warn!(
                            "waiting for {nid} to come back: no other node has version {} of the partition table",
                            self.recovery.target_ptid
                        );
                    }
                }
            }
        }
        let changed = match self.nodes.get_mut(nid) {
            Some(entry) if entry.state != NodeState::Down => {
                entry.state = NodeState::Down;
                true
            }
            _ => false,
        };
        if changed {
            self.broadcast_node(out, now, nid);
        }
    }

    /// The exit condition of RECOVERING, evaluated after every event.
    pub(crate) fn recovery_check(&mut self, now: Time, out: &mut Outbox) {
        let pending = |m: &Master, nid: Nid| m.nodes.state(nid) == NodeState::Pending;
        let candidates: Vec<Nid> = if self.pt.is_filled() && self.pt.ptid().is_some() {
            // Nodes with readable cells, if every partition has one on a pending node.
            let mut readable_nodes = std::collections::BTreeSet::new();
            let mut every_partition = true;
            for p in 0..self.pt.np() {
                let cells = self.pt.readable_cells(p);
                if !cells.iter().any(|nid| pending(self, *nid)) {
                    every_partition = false;
                }
                readable_nodes.extend(cells);
            }
            let set: Vec<Nid> = if every_partition {
                readable_nodes.into_iter().collect()
            } else {
                Vec::new()
            };
            if self.startup_allowed {
                set.into_iter().filter(|n| pending(self, *n)).collect()
            } else if !set.is_empty() {
                let required: Vec<Nid> = if self.truncate_tid.is_some() {
                    self.pt.nodes()
                } else {
                    set.clone()
                };
                if !required.iter().all(|n| pending(self, *n)) {
                    return;
                }
                set
            } else {
                return;
            }
        } else if self.pt.ptid().is_none()
            && self.recovery.target_ptid == 0
            && (self.startup_allowed || self.config.autostart.is_some())
        {
            // A new cluster only if no storage reported a table: one whose holder is away
            // must be waited for, never replaced by a fresh one.
            let storages = self.identified_storages();
            if !self.startup_allowed
                && (storages.len() as u32) < self.config.autostart.unwrap_or(u32::MAX)
            {
                return;
            }
            storages
        } else {
            return;
        };
        if candidates.is_empty() || candidates.iter().any(|n| self.has_pending_request(*n)) {
            return;
        }
        let since = *self.recovery_ready_since.get_or_insert(now);
        if !self.election_fresh(now, out, since) {
            return;
        }
        let mut candidates = candidates;
        if self.pt.ptid().is_some() {
            if let Some(truncate_tid) = self.truncate_tid {
                // Storages that did not persist the truncation are told again, then asked.
                let late: Vec<Nid> = self
                    .recovery
                    .truncate_tid
                    .iter()
                    .filter(|(_, t)| t.is_none_or(|t| truncate_tid < t))
                    .map(|(n, _)| *n)
                    .collect();
                if !late.is_empty() {
                    for nid in late {
                        if let Some(conn) = self.node_conn(nid) {
                            out.notify(conn, neo_protocol::Truncate { tid: truncate_tid });
                            self.ask_recovery(out, conn);
                        }
                    }
                    return;
                }
            }
            // Every connected storage of the table starts.
            candidates = self
                .pt
                .nodes()
                .into_iter()
                .filter(|n| self.nodes.get(*n).is_some_and(|e| e.conn.is_some()))
                .collect();
        }
        tracing::info!("startup allowed");
        let mut changed = Vec::new();
        for nid in &candidates {
            if let Some(entry) = self.nodes.get_mut(*nid) {
                entry.state = NodeState::Running;
                changed.push(entry.info());
            }
        }
        for entry in self.nodes.iter_mut() {
            if entry.node_type == NodeType::Master
                && entry.address.as_ref() != Some(&self.config.address)
                && entry.conn.is_none()
                && entry.state != NodeState::Down
            {
                entry.state = NodeState::Down;
                changed.push(entry.info());
            }
        }
        // Election connections that did not conclude are dropped: the election is over.
        let election: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.peer, crate::Peer::Election(_)))
            .map(|(id, _)| *id)
            .collect();
        for conn in election {
            self.conns.remove(&conn);
            out.close(conn);
        }
        self.broadcast_nodes(out, now, &changed);
        if self.pt.ptid().is_none() {
            tracing::info!("creating a new partition table");
            let nodes: Vec<(Nid, Vec<neo_protocol::Bytes>)> = candidates
                .iter()
                .map(|n| {
                    (
                        *n,
                        self.nodes
                            .get(*n)
                            .map(|e| e.devpath.clone())
                            .unwrap_or_default(),
                    )
                })
                .collect();
            if let Err(e) = self.pt.make(&nodes) {
                tracing::error!("cannot make the partition table: {e}");
                return;
            }
            for admin in self.admin_conns() {
                self.send_pt(out, admin);
            }
        } else {
            let nodes = &self.nodes;
            let changes = self.pt.outdate(|n| nodes.is_running(n), None);
            if !changes.is_empty() {
                let packet = neo_protocol::NotifyPartitionChanges {
                    ptid: self.pt.ptid().unwrap_or(0),
                    num_replicas: self.pt.replicas(),
                    cell_list: changes,
                };
                for admin in self.admin_conns() {
                    out.notify(admin, packet.clone());
                }
            }
        }
        self.enter_verification(now, out);
    }
}
