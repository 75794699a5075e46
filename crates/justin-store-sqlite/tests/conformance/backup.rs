//! Backups written here: restored into another SQLite database they give back every row, and
//! their files have the layout and the value formats `justin-store` (PostgreSQL) writes and
//! reads. A backup in PostgreSQL's formats restores here, and so do ones taken before the
//! trial-life and the corrections migrations; one taken before the decision-types migration is
//! refused with what to do instead.

use std::collections::BTreeMap;

use justin_core::builders::{
    at, decision, provenance, unavailable, update_request, upload_for, user,
};
use justin_core::{
    Availability, CallbackDelivery, CallbackStatus, Decision, DecisionType, ExportRow, Recorded,
    Store, StoreError, StudyRecord, TestingStore, UpdateRequest,
};
use justin_core::{DecisionGuard, Enrollment, Policy, UpdateInclusion};
use justin_store_sqlite::testing::TestDatabase;

use crate::support::{pack, unpack, ScratchDir};

/// Fills every table; returns the update request ids.
fn populate(store: &dyn Store) -> Vec<uuid::Uuid> {
    let params = store
        .seed_parameters("algo", &serde_json::json!({"mu": [0.5, 1]}), at(0))
        .unwrap();
    for name in ["alice", "bob"] {
        store
            .add_user(&user(name), &Enrollment::default(), at(0))
            .unwrap();
    }
    for i in 0..3 {
        let d = decision("alice", i, params.version);
        store.record_decision(&d, DecisionGuard::None).unwrap();
        store.record_study_data(&upload_for(&d)).unwrap();
    }
    // An upload without a logged decision.
    store
        .record_study_data(&upload_for(&decision("bob", 7, params.version)))
        .unwrap();
    // An unavailable decision of another type, with a reason that needs quoting, and its
    // upload; and a decision of a third type at an index the default type has too.
    let off = unavailable(
        decision("alice", 3, params.version),
        "evening",
        Some("driving, \"busy\""),
    );
    store.record_decision(&off, DecisionGuard::None).unwrap();
    store.record_study_data(&upload_for(&off)).unwrap();
    let morning = Decision {
        decision_type: DecisionType::parse("morning").unwrap(),
        ..decision("alice", 0, params.version)
    };
    store
        .record_decision(&morning, DecisionGuard::None)
        .unwrap();
    let requests: Vec<UpdateRequest> = (1..=3).map(update_request).collect();
    for r in &requests {
        store.create_update_request(r).unwrap();
    }
    store
        .claim_update(at(10))
        .unwrap()
        .unwrap()
        .complete("algo", &serde_json::json!({"v": 2}), &provenance(), at(11))
        .unwrap();
    store
        .claim_update(at(12))
        .unwrap()
        .unwrap()
        .fail("two\nlines, \"quoted\"", at(13))
        .unwrap();
    store
        .record_callback(
            requests[0].id,
            &CallbackDelivery {
                status: CallbackStatus::Failed,
                attempts: 3,
                last_error: Some(String::new()),
                finished_at: Some(at(14)),
            },
        )
        .unwrap();
    requests.iter().map(|r| r.id).collect()
}

#[derive(Debug, PartialEq)]
struct Contents {
    counts: BTreeMap<String, u64>,
    decisions: Vec<Decision>,
    study_data: Vec<StudyRecord>,
    export: Vec<ExportRow>,
    parameters: Vec<Option<justin_core::ModelParameters>>,
    updates: Vec<Option<UpdateRequest>>,
}

fn contents(store: &dyn TestingStore, updates: &[uuid::Uuid]) -> Contents {
    Contents {
        counts: store.row_counts().unwrap().into_iter().collect(),
        decisions: store.decisions().unwrap().map(Result::unwrap).collect(),
        study_data: store.study_data().unwrap().map(Result::unwrap).collect(),
        export: store.export().unwrap().map(Result::unwrap).collect(),
        parameters: (1..=3).map(|v| store.parameters(v).unwrap()).collect(),
        updates: updates
            .iter()
            .map(|id| store.update_request(*id).unwrap())
            .collect(),
    }
}

#[test]
fn a_backup_restores_into_another_sqlite_database() {
    let source = TestDatabase::create();
    let updates = populate(source.store());
    let before = contents(source.store(), &updates);
    let dir = ScratchDir::new();
    let backup = source.store().backup(&dir, at(20)).unwrap();

    let target = TestDatabase::create();
    target
        .store()
        .add_user(&user("someone-else"), &Enrollment::default(), at(0))
        .unwrap();
    let report = target.store().restore(&backup.path).unwrap();

    assert_eq!(report.row_counts, backup.row_counts);
    assert_eq!(contents(target.store(), &updates), before);
    // The uploads the completed update read show its version, the unavailable one none, and
    // so they do after the restore.
    let used: Vec<Option<i64>> = before
        .export
        .iter()
        .filter_map(|row| row.upload.as_ref().map(|u| u.used_in_version))
        .collect();
    assert_eq!(used, [Some(2), Some(2), Some(2), None]);
    // Ids continue after the restored ones.
    let next = decision("bob", 0, 2);
    assert_eq!(
        target
            .store()
            .record_decision(&next, DecisionGuard::None)
            .unwrap(),
        Recorded::Inserted
    );
    assert_eq!(
        target.store().decisions().unwrap().last().unwrap().unwrap(),
        next
    );
    // The unfinished request is queued again.
    assert_eq!(
        target
            .store()
            .claim_update(at(30))
            .unwrap()
            .unwrap()
            .request()
            .id,
        updates[2]
    );
}

#[test]
fn the_backup_file_has_the_postgres_adapter_layout_and_formats() {
    let db = TestDatabase::create();
    populate(db.store());
    let dir = ScratchDir::new();
    let backup = db.store().backup(&dir, at(20)).unwrap();
    let files = unpack(&backup.path);

    let manifest: serde_json::Value = serde_json::from_str(&files["manifest.json"]).unwrap();
    assert_eq!(manifest["format_version"], 1);
    assert_eq!(
        manifest["migrations"],
        serde_json::json!([
            "20250101000000",
            "20250201000000",
            "20250301000000",
            "20250401000000",
            "20250402000000",
            "20250501000000",
            "20261201000000",
            "20261202000000",
            "20261203000000",
            "20261204000000",
            "20261205000000"
        ])
    );
    let names: Vec<&str> = manifest["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "users",
            "model_parameters",
            "actions",
            "study_data",
            "model_update_requests",
            "update_provenance",
            "participant_events",
            "erasures",
            "study_data_corrections"
        ]
    );
    for table in manifest["tables"].as_array().unwrap() {
        let file = table["file"].as_str().unwrap();
        let header = files[file].lines().next().unwrap();
        let columns: Vec<&str> = table["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(header, columns.join(","), "{file}");
    }

    let users = &files["users.csv"];
    assert_eq!(
        users.lines().nth(1).unwrap(),
        "1,alice,2025-06-15T15:06:40.000000Z,,,,,,,",
        "ids, text and RFC 3339 times in UTC with microseconds; no window, withdrawal or erasure"
    );
    let study = &files["study_data.csv"];
    // action_logged, decision_type, available: the three columns before sent_timestamp and
    // policy (whose values here hold no comma).
    let policies: Vec<&str> = study
        .lines()
        .skip(1)
        .map(|l| l.rsplit_once(',').map_or(l, |(_, policy)| policy))
        .collect();
    assert_eq!(
        policies,
        ["algorithm", "algorithm", "algorithm", "", "algorithm"],
        "the logged decision's policy, NULL without one"
    );
    let last_three: Vec<&str> = study
        .lines()
        .skip(1)
        .map(|l| {
            let l = l.rsplit_once(',').map_or(l, |(rest, _)| rest);
            let before_sent = l.rsplit_once(',').map_or(l, |(rest, _)| rest);
            before_sent
                .rsplitn(4, ',')
                .last()
                .map_or(before_sent, |rest| &before_sent[rest.len() + 1..])
        })
        .collect();
    assert_eq!(
        last_three,
        [
            "t,default,t",
            "t,default,t",
            "t,default,t",
            "f,default,t",
            "t,evening,f"
        ],
        "booleans as t/f"
    );
    let provenance = &files["update_provenance.csv"];
    assert!(
        provenance.ends_with(
            ",2,1.2.3,algo,abc,2,,2025-06-15T15:06:51.000000Z,5,\"algorithm,warmup\",,,,,0\n"
        ),
        "NULL as an empty field; the update could read study data up to id 5, imputed nothing and \
         read no correction: {provenance}"
    );
    let actions = &files["actions.csv"];
    assert!(
        actions.contains(
            ",0,0.0,1,42,evening,f,\"driving, \"\"busy\"\"\",2025-01-01T12:00:00Z,algorithm,,,t\n"
        ),
        "an unavailable decision with its quoted reason: {actions}"
    );
    assert!(
        actions.ends_with(",1,0.75,1,42,morning,t,,2025-01-01T12:00:00Z,algorithm,,,t\n"),
        "no reason is NULL: {actions}"
    );
    assert!(
        study.contains(r#""{""steps"":10}""#),
        "JSON as quoted text: {study}"
    );
    let requests = &files["model_update_requests.csv"];
    // The processing request: NULL finished_at, error, parameter_version, started_at.
    let processing = requests
        .lines()
        .find(|l| l.contains(",processing,"))
        .unwrap();
    assert!(
        processing.contains(",processing,,,,0,,pending,0,,"),
        "NULL is an empty unquoted field: {processing}"
    );
    assert!(
        requests.contains("\"two\nlines, \"\"quoted\"\"\""),
        "text with line breaks and quotes is quoted: {requests}"
    );
    assert!(
        requests.contains(",failed,3,\"\","),
        "an empty string is quoted, unlike NULL: {requests}"
    );
}

/// Writes a backup file as `justin-store` would, from the tables' headers and CSV data.
fn write_backup_file(file: &std::path::Path, migrations: &[&str], tables: &[(&str, &str, String)]) {
    let manifest = serde_json::json!({
        "format_version": 1,
        "producer": "justin-store 0.1.0",
        "migrations": migrations,
        "tables": tables.iter().map(|(name, header, csv)| serde_json::json!({
            "name": name,
            "file": format!("{name}.csv"),
            "rows": csv.lines().count(),
            "columns": header.split(',').collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    });
    let mut entries = vec![("manifest.json".to_owned(), manifest.to_string())];
    for (name, header, csv) in tables {
        entries.push((format!("{name}.csv"), format!("{header}\n{csv}")));
    }
    let entries: Vec<(&str, String)> = entries
        .iter()
        .map(|(n, t)| (n.as_str(), t.clone()))
        .collect();
    pack(file, &entries);
}

const UPDATE_ID: &str = "5f0c6a8e-3d2b-4c1a-9e8f-0a1b2c3d4e5f";

/// The tables that did not change in migration 2025-03-01, in PostgreSQL's formats.
fn unchanged_tables() -> [(&'static str, &'static str, String); 3] {
    let id = UPDATE_ID;
    [
        (
            "users",
            "id,user_id,created_at",
            "7,alice,2025-01-01 12:00:00.123456+00\n".to_owned(),
        ),
        (
            "model_parameters",
            "version,algorithm,parameters,created_at",
            "1,algo,\"{\"\"mu\"\": [0.5, 1]}\",2025-01-01 12:00:00+00\n\
             2,algo,\"{\"\"mu\"\": [1, 2]}\",2025-01-01 14:00:01.5+02\n"
                .to_owned(),
        ),
        (
            "model_update_requests",
            "id,request_timestamp,created_at,callback_url,status,finished_at,error,\
             parameter_version,attempts,started_at,callback_status,callback_attempts,\
             callback_error,callback_finished_at",
            format!(
                "{id},2025-01-01 12:00:00+00,2025-01-01 12:00:00+00,http://cb,completed,\
                 2025-01-01 12:00:01.5+00,,2,1,2025-01-01 12:00:01+00,delivered,1,,\
                 2025-01-01 12:00:02+00\n"
            ),
        ),
    ]
}

/// The provenance of the update in [`unchanged_tables`], with the study data it could read
/// (the column migration 2025-03-01 added) or, with `None`, as before that migration.
fn provenance_table(last_study_data_id: Option<i64>) -> (&'static str, &'static str, String) {
    let id = UPDATE_ID;
    let row = format!("{id},2,0.1.0,algo,abc,1,,2025-01-01 12:00:01.5+00");
    match last_study_data_id {
        Some(last) => (
            "update_provenance",
            "update_id,parameter_version,service_version,algorithm,config_hash,rows_read,\
             backup_file,created_at,last_study_data_id",
            format!("{row},{last}\n"),
        ),
        None => (
            "update_provenance",
            "update_id,parameter_version,service_version,algorithm,config_hash,rows_read,\
             backup_file,created_at",
            format!("{row}\n"),
        ),
    }
}

/// A backup as `justin-store` wrote it from PostgreSQL before migrations 2025-04-01 (exact
/// numbers) and 2025-04-02 (timestamps as sent), which a database with them restores: `COPY`'s
/// time format with an offset, JSONB's spacing, `t`/`f`. Its decisions, uploads and update
/// requests get their time as sent as migration 2025-04-02 fills it.
#[test]
fn a_backup_in_postgres_formats_restores() {
    let dir = ScratchDir::new();
    std::fs::create_dir_all(&*dir).unwrap();
    let file = dir.join("from-postgres.tar");
    let [users, parameters, requests] = unchanged_tables();
    let tables = [
        users,
        parameters,
        (
            "actions",
            "id,user_id,decision_idx,request_timestamp,created_at,context,state,action,\
             action_prob,parameter_version,rng_seed,decision_type,available,unavailable_reason",
            "41,alice,0,2025-01-01 12:00:00+00,2025-01-01 12:00:01.000001+00,\
             \"{\"\"steps\"\": 10}\",\"[1, 2.5]\",1,0.75,1,-1,default,t,\n\
             42,alice,0,2025-01-01 12:00:00+00,2025-01-01 12:00:01+00,{},[],0,0,1,5,evening,f,\
             \"asleep, \"\"really\"\"\"\n"
                .to_owned(),
        ),
        (
            "study_data",
            "id,user_id,decision_idx,request_timestamp,created_at,context,action,action_prob,\
             state,outcome,reward,action_logged,decision_type,available",
            "9,alice,0,2025-01-01 12:00:00+00,2025-01-01 12:00:02+00,\"{\"\"steps\"\": 10}\",\
             1,0.75,[3],{},1e-05,t,default,t\n"
                .to_owned(),
        ),
        requests,
        provenance_table(Some(9)),
    ];
    write_backup_file(
        &file,
        &["20250101000000", "20250201000000", "20250301000000"],
        &tables,
    );

    let db = TestDatabase::create();
    let store = db.store();
    store.check_backup(&file).unwrap();
    store.restore(&file).unwrap();

    let decisions: Vec<Decision> = store.decisions().unwrap().map(Result::unwrap).collect();
    assert_eq!(decisions.len(), 2);
    assert_eq!(decisions[0].rng_seed, u64::MAX);
    assert_eq!(
        decisions[0].decided_at,
        chrono::DateTime::from_timestamp(1_735_732_801, 1_000).unwrap()
    );
    assert_eq!(decisions[0].availability, Availability::Available);
    assert_eq!(decisions[0].sent_timestamp, "2025-01-01T12:00:00.000000Z");
    assert_eq!(decisions[1].decision_type.as_str(), "evening");
    assert_eq!(
        decisions[1].availability.reason(),
        Some("asleep, \"really\""),
        "unavailable, with its reason"
    );
    let params = store.current_parameters().unwrap().unwrap();
    assert_eq!(params.version, 2);
    assert_eq!(params.values, serde_json::json!({"mu": [1, 2]}));
    assert_eq!(
        params.created_at,
        chrono::DateTime::from_timestamp(1_735_732_801, 500_000_000).unwrap(),
        "offsets are converted to UTC"
    );
    let request = store
        .update_request(uuid::Uuid::parse_str(UPDATE_ID).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(request.parameter_version, Some(2));
    assert_eq!(request.provenance.unwrap().rows_read, 1);
    assert_eq!(request.sent_timestamp, "2025-01-01T12:00:00.000000Z");
    let study: Vec<StudyRecord> = store.study_data().unwrap().map(Result::unwrap).collect();
    assert!((study[0].reward - 1e-5).abs() < 1e-20);
    assert_eq!(study[0].sent_timestamp, "2025-01-01T12:00:00.000000Z");
    let export: Vec<ExportRow> = store.export().unwrap().map(Result::unwrap).collect();
    assert_eq!(export[0].upload.as_ref().unwrap().used_in_version, Some(2));
    assert_eq!(export[1].upload, None);
    // Ids continue after the restored ones, and the restored user is there.
    assert!(store
        .add_user(&user("alice"), &Enrollment::default(), at(0))
        .is_err());
    store
        .add_user(&user("bob"), &Enrollment::default(), at(0))
        .unwrap();
    let counts: BTreeMap<String, u64> = store.row_counts().unwrap().into_iter().collect();
    assert_eq!(counts["users"], 2);
    let backup = store.backup(&dir, at(5)).unwrap();
    let users = &unpack(&backup.path)["users.csv"];
    assert!(users.contains("\n8,bob,"), "{users}");
    assert!(
        users.contains("\n7,alice,2025-01-01T12:00:00.123456Z,,,,,,,\n"),
        "{users}"
    );
}

/// A backup taken before migration 2025-03-01 has the old columns of actions, study_data and
/// update_provenance: checking or restoring it says so and what to do, and changes nothing.
#[test]
fn a_backup_from_before_decision_types_is_refused_with_what_to_do() {
    let dir = ScratchDir::new();
    std::fs::create_dir_all(&*dir).unwrap();
    let file = dir.join("old.tar");
    let [users, parameters, requests] = unchanged_tables();
    let tables = [
        users,
        parameters,
        (
            "actions",
            "id,user_id,decision_idx,request_timestamp,created_at,context,state,action,\
             action_prob,parameter_version,rng_seed",
            "41,alice,0,2025-01-01 12:00:00+00,2025-01-01 12:00:01+00,{},[1],1,0.75,1,-1\n"
                .to_owned(),
        ),
        (
            "study_data",
            "id,user_id,decision_idx,request_timestamp,created_at,context,action,action_prob,\
             state,outcome,reward,action_logged",
            "9,alice,0,2025-01-01 12:00:00+00,2025-01-01 12:00:02+00,{},1,0.75,[3],{},1,t\n"
                .to_owned(),
        ),
        requests,
        provenance_table(None),
    ];
    write_backup_file(&file, &["20250101000000", "20250201000000"], &tables);

    let db = TestDatabase::create();
    let store = db.store();
    store
        .add_user(&user("kept"), &Enrollment::default(), at(0))
        .unwrap();
    for result in [store.check_backup(&file), store.restore(&file)] {
        match result {
            Err(StoreError::InvalidBackup(reason)) => {
                assert!(reason.contains("predates migration 2025-03-01"), "{reason}");
                assert!(reason.contains("justin migrate"), "{reason}");
            }
            other => panic!("expected InvalidBackup, got {other:?}"),
        }
    }
    let counts: BTreeMap<String, u64> = store.row_counts().unwrap().into_iter().collect();
    assert_eq!(counts["users"], 1, "nothing changed");
}

/// A backup taken before migration 2025-05-01 (the life of a trial) has neither the columns it
/// appended nor its two tables: it restores, and its rows read as the migration completes rows
/// (no windows, withdrawals or erasures; decisions drawn by the algorithm in the study; uploads
/// with their logged decision's policy; updates that learned from the algorithm's decisions).
#[test]
fn a_backup_from_before_the_trial_life_restores_with_what_rows_were() {
    let dir = ScratchDir::new();
    std::fs::create_dir_all(&*dir).unwrap();
    let file = dir.join("before-trial-life.tar");
    let id = UPDATE_ID;
    let t = "2025-01-01T12:00:00.000000Z";
    let [users, parameters, _] = unchanged_tables();
    let tables = [
        users,
        parameters,
        (
            "actions",
            "id,user_id,decision_idx,request_timestamp,created_at,context,state,action,\
             action_prob,parameter_version,rng_seed,decision_type,available,unavailable_reason,\
             sent_timestamp",
            format!(
                "41,alice,0,{t},{t},{{}},[1],1,0.75,1,-1,default,t,,then\n\
                 42,alice,1,{t},{t},{{}},[],0,0,1,5,default,f,asleep,then\n"
            ),
        ),
        (
            "study_data",
            "id,user_id,decision_idx,request_timestamp,created_at,context,action,action_prob,\
             state,outcome,reward,action_logged,decision_type,available,sent_timestamp",
            format!(
                "9,alice,0,{t},{t},{{}},1,0.75,[3],{{}},1,t,default,t,then\n\
                 10,alice,7,{t},{t},{{}},0,0.5,[3],{{}},0,f,default,t,then\n"
            ),
        ),
        (
            "model_update_requests",
            "id,request_timestamp,created_at,callback_url,status,finished_at,error,\
             parameter_version,attempts,started_at,callback_status,callback_attempts,\
             callback_error,callback_finished_at,sent_timestamp",
            format!("{id},{t},{t},http://cb,completed,{t},,2,1,{t},delivered,1,,{t},then\n"),
        ),
        (
            "update_provenance",
            "update_id,parameter_version,service_version,algorithm,config_hash,rows_read,\
             backup_file,created_at,last_study_data_id",
            format!("{id},2,0.1.0,algo,abc,1,,{t},10\n"),
        ),
    ];
    write_backup_file(
        &file,
        &[
            "20250101000000",
            "20250201000000",
            "20250301000000",
            "20250401000000",
            "20250402000000",
        ],
        &tables,
    );

    let db = TestDatabase::create();
    let store = db.store();
    store
        .add_user(&user("kept"), &Enrollment::default(), at(0))
        .unwrap();
    let checked = store.check_backup(&file).unwrap();
    let report = store.restore(&file).unwrap();
    assert_eq!(report, checked);
    let names: Vec<&str> = report.row_counts.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "users",
            "model_parameters",
            "actions",
            "study_data",
            "model_update_requests",
            "update_provenance"
        ],
        "the backup's tables"
    );

    let counts: BTreeMap<String, u64> = store.row_counts().unwrap().into_iter().collect();
    assert_eq!(counts["users"], 1, "the restore replaced every row");
    assert_eq!((counts["participant_events"], counts["erasures"]), (0, 0));
    let alice = store.participant(&user("alice")).unwrap().unwrap();
    assert_eq!(alice.enrollment, Enrollment::default());
    assert_eq!(alice.withdrawal, None);
    assert_eq!((alice.decisions, alice.uploads), (2, 2));
    let decisions: Vec<Decision> = store.decisions().unwrap().map(Result::unwrap).collect();
    assert!(decisions.iter().all(|d| d.policy == Policy::Algorithm));
    assert_eq!(decisions[0].availability, Availability::Available);
    assert_eq!(decisions[1].availability.reason(), Some("asleep"));
    assert!(decisions[1].availability.in_study());
    let request = store
        .update_request(uuid::Uuid::parse_str(UPDATE_ID).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(request.provenance.unwrap().included_policies, "algorithm");
    let export: Vec<ExportRow> = store.export().unwrap().map(Result::unwrap).collect();
    assert_eq!(
        export[0].upload.as_ref().unwrap().used_in_version,
        Some(2),
        "the update learned from the algorithm's decisions"
    );
    // An update that learns from the algorithm's decisions only reads both uploads: the one of
    // the algorithm's decision, and the one without a logged decision.
    let job = store.claim_update(at(1));
    assert!(job.unwrap().is_none(), "nothing is queued");
    store.create_update_request(&update_request(9)).unwrap();
    let mut job = store.claim_update(at(2)).unwrap().unwrap();
    let read = job
        .study_data(UpdateInclusion {
            warmup: false,
            fallback: false,
            host: false,
        })
        .unwrap()
        .count();
    assert_eq!(read, 2);
    drop(job);

    // A backup taken now has every column and table, with the defaults filled in.
    let backup = store.backup(&dir, at(5)).unwrap();
    let files = unpack(&backup.path);
    assert!(files["users.csv"].contains(&format!(
        "\n7,alice,{}\n",
        "2025-01-01T12:00:00.123456Z,,,,,,,"
    )));
    let study: Vec<&str> = files["study_data.csv"].lines().skip(1).collect();
    assert!(study[0].ends_with(",then,algorithm"), "{study:?}");
    assert!(
        study[1].ends_with(",then,"),
        "no logged decision: {study:?}"
    );
    assert!(files["actions.csv"].contains(",asleep,then,algorithm,,,t\n"));
    assert!(files["update_provenance.csv"].ends_with(",10,algorithm,,,,,\n"));
    assert_eq!(
        files["participant_events.csv"],
        "id,user_id,kind,recorded_at,study_start,study_start_sent,study_end,study_end_sent,reason\n"
    );
    assert_eq!(
        files["erasures.csv"],
        "id,erased_at,participant_number,pseudonym,row_counts,backup_file\n"
    );
}

/// A backup taken before migration 2026-12-04 has no `study_data_corrections` and no
/// `update_provenance.last_correction_id`: it restores with no corrections, and its update
/// reads the uploads as they were.
#[test]
fn a_backup_from_before_corrections_restores_without_corrections() {
    let source = TestDatabase::create();
    let updates = populate(source.store());
    let before = contents(source.store(), &updates);
    // A correction the old layout cannot hold, of an upload the update read.
    let first: StudyRecord = source
        .store()
        .study_data()
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    source
        .store()
        .record_correction(&StudyRecord {
            reward: first.reward + 1.0,
            ..first.clone()
        })
        .unwrap();
    let dir = ScratchDir::new();
    let backup = source.store().backup(&dir, at(20)).unwrap();
    let mut files = unpack(&backup.path);
    files.remove("study_data_corrections.csv");
    let mut manifest: serde_json::Value = serde_json::from_str(&files["manifest.json"]).unwrap();
    manifest["migrations"]
        .as_array_mut()
        .unwrap()
        .retain(|m| m != "20261204000000");
    let tables = manifest["tables"].as_array_mut().unwrap();
    tables.retain(|t| t["name"] != "study_data_corrections");
    for table in tables.iter_mut() {
        if table["name"] == "update_provenance" {
            let columns = table["columns"].as_array_mut().unwrap();
            assert_eq!(columns.pop().unwrap(), "last_correction_id");
        }
    }
    files.insert("manifest.json".into(), manifest.to_string());
    let provenance = files["update_provenance.csv"].clone();
    let mut reader = justin_backup::csv::CsvReader::new(provenance.as_bytes());
    let mut out = Vec::new();
    while let Some(mut record) = reader.next_record().unwrap() {
        record.pop();
        justin_backup::csv::write_record(&mut out, &record).unwrap();
    }
    files.insert(
        "update_provenance.csv".into(),
        String::from_utf8(out).unwrap(),
    );
    let old = dir.join("before-corrections.tar");
    let entries: Vec<(&str, String)> = files.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    pack(&old, &entries);

    let target = TestDatabase::create();
    let report = target.store().restore(&old).unwrap();

    assert!(report
        .row_counts
        .iter()
        .all(|(table, _)| table != "study_data_corrections"));
    assert_eq!(
        contents(target.store(), &updates),
        before,
        "as before the correction"
    );
    let read: Vec<StudyRecord> = target
        .store()
        .update_rows(2)
        .unwrap()
        .map(|r| r.unwrap().into_record())
        .collect();
    assert_eq!(read[0], first);
    // Corrections go on from there, and the restored update still reads none.
    target.store().record_correction(&first).unwrap();
    let again: Vec<StudyRecord> = target
        .store()
        .update_rows(2)
        .unwrap()
        .map(|r| r.unwrap().into_record())
        .collect();
    assert_eq!(again, read);
}

/// A backup taken before migration 2026-12-03 (what updates imputed), and so before 2026-12-04
/// too, has `update_provenance` without their five columns and no corrections; it restores with
/// the columns NULL, as the migrations leave the rows they find, and every row reads back as it
/// was.
#[test]
fn a_backup_from_before_the_outcome_window_restores_as_it_was() {
    let source = TestDatabase::create();
    let updates = populate(source.store());
    let before = contents(source.store(), &updates);
    let dir = ScratchDir::new();
    let current = source.store().backup(&dir, at(20)).unwrap().path;
    let files = unpack(&current);
    let mut manifest: serde_json::Value = serde_json::from_str(&files["manifest.json"]).unwrap();
    manifest["migrations"]
        .as_array_mut()
        .unwrap()
        .retain(|m| m != "20261203000000" && m != "20261204000000");
    let tables = manifest["tables"].as_array_mut().unwrap();
    tables.retain(|t| t["name"] != "study_data_corrections");
    let mut entries = Vec::new();
    for table in tables.iter_mut() {
        let name = table["name"].as_str().unwrap().to_owned();
        let mut text = files[&format!("{name}.csv")].clone();
        if name == "update_provenance" {
            let columns = table["columns"].as_array_mut().unwrap();
            let kept = columns.len() - 5;
            columns.truncate(kept);
            let mut reader = justin_backup::csv::CsvReader::new(text.as_bytes());
            let mut out = Vec::new();
            while let Some(mut record) = reader.next_record().unwrap() {
                record.truncate(record.len() - 5);
                justin_backup::csv::write_record(&mut out, &record).unwrap();
            }
            text = String::from_utf8(out).unwrap();
        }
        entries.push((format!("{name}.csv"), text));
    }
    let mut all = vec![("manifest.json".to_owned(), manifest.to_string())];
    all.extend(entries);
    let all: Vec<(&str, String)> = all.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    let old = dir.join("before-outcome-window.tar");
    pack(&old, &all);
    assert!(unpack(&old)["update_provenance.csv"].starts_with(
        "update_id,parameter_version,service_version,algorithm,config_hash,rows_read,\
         backup_file,created_at,last_study_data_id,included_policies\n"
    ));

    let target = TestDatabase::create();
    let checked = target.store().check_backup(&old).unwrap();
    let report = target.store().restore(&old).unwrap();
    assert_eq!(report, checked);
    assert_eq!(contents(target.store(), &updates), before);
    assert!(target
        .store()
        .completed_updates()
        .unwrap()
        .iter()
        .all(|u| u.provenance.imputed.is_none()));
}
