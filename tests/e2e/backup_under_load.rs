//! A backup taken while `/add_user`, `/action`, `/upload_data` and updates keep writing is one
//! consistent snapshot: each table's manifest count matches its file, and no row refers to a
//! row the snapshot does not hold.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use justin_e2e::{
    env_for, justin, reported_backup, run, CallbackReceiver, ScratchDir, Served, TestDatabase,
    TABLES, WAIT,
};
use serde_json::{json, Value};

const WRITERS: usize = 4;
/// The most participants one writer registers; writers stop earlier, once the backup is done.
const MAX_PER_WRITER: usize = 400;
/// Participants registered before the backup starts.
const BEFORE_BACKUP: usize = 20;

/// One member of the backup archive, read with the `tar` command.
fn member(archive: &Path, name: &str) -> String {
    let out = Command::new("tar")
        .arg("-xOf")
        .arg(archive)
        .arg(name)
        .output()
        .expect("the tar command runs");
    assert!(
        out.status.success(),
        "tar -xOf {} {name}: {}",
        archive.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("backup members are UTF-8")
}

/// Splits the backup's CSV (the same on both backends) into records of fields: `"` quotes, `""` is a quote inside quotes.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => record.push(std::mem::take(&mut field)),
            ('\n', false) => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (c, _) => field.push(c),
        }
    }
    assert!(!quoted, "the CSV ends inside a quoted field");
    if !field.is_empty() || !record.is_empty() {
        record.push(field);
        records.push(record);
    }
    records
}

/// A table from the archive: its header and its records.
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// The values of `column`, one per row.
    fn column(&self, column: &str) -> Vec<&str> {
        let at = self
            .header
            .iter()
            .position(|c| c == column)
            .unwrap_or_else(|| panic!("no column {column} in {:?}", self.header));
        self.rows.iter().map(|r| r[at].as_str()).collect()
    }
}

fn post_ok(served: &Served, path: &str, body: &Value, expected: u16) -> Value {
    let (status, answer) = served.post(path, body);
    assert_eq!(status, expected, "{path} {body}: {answer}");
    answer
}

/// Registers a participant, asks for a decision and uploads what the study server saw.
fn write_one(served: &Served, user: &str) {
    post_ok(served, "/api/v1/add_user", &json!({"user_id": user}), 201);
    let decision = post_ok(
        served,
        "/api/v1/action",
        &json!({
            "user_id": user,
            "timestamp": "2025-01-01T12:00:00Z",
            "decision_idx": 0,
            "context": {"temperature": 22, "note": "a, \"quoted\" value"},
        }),
        201,
    );
    post_ok(
        served,
        "/api/v1/upload_data",
        &json!({
            "user_id": user,
            "timestamp": "2025-01-01T12:00:00Z",
            "decision_idx": 0,
            "data": {
                "context": {"temperature": 22, "note": "a, \"quoted\" value"},
                "action": decision["action"],
                "action_prob": decision["action_prob"],
                "state": decision["state"],
                "outcome": {"clicks": 1},
            },
        }),
        201,
    );
}

#[test]
fn a_backup_taken_under_writes_is_one_consistent_snapshot() {
    let db = TestDatabase::create();
    let dir = ScratchDir::new();
    let mut env = env_for(&db);
    env.extend([
        ("JUSTIN_BACKUP__ENABLED", "false".to_owned()),
        ("JUSTIN_UPDATE__POLL_INTERVAL_MS", "20".to_owned()),
        ("JUSTIN_UPDATE__CALLBACK_BACKOFF_MS", "10".to_owned()),
    ]);
    let served = Served::start(dir.path(), &env);
    let receiver = CallbackReceiver::start();
    let done = AtomicBool::new(false);
    let (progress, written) = mpsc::channel::<()>();

    let out = std::thread::scope(|scope| {
        for writer in 0..WRITERS {
            let (served, done, progress) = (&served, &done, progress.clone());
            scope.spawn(move || {
                for i in 0..MAX_PER_WRITER {
                    if done.load(Ordering::Relaxed) {
                        break;
                    }
                    write_one(served, &format!("w{writer}-{i}"));
                    progress.send(()).ok();
                }
            });
        }
        let (served, done, url) = (&served, &done, receiver.url().to_owned());
        scope.spawn(move || {
            // Updates publish parameter versions while the backup runs.
            for _ in 0..MAX_PER_WRITER {
                if done.load(Ordering::Relaxed) {
                    break;
                }
                post_ok(
                    served,
                    "/api/v1/update",
                    &json!({"timestamp": "2025-01-01T12:00:00Z", "callback_url": url}),
                    202,
                );
            }
        });
        for _ in 0..BEFORE_BACKUP {
            written
                .recv_timeout(WAIT)
                .expect("the writers make progress");
        }
        let out = run(justin(dir.path(), &env).arg("backup"));
        done.store(true, Ordering::Relaxed);
        out
    });

    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
    let archive = reported_backup(dir.path(), &out);
    let manifest: Value =
        serde_json::from_str(&member(&archive, "manifest.json")).expect("the manifest is JSON");
    let listed = manifest["tables"].as_array().expect("a list of tables");
    let mut tables = BTreeMap::new();
    for entry in listed {
        let name = entry["name"].as_str().expect("a table name");
        let file = entry["file"].as_str().expect("a file name");
        let mut records = parse_csv(&member(&archive, file));
        assert!(!records.is_empty(), "{file} has a header");
        let header = records.remove(0);
        assert_eq!(
            entry["rows"].as_u64(),
            Some(records.len() as u64),
            "{name}: the manifest's count and the records in {file}"
        );
        assert_eq!(
            entry["columns"],
            json!(header),
            "{name}: the manifest's columns"
        );
        tables.insert(
            name.to_owned(),
            Table {
                header,
                rows: records,
            },
        );
    }
    let names: BTreeSet<&str> = tables.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from(TABLES),
        "every table is in the backup"
    );

    let users: BTreeSet<&str> = tables["users"].column("user_id").into_iter().collect();
    assert!(users.len() >= BEFORE_BACKUP, "{} users", users.len());
    let versions: BTreeSet<&str> = tables["model_parameters"]
        .column("version")
        .into_iter()
        .collect();
    let requests: BTreeSet<&str> = tables["model_update_requests"]
        .column("id")
        .into_iter()
        .collect();
    let refers = |table: &str, column: &str, to: &BTreeSet<&str>, what: &str| {
        let missing: Vec<&str> = tables[table]
            .column(column)
            .into_iter()
            .filter(|v| !v.is_empty() && !to.contains(v))
            .collect();
        assert!(
            missing.is_empty(),
            "{table}.{column} refers to {what} not in the backup: {missing:?}"
        );
    };
    refers("actions", "user_id", &users, "users");
    refers("study_data", "user_id", &users, "users");
    refers(
        "actions",
        "parameter_version",
        &versions,
        "parameter versions",
    );
    refers(
        "model_update_requests",
        "parameter_version",
        &versions,
        "parameter versions",
    );
    refers(
        "update_provenance",
        "parameter_version",
        &versions,
        "parameter versions",
    );
    refers(
        "update_provenance",
        "update_id",
        &requests,
        "update requests",
    );
}
