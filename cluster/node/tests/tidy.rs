//! Logic crates are sans-IO: no tokio, no sockets, no OS clock, no threads, no global RNG.
//! This reads their manifests and sources, so that a slip fails CI instead of a review.

use std::path::{Path, PathBuf};

const LOGIC_CRATES: &[&str] = &["node", "master", "storage", "admin", "client-core"];

const FORBIDDEN_IN_SOURCE: &[&str] = &[
    "tokio",
    "std::net::TcpStream",
    "std::net::TcpListener",
    "std::net::UdpSocket",
    "SystemTime::now",
    "Instant::now",
    "thread::spawn",
    "thread_rng",
    "rand::random",
];

fn cluster_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

#[test]
fn logic_crates_have_no_io_dependencies() {
    for name in LOGIC_CRATES {
        let dir = cluster_dir().join(name);
        let Ok(manifest) = std::fs::read_to_string(dir.join("Cargo.toml")) else {
            continue; // not written yet
        };
        // Only [dependencies] matters; dev-dependencies may use anything.
        let deps = manifest
            .split("\n[")
            .find(|section| section.starts_with("dependencies]"))
            .unwrap_or("");
        for bad in ["tokio", "neo-net", "socket2", "rand", "mio"] {
            assert!(
                !deps.lines().any(|l| l.trim_start().starts_with(bad)),
                "cluster/{name} depends on {bad}: logic crates must stay sans-IO"
            );
        }
        let mut files = Vec::new();
        rust_files(&dir.join("src"), &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            // Comments may name what the code must not use.
            let code: String = text
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            for bad in FORBIDDEN_IN_SOURCE {
                assert!(
                    !code.contains(bad),
                    "{} uses {bad}: logic crates must stay sans-IO",
                    file.display()
                );
            }
            assert!(
                text.starts_with("//!"),
                "{} must start with a //! comment",
                file.display()
            );
        }
    }
}
