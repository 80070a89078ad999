//! `neomigrate`: moves a database between a FileStorage and a NEO cluster, with NEO/py's
//! command line (tools.md 6): if SOURCE is an existing path, FileStorage -> NEO
//! (DESTINATION is the master list), otherwise NEO -> FileStorage. Beyond NEO/py: undo
//! backpointers are kept both ways, an interrupted run resumes after the last migrated
//! transaction, `--verify` compares both sides afterwards (`--verify-only` compares
//! without migrating, either side a file or a cluster), progress bars, `--json`.
//!
//! Exit status: 0 done (and identical when verified), 1 the migration or the verification
//! failed (the message says where it stands), 2 bad usage.

mod db;
mod export;
mod import;
mod progress;
mod verify;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use neo_client::{Client, ClientConfig};
use serde_json::json;

use crate::db::{hex, FileReader, NeoReader, Txn};
use crate::import::Start;
use crate::progress::Progress;

const IMPORT_WARNING: &str = "WARNING: This is not the recommended way to import data to NEO: \
you should use the Importer backend instead.";
const UNDO_NOTE: &str = "Undo information is preserved: records that point back to the data \
of an earlier transaction are stored as such.";

/// NEO <-> FileStorage conversion tool.
#[derive(Parser, Debug)]
#[command(name = "neomigrate", version)]
struct Args {
    /// The NEO cluster name.
    #[arg(short = 'c', long)]
    cluster: Option<String>,
    /// Print nothing to standard output (and no progress bar).
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Log file (NEO's SQLite log format, read it with neolog).
    #[arg(short = 'l', long, value_name = "LOGFILE")]
    logfile: Option<PathBuf>,
    /// Certificate authority in PEM format (TLS; not supported by this client yet).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Certificate in PEM format (TLS; not supported by this client yet).
    #[arg(long)]
    cert: Option<PathBuf>,
    /// Private key in PEM format (TLS; not supported by this client yet).
    #[arg(long)]
    key: Option<PathBuf>,
    /// After migrating, compare source and destination transaction by transaction.
    #[arg(long)]
    verify: bool,
    /// Only compare SOURCE and DESTINATION (each a FileStorage path or a master list).
    #[arg(long = "verify-only", conflicts_with = "verify")]
    verify_only: bool,
    /// Print the report as one JSON object on standard output instead of text.
    #[arg(long)]
    json: bool,
    /// Seconds to wait for the cluster, and for each answer of it.
    #[arg(long, default_value_t = 60.0, value_name = "SECONDS")]
    timeout: f64,
    /// FileStorage -> NEO: transactions in flight at once, begun and finished in TID
    /// order (each finish sent once the previous one is on its way, so that storages
    /// commit several at once). A NEO/py master accepts only 1, NEO/py's way: when it
    /// refuses an overlap, the migration goes on with 1 by itself.
    #[arg(long, default_value_t = 16, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=64))]
    pipeline: u64,
    /// Threads reading a cluster (each has requests in flight).
    #[arg(long, default_value_t = 8, value_name = "N")]
    readers: usize,
    /// zlib level of the data sent to the cluster, 0 for none. NEO/py's client uses 6,
    /// which costs about 3 times the CPU of 1 for 2-3% less space on ZODB data.
    #[arg(long = "compression-level", default_value_t = 1, value_name = "LEVEL",
          value_parser = clap::value_parser!(u32).range(0..=9))]
    compression_level: u32,
    /// The source database: a FileStorage path, or the master list of a cluster.
    source: String,
    /// The destination database: the master list of a cluster, or a FileStorage path.
    destination: String,
}

/// What a run moved.
#[derive(Debug, Default, Clone)]
pub struct Totals {
    pub transactions: u64,
    pub records: u64,
    /// Bytes of object data (uncompressed).
    pub bytes: u64,
}

impl Totals {
    pub fn add(&mut self, txn: &Txn) {
        self.transactions += 1;
        self.records += txn.records.len() as u64;
        self.bytes += txn.data_bytes();
    }

    pub fn merge(&mut self, other: &Totals) {
        self.transactions += other.transactions;
        self.records += other.records;
        self.bytes += other.bytes;
    }
}

/// A database read as a stream of transactions.
type Transactions = Box<dyn Iterator<Item = Result<Txn>>>;

/// Either side of a migration or comparison.
enum Side {
    File(PathBuf),
    Cluster(Vec<String>),
}

impl Side {
    fn parse(text: &str) -> Side {
        if Path::new(text).exists() {
            Side::File(PathBuf::from(text))
        } else {
            Side::Cluster(master_list(text))
        }
    }
}

/// NEO's master list: addresses separated by spaces or commas.
fn master_list(text: &str) -> Vec<String> {
    text.split([' ', ','])
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The optional log file, in NEO's format.
struct Log(Option<neo_logdb::Logger>);

impl Log {
    fn info(&mut self, line: u32, msg: &str) {
        self.write(neo_logdb::Level::INFO, line, msg);
    }

    fn error(&mut self, line: u32, msg: &str) {
        self.write(neo_logdb::Level::ERROR, line, msg);
    }

    fn write(&mut self, level: neo_logdb::Level, line: u32, msg: &str) {
        if let Some(logger) = &mut self.0 {
            if let Err(error) = logger.log(level, file!(), line, msg) {
                eprintln!("neomigrate: cannot write the log: {error}");
                self.0 = None;
            }
        }
    }

    fn close(&mut self) {
        if let Some(logger) = self.0.take() {
            if let Err(error) = logger.close() {
                eprintln!("neomigrate: cannot write the log: {error}");
            }
        }
    }
}

struct Run {
    args: Args,
    log: Log,
    report: serde_json::Map<String, serde_json::Value>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.ca.is_some() || args.cert.is_some() || args.key.is_some() {
        eprintln!("neomigrate: TLS (--ca, --cert, --key) is not supported by this client yet");
        return ExitCode::from(2);
    }
    let log = match &args.logfile {
        Some(path) => match neo_logdb::Logger::open(path) {
            Ok(logger) => Log(Some(logger)),
            Err(error) => {
                eprintln!(
                    "neomigrate: cannot open the log {}: {error}",
                    path.display()
                );
                return ExitCode::from(1);
            }
        },
        None => Log(None),
    };
    let mut run = Run {
        args,
        log,
        report: serde_json::Map::new(),
    };
    let outcome = run.main();
    let code = match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            run.log.error(line!(), &format!("{error:#}"));
            eprintln!("neomigrate: {error:#}");
            ExitCode::from(1)
        }
    };
    if run.args.json {
        println!("{}", serde_json::Value::Object(run.report.clone()));
    }
    run.log.close();
    code
}

impl Run {
    /// Text for the user (not with -q or --json).
    fn say(&self, text: &str) {
        if !self.args.quiet && !self.args.json {
            println!("{text}");
        }
    }

    fn progress(&self, what: &str, total: Option<u64>) -> Progress {
        Progress::new(self.args.quiet, what, total)
    }

    fn connect(&self, masters: &[String], read_only: bool) -> Result<Arc<Client>> {
        let Some(cluster) = &self.args.cluster else {
            bail!("a cluster is involved: give its name with -c/--cluster");
        };
        if masters.is_empty() {
            bail!("no master address given");
        }
        let mut config = ClientConfig::new(masters.to_vec(), cluster.clone());
        config.read_only = read_only;
        config.timeout = Duration::from_secs_f64(self.args.timeout.max(0.001));
        config.compress = self.args.compression_level > 0;
        config.compression_level = self.args.compression_level.max(1);
        // Every object is read or written once: a cache would only cost memory.
        config.cache_size = 1 << 20;
        let client = Client::connect(config).with_context(|| {
            format!(
                "cannot reach cluster {cluster} through {} (is it running?)",
                masters.join(" ")
            )
        })?;
        Ok(Arc::new(client))
    }

    /// Returns whether everything went right (false: verification found differences).
    fn main(&mut self) -> Result<bool> {
        let source = Side::parse(&self.args.source);
        if self.args.verify_only {
            let destination = Side::parse(&self.args.destination);
            return self.compare(&source, &destination, None);
        }
        match source {
            Side::File(path) => {
                let masters = master_list(&self.args.destination);
                self.import(&path, &masters)
            }
            Side::Cluster(masters) => {
                let path = PathBuf::from(&self.args.destination);
                self.export(&masters, &path)
            }
        }
    }

    fn import(&mut self, source: &Path, masters: &[String]) -> Result<bool> {
        let mut fs = db::open_source_file(source)?;
        let file_size = fs.end();
        self.say(IMPORT_WARNING);
        self.say(UNDO_NOTE);
        let (src, dst) = (self.args.source.clone(), self.args.destination.clone());
        self.say(&format!("Migrating from {src} to {dst}"));
        self.log
            .info(line!(), &format!("Migrating from {src} to {dst}"));
        let started = Instant::now();
        let client = self.connect(masters, false)?;
        let progress = self.progress("FS -> NEO", Some(file_size));
        let level = self.args.compression_level;
        let mut pipeline = self.args.pipeline as usize;
        let mut totals = Totals::default();
        // Several rounds only when a NEO/py master refuses overlaps: the second one says
        // nothing of where it resumes.
        for round in 0.. {
            let mut serials = HashMap::new();
            let start = import::find_start(source, &fs, &client, &mut serials)?;
            if let Start::After {
                tid,
                transactions,
                bytes,
            } = &start
            {
                let text = format!(
                    "Resuming after transaction {} ({transactions} transactions already in \
                     the cluster)",
                    hex(*tid)
                );
                if round == 0 {
                    self.say(&text);
                    self.report.insert("resumed_after".into(), json!(hex(*tid)));
                }
                self.log.info(line!(), &text);
                progress.skip(*bytes);
            }
            let codec = neo_client::Codec::new(level > 0, level.max(1));
            let result = import::run(fs, &client, &start, serials, codec, pipeline, &progress);
            match result {
                Ok(done) => {
                    totals.merge(&done);
                    break;
                }
                // A NEO/py master: what it committed stays, the rest goes one at a time.
                Err(error) if pipeline > 1 && error.is::<import::OverlapRefused>() => {
                    if let Some(import::OverlapRefused(done)) = error.downcast_ref() {
                        totals.merge(done);
                    }
                    let text = "The master refuses overlapping transactions (a NEO/py master \
                                does): going on one transaction at a time (--pipeline 1)";
                    progress.suspend(|| self.say(text));
                    self.log.info(line!(), text);
                    pipeline = 1;
                    fs = db::open_source_file(source)?;
                }
                Err(error) => {
                    progress.finish();
                    return Err(error);
                }
            }
        }
        progress.finish();
        self.done(started, &totals, file_size);
        if self.args.verify {
            let source = Side::File(source.to_path_buf());
            let destination = Side::Cluster(masters.to_vec());
            return self.compare(&source, &destination, Some(client));
        }
        Ok(true)
    }

    fn export(&mut self, masters: &[String], destination: &Path) -> Result<bool> {
        let (src, dst) = (self.args.source.clone(), self.args.destination.clone());
        self.say(&format!("Migrating from {src} to {dst}"));
        self.log
            .info(line!(), &format!("Migrating from {src} to {dst}"));
        let started = Instant::now();
        let client = self.connect(masters, true)?;
        let target = export::open_destination(destination, &client)?;
        if let Some(repaired) = &target.repaired {
            self.say(repaired);
            self.log.info(line!(), repaired);
        }
        let after = target.after;
        if after != 0 {
            let text = format!("Resuming after transaction {}", hex(after));
            self.say(&text);
            self.log.info(line!(), &text);
            self.report
                .insert("resumed_after".into(), json!(hex(after)));
        }
        let progress = self.progress("NEO -> FS", None);
        let result = export::run(&client, target, self.args.readers, &progress);
        progress.finish();
        let totals = result?;
        let written = std::fs::metadata(destination).map(|m| m.len()).unwrap_or(0);
        self.done(started, &totals, written);
        if self.args.verify {
            let source = Side::Cluster(masters.to_vec());
            let destination = Side::File(destination.to_path_buf());
            return self.compare(&source, &destination, Some(client));
        }
        Ok(true)
    }

    /// NEO/py's last line, then ours with the figures.
    fn done(&mut self, started: Instant, totals: &Totals, file_bytes: u64) {
        let seconds = started.elapsed().as_secs_f64();
        self.say(&format!("Migration done in {seconds:3.5}"));
        let rate = |n: f64| n / seconds.max(1e-9);
        let text = format!(
            "{} transactions, {} records, {:.1} MB of data in {seconds:.2} s: {:.1} MB/s, {:.0} \
             transactions/s",
            totals.transactions,
            totals.records,
            totals.bytes as f64 / 1e6,
            rate(totals.bytes as f64) / 1e6,
            rate(totals.transactions as f64),
        );
        self.say(&text);
        self.log.info(line!(), &text);
        self.report.insert(
            "migrated".into(),
            json!({
                "source": self.args.source,
                "destination": self.args.destination,
                "transactions": totals.transactions,
                "records": totals.records,
                "bytes": totals.bytes,
                "file_bytes": file_bytes,
                "seconds": seconds,
            }),
        );
    }

    fn compare(
        &mut self,
        source: &Side,
        destination: &Side,
        client: Option<Arc<Client>>,
    ) -> Result<bool> {
        let mut client = client;
        let mut open = |side: &Side| -> Result<(Transactions, Option<u64>)> {
            Ok(match side {
                Side::File(path) => {
                    let size = std::fs::metadata(path).map(|m| m.len()).ok();
                    (
                        Box::new(FileReader::start(db::open_source_file(path)?, None, None)?),
                        size,
                    )
                }
                Side::Cluster(masters) => {
                    let client = match &client {
                        Some(client) => client.clone(),
                        None => {
                            let c = self.connect(masters, true)?;
                            client = Some(c.clone());
                            c
                        }
                    };
                    (
                        Box::new(NeoReader::start(client, None, self.args.readers)?),
                        None,
                    )
                }
            })
        };
        let (a, a_size) = open(source)?;
        let (b, b_size) = open(destination)?;
        let total = a_size.or(b_size);
        let progress = self.progress("verify", total.filter(|_| a_size.is_some()));
        let started = Instant::now();
        let report = verify::compare(a, b, &progress);
        progress.finish();
        let report = report?;
        for line in report.summary(&self.args.source, &self.args.destination) {
            self.say(&line);
            self.log.info(line!(), &line);
        }
        let mut value = report.to_json();
        value["seconds"] = json!(started.elapsed().as_secs_f64());
        self.report.insert("verify".into(), value);
        if !report.identical() && (self.args.quiet || self.args.json) {
            eprintln!(
                "neomigrate: verification failed: {} differences",
                report.differences
            );
        }
        Ok(report.identical())
    }
}
