//! Integration tests of neo-daemons: the driver on real sockets, and the daemons as real
//! processes (binaries from Cargo, free ports on 127.0.0.1, temporary directories, every
//! child killed when its guard drops, even when a test fails).

#[path = "daemons/driver.rs"]
mod driver;
#[path = "daemons/process.rs"]
mod process;
