//! Benchmark (not a test): full scan, index build and iterator speed on a
//! generated FileStorage, next to ZODB's Python iterator and `cat`.
//!
//! `cargo bench -p neo-filestorage --bench scan` generates the file at
//! bench time (size from NEO_BENCH_MB, default 1024) under
//! target/bench-data; `NEO_PYTHON` (a Python with ZODB) adds the ZODB
//! figures. The page cache is warm for every run (each is preceded by a
//! `cat` of the file).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use neo_filestorage::format::status;
use neo_filestorage::{FileStorage, Oid, Options, Scanner, Strictness, TxnMeta};

fn main() {
    let megabytes: u64 = std::env::var("NEO_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-data");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("bench-v2-{megabytes}M.fs"));
    let (transactions, records) = generate(&path, megabytes << 20);
    let size = std::fs::metadata(&path).unwrap().len();
    println!(
        "file: {} ({:.1} MB, {transactions} transactions, {records} records)",
        path.display(),
        mb(size)
    );

    let cat = time(|| {
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("cat '{}' > /dev/null", path.display()))
            .status()
            .unwrap();
        assert!(status.success());
    });
    let cat = best_of(3, || {
        time(|| {
            Command::new("sh")
                .arg("-c")
                .arg(format!("cat '{}' > /dev/null", path.display()))
                .status()
                .unwrap();
        })
    })
    .min(cat);

    let scan = best_of(3, || time(|| full_scan(&path, records)));
    let index = best_of(3, || {
        time(|| {
            let fs = FileStorage::open(
                &path,
                Options {
                    sidecar: false,
                    ..Options::default()
                },
            )
            .unwrap();
            assert_eq!(fs.scanned_bytes(), size - 4);
        })
    });
    let storage = FileStorage::open(
        &path,
        Options {
            sidecar: false,
            ..Options::default()
        },
    )
    .unwrap();
    let iterator = best_of(3, || time(|| storage_iterator(&storage, records)));

    println!();
    println!(
        "{:<44} {:>9} {:>10} {:>12}",
        "", "seconds", "MB/s", "records/s"
    );
    let row = |name: &str, secs: f64| {
        println!(
            "{name:<44} {secs:>9.3} {:>10.0} {:>12.0}",
            mb(size) / secs,
            records as f64 / secs
        );
    };
    row("cat file > /dev/null", cat);
    row("neo full scan (Scanner, every record's data)", scan);
    row("neo FileStorage::iter (resolves backpointers)", iterator);
    row("neo index build (FileStorage::open)", index);
    let zodb = std::env::var_os("NEO_PYTHON").map(|python| {
        let secs = best_of(1, || {
            time(|| zodb_iterator(Path::new(&python), &path, records))
        });
        row("ZODB FileIterator (Python)", secs);
        secs
    });
    println!();
    println!(
        "full scan vs cat:            {:.2}x cat's throughput (target >= 0.5)",
        cat / scan
    );
    if let Some(zodb) = zodb {
        println!(
            "full scan vs ZODB iterator:  {:.1}x faster (target >= 10)",
            zodb / scan
        );
        println!(
            "iterator vs ZODB iterator:   {:.1}x faster",
            zodb / iterator
        );
    } else {
        println!("(set NEO_PYTHON to a Python with ZODB to compare with ZODB's iterator)");
    }
    println!(
        "index build:                 {:.2} M records/s (target >= 1)",
        records as f64 / index / 1e6
    );
}

/// Writes a file of about `target` bytes with our writer: transactions of
/// 1 to 20 records, pickles of 40 bytes to 4 KiB (and a 1 MiB one now and
/// then), objects rewritten many times. Reused when already there.
fn generate(path: &Path, target: u64) -> (u64, u64) {
    let counts = PathBuf::from(format!("{}.counts", path.display()));
    if let Ok(text) = std::fs::read_to_string(&counts) {
        let mut parts = text.split_whitespace().map(|p| p.parse::<u64>().unwrap());
        if let (Some(t), Some(r)) = (parts.next(), parts.next()) {
            if path.exists() {
                return (t, r);
            }
        }
    }
    let _ = std::fs::remove_file(path);
    let mut fs = FileStorage::open(
        path,
        Options {
            sync: false,
            sidecar: false,
            ..Options::writable()
        },
    )
    .unwrap();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let payload: Vec<u8> = (0..(1u32 << 20) + 4096)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let (mut transactions, mut records) = (0u64, 0u64);
    let mut oids = 1u64;
    let started = Instant::now();
    while fs.end() < target {
        let meta = TxnMeta {
            user: b"/ bench".to_vec(),
            description: format!("txn {transactions}").into_bytes(),
            extension: vec![],
        };
        let mut txn = fs.begin(None, meta, status::NORMAL).unwrap();
        let n = 1 + next() % 20;
        let mut used = std::collections::HashSet::new();
        for _ in 0..n {
            let oid = if next() % 4 == 0 || oids < 100 {
                oids += 1;
                oids - 1
            } else {
                next() % oids
            };
            if !used.insert(oid) {
                continue;
            }
            // Sizes as in a typical Zope/ERP5 database: mostly small
            // pickles, some buckets of a few KiB, rare large objects.
            let len = match next() % 10_000 {
                0 => 1 << 20,
                1..=50 => 65536,
                51..=2000 => 600 + (next() % 3496) as usize,
                _ => 40 + (next() % 560) as usize,
            };
            let start = (next() % 4096) as usize;
            txn.restore(Oid(oid), Some(&payload[start..start + len]), None)
                .unwrap();
            records += 1;
        }
        txn.commit().unwrap();
        transactions += 1;
    }
    fs.close().unwrap();
    eprintln!(
        "generated {} in {:.1}s",
        path.display(),
        started.elapsed().as_secs_f64()
    );
    std::fs::write(&counts, format!("{transactions} {records}")).unwrap();
    (transactions, records)
}

fn full_scan(path: &Path, records: u64) {
    let mut scanner = Scanner::open(path, 4, Strictness::Open).unwrap();
    let (mut seen, mut checksum) = (0u64, 0u64);
    while let Some(txn) = scanner.next_txn().unwrap() {
        for record in txn.records() {
            seen += 1;
            if let Some(data) = record.data {
                checksum = checksum
                    .wrapping_add(data.len() as u64)
                    .wrapping_add(data[data.len() - 1] as u64);
            }
        }
    }
    assert_eq!(seen, records);
    std::hint::black_box(checksum);
}

fn storage_iterator(fs: &FileStorage, records: u64) {
    let mut iter = fs.iter(None, None).unwrap();
    let mut seen = 0u64;
    while let Some(txn) = iter.next_txn().unwrap() {
        for record in txn.records() {
            let record = record.unwrap();
            seen += 1;
            std::hint::black_box(record.data.as_ref().map(|d| d.len()));
        }
    }
    assert_eq!(seen, records);
}

fn zodb_iterator(python: &Path, path: &Path, records: u64) {
    let script = "import sys\nfrom ZODB.FileStorage import FileIterator\nn = 0\n\
                  for t in FileIterator(sys.argv[1]):\n    for r in t:\n        n += 1; len(r.data)\nprint(n)\n";
    let out = Command::new(python)
        .args(["-c", script, path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        records.to_string()
    );
}

fn time(f: impl FnOnce()) -> f64 {
    let start = Instant::now();
    f();
    start.elapsed().as_secs_f64()
}

fn best_of(n: usize, mut f: impl FnMut() -> f64) -> f64 {
    (0..n).map(|_| f()).fold(f64::INFINITY, f64::min)
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}
