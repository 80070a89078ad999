//! End-to-end tests of the blocking client against real `neomaster` and `neostorage`
//! processes (cluster/daemons), built first if `target/debug` lacks them. `workload`
//! runs client threads against `neosimple` while a storage is killed and restarted, then
//! checks the replicas with `neoctl check` (it needs `neosimple`, `neoctl` and `sqlite3`).

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use neo_client::{Client, ClientConfig, ClientError, Error, Invalidation, TransactionMeta, Vote};
use neo_protocol::{Bytes, Oid, Tid};

fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// The daemons' binary directory, building them if needed (once per test binary).
fn bin_dir() -> PathBuf {
    static BUILT: Mutex<bool> = Mutex::new(false);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("debug");
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let present = dir.join("neomaster").exists() && dir.join("neostorage").exists();
    if !*built && !present {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "neo-daemons", "--bins"])
            .current_dir(&root)
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cannot build neo-daemons");
    }
    *built = true;
    dir
}

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A master and `storages` storages on SQLite databases in a temporary directory.
struct Cluster {
    _dir: tempfile::TempDir,
    name: String,
    master: SocketAddr,
    /// The master first.
    processes: Vec<Process>,
    master_args: Vec<String>,
}

impl Cluster {
    fn start(storages: usize, partitions: u32) -> Cluster {
        let bin = bin_dir();
        let dir = tempfile::tempdir().unwrap();
        let master = free_port();
        let name = format!("client_{}", master.port());
        let spawn = |program: &str, args: Vec<String>| {
            let log =
                std::fs::File::create(dir.path().join(format!("{program}.{}.err", args.len())))
                    .unwrap();
            Process(
                Command::new(bin.join(program))
                    .args(args)
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .unwrap_or_else(|e| panic!("cannot start {program}: {e}")),
            )
        };
        let master_args: Vec<String> = vec![
            "-c".into(),
            name.clone(),
            "-b".into(),
            master.to_string(),
            "-p".into(),
            partitions.to_string(),
            "-r".into(),
            "0".into(),
            "-A".into(),
            storages.to_string(),
        ];
        let mut processes = vec![spawn("neomaster", master_args.clone())];
        for i in 0..storages {
            let database = dir.path().join(format!("storage_{i}.db"));
            processes.push(spawn(
                "neostorage",
                vec![
                    "-c".into(),
                    name.clone(),
                    "-m".into(),
                    master.to_string(),
                    "-a".into(),
                    "SQLite".into(),
                    "-d".into(),
                    database.display().to_string(),
                    "-b".into(),
                    free_port().to_string(),
                ],
            ));
        }
        Cluster {
            _dir: dir,
            name,
            master,
            processes,
            master_args,
        }
    }

    /// Kills the master (SIGKILL) and starts it again on the same address.
    fn restart_master(&mut self) {
        let master = &mut self.processes[0];
        let _ = master.0.kill();
        let _ = master.0.wait();
        let log = std::fs::File::create(self._dir.path().join("neomaster.restarted.err")).unwrap();
        let process = Command::new(bin_dir().join("neomaster"))
            .args(&self.master_args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("restart neomaster");
        self.processes[0] = Process(process);
    }

    fn config(&self) -> ClientConfig {
        let mut config = ClientConfig::new(vec![self.master.to_string()], self.name.clone());
        config.timeout = Duration::from_secs(60);
        config
    }

    fn client(&self) -> Client {
        Client::connect(self.config()).expect("connect to the cluster")
    }
}

fn meta(description: &str) -> TransactionMeta {
    TransactionMeta {
        user: Bytes::from_static(b"tester"),
        description: Bytes::from(description.to_owned()),
        extension: Bytes::new(),
    }
}

/// Commits `(oid, serial, data)` stores in one transaction; returns the TID.
fn commit(client: &Client, stores: &[(Oid, Tid, &[u8])]) -> Tid {
    let ttid = client.tpc_begin(None, meta("commit")).unwrap();
    for &(oid, serial, data) in stores {
        client
            .store(ttid, oid, serial, Bytes::copy_from_slice(data))
            .unwrap();
    }
    assert_eq!(client.tpc_vote(ttid).unwrap(), Vote::Voted(vec![]));
    client.tpc_finish(ttid).unwrap()
}

mod reads {
    use super::*;

    #[test]
    fn connects_allocates_oids_and_reads_an_empty_database() {
        let cluster = Cluster::start(1, 3);
        let client = cluster.client();
        let last = client.last_transaction().unwrap();
        assert_eq!(last, Tid::ZERO, "new database");
        let a = client.new_oid().unwrap();
        let b = client.new_oid().unwrap();
        assert_eq!(b.0, a.0 + 1, "OIDs come from one batch");
        match client.load(Oid(0)) {
            Err(Error::Client(ClientError::OidDoesNotExist(Oid(0)))) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(client.load_before(Oid(0), Tid(1)).ok().flatten(), None);
        client.sync().unwrap();
        let stats = client.cache_stats().unwrap();
        assert_eq!((stats.hits, stats.size), (0, 0));
        assert!(client.undo_log(0, 20).unwrap().is_empty());
        assert_eq!(client.iterator(None, None).unwrap().count(), 0);
        client.close();
    }

    #[test]
    fn a_wrong_cluster_name_never_connects() {
        let cluster = Cluster::start(1, 1);
        let mut config = cluster.config();
        config.cluster = "other".into();
        config.timeout = Duration::from_secs(3);
        match Client::connect(config) {
            Err(Error::Timeout(_)) => {}
            other => panic!("{:?}", other.map(|_| ())),
        }
    }
}

mod commits {
    use super::*;

    #[test]
    fn corked_stores_go_out_together_and_a_call_that_waits_sends_them_first() {
        let cluster = Cluster::start(2, 4);
        let client = cluster.client();
        let oids: Vec<Oid> = (0..5).map(|_| client.new_oid().unwrap()).collect();
        // Stores held back until the closure returns, then voted outside it.
        let ttid = client.tpc_begin(None, meta("corked")).unwrap();
        client.corked(|| {
            for oid in &oids {
                let data = Bytes::from(format!("first {}", oid.0));
                client.store(ttid, *oid, Tid::ZERO, data).unwrap();
            }
        });
        assert_eq!(client.tpc_vote(ttid).unwrap(), Vote::Voted(vec![]));
        let first = client.tpc_finish(ttid).unwrap();
        // A vote inside the closure waits for answers to stores still held back: they
        // are sent before it waits (or it would time out).
        let ttid = client.tpc_begin(None, meta("corked vote")).unwrap();
        let second = client.corked(|| {
            for oid in &oids {
                let data = Bytes::from(format!("second {}", oid.0));
                client.store(ttid, *oid, first, data).unwrap();
            }
            assert_eq!(client.tpc_vote(ttid).unwrap(), Vote::Voted(vec![]));
            client.tpc_finish(ttid).unwrap()
        });
        let other = cluster.client();
        for oid in &oids {
            let expected = Bytes::from(format!("second {}", oid.0));
            assert_eq!(other.load(*oid).unwrap(), (expected, second));
        }
    }

    #[test]
    fn store_commit_load_round_trip() {
        let cluster = Cluster::start(2, 4);
        let client = cluster.client();
        let oid = client.new_oid().unwrap();
        let big = vec![b'z'; 10_000];
        let tid1 = commit(&client, &[(oid, Tid::ZERO, &big)]);
        assert_eq!(client.last_transaction().unwrap(), tid1);
        assert_eq!(client.load(oid).unwrap(), (Bytes::from(big.clone()), tid1));
        let tid2 = commit(&client, &[(oid, tid1, b"second")]);
        assert!(tid2 > tid1);
        // A fresh client reads from the storages (compressed data, checksums verified).
        let other = cluster.client();
        assert_eq!(
            other.load(oid).unwrap(),
            (Bytes::from_static(b"second"), tid2)
        );
        let before = other.load_before(oid, tid2).unwrap().unwrap();
        assert_eq!((before.serial, before.next_serial), (tid1, Some(tid2)));
        assert_eq!(before.data, Some(Bytes::from(big)));
        let history = other.history(oid, 10).unwrap();
        assert_eq!(
            history.iter().map(|h| h.serial).collect::<Vec<_>>(),
            vec![tid2, tid1]
        );
        let transactions: Vec<_> = other
            .iterator(None, None)
            .unwrap()
            .map(|t| t.unwrap())
            .collect();
        assert_eq!(transactions.len(), 2);
        assert_eq!(
            transactions[1].records[0].data,
            Some(Bytes::from_static(b"second"))
        );
    }

    #[test]
    fn conflicts_are_resolved_by_the_caller_and_invalidations_arrive_in_order() {
        let cluster = Cluster::start(1, 2);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut config = cluster.config();
        let record = seen.clone();
        config.on_invalidation = Some(Arc::new(move |i: &Invalidation| {
            record.lock().unwrap().push(i.clone())
        }));
        let first = Client::connect(config).unwrap();
        let second = cluster.client();
        let oid = first.new_oid().unwrap();
        let tid1 = commit(&first, &[(oid, Tid::ZERO, b"base")]);
        second.sync().unwrap();
        // Both change the object from tid1; the second commits first (a store of the
        // first would make the younger second wait for its lock).
        let ttid = first.tpc_begin(None, meta("late")).unwrap();
        let tid2 = commit(&second, &[(oid, tid1, b"theirs")]);
        first
            .store(ttid, oid, tid1, Bytes::from_static(b"mine"))
            .unwrap();
        let resolved = first
            .tpc_vote_resolving(ttid, |conflict| {
                assert_eq!(conflict.committed_serial, tid2);
                Some(Bytes::from_static(b"merged"))
            })
            .unwrap();
        assert_eq!(resolved, vec![oid]);
        let tid3 = first.tpc_finish(ttid).unwrap();
        second.sync().unwrap();
        assert_eq!(
            second.load(oid).unwrap(),
            (Bytes::from_static(b"merged"), tid3)
        );
        assert_eq!(
            *seen.lock().unwrap(),
            vec![Invalidation::Objects {
                tid: tid2,
                oids: vec![oid]
            }]
        );
        assert_eq!(
            second.poll_invalidations(),
            vec![
                Invalidation::Objects {
                    tid: tid1,
                    oids: vec![oid]
                },
                Invalidation::Objects {
                    tid: tid3,
                    oids: vec![oid]
                },
            ]
        );
    }

    #[test]
    fn undo_and_restore() {
        let cluster = Cluster::start(1, 2);
        let client = cluster.client();
        let oid = client.new_oid().unwrap();
        let tid1 = commit(&client, &[(oid, Tid::ZERO, b"one")]);
        let tid2 = commit(&client, &[(oid, tid1, b"two")]);
        // AskTIDs is not delayed by locks (5.13: the undo log is approximate): the
        // storage may answer before it processed the unlock of tid2.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let log = client.undo_log(0, 10).unwrap();
            let tids: Vec<Tid> = log.iter().map(|t| t.tid).collect();
            if tids == vec![tid2, tid1] {
                break;
            }
            assert_eq!(tids, vec![tid1], "only tid2 may be missing, for a moment");
            assert!(std::time::Instant::now() < deadline, "tid2 never listed");
            std::thread::sleep(Duration::from_millis(20));
        }
        let ttid = client.tpc_begin(None, meta("undo")).unwrap();
        assert_eq!(
            client.undo(ttid, tid2, |_, _, _, _| None).unwrap(),
            vec![oid]
        );
        client.tpc_vote(ttid).unwrap();
        let tid3 = client.tpc_finish(ttid).unwrap();
        let record = client.load_serial(oid, tid3).unwrap();
        assert_eq!(record.data, Some(Bytes::from_static(b"one")));
        // Read from the storages (a client with an empty cache), the undo record carries
        // its back-pointer (5.12), which the iterator gives as data_txn.
        let transactions: Vec<_> = cluster
            .client()
            .iterator(Some(tid3), Some(tid3))
            .unwrap()
            .map(|t| t.unwrap())
            .collect();
        assert_eq!(transactions[0].records[0].data_txn, Some(tid1));
        let record = cluster.client().load_serial(oid, tid3).unwrap();
        assert_eq!(
            (record.data, record.data_serial),
            (Some(Bytes::from_static(b"one")), Some(tid1))
        );
        // Restore with a chosen TID, as imports do.
        let chosen = Tid(tid3.0 + 1000);
        let ttid = client.tpc_begin(Some(chosen), meta("restore")).unwrap();
        assert_eq!(ttid, chosen);
        client
            .restore(
                ttid,
                oid,
                tid3,
                Some(Bytes::from_static(b"two")),
                Some(tid2),
            )
            .unwrap();
        client.tpc_vote(ttid).unwrap();
        assert_eq!(client.tpc_finish(ttid).unwrap(), chosen);
        assert_eq!(
            client.load(oid).unwrap(),
            (Bytes::from_static(b"two"), chosen)
        );
    }

    #[test]
    fn an_undo_record_keeps_its_back_pointer_when_read_from_the_cache() {
        let cluster = Cluster::start(1, 1);
        let client = cluster.client();
        let oid = client.new_oid().unwrap();
        let tid1 = commit(&client, &[(oid, Tid::ZERO, b"one")]);
        let tid2 = commit(&client, &[(oid, tid1, b"two")]);
        let ttid = client.tpc_begin(None, meta("undo")).unwrap();
        client.undo(ttid, tid2, |_, _, _, _| None).unwrap();
        client.tpc_vote(ttid).unwrap();
        let tid3 = client.tpc_finish(ttid).unwrap();
        let reader = cluster.client();
        // The first read goes to the storage and fills the cache; the second hits it.
        for read in ["from the storage", "from the cache"] {
            let record = reader.load_serial(oid, tid3).unwrap();
            assert_eq!(record.data_serial, Some(tid1), "{read}");
        }
    }

    #[test]
    fn pack_removes_old_revisions() {
        let cluster = Cluster::start(1, 2);
        let client = cluster.client();
        let oid = client.new_oid().unwrap();
        let tid1 = commit(&client, &[(oid, Tid::ZERO, b"one")]);
        let tid2 = commit(&client, &[(oid, tid1, b"two")]);
        client.pack(tid2, None, true).unwrap();
        match client.load_serial(oid, tid1) {
            Err(Error::Client(ClientError::OidNotFound(_))) => {}
            other => panic!("packed revision still there: {other:?}"),
        }
        assert_eq!(
            client.load(oid).unwrap(),
            (Bytes::from_static(b"two"), tid2)
        );
    }
}

/// One `Client` shared by several threads: each caller may read the sockets for the
/// others (leader/follower), and a background thread reads when nobody calls.
mod threads {
    use super::*;

    fn data(oid: Oid, round: u64) -> Vec<u8> {
        let mut data = format!("object {} round {round} ", oid.0).into_bytes();
        data.resize(100 + (oid.0 % 50) as usize, b'.');
        data
    }

    #[test]
    fn threads_sharing_one_client_each_get_their_own_answers() {
        let cluster = Cluster::start(2, 6);
        let writer = cluster.client();
        let oids: Vec<Oid> = (0..200).map(|_| writer.new_oid().unwrap()).collect();
        let ttid = writer.tpc_begin(None, meta("populate")).unwrap();
        for &oid in &oids {
            writer
                .store(ttid, oid, Tid::ZERO, Bytes::from(data(oid, 0)))
                .unwrap();
        }
        assert_eq!(writer.tpc_vote(ttid).unwrap(), Vote::Voted(vec![]));
        writer.tpc_finish(ttid).unwrap();
        let mut config = cluster.config();
        // Nothing cached: every load goes to a storage.
        config.cache_size = 0;
        let shared = Client::connect(config).unwrap();
        let (readers, writers) = oids.split_at(150);
        std::thread::scope(|scope| {
            for t in 0..6u64 {
                let shared = &shared;
                scope.spawn(move || {
                    for i in 0..300 {
                        let oid = readers[((i * 7 + t * 31) % readers.len() as u64) as usize];
                        let (loaded, _) = shared.load(oid).unwrap();
                        assert_eq!(&loaded[..], &data(oid, 0)[..], "thread {t} load {i}");
                    }
                });
            }
            // Committers on the same client, each on objects of its own.
            for (t, chunk) in writers.chunks(25).enumerate() {
                let shared = &shared;
                scope.spawn(move || {
                    let mut serials: Vec<Tid> = chunk
                        .iter()
                        .map(|&oid| shared.load(oid).unwrap().1)
                        .collect();
                    for round in 1..=10 {
                        let ttid = shared.tpc_begin(None, meta("thread")).unwrap();
                        for (&oid, &serial) in chunk.iter().zip(&serials) {
                            shared
                                .store(ttid, oid, serial, Bytes::from(data(oid, round)))
                                .unwrap();
                        }
                        assert_eq!(shared.tpc_vote(ttid).unwrap(), Vote::Voted(vec![]));
                        let tid = shared.tpc_finish(ttid).unwrap();
                        serials = vec![tid; chunk.len()];
                        for &oid in chunk {
                            assert_eq!(
                                shared.load(oid).unwrap(),
                                (Bytes::from(data(oid, round)), tid),
                                "committer {t} round {round}"
                            );
                        }
                    }
                });
            }
        });
        let stats = shared.cache_stats().unwrap();
        assert_eq!(stats.hits, 0, "a cache of 0 bytes keeps nothing");
        // Everything committed is seen by another client.
        let other = cluster.client();
        for &oid in writers {
            assert_eq!(&other.load(oid).unwrap().0[..], &data(oid, 10)[..]);
        }
    }

    #[test]
    fn the_client_reconnects_to_a_restarted_master() {
        let mut cluster = Cluster::start(1, 2);
        let client = cluster.client();
        let oid = client.new_oid().unwrap();
        let tid1 = commit(&client, &[(oid, Tid::ZERO, b"before")]);
        cluster.restart_master();
        // The client notices the loss, retries (its deadline comes through the background
        // thread or the caller) and gets the cluster back once it runs again.
        let started = std::time::Instant::now();
        let tid2 = loop {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no commit within 60 s of the master's restart"
            );
            let attempt = (|| -> Result<Tid, Error> {
                let ttid = client.tpc_begin(None, meta("after restart"))?;
                client.store(ttid, oid, tid1, Bytes::from_static(b"after"))?;
                match client.tpc_vote(ttid)? {
                    Vote::Voted(_) => client.tpc_finish(ttid),
                    Vote::Conflicts(c) => panic!("unexpected conflicts {c:?}"),
                }
            })();
            match attempt {
                Ok(tid) => break tid,
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        assert!(tid2 > tid1);
        assert_eq!(
            client.load(oid).unwrap(),
            (Bytes::from_static(b"after"), tid2)
        );
        let other = cluster.client();
        assert_eq!(
            other.load(oid).unwrap(),
            (Bytes::from_static(b"after"), tid2)
        );
    }

    #[test]
    fn invalidations_arrive_while_the_client_makes_no_call() {
        let cluster = Cluster::start(1, 2);
        let (sender, receiver) = std::sync::mpsc::channel();
        let sender = Mutex::new(sender);
        let mut config = cluster.config();
        config.on_invalidation = Some(Arc::new(move |i: &Invalidation| {
            let _ = sender.lock().unwrap().send(i.clone());
        }));
        let idle = Client::connect(config).unwrap();
        let writer = cluster.client();
        let oid = writer.new_oid().unwrap();
        let tid = commit(&writer, &[(oid, Tid::ZERO, b"data")]);
        // `idle` makes no call: its background thread reads the master.
        let got = receiver.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(
            got,
            Invalidation::Objects {
                tid,
                oids: vec![oid]
            }
        );
        assert_eq!(idle.poll_invalidations(), vec![got]);
        assert_eq!(idle.last_transaction().unwrap(), tid);
    }
}

#[path = "client/workload.rs"]
mod workload;
