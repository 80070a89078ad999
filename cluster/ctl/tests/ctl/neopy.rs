//! Byte-for-byte comparison with NEO/py's neoctl (only with `NEO_PY_DIR` set to a NEO/py
//! checkout and `NEO_PYTHON` to a Python that runs it): a NEO/py cluster (master, two
//! SQLite storages, admin), and each command run by both neoctls in turn against the
//! NEO/py admin; stdout, the last stderr line and the exit code must match.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

type Run = (i32, String, String);

fn run(mut command: Command) -> Run {
    let output = command.stdin(Stdio::null()).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr.lines().last().unwrap_or("").to_string(),
    )
}

/// Whether NEO/py's neoctl ended with a Python exception (its last line names it).
fn crashed(run: &Run) -> bool {
    let name = run.2.split(':').next().unwrap_or("");
    name.ends_with("Error") && !name.contains(' ')
}

#[test]
fn same_output_as_neopy_neoctl() {
    let Some(dir) = std::env::var_os("NEO_PY_DIR").map(PathBuf::from) else {
        eprintln!("skipped: set NEO_PY_DIR (and NEO_PYTHON) to compare with NEO/py");
        return;
    };
    let python = std::env::var("NEO_PYTHON").unwrap_or_else(|_| "python3".into());
    let work = std::env::temp_dir().join(format!("neoctl-interop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let spawn = |script: &str, args: &[&str], log: &str| -> Child {
        let log = std::fs::File::create(work.join(log)).unwrap();
        Command::new(&python)
            .arg(dir.join(script))
            .args(args)
            .env("PYTHONPATH", &dir)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap()
    };
    let cluster = "ctlinterop";
    let master = format!("127.0.0.1:{}", free_port());
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut processes = Processes(vec![spawn(
        "neomaster",
        &[
            "-c", cluster, "-b", &master, "-m", &master, "-p", "12", "-r", "0",
        ],
        "master.log",
    )]);
    for n in 1..=2 {
        let bind = format!("127.0.0.1:{}", free_port());
        let db = work.join(format!("s{n}.db"));
        processes.0.push(spawn(
            "neostorage",
            &[
                "-c",
                cluster,
                "-b",
                &bind,
                "-m",
                &master,
                "-a",
                "SQLite",
                "-d",
                db.to_str().unwrap(),
            ],
            &format!("s{n}.log"),
        ));
    }
    processes.0.push(spawn(
        "neoadmin",
        &["-c", cluster, "-b", &admin.to_string(), "-m", &master],
        "admin.log",
    ));

    let theirs = |args: &str| {
        let mut command = Command::new(&python);
        command
            .arg(dir.join("neoctl"))
            .args(["-a", &admin.to_string()])
            .args(args.split_whitespace())
            .env("PYTHONPATH", &dir);
        run(command)
    };
    let ours = |args: &str| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_neoctl"));
        command
            .args(["-a", &admin.to_string()])
            .args(args.split_whitespace());
        run(command)
    };
    let same = |args: &str| {
        let expected = theirs(args);
        let got = ours(args);
        if crashed(&expected) {
            // NEO/py dies with a traceback there; we print an error instead (tools.md 2.1).
            assert_eq!(
                (got.0, &got.1),
                (expected.0, &expected.1),
                "neoctl {args}: {got:?}"
            );
        } else {
            assert_eq!(got, expected, "neoctl {args}");
        }
        expected
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while theirs("print node storage").1.lines().count() < 2 {
        assert!(
            Instant::now() < deadline,
            "the NEO/py cluster did not come up"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let reads = [
        "print node",
        "print node storage",
        "print node client",
        "print node MASTER",
        "print pt",
        "print pt 0 4",
        "print pt 2",
        "print pt 5 100",
        "print cluster",
        "print summary",
        "print ids",
        "print primary",
        "foo bar",
        "print foo",
        "set replicas -1",
    ];
    for args in reads {
        same(args);
    }
    // Orders that change nothing here, then one order by each side in turn.
    for args in [
        "tweak -n",
        "set replicas 1",
        "add all",
        "truncate tid:0x1",
        "set cluster running",
        "check 0:S1",
        "kill S9",
        "drop S9",
        "kill M1",
    ] {
        same(args);
    }
    assert_eq!(
        ours("start"),
        (0, "Cluster state changed\n".into(), String::new())
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while theirs("print cluster").1 != "RUNNING\n" {
        assert!(Instant::now() < deadline, "the cluster did not start");
        std::thread::sleep(Duration::from_millis(300));
    }
    for args in reads.iter().copied().chain([
        "set replicas 1",
        "tweak -n",
        "tweak -n S2",
        "tweak -n S1 S2",
        "prune_orphan 1 all",
        "flush_log",
    ]) {
        same(args);
    }
    assert_eq!(ours("tweak").0, 0);
    std::thread::sleep(Duration::from_secs(3));
    for args in ["print pt", "print summary", "print pt 0 4"] {
        same(args);
    }
    assert_eq!(
        ours("kill S2"),
        (0, "state changed\n".into(), String::new())
    );
    std::thread::sleep(Duration::from_secs(1));
    for args in [
        "print pt",
        "print summary",
        "print node storage",
        "tweak -n",
    ] {
        same(args);
    }
    assert_eq!(
        ours("drop S2"),
        (0, "node permanently removed\n".into(), String::new())
    );
    for args in ["print pt", "tweak -n S1", "print summary"] {
        same(args);
    }
    assert_eq!(
        ours("set cluster STOPPING"),
        (0, "Cluster state changed\n".into(), String::new())
    );
    drop(processes);
    let _ = std::fs::remove_dir_all(&work);
}
