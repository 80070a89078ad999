//! Just enough of Python's pickle machine to read ZODB records without
//! Python: the persistent references a record holds (what ZODB's
//! `referencesf`/`get_refs` find with a "noload" unpickler) and the class
//! name of the object (`get_pickle_metadata`).
//!
//! Nothing is imported or constructed: classes, reduced objects and the
//! like become opaque values. A record is two pickles that share one memo
//! (class metadata, then state), so the machine runs twice over one stream.

use std::collections::HashMap;

/// A persistent reference found in a pickle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// The 8-byte oid (other lengths are kept as found).
    pub oid: Vec<u8>,
    /// Class information carried by the reference, when it is a
    /// `(module, name)` pair of strings (a class object reads as `None`, as
    /// under ZODB's noload).
    pub class: Option<(String, String)>,
}

#[derive(Clone, Debug, PartialEq)]
enum Value {
    Bytes(Vec<u8>),
    Str(String),
    Int,
    Scalar,
    Tuple(Vec<Value>),
    List,
    Dict,
    Opaque,
    Mark,
}

#[derive(Debug, PartialEq, Eq)]
pub struct PickleError(pub String);

/// Persistent references of a ZODB record (both pickles), in order, with
/// weak and cross-database references left out as `referencesf` does.
pub fn references(record: &[u8]) -> Result<Vec<Reference>, PickleError> {
    let mut machine = Machine::new(record);
    machine.run()?;
    machine.run()?;
    Ok(machine.refs)
}

/// Module and class name of the object, as ZODB's `get_pickle_metadata`
/// reports them (empty strings when they cannot be told).
pub fn class_name(record: &[u8]) -> (String, String) {
    let mut data = record;
    if data.first() == Some(&0x80) {
        data = data.get(2..).unwrap_or(&[]);
    }
    let prefix = if data.starts_with(b"(c") {
        2
    } else if data.starts_with(b"c") {
        1
    } else {
        0
    };
    if prefix > 0 {
        let mut lines = data[prefix..].splitn(3, |b| *b == b'\n');
        let module = lines.next().unwrap_or_default();
        let name = lines.next().unwrap_or_default();
        return (
            String::from_utf8_lossy(module).into_owned(),
            String::from_utf8_lossy(name).into_owned(),
        );
    }
    // Other forms: ((module, name), args) or (module, name).
    let mut machine = Machine::new(record);
    machine.keep_class_strings = true;
    let Ok(value) = machine.run_value() else {
        return (String::new(), String::new());
    };
    match value {
        Value::Tuple(items) => {
            let pair = match items.first() {
                Some(Value::Tuple(inner)) => inner.clone(),
                _ => items,
            };
            match pair.as_slice() {
                [Value::Str(module), Value::Str(name)] => (module.clone(), name.clone()),
                _ => (String::new(), String::new()),
            }
        }
        _ => (String::new(), String::new()),
    }
}

struct Machine<'a> {
    input: &'a [u8],
    at: usize,
    stack: Vec<Value>,
    memo: HashMap<u64, Value>,
    refs: Vec<Reference>,
    keep_class_strings: bool,
}

impl<'a> Machine<'a> {
    fn new(input: &'a [u8]) -> Machine<'a> {
        Machine {
            input,
            at: 0,
            stack: Vec::new(),
            memo: HashMap::new(),
            refs: Vec::new(),
            keep_class_strings: false,
        }
    }

    fn run(&mut self) -> Result<(), PickleError> {
        self.run_value().map(|_| ())
    }

    /// Runs one pickle up to its STOP and returns the value left on top.
    fn run_value(&mut self) -> Result<Value, PickleError> {
        self.stack.clear();
        loop {
            let op = self.byte()?;
            match op {
                b'.' => return Ok(self.stack.pop().unwrap_or(Value::Opaque)),
                0x80 => {
                    self.byte()?;
                }
                0x95 => {
                    self.take(8)?;
                }
                b'(' => self.stack.push(Value::Mark),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let top = self
                        .stack
                        .last()
                        .cloned()
                        .ok_or_else(|| self.err("DUP on an empty stack"))?;
                    self.stack.push(top);
                }
                b'N' | 0x88 | 0x89 => self.stack.push(Value::Scalar),
                b'I' | b'L' => {
                    self.line()?;
                    self.stack.push(Value::Int);
                }
                b'F' => {
                    self.line()?;
                    self.stack.push(Value::Scalar);
                }
                b'J' => self.skip_push(4, Value::Int)?,
                b'K' => self.skip_push(1, Value::Int)?,
                b'M' => self.skip_push(2, Value::Int)?,
                b'G' => self.skip_push(8, Value::Scalar)?,
                0x8a => {
                    let n = self.byte()? as usize;
                    self.skip_push(n, Value::Int)?;
                }
                0x8b => {
                    let n = self.u32le()? as usize;
                    self.skip_push(n, Value::Int)?;
                }
                b'S' => {
                    let line = self.line()?;
                    let text =
                        unquote_string(line).ok_or_else(|| self.err("bad STRING literal"))?;
                    self.stack.push(py2_str(text));
                }
                b'T' => {
                    let n = self.u32le()? as usize;
                    let bytes = self.take(n)?.to_vec();
                    self.stack.push(py2_str(bytes));
                }
                b'U' => {
                    let n = self.byte()? as usize;
                    let bytes = self.take(n)?.to_vec();
                    self.stack.push(py2_str(bytes));
                }
                b'V' => {
                    let line = self.line()?;
                    self.stack
                        .push(Value::Str(String::from_utf8_lossy(line).into_owned()));
                }
                b'X' => {
                    let n = self.u32le()? as usize;
                    let text = self.take(n)?;
                    self.stack
                        .push(Value::Str(String::from_utf8_lossy(text).into_owned()));
                }
                0x8c => {
                    let n = self.byte()? as usize;
                    let text = self.take(n)?;
                    self.stack
                        .push(Value::Str(String::from_utf8_lossy(text).into_owned()));
                }
                0x8d => {
                    let n = self.u64le()?;
                    let text = self.take_u64(n)?;
                    self.stack
                        .push(Value::Str(String::from_utf8_lossy(text).into_owned()));
                }
                b'B' => {
                    let n = self.u32le()? as usize;
                    let bytes = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(bytes));
                }
                b'C' => {
                    let n = self.byte()? as usize;
                    let bytes = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(bytes));
                }
                0x8e | 0x96 => {
                    let n = self.u64le()?;
                    let bytes = self.take_u64(n)?.to_vec();
                    self.stack.push(Value::Bytes(bytes));
                }
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return Err(self.err("TUPLE with too few items"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    if items.contains(&Value::Mark) {
                        return Err(self.err("TUPLE over a mark"));
                    }
                    self.stack.push(Value::Tuple(items));
                }
                b']' => self.stack.push(Value::List),
                b'l' => {
                    self.pop_mark()?;
                    self.stack.push(Value::List);
                }
                b'a' => {
                    self.pop()?;
                    self.top()?;
                }
                b'e' => {
                    self.pop_mark()?;
                    self.top()?;
                }
                b'}' => self.stack.push(Value::Dict),
                b'd' => {
                    self.pop_mark()?;
                    self.stack.push(Value::Dict);
                }
                b's' => {
                    self.pop()?;
                    self.pop()?;
                    self.top()?;
                }
                b'u' | 0x90 => {
                    self.pop_mark()?;
                    self.top()?;
                }
                0x8f => self.stack.push(Value::Opaque),
                0x91 => {
                    self.pop_mark()?;
                    self.stack.push(Value::Opaque);
                }
                b'p' => {
                    let line = self.line()?;
                    let key = parse_decimal(line).ok_or_else(|| self.err("bad PUT index"))?;
                    self.put(key)?;
                }
                b'q' => {
                    let key = self.byte()? as u64;
                    self.put(key)?;
                }
                b'r' => {
                    let key = self.u32le()? as u64;
                    self.put(key)?;
                }
                0x94 => {
                    let key = self.memo.len() as u64;
                    self.put(key)?;
                }
                b'g' => {
                    let line = self.line()?;
                    let key = parse_decimal(line).ok_or_else(|| self.err("bad GET index"))?;
                    self.get(key)?;
                }
                b'h' => {
                    let key = self.byte()? as u64;
                    self.get(key)?;
                }
                b'j' => {
                    let key = self.u32le()? as u64;
                    self.get(key)?;
                }
                b'c' => {
                    let module = String::from_utf8_lossy(self.line()?).into_owned();
                    let name = String::from_utf8_lossy(self.line()?).into_owned();
                    // Under noload a class is nothing; metadata extraction
                    // keeps the names to tell the class.
                    if self.keep_class_strings {
                        self.stack
                            .push(Value::Tuple(vec![Value::Str(module), Value::Str(name)]));
                    } else {
                        self.stack.push(Value::Opaque);
                    }
                }
                0x93 => {
                    self.pop()?;
                    self.pop()?;
                    self.stack.push(Value::Opaque);
                }
                b'R' | 0x81 => {
                    self.pop()?;
                    self.pop()?;
                    self.stack.push(Value::Opaque);
                }
                0x92 => {
                    self.pop()?;
                    self.pop()?;
                    self.pop()?;
                    self.stack.push(Value::Opaque);
                }
                b'b' => {
                    self.pop()?;
                    self.top()?;
                }
                b'i' => {
                    self.line()?;
                    self.line()?;
                    self.pop_mark()?;
                    self.stack.push(Value::Opaque);
                }
                b'o' => {
                    self.pop_mark()?;
                    self.stack.push(Value::Opaque);
                }
                0x82 => self.skip_push(1, Value::Opaque)?,
                0x83 => self.skip_push(2, Value::Opaque)?,
                0x84 => self.skip_push(4, Value::Opaque)?,
                b'Q' => {
                    let id = self.pop()?;
                    self.persistent_id(id)?;
                    self.stack.push(Value::Opaque);
                }
                b'P' => {
                    let id = self.line()?.to_vec();
                    self.persistent_id(Value::Bytes(id))?;
                    self.stack.push(Value::Opaque);
                }
                other => return Err(self.err(&format!("unknown opcode 0x{other:02x}"))),
            }
        }
    }

    fn persistent_id(&mut self, id: Value) -> Result<(), PickleError> {
        match id {
            Value::Bytes(oid) => self.refs.push(Reference { oid, class: None }),
            Value::Str(text) => self.refs.push(Reference {
                oid: latin1(&text),
                class: None,
            }),
            Value::Tuple(items) => {
                let oid = match items.first() {
                    Some(Value::Bytes(oid)) => oid.clone(),
                    Some(Value::Str(text)) => latin1(text),
                    _ => return Err(self.err("persistent id tuple without an oid")),
                };
                let class = match items.get(1) {
                    Some(Value::Tuple(pair)) => match pair.as_slice() {
                        [Value::Str(m), Value::Str(n)] => Some((m.clone(), n.clone())),
                        _ => None,
                    },
                    _ => None,
                };
                self.refs.push(Reference { oid, class });
            }
            // Weak and cross-database references are lists: not followed.
            Value::List => {}
            _ => return Err(self.err("persistent id of an unexpected type")),
        }
        Ok(())
    }

    fn put(&mut self, key: u64) -> Result<(), PickleError> {
        let top = self
            .stack
            .last()
            .cloned()
            .ok_or_else(|| self.err("PUT on an empty stack"))?;
        if top == Value::Mark {
            return Err(self.err("PUT of a mark"));
        }
        self.memo.insert(key, top);
        Ok(())
    }

    fn get(&mut self, key: u64) -> Result<(), PickleError> {
        let value = self
            .memo
            .get(&key)
            .cloned()
            .ok_or_else(|| self.err("GET of a missing memo entry"))?;
        self.stack.push(value);
        Ok(())
    }

    fn pop(&mut self) -> Result<Value, PickleError> {
        match self.stack.pop() {
            Some(Value::Mark) | None => Err(self.err("stack underflow")),
            Some(value) => Ok(value),
        }
    }

    fn top(&self) -> Result<(), PickleError> {
        match self.stack.last() {
            Some(Value::Mark) | None => Err(self.err("stack underflow")),
            Some(_) => Ok(()),
        }
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>, PickleError> {
        let at = self
            .stack
            .iter()
            .rposition(|v| *v == Value::Mark)
            .ok_or_else(|| self.err("no mark"))?;
        let items = self.stack.split_off(at + 1);
        self.stack.pop();
        Ok(items)
    }

    fn skip_push(&mut self, n: usize, value: Value) -> Result<(), PickleError> {
        self.take(n)?;
        self.stack.push(value);
        Ok(())
    }

    fn byte(&mut self) -> Result<u8, PickleError> {
        let b = *self
            .input
            .get(self.at)
            .ok_or_else(|| self.err("pickle ends before STOP"))?;
        self.at += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.input.len());
        let end = end.ok_or_else(|| self.err("pickle ends inside an argument"))?;
        let slice = &self.input[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn take_u64(&mut self, n: u64) -> Result<&'a [u8], PickleError> {
        let n = usize::try_from(n).map_err(|_| self.err("argument too large"))?;
        self.take(n)
    }

    fn u32le(&mut self) -> Result<u32, PickleError> {
        let raw = self.take(4)?;
        Ok(u32::from_le_bytes(raw.try_into().expect("4 bytes")))
    }

    fn u64le(&mut self) -> Result<u64, PickleError> {
        let raw = self.take(8)?;
        Ok(u64::from_le_bytes(raw.try_into().expect("8 bytes")))
    }

    fn line(&mut self) -> Result<&'a [u8], PickleError> {
        let rest = &self.input[self.at..];
        let n = rest
            .iter()
            .position(|b| *b == b'\n')
            .ok_or_else(|| self.err("line argument without newline"))?;
        self.at += n + 1;
        Ok(&rest[..n])
    }

    fn err(&self, what: &str) -> PickleError {
        PickleError(format!("{what} at pickle offset {}", self.at))
    }
}

/// A Python 2 `str`: ZODB reads it as text when it decodes as ASCII, which
/// for oids and names changes nothing we need.
fn py2_str(bytes: Vec<u8>) -> Value {
    if bytes.is_ascii() {
        Value::Str(String::from_utf8(bytes).expect("ascii"))
    } else {
        Value::Bytes(bytes)
    }
}

fn latin1(text: &str) -> Vec<u8> {
    text.chars().map(|c| c as u32 as u8).collect()
}

fn parse_decimal(line: &[u8]) -> Option<u64> {
    std::str::from_utf8(line).ok()?.trim().parse().ok()
}

/// Decodes a protocol-0 STRING argument: a quoted literal with escapes.
fn unquote_string(line: &[u8]) -> Option<Vec<u8>> {
    let quote = *line.first()?;
    if line.len() < 2 || !(quote == b'\'' || quote == b'"') || *line.last()? != quote {
        return None;
    }
    let inner = &line[1..line.len() - 1];
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while i < inner.len() {
        let b = inner[i];
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        let esc = *inner.get(i + 1)?;
        i += 2;
        match esc {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'\\' => out.push(b'\\'),
            b'\'' => out.push(b'\''),
            b'"' => out.push(b'"'),
            b'x' => {
                let hex = std::str::from_utf8(inner.get(i..i + 2)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b'0'..=b'7' => {
                let mut value = (esc - b'0') as u32;
                let mut digits = 1;
                while digits < 3 && i < inner.len() && (b'0'..=b'7').contains(&inner[i]) {
                    value = value * 8 + (inner[i] - b'0') as u32;
                    i += 1;
                    digits += 1;
                }
                out.push(value as u8);
            }
            other => {
                out.push(b'\\');
                out.push(other);
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn root_record_of_the_spec_example() {
        // filestorage.md §15.3: the root's state references oid 1 as
        // (oid, class) through BINPERSID.
        let record = hex(
            "80036370657273697374656e742e6d617070696e670a50657273697374656e744d617070696e670a71002e\
             80037d710158040000006461746171027d71035803000000\
             6f626a710443080000000000000001710563\
             6578616d706c650a4f626a0a7106867107517373 2e",
        );
        let refs = references(&record).unwrap();
        assert_eq!(
            refs,
            vec![Reference {
                oid: vec![0, 0, 0, 0, 0, 0, 0, 1],
                class: None
            }]
        );
        assert_eq!(
            class_name(&record),
            ("persistent.mapping".into(), "PersistentMapping".into())
        );
    }

    #[test]
    fn weak_and_cross_database_references_are_skipped() {
        // ['w', (oid,)] then a plain oid reference.
        let mut p = vec![
            0x80, 3, b'c', b'm', b'\n', b'K', b'\n', b'.', 0x80, 3, b']', b'(', 0x8c, 1, b'w',
        ];
        p.extend_from_slice(&[b'C', 8, 0, 0, 0, 0, 0, 0, 0, 5, 0x85, b'e', b'Q', b'0']);
        p.extend_from_slice(&[b'C', 8, 0, 0, 0, 0, 0, 0, 0, 7, b'Q', b'.']);
        let refs = references(&p).unwrap();
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0].oid, vec![0, 0, 0, 0, 0, 0, 0, 7]);
    }

    #[test]
    fn python2_protocol1_references() {
        // Protocol 1, oid as SHORT_BINSTRING inside a MARK/TUPLE.
        let mut p = b"cmod\nK\nq\x01.".to_vec();
        p.extend_from_slice(b"}q\x02(U\x03refq\x03(U\x08\x00\x00\x00\x00\x00\x00\x00\x09h\x01tQu.");
        let refs = references(&p).unwrap();
        assert_eq!(
            refs,
            vec![Reference {
                oid: vec![0, 0, 0, 0, 0, 0, 0, 9],
                class: None
            }]
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            &b""[..],
            b"\x80",
            b"Q.",
            b"(t",
            b"h\x05.",
            b"\xff",
            b"X\xff\xff\xff\xff",
        ] {
            assert!(references(bad).is_err(), "{bad:?}");
        }
        assert_eq!(class_name(b"\x80"), (String::new(), String::new()));
    }
}
