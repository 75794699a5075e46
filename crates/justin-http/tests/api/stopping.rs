//! A service that is stopping leaves the update under way finished or cleanly put back: when
//! the stop comes while the update still reads study data, nothing is published, no callback
//! is sent, the attempt is not counted, and the next start runs the update afresh.

use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use chrono::Utc;
use justin_core::{
    Action, ActionChoice, ActionRequest, Algorithm, AlgorithmError, Availability, BoxError,
    CallbackNotifier, CallbackPayload, CallbackPolicy, DecisionIdx, DecisionRng, DecisionType,
    JsonObject, Probability, Service, ServiceSettings, State, StudyRecord, UpdateOutcome,
    UpdateStatus, UploadRequest, UserId,
};
use justin_http::startup::SystemClock;
use serde_json::{json, Value};

use crate::helpers::TestDatabase;

/// An algorithm whose update asks its own service to stop after the first study record, as
/// SIGTERM arriving in the middle of an update would.
#[derive(Default)]
struct StopsMidway {
    service: OnceLock<Weak<Service>>,
    records_seen: Mutex<usize>,
}

impl std::fmt::Debug for StopsMidway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StopsMidway")
    }
}

impl Algorithm for StopsMidway {
    fn name(&self) -> &str {
        "stops_midway"
    }

    fn initial_parameters(&self, _priors: &JsonObject) -> Result<Value, AlgorithmError> {
        Ok(json!({ "p": 0.5 }))
    }

    fn make_state(&self, _context: &JsonObject) -> Result<State, AlgorithmError> {
        State::new(vec![0.0]).map_err(|e| AlgorithmError::InvalidInput(e.to_string()))
    }

    fn get_action(
        &self,
        _user: &UserId,
        _state: &State,
        _parameters: &Value,
        _decision_idx: DecisionIdx,
        _rng: &mut DecisionRng,
    ) -> Result<ActionChoice, AlgorithmError> {
        Ok(ActionChoice {
            action: Action::One,
            action_prob: Probability::new(0.5).unwrap(),
        })
    }

    fn make_reward(
        &self,
        _user: &UserId,
        _state: &State,
        _action: Action,
        _outcome: &JsonObject,
    ) -> Result<f64, AlgorithmError> {
        Ok(1.0)
    }

    fn update(
        &self,
        _current: &Value,
        data: &mut dyn Iterator<Item = StudyRecord>,
    ) -> Result<Value, AlgorithmError> {
        let mut seen = 0;
        for _ in data {
            seen += 1;
            if seen == 1 {
                if let Some(service) = self.service.get().and_then(Weak::upgrade) {
                    service.stop_updates();
                }
            }
        }
        *self.records_seen.lock().unwrap() += seen;
        Ok(json!({ "p": 0.7 }))
    }
}

/// Counts the callbacks it was asked to send.
#[derive(Default)]
struct CountingNotifier(Mutex<usize>);

impl CallbackNotifier for CountingNotifier {
    fn notify(&self, _url: &str, _payload: &CallbackPayload) -> Result<(), BoxError> {
        *self.0.lock().unwrap() += 1;
        Ok(())
    }
}

fn service_on(
    db: &TestDatabase,
    algorithm: Arc<dyn Algorithm>,
    notifier: Arc<CountingNotifier>,
) -> Arc<Service> {
    Arc::new(Service::new(
        db.store(),
        algorithm,
        Arc::new(SystemClock),
        notifier,
        ServiceSettings {
            seed: 42,
            backup_dir: None,
            update_attempts: 3,
            callbacks: CallbackPolicy {
                attempts: 1,
                first_backoff: Duration::from_millis(10),
                attempt_timeout: Duration::from_secs(1),
            },
            service_version: env!("CARGO_PKG_VERSION").into(),
            config_hash: "0".repeat(64),
            trial: justin_core::TrialSettings::default(),
            erasure_backup_dir: std::env::temp_dir(),
        },
    ))
}

#[test]
fn an_update_stopped_while_reading_is_put_back_and_runs_at_the_next_start() {
    let db = TestDatabase::create();
    let notifier = Arc::new(CountingNotifier::default());
    let algorithm = Arc::new(StopsMidway::default());
    let service = service_on(&db, algorithm.clone(), notifier.clone());
    algorithm.service.set(Arc::downgrade(&service)).unwrap();
    service.initialise(&JsonObject::new()).unwrap();
    let user = UserId::parse("p1").unwrap();
    service
        .add_user(&user, &justin_core::Enrollment::default())
        .unwrap();
    for idx in 0..3 {
        let decision_idx = DecisionIdx::new(idx).unwrap();
        let context = JsonObject::new();
        let answer = service
            .request_action(ActionRequest {
                user_id: user.clone(),
                decision_type: DecisionType::default(),
                decision_idx,
                requested_at: Utc::now(),
                sent_timestamp: "2025-01-01T12:00:00Z".into(),
                availability: Availability::Available,
                context: context.clone(),
            })
            .unwrap();
        let mut outcome = JsonObject::new();
        outcome.insert("clicks".into(), json!(idx));
        service
            .upload_data(UploadRequest {
                user_id: user.clone(),
                decision_type: DecisionType::default(),
                decision_idx,
                requested_at: Utc::now(),
                sent_timestamp: "2025-01-01T12:00:00Z".into(),
                context,
                action: answer.decision.action,
                action_prob: answer.decision.action_prob,
                state: answer.decision.state.clone(),
                outcome,
            })
            .unwrap();
    }
    let request = service
        .request_update(
            Utc::now(),
            "2025-01-01T12:00:00".into(),
            "http://127.0.0.1:9/callback".into(),
        )
        .unwrap();

    let (stopped, outcome) = service.run_next_update().unwrap().expect("the update ran");
    assert_eq!(outcome, UpdateOutcome::Requeued);
    assert_eq!(stopped.id, request.id);
    assert_eq!(stopped.status, UpdateStatus::Processing);
    assert_eq!(
        stopped.attempts, 0,
        "the interrupted attempt is not counted"
    );
    assert_eq!(stopped.started_at, None);
    assert_eq!(
        service.current_parameters().unwrap().version,
        1,
        "nothing was published"
    );
    assert_eq!(
        *notifier.0.lock().unwrap(),
        0,
        "no callback for an update put back"
    );
    assert!(
        service.run_next_update().unwrap().is_none(),
        "a stopping service starts no update"
    );

    // The next start: a new process on the same database runs the update to its end.
    let restarted = service_on(&db, Arc::new(StopsMidway::default()), notifier.clone());
    restarted.initialise(&JsonObject::new()).unwrap();
    let (finished, outcome) = restarted
        .run_next_update()
        .unwrap()
        .expect("the update ran");
    assert_eq!(
        outcome,
        UpdateOutcome::Completed {
            parameter_version: 2
        }
    );
    assert_eq!(finished.id, request.id);
    assert_eq!(finished.attempts, 1);
    assert_eq!(
        finished.provenance.map(|p| p.rows_read),
        Some(3),
        "it read every record afresh"
    );
    assert_eq!(*notifier.0.lock().unwrap(), 1);
}
