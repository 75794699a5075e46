//! The analysis export: one CSV row per decision with what was uploaded for it, the table a
//! statistician starts from. `GET /api/v1/export` streams it and `justin export` writes it to
//! a file; both read the store's export stream row by row, so memory stays flat whatever the
//! size of the study. The context, state and outcome columns carry the JSON text the store
//! holds ([`ExportLine`]), the compact text the service wrote, without parsing it again.
//!
//! The CSV is the backup files' dialect (see [`justin_backup::csv`]): RFC 4180 quoting, and an
//! empty unquoted field for a missing value (a decision without an upload has no outcome),
//! which R's `read.csv` and pandas' `read_csv` read as NA.

use std::io::{self, Write};

use chrono::{DateTime, SecondsFormat, Utc};
use justin_backup::csv::{float_text, write_record, Field};
use justin_core::{ExportLine, StoreError};

/// The columns, in order. The first fourteen are the analysis table; the next seven say where
/// each value came from (the `*_timestamp` columns are instants in UTC; the two `*_as_sent`
/// are the study server's `timestamp` of the decision and of the upload exactly as it sent
/// them); the next four say which policy gave the probability and whether the participant was
/// in the study; the next two name the first update that learned from the decision with the
/// default reward because no outcome came within the outcome window, and that reward (empty
/// when none did; `reward` stays what was uploaded, if anything); `corrections` counts the
/// corrections of the upload (empty without one), whose newest is the value `outcome` and
/// `reward` show (the value in force). New columns are only ever appended, so a column keeps
/// its position.
pub const COLUMNS: &[&str] = &[
    "user_id",
    "decision_type",
    "decision_idx",
    "request_timestamp",
    "decision_timestamp",
    "available",
    "unavailable_reason",
    "context",
    "state",
    "action",
    "action1_prob",
    "parameter_version",
    "outcome",
    "reward",
    "used_in_update",
    "used_in_version",
    "upload_request_timestamp",
    "upload_timestamp",
    "rng_seed",
    "request_timestamp_as_sent",
    "upload_request_timestamp_as_sent",
    "policy",
    "fallback_reason",
    "decided_by",
    "in_study",
    "reward_imputed_in_version",
    "imputed_reward",
    "corrections",
];

/// `true` or `false`, as R, pandas and spreadsheets read a logical column.
fn bool_text(v: bool) -> String {
    if v { "true" } else { "false" }.into()
}

fn time(t: DateTime<Utc>) -> Field {
    Some(t.to_rfc3339_opts(SecondsFormat::Micros, true))
}

/// Writes the header line.
///
/// # Errors
/// Whatever writing to `out` returns.
pub fn write_header(out: &mut impl Write) -> io::Result<()> {
    let fields: Vec<Field> = COLUMNS.iter().map(|c| Some((*c).to_owned())).collect();
    write_record(out, &fields)
}

/// Writes one row.
///
/// # Errors
/// Whatever writing to `out` returns.
pub fn write_row(out: &mut impl Write, row: ExportLine) -> io::Result<()> {
    let d = row.decision;
    let used_in_version = row.upload.as_ref().and_then(|u| u.used_in_version);
    let upload = row.upload.map(|u| {
        (
            u.outcome,
            float_text(u.reward),
            time(u.requested_at),
            time(u.received_at),
            u.sent_timestamp,
            u.corrections.to_string(),
        )
    });
    let (outcome, reward, requested_at, received_at, sent_timestamp, corrections) = match upload {
        Some((o, r, q, c, s, n)) => (Some(o), Some(r), q, c, Some(s), Some(n)),
        None => (None, None, None, None, None, None),
    };
    let fields: [Field; 28] = [
        Some(d.user_id.to_string()),
        Some(d.decision_type.to_string()),
        Some(d.decision_idx.get().to_string()),
        time(d.requested_at),
        time(d.decided_at),
        Some(bool_text(d.availability.is_available())),
        d.availability.reason().map(str::to_owned),
        Some(d.context),
        Some(d.state),
        Some(d.action.as_i16().to_string()),
        Some(float_text(d.action_prob.get())),
        Some(d.parameter_version.to_string()),
        outcome,
        reward,
        Some(bool_text(used_in_version.is_some())),
        used_in_version.map(|v| v.to_string()),
        requested_at,
        received_at,
        Some(d.rng_seed.to_string()),
        Some(d.sent_timestamp),
        sent_timestamp,
        Some(d.policy.as_str().to_owned()),
        d.policy.fallback_reason().map(str::to_owned),
        d.policy.decided_by().map(str::to_owned),
        Some(bool_text(d.availability.in_study())),
        row.imputed.map(|i| i.version.to_string()),
        row.imputed.map(|i| float_text(i.reward)),
        corrections,
    ];
    write_record(out, &fields)
}

/// Why an export stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Reading the study failed.
    #[error("reading the study failed")]
    Store(#[from] StoreError),
    /// Writing the CSV failed.
    #[error("writing the export failed")]
    Write(#[from] io::Error),
    /// The thread reading the study stopped (panicked) before the last row.
    #[error("reading the study stopped before its end")]
    ReaderStopped,
}

/// Rows the reader hands to the writer at once.
const BATCH_ROWS: usize = 500;

/// Batches read and not yet written, at most: with the batch being read and the one being
/// written, some 3,000 rows are held at once, whatever the size of the study.
const BATCHES_AHEAD: usize = 4;

/// Writes the header and every row of `rows` to `out`; returns the rows written.
///
/// `rows` is read on a thread of its own, up to [`BATCHES_AHEAD`] batches ahead, so the store
/// reads its next page (the database's query, the rows' decoding) while this thread writes the
/// CSV of the rows before; the reader stops as soon as the writer does.
///
/// # Errors
/// The first storage or write error; what was written before it is incomplete.
pub fn write_all(
    out: &mut impl Write,
    rows: impl Iterator<Item = Result<ExportLine, StoreError>> + Send,
) -> Result<u64, ExportError> {
    write_header(out)?;
    let (sender, batches) = std::sync::mpsc::sync_channel(BATCHES_AHEAD);
    std::thread::scope(|scope| {
        let reader = std::thread::Builder::new()
            .name("justin-export-reader".into())
            .spawn_scoped(scope, move || read_ahead(rows, &sender))?;
        let written = write_batches(out, &batches);
        // A writer that stopped early stops the reader at its next batch.
        drop(batches);
        let read = reader.join();
        let written = written?;
        match read {
            Ok(true) => {
                out.flush()?;
                Ok(written)
            }
            Ok(false) | Err(_) => Err(ExportError::ReaderStopped),
        }
    })
}

/// Passes `rows` to `sender` in batches, the last one ending at the first error; returns
/// whether every row was passed (false when the writer stopped first).
fn read_ahead(
    rows: impl Iterator<Item = Result<ExportLine, StoreError>>,
    sender: &std::sync::mpsc::SyncSender<Vec<Result<ExportLine, StoreError>>>,
) -> bool {
    let mut batch = Vec::with_capacity(BATCH_ROWS);
    for row in rows {
        let failed = row.is_err();
        batch.push(row);
        if failed || batch.len() == BATCH_ROWS {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_ROWS));
            if sender.send(full).is_err() {
                return false;
            }
            if failed {
                return true;
            }
        }
    }
    batch.is_empty() || sender.send(batch).is_ok()
}

/// Writes the rows of every batch until the reader ends; the rows written.
fn write_batches(
    out: &mut impl Write,
    batches: &std::sync::mpsc::Receiver<Vec<Result<ExportLine, StoreError>>>,
) -> Result<u64, ExportError> {
    let mut written = 0;
    for batch in batches {
        for row in batch {
            write_row(out, row?)?;
            written += 1;
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use justin_core::{
        Action, Availability, Decision, DecisionIdx, DecisionType, ExportRow, ExportedUpload,
        ImputedReward, OutOfStudy, Policy, Probability, State, UserId,
    };
    use serde_json::json;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_735_732_800 + s, 123_456_000).unwrap()
    }

    fn decision() -> Decision {
        Decision {
            user_id: UserId::parse("u,1").unwrap(),
            decision_type: DecisionType::parse("evening").unwrap(),
            decision_idx: DecisionIdx::new(3).unwrap(),
            requested_at: at(0),
            sent_timestamp: "2025-01-01 13:00:00.123456789+01:00".into(),
            decided_at: at(1),
            availability: Availability::Available,
            context: json!({"temperature": 23, "note": "a \"quote\""})
                .as_object()
                .unwrap()
                .clone(),
            state: State::new(vec![1.0, 23.0]).unwrap(),
            action: Action::One,
            action_prob: Probability::new(0.25).unwrap(),
            parameter_version: 2,
            rng_seed: u64::MAX,
            policy: Policy::Algorithm,
        }
    }

    fn text(row: &ExportRow) -> String {
        let mut out = Vec::new();
        write_row(&mut out, row.to_line().unwrap()).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn line(idx: i64) -> Result<ExportLine, StoreError> {
        let mut d = decision();
        d.decision_idx = DecisionIdx::new(idx).unwrap();
        Ok(ExportRow {
            decision: d,
            upload: None,
            imputed: None,
        }
        .to_line()
        .unwrap())
    }

    /// Lines written (the header's included) and the result.
    fn export(
        rows: impl Iterator<Item = Result<ExportLine, StoreError>> + Send,
    ) -> (usize, Result<u64, ExportError>) {
        let mut out = Vec::new();
        let result = write_all(&mut out, rows);
        (String::from_utf8(out).unwrap().lines().count(), result)
    }

    #[test]
    fn every_row_read_ahead_is_written_in_order() {
        let mut expected = Vec::new();
        write_header(&mut expected).unwrap();
        for i in 0..1_234 {
            write_row(&mut expected, line(i).unwrap()).unwrap();
        }
        let mut out = Vec::new();
        let written = write_all(&mut out, (0..1_234).map(line)).unwrap();
        assert_eq!(written, 1_234);
        assert_eq!(out, expected);
        let (lines, result) = export(std::iter::empty());
        assert_eq!((lines, result.unwrap()), (1, 0), "the header alone");
    }

    #[test]
    fn a_read_error_ends_the_export_after_the_rows_before_it() {
        let rows = (0..700)
            .map(line)
            .chain(std::iter::once(Err(StoreError::Unavailable("gone".into()))))
            .chain((700..2_000).map(line));
        let (lines, result) = export(rows);
        assert!(matches!(result, Err(ExportError::Store(_))), "{result:?}");
        assert_eq!(lines, 701, "the header and the 700 rows before the error");
    }

    #[test]
    fn a_reader_that_panics_fails_the_export() {
        let rows = (0..900).map(|i| {
            assert!(i < 800, "the store's iterator panicked");
            line(i)
        });
        let (lines, result) = export(rows);
        assert!(
            matches!(result, Err(ExportError::ReaderStopped)),
            "{result:?}"
        );
        assert!(lines <= 801, "{lines}");
    }

    /// Takes `left` bytes, then fails as a client gone away does.
    struct Closing {
        left: usize,
    }

    impl Write for Closing {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if buf.len() > self.left {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            self.left -= buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_writer_that_stops_stops_the_reader() {
        // Endless: the export returns only if the reader stops with the writer.
        let rows = (0..).map(line);
        let result = write_all(&mut Closing { left: 100_000 }, rows);
        assert!(
            matches!(&result, Err(ExportError::Write(e)) if e.kind() == io::ErrorKind::BrokenPipe),
            "{result:?}"
        );
    }

    #[test]
    fn the_header_names_every_column_once() {
        let mut out = Vec::new();
        write_header(&mut out).unwrap();
        let line = String::from_utf8(out).unwrap();
        assert_eq!(line.trim_end().split(',').count(), COLUMNS.len());
        assert!(line.starts_with("user_id,decision_type,decision_idx,"));
    }

    #[test]
    fn a_decision_with_its_upload_fills_every_column() {
        let row = ExportRow {
            decision: decision(),
            upload: Some(ExportedUpload {
                requested_at: at(10),
                sent_timestamp: "2025-01-01T12:00:10.123456".into(),
                received_at: at(11),
                outcome: json!({"reward": 1.5}).as_object().unwrap().clone(),
                reward: 1.5,
                used_in_version: Some(3),
                corrections: 2,
            }),
            imputed: None,
        };
        assert_eq!(
            text(&row),
            concat!(
                r#""u,1",evening,3,2025-01-01T12:00:00.123456Z,2025-01-01T12:00:01.123456Z,"#,
                r#"true,,"{""note"":""a \""quote\"""",""temperature"":23}","[1,23]",1,0.25,2,"#,
                r#""{""reward"":1.5}",1.5,true,3,2025-01-01T12:00:10.123456Z,"#,
                "2025-01-01T12:00:11.123456Z,18446744073709551615,",
                "2025-01-01 13:00:00.123456789+01:00,2025-01-01T12:00:10.123456,",
                "algorithm,,,true,,,2\n"
            )
        );
    }

    #[test]
    fn a_decision_without_upload_leaves_the_upload_columns_empty() {
        let row = ExportRow {
            decision: Decision {
                availability: Availability::unavailable(Some("driving".into())).unwrap(),
                action: Action::Zero,
                action_prob: Probability::ZERO,
                ..decision()
            },
            upload: None,
            imputed: None,
        };
        let line = text(&row);
        let line = line
            .trim_end()
            .strip_suffix(",algorithm,,,true,,,")
            .unwrap_or_else(|| panic!("{line}"));
        let fields: Vec<&str> = line.rsplitn(10, ',').collect();
        // From the end: upload_request_timestamp_as_sent, request_timestamp_as_sent, rng_seed,
        // upload_timestamp, upload_request_timestamp, used_in_version, used_in_update, reward,
        // outcome.
        assert_eq!(
            fields[..9],
            [
                "",
                "2025-01-01 13:00:00.123456789+01:00",
                "18446744073709551615",
                "",
                "",
                "",
                "false",
                "",
                ""
            ]
        );
        assert!(line.contains(",false,driving,"), "{line}");
        assert!(line.contains(",0,0.0,2,"), "{line}");
    }

    /// The four columns before `corrections` of a row without an upload (whose `corrections`
    /// is empty).
    fn policy_columns(decision: Decision) -> String {
        let line = text(&ExportRow {
            decision,
            upload: None,
            imputed: None,
        });
        line.trim_end()
            .rsplitn(8, ',')
            .skip(3)
            .take(4)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join(",")
    }

    #[test]
    fn an_imputed_reward_names_its_update_and_reward_and_leaves_the_upload_empty() {
        let row = ExportRow {
            decision: decision(),
            upload: None,
            imputed: Some(ImputedReward {
                version: 4,
                reward: -0.25,
            }),
        };
        let line = text(&row);
        assert!(line.ends_with(",algorithm,,,true,4,-0.25,\n"), "{line}");
        // No outcome and no reward of its own: the columns of an upload stay empty.
        assert!(line.contains(r#","[1,23]",1,0.25,2,,,false,"#), "{line}");
    }

    #[test]
    fn the_last_columns_name_the_policy_its_note_and_whether_the_participant_was_in_the_study() {
        assert_eq!(policy_columns(decision()), "algorithm,,,true");
        assert_eq!(
            policy_columns(Decision {
                policy: Policy::Warmup,
                ..decision()
            }),
            "warmup,,,true"
        );
        assert_eq!(
            policy_columns(Decision {
                policy: Policy::Fallback {
                    reason: "parameters unusable".into()
                },
                ..decision()
            }),
            "fallback,parameters unusable,,true"
        );
        assert_eq!(
            policy_columns(Decision {
                policy: Policy::Host {
                    decided_by: "app".into()
                },
                ..decision()
            }),
            "host,,app,true"
        );
        let out = Decision {
            availability: Availability::OutOfStudy(OutOfStudy::Withdrawn),
            action: Action::Zero,
            action_prob: Probability::ZERO,
            ..decision()
        };
        assert_eq!(policy_columns(out.clone()), "algorithm,,,false");
        let line = text(&ExportRow {
            decision: out,
            upload: None,
            imputed: None,
        });
        assert!(line.contains(",false,withdrawn,"), "{line}");
    }

    #[test]
    fn existing_columns_keep_their_positions() {
        assert_eq!(
            COLUMNS[..21].last(),
            Some(&"upload_request_timestamp_as_sent")
        );
        assert_eq!(
            COLUMNS[21..25],
            ["policy", "fallback_reason", "decided_by", "in_study"]
        );
        assert_eq!(
            COLUMNS[25..],
            ["reward_imputed_in_version", "imputed_reward", "corrections"]
        );
    }
}
