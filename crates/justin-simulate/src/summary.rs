//! The per-update summary: what the decisions of one window (those since the previous update)
//! came to, as a row of the table printed on standard output and of the CSV file. Only
//! aggregates: no context or outcome of any one decision.

use std::io::Write;

/// Two probabilities closer than this count as equal (the service's own tolerance for an
/// uploaded action_prob).
const AT_BOUND: f64 = 1e-9;

/// What the simulator kept of one decision time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    /// Whether `/action` was called (a missed call has nothing else).
    pub called: bool,
    /// Whether it was sent as available.
    pub available: bool,
    /// The service's probability of action 1.
    pub action_prob: f64,
    /// The simulated reward.
    pub reward: f64,
    /// Whether the outcome went missing: an available decision with no upload.
    pub outcome_missing: bool,
    /// Whether its upload was held back until after the next update.
    pub upload_late: bool,
}

impl Outcome {
    /// A decision time without a call.
    pub const MISSED: Self = Self {
        called: false,
        available: false,
        action_prob: 0.0,
        reward: 0.0,
        outcome_missing: false,
        upload_late: false,
    };
}

/// Sums over a window's decisions.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Tally {
    /// Every decision asked for (a `/action` call).
    pub decisions: u64,
    /// Those sent as unavailable.
    pub unavailable: u64,
    /// Decision times without a call.
    pub missed_calls: u64,
    /// Available decisions without an upload.
    pub missing_outcomes: u64,
    /// Uploads held back until after the next update.
    pub late_uploads: u64,
    reward_sum: f64,
    prob_sum: f64,
    at_min: u64,
    at_max: u64,
}

impl Tally {
    /// The tally of `outcomes`, with action probabilities clipped to `clip` (min, max).
    pub fn of(outcomes: &[Outcome], clip: (f64, f64)) -> Self {
        let mut t = Self::default();
        for o in outcomes {
            if !o.called {
                t.missed_calls += 1;
                continue;
            }
            t.decisions += 1;
            t.missing_outcomes += u64::from(o.outcome_missing);
            t.late_uploads += u64::from(o.upload_late);
            if !o.available {
                t.unavailable += 1;
                continue;
            }
            t.reward_sum += o.reward;
            t.prob_sum += o.action_prob;
            t.at_min += u64::from(o.action_prob <= clip.0 + AT_BOUND);
            t.at_max += u64::from(o.action_prob >= clip.1 - AT_BOUND);
        }
        t
    }

    fn available(&self) -> u64 {
        self.decisions - self.unavailable
    }

    /// `sum` over the available decisions; `None` when there were none.
    fn per_available(&self, sum: f64) -> Option<f64> {
        let n = self.available();
        // Counts stay far below 2^53, where u64 to f64 is exact.
        (n > 0).then(|| sum / n as f64)
    }

    /// The mean reward of the available decisions (as simulated, uploaded or not).
    pub fn mean_reward(&self) -> Option<f64> {
        self.per_available(self.reward_sum)
    }

    /// The mean probability of action 1 over the available decisions.
    pub fn mean_action_prob(&self) -> Option<f64> {
        self.per_available(self.prob_sum)
    }

    /// The share of available decisions whose probability lies at the lower clip bound.
    pub fn share_at_min(&self) -> Option<f64> {
        self.per_available(self.at_min as f64)
    }

    /// The share of available decisions whose probability lies at the upper clip bound.
    pub fn share_at_max(&self) -> Option<f64> {
        self.per_available(self.at_max as f64)
    }
}

/// One row of the summary.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The window's number, from 1.
    pub update: u64,
    /// `completed` or `failed` as the service reported the update; `none` for a last window
    /// too short to request one.
    pub update_status: String,
    /// The current parameter version after the update.
    pub parameter_version: i64,
    /// The window's sums.
    pub tally: Tally,
    /// The clip bounds the window's probabilities were compared with.
    pub clip: (f64, f64),
    /// Seconds spent on the window's decisions (each an action and an upload).
    pub decision_seconds: f64,
    /// Seconds from requesting the update to knowing its outcome.
    pub update_seconds: f64,
}

/// The CSV file's columns, in order.
pub const CSV_COLUMNS: [&str; 17] = [
    "update",
    "update_status",
    "parameter_version",
    "decisions",
    "unavailable",
    "mean_reward",
    "mean_action_prob",
    "share_at_min",
    "share_at_max",
    "min_probability",
    "max_probability",
    "decision_seconds",
    "decisions_per_second",
    "update_seconds",
    "missed_calls",
    "missing_outcomes",
    "late_uploads",
];

impl Row {
    fn decisions_per_second(&self) -> Option<f64> {
        (self.decision_seconds > 0.0).then(|| self.tally.decisions as f64 / self.decision_seconds)
    }

    /// The CSV fields, in [`CSV_COLUMNS`] order. Means in full precision, so that two runs
    /// can be compared; an empty field where there was nothing to average.
    pub fn csv_fields(&self) -> Vec<String> {
        let full = |x: Option<f64>| x.map_or_else(String::new, |x| x.to_string());
        let time = |x: f64| format!("{x:.3}");
        vec![
            self.update.to_string(),
            csv_text(&self.update_status),
            self.parameter_version.to_string(),
            self.tally.decisions.to_string(),
            self.tally.unavailable.to_string(),
            full(self.tally.mean_reward()),
            full(self.tally.mean_action_prob()),
            full(self.tally.share_at_min()),
            full(self.tally.share_at_max()),
            self.clip.0.to_string(),
            self.clip.1.to_string(),
            time(self.decision_seconds),
            self.decisions_per_second()
                .map_or_else(String::new, |x| format!("{x:.1}")),
            time(self.update_seconds),
            self.tally.missed_calls.to_string(),
            self.tally.missing_outcomes.to_string(),
            self.tally.late_uploads.to_string(),
        ]
    }

    /// The table's cells, in [`TABLE_COLUMNS`] order.
    fn table_cells(&self) -> Vec<String> {
        let fixed = |x: Option<f64>, digits: usize| {
            x.map_or_else(|| "-".to_owned(), |x| format!("{x:.digits$}"))
        };
        vec![
            self.update.to_string(),
            self.update_status.clone(),
            self.parameter_version.to_string(),
            self.tally.decisions.to_string(),
            self.tally.unavailable.to_string(),
            fixed(self.tally.mean_reward(), 4),
            fixed(self.tally.mean_action_prob(), 4),
            fixed(self.tally.share_at_min(), 3),
            fixed(self.tally.share_at_max(), 3),
            format!("{:.3}", self.decision_seconds),
            fixed(self.decisions_per_second(), 1),
            format!("{:.3}", self.update_seconds),
        ]
    }
}

/// A CSV field: quoted when it holds a comma, a quote or a line break.
fn csv_text(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// Writes the CSV header, then one line per row, flushing each: a run stopped half way
/// leaves the rows of the windows it finished.
#[derive(Debug)]
pub struct CsvWriter<W: Write> {
    out: W,
}

impl<W: Write> CsvWriter<W> {
    /// Writes the header.
    ///
    /// # Errors
    /// When writing fails.
    pub fn new(mut out: W) -> std::io::Result<Self> {
        writeln!(out, "{}", CSV_COLUMNS.join(","))?;
        out.flush()?;
        Ok(Self { out })
    }

    /// Writes one row.
    ///
    /// # Errors
    /// When writing fails.
    pub fn write(&mut self, row: &Row) -> std::io::Result<()> {
        writeln!(self.out, "{}", row.csv_fields().join(","))?;
        self.out.flush()
    }
}

/// The table's columns: the CSV's without the clip bounds, which the simulator prints once
/// above the table.
const TABLE_COLUMNS: [&str; 12] = [
    "update",
    "status",
    "version",
    "decisions",
    "unavailable",
    "mean_reward",
    "mean_prob",
    "at_min",
    "at_max",
    "seconds",
    "per_second",
    "update_s",
];

/// The width of every table column: the longest header, or a status such as `completed`.
const CELL: usize = 11;

fn table_line(cells: &[String]) -> String {
    cells
        .iter()
        .map(|c| format!("{c:>CELL$}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The table's header line.
pub fn table_header() -> String {
    let cells: Vec<String> = TABLE_COLUMNS.iter().map(|&c| c.to_owned()).collect();
    table_line(&cells)
}

/// A row as a line of the table, aligned under [`table_header`].
pub fn table_row(row: &Row) -> String {
    table_line(&row.table_cells())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(available: bool, action_prob: f64, reward: f64) -> Outcome {
        Outcome {
            called: true,
            available,
            action_prob,
            reward,
            outcome_missing: false,
            upload_late: false,
        }
    }

    /// Four available decisions and one unavailable one, clipped to [0.25, 0.75]. The
    /// numbers are exact in binary, so the means print as written.
    fn window() -> Tally {
        Tally::of(
            &[
                outcome(true, 0.25, 1.0),
                outcome(true, 0.5, 2.0),
                outcome(true, 0.75, 4.0),
                outcome(true, 0.25, 5.0),
                outcome(false, 0.0, 100.0),
            ],
            (0.25, 0.75),
        )
    }

    fn row() -> Row {
        Row {
            update: 3,
            update_status: "completed".into(),
            parameter_version: 4,
            tally: window(),
            clip: (0.25, 0.75),
            decision_seconds: 0.5,
            update_seconds: 0.25,
        }
    }

    #[test]
    fn means_and_shares_count_the_available_decisions_only() {
        let t = window();
        assert_eq!(t.decisions, 5);
        assert_eq!(t.unavailable, 1);
        assert_eq!(t.mean_reward(), Some(3.0));
        assert_eq!(t.mean_action_prob(), Some(0.4375));
        assert_eq!(t.share_at_min(), Some(0.5));
        assert_eq!(t.share_at_max(), Some(0.25));
    }

    #[test]
    fn a_probability_within_1e_9_of_a_bound_lies_at_it() {
        let t = Tally::of(
            &[
                outcome(true, 0.2 + 1e-12, 0.0),
                outcome(true, 0.8 - 1e-12, 0.0),
                outcome(true, 0.2 + 1e-6, 0.0),
                outcome(true, 0.8 - 1e-6, 0.0),
            ],
            (0.2, 0.8),
        );
        assert_eq!(t.share_at_min(), Some(0.25));
        assert_eq!(t.share_at_max(), Some(0.25));
    }

    #[test]
    fn missed_calls_missing_outcomes_and_late_uploads_are_counted() {
        let missing = Outcome {
            outcome_missing: true,
            ..outcome(true, 0.5, 2.0)
        };
        let late = Outcome {
            upload_late: true,
            ..outcome(true, 0.5, 4.0)
        };
        let t = Tally::of(
            &[Outcome::MISSED, missing, late, Outcome::MISSED],
            (0.2, 0.8),
        );
        assert_eq!(t.decisions, 2, "a missed call is no decision");
        assert_eq!(
            (t.missed_calls, t.missing_outcomes, t.late_uploads),
            (2, 1, 1)
        );
        assert_eq!(
            t.mean_reward(),
            Some(3.0),
            "the simulated rewards, uploaded or not"
        );
        let fields = Row { tally: t, ..row() }.csv_fields();
        assert_eq!(fields[14..], ["2", "1", "1"]);
    }

    #[test]
    fn a_window_without_available_decisions_has_no_means() {
        let t = Tally::of(&[outcome(false, 0.0, 1.0)], (0.25, 0.75));
        assert_eq!((t.decisions, t.unavailable), (1, 1));
        assert_eq!(t.mean_reward(), None);
        assert_eq!(t.mean_action_prob(), None);
        assert_eq!(t.share_at_min(), None);
        let r = Row { tally: t, ..row() };
        let fields = r.csv_fields();
        assert_eq!(&fields[5..9], ["", "", "", ""]);
        assert!(table_row(&r).contains(" - "), "{}", table_row(&r));
    }

    #[test]
    fn the_csv_has_a_header_and_one_line_per_row() {
        let mut out = Vec::new();
        let mut csv = CsvWriter::new(&mut out).unwrap();
        csv.write(&row()).unwrap();
        csv.write(&Row {
            update: 4,
            update_status: "none".into(),
            ..row()
        })
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "update,update_status,parameter_version,decisions,unavailable,mean_reward,\
                 mean_action_prob,share_at_min,share_at_max,min_probability,max_probability,\
                 decision_seconds,decisions_per_second,update_seconds,missed_calls,\
                 missing_outcomes,late_uploads",
                "3,completed,4,5,1,3,0.4375,0.5,0.25,0.25,0.75,0.500,10.0,0.250,0,0,0",
                "4,none,4,5,1,3,0.4375,0.5,0.25,0.25,0.75,0.500,10.0,0.250,0,0,0",
            ]
        );
    }

    #[test]
    fn text_fields_are_quoted_when_they_need_it() {
        assert_eq!(csv_text("failed"), "failed");
        assert_eq!(csv_text("a,b"), "\"a,b\"");
        assert_eq!(csv_text("say \"x\""), "\"say \"\"x\"\"\"");
    }

    #[test]
    fn table_rows_line_up_with_the_header() {
        let header = table_header();
        let line = table_row(&row());
        assert_eq!(header.len(), line.len());
        assert!(line.contains("completed"), "{line}");
        assert!(line.contains("3.0000"), "{line}");
    }
}
