//! Transaction ids and ZODB's TimeStamp encoding of them.
//!
//! A tid is 8 big-endian bytes: the high u32 counts "minutes" since
//! 1900-01-01 with every month taken as 31 days, the low u32 is the
//! fraction of the minute scaled by 2^32/60. ZODB, NEO and this crate all
//! order tids as plain u64 values, which matches byte-wise order.

use std::fmt;

/// A transaction id (also the serial of every record it wrote).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Tid(pub u64);

/// An object id. Oid 0 is the root object.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Oid(pub u64);

impl Tid {
    /// "No tid": never the id of a real transaction.
    pub const ZERO: Tid = Tid(0);
    /// ZODB's "load current" bound.
    pub const MAX: Tid = Tid(0x7fff_ffff_ffff_ffff);

    pub fn from_bytes(bytes: [u8; 8]) -> Tid {
        Tid(u64::from_be_bytes(bytes))
    }

    pub fn to_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    /// The tid ZODB derives from a Unix time (seconds, UTC), as pack does:
    /// the fraction of the minute is truncated, not rounded.
    pub fn from_unix(seconds: f64) -> Tid {
        let whole = seconds.floor();
        let days = (whole / 86400.0).floor() as i64;
        let (year, month, day) = civil_from_days(days);
        let in_day = whole - days as f64 * 86400.0;
        let hour = (in_day / 3600.0).floor() as u32;
        let minute = ((in_day - hour as f64 * 3600.0) / 60.0).floor() as u32;
        let second =
            seconds - (days as f64 * 86400.0 + hour as f64 * 3600.0 + minute as f64 * 60.0);
        Tid::from_parts(year, month, day, hour, minute, second)
    }

    /// Encodes a calendar time; `second` may carry a fraction.
    pub fn from_parts(year: i64, month: u32, day: u32, hour: u32, minute: u32, second: f64) -> Tid {
        let minutes = ((((year - 1900) * 12 + (month as i64 - 1)) * 31 + (day as i64 - 1)) * 24
            + hour as i64)
            * 60
            + minute as i64;
        let high = minutes.clamp(0, u32::MAX as i64) as u64;
        let low = (second / SECONDS_PER_UNIT).clamp(0.0, u32::MAX as f64) as u64;
        Tid((high << 32) | low)
    }

    /// Year, month, day, hour, minute and (fractional) second, as ZODB's
    /// TimeStamp decodes them.
    pub fn parts(self) -> (i64, u32, u32, u32, u32, f64) {
        let mut v = self.0 >> 32;
        let minute = (v % 60) as u32;
        v /= 60;
        let hour = (v % 24) as u32;
        v /= 24;
        let day = (v % 31) as u32 + 1;
        v /= 31;
        let month = (v % 12) as u32 + 1;
        v /= 12;
        let year = v as i64 + 1900;
        let second = (self.0 & 0xffff_ffff) as f64 * SECONDS_PER_UNIT;
        (year, month, day, hour, minute, second)
    }

    /// Unix time of this tid (for display and pack-time comparisons).
    pub fn to_unix(self) -> f64 {
        let (year, month, day, hour, minute, second) = self.parts();
        let days = days_from_civil(year, month, day);
        days as f64 * 86400.0 + hour as f64 * 3600.0 + minute as f64 * 60.0 + second
    }

    /// The smallest tid greater than `self` that is also >= `other`, ZODB's
    /// `laterThan`: when the clock did not advance, bump the low word.
    pub fn later_than(self, previous: Tid) -> Tid {
        if self > previous {
            self
        } else {
            Tid(previous.0 + 1)
        }
    }

    /// The text ZODB's `str(TimeStamp(tid))` prints, e.g.
    /// `2024-01-01 00:00:01.000000`.
    pub fn timestamp_string(self) -> String {
        let (year, month, day, hour, minute, second) = self.parts();
        format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:09.6}")
    }
}

impl Oid {
    pub const ROOT: Oid = Oid(0);

    pub fn from_bytes(bytes: [u8; 8]) -> Oid {
        Oid(u64::from_be_bytes(bytes))
    }

    pub fn to_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }
}

impl fmt::Display for Tid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for Tid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tid({:016x})", self.0)
    }
}

impl fmt::Display for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Oid({:016x})", self.0)
    }
}

/// Parses 16 hex digits (an optional `0x` prefix is accepted).
pub fn parse_hex_u64(text: &str) -> Option<u64> {
    let digits = text.strip_prefix("0x").unwrap_or(text);
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

/// Seconds represented by one unit of a tid's low word.
const SECONDS_PER_UNIT: f64 = 60.0 / 65536.0 / 65536.0;

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm), so that no calendar crate is needed in this format crate.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + if month <= 2 { 1 } else { 0 };
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_examples() {
        // filestorage.md §1: 2024-01-01 00:00:00 and the next two seconds.
        let t0 = 1704067200.0;
        assert_eq!(Tid::from_unix(t0), Tid(0x03f5_8e00_0000_0000));
        assert_eq!(Tid::from_unix(t0 + 1.0), Tid(0x03f5_8e00_0444_4444));
        assert_eq!(Tid::from_unix(t0 + 2.0), Tid(0x03f5_8e00_0888_8888));
        assert_eq!(
            Tid(0x03f5_8e00_0444_4444).timestamp_string(),
            "2024-01-01 00:00:01.000000"
        );
        assert_eq!(
            Tid(0x03f5_8e00_ffff_ffff).timestamp_string(),
            "2024-01-01 00:00:60.000000"
        );
        assert_eq!(
            Tid(0x03f5_8e00_00bc_614e).timestamp_string(),
            "2024-01-01 00:00:00.172467"
        );
        assert_eq!(Tid(0x03f5_8e00_0000_0000).to_unix(), t0);
    }

    #[test]
    fn calendar_round_trip() {
        for days in [-800_000i64, -1, 0, 1, 59, 60, 11_016, 19_723, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn later_than_bumps_low_word() {
        let t = Tid(0x03f5_8e00_0000_0005);
        assert_eq!(Tid(1).later_than(t), Tid(0x03f5_8e00_0000_0006));
        assert_eq!(Tid(u64::MAX >> 1).later_than(t), Tid(u64::MAX >> 1));
    }
}
