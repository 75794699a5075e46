//! `justin export --for lifejacket DIR`: the study as an adaptivity-aware analysis
//! (lifejacket's) needs it, in plain files that a small Python tool (analysis/, see
//! docs/analysis.md) turns into lifejacket's inputs.
//!
//! - `grid.csv`: one row per participant × calendar time (cell of the schedule), with the
//!   in-study flag, the decision placed in the cell (if any), its dense policy number and its
//!   covariates.
//! - `update_rows.csv`: for every completed update, the rows it read, in the order it read them.
//! - `parameters.jsonl`: every parameter version, with its β and constants.
//! - `unplaced.csv`: decisions that have no cell, and why.
//! - `manifest.json`, written last: the schedule, the calendar, the covariates, the policy
//!   numbers, the analysis functions and their arguments, and counts.
//!
//! The decisions are read twice, participant by participant ([`Store::export_by_participant`]),
//! holding one participant's decisions at a time: the first pass finds the calendar's origin,
//! the grid's span and the versions that drove in-study decisions; the second writes the rows.
//! What `update_rows.csv` needs to find each row's calendar time is kept from the second pass:
//! one small entry per decision placed in the grid.
//!
//! Everything is written into a hidden directory inside DIR and moved into DIR at the end,
//! `manifest.json` last, so a directory with a manifest is a complete export.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Timelike, Utc};
use justin_backup::csv::{float_text, write_record, Field};
use justin_core::schedule::{DecisionKey, Placer, Unplaced};
use justin_core::{
    Algorithm, AnalysisModel, CompletedUpdate, DecisionType, ExportRow, Participant, Policy,
    Schedule, Store, StoreError, UserId, GRID_COLUMNS,
};
use serde_json::{json, Value};

/// The manifest's `format`.
pub const FORMAT: &str = "justin-lifejacket-export";
/// The manifest's `format_version`.
pub const FORMAT_VERSION: u32 = 1;
/// The reward written where none was observed (the `observed` column says which).
pub const REWARD_FILL: f64 = 0.0;
/// The prefix of the participant ids an erasure leaves behind.
const ERASED_PREFIX: &str = "erased-";
/// The hidden directory inside DIR the files are written into first.
const PARTIAL_DIR: &str = ".partial-export";
/// The fixed columns of `update_rows.csv`; the covariates follow.
pub const UPDATE_ROW_COLUMNS: &[&str] = &[
    "parameter_version",
    "policy_num",
    "user_id",
    "calendar_t",
    "decision_type",
    "decision_idx",
    "action",
    "action1_prob",
    "reward",
];
/// The columns of `unplaced.csv`.
pub const UNPLACED_COLUMNS: &[&str] = &[
    "user_id",
    "decision_type",
    "decision_idx",
    "request_timestamp",
    "reason",
];

/// Why the export stopped.
#[derive(Debug, thiserror::Error)]
pub enum LifejacketError {
    /// The export cannot be made for this study (no schedule, no analysis model, nothing to
    /// export, a non-empty DIR); the message says why and what to do.
    #[error("{0}")]
    Refused(String),
    /// Reading the study failed.
    #[error("reading the study failed: {}", justin_core::service::error_chain(.0))]
    Store(#[from] StoreError),
    /// Writing a file failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
    /// The study changed between the two passes over it.
    #[error(
        "the study changed while it was exported ({0}); export again (the export reads the \
         decisions twice)"
    )]
    Changed(String),
    /// The algorithm could not read a stored parameter version.
    #[error("parameter version {version}: {message}")]
    Parameters {
        /// The version.
        version: i64,
        /// The algorithm's message.
        message: String,
    },
}

/// What an export wrote, as the manifest counts it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Participants in the grid.
    pub participants: u64,
    /// Rows of `grid.csv`.
    pub grid_rows: u64,
    /// Decisions placed in the grid (rows with `called` 1).
    pub decisions: u64,
    /// Rows of `unplaced.csv`.
    pub unplaced_decisions: u64,
    /// In-study rows without a decision.
    pub in_study_cells_without_call: u64,
    /// Participants with decisions who are not in the grid: erased ones, and those with no
    /// in-study cell within the grid.
    pub participants_left_out: u64,
    /// Decisions of the participants left out (placed, but not in the grid).
    pub decisions_left_out: u64,
    /// Registered participants without any stored decision when the export started: not in
    /// the grid, which finds participants through their decisions.
    pub participants_without_decisions: u64,
    /// Completed updates.
    pub updates: u64,
    /// In-study rows whose policy number is below the participant's previous in-study row's.
    pub policy_decreases: u64,
}

/// Checks that the export can be made for `algorithm` with `schedule`, before anything is
/// read: the refusals a statistician can act on.
///
/// # Errors
/// [`LifejacketError::Refused`] without a schedule, or for an algorithm without an
/// [`AnalysisModel`].
pub fn check<'a>(
    algorithm: &'a dyn Algorithm,
    schedule: Option<&'a Schedule>,
) -> Result<(&'a dyn AnalysisModel, &'a Schedule), LifejacketError> {
    let Some(schedule) = schedule else {
        return Err(LifejacketError::Refused(
            "the export for lifejacket places every decision on the study's schedule, and none \
             is configured: set [schedule] times in the configuration (config.toml shows an \
             example; docs/analysis.md explains it)"
                .into(),
        ));
    };
    let Some(model) = algorithm.analysis() else {
        let why = if algorithm.name() == "flat_prob" {
            "flat_prob's update is a fixed step on a sign, not a loss or an estimating \
             function, so an adaptivity-aware analysis cannot account for it"
                .to_owned()
        } else {
            format!(
                "{} does not implement AnalysisModel (docs/algorithms.md says how an algorithm \
                 takes part)",
                algorithm.name()
            )
        };
        return Err(LifejacketError::Refused(format!(
            "the algorithm {:?} cannot be exported for lifejacket: {why}",
            algorithm.name()
        )));
    };
    Ok((model, schedule))
}

/// Writes the export into `dir` (created when missing; refused when not empty). Returns what
/// it wrote.
///
/// # Errors
/// A refusal (see [`check`], a non-empty `dir`, a study with nothing to export), a storage or
/// write error, or a study that changed between the passes. Nothing is left in `dir` then
/// (except `dir` itself when it was created).
pub fn export(
    store: &dyn Store,
    algorithm: &dyn Algorithm,
    schedule: Option<&Schedule>,
    dir: &Path,
    now: DateTime<Utc>,
) -> Result<Counts, LifejacketError> {
    let (model, schedule) = check(algorithm, schedule)?;
    prepare_dir(dir)?;
    let partial = dir.join(PARTIAL_DIR);
    create_private_dir(&partial).map_err(|source| LifejacketError::Write {
        path: partial.clone(),
        source,
    })?;
    let outcome = (|| {
        let exporter = Exporter {
            store,
            algorithm,
            model,
            schedule,
            covariates: model.covariate_names(),
        };
        let counts = exporter.write_files(&partial, now)?;
        for file in [
            "README.txt",
            "grid.csv",
            "update_rows.csv",
            "parameters.jsonl",
            "unplaced.csv",
            "manifest.json",
        ] {
            let (from, to) = (partial.join(file), dir.join(file));
            std::fs::rename(&from, &to)
                .map_err(|source| LifejacketError::Write { path: to, source })?;
        }
        std::fs::remove_dir(&partial).map_err(|source| LifejacketError::Write {
            path: partial.clone(),
            source,
        })?;
        Ok(counts)
    })();
    if outcome.is_err() {
        // A manifest only ever appears with every file beside it: remove what was written.
        let _ = std::fs::remove_dir_all(&partial);
        for file in [
            "manifest.json",
            "README.txt",
            "grid.csv",
            "update_rows.csv",
            "parameters.jsonl",
            "unplaced.csv",
        ] {
            let _ = std::fs::remove_file(dir.join(file));
        }
    }
    outcome
}

/// Creates `dir` when missing and checks that it is an empty directory.
fn prepare_dir(dir: &Path) -> Result<(), LifejacketError> {
    let write_error = |source| LifejacketError::Write {
        path: dir.to_owned(),
        source,
    };
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(LifejacketError::Refused(format!(
                    "{} is not empty; name a new or empty directory (an export never mixes \
                     with other files)",
                    dir.display()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(write_error)
        }
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => Err(LifejacketError::Refused(
            format!("{} is a file, not a directory", dir.display()),
        )),
        Err(e) => Err(write_error(e)),
    }
}

/// Creates a directory readable by the service's user only (the export holds participants'
/// data, as backups do).
fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Creates a file readable by the service's user only, buffered.
fn create_file(path: &Path) -> Result<BufWriter<std::fs::File>, LifejacketError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .map(|f| BufWriter::with_capacity(256 * 1024, f))
        .map_err(|source| LifejacketError::Write {
            path: path.to_owned(),
            source,
        })
}

/// Flushes and syncs a file written through [`create_file`].
fn finish_file(writer: BufWriter<std::fs::File>, path: &Path) -> Result<(), LifejacketError> {
    let error = |source| LifejacketError::Write {
        path: path.to_owned(),
        source,
    };
    let file = writer.into_inner().map_err(|e| error(e.into_error()))?;
    file.sync_all().map_err(error)
}

/// A participant's start, end and place in the calendar.
struct Layout {
    /// The first in-study cell.
    first_in: i64,
    /// The cell after the last in-study one; `None` when the window is open.
    end_in: Option<i64>,
    /// Each decision's cell, in storage order.
    cells: Vec<Result<i64, Unplaced>>,
}

impl Layout {
    fn in_study(&self, cell: i64) -> bool {
        self.first_in <= cell && self.end_in.is_none_or(|end| cell < end)
    }

    /// Whether the window holds no cell at all.
    fn empty(&self) -> bool {
        self.end_in.is_some_and(|end| end <= self.first_in)
    }
}

/// The participant's start: their study_start, or their registration.
fn start_of(participant: &Participant) -> DateTime<Utc> {
    participant
        .enrollment
        .start
        .as_ref()
        .map_or(participant.created_at, |s| s.at)
}

/// The participant's end: the earlier of their study_end and their withdrawal; `None` when
/// neither is set.
fn end_of(participant: &Participant) -> Option<DateTime<Utc>> {
    let end = participant.enrollment.end.as_ref().map(|e| e.at);
    let withdrawn = participant.withdrawal.as_ref().map(|w| w.at);
    match (end, withdrawn) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What the first pass finds.
#[derive(Debug, Default)]
struct Span {
    /// The earliest local date (as a day number of the schedule's cells) of any start or
    /// decision.
    origin_cell: Option<i64>,
    first: Option<i64>,
    last: Option<i64>,
    /// The parameter versions on in-study cells with a decision.
    versions: BTreeSet<i64>,
    /// Every participant the first pass saw, as it saw them: the second pass exports exactly
    /// these, with these facts and these decisions, so that decisions, participants and
    /// withdrawals stored while the export runs change nothing in it.
    seen: HashMap<UserId, Seen>,
}

/// A participant as the first pass saw them.
#[derive(Debug)]
enum Seen {
    /// In the store, with the keys (decision type, index) of their decisions then.
    In(Box<Participant>, HashSet<(DecisionType, i64)>),
    /// Left out (erased, or no longer registered), with their decisions then.
    Out(u64),
}

impl Span {
    /// The grid starts at or before `cell`.
    fn from(&mut self, cell: i64) {
        self.first = Some(self.first.map_or(cell, |f| f.min(cell)));
    }

    /// The grid ends at or after `cell`.
    fn to(&mut self, cell: i64) {
        self.last = Some(self.last.map_or(cell, |l| l.max(cell)));
    }
}

/// One participant's decisions, as the store streams them (grouped by participant).
struct ByParticipant<I: Iterator> {
    rows: std::iter::Peekable<I>,
}

impl<I: Iterator<Item = Result<ExportRow, StoreError>>> Iterator for ByParticipant<I> {
    type Item = Result<(UserId, Vec<ExportRow>), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        let first = match self.rows.next()? {
            Ok(row) => row,
            Err(e) => return Some(Err(e)),
        };
        let user = first.decision.user_id.clone();
        let mut rows = vec![first];
        while let Some(Ok(next)) = self.rows.peek() {
            if next.decision.user_id != user {
                break;
            }
            if let Some(Ok(row)) = self.rows.next() {
                rows.push(row);
            }
        }
        if let Some(Err(_)) = self.rows.peek() {
            if let Some(Err(e)) = self.rows.next() {
                return Some(Err(e));
            }
        }
        Some(Ok((user, rows)))
    }
}

fn by_participant(
    store: &dyn Store,
) -> Result<ByParticipant<justin_core::ExportStream>, StoreError> {
    Ok(ByParticipant {
        rows: store.export_by_participant()?.peekable(),
    })
}

/// A time in UTC, RFC 3339, with as many fractional digits as it needs.
fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// A time of day as configured: `HH:MM`, or `HH:MM:SS` (with a fraction) when it has seconds.
fn time_of_day(t: chrono::NaiveTime) -> String {
    if t.second() == 0 && t.nanosecond() == 0 {
        t.format("%H:%M").to_string()
    } else {
        t.format("%H:%M:%S%.f").to_string()
    }
}

fn int(v: i64) -> Field {
    Some(v.to_string())
}

fn flag(v: bool) -> Field {
    Some(if v { "1" } else { "0" }.to_owned())
}

fn number(v: f64) -> Field {
    Some(float_text(v))
}

struct Exporter<'a> {
    store: &'a dyn Store,
    algorithm: &'a dyn Algorithm,
    model: &'a dyn AnalysisModel,
    schedule: &'a Schedule,
    covariates: Vec<String>,
}

/// A participant found in the store, or why they are left out.
enum Found {
    In(Box<Participant>),
    /// Erased (their states are gone), or no longer registered.
    Out,
}

impl Exporter<'_> {
    fn find(&self, user: &UserId) -> Result<Found, LifejacketError> {
        if user.as_str().starts_with(ERASED_PREFIX) {
            return Ok(Found::Out);
        }
        Ok(match self.store.participant(user)? {
            Some(p) => Found::In(Box::new(p)),
            None => Found::Out,
        })
    }

    fn lay_out(&self, participant: &Participant, rows: &[ExportRow]) -> Option<Layout> {
        let start = start_of(participant);
        let (first_in, end_in) = self.schedule.in_study_cells(start, end_of(participant))?;
        let mut placer = Placer::new(self.schedule, start);
        let cells = rows
            .iter()
            .map(|row| {
                let d = &row.decision;
                placer.place(DecisionKey {
                    decision_type: &d.decision_type,
                    decision_idx: d.decision_idx,
                    requested_at: d.requested_at,
                })
            })
            .collect();
        Some(Layout {
            first_in,
            end_in,
            cells,
        })
    }

    /// The first pass: origin, span and the versions that drove in-study decisions.
    fn first_pass(&self) -> Result<Span, LifejacketError> {
        let mut span = Span::default();
        for group in by_participant(self.store)? {
            let (user, rows) = group?;
            let Found::In(participant) = self.find(&user)? else {
                let n_rows = u64::try_from(rows.len()).unwrap_or(u64::MAX);
                span.seen.insert(user, Seen::Out(n_rows));
                continue;
            };
            let keys = rows
                .iter()
                .map(|r| {
                    (
                        r.decision.decision_type.clone(),
                        r.decision.decision_idx.get(),
                    )
                })
                .collect();
            span.seen
                .insert(user.clone(), Seen::In(participant.clone(), keys));
            let day_cell =
                |t: DateTime<Utc>| self.schedule.first_cell_of(self.schedule.local_date(t));
            let mut earliest = day_cell(start_of(&participant));
            for row in &rows {
                earliest = earliest.min(day_cell(row.decision.requested_at));
            }
            span.origin_cell = Some(span.origin_cell.map_or(earliest, |o| o.min(earliest)));
            let Some(layout) = self.lay_out(&participant, &rows) else {
                continue;
            };
            if layout.empty() {
                continue;
            }
            // From the first in-study cell of anyone; to the last decision, or the last
            // in-study cell of a closed window (an open one does not stretch the grid).
            span.from(layout.first_in);
            if let Some(end) = layout.end_in {
                span.to(end - 1);
            }
            for (row, cell) in rows.iter().zip(&layout.cells) {
                if let Ok(cell) = *cell {
                    span.from(cell);
                    span.to(cell);
                    if layout.in_study(cell) {
                        span.versions.insert(row.decision.parameter_version);
                    }
                }
            }
        }
        Ok(span)
    }

    fn write_files(&self, dir: &Path, now: DateTime<Utc>) -> Result<Counts, LifejacketError> {
        // Read before the decisions: every update (and parameter version) they name is here,
        // and one completing while the export runs is not.
        let updates = self.store.completed_updates()?;
        let newest = self.store.current_parameters()?.map_or(0, |p| p.version);
        let registered = self
            .store
            .row_counts()?
            .into_iter()
            .find_map(|(table, n)| (table == "users").then_some(n))
            .unwrap_or(0);
        let span = self.first_pass()?;
        let (Some(origin_cell), Some(first), Some(last)) =
            (span.origin_cell, span.first, span.last)
        else {
            return Err(LifejacketError::Refused(
                "no participant has a decision time in the study: there is nothing to export"
                    .into(),
            ));
        };
        // Dense policy numbers, 1, 2, ..., in version order.
        let policies: BTreeMap<i64, i64> = span
            .versions
            .iter()
            .zip(1..)
            .map(|(&version, num)| (version, num))
            .collect();
        let mut counts = Counts {
            // Every participant the first pass saw has a decision; erased ones keep their row.
            participants_without_decisions: registered
                .saturating_sub(u64::try_from(span.seen.len()).unwrap_or(u64::MAX)),
            ..Counts::default()
        };
        let grid = Grid {
            origin_cell,
            first,
            last,
            policies: &policies,
        };
        let placed = self.second_pass(dir, &grid, &span.seen, &mut counts)?;
        counts.updates = u64::try_from(updates.len()).unwrap_or(u64::MAX);
        self.write_update_rows(dir, &grid, &updates, &placed)?;
        let newest = self.write_parameters(dir, &policies, &updates, newest)?;
        self.write_readme(dir)?;
        self.write_manifest(dir, now, &grid, &counts, newest.as_ref())?;
        Ok(counts)
    }

    /// The second pass: `grid.csv` and `unplaced.csv`. Returns the cell of every decision
    /// placed in the grid, by participant, decision type and index.
    fn second_pass(
        &self,
        dir: &Path,
        grid: &Grid<'_>,
        seen: &HashMap<UserId, Seen>,
        counts: &mut Counts,
    ) -> Result<Placed, LifejacketError> {
        let grid_path = dir.join("grid.csv");
        let unplaced_path = dir.join("unplaced.csv");
        let mut out = create_file(&grid_path)?;
        let mut unplaced = create_file(&unplaced_path)?;
        let grid_error = |source| LifejacketError::Write {
            path: grid_path.clone(),
            source,
        };
        let unplaced_error = |source| LifejacketError::Write {
            path: unplaced_path.clone(),
            source,
        };
        let header: Vec<Field> = GRID_COLUMNS
            .iter()
            .map(|c| (*c).to_owned())
            .chain(self.covariates.iter().cloned())
            .map(Some)
            .collect();
        write_record(&mut out, &header).map_err(grid_error)?;
        let header: Vec<Field> = UNPLACED_COLUMNS
            .iter()
            .map(|c| Some((*c).to_owned()))
            .collect();
        write_record(&mut unplaced, &header).map_err(unplaced_error)?;
        let mut placed = Placed::default();
        for group in by_participant(self.store)? {
            let (user, mut rows) = group?;
            let participant = match seen.get(&user) {
                // Registered (or first decided) after the first pass.
                None => continue,
                Some(Seen::Out(n_rows)) => {
                    counts.participants_left_out += 1;
                    counts.decisions_left_out += n_rows;
                    continue;
                }
                Some(Seen::In(participant, keys)) => {
                    rows.retain(|r| {
                        keys.contains(&(
                            r.decision.decision_type.clone(),
                            r.decision.decision_idx.get(),
                        ))
                    });
                    participant
                }
            };
            let n_rows = u64::try_from(rows.len()).unwrap_or(u64::MAX);
            let Some(layout) = self.lay_out(participant, &rows) else {
                counts.participants_left_out += 1;
                counts.decisions_left_out += n_rows;
                continue;
            };
            for (row, cell) in rows.iter().zip(&layout.cells) {
                if let Err(reason) = cell {
                    let d = &row.decision;
                    let fields = [
                        Some(user.to_string()),
                        Some(d.decision_type.to_string()),
                        int(d.decision_idx.get()),
                        Some(rfc3339(d.requested_at)),
                        Some(reason.as_str().to_owned()),
                    ];
                    write_record(&mut unplaced, &fields).map_err(unplaced_error)?;
                    counts.unplaced_decisions += 1;
                }
            }
            let in_grid = !layout.empty()
                && layout.first_in <= grid.last
                && layout.end_in.is_none_or(|end| end > grid.first);
            if !in_grid {
                counts.participants_left_out += 1;
                counts.decisions_left_out +=
                    u64::try_from(layout.cells.iter().filter(|c| c.is_ok()).count())
                        .unwrap_or(u64::MAX);
                continue;
            }
            counts.participants += 1;
            let mut entries = Vec::new();
            for (row, cell) in rows.iter().zip(&layout.cells) {
                if let Ok(cell) = *cell {
                    if cell < grid.first || cell > grid.last {
                        return Err(LifejacketError::Changed(
                            "a decision lies beyond the grid found in the first pass".into(),
                        ));
                    }
                    entries.push((
                        row.decision.decision_type.to_string(),
                        row.decision.decision_idx.get(),
                        cell - grid.origin_cell,
                    ));
                }
            }
            entries.sort();
            placed.insert(user.clone(), entries);
            self.write_participant(&mut out, grid, &user, &rows, &layout, counts)
                .map_err(|e| match e {
                    RowError::Io(source) => LifejacketError::Write {
                        path: grid_path.clone(),
                        source,
                    },
                    RowError::Changed(why) => LifejacketError::Changed(why),
                })?;
        }
        finish_file(out, &grid_path)?;
        finish_file(unplaced, &unplaced_path)?;
        Ok(placed)
    }

    /// One participant's rows of `grid.csv`, one per cell of the grid.
    fn write_participant(
        &self,
        out: &mut impl Write,
        grid: &Grid<'_>,
        user: &UserId,
        rows: &[ExportRow],
        layout: &Layout,
        counts: &mut Counts,
    ) -> Result<(), RowError> {
        let mut by_cell: HashMap<i64, &ExportRow> = HashMap::with_capacity(rows.len());
        for (row, cell) in rows.iter().zip(&layout.cells) {
            if let Ok(cell) = *cell {
                by_cell.insert(cell, row);
            }
        }
        // Policy numbers of the in-study cells with a decision, then carried: to the cells
        // after them, and to those before the first.
        let cells = grid.first..=grid.last;
        let mut policy: Vec<Option<i64>> = Vec::new();
        for cell in cells.clone() {
            let num = match (layout.in_study(cell), by_cell.get(&cell)) {
                (true, Some(row)) => Some(
                    *grid
                        .policies
                        .get(&row.decision.parameter_version)
                        .ok_or_else(|| {
                            RowError::Changed(
                                "an in-study decision has a parameter version the first pass \
                                 did not see"
                                    .into(),
                            )
                        })?,
                ),
                _ => None,
            };
            policy.push(num);
        }
        let first_num = policy.iter().flatten().next().copied();
        let mut carried = first_num;
        let mut previous: Option<i64> = None;
        for (i, cell) in cells.enumerate() {
            let in_study = layout.in_study(cell);
            let row = by_cell.get(&cell).copied();
            let policy_num = if in_study {
                let num = policy[i].or(carried).unwrap_or(1);
                carried = Some(num);
                if previous.is_some_and(|p| num < p) {
                    counts.policy_decreases += 1;
                }
                previous = Some(num);
                Some(num)
            } else {
                None
            };
            let slot = self.schedule.slot_of_cell(cell);
            let scheduled_at = self.schedule.instant(cell).map(rfc3339);
            let mut fields: Vec<Field> = vec![
                Some(user.to_string()),
                int(cell - grid.origin_cell),
                scheduled_at,
                Some(slot.decision_type.to_string()),
                flag(in_study),
                flag(row.is_some()),
            ];
            match row {
                Some(row) => {
                    let d = &row.decision;
                    let available = d.availability.is_available();
                    let upload = row.upload.as_ref();
                    let covariates = self.model.covariates(&d.state).ok();
                    fields.extend([
                        int(d.decision_idx.get()),
                        flag(available),
                        int(i64::from(d.action.as_i16())),
                        number(d.action_prob.get()),
                        int(d.parameter_version),
                        policy_num.and_then(int),
                        Some(d.policy.as_str().to_owned()),
                        flag(d.policy == Policy::Algorithm && available),
                        flag(upload.is_some()),
                        number(upload.map_or(REWARD_FILL, |u| u.reward)),
                        upload.and_then(|u| u.used_in_version).and_then(int),
                        flag(covariates.is_some()),
                        upload.and_then(|u| int(i64::from(u.corrections))),
                    ]);
                    match covariates {
                        Some(values) => fields.extend(values.into_iter().map(number)),
                        None => fields.extend(self.covariates.iter().map(|_| None)),
                    }
                    counts.decisions += 1;
                }
                None => {
                    fields.extend([
                        None,
                        flag(false),
                        int(0),
                        number(0.0),
                        None,
                        policy_num.and_then(int),
                        None,
                        flag(false),
                        flag(false),
                        number(REWARD_FILL),
                        None,
                        flag(false),
                        None,
                    ]);
                    fields.extend(self.covariates.iter().map(|_| None));
                    if in_study {
                        counts.in_study_cells_without_call += 1;
                    }
                }
            }
            write_record(out, &fields).map_err(RowError::Io)?;
            counts.grid_rows += 1;
        }
        Ok(())
    }

    fn write_update_rows(
        &self,
        dir: &Path,
        grid: &Grid<'_>,
        updates: &[CompletedUpdate],
        placed: &Placed,
    ) -> Result<(), LifejacketError> {
        let path = dir.join("update_rows.csv");
        let mut out = create_file(&path)?;
        let error = |source| LifejacketError::Write {
            path: path.clone(),
            source,
        };
        let header: Vec<Field> = UPDATE_ROW_COLUMNS
            .iter()
            .map(|c| (*c).to_owned())
            .chain(self.covariates.iter().cloned())
            .map(Some)
            .collect();
        write_record(&mut out, &header).map_err(error)?;
        for update in updates {
            let version = update.parameter_version;
            let policy_num = grid.policies.get(&version).copied();
            for record in self.store.update_rows(version)? {
                // An imputed row carries the update's default reward, as the update read it.
                let record = record?.into_record();
                let calendar_t = placed.get(&record.user_id).and_then(|entries| {
                    let key = (record.decision_type.as_str(), record.decision_idx.get());
                    entries
                        .binary_search_by(|(t, i, _)| (t.as_str(), *i).cmp(&key))
                        .ok()
                        .map(|at| entries[at].2)
                });
                let mut fields: Vec<Field> = vec![
                    int(version),
                    policy_num.and_then(int),
                    Some(record.user_id.to_string()),
                    calendar_t.and_then(int),
                    Some(record.decision_type.to_string()),
                    int(record.decision_idx.get()),
                    int(i64::from(record.action.as_i16())),
                    number(record.action_prob.get()),
                    number(record.reward),
                ];
                match self.model.covariates(&record.state) {
                    Ok(values) => fields.extend(values.into_iter().map(number)),
                    Err(_) => fields.extend(self.covariates.iter().map(|_| None)),
                }
                write_record(&mut out, &fields).map_err(error)?;
            }
        }
        finish_file(out, &path)
    }

    /// `parameters.jsonl`; returns the newest version and its values (for β's names).
    fn write_parameters(
        &self,
        dir: &Path,
        policies: &BTreeMap<i64, i64>,
        updates: &[CompletedUpdate],
        newest: i64,
    ) -> Result<Option<(i64, Value)>, LifejacketError> {
        let path = dir.join("parameters.jsonl");
        let mut out = create_file(&path)?;
        let error = |source| LifejacketError::Write {
            path: path.clone(),
            source,
        };
        let by_version: HashMap<i64, &CompletedUpdate> =
            updates.iter().map(|u| (u.parameter_version, u)).collect();
        let mut last = None;
        for version in 1..=newest {
            let Some(p) = self.store.parameters(version)? else {
                continue;
            };
            let failed = |e: justin_core::AlgorithmError| LifejacketError::Parameters {
                version,
                message: e.to_string(),
            };
            let beta = self.model.beta(&p.values).map_err(failed)?;
            let constants = self.model.constants(&p.values).map_err(failed)?;
            let update = by_version.get(&version).map(|u| {
                json!({
                    "update_id": u.update_id.to_string(),
                    "rows_read": u.provenance.rows_read,
                    "included_policies": u.provenance.included_policies,
                    "started_at": u.started_at.map(rfc3339),
                    "finished_at": u.finished_at.map(rfc3339),
                })
            });
            let line = json!({
                "parameter_version": version,
                "policy_num": policies.get(&version),
                "algorithm": p.algorithm,
                "created_at": rfc3339(p.created_at),
                "parameters": &p.values,
                "beta": beta,
                "constants": constants,
                "update": update,
            });
            serde_json::to_writer(&mut out, &line).map_err(|e| error(e.into()))?;
            out.write_all(b"\n").map_err(error)?;
            last = Some((version, p.values));
        }
        finish_file(out, &path)?;
        Ok(last)
    }

    fn write_readme(&self, dir: &Path) -> Result<(), LifejacketError> {
        let path = dir.join("README.txt");
        let mut out = create_file(&path)?;
        let text = format!(
            "This directory is a JustIn study exported for an adaptivity-aware analysis \
             (lifejacket) by `justin export --for lifejacket`, algorithm {}. manifest.json \
             (written last: without it the export is incomplete) describes the schedule, the \
             calendar, the covariates, the policy numbers, the analysis functions with their \
             arguments, and counts; grid.csv has one row per participant and calendar time; \
             update_rows.csv the rows each update read, in the order it read them; \
             parameters.jsonl every parameter version with its beta and constants; \
             unplaced.csv the decisions without a calendar time, and why. The files hold \
             participants' data. docs/analysis.md in the JustIn repository describes every \
             column and shows how to turn this directory into lifejacket's inputs and run the \
             analysis.\n",
            self.algorithm.name()
        );
        out.write_all(text.as_bytes())
            .map_err(|source| LifejacketError::Write {
                path: path.clone(),
                source,
            })?;
        finish_file(out, &path)
    }

    fn write_manifest(
        &self,
        dir: &Path,
        now: DateTime<Utc>,
        grid: &Grid<'_>,
        counts: &Counts,
        newest: Option<&(i64, Value)>,
    ) -> Result<(), LifejacketError> {
        let schedule = self.schedule;
        let per_day = schedule.cells_per_day();
        let origin_date = schedule
            .date_of_cell(grid.origin_cell)
            .map(|d| d.format("%Y-%m-%d").to_string());
        let beta_names = match newest {
            Some((version, values)) => {
                self.model
                    .beta_names(values)
                    .map_err(|e| LifejacketError::Parameters {
                        version: *version,
                        message: e.to_string(),
                    })?
            }
            None => Vec::new(),
        };
        let (update, kind) = self.model.update_function();
        let action_prob = self.model.action_prob_function();
        let manifest = json!({
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "exported_at": rfc3339(now),
            "service_version": env!("CARGO_PKG_VERSION"),
            "algorithm": self.algorithm.name(),
            "schedule": {
                "place_by": schedule.place_by().as_str(),
                "time_zone": schedule.time_zone().name(),
                "first_decision_idx": schedule.first_decision_idx(),
                "times": schedule.times().iter().map(|t| json!({
                    "decision_type": t.decision_type.to_string(),
                    "at": time_of_day(t.at),
                })).collect::<Vec<_>>(),
            },
            "calendar": {
                "origin_date": origin_date,
                "cells_per_day": per_day,
                "first_calendar_t": grid.first - grid.origin_cell,
                "last_calendar_t": grid.last - grid.origin_cell,
            },
            "reward_fill": REWARD_FILL,
            "covariates": self.covariates,
            "beta_names": beta_names,
            "policies": grid.policies.iter().map(|(version, num)| json!({
                "policy_num": num, "parameter_version": version,
            })).collect::<Vec<_>>(),
            "functions": {
                "action_prob": action_prob,
                "update": {"name": update.name, "kind": kind, "args": update.args},
            },
            "counts": counts,
        });
        let path = dir.join("manifest.json");
        let mut out = create_file(&path)?;
        let error = |source| LifejacketError::Write {
            path: path.clone(),
            source,
        };
        serde_json::to_writer_pretty(&mut out, &manifest).map_err(|e| error(e.into()))?;
        out.write_all(b"\n").map_err(error)?;
        finish_file(out, &path)
    }
}

/// Why writing a participant's rows stopped.
enum RowError {
    Io(io::Error),
    Changed(String),
}

/// The grid: its origin (the first cell of the origin date), its first and last cell, and the
/// policy number of each version that drove an in-study decision.
struct Grid<'a> {
    origin_cell: i64,
    first: i64,
    last: i64,
    policies: &'a BTreeMap<i64, i64>,
}

/// The calendar time of each decision placed in the grid: by participant, sorted by
/// (decision type, decision index).
type Placed = HashMap<UserId, Vec<(String, i64, i64)>>;

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use chrono::NaiveTime;
    use justin_core::testing::{ManualClock, MemoryStore, RecordingNotifier};
    use justin_core::{
        ActionRequest, Availability, CallbackPolicy, Decision, DecisionIdx, DecisionType,
        Enrollment, JsonObject, PlaceBy, ScheduledTime, SentTime, Service, ServiceSettings,
        TrialSettings, UploadRequest,
    };
    use justin_core::{
        BackupReport, CallbackDelivery, DecisionGuard, DecisionStream, Erasure, ExportStream,
        ModelParameters, Recorded, RestoreReport, StudyRecord, UpdateJob, UpdateRecordStream,
        UpdateRequest, UploadRecorded,
    };
    use uuid::Uuid;

    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn object(v: Value) -> JsonObject {
        v.as_object().unwrap().clone()
    }

    fn daily(times: &[(&str, u32)]) -> Schedule {
        Schedule::new(
            PlaceBy::Time,
            chrono_tz::Tz::UTC,
            0,
            times
                .iter()
                .map(|(t, h)| ScheduledTime {
                    decision_type: DecisionType::parse(*t).unwrap(),
                    at: NaiveTime::from_hms_opt(*h, 0, 0).unwrap(),
                })
                .collect(),
        )
        .unwrap()
    }

    struct Study {
        store: Arc<MemoryStore>,
        clock: Arc<ManualClock>,
        service: Arc<Service>,
    }

    impl Study {
        fn new(algorithm: Arc<dyn Algorithm>, priors: Value) -> Self {
            let store = Arc::new(MemoryStore::new());
            let clock = Arc::new(ManualClock::starting_at(at("2026-01-04T12:00:00Z")));
            let service = Arc::new(Service::new(
                store.clone(),
                algorithm,
                clock.clone(),
                Arc::new(RecordingNotifier::new()),
                ServiceSettings {
                    seed: 42,
                    backup_dir: None,
                    update_attempts: 1,
                    callbacks: CallbackPolicy {
                        attempts: 1,
                        first_backoff: std::time::Duration::from_millis(1),
                        attempt_timeout: std::time::Duration::from_secs(1),
                    },
                    service_version: "test".into(),
                    config_hash: "test".into(),
                    trial: TrialSettings::default(),
                    erasure_backup_dir: "/nonexistent".into(),
                },
            ));
            service.initialise(&object(priors)).unwrap();
            Self {
                store,
                clock,
                service,
            }
        }

        fn thompson() -> Self {
            let algorithm = justin_algos::builtin()
                .build("thompson", &object(json!({ "features": ["temp"] })))
                .unwrap();
            Self::new(algorithm, json!({ "variance": 1, "noise_variance": 1 }))
        }

        fn enroll(&self, name: &str, start: Option<&str>, end: Option<&str>) -> UserId {
            let sent = |s: &str| SentTime {
                at: at(s),
                sent: s.to_owned(),
            };
            let user = UserId::parse(name).unwrap();
            self.service
                .add_user(
                    &user,
                    &Enrollment::new(start.map(sent), end.map(sent)).unwrap(),
                )
                .unwrap();
            user
        }

        fn decide_as(
            &self,
            user: &UserId,
            decision_type: &str,
            idx: i64,
            when: &str,
            available: bool,
        ) -> Decision {
            self.clock.set(at(when));
            let request = ActionRequest {
                user_id: user.clone(),
                decision_type: DecisionType::parse(decision_type).unwrap(),
                decision_idx: DecisionIdx::new(idx).unwrap(),
                requested_at: at(when),
                sent_timestamp: when.to_owned(),
                availability: if available {
                    Availability::Available
                } else {
                    Availability::unavailable(Some("driving".into())).unwrap()
                },
                context: object(json!({ "temp": idx as f64 / 2.0 })),
            };
            self.service.request_action(request).unwrap().decision
        }

        fn decide(&self, user: &UserId, idx: i64, when: &str) -> Decision {
            self.decide_as(user, "default", idx, when, true)
        }

        fn upload(&self, d: &Decision, reward: f64) {
            self.service
                .upload_data(UploadRequest {
                    user_id: d.user_id.clone(),
                    decision_type: d.decision_type.clone(),
                    decision_idx: d.decision_idx,
                    requested_at: d.requested_at,
                    sent_timestamp: d.sent_timestamp.clone(),
                    context: d.context.clone(),
                    action: d.action,
                    action_prob: d.action_prob,
                    state: d.state.clone(),
                    outcome: object(json!({ "reward": reward })),
                })
                .unwrap();
        }

        fn correct(&self, d: &Decision, reward: f64) {
            self.service
                .correct_upload(UploadRequest {
                    user_id: d.user_id.clone(),
                    decision_type: d.decision_type.clone(),
                    decision_idx: d.decision_idx,
                    requested_at: d.requested_at,
                    sent_timestamp: d.sent_timestamp.clone(),
                    context: d.context.clone(),
                    action: d.action,
                    action_prob: d.action_prob,
                    state: d.state.clone(),
                    outcome: object(json!({ "reward": reward })),
                })
                .unwrap();
        }

        fn update(&self, when: &str) {
            self.clock.set(at(when));
            self.service
                .request_update(at(when), when.to_owned(), "http://study.example/cb".into())
                .unwrap();
            let (_, outcome) = self.service.run_next_update().unwrap().unwrap();
            assert!(
                matches!(outcome, justin_core::UpdateOutcome::Completed { .. }),
                "{outcome:?}"
            );
        }

        fn export(&self, schedule: &Schedule, dir: &Path) -> Result<Counts, LifejacketError> {
            export(
                self.store.as_ref(),
                self.service.algorithm(),
                Some(schedule),
                dir,
                at("2026-02-01T00:00:00Z"),
            )
        }
    }

    /// A CSV file as a header and records of text fields (empty for missing).
    fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
        let file = std::io::BufReader::new(std::fs::File::open(path).unwrap());
        let mut reader = justin_backup::csv::CsvReader::new(file);
        let mut records = Vec::new();
        while let Some(record) = reader.next_record().unwrap() {
            records.push(record.into_iter().map(Option::unwrap_or_default).collect());
        }
        let header = records.remove(0);
        (header, records)
    }

    /// Rows as maps from column name to text.
    fn rows_of(path: &Path) -> Vec<BTreeMap<String, String>> {
        let (header, records) = read_csv(path);
        records
            .into_iter()
            .map(|r| header.iter().cloned().zip(r).collect())
            .collect()
    }

    /// Three participants over five days of one decision time (08:00 UTC), two updates:
    /// - a: in the study from the 5th to the 9th (4 cells); unavailable on the 6th, two calls
    ///   for the 7th (the second unplaced), no call on the 8th.
    /// - b: registered at noon on the 6th without a start (from the 7th, open-ended); a call
    ///   of a type the schedule does not have; the last decision (the 9th).
    /// - c: from the 5th, withdrawn at 09:00 on the 7th; no upload for the 6th.
    fn worked_study() -> Study {
        let study = Study::thompson();
        let a = study.enroll(
            "a",
            Some("2026-01-05T00:00:00Z"),
            Some("2026-01-09T00:00:00Z"),
        );
        let c = study.enroll("c", Some("2026-01-05T00:00:00Z"), None);
        let d = study.decide(&a, 0, "2026-01-05T08:00:00Z");
        study.upload(&d, 1.0);
        let d = study.decide(&c, 0, "2026-01-05T08:01:00Z");
        study.upload(&d, 0.5);
        study.update("2026-01-05T20:00:00Z");
        study.clock.set(at("2026-01-06T12:00:00Z"));
        let b = study.enroll("b", None, None);
        let d = study.decide_as(&a, "default", 1, "2026-01-06T08:00:00Z", false);
        study.upload(&d, 2.0);
        study.decide(&c, 1, "2026-01-06T07:50:00Z");
        let d = study.decide(&a, 2, "2026-01-07T08:00:00Z");
        study.upload(&d, -1.0);
        study.decide(&a, 3, "2026-01-07T08:10:00Z");
        let d = study.decide(&b, 0, "2026-01-07T08:00:00Z");
        study.upload(&d, 0.25);
        study.decide(&c, 2, "2026-01-07T08:00:00Z");
        study.clock.set(at("2026-01-07T09:00:00Z"));
        study.service.withdraw(&c, "moved away").unwrap();
        let d = study.decide(&b, 1, "2026-01-08T08:00:00Z");
        study.upload(&d, 1.5);
        study.decide_as(&b, "noon", 0, "2026-01-08T12:00:00Z", true);
        study.update("2026-01-08T20:00:00Z");
        study.decide(&b, 2, "2026-01-09T08:00:00Z");
        study
    }

    /// grid.csv has the reward in force and the number of corrections; update_rows.csv each
    /// update's rows as it read them, before or after a correction.
    #[test]
    fn the_grid_has_the_reward_in_force_and_the_update_rows_what_each_update_read() {
        let study = Study::thompson();
        let a = study.enroll("a", Some("2026-01-05T00:00:00Z"), None);
        let d0 = study.decide(&a, 0, "2026-01-05T08:00:00Z");
        study.upload(&d0, 1.0);
        let d1 = study.decide(&a, 1, "2026-01-06T08:00:00Z");
        study.upload(&d1, 2.0);
        study.update("2026-01-06T20:00:00Z");
        study.correct(&d0, 4.0);
        study.update("2026-01-07T20:00:00Z");
        study.correct(&d0, -3.5);
        let dir = tempdir();
        let out = dir.path().join("export");

        study.export(&daily(&[("default", 8)]), &out).unwrap();

        let grid = rows_of(&out.join("grid.csv"));
        let column = |name: &str| -> Vec<&str> { grid.iter().map(|r| r[name].as_str()).collect() };
        assert_eq!(column("reward"), ["-3.5", "2.0"]);
        assert_eq!(column("corrections"), ["2", "0"]);
        let read: Vec<(String, String)> = rows_of(&out.join("update_rows.csv"))
            .into_iter()
            .map(|r| (r["parameter_version"].clone(), r["reward"].clone()))
            .collect();
        assert_eq!(
            read,
            [
                ("2".to_owned(), "1.0".to_owned()),
                ("2".to_owned(), "2.0".to_owned()),
                ("3".to_owned(), "4.0".to_owned()),
                ("3".to_owned(), "2.0".to_owned()),
            ]
        );
    }

    #[test]
    fn the_grid_has_every_participant_at_every_calendar_time() {
        let study = worked_study();
        let dir = tempdir();
        let out = dir.path().join("export");
        let counts = study.export(&daily(&[("default", 8)]), &out).unwrap();
        assert_eq!(
            counts,
            Counts {
                participants: 3,
                grid_rows: 15,
                decisions: 9,
                unplaced_decisions: 2,
                in_study_cells_without_call: 1,
                participants_left_out: 0,
                decisions_left_out: 0,
                participants_without_decisions: 0,
                updates: 2,
                policy_decreases: 0,
            }
        );
        let mut files: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        assert_eq!(
            files,
            [
                "README.txt",
                "grid.csv",
                "manifest.json",
                "parameters.jsonl",
                "unplaced.csv",
                "update_rows.csv"
            ]
        );
        let (header, _) = read_csv(&out.join("grid.csv"));
        let mut expected: Vec<&str> = GRID_COLUMNS.to_vec();
        expected.extend(["intercept", "temp"]);
        assert_eq!(header, expected);
        let grid = rows_of(&out.join("grid.csv"));
        let show = |user: &str, column: &str| -> Vec<String> {
            grid.iter()
                .filter(|r| r["user_id"] == user)
                .map(|r| r[column].clone())
                .collect()
        };
        // Ordered by user, then calendar time 0..4 (the 5th to the 9th).
        let users: Vec<&str> = grid.iter().map(|r| r["user_id"].as_str()).collect();
        assert_eq!(
            users,
            ["a"; 5]
                .iter()
                .chain(&["b"; 5])
                .chain(&["c"; 5])
                .copied()
                .collect::<Vec<_>>()
        );
        for user in ["a", "b", "c"] {
            assert_eq!(
                show(user, "calendar_t"),
                ["0", "1", "2", "3", "4"],
                "{user}"
            );
        }
        assert_eq!(
            show("a", "scheduled_at"),
            [
                "2026-01-05T08:00:00Z",
                "2026-01-06T08:00:00Z",
                "2026-01-07T08:00:00Z",
                "2026-01-08T08:00:00Z",
                "2026-01-09T08:00:00Z"
            ]
        );
        assert_eq!(show("a", "in_study"), ["1", "1", "1", "1", "0"]);
        assert_eq!(show("b", "in_study"), ["0", "0", "1", "1", "1"]);
        // Withdrawn at 09:00 on the 7th: the 7th's 08:00 is still in the study.
        assert_eq!(show("c", "in_study"), ["1", "1", "1", "0", "0"]);
        assert_eq!(show("a", "called"), ["1", "1", "1", "0", "0"]);
        assert_eq!(show("a", "decision_idx"), ["0", "1", "2", "", ""]);
        assert_eq!(show("a", "available"), ["1", "0", "1", "0", "0"]);
        assert_eq!(show("a", "drawn_by_policy"), ["1", "0", "1", "0", "0"]);
        assert_eq!(show("a", "action1_prob")[1], "0.0");
        assert_eq!(show("a", "observed"), ["1", "1", "1", "0", "0"]);
        assert_eq!(show("a", "reward"), ["1.0", "2.0", "-1.0", "0.0", "0.0"]);
        assert_eq!(show("c", "observed"), ["1", "0", "0", "0", "0"]);
        assert_eq!(show("c", "reward"), ["0.5", "0.0", "0.0", "0.0", "0.0"]);
        // An unavailable decision's upload never reaches an update.
        assert_eq!(show("a", "first_used_in_version"), ["2", "", "3", "", ""]);
        // Version 1 drove the 5th, version 2 the 6th to the 8th, version 3 the 9th.
        assert_eq!(show("a", "parameter_version"), ["1", "2", "2", "", ""]);
        assert_eq!(show("a", "policy_num"), ["1", "2", "2", "2", ""]);
        assert_eq!(show("b", "policy_num"), ["", "", "2", "2", "3"]);
        assert_eq!(show("c", "policy_num"), ["1", "2", "2", "", ""]);
        assert_eq!(show("a", "has_state"), ["1", "1", "1", "0", "0"]);
        assert_eq!(show("a", "corrections"), ["0", "0", "0", "", ""]);
        assert_eq!(show("a", "intercept"), ["1.0", "1.0", "1.0", "", ""]);
        assert_eq!(show("a", "temp"), ["0.0", "0.5", "1.0", "", ""]);
        assert_eq!(
            show("a", "policy"),
            ["algorithm", "algorithm", "algorithm", "", ""]
        );
        // The in-study stretch of every participant is unbroken.
        for user in ["a", "b", "c"] {
            let flags = show(user, "in_study").concat();
            assert!(!flags.trim_matches('0').contains('0'), "{user}: {flags}");
        }

        let unplaced = rows_of(&out.join("unplaced.csv"));
        let reasons: Vec<(&str, &str, &str)> = unplaced
            .iter()
            .map(|r| {
                (
                    r["user_id"].as_str(),
                    r["decision_type"].as_str(),
                    r["reason"].as_str(),
                )
            })
            .collect();
        assert_eq!(
            reasons,
            [
                ("a", "default", "cell_taken"),
                ("b", "noon", "decision_type_not_scheduled")
            ]
        );
        assert_eq!(unplaced[0]["request_timestamp"], "2026-01-07T08:10:00Z");

        // Each update's rows, as many as its provenance says it read.
        let updates = rows_of(&out.join("update_rows.csv"));
        let per_version = |v: &str| {
            updates
                .iter()
                .filter(|r| r["parameter_version"] == v)
                .count()
        };
        for update in study.store.completed_updates().unwrap() {
            let v = update.parameter_version.to_string();
            assert_eq!(
                per_version(&v) as u64,
                update.provenance.rows_read,
                "version {v}"
            );
        }
        assert_eq!(per_version("2"), 2);
        let second: Vec<(&str, &str, &str)> = updates
            .iter()
            .filter(|r| r["parameter_version"] == "3")
            .map(|r| {
                (
                    r["user_id"].as_str(),
                    r["calendar_t"].as_str(),
                    r["policy_num"].as_str(),
                )
            })
            .collect();
        // The unavailable decision and the withdrawn participant's rows are not read; the
        // update's own version drove b's decision on the 9th.
        assert_eq!(
            second,
            [
                ("a", "0", "3"),
                ("a", "2", "3"),
                ("b", "2", "3"),
                ("b", "3", "3")
            ]
        );

        let manifest: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap())
                .unwrap();
        assert_eq!(manifest["format"], "justin-lifejacket-export");
        assert_eq!(manifest["format_version"], 1);
        assert_eq!(manifest["algorithm"], "thompson");
        assert_eq!(
            manifest["calendar"],
            json!({"origin_date": "2026-01-05", "cells_per_day": 1,
                   "first_calendar_t": 0, "last_calendar_t": 4})
        );
        assert_eq!(
            manifest["schedule"],
            json!({"place_by": "time", "time_zone": "UTC", "first_decision_idx": 0,
                   "times": [{"decision_type": "default", "at": "08:00"}]})
        );
        assert_eq!(manifest["covariates"], json!(["intercept", "temp"]));
        assert_eq!(manifest["beta_names"].as_array().unwrap().len(), 4 + 10);
        assert_eq!(
            manifest["policies"],
            json!([{"policy_num": 1, "parameter_version": 1},
                   {"policy_num": 2, "parameter_version": 2},
                   {"policy_num": 3, "parameter_version": 3}])
        );
        assert_eq!(manifest["functions"]["update"]["kind"], "estimating");
        assert_eq!(
            manifest["functions"]["action_prob"]["name"],
            "thompson_action1_prob"
        );
        assert_eq!(manifest["counts"]["grid_rows"], 15);

        let parameters: Vec<Value> = std::fs::read_to_string(out.join("parameters.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(parameters.len(), 3);
        assert_eq!(parameters[0]["update"], Value::Null);
        assert_eq!(parameters[0]["policy_num"], 1);
        assert_eq!(parameters[2]["update"]["rows_read"], 4);
        assert_eq!(parameters[1]["beta"].as_array().unwrap().len(), 14);
        assert_eq!(parameters[1]["constants"]["bounds"], json!([0.2, 0.8]));
        assert_eq!(
            parameters[1]["parameters"],
            study.store.parameters(2).unwrap().unwrap().values
        );
    }

    #[test]
    fn placing_by_index_and_several_times_a_day() {
        let study = Study::thompson();
        let a = study.enroll("a", Some("2026-01-05T12:00:00Z"), None);
        // By index: a's first default decision is the 20:00 of the 5th (the first at or
        // after noon), whatever its request time says.
        study.decide(&a, 0, "2026-01-05T21:30:00Z");
        study.decide(&a, 1, "2026-01-06T07:00:00Z");
        study.decide(&a, 3, "2026-01-07T08:00:00Z");
        let schedule = Schedule::new(
            PlaceBy::Index,
            chrono_tz::Tz::UTC,
            0,
            daily(&[("default", 8), ("default", 20)]).times().to_vec(),
        )
        .unwrap();
        let dir = tempdir();
        let counts = study.export(&schedule, dir.path()).unwrap();
        assert_eq!((counts.grid_rows, counts.decisions), (4, 3));
        let grid = rows_of(&dir.path().join("grid.csv"));
        let column = |c: &str| grid.iter().map(|r| r[c].clone()).collect::<Vec<_>>();
        // The origin is the 5th; the grid starts at its 20:00 (cell 1).
        assert_eq!(column("calendar_t"), ["1", "2", "3", "4"]);
        assert_eq!(column("decision_idx"), ["0", "1", "", "3"]);
        assert_eq!(column("in_study"), ["1", "1", "1", "1"]);
        assert_eq!(column("policy_num"), ["1", "1", "1", "1"]);
    }

    #[test]
    fn erased_participants_and_windows_outside_the_grid_are_left_out() {
        let study = Study::thompson();
        let a = study.enroll("a", Some("2026-01-05T00:00:00Z"), None);
        // z's time in the study starts after the last decision: no in-study cell in the grid.
        let z = study.enroll("z", Some("2026-03-01T00:00:00Z"), None);
        study.decide(&a, 0, "2026-01-05T08:00:00Z");
        study.decide(&a, 1, "2026-01-06T08:00:00Z");
        study.decide(&z, 0, "2026-01-06T08:00:00Z");
        // e is erased: their decisions stay under a pseudonym, without states.
        let e = study.enroll("e", Some("2026-01-05T00:00:00Z"), None);
        study.decide(&e, 0, "2026-01-05T08:00:00Z");
        study.decide(&e, 1, "2026-01-06T08:00:00Z");
        study.service.erase_participant(&e).unwrap();
        // idle is registered, in the study, and never got a decision.
        study.enroll("idle", Some("2026-01-05T00:00:00Z"), None);
        let dir = tempdir();
        let counts = study.export(&daily(&[("default", 8)]), dir.path()).unwrap();
        assert_eq!(
            (
                counts.participants,
                counts.participants_left_out,
                counts.decisions_left_out,
                counts.participants_without_decisions
            ),
            (1, 2, 3, 1)
        );
        let manifest: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("manifest.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(manifest["counts"]["participants_without_decisions"], 1);
        assert_eq!(counts.grid_rows, 2);
    }

    #[test]
    fn refusals_say_why_and_leave_nothing_behind() {
        let study = worked_study();
        let schedule = daily(&[("default", 8)]);
        let dir = tempdir();
        std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
        let err = study.export(&schedule, dir.path()).unwrap_err().to_string();
        assert!(err.contains("is not empty"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        let err = export(
            study.store.as_ref(),
            study.service.algorithm(),
            None,
            &dir.path().join("x"),
            Utc::now(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("set [schedule] times"), "{err}");
        assert!(!dir.path().join("x").exists());

        let flat = justin_algos::builtin()
            .build("flat_prob", &JsonObject::new())
            .unwrap();
        let err = check(flat.as_ref(), Some(&schedule))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "flat_prob's update is a fixed step on a sign, not a loss or an \
                          estimating function"
            ),
            "{err}"
        );

        // A store that fails in the middle: no manifest, no files, no hidden directory.
        let out = dir.path().join("failing");
        study.store.set_unavailable(true);
        assert!(matches!(
            study.export(&schedule, &out),
            Err(LifejacketError::Store(_))
        ));
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
    }

    /// A store that runs `between` when the export starts its second pass over the decisions.
    struct ChangesBetweenPasses {
        inner: Arc<MemoryStore>,
        calls: AtomicUsize,
        #[allow(clippy::type_complexity)]
        between: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    }

    impl Store for ChangesBetweenPasses {
        fn add_user(
            &self,
            user: &UserId,
            enrollment: &Enrollment,
            created_at: DateTime<Utc>,
        ) -> Result<(), StoreError> {
            self.inner.add_user(user, enrollment, created_at)
        }

        fn participant(&self, user: &UserId) -> Result<Option<Participant>, StoreError> {
            self.inner.participant(user)
        }

        fn change_enrollment(
            &self,
            user: &UserId,
            enrollment: &Enrollment,
            changed_at: DateTime<Utc>,
        ) -> Result<Participant, StoreError> {
            self.inner.change_enrollment(user, enrollment, changed_at)
        }

        fn withdraw(
            &self,
            user: &UserId,
            reason: &str,
            at: DateTime<Utc>,
        ) -> Result<Participant, StoreError> {
            self.inner.withdraw(user, reason, at)
        }

        fn erase_participant(
            &self,
            user: &UserId,
            erasure: &Erasure,
        ) -> Result<Erasure, StoreError> {
            self.inner.erase_participant(user, erasure)
        }

        fn erased_pseudonyms(&self) -> Result<Vec<String>, StoreError> {
            self.inner.erased_pseudonyms()
        }

        fn record_decision(
            &self,
            decision: &Decision,
            guard: DecisionGuard,
        ) -> Result<Recorded, StoreError> {
            self.inner.record_decision(decision, guard)
        }

        fn record_study_data(&self, record: &StudyRecord) -> Result<UploadRecorded, StoreError> {
            self.inner.record_study_data(record)
        }

        fn record_correction(
            &self,
            record: &StudyRecord,
        ) -> Result<justin_core::CorrectionRecorded, StoreError> {
            self.inner.record_correction(record)
        }

        fn decision_history(
            &self,
            user: &UserId,
            decision_type: &justin_core::DecisionType,
            decision_idx: justin_core::DecisionIdx,
        ) -> Result<Option<justin_core::DecisionHistory>, StoreError> {
            self.inner
                .decision_history(user, decision_type, decision_idx)
        }

        fn decisions(&self) -> Result<DecisionStream, StoreError> {
            self.inner.decisions()
        }

        fn export(&self) -> Result<ExportStream, StoreError> {
            self.inner.export()
        }

        fn export_by_participant(&self) -> Result<ExportStream, StoreError> {
            if self.calls.fetch_add(1, Ordering::SeqCst) == 1 {
                if let Some(between) = self.between.lock().unwrap().take() {
                    between();
                }
            }
            self.inner.export_by_participant()
        }

        fn completed_updates(&self) -> Result<Vec<CompletedUpdate>, StoreError> {
            self.inner.completed_updates()
        }

        fn update_rows(&self, version: i64) -> Result<UpdateRecordStream, StoreError> {
            self.inner.update_rows(version)
        }

        fn current_parameters(&self) -> Result<Option<ModelParameters>, StoreError> {
            self.inner.current_parameters()
        }

        fn parameters(&self, version: i64) -> Result<Option<ModelParameters>, StoreError> {
            self.inner.parameters(version)
        }

        fn seed_parameters(
            &self,
            algorithm: &str,
            values: &serde_json::Value,
            created_at: DateTime<Utc>,
        ) -> Result<ModelParameters, StoreError> {
            self.inner.seed_parameters(algorithm, values, created_at)
        }

        fn create_update_request(&self, request: &UpdateRequest) -> Result<(), StoreError> {
            self.inner.create_update_request(request)
        }

        fn claim_update(
            &self,
            started_at: DateTime<Utc>,
        ) -> Result<Option<Box<dyn UpdateJob + '_>>, StoreError> {
            self.inner.claim_update(started_at)
        }

        fn record_callback(&self, id: Uuid, delivery: &CallbackDelivery) -> Result<(), StoreError> {
            self.inner.record_callback(id, delivery)
        }

        fn undelivered_callbacks(&self) -> Result<Vec<UpdateRequest>, StoreError> {
            self.inner.undelivered_callbacks()
        }

        fn update_request(&self, id: Uuid) -> Result<Option<UpdateRequest>, StoreError> {
            self.inner.update_request(id)
        }

        fn backup(&self, dir: &Path, taken_at: DateTime<Utc>) -> Result<BackupReport, StoreError> {
            self.inner.backup(dir, taken_at)
        }

        fn restore(&self, file: &Path) -> Result<RestoreReport, StoreError> {
            self.inner.restore(file)
        }

        fn check_backup(&self, file: &Path) -> Result<RestoreReport, StoreError> {
            self.inner.check_backup(file)
        }

        fn row_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
            self.inner.row_counts()
        }

        fn reset(&self) -> Result<(), StoreError> {
            self.inner.reset()
        }

        fn ping(&self) -> Result<(), StoreError> {
            self.inner.ping()
        }

        fn dashboard_days(
            &self,
            settings: &justin_core::dashboard::DashboardSettings,
            now: DateTime<Utc>,
        ) -> Result<justin_core::dashboard::DashboardDays, StoreError> {
            self.inner.dashboard_days(settings, now)
        }

        fn dashboard_participants(
            &self,
            settings: &justin_core::dashboard::DashboardSettings,
            now: DateTime<Utc>,
        ) -> Result<Vec<justin_core::dashboard::ParticipantActivity>, StoreError> {
            self.inner.dashboard_participants(settings, now)
        }

        fn dashboard_participant_counts(&self) -> Result<(u64, u64), StoreError> {
            self.inner.dashboard_participant_counts()
        }

        fn dashboard_updates(&self) -> Result<Vec<UpdateRequest>, StoreError> {
            self.inner.dashboard_updates()
        }

        fn dashboard_recent_decisions(
            &self,
            version: i64,
            limit: u32,
        ) -> Result<Vec<Decision>, StoreError> {
            self.inner.dashboard_recent_decisions(version, limit)
        }

        // The watchdog's methods, passed through.
        fn monitor_facts(
            &self,
            query: &justin_core::monitor::MonitorQuery,
        ) -> Result<justin_core::monitor::MonitorFacts, StoreError> {
            self.inner.monitor_facts(query)
        }

        fn record_refused_upload(
            &self,
            refusal: &justin_core::monitor::RefusedUpload,
        ) -> Result<(), StoreError> {
            self.inner.record_refused_upload(refusal)
        }

        fn advance_monitor_state(
            &self,
            change: &justin_core::monitor::StateChange,
        ) -> Result<justin_core::monitor::StateAdvance, StoreError> {
            self.inner.advance_monitor_state(change)
        }

        fn claim_alert(
            &self,
            now: DateTime<Utc>,
            lease_until: DateTime<Utc>,
        ) -> Result<Option<justin_core::monitor::Alert>, StoreError> {
            self.inner.claim_alert(now, lease_until)
        }

        fn record_alert(
            &self,
            id: i64,
            delivery: &justin_core::monitor::AlertDelivery,
        ) -> Result<(), StoreError> {
            self.inner.record_alert(id, delivery)
        }
    }

    #[test]
    fn what_the_study_stores_while_it_is_exported_changes_nothing_in_the_export() {
        let study = Arc::new(worked_study());
        let schedule = daily(&[("default", 8)]);
        let dir = tempdir();
        let quiet = dir.path().join("quiet");
        study.export(&schedule, &quiet).unwrap();

        // Between the two passes: a later decision of a participant the first pass saw (it would
        // stretch the grid), a new participant with a decision, a withdrawal (it would end b's
        // time in the study), and an update (a new parameter version, driving the new
        // decision).
        let busy = ChangesBetweenPasses {
            inner: study.store.clone(),
            calls: AtomicUsize::new(0),
            between: Mutex::new(None),
        };
        let during = study.clone();
        *busy.between.lock().unwrap() = Some(Box::new(move || {
            let a = UserId::parse("a").unwrap();
            let d = during.decide(&a, 4, "2026-01-08T08:00:00Z");
            during.upload(&d, 3.0);
            during.update("2026-01-12T20:00:00Z");
            let late = during.enroll("late", Some("2026-01-10T00:00:00Z"), None);
            during.decide(&late, 0, "2026-01-12T08:00:00Z");
            during.clock.set(at("2026-01-12T09:00:00Z"));
            during
                .service
                .withdraw(&UserId::parse("b").unwrap(), "changed their mind")
                .unwrap();
        }));
        let busy_out = dir.path().join("busy");
        let counts = export(
            &busy,
            study.service.algorithm(),
            Some(&schedule),
            &busy_out,
            at("2026-02-01T00:00:00Z"),
        )
        .unwrap();
        assert_eq!(busy.calls.load(Ordering::SeqCst), 2, "two passes");
        assert_eq!((counts.participants, counts.updates), (3, 2));
        for file in [
            "grid.csv",
            "update_rows.csv",
            "parameters.jsonl",
            "unplaced.csv",
        ] {
            assert_eq!(
                std::fs::read_to_string(busy_out.join(file)).unwrap(),
                std::fs::read_to_string(quiet.join(file)).unwrap(),
                "{file}"
            );
        }
        // The study did change: an export now sees the new decision, participant and version.
        let after = dir.path().join("after");
        let now = study.export(&schedule, &after).unwrap();
        assert_eq!((now.participants, now.updates), (4, 3));
    }

    #[test]
    fn a_study_without_decisions_has_nothing_to_export() {
        let study = Study::thompson();
        study.enroll("a", None, None);
        let dir = tempdir();
        let err = study
            .export(&daily(&[("default", 8)]), dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("nothing to export"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    fn tempdir() -> justin_testkit::ScratchDir {
        justin_testkit::ScratchDir::new()
    }
}
