//! The study's schedule: its decision times per study day, and the study-wide calendar of
//! decision times (cells) it gives.
//!
//! A schedule lists the decision times of one study day in order, each with its decision
//! type; a type may have several. With S times per day, cell `c` is the slot `c mod S` of the
//! local date `c div S` (days counted as [`NaiveDate::num_days_from_ce`] counts them), in the
//! schedule's time zone. Cells here are absolute; an export counts its `calendar_t` from the
//! first cell of its origin date ([`Schedule::first_cell_of`]).
//!
//! A cell's nominal instant is its local date at its time of day in the time zone. Where a
//! clock change makes that local time ambiguous (it occurs twice when clocks go back), the
//! earlier instant is taken; where it skips it (clocks go forward), the first instant after
//! the gap (the moment the clocks jump), so nominal instants never decrease along the cells.
//!
//! A decision is placed in a cell ([`Schedule::place`]) by its request time (the nearest cell
//! of its type) or by its index (the i-th cell of its type from the participant's start). A
//! participant's in-study cells are those whose nominal instant lies in their time in the
//! study ([`Schedule::in_study_cells`]).
//!
//! No IO: the export and the watchdog of a study use the same arithmetic.

use chrono::{
    DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, TimeZone,
    Timelike, Utc,
};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::domain::{DecisionIdx, DecisionType};

/// How a decision finds its cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlaceBy {
    /// By its request timestamp: the cell of its decision type whose nominal instant is
    /// nearest.
    #[default]
    Time,
    /// By its `decision_idx`: the i-th cell of its decision type at or after the participant's
    /// start, counting from the schedule's first decision index.
    Index,
}

impl PlaceBy {
    /// The word configured and exported.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Time => "time",
            Self::Index => "index",
        }
    }

    /// Reads the configured word.
    ///
    /// # Errors
    /// For another word; the message says which are accepted.
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw {
            "time" => Ok(Self::Time),
            "index" => Ok(Self::Index),
            other => Err(format!("must be \"time\" or \"index\", not {other:?}")),
        }
    }
}

/// One decision time of the study day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledTime {
    /// The decision type decided at this time.
    pub decision_type: DecisionType,
    /// The local time of day.
    pub at: NaiveTime,
}

/// Why a schedule cannot be built; `key` names the offending entry relative to the schedule
/// (`times`, `times[2].at`, `first_decision_idx`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ScheduleError {
    /// The entry at fault.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

/// Reads a time of day written `HH:MM` or `HH:MM:SS` (with optional fractional seconds).
///
/// # Errors
/// For anything else; the message says what is expected.
pub fn parse_time_of_day(raw: &str) -> Result<NaiveTime, String> {
    let two_digits = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit());
    let mut parts = raw.splitn(3, ':');
    let (h, m) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let shaped = two_digits(h) && two_digits(m);
    let parsed = match parts.next() {
        None if shaped => NaiveTime::parse_from_str(raw, "%H:%M").ok(),
        Some(s) if shaped && s.len() >= 2 && two_digits(&s[..2]) => {
            NaiveTime::parse_from_str(raw, "%H:%M:%S%.f").ok()
        }
        _ => None,
    };
    // chrono reads a leap second (:60) as 59.999...; a schedule has none.
    parsed
        .filter(|t| t.nanosecond() < 1_000_000_000)
        .ok_or_else(|| format!("must be a time of day written HH:MM or HH:MM:SS, not {raw:?}"))
}

/// Why a decision has no cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unplaced {
    /// Its decision type has no time in the schedule.
    DecisionTypeNotScheduled,
    /// An earlier stored decision of the participant holds its cell.
    CellTaken,
    /// (Placing by index) its `decision_idx` is below the schedule's first decision index.
    DecisionIdxBeforeFirst,
    /// Its cell lies beyond the dates the calendar can count.
    OutOfRange,
}

impl Unplaced {
    /// The reason as `unplaced.csv` writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DecisionTypeNotScheduled => "decision_type_not_scheduled",
            Self::CellTaken => "cell_taken",
            Self::DecisionIdxBeforeFirst => "decision_idx_before_first",
            Self::OutOfRange => "out_of_range",
        }
    }
}

/// What placing needs of a decision.
#[derive(Debug, Clone, Copy)]
pub struct DecisionKey<'a> {
    /// Its decision type.
    pub decision_type: &'a DecisionType,
    /// Its index.
    pub decision_idx: DecisionIdx,
    /// The instant of its request's timestamp.
    pub requested_at: DateTime<Utc>,
}

/// A study's schedule; see the module documentation.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    place_by: PlaceBy,
    time_zone: Tz,
    first_decision_idx: i64,
    times: Vec<ScheduledTime>,
}

/// A cell's day and slot.
fn split(cell: i64, per_day: i64) -> (i64, usize) {
    // per_day ≥ 1, and a slot index below it fits a usize.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let slot = cell.rem_euclid(per_day) as usize;
    (cell.div_euclid(per_day), slot)
}

/// The local date numbered `day` (days from the common era, as chrono counts them).
fn date_of(day: i64) -> Option<NaiveDate> {
    NaiveDate::from_num_days_from_ce_opt(i32::try_from(day).ok()?)
}

/// The instant of a local date and time in `zone`: the earlier of two when the time occurs
/// twice, and the first instant after the gap when a clock change skips it.
fn local_instant(zone: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    let earliest = |result: LocalResult<DateTime<Tz>>| match result {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(a, b) => Some(a.min(b).with_timezone(&Utc)),
        LocalResult::None => None,
    };
    if let Some(t) = earliest(zone.from_local_datetime(&local)) {
        return Some(t);
    }
    // In a gap: the first whole local minute after it is the moment the clocks jump (every
    // transition of the time zone database since 1970 falls on a whole minute).
    let minute = local.with_second(0)?.with_nanosecond(0)?;
    (1..=24 * 60).find_map(|m| {
        earliest(zone.from_local_datetime(&minute.checked_add_signed(TimeDelta::minutes(m))?))
    })
}

impl Schedule {
    /// A schedule, checked: at least one time, strictly increasing within the day.
    ///
    /// # Errors
    /// When `times` is empty or not strictly increasing, or `first_decision_idx` is negative.
    pub fn new(
        place_by: PlaceBy,
        time_zone: Tz,
        first_decision_idx: i64,
        times: Vec<ScheduledTime>,
    ) -> Result<Self, ScheduleError> {
        if times.is_empty() {
            return Err(ScheduleError {
                key: "times".into(),
                message: "a schedule needs at least one decision time".into(),
            });
        }
        if let Some(i) = (1..times.len()).find(|&i| times[i].at <= times[i - 1].at) {
            return Err(ScheduleError {
                key: format!("times[{i}].at"),
                message: format!(
                    "the times of the day must be strictly increasing: {} does not come after \
                     times[{}].at = {}",
                    times[i].at,
                    i - 1,
                    times[i - 1].at
                ),
            });
        }
        if first_decision_idx < 0 {
            return Err(ScheduleError {
                key: "first_decision_idx".into(),
                message: "must not be negative".into(),
            });
        }
        Ok(Self {
            place_by,
            time_zone,
            first_decision_idx,
            times,
        })
    }

    /// How decisions are placed.
    pub fn place_by(&self) -> PlaceBy {
        self.place_by
    }

    /// The time zone study days are counted in.
    pub fn time_zone(&self) -> Tz {
        self.time_zone
    }

    /// The `decision_idx` of each type's first decision (placing by index).
    pub fn first_decision_idx(&self) -> i64 {
        self.first_decision_idx
    }

    /// The decision times of one day, in order.
    pub fn times(&self) -> &[ScheduledTime] {
        &self.times
    }

    /// The number of cells per day.
    pub fn cells_per_day(&self) -> i64 {
        // A schedule of more than i64::MAX times cannot be held in memory.
        i64::try_from(self.times.len()).unwrap_or(i64::MAX)
    }

    /// The local date of `at` in the schedule's time zone.
    pub fn local_date(&self, at: DateTime<Utc>) -> NaiveDate {
        at.with_timezone(&self.time_zone).date_naive()
    }

    /// The first cell of `date`.
    pub fn first_cell_of(&self, date: NaiveDate) -> i64 {
        i64::from(date.num_days_from_ce()) * self.cells_per_day()
    }

    /// The local date of `cell`; `None` beyond the dates chrono counts.
    pub fn date_of_cell(&self, cell: i64) -> Option<NaiveDate> {
        date_of(split(cell, self.cells_per_day()).0)
    }

    /// The scheduled time (and its decision type) of `cell`.
    pub fn slot_of_cell(&self, cell: i64) -> &ScheduledTime {
        &self.times[split(cell, self.cells_per_day()).1]
    }

    /// The nominal instant of `cell`; `None` beyond the dates chrono counts.
    pub fn instant(&self, cell: i64) -> Option<DateTime<Utc>> {
        let (day, slot) = split(cell, self.cells_per_day());
        let date = date_of(day)?;
        local_instant(self.time_zone, date.and_time(self.times[slot].at))
    }

    /// The cells of `decision_type` on the local dates from `day - 1` to `day + 2`, in order.
    fn cells_near(&self, day: i64, decision_type: Option<&DecisionType>) -> Vec<i64> {
        let per_day = self.cells_per_day();
        (day.saturating_sub(1)..=day.saturating_add(2))
            .flat_map(|d| {
                self.times
                    .iter()
                    .enumerate()
                    .filter(move |(_, t)| decision_type.is_none_or(|dt| &t.decision_type == dt))
                    .filter_map(move |(slot, _)| {
                        d.checked_mul(per_day)?
                            .checked_add(i64::try_from(slot).ok()?)
                    })
            })
            .collect()
    }

    /// The first cell (of `decision_type`, or of any type) whose nominal instant is at or after
    /// `at`; `None` beyond the dates chrono counts.
    pub fn first_cell_at_or_after(
        &self,
        at: DateTime<Utc>,
        decision_type: Option<&DecisionType>,
    ) -> Option<i64> {
        let day = i64::from(self.local_date(at).num_days_from_ce());
        self.cells_near(day, decision_type)
            .into_iter()
            .find(|&c| self.instant(c).is_some_and(|t| t >= at))
    }

    /// A participant's in-study cells: from the first cell at or after `start` up to, not
    /// including, the first cell at or after `end` (open when `end` is `None`). Returns the
    /// first cell and the end (exclusive); an empty window has `end <= first`.
    pub fn in_study_cells(
        &self,
        start: DateTime<Utc>,
        end: Option<DateTime<Utc>>,
    ) -> Option<(i64, Option<i64>)> {
        let first = self.first_cell_at_or_after(start, None)?;
        let end = match end {
            None => None,
            Some(end) => Some(self.first_cell_at_or_after(end, None)?),
        };
        Some((first, end))
    }

    /// The cell of `decision_type` nearest to `at` (as placing by time finds it), whatever
    /// the schedule's `place_by`; `None` when the type is not scheduled or beyond the dates
    /// chrono counts. The watchdog places a participant's latest decision with it.
    pub fn nearest_cell(&self, decision_type: &DecisionType, at: DateTime<Utc>) -> Option<i64> {
        if !self.times.iter().any(|t| &t.decision_type == decision_type) {
            return None;
        }
        self.nearest(decision_type, at).ok()
    }

    /// The first cell (of any type) whose nominal instant is after `at`.
    pub fn first_cell_after(&self, at: DateTime<Utc>) -> Option<i64> {
        let day = i64::from(self.local_date(at).num_days_from_ce());
        self.cells_near(day, None)
            .into_iter()
            .find(|&c| self.instant(c).is_some_and(|t| t > at))
    }

    /// The first cell of `decision_type` at or after cell `from`.
    pub fn first_cell_from(&self, from: i64, decision_type: &DecisionType) -> Option<i64> {
        let per_day = self.cells_per_day();
        (0..per_day)
            .filter_map(|k| from.checked_add(k))
            .find(|&c| &self.slot_of_cell(c).decision_type == decision_type)
    }

    /// How many cells of `decision_type` lie in `from..until` (none when `until <= from`),
    /// counted without walking them.
    pub fn count_cells(&self, decision_type: &DecisionType, from: i64, until: i64) -> u64 {
        if until <= from {
            return 0;
        }
        let per_day = self.cells_per_day();
        let of_type = |cells: std::ops::Range<i64>| {
            cells
                .filter(|&c| &self.slot_of_cell(c).decision_type == decision_type)
                .count() as u64
        };
        let whole_days = (until - from) / per_day;
        let per_whole_day = of_type(0..per_day);
        let rest_from = from + whole_days * per_day;
        // Whole days are not negative: until > from.
        #[allow(clippy::cast_sign_loss)]
        let whole = whole_days as u64;
        whole
            .saturating_mul(per_whole_day)
            .saturating_add(of_type(rest_from..until))
    }

    /// The cell of one decision, regardless of other decisions (see [`Placer`] for cells
    /// already taken). `start` is the participant's start (used when placing by index).
    ///
    /// # Errors
    /// The reason the decision has no cell.
    pub fn place(&self, decision: DecisionKey<'_>, start: DateTime<Utc>) -> Result<i64, Unplaced> {
        let decision_type = decision.decision_type;
        if !self.times.iter().any(|t| &t.decision_type == decision_type) {
            return Err(Unplaced::DecisionTypeNotScheduled);
        }
        match self.place_by {
            PlaceBy::Time => self.nearest(decision_type, decision.requested_at),
            PlaceBy::Index => self.by_index(decision_type, decision.decision_idx, start),
        }
    }

    /// The cell of `decision_type` on the local date of `at` or the day before or after whose
    /// nominal instant is nearest to `at`; of two equally near, the earlier.
    fn nearest(&self, decision_type: &DecisionType, at: DateTime<Utc>) -> Result<i64, Unplaced> {
        let day = i64::from(self.local_date(at).num_days_from_ce());
        let mut best: Option<(TimeDelta, i64)> = None;
        for cell in self.cells_near(day, Some(decision_type)) {
            // Only the dates before, on and after the request's date are candidates.
            if split(cell, self.cells_per_day()).0 > day.saturating_add(1) {
                continue;
            }
            let Some(instant) = self.instant(cell) else {
                continue;
            };
            let distance = (instant - at).abs();
            if best.is_none_or(|(d, _)| distance < d) {
                best = Some((distance, cell));
            }
        }
        best.map(|(_, cell)| cell).ok_or(Unplaced::OutOfRange)
    }

    /// The ((decision_idx − first_decision_idx) + 1)-th cell of `decision_type` whose nominal
    /// instant is at or after `start`.
    fn by_index(
        &self,
        decision_type: &DecisionType,
        decision_idx: DecisionIdx,
        start: DateTime<Utc>,
    ) -> Result<i64, Unplaced> {
        let n = decision_idx
            .get()
            .checked_sub(self.first_decision_idx)
            .filter(|n| *n >= 0)
            .ok_or(Unplaced::DecisionIdxBeforeFirst)?;
        let per_day = self.cells_per_day();
        let slots: Vec<usize> = (0..self.times.len())
            .filter(|&s| &self.times[s].decision_type == decision_type)
            .collect();
        let m = i64::try_from(slots.len()).map_err(|_| Unplaced::OutOfRange)?;
        let first = self
            .first_cell_at_or_after(start, Some(decision_type))
            .ok_or(Unplaced::OutOfRange)?;
        let (day0, slot0) = split(first, per_day);
        let j0 = slots
            .iter()
            .position(|&s| s == slot0)
            .and_then(|j| i64::try_from(j).ok())
            .ok_or(Unplaced::OutOfRange)?;
        let k = j0.checked_add(n).ok_or(Unplaced::OutOfRange)?;
        let day = day0
            .checked_add(k.div_euclid(m))
            .ok_or(Unplaced::OutOfRange)?;
        // In range: k mod m < m = slots.len().
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let slot = slots[k.rem_euclid(m) as usize];
        date_of(day).ok_or(Unplaced::OutOfRange)?;
        day.checked_mul(per_day)
            .and_then(|c| c.checked_add(i64::try_from(slot).ok()?))
            .ok_or(Unplaced::OutOfRange)
    }
}

/// Places one participant's decisions in storage order: a decision whose cell an earlier one
/// holds is [`Unplaced::CellTaken`].
#[derive(Debug)]
pub struct Placer<'a> {
    schedule: &'a Schedule,
    start: DateTime<Utc>,
    taken: std::collections::BTreeSet<i64>,
}

impl<'a> Placer<'a> {
    /// A placer for a participant who started at `start`.
    pub fn new(schedule: &'a Schedule, start: DateTime<Utc>) -> Self {
        Self {
            schedule,
            start,
            taken: std::collections::BTreeSet::new(),
        }
    }

    /// The cell of the participant's next stored decision.
    ///
    /// # Errors
    /// The reason it has no cell.
    pub fn place(&mut self, decision: DecisionKey<'_>) -> Result<i64, Unplaced> {
        let cell = self.schedule.place(decision, self.start)?;
        if self.taken.insert(cell) {
            Ok(cell)
        } else {
            Err(Unplaced::CellTaken)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    fn ty(name: &str) -> DecisionType {
        DecisionType::parse(name).unwrap()
    }

    fn times(list: &[(&str, u32, u32)]) -> Vec<ScheduledTime> {
        list.iter()
            .map(|(name, h, m)| ScheduledTime {
                decision_type: ty(name),
                at: t(*h, *m),
            })
            .collect()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn twice_a_day(place_by: PlaceBy, zone: Tz) -> Schedule {
        Schedule::new(
            place_by,
            zone,
            0,
            times(&[("morning", 8, 0), ("evening", 20, 0)]),
        )
        .unwrap()
    }

    fn key<'a>(decision_type: &'a DecisionType, idx: i64, at: &str) -> DecisionKey<'a> {
        DecisionKey {
            decision_type,
            decision_idx: DecisionIdx::new(idx).unwrap(),
            requested_at: utc(at),
        }
    }

    /// The cell relative to the first cell of `origin`.
    fn rel(s: &Schedule, origin: &str, cell: i64) -> i64 {
        cell - s.first_cell_of(date(origin))
    }

    #[test]
    fn times_of_day_are_read_as_hh_mm_or_hh_mm_ss() {
        assert_eq!(parse_time_of_day("08:00"), Ok(t(8, 0)));
        assert_eq!(
            parse_time_of_day("23:59:30"),
            Ok(t(23, 59) + TimeDelta::seconds(30))
        );
        assert_eq!(
            parse_time_of_day("07:00:00.5"),
            Ok(t(7, 0) + TimeDelta::milliseconds(500))
        );
        for bad in [
            "8:00", "24:00", "08:60", "0800", "08:00:", "noon", "", "08:00:60", "08",
        ] {
            let message = parse_time_of_day(bad).unwrap_err();
            assert!(message.contains("HH:MM"), "{bad}: {message}");
        }
    }

    #[test]
    fn a_schedule_needs_times_in_increasing_order() {
        let zone = Tz::UTC;
        let err = Schedule::new(PlaceBy::Time, zone, 0, vec![]).unwrap_err();
        assert_eq!(err.key, "times");
        let err = Schedule::new(
            PlaceBy::Time,
            zone,
            0,
            times(&[("a", 8, 0), ("b", 12, 0), ("a", 12, 0)]),
        )
        .unwrap_err();
        assert_eq!(err.key, "times[2].at");
        assert!(err.message.contains("strictly increasing"), "{err}");
        let err = Schedule::new(PlaceBy::Index, zone, -1, times(&[("a", 8, 0)])).unwrap_err();
        assert_eq!(err.to_string(), "first_decision_idx: must not be negative");
        assert_eq!(PlaceBy::parse("index"), Ok(PlaceBy::Index));
        assert!(PlaceBy::parse("Time")
            .unwrap_err()
            .contains("\"time\" or \"index\""));
    }

    #[test]
    fn cells_count_days_then_slots() {
        let s = twice_a_day(PlaceBy::Time, Tz::UTC);
        assert_eq!(s.cells_per_day(), 2);
        let origin = s.first_cell_of(date("2026-01-05"));
        assert_eq!(s.instant(origin), Some(utc("2026-01-05T08:00:00Z")));
        assert_eq!(s.instant(origin + 1), Some(utc("2026-01-05T20:00:00Z")));
        assert_eq!(s.instant(origin + 2), Some(utc("2026-01-06T08:00:00Z")));
        assert_eq!(s.instant(origin - 1), Some(utc("2026-01-04T20:00:00Z")));
        assert_eq!(s.slot_of_cell(origin + 3).decision_type, ty("evening"));
        assert_eq!(s.date_of_cell(origin + 3), Some(date("2026-01-06")));
        // Far beyond chrono's dates: no instant, no panic.
        assert_eq!(s.instant(i64::MAX), None);
        assert_eq!(s.instant(i64::MIN), None);
    }

    #[test]
    fn the_time_zone_decides_the_local_date_and_instants() {
        let s = twice_a_day(PlaceBy::Time, Tz::America__New_York);
        let origin = s.first_cell_of(date("2026-01-05"));
        assert_eq!(s.instant(origin), Some(utc("2026-01-05T13:00:00Z")));
        // 02:00 UTC on the 6th is still the evening of the 5th in New York.
        assert_eq!(
            s.local_date(utc("2026-01-06T02:00:00Z")),
            date("2026-01-05")
        );
    }

    #[test]
    fn clock_changes_take_the_earliest_valid_instant() {
        let s = Schedule::new(
            PlaceBy::Time,
            Tz::Europe__Berlin,
            0,
            times(&[("a", 2, 30), ("b", 2, 45), ("c", 3, 10)]),
        )
        .unwrap();
        // Spring forward on 2026-03-29: 02:00 CET jumps to 03:00 CEST (01:00 UTC). 02:30 and
        // 02:45 do not exist; both are the moment of the jump.
        let spring = s.first_cell_of(date("2026-03-29"));
        assert_eq!(s.instant(spring), Some(utc("2026-03-29T01:00:00Z")));
        assert_eq!(s.instant(spring + 1), Some(utc("2026-03-29T01:00:00Z")));
        assert_eq!(s.instant(spring + 2), Some(utc("2026-03-29T01:10:00Z")));
        // Fall back on 2026-10-25: 03:00 CEST goes back to 02:00 CET; 02:30 happens twice and
        // the first one (00:30 UTC, still summer time) is taken.
        let fall = s.first_cell_of(date("2026-10-25"));
        assert_eq!(s.instant(fall), Some(utc("2026-10-25T00:30:00Z")));
        assert_eq!(s.instant(fall + 2), Some(utc("2026-10-25T02:10:00Z")));
        // Nominal instants never decrease along the cells across both changes.
        for start in [spring - 6, fall - 6] {
            for c in start..start + 12 {
                assert!(s.instant(c).unwrap() <= s.instant(c + 1).unwrap(), "{c}");
            }
        }
    }

    #[test]
    fn placing_by_time_takes_the_nearest_cell_of_the_type() {
        let s = twice_a_day(PlaceBy::Time, Tz::UTC);
        let start = utc("2026-01-05T00:00:00Z");
        let place = |name: &str, at: &str| {
            s.place(key(&ty(name), 0, at), start)
                .map(|c| rel(&s, "2026-01-05", c))
        };
        assert_eq!(place("morning", "2026-01-05T08:00:00Z"), Ok(0));
        assert_eq!(place("morning", "2026-01-05T07:31:00Z"), Ok(0));
        assert_eq!(place("evening", "2026-01-05T08:30:00Z"), Ok(1));
        // Exactly between two evenings: the earlier.
        assert_eq!(place("evening", "2026-01-05T08:00:00Z"), Ok(-1));
        // Late in the evening: the next day's morning is nearer than the same day's.
        assert_eq!(place("morning", "2026-01-05T23:00:00Z"), Ok(2));
        // Just after midnight: the evening of the day before.
        assert_eq!(place("evening", "2026-01-06T00:30:00Z"), Ok(1));
        assert_eq!(
            place("noon", "2026-01-05T12:00:00Z"),
            Err(Unplaced::DecisionTypeNotScheduled)
        );
    }

    #[test]
    fn a_tie_goes_to_the_earlier_cell() {
        let s = Schedule::new(
            PlaceBy::Time,
            Tz::UTC,
            0,
            times(&[("a", 6, 0), ("a", 10, 0), ("b", 12, 0)]),
        )
        .unwrap();
        let start = utc("2026-01-05T00:00:00Z");
        let cell = s
            .place(key(&ty("a"), 0, "2026-01-05T08:00:00Z"), start)
            .unwrap();
        assert_eq!(rel(&s, "2026-01-05", cell), 0);
        // Between 10:00 and 06:00 the next day, exactly in the middle (20:00 = 10 + 10 and
        // 6 + 24 − 10 = 20): the 10:00 cell.
        let cell = s
            .place(key(&ty("a"), 0, "2026-01-05T20:00:00Z"), start)
            .unwrap();
        assert_eq!(rel(&s, "2026-01-05", cell), 1);
        let cell = s
            .place(key(&ty("a"), 0, "2026-01-05T20:00:01Z"), start)
            .unwrap();
        assert_eq!(rel(&s, "2026-01-05", cell), 3);
    }

    #[test]
    fn placing_by_index_counts_the_types_cells_from_the_start() {
        let s = Schedule::new(
            PlaceBy::Index,
            Tz::UTC,
            1,
            times(&[("a", 8, 0), ("b", 12, 0), ("a", 20, 0)]),
        )
        .unwrap();
        // A mid-day start: the first "a" cell at or after 10:00 is 20:00 that day.
        let start = utc("2026-01-05T10:00:00Z");
        let cell = |name: &str, idx: i64| {
            // The request time does not matter when placing by index.
            s.place(key(&ty(name), idx, "2030-01-01T00:00:00Z"), start)
                .map(|c| rel(&s, "2026-01-05", c))
        };
        assert_eq!(cell("a", 1), Ok(2));
        assert_eq!(cell("a", 2), Ok(3));
        assert_eq!(cell("a", 3), Ok(5));
        assert_eq!(cell("a", 4), Ok(6));
        assert_eq!(cell("b", 1), Ok(1));
        assert_eq!(cell("b", 2), Ok(4));
        assert_eq!(cell("a", 0), Err(Unplaced::DecisionIdxBeforeFirst));
        assert_eq!(cell("c", 1), Err(Unplaced::DecisionTypeNotScheduled));
        assert_eq!(cell("a", i64::MAX), Err(Unplaced::OutOfRange));
        // A start exactly at a scheduled time includes that time.
        let on_time = utc("2026-01-05T12:00:00Z");
        let cell = s
            .place(key(&ty("b"), 1, "2030-01-01T00:00:00Z"), on_time)
            .unwrap();
        assert_eq!(rel(&s, "2026-01-05", cell), 1);
    }

    #[test]
    fn a_cell_is_taken_by_the_first_decision_placed_in_it() {
        let s = twice_a_day(PlaceBy::Time, Tz::UTC);
        let mut placer = Placer::new(&s, utc("2026-01-05T00:00:00Z"));
        let first = placer
            .place(key(&ty("morning"), 0, "2026-01-05T08:00:00Z"))
            .unwrap();
        assert_eq!(
            placer.place(key(&ty("morning"), 1, "2026-01-05T08:05:00Z")),
            Err(Unplaced::CellTaken)
        );
        assert_eq!(
            placer.place(key(&ty("morning"), 2, "2026-01-06T08:05:00Z")),
            Ok(first + 2)
        );
    }

    #[test]
    fn cells_of_a_type_are_counted_without_walking_them() {
        let s = Schedule::new(
            PlaceBy::Time,
            Tz::UTC,
            0,
            times(&[("a", 8, 0), ("b", 12, 0), ("a", 20, 0)]),
        )
        .unwrap();
        let origin = s.first_cell_of(date("2026-01-05"));
        assert_eq!(s.count_cells(&ty("a"), origin, origin), 0);
        assert_eq!(s.count_cells(&ty("a"), origin, origin + 1), 1);
        assert_eq!(s.count_cells(&ty("a"), origin + 1, origin + 2), 0);
        // Ten days and one cell: 20 "a" and 10 "b", then the 08:00 "a".
        assert_eq!(s.count_cells(&ty("a"), origin, origin + 31), 21);
        assert_eq!(s.count_cells(&ty("b"), origin, origin + 31), 10);
        assert_eq!(s.count_cells(&ty("c"), origin, origin + 31), 0);
        let walked = (origin + 2..origin + 3_000)
            .filter(|&c| s.slot_of_cell(c).decision_type == ty("a"))
            .count() as u64;
        assert_eq!(s.count_cells(&ty("a"), origin + 2, origin + 3_000), walked);
        assert_eq!(s.first_cell_from(origin + 1, &ty("a")), Some(origin + 2));
        assert_eq!(
            s.first_cell_after(utc("2026-01-05T08:00:00Z")),
            Some(origin + 1)
        );
        assert_eq!(
            s.nearest_cell(&ty("a"), utc("2026-01-05T07:55:00Z")),
            Some(origin)
        );
        assert_eq!(s.nearest_cell(&ty("c"), utc("2026-01-05T07:55:00Z")), None);
    }

    #[test]
    fn in_study_cells_run_from_the_start_to_the_end() {
        let s = twice_a_day(PlaceBy::Time, Tz::UTC);
        let origin = s.first_cell_of(date("2026-01-05"));
        // Started at noon: the evening is the first cell; ended at 08:00 two days later: that
        // morning is out.
        let (first, end) = s
            .in_study_cells(
                utc("2026-01-05T12:00:00Z"),
                Some(utc("2026-01-07T08:00:00Z")),
            )
            .unwrap();
        assert_eq!((first - origin, end.map(|e| e - origin)), (1, Some(4)));
        let (first, end) = s.in_study_cells(utc("2026-01-05T08:00:00Z"), None).unwrap();
        assert_eq!((first - origin, end), (0, None));
        // A window between two cells holds none.
        let (first, end) = s
            .in_study_cells(
                utc("2026-01-05T09:00:00Z"),
                Some(utc("2026-01-05T10:00:00Z")),
            )
            .unwrap();
        assert_eq!(end, Some(first));
    }
}
