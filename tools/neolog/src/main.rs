//! `neolog`: prints NEO node logs, ours and NEO/py's, plain or compressed, several files
//! merged by time, with NEO/py's options and line format (`neo/scripts/neolog.py` in NEO/py),
//! plus `--until`. Packet names come from each file's `protocol` table, read as data.

mod input;
mod render;

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use chrono::{DateTime, Local, NaiveDate, NaiveDateTime, NaiveTime, TimeZone};
use clap::Parser;

use crate::input::Input;
use crate::render::{Decode, Options, Renderer};

#[derive(Parser, Debug)]
#[command(name = "neolog", about = "NEO log reader")]
struct Args {
    /// Decode packet bodies.
    #[arg(short = 'a', long = "all")]
    all: bool,
    /// Also decompress object data in packet bodies (implies --all).
    #[arg(short = 'A', long = "decompress")]
    decompress: bool,
    /// Colour lines by severity and drop the level column.
    #[arg(short = 'c', long = "color")]
    color: bool,
    /// strftime format of the date column; an empty string removes the column.
    #[arg(short = 'd', long = "date", value_name = "FORMAT")]
    date: Option<String>,
    /// Keep printing records appended to the files.
    #[arg(short = 'f', long = "follow")]
    follow: bool,
    /// With -f, send SIGRTMIN to PID after each poll so that it flushes its log.
    #[arg(short = 'F', long = "flush", value_name = "PID")]
    flush: Vec<i32>,
    /// Only show records of this node; '-' hides the node column.
    #[arg(short = 'n', long = "node", value_name = "NAME")]
    node: Vec<String>,
    /// With -f, seconds between polls.
    #[arg(
        short = 's',
        long = "sleep-interval",
        value_name = "N",
        default_value_t = 1.0
    )]
    sleep_interval: f64,
    /// Records at or after N: a UNIX time if N > 0, now+N if N < 0, or a date.
    #[arg(long = "from", value_name = "N", allow_hyphen_values = true)]
    from: Option<String>,
    /// Records at or before N (same forms as --from).
    #[arg(long = "until", value_name = "N", allow_hyphen_values = true)]
    until: Option<String>,
    /// Show the cluster name in the node column.
    #[arg(short = 'C', long = "cluster", conflicts_with = "no_nid")]
    cluster: bool,
    /// Show the node name instead of its NID.
    #[arg(short = 'N', long = "no-nid")]
    no_nid: bool,
    /// Log files, plain or compressed with gzip, bzip2 or xz.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn main() {
    let args = Args::parse();
    match run(args) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            if is_broken_pipe(&e) {
                std::process::exit(1);
            }
            eprintln!("neolog: {e:#}");
            std::process::exit(1);
        }
    }
}

fn run(args: Args) -> anyhow::Result<i32> {
    if args.sleep_interval <= 0.0 || args.sleep_interval.is_nan() {
        anyhow::bail!("sleep_interval must be positive");
    }
    let date_format = args.date.clone().unwrap_or_else(|| "%F %T".to_owned());
    if chrono::format::StrftimeItems::new(&date_format)
        .any(|i| matches!(i, chrono::format::Item::Error))
    {
        anyhow::bail!("invalid date format {date_format:?}");
    }
    let now = now();
    let from = args
        .from
        .as_deref()
        .map(|t| parse_time(t, now))
        .transpose()
        .context("parsing --from")?;
    let until = args
        .until
        .as_deref()
        .map(|t| parse_time(t, now))
        .transpose()
        .context("parsing --until")?;
    let mut nodes = args.node.clone();
    let node_column = !nodes.iter().any(|n| n == "-");
    nodes.retain(|n| n != "-");
    let mut renderer = Renderer::new(Options {
        date_format,
        decode: if args.decompress {
            Decode::Decompress
        } else if args.all {
            Decode::Args
        } else {
            Decode::None
        },
        color: args.color,
        node_column,
        show_cluster: args.cluster,
        no_nid: args.no_nid,
        nodes,
    });

    let mut status = 0;
    let mut inputs = Vec::new();
    for path in &args.files {
        let mut warnings = Vec::new();
        match input::open(path, &mut warnings) {
            Ok(mut input) => {
                // NEO/py's neolog does not print where a message was logged.
                input.reader.skip_locations();
                if let Some(from) = from {
                    input.reader.set_from(from);
                }
                if let Some(until) = until {
                    input.reader.set_until(until);
                }
                inputs.push(input);
            }
            Err(e) => {
                eprintln!("neolog: {e:#}");
                status = 1;
            }
        }
        for warning in warnings {
            eprintln!("neolog: {warning}");
        }
    }
    if inputs.is_empty() {
        return Ok(1);
    }

    let stdout = io::stdout();
    let mut out = io::BufWriter::with_capacity(1 << 16, stdout.lock());
    if args.follow {
        install_interrupt_handler();
        loop {
            emit_merged(&mut inputs, &mut renderer, &mut out)?;
            out.flush()?;
            for pid in &args.flush {
                // SAFETY: kill only sends a signal; a bad pid makes it fail, not crash.
                unsafe {
                    libc::kill(*pid, libc::SIGRTMIN());
                }
            }
            let deadline = std::time::Instant::now() + Duration::from_secs_f64(args.sleep_interval);
            while std::time::Instant::now() < deadline {
                if INTERRUPTED.load(Ordering::SeqCst) {
                    return Ok(status);
                }
                std::thread::sleep(
                    Duration::from_millis(20).min(deadline - std::time::Instant::now()),
                );
            }
            for input in &mut inputs {
                input.reader.new_pass();
            }
        }
    }
    emit_merged(&mut inputs, &mut renderer, &mut out)?;
    out.flush()?;
    Ok(status)
}

/// Prints the current pass of every file, interleaved by date; a tie goes to the file
/// named first, so each file's own order is kept. Records are lent by the readers and
/// rendered into one text buffer, written out in large blocks.
fn emit_merged(
    inputs: &mut [Input],
    renderer: &mut Renderer,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    const BLOCK: usize = 1 << 17;
    let mut heads: Vec<Option<f64>> = inputs.iter_mut().map(peek).collect();
    let mut text = String::with_capacity(BLOCK + (1 << 12));
    loop {
        let mut best: Option<(usize, f64)> = None;
        for (i, head) in heads.iter().enumerate() {
            if let Some(date) = *head {
                if best.is_none_or(|(_, b)| date < b) {
                    best = Some((i, date));
                }
            }
        }
        let Some((index, _)) = best else {
            break;
        };
        let input = &mut inputs[index];
        if let Some(record) = input.reader.next_ref() {
            renderer.render(record, &input.default_name, &mut text);
        }
        if text.len() >= BLOCK {
            out.write_all(text.as_bytes())?;
            text.clear();
        }
        heads[index] = peek(input);
    }
    out.write_all(text.as_bytes())?;
    Ok(())
}

/// The date of the next record of `input`, reporting what reading it found wrong.
fn peek(input: &mut Input) -> Option<f64> {
    let date = input.reader.peek_date();
    for warning in input.reader.take_warnings() {
        eprintln!("neolog: {warning}");
    }
    date
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// NEO/py's `--from` rule: a positive number is a UNIX time, a negative one is relative to
/// now, anything else a date (local time unless it carries an offset).
fn parse_time(text: &str, now: f64) -> anyhow::Result<f64> {
    let text = text.trim();
    if let Ok(number) = text.parse::<f64>() {
        return Ok(if number < 0.0 { now + number } else { number });
    }
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(seconds(time.timestamp(), time.timestamp_subsec_micros()));
    }
    for format in [
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%d %H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M%:z",
    ] {
        if let Ok(time) = DateTime::parse_from_str(text, format) {
            return Ok(seconds(time.timestamp(), time.timestamp_subsec_micros()));
        }
    }
    let naive = parse_naive(text).with_context(|| format!("unrecognised date {text:?}"))?;
    let local = Local
        .from_local_datetime(&naive)
        .earliest()
        .with_context(|| format!("{text:?} does not exist in the local time zone"))?;
    Ok(seconds(local.timestamp(), local.timestamp_subsec_micros()))
}

fn parse_naive(text: &str) -> Option<NaiveDateTime> {
    for format in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
        "%Y/%m/%d %H:%M:%S%.f",
        "%Y/%m/%d %H:%M",
        "%d/%m/%Y %H:%M:%S%.f",
        "%Y%m%d %H:%M:%S%.f",
        "%Y%m%dT%H%M%S",
    ] {
        if let Ok(time) = NaiveDateTime::parse_from_str(text, format) {
            return Some(time);
        }
    }
    for format in ["%Y-%m-%d", "%Y/%m/%d", "%Y%m%d", "%d %b %Y", "%b %d %Y"] {
        if let Ok(date) = NaiveDate::parse_from_str(text, format) {
            return date.and_hms_opt(0, 0, 0);
        }
    }
    // A time alone means today, as with dateutil.
    for format in ["%H:%M:%S%.f", "%H:%M"] {
        if let Ok(time) = NaiveTime::parse_from_str(text, format) {
            return Some(Local::now().date_naive().and_time(time));
        }
    }
    None
}

fn seconds(secs: i64, micros: u32) -> f64 {
    secs as f64 + micros as f64 * 1e-6
}

fn install_interrupt_handler() {
    extern "C" fn on_interrupt(_: libc::c_int) {
        INTERRUPTED.store(true, Ordering::SeqCst);
    }
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|e| {
        e.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}
