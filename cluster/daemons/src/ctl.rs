//! A blocking conversation with an admin node, as `neoctl` has it (tools.md section 2): no
//! identification, one request at a time, its answer back. `neosimple` uses it to wait for
//! RUNNING and to stop the cluster; the process tests use it to watch the partition table.

use std::net::SocketAddr;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use neo_net::{ConnectionHandle, Event, Events, Net, NetConfig};
use neo_protocol::{
    AnswerClusterState, AskClusterState, AskNodeList, AskPartitionList, ClusterState, NodeInfo,
    NodeType, Packet, Row,
};

/// A connection to an admin node.
pub struct AdminClient {
    // Dropped last: the handle and events belong to it.
    conn: ConnectionHandle,
    events: Events,
    _net: Net,
}

impl AdminClient {
    /// Connects to the admin at `addr`, waiting at most `timeout`.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> Result<AdminClient> {
        let (net, events) = Net::new(NetConfig::default()).context("starting the network")?;
        let conn = net.connect(addr);
        let deadline = Instant::now() + timeout;
        loop {
            match recv(&events, deadline)? {
                Event::Connected { .. } => break,
                Event::ConnectFailed { error, .. } => {
                    bail!("cannot connect to the admin at {addr}: {error}")
                }
                Event::Closed { reason, .. } => bail!("connection to {addr} closed: {reason}"),
                _ => {}
            }
        }
        Ok(AdminClient {
            conn,
            events,
            _net: net,
        })
    }

    /// Sends a request and returns its answer (an `Error` packet included).
    pub fn ask(&self, packet: impl Into<Packet>, timeout: Duration) -> Result<Packet> {
        let packet = packet.into();
        let name = packet.name();
        let msg_id = self
            .conn
            .ask(packet, 0)
            .with_context(|| format!("sending {name}"))?;
        let deadline = Instant::now() + timeout;
        loop {
            match recv(&self.events, deadline)
                .with_context(|| format!("waiting for the answer to {name}"))?
            {
                Event::Answer {
                    msg_id: id, packet, ..
                } if id == msg_id => return Ok(packet),
                Event::Closed { reason, .. } => bail!("connection closed: {reason}"),
                _ => {}
            }
        }
    }

    /// The cluster state the admin knows (`None` before it knows one).
    pub fn cluster_state(&self, timeout: Duration) -> Result<Option<ClusterState>> {
        match self.ask(AskClusterState {}, timeout)? {
            Packet::AnswerClusterState(AnswerClusterState { state }) => Ok(state),
            other => bail!("unexpected answer: {}", describe(&other)),
        }
    }

    /// The whole partition table: (ptid, replicas, rows).
    pub fn partition_table(&self, timeout: Duration) -> Result<(Option<u64>, u32, Vec<Row>)> {
        let ask = AskPartitionList {
            min_offset: 0,
            max_offset: 0,
            nid: None,
        };
        match self.ask(ask, timeout)? {
            Packet::AnswerPartitionList(answer) => {
                Ok((answer.ptid, answer.num_replicas, answer.row_list))
            }
            other => bail!("unexpected answer: {}", describe(&other)),
        }
    }

    /// The nodes the admin knows, of one type or all.
    pub fn nodes(&self, node_type: Option<NodeType>, timeout: Duration) -> Result<Vec<NodeInfo>> {
        match self.ask(AskNodeList { node_type }, timeout)? {
            Packet::AnswerNodeList(answer) => Ok(answer.node_list),
            other => bail!("unexpected answer: {}", describe(&other)),
        }
    }
}

/// A packet for a message: an Error's code and text, else its name.
pub fn describe(packet: &Packet) -> String {
    match packet {
        Packet::Error(error) => format!(
            "{}: {}",
            error.code,
            String::from_utf8_lossy(&error.message)
        ),
        other => other.name().to_owned(),
    }
}

/// Whether an answer is the ACK of a request answered by Error; else its message.
pub fn check_ack(packet: &Packet) -> Result<()> {
    match packet {
        Packet::Error(error) if error.code == neo_protocol::ErrorCode::Ack => Ok(()),
        other => bail!("{}", describe(other)),
    }
}

fn recv(events: &Events, deadline: Instant) -> Result<Event> {
    let left = deadline.saturating_duration_since(Instant::now());
    match events.recv_timeout(left) {
        Ok(event) => Ok(event),
        Err(RecvTimeoutError::Timeout) => bail!("timed out"),
        Err(RecvTimeoutError::Disconnected) => bail!("the network stopped"),
    }
}
