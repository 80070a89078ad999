//! The option machinery shared by `neomaster`, `neostorage` and `neoadmin` (tools.md 1.1):
//! options declared once as a table of [`Spec`]s, read from the command line, then from the
//! `-f` file's `-s` section (keys are long names with `_`), then from built-in defaults.
//! The command line wins over the file, the file over defaults, and the file may satisfy a
//! required option (NEO/py means to allow it; under Python 3 it does not).
//!
//! Errors: a bad command line is a usage error (exit 2, clap's message and usage); a bad
//! configuration file or value in it is a startup error (exit 1) naming file, line and key.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, Command};
use neo_protocol::Nid;

use crate::ini::{parse_bool, Ini};

/// How an option's text becomes a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string that must not be empty.
    Text,
    /// A string that may be empty (the master's `--masters`).
    TextOrEmpty,
    /// A path: `~` and `~user` are expanded.
    Path,
    Int,
    Float,
    /// Presence on the command line; configparser booleans in the file.
    Bool,
    /// Repeatable on the command line; one per line in the file.
    List,
    /// `host[:port]` or `[ipv6][:port]`, resolved now, with this port when none is given.
    Address {
        default_port: u16,
    },
    /// Whitespace-separated addresses (port 0 when none is given).
    Addresses,
}

/// One option: its names, kind, default and help.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub short: Option<char>,
    pub long: &'static str,
    pub kind: Kind,
    pub default: Option<&'static str>,
    pub required: bool,
    /// Accepted values, when limited (case-sensitive, as NEO/py's argparse choices).
    pub choices: &'static [&'static str],
    pub metavar: Option<&'static str>,
    pub help: &'static str,
}

impl Spec {
    pub const fn new(
        short: Option<char>,
        long: &'static str,
        kind: Kind,
        help: &'static str,
    ) -> Spec {
        Spec {
            short,
            long,
            kind,
            default: None,
            required: false,
            choices: &[],
            metavar: None,
            help,
        }
    }

    pub const fn default(mut self, default: &'static str) -> Spec {
        self.default = Some(default);
        self
    }

    pub const fn required(mut self) -> Spec {
        self.required = true;
        self
    }

    pub const fn choices(mut self, choices: &'static [&'static str]) -> Spec {
        self.choices = choices;
        self
    }

    pub const fn metavar(mut self, metavar: &'static str) -> Spec {
        self.metavar = Some(metavar);
        self
    }

    /// The key that sets this option in a configuration file.
    pub fn key(&self) -> String {
        self.long.replace('-', "_")
    }

    /// How the option is named in messages: `-c/--cluster`.
    pub fn display_name(&self) -> String {
        match self.short {
            Some(short) => format!("-{short}/--{}", self.long),
            None => format!("--{}", self.long),
        }
    }
}

/// A parsed option value.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Text(String),
    Path(PathBuf),
    Int(i64),
    Float(f64),
    Bool(bool),
    List(Vec<String>),
    Address(SocketAddr),
    Addresses(Vec<SocketAddr>),
}

/// Options common to every program (tools.md 1.1, first table).
pub const COMMON: &[Spec] = &[
    Spec::new(
        Some('l'),
        "logfile",
        Kind::Path,
        "log debugging information to this SQLite file",
    ),
    Spec::new(
        None,
        "ca",
        Kind::Path,
        "(TLS) certificate authority in PEM format",
    ),
    Spec::new(None, "cert", Kind::Path, "(TLS) certificate in PEM format"),
    Spec::new(None, "key", Kind::Path, "(TLS) private key in PEM format"),
];

/// Options of server nodes (master, storage, admin) whose defaults differ per program.
pub fn server_specs(section: &'static str, masters: &'static str, bind: &'static str) -> Vec<Spec> {
    let masters_kind = if masters.is_empty() {
        Kind::TextOrEmpty
    } else {
        Kind::Addresses
    };
    let mut specs = COMMON.to_vec();
    specs.extend([
        Spec::new(
            Some('f'),
            "file",
            Kind::Path,
            "specify a configuration file",
        ),
        Spec::new(
            Some('s'),
            "section",
            Kind::Text,
            "section in the configuration file",
        )
        .default(section),
        Spec::new(Some('c'), "cluster", Kind::Text, "the cluster name").required(),
        Spec::new(
            Some('m'),
            "masters",
            masters_kind,
            "space-separated list of master node addresses",
        )
        .default(masters),
        Spec::new(
            Some('b'),
            "bind",
            Kind::Address { default_port: 0 },
            "the local address to bind to",
        )
        .default(bind),
        Spec::new(
            Some('D'),
            "dynamic-master-list",
            Kind::Path,
            "path of the file containing dynamic master node list",
        ),
    ]);
    specs
}

/// The options of one run of a program.
#[derive(Debug, Clone)]
pub struct Options {
    values: BTreeMap<&'static str, Val>,
    /// `-v` count: 0 warnings, 1 info, 2 debug, 3 trace on stderr.
    pub verbose: u8,
}

/// Why options could not be read.
#[derive(Debug)]
pub enum OptionsError {
    /// Bad command line, `--help`: clap prints it and exits with 2 (or 0 for help).
    Usage(clap::Error),
    /// Bad configuration file or file value: print and exit 1.
    Startup(String),
}

impl OptionsError {
    /// Prints the error and exits the process with NEO's status (2 usage, 1 startup).
    pub fn exit(self) -> ! {
        match self {
            OptionsError::Usage(error) => error.exit(),
            OptionsError::Startup(message) => {
                eprintln!("{message}");
                std::process::exit(1)
            }
        }
    }
}

impl Options {
    pub fn text(&self, long: &str) -> Option<&str> {
        match self.values.get(long) {
            Some(Val::Text(text)) => Some(text),
            _ => None,
        }
    }

    pub fn path(&self, long: &str) -> Option<&Path> {
        match self.values.get(long) {
            Some(Val::Path(path)) => Some(path),
            _ => None,
        }
    }

    pub fn int(&self, long: &str) -> Option<i64> {
        match self.values.get(long) {
            Some(Val::Int(n)) => Some(*n),
            _ => None,
        }
    }

    pub fn float(&self, long: &str) -> Option<f64> {
        match self.values.get(long) {
            Some(Val::Float(x)) => Some(*x),
            _ => None,
        }
    }

    pub fn flag(&self, long: &str) -> bool {
        matches!(self.values.get(long), Some(Val::Bool(true)))
    }

    pub fn list(&self, long: &str) -> Vec<String> {
        match self.values.get(long) {
            Some(Val::List(list)) => list.clone(),
            _ => Vec::new(),
        }
    }

    pub fn address(&self, long: &str) -> Option<SocketAddr> {
        match self.values.get(long) {
            Some(Val::Address(addr)) => Some(*addr),
            _ => None,
        }
    }

    /// An address list; a [`Kind::TextOrEmpty`] option is parsed here (empty = none).
    pub fn addresses(&self, long: &str) -> Result<Vec<SocketAddr>, String> {
        match self.values.get(long) {
            Some(Val::Addresses(list)) => Ok(list.clone()),
            Some(Val::Text(text)) => parse_addresses(text),
            _ => Ok(Vec::new()),
        }
    }

    /// The NID given by `-i/--nid`, as NEO/py takes it: the signed integer.
    pub fn nid(&self, long: &str) -> Option<Nid> {
        self.int(long).map(|n| Nid(n as i32))
    }
}

/// Reads the options of `program` from `args` (program name first) and the file they name.
pub fn parse<I, T>(
    program: &'static str,
    about: &'static str,
    specs: &[Spec],
    args: I,
) -> Result<Options, OptionsError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let command = command(program, about, specs);
    let matches = command
        .clone()
        .try_get_matches_from(args)
        .map_err(OptionsError::Usage)?;
    let verbose = matches.get_count("verbose");

    let mut values = BTreeMap::new();
    for spec in specs {
        let given = match spec.kind {
            Kind::Bool => matches.get_flag(spec.long).then_some(Val::Bool(true)),
            Kind::List => matches
                .get_many::<String>(spec.long)
                .map(|items| Val::List(items.cloned().collect())),
            _ => match matches.get_one::<String>(spec.long) {
                // Already checked by the value parser, so conversion succeeds.
                Some(text) => Some(convert(spec, text).map_err(OptionsError::Startup)?),
                None => None,
            },
        };
        if let Some(value) = given {
            values.insert(spec.long, value);
        }
    }

    // The file fills what the command line left unset.
    if let Some(Val::Path(file)) = values.get("file").cloned() {
        let section = match values.get("section") {
            Some(Val::Text(section)) => section.clone(),
            _ => specs
                .iter()
                .find(|s| s.long == "section")
                .and_then(|s| s.default)
                .unwrap_or(program)
                .to_owned(),
        };
        let ini = Ini::read(&file).map_err(|e| OptionsError::Startup(e.to_string()))?;
        if !ini.has_section(&section) {
            return Err(OptionsError::Startup(format!(
                "{}: no section [{section}] (sections: {})",
                file.display(),
                ini.sections().collect::<Vec<_>>().join(", ")
            )));
        }
        for spec in specs {
            if values.contains_key(spec.long) || spec.long == "file" || spec.long == "section" {
                continue;
            }
            let key = spec.key();
            let Some(found) = ini
                .get(&section, &key)
                .map_err(|e| OptionsError::Startup(e.to_string()))?
            else {
                continue;
            };
            let bad = |message: String| {
                OptionsError::Startup(format!(
                    "{}, line {}: {key}: {message}",
                    file.display(),
                    found.line
                ))
            };
            let value = match spec.kind {
                Kind::Bool => Val::Bool(parse_bool(&found.text).ok_or_else(|| {
                    bad(format!(
                        "not a boolean: {:?} (use 1/yes/true/on or 0/no/false/off)",
                        found.text
                    ))
                })?),
                Kind::List => Val::List(
                    found
                        .text
                        .lines()
                        .map(str::trim)
                        .filter(|line| !line.is_empty())
                        .map(str::to_owned)
                        .collect(),
                ),
                _ => convert(spec, &found.text).map_err(bad)?,
            };
            values.insert(spec.long, value);
        }
    }

    let mut missing = Vec::new();
    for spec in specs {
        if values.contains_key(spec.long) {
            continue;
        }
        if let Some(default) = spec.default {
            let value = convert(spec, default).map_err(|e| {
                OptionsError::Startup(format!("default of {}: {e}", spec.display_name()))
            })?;
            values.insert(spec.long, value);
        } else if spec.kind == Kind::Bool {
            values.insert(spec.long, Val::Bool(false));
        } else if spec.required {
            missing.push(spec.display_name());
        }
    }
    if !missing.is_empty() {
        let mut command = command;
        return Err(OptionsError::Usage(command.error(
            clap::error::ErrorKind::MissingRequiredArgument,
            format!(
                "the following arguments are required (on the command line or in the -f file): {}",
                missing.join(", ")
            ),
        )));
    }
    Ok(Options { values, verbose })
}

/// Builds the clap command: one argument per spec, plus `-v`.
pub fn command(program: &'static str, about: &'static str, specs: &[Spec]) -> Command {
    let mut command = Command::new(program).about(about).arg(
        Arg::new("verbose")
            .short('v')
            .long("verbose")
            .action(ArgAction::Count)
            .help("more messages on stderr (-v info, -vv debug); RUST_LOG overrides"),
    );
    for spec in specs {
        let mut help = spec.help.to_owned();
        if let Some(default) = spec.default {
            help.push_str(&format!(" (default: {default:?})"));
        }
        if spec.required {
            help.push_str(" (required, on the command line or in the file)");
        }
        let mut arg = Arg::new(spec.long).long(spec.long).help(help);
        if let Some(short) = spec.short {
            arg = arg.short(short);
        }
        if let Some(metavar) = spec.metavar {
            arg = arg.value_name(metavar);
        }
        arg = match spec.kind {
            Kind::Bool => arg.action(ArgAction::SetTrue),
            _ => {
                let spec_copy = *spec;
                let parser = move |text: &str| convert(&spec_copy, text).map(|_| text.to_owned());
                let arg = arg.value_parser(parser).allow_hyphen_values(true);
                if spec.kind == Kind::List {
                    arg.action(ArgAction::Append)
                } else {
                    arg.action(ArgAction::Set)
                }
            }
        };
        command = command.arg(arg);
    }
    command
}

/// Turns option text into a value of the spec's kind, or says why it cannot.
pub fn convert(spec: &Spec, text: &str) -> Result<Val, String> {
    if !spec.choices.is_empty() && !spec.choices.contains(&text) {
        return Err(format!(
            "invalid choice: {text:?} (choose from {})",
            spec.choices.join(", ")
        ));
    }
    match spec.kind {
        Kind::Text | Kind::List => {
            if text.is_empty() {
                Err("value is empty".to_owned())
            } else if spec.kind == Kind::List {
                Ok(Val::List(vec![text.to_owned()]))
            } else {
                Ok(Val::Text(text.to_owned()))
            }
        }
        Kind::TextOrEmpty => Ok(Val::Text(text.to_owned())),
        Kind::Path => {
            if text.is_empty() {
                Err("value is empty".to_owned())
            } else {
                Ok(Val::Path(expand_user(text)))
            }
        }
        Kind::Int => text
            .trim()
            .parse::<i64>()
            .map(Val::Int)
            .map_err(|_| format!("invalid integer: {text:?}")),
        Kind::Float => text
            .trim()
            .parse::<f64>()
            .map(Val::Float)
            .map_err(|_| format!("invalid number: {text:?}")),
        Kind::Bool => parse_bool(text)
            .map(Val::Bool)
            .ok_or_else(|| format!("not a boolean: {text:?}")),
        Kind::Address { default_port } => parse_address(text, default_port).map(Val::Address),
        Kind::Addresses => parse_addresses(text).map(Val::Addresses),
    }
}

/// Parses `host:port`, `[ipv6]:port`, `host` or `[ipv6]` (then `default_port`), and
/// resolves the host (first result), as NEO/py does at parse time (tools.md 0.3).
pub fn parse_address(text: &str, default_port: u16) -> Result<SocketAddr, String> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err(format!("invalid address {text:?}: missing ']'"));
        };
        match after.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if after.is_empty() => (host, None),
            None => return Err(format!("invalid address {text:?}")),
        }
    } else if text.matches(':').count() == 1 {
        let (host, port) = text.split_once(':').unwrap_or((text, ""));
        (host, Some(port))
    } else {
        (text, None)
    };
    let port = match port {
        Some(port) => port
            .parse::<u16>()
            .map_err(|_| format!("invalid port in address {text:?}"))?,
        None => default_port,
    };
    if host.is_empty() {
        return Err(format!("invalid address {text:?}: no host"));
    }
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("cannot resolve {host:?}: no address"))
}

/// A whitespace-separated address list (port 0 when none is given).
pub fn parse_addresses(text: &str) -> Result<Vec<SocketAddr>, String> {
    text.split_whitespace()
        .map(|item| parse_address(item, 0))
        .collect()
}

/// `~` and `~user` at the start of a path, as Python's `os.path.expanduser`.
pub fn expand_user(text: &str) -> PathBuf {
    let Some(rest) = text.strip_prefix('~') else {
        return PathBuf::from(text);
    };
    let (user, tail) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, ""),
    };
    let home = if user.is_empty() {
        std::env::var_os("HOME").map(PathBuf::from)
    } else {
        home_of(user)
    };
    match home {
        Some(home) => {
            let mut path = home.into_os_string();
            path.push(tail);
            PathBuf::from(path)
        }
        None => PathBuf::from(text),
    }
}

fn home_of(user: &str) -> Option<PathBuf> {
    use std::ffi::{CStr, CString};
    use std::os::unix::ffi::OsStrExt;
    let name = CString::new(user).ok()?;
    let mut buffer = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: getpwnam_r writes only into `entry` and `buffer`, whose sizes are given; the
    // returned pointers point into them and are read before they go out of scope.
    unsafe {
        let mut entry: libc::passwd = std::mem::zeroed();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let status = libc::getpwnam_r(
            name.as_ptr(),
            &mut entry,
            buffer.as_mut_ptr(),
            buffer.len(),
            &mut result,
        );
        if status != 0 || result.is_null() || entry.pw_dir.is_null() {
            return None;
        }
        let dir = CStr::from_ptr(entry.pw_dir);
        Some(PathBuf::from(std::ffi::OsStr::from_bytes(dir.to_bytes())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn specs() -> Vec<Spec> {
        let mut specs = server_specs("master", "", "127.0.0.1:10000");
        specs.extend([
            Spec::new(Some('r'), "replicas", Kind::Int, "replicas").default("0"),
            Spec::new(Some('p'), "partitions", Kind::Int, "partitions").default("100"),
            Spec::new(Some('B'), "backup", Kind::Bool, "backup"),
            Spec::new(None, "monitor-email", Kind::List, "emails"),
            Spec::new(Some('a'), "adapter", Kind::Text, "adapter")
                .default("MySQL")
                .choices(&["MySQL", "SQLite"]),
        ]);
        specs
    }

    fn run(args: &[&str]) -> Result<Options, String> {
        let mut argv = vec!["neomaster"];
        argv.extend_from_slice(args);
        parse("neomaster", "test", &specs(), argv).map_err(|e| match e {
            OptionsError::Usage(e) => format!("usage {}: {}", e.exit_code(), e.kind()),
            OptionsError::Startup(m) => format!("startup: {m}"),
        })
    }

    fn config(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        file
    }

    #[test]
    fn defaults_apply() {
        let options = run(&["-c", "test"]).unwrap();
        assert_eq!(options.text("cluster"), Some("test"));
        assert_eq!(options.int("replicas"), Some(0));
        assert_eq!(options.int("partitions"), Some(100));
        assert_eq!(
            options.address("bind"),
            Some("127.0.0.1:10000".parse().unwrap())
        );
        assert_eq!(options.addresses("masters").unwrap(), vec![]);
        assert!(!options.flag("backup"));
        assert_eq!(options.text("section"), Some("master"));
        assert_eq!(options.text("adapter"), Some("MySQL"));
        assert_eq!(options.verbose, 0);
    }

    #[test]
    fn long_and_short_names() {
        let options = run(&[
            "--cluster",
            "x",
            "-p",
            "12",
            "--replicas",
            "1",
            "-B",
            "-b",
            "127.0.0.1",
            "-m",
            "127.0.0.1:1 127.0.0.2",
            "-vv",
        ])
        .unwrap();
        assert_eq!(options.int("partitions"), Some(12));
        assert_eq!(options.int("replicas"), Some(1));
        assert!(options.flag("backup"));
        assert_eq!(
            options.address("bind"),
            Some("127.0.0.1:0".parse().unwrap())
        );
        assert_eq!(
            options.addresses("masters").unwrap(),
            vec![
                "127.0.0.1:1".parse().unwrap(),
                "127.0.0.2:0".parse().unwrap()
            ]
        );
        assert_eq!(options.verbose, 2);
    }

    #[test]
    fn usage_errors_exit_2() {
        assert_eq!(
            run(&[]).unwrap_err(),
            "usage 2: one or more required arguments were not provided"
        );
        assert_eq!(
            run(&["-c", "x", "-p", "many"]).unwrap_err(),
            "usage 2: invalid value for one of the arguments"
        );
        assert_eq!(
            run(&["-c", ""]).unwrap_err(),
            "usage 2: invalid value for one of the arguments"
        );
        assert_eq!(
            run(&["-c", "x", "--bogus"]).unwrap_err(),
            "usage 2: unexpected argument found"
        );
        assert_eq!(
            run(&["-c", "x", "-a", "Oracle"]).unwrap_err(),
            "usage 2: invalid value for one of the arguments"
        );
        assert_eq!(run(&["--help"]).unwrap_err(), "usage 0: ");
    }

    #[test]
    fn negative_numbers_are_values() {
        assert_eq!(
            run(&["-c", "x", "-r", "-1"]).unwrap().int("replicas"),
            Some(-1)
        );
    }

    #[test]
    fn file_fills_in_and_command_line_wins() {
        let file = config(
            "[DEFAULT]\ncluster = prod\nreplicas = 1\nunknown_key = ignored\n[master]\npartitions: 12\nbackup = yes\nmonitor_email =\n  a@x\n\n  b@x\n",
        );
        let path = file.path().to_str().unwrap();
        let options = run(&["-f", path]).unwrap();
        assert_eq!(options.text("cluster"), Some("prod"));
        assert_eq!(options.int("replicas"), Some(1));
        assert_eq!(options.int("partitions"), Some(12));
        assert!(options.flag("backup"));
        assert_eq!(options.list("monitor-email"), ["a@x", "b@x"]);
        let options = run(&[
            "-f",
            path,
            "-c",
            "other",
            "-p",
            "7",
            "--monitor-email",
            "c@x",
        ])
        .unwrap();
        assert_eq!(options.text("cluster"), Some("other"));
        assert_eq!(options.int("partitions"), Some(7));
        assert_eq!(options.list("monitor-email"), ["c@x"]);
    }

    #[test]
    fn section_option_chooses_the_section() {
        let file = config("[master]\ncluster = a\n[m2]\ncluster = b\n");
        let path = file.path().to_str().unwrap();
        assert_eq!(run(&["-f", path]).unwrap().text("cluster"), Some("a"));
        assert_eq!(
            run(&["-f", path, "-s", "m2"]).unwrap().text("cluster"),
            Some("b")
        );
        let error = run(&["-f", path, "-s", "m3"]).unwrap_err();
        assert_eq!(
            error,
            format!("startup: {path}: no section [m3] (sections: master, m2)")
        );
    }

    #[test]
    fn file_errors_name_file_line_and_key() {
        let file = config("[master]\ncluster = a\npartitions = 12 # twelve\n");
        let path = file.path().to_str().unwrap();
        assert_eq!(
            run(&["-f", path]).unwrap_err(),
            format!("startup: {path}, line 3: partitions: invalid integer: \"12 # twelve\"")
        );
        // Overridden on the command line, the bad value is never read.
        assert!(run(&["-f", path, "-p", "3"]).is_ok());

        let file = config("[master]\ncluster = a\nbackup = maybe\n");
        let path = file.path().to_str().unwrap();
        assert_eq!(
            run(&["-f", path]).unwrap_err(),
            format!("startup: {path}, line 3: backup: not a boolean: \"maybe\" (use 1/yes/true/on or 0/no/false/off)")
        );

        let file = config("[master]\ncluster =\n");
        let path = file.path().to_str().unwrap();
        assert_eq!(
            run(&["-f", path]).unwrap_err(),
            format!("startup: {path}, line 2: cluster: value is empty")
        );

        let file = config("[master]\ncluster = a\nbind = 127.0.0.1:http0\n");
        let path = file.path().to_str().unwrap();
        assert_eq!(
            run(&["-f", path]).unwrap_err(),
            format!("startup: {path}, line 3: bind: invalid port in address \"127.0.0.1:http0\"")
        );

        let file = config("cluster = a\n");
        let path = file.path().to_str().unwrap();
        assert_eq!(
            run(&["-f", path]).unwrap_err(),
            format!("startup: {path}, line 1: expected a [section] header before \"cluster = a\"")
        );

        assert!(run(&["-f", "/nonexistent/neo.conf", "-c", "x"])
            .unwrap_err()
            .starts_with("startup: cannot read configuration file /nonexistent/neo.conf: "));
    }

    #[test]
    fn file_satisfies_required_but_missing_everywhere_is_usage() {
        let file = config("[master]\npartitions = 3\n");
        let path = file.path().to_str().unwrap();
        assert_eq!(
            run(&["-f", path]).unwrap_err(),
            "usage 2: one or more required arguments were not provided"
        );
        assert!(run(&["-f", path, "-c", "x"]).is_ok());
    }

    #[test]
    fn addresses() {
        assert_eq!(
            parse_address("127.0.0.1:10000", 0),
            Ok("127.0.0.1:10000".parse().unwrap())
        );
        assert_eq!(
            parse_address("127.0.0.1", 9999),
            Ok("127.0.0.1:9999".parse().unwrap())
        );
        assert_eq!(parse_address("[::1]:5", 0), Ok("[::1]:5".parse().unwrap()));
        assert_eq!(parse_address("[::1]", 7), Ok("[::1]:7".parse().unwrap()));
        assert_eq!(parse_address("::1", 7), Ok("[::1]:7".parse().unwrap()));
        assert_eq!(parse_address("localhost:8", 0).map(|a| a.port()), Ok(8));
        assert!(parse_address("[::1", 0).is_err());
        assert!(parse_address(":80", 0).is_err());
        assert!(parse_address("127.0.0.1:99999", 0).is_err());
        assert_eq!(parse_addresses("  ").unwrap(), vec![]);
    }

    #[test]
    fn paths_expand_home() {
        let home = std::env::var("HOME").unwrap();
        assert_eq!(
            expand_user("~/log/x.log"),
            PathBuf::from(format!("{home}/log/x.log"))
        );
        assert_eq!(expand_user("~"), PathBuf::from(&home));
        assert_eq!(expand_user("/abs/~x"), PathBuf::from("/abs/~x"));
        assert_eq!(expand_user("~root/a"), PathBuf::from("/root/a"));
        assert_eq!(
            expand_user("~no-such-user-xyz/a"),
            PathBuf::from("~no-such-user-xyz/a")
        );
    }
}
