//! Inputs and outputs of a node, and the [`Outbox`] that allocates connection and message
//! ids so that the driver (tokio or simulator) only moves bytes.

use std::collections::HashMap;
use std::net::SocketAddr;

use neo_protocol::{Address, Packet, PacketKind};

/// Wall-clock time in seconds since the Unix epoch, as a float (NEO/py's `time()`); the
/// simulator passes virtual time.
pub type Time = f64;

/// A connection, as named by the node. Ids with the top bit set are outgoing connections
/// the node asked for ([`Outbox::connect`]); the others are given by the driver to
/// accepted connections.
pub type ConnId = u64;

/// The top bit marks connections the node opened.
pub const OUTGOING: ConnId = 1 << 63;

/// What happens to a node.
#[derive(Debug, Clone)]
pub enum Input {
    /// The node starts (its listening address, if any, is already bound).
    Start,
    /// A peer connected to our listening address.
    Accepted { conn: ConnId, peer: SocketAddr },
    /// An outgoing connection is established.
    Connected { conn: ConnId },
    /// An outgoing connection could not be established (it is closed).
    ConnectFailed { conn: ConnId },
    /// A request or notification from the peer.
    Packet {
        conn: ConnId,
        msg_id: u32,
        packet: Packet,
    },
    /// An answer (or Error) to a request we sent with `msg_id`.
    Answer {
        conn: ConnId,
        msg_id: u32,
        packet: Packet,
    },
    /// The connection is closed (by the peer, an error, or after our own Close).
    Closed { conn: ConnId },
    /// The deadline returned by [`Node::deadline`] has passed.
    Timer,
    /// The driver has nothing else pending for the node, which said it has background
    /// work ([`Node::wants_idle`]): do one step of it. This is how work such as serving
    /// replication runs at a lower priority than requests.
    Idle,
    /// The operator asked the process to stop (SIGINT/SIGTERM).
    Shutdown,
}

impl Input {
    /// A packet read from connection `conn`: an answer to one of our requests (Error
    /// included), or a request or notification of the peer.
    pub fn received(conn: ConnId, msg_id: u32, packet: Packet) -> Input {
        if packet.kind() == PacketKind::Answer {
            Input::Answer {
                conn,
                msg_id,
                packet,
            }
        } else {
            Input::Packet {
                conn,
                msg_id,
                packet,
            }
        }
    }
}

/// What a node asks its driver to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Open a connection to `addr`; the node already calls it `conn`.
    Connect { conn: ConnId, addr: Address },
    /// Send a packet with this msg_id: a request (its answer comes back as
    /// [`Input::Answer`]), a notification, or an answer, as `packet.kind()` says.
    Send {
        conn: ConnId,
        msg_id: u32,
        packet: Packet,
    },
    /// Close the connection once what was sent before is flushed. No [`Input::Closed`]
    /// follows for a connection the node closed itself.
    Close { conn: ConnId },
    /// Stop the node: the process exits with `code` (0 for a requested shutdown).
    Exit { code: i32, reason: String },
}

/// A node's logic: one input at a time, outputs pushed to the outbox.
pub trait Node {
    fn handle(&mut self, now: Time, input: Input, out: &mut Outbox);

    /// When the node wants an [`Input::Timer`] (absolute time), if ever.
    fn deadline(&self) -> Option<Time>;

    /// Whether the node has background work for [`Input::Idle`].
    fn wants_idle(&self) -> bool {
        false
    }
}

/// Collects outputs and owns the per-connection message-id counters (NEO/py numbers
/// requests and notifications per connection; answers reuse the request's id).
#[derive(Debug, Default)]
pub struct Outbox {
    outputs: Vec<Output>,
    next_msg_id: HashMap<ConnId, u32>,
    next_outgoing: u64,
}

impl Outbox {
    pub fn new() -> Outbox {
        Outbox::default()
    }

    /// Names a new outgoing connection and asks the driver to open it.
    pub fn connect(&mut self, addr: Address) -> ConnId {
        self.next_outgoing += 1;
        let conn = OUTGOING | self.next_outgoing;
        self.outputs.push(Output::Connect { conn, addr });
        conn
    }

    /// Sends a request; returns its msg_id, which its answer will carry.
    pub fn ask(&mut self, conn: ConnId, packet: impl Into<Packet>) -> u32 {
        let packet = packet.into();
        debug_assert!(
            packet.kind().expects_answer(),
            "{} is not a request",
            packet.name()
        );
        self.send_new(conn, packet)
    }

    /// Sends a notification with a fresh msg_id (returned).
    pub fn notify(&mut self, conn: ConnId, packet: impl Into<Packet>) -> u32 {
        let packet = packet.into();
        debug_assert!(
            packet.kind() != PacketKind::Answer,
            "{} is an answer",
            packet.name()
        );
        self.send_new(conn, packet)
    }

    /// Sends a notification under another packet's msg_id (replication streams).
    pub fn notify_with_id(&mut self, conn: ConnId, msg_id: u32, packet: impl Into<Packet>) {
        let packet = packet.into();
        self.outputs.push(Output::Send {
            conn,
            msg_id,
            packet,
        });
    }

    /// Answers the request that came with `msg_id`.
    pub fn answer(&mut self, conn: ConnId, msg_id: u32, packet: impl Into<Packet>) {
        let packet = packet.into();
        debug_assert!(
            packet.kind() == PacketKind::Answer,
            "{} is not an answer",
            packet.name()
        );
        self.outputs.push(Output::Send {
            conn,
            msg_id,
            packet,
        });
    }

    /// Answers with `Error(code, message)`.
    pub fn error(
        &mut self,
        conn: ConnId,
        msg_id: u32,
        code: neo_protocol::ErrorCode,
        message: impl Into<String>,
    ) {
        let message: String = message.into();
        self.answer(
            conn,
            msg_id,
            neo_protocol::Error {
                code,
                message: message.into_bytes().into(),
            },
        );
    }

    /// Closes a connection after what was queued is sent.
    pub fn close(&mut self, conn: ConnId) {
        self.next_msg_id.remove(&conn);
        self.outputs.push(Output::Close { conn });
    }

    /// Forgets the counters of a connection the driver reported closed.
    pub fn forget(&mut self, conn: ConnId) {
        self.next_msg_id.remove(&conn);
    }

    pub fn exit(&mut self, code: i32, reason: impl Into<String>) {
        self.outputs.push(Output::Exit {
            code,
            reason: reason.into(),
        });
    }

    /// Takes what was pushed so far.
    pub fn drain(&mut self) -> std::vec::Drain<'_, Output> {
        self.outputs.drain(..)
    }

    pub fn is_empty(&self) -> bool {
        self.outputs.is_empty()
    }

    pub fn outputs(&self) -> &[Output] {
        &self.outputs
    }

    fn send_new(&mut self, conn: ConnId, packet: Packet) -> u32 {
        let counter = self.next_msg_id.entry(conn).or_insert(0);
        let msg_id = *counter;
        *counter = counter.wrapping_add(1);
        self.outputs.push(Output::Send {
            conn,
            msg_id,
            packet,
        });
        msg_id
    }
}

/// Whether a connection id names a connection the node opened.
pub fn is_outgoing(conn: ConnId) -> bool {
    conn & OUTGOING != 0
}
