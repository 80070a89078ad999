//! The background thread: runs `neo-client-core` on `neo-net`. Network events and the
//! caller's commands arrive on one channel; outputs become socket operations; completions
//! go back to the waiting callers; invalidations are queued and given to the callback in
//! the order the master sent them.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use neo_client_core::{Client as Core, ClientError, Config, Invalidation, OpId, Reply};
use neo_net::{ConnectionHandle, Event, Net, NetConfig};
use neo_node::{ConnId, Input, Node, Outbox, Output, Time};
use neo_protocol::{Address, PacketKind};

use crate::Command;

pub(crate) enum Message {
    Net(Event),
    Command(Command),
}

type Callback = Option<Arc<dyn Fn(&Invalidation) + Send + Sync>>;
type Waiter = mpsc::Sender<Result<Reply, ClientError>>;

/// How long the network gets to flush at close.
const NET_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) fn now() -> Time {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

pub(crate) fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(now().to_bits());
    hasher.finish()
}

/// Starts the network, the event forwarder and the client thread.
pub(crate) fn start(
    config: Config,
    invalidations: Arc<Mutex<VecDeque<Invalidation>>>,
    callback: Callback,
) -> io::Result<(mpsc::Sender<Message>, JoinHandle<()>)> {
    let (net, events) = Net::new(NetConfig::default())?;
    let (sender, receiver) = mpsc::channel();
    let forward = sender.clone();
    // Ends when the Net is shut down (its event sender is dropped).
    let forwarder = std::thread::Builder::new()
        .name("neo-client-events".into())
        .spawn(move || {
            for event in events {
                if forward.send(Message::Net(event)).is_err() {
                    break;
                }
            }
        })?;
    let thread = std::thread::Builder::new()
        .name("neo-client".into())
        .spawn(move || {
            let mut driver = Driver {
                core: Core::new(config),
                net: &net,
                outbox: Outbox::new(),
                handles: HashMap::new(),
                by_net: HashMap::new(),
                waiters: HashMap::new(),
                next_op: 1,
                inputs: VecDeque::new(),
                invalidations,
                callback,
            };
            driver.run(&receiver);
            drop(driver);
            net.shutdown(NET_SHUTDOWN_TIMEOUT);
            let _ = forwarder.join();
        })?;
    Ok((sender, thread))
}

struct Driver<'a> {
    core: Core,
    net: &'a Net,
    outbox: Outbox,
    handles: HashMap<ConnId, ConnectionHandle>,
    by_net: HashMap<neo_net::ConnectionId, ConnId>,
    waiters: HashMap<OpId, Waiter>,
    next_op: OpId,
    /// Inputs made here (an address that cannot be resolved).
    inputs: VecDeque<Input>,
    invalidations: Arc<Mutex<VecDeque<Invalidation>>>,
    callback: Callback,
}

impl Driver<'_> {
    fn run(&mut self, receiver: &mpsc::Receiver<Message>) {
        self.feed(Input::Start);
        loop {
            while let Some(input) = self.inputs.pop_front() {
                self.feed(input);
            }
            let timeout = match self.core.deadline() {
                Some(deadline) => {
                    let left = deadline - now();
                    if left <= 0.0 {
                        self.feed(Input::Timer);
                        continue;
                    }
                    Duration::from_secs_f64(left.min(1.0))
                }
                None => Duration::from_secs(1),
            };
            let message = match receiver.recv_timeout(timeout) {
                Ok(message) => message,
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            };
            match message {
                Message::Net(event) => {
                    if let Some(input) = self.translate(event) {
                        self.feed(input);
                    }
                }
                Message::Command(Command::Run(operation, waiter)) => {
                    let op = self.next_op;
                    self.next_op += 1;
                    self.waiters.insert(op, waiter);
                    self.core.submit(now(), op, operation, &mut self.outbox);
                    self.perform();
                }
                Message::Command(Command::CacheStats(waiter)) => {
                    let _ = waiter.send(self.core.cache().stats());
                }
                Message::Command(Command::Close) => {
                    self.feed(Input::Shutdown);
                    return;
                }
            }
        }
    }

    fn feed(&mut self, input: Input) {
        self.core.handle(now(), input, &mut self.outbox);
        self.perform();
    }

    /// Carries out the outputs, then hands out invalidations and completions, in this
    /// order so that a caller woken by a completion already sees earlier invalidations.
    fn perform(&mut self) {
        let outputs: Vec<Output> = self.outbox.drain().collect();
        for output in outputs {
            match output {
                Output::Connect { conn, addr } => match resolve(&addr) {
                    Some(socket) => {
                        let handle = self.net.connect(socket);
                        self.by_net.insert(handle.id(), conn);
                        self.handles.insert(conn, handle);
                    }
                    None => self.inputs.push_back(Input::ConnectFailed { conn }),
                },
                Output::Send {
                    conn,
                    msg_id,
                    packet,
                } => {
                    let Some(handle) = self.handles.get(&conn) else {
                        continue;
                    };
                    let result = match packet.kind() {
                        PacketKind::Request { .. } | PacketKind::RequestAnsweredByError => {
                            handle.ask_with_id(msg_id, packet, 0)
                        }
                        PacketKind::Notification => handle.notify_with_id(msg_id, packet),
                        PacketKind::Answer => handle.answer(msg_id, packet),
                    };
                    if let Err(e) = result {
                        tracing::debug!(conn, error = %e, "send failed");
                        handle.close();
                    }
                }
                Output::Close { conn } => {
                    if let Some(handle) = self.handles.remove(&conn) {
                        self.by_net.remove(&handle.id());
                        handle.close();
                    }
                }
                Output::Exit { .. } => {}
            }
        }
        let invalidations = self.core.take_invalidations();
        if !invalidations.is_empty() {
            if let Some(callback) = &self.callback {
                for invalidation in &invalidations {
                    callback(invalidation);
                }
            }
            let mut queue = self.invalidations.lock().unwrap_or_else(|e| e.into_inner());
            queue.extend(invalidations);
        }
        for (op, result) in self.core.take_completions() {
            if let Some(waiter) = self.waiters.remove(&op) {
                let _ = waiter.send(result);
            }
        }
    }

    fn translate(&mut self, event: Event) -> Option<Input> {
        match event {
            // A client listens nowhere.
            Event::Accepted { conn, .. } => {
                conn.close();
                None
            }
            Event::Connected { conn } => Some(Input::Connected {
                conn: *self.by_net.get(&conn)?,
            }),
            Event::ConnectFailed { conn, .. } => {
                let conn = self.by_net.remove(&conn)?;
                self.handles.remove(&conn);
                Some(Input::ConnectFailed { conn })
            }
            Event::Packet {
                conn,
                msg_id,
                packet,
            } => Some(Input::Packet {
                conn: *self.by_net.get(&conn)?,
                msg_id,
                packet,
            }),
            Event::Answer {
                conn,
                msg_id,
                packet,
                ..
            } => Some(Input::Answer {
                conn: *self.by_net.get(&conn)?,
                msg_id,
                packet,
            }),
            Event::Closed { conn, .. } => {
                let conn = self.by_net.remove(&conn)?;
                self.handles.remove(&conn);
                Some(Input::Closed { conn })
            }
        }
    }
}

fn resolve(address: &Address) -> Option<SocketAddr> {
    address.to_socket_addr().or_else(|| {
        let host = std::str::from_utf8(&address.host).ok()?;
        (host, address.port).to_socket_addrs().ok()?.next()
    })
}
