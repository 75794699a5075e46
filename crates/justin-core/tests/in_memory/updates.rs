//! Running updates: the oldest request is claimed and run to its end; a lost connection is
//! retried while `update.max_attempts` allows and abandoned after; a failure of the algorithm ends
//! the update as failed at once; a stopping service puts it back.

use justin_core::{
    CallbackPayload, CallbackStatus, Clock, DomainError, Provenance, ServiceSettings, Store,
    UpdateOutcome, UpdateStatus,
};
use serde_json::json;

use crate::support::{settings, Study, Update};

/// A study with alice's decisions 0..3 uploaded with rewards 1, 0, 1; decision 1 unavailable.
fn study_with_data(settings: ServiceSettings) -> Study {
    let study = Study::with_settings(settings);
    let alice = study.add_user("alice");
    for (i, r) in [(0, 1.0), (2, 1.0)] {
        let d = study.decide(&alice, i);
        study.upload(&d, r);
    }
    let off = justin_core::ActionRequest {
        availability: justin_core::Availability::unavailable(None).unwrap(),
        ..crate::support::action_request(&alice, 1, study.clock.now())
    };
    let off = study.service.request_action(off).unwrap().decision;
    study.upload(&off, 0.0);
    study
}

fn attempts(settings: u32) -> ServiceSettings {
    ServiceSettings {
        update_attempts: settings,
        ..crate::support::settings()
    }
}

#[test]
fn an_update_reads_the_available_data_and_publishes_the_next_version() {
    let study = study_with_data(settings());
    let requested = study.request_update(1);
    let (finished, outcome) = study.service.run_next_update().unwrap().unwrap();

    assert_eq!(
        outcome,
        UpdateOutcome::Completed {
            parameter_version: 2
        }
    );
    assert_eq!(finished.id, requested.id);
    assert_eq!(finished.status, UpdateStatus::Completed);
    assert_eq!(finished.attempts, 1);
    assert_eq!(finished.parameter_version, Some(2));
    assert_eq!(
        finished.provenance,
        Some(Provenance {
            service_version: "0.0.0-test".into(),
            algorithm: "coin".into(),
            config_hash: "c0ffee".into(),
            rows_read: 2,
            backup_file: None,
            included_policies: "algorithm,warmup".into(),
            imputed: None,
        }),
        "the unavailable decision's record is not read"
    );
    let current = study.store.current_parameters().unwrap().unwrap();
    assert_eq!(current.values, json!({ "p": 1.0, "n": 2 }));
    assert_eq!(
        study.notifier.delivered(),
        vec![CallbackPayload::Completed {
            update_id: requested.id,
            timestamp: finished.finished_at.unwrap(),
        }]
    );
    assert!(
        study.service.run_next_update().unwrap().is_none(),
        "nothing left to run"
    );
}

#[test]
fn a_lost_connection_is_retried_while_attempts_allow() {
    let study = study_with_data(attempts(3));
    let requested = study.request_update(1);
    study.store.lose_connection_in_job_reads(2);

    for attempt in 1..=2 {
        let interrupted = study.service.run_next_update();
        assert!(
            matches!(interrupted, Err(DomainError::Unavailable(_))),
            "attempt {attempt}: {interrupted:?}"
        );
        let stored = study.store.update_request(requested.id).unwrap().unwrap();
        assert_eq!(stored.status, UpdateStatus::Processing, "attempt {attempt}");
        assert_eq!(stored.attempts, attempt, "the attempt is counted");
        assert_eq!(study.stored_version(), 1, "nothing is published");
        assert!(study.notifier.attempts().is_empty(), "no callback yet");
    }

    let (finished, outcome) = study.service.run_next_update().unwrap().unwrap();
    assert_eq!(
        outcome,
        UpdateOutcome::Completed {
            parameter_version: 2
        }
    );
    assert_eq!(finished.attempts, 3);
    assert_eq!(finished.provenance.unwrap().rows_read, 2);
    assert_eq!(
        study.notifier.attempts().len(),
        1,
        "one callback, at the end"
    );
}

#[test]
fn an_update_interrupted_as_often_as_attempts_allow_is_abandoned_as_failed() {
    let study = study_with_data(attempts(2));
    let requested = study.request_update(1);
    study.store.lose_connection_in_job_reads(5);
    for _ in 0..2 {
        assert!(study.service.run_next_update().is_err());
    }

    let (finished, outcome) = study.service.run_next_update().unwrap().unwrap();
    let error = "abandoned after 2 interrupted attempts".to_owned();
    assert_eq!(
        outcome,
        UpdateOutcome::Failed {
            error: error.clone()
        }
    );
    assert_eq!(finished.status, UpdateStatus::Failed);
    assert_eq!(finished.error, Some(error));
    assert_eq!(finished.attempts, 3);
    assert_eq!(study.stored_version(), 1);
    assert_eq!(
        study.notifier.delivered(),
        vec![CallbackPayload::Failed {
            update_id: requested.id,
            message: "Model update failed.".into(),
        }]
    );
}

#[test]
fn a_failing_algorithm_fails_the_update_at_once() {
    let study = study_with_data(attempts(3));
    let requested = study.request_update(1);
    study.algorithm.set_update(Update::Fail);

    let (finished, outcome) = study.service.run_next_update().unwrap().unwrap();
    let UpdateOutcome::Failed { error } = outcome else {
        panic!("expected a failed update, got {outcome:?}");
    };
    assert!(error.contains("not enough data"), "{error}");
    assert_eq!(finished.status, UpdateStatus::Failed);
    assert_eq!(finished.error.as_deref(), Some(error.as_str()));
    assert_eq!(finished.attempts, 1, "a failure is not retried");
    assert!(study.service.run_next_update().unwrap().is_none());
    assert_eq!(study.stored_version(), 1);
    assert_eq!(
        study.notifier.delivered(),
        vec![CallbackPayload::Failed {
            update_id: requested.id,
            message: "Model update failed.".into(),
        }],
        "the reason is stored, not sent"
    );
}

#[test]
fn a_panicking_algorithm_fails_its_update_and_the_next_one_runs() {
    let study = study_with_data(settings());
    study.request_update(1);
    study.algorithm.set_update(Update::Panic);
    let (_, outcome) = study.service.run_next_update().unwrap().unwrap();
    assert!(
        matches!(&outcome, UpdateOutcome::Failed { error } if error.contains("the algorithm panicked: the coin fell off the table")),
        "{outcome:?}"
    );

    study.algorithm.set_update(Update::MeanReward);
    study.request_update(2);
    let (_, outcome) = study.service.run_next_update().unwrap().unwrap();
    assert_eq!(
        outcome,
        UpdateOutcome::Completed {
            parameter_version: 2
        }
    );
}

#[test]
fn parameters_that_are_not_finite_or_break_the_algorithms_rules_are_not_published() {
    let study = study_with_data(settings());
    for (n, update, reason) in [
        (1, Update::NotANumber, "null or non-finite"),
        (2, Update::OutOfRange, "p must be a probability"),
    ] {
        study.algorithm.set_update(update);
        study.request_update(n);
        let (finished, outcome) = study.service.run_next_update().unwrap().unwrap();
        assert!(
            matches!(&outcome, UpdateOutcome::Failed { error } if error.contains(reason)),
            "{outcome:?}"
        );
        assert_eq!(finished.status, UpdateStatus::Failed);
    }
    assert_eq!(study.stored_version(), 1);
    assert_eq!(study.service.current_parameters().unwrap().version, 1);
}

#[test]
fn an_update_under_way_when_the_service_stops_is_put_back_uncounted() {
    let study = study_with_data(settings());
    let requested = study.request_update(1);
    study
        .algorithm
        .set_update(Update::StopAfterFirstRecord(std::sync::Arc::downgrade(
            &study.service,
        )));

    let (request, outcome) = study.service.run_next_update().unwrap().unwrap();
    assert_eq!(outcome, UpdateOutcome::Requeued);
    assert_eq!(request.id, requested.id);
    assert_eq!(request.status, UpdateStatus::Processing);
    assert_eq!(request.attempts, 0, "the attempt is not counted");
    assert_eq!(request.started_at, None);
    assert_eq!(study.stored_version(), 1, "nothing it computed is stored");
    assert!(study.notifier.attempts().is_empty());
    assert!(
        study.service.run_next_update().unwrap().is_none(),
        "a stopped service starts nothing"
    );

    // The next process runs it.
    let next = study.another_process(settings());
    study.algorithm.set_update(Update::MeanReward);
    let (finished, outcome) = next.run_next_update().unwrap().unwrap();
    assert_eq!(
        outcome,
        UpdateOutcome::Completed {
            parameter_version: 2
        }
    );
    assert_eq!(finished.attempts, 1);
    let stored = study.store.update_request(requested.id).unwrap().unwrap();
    assert_eq!(stored.callback.status, CallbackStatus::Delivered);
}
