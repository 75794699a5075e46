//! What the use-case tests share: a small algorithm whose update can be told to misbehave, and
//! a study wired over the in-memory ports.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use justin_core::testing::{ManualClock, MemoryStore, RecordingNotifier};
use justin_core::{
    Action, ActionChoice, ActionRequest, Algorithm, AlgorithmError, Availability, CallbackPolicy,
    Clock, Decision, DecisionIdx, DecisionRng, DecisionType, Enrollment, HostDecisionRequest,
    JsonObject, PreparedPolicy, Probability, SentTime, Service, ServiceSettings, State, Store,
    StudyRecord, TestingStore, TrialSettings, UploadRecorded, UploadRequest, UserId, Warmup,
};
use serde_json::json;

/// The study seed every test uses.
pub const SEED: u64 = 42;

/// What [`Coin::update`] does.
#[derive(Debug, Clone, Default)]
pub enum Update {
    /// The new probability is the mean reward of the records read (unchanged without any).
    #[default]
    MeanReward,
    /// Fails with `UpdateFailed`.
    Fail,
    /// Panics.
    Panic,
    /// Produces a probability that is not a number (a null once serialised).
    NotANumber,
    /// Produces a probability above 1, which `validate_parameters` refuses.
    OutOfRange,
    /// Tells the service to stop after the first record, then goes on as `MeanReward`.
    StopAfterFirstRecord(Weak<Service>),
}

/// How [`Coin::get_action`] fails, when told to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionFailure {
    /// Returns `InvalidParameters`.
    Error,
    /// Panics, with the state's value in the message.
    Panic,
}

/// A coin-flip algorithm: parameters `{"p": P(action = 1), "n": records read}`, the state is
/// the context's `x`, the reward the outcome's `r`. An `x` sent as `null` makes the decision
/// not available (`missing_context`); an absent one is refused. It prepares each version's
/// `p` once ([`PreparedCoin`]), unless told not to, and counts its preparations.
#[derive(Debug, Default)]
pub struct Coin {
    update: Mutex<Update>,
    infinite_rewards: Mutex<bool>,
    action_failure: Mutex<Option<ActionFailure>>,
    publish_on_draw: Mutex<Option<Arc<MemoryStore>>>,
    draws: Mutex<u32>,
    without_preparation: Mutex<bool>,
    preparations: Mutex<Vec<serde_json::Value>>,
}

/// What [`Coin`] prepares from a version: its probability, read once.
#[derive(Debug)]
pub struct PreparedCoin {
    /// The version's `p`.
    pub p: Probability,
}

impl Coin {
    /// From now on, the coin prepares nothing: every draw reads `p` from the JSON.
    pub fn prepare_nothing(&self) {
        *self.without_preparation.lock().unwrap() = true;
    }

    /// The values of every version prepared so far, in the order prepared.
    pub fn preparations(&self) -> Vec<serde_json::Value> {
        self.preparations.lock().unwrap().clone()
    }

    /// A draw with probability `p` (read from `parameters` when `None`), failing as told.
    fn draw(
        &self,
        state: &State,
        parameters: &serde_json::Value,
        p: Option<Probability>,
        rng: &mut DecisionRng,
    ) -> Result<ActionChoice, AlgorithmError> {
        if state.values().len() != 1 {
            return Err(AlgorithmError::InvalidInput(
                "the state must hold one number".into(),
            ));
        }
        let failure = *self.action_failure.lock().unwrap();
        match failure {
            Some(ActionFailure::Error) => {
                return Err(AlgorithmError::InvalidParameters(
                    "p is out of order".into(),
                ))
            }
            Some(ActionFailure::Panic) => panic!("the coin melted at x = {}", state.values()[0]),
            None => {}
        }
        *self.draws.lock().unwrap() += 1;
        if let Some(store) = self.publish_on_draw.lock().unwrap().as_ref() {
            store
                .publish_parameters("coin", parameters, DateTime::UNIX_EPOCH)
                .unwrap();
        }
        let p = match p {
            Some(p) => p,
            None => probability(parameters)?,
        };
        Ok(ActionChoice::draw(p, rng))
    }

    /// From now on, every draw publishes a new parameter version to `store` first, as another
    /// process running an update at that moment would.
    pub fn publish_on_every_draw(&self, store: Arc<MemoryStore>) {
        *self.publish_on_draw.lock().unwrap() = Some(store);
    }

    /// The draws so far.
    pub fn draws(&self) -> u32 {
        *self.draws.lock().unwrap()
    }

    /// From now on, `get_action` fails as `failure` says (or draws, for `None`).
    pub fn fail_actions(&self, failure: Option<ActionFailure>) {
        *self.action_failure.lock().unwrap() = failure;
    }

    /// From now on, updates do `update`.
    pub fn set_update(&self, update: Update) {
        *self.update.lock().unwrap() = update;
    }

    /// From now on, every reward is infinite.
    pub fn give_infinite_rewards(&self) {
        *self.infinite_rewards.lock().unwrap() = true;
    }
}

fn probability(values: &serde_json::Value) -> Result<Probability, AlgorithmError> {
    values
        .get("p")
        .and_then(serde_json::Value::as_f64)
        .and_then(|p| Probability::new(p).ok())
        .ok_or_else(|| AlgorithmError::InvalidParameters("p must be a probability".into()))
}

impl Algorithm for Coin {
    fn name(&self) -> &str {
        "coin"
    }

    fn initial_parameters(&self, priors: &JsonObject) -> Result<serde_json::Value, AlgorithmError> {
        let p = priors
            .get("p")
            .and_then(serde_json::Value::as_f64)
            .ok_or_else(|| AlgorithmError::InvalidPriors("p is required".into()))?;
        Ok(json!({ "p": p, "n": 0 }))
    }

    fn make_state(&self, context: &JsonObject) -> Result<State, AlgorithmError> {
        let x = context
            .get("x")
            .and_then(serde_json::Value::as_f64)
            .ok_or_else(|| AlgorithmError::InvalidInput("context.x must be a number.".into()))?;
        State::new(vec![x]).map_err(|e| AlgorithmError::InvalidInput(e.to_string()))
    }

    fn prepare_state(
        &self,
        context: &JsonObject,
        _parameters: &serde_json::Value,
    ) -> Result<justin_core::Prepared, AlgorithmError> {
        if context.get("x") == Some(&serde_json::Value::Null) {
            return Ok(justin_core::Prepared::NotAvailable(
                justin_core::MISSING_CONTEXT.into(),
            ));
        }
        self.make_state(context).map(justin_core::Prepared::State)
    }

    fn get_action(
        &self,
        _user: &UserId,
        state: &State,
        parameters: &serde_json::Value,
        _decision_idx: DecisionIdx,
        rng: &mut DecisionRng,
    ) -> Result<ActionChoice, AlgorithmError> {
        self.draw(state, parameters, None, rng)
    }

    fn prepare_policy(&self, parameters: &serde_json::Value) -> Option<PreparedPolicy> {
        if *self.without_preparation.lock().unwrap() {
            return None;
        }
        let p = probability(parameters).ok()?;
        self.preparations.lock().unwrap().push(parameters.clone());
        Some(Arc::new(PreparedCoin { p }))
    }

    fn get_action_prepared(
        &self,
        _user: &UserId,
        state: &State,
        policy: &(dyn std::any::Any + Send + Sync),
        parameters: &serde_json::Value,
        _decision_idx: DecisionIdx,
        rng: &mut DecisionRng,
    ) -> Result<ActionChoice, AlgorithmError> {
        let prepared = policy.downcast_ref::<PreparedCoin>().unwrap();
        self.draw(state, parameters, Some(prepared.p), rng)
    }

    fn make_reward(
        &self,
        _user: &UserId,
        _state: &State,
        _action: Action,
        outcome: &JsonObject,
    ) -> Result<f64, AlgorithmError> {
        let r = outcome
            .get("r")
            .and_then(serde_json::Value::as_f64)
            .ok_or_else(|| AlgorithmError::InvalidInput("outcome.r must be a number.".into()))?;
        if *self.infinite_rewards.lock().unwrap() {
            return Ok(f64::INFINITY);
        }
        Ok(r)
    }

    fn update(
        &self,
        current: &serde_json::Value,
        data: &mut dyn Iterator<Item = StudyRecord>,
    ) -> Result<serde_json::Value, AlgorithmError> {
        let update = self.update.lock().unwrap().clone();
        match update {
            Update::Fail => return Err(AlgorithmError::UpdateFailed("not enough data".into())),
            Update::Panic => panic!("the coin fell off the table"),
            Update::NotANumber => return Ok(json!({ "p": f64::NAN, "n": 0 })),
            Update::OutOfRange => return Ok(json!({ "p": 1.5, "n": 0 })),
            Update::MeanReward | Update::StopAfterFirstRecord(_) => {}
        }
        let (mut sum, mut n) = (0.0, 0_u32);
        for record in data {
            sum += record.reward;
            n += 1;
            if let (1, Update::StopAfterFirstRecord(service)) = (n, &update) {
                service.upgrade().unwrap().stop_updates();
            }
        }
        let p = if n == 0 {
            probability(current)?.get()
        } else {
            (sum / f64::from(n)).clamp(0.0, 1.0)
        };
        Ok(json!({ "p": p, "n": n }))
    }

    fn describe_change(&self, current: &serde_json::Value, next: &serde_json::Value) -> String {
        format!("p {} -> {}", current["p"], next["p"])
    }

    fn validate_parameters(&self, values: &serde_json::Value) -> Result<(), AlgorithmError> {
        probability(values).map(drop)
    }
}

/// Callbacks: four attempts, 100 ms before the second, doubling.
pub fn callback_policy() -> CallbackPolicy {
    CallbackPolicy {
        attempts: 4,
        first_backoff: Duration::from_millis(100),
        attempt_timeout: Duration::from_secs(1),
    }
}

/// Settings with no backups and three attempts per update.
pub fn settings() -> ServiceSettings {
    ServiceSettings {
        seed: SEED,
        backup_dir: None,
        update_attempts: 3,
        callbacks: callback_policy(),
        service_version: "0.0.0-test".into(),
        config_hash: "c0ffee".into(),
        trial: TrialSettings::default(),
        erasure_backup_dir: "/backups/erasures".into(),
    }
}

pub fn object(value: serde_json::Value) -> JsonObject {
    match value {
        serde_json::Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

pub fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

pub fn idx(i: i64) -> DecisionIdx {
    DecisionIdx::new(i).unwrap()
}

/// An available decision of the default type for `user` at `i`, with context `x = i`.
pub fn action_request(user_id: &UserId, i: i64, requested_at: DateTime<Utc>) -> ActionRequest {
    ActionRequest {
        user_id: user_id.clone(),
        decision_type: DecisionType::default(),
        decision_idx: idx(i),
        requested_at,
        sent_timestamp: requested_at.to_rfc3339(),
        availability: Availability::Available,
        context: object(json!({ "x": i })),
    }
}

/// A host decision of `user_id` at index `i` (context `{"x": i}`), sent now, as `action`
/// with probability `p`.
pub fn host_request(
    study: &Study,
    user_id: &UserId,
    i: i64,
    action: Action,
    p: f64,
) -> HostDecisionRequest {
    let now = study.clock.now();
    HostDecisionRequest {
        user_id: user_id.clone(),
        decision_type: DecisionType::default(),
        decision_idx: idx(i),
        requested_at: now,
        sent_timestamp: now.to_rfc3339(),
        availability: Availability::Available,
        context: object(json!({ "x": i })),
        action,
        action_prob: Probability::new(p).unwrap(),
        decided_by: "fixed schedule".into(),
    }
}

/// The upload of what followed `d`, agreeing with it, with reward `r`.
pub fn upload_request(d: &Decision, r: f64) -> UploadRequest {
    UploadRequest {
        user_id: d.user_id.clone(),
        decision_type: d.decision_type.clone(),
        decision_idx: d.decision_idx,
        requested_at: d.requested_at,
        sent_timestamp: d.sent_timestamp.clone(),
        context: d.context.clone(),
        action: d.action,
        action_prob: d.action_prob,
        state: d.state.clone(),
        outcome: object(json!({ "r": r })),
    }
}

/// [`settings`] with `trial`.
pub fn settings_with(trial: TrialSettings) -> ServiceSettings {
    ServiceSettings {
        trial,
        ..settings()
    }
}

/// A warm-up with probability `p` and no condition (each test sets its own).
pub fn warmup(p: f64) -> Warmup {
    Warmup {
        probability: Probability::new(p).unwrap(),
        until: None,
        first_decisions: None,
        until_participants: None,
        until_first_update: false,
    }
}

/// The time in the study from `start` (inclusive) to `end` (exclusive), sent as RFC 3339.
pub fn window(start: Option<DateTime<Utc>>, end: Option<DateTime<Utc>>) -> Enrollment {
    let sent = |at: DateTime<Utc>| SentTime {
        at,
        sent: at.to_rfc3339(),
    };
    Enrollment::new(start.map(sent), end.map(sent)).unwrap()
}

/// What the decision with seed `seed` draws with probability `p`: the warm-up's and the
/// fallback's draw.
pub fn fixed_draw(seed: u64, p: f64) -> ActionChoice {
    ActionChoice::draw(
        Probability::new(p).unwrap(),
        &mut DecisionRng::from_seed(seed),
    )
}

/// A study over the in-memory ports: the service and the fakes it is wired to, for tests to
/// drive and inspect.
pub struct Study {
    pub store: Arc<MemoryStore>,
    pub clock: Arc<ManualClock>,
    pub notifier: Arc<RecordingNotifier>,
    pub algorithm: Arc<Coin>,
    pub service: Arc<Service>,
}

impl Study {
    /// A study with [`settings`] whose priors (p = 0.5) are installed as version 1.
    pub fn new() -> Self {
        Self::with_settings(settings())
    }

    /// A study with `settings` whose priors (p = 0.5) are installed as version 1.
    pub fn with_settings(settings: ServiceSettings) -> Self {
        let store = Arc::new(MemoryStore::new());
        let clock = Arc::new(ManualClock::default());
        let notifier = Arc::new(RecordingNotifier::new());
        let algorithm = Arc::new(Coin::default());
        let service = Arc::new(Service::new(
            store.clone(),
            algorithm.clone(),
            clock.clone(),
            notifier.clone(),
            settings,
        ));
        service.initialise(&object(json!({ "p": 0.5 }))).unwrap();
        Self {
            store,
            clock,
            notifier,
            algorithm,
            service,
        }
    }

    /// Another process of the same study: its own service, with its own parameter cache and
    /// `settings`, over the same store, clock, notifier and algorithm.
    pub fn another_process(&self, settings: ServiceSettings) -> Service {
        Service::new(
            self.store.clone(),
            self.algorithm.clone(),
            self.clock.clone(),
            self.notifier.clone(),
            settings,
        )
    }

    /// Registers `name` with `enrollment`.
    pub fn enroll(&self, name: &str, enrollment: &Enrollment) -> UserId {
        let id = user(name);
        self.service.add_user(&id, enrollment).unwrap();
        id
    }

    /// Runs the next update, which must complete, and returns its request.
    pub fn run_update(&self, n: u32) -> justin_core::UpdateRequest {
        let request = self.request_update(n);
        let (finished, outcome) = self.service.run_next_update().unwrap().unwrap();
        assert!(
            matches!(outcome, justin_core::UpdateOutcome::Completed { .. }),
            "{outcome:?}"
        );
        assert_eq!(finished.id, request.id);
        finished
    }

    /// Registers `name`.
    pub fn add_user(&self, name: &str) -> UserId {
        let id = user(name);
        self.service.add_user(&id, &Enrollment::default()).unwrap();
        id
    }

    /// The decision for `user` at `i`, requested now.
    pub fn decide(&self, user_id: &UserId, i: i64) -> Decision {
        let request = action_request(user_id, i, self.clock.now());
        self.service.request_action(request).unwrap().decision
    }

    /// Uploads what followed `d` with reward `r`.
    pub fn upload(&self, d: &Decision, r: f64) -> UploadRecorded {
        self.service.upload_data(upload_request(d, r)).unwrap()
    }

    /// Records an update request now, with a callback URL naming `n`.
    pub fn request_update(&self, n: u32) -> justin_core::UpdateRequest {
        self.service
            .request_update(
                self.clock.now(),
                self.clock.now().to_rfc3339(),
                format!("http://study.example/callback/{n}"),
            )
            .unwrap()
    }

    /// Rows per table.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.store.row_counts().unwrap().into_iter().collect()
    }

    /// The newest parameter version in the store.
    pub fn stored_version(&self) -> i64 {
        self.store.current_parameters().unwrap().unwrap().version
    }
}
