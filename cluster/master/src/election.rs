//! Masters among themselves: playing the primary role, the election inside RECOVERING,
//! and the secondary role that follows a primary and takes over when it dies
//! (cluster.md 2.2, 2.3).

use std::collections::BTreeMap;

use neo_node::{ConnId, NodeEntry, Outbox, Time};
use neo_protocol::{
    Address, Bytes, ClusterState, Dict, NodeState, NodeType, NotPrimaryMaster, Packet,
    RequestIdentification,
};

use crate::{new_nid, Asked, Connection, Master, Peer, Role};

/// At most one connection attempt per second to the same address (cluster.md 1.6).
const CONNECT_INTERVAL: f64 = 1.0;

impl Master {
    /// Starts (or restarts) the primary role: close everything, pick our NID, take a new
    /// election key, and enter RECOVERING.
    pub(crate) fn start_primary(&mut self, now: Time, out: &mut Outbox) {
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in conns {
            out.close(conn);
        }
        self.conns.clear();
        for entry in self.nodes.iter_mut() {
            entry.conn = None;
            if entry.node_type == NodeType::Storage {
                entry.state = NodeState::Down;
            }
        }
        // Clients and admins reconnect and identify again.
        self.nodes
            .retain(|e| matches!(e.node_type, NodeType::Master | NodeType::Storage));
        if self.nid.is_none() {
            let nid = new_nid(
                &self.nodes,
                None,
                self.config.nid,
                Some(&self.config.address),
                NodeType::Master,
            );
            self.nid = Some(nid);
        }
        let address = self.config.address.clone();
        let nid = self.nid;
        if let Some(me) = self.nodes.by_address_mut(&address) {
            me.nid = nid;
            me.state = NodeState::Running;
        }
        self.role = Role::Primary;
        self.primary_since = self.monotonic(now);
        self.startup_allowed = false;
        tracing::info!(
            "playing the primary role as {}",
            self.nid.map_or(String::new(), |n| n.to_string())
        );
        self.enter_recovery(now, out);
    }

    /// Whether every other master was tried since `since` (or is connected to us): a
    /// master leaving recovery first gives the election a fresh chance, so that a master
    /// cut off while primary and healed does not restart beside the one elected meanwhile.
    pub(crate) fn election_fresh(&mut self, now: Time, out: &mut Outbox, since: Time) -> bool {
        let me = self.config.address.clone();
        let identified: Vec<Address> = self
            .nodes
            .of_type(NodeType::Master)
            .filter(|e| e.conn.is_some())
            .filter_map(|e| e.address.clone())
            .collect();
        let stale: Vec<Address> = self
            .nodes
            .of_type(NodeType::Master)
            .filter_map(|e| e.address.clone())
            .filter(|a| *a != me && !identified.contains(a))
            .filter(|a| self.election_concluded.get(a).is_none_or(|t| *t < since))
            .collect();
        if stale.is_empty() {
            return true;
        }
        self.connect_to_masters(now, out);
        false
    }

    /// During RECOVERING, connect to every known master we are not connected to.
    pub(crate) fn connect_to_masters(&mut self, now: Time, out: &mut Outbox) {
        let me = self.config.address.clone();
        let connected: Vec<Address> = self
            .conns
            .values()
            .filter_map(|c| match &c.peer {
                Peer::Election(a) | Peer::Primary(a) => Some(a.clone()),
                Peer::Node(nid) => self.nodes.get(*nid).and_then(|e| e.address.clone()),
                Peer::Unidentified => None,
            })
            .collect();
        let targets: Vec<Address> = self
            .nodes
            .of_type(NodeType::Master)
            .filter_map(|e| e.address.clone())
            .filter(|a| *a != me && !connected.contains(a))
            .collect();
        for address in targets {
            if self.retry_after.get(&address).is_some_and(|t| *t > now) {
                continue;
            }
            self.retry_after
                .insert(address.clone(), now + CONNECT_INTERVAL);
            let conn = out.connect(address.clone());
            self.conns.insert(
                conn,
                Connection {
                    peer: Peer::Election(address),
                    asked: BTreeMap::new(),
                    established: false,
                },
            );
        }
    }

    pub(crate) fn connected(&mut self, out: &mut Outbox, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.established = true;
        let id_timestamp = match &c.peer {
            Peer::Election(_) => Some(self.primary_since),
            Peer::Primary(_) => None,
            _ => return,
        };
        let request = RequestIdentification {
            node_type: NodeType::Master,
            nid: self.nid,
            address: Some(self.config.address.clone()),
            cluster_name: Bytes::from(self.config.cluster.clone().into_bytes()),
            id_timestamp,
            extra: Dict::new(),
        };
        self.ask(out, conn, request, Asked::Identification);
    }

    /// The answer to our RequestIdentification to another master.
    pub(crate) fn identification_answered(
        &mut self,
        now: Time,
        out: &mut Outbox,
        conn: ConnId,
        packet: Packet,
    ) {
        let Some(peer) = self.peer(conn).cloned() else {
            return;
        };
        match (peer, packet) {
            (Peer::Election(address), Packet::AcceptIdentification(accept)) => {
                // The peer accepted us: it is the primary.
                tracing::info!("{address} is the primary; we become secondary");
                self.follow_primary(now, out, address.clone(), Some(conn));
                self.primary_accepted(conn, address, accept);
            }
            (Peer::Primary(address), Packet::AcceptIdentification(accept)) => {
                self.primary_accepted(conn, address, accept);
            }
            (Peer::Election(address), Packet::Error(e)) => {
                tracing::info!(
                    "master {address} refused us: {} {}",
                    e.code,
                    String::from_utf8_lossy(&e.message)
                );
                self.election_concluded.insert(address, now);
                self.conns.remove(&conn);
                out.close(conn);
            }
            (_, Packet::Error(e)) => {
                tracing::info!(
                    "master refused us: {} {}",
                    e.code,
                    String::from_utf8_lossy(&e.message)
                );
                self.conns.remove(&conn);
                out.close(conn);
                self.connection_gone_in_role(now, out);
            }
            (_, other) => {
                tracing::warn!("unexpected {} to our identification", other.name());
            }
        }
    }

    fn primary_accepted(
        &mut self,
        conn: ConnId,
        address: Address,
        accept: neo_protocol::AcceptIdentification,
    ) {
        if let Some(nid) = accept.your_nid {
            self.nid = Some(nid);
            let me = self.config.address.clone();
            if let Some(entry) = self.nodes.by_address_mut(&me) {
                entry.nid = Some(nid);
            }
        }
        if let Some(entry) = self.nodes.by_address_mut(&address) {
            entry.nid = accept.nid;
            entry.state = NodeState::Running;
            entry.conn = Some(conn);
        }
        tracing::info!("identified by the primary {address}");
    }

    /// A master that is not primary told us who it thinks is (NotPrimaryMaster), then
    /// closed: learn the masters it knows.
    pub(crate) fn not_primary_master(
        &mut self,
        now: Time,
        out: &mut Outbox,
        conn: ConnId,
        packet: NotPrimaryMaster,
    ) {
        for address in &packet.known_master_list {
            if self.nodes.by_address(address).is_none() && *address != self.config.address {
                self.nodes.add(NodeEntry::new(
                    NodeType::Master,
                    None,
                    Some(address.clone()),
                ));
            }
        }
        if let Some(Peer::Election(address)) = self.peer(conn).cloned() {
            self.election_concluded.insert(address, now);
        }
        let primary = packet
            .primary
            .and_then(|i| packet.known_master_list.get(i as usize).cloned());
        self.conns.remove(&conn);
        out.close(conn);
        match (&self.role, primary) {
            (Role::Secondary { .. }, Some(primary)) if primary != self.config.address => {
                self.follow_primary(now, out, primary, None);
            }
            _ => {
                // There may be new masters: connect to them (retry rate limited).
                if self.role == Role::Primary {
                    self.connect_to_masters(now, out);
                }
            }
        }
    }

    pub(crate) fn election_connection_lost(&mut self, now: Time, address: Address) {
        self.election_concluded.insert(address, now);
        if self.role == Role::Primary && self.cluster_state == ClusterState::Recovering {
            self.schedule_poll(now);
        }
    }

    fn connection_gone_in_role(&mut self, now: Time, out: &mut Outbox) {
        if let Role::Secondary { primary } = self.role.clone() {
            self.primary_lost(now, out, primary);
        }
    }

    /// Another master won: drop everything and follow it.
    pub(crate) fn become_secondary(&mut self, now: Time, out: &mut Outbox, primary: Address) {
        self.follow_primary(now, out, primary, None);
    }

    /// Switches to the secondary role. `reuse` is our election connection that the primary
    /// accepted: it becomes the connection to the primary.
    pub(crate) fn follow_primary(
        &mut self,
        now: Time,
        out: &mut Outbox,
        primary: Address,
        reuse: Option<ConnId>,
    ) {
        // An election connection to the new primary carries on as the primary connection.
        let reuse = reuse.or_else(|| {
            self.conns
                .iter()
                .find(|(_, c)| c.peer == Peer::Election(primary.clone()))
                .map(|(id, _)| *id)
        });
        let conns: Vec<ConnId> = self
            .conns
            .keys()
            .copied()
            .filter(|c| Some(*c) != reuse)
            .collect();
        for conn in conns {
            out.close(conn);
            self.conns.remove(&conn);
        }
        for entry in self.nodes.iter_mut() {
            entry.conn = None;
        }
        self.nodes
            .retain(|e| matches!(e.node_type, NodeType::Master | NodeType::Storage));
        if self.nodes.by_address(&primary).is_none() {
            self.nodes.add(NodeEntry::new(
                NodeType::Master,
                None,
                Some(primary.clone()),
            ));
        }
        self.verification = None;
        self.role = Role::Secondary {
            primary: primary.clone(),
        };
        self.cluster_state = ClusterState::Recovering;
        self.stopping = false;
        self.starting.clear();
        self.ready.clear();
        match reuse.and_then(|c| self.conns.get_mut(&c)) {
            Some(c) => c.peer = Peer::Primary(primary),
            None => self.connect_to_primary(now, out, primary),
        }
    }

    fn connect_to_primary(&mut self, now: Time, out: &mut Outbox, primary: Address) {
        if self.retry_after.get(&primary).is_some_and(|t| *t > now) {
            self.schedule_poll(now);
            return;
        }
        self.retry_after
            .insert(primary.clone(), now + CONNECT_INTERVAL);
        let conn = out.connect(primary.clone());
        self.conns.insert(
            conn,
            Connection {
                peer: Peer::Primary(primary),
                asked: BTreeMap::new(),
                established: false,
            },
        );
    }

    pub(crate) fn primary_connected(&self) -> bool {
        self.conns
            .values()
            .any(|c| matches!(c.peer, Peer::Primary(_)) && c.established)
    }

    pub(crate) fn secondary_poll(&mut self, now: Time, out: &mut Outbox, primary: Address) {
        let has_conn = self
            .conns
            .values()
            .any(|c| matches!(c.peer, Peer::Primary(_)));
        if !has_conn {
            self.connect_to_primary(now, out, primary);
        }
    }

    /// The connection to the primary failed. If it was believed running, retry it once;
    /// otherwise try the other masters, and play the primary role again if none is.
    pub(crate) fn primary_lost(&mut self, now: Time, out: &mut Outbox, primary: Address) {
        let was_running = self
            .nodes
            .by_address(&primary)
            .is_some_and(|e| e.state == NodeState::Running);
        if let Some(entry) = self.nodes.by_address_mut(&primary) {
            entry.state = NodeState::Down;
            entry.conn = None;
        }
        if was_running {
            // One more try: it may be a transient failure.
            self.connect_to_primary(now, out, primary);
            return;
        }
        tracing::info!("primary {primary} is gone: trying the primary role");
        self.start_primary(now, out);
    }

    /// Packets from the primary while we are secondary.
    pub(crate) fn primary_packet(&mut self, out: &mut Outbox, conn: ConnId, packet: Packet) {
        match packet {
            Packet::NotifyNodeInformation(n) => {
                let me = self.nid;
                for info in &n.node_list {
                    if info.node_type == NodeType::Master
                        && info.nid.is_some()
                        && info.nid == me
                        && info.state == NodeState::Down
                    {
                        self.exit(out, 0, "told to stop by the primary");
                        return;
                    }
                }
                let masters: Vec<_> = n
                    .node_list
                    .iter()
                    .filter(|i| i.node_type == NodeType::Master)
                    .cloned()
                    .collect();
                for info in masters {
                    let Some(address) = &info.address else {
                        continue;
                    };
                    if *address == self.config.address {
                        continue;
                    }
                    match self.nodes.by_address_mut(address) {
                        Some(entry) => {
                            entry.nid = info.nid;
                            if entry.conn.is_none() || entry.conn == Some(conn) {
                                entry.state = info.state;
                            }
                        }
                        None => {
                            let mut entry =
                                NodeEntry::new(NodeType::Master, info.nid, Some(address.clone()));
                            entry.state = info.state;
                            self.nodes.add(entry);
                        }
                    }
                }
            }
            Packet::NotifyClusterInformation(n) => {
                self.cluster_state = n.state;
                if n.state == ClusterState::Stopping {
                    self.exit(out, 0, "cluster is stopping");
                }
            }
            other => tracing::debug!("secondary ignores {} from the primary", other.name()),
        }
    }
}
