//! A scripted `neoctl`: a tiny node that connects to an admin (or any node), sends the
//! requests a test gives it, and keeps the answers. neoctl does not identify to the admin,
//! so neither does this.

use std::collections::BTreeMap;

use neo_node::{ConnId, Input, Node, Outbox, Time};
use neo_protocol::{Address, Packet};

/// What became of a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Waiting,
    Answered(Packet),
    /// The connection closed before the answer.
    Lost,
}

#[derive(Debug)]
pub struct Ctl {
    target: Address,
    conn: Option<ConnId>,
    connected: bool,
    /// Requests not sent yet (ticket, packet).
    queued: Vec<(usize, Packet)>,
    /// msg_id → ticket of requests sent on the current connection.
    sent: BTreeMap<u32, usize>,
    replies: Vec<Reply>,
}

impl Ctl {
    pub fn new(target: Address) -> Ctl {
        Ctl {
            target,
            conn: None,
            connected: false,
            queued: Vec::new(),
            sent: BTreeMap::new(),
            replies: Vec::new(),
        }
    }

    /// Sends a request (connecting first if needed); returns its ticket.
    pub fn request(&mut self, out: &mut Outbox, packet: impl Into<Packet>) -> usize {
        let ticket = self.replies.len();
        self.replies.push(Reply::Waiting);
        self.queued.push((ticket, packet.into()));
        match self.conn {
            None => self.conn = Some(out.connect(self.target.clone())),
            Some(_) if self.connected => self.flush(out),
            Some(_) => {}
        }
        ticket
    }

    pub fn reply(&self, ticket: usize) -> &Reply {
        &self.replies[ticket]
    }

    fn flush(&mut self, out: &mut Outbox) {
        let Some(conn) = self.conn else {
            return;
        };
        for (ticket, packet) in self.queued.drain(..) {
            let msg_id = out.ask(conn, packet);
            self.sent.insert(msg_id, ticket);
        }
    }

    fn lost(&mut self) {
        self.conn = None;
        self.connected = false;
        for (_, ticket) in std::mem::take(&mut self.sent) {
            self.replies[ticket] = Reply::Lost;
        }
        for (ticket, _) in std::mem::take(&mut self.queued) {
            self.replies[ticket] = Reply::Lost;
        }
    }
}

impl Node for Ctl {
    fn handle(&mut self, _now: Time, input: Input, out: &mut Outbox) {
        match input {
            Input::Connected { conn } if Some(conn) == self.conn => {
                self.connected = true;
                self.flush(out);
            }
            Input::ConnectFailed { conn } | Input::Closed { conn } if Some(conn) == self.conn => {
                out.forget(conn);
                self.lost();
            }
            Input::Answer {
                conn,
                msg_id,
                packet,
            } if Some(conn) == self.conn => {
                if let Some(ticket) = self.sent.remove(&msg_id) {
                    self.replies[ticket] = Reply::Answered(packet);
                }
            }
            _ => {}
        }
    }

    fn deadline(&self) -> Option<Time> {
        None
    }
}
