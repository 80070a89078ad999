//! How fast the host is at the moment of a run, printed beside the figures: 200 bytes sent
//! back and forth over a loopback TCP connection between two threads. That is what one
//! load costs the kernel (a send and a wakeup each way) without NEO's own work, so when
//! the host slows this machine (a shared virtual machine does, from minute to minute) it
//! shows here as it shows in the figures.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::cluster::own_cpu_seconds;

/// Bytes of each message, about an object load's answer in the benchmark.
const MESSAGE: usize = 200;

/// What [`probe`] measured.
#[derive(Debug, Clone, Copy)]
pub struct HostSpeed {
    /// Median round trip, in microseconds.
    pub round_trip_us: f64,
    /// CPU time of both ends per round trip, in microseconds.
    pub cpu_us: f64,
}

impl std::fmt::Display for HostSpeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "loopback TCP round trip of {MESSAGE} bytes {:.1} us (p50), {:.1} us of CPU",
            self.round_trip_us, self.cpu_us
        )
    }
}

/// Measures `round_trips` round trips (after as many for warming up).
pub fn probe(round_trips: usize) -> Result<HostSpeed> {
    let listener = TcpListener::bind("127.0.0.1:0").context("host probe: binding")?;
    let address = listener.local_addr()?;
    let echo = std::thread::Builder::new()
        .name("neobench-echo".into())
        .spawn(move || -> std::io::Result<()> {
            let (mut stream, _) = listener.accept()?;
            stream.set_nodelay(true)?;
            let mut buffer = [0u8; MESSAGE];
            loop {
                match stream.read_exact(&mut buffer) {
                    Ok(()) => stream.write_all(&buffer)?,
                    // The prober closed the connection: done.
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        })
        .context("host probe: starting the echo thread")?;
    let mut stream = TcpStream::connect(address).context("host probe: connecting")?;
    stream.set_nodelay(true)?;
    let mut message = [7u8; MESSAGE];
    let mut round_trip = |stream: &mut TcpStream| -> std::io::Result<()> {
        stream.write_all(&message)?;
        stream.read_exact(&mut message)
    };
    for _ in 0..round_trips {
        round_trip(&mut stream).context("host probe: warming up")?;
    }
    let mut micros = Vec::with_capacity(round_trips);
    let cpu_before = own_cpu_seconds();
    for _ in 0..round_trips {
        let start = Instant::now();
        round_trip(&mut stream).context("host probe")?;
        micros.push(start.elapsed().as_secs_f64() * 1e6);
    }
    let cpu = own_cpu_seconds() - cpu_before;
    drop(stream);
    echo.join()
        .map_err(|_| anyhow::anyhow!("host probe: the echo thread panicked"))?
        .context("host probe: echo")?;
    micros.sort_by(f64::total_cmp);
    Ok(HostSpeed {
        round_trip_us: micros.get(micros.len() / 2).copied().unwrap_or(f64::NAN),
        cpu_us: cpu * 1e6 / round_trips.max(1) as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_measures_round_trips() {
        let speed = probe(200).unwrap();
        assert!(speed.round_trip_us > 0.0 && speed.round_trip_us.is_finite());
        assert!(speed.cpu_us >= 0.0);
        assert!(speed.to_string().contains("round trip of 200 bytes"));
    }
}
