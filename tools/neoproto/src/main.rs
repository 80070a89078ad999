//! `neoproto`: a small tool for people debugging a NEO cluster or a capture.
//!
//! * `neoproto decode` reads one direction of a NEO connection (raw bytes, with or without
//!   the handshake) on stdin and prints one JSON object per packet, in the JSON form of the
//!   protocol test vectors.
//! * `neoproto encode` reads such JSON lines and writes the bytes.
//! * `neoproto bench` measures the codec (decode and encode rates).
//!
//! Errors name the byte offset in the input (and the line, for `encode`).

mod bench;

use std::io::{self, BufRead, Read, Write};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use neo_protocol::json::{self, message_from_json, message_to_json_line};
use neo_protocol::{encode_message, Decoder, HandshakeMode, HANDSHAKE};

#[derive(Parser)]
#[command(
    name = "neoproto",
    about = "Decode and encode NEO protocol 5 byte streams"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Read a raw NEO byte stream on stdin, print one JSON object per packet.
    Decode {
        /// Whether the stream starts with the 6-byte handshake; `auto` looks at the first
        /// byte (a handshake starts with 0x92, a packet with 0x93).
        #[arg(long, value_enum, default_value_t = Handshake::Auto)]
        handshake: Handshake,
        /// Read the stream as hex text instead of raw bytes (whitespace is ignored).
        #[arg(long)]
        hex: bool,
    },
    /// Read JSON packets, one per line, on stdin and write their bytes.
    Encode {
        /// Write the handshake first.
        #[arg(long)]
        handshake: bool,
        /// Write hex text instead of raw bytes.
        #[arg(long)]
        hex: bool,
    },
    /// Measure decode and encode rates (build with --release for meaningful numbers).
    Bench {
        /// Approximate seconds per measurement.
        #[arg(long, default_value_t = 1.0)]
        seconds: f64,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Handshake {
    Auto,
    Yes,
    No,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Decode { handshake, hex } => decode(handshake, hex),
        Command::Encode { handshake, hex } => encode(handshake, hex),
        Command::Bench { seconds } => bench::run(seconds),
    };
    if let Err(err) = result {
        // A closed stdout (e.g. piping into `head`) is not worth a message.
        if err
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
        {
            std::process::exit(0);
        }
        eprintln!("neoproto: {err:#}");
        std::process::exit(1);
    }
}

fn decode(handshake: Handshake, hex: bool) -> Result<()> {
    let stdin = io::stdin();
    let mut input = stdin.lock();
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let mut decoder: Option<Decoder> = None;
    let mut chunk = vec![0u8; 64 * 1024];
    let mut hex_carry: Option<u8> = None;
    loop {
        let n = match input.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("reading stdin"),
        };
        let bytes = if hex {
            unhex_streaming(&chunk[..n], &mut hex_carry)?
        } else {
            chunk[..n].to_vec()
        };
        if bytes.is_empty() {
            continue;
        }
        let decoder = decoder.get_or_insert_with(|| {
            let expect = match handshake {
                Handshake::Yes => true,
                Handshake::No => false,
                Handshake::Auto => bytes[0] == HANDSHAKE[0],
            };
            Decoder::new(if expect {
                HandshakeMode::Expect
            } else {
                HandshakeMode::Skip
            })
        });
        decoder.feed(&bytes);
        print_messages(decoder, &mut out)?;
        // Flush per read so that a live pipe shows packets as they come.
        out.flush()?;
    }
    if hex_carry.is_some() {
        bail!("hex input has an odd number of digits");
    }
    if let Some(decoder) = &decoder {
        if !decoder.handshake_done() {
            bail!("at byte 0: the stream ends inside the handshake");
        }
        if decoder.buffered() > 0 {
            bail!(
                "at byte {}: the stream ends in the middle of a packet ({} bytes left)",
                decoder.offset(),
                decoder.buffered()
            );
        }
    }
    Ok(())
}

fn print_messages(decoder: &mut Decoder, out: &mut impl Write) -> Result<()> {
    while let Some(message) = decoder.next_message().context("decoding")? {
        writeln!(out, "{}", message_to_json_line(&message)?)?;
    }
    Ok(())
}

/// Converts hex digits to bytes, skipping whitespace and carrying an odd digit over to the
/// next chunk.
fn unhex_streaming(text: &[u8], carry: &mut Option<u8>) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 2);
    for &c in text {
        if c.is_ascii_whitespace() {
            continue;
        }
        let digit = (c as char)
            .to_digit(16)
            .with_context(|| format!("{:?} is not a hex digit", c as char))?
            as u8;
        match carry.take() {
            Some(high) => out.push(high << 4 | digit),
            None => *carry = Some(digit),
        }
    }
    Ok(out)
}

fn encode(handshake: bool, hex: bool) -> Result<()> {
    let stdin = io::stdin();
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let mut buf = Vec::new();
    let write = |buf: &mut Vec<u8>, out: &mut io::BufWriter<io::StdoutLock>| -> Result<()> {
        if hex {
            out.write_all(json::hex(buf).as_bytes())?;
        } else {
            out.write_all(buf)?;
        }
        buf.clear();
        Ok(())
    };
    if handshake {
        buf.extend_from_slice(&HANDSHAKE);
        write(&mut buf, &mut out)?;
    }
    let mut input_offset = 0u64;
    for (index, line) in stdin.lock().lines().enumerate() {
        let line = line.context("reading stdin")?;
        let line_offset = input_offset;
        input_offset += line.len() as u64 + 1;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("line {} (input byte {line_offset}): not JSON", index + 1))?;
        let message = message_from_json(&parsed)
            .with_context(|| format!("line {} (input byte {line_offset})", index + 1))?;
        encode_message(&mut buf, message.msg_id, &message.packet);
        write(&mut buf, &mut out)?;
    }
    if hex {
        writeln!(out)?;
    }
    out.flush()?;
    Ok(())
}
