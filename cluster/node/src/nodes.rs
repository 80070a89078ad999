//! The node table every node keeps: who is in the cluster, where it listens, its state as
//! the primary master announced it, and which connection (if any) is identified as it.

use neo_protocol::{Address, Bytes, Nid, NodeInfo, NodeState, NodeType};

use crate::io::ConnId;

#[derive(Debug, Clone, PartialEq)]
pub struct NodeEntry {
    pub node_type: NodeType,
    pub nid: Option<Nid>,
    pub address: Option<Address>,
    pub state: NodeState,
    /// When the primary master identified it (float seconds); see cluster.md 1.4.
    pub id_timestamp: Option<f64>,
    /// The connection identified as this node, on this side.
    pub conn: Option<ConnId>,
    /// Topology path of a storage (`devpath` in RequestIdentification), used by tweak.
    pub devpath: Vec<Bytes>,
}

impl NodeEntry {
    pub fn new(node_type: NodeType, nid: Option<Nid>, address: Option<Address>) -> NodeEntry {
        NodeEntry {
            node_type,
            nid,
            address,
            state: NodeState::Down,
            id_timestamp: None,
            conn: None,
            devpath: Vec::new(),
        }
    }

    pub fn info(&self) -> NodeInfo {
        NodeInfo {
            node_type: self.node_type,
            address: self.address.clone(),
            nid: self.nid,
            state: self.state,
            id_timestamp: self.id_timestamp,
        }
    }

    pub fn is_running(&self) -> bool {
        self.state == NodeState::Running
    }

    pub fn is_identified(&self) -> bool {
        self.conn.is_some()
    }
}

/// A small list (clusters have tens of nodes), kept in insertion order so that iteration
/// is deterministic.
#[derive(Debug, Clone, Default)]
pub struct NodeTable {
    entries: Vec<NodeEntry>,
}

impl NodeTable {
    pub fn new() -> NodeTable {
        NodeTable::default()
    }

    pub fn iter(&self) -> impl Iterator<Item = &NodeEntry> {
        self.entries.iter()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut NodeEntry> {
        self.entries.iter_mut()
    }

    pub fn of_type(&self, node_type: NodeType) -> impl Iterator<Item = &NodeEntry> {
        self.entries
            .iter()
            .filter(move |e| e.node_type == node_type)
    }

    pub fn get(&self, nid: Nid) -> Option<&NodeEntry> {
        self.entries.iter().find(|e| e.nid == Some(nid))
    }

    pub fn get_mut(&mut self, nid: Nid) -> Option<&mut NodeEntry> {
        self.entries.iter_mut().find(|e| e.nid == Some(nid))
    }

    pub fn by_address(&self, address: &Address) -> Option<&NodeEntry> {
        self.entries
            .iter()
            .find(|e| e.address.as_ref() == Some(address))
    }

    pub fn by_address_mut(&mut self, address: &Address) -> Option<&mut NodeEntry> {
        self.entries
            .iter_mut()
            .find(|e| e.address.as_ref() == Some(address))
    }

    pub fn by_conn(&self, conn: ConnId) -> Option<&NodeEntry> {
        self.entries.iter().find(|e| e.conn == Some(conn))
    }

    pub fn by_conn_mut(&mut self, conn: ConnId) -> Option<&mut NodeEntry> {
        self.entries.iter_mut().find(|e| e.conn == Some(conn))
    }

    pub fn add(&mut self, entry: NodeEntry) -> &mut NodeEntry {
        self.entries.push(entry);
        self.entries.last_mut().expect("just pushed")
    }

    /// Removes the node with this id; returns it.
    pub fn remove(&mut self, nid: Nid) -> Option<NodeEntry> {
        let index = self.entries.iter().position(|e| e.nid == Some(nid))?;
        Some(self.entries.remove(index))
    }

    pub fn retain(&mut self, keep: impl FnMut(&NodeEntry) -> bool) {
        self.entries.retain(keep);
    }

    /// The state of a node, `Unknown` if absent.
    pub fn state(&self, nid: Nid) -> NodeState {
        self.get(nid).map_or(NodeState::Unknown, |e| e.state)
    }

    pub fn is_running(&self, nid: Nid) -> bool {
        self.state(nid) == NodeState::Running
    }

    /// Applies a NotifyNodeInformation list as a non-master node does: unknown nodes are
    /// added, UNKNOWN removes, others are updated. With `full`, nodes absent from the list
    /// are dropped (the first notification after identification lists everything).
    /// Returns the entries that were removed or changed state (before the change), so that
    /// the caller can close connections.
    pub fn apply_notification(&mut self, list: &[NodeInfo], full: bool) -> Vec<NodeEntry> {
        let mut touched = Vec::new();
        if full {
            let (keep, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut self.entries)
                .into_iter()
                .partition(|e| {
                    list.iter().any(|info| {
                        (info.nid.is_some() && info.nid == e.nid)
                            || (info.nid.is_none()
                                && info.address.is_some()
                                && info.address == e.address)
                    })
                });
            self.entries = keep;
            touched.extend(gone);
        }
        for info in list {
            let index = match info.nid {
                Some(nid) => self.entries.iter().position(|e| e.nid == Some(nid)),
                None => self.entries.iter().position(|e| {
                    e.node_type == info.node_type
                        && info.address.is_some()
                        && e.address == info.address
                }),
            };
            if info.state == NodeState::Unknown {
                if let Some(index) = index {
                    touched.push(self.entries.remove(index));
                }
                continue;
            }
            match index {
                Some(index) => {
                    let entry = &mut self.entries[index];
                    if entry.state != info.state {
                        touched.push(entry.clone());
                    }
                    entry.node_type = info.node_type;
                    entry.address = info.address.clone();
                    entry.state = info.state;
                    entry.id_timestamp = info.id_timestamp;
                }
                None => {
                    let mut entry = NodeEntry::new(info.node_type, info.nid, info.address.clone());
                    entry.state = info.state;
                    entry.id_timestamp = info.id_timestamp;
                    self.entries.push(entry);
                }
            }
        }
        touched
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(nid: i32, state: NodeState) -> NodeInfo {
        NodeInfo {
            node_type: NodeType::Storage,
            address: Some(Address {
                host: Bytes::from_static(b"127.0.0.1"),
                port: 1000 + nid as u16,
            }),
            nid: Some(Nid(nid)),
            state,
            id_timestamp: Some(nid as f64),
        }
    }

    #[test]
    fn notifications_add_update_and_remove() {
        let mut table = NodeTable::new();
        table.apply_notification(
            &[info(1, NodeState::Running), info(2, NodeState::Pending)],
            true,
        );
        assert_eq!(table.iter().count(), 2);
        let touched = table.apply_notification(&[info(2, NodeState::Running)], false);
        assert_eq!(touched.len(), 1);
        assert!(table.is_running(Nid(2)));
        table.apply_notification(&[info(1, NodeState::Unknown)], false);
        assert_eq!(table.state(Nid(1)), NodeState::Unknown);
        let touched = table.apply_notification(&[info(3, NodeState::Down)], true);
        assert_eq!(
            touched.len(),
            1,
            "node 2 absent from a full list is dropped"
        );
        assert_eq!(table.iter().count(), 1);
    }
}
