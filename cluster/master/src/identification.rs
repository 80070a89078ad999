//! Who may join, under which NID and state, and what a newly identified node is told
//! (cluster.md 1.2-1.4; NEO/py's master identification handler).

use neo_node::{ConnId, NodeEntry, Outbox, Time};
use neo_protocol::{
    AcceptIdentification, Address, Bytes, ClusterState, ErrorCode, NodeState, NodeType,
    RequestIdentification, Value,
};

use crate::{new_nid, visible_to, Master, Peer, Role};

impl Master {
    pub(crate) fn request_identification(
        &mut self,
        now: Time,
        out: &mut Outbox,
        conn: ConnId,
        msg_id: u32,
        request: RequestIdentification,
    ) {
        if request.cluster_name.as_ref() != self.config.cluster.as_bytes() {
            self.protocol_error(out, conn, msg_id, "invalid cluster name");
            return;
        }
        if request.address.as_ref() == Some(&self.config.address) {
            self.protocol_error(out, conn, msg_id, "address conflict");
            return;
        }
        if let Role::Secondary { primary } = self.role.clone() {
            self.secondary_identification(now, out, conn, request, primary);
            return;
        }
        let node_type = request.node_type;
        // Match the peer with a known node, by NID and by address.
        let by_nid = request.nid.and_then(|n| self.nodes.get(n)).cloned();
        let by_address = request
            .address
            .as_ref()
            .and_then(|a| self.nodes.by_address(a))
            .cloned();
        let mut proposed = request.nid;
        let mut known: Option<NodeEntry> = None;
        match (&by_address, &by_nid) {
            (Some(a), n) if !a.is_identified() => {
                if n.as_ref().is_some_and(|n| n.nid == a.nid)
                    || n.is_none()
                    || request.nid.is_some_and(|n| n.0 < 0)
                {
                    known = Some(a.clone());
                } else {
                    self.protocol_error(out, conn, msg_id, "already connected");
                    return;
                }
            }
            (Some(_), _) => {
                self.protocol_error(out, conn, msg_id, "already connected");
                return;
            }
            (None, Some(n)) => {
                if n.is_identified() {
                    if request.nid.is_some_and(|n| n.0 < 0) {
                        proposed = None; // a temporary id in use: give another one
                    } else {
                        self.protocol_error(out, conn, msg_id, "already connected");
                        return;
                    }
                } else if n.nid != self.nid {
                    known = Some(n.clone());
                }
            }
            (None, None) => {}
        }

        let new_nid_partitions = extra_list(&request.extra, "new_nid");
        let mut state = NodeState::Running;
        let mut read_only = false;
        match node_type {
            NodeType::Client => {
                if self.cluster_state != ClusterState::Running || self.stopping {
                    self.not_ready(out, conn, msg_id, "cluster not running");
                    return;
                }
                // read_only defaults to true for a backup master connecting as a client.
                read_only = match extra_value(&request.extra, "read_only") {
                    Some(Value::Bool(b)) => *b,
                    Some(Value::Int(i)) => *i != 0,
                    Some(_) => true,
                    None => extra_value(&request.extra, "backup").is_some(),
                };
            }
            NodeType::Storage => {
                if self.stopping {
                    self.not_ready(out, conn, msg_id, "cluster is stopping");
                    return;
                }
                state =
                    self.storage_state_on_identification(request.nid.is_some() && known.is_some());
                if request.address.is_none() {
                    if self.cluster_state == ClusterState::Recovering {
                        self.not_ready(out, conn, msg_id, "recovering");
                        return;
                    }
                    if request.nid.is_some() || new_nid_partitions.is_none() {
                        self.protocol_error(out, conn, msg_id, "storage without address");
                        return;
                    }
                    state = NodeState::Down;
                }
            }
            NodeType::Master => {
                if self.cluster_state == ClusterState::Recovering {
                    // Election: a candidate with an older key wins.
                    if let (Some(ts), Some(address)) = (request.id_timestamp, &request.address) {
                        if (ts, address_key(address))
                            < (self.primary_since, address_key(&self.config.address))
                        {
                            tracing::info!("{address} was elected before us: we step down");
                            self.become_secondary(now, out, address.clone());
                            return;
                        }
                    }
                }
            }
            NodeType::Admin => {}
        }

        // A known node that comes back from another address (storages listen on a new
        // port after a restart) keeps its NID: record the address first.
        if let Some(k) = known.as_mut() {
            if let Some(old) = k.nid {
                if let Some(entry) = self.nodes.get_mut(old) {
                    entry.address = request.address.clone();
                }
            }
            k.address = request.address.clone();
        }
        let nid = new_nid(
            &self.nodes,
            self.nid,
            proposed,
            request.address.as_ref(),
            node_type,
        );
        let id_timestamp = self.monotonic(now);
        let devpath = match extra_value(&request.extra, "devpath") {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| match v {
                    Value::Bin(b) => Some(b.clone()),
                    Value::Str(s) => Some(Bytes::from(s.clone().into_bytes())),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        // Update or create the node entry.
        match &known {
            Some(k) => {
                let entry = match k.nid {
                    Some(old) => self.nodes.get_mut(old),
                    None => k
                        .address
                        .as_ref()
                        .and_then(|a| self.nodes.by_address_mut(a)),
                };
                if let Some(entry) = entry {
                    entry.nid = Some(nid);
                    entry.node_type = node_type;
                    entry.address = request.address.clone();
                }
            }
            None => {
                self.nodes.add(NodeEntry::new(
                    node_type,
                    Some(nid),
                    request.address.clone(),
                ));
            }
        }
        if let Some(entry) = self.nodes.get_mut(nid) {
            entry.id_timestamp = Some(id_timestamp);
            entry.state = state;
            entry.devpath = devpath;
        }
        tracing::info!(
            "accept a {} {nid} ({state})",
            node_type.py_name().to_lowercase()
        );
        // The others hear of it first; it is not identified yet, so it learns its own
        // entry from the full list sent after AcceptIdentification.
        self.broadcast_node(out, now, nid);
        if let Some(entry) = self.nodes.get_mut(nid) {
            entry.conn = Some(conn);
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.peer = Peer::Node(nid);
        }
        if read_only {
            self.read_only_clients.insert(nid);
        } else {
            self.read_only_clients.remove(&nid);
        }
        if let Some(partitions) = new_nid_partitions {
            // Cloning (cluster.md 3.12): the new node gets OUT_OF_DATE cells.
            let changes: Vec<neo_protocol::CellChange> = partitions
                .into_iter()
                .filter(|p| *p < self.pt.np())
                .map(|partition| neo_protocol::CellChange {
                    partition,
                    nid,
                    state: neo_protocol::CellState::OutOfDate,
                })
                .collect();
            let next = self.pt.ptid().map_or(1, |p| p + 1);
            let replicas = self.pt.replicas();
            if !changes.is_empty() && self.pt.apply_changes(next, replicas, &changes).is_ok() {
                self.broadcast_pt_changes(out, changes);
            }
        }
        out.answer(
            conn,
            msg_id,
            AcceptIdentification {
                node_type: NodeType::Master,
                nid: self.nid,
                your_nid: Some(nid),
            },
        );
        self.notify_node_information(now, out, conn, nid);
        self.handler_switched(now, out, conn, nid);
    }

    /// The state a storage gets when it identifies (cluster.md 1.3, 2.10).
    fn storage_state_on_identification(&self, known: bool) -> NodeState {
        match self.cluster_state {
            ClusterState::Recovering => NodeState::Pending,
            _ if known => NodeState::Running,
            _ => NodeState::Pending,
        }
    }

    /// The first NotifyNodeInformation after identification: the peer itself first (so it
    /// learns its id_timestamp), then every node it may see.
    fn notify_node_information(
        &mut self,
        now: Time,
        out: &mut Outbox,
        conn: ConnId,
        nid: neo_protocol::Nid,
    ) {
        let Some(me) = self.nodes.get(nid).cloned() else {
            return;
        };
        let mut list = vec![me.info()];
        list.extend(
            self.nodes
                .iter()
                .filter(|e| e.nid != Some(nid))
                .filter(|e| visible_to(me.node_type, e.node_type))
                .map(NodeEntry::info),
        );
        let timestamp = self.monotonic(now);
        out.notify(
            conn,
            neo_protocol::NotifyNodeInformation {
                timestamp,
                node_list: list,
            },
        );
    }

    /// What a node is sent right after identification, by type and cluster state.
    fn handler_switched(
        &mut self,
        now: Time,
        out: &mut Outbox,
        conn: ConnId,
        nid: neo_protocol::Nid,
    ) {
        let Some(entry) = self.nodes.get(nid).cloned() else {
            return;
        };
        match entry.node_type {
            NodeType::Master => {}
            NodeType::Admin | NodeType::Client => self.send_pt(out, conn),
            NodeType::Storage => match self.cluster_state {
                ClusterState::Recovering => self.ask_recovery(out, conn),
                _ => {
                    self.send_pt(out, conn);
                    if entry.state == NodeState::Running
                        && self.cluster_state == ClusterState::Running
                    {
                        self.start_storage(now, out, nid);
                    }
                }
            },
        }
    }

    fn not_ready(&mut self, out: &mut Outbox, conn: ConnId, msg_id: u32, reason: &str) {
        out.error(conn, msg_id, ErrorCode::NotReady, reason);
        self.conns.remove(&conn);
        out.close(conn);
    }

    /// A secondary master answers every identification with NotPrimaryMaster and closes.
    fn secondary_identification(
        &mut self,
        now: Time,
        out: &mut Outbox,
        conn: ConnId,
        request: RequestIdentification,
        primary: Address,
    ) {
        let masters: Vec<Address> = self
            .nodes
            .of_type(NodeType::Master)
            .filter_map(|e| e.address.clone())
            .collect();
        let primary_connected = self.primary_connected();
        let mut index = masters.iter().position(|a| *a == primary).map(|i| i as u32);
        if request.address.as_ref() == Some(&primary) {
            index = None;
        } else if !primary_connected {
            if request.node_type == NodeType::Master {
                if let Some(address) = &request.address {
                    if self.nodes.by_address(address).is_none() {
                        self.nodes.add(NodeEntry::new(
                            NodeType::Master,
                            None,
                            Some(address.clone()),
                        ));
                    }
                    if request.id_timestamp.is_some() {
                        self.conns.remove(&conn);
                        out.close(conn);
                        self.follow_primary(now, out, address.clone(), None);
                        return;
                    }
                }
            }
            index = None;
        }
        out.notify(
            conn,
            neo_protocol::NotPrimaryMaster {
                primary: index,
                known_master_list: masters,
            },
        );
        self.conns.remove(&conn);
        out.close(conn);
    }
}

/// Addresses compare as (host bytes, port) in the election key.
fn address_key(address: &Address) -> (Vec<u8>, u16) {
    (address.host.to_vec(), address.port)
}

/// A value of RequestIdentification's extra dict (keys are bytes on the wire).
fn extra_value<'a>(extra: &'a neo_protocol::Dict<Bytes, Value>, key: &str) -> Option<&'a Value> {
    extra
        .0
        .iter()
        .find(|(k, _)| k.as_ref() == key.as_bytes())
        .map(|(_, v)| v)
}

/// A list of partition numbers in RequestIdentification's extra dict.
fn extra_list(extra: &neo_protocol::Dict<Bytes, Value>, key: &str) -> Option<Vec<u32>> {
    match extra_value(extra, key)? {
        Value::Array(items) => Some(
            items
                .iter()
                .filter_map(|v| match v {
                    Value::Int(i) => u32::try_from(*i).ok(),
                    _ => None,
                })
                .collect(),
        ),
        _ => None,
    }
}
