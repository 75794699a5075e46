//! Test data for the storage adapters' own tests (feature `conformance`, and the core's unit
//! tests): a participant, a decision, its upload, an update request and its provenance, each
//! with fixed values, so that a test states only what it changes and an assertion on a stored
//! value knows what was written.
//!
//! The conformance suite keeps test data of its own, in which every field varies with the call
//! (see [`crate::conformance`]); these builders are for tests that check one adapter's files,
//! migrations, locks and formats, where fixed values are what the assertions spell out.

// Test code compiled into the library so other crates' tests can use it; a value a builder
// cannot make is a broken test, reported by the panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

use chrono::{DateTime, Utc};

use crate::domain::{
    Action, Availability, Decision, DecisionIdx, DecisionType, Enrollment, JsonObject, OutOfStudy,
    Policy, Probability, Provenance, SentTime, State, StudyRecord, UpdateRequest, UserId,
};

/// `seconds` after a fixed moment in June 2025, in whole seconds.
pub fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_750_000_000 + seconds, 0).unwrap()
}

/// The participant `name`.
pub fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

/// The context (and outcome) every built decision and upload holds: `{"steps": 10}`.
pub fn context() -> JsonObject {
    let serde_json::Value::Object(map) = serde_json::json!({"steps": 10}) else {
        unreachable!("a JSON object literal is an object")
    };
    map
}

/// The available decision of the default type at index `idx` for `user_id`, drawn under
/// `parameter_version`: action 1 with probability 0.75, requested at `at(idx)` and decided a
/// second later.
pub fn decision(user_id: &str, idx: i64, parameter_version: i64) -> Decision {
    Decision {
        user_id: user(user_id),
        decision_type: DecisionType::default(),
        decision_idx: DecisionIdx::new(idx).unwrap(),
        requested_at: at(idx),
        sent_timestamp: "2025-01-01T12:00:00Z".into(),
        decided_at: at(idx + 1),
        availability: Availability::Available,
        context: context(),
        state: State::new(vec![1.0, 2.5]).unwrap(),
        action: Action::One,
        action_prob: Probability::new(0.75).unwrap(),
        parameter_version,
        rng_seed: 42,
        policy: Policy::Algorithm,
    }
}

/// `d` without a draw because the participant was not in the study: action 0, probability 0,
/// for the reason `why`.
pub fn out_of_study(d: Decision, why: OutOfStudy) -> Decision {
    Decision {
        availability: Availability::OutOfStudy(why),
        action: Action::Zero,
        action_prob: Probability::ZERO,
        ..d
    }
}

/// The time in the study from `at(start)` (inclusive) to `at(end)` (exclusive), each sent as
/// RFC 3339 text with a +02:00 offset.
pub fn window(start: i64, end: i64) -> Enrollment {
    let sent = |t: DateTime<Utc>| SentTime {
        at: t,
        sent: t
            .with_timezone(&chrono::FixedOffset::east_opt(7200).unwrap())
            .to_rfc3339(),
    };
    Enrollment::new(Some(sent(at(start))), Some(sent(at(end)))).unwrap()
}

/// `d` as an unavailable decision of type `kind`: no draw, with `reason`.
pub fn unavailable(d: Decision, kind: &str, reason: Option<&str>) -> Decision {
    Decision {
        decision_type: DecisionType::parse(kind).unwrap(),
        availability: Availability::unavailable(reason.map(str::to_owned)).unwrap(),
        action: Action::Zero,
        action_prob: Probability::ZERO,
        ..d
    }
}

/// An upload for the default type at index `idx` of `user_id`: action 0 with probability
/// 0.25, reward 1.5, requested at `at(idx)` and received a second later.
pub fn record(user_id: &str, idx: i64) -> StudyRecord {
    StudyRecord {
        user_id: user(user_id),
        decision_type: DecisionType::default(),
        decision_idx: DecisionIdx::new(idx).unwrap(),
        requested_at: at(idx),
        sent_timestamp: "2025-01-01T12:00:00Z".into(),
        received_at: at(idx + 1),
        context: context(),
        action: Action::Zero,
        action_prob: Probability::new(0.25).unwrap(),
        state: State::new(vec![3.0]).unwrap(),
        outcome: context(),
        reward: 1.5,
        available: true,
    }
}

/// The upload agreeing with decision `d`: its key, times, action, probability and
/// availability, with [`record`]'s state, outcome and reward.
pub fn upload_for(d: &Decision) -> StudyRecord {
    StudyRecord {
        decision_type: d.decision_type.clone(),
        requested_at: d.requested_at,
        sent_timestamp: d.sent_timestamp.clone(),
        received_at: d.decided_at,
        action: d.action,
        action_prob: d.action_prob,
        available: d.availability.is_available(),
        ..record(d.user_id.as_str(), d.decision_idx.get())
    }
}

/// A new update request received at `at(n)`, calling back to a URL ending in `n`.
pub fn update_request(n: i64) -> UpdateRequest {
    UpdateRequest::new(
        uuid::Uuid::new_v4(),
        at(n),
        "2025-01-01T12:00:00+02:00".into(),
        at(n),
        format!("http://study.example/cb/{n}"),
    )
}

/// The provenance an update stores: version 1.2.3 of the service, algorithm `algo`, config
/// hash `abc`, 2 rows read, no backup file, learning from the algorithm's and warm-up decisions.
pub fn provenance() -> Provenance {
    Provenance {
        service_version: "1.2.3".into(),
        algorithm: "algo".into(),
        config_hash: "abc".into(),
        rows_read: 2,
        backup_file: None,
        included_policies: "algorithm,warmup".into(),
        imputed: None,
    }
}
