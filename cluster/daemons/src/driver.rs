//! Runs a node's sans-IO logic ([`neo_node::Node`]) on the tokio edge (`neo-net`): network
//! events become [`Input`]s, [`Output`]s become socket operations, the node's deadline
//! becomes a timeout, and SIGINT/SIGTERM become [`Input::Shutdown`].
//!
//! This is the only place of a daemon that reads the OS clock. Connection ids: the node
//! names its outgoing connections itself (top bit set); accepted connections get ids below
//! 2^63 from here; both are mapped to `neo-net`'s ids. A connection the node closes is
//! forgotten at once, so no [`Input::Closed`] reaches the node for it, as the contract says.
//! Events already waiting are all handled before what they produced is written, one
//! buffer per connection, so that a batch of packets costs one write per connection.
//! The driver also feeds the SQLite log: every packet sent or received (with the peer's
//! NID once identification told it), the node's own NID, and FlushLog.
//! The driver's thread reads plain TCP connections itself (`neo_net::Poller`): a lone
//! request then wakes this thread only, not a tokio worker too. After serving an object
//! read, its wait begins with a short spin (`neo_net::spin`): a reader's next request
//! usually follows within microseconds, and the thread then needs no wakeup (nor, on a
//! shared machine, to be moved next to the reader by the kernel's wakeup).

use std::collections::{HashSet, VecDeque};
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc::{RecvTimeoutError, TryRecvError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use neo_net::id_map::IdMap;
use neo_net::{ConnectionHandle, Event, Net, NetConfig, Poller, SendError};
use neo_node::io::OUTGOING;
use neo_node::{ConnId, Input, Node, Outbox, Output, Time};
use neo_protocol::{Address, Nid, Packet};

use crate::logging::SharedLogger;

/// Signals and logger flags are polled at least this often: a signal cannot wake a thread
/// blocked on a channel.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How long connections get to send what is queued on them at exit.
const EXIT_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the network gets to flush and close at exit.
const NET_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection's write buffer bigger than this after a batch is freed rather than kept.
const MAX_KEPT_BUFFER: usize = 1 << 20;

/// Packets of a batch of events are written together: at most this many events are
/// handled before what they produced is handed to the network.
const BATCH_EVENTS: u32 = 64;

/// The signal number received last (SIGINT or SIGTERM), 0 when none is pending.
static SHUTDOWN_SIGNAL: AtomicI32 = AtomicI32::new(0);

/// The current time as the node sees it: float seconds since the Unix epoch.
pub fn now() -> Time {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A seed for a node's random choices, different in every process.
pub fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u64(now().to_bits());
    hasher.finish()
}

/// Makes SIGINT and SIGTERM set a flag that the driver's loop turns into
/// [`Input::Shutdown`]; a second signal while shutting down ends the process at once.
pub fn install_shutdown_signals() -> io::Result<()> {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe); the sigaction
        // struct is zeroed then filled before use.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_shutdown_signal as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// Takes the pending SIGINT/SIGTERM, if any (0 when none), for programs that are not
/// nodes (neosimple).
pub fn take_shutdown_signal() -> i32 {
    // Looked at once per event: a plain load costs less than a swap when none is pending.
    if SHUTDOWN_SIGNAL.load(Ordering::Relaxed) == 0 {
        return 0;
    }
    SHUTDOWN_SIGNAL.swap(0, Ordering::SeqCst)
}

extern "C" fn on_shutdown_signal(signal: libc::c_int) {
    SHUTDOWN_SIGNAL.store(signal, Ordering::SeqCst);
}

/// The network side of a daemon, bound before the node is built (the node must know the
/// address it listens on, port 0 included).
pub struct Driver {
    net: Net,
    /// The node's thread reads plain TCP connections itself through this, so that a
    /// request reaches the node without a tokio worker's wakeup and a channel hop.
    events: Poller,
    local_addr: Option<SocketAddr>,
    logger: Option<SharedLogger>,
    cluster: String,
}

impl Driver {
    /// Starts the network and listens on `listen`, if given.
    pub fn bind(listen: Option<SocketAddr>, config: NetConfig) -> io::Result<Driver> {
        let (net, events) = Net::new_polled(config)?;
        let local_addr =
            match listen {
                Some(addr) => Some(net.listen(addr).map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))
                })?),
                None => None,
            };
        Ok(Driver {
            net,
            events,
            local_addr,
            logger: None,
            cluster: String::new(),
        })
    }

    /// The address actually bound (the real port when 0 was asked).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// Logs packets and the node's identity to this SQLite log.
    pub fn set_logger(&mut self, logger: SharedLogger, cluster: &str) {
        self.logger = Some(logger);
        self.cluster = cluster.to_owned();
    }

    /// Runs `node` until it exits; returns its exit code. The network is shut down (and
    /// what was queued flushed) before returning.
    pub fn run<N: Node>(self, node: &mut N) -> i32 {
        let Driver {
            net,
            events,
            local_addr: _,
            logger,
            cluster,
        } = self;
        let mut state = Loop {
            net: &net,
            conns: Connections::default(),
            outbox: Outbox::new(),
            outputs: Vec::new(),
            corked: IdMap::default(),
            dirty: Vec::new(),
            inputs: VecDeque::new(),
            logger,
            cluster,
            shutting_down: false,
            served_read: false,
        };
        let code = state.run(node, &events);
        state.close_all(&events);
        let logger = state.logger.take();
        drop(state);
        net.shutdown(NET_SHUTDOWN_TIMEOUT);
        if let Some(logger) = logger {
            let mut logger = logger.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = logger.flush() {
                eprintln!("{e}");
            }
        }
        code
    }
}

/// The two-way mapping between the node's connection ids and the network's.
#[derive(Default)]
struct Connections {
    handles: IdMap<ConnId, ConnectionHandle>,
    by_net: IdMap<neo_net::ConnectionId, ConnId>,
    /// Peers' NIDs learnt from identification, for packet logs.
    peer_nids: IdMap<ConnId, Nid>,
    /// Connections the node closed whose close is not done yet (waited for at exit, so
    /// that their last packets are sent).
    closing: HashSet<neo_net::ConnectionId>,
    next_accepted: u64,
}

impl Connections {
    fn add(&mut self, conn: ConnId, handle: ConnectionHandle) {
        self.by_net.insert(handle.id(), conn);
        self.handles.insert(conn, handle);
    }

    fn remove(&mut self, conn: ConnId) -> Option<ConnectionHandle> {
        self.peer_nids.remove(&conn);
        let handle = self.handles.remove(&conn)?;
        self.by_net.remove(&handle.id());
        Some(handle)
    }

    fn accepted_id(&mut self) -> ConnId {
        // Ids of accepted connections stay below 2^63; wrapping would take centuries.
        self.next_accepted = (self.next_accepted + 1) & !OUTGOING;
        self.next_accepted
    }
}

struct Loop<'a> {
    net: &'a Net,
    conns: Connections,
    outbox: Outbox,
    /// The outputs being performed (kept to reuse its allocation).
    outputs: Vec<Output>,
    /// Packets encoded for each connection during the current batch of events, written
    /// with one command (and often one syscall) per connection when the batch ends. The
    /// buffers stay with their connection, to be reused.
    corked: IdMap<ConnId, Vec<u8>>,
    /// The connections whose buffer in `corked` holds something, in order of first use.
    dirty: Vec<ConnId>,
    /// Inputs the driver produced itself (a connection that failed before reaching the
    /// network), fed before waiting for events.
    inputs: VecDeque<Input>,
    logger: Option<SharedLogger>,
    cluster: String,
    shutting_down: bool,
    /// An object was asked since the thread last waited: a reader's next request is
    /// likely to come within microseconds, so the wait may begin with a spin.
    served_read: bool,
}

impl Loop<'_> {
    fn run<N: Node>(&mut self, node: &mut N, events: &Poller) -> i32 {
        let code = self.run_events(node, events);
        self.uncork_all();
        code
    }

    fn run_events<N: Node>(&mut self, node: &mut N, events: &Poller) -> i32 {
        if let Some(code) = self.feed(node, Input::Start) {
            return code;
        }
        let mut batch = 0;
        loop {
            if let Some(code) = self.poll_signals(node) {
                return code;
            }
            if let Some(input) = self.inputs.pop_front() {
                if let Some(code) = self.feed(node, input) {
                    return code;
                }
                continue;
            }
            // The time read for the deadline also serves an event already waiting: the
            // clock is read once per event.
            let mut clock = None;
            let wait = match node.deadline() {
                Some(deadline) => {
                    let now = now();
                    clock = Some(now);
                    let left = deadline - now;
                    if left <= 0.0 {
                        if let Some(code) = self.feed_at(node, now, Input::Timer) {
                            return code;
                        }
                        continue;
                    }
                    Duration::from_secs_f64(left.min(POLL_INTERVAL.as_secs_f64()))
                }
                None => POLL_INTERVAL,
            };
            // Events already waiting are handled before what they produced is written,
            // so that the packets of a batch leave together. The sockets are asked again
            // only when what was read is handled (each read takes all a socket has).
            let event = match events.try_recv_queued() {
                Ok(event) => {
                    batch += 1;
                    if batch >= BATCH_EVENTS {
                        batch = 0;
                        self.uncork_all();
                        clock = None;
                    }
                    Some(event)
                }
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => {
                    tracing::error!("the network layer stopped");
                    return 1;
                }
            };
            let event = match event {
                Some(event) => event,
                None => {
                    batch = 0;
                    self.uncork_all();
                    // Background work (Input::Idle) runs only when no event waits, on a
                    // socket either.
                    if node.wants_idle() {
                        match events.try_recv() {
                            Ok(event) => {
                                if let Some(input) = self.translate(event) {
                                    if let Some(code) = self.feed(node, input) {
                                        return code;
                                    }
                                }
                                continue;
                            }
                            Err(TryRecvError::Empty) => {}
                            Err(TryRecvError::Disconnected) => {
                                tracing::error!("the network layer stopped");
                                return 1;
                            }
                        }
                        if let Some(code) = self.feed(node, Input::Idle) {
                            return code;
                        }
                        // Idle work can be long (a storage's group commit): what it
                        // released goes out before the events that came meanwhile.
                        self.uncork_all();
                        continue;
                    }
                    let event = if std::mem::take(&mut self.served_read) {
                        events.recv_timeout_spinning(wait)
                    } else {
                        events.recv_timeout(wait)
                    };
                    // Time passed while waiting.
                    clock = None;
                    match event {
                        Ok(event) => event,
                        Err(RecvTimeoutError::Timeout) => continue,
                        Err(RecvTimeoutError::Disconnected) => {
                            tracing::error!("the network layer stopped");
                            return 1;
                        }
                    }
                }
            };
            if let Some(input) = self.translate(event) {
                let now = clock.unwrap_or_else(now);
                if let Some(code) = self.feed_at(node, now, input) {
                    return code;
                }
            }
        }
    }

    /// Closes every connection after what is queued on it is sent, and waits a little for
    /// the closes, so that what a node says before exiting (NEO/py's masters tell every
    /// node to stop) reaches the peers before the network is torn down.
    fn close_all(&mut self, events: &Poller) {
        let mut open = std::mem::take(&mut self.conns.closing);
        for handle in self.conns.handles.values() {
            handle.close();
            open.insert(handle.id());
        }
        tracing::debug!(
            connections = open.len(),
            "closing every connection before exiting"
        );
        let deadline = std::time::Instant::now() + EXIT_FLUSH_TIMEOUT;
        while !open.is_empty() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match events.recv_timeout(left) {
                Ok(Event::Closed { conn, .. }) | Ok(Event::ConnectFailed { conn, .. }) => {
                    open.remove(&conn);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(left = open.len(), error = %e, "connections not closed in time");
                    break;
                }
            }
        }
    }

    /// Serves SIGINT/SIGTERM and the log's SIGRTMIN flags.
    fn poll_signals<N: Node>(&mut self, node: &mut N) -> Option<i32> {
        if let Some(logger) = &self.logger {
            let mut logger = logger.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = neo_logdb::signals::apply(&mut logger) {
                eprintln!("{e}");
            }
        }
        let signal = take_shutdown_signal();
        if signal == 0 {
            return None;
        }
        if self.shutting_down {
            tracing::warn!(signal, "second signal while shutting down: exiting now");
            return Some(1);
        }
        tracing::info!(signal, "signal received: shutting down");
        self.shutting_down = true;
        self.feed(node, Input::Shutdown)
    }

    /// Turns a network event into the node's input; `None` for events about connections
    /// the node already closed.
    fn translate(&mut self, event: Event) -> Option<Input> {
        match event {
            Event::Accepted { conn: handle, .. } => {
                let conn = self.conns.accepted_id();
                let peer = handle.peer_addr();
                self.conns.add(conn, handle);
                Some(Input::Accepted { conn, peer })
            }
            Event::Connected { conn } => {
                let conn = *self.conns.by_net.get(&conn)?;
                Some(Input::Connected { conn })
            }
            Event::ConnectFailed { conn, addr, error } => {
                let conn = *self.conns.by_net.get(&conn)?;
                tracing::debug!(%addr, %error, "connection failed");
                self.forget(conn);
                self.outbox.forget(conn);
                Some(Input::ConnectFailed { conn })
            }
            Event::Packet {
                conn,
                msg_id,
                packet,
            } => {
                let conn = *self.conns.by_net.get(&conn)?;
                self.received(conn, msg_id, &packet);
                self.served_read |= matches!(packet, Packet::AskObject(_));
                Some(Input::Packet {
                    conn,
                    msg_id,
                    packet,
                })
            }
            Event::Answer {
                conn,
                msg_id,
                packet,
                ..
            } => {
                let conn = *self.conns.by_net.get(&conn)?;
                self.received(conn, msg_id, &packet);
                Some(Input::Answer {
                    conn,
                    msg_id,
                    packet,
                })
            }
            Event::Closed { conn, reason, .. } => {
                self.conns.closing.remove(&conn);
                let conn = *self.conns.by_net.get(&conn)?;
                if reason.is_peer_error() {
                    tracing::warn!(conn, %reason, "connection closed");
                } else {
                    tracing::debug!(conn, %reason, "connection closed");
                }
                self.forget(conn);
                self.outbox.forget(conn);
                Some(Input::Closed { conn })
            }
        }
    }

    /// Gives one input to the node and performs what it asks; `Some(code)` when it exits.
    fn feed<N: Node>(&mut self, node: &mut N, input: Input) -> Option<i32> {
        self.feed_at(node, now(), input)
    }

    /// [`Loop::feed`] with the time already read.
    fn feed_at<N: Node>(&mut self, node: &mut N, now: Time, input: Input) -> Option<i32> {
        node.handle(now, input, &mut self.outbox);
        let mut outputs = std::mem::take(&mut self.outputs);
        outputs.extend(self.outbox.drain());
        let mut code = None;
        for output in outputs.drain(..) {
            if code.is_none() {
                code = self.perform(output);
            }
        }
        self.outputs = outputs;
        code
    }

    /// Hands the packets encoded during this batch to the network.
    fn uncork_all(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for conn in dirty.drain(..) {
            self.uncork(conn);
        }
        self.dirty = dirty;
    }

    /// Hands the packets of one connection to the network (before it is closed, or at
    /// the end of a batch).
    fn uncork(&mut self, conn: ConnId) {
        let Some(bytes) = self.corked.get_mut(&conn) else {
            return;
        };
        if bytes.is_empty() {
            return;
        }
        // A connection the node forgot has no handle: its Closed event is on its way.
        if let Some(handle) = self.conns.handles.get(&conn) {
            if let Err(e) = handle.send_encoded_slice(bytes) {
                // Closed: the Closed event follows and tells the node.
                tracing::debug!(conn, error = %e, "packets dropped");
            }
        }
        bytes.clear();
        // A rare large answer does not keep its memory for the connection's lifetime.
        if bytes.capacity() > MAX_KEPT_BUFFER {
            *bytes = Vec::new();
        }
    }

    /// Forgets a connection the node or the network closed.
    fn forget(&mut self, conn: ConnId) -> Option<ConnectionHandle> {
        self.corked.remove(&conn);
        self.conns.remove(conn)
    }

    fn perform(&mut self, output: Output) -> Option<i32> {
        match output {
            Output::Connect { conn, addr } => match resolve(&addr) {
                Some(socket_addr) => {
                    let handle = self.net.connect(socket_addr);
                    self.conns.add(conn, handle);
                }
                None => {
                    tracing::warn!(%addr, "cannot resolve address");
                    self.inputs.push_back(Input::ConnectFailed { conn });
                }
            },
            Output::Send {
                conn,
                msg_id,
                packet,
            } => self.send(conn, msg_id, packet),
            Output::Close { conn } => {
                self.uncork(conn);
                if let Some(handle) = self.forget(conn) {
                    handle.close();
                    self.conns.closing.insert(handle.id());
                }
            }
            Output::Exit { code, reason } => {
                if code == 0 {
                    tracing::info!("exiting: {reason}");
                } else {
                    tracing::error!("exiting with status {code}: {reason}");
                    eprintln!("{reason}");
                }
                return Some(code);
            }
        }
        None
    }

    fn send(&mut self, conn: ConnId, msg_id: u32, packet: Packet) {
        if self.logger.is_some() || packet_learns_nid(&packet) {
            if let Some(peer_addr) = self.conns.handles.get(&conn).map(|h| h.peer_addr()) {
                self.sent(conn, msg_id, &packet, peer_addr);
            }
        }
        let Some(handle) = self.conns.handles.get(&conn) else {
            tracing::debug!(
                conn,
                packet = packet.name(),
                "send on a closed connection dropped"
            );
            return;
        };
        let bytes = self.corked.entry(conn).or_default();
        if bytes.is_empty() {
            self.dirty.push(conn);
        }
        match handle.encode_with_id(msg_id, &packet, 0, bytes) {
            Ok(()) => {}
            // The Closed event follows and tells the node.
            Err(SendError::Closed) => {}
            Err(e) => {
                let name = packet.name();
                // The node cannot go on with a connection that lost a packet: close it
                // (after what was encoded before) and let the Closed event tell the node.
                tracing::error!(conn, packet = name, error = %e, "cannot send; closing the connection");
                let handle = handle.clone();
                self.uncork(conn);
                handle.close();
            }
        }
    }

    /// Logs a received packet and learns identities from identification packets.
    fn received(&mut self, conn: ConnId, msg_id: u32, packet: &Packet) {
        if let Packet::AcceptIdentification(accept) = packet {
            if let Some(nid) = accept.nid {
                self.conns.peer_nids.insert(conn, nid);
            }
            if accept.your_nid.is_some() {
                self.set_own_nid(accept.your_nid);
            }
        }
        if let Packet::RequestIdentification(request) = packet {
            if let Some(nid) = request.nid {
                self.conns.peer_nids.insert(conn, nid);
            }
        }
        let Some(logger) = &self.logger else {
            return;
        };
        let peer_nid = self.conns.peer_nids.get(&conn).copied();
        let peer_addr = self.conns.handles.get(&conn).map(|h| h.peer_addr());
        let mut logger = logger.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = logger.packet(msg_id, packet, false, peer_nid, peer_addr) {
            eprintln!("{e}");
        }
        if matches!(packet, Packet::FlushLog(_)) {
            if let Err(e) = logger.flush() {
                eprintln!("{e}");
            }
        }
    }

    /// Logs a sent packet and learns identities from identification packets.
    fn sent(&mut self, conn: ConnId, msg_id: u32, packet: &Packet, peer_addr: SocketAddr) {
        if let Packet::AcceptIdentification(accept) = packet {
            if let Some(nid) = accept.your_nid {
                self.conns.peer_nids.insert(conn, nid);
            }
            if accept.nid.is_some() {
                self.set_own_nid(accept.nid);
            }
        }
        let Some(logger) = &self.logger else {
            return;
        };
        let peer_nid = self.conns.peer_nids.get(&conn).copied();
        let mut logger = logger.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = logger.packet(msg_id, packet, true, peer_nid, Some(peer_addr)) {
            eprintln!("{e}");
        }
    }

    fn set_own_nid(&mut self, nid: Option<Nid>) {
        let Some(logger) = &self.logger else {
            return;
        };
        let mut logger = logger.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = logger.set_node(&self.cluster, nid) {
            eprintln!("{e}");
        }
    }
}

/// Whether the driver learns a NID from this packet when it sends it (for packet logs).
fn packet_learns_nid(packet: &Packet) -> bool {
    matches!(packet, Packet::AcceptIdentification(_))
}

/// The socket address of a node address: numeric hosts directly, names through the
/// resolver (first result).
fn resolve(addr: &Address) -> Option<SocketAddr> {
    if let Some(socket_addr) = addr.to_socket_addr() {
        return Some(socket_addr);
    }
    let host = std::str::from_utf8(&addr.host).ok()?;
    (host, addr.port).to_socket_addrs().ok()?.next()
}
