//! A daemon's logging: human-readable lines on stderr (warnings and above by default, as
//! NEO/py; `-v` or `RUST_LOG` for more) and, with `-l/--logfile`, every record down to
//! DEBUG in NEO's SQLite log format through `neo-logdb`, whose RAM buffer is written on
//! warnings, on SIGRTMIN, on FlushLog and at exit (tools.md 4.1-4.4).

use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};

use neo_logdb::{Level, Logger};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::{EnvFilter, LevelFilter};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// The log file, shared by the tracing layer and the driver (which logs packets).
pub type SharedLogger = Arc<Mutex<Logger>>;

/// Sets up the process's logging; returns the SQLite logger when `logfile` is given.
pub fn init(verbose: u8, logfile: Option<&Path>) -> anyhow::Result<Option<SharedLogger>> {
    let stderr_filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.is_empty() => EnvFilter::new(spec),
        _ => EnvFilter::new(match verbose {
            0 => "warn",
            1 => "info",
            2 => "debug",
            _ => "trace",
        }),
    };
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(stderr_filter);
    let logger = match logfile {
        Some(path) => {
            let logger =
                Logger::open(path).map_err(|e| anyhow::anyhow!("cannot open the log file: {e}"))?;
            neo_logdb::signals::install()
                .map_err(|e| anyhow::anyhow!("cannot install the log signal handlers: {e}"))?;
            Some(Arc::new(Mutex::new(logger)))
        }
        None => None,
    };
    let file_layer = logger
        .clone()
        .map(|logger| LogDbLayer { logger }.with_filter(LevelFilter::DEBUG));
    tracing_subscriber::registry()
        .with(stderr)
        .with(file_layer)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))?;
    Ok(logger)
}

/// Writes tracing events into the SQLite log.
pub struct LogDbLayer {
    pub logger: SharedLogger,
}

impl<S: Subscriber> Layer<S> for LogDbLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let metadata = event.metadata();
        let mut message = MessageVisitor::default();
        event.record(&mut message);
        let level = level_of(*metadata.level());
        let path = metadata.file().unwrap_or(metadata.target());
        let line = metadata.line().unwrap_or(0);
        let mut logger = self.logger.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = logger.log(level, path, line, &message.text) {
            eprintln!("{e}");
        }
    }
}

/// Python's logging levels for tracing's; TRACE goes below DEBUG (neolog prints "Level 5").
pub fn level_of(level: tracing::Level) -> Level {
    match level {
        tracing::Level::ERROR => Level::ERROR,
        tracing::Level::WARN => Level::WARNING,
        tracing::Level::INFO => Level::INFO,
        tracing::Level::DEBUG => Level::DEBUG,
        tracing::Level::TRACE => Level(5),
    }
}

/// The event's message followed by its other fields as `name=value`.
#[derive(Default)]
struct MessageVisitor {
    text: String,
    fields: String,
}

impl Visit for MessageVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.text.insert_str(0, value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
            self.flush_fields();
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.text.insert_str(0, &format!("{value:?}"));
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
            self.flush_fields();
        }
    }
}

impl MessageVisitor {
    fn flush_fields(&mut self) {
        self.text.push_str(&self.fields);
        self.fields.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_reach_the_sqlite_log_with_python_levels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.log");
        let logger = Arc::new(Mutex::new(Logger::with_buffer(&path, None).unwrap()));
        let subscriber = tracing_subscriber::registry().with(LogDbLayer {
            logger: logger.clone(),
        });
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(partitions = 12, "cluster created");
            tracing::warn!("storage lost");
            tracing::debug!(name = "x", "detail");
        });
        drop(logger);
        let mut reader = neo_logdb::LogReader::open(&path).unwrap();
        let mut seen = Vec::new();
        while let Some(record) = reader.next_record() {
            if let neo_logdb::RecordKind::Log { level, msg, .. } = record.kind {
                seen.push(format!("{} {msg}", Level(level).name()));
            }
        }
        assert_eq!(
            seen,
            [
                "INFO cluster created partitions=12",
                "WARNING storage lost",
                "DEBUG detail name=x",
            ]
        );
    }

    #[test]
    fn levels() {
        assert_eq!(level_of(tracing::Level::WARN), Level::WARNING);
        assert_eq!(level_of(tracing::Level::TRACE).name(), "Level 5");
    }
}
