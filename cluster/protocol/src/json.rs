//! The JSON form of values and packets used by the test vectors and by `neoproto`:
//! `{"bin": hex}`, `{"f64": hex, "approx": n}`, `{"enum": "NodeTypes.STORAGE", "ext": 4,
//! "value": 1}`, `{"map": [[k, v], ...]}`, `{"str": text}`, and plain JSON for nil, booleans,
//! integers and arrays. A packet is `{"packet": NAME, "code": N, "msg_id": N, "args": [...]}`.

use serde_json::{json, Map, Value as Json};
use thiserror::Error;

use crate::codec::Message;
use crate::msgpack::Value;
use crate::packets::{packet_code, packet_name, Packet};
use crate::types::EnumValue;

/// Why a JSON text does not describe a value or a packet.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum JsonError {
    #[error("{0} is not a value of the JSON form")]
    BadValue(String),
    #[error("bad hex string {0:?}")]
    BadHex(String),
    #[error("unknown enum member {0:?}")]
    UnknownEnum(String),
    #[error("{0}")]
    BadPacket(String),
    #[error("arguments do not match the packet: {0}")]
    Arguments(#[from] crate::error::DecodeError),
}

/// The JSON form of a value.
pub fn value_to_json(value: &Value) -> Json {
    match value {
        Value::Nil => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(v) if *v >= 0 => json!(*v as u64),
        Value::Int(v) => json!(*v as i64),
        Value::F64(f) => {
            // `approx` is informative; a non-finite float has no JSON number, so it gets null.
            let approx = serde_json::Number::from_f64(*f)
                .map(Json::Number)
                .unwrap_or(Json::Null);
            json!({"f64": hex(&f.to_bits().to_be_bytes()), "approx": approx})
        }
        Value::Bin(b) => json!({ "bin": hex(b) }),
        Value::Str(s) => json!({ "str": s }),
        Value::Array(items) => Json::Array(items.iter().map(value_to_json).collect()),
        Value::Map(pairs) => json!({
            "map": pairs
                .iter()
                .map(|(k, v)| Json::Array(vec![value_to_json(k), value_to_json(v)]))
                .collect::<Vec<_>>()
        }),
        Value::Enum(e) => json!({"enum": e.qualified_name(), "ext": e.ext(), "value": e.value()}),
    }
}

/// Reads the JSON form of a value.
pub fn value_from_json(json: &Json) -> Result<Value, JsonError> {
    let bad = || JsonError::BadValue(json.to_string());
    Ok(match json {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => {
            if let Some(v) = n.as_u64() {
                Value::Int(v as i128)
            } else if let Some(v) = n.as_i64() {
                Value::Int(v as i128)
            } else {
                return Err(bad());
            }
        }
        Json::String(_) => return Err(bad()),
        Json::Array(items) => Value::Array(
            items
                .iter()
                .map(value_from_json)
                .collect::<Result<_, _>>()?,
        ),
        Json::Object(object) => object_from_json(object).ok_or_else(bad)??,
    })
}

fn object_from_json(object: &Map<String, Json>) -> Option<Result<Value, JsonError>> {
    if let Some(Json::String(h)) = object.get("bin") {
        return Some(unhex(h).map(|b| Value::Bin(b.into())));
    }
    if let Some(Json::String(s)) = object.get("str") {
        return Some(Ok(Value::Str(s.clone())));
    }
    if let Some(Json::String(h)) = object.get("f64") {
        return Some(unhex(h).and_then(|b| {
            let bits: [u8; 8] = b.try_into().map_err(|_| JsonError::BadHex(h.clone()))?;
            Ok(Value::F64(f64::from_bits(u64::from_be_bytes(bits))))
        }));
    }
    if let Some(Json::String(name)) = object.get("enum") {
        let member = EnumValue::from_qualified_name(name);
        // The ext and value given must agree with the name, when given.
        let consistent = member.filter(|m| {
            object
                .get("ext")
                .is_none_or(|e| e.as_i64() == Some(m.ext() as i64))
                && object
                    .get("value")
                    .is_none_or(|v| v.as_u64() == Some(m.value() as u64))
        });
        return Some(
            consistent
                .map(Value::Enum)
                .ok_or_else(|| JsonError::UnknownEnum(name.clone())),
        );
    }
    if let Some(Json::Array(pairs)) = object.get("map") {
        let pairs = pairs
            .iter()
            .map(|pair| match pair.as_array().map(|p| p.as_slice()) {
                Some([k, v]) => Ok((value_from_json(k)?, value_from_json(v)?)),
                _ => Err(JsonError::BadValue(pair.to_string())),
            })
            .collect::<Result<Vec<_>, _>>();
        return Some(pairs.map(Value::Map));
    }
    None
}

/// The JSON form of a packet, as one line with the keys in the documented order.
pub fn message_to_json_line(message: &Message) -> Result<String, crate::error::DecodeError> {
    let args: Vec<Json> = message
        .packet
        .args_value()?
        .iter()
        .map(value_to_json)
        .collect();
    Ok(format!(
        "{{\"packet\": {}, \"code\": {}, \"msg_id\": {}, \"args\": {}}}",
        Json::String(message.packet.name().to_owned()),
        message.packet.code(),
        message.msg_id,
        Json::Array(args)
    ))
}

/// Reads the JSON form of a packet. `packet` and `code` must agree when both are given;
/// either one suffices.
pub fn message_from_json(json: &Json) -> Result<Message, JsonError> {
    let bad = |why: &str| JsonError::BadPacket(format!("{why} in {json}"));
    let object = json.as_object().ok_or_else(|| bad("not an object"))?;
    let by_name = match object.get("packet") {
        Some(Json::String(name)) => {
            Some(packet_code(name).ok_or_else(|| bad("unknown packet name"))?)
        }
        Some(_) => return Err(bad("\"packet\" is not a string")),
        None => None,
    };
    let by_code = match object.get("code") {
        Some(code) => {
            let code = code
                .as_u64()
                .and_then(|c| u16::try_from(c).ok())
                .filter(|&c| packet_name(c).is_some())
                .ok_or_else(|| bad("unknown packet code"))?;
            Some(code)
        }
        None => None,
    };
    let code = match (by_name, by_code) {
        (Some(a), Some(b)) if a != b => return Err(bad("\"packet\" and \"code\" disagree")),
        (Some(c), _) | (None, Some(c)) => c,
        (None, None) => return Err(bad("no \"packet\" nor \"code\"")),
    };
    let msg_id = object
        .get("msg_id")
        .and_then(|m| m.as_u64())
        .and_then(|m| u32::try_from(m).ok())
        .ok_or_else(|| bad("missing or bad \"msg_id\""))?;
    let args = match object.get("args") {
        Some(Json::Array(items)) => items
            .iter()
            .map(value_from_json)
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err(bad("missing \"args\" array")),
    };
    let packet = Packet::from_args_value(code, &args)?;
    Ok(Message { msg_id, packet })
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

pub fn unhex(text: &str) -> Result<Vec<u8>, JsonError> {
    let bad = || JsonError::BadHex(text.chars().take(64).collect());
    let digits = text.as_bytes();
    if digits.len() % 2 != 0 {
        return Err(bad());
    }
    digits
        .chunks(2)
        .map(|pair| {
            let high = (pair[0] as char).to_digit(16).ok_or_else(bad)?;
            let low = (pair[1] as char).to_digit(16).ok_or_else(bad)?;
            Ok((high * 16 + low) as u8)
        })
        .collect()
}
