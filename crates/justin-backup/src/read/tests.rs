//! Unit tests of reading and checking archives: record counting, and each file-level check
//! refusing its case.

use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use chrono::{TimeZone, Utc};

use super::*;
use crate::write::PendingBackup;

const TABLES: [&str; 2] = ["users", "actions"];

/// A fresh directory under the system's temporary directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "justin-backup-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn table(name: &str, rows: u64) -> ManifestTable {
    ManifestTable::new(name, rows, vec!["id".into(), "note".into()])
}

fn manifest(tables: Vec<ManifestTable>) -> Manifest {
    let at = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
    Manifest::new("test", at, "db", vec!["1".into()], tables)
}

/// CSV with two records, one spanning two lines.
const USERS: &str = "id,note\n1,\"two\nlines\"\n2,x\n";
const ACTIONS: &str = "id,note\n";

fn good() -> (Manifest, Vec<(String, String)>) {
    (
        manifest(vec![table("users", 2), table("actions", 0)]),
        vec![
            ("users.csv".into(), USERS.into()),
            ("actions.csv".into(), ACTIONS.into()),
        ],
    )
}

/// Packs `manifest` (unless `None`) and `entries` into a tar in `dir`.
fn pack(dir: &Scratch, manifest: Option<&Manifest>, entries: &[(String, String)]) -> PathBuf {
    let path = dir.0.join("b.tar");
    let mut out = tar::Builder::new(File::create(&path).unwrap());
    let mut add = |name: &str, data: &[u8]| {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o600);
        out.append_data(&mut header, name, data).unwrap();
    };
    if let Some(m) = manifest {
        add(MANIFEST, &m.to_json().unwrap());
    }
    for (name, text) in entries {
        add(name, text.as_bytes());
    }
    out.finish().unwrap();
    path
}

fn refusal(manifest: Option<&Manifest>, entries: &[(String, String)]) -> String {
    let dir = Scratch::new();
    let path = pack(&dir, manifest, entries);
    match verify(&path, &TABLES, &mut measure_csv) {
        Err(FormatError::Invalid(reason)) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn csv_is_measured_by_records_not_lines() {
    let (header, records) = measure_csv(&mut USERS.as_bytes(), "t", USERS.len() as u64).unwrap();
    assert_eq!(header, vec!["id", "note"]);
    assert_eq!(records, 2);
}

#[test]
fn short_headless_or_open_quoted_csv_is_invalid() {
    let short = measure_csv(&mut USERS.as_bytes(), "t", 100);
    assert!(
        matches!(&short, Err(FormatError::Invalid(r)) if r == "t.csv is truncated: 26 of 100 bytes present"),
        "{short:?}"
    );
    let headless = measure_csv(&mut &b""[..], "t", 0);
    assert!(
        matches!(&headless, Err(FormatError::Invalid(r)) if r == "t.csv has no header line"),
        "{headless:?}"
    );
    let open = "a\n\"x\n";
    let open = measure_csv(&mut open.as_bytes(), "t", open.len() as u64);
    assert!(
        matches!(&open, Err(FormatError::Invalid(r)) if r.contains("inside a quoted field")),
        "{open:?}"
    );
}

#[test]
fn a_good_archive_passes_in_the_adapters_order_and_reopens() {
    let (m, entries) = good();
    let dir = Scratch::new();
    let path = pack(&dir, Some(&m), &entries);
    let checked = verify(&path, &TABLES, &mut measure_csv).unwrap();
    assert_eq!(checked.migrations, vec!["1"]);
    let names: Vec<_> = checked
        .tables
        .iter()
        .map(|t| t.table.name.as_str())
        .collect();
    assert_eq!(names, TABLES);
    let mut rest = String::new();
    checked.tables[0]
        .reopen(&path)
        .unwrap()
        .read_to_string(&mut rest)
        .unwrap();
    assert_eq!(rest, "1,\"two\nlines\"\n2,x\n");
}

#[test]
fn a_written_backup_verifies() {
    let dir = Scratch::new();
    let at = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
    let pending = PendingBackup::create(&dir.0, at).unwrap();
    std::fs::write(pending.csv_path("users"), USERS).unwrap();
    std::fs::write(pending.csv_path("actions"), ACTIONS).unwrap();
    let (m, _) = good();
    let path = pending.finish(&m).unwrap();
    assert!(path.ends_with("justin-backup-20250101T000000.000000Z.tar"));
    let left: Vec<_> = std::fs::read_dir(&dir.0).unwrap().collect();
    assert_eq!(left.len(), 1, "only the archive is left");
    verify(&path, &TABLES, &mut measure_csv).unwrap();
    // A second backup of the same instant does not overwrite the first.
    assert!(matches!(
        PendingBackup::create(&dir.0, at),
        Err(FormatError::Write(_))
    ));
}

#[test]
fn a_missing_manifest_or_csv_is_refused() {
    let (m, entries) = good();
    assert_eq!(refusal(None, &entries), "manifest.json is missing");
    assert_eq!(refusal(Some(&m), &entries[..1]), "actions.csv is missing");
}

#[test]
fn duplicate_and_unexpected_entries_are_refused() {
    let (m, mut entries) = good();
    entries.push(entries[0].clone());
    assert_eq!(refusal(Some(&m), &entries), "users.csv appears twice");
    let (m, mut entries) = good();
    entries.push(("notes.txt".into(), String::new()));
    assert_eq!(refusal(Some(&m), &entries), "unexpected entry notes.txt");
    let (m, mut entries) = good();
    entries.push(("notes.csv".into(), "id\n".into()));
    assert_eq!(
        refusal(Some(&m), &entries),
        "notes.csv is not a table the manifest lists"
    );
}

#[test]
fn a_table_set_other_than_the_adapters_is_refused() {
    let (_, entries) = good();
    let twice = manifest(vec![
        table("users", 2),
        table("users", 2),
        table("actions", 0),
    ]);
    assert_eq!(
        refusal(Some(&twice), &entries),
        "the manifest lists a table twice"
    );
    let extra = manifest(vec![
        table("users", 2),
        table("actions", 0),
        table("notes", 0),
    ]);
    assert!(refusal(Some(&extra), &entries).contains("but this schema has"));
    let short = manifest(vec![table("users", 2)]);
    assert!(refusal(Some(&short), &entries).contains("but this schema has"));
}

#[test]
fn a_file_name_header_or_row_count_other_than_the_manifests_is_refused() {
    let (_, entries) = good();
    let mut renamed = table("users", 2);
    renamed.file = "people.csv".into();
    assert_eq!(
        refusal(
            Some(&manifest(vec![renamed, table("actions", 0)])),
            &entries
        ),
        "the manifest names \"people.csv\" for table users, expected users.csv"
    );
    let mut columns = table("users", 2);
    columns.columns.push("extra".into());
    assert!(refusal(
        Some(&manifest(vec![columns, table("actions", 0)])),
        &entries
    )
    .starts_with("users.csv has the columns"));
    assert_eq!(
        refusal(
            Some(&manifest(vec![table("users", 3), table("actions", 0)])),
            &entries
        ),
        "users.csv holds 2 rows but the manifest says 3"
    );
}

#[test]
fn a_changed_header_is_caught_on_reopening() {
    let (m, entries) = good();
    let dir = Scratch::new();
    let path = pack(&dir, Some(&m), &entries);
    let mut checked = verify(&path, &TABLES, &mut measure_csv).unwrap();
    checked.tables[0].entry.header = vec!["other".into()];
    let reopened = checked.tables[0].reopen(&path);
    assert!(
        matches!(&reopened, Err(FormatError::Invalid(r)) if r == "users.csv changed during the restore (its header differs)"),
        "{reopened:?}"
    );
}

/// A file that is not a backup can hold participants' data; a refusal says what is wrong
/// without quoting any of it.
#[test]
fn a_file_that_is_not_a_backup_is_refused_without_quoting_it() {
    let dir = Scratch::new();
    let secret = "participant_secret";
    let mut text = String::from("user_id,diagnosis\n");
    for i in 0..40 {
        text.push_str(&format!("{secret}{i},mood-{secret}\n"));
    }
    let csv = dir.0.join("study.csv");
    std::fs::write(&csv, &text).unwrap();
    let short = dir.0.join("short.csv");
    std::fs::write(&short, &text[..100]).unwrap();
    let odd_name = pack(
        &dir,
        None,
        &[(format!("{secret} 1,mood.csv"), "id,note\n".into())],
    );
    let odd_manifest = dir.0.join("m.tar");
    {
        let mut out = tar::Builder::new(File::create(&odd_manifest).unwrap());
        for body in [
            format!(r#"{{"format_version":1,"migrations":"{secret}","tables":[]}}"#),
            format!(r#"{{"format_version":1, {secret}"#),
        ] {
            let mut header = tar::Header::new_ustar();
            header.set_size(body.len() as u64);
            header.set_mode(0o600);
            out.append_data(&mut header, MANIFEST, body.as_bytes())
                .unwrap();
        }
        out.finish().unwrap();
    }
    for path in [&csv, &short, &odd_name, &odd_manifest] {
        let reason = match verify(path, &TABLES, &mut measure_csv) {
            Err(FormatError::Invalid(reason)) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert!(!reason.contains(secret), "{reason}");
        assert!(!reason.contains("diagnosis"), "{reason}");
    }
    let broken = Manifest::read(&mut format!("[\"{secret}\"").as_bytes());
    assert!(
        matches!(&broken, Err(FormatError::Invalid(r)) if !r.contains(secret) && r.contains("is not JSON")),
        "{broken:?}"
    );
}

#[test]
fn a_backup_taken_before_a_table_was_created_is_checked_without_it() {
    let dir = Scratch::new();
    let tables = ["users", "participant_events"];
    let at = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
    let users = [("users.csv".to_owned(), USERS.to_owned())];
    let before = Manifest::new(
        "test",
        at,
        "db",
        vec!["20250403000000".into()],
        vec![table("users", 2)],
    );
    let checked = verify(
        &pack(&dir, Some(&before), &users),
        &tables,
        &mut measure_csv,
    )
    .unwrap();
    assert_eq!(
        checked
            .tables
            .iter()
            .map(|t| t.table.name.as_str())
            .collect::<Vec<_>>(),
        vec!["users"]
    );

    // Once the migration that created it is in the backup, the table must be there too.
    let after = Manifest::new(
        "test",
        at,
        "db",
        vec!["20250501000000".into()],
        vec![table("users", 2)],
    );
    match verify(&pack(&dir, Some(&after), &users), &tables, &mut measure_csv) {
        Err(FormatError::Invalid(reason)) => {
            assert!(reason.contains("participant_events"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}
