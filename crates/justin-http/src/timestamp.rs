//! The study server's `timestamp`: the ISO 8601 forms Python's `datetime.fromisoformat` (3.11)
//! reads, which is what a study server built on the Flask template sends, turned into one
//! instant both storage backends keep exactly.
//!
//! Accepted, in any combination of the date and time forms below:
//! - a date: `2025-01-01`, `20250101`, or an ISO week date (`2025-W01-3`, `2025W013`,
//!   `2025-W01` for its Monday); alone it means midnight;
//! - then `T` (or `t`, or a space) and a time: `12`, `12:00`, `12:00:00`, `1200`, `120000`,
//!   with any number of fractional digits after the seconds (`.` or `,`); second 60 (a leap
//!   second) is read as the first second of the next minute, as PostgreSQL reads it;
//! - then optionally an offset: `Z`, `+02`, `+02:00`, `+0200`, `+02:00:30`, `+02:00:30.5`
//!   (less than 24 hours).
//!
//! A time without an offset is local time in the configured zone
//! (`server.naive_time_zone`); one that a clock change skips or repeats there is refused rather
//! than guessed. Fractions are truncated to microseconds (as Python does), the precision both
//! backends store. The instant must lie in the years 1 to 9999 in UTC, the range both backends
//! store and restore exactly.

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc,
    Weekday,
};
use chrono_tz::Tz;

/// Longest timestamp text accepted, in bytes; the text is stored as sent.
pub const MAX_LEN: usize = 64;

/// Why a timestamp text was refused. The message is shown to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    /// Longer than [`MAX_LEN`] bytes.
    #[error("timestamp must be at most {MAX_LEN} characters long.")]
    TooLong,
    /// Not one of the accepted forms, or not a real date or time.
    #[error(
        "timestamp must be an ISO 8601 date-time such as 2025-01-01T12:00:00Z, \
         2025-01-01T14:00:00+02:00 or 2025-01-01 12:00:00 (without an offset it is read in {0})."
    )]
    Format(Tz),
    /// Outside the years 1 to 9999 once in UTC.
    #[error(
        "timestamp must lie between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999Z \
         (years 1 to 9999 in UTC)."
    )]
    OutOfRange,
    /// A local time that a clock change skips in the zone.
    #[error(
        "timestamp {0} does not exist in {1}: a clock change skips it; send the time with its \
         offset."
    )]
    Skipped(String, Tz),
    /// A local time that a clock change repeats in the zone.
    #[error(
        "timestamp {0} is ambiguous in {1}: a clock change repeats it; send the time with its \
         offset."
    )]
    Ambiguous(String, Tz),
}

/// Reads a timestamp; a time without an offset is local time in `zone`.
///
/// # Errors
/// See [`TimestampError`].
pub fn parse(raw: &str, zone: Tz) -> Result<DateTime<Utc>, TimestampError> {
    if raw.len() > MAX_LEN {
        return Err(TimestampError::TooLong);
    }
    let format = || TimestampError::Format(zone);
    let mut s = Scanner(raw.as_bytes());
    let date = date(&mut s).ok_or_else(format)?;
    let (time, leap, offset) = if s.0.is_empty() {
        (NaiveTime::MIN, false, None)
    } else {
        if !matches!(s.take(), Some(b'T' | b't' | b' ')) {
            return Err(format());
        }
        let (time, leap) = time(&mut s).ok_or_else(format)?;
        let offset = if s.0.is_empty() {
            None
        } else {
            Some(offset(&mut s).ok_or_else(format)?)
        };
        (time, leap, offset)
    };
    if !s.0.is_empty() {
        return Err(format());
    }
    let mut local = NaiveDateTime::new(date, time);
    if leap {
        local += Duration::seconds(1);
    }
    let at = match offset {
        Some(offset) => local.and_utc() - offset,
        None => match zone.from_local_datetime(&local) {
            LocalResult::Single(t) => t.with_timezone(&Utc),
            LocalResult::Ambiguous(..) => return Err(TimestampError::Ambiguous(raw.into(), zone)),
            LocalResult::None => return Err(TimestampError::Skipped(raw.into(), zone)),
        },
    };
    // Microsecond precision: within these years is within both backends' range.
    if !(1..=9999).contains(&at.year()) {
        return Err(TimestampError::OutOfRange);
    }
    Ok(at)
}

/// The unread rest of the text.
struct Scanner<'a>(&'a [u8]);

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.0.first().copied()
    }

    fn take(&mut self) -> Option<u8> {
        let (first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*first)
    }

    /// Takes `c` when it comes next.
    fn eat(&mut self, c: u8) -> bool {
        let next = self.peek() == Some(c);
        if next {
            self.0 = &self.0[1..];
        }
        next
    }

    /// Exactly `n` ASCII digits as a number.
    fn digits(&mut self, n: usize) -> Option<u32> {
        let head = self.0.get(..n)?;
        if !head.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.0 = &self.0[n..];
        Some(head.iter().fold(0, |acc, d| acc * 10 + u32::from(d - b'0')))
    }

    /// One or more digits after a `.` or `,`, as microseconds (truncated).
    fn fraction(&mut self) -> Option<u32> {
        if !(self.eat(b'.') || self.eat(b',')) {
            return Some(0);
        }
        let len = self.0.iter().take_while(|b| b.is_ascii_digit()).count();
        if len == 0 {
            return None;
        }
        let (digits, rest) = self.0.split_at(len);
        self.0 = rest;
        let micros = digits
            .iter()
            .chain(std::iter::repeat(&b'0'))
            .take(6)
            .fold(0, |acc, d| acc * 10 + u32::from(d - b'0'));
        Some(micros)
    }
}

/// `YYYY-MM-DD`, `YYYYMMDD`, `YYYY-Www[-D]` or `YYYYWww[D]`.
fn date(s: &mut Scanner<'_>) -> Option<NaiveDate> {
    let year = i32::try_from(s.digits(4)?).ok()?;
    let extended = s.eat(b'-');
    if s.eat(b'W') {
        let week = s.digits(2)?;
        let day = if extended {
            if s.eat(b'-') {
                s.digits(1)?
            } else {
                1
            }
        } else if s.peek().is_some_and(|b| b.is_ascii_digit()) {
            s.digits(1)?
        } else {
            1
        };
        let weekday = match day {
            1 => Weekday::Mon,
            2 => Weekday::Tue,
            3 => Weekday::Wed,
            4 => Weekday::Thu,
            5 => Weekday::Fri,
            6 => Weekday::Sat,
            7 => Weekday::Sun,
            _ => return None,
        };
        return NaiveDate::from_isoywd_opt(year, week, weekday);
    }
    let month = s.digits(2)?;
    if extended && !s.eat(b'-') {
        return None;
    }
    let day = s.digits(2)?;
    NaiveDate::from_ymd_opt(year, month, day)
}

/// `HH[:MM[:SS[.f]]]` or `HH[MM[SS[.f]]]`; also says whether the second was 60.
fn time(s: &mut Scanner<'_>) -> Option<(NaiveTime, bool)> {
    let hour = s.digits(2)?;
    let mut minute = 0;
    let mut second = 0;
    let mut micros = 0;
    let extended = s.peek() == Some(b':');
    let separator = |s: &mut Scanner<'_>| !extended || s.eat(b':');
    if s.peek().is_some_and(|b| b == b':' || b.is_ascii_digit()) {
        if !separator(s) {
            return None;
        }
        minute = s.digits(2)?;
        if s.peek().is_some_and(|b| b == b':' || b.is_ascii_digit()) {
            if !separator(s) {
                return None;
            }
            second = s.digits(2)?;
            micros = s.fraction()?;
        }
    }
    let leap = second == 60;
    let second = if leap { 59 } else { second };
    Some((
        NaiveTime::from_hms_micro_opt(hour, minute, second, micros)?,
        leap,
    ))
}

/// `Z`, or a sign and `HH[:MM[:SS[.f]]]` / `HH[MM[SS[.f]]]`, less than 24 hours.
fn offset(s: &mut Scanner<'_>) -> Option<Duration> {
    let sign = match s.take()? {
        b'Z' | b'z' => return Some(Duration::zero()),
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let hours = s.digits(2)?;
    let mut minutes = 0;
    let mut seconds = 0;
    let mut micros = 0;
    if !s.0.is_empty() {
        let extended = s.eat(b':');
        minutes = s.digits(2)?;
        if !s.0.is_empty() {
            if extended && !s.eat(b':') {
                return None;
            }
            seconds = s.digits(2)?;
            micros = s.fraction()?;
        }
    }
    if hours > 23 || minutes > 59 || seconds > 59 {
        return None;
    }
    let total = Duration::hours(i64::from(hours))
        + Duration::minutes(i64::from(minutes))
        + Duration::seconds(i64::from(seconds))
        + Duration::microseconds(i64::from(micros));
    Some(total * sign)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(raw: &str) -> String {
        at(raw, Tz::UTC)
    }

    fn at(raw: &str, zone: Tz) -> String {
        parse(raw, zone)
            .unwrap_or_else(|e| panic!("{raw}: {e}"))
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    }

    fn refused(raw: &str) -> TimestampError {
        parse(raw, Tz::UTC).expect_err(raw)
    }

    #[test]
    fn every_accepted_form_and_its_instant() {
        for (raw, expected) in [
            ("2025-01-01T12:00:00Z", "2025-01-01T12:00:00Z"),
            ("2025-01-01T12:00:00z", "2025-01-01T12:00:00Z"),
            ("2025-01-01T14:00:00+02:00", "2025-01-01T12:00:00Z"),
            ("2025-01-01T14:00:00+0200", "2025-01-01T12:00:00Z"),
            ("2025-01-01T14:00:00+02", "2025-01-01T12:00:00Z"),
            ("2025-01-01T12:00:00-00:00", "2025-01-01T12:00:00Z"),
            ("2025-01-01T14:00:30+02:00:30", "2025-01-01T12:00:00Z"),
            ("2025-01-01T14:00:30.5+02:00:30.5", "2025-01-01T12:00:00Z"),
            ("2025-01-01T14:00:30+020030", "2025-01-01T12:00:00Z"),
            ("2025-01-01T12:00:00", "2025-01-01T12:00:00Z"),
            ("2025-01-01t12:00:00", "2025-01-01T12:00:00Z"),
            ("2025-01-01 12:00:00", "2025-01-01T12:00:00Z"),
            ("2025-01-01 12:00:00+00:00", "2025-01-01T12:00:00Z"),
            ("2025-01-01T12:00", "2025-01-01T12:00:00Z"),
            ("2025-01-01T12", "2025-01-01T12:00:00Z"),
            ("2025-01-01T1200", "2025-01-01T12:00:00Z"),
            ("2025-01-01T120000", "2025-01-01T12:00:00Z"),
            ("2025-01-01T120000.5Z", "2025-01-01T12:00:00.500Z"),
            ("20250101T12:00:00", "2025-01-01T12:00:00Z"),
            ("2025-01-01", "2025-01-01T00:00:00Z"),
            ("20250101", "2025-01-01T00:00:00Z"),
            ("2025-W01-3", "2025-01-01T00:00:00Z"),
            ("2025W013", "2025-01-01T00:00:00Z"),
            ("2025-W01", "2024-12-30T00:00:00Z"),
            ("2025-W01-3T12:00Z", "2025-01-01T12:00:00Z"),
            ("2025-01-01T12:00:00.5", "2025-01-01T12:00:00.500Z"),
            ("2025-01-01T12:00:00,5", "2025-01-01T12:00:00.500Z"),
            ("2025-01-01T12:00:00.123456Z", "2025-01-01T12:00:00.123456Z"),
            // Beyond microseconds: truncated, as Python does, to what both backends store.
            (
                "2025-01-01T12:00:00.123456789Z",
                "2025-01-01T12:00:00.123456Z",
            ),
            (
                "2025-01-01T12:00:00.9999999999999999999999Z",
                "2025-01-01T12:00:00.999999Z",
            ),
            // A leap second is the first second of the next minute, as PostgreSQL reads it.
            ("2016-12-31T23:59:60Z", "2017-01-01T00:00:00Z"),
            ("2016-12-31T23:59:60.25Z", "2017-01-01T00:00:00.250Z"),
            ("2017-01-01T00:59:60+01:00", "2017-01-01T00:00:00Z"),
            // The edges of the range both backends store.
            ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z"),
            ("0001-01-01T01:00:00+01:00", "0001-01-01T00:00:00Z"),
            ("9999-12-31T23:59:59.999999Z", "9999-12-31T23:59:59.999999Z"),
            (
                "9999-12-31T23:59:59.9999999Z",
                "9999-12-31T23:59:59.999999Z",
            ),
            ("9999-12-31T22:59:59-01:00", "9999-12-31T23:59:59Z"),
        ] {
            assert_eq!(utc(raw), expected, "{raw}");
        }
    }

    #[test]
    fn times_without_an_offset_are_local_in_the_configured_zone() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        // Winter: UTC+1; summer: UTC+2.
        assert_eq!(at("2025-01-01T12:00:00", berlin), "2025-01-01T11:00:00Z");
        assert_eq!(at("2025-07-01 12:00:00", berlin), "2025-07-01T10:00:00Z");
        assert_eq!(at("2025-07-01", berlin), "2025-06-30T22:00:00Z");
        // An offset wins over the zone.
        assert_eq!(at("2025-07-01T12:00:00Z", berlin), "2025-07-01T12:00:00Z");
        let new_york: Tz = "America/New_York".parse().unwrap();
        assert_eq!(at("2025-01-01T12:00:00", new_york), "2025-01-01T17:00:00Z");
    }

    #[test]
    fn local_times_a_clock_change_skips_or_repeats_are_refused() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        assert_eq!(
            parse("2025-03-30T02:30:00", berlin)
                .unwrap_err()
                .to_string(),
            "timestamp 2025-03-30T02:30:00 does not exist in Europe/Berlin: a clock change \
             skips it; send the time with its offset."
        );
        assert_eq!(
            parse("2025-10-26 02:30", berlin).unwrap_err().to_string(),
            "timestamp 2025-10-26 02:30 is ambiguous in Europe/Berlin: a clock change repeats \
             it; send the time with its offset."
        );
        // With an offset both are plain instants.
        assert_eq!(
            at("2025-10-26T02:30:00+01:00", berlin),
            "2025-10-26T01:30:00Z"
        );
    }

    #[test]
    fn instants_outside_years_1_to_9999_are_refused() {
        for raw in [
            "0000-01-01",
            "0000-12-31T23:59:59Z",
            "0001-01-01T00:30:00+01:00",
            "9999-12-31T23:59:59-23:59",
            "9999-12-31T23:59:60Z",
        ] {
            assert_eq!(refused(raw), TimestampError::OutOfRange, "{raw}");
        }
        assert_eq!(
            TimestampError::OutOfRange.to_string(),
            "timestamp must lie between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999Z \
             (years 1 to 9999 in UTC)."
        );
    }

    #[test]
    fn malformed_texts_are_refused_naming_the_forms() {
        for raw in [
            "yesterday",
            "",
            " 2025-01-01",
            "2025-01-01 ",
            "2025",
            "2025-01",
            "2025-1-01",
            "2025-13-01",
            "2025-02-30",
            "2025-0101",
            "2025-01-01T",
            "2025-01-01x12:00",
            "2025-01-01T12:0",
            "2025-01-01T12:00:00.",
            "2025-01-01T12:00.5",
            "2025-01-01T12:0000",
            "2025-01-01T24:00:00",
            "2025-01-01T12:60:00",
            "2025-01-01T12:00:61",
            "2025-01-01T12:00:00+24:00",
            "2025-01-01T12:00:00+02:0",
            "2025-01-01T12:00:00+02:60",
            "2025-01-01T12:00:00 +02:00",
            "2025-01-01T12:00:00Z+01:00",
            "2025-01-01T12:00:00UTC",
            "2025-W54-1",
            "2025-W01-8",
            "\u{662}\u{660}\u{662}\u{665}-01-01",
            "+2025-01-01",
            "1735732800",
        ] {
            assert_eq!(refused(raw), TimestampError::Format(Tz::UTC), "{raw:?}");
        }
        assert_eq!(
            TimestampError::Format(Tz::UTC).to_string(),
            "timestamp must be an ISO 8601 date-time such as 2025-01-01T12:00:00Z, \
             2025-01-01T14:00:00+02:00 or 2025-01-01 12:00:00 (without an offset it is read \
             in UTC)."
        );
    }

    #[test]
    fn texts_longer_than_the_limit_are_refused() {
        let long = format!("2025-01-01T12:00:00.{}Z", "0".repeat(MAX_LEN));
        assert_eq!(refused(&long), TimestampError::TooLong);
        let longest = format!("2025-01-01T12:00:00.{}Z", "0".repeat(MAX_LEN - 21));
        assert_eq!(longest.len(), MAX_LEN);
        assert_eq!(utc(&longest), "2025-01-01T12:00:00Z");
    }
}
