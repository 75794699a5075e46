//! Start-up refuses what it cannot serve correctly, with a message naming the setting; and
//! creates the configured database when it does not exist.

use diesel::{Connection, PgConnection, RunQueryDsl};
use justin_e2e::{env_for, justin, run, ScratchDir, Served, TestDatabase};
use serde_json::json;

#[test]
fn a_missing_priors_file_stops_start_up() {
    let db = TestDatabase::create();
    let dir = ScratchDir::new();
    let mut env = env_for(&db);
    env.push((
        "JUSTIN_ALGORITHM__PRIORS_FILE",
        "no-such-priors.json".into(),
    ));
    let out = run(justin(dir.path(), &env).arg("serve"));
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("algorithm.priors_file"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("no-such-priors.json"), "{}", out.stderr);
}

#[test]
fn invalid_priors_stop_start_up() {
    let db = TestDatabase::create();
    let dir = ScratchDir::new();
    std::fs::write(
        dir.path().join("priors.json"),
        r#"{"probability_of_action": 1.7}"#,
    )
    .unwrap();
    let mut env = env_for(&db);
    env.push(("JUSTIN_ALGORITHM__PRIORS_FILE", "priors.json".into()));
    let out = run(justin(dir.path(), &env).arg("serve"));
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("probability_of_action"),
        "{}",
        out.stderr
    );
}

#[test]
fn priors_file_becomes_version_one() {
    let db = TestDatabase::create();
    let dir = ScratchDir::new();
    std::fs::write(
        dir.path().join("priors.json"),
        r#"{"probability_of_action": 0.3}"#,
    )
    .unwrap();
    let mut env = env_for(&db);
    env.push(("JUSTIN_ALGORITHM__PRIORS_FILE", "priors.json".into()));
    let served = Served::start(dir.path(), &env);
    let (status, params) = served.get("/api/v1/parameters");
    assert_eq!(status, 200);
    assert_eq!(params["version"], 1);
    assert_eq!(params["parameters"]["probability_of_action"], json!(0.3));
}

#[test]
fn a_bad_setting_is_named() {
    let db = TestDatabase::create();
    let dir = ScratchDir::new();
    let mut env = env_for(&db);
    env.push(("JUSTIN_SERVER__PORT", "not-a-port".into()));
    let out = run(justin(dir.path(), &env).arg("serve"));
    assert!(!out.status.success());
    assert!(out.stderr.contains("port"), "{}", out.stderr);
}

#[test]
fn a_config_file_named_by_justin_config_is_read() {
    let db = TestDatabase::create();
    let dir = ScratchDir::new();
    std::fs::write(
        dir.path().join("study.toml"),
        "[algorithm.priors]\nprobability_of_action = 0.7\n",
    )
    .unwrap();
    let mut env = env_for(&db);
    env.push(("JUSTIN_CONFIG", "study.toml".into()));
    let served = Served::start(dir.path(), &env);
    let (_, params) = served.get("/api/v1/parameters");
    assert_eq!(params["parameters"]["probability_of_action"], json!(0.7));

    let out = run(justin(dir.path(), &[("JUSTIN_CONFIG", "missing.toml".into())]).arg("serve"));
    assert!(!out.status.success());
    assert!(out.stderr.contains("missing.toml"), "{}", out.stderr);
}

// PostgreSQL-only: a SQLite file is always created, so there is no missing database to create.
#[test]
fn pg_serving_creates_a_missing_database() {
    let server = justin_store::testing::TestDatabase::create();
    let name = format!("justin_e2e_{}", uuid::Uuid::new_v4().simple());
    let (base, _) = server.url().rsplit_once('/').unwrap();
    let url = format!("{base}/{name}");
    let dir = ScratchDir::new();
    {
        let served = Served::start(dir.path(), &[("JUSTIN_DATABASE__URL", url)]);
        let (status, body) = served.get("/readyz");
        assert_eq!(status, 200, "{body}");
        let (status, _) = served.post("/api/v1/add_user", &json!({"user_id": "p1"}));
        assert_eq!(status, 201);
    }
    let mut admin = PgConnection::establish(server.url()).unwrap();
    diesel::sql_query(format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
        .execute(&mut admin)
        .unwrap();
}

/// A backup killed mid-way leaves its work directory (the CSVs of the whole database) and its
/// partial archive; the next start removes them, says so, and touches nothing else there.
#[test]
fn start_up_removes_what_a_killed_backup_left() {
    let db = TestDatabase::create();
    let dir = ScratchDir::new();
    let env = env_for(&db);
    let backups = dir.path().join("backups");
    let name = "justin-backup-20250101T120000.000001Z.tar";
    let work = backups.join(format!(".{name}.tmp"));
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("study_data.csv"), "id\n1\n").unwrap();
    let partial = backups.join(format!("{name}.partial"));
    std::fs::write(&partial, "half an archive").unwrap();
    let kept = backups.join("justin-backup-20250101T110000.000001Z.tar");
    std::fs::write(&kept, "a finished backup").unwrap();
    let other = backups.join("notes.txt");
    std::fs::write(&other, "not ours").unwrap();

    let served = Served::start(dir.path(), &env);
    let out = served.terminate_with_output();

    assert!(!work.exists(), "{}", work.display());
    assert!(!partial.exists(), "{}", partial.display());
    assert!(kept.exists() && other.exists());
    let logged = format!("{}{}", out.stdout, out.stderr);
    for path in [&work, &partial] {
        let file = path.file_name().unwrap().to_string_lossy();
        assert!(
            logged.lines().any(|l| l.contains("removed ")
                && l.contains(&*file)
                && l.contains("left by a backup that was killed")),
            "{file}\n{logged}"
        );
    }
}
