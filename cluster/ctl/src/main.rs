//! neoctl: the command line to control a NEO cluster through its admin node (tools.md 1.5,
//! section 2). Options are parsed by clap; the command words after them are parsed as
//! NEO/py's neoctl parses them (see `neo_ctl::command`).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use neo_ctl::command;
use neo_ctl::{execute, parse_address, Client, Failure, Output};

#[derive(Parser)]
#[command(
    name = "neoctl",
    about = "NEO control: ask an admin node about the cluster, or give it orders",
    after_help = "Run without a command for the list of commands; COMMAND --help shows one of them.",
    disable_version_flag = true
)]
struct Cli {
    /// Admin node to talk to (HOST[:PORT], [IPV6][:PORT]; default port 9999).
    #[arg(short = 'a', long = "address", default_value = "127.0.0.1:9999")]
    address: String,
    /// Log every record and packet to this SQLite file (written at once, not buffered).
    #[arg(short = 'l', long = "logfile")]
    logfile: Option<PathBuf>,
    /// Certificate authority file (TLS).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Certificate file (TLS).
    #[arg(long)]
    cert: Option<PathBuf>,
    /// Private key file (TLS).
    #[arg(long)]
    key: Option<PathBuf>,
    /// Print the result of `print` commands as JSON (the default output is NEO/py's).
    #[arg(long)]
    json: bool,
    /// Seconds to wait for the admin at each step (NEO/py waits forever).
    #[arg(long, default_value_t = 300.0)]
    timeout: f64,
    /// The command and its arguments; none for the list of commands.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    command: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(output) => {
            let mut stdout = std::io::stdout().lock();
            let written = match output {
                Output::Nothing => Ok(()),
                Output::Text(text) => writeln!(stdout, "{text}"),
                Output::Json(json) => writeln!(stdout, "{json}"),
            };
            // A closed pipe (e.g. `neoctl print node | head -1`) is not an error of ours.
            let _ = written.and_then(|()| stdout.flush());
            ExitCode::SUCCESS
        }
        Err(failure) => {
            eprintln!("{}", failure.message());
            ExitCode::from(failure.exit_code() as u8)
        }
    }
}

fn run(cli: &Cli) -> Result<Output, Failure> {
    // clap lets the command list swallow an unknown option that comes first; NEO/py's
    // argparse refuses it, and so do we.
    if let Some(option) = cli
        .command
        .first()
        .filter(|w| w.starts_with('-') && w.len() > 1)
    {
        return Err(Failure::Parse(command::ParseError::Usage(format!(
            "unrecognized arguments: {option}"
        ))));
    }
    let command = command::parse(&cli.command)?;
    if cli.ca.is_some() || cli.cert.is_some() || cli.key.is_some() {
        if !(cli.ca.is_some() && cli.cert.is_some() && cli.key.is_some()) {
            return Err(Failure::Parse(command::ParseError::Usage(
                "--ca, --cert and --key go together".into(),
            )));
        }
        return Err(Failure::Local("TLS is not supported yet".into()));
    }
    if !(cli.timeout > 0.0 && cli.timeout.is_finite()) {
        return Err(Failure::Parse(command::ParseError::Usage(
            "--timeout must be a positive number of seconds".into(),
        )));
    }
    let timeout = Duration::from_secs_f64(cli.timeout);
    execute(&command, cli.json, || {
        let address = parse_address(&cli.address, 9999)
            .map_err(|e| Failure::Parse(command::ParseError::Usage(e)))?;
        Client::connect(address, timeout, cli.logfile.as_deref())
    })
}
