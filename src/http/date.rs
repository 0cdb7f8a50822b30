//! The `Date` header value, as an IMF-fixdate (RFC 9110 §5.6.7), rendered without any crate and
//! cached so that a busy loop formats it at most once per second.

use std::time::{SystemTime, UNIX_EPOCH};

/// Length of an IMF-fixdate such as `Sun, 06 Nov 1994 08:49:37 GMT`.
const IMF_FIXDATE_LEN: usize = 29;

/// The last second that still has a four-digit year (9999-12-31T23:59:59Z); later clocks are
/// clamped so the fixed-width format stays valid.
const MAX_UNIX_SECS: u64 = 253_402_300_799;

const WEEKDAYS: [&[u8; 3]; 7] = [b"Sun", b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat"];
const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// A pre-rendered `Date` value, refreshed only when the wall-clock second changes.
#[derive(Debug, Clone)]
pub struct DateCache {
    /// The Unix second `buf` was rendered for.
    secs: u64,
    buf: [u8; IMF_FIXDATE_LEN],
}

impl Default for DateCache {
    fn default() -> Self {
        Self::new()
    }
}

impl DateCache {
    /// A cache holding the current time.
    pub fn new() -> Self {
        let secs = unix_secs(SystemTime::now());
        Self {
            secs,
            buf: format_imf_fixdate(secs),
        }
    }

    /// The current date as an IMF-fixdate, without the header name or CRLF.
    pub fn get(&mut self) -> &[u8] {
        self.get_at(SystemTime::now())
    }

    /// The date for `now`, for a loop that already read the clock once per iteration.
    pub fn get_at(&mut self, now: SystemTime) -> &[u8] {
        let secs = unix_secs(now);
        if secs != self.secs {
            self.secs = secs;
            self.buf = format_imf_fixdate(secs);
        }
        &self.buf
    }
}

/// Whole seconds since the epoch; a clock set before 1970 reads as the epoch rather than failing,
/// since a slightly wrong `Date` is better than no response.
fn unix_secs(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .min(MAX_UNIX_SECS)
}

/// Renders `secs` (at most [`MAX_UNIX_SECS`]) as `Www, DD Mon YYYY HH:MM:SS GMT`.
fn format_imf_fixdate(secs: u64) -> [u8; IMF_FIXDATE_LEN] {
    let secs = secs.min(MAX_UNIX_SECS);
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    // 1970-01-01 was a Thursday (index 4 with Sunday = 0).
    let weekday = WEEKDAYS[((days + 4) % 7) as usize];
    let month_name = MONTHS[(month - 1) as usize];

    let mut out = [0u8; IMF_FIXDATE_LEN];
    out[..3].copy_from_slice(weekday);
    out[3..5].copy_from_slice(b", ");
    put_two_digits(&mut out[5..7], day);
    out[7] = b' ';
    out[8..11].copy_from_slice(month_name);
    out[11] = b' ';
    put_two_digits(&mut out[12..14], (year / 100) as u32);
    put_two_digits(&mut out[14..16], (year % 100) as u32);
    out[16] = b' ';
    put_two_digits(&mut out[17..19], (rem / 3600) as u32);
    out[19] = b':';
    put_two_digits(&mut out[20..22], (rem / 60 % 60) as u32);
    out[22] = b':';
    put_two_digits(&mut out[23..25], (rem % 60) as u32);
    out[25..].copy_from_slice(b" GMT");
    out
}

/// Writes `n` (below 100) as two ASCII digits into a two-byte slot.
fn put_two_digits(slot: &mut [u8], n: u32) {
    // Both values are below 10 after the arithmetic, so the casts cannot truncate.
    slot.copy_from_slice(&[b'0' + (n / 10 % 10) as u8, b'0' + (n % 10) as u8]);
}

/// Converts days since 1970-01-01 to a proleptic Gregorian (year, month 1-12, day 1-31).
///
/// Howard Hinnant's `civil_from_days`, restricted to non-negative day counts: the era is a
/// 400-year cycle (146 097 days) starting on a March 1st, so the leap day falls at the end of
/// each shifted year and needs no special case.
fn civil_from_days(days: u64) -> (u64, u32, u32) {
    // Shift the epoch to 0000-03-01, which is 719 468 days before 1970-01-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365], from March 1st
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32; // [1, 31]
    let month = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32; // [1, 12]
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn is_leap(y: u64) -> bool {
        (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400)
    }

    /// Days since the epoch for a civil date, by brute force (the test oracle).
    fn days_from_civil_slow(year: u64, month: u32, day: u32) -> u64 {
        let mut days = 0;
        for y in 1970..year {
            days += if is_leap(y) { 366 } else { 365 };
        }
        let month_len = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        for m in 1..month {
            days += month_len[(m - 1) as usize];
            if m == 2 && is_leap(year) {
                days += 1;
            }
        }
        days + u64::from(day) - 1
    }

    #[test]
    fn civil_from_days_known_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(
            civil_from_days(days_from_civil_slow(1994, 11, 6)),
            (1994, 11, 6)
        );
        // 2000 is a leap year (divisible by 400).
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
        // 2100 is not a leap year (divisible by 100 only): Feb 28 is followed by Mar 1.
        let feb28 = days_from_civil_slow(2100, 2, 28);
        assert_eq!(civil_from_days(feb28), (2100, 2, 28));
        assert_eq!(civil_from_days(feb28 + 1), (2100, 3, 1));
        assert_eq!(
            civil_from_days(days_from_civil_slow(2024, 2, 29)),
            (2024, 2, 29)
        );
        assert_eq!(
            civil_from_days(days_from_civil_slow(1999, 12, 31)),
            (1999, 12, 31)
        );
        assert_eq!(civil_from_days(MAX_UNIX_SECS / 86_400), (9999, 12, 31));
    }

    #[test]
    fn civil_from_days_matches_oracle_for_every_day_until_2101() {
        let mut expected_days = 0;
        let month_len = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        for year in 1970..=2101u64 {
            for month in 1..=12u32 {
                let mut len = month_len[(month - 1) as usize];
                if month == 2 && is_leap(year) {
                    len += 1;
                }
                for day in 1..=len {
                    assert_eq!(civil_from_days(expected_days), (year, month, day));
                    expected_days += 1;
                }
            }
        }
    }

    #[test]
    fn formats_rfc_example() {
        // The example of RFC 9110 §5.6.7.
        assert_eq!(
            &format_imf_fixdate(784_111_777),
            b"Sun, 06 Nov 1994 08:49:37 GMT"
        );
    }

    #[test]
    fn formats_edges() {
        assert_eq!(&format_imf_fixdate(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(
            &format_imf_fixdate(951_868_799),
            b"Tue, 29 Feb 2000 23:59:59 GMT"
        );
        assert_eq!(
            &format_imf_fixdate(4_107_542_400),
            b"Mon, 01 Mar 2100 00:00:00 GMT"
        );
        assert_eq!(
            &format_imf_fixdate(MAX_UNIX_SECS),
            b"Fri, 31 Dec 9999 23:59:59 GMT"
        );
        assert_eq!(
            &format_imf_fixdate(u64::MAX),
            b"Fri, 31 Dec 9999 23:59:59 GMT"
        );
    }

    #[test]
    fn cache_rerenders_only_when_the_second_changes() {
        let mut cache = DateCache::new();
        let t = UNIX_EPOCH + Duration::from_millis(784_111_777_100);
        assert_eq!(cache.get_at(t), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(
            cache.get_at(t + Duration::from_millis(800)),
            b"Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(
            cache.get_at(t + Duration::from_millis(900)),
            b"Sun, 06 Nov 1994 08:49:38 GMT"
        );
    }

    #[test]
    fn clock_before_epoch_reads_as_epoch() {
        let mut cache = DateCache::new();
        let before = UNIX_EPOCH - Duration::from_secs(10);
        assert_eq!(cache.get_at(before), b"Thu, 01 Jan 1970 00:00:00 GMT");
    }

    #[test]
    fn get_is_a_well_formed_current_date() {
        let mut cache = DateCache::new();
        let date = cache.get().to_vec();
        assert_eq!(date.len(), IMF_FIXDATE_LEN);
        assert!(date.ends_with(b" GMT"));
        assert!(date.starts_with(b"Sun") || WEEKDAYS.iter().any(|w| date.starts_with(*w)));
    }
}
