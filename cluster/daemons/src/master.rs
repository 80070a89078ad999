//! `neomaster` (tools.md 1.2): its options, their validation with NEO/py's messages, and
//! the [`neo_master::Master`] built from them.

use neo_master::{Config, Master};
use neo_protocol::Address;

use crate::daemon::{self, Fatal};
use crate::driver::random_seed;
use crate::options::{server_specs, Kind, Options, Spec};

pub const ABOUT: &str = "Run a NEO master node";

/// Every option of `neomaster`.
pub fn specs() -> Vec<Spec> {
    let mut specs = server_specs("master", "", "127.0.0.1:10000");
    specs.extend([
        Spec::new(
            Some('A'),
            "autostart",
            Kind::Int,
            "start a new cluster automatically once this many storage nodes are pending",
        ),
        Spec::new(
            Some('C'),
            "upstream-cluster",
            Kind::Text,
            "the name of the cluster to back up",
        ),
        Spec::new(
            Some('M'),
            "upstream-masters",
            Kind::Addresses,
            "the master nodes of the cluster to back up",
        ),
        Spec::new(
            Some('B'),
            "backup",
            Kind::Bool,
            "go straight to backup mode if the database is empty",
        ),
        Spec::new(
            Some('i'),
            "nid",
            Kind::Int,
            "specify a NID to use for this process (testing purpose)",
        ),
        Spec::new(Some('r'), "replicas", Kind::Int, "replicas number").default("0"),
        Spec::new(Some('p'), "partitions", Kind::Int, "partitions number").default("100"),
    ]);
    specs
}

/// The master's configuration from its options and bound address, or NEO/py's message
/// for what it refuses.
pub fn config(options: &Options, address: Address, seed: u64) -> Result<Config, Fatal> {
    let cluster = options.text("cluster").unwrap_or_default().to_owned();
    let replicas = options.int("replicas").unwrap_or(0);
    let partitions = options.int("partitions").unwrap_or(100);
    if replicas < 0 {
        return Err(Fatal("replicas must be a positive integer".into()));
    }
    if partitions <= 0 {
        return Err(Fatal("partitions must be more than zero".into()));
    }
    let replicas = u32::try_from(replicas).map_err(|_| Fatal("replicas: too large".into()))?;
    let partitions =
        u32::try_from(partitions).map_err(|_| Fatal("partitions: too large".into()))?;
    let upstream = options.text("upstream-cluster");
    if upstream == Some(cluster.as_str()) {
        return Err(Fatal(
            "upstream cluster name must be different from cluster name".into(),
        ));
    }
    if options.flag("backup") && upstream.is_none() {
        return Err(Fatal(
            "No upstream cluster to backup defined in configuration".into(),
        ));
    }
    if upstream.is_some() {
        return Err(Fatal("backup clusters are not supported yet".into()));
    }
    let autostart = match options.int("autostart") {
        Some(n) => Some(
            u32::try_from(n).map_err(|_| Fatal("autostart must be a positive integer".into()))?,
        ),
        None => None,
    };
    Ok(Config {
        cluster,
        address,
        masters: daemon::masters(options)?,
        partitions,
        replicas,
        autostart,
        nid: options.nid("nid"),
        seed,
    })
}

/// The whole program; returns the exit status.
pub fn main() -> ! {
    let options = daemon::parse_options("neomaster", ABOUT, &specs());
    daemon::exit(run(&options))
}

fn run(options: &Options) -> Result<i32, Fatal> {
    daemon::check_tls(options)?;
    // Validate before binding, so that a bad configuration fails without side effects.
    config(
        options,
        Address::from_socket_addr(([127, 0, 0, 1], 0).into()),
        0,
    )?;
    let cluster = options.text("cluster").unwrap_or_default().to_owned();
    let bind = options
        .address("bind")
        .ok_or_else(|| Fatal("no bind address".into()))?;
    daemon::run(options, &cluster, bind, |bound| {
        let config = config(options, Address::from_socket_addr(bound), random_seed())?;
        tracing::info!(
            partitions = config.partitions,
            replicas = config.replicas,
            name = %config.cluster,
            "configuration"
        );
        Ok(Master::new(config))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options;

    fn check(args: &[&str]) -> Result<Config, String> {
        let mut argv = vec!["neomaster"];
        argv.extend_from_slice(args);
        let options =
            options::parse("neomaster", ABOUT, &specs(), argv).map_err(|e| format!("{e:?}"))?;
        config(
            &options,
            Address::from_socket_addr(([127, 0, 0, 1], 5).into()),
            1,
        )
        .map_err(|e| e.0)
    }

    #[test]
    fn validation_messages_are_neo_py_s() {
        assert_eq!(
            check(&["-c", "x", "-r", "-1"]).unwrap_err(),
            "replicas must be a positive integer"
        );
        assert_eq!(
            check(&["-c", "x", "-p", "0"]).unwrap_err(),
            "partitions must be more than zero"
        );
        assert_eq!(
            check(&["-c", "x", "-B"]).unwrap_err(),
            "No upstream cluster to backup defined in configuration"
        );
        assert_eq!(
            check(&["-c", "x", "-C", "x"]).unwrap_err(),
            "upstream cluster name must be different from cluster name"
        );
    }

    #[test]
    fn config_from_options() {
        let config = check(&[
            "-c",
            "prod",
            "-p",
            "12",
            "-r",
            "1",
            "-A",
            "2",
            "-i",
            "-268435455",
            "-m",
            "127.0.0.1:10001",
        ])
        .unwrap();
        assert_eq!(config.cluster, "prod");
        assert_eq!(config.partitions, 12);
        assert_eq!(config.replicas, 1);
        assert_eq!(config.autostart, Some(2));
        assert_eq!(config.nid.map(|n| n.to_string()), Some("M1".to_owned()));
        assert_eq!(
            config
                .masters
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>(),
            ["127.0.0.1:10001"]
        );
        let config = check(&["-c", "prod"]).unwrap();
        assert_eq!(
            (config.partitions, config.replicas, config.autostart),
            (100, 0, None)
        );
        assert!(config.masters.is_empty());
    }
}
