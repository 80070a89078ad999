//! `neosimple`: a whole local cluster in one command. It runs the real daemons (found next
//! to its own executable) as child processes: masters, one storage per DB name (SQLite
//! files in the temporary directory), and an admin; it starts the cluster itself
//! (masters get `--autostart` with the number of storages), waits until the admin says
//! RUNNING, prints how to reach the cluster, and on Ctrl-C (or SIGTERM) stops it: STOPPING
//! through the admin, then SIGTERM, then SIGKILL for what is left. Option names are
//! NEO/py's where both have the option (tools.md 1.8).

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use neo_protocol::{ClusterState, SetClusterState};

use crate::ctl::{check_ack, AdminClient};
use crate::driver::{install_shutdown_signals, take_shutdown_signal};

/// Start a throw-away NEO cluster made of real processes, until Ctrl-C.
#[derive(Parser, Debug)]
#[command(name = "neosimple")]
pub struct Args {
    /// Database names, one storage node each (SQLite files in the temporary directory);
    /// two storages when none is given.
    #[arg(value_name = "DB")]
    pub databases: Vec<String>,
    /// Directory for the databases and logs (must exist); a new one is made otherwise.
    #[arg(long = "temp_dir", value_name = "DIR")]
    pub temp_dir: Option<PathBuf>,
    /// Number of master nodes.
    #[arg(long = "master_count", default_value_t = 1)]
    pub master_count: usize,
    /// Number of partitions.
    #[arg(long, default_value_t = 12)]
    pub partitions: u32,
    /// Number of replicas of each partition.
    #[arg(long, default_value_t = 0)]
    pub replicas: u32,
    /// Cluster name (default: neo_ and a random number).
    #[arg(long)]
    pub name: Option<String>,
    /// Start the cluster once every storage is there (always done; kept for NEO/py's
    /// command lines).
    #[arg(long)]
    pub autostart: bool,
    /// Give each node a log file in the directory (master_0.log, storage_0.log, admin.log).
    #[arg(long)]
    pub logger: bool,
    /// Address to bind.
    #[arg(long = "bind_ip", default_value = "127.0.0.1")]
    pub bind_ip: IpAddr,
    /// Seed for the random cluster name.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Storage backend ($NEO_TESTS_ADAPTER, else SQLite).
    #[arg(long)]
    pub adapter: Option<String>,
    /// Delete the database files first.
    #[arg(long = "clear_databases")]
    pub clear_databases: bool,
    /// Seconds to wait for the cluster to be RUNNING.
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
    /// More messages from the daemons (passed on as -v).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// A daemon started by neosimple.
struct Daemon {
    label: String,
    child: Child,
    status: Option<ExitStatus>,
}

/// The running cluster; dropping it kills what is left.
struct Cluster {
    daemons: Vec<Daemon>,
    admin: SocketAddr,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for daemon in &mut self.daemons {
            if daemon.status.is_none() {
                let _ = daemon.child.kill();
                let _ = daemon.child.wait();
            }
        }
    }
}

pub fn main() -> ! {
    let args = Args::parse();
    match run(args) {
        Ok(code) => std::process::exit(code),
        Err(error) => {
            eprintln!("neosimple: {error:#}");
            std::process::exit(1)
        }
    }
}

fn run(args: Args) -> Result<i32> {
    install_shutdown_signals().context("installing signal handlers")?;
    let bin_dir = std::env::current_exe()
        .context("finding neosimple's executable")?
        .parent()
        .map(Path::to_path_buf)
        .context("finding the daemons' directory")?;
    let temp_dir = match &args.temp_dir {
        Some(dir) => {
            if !dir.is_dir() {
                bail!("--temp_dir {}: not a directory", dir.display());
            }
            dir.clone()
        }
        None => tempfile::Builder::new()
            .prefix("neosimple-")
            .tempdir()
            .context("creating a temporary directory")?
            .keep(),
    };
    let databases = if args.databases.is_empty() {
        vec!["storage_0".to_owned(), "storage_1".to_owned()]
    } else {
        args.databases.clone()
    };
    let adapter = args
        .adapter
        .clone()
        .or_else(|| std::env::var("NEO_TESTS_ADAPTER").ok())
        .unwrap_or_else(|| "SQLite".to_owned());
    let name = args.name.clone().unwrap_or_else(|| {
        let seed = args.seed.unwrap_or_else(crate::driver::random_seed);
        format!("neo_{}", neo_node::Rng::new(seed).below(1_000_000))
    });
    if args.master_count == 0 {
        bail!("--master_count must be at least 1");
    }

    let masters: Vec<SocketAddr> = (0..args.master_count)
        .map(|_| reserve_port(args.bind_ip))
        .collect::<Result<_>>()?;
    let admin = reserve_port(args.bind_ip)?;
    let master_list = masters
        .iter()
        .map(SocketAddr::to_string)
        .collect::<Vec<_>>()
        .join(" ");
    let verbose = (args.verbose > 0).then(|| format!("-{}", "v".repeat(args.verbose.into())));
    let log = |label: &str| -> Vec<String> {
        if args.logger {
            let path = temp_dir.join(format!("{label}.log"));
            vec!["--logfile".into(), path.display().to_string()]
        } else {
            Vec::new()
        }
    };

    let mut cluster = Cluster {
        daemons: Vec::new(),
        admin,
    };
    for (i, master) in masters.iter().enumerate() {
        let mut command_args = vec![
            "--cluster".to_owned(),
            name.clone(),
            "--bind".into(),
            master.to_string(),
            "--masters".into(),
            master_list.clone(),
            "--partitions".into(),
            args.partitions.to_string(),
            "--replicas".into(),
            args.replicas.to_string(),
            "--autostart".into(),
            databases.len().to_string(),
        ];
        command_args.extend(log(&format!("master_{i}")));
        command_args.extend(verbose.clone());
        cluster.spawn(&bin_dir, "neomaster", format!("master_{i}"), command_args)?;
    }
    for (i, database) in databases.iter().enumerate() {
        let file = temp_dir.join(if database.contains('.') {
            database.clone()
        } else {
            format!("{database}.db")
        });
        if args.clear_databases {
            let _ = std::fs::remove_file(&file);
        }
        let mut command_args = vec![
            "--cluster".to_owned(),
            name.clone(),
            "--bind".into(),
            args.bind_ip.to_string(),
            "--masters".into(),
            master_list.clone(),
            "--adapter".into(),
            adapter.clone(),
            "--database".into(),
            file.display().to_string(),
        ];
        command_args.extend(log(&format!("storage_{i}")));
        command_args.extend(verbose.clone());
        cluster.spawn(&bin_dir, "neostorage", format!("storage_{i}"), command_args)?;
    }
    let mut command_args = vec![
        "--cluster".to_owned(),
        name.clone(),
        "--bind".into(),
        admin.to_string(),
        "--masters".into(),
        master_list.clone(),
    ];
    command_args.extend(log("admin"));
    command_args.extend(verbose.clone());
    cluster.spawn(&bin_dir, "neoadmin", "admin".into(), command_args)?;

    let timeout = Duration::from_secs_f64(args.timeout);
    if let Err(error) = cluster.wait_running(timeout) {
        cluster.stop();
        return Err(error);
    }
    let master = masters[0];
    println!("cluster {name} is RUNNING");
    println!("  masters: {master_list}");
    println!("  admin:   {admin}");
    println!("  neoctl:  neoctl -a {admin} print pt");
    println!("  ZODB:    neo://{name}@{master}");
    println!("  files:   {}", temp_dir.display());
    println!("Press Ctrl-C to stop the cluster.");

    loop {
        if take_shutdown_signal() != 0 {
            eprintln!("stopping the cluster");
            cluster.stop();
            return Ok(0);
        }
        cluster.reap();
        if cluster.daemons.iter().all(|d| d.status.is_some()) {
            eprintln!("every node has exited");
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Cluster {
    fn spawn(
        &mut self,
        bin_dir: &Path,
        program: &str,
        label: String,
        args: Vec<String>,
    ) -> Result<()> {
        let path = bin_dir.join(program);
        let mut command = Command::new(&path);
        command.args(&args);
        // Each daemon runs in a session of its own, as under systemd or an init script: it
        // gets no Ctrl-C from the terminal (only neosimple does, and stops them in order),
        // and with the kernel's autogroup scheduling it is a scheduling group of its own,
        // not sharing one with the applications started from the same terminal. The
        // daemons die with neosimple if it is killed.
        // SAFETY: prctl and setsid are async-signal-safe and touch nothing of the parent's
        // state; setsid cannot fail in a child that leads no process group.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                libc::setsid();
                Ok(())
            });
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", path.display()))?;
        let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
        eprintln!("pid {}: {program} {}", child.id(), quoted.join(" "));
        self.daemons.push(Daemon {
            label,
            child,
            status: None,
        });
        Ok(())
    }

    /// Notes which daemons have exited, and says so.
    fn reap(&mut self) {
        for daemon in &mut self.daemons {
            if daemon.status.is_some() {
                continue;
            }
            if let Ok(Some(status)) = daemon.child.try_wait() {
                eprintln!(
                    "{} (pid {}) exited: {status}",
                    daemon.label,
                    daemon.child.id()
                );
                daemon.status = Some(status);
            }
        }
    }

    fn wait_running(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if take_shutdown_signal() != 0 {
                bail!("interrupted while waiting for the cluster");
            }
            self.reap();
            if let Some(dead) = self.daemons.iter().find(|d| d.status.is_some()) {
                bail!("{} exited before the cluster was running", dead.label);
            }
            let last = match AdminClient::connect(self.admin, Duration::from_secs(2))
                .and_then(|client| client.cluster_state(Duration::from_secs(2)))
            {
                Ok(Some(ClusterState::Running)) => return Ok(()),
                Ok(state) => format!("cluster state {state:?}"),
                Err(error) => format!("{error:#}"),
            };
            if Instant::now() >= deadline {
                bail!(
                    "the cluster is not RUNNING after {}s ({})",
                    timeout.as_secs_f64(),
                    last
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// STOPPING through the admin, then SIGTERM, then SIGKILL.
    fn stop(&mut self) {
        let stopping =
            AdminClient::connect(self.admin, Duration::from_secs(2)).and_then(|client| {
                check_ack(&client.ask(
                    SetClusterState {
                        state: ClusterState::Stopping,
                    },
                    Duration::from_secs(5),
                )?)
            });
        if let Err(error) = &stopping {
            eprintln!("could not ask the cluster to stop: {error:#}");
        }
        if stopping.is_ok() && self.wait_exit(Duration::from_secs(10)) {
            return;
        }
        for daemon in &self.daemons {
            if daemon.status.is_none() {
                // SAFETY: kill only sends a signal to our own child.
                unsafe {
                    libc::kill(daemon.child.id() as libc::pid_t, libc::SIGTERM);
                }
            }
        }
        if self.wait_exit(Duration::from_secs(10)) {
            return;
        }
        for daemon in &mut self.daemons {
            if daemon.status.is_none() {
                eprintln!("killing {} (pid {})", daemon.label, daemon.child.id());
                let _ = daemon.child.kill();
                daemon.status = daemon.child.wait().ok();
            }
        }
    }

    fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            self.reap();
            if self.daemons.iter().all(|d| d.status.is_some()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// An address with a port that was free a moment ago (the daemons that need a known port
/// bind it right after).
fn reserve_port(ip: IpAddr) -> Result<SocketAddr> {
    let listener =
        TcpListener::bind((ip, 0)).with_context(|| format!("finding a free port on {ip}"))?;
    Ok(listener.local_addr()?)
}
