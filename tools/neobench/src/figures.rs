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

/// The warm-load target: cache hits must not be slower than NEO/py's, whose column (if
/// any, after ours) gives it.
pub fn neo_py_warm(runs: &[Figures]) -> Option<f64> {
    runs.iter()
        .skip(1)
        .find(|r| r.label == NEO_PY_LABEL)
        .map(|r| r.warm.p50_us)
}

/// The side-by-side table. The first run is ours; each other column gets a ratio saying
/// how many times better the first run is (above 1: we are better).
pub fn table(runs: &[Figures]) -> String {
    let rows = rows(runs, neo_py_warm(runs));
    render(runs, &rows)
}

/// The rows of the table, with one value per run.
fn rows(runs: &[Figures], neo_py_warm: Option<f64>) -> Vec<Row> {
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
    rows
}

fn render(runs: &[Figures], rows: &[Row]) -> String {
    let mut header = vec!["workload".to_owned(), "target".to_owned()];
    for (i, run) in runs.iter().enumerate() {
        header.push(run.label.clone());
        if i > 0 {
            header.push("ratio".to_owned());
        }
    }
    let mut lines = vec![header];
    for row in rows {
        let mut line = vec![row.name.clone(), target_text(row)];
        for (i, value) in row.values.iter().enumerate() {
            let mut cell = value.map_or("-".to_owned(), number_text);
            if i == 0 {
                if let Some(met) = value.and_then(|value| row.meets(value)) {
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
    let mut out = columns(&lines);
    if runs.len() > 1 {
        out.push_str("ratio: how many times better the first column is (above 1: better).\n");
    }
    out
}

impl Row {
    /// Whether `value` meets the row's target, if it has one.
    fn meets(&self, value: f64) -> Option<bool> {
        let target = self.target?;
        Some(match self.better {
            Better::Higher => value >= target,
            Better::Lower => value <= target,
        })
    }
}

/// The median of `values` (the mean of the two middle ones for an even count), NaN for
/// none.
fn median_of(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Several runs of ours as one: the median of each figure, over the runs that have it (the
/// workloads and processes are those of the first run).
pub fn median(runs: &[Figures]) -> Figures {
    let Some(first) = runs.first() else {
        return Figures::default();
    };
    // One figure's median over the runs that have it.
    let m = |value: &dyn Fn(&Figures) -> Option<f64>| {
        median_of(runs.iter().filter_map(value).collect())
    };
    let latency = |latency: &dyn Fn(&Figures) -> Option<Latency>| Latency {
        p50_us: m(&|f| latency(f).map(|l| l.p50_us)),
        p99_us: m(&|f| latency(f).map(|l| l.p99_us)),
    };
    Figures {
        label: first.label.clone(),
        populate_seconds: m(&|f| Some(f.populate_seconds)),
        cold: latency(&|f| Some(f.cold)),
        warm: latency(&|f| Some(f.warm)),
        loads: first
            .loads
            .iter()
            .map(|&(k, _)| {
                let rate = m(&|f| f.loads.iter().find(|(c, _)| *c == k).map(|(_, r)| *r));
                (k, rate)
            })
            .collect(),
        commits: first
            .commits
            .iter()
            .map(|&(k, _)| {
                let find = |f: &Figures| f.commits.iter().find(|(c, _)| *c == k).map(|(_, c)| *c);
                let commits = Commits {
                    latency: latency(&|f| find(f).map(|c| c.latency)),
                    per_second: m(&|f| find(f).map(|c| c.per_second)),
                };
                (k, commits)
            })
            .collect(),
        cpu: first
            .cpu
            .iter()
            .map(|(workload, cpu)| {
                let processes = cpu
                    .processes
                    .iter()
                    .map(|(process, _)| {
                        let us = m(&|f| {
                            let (_, cpu) = f.cpu.iter().find(|(w, _)| w == workload)?;
                            let (_, us) = cpu.processes.iter().find(|(p, _)| p == process)?;
                            Some(*us)
                        });
                        (process.clone(), us)
                    })
                    .collect();
                (workload.clone(), CpuPerOperation { processes })
            })
            .collect(),
    }
}

/// For each figure with a target, its spread over several runs of ours and how many runs
/// met the target: what a median alone hides on a machine whose speed varies.
pub fn spread(runs: &[Figures], neo_py_warm: Option<f64>) -> String {
    let rows: Vec<Row> = rows(runs, neo_py_warm)
        .into_iter()
        .filter(|row| row.target.is_some())
        .collect();
    let mut lines = vec![vec![
        "workload".to_owned(),
        "target".to_owned(),
        "min".to_owned(),
        "median".to_owned(),
        "max".to_owned(),
        "runs meeting it".to_owned(),
    ]];
    for row in &rows {
        let values: Vec<f64> = row.values.iter().flatten().copied().collect();
        if values.is_empty() {
            continue;
        }
        let met = values
            .iter()
            .filter(|&&v| row.meets(v) == Some(true))
            .count();
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        lines.push(vec![
            row.name.clone(),
            target_text(row),
            number_text(min),
            number_text(median_of(values.clone())),
            number_text(max),
            format!("{met} of {}", values.len()),
        ]);
    }
    columns(&lines)
}

/// Lines of cells as aligned columns: the first to the left, the others to the right.
fn columns(lines: &[Vec<String>]) -> String {
    let count = lines.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..count)
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
    for line in lines {
        for (c, cell) in line.iter().enumerate() {
            if c == 0 {
                let _ = write!(out, "{cell:<width$}", width = widths[c]);
            } else {
                let _ = write!(out, "  {cell:>width$}", width = widths[c]);
            }
        }
        out.push('\n');
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

    /// A run of ours with these figures.
    fn run(cold_p50: f64, loads16: f64, commits16: f64, storage_cpu: f64) -> Figures {
        Figures {
            label: "ours".into(),
            populate_seconds: 1.0,
            cold: Latency {
                p50_us: cold_p50,
                p99_us: cold_p50 * 2.0,
            },
            warm: Latency {
                p50_us: 0.5,
                p99_us: 1.0,
            },
            loads: vec![(1, 50_000.0), (16, loads16)],
            commits: vec![(
                16,
                Commits {
                    latency: Latency {
                        p50_us: 2000.0,
                        p99_us: 5000.0,
                    },
                    per_second: commits16,
                },
            )],
            cpu: vec![(
                "load, 16 conn".into(),
                CpuPerOperation {
                    processes: vec![("client".into(), 9.0), ("storage_0".into(), storage_cpu)],
                },
            )],
        }
    }

    #[test]
    fn repeated_runs_show_their_medians_and_each_target_s_spread() {
        let runs = [
            run(12.0, 110_000.0, 5500.0, 7.0),
            run(30.0, 90_000.0, 6000.0, 11.0),
            run(14.0, 120_000.0, 4000.0, 8.0),
        ];
        let median = median(&runs);
        assert_eq!(median.cold.p50_us, 14.0);
        assert_eq!(median.cold.p99_us, 28.0);
        assert_eq!(median.loads, vec![(1, 50_000.0), (16, 110_000.0)]);
        assert_eq!(median.commits[0].1.per_second, 5500.0);
        assert_eq!(median.cpu[0].1.processes[1], ("storage_0".into(), 8.0));
        // An even count takes the mean of the two middle values.
        assert_eq!(median_of(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median_of(Vec::new()).is_nan());

        let text = spread(&runs, Some(0.4));
        let line = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("no {name} in\n{text}"))
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(
            line("loads, 16 conn"),
            "loads, 16 conn (obj/s) >= 100000 90000 110000 120000 2 of 3"
        );
        assert_eq!(
            line("cold load p50"),
            "cold load p50 (us) <= 25.00 12.00 14.00 30.00 2 of 3"
        );
        assert_eq!(
            line("commit, 16 committer(s) (commits/s)"),
            "commit, 16 committer(s) (commits/s) >= 5000 4000 5500 6000 2 of 3"
        );
        // NEO/py's warm loads (0.4 us) are the target of ours (0.5 us).
        assert_eq!(
            line("warm load p50"),
            "warm load p50 (us) <= 0.40 0.50 0.50 0.50 0 of 3"
        );
        // Figures without a target are not in the spread.
        assert!(
            !text.contains("loads, 1 conn") && !text.contains("p99"),
            "{text}"
        );
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
