//! Our own throw-away cluster for a run: the release daemons (`neomaster`, `neostorage -a
//! SQLite`, `neoadmin`, as `neosimple` starts them) in a temporary directory, killed when
//! dropped; and the per-process CPU meter that says where the time went.

use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};

/// The running daemons; the master's address and cluster name are what a client needs.
pub struct OwnCluster {
    pub master: SocketAddr,
    pub name: String,
    /// (label, pid) of each daemon, for the CPU meter.
    pub pids: Vec<(String, u32)>,
    children: Vec<Child>,
    dir: Option<tempfile::TempDir>,
}

impl OwnCluster {
    /// Starts 1 master (autostart once every storage is there), `storages` SQLite storages
    /// and an admin from `bin_dir`. Returns at once: clients wait for the cluster to run.
    /// `pragmas` (`journal_mode=WAL&synchronous=NORMAL`) becomes the query of a `file:`
    /// URI database, as NEO/py's SQLite adapter reads it.
    pub fn start(
        bin_dir: &Path,
        storages: usize,
        partitions: u32,
        pragmas: Option<&str>,
    ) -> Result<OwnCluster> {
        let dir = tempfile::Builder::new()
            .prefix("neobench-")
            .tempdir()
            .context("creating a temporary directory")?;
        let master = free_port()?;
        let name = format!("neobench_{}", master.port());
        let mut cluster = OwnCluster {
            master,
            name: name.clone(),
            pids: Vec::new(),
            children: Vec::new(),
            dir: Some(dir),
        };
        let common = |bind: String| -> Vec<String> {
            vec![
                "--cluster".into(),
                name.clone(),
                "--bind".into(),
                bind,
                "--masters".into(),
                master.to_string(),
            ]
        };
        let mut args = common(master.to_string());
        args.extend([
            "--partitions".into(),
            partitions.to_string(),
            "--replicas".into(),
            "0".into(),
            "--autostart".into(),
            storages.to_string(),
        ]);
        cluster.spawn(bin_dir, "neomaster", "master".into(), args)?;
        for i in 0..storages {
            let path = cluster.path().join(format!("storage_{i}.db"));
            let database = match pragmas {
                Some(query) => format!("file:{}?{query}", path.display()),
                None => path.display().to_string(),
            };
            let mut args = common("127.0.0.1".into());
            args.extend([
                "--adapter".into(),
                "SQLite".into(),
                "--database".into(),
                database,
            ]);
            cluster.spawn(bin_dir, "neostorage", format!("storage_{i}"), args)?;
        }
        let admin = free_port()?;
        cluster.spawn(
            bin_dir,
            "neoadmin",
            "admin".into(),
            common(admin.to_string()),
        )?;
        Ok(cluster)
    }

    fn path(&self) -> &Path {
        self.dir.as_ref().map_or(Path::new("/tmp"), |d| d.path())
    }

    /// Keeps the directory (databases and stderr of each daemon) after the run.
    pub fn keep(&mut self) -> Option<PathBuf> {
        self.dir.take().map(tempfile::TempDir::keep)
    }

    fn spawn(
        &mut self,
        bin_dir: &Path,
        program: &str,
        label: String,
        args: Vec<String>,
    ) -> Result<()> {
        let path = bin_dir.join(program);
        let stderr = std::fs::File::create(self.path().join(format!("{label}.err")))
            .context("creating a daemon's stderr file")?;
        let mut command = Command::new(&path);
        command.args(&args).stdout(Stdio::null()).stderr(stderr);
        // The daemons die with us even if we are killed (no orphan holding the ports).
        // Each runs in a session of its own, as a daemon started by systemd or an init
        // script does: with the kernel's autogroup scheduling (on by default), a session
        // is one scheduling group, and a storage in ours would get a seventeenth of the
        // CPU against 16 load threads, preempted by each one it answers (measured: 17,000
        // preemptions/s and 60-95k loads/s, against 2,000/s and 100-120k/s on their own).
        // SAFETY: prctl and setsid are async-signal-safe and touch nothing of the parent's
        // state; setsid cannot fail in a child that leads no process group.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                libc::setsid();
                Ok(())
            });
        }
        let child = command.spawn().with_context(|| {
            format!(
                "starting {} (build it with cargo build --release -p neo-daemons)",
                path.display()
            )
        })?;
        self.pids.push((label, child.id()));
        self.children.push(child);
        Ok(())
    }

    /// The first daemon that has exited, if any (a run that hangs says why).
    pub fn exited(&mut self) -> Option<String> {
        for (child, (label, _)) in self.children.iter_mut().zip(&self.pids) {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(format!("{label} exited: {status}"));
            }
        }
        None
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?)
}

/// CPU time of this process (the client side) and of the cluster's daemons, sampled around
/// a workload.
pub struct CpuMeter {
    pids: Vec<(String, u32)>,
}

/// CPU seconds per process at one instant, in the meter's order (this process first).
pub struct CpuSample(Vec<f64>);

impl CpuMeter {
    pub fn new(pids: Vec<(String, u32)>) -> CpuMeter {
        CpuMeter { pids }
    }

    pub fn sample(&self) -> CpuSample {
        let mut seconds = vec![own_cpu_seconds()];
        seconds.extend(self.pids.iter().map(|(_, pid)| process_cpu_seconds(*pid)));
        CpuSample(seconds)
    }

    /// Microseconds of CPU per operation of each process between two samples.
    pub fn per_operation(
        &self,
        before: &CpuSample,
        after: &CpuSample,
        operations: u64,
    ) -> crate::figures::CpuPerOperation {
        let labels = std::iter::once("client").chain(self.pids.iter().map(|(l, _)| l.as_str()));
        let processes = labels
            .zip(before.0.iter().zip(&after.0))
            .filter(|(label, _)| *label != "admin")
            .map(|(label, (b, a))| (label.to_owned(), (a - b) * 1e6 / operations.max(1) as f64))
            .collect();
        crate::figures::CpuPerOperation { processes }
    }
}

pub(crate) fn own_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// utime + stime from /proc/PID/stat (fields 14 and 15, after the parenthesised name).
fn process_cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    let Some(after_name) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return f64::NAN;
    };
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields after the name start at field 3 (state); utime is field 14.
    let ticks = |field: usize| fields.get(field - 3).and_then(|f| f.parse::<f64>().ok());
    // SAFETY: sysconf has no preconditions.
    let hertz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    match (ticks(14), ticks(15)) {
        (Some(user), Some(system)) if hertz > 0.0 => (user + system) / hertz,
        _ => f64::NAN,
    }
}
