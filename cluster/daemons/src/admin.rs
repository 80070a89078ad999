//! `neoadmin` (tools.md 1.4): its options and the [`neo_admin::Admin`] built from them.

use neo_admin::{Admin, Config};
use neo_protocol::Address;

use crate::daemon::{self, Fatal};
use crate::options::{server_specs, Kind, Options, Spec};

pub const ABOUT: &str = "Run a NEO admin node";

/// Every option of `neoadmin`.
pub fn specs() -> Vec<Spec> {
    let mut specs = server_specs("admin", "127.0.0.1:10000", "127.0.0.1:9999");
    specs.extend([
        Spec::new(
            None,
            "monitor-maxlag",
            Kind::Float,
            "warn if a backup cluster has a greater lag (in seconds)",
        )
        .default("0.0"),
        Spec::new(
            None,
            "monitor-email",
            Kind::List,
            "recipient email for notifications (repeatable)",
        ),
        Spec::new(
            None,
            "monitor-backup",
            Kind::List,
            "name of a backup cluster to monitor (repeatable)",
        ),
        Spec::new(
            None,
            "smtp",
            Kind::Text,
            "SMTP server for e-mail notifications",
        )
        .default("localhost")
        .metavar("HOST[:PORT]"),
        Spec::new(None, "smtp-tls", Kind::Bool, "use STARTTLS"),
        Spec::new(None, "smtp-auth", Kind::Text, "SMTP credentials").metavar("USER:PASS"),
        Spec::new(
            Some('i'),
            "nid",
            Kind::Int,
            "specify a NID to use for this process (testing purpose)",
        ),
    ]);
    specs
}

pub fn config(options: &Options, address: Address) -> Result<Config, Fatal> {
    Ok(Config {
        cluster: options.text("cluster").unwrap_or_default().to_owned(),
        address,
        masters: daemon::masters(options)?,
        nid: options.nid("nid"),
        monitor_maxlag: options.float("monitor-maxlag").unwrap_or(0.0),
        monitor_backup: options.list("monitor-backup"),
    })
}

pub fn main() -> ! {
    let options = daemon::parse_options("neoadmin", ABOUT, &specs());
    daemon::exit(run(&options))
}

fn run(options: &Options) -> Result<i32, Fatal> {
    daemon::check_tls(options)?;
    if !options.list("monitor-email").is_empty() {
        // The health summary stays available through `neoctl print summary`.
        eprintln!("warning: e-mail notifications (--monitor-email) are not sent by this implementation yet");
    }
    let cluster = options.text("cluster").unwrap_or_default().to_owned();
    let bind = options
        .address("bind")
        .ok_or_else(|| Fatal("no bind address".into()))?;
    daemon::run(options, &cluster, bind, |bound| {
        Ok(Admin::new(config(
            options,
            Address::from_socket_addr(bound),
        )?))
    })
}
