//! The node thread's own reading of plain TCP connections ([`Poller`]): a request then
//! reaches the node without a hop through a tokio worker and a channel, which cost two
//! thread wakeups per lone request.
//!
//! Tokio still accepts, connects, writes what a direct write could not, and closes. Once a
//! plain connection's handshake is sent, its task hands a duplicate of the socket to the
//! poller (with the Accepted or Connected event, so that no packet can come before it); the
//! node's thread then waits in `epoll_wait` on those sockets and on an eventfd that tokio
//! writes when it sends an event while the node's thread sleeps. Bad input, an answer to
//! nothing or the peer's close is turned into a close command for the connection task,
//! which reports [`Event::Closed`] as always; the reader stops at once, so no packet of a
//! connection follows its Closed event. A caller that expects the next event within
//! microseconds (a storage serving reads) may have the thread poll before it sleeps.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use neo_protocol::{Decoder, HandshakeMode};
use tokio::sync::mpsc as tokio_mpsc;

use crate::connection::{dispatch, push_command, Command, Shared};
use crate::id_map::IdMap;
use crate::spin::{Spinner, Spun};
use crate::{CloseReason, ConnectionId, Event};

/// Bytes asked of the socket per read; a read that fills it is followed by another
/// readiness report (level-triggered), so a busy connection does not starve the others.
const READ_SIZE: usize = 64 * 1024;

/// What tokio sends to a [`Poller`].
pub(crate) enum Internal {
    Event(Event),
    /// A plain TCP connection to read from this thread, then the event announcing it.
    Register {
        reader: Box<ReaderParts>,
        event: Event,
    },
}

/// What the poller needs to read a connection.
pub(crate) struct ReaderParts {
    pub(crate) fd: OwnedFd,
    pub(crate) shared: Arc<Shared>,
    pub(crate) commands: tokio_mpsc::WeakUnboundedSender<Command>,
}

/// Wakes the poller's thread when it sleeps in `epoll_wait`.
pub(crate) struct Wake {
    eventfd: OwnedFd,
    sleeping: AtomicBool,
}

/// The sending end of events towards the node's thread: a plain channel, or the channel
/// of a [`Poller`] with its wakeup.
#[derive(Clone)]
pub(crate) enum Sink {
    Channel(mpsc::Sender<Event>),
    Poller {
        tx: mpsc::Sender<Internal>,
        wake: Arc<Wake>,
    },
}

impl Sink {
    pub(crate) fn send(&self, event: Event) {
        match self {
            Sink::Channel(tx) => {
                let _ = tx.send(event);
            }
            Sink::Poller { tx, wake } => {
                let _ = tx.send(Internal::Event(event));
                wake.wake();
            }
        }
    }

    /// Whether the node's thread reads plain connections itself.
    pub(crate) fn reads_directly(&self) -> bool {
        matches!(self, Sink::Poller { .. })
    }

    /// Hands a connection to the poller with the event announcing it.
    pub(crate) fn register(&self, reader: ReaderParts, event: Event) {
        match self {
            Sink::Channel(tx) => {
                let _ = tx.send(event);
            }
            Sink::Poller { tx, wake } => {
                let _ = tx.send(Internal::Register {
                    reader: Box::new(reader),
                    event,
                });
                wake.wake();
            }
        }
    }
}

impl Wake {
    fn wake(&self) {
        // Pairs with the fence of `Poller::wait`: either it sees the message, or this
        // sees that it sleeps.
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::SeqCst) {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a live u64 to an eventfd we own.
            unsafe {
                libc::write(
                    self.eventfd.as_raw_fd(),
                    (&one as *const u64).cast(),
                    std::mem::size_of::<u64>(),
                );
            }
        }
    }
}

/// One connection read by the poller.
struct Reader {
    fd: OwnedFd,
    shared: Arc<Shared>,
    commands: tokio_mpsc::WeakUnboundedSender<Command>,
    decoder: Decoder,
}

/// The epoll token of the eventfd (connection ids start at 1).
const WAKE_TOKEN: u64 = 0;

/// The node's receiving end of events when it reads plain connections itself. It has the
/// methods of `std::sync::mpsc::Receiver` that nodes use.
pub struct Poller {
    state: RefCell<State>,
}

struct State {
    rx: mpsc::Receiver<Internal>,
    wake: Arc<Wake>,
    epoll: OwnedFd,
    readers: IdMap<ConnectionId, Reader>,
    /// Events read from sockets, delivered before anything else.
    queue: VecDeque<Event>,
    ready: Vec<libc::epoll_event>,
    /// Whether to poll a little before sleeping, when the caller allows it.
    spinner: Spinner,
}

impl Poller {
    pub(crate) fn new() -> io::Result<(Poller, Sink)> {
        // SAFETY: plain syscalls; the descriptors are checked and then owned.
        let (epoll, eventfd) = unsafe {
            let epoll = libc::epoll_create1(libc::EPOLL_CLOEXEC);
            if epoll < 0 {
                return Err(io::Error::last_os_error());
            }
            let epoll = OwnedFd::from_raw_fd(epoll);
            let eventfd = libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK);
            if eventfd < 0 {
                return Err(io::Error::last_os_error());
            }
            (epoll, OwnedFd::from_raw_fd(eventfd))
        };
        epoll_add(epoll.as_raw_fd(), eventfd.as_raw_fd(), WAKE_TOKEN)?;
        let (tx, rx) = mpsc::channel();
        let wake = Arc::new(Wake {
            eventfd,
            sleeping: AtomicBool::new(false),
        });
        let poller = State {
            rx,
            wake: wake.clone(),
            epoll,
            readers: IdMap::default(),
            queue: VecDeque::new(),
            ready: vec![libc::epoll_event { events: 0, u64: 0 }; 64],
            spinner: Spinner::new(),
        };
        let poller = Poller {
            state: RefCell::new(poller),
        };
        Ok((poller, Sink::Poller { tx, wake }))
    }

    /// The next event if one is there now.
    pub fn try_recv(&self) -> Result<Event, mpsc::TryRecvError> {
        self.state.borrow_mut().try_recv()
    }

    /// The next event already read from a socket or sent by tokio, without asking the
    /// sockets for more (a syscall): a loop that takes events until none is left calls
    /// this, and [`Poller::try_recv`] once before deciding that nothing waits.
    pub fn try_recv_queued(&self) -> Result<Event, mpsc::TryRecvError> {
        self.state
            .borrow_mut()
            .next_ready()?
            .ok_or(mpsc::TryRecvError::Empty)
    }

    /// The next event, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Event, mpsc::RecvTimeoutError> {
        self.state.borrow_mut().recv_timeout(timeout, false)
    }

    /// Like [`Poller::recv_timeout`] for a caller that expects the next event within
    /// microseconds: the thread polls a little before sleeping, while such waits keep
    /// being that short and no other thread wants the CPU ([`crate::spin`]).
    pub fn recv_timeout_spinning(
        &self,
        timeout: Duration,
    ) -> Result<Event, mpsc::RecvTimeoutError> {
        self.state.borrow_mut().recv_timeout(timeout, true)
    }
}

impl State {
    fn try_recv(&mut self) -> Result<Event, mpsc::TryRecvError> {
        if let Some(event) = self.next_ready()? {
            return Ok(event);
        }
        self.poll(0);
        self.next_ready()?.ok_or(mpsc::TryRecvError::Empty)
    }

    fn recv_timeout(
        &mut self,
        timeout: Duration,
        spin: bool,
    ) -> Result<Event, mpsc::RecvTimeoutError> {
        // The clock is read once per wait, not for an event that is already there.
        let mut deadline = None;
        loop {
            match self.next_ready() {
                Ok(Some(event)) => return Ok(event),
                Ok(None) => {}
                Err(_) => return Err(mpsc::RecvTimeoutError::Disconnected),
            }
            let now = Instant::now();
            let deadline = *deadline.get_or_insert(now + timeout);
            let left = deadline.saturating_duration_since(now);
            if left.is_zero() {
                return Err(mpsc::RecvTimeoutError::Timeout);
            }
            self.wait(left, spin);
        }
    }

    /// The next event: read from a socket before, else from tokio; `Ok(None)` when none.
    fn next_ready(&mut self) -> Result<Option<Event>, mpsc::TryRecvError> {
        if let Some(event) = self.queue.pop_front() {
            return Ok(Some(event));
        }
        match self.rx.try_recv() {
            Ok(Internal::Event(event)) => {
                if let Event::Closed { conn, .. } = &event {
                    self.forget(*conn);
                }
                Ok(Some(event))
            }
            Ok(Internal::Register { reader, event }) => {
                let ReaderParts {
                    fd,
                    shared,
                    commands,
                } = *reader;
                let id = shared.id;
                if let Err(e) = epoll_add(self.epoll.as_raw_fd(), fd.as_raw_fd(), id) {
                    // The task reads nothing: close the connection rather than hang.
                    if let Some(commands) = commands.upgrade() {
                        push_command(
                            &shared,
                            &commands,
                            Command::Close(CloseReason::Io(e.to_string())),
                        );
                    }
                } else {
                    let decoder = Decoder::new(HandshakeMode::Expect)
                        .with_max_packet_size(shared.max_packet_size);
                    self.readers.insert(
                        id,
                        Reader {
                            fd,
                            shared,
                            commands,
                            decoder,
                        },
                    );
                }
                Ok(Some(event))
            }
            Err(mpsc::TryRecvError::Empty) => Ok(None),
            Err(mpsc::TryRecvError::Disconnected) => Err(mpsc::TryRecvError::Disconnected),
        }
    }

    /// Sleeps until a socket is readable or tokio sends something (at most `timeout`);
    /// with `spin`, polls first while recent waits were short (see [`Spinner`]).
    fn wait(&mut self, timeout: Duration, spin: bool) {
        if spin && self.spinner.wanted() {
            let mut spinner = std::mem::take(&mut self.spinner);
            let spun = spinner.spin(timeout, || {
                self.poll(0);
                if self.queue.is_empty() {
                    // Tokio's events: `sleeping` is false, so it does not write the
                    // eventfd; the channel is looked at here.
                    match self.next_ready() {
                        Ok(Some(event)) => self.queue.push_front(event),
                        Ok(None) => {}
                        Err(_) => return true,
                    }
                }
                !self.queue.is_empty()
            });
            self.spinner = spinner;
            if spun == Spun::Ready {
                return;
            }
        }
        let started = Instant::now();
        self.wake.sleeping.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        // Anything sent before the flag was seen must not wait for the timeout. Peeking
        // takes it: it is put back at the front by handling it here.
        match self.next_ready() {
            Ok(Some(event)) => {
                self.wake.sleeping.store(false, Ordering::SeqCst);
                self.queue.push_front(event);
                return;
            }
            Ok(None) => {}
            Err(_) => {
                self.wake.sleeping.store(false, Ordering::SeqCst);
                return;
            }
        }
        // Rounded up, so that a short deadline does not become a busy loop.
        let millis = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        self.poll(millis);
        self.wake.sleeping.store(false, Ordering::SeqCst);
        if spin && !self.queue.is_empty() {
            self.spinner.slept(started.elapsed());
        }
    }

    /// Waits at most `millis` for readiness and reads every ready socket.
    fn poll(&mut self, millis: i32) {
        // SAFETY: the buffer holds `ready.len()` initialised entries.
        let n = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                self.ready.as_mut_ptr(),
                self.ready.len() as i32,
                millis,
            )
        };
        if n <= 0 {
            return;
        }
        for i in 0..n as usize {
            let token = self.ready[i].u64;
            if token == WAKE_TOKEN {
                let mut value: u64 = 0;
                // SAFETY: reads 8 bytes into a live u64 from a nonblocking eventfd.
                unsafe {
                    libc::read(
                        self.wake.eventfd.as_raw_fd(),
                        (&mut value as *mut u64).cast(),
                        std::mem::size_of::<u64>(),
                    );
                }
                continue;
            }
            self.read(token);
        }
    }

    /// Reads what one connection has and queues its packets.
    fn read(&mut self, id: ConnectionId) {
        let Some(reader) = self.readers.get_mut(&id) else {
            return;
        };
        let buffer = reader.decoder.buffer_mut();
        if buffer.capacity() - buffer.len() < READ_SIZE / 4 {
            buffer.reserve(READ_SIZE);
        }
        let spare = buffer.spare_capacity_mut();
        // SAFETY: reads at most `spare.len()` bytes into the buffer's spare capacity.
        let n = unsafe {
            libc::recv(
                reader.fd.as_raw_fd(),
                spare.as_mut_ptr().cast(),
                spare.len(),
                0,
            )
        };
        let close = if n < 0 {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => return,
                _ => Some(CloseReason::Io(e.to_string())),
            }
        } else if n == 0 {
            Some(match reader.decoder.buffered() {
                0 => CloseReason::PeerClosed,
                buffered => CloseReason::PeerClosedMidPacket { buffered },
            })
        } else {
            // SAFETY: the kernel initialised these `n` bytes.
            unsafe { buffer.set_len(buffer.len() + n as usize) };
            None
        };
        let close = match close {
            Some(reason) => Some(reason),
            None => loop {
                match reader.decoder.next_message() {
                    Ok(Some(message)) => {
                        let queue = &mut self.queue;
                        if let Err(reason) =
                            dispatch(message, &reader.shared, &reader.commands, &mut |event| {
                                queue.push_back(event)
                            })
                        {
                            break Some(reason);
                        }
                    }
                    Ok(None) => break None,
                    Err(e) => break Some(CloseReason::Decode(e)),
                }
            },
        };
        if let Some(reason) = close {
            // The task sends what is queued (an Error packet for a protocol error), closes
            // and reports the reason; nothing more is read from this connection.
            if let Some(commands) = reader.commands.upgrade() {
                push_command(&reader.shared, &commands, Command::Close(reason));
            }
            self.forget(id);
        }
    }

    fn forget(&mut self, id: ConnectionId) {
        if let Some(reader) = self.readers.remove(&id) {
            // SAFETY: removes a descriptor we own from our epoll set.
            unsafe {
                libc::epoll_ctl(
                    self.epoll.as_raw_fd(),
                    libc::EPOLL_CTL_DEL,
                    reader.fd.as_raw_fd(),
                    std::ptr::null_mut(),
                );
            }
        }
    }
}

fn epoll_add(epoll: RawFd, fd: RawFd, token: u64) -> io::Result<()> {
    let mut event = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
        u64: token,
    };
    // SAFETY: registers a live descriptor with a live epoll instance.
    if unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, &mut event) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
