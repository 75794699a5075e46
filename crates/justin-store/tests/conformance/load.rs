//! A backup taken while decisions and uploads keep arriving is one consistent snapshot: the
//! manifest's counts equal the records in the files, and the files agree with each other.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use justin_core::builders::{at, decision, upload_for, user};
use justin_core::Store;
use justin_store::testing::TestDatabase;

use crate::support::{csv_records, unpack, ScratchDir};

const WRITERS: usize = 2;

#[test]
fn backup_under_load_is_one_consistent_snapshot() {
    let db = TestDatabase::create();
    let store = db.store();
    store
        .seed_parameters("algo", &serde_json::json!({"mu": 0}), at(0))
        .unwrap();
    let names: Vec<String> = (0..WRITERS).map(|w| format!("writer-{w}")).collect();
    for name in &names {
        store
            .add_user(&user(name), &justin_core::Enrollment::default(), at(0))
            .unwrap();
    }
    let dir = ScratchDir::new();
    let stop = AtomicBool::new(false);
    let written = AtomicUsize::new(0);

    let (report, written_during) = std::thread::scope(|s| {
        for name in &names {
            let (stop, written) = (&stop, &written);
            s.spawn(move || {
                // Each writer logs decision i, then uploads its data: an upload is never
                // committed before its decision.
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    let d = decision(name, i, 1);
                    store
                        .record_decision(&d, justin_core::DecisionGuard::None)
                        .unwrap();
                    store.record_study_data(&upload_for(&d)).unwrap();
                    written.fetch_add(1, Ordering::SeqCst);
                    i += 1;
                }
            });
        }
        while written.load(Ordering::SeqCst) < 50 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let report = store.backup(&dir, at(1)).unwrap();
        let after = written.load(Ordering::SeqCst);
        // Writes continue after the backup too, so they surround it.
        while written.load(Ordering::SeqCst) < after + 20 {
            std::thread::sleep(Duration::from_millis(1));
        }
        stop.store(true, Ordering::SeqCst);
        (report, after)
    });

    let files = unpack(&report.path);
    let manifest: serde_json::Value = serde_json::from_str(&files["manifest.json"]).unwrap();
    let mut tables: BTreeMap<String, Vec<Vec<String>>> = BTreeMap::new();
    for table in manifest["tables"].as_array().unwrap() {
        let name = table["name"].as_str().unwrap();
        let mut records = csv_records(&files[&format!("{name}.csv")]);
        let header = records.remove(0);
        assert_eq!(
            serde_json::json!(header),
            table["columns"],
            "{name}: header matches the manifest"
        );
        assert_eq!(
            records.len() as u64,
            table["rows"].as_u64().unwrap(),
            "{name}: the manifest counts the file's records"
        );
        tables.insert(name.to_owned(), records);
    }
    let reported: BTreeMap<String, u64> = report.row_counts.iter().cloned().collect();
    for (name, records) in &tables {
        assert_eq!(
            reported[name],
            records.len() as u64,
            "{name}: reported count"
        );
    }

    // Per writer, the snapshot holds decisions 0..n and uploads 0..m with m = n or n - 1; a
    // backup reading the tables at different moments would show uploads without decisions.
    let indices = |table: &str, user: &str| -> BTreeSet<i64> {
        tables[table]
            .iter()
            .filter(|r| r[1] == user)
            .map(|r| r[2].parse().unwrap())
            .collect()
    };
    for name in &names {
        let decided = indices("actions", name);
        let uploaded = indices("study_data", name);
        let n = decided.len() as i64;
        assert_eq!(decided, (0..n).collect(), "{name}: decisions are a prefix");
        assert!(
            uploaded == (0..n).collect() || uploaded == (0..n - 1).collect(),
            "{name}: {} decisions but uploads {uploaded:?}",
            n
        );
    }
    let in_backup = tables["actions"].len();
    assert!(in_backup >= 50, "the backup saw the writes before it");
    let now: BTreeMap<String, u64> = store.row_counts().unwrap().into_iter().collect();
    assert!(
        now["actions"] as usize >= written_during + 20 && now["actions"] as usize > in_backup,
        "writes continued after the backup"
    );
}
