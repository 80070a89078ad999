//! neoctl's texts, byte for byte as NEO/py prints them (tools.md 2.4), and the JSON forms
//! of the print commands (`--json`, our addition).

use neo_node::pt::{format_rows, format_table};
use neo_node::tid::civil_from_days;
use neo_protocol::{Address, ClusterState, Nid, NodeInfo, NodeState, NodeType, Oid, Row, Tid};
use serde_json::{json, Value as Json};

/// NEO/py's `uuid_str`: `S1`, `M2`...; a missing id is `None`, zero is `0`.
pub fn nid_text(nid: Option<Nid>) -> String {
    match nid {
        None => "None".to_string(),
        Some(Nid(0)) => "0".to_string(),
        Some(nid) => nid.to_string(),
    }
}

/// `host:port`, `[host]:port` for IPv6, empty when there is none.
pub fn address_text(address: Option<&Address>) -> String {
    let Some(address) = address else {
        return String::new();
    };
    let host = String::from_utf8_lossy(&address.host);
    if host.contains(':') {
        format!("[{host}]:{}", address.port)
    } else {
        format!("{host}:{}", address.port)
    }
}

/// The node list of `print node`: sorted by NID (nodes without one last, by address),
/// columns padded to the widest value of this listing. Empty when there is no node.
pub fn node_list(nodes: &[NodeInfo]) -> Vec<String> {
    let mut nodes: Vec<&NodeInfo> = nodes.iter().collect();
    nodes.sort_by(|a, b| match (a.nid, b.nid) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => address_key(a.address.as_ref()).cmp(&address_key(b.address.as_ref())),
    });
    let rows: Vec<[String; 5]> = nodes
        .iter()
        .map(|node| {
            [
                nid_text(node.nid),
                node.node_type.py_name().to_string(),
                address_text(node.address.as_ref()),
                node.state.py_name().to_string(),
                id_timestamp_text(node.id_timestamp),
            ]
        })
        .collect();
    let mut widths = [0usize; 4];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    rows.iter()
        .map(|row| {
            let mut line = String::new();
            for (cell, width) in row.iter().zip(widths) {
                line.push_str(&format!("{cell:<width$} | "));
            }
            line.push_str(&row[4]);
            line
        })
        .collect()
}

fn address_key(address: Option<&Address>) -> (Vec<u8>, u16) {
    address.map_or((Vec::new(), 0), |a| (a.host.to_vec(), a.port))
}

/// Python's `str(t and datetime.utcfromtimestamp(t))`.
pub fn id_timestamp_text(timestamp: Option<f64>) -> String {
    match timestamp {
        None => "None".to_string(),
        Some(0.0) => "0.0".to_string(),
        Some(t) => utc_from_timestamp(t),
    }
}

/// Python's `str(datetime.utcfromtimestamp(t))`: microseconds rounded half to even.
pub fn utc_from_timestamp(t: f64) -> String {
    let mut seconds = t.trunc();
    let mut micros = ((t - seconds) * 1e6).round_ties_even();
    if micros >= 1e6 {
        seconds += 1.0;
        micros -= 1e6;
    } else if micros < 0.0 {
        seconds -= 1.0;
        micros += 1e6;
    }
    let seconds = seconds as i64;
    let days = seconds.div_euclid(86400);
    let in_day = seconds.rem_euclid(86400);
    let (year, month, day) = civil_from_days(days);
    calendar_text(
        year,
        month,
        day,
        (in_day / 3600) as u32,
        (in_day / 60 % 60) as u32,
        (in_day % 60) as u32,
        micros as u32,
    )
}

/// NEO/py's `datetimeFromTID`, printed as `str(datetime)`.
pub fn tid_time(tid: Tid) -> String {
    let mut high = tid.0 >> 32;
    let minute = (high % 60) as u32;
    high /= 60;
    let hour = (high % 24) as u32;
    high /= 24;
    let day = (high % 31) as u32 + 1;
    high /= 31;
    let month = (high % 12) as u32 + 1;
    let year = (high / 12) as i64 + 1900;
    let scaled = (tid.0 & 0xffff_ffff) * 60;
    let second = (scaled >> 32) as u32;
    // The same float product as NEO/py, truncated the same way.
    let micros = ((scaled & 0xffff_ffff) as f64 * (1e6 / 4_294_967_296.0)) as u32;
    calendar_text(year, month, day, hour, minute, second, micros)
}

fn calendar_text(
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    micros: u32,
) -> String {
    let mut text = format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02}");
    if micros != 0 {
        text.push_str(&format!(".{micros:06}"));
    }
    text
}

/// `print pt`: the header, then the full view (one line per storage) when `min` and
/// `max` are both 0, else one line per partition from `min`. `storages` is the storage
/// node list the full view needs (NEO/py asks it separately).
pub fn partition_table(
    ptid: Option<u64>,
    replicas: u32,
    rows: &[Row],
    min: u32,
    max: u32,
    storages: &[NodeInfo],
) -> String {
    let body = if min != 0 || max != 0 {
        format_rows(rows, min).join("\n")
    } else {
        table(rows, storages)
    };
    let ptid = ptid.map_or_else(|| "None".to_string(), |p| p.to_string());
    format!("# ptid: {ptid}, replicas: {replicas}\n{body}")
}

/// The full view of a table (also what `tweak` prints).
pub fn table(rows: &[Row], storages: &[NodeInfo]) -> String {
    let states: Vec<(Nid, NodeState)> = storages
        .iter()
        .filter(|n| n.node_type == NodeType::Storage)
        .filter_map(|n| Some((n.nid?, n.state)))
        .collect();
    format_table(rows, &states).join("\n")
}

/// `print ids`. `backup_tid` comes from AskRecovery; in backup mode `last_tid` is the
/// answer to AskLastTransaction and `last_oid` is not asked.
pub fn ids(
    ptid: Option<u64>,
    backup_tid: Option<Tid>,
    last_tid: Tid,
    last_oid: Option<Oid>,
) -> String {
    let first = match backup_tid {
        Some(tid) => format!("backup_tid = 0x{:x} ({})", tid.0, tid_time(tid)),
        None => format!("last_oid = 0x{:x}", last_oid.unwrap_or(Oid::ZERO).0),
    };
    let ptid = ptid.map_or_else(|| "None".to_string(), |p| p.to_string());
    format!(
        "{first}\nlast_tid = 0x{:x} ({})\nlast_ptid = {ptid}",
        last_tid.0,
        tid_time(last_tid)
    )
}

/// `print cluster`.
pub fn cluster_state(state: Option<ClusterState>) -> String {
    state.map_or_else(|| "None".to_string(), |s| s.py_name().to_string())
}

/// `print summary`: `# ` and the JSON of the non-empty severities, then the text.
pub fn summary(warning: &[Option<String>], problem: &[Option<String>], text: &str) -> String {
    let mut fields = Vec::new();
    for (key, names) in [("warning", warning), ("problem", problem)] {
        if !names.is_empty() {
            let names: Vec<String> = names
                .iter()
                .map(|n| {
                    n.as_deref()
                        .map_or_else(|| "null".to_string(), py_json_string)
                })
                .collect();
            fields.push(format!("\"{key}\": [{}]", names.join(", ")));
        }
    }
    format!("# {{{}}}\n{text}", fields.join(", "))
}

/// Python's `json.dumps` of a string (ASCII only, `\uXXXX` escapes).
fn py_json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

// ---------------------------------------------------------------------------------------
// JSON forms (`--json`): one object per command, ids as their text forms.

pub fn node_list_json(nodes: &[NodeInfo]) -> Json {
    let mut nodes: Vec<&NodeInfo> = nodes.iter().collect();
    nodes.sort_by_key(|n| (n.nid.is_none(), n.nid, address_key(n.address.as_ref())));
    Json::Array(
        nodes
            .iter()
            .map(|n| {
                json!({
                    "nid": n.nid.map(|nid| nid_text(Some(nid))),
                    "type": n.node_type.py_name(),
                    "address": n.address.as_ref().map(|a| address_text(Some(a))),
                    "state": n.state.py_name(),
                    "id_timestamp": n.id_timestamp,
                })
            })
            .collect(),
    )
}

pub fn partition_table_json(ptid: Option<u64>, replicas: u32, rows: &[Row], first: u32) -> Json {
    json!({
        "ptid": ptid,
        "replicas": replicas,
        "rows": rows_json(rows, first),
    })
}

pub fn rows_json(rows: &[Row], first: u32) -> Json {
    Json::Array(
        rows.iter()
            .enumerate()
            .map(|(i, row)| {
                json!({
                    "partition": first as u64 + i as u64,
                    "cells": row.iter().map(|c| json!({
                        "nid": nid_text(Some(c.nid)),
                        "state": c.state.py_name(),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

pub fn ids_json(
    ptid: Option<u64>,
    backup_tid: Option<Tid>,
    last_tid: Tid,
    last_oid: Option<Oid>,
) -> Json {
    json!({
        "backup_tid": backup_tid.map(|t| t.to_string()),
        "last_oid": last_oid.map(|o| o.to_string()),
        "last_tid": last_tid.to_string(),
        "last_tid_time": tid_time(last_tid),
        "last_ptid": ptid,
    })
}

pub fn summary_json(warning: &[Option<String>], problem: &[Option<String>], text: &str) -> Json {
    json!({
        "warning": warning,
        "problem": problem,
        "summary": text,
    })
}
