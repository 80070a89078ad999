//! The health summary of a cluster (tools.md 3.3): what the admin tracks about its own
//! cluster and each monitored backup cluster, the severity it derives from it, and the
//! summary line `neoctl print summary` shows. Pure functions over plain data, so that the
//! texts can be checked without a running admin.

use std::collections::BTreeMap;

use neo_node::tid::days_from_civil;
use neo_protocol::{CellState, ClusterState, Tid};

/// Number of cells per cell state, keyed by the state's wire value so that iteration
/// follows NEO/py's numeric order.
pub type CellCounts = BTreeMap<u8, u32>;

/// What is known about the health of one cluster.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Monitor {
    pub cluster_state: Option<ClusterState>,
    /// Storage nodes with cells that are not RUNNING.
    pub down: u32,
    /// `None` until a partition table was seen (NEO/py's `pt_summary = None`), which
    /// matters because a change from nothing to an empty count is still a change.
    pub pt_summary: Option<CellCounts>,
    /// The last TID, once asked (AskLastTransaction).
    pub ltid: Option<Tid>,
    /// The backup TID from AskRecovery, once asked; the inner `None` means the answer
    /// carried none.
    pub backup_tid: Option<Option<Tid>>,
    /// Whether a monitored value changed since the last report.
    pub changed: bool,
    /// For a backup cluster: whether it lags more than allowed.
    pub lagging: bool,
    /// For a backup cluster: the allowed lag in seconds (`--monitor-maxlag`).
    pub max_lag: f64,
}

/// A TID as a calendar time, to the microsecond (what NEO/py's `datetimeFromTID` gives).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TidTime {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub microsecond: u32,
}

impl Monitor {
    /// RUNNING and BACKINGUP are the states where the cluster serves data.
    pub fn operational(&self) -> bool {
        matches!(
            self.cluster_state,
            Some(ClusterState::Running | ClusterState::BackingUp)
        )
    }

    /// 2 = problem, 1 = warning, 0 = fine. `backup` selects the stricter rule for backup
    /// clusters, which are expected to be BACKINGUP.
    pub fn severity(&self, backup: bool) -> usize {
        let only_up_to_date = self
            .pt_summary
            .as_ref()
            .is_some_and(|counts| counts.keys().eq([CellState::UpToDate.value()].iter()));
        if self.down > 0 || !self.operational() {
            2
        } else if !only_up_to_date
            || (backup && self.cluster_state != Some(ClusterState::BackingUp))
        {
            1
        } else {
            0
        }
    }

    /// The summary line. `upstream` is the own cluster's last TID (as a time and a TID) when
    /// this monitor is a backup; the own cluster passes `None`. Returns the TID this
    /// cluster reported, for its backups' lag, and the line. A backup's `lagging` and
    /// `changed` flags are updated as NEO/py does while formatting.
    pub fn format_summary(
        &mut self,
        upstream: Option<(TidTime, Tid)>,
    ) -> (Option<(TidTime, Tid)>, String) {
        let mut summary = state_name(self.cluster_state);
        if let Some(counts) = self.pt_summary.as_ref().filter(|c| !c.is_empty()) {
            let parts: Vec<String> = counts
                .iter()
                .map(|(state, n)| {
                    let name = CellState::from_value(*state as i128).map_or("?", |s| s.py_name());
                    format!("{name}={n}")
                })
                .collect();
            summary = format!("{summary}; {}", parts.join(", "));
        }
        if self.down > 0 {
            summary = format!("{summary}; DOWN={}", self.down);
        }
        if !self.operational() {
            return (None, summary);
        }
        let (tid, upstream) = if self.cluster_state == Some(ClusterState::BackingUp) {
            // A backup that just switched to BACKINGUP may not have been asked yet.
            match self.backup_tid {
                Some(Some(tid)) => (tid, upstream),
                _ => return (None, summary),
            }
        } else {
            match self.ltid {
                Some(tid) => (tid, None),
                None => return (None, summary),
            }
        };
        let time = tid_time(tid);
        let extra = match upstream {
            Some((upstream_time, upstream_tid)) => {
                let lag_us = upstream_time.micros_since_epoch() - time.micros_since_epoch();
                let (lag, lagging) = if lag_us != 0 || tid >= upstream_tid {
                    let lag = lag_us as f64 / 1e6;
                    (py_float(lag), self.max_lag < lag)
                } else {
                    // Same time to the microsecond, yet an older TID.
                    ("ε".to_string(), self.max_lag <= 0.0)
                };
                if self.lagging != lagging {
                    self.lagging = lagging;
                    self.changed = true;
                }
                format!("; lag={lag}")
            }
            None => format!(" ({time})"),
        };
        (Some((time, tid)), format!("{summary}; ltid={tid}{extra}"))
    }
}

/// NEO/py prints an unknown cluster state as `None`.
pub fn state_name(state: Option<ClusterState>) -> String {
    state.map_or_else(|| "None".to_string(), |s| s.py_name().to_string())
}

/// The calendar time a TID encodes (no time-zone conversion: TIDs are UTC).
pub fn tid_time(tid: Tid) -> TidTime {
    let mut high = tid.0 >> 32;
    let low = tid.0 & 0xffff_ffff;
    let minute = (high % 60) as u32;
    high /= 60;
    let hour = (high % 24) as u32;
    high /= 24;
    let day = (high % 31) as u32 + 1;
    high /= 31;
    let month = (high % 12) as u32 + 1;
    let year = (high / 12) as i64 + 1900;
    let scaled = low * 60;
    let second = (scaled >> 32) as u32;
    let rest = scaled & 0xffff_ffff;
    // The same float product NEO/py computes, truncated the same way.
    let microsecond = (rest as f64 * (1e6 / 4_294_967_296.0)) as u32;
    TidTime {
        year,
        month,
        day,
        hour,
        minute,
        second,
        microsecond,
    }
}

impl TidTime {
    /// Microseconds since 1970-01-01 (proleptic Gregorian), for differences.
    pub fn micros_since_epoch(&self) -> i64 {
        let days = days_from_civil(self.year, self.month, self.day);
        ((days * 24 + self.hour as i64) * 60 + self.minute as i64) * 60_000_000
            + self.second as i64 * 1_000_000
            + self.microsecond as i64
    }
}

/// Python's `str(datetime)`: the fraction only when it is not zero.
impl std::fmt::Display for TidTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )?;
        if self.microsecond != 0 {
            write!(f, ".{:06}", self.microsecond)?;
        }
        Ok(())
    }
}

/// Python's `repr(float)`: shortest round-trip digits, always a decimal point or an
/// exponent, scientific notation below 1e-4 and from 1e16.
pub fn py_float(value: f64) -> String {
    if !value.is_finite() {
        return if value.is_nan() {
            "nan".into()
        } else if value > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    let magnitude = value.abs();
    if magnitude != 0.0 && !(1e-4..1e16).contains(&magnitude) {
        let text = format!("{value:e}");
        let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
        let (sign, digits) = match exponent.strip_prefix('-') {
            Some(digits) => ('-', digits),
            None => ('+', exponent),
        };
        return format!("{mantissa}e{sign}{digits:0>2}");
    }
    let text = format!("{value}");
    if text.contains('.') {
        text
    } else {
        format!("{text}.0")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tid_times_print_like_python_datetimes() {
        assert_eq!(tid_time(Tid(0)).to_string(), "1900-01-01 00:00:00");
        assert_eq!(
            tid_time(Tid(0x040d_2bed_40be_baa4)).to_string(),
            "2026-11-21 19:57:15.174617"
        );
    }

    #[test]
    fn floats_print_like_python_repr() {
        assert_eq!(py_float(0.0), "0.0");
        assert_eq!(py_float(3.0), "3.0");
        assert_eq!(py_float(-12.5), "-12.5");
        assert_eq!(py_float(0.000001), "1e-06");
        assert_eq!(py_float(0.0001), "0.0001");
        assert_eq!(py_float(1e16), "1e+16");
    }
}
