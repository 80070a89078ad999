//! SIGRTMIN (flush the log) and SIGRTMIN+1 (reopen after rotation), as NEO/py uses them.
//!
//! The handlers only set flags: a signal handler must not touch SQLite or allocate, and the
//! logger belongs to the node's own thread. The node loop calls [`apply`] between events.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::writer::{LogError, Logger};

static FLUSH_REQUESTED: AtomicBool = AtomicBool::new(false);
static REOPEN_REQUESTED: AtomicBool = AtomicBool::new(false);

/// The signal numbers: SIGRTMIN is only known at run time on glibc.
pub fn flush_signal() -> i32 {
    libc::SIGRTMIN()
}

pub fn reopen_signal() -> i32 {
    libc::SIGRTMIN() + 1
}

/// Installs both handlers for the whole process.
pub fn install() -> io::Result<()> {
    install_one(flush_signal(), on_flush as extern "C" fn(libc::c_int))?;
    install_one(reopen_signal(), on_reopen as extern "C" fn(libc::c_int))
}

/// Takes the pending flush request, if any.
pub fn take_flush_request() -> bool {
    FLUSH_REQUESTED.swap(false, Ordering::SeqCst)
}

/// Takes the pending reopen request, if any.
pub fn take_reopen_request() -> bool {
    REOPEN_REQUESTED.swap(false, Ordering::SeqCst)
}

/// Serves pending requests: reopen first, so that a flush asked for together with it goes
/// to the new file.
pub fn apply(logger: &mut Logger) -> Result<(), LogError> {
    if take_reopen_request() {
        logger.reopen()?;
    }
    if take_flush_request() {
        logger.flush()?;
    }
    Ok(())
}

extern "C" fn on_flush(_: libc::c_int) {
    FLUSH_REQUESTED.store(true, Ordering::SeqCst);
}

extern "C" fn on_reopen(_: libc::c_int) {
    REOPEN_REQUESTED.store(true, Ordering::SeqCst);
}

fn install_one(signal: i32, handler: extern "C" fn(libc::c_int)) -> io::Result<()> {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe, and the
    // sigaction struct is fully initialised before use.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
