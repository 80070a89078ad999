//! Turning records into the lines NEO/py's neolog prints: the prefix (date, level, node),
//! packet lines with their extra lines, and a Python-style rendering of decoded arguments
//! so that `-a` output reads the same as NEO/py's.

use std::fmt::Write as _;
use std::io::Read;

use chrono::{Local, TimeZone};
use neo_logdb::protocol::data_path;
use neo_logdb::{Level, NodeRef, Record, RecordKind};
use neo_protocol::{Bytes, EnumValue, Value};

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

/// Renders records without allocating per record: the date text of the current second
/// (the costly part), the node column of the last emitter and the level names are cached,
/// and everything is written into buffers kept from one record to the next.
pub struct Renderer {
    options: Options,
    cached_second: i64,
    cached_date: String,
    /// The emitter (and file default name) the cached node column was made for.
    node_key: Option<(NodeRef, String)>,
    /// The node column, padded and followed by its separator.
    node_column: String,
    /// Whether the cached emitter passes `--node`.
    node_shown: bool,
    /// Level numbers and their names, as met.
    levels: Vec<(i64, String)>,
    prefix: String,
    lines: Lines,
    decoded: Decoded,
}

/// A node table row: the NID it sorts by and the span of each cell in the cell buffer.
type NodeRow = (Option<i128>, [(usize, usize); 5]);

/// Lines without their prefix, in one buffer kept between records.
#[derive(Default)]
struct Lines {
    text: String,
    ends: Vec<usize>,
}

impl Lines {
    fn clear(&mut self) {
        self.text.clear();
        self.ends.clear();
    }

    fn end_line(&mut self) {
        self.ends.push(self.text.len());
    }

    fn push_line(&mut self, line: &str) {
        self.text.push_str(line);
        self.end_line();
    }

    fn iter(&self) -> impl Iterator<Item = &str> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(&self.ends)
            .map(|(start, &end)| &self.text[start..end])
    }
}

/// What a packet body adds to the packet's first line (its arguments, with `-a`) and the
/// lines after it, for the last body decoded. The master sends the same node changes to
/// every node in turn, so the same body often comes several times in a row, and decoding
/// it is the costliest part of a line.
#[derive(Default)]
struct Decoded {
    /// The packet name, mode and body the rest was made for.
    key: Option<(String, Decode, Vec<u8>)>,
    suffix: String,
    extra: Lines,
    /// Node table cells, and per row the NID and the span of each cell in `cells`.
    cells: String,
    rows: Vec<NodeRow>,
    utc: UtcCache,
}

impl Renderer {
    pub fn new(options: Options) -> Renderer {
        Renderer {
            options,
            cached_second: i64::MIN,
            cached_date: String::new(),
            node_key: None,
            node_column: String::new(),
            node_shown: true,
            levels: Vec::new(),
            prefix: String::new(),
            lines: Lines::default(),
            decoded: Decoded::default(),
        }
    }

    /// Appends the lines of `record` to `out`, or nothing if the node is filtered out.
    pub fn render(&mut self, record: &Record, default_name: &str, out: &mut String) {
        let same_node = self
            .node_key
            .as_ref()
            .is_some_and(|(node, name)| *node == record.node && name == default_name);
        if !same_node {
            self.set_node(&record.node, default_name);
        }
        if !self.node_shown {
            return;
        }
        self.prefix.clear();
        if !self.options.date_format.is_empty() {
            self.push_date(record.date);
        }
        let level = match &record.kind {
            RecordKind::Log { level, .. } => level_name(&mut self.levels, *level),
            RecordKind::Packet { .. } => "PACKET",
            RecordKind::Error { table, .. } => table,
        };
        if !self.options.color {
            push_padded(&mut self.prefix, level, 9);
            self.prefix.push(' ');
        }
        if self.options.node_column {
            self.prefix.push_str(&self.node_column);
        }
        let color = match level {
            _ if !self.options.color => None,
            "DEBUG" => Some("34"),
            "INFO" => Some("32"),
            "WARNING" => Some("33"),
            "ERROR" => Some("31"),
            "CRITICAL" => Some("31;01"),
            _ => None,
        };
        let prefix = &self.prefix;
        match &record.kind {
            RecordKind::Log { msg: text, .. } | RecordKind::Error { message: text, .. } => {
                // Python's splitlines gives no line for an empty message, nor does `lines`.
                for line in text.lines() {
                    push_line(out, color, prefix, line);
                }
            }
            RecordKind::Packet {
                msg_id,
                code,
                peer,
                body,
                name,
            } => {
                let lines = &mut self.lines;
                lines.clear();
                packet_lines(
                    *msg_id,
                    *code,
                    peer,
                    body.as_deref(),
                    name.as_deref(),
                    self.options.decode,
                    lines,
                    &mut self.decoded,
                );
                for line in lines.iter() {
                    push_line(out, color, prefix, line);
                }
            }
        }
    }

    /// Caches the node column and the `--node` verdict for a new emitter.
    fn set_node(&mut self, node: &NodeRef, default_name: &str) {
        let mut name = node_name(node, self.options.show_cluster, self.options.no_nid);
        if name.is_empty() {
            name = default_name.to_owned();
        }
        self.node_shown = self.options.nodes.is_empty() || self.options.nodes.contains(&name);
        self.node_column.clear();
        push_padded(&mut self.node_column, &name, 10);
        self.node_column.push(' ');
        self.node_key = Some((node.clone(), default_name.to_owned()));
    }

    /// The date column: the formatted second, cached, then four decimals and a space.
    fn push_date(&mut self, date: f64) {
        let second = date.trunc() as i64;
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
        let fraction = ((date - date.trunc()) * 10000.0) as u32;
        self.prefix.push_str(&self.cached_date);
        self.prefix.push('.');
        push_zero_padded::<10>(&mut self.prefix, u64::from(fraction), 4);
        self.prefix.push(' ');
    }
}

/// The level column text, `Level::name` computed once per level met.
fn level_name(levels: &mut Vec<(i64, String)>, level: i64) -> &str {
    let index = match levels.iter().position(|(l, _)| *l == level) {
        Some(index) => index,
        None => {
            levels.push((level, Level(level).name()));
            levels.len() - 1
        }
    };
    &levels[index].1
}

fn push_line(out: &mut String, color: Option<&str>, prefix: &str, line: &str) {
    match color {
        Some(c) => {
            out.push_str("\x1b[");
            out.push_str(c);
            out.push('m');
            out.push_str(prefix);
            out.push_str(line);
            out.push_str("\x1b[39;49;0m\n");
        }
        None => {
            out.push_str(prefix);
            out.push_str(line);
            out.push('\n');
        }
    }
}

/// `{text:<width}`: padded with spaces to `width` characters.
fn push_padded(out: &mut String, text: &str, width: usize) {
    out.push_str(text);
    // Counting characters one by one is slow on the short texts met here.
    let chars = if text.is_ascii() {
        text.len()
    } else {
        text.chars().count()
    };
    const SPACES: &str = "                                ";
    let mut missing = width.saturating_sub(chars);
    while missing > 0 {
        let n = missing.min(SPACES.len());
        out.push_str(&SPACES[..n]);
        missing -= n;
    }
}

/// `{n:0width$}` in base 10 or `{n:0width$x}` in base 16, without the formatting machinery,
/// which costs more than the rest of a line. The base is a constant so that dividing by it
/// compiles to a multiplication.
fn push_zero_padded<const BASE: u64>(out: &mut String, mut n: u64, width: usize) {
    let mut digits = [b'0'; 24];
    let mut start = digits.len();
    while n > 0 || start == digits.len() {
        start -= 1;
        digits[start] = b"0123456789abcdef"[(n % BASE) as usize];
        n /= BASE;
    }
    start = start.min(digits.len().saturating_sub(width));
    // Only ASCII digits were written.
    out.push_str(std::str::from_utf8(&digits[start..]).unwrap_or_default());
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
    let mut out = String::new();
    push_uuid(&mut out, nid);
    out
}

fn push_uuid(out: &mut String, nid: i64) {
    if nid == 0 {
        out.push('0');
        return;
    }
    let letter = match nid >> 24 {
        0 => 'S',
        -0x10 => 'M',
        -0x20 => 'C',
        -0x30 => 'A',
        _ => return push_zero_padded::<16>(out, u64::from(nid as u32), 8),
    };
    out.push(letter);
    push_zero_padded::<10>(out, (nid & 0xff_ffff) as u64, 1);
}

/// The lines of a packet: `#0xID Name peer` (with `-a`, its arguments after ` \t| `), then
/// the node table of NotifyNodeInformation or the text of an Error.
#[allow(clippy::too_many_arguments)]
fn packet_lines(
    msg_id: i64,
    code: i64,
    peer: &str,
    body: Option<&[u8]>,
    name: Option<&str>,
    decode: Decode,
    lines: &mut Lines,
    decoded: &mut Decoded,
) {
    let text = &mut lines.text;
    text.push_str("#0x");
    match u64::try_from(msg_id) {
        Ok(id) => push_zero_padded::<16>(text, id, 4),
        Err(_) => {
            let _ = write!(text, "{msg_id:04x}");
        }
    }
    text.push(' ');
    match name {
        Some(name) => push_padded(text, name, 30),
        None => {
            let unknown = format!("UnknownPacket[{code}]");
            push_padded(text, &unknown, 30);
        }
    }
    text.push(' ');
    text.push_str(peer);
    // An unknown code's body is meaningless without its argument layout.
    let (Some(name), Some(body)) = (name, body) else {
        lines.end_line();
        return;
    };
    let special = matches!(name, "NotifyNodeInformation" | "Error");
    if !special && decode == Decode::None {
        lines.end_line();
        return;
    }
    let known = decoded
        .key
        .as_ref()
        .is_some_and(|(n, d, b)| n == name && *d == decode && b == body);
    if !known {
        decoded.key = Some((name.to_owned(), decode, body.to_vec()));
        decoded.decode(name, body, decode);
    }
    lines.text.push_str(&decoded.suffix);
    lines.end_line();
    for line in decoded.extra.iter() {
        lines.push_line(line);
    }
}

impl Decoded {
    fn decode(&mut self, name: &str, body: &[u8], decode: Decode) {
        self.suffix.clear();
        self.extra.clear();
        let args = match Value::from_bytes(&Bytes::copy_from_slice(body)) {
            Ok(Value::Array(args)) => args,
            _ => return self.extra.push_line("Can't decode packet"),
        };
        let mut table = None;
        let args = match name {
            "NotifyNodeInformation" => match args.as_slice() {
                [timestamp, Value::Array(nodes)] => {
                    table = Some(nodes);
                    vec![timestamp.clone()]
                }
                _ => return self.extra.push_line("Can't decode packet"),
            },
            "Error" => {
                match args.as_slice() {
                    [code, message] => {
                        let line = format!("{} ({})", py_str(code), py_repr(message));
                        self.extra.push_line(&line);
                    }
                    _ => self.extra.push_line("Can't decode packet"),
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
            self.suffix.push_str(" \t| ");
            write_repr(&Value::Array(args), &mut self.suffix);
        }
        if let Some(nodes) = table {
            self.node_list(nodes);
        }
    }

    /// NEO/py's node-list table: sorted by NID (nodes without one last, by address), columns
    /// padded to the widest value of this list. Cells are written into one scratch buffer.
    fn node_list(&mut self, nodes: &[Value]) {
        let Decoded {
            cells,
            rows,
            utc,
            extra: lines,
            ..
        } = self;
        cells.clear();
        rows.clear();
        for node in nodes {
            let fields: &[Value] = match node {
                Value::Array(fields) => fields,
                _ => &[],
            };
            let field = |i: usize| fields.get(i).unwrap_or(&Value::Nil);
            let nid = match field(2) {
                Value::Int(n) => Some(*n),
                _ => None,
            };
            let mut spans = [(0, 0); 5];
            let mut cell =
                |index: usize, cells: &mut String, write: &mut dyn FnMut(&mut String)| {
                    let start = cells.len();
                    write(cells);
                    spans[index] = (start, cells.len());
                };
            cell(0, cells, &mut |out| match nid {
                Some(n) => push_uuid(out, n as i64),
                None => out.push_str("None"),
            });
            cell(1, cells, &mut |out| push_py_str(field(0), out));
            cell(2, cells, &mut |out| push_address(field(1), out));
            cell(3, cells, &mut |out| push_py_str(field(3), out));
            cell(4, cells, &mut |out| match field(4) {
                Value::F64(t) if *t != 0.0 => utc.push(*t, out),
                Value::Nil => out.push_str("None"),
                other => push_py_str(other, out),
            });
            rows.push((nid, spans));
        }
        let text = |span: (usize, usize)| &cells[span.0..span.1];
        rows.sort_by(|a, b| match (a.0, b.0) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => text(a.1[2]).cmp(text(b.1[2])),
        });
        let mut widths = [0; 4];
        for (i, width) in widths.iter_mut().enumerate() {
            *width = rows
                .iter()
                .map(|(_, spans)| text(spans[i]).chars().count())
                .max()
                .unwrap_or(0);
        }
        for (_, spans) in rows.iter() {
            lines.text.push_str(" ! ");
            for (i, width) in widths.iter().enumerate() {
                push_padded(&mut lines.text, text(spans[i]), *width);
                lines.text.push_str(" | ");
            }
            lines.text.push_str(text(spans[4]));
            lines.ends.push(lines.text.len());
        }
    }
}

fn push_address(value: &Value, out: &mut String) {
    if let Value::Array(parts) = value {
        match parts.as_slice() {
            [Value::Bin(host), Value::Int(port)] => {
                let host = String::from_utf8_lossy(host);
                let bracket = host.contains(':');
                if bracket {
                    out.push('[');
                }
                out.push_str(&host);
                if bracket {
                    out.push(']');
                }
                out.push(':');
                push_int(out, *port);
            }
            _ => write_repr(value, out),
        }
    }
}

/// Python's `str(datetime.utcfromtimestamp(t))`, with the text of the last second kept.
#[derive(Default)]
struct UtcCache {
    second: Option<i64>,
    /// `%Y-%m-%d %H:%M:%S` of `second`, or empty if out of chrono's range.
    text: String,
}

impl UtcCache {
    /// Appends the date of `timestamp`: microseconds rounded, shown if not zero.
    fn push(&mut self, timestamp: f64, out: &mut String) {
        let mut seconds = timestamp.floor() as i64;
        let mut micros = ((timestamp - timestamp.floor()) * 1e6).round_ties_even() as i64;
        if micros >= 1_000_000 {
            seconds += 1;
            micros -= 1_000_000;
        }
        if self.second != Some(seconds) {
            self.second = Some(seconds);
            self.text.clear();
            if let Some(time) = chrono::DateTime::from_timestamp(seconds, 0) {
                let _ = write!(self.text, "{}", time.format("%Y-%m-%d %H:%M:%S"));
            }
        }
        if self.text.is_empty() {
            out.push_str(&py_float(timestamp));
            return;
        }
        out.push_str(&self.text);
        if micros != 0 {
            out.push('.');
            push_zero_padded::<10>(out, micros as u64, 6);
        }
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
    let mut out = String::new();
    push_py_str(value, &mut out);
    out
}

fn push_py_str(value: &Value, out: &mut String) {
    match value {
        Value::Enum(e) => out.push_str(enum_member(e)),
        other => write_repr(other, out),
    }
}

/// The member name of an enum value, e.g. `RUNNING` for `NodeStates.RUNNING`.
fn enum_member(value: &EnumValue) -> &'static str {
    match *value {
        EnumValue::CellState(v) => v.py_name(),
        EnumValue::ClusterState(v) => v.py_name(),
        EnumValue::ErrorCode(v) => v.py_name(),
        EnumValue::NodeState(v) => v.py_name(),
        EnumValue::NodeType(v) => v.py_name(),
    }
}

/// An integer as Python prints it.
fn push_int(out: &mut String, n: i128) {
    match u64::try_from(n) {
        Ok(n) => push_zero_padded::<10>(out, n, 1),
        Err(_) => {
            let _ = write!(out, "{n}");
        }
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
        Value::Int(i) => push_int(out, *i),
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
            let _ = write!(out, "<EnumItem {} ({})>", enum_member(e), e.value());
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
