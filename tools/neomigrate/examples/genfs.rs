//! Writes a Data.fs of about SIZE_MB megabytes for the migration benchmark (bench.sh):
//! transactions of 1 to 20 objects of ZODB-like records (pickle-shaped bytes that zlib
//! compresses about 3x, 100 B to 8 KB, a few of 64-256 KB), over a growing set of
//! objects, with metadata, and one undo every 200 transactions (backpointers). Written by
//! our FileStorage writer, which writes what ZODB writes (neo-filestorage's tests).
//!
//!     cargo run --release -p neomigrate --example genfs -- OUTPUT SIZE_MB

use std::path::PathBuf;

use neo_filestorage::{FileStorage, Oid, Options, Tid, TxnMeta};

/// A small deterministic generator (xorshift), so every run writes the same file.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const WORDS: [&str; 16] = [
    "title",
    "portal_type",
    "Person",
    "Organisation",
    "description",
    "2026-11-21",
    "EUR",
    "quantity",
    "price",
    "reference",
    "ERP5",
    "start_date",
    "validated",
    "draft",
    "Paris",
    "Lille",
];

/// Bytes shaped like a pickle of a persistent object's state.
fn record(rng: &mut Rng, size: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(size + 32);
    data.extend_from_slice(b"\x80\x03cerp5.Document\nDocument\nq\x00.\x80\x03}q\x01(");
    while data.len() < size {
        let word = WORDS[rng.below(WORDS.len() as u64) as usize];
        data.push(b'X');
        data.extend_from_slice(word.as_bytes());
        data.push(b'q');
        data.extend_from_slice(&rng.next().to_le_bytes()[..(rng.below(6) as usize)]);
    }
    data.truncate(size);
    data.extend_from_slice(b"u.");
    data
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(output), Some(size_mb)) = (args.next(), args.next()) else {
        eprintln!("usage: genfs OUTPUT SIZE_MB");
        std::process::exit(2);
    };
    let output = PathBuf::from(output);
    let size: u64 = size_mb.parse::<u64>().expect("SIZE_MB is a number") << 20;
    let _ = std::fs::remove_file(&output);
    let options = Options {
        sync: false,
        sidecar: false,
        ..Options::writable()
    };
    let mut fs = FileStorage::open(&output, options).expect("create the file");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut objects = 1u64;
    // 2020-01-01, then a transaction every few milliseconds.
    let mut tid = Tid::from_unix(1_577_836_800.0);
    let mut count = 0u64;
    while fs.end() < size {
        count += 1;
        tid = Tid(tid.0 + 1 + rng.below(1 << 22));
        let meta = TxnMeta {
            user: format!(" /erp5/user{}", rng.below(50)).into_bytes(),
            description: format!("/erp5/module/edit {count}").into_bytes(),
            extension: Vec::new(),
        };
        if count % 200 == 0 {
            // Undo the previous transaction: every record a backpointer.
            let last = fs.last_transaction();
            let mut txn = fs.begin(Some(tid), meta, b' ').expect("begin");
            txn.undo(last).expect("undo");
            txn.commit().expect("commit");
            continue;
        }
        let mut txn = fs.begin(Some(tid), meta, b' ').expect("begin");
        let n = 1 + rng.below(20);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..n {
            let oid = if rng.below(3) == 0 || objects < 10 {
                objects += 1;
                objects - 1
            } else {
                rng.below(objects)
            };
            if !seen.insert(oid) {
                continue;
            }
            let size = match rng.below(100) {
                0 => 65536 + rng.below(196608) as usize,
                1..=20 => 2048 + rng.below(6144) as usize,
                _ => 100 + rng.below(1900) as usize,
            };
            txn.restore(Oid(oid), Some(&record(&mut rng, size)), None)
                .expect("store");
        }
        txn.commit().expect("commit");
    }
    let end = fs.end();
    fs.close().expect("close");
    println!("{}: {count} transactions, {end} bytes", output.display());
}
