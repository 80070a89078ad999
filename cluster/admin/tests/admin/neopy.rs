//! Interop with NEO/py (only with `NEO_PY_DIR` set to a NEO/py checkout, and `NEO_PYTHON`
//! to a Python that can run it): a NEO/py master and two SQLite storages, a NEO/py admin
//! and ours side by side on the same cluster, and NEO/py's neoctl asked the same
//! questions through both admins. Our admin runs on real sockets through a small driver
//! over `neo-net` written for this test.

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use neo_admin::{Admin, Config};
use neo_net::{ConnectionHandle, Event, Net, NetConfig};
use neo_node::{ConnId, Input, Node, Outbox, Output};
use neo_protocol::{Address, PacketKind};

struct NeoPy {
    dir: PathBuf,
    python: String,
}

impl NeoPy {
    fn from_env() -> Option<NeoPy> {
        let dir = PathBuf::from(std::env::var_os("NEO_PY_DIR")?);
        let python = std::env::var("NEO_PYTHON").unwrap_or_else(|_| "python3".into());
        Some(NeoPy { dir, python })
    }

    fn spawn(&self, script: &str, args: &[&str], log: &Path) -> Child {
        let log = std::fs::File::create(log).unwrap();
        Command::new(&self.python)
            .arg(self.dir.join(script))
            .args(args)
            .env("PYTHONPATH", &self.dir)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {script}: {e}"))
    }

    /// Runs NEO/py's neoctl against `admin`: (exit code, stdout, last stderr line).
    fn neoctl(&self, admin: SocketAddr, args: &str) -> (i32, String, String) {
        let output = Command::new(&self.python)
            .arg(self.dir.join("neoctl"))
            .arg("-a")
            .arg(admin.to_string())
            .args(args.split_whitespace())
            .env("PYTHONPATH", &self.dir)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr.lines().last().unwrap_or("").to_string(),
        )
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Our admin on real sockets, on its own thread.
struct Driver {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Option<i32>>>,
}

impl Driver {
    fn start(master: SocketAddr, cluster: &str) -> Driver {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready, address) = mpsc::channel();
        let thread = {
            let stop = stop.clone();
            let cluster = cluster.to_string();
            std::thread::spawn(move || drive(master, cluster, stop, ready))
        };
        Driver {
            address: address.recv().unwrap(),
            stop,
            thread: Some(thread),
        }
    }

    /// Waits for the admin to exit by itself; returns its exit code.
    fn join(mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        let thread = self.thread.take()?;
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stop.store(true, Ordering::Relaxed);
        thread.join().ok().flatten()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The admin's event loop: network events in, outputs to the network. Returns the exit
/// code the admin asked for, `None` if stopped from outside.
fn drive(
    master: SocketAddr,
    cluster: String,
    stop: Arc<AtomicBool>,
    ready: mpsc::Sender<SocketAddr>,
) -> Option<i32> {
    let (net, events) = Net::new(NetConfig::default()).unwrap();
    let address = net.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    ready.send(address).unwrap();
    let mut admin = Admin::new(Config {
        cluster,
        address: Address::from_socket_addr(address),
        masters: vec![Address::from_socket_addr(master)],
        nid: None,
        monitor_maxlag: 0.0,
        monitor_backup: vec![],
    });
    let mut out = Outbox::new();
    let mut handles: HashMap<ConnId, ConnectionHandle> = HashMap::new();
    let mut by_net: HashMap<u64, ConnId> = HashMap::new();
    let mut closed_by_us: HashSet<ConnId> = HashSet::new();
    let mut input = Some(Input::Start);
    while !stop.load(Ordering::Relaxed) {
        if let Some(input) = input.take() {
            admin.handle(now(), input, &mut out);
        }
        for output in out.drain().collect::<Vec<_>>() {
            match output {
                Output::Connect { conn, addr } => {
                    let handle = net.connect(addr.to_socket_addr().unwrap());
                    by_net.insert(handle.id(), conn);
                    handles.insert(conn, handle);
                }
                Output::Send {
                    conn,
                    msg_id,
                    packet,
                } => {
                    let Some(handle) = handles.get(&conn) else {
                        continue;
                    };
                    let _ = match packet.kind() {
                        kind if kind.expects_answer() => handle.ask_with_id(msg_id, packet, 0),
                        PacketKind::Answer => handle.answer(msg_id, packet),
                        _ => handle.notify_with_id(msg_id, packet),
                    };
                }
                Output::Close { conn } => {
                    if let Some(handle) = handles.remove(&conn) {
                        handle.close();
                        closed_by_us.insert(conn);
                    }
                }
                Output::Exit { code, .. } => return Some(code),
            }
        }
        let wait = admin
            .deadline()
            .map_or(0.1, |at| (at - now()).clamp(0.0, 0.1));
        let event = match events.recv_timeout(Duration::from_secs_f64(wait)) {
            Ok(event) => event,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if admin.deadline().is_some_and(|at| at <= now()) {
                    input = Some(Input::Timer);
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return None,
        };
        let node_conn = |net_id: u64| by_net.get(&net_id).copied().unwrap_or(net_id);
        input = match event {
            Event::Accepted { conn, .. } => {
                let id = conn.id();
                by_net.insert(id, id);
                handles.insert(id, conn);
                Some(Input::Accepted {
                    conn: id,
                    peer: "127.0.0.1:1".parse().unwrap(),
                })
            }
            Event::Connected { conn } => Some(Input::Connected {
                conn: node_conn(conn),
            }),
            Event::ConnectFailed { conn, .. } => Some(Input::ConnectFailed {
                conn: node_conn(conn),
            }),
            Event::Packet {
                conn,
                msg_id,
                packet,
            } => Some(Input::Packet {
                conn: node_conn(conn),
                msg_id,
                packet,
            }),
            Event::Answer {
                conn,
                msg_id,
                packet,
                ..
            } => Some(Input::Answer {
                conn: node_conn(conn),
                msg_id,
                packet,
            }),
            Event::Closed { conn, .. } => {
                let conn = node_conn(conn);
                handles.remove(&conn);
                // The admin hears only of closures it did not ask for.
                (!closed_by_us.remove(&conn)).then_some(Input::Closed { conn })
            }
        };
    }
    None
}

struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits until `admin` answers `print cluster` with `state`.
fn wait_state(neopy: &NeoPy, admin: SocketAddr, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, out, _) = neopy.neoctl(admin, "print cluster");
        if code == 0 && out.trim() == state {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{admin} never reached {state}: {out}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn our_admin_answers_neopy_neoctl_as_neopy_admin_does() {
    let Some(neopy) = NeoPy::from_env() else {
        eprintln!("skipped: set NEO_PY_DIR (and NEO_PYTHON) to run against NEO/py");
        return;
    };
    let dir = std::env::temp_dir().join(format!("neo-admin-interop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cluster = "admininterop";
    let master: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let py_admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let m = master.to_string();
    let mut processes = Processes(vec![neopy.spawn(
        "neomaster",
        &["-c", cluster, "-b", &m, "-m", &m, "-p", "12", "-r", "0"],
        &dir.join("master.log"),
    )]);
    for n in 1..=2 {
        let bind = format!("127.0.0.1:{}", free_port());
        let db = dir.join(format!("s{n}.db"));
        processes.0.push(neopy.spawn(
            "neostorage",
            &[
                "-c",
                cluster,
                "-b",
                &bind,
                "-m",
                &m,
                "-a",
                "SQLite",
                "-d",
                db.to_str().unwrap(),
            ],
            &dir.join(format!("s{n}.log")),
        ));
    }
    processes.0.push(neopy.spawn(
        "neoadmin",
        &["-c", cluster, "-b", &py_admin.to_string(), "-m", &m],
        &dir.join("admin.log"),
    ));
    std::thread::sleep(Duration::from_millis(500));
    let ours = Driver::start(master, cluster);
    wait_state(&neopy, py_admin, "RECOVERING");
    wait_state(&neopy, ours.address, "RECOVERING");

    let same = |args: &str| {
        let theirs = neopy.neoctl(py_admin, args);
        let mine = neopy.neoctl(ours.address, args);
        assert_eq!(mine, theirs, "neoctl {args}: our admin vs NEO/py's");
        mine
    };
    // Wait for both storages to be known by both admins.
    let deadline = Instant::now() + Duration::from_secs(30);
    while same("print node storage").1.lines().count() < 2 {
        assert!(Instant::now() < deadline, "storages never appeared");
        std::thread::sleep(Duration::from_millis(300));
    }
    // Each admin lists itself only (the master tells admins about other node types), so
    // the full lists differ by that line.
    for args in [
        "print node master",
        "print node storage",
        "print node client",
        "print pt",
        "print cluster",
        "print summary",
        "print ids",
        "print primary",
    ] {
        same(args);
    }
    let (code, nodes, _) = neopy.neoctl(ours.address, "print node admin");
    assert_eq!(code, 0);
    assert!(
        nodes.starts_with("A")
            && nodes.contains(&format!(" | ADMIN | {} | RUNNING | ", ours.address)),
        "{nodes}"
    );
    // Orders go through our admin.
    assert_eq!(
        neopy.neoctl(ours.address, "tweak -n"),
        (
            1,
            String::new(),
            "tweakPartitionTable RPC can not be used in RECOVERING state".into()
        )
    );
    assert_eq!(
        neopy.neoctl(ours.address, "start"),
        (0, "Cluster state changed\n".into(), String::new())
    );
    wait_state(&neopy, ours.address, "RUNNING");
    wait_state(&neopy, py_admin, "RUNNING");
    for args in [
        "print pt",
        "print pt 0 4",
        "print pt 3",
        "print pt 5 100",
        "print summary",
        "print ids",
        "print node storage",
    ] {
        same(args);
    }
    assert_eq!(
        neopy.neoctl(ours.address, "set replicas 1"),
        (0, "\n".into(), String::new())
    );
    assert_eq!(same("tweak -n").0, 0);
    assert_eq!(neopy.neoctl(ours.address, "tweak").0, 0);
    std::thread::sleep(Duration::from_secs(3));
    for args in ["print pt", "print summary"] {
        same(args);
    }
    assert_eq!(
        neopy.neoctl(ours.address, "kill S2"),
        (0, "state changed\n".into(), String::new())
    );
    std::thread::sleep(Duration::from_secs(1));
    for args in [
        "print pt",
        "print summary",
        "print node storage",
        "print pt 0 3",
    ] {
        same(args);
    }
    let summary = same("print summary").1;
    assert!(
        summary.starts_with(
            "# {\"problem\": [null]}\nRUNNING; OUT_OF_DATE=12, UP_TO_DATE=12; DOWN=1; ltid="
        ),
        "{summary}"
    );
    assert_eq!(
        neopy.neoctl(ours.address, "drop S2"),
        (0, "node permanently removed\n".into(), String::new())
    );
    same("print pt");
    assert_eq!(
        neopy.neoctl(ours.address, "set cluster STOPPING"),
        (0, "Cluster state changed\n".into(), String::new())
    );
    assert_eq!(
        ours.join(Duration::from_secs(20)),
        Some(0),
        "our admin exits 0 after STOPPING"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
