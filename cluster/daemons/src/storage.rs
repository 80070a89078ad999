//! `neostorage` (tools.md 1.3): its options, the backend chosen by `-a`, and the
//! [`neo_storage::Storage`] built from them. Only the SQLite backend exists so far.

use std::os::unix::fs::MetadataExt;

use neo_protocol::{Address, Bytes};
use neo_storage::{Config, Storage};
use neo_storage_sqlite::{OpenOptions, SqliteBackend};

use crate::daemon::{self, Fatal};
use crate::driver::random_seed;
use crate::options::{server_specs, Kind, Options, Spec};

pub const ABOUT: &str = "Run a NEO storage node";

/// The `-a` choices NEO/py accepts.
pub const ADAPTERS: &[&str] = &["Importer", "MySQL", "MySQLdb", "PyMySQL", "SQLite"];

/// Every option of `neostorage`.
pub fn specs() -> Vec<Spec> {
    let mut specs = server_specs("storage", "127.0.0.1:10000", "127.0.0.1");
    specs.extend([
        Spec::new(Some('a'), "adapter", Kind::Text, "database adapter to use")
            .default("MySQL")
            .choices(ADAPTERS),
        Spec::new(
            Some('d'),
            "database",
            Kind::Text,
            "database connection string (SQLite: a path or a file: URI)",
        )
        .required(),
        Spec::new(
            Some('w'),
            "wait",
            Kind::Float,
            "seconds to wait for the backend to be available before failing (-1: forever; MySQL)",
        )
        .default("0"),
        Spec::new(
            None,
            "disable-pack",
            Kind::Bool,
            "do not process any pack order",
        ),
        Spec::new(
            None,
            "disable-drop-partitions",
            Kind::Bool,
            "do not delete data of discarded cells",
        ),
        Spec::new(
            None,
            "new-nid",
            Kind::Bool,
            "ask a new NID to the cluster, record it in the database and exit",
        ),
        Spec::new(
            Some('i'),
            "nid",
            Kind::Int,
            "specify a NID to use for this process (testing purpose)",
        ),
        Spec::new(
            Some('e'),
            "engine",
            Kind::Text,
            "database engine (MySQL only)",
        ),
        Spec::new(
            None,
            "dedup",
            Kind::Bool,
            "enable deduplication of data when creating a new database",
        ),
        Spec::new(
            None,
            "reset",
            Kind::Bool,
            "remove an existing database if any, and exit",
        ),
    ]);
    specs
}

pub fn main() -> ! {
    let options = daemon::parse_options("neostorage", ABOUT, &specs());
    daemon::exit(run(&options))
}

fn run(options: &Options) -> Result<i32, Fatal> {
    daemon::check_tls(options)?;
    let adapter = options.text("adapter").unwrap_or("MySQL");
    match adapter {
        "SQLite" => {}
        "Importer" => {
            return Err(Fatal(
                "the Importer backend is not built yet (use -a SQLite)".into(),
            ))
        }
        _ => {
            return Err(Fatal(format!(
                "MySQL backend not built yet (-a {adapter}); use -a SQLite"
            )))
        }
    }
    if options.flag("new-nid") {
        return Err(Fatal("--new-nid is not supported yet".into()));
    }
    if options.flag("disable-pack") {
        return Err(Fatal("--disable-pack is not supported yet".into()));
    }
    let database = options.text("database").unwrap_or_default().to_owned();
    let open_options = OpenOptions {
        dedup: options.flag("dedup"),
        reset: options.flag("reset"),
    };
    let backend =
        SqliteBackend::open(&database, open_options).map_err(|e| Fatal(format!("error: {e}")))?;
    if options.flag("reset") {
        backend.close().map_err(|e| Fatal(format!("error: {e}")))?;
        return Ok(0);
    }
    let devpath = topology_path(backend.path());
    let cluster = options.text("cluster").unwrap_or_default().to_owned();
    let masters = daemon::masters(options)?;
    let bind = options
        .address("bind")
        .ok_or_else(|| Fatal("no bind address".into()))?;
    let name = cluster.clone();
    daemon::run(options, &name, bind, move |bound| {
        let config = Config {
            cluster,
            address: Address::from_socket_addr(bound),
            masters,
            nid: options.nid("nid"),
            devpath,
            seed: random_seed(),
            disable_drop_partitions: options.flag("disable-drop-partitions"),
        };
        Storage::new(config, backend).map_err(|e| Fatal(format!("error: {e}")))
    })
}

/// Where the data lives, for the master's replica placement: the host name and the device
/// of the database file, as NEO/py sends them.
fn topology_path(database_path: &str) -> Vec<Bytes> {
    let mut name = [0u8; 256];
    // SAFETY: gethostname writes at most `name.len()` bytes into the buffer.
    let status = unsafe { libc::gethostname(name.as_mut_ptr().cast(), name.len()) };
    let host = if status == 0 {
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        String::from_utf8_lossy(&name[..end]).into_owned()
    } else {
        String::new()
    };
    let device = std::fs::metadata(database_path)
        .map(|m| m.dev().to_string())
        .unwrap_or_default();
    vec![Bytes::from(host), Bytes::from(device)]
}
