//! Runs `neo-client-core` on blocking sockets, with as few thread crossings per call as
//! possible: the core sits behind one mutex that every thread takes briefly. A caller
//! submits its operation itself: a cache hit (or anything else the core completes at once)
//! returns without waking any other thread; a request is written to the socket by the
//! caller, which then waits on its own slot. One reader thread per connection decodes what
//! arrives, feeds it to the core and fills the slots of the operations it completes; a
//! timer thread feeds the core's deadlines. Invalidations are handed out (callback, then
//! queue) before the completions of the same step, so that a caller woken by a completion
//! already sees earlier invalidations.
//!
//! Bytes for a connection are appended to its queue while the core's lock is held (so they
//! keep the core's order) and written after the lock is released by whichever thread
//! flushes first, so that a slow socket never blocks the core.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use neo_client_core::{
    CacheStats, Client as Core, ClientError, Config, Invalidation, OpId, Operation, Reply,
};
use neo_node::{ConnId, Input, Node, Outbox, Output, Time};
use neo_protocol::{
    encode_message, Address, Decoder, HandshakeMode, Message, HANDSHAKE, MAX_PACKET_SIZE,
    RESPONSE_MASK,
};

pub(crate) type Callback = Option<Arc<dyn Fn(&Invalidation) + Send + Sync>>;
type Completion = Result<Reply, ClientError>;

/// Longest sleep of the timer thread: the core's deadline can move without telling it
/// (it is told, but this bounds the damage of a missed wakeup).
const TIMER_MAX_SLEEP: Duration = Duration::from_secs(1);

/// Bytes read from a socket at once.
const READ_CHUNK: usize = 64 * 1024;

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

/// A poisoned lock only means a thread panicked while holding it; the client's state is
/// still the core's, which never panics halfway on network input.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where one waiting caller's result is put.
struct Slot {
    result: Mutex<Option<Completion>>,
    ready: Condvar,
}

impl Slot {
    fn fill(&self, result: Completion) {
        *lock(&self.result) = Some(result);
        self.ready.notify_one();
    }
}

/// Bytes waiting to be written on a connection.
#[derive(Default)]
struct Outgoing {
    bytes: Vec<u8>,
    /// Shut the socket down once the bytes are written (the core closed it).
    close: bool,
}

/// One connection as the threads share it.
struct Conn {
    id: ConnId,
    queue: Mutex<Outgoing>,
    /// The socket, once connected and our handshake sent; with the spare buffer the
    /// writer swaps with the queue's.
    writer: Mutex<Option<(TcpStream, Vec<u8>)>>,
}

impl Conn {
    /// Writes what is queued, if the socket is there; the connecting thread flushes once
    /// it is. A write error shuts the socket down, so that its reader reports the close.
    fn flush(&self) {
        let mut writer = lock(&self.writer);
        let Some((stream, spare)) = writer.as_mut() else {
            return;
        };
        let close = {
            let mut queue = lock(&self.queue);
            std::mem::swap(&mut queue.bytes, spare);
            queue.close
        };
        if !spare.is_empty() {
            let written = stream.write_all(spare);
            spare.clear();
            if written.is_err() {
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
        }
        if close {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// What is done after the core's lock is released.
#[derive(Default)]
struct AfterLock {
    flush: Vec<Arc<Conn>>,
    connect: Vec<(Arc<Conn>, Address)>,
}

impl AfterLock {
    fn is_empty(&self) -> bool {
        self.flush.is_empty() && self.connect.is_empty()
    }
}

struct State {
    core: Core,
    outbox: Outbox,
    /// Outputs being carried out (kept to reuse its allocation).
    outputs: Vec<Output>,
    conns: HashMap<ConnId, Arc<Conn>>,
    slots: HashMap<OpId, Arc<Slot>>,
    next_op: OpId,
    closed: bool,
    after: AfterLock,
    invalidations: Arc<Mutex<VecDeque<Invalidation>>>,
    callback: Callback,
}

impl State {
    fn feed(&mut self, input: Input) {
        self.core.handle(now(), input, &mut self.outbox);
        self.perform(None);
    }

    /// Carries out the outputs, then hands out invalidations and completions, in this
    /// order. Returns the completion of `mine` (the calling thread's own operation), which
    /// has no slot.
    fn perform(&mut self, mine: Option<OpId>) -> Option<Completion> {
        let mut outputs = std::mem::take(&mut self.outputs);
        outputs.extend(self.outbox.drain());
        for output in outputs.drain(..) {
            match output {
                Output::Connect { conn, addr } => {
                    let shared = Arc::new(Conn {
                        id: conn,
                        queue: Mutex::new(Outgoing::default()),
                        writer: Mutex::new(None),
                    });
                    self.conns.insert(conn, shared.clone());
                    self.after.connect.push((shared, addr));
                }
                Output::Send {
                    conn,
                    msg_id,
                    packet,
                } => {
                    let Some(shared) = self.conns.get(&conn) else {
                        continue;
                    };
                    let mut queue = lock(&shared.queue);
                    let start = queue.bytes.len();
                    encode_message(&mut queue.bytes, msg_id, &packet);
                    if queue.bytes.len() - start > MAX_PACKET_SIZE {
                        // The peer would refuse it; the connection cannot go on without it.
                        tracing::warn!(conn, packet = packet.name(), "packet too large");
                        queue.bytes.truncate(start);
                        queue.close = true;
                    }
                    drop(queue);
                    if !self.after.flush.iter().any(|c| c.id == conn) {
                        self.after.flush.push(shared.clone());
                    }
                }
                Output::Close { conn } => {
                    if let Some(shared) = self.conns.remove(&conn) {
                        lock(&shared.queue).close = true;
                        if !self.after.flush.iter().any(|c| c.id == conn) {
                            self.after.flush.push(shared);
                        }
                    }
                }
                Output::Exit { .. } => {}
            }
        }
        self.outputs = outputs;
        let invalidations = self.core.take_invalidations();
        if !invalidations.is_empty() {
            if let Some(callback) = &self.callback {
                for invalidation in &invalidations {
                    callback(invalidation);
                }
            }
            lock(&self.invalidations).extend(invalidations);
        }
        let mut own = None;
        for (op, result) in self.core.take_completions() {
            if Some(op) == mine {
                own = Some(result);
            } else if let Some(slot) = self.slots.remove(&op) {
                slot.fill(result);
            }
        }
        own
    }
}

pub(crate) struct Shared {
    state: Mutex<State>,
    /// Wakes the timer thread (deadline moved, or closing).
    timer: Condvar,
}

impl Shared {
    /// Runs `f` on the state, then does what it left for after the lock.
    fn with<R>(self: &Arc<Self>, f: impl FnOnce(&mut State) -> R) -> R {
        let (result, after, timer) = {
            let mut state = lock(&self.state);
            let result = f(&mut state);
            let after = if state.after.is_empty() {
                AfterLock::default()
            } else {
                std::mem::take(&mut state.after)
            };
            (result, after, state.core.deadline().is_some())
        };
        if timer {
            self.timer.notify_one();
        }
        self.after(after);
        result
    }

    fn after(self: &Arc<Self>, after: AfterLock) {
        for conn in after.flush {
            conn.flush();
        }
        for (conn, addr) in after.connect {
            let shared = self.clone();
            let id = conn.id;
            let spawned = std::thread::Builder::new()
                .name("neo-client-conn".into())
                .spawn(move || shared.connection(conn, addr));
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start a connection thread");
                self.with(|state| {
                    if state.conns.remove(&id).is_some() {
                        state.feed(Input::ConnectFailed { conn: id });
                    }
                });
            }
        }
    }

    /// Submits an operation and waits (at most `timeout`) for its completion.
    pub(crate) fn call(self: &Arc<Self>, operation: Operation, timeout: Duration) -> CallResult {
        let slot = self.with(|state| {
            if state.closed {
                return Submitted::Done(Err(ClientError::Closed));
            }
            let op = state.next_op;
            state.next_op += 1;
            state.core.submit(now(), op, operation, &mut state.outbox);
            if let Some(result) = state.perform(Some(op)) {
                return Submitted::Done(result);
            }
            let slot = Arc::new(Slot {
                result: Mutex::new(None),
                ready: Condvar::new(),
            });
            state.slots.insert(op, slot.clone());
            Submitted::Waiting(op, slot)
        });
        let (op, slot) = match slot {
            Submitted::Waiting(op, slot) => (op, slot),
            Submitted::Done(result) => return CallResult::Done(result),
        };
        let deadline = Instant::now() + timeout;
        let mut result = lock(&slot.result);
        loop {
            if let Some(result) = result.take() {
                return CallResult::Done(result);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                drop(result);
                // The operation may still complete; nobody waits for it any more.
                let late = self.with(|state| state.slots.remove(&op).is_none());
                if late {
                    if let Some(result) = lock(&slot.result).take() {
                        return CallResult::Done(result);
                    }
                }
                return CallResult::TimedOut;
            }
            result = slot
                .ready
                .wait_timeout(result, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    pub(crate) fn cache_stats(self: &Arc<Self>) -> CacheStats {
        lock(&self.state).core.cache().stats()
    }

    /// Shuts the core down, fails the callers still waiting and closes every socket.
    pub(crate) fn close(self: &Arc<Self>) {
        self.with(|state| {
            if state.closed {
                return;
            }
            state.closed = true;
            state.feed(Input::Shutdown);
            for (_, slot) in state.slots.drain() {
                slot.fill(Err(ClientError::Closed));
            }
            // The core closed its connections; anything left is closed too.
            for (_, conn) in state.conns.drain() {
                lock(&conn.queue).close = true;
                state.after.flush.push(conn);
            }
        });
        self.timer.notify_one();
    }

    /// The thread of one connection: connects, sends our handshake and what was queued,
    /// then reads until the connection ends.
    fn connection(self: Arc<Self>, conn: Arc<Conn>, addr: Address) {
        let id = conn.id;
        let stream = match resolve(&addr) {
            Some(socket) => connect(socket),
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot resolve the address",
            )),
        };
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                tracing::info!(conn = id, error = %e, "connection failed");
                self.with(|state| {
                    if state.conns.remove(&id).is_some() {
                        state.feed(Input::ConnectFailed { conn: id });
                    }
                });
                return;
            }
        };
        let mut reader = match stream.try_clone() {
            Ok(reader) => reader,
            Err(e) => {
                tracing::warn!(conn = id, error = %e, "cannot clone the socket");
                let _ = stream.shutdown(Shutdown::Both);
                self.with(|state| {
                    if state.conns.remove(&id).is_some() {
                        state.feed(Input::ConnectFailed { conn: id });
                    }
                });
                return;
            }
        };
        *lock(&conn.writer) = Some((stream, Vec::new()));
        let registered = self.with(|state| {
            let registered = state.conns.contains_key(&id);
            if registered {
                state.feed(Input::Connected { conn: id });
            }
            registered
        });
        // Sends what the core queued before the connection was up (or, if the core
        // already closed it, shuts the socket down after that).
        conn.flush();
        if !registered {
            let _ = reader.shutdown(Shutdown::Both);
            return;
        }
        let mut decoder = Decoder::new(HandshakeMode::Expect).with_max_packet_size(MAX_PACKET_SIZE);
        let mut buffer = vec![0u8; READ_CHUNK];
        let mut inputs = Vec::new();
        let reason = 'read: loop {
            loop {
                match decoder.next_message() {
                    Ok(Some(Message { msg_id, packet })) => {
                        inputs.push(if packet.code() & RESPONSE_MASK != 0 {
                            Input::Answer {
                                conn: id,
                                msg_id,
                                packet,
                            }
                        } else {
                            Input::Packet {
                                conn: id,
                                msg_id,
                                packet,
                            }
                        })
                    }
                    Ok(None) => break,
                    Err(e) => break 'read format!("malformed input {e}"),
                }
            }
            if !inputs.is_empty() {
                let open = self.with(|state| {
                    if !state.conns.contains_key(&id) {
                        return false;
                    }
                    for input in inputs.drain(..) {
                        state.feed(input);
                    }
                    true
                });
                if !open {
                    // The core closed it: what follows is nobody's.
                    let _ = reader.shutdown(Shutdown::Both);
                    return;
                }
            }
            match reader.read(&mut buffer) {
                Ok(0) => break "closed by the peer".to_owned(),
                Ok(n) => decoder.feed(&buffer[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break format!("I/O error: {e}"),
            }
        };
        tracing::debug!(conn = id, %reason, "connection closed");
        let _ = reader.shutdown(Shutdown::Both);
        self.with(|state| {
            if state.conns.remove(&id).is_some() {
                state.feed(Input::Closed { conn: id });
            }
        });
    }

    /// The timer thread: feeds `Input::Timer` when the core's deadline comes.
    fn timer_loop(self: Arc<Self>) {
        loop {
            let fired = {
                let mut state = lock(&self.state);
                loop {
                    if state.closed {
                        return;
                    }
                    let wait = match state.core.deadline() {
                        Some(deadline) => {
                            let left = deadline - now();
                            if left <= 0.0 {
                                break;
                            }
                            Duration::from_secs_f64(left).min(TIMER_MAX_SLEEP)
                        }
                        None => TIMER_MAX_SLEEP,
                    };
                    state = self
                        .timer
                        .wait_timeout(state, wait)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                state.feed(Input::Timer);
                std::mem::take(&mut state.after)
            };
            self.after(fired);
        }
    }
}

/// What submitting left the caller with.
enum Submitted {
    Done(Completion),
    Waiting(OpId, Arc<Slot>),
}

pub(crate) enum CallResult {
    Done(Completion),
    TimedOut,
}

/// Starts the client: the core, fed `Input::Start`, and its timer thread.
pub(crate) fn start(
    config: Config,
    invalidations: Arc<Mutex<VecDeque<Invalidation>>>,
    callback: Callback,
) -> io::Result<(Arc<Shared>, JoinHandle<()>)> {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            core: Core::new(config),
            outbox: Outbox::new(),
            outputs: Vec::new(),
            conns: HashMap::new(),
            slots: HashMap::new(),
            next_op: 1,
            closed: false,
            after: AfterLock::default(),
            invalidations,
            callback,
        }),
        timer: Condvar::new(),
    });
    let timer = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("neo-client-timer".into())
            .spawn(move || shared.timer_loop())?
    };
    shared.with(|state| state.feed(Input::Start));
    Ok((shared, timer))
}

fn connect(socket: SocketAddr) -> io::Result<TcpStream> {
    let mut stream = TcpStream::connect(socket)?;
    if let Err(e) = neo_net::socket::configure_stream(&stream) {
        tracing::warn!(%socket, error = %e, "cannot set socket options");
    }
    // Each end sends its handshake first, without waiting for the peer's.
    stream.write_all(&HANDSHAKE)?;
    Ok(stream)
}

fn resolve(address: &Address) -> Option<SocketAddr> {
    address.to_socket_addr().or_else(|| {
        let host = std::str::from_utf8(&address.host).ok()?;
        (host, address.port).to_socket_addrs().ok()?.next()
    })
}
