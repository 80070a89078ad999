//! Integration tests of neo-protocol: every vector produced by NEO/py decodes to the
//! expected value and re-encodes to the exact bytes; live captures decode as recorded; the
//! decoder gives the same packets whatever the split of its input; random packets round-trip;
//! and random or mutated input never panics.

use std::collections::BTreeSet;

use neo_protocol::json::{self, message_from_json, unhex, value_from_json, value_to_json};
use neo_protocol::*;
use serde_json::Value as Json;

const VECTORS: &str = include_str!("data/protocol-vectors.json");

fn vectors() -> Json {
    serde_json::from_str(VECTORS).expect("the vectors file is valid JSON")
}

fn bytes(hex: &str) -> Bytes {
    Bytes::from(unhex(hex).expect("vector hex"))
}

fn encode(message: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    encode_message(&mut out, message.msg_id, &message.packet);
    out
}

/// Decodes `hex` as one packet and checks it against the expected JSON form, then checks
/// that encoding both the decoded packet and the JSON form gives back the exact bytes.
fn check_packet(name: &str, expected: &Json, hex: &str) {
    let raw = bytes(hex);
    let message = decode_message(&raw).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(
        message.packet.name(),
        expected["packet"],
        "{name}: packet name"
    );
    assert_eq!(
        message.packet.code() as u64,
        expected["code"],
        "{name}: code"
    );
    assert_eq!(message.msg_id as u64, expected["msg_id"], "{name}: msg_id");
    let args: Vec<Json> = message
        .packet
        .args_value()
        .unwrap()
        .iter()
        .map(value_to_json)
        .collect();
    let expected_args = expected["args"].as_array().expect("args");
    assert_eq!(args.len(), expected_args.len(), "{name}: argument count");
    for (i, (got, want)) in args.iter().zip(expected_args).enumerate() {
        // `approx` of floats is informative only: compare values through our own reading.
        let got = value_from_json(got).unwrap();
        let want = value_from_json(want).unwrap_or_else(|e| panic!("{name}: arg {i}: {e}"));
        assert_eq!(got, want, "{name}: argument {i}");
    }
    assert_eq!(
        json::hex(&encode(&message)),
        hex,
        "{name}: re-encoding the decoded packet"
    );
    let from_json = message_from_json(expected).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(
        from_json, message,
        "{name}: JSON form builds the same packet"
    );
    assert_eq!(
        json::hex(&encode(&from_json)),
        hex,
        "{name}: encoding the JSON form"
    );
}

#[test]
fn every_vector_decodes_and_reencodes_exactly() {
    let vectors = vectors();
    let list = vectors["vectors"].as_array().unwrap();
    assert_eq!(list.len(), 197);
    let mut kinds_seen = BTreeSet::new();
    let mut counts = [0usize; 3];
    for vector in list {
        let name = vector["name"].as_str().unwrap();
        let hex = vector["hex"].as_str().unwrap();
        match vector["kind"].as_str().unwrap() {
            "handshake" => {
                assert_eq!(bytes(hex), &HANDSHAKE[..]);
                let value = value_from_json(&vector["value"]).unwrap();
                assert_eq!(json::hex(&value.to_bytes()), hex);
                assert_eq!(Value::from_bytes(&bytes(hex)).unwrap(), value);
                counts[0] += 1;
            }
            "value" => {
                let value =
                    Value::from_bytes(&bytes(hex)).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(value_to_json(&value), vector["value"], "{name}");
                assert_eq!(json::hex(&value.to_bytes()), hex, "{name}");
                counts[1] += 1;
            }
            "packet" => {
                check_packet(name, vector, hex);
                kinds_seen.insert(vector["packet"].as_str().unwrap().to_owned());
                counts[2] += 1;
            }
            other => panic!("unknown vector kind {other}"),
        }
    }
    assert_eq!(counts, [1, 34, 162]);
    // All 111 kinds are covered, and they are exactly our table.
    let ours: BTreeSet<String> = PACKET_TABLE.iter().map(|e| e.1.to_owned()).collect();
    assert_eq!(kinds_seen, ours);
    assert_eq!(PACKET_TABLE.len(), 111);
}

#[test]
fn codes_follow_the_definition_order_rule() {
    // Requests and notifications take their definition index; answers add RESPONSE_MASK.
    let mut index = 0u16;
    for &(code, name, kind) in PACKET_TABLE {
        match kind {
            PacketKind::Answer if name == "Error" => assert_eq!(code, RESPONSE_MASK),
            PacketKind::Answer => assert_eq!(code, index | RESPONSE_MASK, "{name}"),
            _ => {
                index += 1;
                assert_eq!(code, index, "{name}");
            }
        }
        if let PacketKind::Request { answer } = kind {
            assert_eq!(answer, code | RESPONSE_MASK, "{name}");
            assert_eq!(packet_kind(answer), Some(PacketKind::Answer), "{name}");
        }
    }
    assert_eq!(index, 0x49);
}

#[test]
fn live_captures_decode_as_recorded() {
    let vectors = vectors();
    for capture in vectors["live_captures"].as_array().unwrap() {
        let name = capture["name"].as_str().unwrap();
        let stream = bytes(capture["hex"].as_str().unwrap());
        let mut decoder = Decoder::new(if stream.starts_with(&HANDSHAKE) {
            HandshakeMode::Expect
        } else {
            HandshakeMode::Skip
        });
        decoder.feed(&stream);
        let mut decoded = Vec::new();
        while let Some(frame) = decoder
            .next_frame()
            .unwrap_or_else(|e| panic!("{name}: {e}"))
        {
            decoded.push(frame);
        }
        assert_eq!(decoder.buffered(), 0, "{name}: trailing bytes");
        let Some(packets) = capture["packets"].as_array() else {
            // Rejection probes: the answer is the handshake and at most one packet.
            assert!(decoder.handshake_done(), "{name}");
            assert!(decoded.len() <= 1, "{name}");
            for frame in &decoded {
                let message = frame.decode().unwrap();
                assert!(
                    matches!(
                        message.packet,
                        Packet::Error(_) | Packet::NotPrimaryMaster(_)
                    ),
                    "{name}: {message:?}"
                );
            }
            continue;
        };
        assert_eq!(decoded.len(), packets.len(), "{name}");
        for (frame, expected) in decoded.iter().zip(packets) {
            assert_eq!(
                json::hex(&frame.bytes),
                expected["hex"].as_str().unwrap(),
                "{name}"
            );
            check_packet(name, expected, expected["hex"].as_str().unwrap());
        }
    }
}

#[test]
fn rejection_probes_match_the_spec() {
    let vectors = vectors();
    let captures = vectors["live_captures"].as_array().unwrap();
    let find = |name: &str| {
        let capture = captures.iter().find(|c| c["name"] == name).unwrap();
        let mut decoder = Decoder::new(HandshakeMode::Expect);
        decoder.feed(&bytes(capture["hex"].as_str().unwrap()));
        decoder.next_message().unwrap().unwrap()
    };
    assert_eq!(
        find("reject/wrong-cluster-name").packet,
        Packet::error(ErrorCode::ProtocolError, &b"invalid cluster name"[..])
    );
    assert_eq!(
        find("reject/client-to-recovering-master").packet,
        Packet::error(ErrorCode::NotReady, &b"Retry Later"[..])
    );
}

/// Feeds `stream` in the pieces given by `cuts` and returns the messages.
fn decode_split(stream: &[u8], cuts: &[usize]) -> Vec<Message> {
    let mut decoder = Decoder::new(HandshakeMode::Expect);
    let mut messages = Vec::new();
    let mut start = 0;
    for &cut in cuts.iter().chain([stream.len()].iter()) {
        decoder.feed(&stream[start..cut]);
        start = cut;
        while let Some(message) = decoder.next_message().unwrap() {
            messages.push(message);
        }
    }
    assert_eq!(decoder.buffered(), 0);
    messages
}

fn all_vector_messages() -> Vec<Message> {
    let vectors = vectors();
    vectors["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["kind"] == "packet")
        .map(|v| decode_message(&bytes(v["hex"].as_str().unwrap())).unwrap())
        .collect()
}

#[test]
fn any_split_of_a_stream_gives_the_same_packets() {
    let messages = all_vector_messages();
    let mut stream = HANDSHAKE.to_vec();
    for message in &messages {
        encode_message(&mut stream, message.msg_id, &message.packet);
    }
    // Byte by byte, then every two-piece split of a prefix, then random splits.
    let one_by_one: Vec<usize> = (1..stream.len()).collect();
    assert_eq!(decode_split(&stream, &one_by_one), messages);
    let prefix_len = stream.len().min(400);
    let prefix_messages = {
        let mut decoder = Decoder::new(HandshakeMode::Expect);
        decoder.feed(&stream[..prefix_len]);
        let mut out = Vec::new();
        while let Some(m) = decoder.next_message().unwrap() {
            out.push(m);
        }
        out
    };
    for cut in 0..=prefix_len {
        let mut decoder = Decoder::new(HandshakeMode::Expect);
        let mut out = Vec::new();
        decoder.feed(&stream[..cut]);
        while let Some(m) = decoder.next_message().unwrap() {
            out.push(m);
        }
        decoder.feed(&stream[cut..prefix_len]);
        while let Some(m) = decoder.next_message().unwrap() {
            out.push(m);
        }
        assert_eq!(out, prefix_messages, "cut at {cut}");
    }
    let mut rng = Rng::new(0x5eed_0001);
    for _ in 0..200 {
        let mut cuts: Vec<usize> = (0..rng.below(40))
            .map(|_| rng.below(stream.len() as u64) as usize)
            .collect();
        cuts.sort_unstable();
        assert_eq!(decode_split(&stream, &cuts), messages, "cuts {cuts:?}");
    }
}

// ---------------------------------------------------------------------------------------
// Random packets: built from the generic form with random values of the right types,
// obtained by mutating the values of the vectors (every argument type occurs there).

/// A small deterministic PRNG (xorshift64*), so that failures replay from the seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

/// Replaces a value by a random one of the same shape: same type, other contents, other
/// lengths for bins, arrays and maps of homogeneous items.
fn mutate(value: &Value, rng: &mut Rng) -> Value {
    match value {
        Value::Int(v) => {
            // Stay within the same sign and a width that still fits the field: pick a value
            // no larger in magnitude.
            if *v > 0 {
                Value::Int(rng.below(*v as u64 + 1) as i128)
            } else {
                Value::Int(*v)
            }
        }
        Value::Bool(_) => Value::Bool(rng.below(2) == 1),
        Value::F64(_) => Value::F64(f64::from_bits(rng.next())),
        Value::Bin(b) if b.len() == 8 || b.len() == 20 => Value::Bin(
            (0..b.len())
                .map(|_| rng.next() as u8)
                .collect::<Vec<u8>>()
                .into(),
        ),
        Value::Bin(_) => {
            let len = match rng.below(4) {
                0 => 0,
                1 => rng.below(300),
                2 => 65_536 + rng.below(10),
                _ => rng.below(20),
            };
            Value::Bin(
                (0..len)
                    .map(|_| rng.next() as u8)
                    .collect::<Vec<u8>>()
                    .into(),
            )
        }
        Value::Array(items) if !items.is_empty() && is_list(items) => {
            let len = rng.below(20) as usize;
            Value::Array(
                (0..len)
                    .map(|_| mutate(&items[rng.below(items.len() as u64) as usize], rng))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(|i| mutate(i, rng)).collect()),
        Value::Map(pairs) => Value::Map(
            pairs
                .iter()
                .map(|(k, v)| (mutate(k, rng), mutate(v, rng)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Whether an array's items all have the same encoded kind (a list, not a tuple).
fn is_list(items: &[Value]) -> bool {
    let kind = |v: &Value| std::mem::discriminant(v);
    items.len() > 1
        && items.iter().all(|i| kind(i) == kind(&items[0]))
        && items
            .iter()
            .all(|i| !matches!(i, Value::Bin(b) if b.len() != 8))
}

#[test]
fn random_packets_round_trip() {
    let messages = all_vector_messages();
    let mut rng = Rng::new(0x5eed_0002);
    let mut checked = 0;
    for round in 0..3000 {
        let base = &messages[rng.below(messages.len() as u64) as usize];
        let args: Vec<Value> = base
            .packet
            .args_value()
            .unwrap()
            .iter()
            .map(|a| mutate(a, &mut rng))
            .collect();
        // A mutation may break a field's type (e.g. an int too large for u8): skip those;
        // what is built must round-trip exactly.
        let Ok(packet) = Packet::from_args_value(base.packet.code(), &args) else {
            continue;
        };
        let message = Message {
            msg_id: rng.next() as u32,
            packet,
        };
        let encoded = encode(&message);
        let decoded = decode_message(&Bytes::from(encoded.clone()))
            .unwrap_or_else(|e| panic!("round {round}: {e}: {message:?}"));
        assert_eq!(decoded.msg_id, message.msg_id);
        assert_eq!(
            format!("{:?}", decoded.packet),
            format!("{:?}", message.packet),
            "round {round}"
        );
        assert_eq!(encode(&decoded), encoded, "round {round}");
        let line = json::message_to_json_line(&decoded).unwrap();
        let from_line = message_from_json(&serde_json::from_str(&line).unwrap()).unwrap();
        assert_eq!(encode(&from_line), encoded, "round {round}: through JSON");
        checked += 1;
    }
    assert!(checked > 2000, "only {checked} random packets were valid");
}

#[test]
fn typed_values_have_the_documented_forms() {
    let mut out = Vec::new();
    encode_message(&mut out, 4, &Packet::Ping(Ping {}));
    assert_eq!(out, [0x93, 0x04, 0x02, 0x90]);
    assert_eq!(Nid::new(NodeType::Master, 1), Nid(-268435455));
    assert_eq!(Nid::new(NodeType::Admin, 1).to_string(), "A1");
    assert_eq!(Nid(1).to_string(), "S1");
    let address = Address::from_socket_addr("[::1]:21100".parse().unwrap());
    assert_eq!(&address.host[..], b"::1");
    assert_eq!(
        address.to_socket_addr(),
        Some("[::1]:21100".parse().unwrap())
    );
    assert_eq!(address.to_string(), "[::1]:21100");
}

#[test]
fn bad_packets_name_their_offset() {
    // Unknown code 0x4a after a handshake: the error points at the code byte (offset 8).
    let mut decoder = Decoder::new(HandshakeMode::Expect);
    decoder.feed(&HANDSHAKE);
    decoder.feed(&[0x93, 0x00, 0x4a, 0x90]);
    let err = decoder.next_message().unwrap_err();
    assert_eq!(err.kind, DecodeErrorKind::UnknownPacketCode(0x4a));
    assert_eq!(err.offset, 8);
    // A TID of 7 bytes in AskObject.
    let raw = Bytes::from_static(&[
        0x93, 0x01, 0x20, 0x93, 0xc4, 0x07, 0, 0, 0, 0, 0, 0, 0, 0xc0, 0xc0,
    ]);
    let err = decode_message(&raw).unwrap_err();
    assert_eq!(
        err.kind,
        DecodeErrorKind::BinLength {
            expected: 8,
            found: 7
        }
    );
    assert_eq!(err.offset, 4);
    // An unknown ext type inside NotifyClusterInformation.
    let raw = Bytes::from_static(&[0x93, 0x01, 0x2d, 0x91, 0xd4, 0x09, 0x01]);
    let err = decode_message(&raw).unwrap_err();
    assert_eq!(err.kind, DecodeErrorKind::UnknownExtType(9));
    // Wrong argument count.
    let raw = Bytes::from_static(&[0x93, 0x01, 0x02, 0x91, 0xc0]);
    assert!(matches!(
        decode_message(&raw).unwrap_err().kind,
        DecodeErrorKind::ArgumentCount { .. }
    ));
    // A str where NEO wants bin (the cluster name of RequestIdentification).
    let raw = Bytes::from_static(&[
        0x93, 0x00, 0x01, 0x96, 0xd4, 0x04, 0x02, 0xc0, 0xc0, 0xa1, b'x', 0xc0, 0x80,
    ]);
    assert!(matches!(
        decode_message(&raw).unwrap_err().kind,
        DecodeErrorKind::TypeMismatch { .. }
    ));
}

// ---------------------------------------------------------------------------------------
// Bounded fuzzing on stable: the same entry point as the cargo-fuzz target.

#[test]
fn random_and_mutated_input_never_panics() {
    let messages = all_vector_messages();
    let mut valid = HANDSHAKE.to_vec();
    for message in &messages {
        encode_message(&mut valid, message.msg_id, &message.packet);
    }
    let iterations: u64 = std::env::var("NEO_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let mut rng = Rng::new(0x5eed_0003);
    let mut outcomes = [0usize; 2];
    for _ in 0..iterations {
        let input: Vec<u8> = match rng.below(3) {
            // Pure noise, sometimes after a valid handshake.
            0 => {
                let mut v = if rng.below(2) == 0 {
                    HANDSHAKE.to_vec()
                } else {
                    Vec::new()
                };
                v.extend((0..rng.below(64)).map(|_| rng.next() as u8));
                v
            }
            // A valid stream with a few bytes flipped, inserted or removed.
            _ => {
                let start = rng.below(valid.len() as u64 / 2) as usize;
                let mut v = valid[..(start + rng.below(2000) as usize).min(valid.len())].to_vec();
                for _ in 0..=rng.below(4) {
                    if v.is_empty() {
                        break;
                    }
                    let at = rng.below(v.len() as u64) as usize;
                    match rng.below(3) {
                        0 => v[at] = rng.next() as u8,
                        1 => v.insert(at, rng.next() as u8),
                        _ => {
                            v.remove(at);
                        }
                    }
                }
                v
            }
        };
        let ok = neo_protocol::codec::fuzz_decode(&input, rng.below(8) as usize + 1);
        outcomes[ok as usize] += 1;
    }
    // Both outcomes must occur, or the mutations are not exercising the decoder.
    assert!(outcomes[0] > 0 && outcomes[1] > 0, "{outcomes:?}");
}

// ---------------------------------------------------------------------------------------
// Tidy: house rules that are cheap to check mechanically.

#[test]
fn tidy_files_start_with_doc_comments_and_protocol_stays_pure() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    let mut stack = vec![
        root.join("src"),
        root.join("tests"),
        root.join("fuzz/fuzz_targets"),
    ];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                assert!(
                    text.starts_with("//!"),
                    "{} must start with a //! comment",
                    path.display()
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 8, "only {checked} files found");
    // No I/O runtime in the protocol crate, not even indirectly through a feature.
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    for forbidden in ["tokio", "mio", "async-std"] {
        assert!(
            !manifest.contains(forbidden),
            "neo-protocol must not depend on {forbidden}"
        );
    }
}
