//! What `neomaster`, `neostorage` and `neoadmin` share around their own options: the
//! option tables, TLS option checks, the dynamic master list file, and the startup
//! sequence (options, logging, signals, bind, build the node, run it, exit with its code).

use std::net::SocketAddr;
use std::path::Path;

use neo_net::NetConfig;
use neo_node::Node;
use neo_protocol::Address;

use crate::driver::{install_shutdown_signals, Driver};
use crate::logging;
use crate::options::{self, Options, Spec};

/// A startup failure: printed alone on stderr, exit status 1 (tools.md 1.14).
#[derive(Debug)]
pub struct Fatal(pub String);

impl<E: std::fmt::Display> From<E> for Fatal {
    fn from(error: E) -> Fatal {
        Fatal(error.to_string())
    }
}

/// Parses the options of a daemon, exiting on usage (2) or file (1) errors.
pub fn parse_options(program: &'static str, about: &'static str, specs: &[Spec]) -> Options {
    match options::parse(program, about, specs, std::env::args_os()) {
        Ok(options) => options,
        Err(error) => error.exit(),
    }
}

/// The TLS options: all three or none (tools.md 1.1 point 7). TLS itself is not
/// implemented by `neo-net` yet, so asking for it is an error rather than a silent
/// plain-text cluster.
pub fn check_tls(options: &Options) -> Result<(), Fatal> {
    let given = ["ca", "cert", "key"]
        .iter()
        .filter(|name| options.path(name).is_some())
        .count();
    match given {
        0 => Ok(()),
        3 => Err(Fatal(
            "TLS (--ca/--cert/--key) is not supported yet by this implementation".into(),
        )),
        _ => Err(Fatal(
            "To enable encryption, 3 files must be provided: --ca, --cert and --key".into(),
        )),
    }
}

/// The masters to contact: `-m` plus the entries of the `-D` file, which is created empty
/// when missing (tools.md 1.11). Keeping the file up to date as masters come and go needs
/// the node's help and is not done yet.
pub fn masters(options: &Options) -> Result<Vec<Address>, Fatal> {
    let mut masters: Vec<Address> = options
        .addresses("masters")
        .map_err(|e| Fatal(format!("masters: {e}")))?
        .into_iter()
        .map(Address::from_socket_addr)
        .collect();
    if let Some(path) = options.path("dynamic-master-list") {
        for address in read_dynamic_master_list(path)? {
            if !masters.contains(&address) {
                masters.push(address);
            }
        }
    }
    Ok(masters)
}

/// Reads a JSON array of `[host, port]` pairs; creates the file as `[]` if missing.
pub fn read_dynamic_master_list(path: &Path) -> Result<Vec<Address>, Fatal> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(path, "[]")
                .map_err(|e| Fatal(format!("cannot create {}: {e}", path.display())))?;
            return Ok(Vec::new());
        }
        Err(e) => return Err(Fatal(format!("cannot read {}: {e}", path.display()))),
    };
    let bad = |why: &str| Fatal(format!("{}: {why}", path.display()));
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(&format!("not JSON: {e}")))?;
    let items = value
        .as_array()
        .ok_or_else(|| bad("expected a JSON array of [host, port] pairs"))?;
    items
        .iter()
        .map(|item| {
            let pair = item.as_array().filter(|pair| pair.len() == 2);
            let host = pair.and_then(|pair| pair[0].as_str());
            let port = pair
                .and_then(|pair| pair[1].as_u64())
                .and_then(|port| u16::try_from(port).ok());
            match (host, port) {
                (Some(host), Some(port)) => Ok(Address {
                    host: host.to_owned().into(),
                    port,
                }),
                _ => Err(bad(&format!("expected [host, port], found {item}"))),
            }
        })
        .collect()
}

/// Sets up logging and signals, binds `bind`, builds the node for the bound address with
/// `build`, runs it, and returns the process exit status.
pub fn run<N: Node>(
    options: &Options,
    cluster: &str,
    bind: SocketAddr,
    build: impl FnOnce(SocketAddr) -> Result<N, Fatal>,
) -> Result<i32, Fatal> {
    let logger = logging::init(options.verbose, options.path("logfile"))?;
    install_shutdown_signals()
        .map_err(|e| Fatal(format!("cannot install signal handlers: {e}")))?;
    let mut driver = Driver::bind(Some(bind), NetConfig::default())?;
    let bound = driver
        .local_addr()
        .ok_or_else(|| Fatal("no listening address".into()))?;
    if let Some(logger) = logger {
        driver.set_logger(logger, cluster);
    }
    tracing::info!(address = %bound, "listening");
    let mut node = build(bound)?;
    Ok(driver.run(&mut node))
}

/// Prints a fatal error and exits 1, or exits with the node's status.
pub fn exit(result: Result<i32, Fatal>) -> ! {
    match result {
        Ok(code) => std::process::exit(code),
        Err(Fatal(message)) => {
            eprintln!("{message}");
            std::process::exit(1)
        }
    }
}
