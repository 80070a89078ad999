//! `neoproto bench`: decode and encode rates of the codec for a small packet (AskObject) and
//! for AnswerObject with 4 KiB and 1 MiB of data, next to a plain memory copy of the same
//! bytes for scale. Decoding is measured the way a connection uses it: the stream is fed in
//! 64 KiB reads (one copy into the receive buffer), then packets are taken out of it.
//! This is a benchmark, not a test: it prints numbers and asserts nothing.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use neo_protocol::{
    encode_message, AnswerObject, AskObject, Bytes, Decoder, HandshakeMode, Oid, Packet, Tid,
};

const READ_SIZE: usize = 64 * 1024;

pub fn run(seconds: f64) -> Result<()> {
    let budget = Duration::from_secs_f64(seconds.max(0.05));
    println!(
        "{:<24} {:>9} {:>14} {:>12} {:>10}",
        "case", "packet B", "packets/s", "MB/s", "ns/packet"
    );
    let ask = Packet::AskObject(AskObject {
        oid: Oid(0x1234),
        at: None,
        before: Some(Tid(0x03f4_7f95_5777_7777)),
    });
    case("AskObject", &ask, 20_000, budget)?;
    for size in [4 * 1024, 1024 * 1024] {
        let data: Vec<u8> = (0..size).map(|i| (i * 7 + 3) as u8).collect();
        let answer = Packet::AnswerObject(AnswerObject {
            oid: Oid(0x1234),
            serial: Tid(0x03f4_7f95_5777_7777),
            next_serial: None,
            compression: Some(0),
            checksum: [0x5a; 20],
            data: Bytes::from(data),
            data_serial: None,
        });
        let count = (16 * 1024 * 1024 / size).max(4);
        case(
            &format!("AnswerObject {} KiB", size / 1024),
            &answer,
            count,
            budget,
        )?;
    }
    Ok(())
}

/// Measures one packet kind: a stream of `count` copies, decoded and encoded repeatedly.
fn case(label: &str, packet: &Packet, count: usize, budget: Duration) -> Result<()> {
    let mut stream = Vec::new();
    for msg_id in 0..count {
        encode_message(&mut stream, msg_id as u32, packet);
    }
    let packet_len = stream.len() / count;

    let decode = measure(budget, || {
        let mut decoder = Decoder::new(HandshakeMode::Skip);
        let mut decoded = 0usize;
        for read in stream.chunks(READ_SIZE) {
            decoder.feed(read);
            while let Some(message) = decoder.next_message().expect("valid stream") {
                black_box(&message);
                decoded += 1;
            }
        }
        decoded
    });
    ensure!(
        decode.items_per_run == count,
        "decoded {} of {count}",
        decode.items_per_run
    );

    let mut out = Vec::with_capacity(stream.len());
    let encode = measure(budget, || {
        out.clear();
        for msg_id in 0..count {
            encode_message(&mut out, msg_id as u32, black_box(packet));
        }
        black_box(&out);
        count
    });
    ensure!(out == stream, "encoding is not deterministic");

    let mut copy = vec![0u8; stream.len()];
    let memcpy = measure(budget, || {
        copy.copy_from_slice(black_box(&stream));
        black_box(&copy);
        count
    });

    for (what, m) in [
        ("decode", &decode),
        ("encode", &encode),
        ("memcpy", &memcpy),
    ] {
        let packets_per_s = m.items_per_second();
        println!(
            "{:<24} {:>9} {:>14.0} {:>12.1} {:>10.1}",
            format!("{label} {what}"),
            packet_len,
            packets_per_s,
            packets_per_s * packet_len as f64 / 1e6,
            1e9 / packets_per_s,
        );
    }
    Ok(())
}

struct Measure {
    items_per_run: usize,
    runs: u64,
    elapsed: Duration,
}

impl Measure {
    fn items_per_second(&self) -> f64 {
        (self.items_per_run as f64 * self.runs as f64) / self.elapsed.as_secs_f64()
    }
}

/// Runs `f` once to warm up, then as many times as fit in `budget`.
fn measure(budget: Duration, mut f: impl FnMut() -> usize) -> Measure {
    let items_per_run = f();
    let start = Instant::now();
    let mut runs = 0;
    while runs == 0 || start.elapsed() < budget {
        black_box(f());
        runs += 1;
    }
    Measure {
        items_per_run,
        runs,
        elapsed: start.elapsed(),
    }
}
