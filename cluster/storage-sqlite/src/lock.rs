//! Exclusive use of a database file (cluster.md 7.8): a stream socket bound in Linux's
//! abstract namespace to `\0neostorage:<st_dev>:<st_ino>` of the file. The kernel frees
//! the name when the socket closes, even if the process dies, so no stale lock remains.
//! NEO/py binds the same name, so our storage and NEO/py's exclude each other.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use neo_storage::backend::{BackendError, Result};

/// Held while the database is open; dropping it releases the name.
#[derive(Debug)]
pub struct FileLock {
    _socket: OwnedFd,
}

/// Takes the lock of the file at `path`. A missing file (in-memory or temporary
/// database) needs no lock: `Ok(None)`.
pub fn lock_file(path: &Path) -> Result<Option<FileLock>> {
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(BackendError::Database(format!(
                "cannot stat {}: {e}",
                path.display()
            )))
        }
    };
    let name = format!("neostorage:{}:{}", metadata.dev(), metadata.ino());
    bind_abstract(name.as_bytes())
        .map(|socket| Some(FileLock { _socket: socket }))
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::EADDRINUSE) {
                BackendError::Locked(format!("database is locked: {}", path.display()))
            } else {
                BackendError::Database(format!("cannot lock {}: {e}", path.display()))
            }
        })
}

/// A SOCK_STREAM socket bound, not listening, like NEO/py's (the kernel keeps a
/// separate abstract namespace per socket type, so the type must match).
fn bind_abstract(name: &[u8]) -> io::Result<OwnedFd> {
    // SAFETY: plain system calls on a descriptor we own; the address is a zeroed
    // sockaddr_un whose sun_path we fill within its bounds (checked below).
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let socket = OwnedFd::from_raw_fd(fd);
        let mut address: libc::sockaddr_un = std::mem::zeroed();
        address.sun_family = libc::AF_UNIX as libc::sa_family_t;
        // sun_path[0] stays 0: the abstract namespace.
        if name.len() + 1 > address.sun_path.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "lock name too long",
            ));
        }
        for (slot, byte) in address.sun_path[1..].iter_mut().zip(name) {
            *slot = *byte as libc::c_char;
        }
        let length = std::mem::size_of::<libc::sa_family_t>() + 1 + name.len();
        if libc::bind(
            socket.as_raw_fd(),
            &address as *const libc::sockaddr_un as *const libc::sockaddr,
            length as libc::socklen_t,
        ) < 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(socket)
    }
}
