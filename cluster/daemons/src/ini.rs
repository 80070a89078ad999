//! A reader for `neo.conf`: the INI dialect of Python's `configparser` with its default
//! settings (tools.md 1.9), which is what NEO/py's daemons read with `-f`.
//!
//! What it accepts: `[section]` headers, `key = value` and `key: value` (split at the first
//! `=` or `:`), keys compared case-insensitively, values continued on more-indented lines,
//! full-line comments starting with `#` or `;` (no inline comments), `[DEFAULT]` values
//! seen from every section, `%(key)s` interpolation and `%%` for a literal percent sign.
//! Duplicate sections and duplicate keys in one section are errors. Every error names the
//! file and the line, so that an operator can fix the file without guessing.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// configparser's name for the section whose values every other section inherits.
pub const DEFAULT_SECTION: &str = "DEFAULT";

/// configparser stops expanding `%(key)s` after this many nested levels.
const MAX_INTERPOLATION_DEPTH: usize = 10;

/// A parsed configuration file.
#[derive(Debug, Clone)]
pub struct Ini {
    path: PathBuf,
    defaults: Section,
    sections: Vec<Section>,
}

/// A value as found in the file, after interpolation, with the line of its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    pub text: String,
    pub line: usize,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum IniError {
    #[error("cannot read configuration file {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{path}, line {line}: expected a [section] header before {text:?}")]
    MissingSectionHeader {
        path: PathBuf,
        line: usize,
        text: String,
    },
    #[error(
        "{path}, line {line}: expected `key = value`, `key: value` or [section], found {text:?}"
    )]
    Syntax {
        path: PathBuf,
        line: usize,
        text: String,
    },
    #[error("{path}, line {line}: section [{section}] already exists")]
    DuplicateSection {
        path: PathBuf,
        line: usize,
        section: String,
    },
    #[error("{path}, line {line}: key {key:?} already set in section [{section}]")]
    DuplicateKey {
        path: PathBuf,
        line: usize,
        section: String,
        key: String,
    },
    #[error("{path}, line {line}: key {key:?} of section [{section}]: {message}")]
    Interpolation {
        path: PathBuf,
        line: usize,
        section: String,
        key: String,
        message: String,
    },
    #[error("{path}: no section [{section}]")]
    NoSection { path: PathBuf, section: String },
}

#[derive(Debug, Clone)]
struct Section {
    name: String,
    /// Keys lower-cased, as configparser's default `optionxform` does.
    entries: BTreeMap<String, Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    /// The value's lines before joining: the text after the delimiter, then each
    /// continuation line (blank lines inside the value included).
    lines: Vec<String>,
    line: usize,
}

impl Entry {
    /// configparser joins a multi-line value with newlines and strips its end.
    fn raw(&self) -> String {
        self.lines.join("\n").trim_end().to_owned()
    }
}

impl Ini {
    /// Reads and parses a file.
    pub fn read(path: &Path) -> Result<Ini, IniError> {
        let bytes = std::fs::read(path).map_err(|e| IniError::Read {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let text = String::from_utf8(bytes).map_err(|e| IniError::Read {
            path: path.to_owned(),
            message: format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
        })?;
        Ini::parse(&text, path)
    }

    /// Parses `text`; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Ini, IniError> {
        let mut ini = Ini {
            path: path.to_owned(),
            defaults: Section {
                name: DEFAULT_SECTION.to_owned(),
                entries: BTreeMap::new(),
            },
            sections: Vec::new(),
        };
        // Which section receives keys: None before any header, Some(None) for DEFAULT,
        // Some(Some(i)) for sections[i].
        let mut current: Option<Option<usize>> = None;
        let mut current_key: Option<String> = None;
        let mut key_indent = 0usize;
        for (index, line) in text.lines().enumerate() {
            let lineno = index + 1;
            let stripped = line.trim();
            let is_comment = stripped.starts_with('#') || stripped.starts_with(';');
            if stripped.is_empty() || is_comment {
                // A blank line may be part of a multi-line value (kept, then trailing
                // ones stripped); a comment line is skipped and does not end the value.
                if !is_comment {
                    if let (Some(section), Some(key)) = (current, &current_key) {
                        if let Some(entry) = ini.section_mut(section).entries.get_mut(key) {
                            entry.lines.push(String::new());
                        }
                    }
                }
                continue;
            }
            let indent = line.len() - line.trim_start().len();
            if let (Some(section), Some(key)) = (current, &current_key) {
                if indent > key_indent {
                    if let Some(entry) = ini.section_mut(section).entries.get_mut(key) {
                        entry.lines.push(stripped.to_owned());
                    }
                    continue;
                }
            }
            key_indent = indent;
            if let Some(name) = section_header(stripped) {
                current_key = None;
                if name == DEFAULT_SECTION {
                    // configparser lets [DEFAULT] appear again; its keys still must not
                    // repeat.
                    current = Some(None);
                } else if ini.sections.iter().any(|s| s.name == name) {
                    return Err(IniError::DuplicateSection {
                        path: ini.path.clone(),
                        line: lineno,
                        section: name.to_owned(),
                    });
                } else {
                    ini.sections.push(Section {
                        name: name.to_owned(),
                        entries: BTreeMap::new(),
                    });
                    current = Some(Some(ini.sections.len() - 1));
                }
                continue;
            }
            let Some(section) = current else {
                return Err(IniError::MissingSectionHeader {
                    path: ini.path.clone(),
                    line: lineno,
                    text: stripped.to_owned(),
                });
            };
            let Some(split) = stripped.find(['=', ':']) else {
                return Err(IniError::Syntax {
                    path: ini.path.clone(),
                    line: lineno,
                    text: stripped.to_owned(),
                });
            };
            let key = stripped[..split].trim_end().to_lowercase();
            if key.is_empty() {
                return Err(IniError::Syntax {
                    path: ini.path.clone(),
                    line: lineno,
                    text: stripped.to_owned(),
                });
            }
            let value = stripped[split + 1..].trim().to_owned();
            let path = ini.path.clone();
            let target = ini.section_mut(section);
            if target.entries.contains_key(&key) {
                return Err(IniError::DuplicateKey {
                    path,
                    line: lineno,
                    section: target.name.clone(),
                    key,
                });
            }
            target.entries.insert(
                key.clone(),
                Entry {
                    lines: vec![value],
                    line: lineno,
                },
            );
            current_key = Some(key);
        }
        Ok(ini)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn has_section(&self, name: &str) -> bool {
        self.sections.iter().any(|s| s.name == name)
    }

    /// The section names in file order ([DEFAULT] excluded).
    pub fn sections(&self) -> impl Iterator<Item = &str> {
        self.sections.iter().map(|s| s.name.as_str())
    }

    /// The keys visible from `section`: its own and [DEFAULT]'s.
    pub fn keys(&self, section: &str) -> Result<Vec<String>, IniError> {
        let own = self.section(section)?;
        let mut keys: Vec<String> = own.entries.keys().cloned().collect();
        for key in self.defaults.entries.keys() {
            if !own.entries.contains_key(key) {
                keys.push(key.clone());
            }
        }
        keys.sort();
        Ok(keys)
    }

    /// The interpolated value of `key` in `section` (or in [DEFAULT]), if set.
    pub fn get(&self, section: &str, key: &str) -> Result<Option<Value>, IniError> {
        let own = self.section(section)?;
        let key = key.to_lowercase();
        let Some(entry) = self.lookup(own, &key) else {
            return Ok(None);
        };
        let mut text = String::new();
        self.interpolate(own, &key, entry, &entry.raw(), 1, &mut text)?;
        Ok(Some(Value {
            text,
            line: entry.line,
        }))
    }

    fn section(&self, name: &str) -> Result<&Section, IniError> {
        self.sections
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| IniError::NoSection {
                path: self.path.clone(),
                section: name.to_owned(),
            })
    }

    fn section_mut(&mut self, index: Option<usize>) -> &mut Section {
        match index {
            Some(i) => &mut self.sections[i],
            None => &mut self.defaults,
        }
    }

    fn lookup<'a>(&'a self, section: &'a Section, key: &str) -> Option<&'a Entry> {
        section
            .entries
            .get(key)
            .or_else(|| self.defaults.entries.get(key))
    }

    /// Expands `%(name)s` and `%%` in `raw`, which belongs to `key` (the key asked for,
    /// named in errors), looking names up in `section` then [DEFAULT].
    fn interpolate(
        &self,
        section: &Section,
        key: &str,
        entry: &Entry,
        raw: &str,
        depth: usize,
        out: &mut String,
    ) -> Result<(), IniError> {
        let error = |message: String| IniError::Interpolation {
            path: self.path.clone(),
            line: entry.line,
            section: section.name.clone(),
            key: key.to_owned(),
            message,
        };
        if depth > MAX_INTERPOLATION_DEPTH {
            return Err(error(format!(
                "more than {MAX_INTERPOLATION_DEPTH} nested %(name)s references (a loop?)"
            )));
        }
        let mut rest = raw;
        while let Some(percent) = rest.find('%') {
            out.push_str(&rest[..percent]);
            rest = &rest[percent..];
            match rest[1..].chars().next() {
                Some('%') => {
                    out.push('%');
                    rest = &rest[2..];
                }
                Some('(') => {
                    let reference = rest[2..]
                        .find(')')
                        .filter(|&end| end > 0 && rest[2 + end + 1..].starts_with('s'));
                    let Some(end) = reference else {
                        return Err(error(format!(
                            "bad reference {rest:?}: write %(name)s, or %% for a percent sign"
                        )));
                    };
                    let name = rest[2..2 + end].to_lowercase();
                    let Some(target) = self.lookup(section, &name) else {
                        return Err(error(format!(
                            "%({name})s refers to a key that is not set in [{}] nor in [DEFAULT]",
                            section.name
                        )));
                    };
                    let value = target.raw();
                    if value.contains('%') {
                        self.interpolate(section, key, entry, &value, depth + 1, out)?;
                    } else {
                        out.push_str(&value);
                    }
                    rest = &rest[2 + end + 2..];
                }
                _ => {
                    return Err(error(format!(
                        "'%' must be followed by '%' or '(', found {rest:?}"
                    )))
                }
            }
        }
        out.push_str(rest);
        Ok(())
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// configparser's header rule: `[` at the start, then at least one character, up to the
/// last `]` of the line.
fn section_header(line: &str) -> Option<&str> {
    let inner = line.strip_prefix('[')?;
    let end = inner.rfind(']')?;
    (end > 0).then(|| &inner[..end])
}

/// configparser's booleans.
pub fn parse_bool(text: &str) -> Option<bool> {
    match text.to_lowercase().as_str() {
        "1" | "yes" | "true" | "on" => Some(true),
        "0" | "no" | "false" | "off" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Ini, IniError> {
        Ini::parse(text, Path::new("neo.conf"))
    }

    /// The value of `key` in `section`, or an error message, as one string.
    fn get(text: &str, section: &str, key: &str) -> String {
        match parse(text).and_then(|ini| ini.get(section, key)) {
            Ok(Some(value)) => format!("{:?}@{}", value.text, value.line),
            Ok(None) => "unset".to_owned(),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn both_delimiters_and_spacing() {
        let text = "[master]\ncluster: prod\nbind=127.0.0.1:10000\npartitions   =   12  \n";
        assert_eq!(get(text, "master", "cluster"), "\"prod\"@2");
        assert_eq!(get(text, "master", "bind"), "\"127.0.0.1:10000\"@3");
        assert_eq!(get(text, "master", "partitions"), "\"12\"@4");
        assert_eq!(get(text, "master", "replicas"), "unset");
    }

    #[test]
    fn first_delimiter_splits() {
        // An address value holds a colon; a key never does.
        let text = "[s]\nmasters = 10.0.0.1:10000 10.0.0.2:10000\nurl: a=b\n";
        assert_eq!(
            get(text, "s", "masters"),
            "\"10.0.0.1:10000 10.0.0.2:10000\"@2"
        );
        assert_eq!(get(text, "s", "url"), "\"a=b\"@3");
    }

    #[test]
    fn keys_are_case_insensitive_sections_are_not() {
        let text = "[Storage]\nDataBase = x\n";
        assert_eq!(get(text, "Storage", "database"), "\"x\"@2");
        assert_eq!(get(text, "Storage", "DATABASE"), "\"x\"@2");
        assert_eq!(
            get(text, "storage", "database"),
            "error: neo.conf: no section [storage]"
        );
    }

    #[test]
    fn default_section_is_inherited_and_overridden() {
        let text = "[DEFAULT]\ncluster = a\nreplicas = 1\n[master]\nreplicas = 2\n[admin]\n";
        assert_eq!(get(text, "master", "cluster"), "\"a\"@2");
        assert_eq!(get(text, "master", "replicas"), "\"2\"@5");
        assert_eq!(get(text, "admin", "replicas"), "\"1\"@3");
        let ini = parse(text).unwrap();
        assert_eq!(ini.keys("master").unwrap(), ["cluster", "replicas"]);
        assert_eq!(ini.sections().collect::<Vec<_>>(), ["master", "admin"]);
        assert!(!ini.has_section("DEFAULT"));
    }

    #[test]
    fn continuation_lines_and_blank_lines_inside_values() {
        let text =
            "[admin]\nmonitor_email:\n  ops@example.com\n\n  dba@example.com\n\nsmtp = mail\n";
        assert_eq!(
            get(text, "admin", "monitor_email"),
            "\"\\nops@example.com\\n\\ndba@example.com\"@2"
        );
        assert_eq!(get(text, "admin", "smtp"), "\"mail\"@7");
    }

    #[test]
    fn an_indented_key_line_continues_the_previous_value() {
        // configparser reads this as one value: indentation, not syntax, decides.
        let text = "[s]\nbind = x\n  partitions = 12\n";
        assert_eq!(get(text, "s", "bind"), "\"x\\npartitions = 12\"@2");
        assert_eq!(get(text, "s", "partitions"), "unset");
    }

    #[test]
    fn continuation_is_relative_to_the_key_indent() {
        // An indented key starts a value; a line indented like it is another key.
        let text = "[s]\n  a = 1\n  b = 2\n    more\nc = 3\n";
        assert_eq!(get(text, "s", "a"), "\"1\"@2");
        assert_eq!(get(text, "s", "b"), "\"2\\nmore\"@3");
        assert_eq!(get(text, "s", "c"), "\"3\"@5");
    }

    #[test]
    fn comments_are_whole_lines_only() {
        let text =
            "# top\n[s]\n; note\na = 1 # not a comment\n  # inside the value: skipped\n  2\n";
        assert_eq!(get(text, "s", "a"), "\"1 # not a comment\\n2\"@4");
    }

    #[test]
    fn empty_values() {
        let text = "[s]\na =\nb:\n";
        assert_eq!(get(text, "s", "a"), "\"\"@2");
        assert_eq!(get(text, "s", "b"), "\"\"@3");
    }

    #[test]
    fn interpolation() {
        let text = "[DEFAULT]\nhome = /srv/neo\nname = prod\n[storage1]\ndatabase = %(home)s/%(NAME)s-1.db\nlogfile = %(database)s.log\npct = 100%%\n";
        assert_eq!(
            get(text, "storage1", "database"),
            "\"/srv/neo/prod-1.db\"@5"
        );
        assert_eq!(
            get(text, "storage1", "logfile"),
            "\"/srv/neo/prod-1.db.log\"@6"
        );
        assert_eq!(get(text, "storage1", "pct"), "\"100%\"@7");
    }

    #[test]
    fn interpolation_errors_name_line_and_key() {
        let text = "[s]\na = 5%\nb = %(missing)s\nc = %(c)s\nd = %(x\ne = %z\n";
        assert_eq!(
            get(text, "s", "a"),
            "error: neo.conf, line 2: key \"a\" of section [s]: '%' must be followed by '%' or '(', found \"%\""
        );
        assert_eq!(
            get(text, "s", "b"),
            "error: neo.conf, line 3: key \"b\" of section [s]: %(missing)s refers to a key that is not set in [s] nor in [DEFAULT]"
        );
        assert_eq!(
            get(text, "s", "c"),
            "error: neo.conf, line 4: key \"c\" of section [s]: more than 10 nested %(name)s references (a loop?)"
        );
        assert_eq!(
            get(text, "s", "d"),
            "error: neo.conf, line 5: key \"d\" of section [s]: bad reference \"%(x\": write %(name)s, or %% for a percent sign"
        );
        assert!(get(text, "s", "e").starts_with("error: neo.conf, line 6: key \"e\""));
    }

    #[test]
    fn structural_errors() {
        assert_eq!(
            get("a = 1\n", "s", "a"),
            "error: neo.conf, line 1: expected a [section] header before \"a = 1\""
        );
        assert_eq!(
            get("[s]\njust words\n", "s", "a"),
            "error: neo.conf, line 2: expected `key = value`, `key: value` or [section], found \"just words\""
        );
        assert_eq!(
            get("[s]\n= 1\n", "s", "a"),
            "error: neo.conf, line 2: expected `key = value`, `key: value` or [section], found \"= 1\""
        );
        assert_eq!(
            get("[s]\n[t]\n[s]\n", "s", "a"),
            "error: neo.conf, line 3: section [s] already exists"
        );
        assert_eq!(
            get("[s]\na = 1\nA = 2\n", "s", "a"),
            "error: neo.conf, line 3: key \"a\" already set in section [s]"
        );
        assert_eq!(
            get("[DEFAULT]\na = 1\n[DEFAULT]\na = 2\n[s]\n", "s", "a"),
            "error: neo.conf, line 4: key \"a\" already set in section [DEFAULT]"
        );
        assert_eq!(get("[s]\n[]\n", "s", "a"), "error: neo.conf, line 2: expected `key = value`, `key: value` or [section], found \"[]\"");
    }

    #[test]
    fn repeated_default_header_is_allowed() {
        let text = "[DEFAULT]\na = 1\n[s]\n[DEFAULT]\nb = 2\n";
        assert_eq!(get(text, "s", "b"), "\"2\"@5");
    }

    #[test]
    fn header_takes_up_to_the_last_bracket() {
        assert_eq!(get("[a]b]\nk = v\n", "a]b", "k"), "\"v\"@2");
    }

    #[test]
    fn booleans() {
        for yes in ["1", "yes", "TRUE", "On"] {
            assert_eq!(parse_bool(yes), Some(true), "{yes}");
        }
        for no in ["0", "No", "false", "OFF"] {
            assert_eq!(parse_bool(no), Some(false), "{no}");
        }
        assert_eq!(parse_bool("y"), None);
        assert_eq!(parse_bool(""), None);
    }

    #[test]
    fn missing_file_is_a_read_error() {
        let error = Ini::read(Path::new("/nonexistent/neo.conf")).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("cannot read configuration file /nonexistent/neo.conf: "),
            "{error}"
        );
    }

    #[test]
    fn the_spec_example_parses() {
        let text = "[DEFAULT]\ncluster: erp5prod\nmasters: 10.0.0.1:10000\npartitions: 24\nreplicas: 1\nca = ~/etc/neo/ca.crt\n\n[master]\nbind: 10.0.0.1:10000\n\n[storage1]\ndatabase: neo:secret@neo1\nbind: 10.0.0.1:20001\nlogfile: ~/log/neo-storage1.log\n\n[admin]\nbind: 10.0.0.1:9999\nmonitor_email:\n  ops@example.com\n  dba@example.com\n";
        assert_eq!(get(text, "storage1", "database"), "\"neo:secret@neo1\"@12");
        assert_eq!(get(text, "storage1", "partitions"), "\"24\"@4");
        assert_eq!(
            get(text, "admin", "monitor_email"),
            "\"\\nops@example.com\\ndba@example.com\"@18"
        );
    }
}
