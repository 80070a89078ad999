//! A bounded, self-limiting spin before a thread sleeps on sockets ([`Spinner`]): a thread
//! that expects bytes within microseconds polls for them instead of sleeping, which saves
//! its own wakeup and, on loopback, the wakeup the sender pays for in its `send`.
//!
//! Spinning wastes CPU when the bytes are slow and delays other threads when no CPU is
//! free, so it stops by itself: a spin that runs out of time, or during which this thread
//! lost its CPU to another thread (a pause between two polls), turns spinning off until
//! enough waits ended quickly again without it. Between polls the thread yields, so that a
//! thread waiting for this CPU runs first (and its running shows that the CPU is wanted).
//!
//! `neo-client` spins for the answers of reads; a daemon's poller spins only after it was
//! asked for an object (`Poller::recv_timeout_spinning`), when the reader's next request
//! is likely to follow within microseconds. Spinning after any event cost CPU and
//! throughput with 16 committers on 2 cores.

use std::time::{Duration, Instant};

/// How long a spin polls at most.
pub const SPIN: Duration = Duration::from_micros(50);

/// A pause this long between two polls of a spin means another thread had this CPU.
const PREEMPTED: Duration = Duration::from_micros(10);

/// Waits that must end within [`SPIN`] without spinning before spinning again, after a
/// spin that ran out of time, or that another thread interrupted.
const BACKOFF_TIMED_OUT: i32 = 8;
const BACKOFF_PREEMPTED: i32 = 64;

/// How a spin ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spun {
    /// The poll found something.
    Ready,
    /// [`SPIN`] (or the caller's shorter limit) passed.
    TimedOut,
    /// Another thread ran on this CPU meanwhile.
    Preempted,
}

/// Whether to spin before the next sleep, from how the last waits ended.
#[derive(Debug, Default)]
pub struct Spinner {
    /// Positive: spin. Otherwise, the quick waits still needed (each adds one).
    credit: i32,
}

impl Spinner {
    pub fn new() -> Spinner {
        Spinner::default()
    }

    /// Whether the next wait should begin with a spin.
    pub fn wanted(&self) -> bool {
        self.credit > 0
    }

    /// Polls with `poll` (which must not block and returns whether something is ready)
    /// until it finds something, for at most [`SPIN`] or `limit`, yielding the CPU between
    /// polls. Records the outcome.
    pub fn spin(&mut self, limit: Duration, mut poll: impl FnMut() -> bool) -> Spun {
        let limit = limit.min(SPIN);
        let started = Instant::now();
        let mut last = started;
        let outcome = loop {
            if poll() {
                break Spun::Ready;
            }
            let now = Instant::now();
            if now - last >= PREEMPTED {
                break Spun::Preempted;
            }
            if now - started >= limit {
                break Spun::TimedOut;
            }
            last = now;
            std::thread::yield_now();
        };
        self.spun(outcome);
        outcome
    }

    /// Records how a spin ended.
    pub fn spun(&mut self, outcome: Spun) {
        self.credit = match outcome {
            Spun::Ready => 1,
            Spun::TimedOut => -BACKOFF_TIMED_OUT,
            Spun::Preempted => -BACKOFF_PREEMPTED,
        };
    }

    /// Records a wait that slept and ended after `waited` with something ready (not a
    /// timeout): a quick one brings spinning closer.
    pub fn slept(&mut self, waited: Duration) {
        if waited < SPIN && self.credit <= 0 {
            self.credit += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_waits_turn_spinning_on_and_a_timed_out_spin_turns_it_off() {
        let mut spinner = Spinner::new();
        assert!(!spinner.wanted());
        spinner.slept(Duration::from_micros(5));
        assert!(spinner.wanted());
        assert_eq!(spinner.spin(SPIN, || true), Spun::Ready);
        assert!(spinner.wanted());
        // (The spin itself is tested below: a loaded machine may interrupt it.)
        spinner.spun(Spun::TimedOut);
        assert!(!spinner.wanted());
        for _ in 0..BACKOFF_TIMED_OUT {
            spinner.slept(Duration::from_micros(5));
            assert!(!spinner.wanted());
        }
        spinner.slept(Duration::from_micros(5));
        assert!(spinner.wanted());
    }

    #[test]
    fn slow_waits_keep_spinning_off() {
        let mut spinner = Spinner::new();
        for _ in 0..100 {
            spinner.slept(SPIN * 2);
        }
        assert!(!spinner.wanted());
    }

    #[test]
    fn losing_the_cpu_backs_off_longer() {
        let mut spinner = Spinner::new();
        spinner.slept(Duration::ZERO);
        // A poll that takes longer than a preemption pause stands for another thread
        // running meanwhile.
        let outcome = spinner.spin(SPIN, || {
            std::thread::sleep(PREEMPTED * 2);
            false
        });
        assert_eq!(outcome, Spun::Preempted);
        for _ in 0..BACKOFF_PREEMPTED {
            spinner.slept(Duration::ZERO);
            assert!(!spinner.wanted());
        }
        spinner.slept(Duration::ZERO);
        assert!(spinner.wanted());
    }

    #[test]
    fn a_spin_is_bounded() {
        let mut spinner = Spinner::new();
        spinner.slept(Duration::ZERO);
        let started = Instant::now();
        let mut polls = 0;
        let outcome = spinner.spin(SPIN, || {
            polls += 1;
            false
        });
        // Interrupted by another thread on a loaded machine, else out of time.
        match outcome {
            Spun::TimedOut => assert!(started.elapsed() >= SPIN),
            Spun::Preempted => {}
            Spun::Ready => panic!("nothing was ready"),
        }
        assert!(polls >= 1);
        assert!(!spinner.wanted());
        // Bounded by SPIN plus one poll and one yield (generously, for a loaded machine).
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
