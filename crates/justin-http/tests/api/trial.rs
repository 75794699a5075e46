//! The trial's phases through `/action`: decisions outside a participant's time in the study
//! or after their withdrawal, warm-up, the answers' `policy` and `in_study`, the export's
//! columns for them, and the configuration that sets them up.

use serde_json::{json, Value};

use crate::helpers::{action_body, spawn_app, spawn_app_with, TIMESTAMP};
use crate::openapi::served_contract;

/// The export as (header, rows), each row a map of column to value.
fn export(app: &crate::helpers::TestApp) -> Vec<std::collections::BTreeMap<String, String>> {
    let response = ureq::get(format!("{}/api/v1/export", app.base_url()))
        .call()
        .unwrap();
    let text = response.into_body().read_to_string().unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .unwrap()
        .split(',')
        .map(str::to_owned)
        .collect();
    lines
        .map(|line| {
            // The test rows hold no quoted commas outside the JSON columns, which are not read.
            let fields = split_csv(line);
            header.iter().cloned().zip(fields).collect()
        })
        .collect()
}

/// A CSV line's fields (RFC 4180 quoting).
fn split_csv(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut field)),
            (c, _) => field.push(c),
        }
    }
    fields.push(field);
    fields
}

#[test]
fn a_request_without_the_new_fields_answers_exactly_as_before() {
    let app = spawn_app();
    app.add_user("u1");

    let (status, body) = app.action("u1", 0, 23.0);

    assert_eq!(status, 201, "{body}");
    let keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "action",
            "action_prob",
            "state",
            "status",
            "timestamp",
            "user_id"
        ]
    );
    assert_eq!(body["action_prob"], 0.5);
    assert_eq!(body["state"], json!([23]));
    let (status, again) = app.action("u1", 0, 23.0);
    assert_eq!((status, &again), (200, &body));
}

#[test]
fn a_decision_before_the_participants_start_is_stored_without_a_draw() {
    let app = spawn_app();
    let contract = served_contract(&app);
    app.post_expecting(
        "/api/v1/add_user",
        &json!({ "user_id": "u1", "study_start": "2025-01-02T00:00:00Z" }),
        201,
    );

    let got = app.action("u1", 0, 23.0);

    assert_eq!(got.0, 201, "{}", got.1);
    contract.check("post", "/api/v1/action", &got);
    let body = &got.1;
    assert_eq!(body["action"], 0);
    assert_eq!(body["action_prob"], 0.0);
    assert_eq!(body["available"], false);
    assert_eq!(body["in_study"], false);
    assert_eq!(body["unavailable_reason"], "not_in_study");
    assert_eq!(body["state"], json!([23]));
    assert!(body.get("policy").is_none(), "{body}");
    assert_eq!(app.action("u1", 0, 23.0), (200, body.clone()));
}

#[test]
fn a_decision_at_the_participants_end_is_out_of_the_study_and_one_before_is_in() {
    let app = spawn_app();
    app.post_expecting(
        "/api/v1/add_user",
        &json!({ "user_id": "u1", "study_end": TIMESTAMP }),
        201,
    );
    let mut before = action_body("u1", 0, 23.0);
    before["timestamp"] = json!("2025-01-01T11:59:59.999999Z");

    let inside = app.post_expecting("/api/v1/action", &before, 201);
    let (status, at_end) = app.action("u1", 1, 23.0);

    assert!(inside.get("in_study").is_none(), "{inside}");
    assert_eq!(inside["action_prob"], 0.5);
    assert_eq!(status, 201, "{at_end}");
    assert_eq!(at_end["in_study"], false);
    assert_eq!(at_end["unavailable_reason"], "not_in_study");
}

#[test]
fn a_withdrawn_participants_decisions_are_stored_without_a_draw() {
    let app = spawn_app();
    app.add_user("u1");
    app.action("u1", 0, 23.0);
    app.post_expecting(
        "/api/v1/users/u1/withdraw",
        &json!({ "reason": "moved away" }),
        200,
    );

    let (status, body) = app.action("u1", 1, 23.0);

    assert_eq!(status, 201, "{body}");
    assert_eq!(body["action"], 0);
    assert_eq!(body["action_prob"], 0.0);
    assert_eq!(body["available"], false);
    assert_eq!(body["in_study"], false);
    assert_eq!(body["unavailable_reason"], "withdrawn");
    assert_eq!(app.participant("u1")["decisions"], 2);
}

#[test]
fn a_changed_window_applies_to_decisions_from_then_on() {
    let app = spawn_app();
    app.add_user("u1");
    let (_, first) = app.action("u1", 0, 23.0);

    app.patch_json(
        "/api/v1/users/u1",
        &json!({ "study_start": "2025-02-01T00:00:00Z" }),
    );
    let (_, second) = app.action("u1", 1, 23.0);

    assert!(first.get("in_study").is_none(), "{first}");
    assert_eq!(
        app.action("u1", 0, 23.0).1,
        first,
        "a stored decision keeps what it got"
    );
    assert_eq!(second["in_study"], false, "{second}");
}

#[test]
fn warmup_decisions_name_their_policy_and_the_first_after_it_does_not() {
    let app = spawn_app_with(|config| {
        config.algorithm.warmup.probability = Some(0.25);
        config.algorithm.warmup.first_decisions = Some(2);
    });
    let contract = served_contract(&app);
    app.add_user("u1");

    let answers: Vec<Value> = (0..3)
        .map(|idx| {
            let got = app.action("u1", idx, 23.0);
            assert_eq!(got.0, 201, "{}", got.1);
            contract.check("post", "/api/v1/action", &got);
            got.1
        })
        .collect();

    for warm in &answers[..2] {
        assert_eq!(warm["policy"], "warmup", "{warm}");
        assert_eq!(warm["action_prob"], 0.25, "{warm}");
        assert!(warm.get("in_study").is_none(), "{warm}");
    }
    assert!(answers[2].get("policy").is_none(), "{}", answers[2]);
    assert_eq!(answers[2]["action_prob"], 0.5);
    let rows = export(&app);
    let policies: Vec<&str> = rows.iter().map(|r| r["policy"].as_str()).collect();
    assert_eq!(policies, ["warmup", "warmup", "algorithm"]);
}

#[test]
fn warmup_until_a_date_holds_for_earlier_decisions_only() {
    let app = spawn_app_with(|config| {
        config.algorithm.warmup.probability = Some(1.0);
        config.algorithm.warmup.until = Some("2025-01-01T12:00:00Z".into());
    });
    app.add_user("u1");
    let mut early = action_body("u1", 0, 23.0);
    early["timestamp"] = json!("2025-01-01T11:00:00Z");

    let warm = app.post_expecting("/api/v1/action", &early, 201);
    let (_, after) = app.action("u1", 1, 23.0);

    assert_eq!(
        (&warm["policy"], &warm["action"]),
        (&json!("warmup"), &json!(1))
    );
    assert!(after.get("policy").is_none(), "{after}");
}

#[test]
fn the_export_appends_policy_fallback_reason_decided_by_and_in_study() {
    let app = spawn_app();
    app.add_user("in");
    app.post_expecting(
        "/api/v1/add_user",
        &json!({ "user_id": "out", "study_start": "2030-01-01" }),
        201,
    );
    app.action("in", 0, 23.0);
    app.action("out", 0, 23.0);
    app.post_expecting(
        "/api/v1/host_decision",
        &json!({
            "user_id": "in", "timestamp": TIMESTAMP, "decision_idx": 1,
            "context": {"temperature": 20}, "action": 1, "action_prob": 0.7,
            "decided_by": "app, fallback schedule",
        }),
        201,
    );

    let rows = export(&app);

    let header: Vec<&String> = rows[0].keys().collect();
    assert_eq!(header.len(), 28);
    let columns = |r: &std::collections::BTreeMap<String, String>| {
        [
            r["user_id"].clone(),
            r["available"].clone(),
            r["unavailable_reason"].clone(),
            r["policy"].clone(),
            r["fallback_reason"].clone(),
            r["decided_by"].clone(),
            r["in_study"].clone(),
        ]
        .join("|")
    };
    let got: Vec<String> = rows.iter().map(columns).collect();
    assert_eq!(
        got,
        [
            "in|true||algorithm|||true",
            "out|false|not_in_study|algorithm|||false",
            "in|true||host||app, fallback schedule|true",
        ]
    );
}

#[test]
fn the_export_keeps_the_existing_columns_in_their_places() {
    let app = spawn_app();
    let response = ureq::get(format!("{}/api/v1/export", app.base_url()))
        .call()
        .unwrap();
    let text = response.into_body().read_to_string().unwrap();

    assert_eq!(
        text.trim_end(),
        "user_id,decision_type,decision_idx,request_timestamp,decision_timestamp,available,\
         unavailable_reason,context,state,action,action1_prob,parameter_version,outcome,reward,\
         used_in_update,used_in_version,upload_request_timestamp,upload_timestamp,rng_seed,\
         request_timestamp_as_sent,upload_request_timestamp_as_sent,policy,fallback_reason,\
         decided_by,in_study,reward_imputed_in_version,imputed_reward,corrections"
    );
}

/// A change to the configuration.
type Change = dyn Fn(&mut justin_http::config::Config);

#[test]
fn a_half_configured_warmup_stops_start_up_naming_the_key() {
    let db = justin_testkit::TestDatabase::create();
    let scratch = justin_testkit::ScratchDir::new();
    let cases: [(&Change, &str); 3] = [
        (
            &|c| c.algorithm.warmup.probability = Some(0.5),
            "algorithm.warmup.probability",
        ),
        (
            &|c| c.algorithm.warmup.until_participants = Some(3),
            "algorithm.warmup.until_participants",
        ),
        (
            &|c| c.algorithm.fallback.probability = Some(2.0),
            "algorithm.fallback.probability",
        ),
    ];
    for (change, key) in cases {
        let mut config = justin_http::config::Config::default();
        config.database.url = db.url().to_owned();
        config.server.port = 0;
        config.backup.dir = scratch.path().to_path_buf();
        change(&mut config);

        let err = justin_http::startup::start(config, &justin_algos::builtin())
            .err()
            .unwrap_or_else(|| panic!("{key}: the service started"));

        assert!(err.to_string().contains(key), "{key}: {err}");
    }
}

/// `flat_prob`, except that it cannot compute a probability when the temperature is above 100
/// (it fails as a numerical failure would), and panics above 1000.
#[derive(Debug)]
struct FailsWhenHot(justin_algos::FlatProb);

impl justin_core::Algorithm for FailsWhenHot {
    fn name(&self) -> &str {
        "fails_when_hot"
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
        let temperature = state.values().first().copied().unwrap_or_default();
        if temperature > 1000.0 {
            panic!("the model diverged");
        }
        if temperature > 100.0 {
            return Err(justin_core::AlgorithmError::InvalidParameters(
                "the posterior is not positive definite".into(),
            ));
        }
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

/// The built-ins and `fails_when_hot`.
fn with_failing() -> justin_core::Registry {
    let mut algorithms = justin_algos::builtin();
    algorithms
        .register(justin_core::Registration::new(
            "fails_when_hot",
            "tests",
            |options| {
                Ok(std::sync::Arc::new(FailsWhenHot(
                    justin_algos::FlatProb::from_options(options)?,
                )))
            },
        ))
        .unwrap();
    algorithms
}

/// The service with `fails_when_hot` and, when given, a fallback probability.
pub(crate) fn failing_app(fallback: Option<f64>) -> crate::helpers::TestApp {
    crate::helpers::spawn_app_with_algorithms(
        |config| {
            config.algorithm.name = "fails_when_hot".into();
            config.algorithm.fallback.probability = fallback;
        },
        &with_failing(),
    )
}

#[test]
fn when_the_algorithm_fails_the_fallback_decides_and_the_answer_says_so_without_the_reason() {
    let app = failing_app(Some(0.2));
    let contract = served_contract(&app);
    app.add_user("u1");

    let failed = app.action("u1", 0, 150.0);
    let panicked = app.action("u1", 1, 1500.0);
    let normal = app.action("u1", 2, 23.0);

    for got in [&failed, &panicked] {
        assert_eq!(got.0, 201, "{}", got.1);
        contract.check("post", "/api/v1/action", got);
        assert_eq!(got.1["policy"], "fallback", "{}", got.1);
        assert_eq!(got.1["action_prob"], 0.2, "{}", got.1);
        assert!(got.1.get("fallback_reason").is_none(), "{}", got.1);
        assert!(!got.1.to_string().contains("positive"), "{}", got.1);
    }
    assert_eq!(normal.0, 201, "{}", normal.1);
    assert!(normal.1.get("policy").is_none(), "{}", normal.1);
    assert_eq!(app.action("u1", 0, 150.0), (200, failed.1.clone()));
    let rows = export(&app);
    assert_eq!(rows[0]["policy"], "fallback");
    assert!(
        rows[0]["fallback_reason"].contains("positive definite"),
        "{:?}",
        rows[0]
    );
    assert_eq!(rows[2]["fallback_reason"], "");
}

#[test]
fn without_a_fallback_a_failing_algorithm_fails_the_request_as_before() {
    let app = failing_app(None);
    app.add_user("u1");

    let got = app.action("u1", 0, 150.0);

    assert_eq!(got, (500, crate::helpers::error("Internal server error.")));
    assert_eq!(app.participant("u1")["decisions"], 0);
}

/// Runs one update to its end; the rows it read.
fn rows_read_by_an_update(app: &crate::helpers::TestApp) -> Value {
    let receiver = crate::helpers::CallbackReceiver::start();
    let id = app.request_update(receiver.url());
    receiver.next();
    let done = app.wait_for_update(&id, |b| b["update_status"] != "processing");
    assert_eq!(done["update_status"], "completed", "{done}");
    done["provenance"]["rows_read"].clone()
}

#[test]
fn a_withdrawn_participants_uploads_reach_no_update() {
    let app = spawn_app();
    for user in ["stays", "leaves"] {
        app.add_user(user);
        let (_, answer) = app.action(user, 0, 23.0);
        let upload = crate::helpers::upload_body_for(user, 0, 23.0, &answer);
        app.post_expecting("/api/v1/upload_data", &upload, 201);
    }
    app.post_expecting(
        "/api/v1/users/leaves/withdraw",
        &json!({ "reason": "r" }),
        200,
    );

    assert_eq!(rows_read_by_an_update(&app), 1);
}

#[test]
fn update_include_host_lets_updates_learn_from_host_decisions() {
    let app = spawn_app_with(|config| config.update.include_host = true);
    app.add_user("u1");
    let host = json!({
        "user_id": "u1", "timestamp": TIMESTAMP, "decision_idx": 0,
        "context": {"temperature": 23}, "action": 1, "action_prob": 0.5, "decided_by": "app",
    });
    app.post_expecting("/api/v1/host_decision", &host, 201);
    let mut upload = crate::helpers::upload_body("u1", 0, 23.0);
    upload["data"]["action"] = json!(1);
    upload["data"]["action_prob"] = json!(0.5);
    app.post_expecting("/api/v1/upload_data", &upload, 201);

    assert_eq!(rows_read_by_an_update(&app), 1);
}

#[test]
fn update_include_warmup_false_keeps_warmup_decisions_out_of_updates() {
    let app = spawn_app_with(|config| {
        config.algorithm.warmup.probability = Some(0.5);
        config.algorithm.warmup.first_decisions = Some(1);
        config.update.include_warmup = false;
    });
    app.add_user("u1");
    for idx in 0..2 {
        let (_, answer) = app.action("u1", idx, 23.0);
        let upload = crate::helpers::upload_body_for("u1", idx, 23.0, &answer);
        app.post_expecting("/api/v1/upload_data", &upload, 201);
    }

    assert_eq!(rows_read_by_an_update(&app), 1);
}
