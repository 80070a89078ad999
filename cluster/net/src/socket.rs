//! Socket options as NEO/py sets them, listening sockets, and the seam where TLS will wrap
//! the TCP stream (a later issue): [`StreamWrapper`].

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};
use std::io::Write;
use std::task::{ready, Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// Dead peers are detected by TCP keepalive only (NEO has no heartbeat): NEO/py probes after
/// 60 s of silence, every 10 s, and gives up after 3 probes.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
pub const KEEPALIVE_RETRIES: u32 = 3;

/// NEO/py's listen backlog.
pub const LISTEN_BACKLOG: i32 = 5;

/// Sets keepalive and TCP_NODELAY on a connected socket, as NEO/py does on every one.
pub fn configure_stream<S: std::os::fd::AsFd>(stream: &S) -> io::Result<()> {
    let socket = SockRef::from(stream);
    socket.set_tcp_nodelay(true)?;
    let keepalive = TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_RETRIES);
    socket.set_tcp_keepalive(&keepalive)?;
    Ok(())
}

/// Binds a listening socket with SO_REUSEADDR and the given backlog (IPv4 or IPv6 from the
/// address, like NEO/py), ready for tokio.
pub fn bind_listener(addr: SocketAddr, backlog: i32) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// A byte stream a connection can run on: plain TCP today, TLS later.
pub trait AsyncStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> AsyncStream for T {}

pub type BoxedStream = Box<dyn AsyncStream>;
pub type WrapFuture = Pin<Box<dyn Future<Output = io::Result<BoxedStream>> + Send>>;

/// Turns a connected TCP stream into the stream the NEO handshake runs on. This is where
/// TLS plugs in: the connecting side is the TLS client, the accepting side the TLS server,
/// and TLS starts before the NEO handshake.
pub trait StreamWrapper: Send + Sync + 'static {
    fn wrap_outgoing(&self, stream: TcpStream) -> WrapFuture;
    fn wrap_incoming(&self, stream: TcpStream) -> WrapFuture;

    /// Whether the wrapped stream passes bytes to the socket as they are (no TLS), so
    /// that packets may be written to the socket directly by the thread that sends them.
    fn is_plain(&self) -> bool {
        false
    }
}

/// No TLS: the TCP stream as it is.
#[derive(Debug, Default, Clone, Copy)]
pub struct PlainTcp;

impl StreamWrapper for PlainTcp {
    fn wrap_outgoing(&self, stream: TcpStream) -> WrapFuture {
        Box::pin(async move { Ok(Box::new(stream) as BoxedStream) })
    }
    fn wrap_incoming(&self, stream: TcpStream) -> WrapFuture {
        Box::pin(async move { Ok(Box::new(stream) as BoxedStream) })
    }

    fn is_plain(&self) -> bool {
        true
    }
}

/// A plain TCP stream whose reading is done elsewhere (by a `Poller`): tokio watches it
/// for writability only, so that incoming bytes do not wake a tokio worker. Reading it
/// never completes.
pub(crate) struct WriteOnlyTcp(AsyncFd<std::net::TcpStream>);

impl WriteOnlyTcp {
    /// Must be called inside the runtime; `stream` must be nonblocking.
    pub(crate) fn new(stream: std::net::TcpStream) -> io::Result<WriteOnlyTcp> {
        stream.set_nonblocking(true)?;
        // SAFETY: the std stream owns its descriptor, which stays open and the same for
        // as long as the AsyncFd owns the stream.
        unsafe { AsyncFd::register_with_interest(stream, Interest::WRITABLE) }
            .map(WriteOnlyTcp)
            .map_err(|e| e.into_parts().1)
    }
}

impl AsyncRead for WriteOnlyTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        _buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // The connection task never reads such a stream (its reader is the poller).
        Poll::Pending
    }
}

impl AsyncWrite for WriteOnlyTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_write_ready(cx))?;
            match guard.try_io(|inner| inner.get_ref().write(buf)) {
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.0.get_ref().shutdown(std::net::Shutdown::Write))
    }
}
