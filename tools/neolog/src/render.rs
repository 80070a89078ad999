//! Turning records into the lines NEO/py's neolog prints: the prefix (date, level, node),
//! packet lines with their extra lines, and a Python-style rendering of decoded arguments
//! so that `-a` output reads the same as NEO/py's.

use std::fmt::Write as _;
use std::io::Read;

use chrono::{Local, TimeZone};
use neo_logdb::protocol::data_path;
use neo_logdb::{Level, NodeRef, Record, RecordKind};
use neo_protocol::{Bytes, Value};

/// How much of a packet body to show (`-a` is `Args`, `-A` is `Decompress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Decode {
    None,
    Args,
    Decompress,
}

pub struct Options {
    /// strftime format of the date column; empty removes the column.
    pub date_format: String,
    pub decode: Decode,
    pub color: bool,
    pub node_column: bool,
    pub show_cluster: bool,
    pub no_nid: bool,
    /// Only these node names, if not empty.
    pub nodes: Vec<String>,
}

/// Renders records, caching the date text of the current second (the costly part).
pub struct Renderer {
    options: Options,
    cached_second: i64,
    cached_date: String,
}

impl Renderer {
    pub fn new(options: Options) -> Renderer {
        Renderer {
            options,
            cached_second: i64::MIN,
            cached_date: String::new(),
        }
    }

    /// Appends the lines of `record` to `out`, or nothing if the node is filtered out.
    pub fn render(&mut self, record: &Record, default_name: &str, out: &mut String) {
        let mut name = node_name(&record.node, self.options.show_cluster, self.options.no_nid);
        if name.is_empty() {
            name = default_name.to_owned();
        }
        if !self.options.nodes.is_empty() && !self.options.nodes.contains(&name) {
            return;
        }
        let (level, lines) = match &record.kind {
            RecordKind::Log { level, msg, .. } => {
                let mut lines: Vec<String> = msg.lines().map(str::to_owned).collect();
                if lines.is_empty() {
                    // Python's splitlines gives no line for an empty message.
                    lines.clear();
                }
                (Level(*level).name(), lines)
            }
            RecordKind::Packet {
                msg_id,
                code,
                peer,
                body,
                name,
            } => (
                "PACKET".to_owned(),
                packet_lines(
                    *msg_id,
                    *code,
                    peer,
                    body.as_deref(),
                    name.as_deref(),
                    self.options.decode,
                ),
            ),
            RecordKind::Error { table, message } => (
                (*table).to_owned(),
                message.lines().map(str::to_owned).collect(),
            ),
        };
        let mut prefix = String::new();
        if !self.options.date_format.is_empty() {
            let second = record.date.trunc() as i64;
            if second != self.cached_second {
                self.cached_second = second;
                self.cached_date.clear();
                if let Some(time) = Local.timestamp_opt(second, 0).earliest() {
                    let _ = write!(
                        self.cached_date,
                        "{}",
                        time.format(&self.options.date_format)
                    );
                }
            }
            let fraction = ((record.date - record.date.trunc()) * 10000.0) as u32;
            let _ = write!(prefix, "{}.{:04} ", self.cached_date, fraction);
        }
        if !self.options.color {
            let _ = write!(prefix, "{level:<9} ");
        }
        if self.options.node_column {
            let _ = write!(prefix, "{name:<10} ");
        }
        let color = match level.as_str() {
            _ if !self.options.color => None,
            "DEBUG" => Some("34"),
            "INFO" => Some("32"),
            "WARNING" => Some("33"),
            "ERROR" => Some("31"),
            "CRITICAL" => Some("31;01"),
            _ => None,
        };
        for line in lines {
            match color {
                Some(c) => {
                    let _ = writeln!(out, "\x1b[{c}m{prefix}{line}\x1b[39;49;0m");
                }
                None => {
                    out.push_str(&prefix);
                    out.push_str(&line);
                    out.push('\n');
                }
            }
        }
    }
}

/// The node column: the NID text (with `-C`, `cluster/NID`), else the logger name.
fn node_name(node: &NodeRef, show_cluster: bool, no_nid: bool) -> String {
    match node.nid {
        Some(nid) if nid != 0 && !no_nid => {
            let text = uuid_str(nid);
            if show_cluster {
                format!("{}/{text}", node.cluster.as_deref().unwrap_or(""))
            } else {
                text
            }
        }
        _ => node.name.clone().unwrap_or_default(),
    }
}

/// NEO/py's NID text; ids outside the four namespaces print in hex rather than failing.
pub fn uuid_str(nid: i64) -> String {
    if nid == 0 {
        return "0".to_owned();
    }
    let letter = match nid >> 24 {
        0 => 'S',
        -0x10 => 'M',
        -0x20 => 'C',
        -0x30 => 'A',
        _ => return format!("{:08x}", nid as u32),
    };
    format!("{letter}{}", nid & 0xff_ffff)
}

fn packet_lines(
    msg_id: i64,
    code: i64,
    peer: &str,
    body: Option<&[u8]>,
    name: Option<&str>,
    decode: Decode,
) -> Vec<String> {
    let shown_name = name.map_or_else(|| format!("UnknownPacket[{code}]"), str::to_owned);
    let mut lines = vec![format!("#0x{:04x} {shown_name:<30} {peer}", msg_id)];
    // An unknown code's body is meaningless without its argument layout.
    let (Some(name), Some(body)) = (name, body) else {
        return lines;
    };
    let special = matches!(name, "NotifyNodeInformation" | "Error");
    if !special && decode == Decode::None {
        return lines;
    }
    let args = match Value::from_bytes(&Bytes::copy_from_slice(body)) {
        Ok(Value::Array(args)) => args,
        _ => {
            lines.push("Can't decode packet".to_owned());
            return lines;
        }
    };
    let args = match name {
        "NotifyNodeInformation" => {
            let (timestamp, extra) = match args.as_slice() {
                [timestamp, Value::Array(nodes)] => (timestamp.clone(), node_list(nodes)),
                _ => {
                    lines.push("Can't decode packet".to_owned());
                    return lines;
                }
            };
            lines.extend(extra);
            vec![timestamp]
        }
        "Error" => {
            match args.as_slice() {
                [code, message] => lines.push(format!("{} ({})", py_str(code), py_repr(message))),
                _ => lines.push("Can't decode packet".to_owned()),
            }
            Vec::new()
        }
        _ if decode == Decode::Decompress => match data_path(name) {
            Some(path) => decompress_at(args, path),
            None => args,
        },
        _ => args,
    };
    if !args.is_empty() && decode != Decode::None {
        lines[0].push_str(" \t| ");
        lines[0].push_str(&py_repr(&Value::Array(args)));
    }
    lines
}

/// NEO/py's node-list table: sorted by NID (nodes without one last, by address), columns
/// padded to the widest value of this list.
fn node_list(nodes: &[Value]) -> Vec<String> {
    let mut rows: Vec<(Option<i128>, String, [String; 5])> = nodes
        .iter()
        .map(|node| {
            let fields: &[Value] = match node {
                Value::Array(fields) => fields,
                _ => &[],
            };
            let field = |i: usize| fields.get(i).cloned().unwrap_or(Value::Nil);
            let nid = match field(2) {
                Value::Int(n) => Some(n),
                _ => None,
            };
            let address = format_address(&field(1));
            let timestamp = match field(4) {
                Value::F64(t) if t != 0.0 => utc_datetime(t),
                Value::Nil => "None".to_owned(),
                other => py_str(&other),
            };
            let columns = [
                nid.map_or_else(|| "None".to_owned(), |n| uuid_str(n as i64)),
                py_str(&field(0)),
                address.clone(),
                py_str(&field(3)),
                timestamp,
            ];
            (nid, address, columns)
        })
        .collect();
    rows.sort_by(|a, b| match (a.0, b.0) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.1.cmp(&b.1),
    });
    let widths: Vec<usize> = (0..4)
        .map(|i| {
            rows.iter()
                .map(|r| r.2[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|(_, _, c)| {
            format!(
                " ! {:<w0$} | {:<w1$} | {:<w2$} | {:<w3$} | {}",
                c[0],
                c[1],
                c[2],
                c[3],
                c[4],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
                w3 = widths[3]
            )
        })
        .collect()
}

fn format_address(value: &Value) -> String {
    match value {
        Value::Array(parts) => match parts.as_slice() {
            [Value::Bin(host), Value::Int(port)] => {
                let host = String::from_utf8_lossy(host);
                if host.contains(':') {
                    format!("[{host}]:{port}")
                } else {
                    format!("{host}:{port}")
                }
            }
            _ => py_repr(value),
        },
        _ => String::new(),
    }
}

/// Python's `str(datetime.utcfromtimestamp(t))`: microseconds rounded, shown if not zero.
fn utc_datetime(timestamp: f64) -> String {
    let mut seconds = timestamp.floor() as i64;
    let mut micros = ((timestamp - timestamp.floor()) * 1e6).round_ties_even() as i64;
    if micros >= 1_000_000 {
        seconds += 1;
        micros -= 1_000_000;
    }
    match chrono::DateTime::from_timestamp(seconds, 0) {
        Some(time) if micros != 0 => format!("{}.{micros:06}", time.format("%Y-%m-%d %H:%M:%S")),
        Some(time) => time.format("%Y-%m-%d %H:%M:%S").to_string(),
        None => py_float(timestamp),
    }
}

/// Replaces (compression, checksum, data) at `path` by (length, uncompressed data).
fn decompress_at(mut args: Vec<Value>, path: &[usize]) -> Vec<Value> {
    let Some((&index, rest)) = path.split_first() else {
        return args;
    };
    if !rest.is_empty() {
        if let Some(Value::Array(inner)) = args.get(index).cloned() {
            args[index] = Value::Array(decompress_at(inner, rest));
        }
        return args;
    }
    let (Some(compression), Some(Value::Bin(data))) = (args.get(index), args.get(index + 2)) else {
        return args;
    };
    let data = match compression {
        Value::Int(0) | Value::Bool(false) => data.to_vec(),
        _ => {
            let mut out = Vec::new();
            if flate2::read::ZlibDecoder::new(&data[..])
                .read_to_end(&mut out)
                .is_err()
            {
                return args;
            }
            out
        }
    };
    let replacement = Value::Array(vec![
        Value::Int(data.len() as i128),
        Value::Bin(Bytes::from(data)),
    ]);
    args.splice(index..index + 3, [replacement]);
    args
}

/// Python's `str()` of a decoded value: enums print their name.
fn py_str(value: &Value) -> String {
    match value {
        Value::Enum(e) => e
            .qualified_name()
            .split_once('.')
            .map_or_else(String::new, |(_, m)| m.to_owned()),
        other => py_repr(other),
    }
}

/// Python's `repr()` of what NEO/py's unpacker returns (arrays are tuples).
pub fn py_repr(value: &Value) -> String {
    let mut out = String::new();
    write_repr(value, &mut out);
    out
}

fn write_repr(value: &Value, out: &mut String) {
    match value {
        Value::Nil => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::F64(f) => out.push_str(&py_float(*f)),
        Value::Bin(b) => py_bytes(b, out),
        Value::Str(s) => py_text(s, out),
        Value::Array(items) => {
            out.push('(');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_repr(item, out);
            }
            if items.len() == 1 {
                out.push(',');
            }
            out.push(')');
        }
        Value::Map(pairs) => {
            out.push('{');
            for (i, (key, value)) in pairs.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_repr(key, out);
                out.push_str(": ");
                write_repr(value, out);
            }
            out.push('}');
        }
        Value::Enum(e) => {
            let name = e.qualified_name();
            let member = name.split_once('.').map_or(name.as_str(), |(_, m)| m);
            let _ = write!(out, "<EnumItem {member} ({})>", e.value());
        }
    }
}

/// Python's float repr: shortest round-trip digits, exponent form outside 1e-4..1e16.
fn py_float(f: f64) -> String {
    if f.is_nan() {
        return "nan".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    let scientific = format!("{f:e}");
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if f != 0.0 && !(-4..16).contains(&exponent) {
        let sign = if exponent < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exponent.abs());
    }
    let plain = format!("{f}");
    if plain.contains('.') {
        plain
    } else {
        format!("{plain}.0")
    }
}

fn py_bytes(bytes: &[u8], out: &mut String) {
    let quote = if bytes.contains(&b'\'') && !bytes.contains(&b'"') {
        '"'
    } else {
        '\''
    };
    out.push('b');
    out.push(quote);
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'\t' => out.push_str("\\t"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            _ if b as char == quote => {
                out.push('\\');
                out.push(quote);
            }
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out.push(quote);
}

fn py_text(text: &str, out: &mut String) {
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            _ if c == quote => {
                out.push('\\');
                out.push(quote);
            }
            _ if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            _ => out.push(c),
        }
    }
    out.push(quote);
}
