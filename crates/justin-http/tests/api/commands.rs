//! `justin erase-user` and `justin replay` on a study the API made: the built binary, run
//! against the test's database.

use std::process::{Command, Output};

use serde_json::json;

use crate::helpers::{spawn_app, sql_lines, ScratchDir, TestApp, TIMESTAMP};

/// Runs the `justin` binary with `args` on the app's database, its backups in `backup_dir`.
fn justin(app: &TestApp, backup_dir: &std::path::Path, args: &[&str]) -> Output {
    let work = ScratchDir::new();
    Command::new(env!("CARGO_BIN_EXE_justin"))
        .args(args)
        .current_dir(work.path())
        .env_remove("JUSTIN_CONFIG")
        .env("JUSTIN_DATABASE__URL", app.database_url())
        .env("JUSTIN_BACKUP__DIR", backup_dir)
        .env("JUSTIN_LOGGING__DIR", work.path().join("logs"))
        .env("JUSTIN_LOGGING__STDOUT", "false")
        .output()
        .expect("the justin binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn erase_user_without_yes_only_says_what_it_would_do() {
    let app = spawn_app();
    app.add_user("u1");
    app.action("u1", 0, 23.0);
    let backups = ScratchDir::new();

    let output = justin(&app, backups.path(), &["erase-user", "u1"]);

    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let text = stdout(&output);
    assert!(text.contains("1 decisions"), "{text}");
    assert!(text.contains("Nothing was changed"), "{text}");
    assert_eq!(app.participant("u1")["decisions"], 1);
    assert_eq!(std::fs::read_dir(backups.path()).unwrap().count(), 0);
}

#[test]
fn erase_user_with_yes_erases_after_a_backup_and_prints_the_audit_record() {
    let app = spawn_app();
    app.add_user("u1");
    app.action("u1", 0, 23.0);
    let backups = ScratchDir::new();

    let output = justin(&app, backups.path(), &["erase-user", "u1", "--yes"]);

    assert!(output.status.success(), "{output:?}");
    let text = stdout(&output);
    let pseudonym = sql_lines(app.database_url(), "SELECT pseudonym AS out FROM erasures");
    assert_eq!(pseudonym.len(), 1);
    assert!(
        text.contains(&format!("pseudonym: {}", pseudonym[0])),
        "{text}"
    );
    assert!(text.contains("actions: 1 rows"), "{text}");
    assert!(text.contains("backup_file: "), "{text}");
    assert_eq!(std::fs::read_dir(backups.path()).unwrap().count(), 1);
    assert_eq!(app.get("/api/v1/users/u1").0, 404);

    let again = justin(&app, backups.path(), &["erase-user", "u1", "--yes"]);
    assert!(!again.status.success(), "{again:?}");
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("not registered"),
        "{again:?}"
    );
}

#[test]
fn replay_reports_erased_participants_apart_and_counts_host_decisions() {
    let app = spawn_app();
    app.add_user("kept");
    app.add_user("gone");
    app.action("kept", 0, 23.0);
    app.action("gone", 0, 23.0);
    app.action("gone", 1, 23.0);
    app.post_expecting(
        "/api/v1/host_decision",
        &json!({
            "user_id": "kept", "timestamp": TIMESTAMP, "decision_idx": 1,
            "context": {"temperature": 20}, "action": 0, "action_prob": 0.3,
            "decided_by": "app",
        }),
        201,
    );
    app.post_expecting("/api/v1/users/gone/erase", &json!({}), 200);
    let backups = ScratchDir::new();

    let output = justin(&app, backups.path(), &["replay"]);

    assert!(output.status.success(), "{output:?}");
    let text = stdout(&output);
    assert_eq!(text.matches("UNVERIFIABLE").count(), 2, "{text}");
    assert!(!text.contains("MISMATCH"), "{text}");
    assert!(
        text.contains(
            "replayed 1 decisions: 0 mismatches; 2 unverifiable (erased participants); 1 decided by the host"
        ),
        "{text}"
    );
}

#[test]
fn replay_still_fails_on_a_mismatch() {
    let app = spawn_app();
    app.add_user("u1");
    app.action("u1", 0, 23.0);
    crate::helpers::execute(app.database_url(), "UPDATE actions SET action_prob = 0.9");
    let backups = ScratchDir::new();

    let output = justin(&app, backups.path(), &["replay"]);

    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(stdout(&output).contains("MISMATCH"), "{output:?}");
}
