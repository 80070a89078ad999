//! Drives an [`Admin`] one input at a time with a virtual clock and finds what it sent.

use neo_admin::{Admin, Config};
use neo_node::{ConnId, Input, Node, Outbox, Output};
use neo_protocol::*;

pub struct Harness {
    pub admin: Admin,
    pub out: Outbox,
    pub now: f64,
    next_accepted: ConnId,
    next_msg_id: u32,
    /// AskLastTransaction requests sent and not answered yet: (conn, msg_id).
    pub last_tid_asks: Vec<(ConnId, u32)>,
}

impl Harness {
    pub fn new(config: Config) -> Harness {
        Harness {
            admin: Admin::new(config),
            out: Outbox::new(),
            now: 1000.0,
            next_accepted: 1,
            next_msg_id: 100,
            last_tid_asks: Vec::new(),
        }
    }

    /// Feeds one input; returns what the admin asked for.
    pub fn step(&mut self, input: Input) -> Vec<Output> {
        if let Input::Answer { conn, msg_id, .. } = &input {
            self.last_tid_asks.retain(|ask| *ask != (*conn, *msg_id));
        }
        self.admin.handle(self.now, input, &mut self.out);
        let outputs: Vec<Output> = self.out.drain().collect();
        for output in &outputs {
            if let Output::Send {
                conn,
                msg_id,
                packet: Packet::AskLastTransaction(_),
            } = output
            {
                self.last_tid_asks.push((*conn, *msg_id));
            }
        }
        outputs
    }

    /// A neoctl (or another admin) connects to us.
    pub fn accept(&mut self) -> ConnId {
        let conn = self.next_accepted;
        self.next_accepted += 1;
        let out = self.step(Input::Accepted {
            conn,
            peer: "127.0.0.1:40000".parse().unwrap(),
        });
        assert!(out.is_empty(), "{out:?}");
        conn
    }

    /// Sends a request from `conn` and returns the single answer it gets at once.
    pub fn ask(&mut self, conn: ConnId, packet: impl Into<Packet>) -> Packet {
        let msg_id = self.next_msg_id;
        self.next_msg_id += 1;
        let out = self.step(Input::Packet {
            conn,
            msg_id,
            packet: packet.into(),
        });
        match &out[..] {
            [Output::Send {
                conn: to,
                msg_id: answered,
                packet,
            }] if *to == conn && *answered == msg_id => packet.clone(),
            other => panic!("expected one answer, got {other:?}"),
        }
    }

    /// `print summary`: asks from a new connection, answers every pending last-TID
    /// request of the master with `ltid`, returns (warning, problem, text).
    pub fn summary(
        &mut self,
        master: ConnId,
        ltid: Tid,
    ) -> (Vec<Option<Bytes>>, Vec<Option<Bytes>>, String) {
        let ctl = self.accept();
        let mut outputs = self.step(Input::Packet {
            conn: ctl,
            msg_id: 0,
            packet: Packet::AskMonitorInformation(AskMonitorInformation {}),
        });
        while let Some(&(conn, msg_id)) = self.last_tid_asks.iter().find(|a| a.0 == master) {
            outputs.extend(self.step(Input::Answer {
                conn,
                msg_id,
                packet: Packet::AnswerLastTransaction(AnswerLastTransaction { tid: ltid }),
            }));
        }
        match expect_send(&outputs, ctl) {
            (0, Packet::AnswerMonitorInformation(p)) => (
                p.warning,
                p.problem,
                String::from_utf8(p.summary.to_vec()).unwrap(),
            ),
            other => panic!("not a summary: {other:?}"),
        }
    }
}

pub fn addr(port: u16) -> Address {
    Address {
        host: Bytes::from_static(b"127.0.0.1"),
        port,
    }
}

pub fn admin_nid(n: u32) -> Nid {
    Nid::new(NodeType::Admin, n)
}

pub fn master_nid(n: u32) -> Nid {
    Nid::new(NodeType::Master, n)
}

pub fn storage_nid(n: u32) -> Nid {
    Nid::new(NodeType::Storage, n)
}

pub fn storage(n: u32, state: NodeState) -> NodeInfo {
    NodeInfo {
        node_type: NodeType::Storage,
        address: Some(addr(20000 + n as u16)),
        nid: Some(storage_nid(n)),
        state,
        id_timestamp: Some(2.0),
    }
}

pub fn cell(n: u32, state: CellState) -> Cell {
    Cell {
        nid: storage_nid(n),
        state,
    }
}

/// The primary master M1 accepts us as `nid`.
pub fn accept(nid: Nid) -> Packet {
    Packet::AcceptIdentification(AcceptIdentification {
        node_type: NodeType::Master,
        nid: Some(master_nid(1)),
        your_nid: Some(nid),
    })
}

/// A notification from `conn`.
pub fn notify(conn: ConnId, packet: impl Into<Packet>) -> Input {
    Input::Packet {
        conn,
        msg_id: 0,
        packet: packet.into(),
    }
}

/// The connection opened to `address` (exactly one).
pub fn expect_connect(outputs: &[Output], address: &Address) -> ConnId {
    let found: Vec<ConnId> = outputs
        .iter()
        .filter_map(|o| match o {
            Output::Connect { conn, addr } if addr == address => Some(*conn),
            _ => None,
        })
        .collect();
    match found[..] {
        [conn] => conn,
        _ => panic!("expected one connection to {address:?} in {outputs:?}"),
    }
}

/// Every packet sent on `conn`, in order.
pub fn sends(outputs: &[Output], conn: ConnId) -> Vec<(u32, Packet)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Send {
                conn: to,
                msg_id,
                packet,
            } if *to == conn => Some((*msg_id, packet.clone())),
            _ => None,
        })
        .collect()
}

/// The first packet sent on `conn`.
pub fn expect_send(outputs: &[Output], conn: ConnId) -> (u32, Packet) {
    sends(outputs, conn)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("nothing sent on {conn} in {outputs:?}"))
}
