//! One NEO connection: the handle the node's thread uses to send, and the tokio task that
//! reads, decodes, correlates answers with requests and writes.
//!
//! Message ids are allocated by the handle (one counter per connection, for requests and
//! notifications, wrapping at 2^32). A request's expected answer is recorded before the
//! request is queued, so an answer can never arrive before its record. Answers are matched
//! by msg_id, in any order; notifications that reuse a pending request's id (replication
//! streams) are delivered as ordinary packets and leave the request pending.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use neo_protocol::{
    encode_message, DecodeError, Decoder, ErrorCode, HandshakeMode, Message, Packet, PacketKind,
    HANDSHAKE, RESPONSE_MASK,
};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc as tokio_mpsc;

use crate::poller::Sink;
use crate::socket::BoxedStream;
use crate::{ConnectionId, Event};

/// Writes are gathered up to this size before a syscall; larger packets go out alone.
const WRITE_BATCH: usize = 64 * 1024;

/// Why a packet could not be queued.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SendError {
    #[error("the connection is closed")]
    Closed,
    #[error("{0} is not a request (it expects no answer)")]
    NotARequest(&'static str),
    #[error("{0} is not an answer")]
    NotAnAnswer(&'static str),
    #[error("{0} is an answer, not a request or notification")]
    IsAnAnswer(&'static str),
    #[error("encoded packet of {size} bytes is over the limit of {max}")]
    TooLarge { size: usize, max: usize },
}

/// Why a connection ended; every close is reported once, with one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The node closed it (after sending what was queued).
    Local,
    /// Every handle was dropped.
    Dropped,
    /// The peer closed it between packets.
    PeerClosed,
    /// The peer closed it in the middle of a packet or of the handshake.
    PeerClosedMidPacket { buffered: usize },
    /// Reading or writing failed.
    Io(String),
    /// Bad bytes from the peer: malformed msgpack, unknown code or ext type, oversized
    /// packet, wrong handshake.
    Decode(DecodeError),
    /// A well-formed packet that breaks the protocol (an answer nobody asked for); the peer
    /// was sent `Error(PROTOCOL_ERROR)` first.
    Protocol(String),
    /// The whole network layer is shutting down.
    Shutdown,
}

impl CloseReason {
    /// Whether this close is the peer's fault (logged as a warning).
    pub fn is_peer_error(&self) -> bool {
        matches!(
            self,
            CloseReason::Decode(_)
                | CloseReason::Protocol(_)
                | CloseReason::PeerClosedMidPacket { .. }
        )
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Local => f.write_str("closed by this node"),
            CloseReason::Dropped => f.write_str("all handles dropped"),
            CloseReason::PeerClosed => f.write_str("closed by the peer"),
            CloseReason::PeerClosedMidPacket { buffered } => {
                write!(
                    f,
                    "closed by the peer in the middle of a packet ({buffered} bytes)"
                )
            }
            CloseReason::Io(e) => write!(f, "I/O error: {e}"),
            CloseReason::Decode(e) => write!(f, "malformed input {e}"),
            CloseReason::Protocol(e) => write!(f, "protocol error: {e}"),
            CloseReason::Shutdown => f.write_str("network shutdown"),
        }
    }
}

/// A request waiting for its answer.
#[derive(Debug, Clone, Copy)]
struct Pending {
    /// The code of the normal answer; Error (0x8000) is always accepted too.
    answer_code: u16,
    context: u64,
}

pub(crate) enum Command {
    Send(Bytes),
    Close(CloseReason),
}

pub(crate) struct Shared {
    pub(crate) id: ConnectionId,
    pub(crate) peer: SocketAddr,
    next_msg_id: AtomicU32,
    pending: Mutex<HashMap<u32, Pending>>,
    pub(crate) max_packet_size: usize,
    /// Writes from the sending thread itself, without waking the connection task.
    direct: Mutex<Direct>,
}

/// Whether the thread that sends may write to the socket itself: a packet then leaves
/// without a hop through the connection task (which costs a wakeup of a tokio worker
/// per answer). Every write, direct or by the task, happens while this says who may
/// write, so that the byte stream keeps the order of the sends.
struct Direct {
    /// The socket, when it carries plain TCP and while the connection task keeps it open.
    fd: Option<RawFd>,
    /// The connection task has bytes to write (or the handshake, or a close): a direct
    /// write now would overtake them.
    busy: bool,
}

/// The node's side of a connection: cheap to clone, usable from any thread. Dropping every
/// handle closes the connection.
#[derive(Clone)]
pub struct ConnectionHandle {
    shared: Arc<Shared>,
    commands: tokio_mpsc::UnboundedSender<Command>,
}

impl fmt::Debug for ConnectionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ConnectionHandle({} {})",
            self.shared.id, self.shared.peer
        )
    }
}

impl ConnectionHandle {
    pub fn id(&self) -> ConnectionId {
        self.shared.id
    }

    /// The peer's address (for an outgoing connection, the address it connects to).
    pub fn peer_addr(&self) -> SocketAddr {
        self.shared.peer
    }

    /// Sends a request; its answer (or Error) comes back as [`Event::Answer`] with `context`.
    /// Returns the request's msg_id.
    pub fn ask(&self, packet: impl Into<Packet>, context: u64) -> Result<u32, SendError> {
        let packet = packet.into();
        let answer_code = match packet.kind() {
            PacketKind::Request { answer } => answer,
            PacketKind::RequestAnsweredByError => RESPONSE_MASK,
            _ => return Err(SendError::NotARequest(packet.name())),
        };
        let msg_id = self.shared.next_msg_id.fetch_add(1, Ordering::Relaxed);
        let bytes = self.encode(msg_id, &packet)?;
        self.lock_pending().insert(
            msg_id,
            Pending {
                answer_code,
                context,
            },
        );
        self.queue(bytes).inspect_err(|_| {
            self.lock_pending().remove(&msg_id);
        })?;
        Ok(msg_id)
    }

    /// Sends a request under a msg_id the node chose (sans-IO nodes number their own
    /// packets); do not mix with [`ConnectionHandle::ask`] on one connection.
    pub fn ask_with_id(
        &self,
        msg_id: u32,
        packet: impl Into<Packet>,
        context: u64,
    ) -> Result<(), SendError> {
        let packet = packet.into();
        let answer_code = match packet.kind() {
            PacketKind::Request { answer } => answer,
            PacketKind::RequestAnsweredByError => RESPONSE_MASK,
            _ => return Err(SendError::NotARequest(packet.name())),
        };
        let bytes = self.encode(msg_id, &packet)?;
        self.lock_pending().insert(
            msg_id,
            Pending {
                answer_code,
                context,
            },
        );
        self.queue(bytes).inspect_err(|_| {
            self.lock_pending().remove(&msg_id);
        })
    }

    /// Sends a packet that expects no answer, with a new msg_id (returned). Any non-answer
    /// kind is allowed: NEO/py sends Truncate one-way from master to storage.
    pub fn notify(&self, packet: impl Into<Packet>) -> Result<u32, SendError> {
        let packet = packet.into();
        if packet.kind() == PacketKind::Answer {
            return Err(SendError::IsAnAnswer(packet.name()));
        }
        let msg_id = self.shared.next_msg_id.fetch_add(1, Ordering::Relaxed);
        self.queue(self.encode(msg_id, &packet)?)?;
        Ok(msg_id)
    }

    /// Sends a notification under the msg_id of a request being answered: the replication
    /// streams (AddTransaction, AddObject) do this.
    pub fn notify_with_id(&self, msg_id: u32, packet: impl Into<Packet>) -> Result<(), SendError> {
        let packet = packet.into();
        if packet.kind() == PacketKind::Answer {
            return Err(SendError::IsAnAnswer(packet.name()));
        }
        self.queue(self.encode(msg_id, &packet)?)
    }

    /// Answers the request that came with `msg_id` (answers may go in any order).
    pub fn answer(&self, msg_id: u32, packet: impl Into<Packet>) -> Result<(), SendError> {
        let packet = packet.into();
        if packet.kind() != PacketKind::Answer {
            return Err(SendError::NotAnAnswer(packet.name()));
        }
        self.queue(self.encode(msg_id, &packet)?)
    }

    /// Encodes a packet under a msg_id the node chose and appends it to `out`, to be sent
    /// later with others by [`ConnectionHandle::send_encoded`] (one write for a batch of
    /// packets). What the packet's kind says is done as by the other methods: a request's
    /// answer is expected from now on (`context` comes back with it); a notification or
    /// an answer is only encoded.
    pub fn encode_with_id(
        &self,
        msg_id: u32,
        packet: &Packet,
        context: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), SendError> {
        let start = out.len();
        encode_message(out, msg_id, packet);
        let size = out.len() - start;
        if size > self.shared.max_packet_size {
            out.truncate(start);
            return Err(SendError::TooLarge {
                size,
                max: self.shared.max_packet_size,
            });
        }
        let answer_code = match packet.kind() {
            PacketKind::Request { answer } => answer,
            PacketKind::RequestAnsweredByError => RESPONSE_MASK,
            PacketKind::Notification | PacketKind::Answer => return Ok(()),
        };
        self.lock_pending().insert(
            msg_id,
            Pending {
                answer_code,
                context,
            },
        );
        Ok(())
    }

    /// Sends bytes made by [`ConnectionHandle::encode_with_id`], after what was queued
    /// before.
    pub fn send_encoded(&self, bytes: Vec<u8>) -> Result<(), SendError> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.queue(Bytes::from(bytes))
    }

    /// Like [`ConnectionHandle::send_encoded`], from a buffer the caller keeps and reuses:
    /// the bytes are copied only when the socket does not take them all at once.
    pub fn send_encoded_slice(&self, bytes: &[u8]) -> Result<(), SendError> {
        if bytes.is_empty() {
            return Ok(());
        }
        let mut direct = lock(&self.shared.direct);
        let mut rest = bytes;
        if let (Some(fd), false) = (direct.fd, direct.busy) {
            let written = write_now(fd, bytes);
            if written == bytes.len() {
                return Ok(());
            }
            // As in `queue`: the task writes the rest when the socket is writable.
            rest = &bytes[written..];
        }
        direct.busy = true;
        self.commands
            .send(Command::Send(Bytes::copy_from_slice(rest)))
            .map_err(|_| SendError::Closed)
    }

    /// Closes the connection after the packets queued so far are sent.
    pub fn close(&self) {
        push_command(
            &self.shared,
            &self.commands,
            Command::Close(CloseReason::Local),
        );
    }

    /// How many requests sent on this connection still wait for their answer.
    pub fn pending_requests(&self) -> usize {
        self.lock_pending().len()
    }

    pub fn is_closed(&self) -> bool {
        self.commands.is_closed()
    }

    fn encode(&self, msg_id: u32, packet: &Packet) -> Result<Bytes, SendError> {
        let mut out = Vec::new();
        encode_message(&mut out, msg_id, packet);
        if out.len() > self.shared.max_packet_size {
            return Err(SendError::TooLarge {
                size: out.len(),
                max: self.shared.max_packet_size,
            });
        }
        Ok(Bytes::from(out))
    }

    fn queue(&self, mut bytes: Bytes) -> Result<(), SendError> {
        let mut direct = lock(&self.shared.direct);
        if let (Some(fd), false) = (direct.fd, direct.busy) {
            let written = write_now(fd, &bytes);
            if written == bytes.len() {
                return Ok(());
            }
            // The socket buffer is full (or the socket failed): the task writes the rest
            // when the socket is writable (or meets the error and closes).
            let _ = bytes.split_to(written);
        }
        direct.busy = true;
        self.commands
            .send(Command::Send(bytes))
            .map_err(|_| SendError::Closed)
    }

    /// What a [`crate::Poller`] needs to read this connection from `fd` (a duplicate of
    /// the socket). It holds no strong sender: dropping every handle still closes.
    pub(crate) fn reader_parts(&self, fd: std::os::fd::OwnedFd) -> crate::poller::ReaderParts {
        crate::poller::ReaderParts {
            fd,
            shared: self.shared.clone(),
            commands: self.commands.downgrade(),
        }
    }

    /// Lets the sending thread write to this plain TCP socket itself (see [`Direct`]).
    pub(crate) fn set_direct_fd(&self, fd: RawFd) {
        lock(&self.shared.direct).fd = Some(fd);
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Pending>> {
        lock(&self.shared.pending)
    }
}

/// Queues a command for the connection task; direct writes stop until it is done.
pub(crate) fn push_command(
    shared: &Shared,
    commands: &tokio_mpsc::UnboundedSender<Command>,
    command: Command,
) {
    let mut direct = lock(&shared.direct);
    direct.busy = true;
    let _ = commands.send(command);
}

/// Writes what the socket takes now, without blocking; returns how many bytes it took
/// (0 on any error: the connection task meets it again and closes).
fn write_now(fd: RawFd, bytes: &[u8]) -> usize {
    // SAFETY: the connection task keeps the socket open while `Direct::fd` is set, and
    // this is only called with the `Direct` lock held.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let socket = socket2::SockRef::from(&fd);
    let mut written = 0;
    while written < bytes.len() {
        match socket.send(&bytes[written..]) {
            Ok(0) => break,
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    written
}

/// A poisoned lock only means another thread panicked while holding it; the map itself is
/// still consistent (each operation is a single insert or remove).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Creates a handle and the receiving end of its command queue.
pub(crate) fn new_connection(
    id: ConnectionId,
    peer: SocketAddr,
    max_packet_size: usize,
) -> (ConnectionHandle, tokio_mpsc::UnboundedReceiver<Command>) {
    let (commands, receiver) = tokio_mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        id,
        peer,
        next_msg_id: AtomicU32::new(0),
        pending: Mutex::new(HashMap::new()),
        max_packet_size,
        direct: Mutex::new(Direct {
            fd: None,
            busy: true,
        }),
    });
    (ConnectionHandle { shared, commands }, receiver)
}

/// What the connection task needs besides the stream.
pub(crate) struct ConnectionTask {
    pub(crate) handle: ConnectionHandle,
    pub(crate) commands: tokio_mpsc::UnboundedReceiver<Command>,
    pub(crate) events: Sink,
    pub(crate) shutdown: tokio::sync::watch::Receiver<bool>,
    /// The node's thread reads this connection itself (a [`crate::Poller`]): the task
    /// only writes and closes.
    pub(crate) read_elsewhere: bool,
}

impl ConnectionTask {
    /// Runs the connection until it closes, then reports [`Event::Closed`] once.
    pub(crate) async fn run(self, mut stream: BoxedStream) {
        let ConnectionTask {
            handle,
            commands,
            events,
            mut shutdown,
            read_elsewhere,
        } = self;
        let shared = handle.shared.clone();
        // The reader only needs a weak sender: when the node drops every handle, the command
        // queue closes and the writer ends the connection.
        let weak_commands = handle.commands.downgrade();
        drop(handle);
        // Each end sends its handshake first, without waiting for the peer's; writing it
        // before reading means a peer that sends garbage still gets it, as from NEO/py.
        let reason = match stream.write_all(&HANDSHAKE).await {
            Err(e) => CloseReason::Io(e.to_string()),
            Ok(()) => {
                // The halves outlive the loops: the socket must stay open until direct
                // writes are stopped.
                let (mut read_half, mut write_half) = tokio::io::split(stream);
                // Declared after the halves, so dropped before them even if this task is
                // cancelled: no direct write may reach a closed (or reused) descriptor.
                let _stop = StopDirect(&shared);
                let reading = async {
                    if read_elsewhere {
                        std::future::pending().await
                    } else {
                        read_loop(&mut read_half, &shared, weak_commands, &events).await
                    }
                };
                let reason = tokio::select! {
                    reason = reading => reason,
                    reason = write_loop(&mut write_half, commands, &shared) => reason,
                    _ = shutdown.wait_for(|stop| *stop) => CloseReason::Shutdown,
                };
                reason
            }
        };
        stop_direct(&shared);
        if reason.is_peer_error() {
            tracing::warn!(conn = shared.id, peer = %shared.peer, %reason, "connection closed");
        } else {
            tracing::debug!(conn = shared.id, peer = %shared.peer, %reason, "connection closed");
        }
        let mut pending: Vec<(u32, u64)> = lock(&shared.pending)
            .drain()
            .map(|(msg_id, p)| (msg_id, p.context))
            .collect();
        pending.sort_unstable();
        events.send(Event::Closed {
            conn: shared.id,
            reason,
            pending,
        });
    }
}

/// No direct write from now on: the socket is about to close.
fn stop_direct(shared: &Shared) {
    let mut direct = lock(&shared.direct);
    direct.fd = None;
    direct.busy = true;
}

/// Calls [`stop_direct`] when dropped.
struct StopDirect<'a>(&'a Shared);

impl Drop for StopDirect<'_> {
    fn drop(&mut self) {
        stop_direct(self.0);
    }
}

async fn write_loop(
    stream: &mut WriteHalf<BoxedStream>,
    mut commands: tokio_mpsc::UnboundedReceiver<Command>,
    shared: &Shared,
) -> CloseReason {
    let mut batch: Vec<u8> = Vec::with_capacity(WRITE_BATCH);
    loop {
        let queued = {
            let mut direct = lock(&shared.direct);
            match commands.try_recv() {
                Ok(command) => Some(command),
                Err(_) => {
                    // Nothing left to write: the sending thread may write directly until
                    // it queues something again (under the same lock).
                    direct.busy = false;
                    None
                }
            }
        };
        let command = match queued {
            Some(command) => command,
            None => match commands.recv().await {
                Some(command) => command,
                None => {
                    let _ = stream.shutdown().await;
                    return CloseReason::Dropped;
                }
            },
        };
        // Gather what is already queued into one write.
        let mut next = Some(command);
        let mut close = None;
        while let Some(command) = next.take() {
            match command {
                Command::Send(bytes) if bytes.len() >= WRITE_BATCH => {
                    if let Err(e) = flush(stream, &mut batch).await {
                        return e;
                    }
                    if let Err(e) = stream.write_all(&bytes).await {
                        return CloseReason::Io(e.to_string());
                    }
                }
                Command::Send(bytes) => {
                    batch.extend_from_slice(&bytes);
                    if batch.len() >= WRITE_BATCH {
                        if let Err(e) = flush(stream, &mut batch).await {
                            return e;
                        }
                    }
                }
                Command::Close(reason) => {
                    close = Some(reason);
                    break;
                }
            }
            next = commands.try_recv().ok();
        }
        if let Err(e) = flush(stream, &mut batch).await {
            return e;
        }
        if let Some(reason) = close {
            let _ = stream.shutdown().await;
            return reason;
        }
    }
}

async fn flush(
    stream: &mut WriteHalf<BoxedStream>,
    batch: &mut Vec<u8>,
) -> Result<(), CloseReason> {
    if batch.is_empty() {
        return Ok(());
    }
    let result = stream.write_all(batch).await;
    batch.clear();
    result.map_err(|e| CloseReason::Io(e.to_string()))
}

async fn read_loop(
    stream: &mut ReadHalf<BoxedStream>,
    shared: &Shared,
    commands: tokio_mpsc::WeakUnboundedSender<Command>,
    events: &Sink,
) -> CloseReason {
    let mut decoder =
        Decoder::new(HandshakeMode::Expect).with_max_packet_size(shared.max_packet_size);
    loop {
        loop {
            match decoder.next_message() {
                Ok(Some(message)) => {
                    if let Err(reason) =
                        dispatch(message, shared, &commands, &mut |event| events.send(event))
                    {
                        // Let the writer send the Error packet, then close; stop reading.
                        if let Some(commands) = commands.upgrade() {
                            push_command(shared, &commands, Command::Close(reason.clone()));
                            return std::future::pending().await;
                        }
                        return reason;
                    }
                }
                Ok(None) => break,
                Err(e) => return CloseReason::Decode(e),
            }
        }
        let buffer = decoder.buffer_mut();
        if buffer.capacity() - buffer.len() < 16 * 1024 {
            buffer.reserve(64 * 1024);
        }
        match stream.read_buf(decoder.buffer_mut()).await {
            Ok(0) if decoder.buffered() > 0 => {
                return CloseReason::PeerClosedMidPacket {
                    buffered: decoder.buffered(),
                }
            }
            Ok(0) => return CloseReason::PeerClosed,
            Ok(_) => {}
            Err(e) => return CloseReason::Io(e.to_string()),
        }
    }
}

/// Routes one packet: answers to their pending request, everything else to the node.
pub(crate) fn dispatch(
    message: Message,
    shared: &Shared,
    commands: &tokio_mpsc::WeakUnboundedSender<Command>,
    events: &mut dyn FnMut(Event),
) -> Result<(), CloseReason> {
    let Message { msg_id, packet } = message;
    let code = packet.code();
    if code & RESPONSE_MASK == 0 {
        events(Event::Packet {
            conn: shared.id,
            msg_id,
            packet,
        });
        return Ok(());
    }
    let mut pending = lock(&shared.pending);
    let expected = pending.get(&msg_id).copied();
    match (&packet, expected) {
        (_, Some(p)) if code == p.answer_code || matches!(packet, Packet::Error(_)) => {
            pending.remove(&msg_id);
            drop(pending);
            events(Event::Answer {
                conn: shared.id,
                msg_id,
                context: Some(p.context),
                packet,
            });
            Ok(())
        }
        // NEO/py peers accept an Error that matches no request (its admin sends one under a
        // fresh id for an out-of-range AskPartitionList): pass it on without a context.
        (Packet::Error(_), None) => {
            drop(pending);
            events(Event::Answer {
                conn: shared.id,
                msg_id,
                context: None,
                packet,
            });
            Ok(())
        }
        _ => {
            drop(pending);
            let why = match expected {
                Some(_) => format!("unexpected answer {} to request #{msg_id}", packet.name()),
                None => format!("answer {} #{msg_id} to no pending request", packet.name()),
            };
            // Like NEO/py: tell the peer, then close.
            let mut out = Vec::new();
            encode_message(
                &mut out,
                msg_id,
                &Packet::error(ErrorCode::ProtocolError, why.clone()),
            );
            if let Some(commands) = commands.upgrade() {
                push_command(shared, &commands, Command::Send(Bytes::from(out)));
            }
            Err(CloseReason::Protocol(why))
        }
    }
}
