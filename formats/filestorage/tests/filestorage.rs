//! Integration tests of neo-filestorage: the committed worked example, and
//! files written by real ZODB (generated at test time by tests/zodb/gen.py)
//! compared with what ZODB itself reads, dumps, checks and packs.
//!
//! The ZODB comparisons need a Python with ZODB: `NEO_PYTHON` names it
//! (scripts/test sets it up in a venv). Without it these tests say so and
//! pass, except under CI (`CI` set), where they fail.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use neo_filestorage::format::{status, TxnHeader};
use neo_filestorage::pack::{self, PackOutcome};
use neo_filestorage::{dump, pickle, Error, FileStorage, Magic, Oid, Options, Tid, TxnMeta};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("neofs-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn python() -> Option<PathBuf> {
    match std::env::var_os("NEO_PYTHON") {
        Some(path) => Some(PathBuf::from(path)),
        None if std::env::var_os("CI").is_some() => {
            panic!("NEO_PYTHON must name a Python with ZODB under CI")
        }
        None => {
            eprintln!(
                "NEO_PYTHON is not set: skipping the comparison with ZODB (scripts/test sets it)"
            );
            None
        }
    }
}

/// Runs a Python script of tests/zodb and returns (exit code, stdout, stderr).
fn py(script: &str, args: &[&str]) -> (i32, String, String) {
    let python = python().expect("checked by the caller");
    let mut command = Command::new(python);
    if let Some(module) = script.strip_prefix('-') {
        command.args(["-m", module]);
    } else {
        command.arg(data_dir().join("zodb").join(script));
    }
    let output = command.args(args).output().expect("run python");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn py_ok(script: &str, args: &[&str]) -> String {
    let (code, out, err) = py(script, args);
    assert_eq!(code, 0, "{script} {args:?} failed:\n{err}");
    out
}

fn neofs(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_neofs"))
        .args(args)
        .output()
        .expect("run neofs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The ZODB-made files, generated once per test run.
fn zodb_files() -> Option<&'static Path> {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    python()?;
    Some(DIR.get_or_init(|| {
        let dir = scratch("zodb");
        py_ok("gen.py", &[dir.to_str().unwrap()]);
        dir
    }))
}

fn copy_of(src: &Path, dir: &Path, name: &str) -> PathBuf {
    let dst = dir.join(name);
    std::fs::copy(src, &dst).unwrap();
    dst
}

fn canonical(path: &Path, with_data: bool) -> String {
    let storage = FileStorage::open(
        path,
        Options {
            sidecar: false,
            ..Options::default()
        },
    )
    .unwrap();
    let mut out = Vec::new();
    dump::canonical(&storage, &mut out, with_data).unwrap();
    String::from_utf8(out).unwrap()
}

fn zodb_canonical(path: &Path, with_data: bool) -> String {
    let mut args = vec![path.to_str().unwrap()];
    if with_data {
        args.insert(0, "--data");
    }
    py_ok("canon.py", &args)
}

const ZODB_FILES: [&str; 3] = ["history.fs", "packed.fs", "dangling.fs"];

// ---------------------------------------------------------------- example

#[test]
fn worked_example_loads() {
    let path = data_dir().join("data/example.fs");
    let fs = FileStorage::open(
        &path,
        Options {
            sidecar: false,
            ..Options::default()
        },
    )
    .unwrap();
    let t1 = Tid(0x03f5_8e00_0000_0000);
    let t2 = Tid(0x03f5_8e00_0444_4444);
    let t3 = Tid(0x03f5_8e00_0888_8888);
    assert_eq!(fs.magic(), Magic::Fs30);
    assert_eq!(fs.end(), 600);
    assert_eq!(fs.last_transaction(), t3);
    assert_eq!(fs.len(), 2);
    assert_eq!(fs.index().get(Oid(0)), Some(492));
    assert_eq!(fs.index().get(Oid(1)), Some(542));
    // The root went back to its first revision through a backpointer; the
    // serial is the undo's.
    let (root, serial) = fs.load(Oid(0)).unwrap();
    assert_eq!((root.len(), serial), (64, t3));
    assert!(matches!(fs.load(Oid(1)), Err(Error::NoData { .. })));
    assert!(matches!(fs.load(Oid(7)), Err(Error::NoSuchObject { .. })));
    let before = fs.load_before(Oid(0), t3).unwrap().unwrap();
    assert_eq!(
        (before.data.len(), before.serial, before.next_serial),
        (106, t2, Some(t3))
    );
    assert_eq!(fs.load_before(Oid(0), t1).unwrap(), None);
    let obj = fs.load_before(Oid(1), t3).unwrap().unwrap();
    assert_eq!((obj.serial, obj.data.len()), (t2, 35));
    assert_eq!(fs.load_serial(Oid(0), t1).unwrap(), root);
    assert!(matches!(
        fs.load_serial(Oid(0), Tid(5)),
        Err(Error::NoSuchRevision { .. })
    ));
    let history = fs.history(Oid(0), 10).unwrap();
    let tids: Vec<Tid> = history.iter().map(|h| h.tid).collect();
    assert_eq!(tids, vec![t3, t2, t1]);
    assert_eq!(history[1].user, b"alice");
    assert_eq!(history[0].size, 0);
    let log = fs.undo_log(0, 10).unwrap();
    assert_eq!(
        log.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
        vec![t3, t2, t1]
    );
    assert_eq!(log[0].1.description, b"undo add obj");
    let current: Vec<_> = fs.current_records().map(|r| r.unwrap()).collect();
    assert_eq!(current, vec![(Oid(0), t3, root.clone())]);
    // Iteration from a tid in the middle, and the backpointer's data_txn.
    let mut iter = fs.iter(Some(t2), None).unwrap();
    let txn = iter.next_txn().unwrap().unwrap();
    assert_eq!(txn.tid(), t2);
    assert_eq!(txn.view.extension().len(), 23);
    let txn = iter.next_txn().unwrap().unwrap();
    let records: Vec<_> = txn.records().map(|r| r.unwrap()).collect();
    assert_eq!(records[0].data_txn, Some(t1));
    assert_eq!(records[0].data.as_deref().map(|d| d.len()), Some(64));
    assert_eq!(
        (records[1].data.is_none(), records[1].data_txn),
        (true, None)
    );
    assert!(iter.next_txn().unwrap().is_none());
    let mut iter = fs.iter(Some(t2), Some(t2)).unwrap();
    assert!(iter.next_txn().unwrap().is_some());
    assert!(iter.next_txn().unwrap().is_none());
}

#[test]
fn worked_example_pack_matches_spec() {
    // filestorage.md §15.6: packing at 00:00:03 leaves one 'p' transaction
    // of 153 bytes; at 00:00:01.5 nothing is freed.
    let dir = scratch("example-pack");
    let path = copy_of(&data_dir().join("data/example.fs"), &dir, "Data.fs");
    let fs = FileStorage::open(&path, Options::writable()).unwrap();
    let (fs, outcome) = pack::pack(fs, Tid::from_unix(1704067201.5), true, true).unwrap();
    assert_eq!(outcome, PackOutcome::NothingToPack);
    let (fs, outcome) = pack::pack(fs, Tid::from_unix(1704067203.0), true, true).unwrap();
    assert!(matches!(outcome, PackOutcome::Packed(_)), "{outcome:?}");
    fs.close().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len(), 153);
    let header = TxnHeader::parse(bytes[4..27].try_into().unwrap());
    assert_eq!(
        (header.tid, header.tlen, header.status),
        (Tid(0x03f5_8e00_0888_8888), 141, status::PACKED)
    );
    assert_eq!(
        std::fs::read(dir.join("Data.fs.old")).unwrap(),
        std::fs::read(data_dir().join("data/example.fs")).unwrap()
    );
}

#[test]
fn writer_round_trip_and_torn_tail() {
    let dir = scratch("writer");
    let path = dir.join("Data.fs");
    let mut fs = FileStorage::open(&path, Options::writable()).unwrap();
    let meta = |d: &str| TxnMeta {
        user: b"/ me".to_vec(),
        description: d.as_bytes().to_vec(),
        extension: vec![],
    };
    let mut txn = fs.begin(None, meta("one"), status::NORMAL).unwrap();
    txn.store(Oid(0), None, b"root-1").unwrap();
    txn.store(Oid(1), None, b"obj-1").unwrap();
    assert!(matches!(
        txn.store(Oid(1), None, b"again"),
        Err(Error::DuplicateOid { .. })
    ));
    let t1 = txn.commit().unwrap();
    let mut txn = fs.begin(None, meta("two"), status::NORMAL).unwrap();
    assert!(matches!(
        txn.store(Oid(0), Some(Tid(1)), b"x"),
        Err(Error::Conflict { .. })
    ));
    txn.store(Oid(0), Some(t1), b"root-2").unwrap();
    let t2 = txn.commit().unwrap();
    assert!(t2 > t1);
    let mut txn = fs.begin(None, meta("undo"), status::NORMAL).unwrap();
    assert_eq!(txn.undo(t2).unwrap(), vec![Oid(0)]);
    let t3 = txn.commit().unwrap();
    assert_eq!(fs.load(Oid(0)).unwrap(), (b"root-1".to_vec(), t3));
    assert!(matches!(
        fs.begin(Some(t1), meta("old"), status::NORMAL),
        Err(Error::TidNotIncreasing { .. })
    ));
    // An aborted (dropped) transaction leaves nothing.
    let end = fs.end();
    let mut txn = fs.begin(None, meta("dropped"), status::NORMAL).unwrap();
    txn.store(Oid(5), None, b"never").unwrap();
    drop(txn);
    assert_eq!(fs.end(), end);
    fs.close().unwrap();
    let clean = std::fs::read(&path).unwrap();

    // A crash in the middle of a commit: the tail is saved and cut off at
    // the next writable open, and a read-only open just ignores it.
    let mut torn = clean.clone();
    torn.extend_from_slice(&clean[4..60]);
    std::fs::write(&path, &torn).unwrap();
    let fs = FileStorage::open(
        &path,
        Options {
            sidecar: false,
            ..Options::default()
        },
    )
    .unwrap();
    assert_eq!(
        fs.torn_tail().map(|t| (t.pos, t.len)),
        Some((clean.len() as u64, 56))
    );
    drop(fs);
    let fs = FileStorage::open(&path, Options::writable()).unwrap();
    let tail = fs.torn_tail().unwrap().clone();
    assert_eq!(
        tail.saved_to.as_deref(),
        Some(dir.join("Data.fs.tr0").as_path())
    );
    drop(fs);
    assert_eq!(std::fs::read(&path).unwrap(), clean);
    assert_eq!(
        std::fs::read(dir.join("Data.fs.tr0")).unwrap(),
        &clean[4..60]
    );

    // A finished-looking transaction left with status 'c' is cut as well.
    let mut unfinished = clean.clone();
    let last_len = u64::from_be_bytes(clean[clean.len() - 8..].try_into().unwrap()) as usize;
    let mut copy = clean[clean.len() - 8 - last_len..].to_vec();
    copy[7] += 1; // a later tid
    copy[16] = status::CHECKPOINT;
    unfinished.extend_from_slice(&copy);
    std::fs::write(&path, &unfinished).unwrap();
    let fs = FileStorage::open(&path, Options::writable()).unwrap();
    assert!(fs.torn_tail().unwrap().why.contains("'c'"));
    assert_eq!(fs.end(), clean.len() as u64);
}

#[test]
fn sidecar_avoids_rescans_and_stale_ones_are_ignored() {
    let dir = scratch("sidecar");
    let path = copy_of(&data_dir().join("data/example.fs"), &dir, "Data.fs");
    let fs = FileStorage::open(&path, Options::default()).unwrap();
    assert_eq!(fs.scanned_bytes(), 596);
    fs.save_indexes().unwrap();
    drop(fs);
    let fs = FileStorage::open(&path, Options::default()).unwrap();
    assert_eq!(fs.scanned_bytes(), 0);
    assert_eq!(fs.index().get(Oid(1)), Some(542));
    drop(fs);
    // Our .index is byte-identical to the one ZODB wrote for this file.
    assert_eq!(
        std::fs::read(dir.join("Data.fs.index")).unwrap(),
        std::fs::read(data_dir().join("data/example.fs.index")).unwrap()
    );
    // Appending extends the saved index by scanning only the new part.
    let mut fs = FileStorage::open(&path, Options::writable()).unwrap();
    assert_eq!(fs.scanned_bytes(), 0);
    let mut txn = fs.begin(None, TxnMeta::default(), status::NORMAL).unwrap();
    txn.store(Oid(9), None, b"new").unwrap();
    txn.commit().unwrap();
    fs.close().unwrap();
    let fs = FileStorage::open(&path, Options::default()).unwrap();
    assert_eq!(fs.scanned_bytes(), 0);
    assert_eq!(fs.load(Oid(9)).unwrap().0, b"new");
    drop(fs);
    // A sidecar of another file with a different tail is rejected.
    let other = copy_of(&data_dir().join("data/example.fs"), &dir, "Other.fs");
    std::fs::copy(dir.join("Data.fs.neoindex"), dir.join("Other.fs.neoindex")).unwrap();
    let fs = FileStorage::open(&other, Options::default()).unwrap();
    assert_eq!(fs.scanned_bytes(), 596);
    assert_eq!(fs.index().get(Oid(9)), None);
}

#[test]
fn bad_files_give_errors_with_offsets_never_panics() {
    let dir = scratch("bad");
    let good = std::fs::read(data_dir().join("data/example.fs")).unwrap();
    let path = dir.join("bad.fs");
    std::fs::write(&path, b"FS").unwrap();
    let err = FileStorage::open(&path, Options::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("bad.fs") && err.contains("shorter than the 4-byte magic"),
        "{err}"
    );
    std::fs::write(&path, b"GIF89a....").unwrap();
    let err = FileStorage::open(&path, Options::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("not a FileStorage") && err.contains("byte 0"),
        "{err}"
    );
    // A wrong tloc in the middle of the file is corruption, not a torn tail.
    let mut bad = good.clone();
    bad[372 + 31] ^= 0x40; // last byte of the tloc of the record at 372
    std::fs::write(&path, &bad).unwrap();
    let err = FileStorage::open(&path, Options::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("corrupt at byte 372"), "{err}");
    let (code, _, stderr) = neofs(&["verify", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("data record exceeds transaction record at 372"),
        "{stderr}"
    );

    // Deterministic mutations: flip, zero, truncate; every API must return.
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for round in 0..3000 {
        let mut bytes = good.clone();
        match round % 3 {
            0 => {
                let at = 4 + (next() as usize) % (bytes.len() - 4);
                bytes[at] ^= 1 << (next() % 8);
            }
            1 => {
                let at = 4 + (next() as usize) % (bytes.len() - 12);
                bytes[at..at + 8].copy_from_slice(&next().to_be_bytes());
            }
            _ => bytes.truncate(4 + (next() as usize) % (bytes.len() - 4)),
        }
        std::fs::write(&path, &bytes).unwrap();
        neo_filestorage::fuzz::exercise(&path);
    }
}

// ------------------------------------------------------ compared with ZODB

#[test]
fn reader_yields_what_zodb_iterator_yields() {
    let Some(dir) = zodb_files() else { return };
    for name in ZODB_FILES {
        let path = dir.join(name);
        assert_eq!(
            canonical(&path, true),
            zodb_canonical(&path, true),
            "{name}"
        );
    }
    // Python 2 files differ only by magic (and pickle opcodes).
    let fs21 = copy_of(&dir.join("history.fs"), &scratch("fs21"), "py2.fs");
    let mut bytes = std::fs::read(&fs21).unwrap();
    bytes[..4].copy_from_slice(b"FS21");
    std::fs::write(&fs21, bytes).unwrap();
    let fs = FileStorage::open(&fs21, Options::default()).unwrap();
    assert_eq!(fs.magic(), Magic::Fs21);
    assert_eq!(
        canonical(&fs21, false),
        canonical(&dir.join("history.fs"), false)
    );
}

#[test]
fn dump_is_byte_identical_to_fsdump() {
    let Some(dir) = zodb_files() else { return };
    for name in ZODB_FILES {
        let path = dir.join(name);
        let script = format!(
            "from ZODB.FileStorage.fsdump import fsdump; fsdump({:?})",
            path.to_str().unwrap()
        );
        let theirs = Command::new(python().unwrap())
            .args(["-c", &script])
            .output()
            .unwrap();
        let (code, ours, _) = neofs(&["dump", path.to_str().unwrap()]);
        assert_eq!(code, 0);
        assert_eq!(ours, String::from_utf8(theirs.stdout).unwrap(), "{name}");
    }
}

#[test]
fn verify_agrees_with_fstest() {
    let Some(dir) = zodb_files() else { return };
    let work = scratch("fstest");
    let source = std::fs::read(dir.join("dangling.fs")).unwrap();
    let first_tlen = u64::from_be_bytes(source[12..20].try_into().unwrap()) as usize;
    let second = 4 + first_tlen + 8;
    let mut cases: Vec<(&str, Vec<u8>)> = vec![("good", source.clone())];
    let mut truncated = source.clone();
    truncated.truncate(source.len() - 3);
    cases.push(("truncated", truncated));
    let mut bad_status = source.clone();
    bad_status[second + 16] = b'x';
    cases.push(("status", bad_status));
    let mut checkpoint = source.clone();
    checkpoint[second + 16] = b'c';
    cases.push(("checkpoint", checkpoint));
    let mut reduction = source.clone();
    reduction[second..second + 8].copy_from_slice(&source[4..12]);
    cases.push(("reduction", reduction));
    let mut tloc = source.clone();
    let first_record = second
        + 23
        + ((source[second + 17] as usize) << 8 | source[second + 18] as usize)
        + ((source[second + 19] as usize) << 8 | source[second + 20] as usize)
        + ((source[second + 21] as usize) << 8 | source[second + 22] as usize);
    tloc[first_record + 31] ^= 1;
    cases.push(("tloc", tloc));
    let mut trailer = source.clone();
    trailer[second - 1] ^= 1;
    cases.push(("trailer", trailer));
    let mut header = source.clone();
    header[second + 8..second + 16].copy_from_slice(&5u64.to_be_bytes());
    cases.push(("header", header));
    cases.push(("magic", b"FS99rest".to_vec()));
    cases.push(("empty", Vec::new()));
    for (name, bytes) in cases {
        let path = work.join(format!("{name}.fs"));
        std::fs::write(&path, &bytes).unwrap();
        let p = path.to_str().unwrap();
        let (code, out, err) = py("-ZODB.scripts.fstest", &["-v", "-v", p]);
        let (our_code, our_out, our_err) = neofs(&["verify", "-vv", p]);
        assert_eq!(
            (our_code, our_out, our_err.trim_end()),
            (code, out, err.trim_end()),
            "case {name}"
        );
    }
}

#[test]
fn copy_is_byte_identical() {
    let Some(dir) = zodb_files() else { return };
    let work = scratch("copy");
    for name in ZODB_FILES {
        let dst = work.join(name);
        let (code, _, err) = neofs(&[
            "copy",
            "-q",
            dir.join(name).to_str().unwrap(),
            dst.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{err}");
        assert!(
            std::fs::read(dir.join(name)).unwrap() == std::fs::read(&dst).unwrap(),
            "{name} differs"
        );
    }
    let (code, _, err) = neofs(&[
        "copy",
        dir.join("history.fs").to_str().unwrap(),
        work.join("history.fs").to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("refusing to overwrite"), "{err}");
}

#[test]
fn files_we_write_are_accepted_by_zodb() {
    let Some(dir) = zodb_files() else { return };
    let work = scratch("write");
    let path = work.join("ours.fs");
    // Real pickles (so ZODB can load the objects) taken from history.fs,
    // re-written through our writer with new tids, undo and deletions.
    let source = FileStorage::open(dir.join("history.fs"), Options::default()).unwrap();
    let mut fs = FileStorage::open(&path, Options::writable()).unwrap();
    let mut iter = source.iter(None, None).unwrap();
    let mut tids = Vec::new();
    while let Some(txn) = iter.next_txn().unwrap() {
        let mut writer = fs.begin(None, txn.meta(), status::NORMAL).unwrap();
        for record in txn.records() {
            let record = record.unwrap();
            writer
                .restore(record.oid, record.data.as_deref(), None)
                .unwrap();
        }
        tids.push(writer.commit().unwrap());
    }
    drop(iter);
    // Undo the last transaction, which added items['late29'].
    let last = *tids.last().unwrap();
    let mut writer = fs
        .begin(
            None,
            TxnMeta {
                description: "undo late".into(),
                ..TxnMeta::default()
            },
            status::NORMAL,
        )
        .unwrap();
    writer.undo(last).unwrap();
    writer.commit().unwrap();
    fs.close().unwrap();

    let p = path.to_str().unwrap();
    let (code, out, err) = py("-ZODB.scripts.fstest", &["-v", p]);
    assert_eq!(code, 0, "fstest: {out}{err}");
    assert_eq!(canonical(&path, true), zodb_canonical(&path, true));
    // ZODB uses the .index we wrote instead of scanning.
    assert!(py_ok("tool.py", &["index", p]).contains("index used"));
    let loaded = py_ok("tool.py", &["loadall", p]);
    // The undone transaction created items["late29"]: one more object without data.
    assert!(loaded.starts_with("loaded 202 nodata 3"), "{loaded}");
    // ZODB appends; we read what it appended.
    py_ok("tool.py", &["append", p, "5"]);
    let fs = FileStorage::open(&path, Options::default()).unwrap();
    let log = fs.undo_log(0, 1).unwrap();
    assert_eq!(log[0].1.description, b"appended by ZODB 4");
    assert_eq!(canonical(&path, true), zodb_canonical(&path, true));
}

#[test]
fn pack_keeps_what_zodb_pack_keeps() {
    let Some(dir) = zodb_files() else { return };
    let times: Vec<f64> = std::fs::read_to_string(dir.join("times.txt"))
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    for (i, when) in times.iter().enumerate() {
        for gc in [true, false] {
            let work = scratch(&format!("pack-{i}-{gc}"));
            let theirs = copy_of(&dir.join("history.fs"), &work, "theirs.fs");
            let ours = copy_of(&dir.join("history.fs"), &work, "ours.fs");
            let mut args = vec!["pack", theirs.to_str().unwrap()];
            let when_text = format!("{when}");
            args.push(&when_text);
            if !gc {
                args.push("--no-gc");
            }
            py_ok("tool.py", &args);
            let mut ours_args = vec!["pack", ours.to_str().unwrap(), "--before", &when_text];
            if !gc {
                ours_args.push("--no-gc");
            }
            let (code, _, err) = neofs(&ours_args);
            assert_eq!(code, 0, "{err}");
            assert_eq!(
                canonical(&ours, true),
                zodb_canonical(&theirs, true),
                "pack at {when} gc={gc}"
            );
            assert!(
                std::fs::read(&ours).unwrap() == std::fs::read(&theirs).unwrap(),
                "bytes differ at {when} gc={gc}"
            );
            let (code, out, err) = py("-ZODB.scripts.fstest", &[ours.to_str().unwrap()]);
            assert_eq!(code, 0, "{out}{err}");
        }
    }
}

#[test]
fn references_match_referencesf() {
    let Some(dir) = zodb_files() else { return };
    for name in ZODB_FILES {
        let path = dir.join(name);
        let theirs = py_ok("tool.py", &["refs", path.to_str().unwrap()]);
        let fs = FileStorage::open(&path, Options::default()).unwrap();
        let mut ours = String::new();
        let mut iter = fs.iter(None, None).unwrap();
        while let Some(txn) = iter.next_txn().unwrap() {
            for record in txn.records() {
                let record = record.unwrap();
                let Some(data) = record.data else { continue };
                let refs = pickle::references(&data).unwrap();
                let oids: Vec<String> = refs.iter().map(|r| dump::hex(&r.oid)).collect();
                ours.push_str(&format!(
                    "{} {} {}\n",
                    record.pos,
                    record.oid,
                    oids.join(" ")
                ));
            }
        }
        assert_eq!(ours, theirs, "{name}");
    }
}

#[test]
fn refs_is_identical_to_fsrefs() {
    let Some(dir) = zodb_files() else { return };
    for name in ZODB_FILES {
        let path = dir.join(name);
        let (_, theirs, err) = py("-ZODB.scripts.fsrefs", &[path.to_str().unwrap()]);
        assert!(err.is_empty(), "{err}");
        let (code, ours, _) = neofs(&["refs", path.to_str().unwrap()]);
        assert_eq!(ours, theirs, "{name}");
        assert_eq!(code, if theirs.is_empty() { 0 } else { 1 });
    }
}

#[test]
fn torn_tail_is_cut_like_zodb_does() {
    let Some(dir) = zodb_files() else { return };
    let work = scratch("torn");
    let clean = std::fs::read(dir.join("dangling.fs")).unwrap();
    let mut torn = clean.clone();
    torn.extend_from_slice(&clean[4..100]);
    for who in ["ours", "theirs"] {
        std::fs::write(work.join(format!("{who}.fs")), &torn).unwrap();
    }
    py_ok(
        "tool.py",
        &["loadall", work.join("theirs.fs").to_str().unwrap()],
    );
    drop(FileStorage::open(work.join("ours.fs"), Options::writable()).unwrap());
    assert_eq!(
        std::fs::read(work.join("ours.fs")).unwrap(),
        std::fs::read(work.join("theirs.fs")).unwrap()
    );
    assert_eq!(
        std::fs::read(work.join("ours.fs.tr0")).unwrap(),
        std::fs::read(work.join("theirs.fs.tr0")).unwrap()
    );
}
