//! TID arithmetic of the primary master: a TID from a clock reading, and NEO's `addTID`,
//! which adds to the sub-minute part and carries into a real calendar.
//!
//! The encoding is ZODB's TimeStamp: the high 32 bits count minutes since 1900-01-01 with
//! every month taken as 31 days; the low 32 bits are the fraction of the minute times
//! 2^32/60.

use neo_protocol::Tid;

const SECONDS_PER_UNIT: f64 = 60.0 / 4_294_967_296.0;

/// The TID of a wall-clock time (seconds since the Unix epoch, UTC).
pub fn tid_from_time(seconds: f64) -> Tid {
    let whole = seconds.floor();
    let days = (whole / 86400.0).floor() as i64;
    let (year, month, day) = civil_from_days(days);
    let in_day = whole - days as f64 * 86400.0;
    let hour = (in_day / 3600.0).floor() as i64;
    let minute = ((in_day - hour as f64 * 3600.0) / 60.0).floor() as i64;
    let second = seconds - (days as f64 * 86400.0 + hour as f64 * 3600.0 + minute as f64 * 60.0);
    let minutes = encode_minutes(year, month, day, hour, minute);
    let low = (second / SECONDS_PER_UNIT).clamp(0.0, u32::MAX as f64) as u64;
    Tid((minutes << 32) | low)
}

/// Unix time of a TID (for display).
pub fn tid_to_time(tid: Tid) -> f64 {
    let (year, month, day, hour, minute) = decode_minutes(tid.0 >> 32);
    let days = days_from_civil(year, month, day);
    days as f64 * 86400.0
        + hour as f64 * 3600.0
        + minute as f64 * 60.0
        + (tid.0 & 0xffff_ffff) as f64 * SECONDS_PER_UNIT
}

/// NEO's `addTID(tid, n)`: adds `n` (possibly negative) to the low 32 bits, carrying whole
/// minutes into the calendar so that the result is a valid timestamp again.
pub fn add_tid(tid: Tid, n: i64) -> Tid {
    let low = (tid.0 & 0xffff_ffff) as i64 + n;
    let carry_minutes = low.div_euclid(1 << 32);
    let low = low.rem_euclid(1 << 32) as u64;
    let mut high = tid.0 >> 32;
    if carry_minutes != 0 {
        let (year, month, day, hour, minute) = decode_minutes(high);
        let total = days_from_civil(year, month, day) * 1440 + hour * 60 + minute + carry_minutes;
        let days = total.div_euclid(1440);
        let rest = total.rem_euclid(1440);
        let (year, month, day) = civil_from_days(days);
        high = encode_minutes(year, month, day, rest / 60, rest % 60);
    }
    Tid((high << 32) | low)
}

fn encode_minutes(year: i64, month: u32, day: u32, hour: i64, minute: i64) -> u64 {
    let minutes = ((((year - 1900) * 12 + (month as i64 - 1)) * 31 + (day as i64 - 1)) * 24 + hour)
        * 60
        + minute;
    minutes.clamp(0, u32::MAX as i64) as u64
}

fn decode_minutes(mut v: u64) -> (i64, u32, u32, i64, i64) {
    let minute = (v % 60) as i64;
    v /= 60;
    let hour = (v % 24) as i64;
    v /= 24;
    let day = (v % 31) as u32 + 1;
    v /= 31;
    let month = (v % 12) as u32 + 1;
    v /= 12;
    (v as i64 + 1900, month, day, hour, minute)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = month as i64;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date of a day count since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_round_trip() {
        let t = 1_790_000_000.25;
        let tid = tid_from_time(t);
        assert!((tid_to_time(tid) - t).abs() < 1e-6);
    }

    #[test]
    fn add_carries_into_the_calendar() {
        // 2026-12-31 23:59, last unit of the minute: +1 goes to 2027-01-01 00:00.
        let tid = Tid((encode_minutes(2026, 12, 31, 23, 59) << 32) | 0xffff_ffff);
        let next = add_tid(tid, 1);
        assert_eq!(next.0 >> 32, encode_minutes(2027, 1, 1, 0, 0));
        assert_eq!(next.0 & 0xffff_ffff, 0);
        assert_eq!(add_tid(next, -1), tid);
        // Month with 30 days: 2026-04-30 23:59 + 1 minute is 2026-05-01, not "April 31".
        let tid = Tid(encode_minutes(2026, 4, 30, 23, 59) << 32);
        assert_eq!(
            add_tid(tid, 1 << 32).0 >> 32,
            encode_minutes(2026, 5, 1, 0, 0)
        );
        assert!(add_tid(tid, 5) > tid);
    }
}
