//! The daemons as real processes: neosimple brings a cluster to RUNNING and stops it; a
//! storage killed with SIGKILL and restarted catches up; a storage added and given
//! partitions with `tweak` ends with UP_TO_DATE cells and no FEEDING left.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use neo_daemons::ctl::{check_ack, AdminClient};
use neo_protocol::{
    AddPendingNodes, CellState, ClusterState, Nid, NodeState, NodeType, Packet, Row,
    TweakPartitionTable,
};

const TIMEOUT: Duration = Duration::from_secs(5);

/// A child process killed (SIGKILL) and reaped when dropped, so that a failing test leaves
/// nothing running.
struct Process {
    name: String,
    child: Child,
}

impl Process {
    fn spawn(name: &str, program: &str, args: &[String]) -> Process {
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {program}: {e}"));
        Process {
            name: name.to_owned(),
            child,
        }
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill only sends a signal to our own child.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, signal);
        }
    }

    /// Waits for the exit status, at most `timeout`.
    fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            eprintln!("killing {}", self.name);
        }
        self.kill9();
    }
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Polls `check` until it returns `Some`, failing with the last state after `timeout`.
fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<Option<T>, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        match check() {
            Ok(Some(value)) => return value,
            Ok(None) => {}
            Err(e) => last = e,
        }
        if Instant::now() >= deadline {
            panic!("timed out waiting for {what}; last: {last}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn admin(addr: SocketAddr) -> Result<AdminClient, String> {
    AdminClient::connect(addr, TIMEOUT).map_err(|e| format!("{e:#}"))
}

/// The partition table in neoctl's letters, one string per storage, e.g. `S1 UUOO`.
fn table_text(rows: &[Row], nids: &[Nid]) -> Vec<String> {
    nids.iter()
        .map(|nid| {
            let cells: String = rows
                .iter()
                .map(|row| match row.iter().find(|cell| cell.nid == *nid) {
                    None => '.',
                    Some(cell) => match cell.state {
                        CellState::UpToDate => 'U',
                        CellState::OutOfDate => 'O',
                        CellState::Feeding => 'F',
                        CellState::Corrupted => 'C',
                        CellState::Discarded => 'D',
                    },
                })
                .collect();
            format!("{nid} {cells}")
        })
        .collect()
}

/// A cluster started daemon by daemon, so that tests can kill and restart nodes.
struct Cluster {
    dir: tempfile::TempDir,
    name: String,
    master: SocketAddr,
    admin: SocketAddr,
    storages: Vec<Process>,
    others: Vec<Process>,
}

impl Cluster {
    fn start(storages: usize, partitions: u32, replicas: u32) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let master = free_port();
        let admin = free_port();
        let mut cluster = Cluster {
            dir,
            name: format!("test_{}", master.port()),
            master,
            admin,
            storages: Vec::new(),
            others: Vec::new(),
        };
        let args = vec![
            "-c".to_owned(),
            cluster.name.clone(),
            "-b".into(),
            master.to_string(),
            "-p".into(),
            partitions.to_string(),
            "-r".into(),
            replicas.to_string(),
            "-A".into(),
            storages.to_string(),
        ];
        cluster.others.push(Process::spawn(
            "master",
            env!("CARGO_BIN_EXE_neomaster"),
            &args,
        ));
        for i in 0..storages {
            let storage = cluster.storage(i);
            cluster.storages.push(storage);
        }
        let args = vec![
            "-c".to_owned(),
            cluster.name.clone(),
            "-m".into(),
            master.to_string(),
            "-b".into(),
            admin.to_string(),
        ];
        cluster.others.push(Process::spawn(
            "admin",
            env!("CARGO_BIN_EXE_neoadmin"),
            &args,
        ));
        cluster.wait_state(ClusterState::Running);
        cluster
    }

    /// Starts storage `i` on its database (created on first use).
    fn storage(&self, i: usize) -> Process {
        let database = self.dir.path().join(format!("storage_{i}.db"));
        let args = vec![
            "-c".to_owned(),
            self.name.clone(),
            "-m".into(),
            self.master.to_string(),
            "-a".into(),
            "SQLite".into(),
            "-d".into(),
            database.display().to_string(),
        ];
        Process::spawn(
            &format!("storage_{i}"),
            env!("CARGO_BIN_EXE_neostorage"),
            &args,
        )
    }

    fn wait_state(&self, state: ClusterState) {
        wait_for(
            &format!("cluster state {state:?}"),
            Duration::from_secs(30),
            || {
                let found = admin(self.admin)?
                    .cluster_state(TIMEOUT)
                    .map_err(|e| format!("{e:#}"))?;
                Ok((found == Some(state)).then_some(()))
            },
        )
    }

    /// The storage NIDs the admin knows with their states.
    fn storage_nodes(&self) -> Result<Vec<(Nid, NodeState)>, String> {
        let nodes = admin(self.admin)?
            .nodes(Some(NodeType::Storage), TIMEOUT)
            .map_err(|e| format!("{e:#}"))?;
        let mut nodes: Vec<(Nid, NodeState)> = nodes
            .into_iter()
            .filter_map(|node| Some((node.nid?, node.state)))
            .collect();
        nodes.sort();
        Ok(nodes)
    }

    /// Waits until the table, in neoctl's letters, satisfies `done`; returns it.
    fn wait_table(&self, what: &str, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        wait_for(what, Duration::from_secs(60), || {
            let nids: Vec<Nid> = self
                .storage_nodes()?
                .into_iter()
                .map(|(nid, _)| nid)
                .collect();
            let (_, _, rows) = admin(self.admin)?
                .partition_table(TIMEOUT)
                .map_err(|e| format!("{e:#}"))?;
            let text = table_text(&rows, &nids);
            if done(&text) {
                Ok(Some(text))
            } else {
                Err(format!("{text:?}"))
            }
        })
    }
}

#[test]
fn neosimple_brings_a_cluster_up_and_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_neosimple"))
        .args([
            "--temp_dir",
            dir.path().to_str().unwrap(),
            "--partitions",
            "4",
            "--logger",
        ])
        .args(["--name", "simple_test", "db_a", "db_b"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut simple = Process {
        name: "neosimple".into(),
        child,
    };
    let mut lines = BufReader::new(stdout).lines();
    let mut admin_addr = None;
    let mut zodb_url = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(addr) = line.trim().strip_prefix("admin:") {
            admin_addr = Some(addr.trim().parse::<SocketAddr>().unwrap());
        }
        if let Some(url) = line.trim().strip_prefix("ZODB:") {
            zodb_url = Some(url.trim().to_owned());
        }
        if line.starts_with("Press Ctrl-C") {
            break;
        }
    }
    let admin_addr = admin_addr.expect("neosimple printed the admin address");
    assert!(zodb_url
        .unwrap()
        .starts_with("neo://simple_test@127.0.0.1:"));
    let client = AdminClient::connect(admin_addr, TIMEOUT).unwrap();
    assert_eq!(
        client.cluster_state(TIMEOUT).unwrap(),
        Some(ClusterState::Running)
    );
    let (_, _, rows) = client.partition_table(TIMEOUT).unwrap();
    assert_eq!(rows.len(), 4);
    assert!(rows
        .iter()
        .all(|row| row.len() == 1 && row[0].state == CellState::UpToDate));
    drop(client);
    for file in [
        "db_a.db",
        "db_b.db",
        "master_0.log",
        "storage_0.log",
        "admin.log",
    ] {
        assert!(Path::new(&dir.path().join(file)).exists(), "{file}");
    }

    simple.signal(libc::SIGINT);
    let status = simple
        .wait(Duration::from_secs(30))
        .expect("neosimple exits");
    assert_eq!(status.code(), Some(0));
    // The admin is gone with the rest of the cluster.
    assert!(AdminClient::connect(admin_addr, Duration::from_secs(1)).is_err());
}

#[test]
fn a_killed_storage_catches_up_after_restart() {
    let mut cluster = Cluster::start(2, 4, 1);
    let all_up = |text: &[String]| text.len() == 2 && text.iter().all(|t| t.ends_with("UUUU"));
    cluster.wait_table("every cell UP_TO_DATE", all_up);

    cluster.storages[1].kill9();
    let table = cluster.wait_table("cells of the killed storage OUT_OF_DATE", |text| {
        text.iter().filter(|t| t.ends_with("OOOO")).count() == 1
    });
    eprintln!("after kill: {table:?}");

    cluster.storages[1] = cluster.storage(1);
    let table = cluster.wait_table("every cell UP_TO_DATE again", all_up);
    eprintln!("after restart: {table:?}");
    cluster.wait_state(ClusterState::Running);
}

#[test]
fn an_added_storage_gets_partitions_after_tweak() {
    let mut cluster = Cluster::start(2, 6, 0);
    cluster.wait_table("a table over two storages", |text| {
        text.len() == 2 && text.iter().all(|t| t.contains('U'))
    });
    let new = cluster.storage(2);
    cluster.storages.push(new);
    let nid = wait_for(
        "the new storage to be PENDING",
        Duration::from_secs(30),
        || {
            Ok(cluster
                .storage_nodes()?
                .into_iter()
                .find(|(_, state)| *state == NodeState::Pending)
                .map(|(nid, _)| nid))
        },
    );
    let client = admin(cluster.admin).unwrap();
    check_ack(
        &client
            .ask(
                AddPendingNodes {
                    nid_list: vec![nid],
                },
                TIMEOUT,
            )
            .unwrap(),
    )
    .unwrap();
    let answer = client
        .ask(
            TweakPartitionTable {
                dry_run: false,
                nid_list: vec![],
            },
            TIMEOUT,
        )
        .unwrap();
    match answer {
        Packet::AnswerTweakPartitionTable(answer) => assert!(answer.changed),
        other => panic!("unexpected answer {other:?}"),
    }
    let table = cluster.wait_table("the table to converge", |text| {
        text.len() == 3
            && text.iter().all(|t| !t.contains('F') && !t.contains('O'))
            && text
                .iter()
                .any(|t| t.starts_with(&format!("{nid} ")) && t.contains('U'))
    });
    eprintln!("after tweak: {table:?}");
}
