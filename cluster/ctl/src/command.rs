//! The command words and arguments of neoctl (tools.md 2.2-2.3), parsed the way NEO/py
//! parses them: words walk a fixed tree, what follows a leaf are its parameters.

use neo_protocol::{ClusterState, Nid, NodeType, Tid};

/// One neoctl command, its arguments parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// No command: print the command list.
    List,
    /// `--help` after some command words: the list of that branch.
    Help(Vec<String>),
    PrintIds,
    PrintPt {
        min: u32,
        max: u32,
        node: Option<Nid>,
    },
    PrintNode(Option<NodeType>),
    PrintCluster,
    PrintPrimary,
    PrintSummary,
    SetCluster(ClusterState),
    SetReplicas(u32),
    Start,
    Add(Storages),
    Tweak {
        dry_run: bool,
        nodes: Vec<Nid>,
    },
    Kill(Nid),
    Drop(Nid),
    PruneOrphan {
        dry_run: bool,
        nodes: Storages,
    },
    Truncate(Tid),
    Check {
        partitions: Vec<CheckPartition>,
        min_tid: Tid,
        max_tid: Option<Tid>,
    },
    FlushLog,
}

/// A list of storage nodes, or `all` (every storage node the admin knows).
#[derive(Debug, Clone, PartialEq)]
pub enum Storages {
    All,
    List(Vec<Nid>),
}

/// One `PART:[REF]` argument of `check`; `partition: None` (`:REF`) selects every partition.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckPartition {
    pub partition: Option<u32>,
    pub reference: Option<Nid>,
}

/// Why a command line was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum ParseError {
    /// Words that name no command (NEO/py: `invalid command: ...`, exit 1).
    InvalidCommand(String),
    /// A known command with bad arguments (a usage error, exit 2).
    Usage(String),
    /// NEO/py's own refusal of a negative replica count (exit 1).
    InvalidReplicas,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::InvalidCommand(words) => write!(f, "invalid command: {words}"),
            ParseError::Usage(message) => f.write_str(message),
            ParseError::InvalidReplicas => f.write_str("invalid number of replicas"),
        }
    }
}

/// The command tree: a branch word with its children, or a leaf with its parameter
/// synopsis and help. The order is NEO/py's, so that the command list reads the same.
pub enum Entry {
    Branch(&'static str, &'static [Entry]),
    Leaf(&'static str, &'static str),
}

pub const COMMANDS: &[Entry] = &[
    Entry::Branch(
        "print",
        &[
            Entry::Leaf(
                "ids",
                "Show the last OID, the last TID and the partition table id (in backup\n\
                 mode, the backup TID instead of the last OID).",
            ),
            Entry::Leaf(
                "pt",
                "Show the partition table.\n\
                 Parameters: [min [max [node]]]\n  \
                   min: first partition to show (from 0)\n  \
                   max: partition to stop before (0: up to the end)\n  \
                   node: storage node id (sent, but the admin ignores it)\n\
                 Without min and max, one line per storage node; otherwise one line per\n\
                 partition.",
            ),
            Entry::Leaf(
                "node",
                "List the nodes known to the admin.\n\
                 Parameters: [type]\n  \
                   type: master, storage, client or admin",
            ),
            Entry::Leaf("cluster", "Show the cluster state."),
            Entry::Leaf("primary", "Show the id of the primary master."),
            Entry::Leaf(
                "summary",
                "Show the health of this cluster and of its monitored backup clusters.\n\
                 The first line is '# ' and a JSON object mapping \"warning\" and\n\
                 \"problem\" to the names of the clusters concerned, null standing for\n\
                 this cluster.",
            ),
        ],
    ),
    Entry::Branch(
        "set",
        &[
            Entry::Leaf(
                "cluster",
                "Change the cluster state.\n\
                 Parameters: state\n  \
                   state: VERIFYING, STARTING_BACKUP, STOPPING_BACKUP or STOPPING",
            ),
            Entry::Leaf(
                "replicas",
                "Change the number of replicas wanted per partition (applied by tweak).\n\
                 Parameters: nr\n  \
                   nr: 0 or more (0: no redundancy)",
            ),
        ],
    ),
    Entry::Leaf(
        "check",
        "Compare the replicas of partitions (experimental: differences are only\n\
         logged by the master).\n\
         Parameters: [partition]:[reference] ... [min_tid [max_tid]]\n  \
           partition: partition number; empty for every partition\n  \
           reference: id of a storage node known to be right; empty for none (in\n  \
           backup mode an upstream cell is then used)",
    ),
    Entry::Leaf(
        "start",
        "Leave the RECOVERING state and start the cluster (same as\n\
         'set cluster VERIFYING').",
    ),
    Entry::Leaf(
        "add",
        "Let the cluster use pending storage nodes (they get no partition until tweak).\n\
         Parameters: node [node [...]]\n  \
           node: storage node id, or \"all\" for every pending storage node",
    ),
    Entry::Leaf(
        "tweak",
        "Rebalance the partition table. Listed nodes and down nodes are left as they\n\
         are and do not count as replicas; list the nodes you mean to drop.\n\
         Parameters: [-n] [node [...]]\n  \
           -n: only show the resulting table",
    ),
    Entry::Leaf(
        "drop",
        "Remove a stopped storage node from the cluster for good.\n\
         Parameters: node",
    ),
    Entry::Leaf(
        "kill",
        "Stop a storage node or a secondary master.\n\
         Parameters: node",
    ),
    Entry::Leaf(
        "prune_orphan",
        "Delete data no object refers to, on storage nodes (may take long).\n\
         Parameters: dry_run node [node [...]]\n  \
           dry_run: 1 to only count, 0 to delete\n  \
           node: storage node id, or \"all\" for every storage node",
    ),
    Entry::Leaf(
        "truncate",
        "Cut the history of the database after the given TID. The cluster must be\n\
         RUNNING with no transaction in progress; it goes back to RECOVERING and\n\
         restarts once every node of the table is pending.\n\
         Parameters: tid",
    ),
    Entry::Leaf(
        "flush_log",
        "Make every node of the cluster write its log buffer (of backup clusters,\n\
         only the primary master).",
    ),
];

const TID_SYNTAX: &str = "A TID argument is either tid:<integer> (any case; decimal, 0x, 0o or 0b \
     literal), or a UNIX timestamp (a float, UTC): 'tid:0x40d2bed40bebaa4', \
     'TID:291937848842435236' and '1700000000' (2023-11-14 22:13:20 UTC) are valid.";

/// The command list printed without a command, or for `--help` after some words.
pub fn usage(path: &[String]) -> String {
    let mut entries = COMMANDS;
    let mut text = String::from("Commands:");
    for word in path {
        match entries.iter().find(|e| entry_name(e) == word) {
            Some(Entry::Branch(_, children)) => entries = children,
            Some(leaf @ Entry::Leaf(..)) => {
                list(std::slice::from_ref(leaf), 1, &mut text);
                return text;
            }
            None => break,
        }
    }
    list(entries, 1, &mut text);
    text.push('\n');
    text.push_str(TID_SYNTAX);
    text
}

fn entry_name(entry: &Entry) -> &'static str {
    match entry {
        Entry::Branch(name, _) | Entry::Leaf(name, _) => name,
    }
}

fn list(entries: &[Entry], depth: usize, text: &mut String) {
    for entry in entries {
        text.push('\n');
        text.push_str(&"  ".repeat(depth - 1));
        text.push_str(entry_name(entry));
        match entry {
            Entry::Branch(_, children) => list(children, depth + 1, text),
            Entry::Leaf(_, help) => {
                for line in help.lines() {
                    text.push('\n');
                    text.push_str(&"  ".repeat(depth));
                    text.push_str(line);
                }
            }
        }
    }
}

/// Parses the words after the options.
pub fn parse(words: &[String]) -> Result<Command, ParseError> {
    if words.is_empty() {
        return Ok(Command::List);
    }
    let mut entries = COMMANDS;
    let mut path = Vec::new();
    let mut rest = words;
    let leaf = loop {
        let Some((word, tail)) = rest.split_first() else {
            // The words stop at a branch: only its list can be shown.
            if path.is_empty() {
                return Ok(Command::List);
            }
            return Err(ParseError::InvalidCommand(words.join(" ")));
        };
        if is_help(word) {
            return Ok(Command::Help(path));
        }
        match entries.iter().find(|e| entry_name(e) == word) {
            Some(Entry::Branch(name, children)) => {
                path.push(name.to_string());
                entries = children;
                rest = tail;
            }
            Some(Entry::Leaf(name, _)) => {
                path.push(name.to_string());
                rest = tail;
                break path.join(" ");
            }
            None => return Err(ParseError::InvalidCommand(words.join(" "))),
        }
    };
    if rest.iter().any(|w| is_help(w)) {
        return Ok(Command::Help(path));
    }
    leaf_command(&leaf, rest)
}

fn is_help(word: &str) -> bool {
    word == "--help" || word == "-h"
}

fn leaf_command(leaf: &str, params: &[String]) -> Result<Command, ParseError> {
    let usage = |synopsis: &str| ParseError::Usage(format!("usage: neoctl {leaf}{synopsis}"));
    let none = |command: Command| {
        if params.is_empty() {
            Ok(command)
        } else {
            Err(usage(""))
        }
    };
    match leaf {
        "print ids" => none(Command::PrintIds),
        "print cluster" => none(Command::PrintCluster),
        "print primary" => none(Command::PrintPrimary),
        "print summary" => none(Command::PrintSummary),
        "start" => none(Command::Start),
        "flush_log" => none(Command::FlushLog),
        "print pt" => {
            if params.len() > 3 {
                return Err(usage(" [min [max [node]]]"));
            }
            let min = params
                .first()
                .map(|p| parse_offset(p))
                .transpose()?
                .unwrap_or(0);
            let max = params
                .get(1)
                .map(|p| parse_offset(p))
                .transpose()?
                .unwrap_or(0);
            let node = params.get(2).map(|p| parse_nid(p)).transpose()?;
            Ok(Command::PrintPt { min, max, node })
        }
        "print node" => match params {
            [] => Ok(Command::PrintNode(None)),
            [name] => NodeType::from_py_name(&name.to_uppercase())
                .map(|t| Command::PrintNode(Some(t)))
                .ok_or_else(|| {
                    ParseError::Usage(format!(
                        "invalid node type: {name} (master, storage, client or admin)"
                    ))
                }),
            _ => Err(usage(" [type]")),
        },
        "set cluster" => match params {
            [name] => ClusterState::from_py_name(&name.to_uppercase())
                .map(Command::SetCluster)
                .ok_or_else(|| ParseError::Usage(format!("invalid cluster state: {name}"))),
            _ => Err(usage(" state")),
        },
        "set replicas" => match params {
            [n] => {
                let n = parse_py_int(n)
                    .ok_or_else(|| ParseError::Usage(format!("invalid number: {n}")))?;
                if n < 0 {
                    return Err(ParseError::InvalidReplicas);
                }
                u32::try_from(n)
                    .map(Command::SetReplicas)
                    .map_err(|_| ParseError::Usage(format!("number too large: {n}")))
            }
            _ => Err(usage(" nr")),
        },
        "add" => Ok(Command::Add(parse_storages(params)?)),
        "tweak" => {
            let dry_run = params.first().is_some_and(|p| p == "-n");
            let nodes = params[dry_run as usize..]
                .iter()
                .map(|p| parse_nid(p))
                .collect::<Result<_, _>>()?;
            Ok(Command::Tweak { dry_run, nodes })
        }
        "kill" | "drop" => match params {
            [node] => {
                let nid = parse_nid(node)?;
                Ok(if leaf == "kill" {
                    Command::Kill(nid)
                } else {
                    Command::Drop(nid)
                })
            }
            _ => Err(usage(" node")),
        },
        "prune_orphan" => {
            let Some((flag, nodes)) = params.split_first() else {
                return Err(usage(" 0|1 node [node [...]]"));
            };
            let dry_run = match flag.as_str() {
                "0" => false,
                "1" => true,
                _ => return Err(usage(" 0|1 node [node [...]]")),
            };
            Ok(Command::PruneOrphan {
                dry_run,
                nodes: parse_storages(nodes)?,
            })
        }
        "truncate" => match params {
            [tid] => Ok(Command::Truncate(parse_tid(tid)?)),
            _ => Err(usage(" tid")),
        },
        "check" => parse_check(params),
        // Every leaf of COMMANDS is handled above.
        other => Err(ParseError::InvalidCommand(other.to_string())),
    }
}

/// NEO/py: the first argument without `:` is the minimum TID, the next one the maximum,
/// and anything after is ignored.
fn parse_check(params: &[String]) -> Result<Command, ParseError> {
    let mut partitions = Vec::new();
    let mut min_tid = Tid::ZERO;
    let mut max_tid = None;
    let mut iter = params.iter();
    while let Some(param) = iter.next() {
        let parts: Vec<&str> = param.split(':').collect();
        // NEO/py takes `tid:N` for a partition named "tid" and crashes; a TID is meant.
        let is_tid = parts.len() == 2 && parts[0].eq_ignore_ascii_case("tid");
        let (&[partition, reference], false) = (&parts[..], is_tid) else {
            min_tid = parse_tid(param)?;
            max_tid = iter.next().map(|p| parse_tid(p)).transpose()?;
            break;
        };
        let reference = if reference.is_empty() {
            None
        } else {
            Some(parse_nid(reference)?)
        };
        let partition = if partition.is_empty() {
            if !partitions.is_empty() {
                return Err(ParseError::Usage(
                    "check: ':REF' (every partition) must be the only partition argument".into(),
                ));
            }
            None
        } else {
            Some(
                parse_py_int(partition)
                    .and_then(|p| u32::try_from(p).ok())
                    .ok_or_else(|| ParseError::Usage(format!("invalid partition: {partition}")))?,
            )
        };
        partitions.push(CheckPartition {
            partition,
            reference,
        });
    }
    Ok(Command::Check {
        partitions,
        min_tid,
        max_tid,
    })
}

fn parse_storages(params: &[String]) -> Result<Storages, ParseError> {
    if let [all] = params {
        if all == "all" {
            return Ok(Storages::All);
        }
    }
    params
        .iter()
        .map(|p| parse_nid(p))
        .collect::<Result<_, _>>()
        .map(Storages::List)
}

fn parse_offset(text: &str) -> Result<u32, ParseError> {
    parse_py_int(text)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| ParseError::Usage(format!("invalid partition offset: {text}")))
}

/// A NID in its text form (`S1`, `M2`, `C3`, `A1`): the type letter selects the namespace.
pub fn parse_nid(text: &str) -> Result<Nid, ParseError> {
    let invalid = || ParseError::Usage(format!("invalid node id: {text} (e.g. S1, M1)"));
    let mut chars = text.chars();
    let letter = chars.next().ok_or_else(invalid)?;
    let node_type = match letter {
        'S' => NodeType::Storage,
        'M' => NodeType::Master,
        'C' => NodeType::Client,
        'A' => NodeType::Admin,
        _ => return Err(invalid()),
    };
    let number = parse_py_int(chars.as_str()).ok_or_else(invalid)?;
    // NEO/py adds the number to the namespace without masking; keep ids that fit.
    let value = ((node_type.namespace() as i64) << 24) + number as i64;
    if !(0..=0x00ff_ffff).contains(&number) || i32::try_from(value).is_err() {
        return Err(invalid());
    }
    Ok(Nid(value as i32))
}

/// A TID argument: `tid:<integer>` or a UNIX timestamp (tools.md 2.2).
pub fn parse_tid(text: &str) -> Result<Tid, ParseError> {
    let invalid = || {
        ParseError::Usage(format!(
            "invalid TID: {text} (tid:<integer> or a UNIX timestamp)"
        ))
    };
    if text.len() >= 4 && text[..4].eq_ignore_ascii_case("tid:") {
        let value = parse_py_int_literal(&text[4..]).ok_or_else(invalid)?;
        return u64::try_from(value).map(Tid).map_err(|_| invalid());
    }
    let seconds: f64 = text.trim().parse().map_err(|_| invalid())?;
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(invalid());
    }
    Ok(neo_node::tid::tid_from_time(seconds))
}

/// Python's `int(text)`: decimal, surrounding blanks, a sign and `_` between digits.
fn parse_py_int(text: &str) -> Option<i128> {
    let text = text.trim();
    let (negative, digits) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let value = parse_digits(digits, 10)?;
    Some(if negative { -value } else { value })
}

/// Python's `int(text, 0)`: like a literal, with a base prefix; no leading zeros in
/// decimal except for zero itself.
fn parse_py_int_literal(text: &str) -> Option<i128> {
    let text = text.trim();
    let (negative, body) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let lower = body.to_ascii_lowercase();
    let value = if let Some(hex) = lower.strip_prefix("0x") {
        parse_digits(hex.trim_start_matches('_'), 16)?
    } else if let Some(oct) = lower.strip_prefix("0o") {
        parse_digits(oct.trim_start_matches('_'), 8)?
    } else if let Some(bin) = lower.strip_prefix("0b") {
        parse_digits(bin.trim_start_matches('_'), 2)?
    } else {
        if lower.len() > 1
            && lower.starts_with('0')
            && lower.bytes().any(|b| b != b'0' && b != b'_')
        {
            return None;
        }
        parse_digits(&lower, 10)?
    };
    Some(if negative { -value } else { value })
}

fn parse_digits(digits: &str, radix: u32) -> Option<i128> {
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return None;
    }
    let mut value: i128 = 0;
    for c in digits.chars().filter(|c| *c != '_') {
        let digit = c.to_digit(radix)? as i128;
        value = value.checked_mul(radix as i128)?.checked_add(digit)?;
    }
    Some(value)
}
