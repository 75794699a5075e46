//! `justin export`: the analysis table written to a file, whole or not at all, and the same
//! table over HTTP.

use justin_e2e::{env_for, execute, justin, run, ScratchDir, Served, TestDatabase};
use serde_json::json;

/// A participant with a decision of each kind, one of them uploaded.
fn study(served: &Served) {
    let (status, _) = served.post("/api/v1/add_user", &json!({"user_id": "p1"}));
    assert_eq!(status, 201);
    let decision = |idx: i64, extra: serde_json::Value| {
        let mut body = json!({
            "user_id": "p1",
            "timestamp": "2025-01-01T12:00:00Z",
            "decision_idx": idx,
            "context": {"temperature": 25},
        });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, answer) = served.post("/api/v1/action", &body);
        assert_eq!(status, 201, "{answer}");
        answer
    };
    let first = decision(0, json!({}));
    decision(0, json!({"decision_type": "evening"}));
    decision(
        1,
        json!({"available": false, "unavailable_reason": "asleep"}),
    );
    let (status, answer) = served.post(
        "/api/v1/upload_data",
        &json!({
            "user_id": "p1",
            "timestamp": "2025-01-01T13:00:00Z",
            "decision_idx": 0,
            "data": {
                "context": {"temperature": 25},
                "action": first["action"],
                "action_prob": first["action_prob"],
                "state": [25],
                "outcome": {"clicks": 2},
            },
        }),
    );
    assert_eq!(status, 201, "{answer}");
}

#[test]
fn export_writes_the_table_whole_and_the_api_sends_the_same() {
    let db = TestDatabase::create();
    let dir = ScratchDir::new();
    let env = env_for(&db);
    let served = Served::start(dir.path(), &env);
    study(&served);
    let out_file = dir.path().join("study.csv");

    let out = run(justin(dir.path(), &env).args(["export", "--out", "study.csv"]));

    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("exported 3 decisions to study.csv"),
        "{}",
        out.stdout
    );
    let table = std::fs::read_to_string(&out_file).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(lines[0].starts_with("user_id,decision_type,decision_idx,"));
    assert!(lines[1].starts_with("p1,default,0,"), "{}", lines[1]);
    assert!(
        lines[1].contains(r#""{""clicks"":2}",2.0,false,"#),
        "{}",
        lines[1]
    );
    assert!(lines[2].starts_with("p1,evening,0,"), "{}", lines[2]);
    assert!(lines[3].contains(",false,asleep,"), "{}", lines[3]);
    assert!(!dir.path().join("study.csv.partial").exists());
    // The API streams the very same table.
    let sent = ureq::get(format!("{}/api/v1/export", served.base_url))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert_eq!(sent, table);

    // `-` writes to standard output.
    let out = run(justin(dir.path(), &env).args(["export", "--out", "-"]));
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.stdout, table);
}

#[test]
fn a_failed_export_leaves_the_previous_file_untouched() {
    let db = TestDatabase::create();
    let dir = ScratchDir::new();
    let env = env_for(&db);
    {
        let served = Served::start(dir.path(), &env);
        study(&served);
    }
    let out_file = dir.path().join("study.csv");
    std::fs::write(&out_file, "the previous export\n").unwrap();
    // A table the export reads is gone, so reading the study fails.
    execute(
        db.url(),
        "ALTER TABLE study_data RENAME TO study_data_moved",
    );

    let out = run(justin(dir.path(), &env).args(["export", "--out", "study.csv"]));

    assert_eq!(out.status.code(), Some(1), "{}", out.stdout);
    assert!(out.stderr.contains("export failed"), "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(&out_file).unwrap(),
        "the previous export\n"
    );
    assert!(!dir.path().join("study.csv.partial").exists());
}

/// The export holds participants' data: it is private to the service's user, and a symlink
/// planted at its partial name is replaced, never written through.
#[cfg(unix)]
#[test]
fn export_is_private_and_never_follows_a_symlink_at_its_partial_name() {
    use std::os::unix::fs::PermissionsExt;

    let db = TestDatabase::create();
    let dir = ScratchDir::new();
    let env = env_for(&db);
    {
        let served = Served::start(dir.path(), &env);
        study(&served);
    }
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, "not the export's to touch\n").unwrap();
    std::os::unix::fs::symlink(&victim, dir.path().join("study.csv.partial")).unwrap();

    let out = run(justin(dir.path(), &env).args(["export", "--out", "study.csv"]));

    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "not the export's to touch\n"
    );
    let out_file = dir.path().join("study.csv");
    let meta = std::fs::symlink_metadata(&out_file).unwrap();
    assert!(meta.file_type().is_file());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert!(std::fs::read_to_string(&out_file)
        .unwrap()
        .starts_with("user_id,"));
    assert!(std::fs::symlink_metadata(dir.path().join("study.csv.partial")).is_err());
}
