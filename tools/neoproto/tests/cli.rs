//! Runs the `neoproto` binary against the protocol vectors: `decode` prints each vector's
//! JSON form, `encode` turns those JSON forms back into the exact bytes, and bad input is
//! reported with its byte offset and a failing exit status.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value as Json;

const VECTORS: &str = include_str!("../../../cluster/protocol/tests/data/protocol-vectors.json");

fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_neoproto"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("neoproto starts");
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    // Write from another thread so that a large output cannot block the pipe.
    let writer = std::thread::spawn(move || input.write_all(&stdin));
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    output
}

fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn packet_vectors() -> Vec<Json> {
    let vectors: Json = serde_json::from_str(VECTORS).unwrap();
    vectors["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["kind"] == "packet")
        .cloned()
        .collect()
}

/// Compares a printed packet with the expected JSON form; float `approx` values are
/// informative, so only their `f64` bit patterns are compared.
fn same_json(got: &Json, want: &Json) -> bool {
    match (got, want) {
        (Json::Object(g), Json::Object(w)) if w.contains_key("f64") => g.get("f64") == w.get("f64"),
        (Json::Object(g), Json::Object(w)) => {
            g.len() == w.len()
                && w.iter()
                    .all(|(k, v)| g.get(k).is_some_and(|gv| same_json(gv, v)))
        }
        (Json::Array(g), Json::Array(w)) => {
            g.len() == w.len() && g.iter().zip(w).all(|(g, w)| same_json(g, w))
        }
        _ => got == want,
    }
}

fn expected_form(vector: &Json) -> Json {
    serde_json::json!({
        "packet": vector["packet"], "code": vector["code"],
        "msg_id": vector["msg_id"], "args": vector["args"],
    })
}

#[test]
fn decode_prints_every_vector() {
    let vectors = packet_vectors();
    let mut stream = unhex("92a34e454f05");
    for v in &vectors {
        stream.extend(unhex(v["hex"].as_str().unwrap()));
    }
    let output = run(&["decode"], &stream);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = std::str::from_utf8(&output.stdout)
        .unwrap()
        .lines()
        .collect();
    assert_eq!(lines.len(), vectors.len());
    for (line, vector) in lines.iter().zip(&vectors) {
        let got: Json = serde_json::from_str(line).unwrap();
        assert!(
            same_json(&got, &expected_form(vector)),
            "{}:\n got {got}\nwant {}",
            vector["name"],
            expected_form(vector)
        );
    }
}

#[test]
fn encode_writes_every_vector() {
    let vectors = packet_vectors();
    let mut input = String::new();
    let mut expected = Vec::new();
    for v in &vectors {
        input.push_str(&expected_form(v).to_string());
        input.push('\n');
        expected.extend(unhex(v["hex"].as_str().unwrap()));
    }
    let output = run(&["encode"], input.as_bytes());
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.stdout, expected);
    // With the handshake, as hex text.
    let output = run(&["encode", "--handshake", "--hex"], input.as_bytes());
    let hex: String = expected.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        String::from_utf8(output.stdout).unwrap().trim(),
        format!("92a34e454f05{hex}")
    );
}

#[test]
fn live_captures_decode_through_the_binary() {
    let vectors: Json = serde_json::from_str(VECTORS).unwrap();
    for capture in vectors["live_captures"].as_array().unwrap() {
        let Some(packets) = capture["packets"].as_array() else {
            continue;
        };
        let output = run(
            &["decode", "--hex"],
            capture["hex"].as_str().unwrap().as_bytes(),
        );
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8(output.stdout).unwrap();
        let lines: Vec<Json> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), packets.len(), "{}", capture["name"]);
        for (got, want) in lines.iter().zip(packets) {
            assert!(
                same_json(got, &expected_form(want)),
                "{}: {got}",
                capture["name"]
            );
        }
    }
}

#[test]
fn errors_name_the_byte_offset() {
    // Handshake, a valid Ping, then an unknown packet code whose marker is at stream byte 12.
    let output = run(&["decode"], &unhex("92a34e454f05930402909300cd7fff90"));
    assert!(!output.status.success());
    assert_eq!(String::from_utf8(output.stdout).unwrap().lines().count(), 1);
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("at byte 12") && stderr.contains("unknown packet code"),
        "{stderr}"
    );
    // A truncated packet.
    let output = run(&["decode"], &unhex("93040290930402"));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(!output.status.success());
    assert!(
        stderr.contains("at byte 4") && stderr.contains("middle of a packet"),
        "{stderr}"
    );
    // Another protocol version.
    let output = run(&["decode"], &unhex("92a34e454f04"));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("at byte 5") && stderr.contains("version"),
        "{stderr}"
    );
    // encode: a wrong argument type names the line.
    let output = run(&["encode"], b"{\"packet\": \"Ping\", \"msg_id\": 1, \"args\": []}\n{\"packet\": \"AskObject\", \"msg_id\": 2, \"args\": [1, null, null]}\n");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(!output.status.success());
    assert!(
        stderr.contains("line 2") && stderr.contains("bin"),
        "{stderr}"
    );
}
