//! What a store answers when an insert stores nothing: the rules every storage adapter applies,
//! so that all of them refuse the same writes with the same errors.
//!
//! An adapter inserts a decision or an upload in one statement that stores nothing when the
//! key (user, decision type, decision index) is taken, or, for an upload, when the decision
//! logged for the key differs from it (the statement's SQL compares with
//! [`Probability::TOLERANCE`]). When nothing was stored, the adapter reads what stands on the
//! key and these functions say what that means. Study data uploaded for the key comes first:
//! a key with an upload takes neither a decision nor another upload.
//!
//! [`Probability::TOLERANCE`]: crate::domain::Probability::TOLERANCE

use uuid::Uuid;

use crate::algorithm::ActionChoice;
use crate::domain::{Decision, Policy, StudyRecord};
use crate::ports::{Recorded, StoreError};

/// The answer to [`Store::record_decision`](crate::Store::record_decision) when its insert
/// stored nothing, from what stands on the decision's key: `logged`, the decision stored
/// there before (read into a [`Decision`] only when it is the answer), and whether study data
/// is `uploaded` for the key.
///
/// A host decision ([`Policy::Host`]) is the exception to the study-data rule: a decision
/// logged for its key is its answer (the caller compares the two), upload or not.
///
/// # Errors
/// [`StoreError::StudyDataExists`] when study data is uploaded for the key, logged decision or
/// not (unless `decision` is a host decision and one is logged); the logged decision's own
/// conversion error when it cannot be read; and [`StoreError::Other`] when nothing stands on
/// the key, since only a concurrent reset can remove the row that blocked the insert.
pub fn refused_decision<L>(
    decision: &Decision,
    logged: Option<L>,
    uploaded: bool,
) -> Result<Recorded, StoreError>
where
    L: TryInto<Decision, Error = StoreError>,
{
    let host = matches!(decision.policy, Policy::Host { .. });
    match (logged, uploaded) {
        (Some(logged), true) if host => Ok(Recorded::Existing(logged.try_into()?)),
        (_, true) => Err(StoreError::StudyDataExists),
        (Some(logged), false) => Ok(Recorded::Existing(logged.try_into()?)),
        (None, false) => Err(StoreError::Other(
            format!(
                "the {} decision of {} at index {} was neither stored nor found",
                decision.decision_type,
                decision.user_id,
                decision.decision_idx.get()
            )
            .into(),
        )),
    }
}

/// The error [`Store::record_study_data`](crate::Store::record_study_data) answers when its
/// insert stored nothing, from what stands on the upload's key: `logged`, the draw of the
/// decision logged there (read only when no upload is), and whether study data is `uploaded`
/// for the key already.
///
/// A repeated upload is reported as such first, as [`refused_decision`] does, since the data
/// is stored either way. Otherwise a logged decision whose action differs from the upload's,
/// or whose probability does not [agree](crate::domain::Probability::agrees_with) with it,
/// refuses the upload as [`StoreError::UploadMismatch`], naming what was logged. The
/// logged draw's own conversion error is returned when it cannot be read, and
/// [`StoreError::Other`] when nothing on the key explains the refusal (only a concurrent reset
/// or restore changes logged decisions).
pub fn refused_upload<L>(record: &StudyRecord, logged: Option<L>, uploaded: bool) -> StoreError
where
    L: TryInto<ActionChoice, Error = StoreError>,
{
    if uploaded {
        return StoreError::StudyDataExists;
    }
    match logged.map(TryInto::try_into) {
        Some(Err(unreadable)) => unreadable,
        Some(Ok(draw)) if !agrees(draw, record) => StoreError::UploadMismatch {
            logged_action: draw.action,
            logged_prob: draw.action_prob,
        },
        Some(Ok(_)) | None => StoreError::Other(
            format!(
                "the upload of the {} decision of {} at index {} was neither stored nor refused \
                 by a logged decision",
                record.decision_type,
                record.user_id,
                record.decision_idx.get()
            )
            .into(),
        ),
    }
}

/// Whether an upload agrees with the draw logged for its key: the same action, and
/// probabilities that agree.
fn agrees(logged: ActionChoice, record: &StudyRecord) -> bool {
    logged.action == record.action && logged.action_prob.agrees_with(record.action_prob)
}

/// Whether a host decision may be stored on a key where study data was uploaded before any
/// decision: `Ok` when the upload's draw (`uploaded`) has the decision's action and a
/// probability that agrees with it (the upload then counts as logged), otherwise
/// [`StoreError::UploadMismatch`] naming the upload's action and probability.
///
/// # Errors
/// [`StoreError::UploadMismatch`] when they differ.
pub fn host_decision_against_upload(
    decision: &Decision,
    uploaded: ActionChoice,
) -> Result<(), StoreError> {
    if uploaded.action == decision.action && uploaded.action_prob.agrees_with(decision.action_prob)
    {
        Ok(())
    } else {
        Err(StoreError::UploadMismatch {
            logged_action: uploaded.action,
            logged_prob: uploaded.action_prob,
        })
    }
}

/// The refusal of a completed update whose next parameter version, `version`, was stored by
/// another writer while update `update` ran: storing the update's parameters on top of a
/// version it never read would silently drop that version's update.
pub fn superseded_update(version: i64, update: Uuid) -> StoreError {
    StoreError::Other(
        format!(
            "parameter version {version} was stored by another writer while update {update} ran"
        )
        .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::{decision, upload_for};
    use crate::domain::{Action, Probability};

    /// A stored row that reads as `decision`, or fails to read.
    struct Row(Result<Decision, &'static str>);

    impl TryFrom<Row> for Decision {
        type Error = StoreError;

        fn try_from(row: Row) -> Result<Self, StoreError> {
            row.0.map_err(|e| StoreError::Other(e.into()))
        }
    }

    /// A logged draw as a store reads it, or fails to read it.
    struct Draw(Result<ActionChoice, &'static str>);

    impl TryFrom<Draw> for ActionChoice {
        type Error = StoreError;

        fn try_from(draw: Draw) -> Result<Self, StoreError> {
            draw.0.map_err(|e| StoreError::Other(e.into()))
        }
    }

    fn logged(action: Action, action_prob: f64) -> Option<Draw> {
        Some(Draw(Ok(ActionChoice {
            action,
            action_prob: Probability::new(action_prob).unwrap(),
        })))
    }

    fn message(e: &StoreError) -> String {
        match e {
            StoreError::Other(source) => source.to_string(),
            other => panic!("expected an opaque error, got {other:?}"),
        }
    }

    #[test]
    fn a_repeated_decision_returns_the_logged_one() {
        let d = decision("alice", 3, 1);
        let stored = decision("alice", 3, 2);

        let answer = refused_decision(&d, Some(Row(Ok(stored.clone()))), false);

        assert_eq!(answer.unwrap(), Recorded::Existing(stored));
    }

    #[test]
    fn an_upload_on_the_key_refuses_a_decision_logged_or_not_without_reading_it() {
        let d = decision("alice", 3, 1);

        for logged in [None, Some(Row(Err("unreadable")))] {
            let answer = refused_decision(&d, logged, true);

            assert!(
                matches!(answer, Err(StoreError::StudyDataExists)),
                "{answer:?}"
            );
        }
    }

    #[test]
    fn a_host_decision_on_a_key_with_an_upload_gets_the_logged_decision() {
        let host = Decision {
            policy: Policy::Host {
                decided_by: "schedule".into(),
            },
            ..decision("alice", 3, 1)
        };
        let stored = decision("alice", 3, 2);

        let answer = refused_decision(&host, Some(Row(Ok(stored.clone()))), true);
        assert_eq!(answer.unwrap(), Recorded::Existing(stored));

        let without_decision = refused_decision(&host, None::<Row>, true);
        assert!(
            matches!(without_decision, Err(StoreError::StudyDataExists)),
            "{without_decision:?}"
        );
    }

    #[test]
    fn a_host_decision_must_agree_with_the_upload_before_it() {
        let host = decision("alice", 3, 1);
        let draw = |action, p| ActionChoice {
            action,
            action_prob: Probability::new(p).unwrap(),
        };

        assert!(host_decision_against_upload(&host, draw(Action::One, 0.75 + 1e-10)).is_ok());
        for (action, p) in [(Action::Zero, 0.75), (Action::One, 0.75 + 1e-6)] {
            let refused = host_decision_against_upload(&host, draw(action, p));
            let Err(StoreError::UploadMismatch {
                logged_action,
                logged_prob,
            }) = refused
            else {
                panic!("expected a mismatch, got {refused:?}");
            };
            assert_eq!((logged_action, logged_prob.get()), (action, p));
        }
    }

    #[test]
    fn an_unreadable_logged_decision_is_its_error() {
        let d = decision("alice", 3, 1);

        let answer = refused_decision(&d, Some(Row(Err("invalid row 7"))), false);

        assert_eq!(message(&answer.unwrap_err()), "invalid row 7");
    }

    #[test]
    fn a_decision_refused_with_nothing_on_its_key_is_an_error_naming_the_key() {
        let d = decision("alice", 3, 1);

        let answer = refused_decision(&d, None::<Row>, false);

        assert_eq!(
            message(&answer.unwrap_err()),
            "the default decision of alice at index 3 was neither stored nor found"
        );
    }

    #[test]
    fn a_repeated_upload_is_reported_before_any_difference() {
        let record = upload_for(&decision("alice", 3, 1));

        for logged in [
            None,
            logged(Action::Zero, 0.1),
            Some(Draw(Err("unreadable"))),
        ] {
            let answer = refused_upload(&record, logged, true);

            assert!(matches!(answer, StoreError::StudyDataExists), "{answer:?}");
        }
    }

    #[test]
    fn an_upload_differing_from_the_logged_draw_is_a_mismatch_naming_the_draw() {
        let record = upload_for(&decision("alice", 3, 1));
        assert_eq!(
            (record.action, record.action_prob.get()),
            (Action::One, 0.75)
        );

        for (action, prob) in [(Action::Zero, 0.75), (Action::One, 0.75 + 1e-8)] {
            let answer = refused_upload(&record, logged(action, prob), false);

            let StoreError::UploadMismatch {
                logged_action,
                logged_prob,
            } = answer
            else {
                panic!("expected a mismatch, got {answer:?}");
            };
            assert_eq!((logged_action, logged_prob.get()), (action, prob));
        }
    }

    #[test]
    fn an_upload_refused_without_a_differing_draw_is_an_error_naming_the_key() {
        let record = upload_for(&decision("alice", 3, 1));

        // A draw within the tolerance agrees, so it cannot be why the upload was refused.
        for logged in [None, logged(Action::One, 0.75 + 1e-10)] {
            let answer = refused_upload(&record, logged, false);

            assert_eq!(
                message(&answer),
                "the upload of the default decision of alice at index 3 was neither stored nor \
                 refused by a logged decision"
            );
        }
    }

    #[test]
    fn an_unreadable_logged_draw_is_its_error() {
        let record = upload_for(&decision("alice", 3, 1));

        let answer = refused_upload(&record, Some(Draw(Err("invalid row 7"))), false);

        assert_eq!(message(&answer), "invalid row 7");
    }

    #[test]
    fn a_superseded_update_names_the_version_and_the_update() {
        let update = Uuid::nil();

        let refusal = superseded_update(4, update);

        assert_eq!(
            message(&refusal),
            format!("parameter version 4 was stored by another writer while update {update} ran")
        );
    }
}
