//! `neobench`: the benchmark command for the Rust client. It starts our own cluster (the
//! release daemons, in a temporary directory), runs the workload of `workload.rs` with
//! `neo_client::Client` and prints a table; given a NEO/py cluster, it runs the same
//! workload there with NEO/py's own client (`neopy_bench.py`) and prints both columns with
//! ratios. Figures are printed, never asserted: performance is not a test (ARCHITECTURE.md).

mod cluster;
mod figures;
mod host;
mod neopy;
mod workload;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Parser;

use crate::cluster::{CpuMeter, OwnCluster};
use crate::figures::Figures;
use crate::neopy::NeoPy;
use crate::workload::Workload;

/// Benchmark the Rust NEO client against our cluster, and NEO/py's client against a
/// NEO/py cluster when one is given.
#[derive(Parser, Debug)]
#[command(name = "neobench")]
struct Args {
    /// Objects populated (and loaded by the parallel phases).
    #[arg(long, default_value_t = 10_000)]
    objects: usize,
    /// Bytes of each object.
    #[arg(long = "object-size", default_value_t = 200)]
    object_size: usize,
    /// Objects loaded by the serial cold pass (fresh client) and again by the warm pass.
    #[arg(long = "serial-loads", default_value_t = 5_000)]
    serial_loads: usize,
    /// Seconds of each parallel load and commit phase.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Client connections of the parallel load phases (comma-separated; 0: none).
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    connections: Vec<usize>,
    /// Committers of the commit phases (comma-separated; 0: none).
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    committers: Vec<usize>,
    /// Storage nodes of our cluster.
    #[arg(long, default_value_t = 1)]
    storages: usize,
    /// Partitions of our cluster.
    #[arg(long, default_value_t = 12)]
    partitions: u32,
    /// SQLite PRAGMAs of our storages, as a URI query (`journal_mode=WAL&synchronous=NORMAL`;
    /// NEO/py's defaults otherwise).
    #[arg(long = "sqlite-pragmas", value_name = "QUERY")]
    sqlite_pragmas: Option<String>,
    /// Where neomaster, neostorage and neoadmin are (default: next to neobench).
    #[arg(long = "bin-dir")]
    bin_dir: Option<PathBuf>,
    /// Use this running cluster (master address) for the Rust column instead of starting
    /// ours; needs --cluster.
    #[arg(long, requires = "cluster")]
    master: Option<String>,
    /// Name of the cluster given by --master.
    #[arg(long)]
    cluster: Option<String>,
    /// Master of a NEO/py cluster: adds a column with NEO/py's client against it.
    #[arg(long = "neo-py-master", requires = "neo_py_cluster")]
    neo_py_master: Option<String>,
    /// Name of the NEO/py cluster.
    #[arg(long = "neo-py-cluster")]
    neo_py_cluster: Option<String>,
    /// Also run the Rust client against the NEO/py cluster (a third column).
    #[arg(long = "rust-on-neo-py", requires = "neo_py_master")]
    rust_on_neo_py: bool,
    /// Python with ZODB for NEO/py's client ($NEO_PYTHON, else python3).
    #[arg(long)]
    python: Option<PathBuf>,
    /// NEO/py's source tree, added to PYTHONPATH ($NEO_PY_SOURCE).
    #[arg(long = "neo-py-source")]
    neo_py_source: Option<PathBuf>,
    /// Seed of the load order.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The Rust client never spins for an answer (ClientConfig::spin), to measure what
    /// spinning brings.
    #[arg(long)]
    no_spin: bool,
    /// Run our workload this many times (each on a fresh cluster of ours), show the median
    /// of each figure in the table, and below it each target's spread over the runs (on a
    /// shared machine one run can be slowed by the host); NEO/py's column runs once
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,
    /// Keep our cluster's directory (databases, daemons' stderr) and say where.
    #[arg(long)]
    keep: bool,
    /// Also print every run's figures as JSON lines.
    #[arg(long)]
    json: bool,
}

/// Round trips of each host probe (a fraction of a second).
const HOST_ROUND_TRIPS: usize = 10_000;

fn main() {
    let args = Args::parse();
    match run(args) {
        Ok(()) => {}
        Err(error) => {
            eprintln!("neobench: {error:#}");
            std::process::exit(1);
        }
    }
}

fn run(args: Args) -> Result<()> {
    if args.objects == 0 || args.serial_loads > args.objects {
        bail!("--objects must be positive and at least --serial-loads");
    }
    if args.storages == 0 {
        bail!("--storages must be at least 1");
    }
    let workload = Workload {
        objects: args.objects,
        object_size: args.object_size.max(8),
        serial_loads: args.serial_loads,
        seconds: args.seconds,
        // 0 leaves a phase out (`--committers 0`), e.g. to profile only the loads.
        connections: args
            .connections
            .iter()
            .copied()
            .filter(|&k| k > 0)
            .collect(),
        committers: args.committers.iter().copied().filter(|&k| k > 0).collect(),
        seed: args.seed,
        spin: !args.no_spin,
    };
    let progress = |message: &str| eprintln!("neobench: {message}");
    // The host's speed around our runs: the figures move with it.
    progress("measuring the host's loopback round trip");
    let host_before = host::probe(HOST_ROUND_TRIPS)?;
    // Ours, once per --repeat.
    let mut ours: Vec<Figures> = Vec::new();
    for round in 1..=args.repeat {
        if args.repeat > 1 {
            progress(&format!("run {round} of {}", args.repeat));
        }
        ours.push(run_ours(&args, &workload, &progress)?);
    }
    let host_after = host::probe(HOST_ROUND_TRIPS)?;
    let mut runs = vec![figures::median(&ours)];

    if let (Some(master), Some(name)) = (&args.neo_py_master, &args.neo_py_cluster) {
        let neopy = NeoPy {
            python: args
                .python
                .clone()
                .or_else(|| std::env::var_os("NEO_PYTHON").map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from("python3")),
            source: args
                .neo_py_source
                .clone()
                .or_else(|| std::env::var_os("NEO_PY_SOURCE").map(PathBuf::from)),
        };
        progress(&format!("NEO/py client against {name} at {master}"));
        runs.push(neopy.run(figures::NEO_PY_LABEL, master, name, &workload)?);
        if args.rust_on_neo_py {
            progress(&format!("Rust client against NEO/py's {name} at {master}"));
            runs.push(workload::run(
                "rust->NEO/py",
                master,
                name,
                &workload,
                None,
                &progress,
            )?);
        }
    }

    if args.json {
        for run in ours.iter().chain(&runs[1..]) {
            println!("{}", run.to_json());
        }
    }
    println!(
        "{} objects of {} bytes, {} serial loads, {}s per parallel phase",
        workload.objects, workload.object_size, workload.serial_loads, workload.seconds
    );
    println!("host before our runs: {host_before}");
    println!("host after our runs:  {host_after}");
    if ours.len() > 1 {
        println!("{}: the median of {} runs", runs[0].label, ours.len());
    }
    print!("{}", figures::table(&runs));
    if ours.len() > 1 {
        println!("{} over its {} runs:", runs[0].label, ours.len());
        print!("{}", figures::spread(&ours, figures::neo_py_warm(&runs)));
    }
    if let Some(ours) = runs.first().filter(|r| !r.cpu.is_empty()) {
        println!("CPU per operation (us), {}:", ours.label);
        print!("{}", figures::cpu_table(ours));
    }
    Ok(())
}

/// One run of our workload: on the cluster given by --master, else on a fresh cluster of
/// ours (with CPU figures).
fn run_ours(args: &Args, workload: &Workload, progress: &dyn Fn(&str)) -> Result<Figures> {
    if let (Some(master), Some(name)) = (&args.master, &args.cluster) {
        progress(&format!("Rust client against {name} at {master}"));
        return workload::run("rust", master, name, workload, None, progress);
    }
    let bin_dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()
            .context("finding neobench's executable")?
            .parent()
            .map(Path::to_path_buf)
            .context("finding the daemons' directory")?,
    };
    progress(&format!(
        "starting our cluster: 1 master, {} SQLite storage(s) from {}",
        args.storages,
        bin_dir.display()
    ));
    let mut cluster = OwnCluster::start(
        &bin_dir,
        args.storages,
        args.partitions,
        args.sqlite_pragmas.as_deref(),
    )?;
    let meter = CpuMeter::new(cluster.pids.clone());
    let master = cluster.master.to_string();
    let name = cluster.name.clone();
    let result = workload::run("ours", &master, &name, workload, Some(&meter), progress);
    let result = result.map_err(|e| match cluster.exited() {
        Some(exited) => e.context(exited),
        None => e,
    });
    if args.keep {
        if let Some(dir) = cluster.keep() {
            progress(&format!("our cluster's files are in {}", dir.display()));
        }
    }
    result
}
