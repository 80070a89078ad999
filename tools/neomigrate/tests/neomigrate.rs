//! neomigrate through its binary, against real clusters started with `neosimple` (1
//! master, 2 SQLite storages, replicas 1, 1 admin; the debug daemons are built first if
//! `target/debug` lacks them): the round trip FS -> NEO -> FS on ZODB-made files, resumed
//! imports and exports after kill -9, a cluster that goes away mid-run, and bad input.
//!
//! The ZODB checks (files made by ZODB, the output read back by ZODB, ZODB's fstest)
//! need a Python with ZODB: `NEO_PYTHON` names it (scripts/test sets it; required when
//! `CI` is set). Without it the committed samples/Data.fs stands in.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use neo_client::{Client, ClientConfig};
use neo_filestorage::{FileStorage, Options, TxnMeta};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The debug daemons, built once per test binary if missing.
fn bin_dir() -> PathBuf {
    static BUILT: Mutex<bool> = Mutex::new(false);
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
        .join("debug");
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let present = ["neosimple", "neomaster", "neostorage", "neoadmin", "neoctl"]
        .iter()
        .all(|b| dir.join(b).exists());
    if !*built && !present {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "neo-daemons", "-p", "neo-ctl", "--bins"])
            .current_dir(root())
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cannot build the daemons");
    }
    *built = true;
    dir
}

fn python() -> Option<PathBuf> {
    match std::env::var_os("NEO_PYTHON") {
        Some(path) => Some(PathBuf::from(path)),
        None if std::env::var_os("CI").is_some() => {
            panic!("NEO_PYTHON must name a Python with ZODB under CI")
        }
        None => {
            eprintln!("NEO_PYTHON is not set: skipping the ZODB checks (scripts/test sets it)");
            None
        }
    }
}

/// A cluster run by neosimple in `dir`; stopped (SIGINT, then SIGKILL) when dropped.
struct Cluster {
    child: Option<Child>,
    name: String,
    masters: String,
}

impl Cluster {
    fn start(dir: &Path, name: &str) -> Cluster {
        std::fs::create_dir_all(dir).expect("cluster directory");
        let mut child = Command::new(bin_dir().join("neosimple"))
            .args([
                "--replicas",
                "1",
                "--partitions",
                "6",
                "--name",
                name,
                "--temp_dir",
            ])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start neosimple");
        let stdout = child.stdout.take().expect("piped");
        let mut masters = None;
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("neosimple output");
            if let Some(rest) = line.trim().strip_prefix("masters:") {
                masters = Some(rest.trim().to_owned());
            }
            if line.starts_with("Press Ctrl-C") {
                break;
            }
        }
        let masters = masters.expect("neosimple printed the masters");
        Cluster {
            child: Some(child),
            name: name.into(),
            masters,
        }
    }

    fn client(&self) -> Client {
        let mut config = ClientConfig::new(vec![self.masters.clone()], self.name.clone());
        config.read_only = true;
        config.timeout = Duration::from_secs(30);
        Client::connect(config).expect("connect")
    }

    fn last_tid(&self) -> u64 {
        let client = self.client();
        let tid = client.last_transaction().expect("last transaction").0;
        client.close();
        tid
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child process.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

fn neomigrate(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_neomigrate"));
    command.args(args);
    command
}

fn run(args: &[&str]) -> Output {
    let output = neomigrate(args).output().expect("run neomigrate");
    eprintln!(
        "neomigrate {}: {}\n{}{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// A ZODB-made Data.fs (samples/make_sample.py) with `transactions` editing batches, or
/// the committed sample without Python.
fn zodb_sample(dir: &Path, name: &str, seed: u32, transactions: u32) -> PathBuf {
    let path = dir.join(name);
    match python() {
        Some(python) => {
            let status = Command::new(python)
                .arg(root().join("samples/make_sample.py"))
                .arg(&path)
                .args(["--seed", &seed.to_string()])
                .args(["--transactions", &transactions.to_string()])
                .status()
                .expect("run make_sample.py");
            assert!(status.success(), "make_sample.py failed");
        }
        None => {
            std::fs::copy(root().join("samples/Data.fs"), &path).expect("copy the sample");
        }
    }
    path
}

/// A Data.fs of `count` small transactions written by our writer (byte-identical to
/// ZODB's, tested in neo-filestorage), with TIDs 1000 apart; those numbered in `skip` are
/// left out.
fn many_transactions(path: &Path, count: u64, skip: &[u64]) {
    let mut fs = FileStorage::open(
        path,
        Options {
            sync: false,
            ..Options::writable()
        },
    )
    .expect("create");
    let base = 0x03d0_0000_0000_0000u64;
    for i in (0..count).filter(|i| !skip.contains(i)) {
        let meta = TxnMeta {
            user: format!("user{}", i % 7).into_bytes(),
            description: format!("transaction {i}").into_bytes(),
            extension: Vec::new(),
        };
        let mut txn = fs
            .begin(Some(neo_filestorage::Tid(base + i * 1000)), meta, b' ')
            .expect("begin");
        for k in 0..1 + i % 3 {
            let oid = neo_filestorage::Oid((i * 7 + k * 13) % 500);
            let data = format!(
                "object {} revision {i} {}",
                oid.0,
                "x".repeat((i % 50) as usize)
            );
            txn.restore(oid, Some(data.as_bytes()), None)
                .expect("store");
        }
        txn.commit().expect("commit");
    }
    fs.close().expect("close");
}

fn zodb_checks(expected: &Path, actual: &Path) {
    let Some(python) = python() else { return };
    let compare = Command::new(&python)
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/zodb_compare.py"))
        .args([expected, actual])
        .output()
        .expect("run zodb_compare.py");
    assert!(
        compare.status.success(),
        "ZODB sees differences: {}",
        text(&compare)
    );
    let fstest = Command::new(&python)
        .args(["-m", "ZODB.scripts.fstest"])
        .arg(actual)
        .output()
        .expect("run fstest");
    assert!(
        fstest.status.success(),
        "ZODB's fstest failed: {}",
        text(&fstest)
    );
}

#[test]
fn round_trip_through_neo_keeps_transactions_records_and_undo_backpointers() {
    let dir = tempfile::tempdir().unwrap();
    let source = zodb_sample(dir.path(), "source.fs", 7, 80);
    let cluster = Cluster::start(&dir.path().join("cluster"), "migrate_round_trip");
    let name = cluster.name.clone();
    let masters = cluster.masters.clone();

    // Several transactions in flight: records pointing back to one still in flight wait.
    let import = run(&[
        "-c",
        &name,
        "--verify",
        "--pipeline",
        "4",
        path_str(&source),
        &masters,
    ]);
    assert!(import.status.success());
    let out = text(&import);
    assert!(out.contains("Migrating from"), "{out}");
    assert!(out.contains("Migration done in"), "{out}");
    assert!(out.contains("Verified: "), "{out}");
    assert!(!out.contains("Note:"), "backpointers were lost: {out}");

    let exported = dir.path().join("exported.fs");
    let export = run(&["-c", &name, "--verify", &masters, path_str(&exported)]);
    assert!(export.status.success());
    assert!(text(&export).contains("Verified: "));

    let both = run(&[
        "--verify-only",
        "--json",
        path_str(&source),
        path_str(&exported),
    ]);
    assert!(both.status.success());
    let report: serde_json::Value = serde_json::from_slice(&both.stdout).expect("one JSON object");
    let verify = &report["verify"];
    assert_eq!(verify["differences"], 0);
    assert_eq!(verify["backpointer_differences"], 0);
    // 80 editing batches from make_sample.py, or the 72 transactions of the committed sample.
    assert!(verify["transactions"].as_u64().unwrap() >= 72);
    zodb_checks(&source, &exported);
    // Same TIDs, metadata, records in the same order, backpointers to the same places:
    // the file ZODB wrote comes back byte for byte.
    let (a, b) = (
        std::fs::read(&source).unwrap(),
        std::fs::read(&exported).unwrap(),
    );
    let first = a.iter().zip(&b).position(|(x, y)| x != y);
    assert!(
        a == b,
        "round trip differs: sizes {} / {}, first at {first:?}",
        a.len(),
        b.len()
    );
}

#[test]
fn interrupted_import_and_export_resume_where_they_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("many.fs");
    many_transactions(&source, 3000, &[]);
    let cluster = Cluster::start(&dir.path().join("cluster"), "migrate_resume");
    let (name, masters) = (cluster.name.clone(), cluster.masters.clone());

    // kill -9 the import as soon as the cluster has a transaction.
    let mut child = neomigrate(&["-c", &name, "-q", path_str(&source), &masters])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster.last_tid() == 0 {
        assert!(Instant::now() < deadline, "the import did not start");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the import ended early"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // The finishes already sent still commit (the master has them): wait until the
    // cluster stops moving.
    let mut stopped_at = cluster.last_tid();
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = cluster.last_tid();
        if now == stopped_at {
            break;
        }
        stopped_at = now;
    }
    assert!(
        stopped_at < 0x03d0_0000_0000_0000 + 2999 * 1000,
        "too fast to interrupt"
    );

    let resumed = run(&["-c", &name, path_str(&source), &masters]);
    assert!(resumed.status.success());
    assert!(text(&resumed).contains(&format!("Resuming after transaction 0x{stopped_at:016x}")));
    let check = run(&["-c", &name, "--verify-only", path_str(&source), &masters]);
    assert!(check.status.success(), "{}", text(&check));
    assert!(text(&check).contains("Verified: 3000 transactions"));

    // kill -9 the export once the file has grown, then resume it.
    let exported = dir.path().join("exported.fs");
    let mut child = neomigrate(&["-c", &name, "-q", &masters, path_str(&exported)])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::metadata(&exported).map_or(0, |m| m.len()) < 20_000 {
        assert!(Instant::now() < deadline, "the export did not start");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the export ended early"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let resumed = run(&["-c", &name, &masters, path_str(&exported)]);
    assert!(resumed.status.success());
    assert!(text(&resumed).contains("Resuming after transaction"));
    let check = run(&["--verify-only", path_str(&source), path_str(&exported)]);
    assert!(check.status.success(), "{}", text(&check));
    zodb_checks(&source, &exported);
}

#[test]
fn a_cluster_that_goes_away_stops_the_run_and_a_new_run_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("many.fs");
    many_transactions(&source, 3000, &[]);
    let cluster_dir = dir.path().join("cluster");
    let mut cluster = Cluster::start(&cluster_dir, "migrate_away");
    let (name, masters) = (cluster.name.clone(), cluster.masters.clone());
    let child = neomigrate(&["-c", &name, "--timeout", "10", path_str(&source), &masters])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster.last_tid() == 0 {
        assert!(Instant::now() < deadline, "the import did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
    cluster.stop();
    let output = child.wait_with_output().unwrap();
    let out = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(
        out.contains("run the same command again to resume"),
        "{out}"
    );

    // The same databases, a new cluster process: the migration resumes and completes,
    // one transaction at a time as with a NEO/py master.
    let cluster = Cluster::start(&cluster_dir, "migrate_away");
    let resumed = run(&[
        "-c",
        &name,
        "--verify",
        "--pipeline",
        "1",
        path_str(&source),
        &cluster.masters,
    ]);
    assert!(resumed.status.success());
    let out = text(&resumed);
    assert!(out.contains("Resuming after transaction"), "{out}");
    assert!(out.contains("Verified: 3000 transactions"), "{out}");
}

#[test]
fn bad_input_is_refused_with_a_clear_message_and_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let sample = zodb_sample(dir.path(), "sample.fs", 3, 10);
    let cluster = Cluster::start(&dir.path().join("cluster"), "migrate_bad");
    let (name, masters) = (cluster.name.clone(), cluster.masters.clone());

    // Usage errors.
    assert_eq!(run(&[path_str(&sample)]).status.code(), Some(2));
    assert_eq!(run(&[path_str(&sample), &masters]).status.code(), Some(1));

    // Not a FileStorage.
    let not_fs = dir.path().join("notes.txt");
    std::fs::write(&not_fs, "hello, this is not a database\n").unwrap();
    let output = run(&["-c", &name, path_str(&not_fs), &masters]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output).contains("not a FileStorage"),
        "{}",
        text(&output)
    );

    // A torn last transaction.
    let torn = dir.path().join("torn.fs");
    let bytes = std::fs::read(&sample).unwrap();
    std::fs::write(&torn, &bytes[..bytes.len() - 10]).unwrap();
    let output = run(&["-c", &name, path_str(&torn), &masters]);
    assert_eq!(output.status.code(), Some(1));
    let out = text(&output);
    assert!(
        out.contains("torn at byte") && out.contains("nothing was migrated"),
        "{out}"
    );
    assert_eq!(cluster.last_tid(), 0, "something was written");

    // The cluster holds something else: transactions 0, 1, 3 and 4 of a series.
    let other = dir.path().join("other.fs");
    many_transactions(&other, 5, &[2]);
    assert!(run(&["-c", &name, "-q", path_str(&other), &masters])
        .status
        .success());
    let output = run(&["-c", &name, path_str(&sample), &masters]);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output).contains("is not empty and does not hold a beginning"));
    // A source with transaction 2: the cluster has a gap, which is named with the way out.
    let full = dir.path().join("full.fs");
    many_transactions(&full, 8, &[]);
    let output = run(&["-c", &name, path_str(&full), &masters]);
    assert_eq!(output.status.code(), Some(1));
    let out = text(&output);
    assert!(
        out.contains("lacks transaction 0x03d00000000007d0")
            && out.contains("truncate tid:0x03d00000000003e8"),
        "{out}"
    );
    // A source without transaction 3: the cluster holds one that the source does not.
    let fewer = dir.path().join("fewer.fs");
    many_transactions(&fewer, 8, &[2, 3]);
    let output = run(&["-c", &name, path_str(&fewer), &masters]);
    assert_eq!(output.status.code(), Some(1));
    let out = text(&output);
    assert!(
        out.contains("does not hold a beginning")
            && out.contains("holds transactions that the source does not have"),
        "{out}"
    );
    assert_eq!(cluster.last_tid(), 0x03d0_0000_0000_0000 + 4000);

    // Exports into a file that is not a FileStorage, or holds something else.
    let output = run(&["-c", &name, &masters, path_str(&not_fs)]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output).contains("not a FileStorage"),
        "{}",
        text(&output)
    );
    let output = run(&["-c", &name, &masters, path_str(&sample)]);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output).contains("is not a beginning of the cluster"));

    // No cluster there.
    let output = run(&[
        "-c",
        &name,
        "--timeout",
        "2",
        path_str(&sample),
        "127.0.0.1:9",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output).contains("cannot reach cluster"));

    // Differences make --verify-only fail.
    let output = run(&["--verify-only", path_str(&sample), path_str(&other)]);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output).contains("Verification FAILED"));
}
