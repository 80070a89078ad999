//! Runs `neo-client-core` on blocking sockets, with as few thread wakeups per call as
//! possible: the core sits behind one mutex that every thread takes briefly. A caller
//! submits its operation itself: a cache hit (or anything else the core completes at once)
//! returns without waking any other thread. A request is written to its socket by the
//! caller, which then waits for the answer:
//!
//! - if nobody reads the sockets, the caller becomes the reader (the leader): it polls
//!   every connection of the client, feeds what arrives to the core and fills the slots of
//!   the operations it completes, until its own is complete; the kernel wakes it and
//!   nobody else when its answer arrives (a reader awaiting a read's answer first polls for
//!   it a few microseconds without sleeping while such answers keep coming that fast and
//!   no other thread wants the CPU: `neo_net::spin`);
//! - otherwise it waits on its own slot (a follower); a leader that leaves promotes one
//!   waiting follower, which becomes the reader unless its answer came meanwhile.
//!
//! A reading caller that awaits nothing from the master polls the master's connection
//! only every [`MASTER_READ_DELAY`], so that notifications (other clients' commits) are
//! read in batches rather than waking it one by one; they are only notifications, and the
//! core asks for what it awaits. A background thread reads when no caller has done so
//! for [`IDLE_READER_DELAY`] (invalidations and connection losses then arrive without
//! calls), and feeds the core's deadlines. A caller that finds it reading kicks it (one
//! byte on a socket pair) and waits to be promoted. Connections are opened by short-lived threads, which kick the reader so
//! that it polls the new socket.
//!
//! Invalidations are handed out (queue, then callback) before the completions of the same
//! step, so that a caller woken by a completion already sees earlier invalidations.
//! Bytes for a connection are appended to its queue while the core's lock is held (so they
//! keep the core's order) and written after the lock is released by whichever thread
//! flushes first, so that a slow socket never blocks the core.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use neo_client_core::{
    CacheStats, Client as Core, ClientError, Config, Invalidation, OpId, Operation, Reply,
};
use neo_net::spin::Spinner;
use neo_node::{ConnId, Input, Node, Outbox, Output, Time};
use neo_protocol::{
    encode_message, Address, Decoder, HandshakeMode, Message, HANDSHAKE, MAX_PACKET_SIZE,
};

pub(crate) type Callback = Option<Arc<dyn Fn(&Invalidation) + Send + Sync>>;
type Completion = Result<Reply, ClientError>;

/// Longest sleep of the background thread: the core's deadline can move without telling
/// it (it is told, but this bounds the damage of a missed wakeup).
const TIMER_MAX_SLEEP: Duration = Duration::from_secs(1);

/// How long the sockets stay unread after a caller stopped reading them before the
/// background thread reads them: short enough for invalidations to arrive between calls,
/// long enough that a busy client never meets the background thread.
const IDLE_READER_DELAY: Duration = Duration::from_millis(10);

/// How long a reading caller may leave the master's connection unpolled when it awaits
/// nothing from it: notifications (other clients' commits, mostly) then wake it once per
/// batch instead of once each.
const MASTER_READ_DELAY: Duration = Duration::from_millis(2);

/// Invalidations kept for [`crate::Client::poll_invalidations`] at most: past that (nobody
/// polls, e.g. a user of the callback only), they collapse into one
/// [`Invalidation::All`], which says what a reconnection says (anything may be stale).
pub(crate) const MAX_QUEUED_INVALIDATIONS: usize = 10_000;

/// Appends to the poll queue, keeping it bounded.
fn queue_invalidations(queue: &mut VecDeque<Invalidation>, new: &[Invalidation]) {
    queue.extend(new.iter().cloned());
    if queue.len() > MAX_QUEUED_INVALIDATIONS {
        let last_tid = match queue.back() {
            Some(Invalidation::Objects { tid, .. }) => *tid,
            Some(Invalidation::All { last_tid }) => *last_tid,
            None => return,
        };
        queue.clear();
        queue.push_back(Invalidation::All { last_tid });
    }
}

/// Bytes read from a socket at once.
const READ_CHUNK: usize = 64 * 1024;

/// The core's time at `instant`: seconds since the epoch, counted on the monotonic clock
/// from the wall clock's reading at the first call (the core measures only delays with
/// it). Derived from an `Instant`, so that one reading of the clock serves both the
/// driver's own waits and the core.
pub(crate) fn time_of(instant: Instant) -> Time {
    static ORIGIN: OnceLock<(Instant, Time)> = OnceLock::new();
    let (origin, wall) = *ORIGIN.get_or_init(|| {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        (instant, wall)
    });
    wall + instant.saturating_duration_since(origin).as_secs_f64()
}

pub(crate) fn now() -> Time {
    time_of(Instant::now())
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
    state: Mutex<SlotState>,
    ready: Condvar,
}

#[derive(Default)]
struct SlotState {
    result: Option<Completion>,
    /// The reader left: this caller may become it.
    promoted: bool,
    /// The caller sleeps on the condition variable (a leader's own slot is not waited
    /// on, and waking nobody still costs a system call).
    sleeping: bool,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            state: Mutex::new(SlotState::default()),
            ready: Condvar::new(),
        }
    }

    fn fill(&self, result: Completion) {
        let mut state = lock(&self.state);
        state.result = Some(result);
        if state.sleeping {
            self.ready.notify_one();
        }
    }

    fn promote(&self) {
        let mut state = lock(&self.state);
        state.promoted = true;
        if state.sleeping {
            self.ready.notify_one();
        }
    }

    fn take(&self) -> Option<Completion> {
        lock(&self.state).result.take()
    }
}

/// Who reads the sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reader {
    Nobody,
    Caller,
    Background,
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

thread_local! {
    /// While this thread is corked ([`cork`]): the connections whose writes it put off,
    /// sent at once when uncorked or before it waits for an answer.
    static CORKED: RefCell<Option<Vec<Arc<Conn>>>> = const { RefCell::new(None) };
}

/// Puts off this thread's writes until [`uncork`] or a call that waits for an answer
/// (which uncorks): requests that complete at once, like stores, then go out in one write
/// per connection. False if it was corked already (the outer cork sends).
pub(crate) fn cork() -> bool {
    CORKED.with(|corked| {
        let mut corked = corked.borrow_mut();
        if corked.is_some() {
            return false;
        }
        *corked = Some(Vec::new());
        true
    })
}

/// Writes the connections this thread put off, and uncorks it.
pub(crate) fn uncork() {
    let held = CORKED.with(|corked| corked.borrow_mut().take().unwrap_or_default());
    for conn in held {
        conn.flush();
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
    /// The read side of each connected socket (the reader polls them all).
    readers: HashMap<ConnId, Arc<TcpStream>>,
    /// Changes whenever `readers` does, so that the reader knows when to look again.
    readers_version: u64,
    /// The callers waiting for a completion.
    slots: HashMap<OpId, Arc<Slot>>,
    next_op: OpId,
    closed: bool,
    reader: Reader,
    /// When a caller last stopped reading.
    last_read: Instant,
    /// A kick is on its way to the reader.
    kicked: bool,
    after: AfterLock,
    invalidations: Arc<Mutex<VecDeque<Invalidation>>>,
    callback: Callback,
}

impl State {
    fn feed(&mut self, input: Input) {
        self.feed_at(now(), input);
    }

    /// Like [`State::feed`] with the time already read.
    fn feed_at(&mut self, time: Time, input: Input) {
        self.core.handle(time, input, &mut self.outbox);
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
                    if self.readers.remove(&conn).is_some() {
                        self.readers_version += 1;
                    }
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
            // Queued first, so that a callback's caller polling at once finds them.
            queue_invalidations(&mut lock(&self.invalidations), &invalidations);
            if let Some(callback) = &self.callback {
                for invalidation in &invalidations {
                    callback(invalidation);
                }
            }
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

impl State {
    /// Called when nobody reads any more: promotes a waiting caller, if any.
    fn hand_over(&mut self) {
        debug_assert_eq!(self.reader, Reader::Nobody);
        if let Some(slot) = self.slots.values().next() {
            slot.promote();
        }
    }

    /// Whether the reader must be kicked (it is polling and not yet told).
    fn needs_kick(&mut self) -> bool {
        if self.reader == Reader::Nobody || self.kicked {
            return false;
        }
        self.kicked = true;
        true
    }
}

/// What the reader owns while it reads: the decoders and its buffers.
struct Io {
    decoders: HashMap<ConnId, Decoder>,
    readers: Vec<(ConnId, Arc<TcpStream>)>,
    version: u64,
    pollfds: Vec<libc::pollfd>,
    buffer: Vec<u8>,
    inputs: Vec<(ConnId, Input)>,
    lost: Vec<ConnId>,
    /// When the master's connection was last part of a poll.
    master_polled: Instant,
    /// The clock as [`Shared::read_round`] last read it, after its poll.
    clock: Instant,
    /// Where each polled socket is in `readers` (the master's may be left out).
    polled: Vec<usize>,
    /// Whether a calling reader polls a little before sleeping.
    spin: Spinner,
}

pub(crate) struct Shared {
    state: Mutex<State>,
    /// Wakes the background thread (deadline moved, or closing).
    timer: Condvar,
    /// Held by the reader while it reads.
    io: Mutex<Io>,
    /// Written to interrupt the reader's poll; `kick_rx` is part of every poll.
    kick_tx: UnixStream,
    kick_rx: UnixStream,
    /// Whether a reader waiting for a read's answer may spin (see [`Spinner`]).
    spin: bool,
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
            let put_off = CORKED.with(|corked| match corked.borrow_mut().as_mut() {
                Some(held) => {
                    if !held.iter().any(|c| Arc::ptr_eq(c, &conn)) {
                        held.push(conn.clone());
                    }
                    true
                }
                None => false,
            });
            if !put_off {
                conn.flush();
            }
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
        self.call_then(operation, timeout, || {})
    }

    /// Like [`Shared::call`], calling `sent` once the operation's requests are queued on
    /// their connections (or it completed at once), before waiting: whatever is submitted
    /// after that goes out after them.
    pub(crate) fn call_then(
        self: &Arc<Self>,
        operation: Operation,
        timeout: Duration,
        sent: impl FnOnce(),
    ) -> CallResult {
        let started = Instant::now();
        let deadline = started + timeout;
        // Reads are answered within microseconds by an idle storage: their reader may
        // spin for the answer (commits wait for disks, which spinning would only waste).
        let quick = matches!(
            operation,
            Operation::Load { .. } | Operation::LoadBefore { .. } | Operation::LoadSerial { .. }
        );
        let (submitted, kick) = self.with(|state| {
            if state.closed {
                return (Submitted::Done(Err(ClientError::Closed)), false);
            }
            let op = state.next_op;
            state.next_op += 1;
            state
                .core
                .submit(time_of(started), op, operation, &mut state.outbox);
            if let Some(result) = state.perform(Some(op)) {
                return (Submitted::Done(result), false);
            }
            let slot = Arc::new(Slot::new());
            state.slots.insert(op, slot.clone());
            if state.reader == Reader::Nobody {
                state.reader = Reader::Caller;
                return (Submitted::Lead(op, slot), false);
            }
            // The background reader hands over to waiting callers when kicked.
            let kick = state.reader == Reader::Background && state.needs_kick();
            (Submitted::Follow(op, slot), kick)
        });
        if kick {
            self.kick();
        }
        sent();
        if !matches!(submitted, Submitted::Done(_)) {
            // The answer may depend on requests this thread put off, and while waiting this
            // thread may run the core, whose writes must go at once: uncorked for good.
            uncork();
        }
        match submitted {
            Submitted::Done(result) => CallResult::Done(result),
            Submitted::Lead(op, slot) => self.lead(op, &slot, started, deadline, quick),
            Submitted::Follow(op, slot) => self.follow(op, &slot, deadline, quick),
        }
    }

    /// Reads the sockets until `op` completes, then hands the reading over.
    /// `clock`: a recent reading of the clock. `quick`: the answer is expected within
    /// microseconds (see [`Spinner`]).
    fn lead(
        self: &Arc<Self>,
        op: OpId,
        slot: &Slot,
        clock: Instant,
        deadline: Instant,
        quick: bool,
    ) -> CallResult {
        let mut clock = clock;
        let result = {
            let mut io = lock(&self.io);
            loop {
                if let Some(result) = slot.take() {
                    break Some(result);
                }
                let left = deadline.saturating_duration_since(clock);
                if left.is_zero() {
                    break None;
                }
                self.read_round(&mut io, left, Reading::Caller { quick });
                clock = io.clock;
            }
        };
        self.with(|state| {
            if result.is_none() {
                state.slots.remove(&op);
            }
            state.reader = Reader::Nobody;
            state.last_read = clock;
            state.hand_over();
        });
        match result.or_else(|| slot.take()) {
            Some(result) => CallResult::Done(result),
            None => CallResult::TimedOut,
        }
    }

    /// Waits for `op`'s completion, or to be promoted to reader.
    fn follow(
        self: &Arc<Self>,
        op: OpId,
        slot: &Slot,
        deadline: Instant,
        quick: bool,
    ) -> CallResult {
        loop {
            let mut state = lock(&slot.state);
            loop {
                if let Some(result) = state.result.take() {
                    let promoted = std::mem::take(&mut state.promoted);
                    drop(state);
                    if promoted {
                        // Pass the promotion on: this caller needs no reading any more.
                        self.with(|state| {
                            if state.reader == Reader::Nobody {
                                state.hand_over();
                            }
                        });
                    }
                    return CallResult::Done(result);
                }
                if std::mem::take(&mut state.promoted) {
                    break;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    drop(state);
                    self.with(|state| {
                        state.slots.remove(&op);
                        if state.reader == Reader::Nobody {
                            state.hand_over();
                        }
                    });
                    return match slot.take() {
                        Some(result) => CallResult::Done(result),
                        None => CallResult::TimedOut,
                    };
                }
                state.sleeping = true;
                state = slot
                    .ready
                    .wait_timeout(state, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
                state.sleeping = false;
            }
            drop(state);
            let lead = self.with(|state| {
                if state.reader == Reader::Nobody {
                    state.reader = Reader::Caller;
                    true
                } else {
                    false
                }
            });
            if lead {
                return self.lead(op, slot, Instant::now(), deadline, quick);
            }
        }
    }

    /// One poll of every socket (and of the kick), at most `wait` long; what arrived is
    /// fed to the core. Returns whether the reader was kicked.
    /// A caller (not `background`) leaves the master's connection out of the poll while
    /// it awaits nothing from it, for at most [`MASTER_READ_DELAY`].
    fn read_round(self: &Arc<Self>, io: &mut Io, wait: Duration, reading: Reading) -> bool {
        let background = reading == Reading::Background;
        let (core_deadline, master, lazy) = {
            let state = lock(&self.state);
            if state.readers_version != io.version {
                io.version = state.readers_version;
                io.readers.clear();
                io.readers
                    .extend(state.readers.iter().map(|(&id, s)| (id, s.clone())));
                let readers = &io.readers;
                io.decoders
                    .retain(|id, _| readers.iter().any(|(other, _)| other == id));
                for (id, _) in readers {
                    io.decoders.entry(*id).or_insert_with(|| {
                        Decoder::new(HandshakeMode::Expect).with_max_packet_size(MAX_PACKET_SIZE)
                    });
                }
            }
            let lazy = !background && !state.core.awaits_master();
            (state.core.deadline(), state.core.master_conn(), lazy)
        };
        // The clock is read once before the poll and once after it.
        let started = Instant::now();
        let mut wait = wait;
        if let Some(deadline) = core_deadline {
            wait = wait.min(Duration::from_secs_f64(
                (deadline - time_of(started)).max(0.0),
            ));
        }
        let since_master = started.saturating_duration_since(io.master_polled);
        let skip_master = lazy && since_master < MASTER_READ_DELAY;
        if skip_master {
            wait = wait.min(MASTER_READ_DELAY - since_master);
        } else {
            io.master_polled = started;
        }
        io.pollfds.clear();
        io.polled.clear();
        io.pollfds.push(libc::pollfd {
            fd: self.kick_rx.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        for (index, (id, stream)) in io.readers.iter().enumerate() {
            if skip_master && Some(*id) == master {
                continue;
            }
            io.polled.push(index);
            io.pollfds.push(libc::pollfd {
                fd: stream.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // Rounded up, so that a deadline is never polled for early in a loop.
        let millis = wait.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        let poll = |pollfds: &mut Vec<libc::pollfd>, millis: i32| {
            // SAFETY: `pollfds` is a valid array of `len` pollfd structures, and every fd
            // in it stays open for the call (the kick socket lives in `self`, each stream
            // in an Arc held by `io.readers`).
            unsafe { libc::poll(pollfds.as_mut_ptr(), pollfds.len() as libc::nfds_t, millis) }
        };
        let mut ready = 0;
        let quick = self.spin && reading == Reading::Caller { quick: true };
        if quick && io.spin.wanted() {
            // The answer is likely to come within microseconds (see `Spinner`).
            let pollfds = &mut io.pollfds;
            io.spin.spin(wait, || {
                ready = poll(pollfds, 0);
                ready != 0
            });
        }
        if ready == 0 {
            ready = poll(&mut io.pollfds, millis);
            io.clock = Instant::now();
            if ready > 0 && quick {
                io.spin.slept(io.clock.saturating_duration_since(started));
            }
        } else {
            io.clock = Instant::now();
        }
        if ready < 0 {
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                // Not expected with valid descriptors; do not spin on it.
                tracing::warn!(%error, "poll failed");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let mut kicked = false;
        if ready > 0 {
            if io.pollfds[0].revents != 0 {
                kicked = true;
                let mut drain = [0u8; 64];
                while matches!((&self.kick_rx).read(&mut drain), Ok(n) if n > 0) {}
            }
            let Io {
                decoders,
                readers,
                pollfds,
                buffer,
                inputs,
                lost,
                polled,
                ..
            } = io;
            for (&index, pollfd) in polled.iter().zip(&pollfds[1..]) {
                if pollfd.revents == 0 {
                    continue;
                }
                let (id, stream) = &readers[index];
                let Some(decoder) = decoders.get_mut(id) else {
                    continue;
                };
                // Readable: one read does not block (only the reader reads).
                match (&**stream).read(buffer) {
                    Ok(0) => {
                        tracing::debug!(conn = id, "connection closed by the peer");
                        lost.push(*id);
                        continue;
                    }
                    Ok(n) => decoder.feed(&buffer[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => {
                        tracing::debug!(conn = id, error = %e, "connection lost");
                        lost.push(*id);
                        continue;
                    }
                }
                loop {
                    match decoder.next_message() {
                        Ok(Some(Message { msg_id, packet })) => {
                            inputs.push((*id, Input::received(*id, msg_id, packet)));
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!(conn = id, error = %e, "malformed input, closing");
                            let _ = stream.shutdown(Shutdown::Both);
                            lost.push(*id);
                            break;
                        }
                    }
                }
            }
        }
        if !kicked && io.inputs.is_empty() && io.lost.is_empty() && core_deadline.is_none() {
            return false;
        }
        let Io { inputs, lost, .. } = io;
        let time = time_of(io.clock);
        self.with(|state| {
            if kicked {
                state.kicked = false;
            }
            for (conn, input) in inputs.drain(..) {
                // What a connection the core closed still sends is nobody's.
                if state.conns.contains_key(&conn) {
                    state.feed_at(time, input);
                }
            }
            for conn in lost.drain(..) {
                if state.readers.remove(&conn).is_some() {
                    state.readers_version += 1;
                }
                if state.conns.remove(&conn).is_some() {
                    state.feed_at(time, Input::Closed { conn });
                }
            }
            if state.core.deadline().is_some_and(|d| d <= time) {
                state.feed_at(time, Input::Timer);
            }
        });
        kicked
    }

    /// Interrupts the reader's poll.
    fn kick(&self) {
        let _ = (&self.kick_tx).write(&[1]);
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
            state.readers.clear();
            state.readers_version += 1;
        });
        self.kick();
        self.timer.notify_one();
    }

    /// The thread of one new connection: connects, sends our handshake and what was
    /// queued, and gives the socket to the reader.
    fn connection(self: Arc<Self>, conn: Arc<Conn>, addr: Address) {
        let id = conn.id;
        let stream = match resolve(&addr) {
            Some(socket) => connect(socket),
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot resolve the address",
            )),
        };
        let stream = stream.and_then(|stream| {
            let reader = stream.try_clone()?;
            Ok((stream, reader))
        });
        let (stream, reader) = match stream {
            Ok(pair) => pair,
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
        *lock(&conn.writer) = Some((stream, Vec::new()));
        let reader = Arc::new(reader);
        let (registered, kick) = self.with(|state| {
            if !state.conns.contains_key(&id) {
                return (false, false);
            }
            state.readers.insert(id, reader.clone());
            state.readers_version += 1;
            state.feed(Input::Connected { conn: id });
            (true, state.needs_kick())
        });
        // Sends what the core queued before the connection was up (or, if the core
        // already closed it, shuts the socket down after that).
        conn.flush();
        if !registered {
            let _ = reader.shutdown(Shutdown::Both);
        }
        if kick {
            self.kick();
        }
    }

    /// The background thread: feeds the core's deadlines, and reads the sockets while no
    /// caller has for a while.
    fn background(self: Arc<Self>) {
        loop {
            // Waits until the sockets have been left unread long enough.
            let after = {
                let mut state = lock(&self.state);
                loop {
                    if state.closed {
                        return;
                    }
                    if state.core.deadline().is_some_and(|d| d <= now()) {
                        state.feed(Input::Timer);
                        if !state.after.is_empty() {
                            break Some(std::mem::take(&mut state.after));
                        }
                    }
                    let idle = state.last_read.elapsed();
                    if state.reader == Reader::Nobody
                        && state.slots.is_empty()
                        && idle >= IDLE_READER_DELAY
                    {
                        state.reader = Reader::Background;
                        break None;
                    }
                    let mut wait = if state.reader == Reader::Nobody {
                        IDLE_READER_DELAY.saturating_sub(idle)
                    } else {
                        IDLE_READER_DELAY
                    };
                    wait = wait.max(IDLE_READER_DELAY / 4);
                    if let Some(deadline) = state.core.deadline() {
                        wait = wait.min(Duration::from_secs_f64((deadline - now()).max(0.0)));
                    }
                    state = self
                        .timer
                        .wait_timeout(state, wait)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            };
            if let Some(after) = after {
                self.after(after);
                continue;
            }
            {
                let mut io = lock(&self.io);
                loop {
                    let kicked = self.read_round(&mut io, TIMER_MAX_SLEEP, Reading::Background);
                    let state = lock(&self.state);
                    if state.closed || (kicked && !state.slots.is_empty()) {
                        break;
                    }
                }
            }
            self.with(|state| {
                state.reader = Reader::Nobody;
                state.last_read = Instant::now();
                state.hand_over();
            });
        }
    }
}

/// Who calls [`Shared::read_round`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    Background,
    /// A caller; `quick` when its answer is expected within microseconds.
    Caller {
        quick: bool,
    },
}

/// What submitting left the caller with.
enum Submitted {
    Done(Completion),
    Lead(OpId, Arc<Slot>),
    Follow(OpId, Arc<Slot>),
}

pub(crate) enum CallResult {
    Done(Completion),
    TimedOut,
}

/// Starts the client: the core, fed `Input::Start`, and its background thread.
pub(crate) fn start(
    config: Config,
    invalidations: Arc<Mutex<VecDeque<Invalidation>>>,
    callback: Callback,
    spin: bool,
) -> io::Result<(Arc<Shared>, JoinHandle<()>)> {
    let (kick_tx, kick_rx) = UnixStream::pair()?;
    kick_tx.set_nonblocking(true)?;
    kick_rx.set_nonblocking(true)?;
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            core: Core::new(config),
            outbox: Outbox::new(),
            outputs: Vec::new(),
            conns: HashMap::new(),
            readers: HashMap::new(),
            readers_version: 0,
            slots: HashMap::new(),
            next_op: 1,
            closed: false,
            reader: Reader::Nobody,
            last_read: Instant::now(),
            kicked: false,
            after: AfterLock::default(),
            invalidations,
            callback,
        }),
        timer: Condvar::new(),
        io: Mutex::new(Io {
            decoders: HashMap::new(),
            readers: Vec::new(),
            version: 0,
            pollfds: Vec::new(),
            buffer: vec![0; READ_CHUNK],
            inputs: Vec::new(),
            lost: Vec::new(),
            master_polled: Instant::now(),
            clock: Instant::now(),
            polled: Vec::new(),
            spin: Spinner::new(),
        }),
        kick_tx,
        kick_rx,
        spin,
    });
    let background = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("neo-client".into())
            .spawn(move || shared.background())?
    };
    shared.with(|state| state.feed(Input::Start));
    Ok((shared, background))
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

#[cfg(test)]
mod tests {
    use neo_protocol::{Oid, Tid};

    use super::*;

    #[test]
    fn the_poll_queue_collapses_into_all_when_nobody_polls() {
        let mut queue = VecDeque::new();
        for tid in 1..=MAX_QUEUED_INVALIDATIONS as u64 {
            queue_invalidations(
                &mut queue,
                &[Invalidation::Objects {
                    tid: Tid(tid),
                    oids: vec![Oid(tid)],
                }],
            );
        }
        assert_eq!(queue.len(), MAX_QUEUED_INVALIDATIONS);
        assert_eq!(
            queue.front(),
            Some(&Invalidation::Objects {
                tid: Tid(1),
                oids: vec![Oid(1)]
            })
        );
        let last = MAX_QUEUED_INVALIDATIONS as u64 + 1;
        queue_invalidations(
            &mut queue,
            &[Invalidation::Objects {
                tid: Tid(last),
                oids: vec![Oid(1)],
            }],
        );
        assert_eq!(
            queue.iter().collect::<Vec<_>>(),
            vec![&Invalidation::All {
                last_tid: Tid(last)
            }]
        );
        // Later ones queue after it, in order.
        let next = Invalidation::Objects {
            tid: Tid(last + 1),
            oids: vec![Oid(2)],
        };
        queue_invalidations(&mut queue, std::slice::from_ref(&next));
        assert_eq!(queue.back(), Some(&next));
        assert_eq!(queue.len(), 2);
    }
}
