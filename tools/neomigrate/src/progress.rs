//! The progress bar of a migration or a verification: bytes of the source done (a
//! FileStorage's size, or the cluster's data once its size is known), transactions per
//! second, MB/s and an ETA, on standard error. Hidden with `-q`, and by indicatif when
//! standard error is not a terminal.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use crate::db::Txn;

pub struct Progress {
    bar: ProgressBar,
    transactions: AtomicU64,
    started: Instant,
}

impl Progress {
    pub fn hidden() -> Progress {
        Progress {
            bar: ProgressBar::hidden(),
            transactions: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    /// A bar over `total` bytes, or a counter when the total is unknown.
    pub fn new(quiet: bool, what: &str, total: Option<u64>) -> Progress {
        if quiet {
            return Progress::hidden();
        }
        let bar = match total {
            Some(total) => {
                let bar = ProgressBar::new(total);
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg} eta {eta}",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                );
                bar
            }
            None => {
                let bar = ProgressBar::new_spinner();
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix} {spinner} {bytes} {bytes_per_sec} {msg}",
                    )
                    .expect("valid template"),
                );
                bar
            }
        };
        bar.set_prefix(what.to_string());
        bar.enable_steady_tick(std::time::Duration::from_millis(250));
        Progress {
            bar,
            transactions: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    /// Counts `bytes` already done before this run (resuming), without speed credit.
    pub fn skip(&self, bytes: u64) {
        self.bar.set_position(bytes);
        self.bar.reset_eta();
    }

    pub fn advance(&self, txn: &Txn) {
        let done = self.transactions.fetch_add(1, Ordering::Relaxed) + 1;
        self.bar.inc(txn.size);
        if done % 64 == 0 {
            let seconds = self.started.elapsed().as_secs_f64().max(1e-3);
            self.bar
                .set_message(format!("{done} txn ({:.0} txn/s)", done as f64 / seconds));
        }
    }

    /// Runs `f` (which prints) with the bar out of the way.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.bar.suspend(f)
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
