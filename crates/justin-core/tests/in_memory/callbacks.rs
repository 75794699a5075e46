//! Callback delivery: retried with a backoff that doubles, recorded as delivered or failed,
//! left pending by a stopping service, and delivered by a later process once no delivery can
//! still be under way.

use std::time::Duration;

use chrono::{DateTime, Utc};
use justin_core::{
    CallbackDelivery, CallbackPayload, CallbackStatus, Clock, Provenance, Store, UpdateRequest,
};
use serde_json::json;

use crate::support::{callback_policy, settings, Study};

/// Runs one update to its end and returns it as stored afterwards, with when it finished.
fn run_update(study: &Study) -> (UpdateRequest, DateTime<Utc>) {
    let requested = study.request_update(1);
    let (finished, _) = study.service.run_next_update().unwrap().unwrap();
    let stored = study.store.update_request(requested.id).unwrap().unwrap();
    (stored, finished.finished_at.unwrap())
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn a_callback_is_retried_with_a_doubling_backoff_until_delivered() {
    let study = Study::new();
    study.notifier.fail_next(2);
    let (stored, finished_at) = run_update(&study);

    assert_eq!(study.clock.sleeps(), vec![ms(100), ms(200)]);
    let attempts = study.notifier.attempts();
    assert_eq!(
        attempts.iter().map(|a| a.delivered).collect::<Vec<_>>(),
        vec![false, false, true]
    );
    let expected = CallbackPayload::Completed {
        update_id: stored.id,
        timestamp: finished_at,
    };
    for a in &attempts {
        assert_eq!(a.url, "http://study.example/callback/1");
        assert_eq!(a.payload, expected, "every attempt sends the same payload");
    }
    assert_eq!(
        stored.callback,
        CallbackDelivery {
            status: CallbackStatus::Delivered,
            attempts: 3,
            last_error: None,
            finished_at: Some(finished_at + ms(300)),
        }
    );
}

#[test]
fn a_callback_that_fails_every_attempt_is_given_up_as_failed() {
    let study = Study::new();
    study.notifier.set_unreachable(true);
    let (stored, finished_at) = run_update(&study);

    let policy = callback_policy();
    assert_eq!(study.notifier.attempts().len(), policy.attempts as usize);
    assert_eq!(study.clock.sleeps(), vec![ms(100), ms(200), ms(400)]);
    assert_eq!(stored.callback.status, CallbackStatus::Failed);
    assert_eq!(stored.callback.attempts, policy.attempts);
    assert_eq!(
        stored.callback.last_error.as_deref(),
        Some("http://study.example/callback/1 cannot be reached")
    );
    assert_eq!(stored.callback.finished_at, Some(finished_at + ms(700)));
    // The update itself stands.
    assert_eq!(stored.parameter_version, Some(2));
}

/// Stores an update that finished at `finished_at` with its callback still pending, as a
/// process that stopped before delivering it leaves it.
fn left_pending(study: &Study, finished_at: DateTime<Utc>) -> UpdateRequest {
    let request = study.request_update(7);
    let job = study.store.claim_update(finished_at).unwrap().unwrap();
    let provenance = Provenance {
        service_version: "0.0.0-test".into(),
        algorithm: "coin".into(),
        config_hash: "c0ffee".into(),
        rows_read: 0,
        backup_file: None,
        included_policies: "algorithm,warmup".into(),
        imputed: None,
    };
    job.complete(
        "coin",
        &json!({ "p": 0.5, "n": 0 }),
        &provenance,
        finished_at,
    )
    .unwrap();
    assert_eq!(
        study.store.undelivered_callbacks().unwrap(),
        vec![study.store.update_request(request.id).unwrap().unwrap()]
    );
    request
}

#[test]
fn a_pending_callback_is_delivered_once_no_delivery_can_still_be_under_way() {
    let study = Study::new();
    let finished_at = study.clock.now();
    let request = left_pending(&study, finished_at);

    // Until the longest delivery and a margin have passed, the process that ran the update
    // may still be delivering it.
    let grace = callback_policy().longest_delivery() + Duration::from_secs(5);
    study.clock.advance(grace);
    assert_eq!(study.service.deliver_pending_callbacks().unwrap(), 0);
    assert!(study.notifier.attempts().is_empty());

    study.clock.advance(ms(1));
    assert_eq!(study.service.deliver_pending_callbacks().unwrap(), 1);
    assert_eq!(
        study.notifier.delivered(),
        vec![CallbackPayload::Completed {
            update_id: request.id,
            timestamp: finished_at,
        }]
    );
    let stored = study.store.update_request(request.id).unwrap().unwrap();
    assert_eq!(stored.callback.status, CallbackStatus::Delivered);
    assert!(study.store.undelivered_callbacks().unwrap().is_empty());
    assert_eq!(study.service.deliver_pending_callbacks().unwrap(), 0);
}

#[test]
fn a_stopping_service_leaves_a_failing_callback_pending_for_the_next_process() {
    let study = Study::new();
    let request = left_pending(&study, study.clock.now());
    study.clock.advance(Duration::from_secs(3600));
    study.notifier.set_unreachable(true);
    study.service.stop_updates();

    study.service.deliver_pending_callbacks().unwrap();
    assert_eq!(
        study.notifier.attempts().len(),
        1,
        "no retry while stopping"
    );
    assert!(study.clock.sleeps().is_empty(), "no backoff either");
    let stored = study.store.update_request(request.id).unwrap().unwrap();
    assert_eq!(stored.callback.status, CallbackStatus::Pending);
    assert_eq!(stored.callback.attempts, 1);
    assert_eq!(stored.callback.finished_at, None);

    // The next process delivers it, counting on from the first attempt.
    study.notifier.set_unreachable(false);
    let next = study.another_process(settings());
    assert_eq!(next.deliver_pending_callbacks().unwrap(), 1);
    let stored = study.store.update_request(request.id).unwrap().unwrap();
    assert_eq!(stored.callback.status, CallbackStatus::Delivered);
    assert_eq!(stored.callback.attempts, 2);
}
