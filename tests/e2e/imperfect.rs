//! Imperfect field data through the running service: a `justin simulate` study in which 10 %
//! of context values are null and 15 % of outcomes never arrive, run through `thompson` with
//! rules for missing values and a default reward for missing outcomes, ends with no refused
//! decision; the export shows each imputation in the stored state, each not-available decision
//! with its reason and each imputed reward with the update that imputed it; each update's
//! provenance counts the rewards it imputed; the replay repeats every decision, imputations
//! included, and every update exactly.

use std::io::Cursor;

use justin_backup::csv::CsvReader;
use justin_e2e::{connect, env_for, justin, run, ScratchDir, Served, TestDatabase};
use serde_json::Value;

/// `steps` imputed by its mean, `mood` by 0, `sleep` not available: the state is
/// [1, steps, mood, sleep, steps missing, mood missing].
const CONFIG: &str = r#"
[backup]
enabled = false

[algorithm]
name = "thompson"
priors_file = "priors.json"

[algorithm.options]
features = ["steps", "mood", "sleep"]

[algorithm.options.missing]
steps = { impute = "mean" }
mood = { impute = 0 }
sleep = "not_available"

[update]
missing_outcomes = "default_reward"
outcome_window_mins = 0
default_reward = 0.0
"#;

#[test]
fn a_study_with_null_context_values_and_lost_outcomes_runs_to_the_end_and_replays() {
    let db = TestDatabase::create();
    let dir = ScratchDir::new();
    std::fs::write(
        dir.path().join("priors.json"),
        r#"{"variance": 1.0, "noise_variance": 1.0, "feature_means": {"steps": 5.0}}"#,
    )
    .unwrap();
    std::fs::write(dir.path().join("config.toml"), CONFIG).unwrap();
    let env = env_for(&db);
    let served = Served::start(dir.path(), &env);

    let sim = run(justin(dir.path(), &[]).args([
        "simulate",
        "--url",
        &served.base_url,
        "--participants",
        "10",
        "--decision-times",
        "20",
        "--update-every",
        "50",
        "--seed",
        "3",
        "--features",
        "steps:5:2,mood:0:1,sleep:7:1",
        "--reward-action",
        "0.5",
        "--reward-coef",
        "steps=0.2",
        "--null-context-share",
        "0.1",
        "--missing-outcome-share",
        "0.15",
        "--out",
        "summary.csv",
    ]));
    assert_eq!(sim.status.code(), Some(0), "{}\n{}", sim.stdout, sim.stderr);

    let out = run(justin(dir.path(), &env).args(["export", "--out", "study.csv"]));
    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
    let text = std::fs::read_to_string(dir.path().join("study.csv")).unwrap();
    let mut reader = CsvReader::new(Cursor::new(text));
    let header: Vec<String> = reader
        .next_record()
        .unwrap()
        .unwrap()
        .into_iter()
        .map(Option::unwrap)
        .collect();
    let column = |name: &str| header.iter().position(|h| h == name).unwrap();
    let (context_at, state_at) = (column("context"), column("state"));
    let (available_at, reason_at) = (column("available"), column("unavailable_reason"));
    let version_at = column("parameter_version");
    let (outcome_at, reward_at) = (column("outcome"), column("reward"));
    let (imputed_in_at, imputed_reward_at) = (
        column("reward_imputed_in_version"),
        column("imputed_reward"),
    );
    let decided_at = column("decision_timestamp");
    let (mut rows, mut imputed, mut not_available, mut later_versions) = (0, 0, 0, 0);
    let mut steps_imputed = std::collections::BTreeSet::new();
    // The decision times of the available decisions without an outcome, and how many of them
    // the export says an update imputed.
    let (mut unrewarded, mut rewards_imputed) = (Vec::new(), 0);
    while let Some(record) = reader.next_record().unwrap() {
        rows += 1;
        let text = |i: usize| record[i].clone().unwrap_or_default();
        if text(available_at) == "true" && record[outcome_at].is_none() {
            unrewarded.push(text(decided_at));
            assert_eq!(record[reward_at], None, "no reward of its own: {record:?}");
            if record[imputed_in_at].is_some() {
                rewards_imputed += 1;
                assert_eq!(text(imputed_reward_at), "0.0", "{record:?}");
            }
        } else {
            assert_eq!(record[imputed_in_at], None, "{record:?}");
        }
        let context: Value = serde_json::from_str(&text(context_at)).unwrap();
        let sleep_lost = context["sleep"].is_null();
        assert_eq!(
            text(available_at) == "false",
            sleep_lost,
            "not available exactly when sleep is missing: {record:?}"
        );
        if sleep_lost {
            not_available += 1;
            assert_eq!(text(reason_at), "missing_context");
            continue;
        }
        let state: Vec<f64> = serde_json::from_str(&text(state_at)).unwrap();
        assert_eq!(state.len(), 6, "{record:?}");
        for (feature, value_at, indicator_at) in [("steps", 1, 4), ("mood", 2, 5)] {
            let lost = context[feature].is_null();
            assert_eq!(state[indicator_at], if lost { 1.0 } else { 0.0 });
            if lost {
                imputed += 1;
                if feature == "mood" {
                    assert_eq!(state[value_at], 0.0);
                } else {
                    steps_imputed.insert(state[value_at].to_bits());
                }
            } else {
                assert_eq!(Some(state[value_at]), context[feature].as_f64());
            }
        }
        if text(version_at) != "1" {
            later_versions += 1;
        }
    }
    assert_eq!(rows, 200, "every decision stored, none refused");
    assert!(
        imputed > 20 && not_available > 5,
        "{imputed} {not_available}"
    );
    assert!(later_versions > 0, "decisions after an update");
    // The prior's mean (5) and then the means the updates computed from observed values.
    assert!(steps_imputed.len() > 1, "{steps_imputed:?}");
    assert!(
        rewards_imputed > 5,
        "{rewards_imputed} of {}",
        unrewarded.len()
    );

    // Each update imputed exactly the available decisions without an outcome made before it
    // started (the window is 0; the simulator's lost outcomes never arrive).
    let ids = connect(db.url()).lines(
        "SELECT CAST(update_id AS TEXT) AS out FROM update_provenance ORDER BY parameter_version",
    );
    assert!(ids.len() >= 3, "{ids:?}");
    for id in &ids {
        let (status, update) = served.get(&format!("/api/v1/update/{id}"));
        assert_eq!(status, 200, "{update}");
        let imputed = &update["provenance"]["imputed"];
        let decided_by = imputed["decided_by"].as_str().unwrap();
        let before = unrewarded
            .iter()
            .filter(|t| t.as_str() <= decided_by)
            .count();
        assert_eq!(imputed["rows"], before, "{update}");
        assert_eq!(imputed["default_reward"], 0.0, "{update}");
    }

    let replay = run(justin(dir.path(), &env).arg("replay"));
    assert!(
        replay.status.success(),
        "{}\n{}",
        replay.stdout,
        replay.stderr
    );
    assert!(
        replay
            .stdout
            .contains("replayed 200 decisions: 0 mismatches"),
        "{}",
        replay.stdout
    );
    let updates = run(justin(dir.path(), &env).args(["replay", "--updates"]));
    assert!(
        updates.status.success(),
        "{}\n{}",
        updates.stdout,
        updates.stderr
    );
    let exact = format!("replayed {n} updates: {n} exact,", n = ids.len());
    assert!(updates.stdout.contains(&exact), "{}", updates.stdout);
    assert!(
        updates.stdout.contains("; 0 inconsistent records"),
        "{}",
        updates.stdout
    );
    served.terminate();
}
