//! The `protocol` table: what a reader needs to name the packets of a log.
//!
//! NEO/py stores there the bzip2-compressed Python source of its protocol module and its
//! neolog executes it. We never execute anything. Our logger stores a generated description
//! whose `FORMAT` and `PACKETS` lines are plain data for our reader; the rest of the text is
//! valid Python so that NEO/py's neolog, which runs the text, can still name and decode our
//! packets. For NEO/py's logs the reader scans the stored source: inside `class Packets`,
//! each `notify(...)`/`request(...)` registration takes the next code in source order.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Read;

use neo_protocol::{
    CellState, ClusterState, ErrorCode, NodeState, NodeType, PACKET_TABLE, RESPONSE_MASK,
};

/// The version of our description. A reader meeting a larger number refuses to guess.
pub const PROTOCOL_FORMAT: u32 = 1;

/// The first line of our description, used to tell it from NEO/py's source.
const MARKER: &str = "# NEO-rs protocol description";

/// A stored description is small (NEO/py's is about 20 KiB compressed to 15); this bound
/// keeps a hostile file from exhausting memory through a bzip2 bomb.
const MAX_DESCRIPTION_BYTES: u64 = 16 << 20;

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum ProtocolError {
    #[error("protocol description is not bzip2 data: {0}")]
    NotBzip2(String),
    #[error("protocol description has format {found}, newer than the {PROTOCOL_FORMAT} this reader knows")]
    NewerFormat { found: u32 },
    #[error("protocol description has no packet table that this reader recognises")]
    Unrecognised,
}

/// Packet code to packet name, as recovered from one protocol row.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PacketNames {
    names: HashMap<u16, String>,
}

impl PacketNames {
    /// The table of the protocol this build speaks.
    pub fn builtin() -> PacketNames {
        PacketNames {
            names: PACKET_TABLE
                .iter()
                .map(|(code, name, _)| (*code, (*name).to_owned()))
                .collect(),
        }
    }

    pub fn name(&self, code: u16) -> Option<&str> {
        self.names.get(&code).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Reads a stored `protocol.text` value: bzip2, then our format or NEO/py's source.
    pub fn from_stored(text: &[u8]) -> Result<PacketNames, ProtocolError> {
        let mut source = Vec::new();
        bzip2::read::BzDecoder::new(text)
            .take(MAX_DESCRIPTION_BYTES)
            .read_to_end(&mut source)
            .map_err(|e| ProtocolError::NotBzip2(e.to_string()))?;
        PacketNames::from_source(&String::from_utf8_lossy(&source))
    }

    /// Reads a decompressed description.
    pub fn from_source(source: &str) -> Result<PacketNames, ProtocolError> {
        if source.starts_with(MARKER) {
            parse_ours(source)
        } else {
            scan_python_registry(source)
        }
    }
}

/// The bzip2-compressed description our logger stores in `protocol.text`.
pub fn stored_description() -> Vec<u8> {
    use std::io::Write;
    let text = description();
    let mut encoder = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
    // Writing to a Vec cannot fail; the error arms only exist for real files.
    encoder
        .write_all(text.as_bytes())
        .expect("bzip2 into memory");
    encoder.finish().expect("bzip2 into memory")
}

/// The description text: data lines first, then a small Python part for NEO/py's neolog.
pub fn description() -> String {
    let mut text = String::new();
    let _ = writeln!(text, "{MARKER}, for NEO log files.");
    text.push_str(
        "# Readers should take FORMAT and PACKETS below as data, one entry per line.\n\
         # The rest is Python so that readers which execute this text can decode packets.\n",
    );
    let _ = writeln!(text, "FORMAT = {PROTOCOL_FORMAT}");
    text.push_str("PACKETS = {\n");
    for (code, name, _) in PACKET_TABLE {
        let _ = writeln!(text, "    0x{code:04x}: '{name}',");
    }
    text.push_str("}\n");
    let enums: [Vec<&str>; 5] = [
        CellState::ALL.iter().map(|v| v.py_name()).collect(),
        ClusterState::ALL.iter().map(|v| v.py_name()).collect(),
        ErrorCode::ALL.iter().map(|v| v.py_name()).collect(),
        NodeState::ALL.iter().map(|v| v.py_name()).collect(),
        NodeType::ALL.iter().map(|v| v.py_name()).collect(),
    ];
    text.push_str("ENUMS = (\n");
    for names in &enums {
        let quoted: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
        let _ = writeln!(text, "    ({},),", quoted.join(", "));
    }
    text.push_str(")\n");
    text.push_str(PYTHON_PART);
    text
}

/// Written for this project: the objects NEO/py's neolog looks up in the namespace it
/// executes (`Packets`, `uuid_str`, `Unpacker`), built from the data above.
const PYTHON_PART: &str = r#"
import datetime, msgpack

def uuid_str(nid):
    if not nid:
        return str(nid)
    letter = {0: 'S', -16: 'M', -32: 'C', -48: 'A'}.get(nid >> 24)
    return letter + str(nid & 0xffffff) if letter else '%08x' % (nid & 0xffffffff)

class EnumItem(int):
    def __str__(self):
        return self.name
    def __repr__(self):
        return '<EnumItem %s (%d)>' % (self.name, self)

def _ext_hook(ext, payload):
    value = msgpack.unpackb(payload)
    item = EnumItem(value)
    item.name = ENUMS[ext][value]
    return item

def Unpacker(**kw):
    return msgpack.Unpacker(ext_hook=_ext_hook, **kw)

def _address(address):
    if not address:
        return ''
    host = address[0].decode()
    return ('[%s]:%s' if ':' in host else '%s:%s') % (host, address[1])

def _node_lines(timestamp, node_list):
    rows = [(uuid_str(n[2]), str(n[0]), _address(n[1]), str(n[3]),
             str(n[4] and datetime.datetime.utcfromtimestamp(n[4])))
            for n in sorted(node_list,
                            key=lambda n: (1, n[1]) if n[2] is None else (0, n[2]))]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return (timestamp,), [' ! ' + ' | '.join(
        [row[i].ljust(widths[i]) for i in range(4)] + [row[4]]) for row in rows]

Packets = dict((code, type(name, (), {'_code': code}))
               for code, name in PACKETS.items())
Packets[0x0006]._neolog = staticmethod(_node_lines)
Packets[0x8000]._neolog = staticmethod(
    lambda code, message: ((), ['%s (%s)' % (code, message)]))
"#;

fn parse_ours(source: &str) -> Result<PacketNames, ProtocolError> {
    let format = source
        .lines()
        .find_map(|line| line.strip_prefix("FORMAT = "))
        .and_then(|n| n.trim().parse::<u32>().ok())
        .ok_or(ProtocolError::Unrecognised)?;
    if format > PROTOCOL_FORMAT {
        return Err(ProtocolError::NewerFormat { found: format });
    }
    let mut names = HashMap::new();
    let mut in_table = false;
    for line in source.lines() {
        if line == "PACKETS = {" {
            in_table = true;
        } else if in_table && line == "}" {
            break;
        } else if in_table {
            let entry = line.trim().trim_end_matches(',');
            let Some((code, name)) = entry.split_once(": ") else {
                continue;
            };
            let Some(code) = code
                .strip_prefix("0x")
                .and_then(|c| u16::from_str_radix(c, 16).ok())
            else {
                continue;
            };
            names.insert(code, name.trim_matches('\'').to_owned());
        }
    }
    if names.is_empty() {
        return Err(ProtocolError::Unrecognised);
    }
    Ok(PacketNames { names })
}

/// Statically recovers the code table from NEO/py's `protocol.py`.
///
/// The registry class body is a run of statements `Name = notify(doc, ...)` and
/// `Req, Ans = request(doc, ...)` (or `Name = request(doc, ..., error=True)`, answered by
/// Error); every registration takes the next code from 0, answers add 0x8000, and the
/// first, the error registration, is stored at 0x8000 itself.
fn scan_python_registry(source: &str) -> Result<PacketNames, ProtocolError> {
    let start = source
        .find("\nclass Packets(")
        .ok_or(ProtocolError::Unrecognised)?;
    let body = &source[start + 1..];
    let mut names = HashMap::new();
    let mut next_code: u16 = 0;
    let mut pos = body.find('\n').map(|i| i + 1).unwrap_or(body.len());
    while pos < body.len() {
        let line_end = body[pos..]
            .find('\n')
            .map(|i| pos + i)
            .unwrap_or(body.len());
        let line = &body[pos..line_end];
        let starts_class_end = line
            .chars()
            .next()
            .is_some_and(|c| !c.is_whitespace() && c != '#');
        if starts_class_end {
            break;
        }
        if let Some((targets, func, call_start)) = registration(line) {
            let call_end = skip_call(body, pos + call_start);
            let call = &body[pos + call_start..call_end];
            let error = call_arguments_outside_strings(call)
                .replace(' ', "")
                .contains("error=True");
            let code = next_code;
            next_code = next_code
                .checked_add(1)
                .ok_or(ProtocolError::Unrecognised)?;
            match (func, targets.as_slice()) {
                ("notify", [name]) if error => {
                    names.insert(RESPONSE_MASK, name.clone());
                }
                ("notify", [name]) | ("request", [name]) => {
                    names.insert(code, name.clone());
                }
                ("request", [request, answer]) => {
                    names.insert(code, request.clone());
                    names.insert(code | RESPONSE_MASK, answer.clone());
                }
                _ => return Err(ProtocolError::Unrecognised),
            }
            pos = call_end;
            pos = body[pos..]
                .find('\n')
                .map(|i| pos + i + 1)
                .unwrap_or(body.len());
        } else {
            pos = line_end + 1;
        }
    }
    if names.is_empty() {
        return Err(ProtocolError::Unrecognised);
    }
    Ok(PacketNames { names })
}

/// Matches `    A, B = request(` or `    A = notify(` at the start of a line and returns the
/// targets, the function and the offset of the opening parenthesis.
fn registration(line: &str) -> Option<(Vec<String>, &'static str, usize)> {
    let indent = line.len() - line.trim_start().len();
    let (lhs, rhs) = line.split_once('=')?;
    let rhs_offset = lhs.len() + 1;
    let rhs_trimmed = rhs.trim_start();
    let func = ["notify", "request"]
        .into_iter()
        .find(|f| rhs_trimmed.starts_with(&format!("{f}(")))?;
    if indent == 0 || lhs.contains('(') || lhs.contains('.') {
        return None;
    }
    let targets: Vec<String> = lhs.split(',').map(|t| t.trim().to_owned()).collect();
    if targets
        .iter()
        .any(|t| t.is_empty() || !t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
    {
        return None;
    }
    let paren = rhs_offset + (rhs.len() - rhs_trimmed.len()) + func.len();
    Some((targets, func, paren))
}

/// Returns the offset just past the parenthesis that closes the one at `open`, skipping
/// string literals so that parentheses inside docstrings do not count.
fn skip_call(text: &str, open: usize) -> usize {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = open;
    while i < bytes.len() {
        match bytes[i] {
            b'(' => depth += 1,
            b')' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return i + 1;
                }
            }
            quote @ (b'"' | b'\'') => {
                i = skip_string(bytes, i, quote);
                continue;
            }
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    bytes.len()
}

fn skip_string(bytes: &[u8], start: usize, quote: u8) -> usize {
    let triple = bytes.get(start..start + 3) == Some(&[quote, quote, quote][..]);
    let mut i = start + if triple { 3 } else { 1 };
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            i += 2;
            continue;
        }
        if bytes[i] == quote {
            if !triple {
                return i + 1;
            }
            if bytes.get(i..i + 3) == Some(&[quote, quote, quote][..]) {
                return i + 3;
            }
        }
        if !triple && bytes[i] == b'\n' {
            return i;
        }
        i += 1;
    }
    bytes.len()
}

fn call_arguments_outside_strings(call: &str) -> String {
    let bytes = call.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            quote @ (b'"' | b'\'') => i = skip_string(bytes, i, quote),
            c => {
                out.push(c as char);
                i += 1;
            }
        }
    }
    out
}

/// Where a packet kind carries object data, as `neolog -A` needs it: the index path to the
/// `compression` argument, followed by `checksum` and `data`. Keyed by name so that it also
/// applies to names recovered from NEO/py's logs.
pub fn data_path(name: &str) -> Option<&'static [usize]> {
    match name {
        "AskStoreObject" | "AddObject" => Some(&[2]),
        "AnswerObject" => Some(&[3]),
        "AnswerRelockObject" => Some(&[0, 2, 0]),
        _ => None,
    }
}
