//! Runs the `neolog` binary on logs written by `neo_logdb::Logger` (plain, gzip, bzip2, xz,
//! compressed files without their extension), on NEO/py's logs (compared with what NEO/py's
//! own neolog printed for them), and on bad input. TZ is set to UTC for stable dates.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use neo_logdb::{Level, Logger};
use neo_protocol::{ErrorCode, Nid, NodeType, Packet, Ping};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn neolog(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_neolog"))
        .args(args)
        .env("TZ", "UTC")
        .output()
        .expect("run neolog")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A master log: messages before and after its NID, a packet, and an Error packet.
fn write_log(path: &Path, start: f64) {
    let mut logger = Logger::open(path).unwrap();
    let mut date = start;
    logger.set_clock(move || {
        date += 0.25;
        date
    });
    logger
        .log(Level::DEBUG, "master/app.rs", 10, "listening")
        .unwrap();
    logger
        .set_node("demo", Some(Nid::new(NodeType::Master, 1)))
        .unwrap();
    let peer = Some(Nid::new(NodeType::Admin, 1));
    let address = Some("127.0.0.1:38950".parse().unwrap());
    logger
        .packet(3, &Packet::Ping(Ping {}), false, peer, address)
        .unwrap();
    logger
        .packet(
            3,
            &Packet::error(ErrorCode::Denied, "no way"),
            true,
            peer,
            address,
        )
        .unwrap();
    logger
        .log(Level::INFO, "master/app.rs", 20, "two\nlines")
        .unwrap();
    logger.close().unwrap();
}

const EXPECTED: &str = "\
2023-11-14 22:13:20.2500 DEBUG     node       listening
2023-11-14 22:13:20.5000 INFO      node       Node ID: M1
2023-11-14 22:13:20.7500 PACKET    M1         #0x0003 Ping                           < A1 (127.0.0.1:38950)
2023-11-14 22:13:21.0000 PACKET    M1         #0x0003 Error                          > A1 (127.0.0.1:38950)
2023-11-14 22:13:21.0000 PACKET    M1         1 (b'no way')
2023-11-14 22:13:21.2500 INFO      M1         two
2023-11-14 22:13:21.2500 INFO      M1         lines
";

fn compress(plain: &Path, out: &Path, kind: &str) {
    let bytes = std::fs::read(plain).unwrap();
    let file = std::fs::File::create(out).unwrap();
    match kind {
        "gz" => {
            let mut e = flate2::write::GzEncoder::new(file, flate2::Compression::default());
            e.write_all(&bytes).unwrap();
            e.finish().unwrap();
        }
        "bz2" => {
            let mut e = bzip2::write::BzEncoder::new(file, bzip2::Compression::default());
            e.write_all(&bytes).unwrap();
            e.finish().unwrap();
        }
        "xz" => {
            let mut e = xz2::write::XzEncoder::new(file, 6);
            e.write_all(&bytes).unwrap();
            e.finish().unwrap();
        }
        other => panic!("no compressor {other}"),
    }
}

#[test]
fn reads_our_logs_plain_and_compressed() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("node.log");
    write_log(&plain, 1_700_000_000.0);
    let output = neolog(&[plain.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), EXPECTED);
    for kind in ["gz", "bz2", "xz"] {
        let packed = dir.path().join(format!("node.log.{kind}"));
        compress(&plain, &packed, kind);
        let output = neolog(&[packed.to_str().unwrap()]);
        assert!(output.status.success(), "{kind}: {}", stderr(&output));
        assert_eq!(stdout(&output), EXPECTED, "{kind}");
        // The content decides, not the name: the same data under a plain name.
        let disguised = dir.path().join(format!("{kind}-in-disguise"));
        std::fs::copy(&packed, &disguised).unwrap();
        let output = neolog(&["-n", "-", disguised.to_str().unwrap()]);
        assert!(output.status.success(), "{kind}: {}", stderr(&output));
        assert!(
            stdout(&output).contains("PACKET    #0x0003 Ping "),
            "{kind}"
        );
    }
}

#[test]
fn options_shape_the_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.log");
    write_log(&path, 1_700_000_000.0);
    let file = path.to_str().unwrap();
    let lines = stdout(&neolog(&["-d", "", "-C", file]));
    assert!(
        lines.starts_with("DEBUG     node       listening\n"),
        "{lines}"
    );
    assert!(
        lines.contains("PACKET    demo/M1    #0x0003 Ping"),
        "{lines}"
    );
    let lines = stdout(&neolog(&["-N", "-d", "%H:%M:%S", file]));
    assert!(
        lines.contains("22:13:20.7500 PACKET    node       #0x0003 Ping"),
        "{lines}"
    );
    let lines = stdout(&neolog(&["-n", "M1", "-a", file]));
    assert_eq!(lines.lines().count(), 5, "{lines}");
    assert!(!lines.contains("listening"));
    let lines = stdout(&neolog(&["-c", file]));
    assert!(
        lines.starts_with("\x1b[34m2023-11-14 22:13:20.2500 node       listening\x1b[39;49;0m\n"),
        "{lines:?}"
    );
}

#[test]
fn from_and_until_accept_numbers_and_dates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.log");
    write_log(&path, 1_700_000_000.0);
    let file = path.to_str().unwrap();
    let by_number = stdout(&neolog(&[
        "--from",
        "1700000000.6",
        "--until",
        "1700000001.1",
        file,
    ]));
    assert_eq!(by_number.lines().count(), 3, "{by_number}");
    assert!(by_number.starts_with("2023-11-14 22:13:20.7500 PACKET"));
    let by_date = stdout(&neolog(&[
        "--from",
        "2023-11-14 22:13:20.6",
        "--until",
        "2023-11-14T22:13:21.1",
        file,
    ]));
    assert_eq!(by_date, by_number);
    let with_offset = stdout(&neolog(&[
        "--from",
        "2023-11-14T23:13:20.6+01:00",
        "--until",
        "1700000001.1",
        file,
    ]));
    assert_eq!(with_offset, by_number);
    let relative = stdout(&neolog(&["--from", "-60", file]));
    assert_eq!(relative, "", "records from 2023 are older than a minute");
    let bad = neolog(&["--from", "next tuesday-ish", file]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("unrecognised date"),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn several_files_are_merged_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first.log");
    let second = dir.path().join("second.log.gz");
    write_log(&first, 1_700_000_000.0);
    let plain_second = dir.path().join("second.log");
    write_log(&plain_second, 1_700_000_000.125);
    compress(&plain_second, &second, "gz");
    let lines = stdout(&neolog(&[
        "-d",
        "%S",
        first.to_str().unwrap(),
        second.to_str().unwrap(),
    ]));
    let dates: Vec<&str> = lines.lines().map(|l| &l[..7]).collect();
    let mut sorted = dates.clone();
    sorted.sort();
    assert_eq!(dates, sorted, "{lines}");
    assert!(lines.contains("20.2500 DEBUG     first      listening"));
    assert!(lines.contains("20.3750 DEBUG     second     listening"));
    assert_eq!(lines.lines().count(), 14);
}

#[test]
fn flush_rules_decide_what_neolog_sees() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.log");
    let file = path.to_str().unwrap();
    let mut logger = Logger::open(&path).unwrap();
    logger.log(Level::INFO, "a.rs", 1, "quiet").unwrap();
    assert_eq!(stdout(&neolog(&[file])), "", "INFO stays in RAM");
    logger.log(Level::WARNING, "a.rs", 2, "loud").unwrap();
    let lines = stdout(&neolog(&["-d", "", file]));
    assert_eq!(
        lines,
        "INFO      node       quiet\nWARNING   node       loud\n"
    );
    logger.log(Level::DEBUG, "a.rs", 3, "at exit").unwrap();
    drop(logger);
    assert!(stdout(&neolog(&[file])).ends_with("DEBUG     node       at exit\n"));
}

#[test]
fn follow_mode_prints_records_as_they_are_flushed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.log");
    let mut logger = Logger::open(&path).unwrap();
    logger.log(Level::WARNING, "a.rs", 1, "before").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_neolog"))
        .args(["-f", "-s", "0.05", "-d", "", path.to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    logger.log(Level::INFO, "a.rs", 2, "after").unwrap();
    logger.flush().unwrap();
    let reader = std::thread::spawn({
        let mut out = child.stdout.take().unwrap();
        move || {
            let mut text = Vec::new();
            let _ = std::io::Read::read_to_end(&mut out, &mut text);
            String::from_utf8_lossy(&text).into_owned()
        }
    });
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: the child is ours and still running; SIGINT is how a user stops -f.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let status = child.wait().unwrap();
    let text = reader.join().unwrap();
    assert!(status.success(), "Ctrl-C ends follow mode cleanly");
    assert_eq!(
        text,
        "WARNING   live       before\nINFO      live       after\n"
    );
}

#[test]
fn neopy_logs_read_as_neopy_neolog_prints_them() {
    let cases: [(&[&str], &str); 4] = [
        (&["neopy-master.log"], "neopy-master.expected"),
        (&["-a", "neopy-master.log"], "neopy-master-a.expected"),
        (
            &[
                "-a",
                "neopy-master.log",
                "neopy-admin.log",
                "neopy-storage.log",
            ],
            "neopy-merged-a.expected",
        ),
        (
            &["-d", "", "-C", "neopy-storage.log"],
            "neopy-storage-C.expected",
        ),
    ];
    for (args, expected) in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_neolog"))
            .args(args)
            .current_dir(data(""))
            .env("TZ", "UTC")
            .output()
            .unwrap();
        assert!(output.status.success(), "{args:?}: {}", stderr(&output));
        let expected_text = std::fs::read_to_string(data(expected)).unwrap();
        assert_eq!(stdout(&output), expected_text, "{args:?}");
    }
    // Names come from the scanned NEO/py source: these codes are only in its registry.
    let text = stdout(&neolog(&[data("neopy-master.log").to_str().unwrap()]));
    for name in [
        "RequestIdentification",
        "AcceptIdentification",
        "NotifyNodeInformation",
        "AskRecovery",
    ] {
        assert!(text.contains(&format!(" {name} ")), "{name} resolved");
    }
    assert!(!text.contains("UnknownPacket"));
}

#[test]
fn bad_input_gets_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.log");
    std::fs::write(&text, "just text, definitely not a database file at all").unwrap();
    let output = neolog(&[text.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("not a SQLite database"),
        "{}",
        stderr(&output)
    );

    let missing = neolog(&["/nonexistent/neo.log"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("/nonexistent/neo.log"),
        "{}",
        stderr(&missing)
    );

    // A truncated gzip file: the decompressed prefix is still shown.
    let plain = dir.path().join("node.log");
    let mut logger = Logger::with_buffer(&plain, None).unwrap();
    let mut date = 1_700_000_000.0;
    logger.set_clock(move || {
        date += 1.0;
        date
    });
    for i in 0..3000 {
        logger
            .log(
                Level::INFO,
                "a.rs",
                i,
                &format!("record number {i} with some padding text"),
            )
            .unwrap();
    }
    drop(logger);
    let packed = dir.path().join("node.log.gz");
    compress(&plain, &packed, "gz");
    let bytes = std::fs::read(&packed).unwrap();
    let cut = dir.path().join("cut.log.gz");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let output = neolog(&["-d", "", cut.to_str().unwrap()]);
    assert!(
        stderr(&output).contains("truncated or corrupt"),
        "{}",
        stderr(&output)
    );
    let shown = stdout(&output);
    assert!(
        shown.starts_with("INFO      cut        record number 0 with"),
        "{shown:.200}"
    );

    // A log whose protocol row comes from a newer format: records shown, packets unnamed.
    let newer = dir.path().join("newer.log");
    write_log(&newer, 1_700_000_000.0);
    {
        let db = rusqlite::Connection::open(&newer).unwrap();
        let text = neo_logdb::protocol::description().replace("FORMAT = 1", "FORMAT = 9");
        let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
        e.write_all(text.as_bytes()).unwrap();
        db.execute("UPDATE protocol SET text = ?", [e.finish().unwrap()])
            .unwrap();
    }
    let output = neolog(&[newer.to_str().unwrap()]);
    assert!(
        stderr(&output).contains("format 9, newer than"),
        "{}",
        stderr(&output)
    );
    assert!(
        stdout(&output).contains("#0x0003 UnknownPacket[2]"),
        "{}",
        stdout(&output)
    );
    assert!(stdout(&output).contains("listening"));
}
