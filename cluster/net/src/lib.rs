//! The tokio edge of a NEO node: TCP connections speaking protocol 5 (`neo-protocol`),
//! the counterpart of NEO/py's `neo/lib/connection.py`, `connector.py` and `event.py`.
//!
//! A node's logic never runs on tokio. [`Net`] owns a small tokio runtime with a listener
//! task per listening address and one task per connection; each connection task frames the
//! byte stream with the protocol crate's decoder, matches answers to requests by msg_id, and
//! sends [`Event`]s over a std channel to the node's own thread, which acts through
//! [`ConnectionHandle`]s. On plain TCP, a handle writes to the socket itself when the
//! connection task has nothing queued, so that an answer costs no wakeup of a tokio
//! worker. Bad input from a peer closes that connection only, with a logged
//! [`CloseReason`]; nothing panics and the other connections go on.
//!
//! This crate must not contain node logic, and nothing in the logic crates may depend on it.
//! With [`Net::new_polled`], the node's thread reads plain TCP connections itself
//! ([`Poller`], epoll) and tokio only accepts, connects, writes what a direct write left,
//! and closes. TLS is not implemented yet; [`StreamWrapper`] is where it will plug in.

mod connection;
pub mod id_map;
mod poller;
pub mod socket;
pub mod spin;

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use neo_protocol::{Packet, MAX_PACKET_SIZE};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub use connection::{CloseReason, ConnectionHandle, SendError};
pub use poller::Poller;
pub use socket::{PlainTcp, StreamWrapper};

use connection::{new_connection, ConnectionTask};
use poller::Sink;

/// Identifies a connection for the lifetime of a [`Net`].
pub type ConnectionId = u64;

/// What the network tells the node's thread.
#[derive(Debug)]
pub enum Event {
    /// A peer connected to one of our listening addresses.
    Accepted {
        listener: SocketAddr,
        conn: ConnectionHandle,
    },
    /// An outgoing connection is established (our handshake is on its way).
    Connected { conn: ConnectionId },
    /// An outgoing connection could not be established; its handle is closed.
    ConnectFailed {
        conn: ConnectionId,
        addr: SocketAddr,
        error: String,
    },
    /// A request or notification from the peer. Answer a request with
    /// [`ConnectionHandle::answer`] and this msg_id.
    Packet {
        conn: ConnectionId,
        msg_id: u32,
        packet: Packet,
    },
    /// The answer (or Error) to a request we sent, with the context given to
    /// [`ConnectionHandle::ask`]; `None` for an Error matching no pending request.
    Answer {
        conn: ConnectionId,
        msg_id: u32,
        context: Option<u64>,
        packet: Packet,
    },
    /// The connection is closed; `pending` lists the requests (msg_id, context) that will
    /// never be answered.
    Closed {
        conn: ConnectionId,
        reason: CloseReason,
        pending: Vec<(u32, u64)>,
    },
}

/// Settings of a [`Net`].
#[derive(Clone)]
pub struct NetConfig {
    /// Largest packet accepted or sent (NEO/py: 64 MiB).
    pub max_packet_size: usize,
    /// Listen backlog (NEO/py: 5).
    pub listen_backlog: i32,
    /// Tokio worker threads for socket I/O.
    pub io_threads: usize,
    /// Wraps each TCP stream before the handshake (TLS goes here).
    pub wrapper: Arc<dyn StreamWrapper>,
}

impl Default for NetConfig {
    fn default() -> NetConfig {
        NetConfig {
            max_packet_size: MAX_PACKET_SIZE,
            listen_backlog: socket::LISTEN_BACKLOG,
            io_threads: 1,
            wrapper: Arc::new(PlainTcp),
        }
    }
}

/// The node's receiving end of events.
pub type Events = mpsc::Receiver<Event>;

struct Inner {
    config: NetConfig,
    events: Sink,
    next_conn: AtomicU64,
    /// Every task spawned, so that shutdown can wait for all of them.
    tasks: Mutex<Vec<JoinHandle<()>>>,
    shutdown: tokio::sync::watch::Sender<bool>,
}

impl Inner {
    fn track(&self, task: JoinHandle<()>) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }

    fn new_id(&self) -> ConnectionId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }
}

/// The network layer of one node. Dropping it (or [`Net::shutdown`]) closes everything and
/// waits for every task to end.
pub struct Net {
    runtime: Option<tokio::runtime::Runtime>,
    inner: Arc<Inner>,
}

impl Net {
    /// Starts the I/O runtime; events arrive on the returned receiver.
    pub fn new(config: NetConfig) -> io::Result<(Net, Events)> {
        let (events, receiver) = mpsc::channel();
        Ok((Net::start(config, Sink::Channel(events))?, receiver))
    }

    /// Like [`Net::new`], but the thread that owns the returned [`Poller`] reads plain TCP
    /// connections itself (see the `poller` module): a lone request costs no tokio
    /// wakeup. TLS connections are still read by tokio.
    pub fn new_polled(config: NetConfig) -> io::Result<(Net, Poller)> {
        let (poller, sink) = Poller::new()?;
        Ok((Net::start(config, sink)?, poller))
    }

    fn start(config: NetConfig, events: Sink) -> io::Result<Net> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.io_threads.max(1))
            .thread_name("neo-net")
            .enable_io()
            .enable_time()
            .build()?;
        let (shutdown, _) = tokio::sync::watch::channel(false);
        let inner = Arc::new(Inner {
            config,
            events,
            next_conn: AtomicU64::new(1),
            tasks: Mutex::new(Vec::new()),
            shutdown,
        });
        Ok(Net {
            runtime: Some(runtime),
            inner,
        })
    }

    /// Listens on `addr` (IPv4 or IPv6; port 0 picks one) and returns the bound address.
    /// Connections accepted there are reported as [`Event::Accepted`].
    pub fn listen(&self, addr: SocketAddr) -> io::Result<SocketAddr> {
        let std_listener = socket::bind_listener(addr, self.inner.config.listen_backlog)?;
        let local = std_listener.local_addr()?;
        let runtime = self.runtime();
        let listener = {
            let _guard = runtime.enter();
            TcpListener::from_std(std_listener)?
        };
        let inner = self.inner.clone();
        let task = runtime.spawn(accept_loop(listener, local, inner));
        self.inner.track(task);
        Ok(local)
    }

    /// Connects to `addr`. The handle is usable at once: packets queued before the
    /// connection is established are sent right after the handshake, as NEO/py clients do.
    pub fn connect(&self, addr: SocketAddr) -> ConnectionHandle {
        let id = self.inner.new_id();
        let (handle, commands) = new_connection(id, addr, self.inner.config.max_packet_size);
        let task_handle = handle.clone();
        let inner = self.inner.clone();
        let task = self.runtime().spawn(async move {
            let events = inner.events.clone();
            let stream = match TcpStream::connect(addr).await {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::info!(conn = id, %addr, error = %e, "connection failed");
                    events.send(Event::ConnectFailed {
                        conn: id,
                        addr,
                        error: e.to_string(),
                    });
                    return;
                }
            };
            if let Err(e) = socket::configure_stream(&stream) {
                tracing::warn!(conn = id, %addr, error = %e, "cannot set socket options");
            }
            let fd = stream.as_raw_fd();
            let prepared = match prepare(&inner, stream) {
                Ok(Prepared::Polled(stream, dup)) => Ok((stream, Some(dup))),
                Ok(Prepared::Tokio(stream)) => inner
                    .config
                    .wrapper
                    .wrap_outgoing(stream)
                    .await
                    .map(|stream| (stream, None)),
                Err(e) => Err(e),
            };
            let (stream, dup) = match prepared {
                Ok(pair) => pair,
                Err(e) => {
                    events.send(Event::ConnectFailed {
                        conn: id,
                        addr,
                        error: e.to_string(),
                    });
                    return;
                }
            };
            let event = Event::Connected { conn: id };
            let read_elsewhere = announce(&inner, &task_handle, fd, dup, event);
            ConnectionTask {
                handle: task_handle,
                commands,
                events,
                shutdown: inner.shutdown.subscribe(),
                read_elsewhere,
            }
            .run(stream)
            .await;
        });
        self.inner.track(task);
        handle
    }

    /// Closes every connection and listener, then waits (at most `timeout`) for every task.
    pub fn shutdown(mut self, timeout: Duration) {
        self.stop(timeout);
    }

    fn stop(&mut self, timeout: Duration) {
        let Some(runtime) = self.runtime.take() else {
            return;
        };
        let _ = self.inner.shutdown.send(true);
        let tasks =
            std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        let wait_all = async move {
            for task in tasks {
                let _ = task.await;
            }
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            // Called from inside a runtime (misuse): do not block it; the tasks have been
            // told to stop and the runtime is dropped in the background.
            runtime.shutdown_background();
            return;
        }
        let _ = runtime.block_on(async { tokio::time::timeout(timeout, wait_all).await });
        runtime.shutdown_timeout(timeout);
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        // The runtime is only taken by `stop`, which consumes or drops the Net.
        self.runtime
            .as_ref()
            .expect("the runtime lives as long as the Net")
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// A connected stream made ready for its connection task.
enum Prepared {
    /// Plain TCP read by the [`Poller`] (from the duplicate descriptor); the task only
    /// writes, through a stream that tokio watches for writability alone, so that
    /// incoming bytes wake no tokio worker.
    Polled(socket::BoxedStream, OwnedFd),
    /// Read and written by tokio: it still goes through the [`StreamWrapper`].
    Tokio(TcpStream),
}

fn prepare(inner: &Inner, stream: TcpStream) -> io::Result<Prepared> {
    if !(inner.config.wrapper.is_plain() && inner.events.reads_directly()) {
        return Ok(Prepared::Tokio(stream));
    }
    let dup = match stream.as_fd().try_clone_to_owned() {
        Ok(dup) => dup,
        Err(e) => {
            // Out of descriptors: tokio reads this one as before.
            tracing::warn!(error = %e, "cannot duplicate the socket; tokio reads it");
            return Ok(Prepared::Tokio(stream));
        }
    };
    let writer = socket::WriteOnlyTcp::new(stream.into_std()?)?;
    Ok(Prepared::Polled(Box::new(writer), dup))
}

/// Tells the node's thread about an established connection. On plain TCP, the node's
/// thread may write to the socket itself, and read it too when it owns a [`Poller`]
/// (`dup` is then the descriptor it reads; it comes with the event, so no packet can
/// precede the event). Returns whether the connection task must leave reading to the
/// poller.
fn announce(
    inner: &Inner,
    handle: &ConnectionHandle,
    fd: RawFd,
    dup: Option<OwnedFd>,
    event: Event,
) -> bool {
    if inner.config.wrapper.is_plain() {
        handle.set_direct_fd(fd);
    }
    match dup {
        Some(dup) => {
            inner.events.register(handle.reader_parts(dup), event);
            true
        }
        None => {
            inner.events.send(event);
            false
        }
    }
}

async fn accept_loop(listener: TcpListener, local: SocketAddr, inner: Arc<Inner>) {
    let mut shutdown = inner.shutdown.subscribe();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: keep serving, but do not spin.
                tracing::warn!(listener = %local, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if let Err(e) = socket::configure_stream(&stream) {
            tracing::warn!(%peer, error = %e, "cannot set socket options");
        }
        let id = inner.new_id();
        let (handle, commands) = new_connection(id, peer, inner.config.max_packet_size);
        let task_inner = inner.clone();
        let task = tokio::spawn(async move {
            let fd = stream.as_raw_fd();
            let prepared = match prepare(&task_inner, stream) {
                Ok(Prepared::Polled(stream, dup)) => Ok((stream, Some(dup))),
                Ok(Prepared::Tokio(stream)) => task_inner
                    .config
                    .wrapper
                    .wrap_incoming(stream)
                    .await
                    .map(|stream| (stream, None)),
                Err(e) => Err(e),
            };
            let (stream, dup) = match prepared {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::info!(%peer, error = %e, "incoming connection refused");
                    return;
                }
            };
            let events = task_inner.events.clone();
            let event = Event::Accepted {
                listener: local,
                conn: handle.clone(),
            };
            let read_elsewhere = announce(&task_inner, &handle, fd, dup, event);
            ConnectionTask {
                handle,
                commands,
                events,
                shutdown: task_inner.shutdown.subscribe(),
                read_elsewhere,
            }
            .run(stream)
            .await;
        });
        inner.track(task);
    }
}
