//! The measured figures of one run (one client against one cluster), their JSON form
//! (what the NEO/py script prints and `--json` shows) and the side-by-side table.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{json, Value};

/// Latency percentiles of one serial workload.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    pub p50_us: f64,
    pub p99_us: f64,
}

impl Latency {
    /// Percentiles by the nearest-rank rule on a sorted copy (the Python side uses the
    /// same indices, so both columns mean the same thing).
    pub fn of(samples: &[Duration]) -> Latency {
        let mut micros: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e6).collect();
        micros.sort_by(f64::total_cmp);
        Latency {
            p50_us: percentile(&micros, 50),
            p99_us: percentile(&micros, 99),
        }
    }
}

fn percentile(sorted: &[f64], percent: usize) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[(sorted.len() * percent / 100).min(sorted.len() - 1)]
}

/// Durable one-object commits by `committers` clients at once.
#[derive(Debug, Clone, Copy, Default)]
pub struct Commits {
    pub latency: Latency,
    pub per_second: f64,
}

/// CPU seconds spent by each process of a run during one workload, divided by the number
/// of operations: where the time goes.
#[derive(Debug, Clone, Default)]
pub struct CpuPerOperation {
    /// (process label, microseconds of CPU per operation).
    pub processes: Vec<(String, f64)>,
}

/// Everything one run measured.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub label: String,
    pub populate_seconds: f64,
    pub cold: Latency,
    pub warm: Latency,
    /// (client connections, objects loaded per second).
    pub loads: Vec<(usize, f64)>,
    /// (committers, figures).
    pub commits: Vec<(usize, Commits)>,
    /// Per workload name, when the run could see the processes (our own cluster).
    pub cpu: Vec<(String, CpuPerOperation)>,
}

impl Figures {
    pub fn to_json(&self) -> Value {
        json!({
            "label": self.label,
            "populate_s": self.populate_seconds,
            "cold_p50_us": self.cold.p50_us,
            "cold_p99_us": self.cold.p99_us,
            "warm_p50_us": self.warm.p50_us,
            "warm_p99_us": self.warm.p99_us,
            "loads": self.loads.iter().map(|(k, rate)| json!([k, rate])).collect::<Vec<_>>(),
            "commits": self.commits.iter().map(|(k, c)| json!({
                "committers": k,
                "p50_us": c.latency.p50_us,
                "p99_us": c.latency.p99_us,
                "per_s": c.per_second,
            })).collect::<Vec<_>>(),
            "cpu_us_per_op": self.cpu.iter().map(|(workload, cpu)| json!({
                "workload": workload,
                "processes": cpu.processes.iter().map(|(p, us)| json!([p, us])).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })
    }

    /// Reads what the NEO/py script printed (the same keys as [`Figures::to_json`]).
    pub fn from_json(label: &str, value: &Value) -> Result<Figures> {
        let number = |key: &str| -> Result<f64> {
            value
                .get(key)
                .and_then(Value::as_f64)
                .with_context(|| format!("reading {key:?} in the NEO/py script's output"))
        };
        let mut loads = Vec::new();
        for pair in value
            .get("loads")
            .and_then(Value::as_array)
            .context("reading \"loads\"")?
        {
            let connections = pair.get(0).and_then(Value::as_u64).context("loads: k")?;
            let rate = pair.get(1).and_then(Value::as_f64).context("loads: rate")?;
            loads.push((connections as usize, rate));
        }
        let mut commits = Vec::new();
        for entry in value
            .get("commits")
            .and_then(Value::as_array)
            .context("reading \"commits\"")?
        {
            let field = |key: &str| entry.get(key).and_then(Value::as_f64);
            let committers = entry
                .get("committers")
                .and_then(Value::as_u64)
                .context("commits: committers")?;
            commits.push((
                committers as usize,
                Commits {
                    latency: Latency {
                        p50_us: field("p50_us").context("commits: p50_us")?,
                        p99_us: field("p99_us").context("commits: p99_us")?,
                    },
                    per_second: field("per_s").context("commits: per_s")?,
                },
            ));
        }
        Ok(Figures {
            label: label.to_owned(),
            populate_seconds: number("populate_s")?,
            cold: Latency {
                p50_us: number("cold_p50_us")?,
                p99_us: number("cold_p99_us")?,
            },
            warm: Latency {
                p50_us: number("warm_p50_us")?,
                p99_us: number("warm_p99_us")?,
            },
            loads,
            commits,
            cpu: Vec::new(),
        })
    }
}

/// Whether a larger figure is better (throughput) or a smaller one (latency).
#[derive(Clone, Copy, PartialEq)]
enum Better {
    Higher,
    Lower,
}

/// One row of the table: a name, how to read it, a target for our figure, and the
/// figure of each run (None when the run lacks it).
struct Row {
    name: String,
    better: Better,
    target: Option<f64>,
    values: Vec<Option<f64>>,
}

/// The label of NEO/py's own column (its client against its cluster).
pub const NEO_PY_LABEL: &str = "NEO/py";

/// The side-by-side table. The first run is ours; each other column gets a ratio saying
/// how many times better the first run is (above 1: we are better).
pub fn table(runs: &[Figures]) -> String {
    // Cache hits must not be slower than NEO/py's, whose column gives the target.
    let neo_py_warm = runs
        .iter()
        .skip(1)
        .find(|r| r.label == NEO_PY_LABEL)
        .map(|r| r.warm.p50_us);
    let mut rows = vec![
        row(runs, "populate (s)", Better::Lower, None, |f| {
            Some(f.populate_seconds)
        }),
        row(runs, "cold load p50 (us)", Better::Lower, Some(25.0), |f| {
            Some(f.cold.p50_us)
        }),
        row(runs, "cold load p99 (us)", Better::Lower, None, |f| {
            Some(f.cold.p99_us)
        }),
        row(
            runs,
            "warm load p50 (us)",
            Better::Lower,
            neo_py_warm,
            |f| Some(f.warm.p50_us),
        ),
        row(runs, "warm load p99 (us)", Better::Lower, None, |f| {
            Some(f.warm.p99_us)
        }),
    ];
    let mut connections: Vec<usize> = runs
        .iter()
        .flat_map(|f| f.loads.iter().map(|(k, _)| *k))
        .collect();
    connections.sort_unstable();
    connections.dedup();
    for k in connections {
        let target = (k == 16).then_some(100_000.0);
        rows.push(row(
            runs,
            &format!("loads, {k} conn (obj/s)"),
            Better::Higher,
            target,
            |f| f.loads.iter().find(|(c, _)| *c == k).map(|(_, r)| *r),
        ));
    }
    let mut committers: Vec<usize> = runs
        .iter()
        .flat_map(|f| f.commits.iter().map(|(k, _)| *k))
        .collect();
    committers.sort_unstable();
    committers.dedup();
    for k in committers {
        let find = move |f: &Figures| f.commits.iter().find(|(c, _)| *c == k).map(|(_, c)| *c);
        rows.push(row(
            runs,
            &format!("commit, {k} committer(s) p50 (us)"),
            Better::Lower,
            None,
            move |f| find(f).map(|c| c.latency.p50_us),
        ));
        rows.push(row(
            runs,
            &format!("commit, {k} committer(s) p99 (us)"),
            Better::Lower,
            None,
            move |f| find(f).map(|c| c.latency.p99_us),
        ));
        let target = (k == 16).then_some(5_000.0);
        rows.push(row(
            runs,
            &format!("commit, {k} committer(s) (commits/s)"),
            Better::Higher,
            target,
            move |f| find(f).map(|c| c.per_second),
        ));
    }

    let mut header = vec!["workload".to_owned(), "target".to_owned()];
    for (i, run) in runs.iter().enumerate() {
        header.push(run.label.clone());
        if i > 0 {
            header.push("ratio".to_owned());
        }
    }
    let mut lines = vec![header];
    for row in &rows {
        let mut line = vec![row.name.clone(), target_text(row)];
        for (i, value) in row.values.iter().enumerate() {
            let mut cell = value.map_or("-".to_owned(), number_text);
            if i == 0 {
                if let (Some(target), Some(value)) = (row.target, value) {
                    let met = match row.better {
                        Better::Higher => *value >= target,
                        Better::Lower => *value <= target,
                    };
                    cell.push_str(if met { " ok" } else { " MISS" });
                }
            }
            line.push(cell);
            if i > 0 {
                let ratio = match (row.values[0], *value) {
                    (Some(ours), Some(theirs)) if ours > 0.0 && theirs > 0.0 => {
                        let ratio = match row.better {
                            Better::Higher => ours / theirs,
                            Better::Lower => theirs / ours,
                        };
                        format!("{ratio:.2}x")
                    }
                    _ => "-".to_owned(),
                };
                line.push(ratio);
            }
        }
        lines.push(line);
    }
    let columns = lines.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            lines
                .iter()
                .filter_map(|l| l.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for line in &lines {
        for (c, cell) in line.iter().enumerate() {
            if c == 0 {
                let _ = write!(out, "{cell:<width$}", width = widths[c]);
            } else {
                let _ = write!(out, "  {cell:>width$}", width = widths[c]);
            }
        }
        out.push('\n');
    }
    if runs.len() > 1 {
        out.push_str("ratio: how many times better the first column is (above 1: better).\n");
    }
    out
}

/// Where the CPU went, per workload and process (our own cluster only).
pub fn cpu_table(figures: &Figures) -> String {
    let mut out = String::new();
    for (workload, cpu) in &figures.cpu {
        let parts: Vec<String> = cpu
            .processes
            .iter()
            .map(|(process, us)| format!("{process} {us:.1}"))
            .collect();
        let _ = writeln!(out, "  {workload:<34} {}", parts.join(", "));
    }
    out
}

fn row(
    runs: &[Figures],
    name: &str,
    better: Better,
    target: Option<f64>,
    value: impl Fn(&Figures) -> Option<f64>,
) -> Row {
    Row {
        name: name.to_owned(),
        better,
        target,
        values: runs.iter().map(value).collect(),
    }
}

fn target_text(row: &Row) -> String {
    match row.target {
        Some(target) => match row.better {
            Better::Higher => format!(">= {}", number_text(target)),
            Better::Lower => format!("<= {}", number_text(target)),
        },
        None => String::new(),
    }
}

/// Three significant digits are plenty for timings that vary by several percent.
fn number_text(value: f64) -> String {
    if !value.is_finite() {
        return "-".to_owned();
    }
    if value >= 1000.0 {
        format!("{value:.0}")
    } else if value >= 100.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        let latency = Latency::of(&samples);
        assert_eq!((latency.p50_us, latency.p99_us), (51.0, 100.0));
        assert!(Latency::of(&[]).p50_us.is_nan());
    }

    #[test]
    fn json_round_trip_and_ratios() {
        let ours = Figures {
            label: "ours".into(),
            populate_seconds: 1.0,
            cold: Latency {
                p50_us: 20.0,
                p99_us: 40.0,
            },
            warm: Latency {
                p50_us: 1.0,
                p99_us: 2.0,
            },
            loads: vec![(16, 120_000.0)],
            commits: vec![(
                16,
                Commits {
                    latency: Latency {
                        p50_us: 1000.0,
                        p99_us: 3000.0,
                    },
                    per_second: 4000.0,
                },
            )],
            cpu: Vec::new(),
        };
        let theirs = Figures::from_json("neo/py", &ours.to_json()).unwrap();
        assert_eq!(theirs.loads, ours.loads);
        assert_eq!(theirs.commits[0].1.per_second, 4000.0);
        let mut slower = theirs.clone();
        slower.cold.p50_us = 200.0;
        let text = table(&[ours, slower]);
        let cold = text
            .lines()
            .find(|l| l.starts_with("cold load p50"))
            .unwrap();
        assert!(
            cold.contains("20.00 ok") && cold.ends_with("10.00x"),
            "{cold}"
        );
        let commits = text
            .lines()
            .find(|l| l.starts_with("commit, 16 committer(s) (commits/s)"))
            .unwrap();
        assert!(commits.contains("4000 MISS"), "{commits}");
        let warm = text
            .lines()
            .find(|l| l.starts_with("warm load p50"))
            .unwrap();
        assert!(!warm.contains("ok") && !warm.contains("MISS"), "{warm}");
    }

    #[test]
    fn neo_py_warm_loads_are_the_target_of_ours() {
        let mut ours = Figures {
            label: "ours".into(),
            ..Figures::default()
        };
        ours.warm.p50_us = 2.0;
        let mut neo_py = Figures {
            label: NEO_PY_LABEL.into(),
            ..Figures::default()
        };
        neo_py.warm.p50_us = 1.5;
        let text = table(&[ours.clone(), neo_py.clone()]);
        let warm = text
            .lines()
            .find(|l| l.starts_with("warm load p50"))
            .unwrap();
        assert!(
            warm.contains("<= 1.50") && warm.contains("2.00 MISS"),
            "{warm}"
        );
        ours.warm.p50_us = 0.7;
        let text = table(&[ours, neo_py]);
        let warm = text
            .lines()
            .find(|l| l.starts_with("warm load p50"))
            .unwrap();
        assert!(warm.contains("0.70 ok"), "{warm}");
    }
}
