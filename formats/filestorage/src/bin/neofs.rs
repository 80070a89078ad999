//! `neofs`: look after ZODB FileStorage files without Python.
//!
//! `dump` prints what ZODB's `fsdump` prints, `verify` checks what `fstest`
//! checks (same messages and exit status), `refs` reports what `fsrefs`
//! reports; `copy`, `pack` and `stat` cover the rest of a file's life.
//!
//! Exit status: 0 success; 1 the file has problems or the operation
//! failed; 2 bad usage.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use neo_filestorage::pack::{self, PackOutcome};
use neo_filestorage::{dump, refs, verify, FileStorage, Magic, Options, Tid};

#[derive(Parser)]
#[command(
    name = "neofs",
    version,
    about = "Inspect, check, copy and pack ZODB FileStorage (Data.fs) files"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List transactions and records, exactly as ZODB's fsdump does.
    Dump {
        file: PathBuf,
        /// One line per transaction and record with every field in hex (the
        /// format of tests/zodb/canon.py), for comparing readers.
        #[arg(long)]
        canonical: bool,
        /// With --canonical: print record data in full instead of a digest.
        #[arg(long, requires = "canonical")]
        data: bool,
    },
    /// Check the file's structure as ZODB's fstest does (exit 1 on error).
    Verify {
        file: PathBuf,
        /// -v lists transactions, -vv also data records.
        #[arg(short, action = clap::ArgAction::Count)]
        verbose: u8,
        /// Also check record tids, previous-record pointers and backpointers
        /// (what pack requires).
        #[arg(long)]
        strict: bool,
    },
    /// Re-write every transaction of SRC into a new file DST through our
    /// writer (same tids, metadata, statuses and backpointers).
    Copy {
        src: PathBuf,
        dst: PathBuf,
        /// Magic of the new file (default: the source's).
        #[arg(long, value_enum)]
        magic: Option<MagicArg>,
        /// No progress bar.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Remove old revisions and unreachable objects, as ZODB's pack does.
    /// The original is kept as FILE.old unless --no-keep-old.
    Pack {
        file: PathBuf,
        /// Pack time: a Unix timestamp, or a date such as 2024-01-31 or
        /// "2024-01-31 12:00:00" (UTC unless an offset is given).
        #[arg(long, conflicts_with = "days", required_unless_present = "days")]
        before: Option<String>,
        /// Pack time as a number of days before now.
        #[arg(long)]
        days: Option<f64>,
        /// Keep every object current at the pack time (ZODB's pack-gc false).
        #[arg(long)]
        no_gc: bool,
        /// Delete FILE.old after the pack.
        #[arg(long)]
        no_keep_old: bool,
    },
    /// Counts, sizes and first/last tid.
    Stat {
        file: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        #[arg(short, long)]
        quiet: bool,
    },
    /// Report references to missing or deleted objects, as ZODB's fsrefs
    /// does (exit 1 when there are some).
    Refs { file: PathBuf },
}

#[derive(Clone, Copy, ValueEnum)]
enum MagicArg {
    #[value(name = "FS30")]
    Fs30,
    #[value(name = "FS21")]
    Fs21,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("neofs: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Dump {
            file,
            canonical,
            data,
        } => {
            let storage = open_read(&file)?;
            let stdout = std::io::stdout();
            let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
            if canonical {
                dump::canonical(&storage, &mut out, data)?;
            } else {
                dump::fsdump(&storage, &mut out)?;
            }
            out.flush().context("writing output")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify {
            file,
            verbose,
            strict,
        } => {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            match verify::check(&file, verbose, strict, &mut out) {
                Ok(_) => Ok(ExitCode::SUCCESS),
                Err(e) => {
                    let _ = out.flush();
                    eprintln!("{}", e.message);
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Copy {
            src,
            dst,
            magic,
            quiet,
        } => copy(&src, &dst, magic, quiet),
        Command::Pack {
            file,
            before,
            days,
            no_gc,
            no_keep_old,
        } => {
            let when = match (before, days) {
                (Some(text), _) => parse_time(&text)?,
                (None, Some(days)) => unix_now() - days * 86400.0,
                (None, None) => bail!("give --before TIME or --days N"),
            };
            let pack_tid = Tid::from_unix(when);
            let storage = FileStorage::open(
                &file,
                Options {
                    create: false,
                    ..Options::writable()
                },
            )
            .with_context(|| format!("opening {}", file.display()))?;
            let spinner = spinner(
                false,
                &format!(
                    "packing {} at {}",
                    file.display(),
                    pack_tid.timestamp_string()
                ),
            );
            let (storage, outcome) = pack::pack(storage, pack_tid, !no_gc, !no_keep_old)
                .with_context(|| format!("packing {}", file.display()))?;
            spinner.finish_and_clear();
            storage.close()?;
            match outcome {
                PackOutcome::Packed(report) => {
                    println!(
                        "packed {} at {} (tid {pack_tid}): {} -> {} bytes, {} -> {} records{}",
                        file.display(),
                        pack_tid.timestamp_string(),
                        report.size_before,
                        report.size_after,
                        report.records_before,
                        report.records_after,
                        report
                            .old_path
                            .map(|p| format!("; original kept as {}", p.display()))
                            .unwrap_or_default()
                    );
                }
                PackOutcome::NothingToPack => println!(
                    "nothing to pack in {}: the file is unchanged",
                    file.display()
                ),
                PackOutcome::Redundant => println!(
                    "{}: already packed to a later time, or nothing changed since the last pack",
                    file.display()
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Stat { file, json, quiet } => stat(&file, json, quiet),
        Command::Refs { file } => {
            let storage = open_read(&file)?;
            let report = refs::check(&storage)?;
            print!("{}", report.text);
            for (oid, why) in &report.unloadable {
                eprintln!("oid {oid}: failed to load: {why}");
            }
            Ok(
                if report.objects_with_problems > 0 || !report.unloadable.is_empty() {
                    ExitCode::from(1)
                } else {
                    ExitCode::SUCCESS
                },
            )
        }
    }
}

fn open_read(file: &Path) -> Result<FileStorage> {
    let storage = FileStorage::open(file, Options::default())
        .with_context(|| format!("opening {}", file.display()))?;
    if let Some(torn) = storage.torn_tail() {
        eprintln!(
            "neofs: warning: {}: the last {} bytes (from byte {}) are not a finished transaction ({}); they are ignored",
            file.display(),
            torn.len,
            torn.pos,
            torn.why
        );
    }
    Ok(storage)
}

fn copy(src: &Path, dst: &Path, magic: Option<MagicArg>, quiet: bool) -> Result<ExitCode> {
    if dst.exists() && std::fs::metadata(dst)?.len() > 0 {
        bail!(
            "{} exists and is not empty: refusing to overwrite it",
            dst.display()
        );
    }
    let source = open_read(src)?;
    let magic = match magic {
        Some(MagicArg::Fs30) => Magic::Fs30,
        Some(MagicArg::Fs21) => Magic::Fs21,
        None => source.magic(),
    };
    // One sync at the end: the destination is new, and a crash leaves a
    // valid prefix of it (every transaction is written whole).
    let mut dest = FileStorage::open(
        dst,
        Options {
            magic,
            sync: false,
            ..Options::writable()
        },
    )
    .with_context(|| format!("creating {}", dst.display()))?;
    let bar = progress(quiet, source.end(), "copying");
    let mut iter = source.iter(None, None)?;
    let mut transactions = 0u64;
    while let Some(txn) = iter.next_txn()? {
        let mut writer = dest.begin(Some(txn.tid()), txn.meta(), txn.view.status())?;
        for record in txn.records() {
            let record = record?;
            writer.restore(record.oid, record.data.as_deref(), record.data_txn)?;
        }
        writer
            .commit()
            .with_context(|| format!("writing transaction {}", txn.tid()))?;
        transactions += 1;
        bar.set_position(txn.view.end_pos());
    }
    bar.finish_and_clear();
    let size = dest.end();
    dest.close()
        .with_context(|| format!("closing {}", dst.display()))?;
    if !quiet {
        eprintln!(
            "copied {transactions} transactions, {size} bytes, to {}",
            dst.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn stat(file: &Path, json: bool, quiet: bool) -> Result<ExitCode> {
    let storage = open_read(file)?;
    let bar = progress(quiet || json, storage.end(), "scanning");
    let mut iter = storage.iter(None, None)?;
    let (mut transactions, mut records, mut data_bytes, mut backpointers, mut no_data) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut packed = 0u64;
    let (mut first, mut last) = (None, None);
    while let Some(txn) = iter.next_txn()? {
        transactions += 1;
        if txn.view.status() == b'p' {
            packed += 1;
        }
        first.get_or_insert(txn.tid());
        last = Some(txn.tid());
        for record in txn.view.records() {
            records += 1;
            match record.data {
                Some(data) => data_bytes += data.len() as u64,
                None if record.back == 0 => no_data += 1,
                None => backpointers += 1,
            }
        }
        if transactions % 1024 == 0 {
            bar.set_position(txn.view.end_pos());
        }
    }
    bar.finish_and_clear();
    let mut deleted = 0u64;
    for (_, pos) in storage.index().iter() {
        if storage
            .data_at(pos)
            .map(|(d, _)| d.is_none())
            .unwrap_or(false)
        {
            deleted += 1;
        }
    }
    let objects = storage.len() as u64;
    let size = std::fs::metadata(file)?.len();
    let tid_text = |t: Option<Tid>| {
        t.map_or("none".to_string(), |t| {
            format!("{t} ({})", t.timestamp_string())
        })
    };
    let magic = String::from_utf8_lossy(&storage.magic().bytes()).into_owned();
    if json {
        let tid_json = |t: Option<Tid>| t.map_or("null".to_string(), |t| format!("\"{t}\""));
        println!(
            "{{\"file\":{:?},\"magic\":\"{magic}\",\"size\":{size},\"end\":{},\"transactions\":{transactions},\
             \"packed_transactions\":{packed},\"records\":{records},\"data_bytes\":{data_bytes},\
             \"backpointer_records\":{backpointers},\"no_data_records\":{no_data},\"objects\":{objects},\
             \"deleted_objects\":{deleted},\"max_oid\":{},\"first_tid\":{},\"last_tid\":{},\"torn_tail_bytes\":{}}}",
            file.display().to_string(),
            storage.end(),
            storage.max_oid().map_or("null".to_string(), |o| format!("\"{o}\"")),
            tid_json(first),
            tid_json(last),
            storage.torn_tail().map_or(0, |t| t.len),
        );
    } else {
        println!("file:                {}", file.display());
        println!("magic:               {magic}");
        println!("size:                {size} bytes");
        println!("transactions:        {transactions} ({packed} packed)");
        println!("data records:        {records}");
        println!(
            "  with data:         {} ({data_bytes} bytes of pickles)",
            records - backpointers - no_data
        );
        println!("  backpointers:      {backpointers}");
        println!("  without data:      {no_data}");
        println!("objects:             {objects} ({deleted} deleted or creation undone)");
        println!(
            "max oid:             {}",
            storage
                .max_oid()
                .map_or("none".to_string(), |o| o.to_string())
        );
        println!("first tid:           {}", tid_text(first));
        println!("last tid:            {}", tid_text(last));
        if let Some(torn) = storage.torn_tail() {
            println!(
                "torn tail:           {} bytes at {} ({})",
                torn.len, torn.pos, torn.why
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn progress(hidden: bool, len: u64, what: &str) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

fn spinner(hidden: bool, what: &str) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_message(what.to_string());
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

/// A Unix timestamp, or a date/time (UTC unless it carries an offset).
fn parse_time(text: &str) -> Result<f64> {
    if let Ok(seconds) = text.parse::<f64>() {
        return Ok(seconds);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp() as f64 + t.timestamp_subsec_nanos() as f64 / 1e9);
    }
    for format in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(text, format) {
            let t = t.and_utc();
            return Ok(t.timestamp() as f64 + t.timestamp_subsec_nanos() as f64 / 1e9);
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(d
            .and_hms_opt(0, 0, 0)
            .expect("midnight")
            .and_utc()
            .timestamp() as f64);
    }
    bail!("cannot read {text:?} as a time: give a Unix timestamp or a date like 2024-01-31 or \"2024-01-31 12:00:00\"")
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
