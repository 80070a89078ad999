//! Socket options as NEO/py sets them, listening sockets, and the seam where TLS will wrap
//! the TCP stream (a later issue): [`StreamWrapper`].

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};
use tokio::io::{AsyncRead, AsyncWrite};
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
