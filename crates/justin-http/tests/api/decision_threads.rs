//! `/action` decides on threads of its own: decisions in progress take neither the blocking
//! threads nor the database connections the other routes need, so more decisions can be in
//! progress at once than the pool has connections, and a read is answered meanwhile.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use serde_json::Value;

use crate::helpers::{action_body, spawn_app_with_algorithms, WAIT};
use crate::metrics::scrape;

/// Decisions held at once: more than the pool's connections and the blocking threads.
const HELD: usize = 6;
const POOL_SIZE: u32 = 2;

/// How many decisions are inside the algorithm, and whether they may leave.
struct Gate {
    state: Mutex<(usize, bool)>,
    changed: Condvar,
}

static GATE: Gate = Gate {
    state: Mutex::new((0, false)),
    changed: Condvar::new(),
};

impl Gate {
    fn enter_and_wait(&self) {
        let mut state = self.state.lock().unwrap();
        state.0 += 1;
        self.changed.notify_all();
        while !state.1 {
            state = self.changed.wait(state).unwrap();
        }
    }

    /// Waits until `n` decisions are inside, for at most [`WAIT`]; how many are.
    fn wait_for(&self, n: usize) -> usize {
        let deadline = Instant::now() + WAIT;
        let mut state = self.state.lock().unwrap();
        while state.0 < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = self.changed.wait_timeout(state, left).unwrap().0;
        }
        state.0
    }

    fn open(&self) {
        self.state.lock().unwrap().1 = true;
        self.changed.notify_all();
    }
}

/// `flat_prob`, whose draw waits at [`GATE`] until the test opens it.
#[derive(Debug)]
struct Gated(justin_algos::FlatProb);

impl justin_core::Algorithm for Gated {
    fn name(&self) -> &str {
        "gated"
    }
    fn initial_parameters(
        &self,
        priors: &justin_core::JsonObject,
    ) -> Result<Value, justin_core::AlgorithmError> {
        self.0.initial_parameters(priors)
    }
    fn make_state(
        &self,
        context: &justin_core::JsonObject,
    ) -> Result<justin_core::State, justin_core::AlgorithmError> {
        self.0.make_state(context)
    }
    fn get_action(
        &self,
        user: &justin_core::UserId,
        state: &justin_core::State,
        parameters: &Value,
        decision_idx: justin_core::DecisionIdx,
        rng: &mut justin_core::DecisionRng,
    ) -> Result<justin_core::ActionChoice, justin_core::AlgorithmError> {
        GATE.enter_and_wait();
        self.0
            .get_action(user, state, parameters, decision_idx, rng)
    }
    fn make_reward(
        &self,
        user: &justin_core::UserId,
        state: &justin_core::State,
        action: justin_core::Action,
        outcome: &justin_core::JsonObject,
    ) -> Result<f64, justin_core::AlgorithmError> {
        self.0.make_reward(user, state, action, outcome)
    }
    fn update(
        &self,
        current: &Value,
        data: &mut dyn Iterator<Item = justin_core::StudyRecord>,
    ) -> Result<Value, justin_core::AlgorithmError> {
        self.0.update(current, data)
    }
}

#[test]
fn decisions_in_progress_leave_the_pool_to_the_other_routes() {
    let mut algorithms = justin_algos::builtin();
    algorithms
        .register(justin_core::Registration::new(
            "gated",
            "tests",
            |options| {
                Ok(Arc::new(Gated(justin_algos::FlatProb::from_options(
                    options,
                )?)))
            },
        ))
        .unwrap();
    let app = spawn_app_with_algorithms(
        |config| {
            config.algorithm.name = "gated".into();
            config.database.pool_size = POOL_SIZE;
            // One worker: its blocking threads are the pool's connections, two.
            config.server.workers = 1;
        },
        &algorithms,
    );
    let users: Vec<String> = (0..HELD).map(|i| format!("p{i}")).collect();
    for user in &users {
        app.add_user(user);
    }
    let requests: Vec<_> = users
        .iter()
        .map(|user| {
            let client = app.client();
            let body = action_body(user, 1, 20.0);
            std::thread::spawn(move || client.post_json("/api/v1/action", &body))
        })
        .collect();

    let inside = GATE.wait_for(HELD);
    if inside < HELD {
        GATE.open();
    }
    assert_eq!(
        inside, HELD,
        "decisions being decided at once, with {POOL_SIZE} connections"
    );
    let (status, participant) = app.get("/api/v1/users/p0");
    let (samples, _) = scrape(&app);
    GATE.open();
    let answers: Vec<_> = requests.into_iter().map(|r| r.join().unwrap()).collect();

    assert_eq!(
        status, 200,
        "a read while the decisions wait: {participant}"
    );
    assert_eq!(participant["user"]["user_id"], "p0");
    assert_eq!(
        samples.get("justin_decisions_in_progress"),
        Some(&(HELD as f64))
    );
    for (user, (status, body)) in users.iter().zip(&answers) {
        assert_eq!(*status, 201, "{user}: {body}");
        assert_eq!(body["user_id"], user.as_str());
    }
    let (samples, _) = scrape(&app);
    assert_eq!(samples.get("justin_decisions_in_progress"), Some(&0.0));
    let (_, stored) = app.get("/api/v1/users/p0");
    assert_eq!(stored["user"]["decisions"], 1, "{stored}");
}
