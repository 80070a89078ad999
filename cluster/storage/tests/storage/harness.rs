//! Drives storages by hand: a harness per storage (its outbox and clock), the master
//! played by the test, and a tiny router that wires storages to each other.

use std::collections::{HashMap, VecDeque};

use neo_node::{ConnId, Input, Node, Outbox, Output};
use neo_protocol::{
    AcceptIdentification, Address, Bytes, Cell, CellState, Nid, NodeInfo, NodeState, NodeType,
    NotifyNodeInformation, Packet, Row, SendPartitionTable, StartOperation,
};
use neo_storage::{Config, MemoryBackend, MemoryDisk, Storage};

pub const CLUSTER: &str = "test";
pub const MASTER_NID: Nid = Nid(-0x1000_0000 + 1);

pub fn address(port: u16) -> Address {
    Address {
        host: Bytes::from_static(b"127.0.0.1"),
        port,
    }
}

pub fn master_address() -> Address {
    address(1000)
}

pub fn config(port: u16) -> Config {
    Config {
        cluster: CLUSTER.into(),
        address: address(port),
        masters: vec![master_address()],
        nid: None,
        devpath: vec![Bytes::from_static(b"host"), Bytes::from_static(b"2049")],
        seed: 7,
        disable_drop_partitions: false,
    }
}

pub fn storage_nid(n: u32) -> Nid {
    Nid::new(NodeType::Storage, n)
}

/// One storage, its clock and its outbox (which numbers its connections and messages).
pub struct Harness {
    pub storage: Storage<MemoryBackend>,
    pub out: Outbox,
    pub now: f64,
    /// The connection the storage opened to the master, once booted.
    pub master: Option<ConnId>,
    pub port: u16,
}

impl Harness {
    pub fn new(port: u16, disk: MemoryDisk) -> Harness {
        let backend = MemoryBackend::open(disk).expect("disk free");
        Harness {
            storage: Storage::new(config(port), backend).expect("storage starts"),
            out: Outbox::new(),
            now: 1000.0,
            master: None,
            port,
        }
    }

    pub fn feed(&mut self, input: Input) -> Vec<Output> {
        self.storage.handle(self.now, input, &mut self.out);
        self.out.drain().collect()
    }

    pub fn packet(&mut self, conn: ConnId, msg_id: u32, packet: impl Into<Packet>) -> Vec<Output> {
        let packet = packet.into();
        let input = Input::received(conn, msg_id, packet);
        let mut outputs = self.feed(input);
        // Nothing else is pending in a hand-driven test: background work runs now.
        while self.storage.wants_idle() {
            outputs.extend(self.feed(Input::Idle));
        }
        // Answers held for a group commit that waits for other transactions are sent when
        // its short wait is over, as a driver's timer does.
        if !self.storage.held_answers().is_empty() {
            if let Some(deadline) = self.storage.deadline() {
                self.now = self.now.max(deadline);
                outputs.extend(self.feed(Input::Timer));
            }
        }
        outputs
    }

    /// A packet from the master (the test numbers its own messages from 100).
    pub fn master_sends(&mut self, packet: impl Into<Packet>) -> Vec<Output> {
        let conn = self.master.expect("booted");
        self.packet(conn, 100, packet)
    }

    /// Start, connect, identify as `nid`: returns the RequestIdentification outputs seen.
    pub fn identify(&mut self, nid: Nid) -> Vec<Output> {
        let outputs = self.feed(Input::Start);
        let conn = match outputs.as_slice() {
            [Output::Connect { conn, addr }] if *addr == master_address() => *conn,
            other => panic!("expected a connection to the master, got {other:?}"),
        };
        let sent = self.feed(Input::Connected { conn });
        let msg_id = match sent.as_slice() {
            [Output::Send {
                msg_id,
                packet: Packet::RequestIdentification(_),
                ..
            }] => *msg_id,
            other => panic!("expected RequestIdentification, got {other:?}"),
        };
        self.master = Some(conn);
        let accepted = self.packet(
            conn,
            msg_id,
            AcceptIdentification {
                node_type: NodeType::Master,
                nid: Some(MASTER_NID),
                your_nid: Some(nid),
            },
        );
        assert!(accepted.is_empty(), "{accepted:?}");
        sent
    }

    /// Identification, node list, partition table, StartOperation; returns what the
    /// storage sent after StartOperation.
    pub fn boot(
        &mut self,
        nid: Nid,
        nodes: &[NodeInfo],
        timestamp: f64,
        rows: &[Row],
        ptid: u64,
    ) -> Vec<Output> {
        self.identify(nid);
        let list = self.master_sends(NotifyNodeInformation {
            timestamp,
            node_list: nodes.to_vec(),
        });
        assert!(list.is_empty(), "{list:?}");
        let pt = self.master_sends(SendPartitionTable {
            ptid: Some(ptid),
            num_replicas: 0,
            row_list: rows.to_vec(),
        });
        assert!(pt.is_empty(), "{pt:?}");
        self.master_sends(StartOperation { backup: false })
    }
}

pub fn node(nid: Nid, port: u16, state: NodeState, id_timestamp: f64) -> NodeInfo {
    NodeInfo {
        node_type: if nid.0 > 0 {
            NodeType::Storage
        } else {
            NodeType::Master
        },
        address: Some(address(port)),
        nid: Some(nid),
        state,
        id_timestamp: Some(id_timestamp),
    }
}

pub fn row(cells: &[(Nid, CellState)]) -> Row {
    cells
        .iter()
        .map(|(nid, state)| Cell {
            nid: *nid,
            state: *state,
        })
        .collect()
}

/// The packets sent on a connection.
pub fn sent_on(outputs: &[Output], conn: ConnId) -> Vec<(u32, Packet)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Send {
                conn: c,
                msg_id,
                packet,
            } if *c == conn => Some((*msg_id, packet.clone())),
            _ => None,
        })
        .collect()
}

/// Storages wired to each other; what they send to the master is collected.
pub struct Router {
    pub nodes: Vec<Option<Harness>>,
    pipes: HashMap<(usize, ConnId), (usize, ConnId)>,
    queue: VecDeque<(usize, Input)>,
    pub to_master: Vec<(usize, u32, Packet)>,
    pub closed: Vec<(usize, ConnId)>,
    next_accepted: ConnId,
    /// Every packet delivered between storages, in order (sender index, packet).
    pub log: Vec<(usize, Packet)>,
}

impl Router {
    pub fn new(nodes: Vec<Harness>) -> Router {
        Router {
            nodes: nodes.into_iter().map(Some).collect(),
            pipes: HashMap::new(),
            queue: VecDeque::new(),
            to_master: Vec::new(),
            closed: Vec::new(),
            next_accepted: 1,
            log: Vec::new(),
        }
    }

    pub fn node(&mut self, i: usize) -> &mut Harness {
        self.nodes[i].as_mut().expect("node alive")
    }

    /// Routes the outputs of node `from`.
    pub fn route(&mut self, from: usize, outputs: Vec<Output>) {
        let master = self.nodes[from].as_ref().and_then(|h| h.master);
        for output in outputs {
            match output {
                Output::Send {
                    conn,
                    msg_id,
                    packet,
                } => {
                    if Some(conn) == master {
                        self.to_master.push((from, msg_id, packet));
                    } else if let Some(&(to, peer_conn)) = self.pipes.get(&(from, conn)) {
                        self.log.push((from, packet.clone()));
                        let input = Input::received(peer_conn, msg_id, packet);
                        self.queue.push_back((to, input));
                    }
                }
                Output::Connect { conn, addr } => {
                    let target = self
                        .nodes
                        .iter()
                        .position(|h| h.as_ref().is_some_and(|h| address(h.port) == addr));
                    match target {
                        Some(to) => {
                            let accepted = self.next_accepted;
                            self.next_accepted += 1;
                            self.pipes.insert((from, conn), (to, accepted));
                            self.pipes.insert((to, accepted), (from, conn));
                            let peer = format!("127.0.0.1:{}", 40000 + accepted).parse().unwrap();
                            self.queue.push_back((
                                to,
                                Input::Accepted {
                                    conn: accepted,
                                    peer,
                                },
                            ));
                            self.queue.push_back((from, Input::Connected { conn }));
                        }
                        None => self.queue.push_back((from, Input::ConnectFailed { conn })),
                    }
                }
                Output::Close { conn } => {
                    self.closed.push((from, conn));
                    if let Some((to, peer_conn)) = self.pipes.remove(&(from, conn)) {
                        self.pipes.remove(&(to, peer_conn));
                        self.queue
                            .push_back((to, Input::Closed { conn: peer_conn }));
                    }
                }
                Output::Exit { code, reason } => panic!("node {from} exited {code}: {reason}"),
            }
        }
    }

    /// Delivers queued inputs, at most `budget`; returns how many were delivered.
    pub fn run(&mut self, budget: usize) -> usize {
        let mut delivered = 0;
        while delivered < budget {
            // As a driver does: background work (Input::Idle) only when nothing is queued.
            let next = self.queue.pop_front().or_else(|| {
                self.nodes
                    .iter()
                    .position(|n| n.as_ref().is_some_and(|h| h.storage.wants_idle()))
                    .map(|i| (i, Input::Idle))
            });
            let Some((to, input)) = next else {
                break;
            };
            delivered += 1;
            let Some(harness) = self.nodes[to].as_mut() else {
                continue;
            };
            let outputs = harness.feed(input);
            self.route(to, outputs);
        }
        delivered
    }

    /// Kills node `i` (its uncommitted writes are lost with its backend); its peers see
    /// their connections closed.
    pub fn kill(&mut self, i: usize) -> Harness {
        let harness = self.nodes[i].take().expect("alive");
        self.queue.retain(|(to, _)| *to != i);
        let dead: Vec<_> = self
            .pipes
            .keys()
            .filter(|(n, _)| *n == i)
            .copied()
            .collect();
        for key in dead {
            if let Some((to, peer_conn)) = self.pipes.remove(&key) {
                self.pipes.remove(&(to, peer_conn));
                self.queue
                    .push_back((to, Input::Closed { conn: peer_conn }));
            }
        }
        harness
    }

    /// Takes what was sent to the master so far.
    pub fn take_master(&mut self) -> Vec<(usize, u32, Packet)> {
        std::mem::take(&mut self.to_master)
    }
}
