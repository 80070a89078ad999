//! The workload over real processes on 127.0.0.1: `neosimple` with 2 storages and
//! replicas 1, client threads committing random transactions over shared objects with
//! conflict resolution, one storage killed with SIGKILL in the middle and restarted; once
//! it caught up (every cell UP_TO_DATE), `neoctl check` must find the replicas equal, every
//! acknowledged commit must read back, and the two SQLite databases must hold the same
//! transactions and object records.
//!
//! Each object's data is the list of the tokens of the transactions that changed it: a
//! commit appends its token, and conflict resolution appends it to the committed data.
//! So the final data says exactly which commits took effect.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;

const THREADS: usize = 4;
/// Commits waited for in each phase (before the kill, while a storage is down, while it
/// catches up, after).
const PHASE: usize = 40;
const OBJECTS: usize = 8;
const PARTITIONS: u32 = 4;

/// The lines the daemons write on stderr (neosimple's children inherit its stderr; the
/// restarted storage's is read too), kept for the assertions on the check.
type Lines = Arc<Mutex<Vec<String>>>;

fn collect(stderr: ChildStderr, lines: Lines) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            lines.lock().unwrap().push(line);
        }
    })
}

fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status();
}

fn wait_for<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `neosimple` and what it printed.
struct Simple {
    child: Option<Child>,
    dir: tempfile::TempDir,
    name: String,
    master: String,
    admin: String,
    lines: Lines,
    /// The restarted storage, our own child (neosimple's one was killed).
    restarted: Option<Child>,
}

impl Simple {
    fn start() -> Simple {
        let name = format!("workload_{}", free_port().port());
        Simple::start_in(tempfile::tempdir().unwrap(), name)
    }

    fn start_in(dir: tempfile::TempDir, name: String) -> Simple {
        let mut simple = Simple {
            child: None,
            dir,
            name,
            master: String::new(),
            admin: String::new(),
            lines: Lines::default(),
            restarted: None,
        };
        simple.launch();
        simple
    }

    /// Starts neosimple on the databases of `dir` (created if absent) and reads where
    /// the cluster is from what it prints; its stderr (and its daemons') goes to `lines`.
    fn launch(&mut self) {
        let bin = bin_dir();
        if !bin.join("neoctl").exists() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "-p", "neo-ctl"])
                .status()
                .expect("run cargo build");
            assert!(status.success(), "cannot build neoctl");
        }
        let mut child = Command::new(bin.join("neosimple"))
            .args(["--temp_dir", self.dir.path().to_str().unwrap()])
            .args(["--partitions", &PARTITIONS.to_string(), "--replicas", "1"])
            .args(["--name", &self.name, "-v", "db_a", "db_b"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start neosimple");
        self.lines = Lines::default();
        collect(child.stderr.take().unwrap(), self.lines.clone());
        let (mut master, mut admin) = (None, None);
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            let line = line.trim();
            if let Some(address) = line.strip_prefix("admin:") {
                admin = Some(address.trim().to_owned());
            }
            if let Some(url) = line.strip_prefix("ZODB:") {
                master = url.trim().rsplit('@').next().map(str::to_owned);
            }
            if line.starts_with("Press Ctrl-C") {
                break;
            }
        }
        self.child = Some(child);
        self.master = master.expect("neosimple printed the ZODB URL");
        self.admin = admin.expect("neosimple printed the admin address");
    }

    fn config(&self) -> ClientConfig {
        let mut config = ClientConfig::new(vec![self.master.clone()], self.name.clone());
        config.timeout = Duration::from_secs(60);
        config
    }

    /// PID and arguments of the storage neosimple started on `database`, from /proc (its
    /// `pid N: ...` line on stderr may be interleaved with the daemons' output).
    fn storage_command(&self, database: &str) -> (u32, Vec<String>) {
        let neosimple = self.child.as_ref().expect("neosimple runs").id();
        let children =
            std::fs::read_to_string(format!("/proc/{neosimple}/task/{neosimple}/children"))
                .expect("list neosimple's children");
        let wanted = self.database(database).display().to_string();
        for pid in children.split_whitespace() {
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            if args.first().is_some_and(|p| p.ends_with("neostorage")) && args.contains(&wanted) {
                return (pid.parse().unwrap(), args[1..].to_vec());
            }
        }
        panic!("no storage of neosimple on {wanted}: children {children:?}");
    }

    fn neoctl(&self, args: &[&str]) -> String {
        let output = Command::new(bin_dir().join("neoctl"))
            .args(["-a", &self.admin, "--timeout", "10"])
            .args(args)
            .output()
            .expect("run neoctl");
        assert!(
            output.status.success(),
            "neoctl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The cells of `print pt`, one string of state letters per storage.
    fn cells(&self) -> Vec<String> {
        self.neoctl(&["print", "pt"])
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_whitespace().last().map(str::to_owned))
            .collect()
    }

    fn log_has(&self, text: &str) -> bool {
        self.lines.lock().unwrap().iter().any(|l| l.contains(text))
    }

    fn database(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.db"))
    }

    /// Ctrl-C: neosimple stops the cluster (the master stops the restarted storage too).
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "INT");
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(mut storage) = self.restarted.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && storage.try_wait().unwrap().is_none() {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = storage.kill();
            let _ = storage.wait();
        }
    }
}

impl Drop for Simple {
    fn drop(&mut self) {
        // Its daemons die with it (neosimple gives them PR_SET_PDEATHSIG).
        for child in self.child.iter_mut().chain(self.restarted.iter_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What a worker thread did.
#[derive(Debug, Default)]
struct Outcome {
    /// token → (tid, objects) of acknowledged commits.
    committed: BTreeMap<String, (Tid, Vec<Oid>)>,
    /// Transactions whose tpc_finish failed: they may or may not have committed.
    uncertain: BTreeMap<String, Vec<Oid>>,
    /// Transactions aborted before tpc_finish: they must have left no trace.
    aborted: BTreeMap<String, Vec<Oid>>,
    errors: Vec<String>,
}

/// xorshift64*: enough randomness for choosing objects, reproducible per seed.
struct Random(u64);

impl Random {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

fn append(data: &[u8], token: &str) -> Bytes {
    let mut merged = data.to_vec();
    merged.push(b' ');
    merged.extend_from_slice(token.as_bytes());
    Bytes::from(merged)
}

fn tokens(data: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(data)
        .split_whitespace()
        .skip(1)
        .map(str::to_owned)
        .collect()
}

/// Shared by the workers and the test: commits so far, and when to stop.
#[derive(Default)]
struct Progress {
    committed: AtomicUsize,
    stop: AtomicBool,
}

/// One client committing transactions until told to stop, each appending its token to 1
/// to 3 shared objects.
fn worker(config: ClientConfig, index: usize, oids: &[Oid], progress: &Progress) -> Outcome {
    let client = Client::connect(config).expect("connect to the cluster");
    let mut random = Random(0x9e37_79b9_7f4a_7c15 ^ (index as u64 + 1));
    let mut outcome = Outcome::default();
    let mut seq = 0;
    while !progress.stop.load(Ordering::SeqCst) {
        seq += 1;
        let token = format!("w{index}.{seq}");
        let mut chosen = BTreeSet::new();
        for _ in 0..=random.below(3) {
            chosen.insert(oids[random.below(oids.len())]);
        }
        let chosen: Vec<Oid> = chosen.into_iter().collect();
        let mut ttid = None;
        let voted = (|| -> Result<(), Error> {
            let begun = client.tpc_begin(None, meta(&token))?;
            ttid = Some(begun);
            for &oid in &chosen {
                let (data, serial) = client.load(oid)?;
                client.store(begun, oid, serial, append(&data, &token))?;
            }
            client.tpc_vote_resolving(begun, |conflict| {
                let committed = client
                    .load_serial(conflict.oid, conflict.committed_serial)
                    .ok()?;
                Some(append(&committed.data?, &token))
            })?;
            Ok(())
        })();
        match voted.map(|()| ttid.expect("begun")) {
            Ok(ttid) => match client.tpc_finish(ttid) {
                Ok(tid) => {
                    outcome.committed.insert(token, (tid, chosen));
                    progress.committed.fetch_add(1, Ordering::SeqCst);
                }
                Err(e) => {
                    outcome.errors.push(format!("{token} finish: {e}"));
                    outcome.uncertain.insert(token, chosen);
                }
            },
            Err(e) => {
                outcome.errors.push(format!("{token}: {e}"));
                if let Some(ttid) = ttid {
                    let _ = client.tpc_abort(ttid);
                }
                outcome.aborted.insert(token, chosen);
            }
        }
    }
    client.close();
    outcome
}

/// Rows of `trans` and `obj` (with the data's hash, as data ids differ between nodes) of
/// a storage database, read by the sqlite3 command.
fn dump(database: &Path) -> String {
    let query = "SELECT 'trans', partition, tid, ttid, hex(oids) FROM trans \
                 ORDER BY partition, tid; \
                 SELECT 'obj', o.partition, o.oid, o.tid, o.value_tid, hex(d.hash) \
                 FROM obj o LEFT JOIN data d ON d.id = o.data_id \
                 ORDER BY o.partition, o.oid, o.tid;";
    let output = Command::new("sqlite3")
        .arg(database)
        .arg(query)
        .output()
        .expect("run sqlite3");
    assert!(
        output.status.success(),
        "sqlite3 {}: {}",
        database.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn a_killed_storage_catches_up_and_replicas_check_equal_under_load() {
    let mut simple = Simple::start();
    let setup = Client::connect(simple.config()).expect("connect to the cluster");
    let oids: Vec<Oid> = (0..OBJECTS).map(|_| setup.new_oid().unwrap()).collect();
    let ttid = setup.tpc_begin(None, meta("setup")).unwrap();
    for &oid in &oids {
        setup
            .store(ttid, oid, Tid::ZERO, Bytes::from_static(b"init"))
            .unwrap();
    }
    setup.tpc_vote(ttid).unwrap();
    setup.tpc_finish(ttid).unwrap();
    setup.close();

    let progress = Arc::new(Progress::default());
    let workers: Vec<_> = (0..THREADS)
        .map(|index| {
            let (config, oids, progress) = (simple.config(), oids.clone(), progress.clone());
            std::thread::spawn(move || worker(config, index, &oids, &progress))
        })
        .collect();
    // Waits for `PHASE` more commits.
    let phase = |what: &str| {
        let before = progress.committed.load(Ordering::SeqCst);
        wait_for(
            &format!("{PHASE} commits {what}"),
            Duration::from_secs(120),
            || (progress.committed.load(Ordering::SeqCst) >= before + PHASE).then_some(()),
        );
    };

    phase("before the kill");
    let (pid, args) = simple.storage_command("db_b");
    signal(pid, "KILL");
    wait_for(
        "the killed storage's cells to be OUT_OF_DATE",
        Duration::from_secs(30),
        || simple.cells().iter().any(|c| c.contains('O')).then_some(()),
    );
    phase("with one storage");
    // Restarted on its database, it replicates what it missed while the workload goes on.
    let mut storage = Command::new(bin_dir().join("neostorage"))
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("restart the storage");
    collect(storage.stderr.take().unwrap(), simple.lines.clone());
    simple.restarted = Some(storage);
    phase("while it catches up");
    let cells = wait_for("every cell UP_TO_DATE", Duration::from_secs(60), || {
        let cells = simple.cells();
        (cells.len() == 2 && cells.iter().all(|c| c.chars().all(|s| s == 'U'))).then_some(cells)
    });
    eprintln!("partition table after the restart: {cells:?}");
    phase("after it caught up");
    progress.stop.store(true, Ordering::SeqCst);
    let outcomes: Vec<Outcome> = workers.into_iter().map(|w| w.join().unwrap()).collect();

    // Every acknowledged commit reads back; the objects hold exactly the tokens of the
    // commits that took effect.
    let committed: BTreeMap<&String, &(Tid, Vec<Oid>)> =
        outcomes.iter().flat_map(|o| &o.committed).collect();
    let uncertain: BTreeMap<&String, &Vec<Oid>> =
        outcomes.iter().flat_map(|o| &o.uncertain).collect();
    let errors: Vec<&String> = outcomes.iter().flat_map(|o| &o.errors).collect();
    eprintln!(
        "{} commits acknowledged, {} uncertain, {} errors: {errors:?}",
        committed.len(),
        uncertain.len(),
        errors.len()
    );
    let reader = Client::connect(simple.config()).expect("connect to the cluster");
    for (token, (tid, touched)) in &committed {
        for &oid in touched {
            let record = reader.load_serial(oid, *tid).unwrap();
            let data = record.data.expect("not a deletion");
            assert_eq!(
                tokens(&data).last(),
                Some(*token),
                "{oid} at {tid} holds the change of {token}"
            );
        }
    }
    for &oid in &oids {
        let (data, _) = reader.load(oid).unwrap();
        let found = tokens(&data);
        let unique: BTreeSet<&String> = found.iter().collect();
        assert_eq!(unique.len(), found.len(), "{oid}: a change applied twice");
        for token in &found {
            let known = committed.get(token).is_some_and(|(_, o)| o.contains(&oid))
                || uncertain.get(token).is_some_and(|o| o.contains(&oid));
            assert!(known, "{oid} holds {token}, which did not commit");
        }
        for (token, (_, touched)) in &committed {
            if touched.contains(&oid) {
                assert!(unique.contains(token), "{oid} lacks {token}");
            }
        }
    }
    reader.close();

    // neoctl check: the master asks one storage per partition to compare the replicas.
    simple.neoctl(&["check", ":"]);
    wait_for("every partition checked", Duration::from_secs(60), || {
        (0..PARTITIONS)
            .all(|p| simple.log_has(&format!("partition {p} checked")))
            .then_some(())
    });
    for bad in [
        "replicas differ",
        "is corrupted on",
        "failed to start checking",
        "check of partition",
    ] {
        assert!(!simple.log_has(bad), "the check logged {bad:?}");
    }

    // Independently of the digests: the databases hold the same rows.
    simple.stop();
    let (a, b) = (
        dump(&simple.database("db_a")),
        dump(&simple.database("db_b")),
    );
    assert!(a.lines().count() > committed.len(), "{a}");
    if a != b {
        let (la, lb): (BTreeSet<&str>, BTreeSet<&str>) = (a.lines().collect(), b.lines().collect());
        panic!(
            "the replicas differ: only in db_a {:?}, only in db_b {:?}",
            la.difference(&lb).collect::<Vec<_>>(),
            lb.difference(&la).collect::<Vec<_>>()
        );
    }
}

#[test]
fn neoctl_check_reports_a_damaged_replica() {
    let mut simple = Simple::start();
    let client = Client::connect(simple.config()).expect("connect to the cluster");
    let oids: Vec<Oid> = (0..OBJECTS).map(|_| client.new_oid().unwrap()).collect();
    for round in 0..3u8 {
        let ttid = client.tpc_begin(None, meta("fill")).unwrap();
        for &oid in &oids {
            let serial = match client.load(oid) {
                Ok((_, serial)) => serial,
                Err(_) => Tid::ZERO,
            };
            client
                .store(ttid, oid, serial, Bytes::from(vec![b'a' + round; 10]))
                .unwrap();
        }
        client.tpc_vote(ttid).unwrap();
        client.tpc_finish(ttid).unwrap();
    }
    client.close();
    simple.stop();
    // One object record disappears from the second storage's database.
    let database = simple.database("db_b");
    let status = Command::new("sqlite3")
        .arg(&database)
        .arg("DELETE FROM obj WHERE tid = (SELECT MAX(tid) FROM obj) AND oid = (SELECT MIN(oid) FROM obj)")
        .status()
        .expect("run sqlite3");
    assert!(status.success());
    assert_ne!(dump(&database), dump(&simple.database("db_a")));
    // The same cluster again, on the same databases.
    simple.launch();
    simple.neoctl(&["check", ":"]);
    // The partition of that object is reported (both nodes: there is no reference);
    // the others are found equal.
    let partition = oids[0].0 % u64::from(PARTITIONS);
    wait_for(
        "the damaged partition to be reported",
        Duration::from_secs(60),
        || {
            simple
                .log_has(&format!("partition {partition} is corrupted on"))
                .then_some(())
        },
    );
    wait_for(
        "the other partitions checked",
        Duration::from_secs(60),
        || {
            (0..PARTITIONS)
                .filter(|p| u64::from(*p) != partition)
                .all(|p| simple.log_has(&format!("partition {p} checked")))
                .then_some(())
        },
    );
    assert!(!simple.log_has(&format!("partition {partition} checked")));
}
