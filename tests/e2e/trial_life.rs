//! A trial's life end to end: `justin simulate` plays staggered enrollment with a fixed study
//! length, a warm-up of each participant's first 5 decisions, one withdrawal and one erasure
//! against a real `justin serve`; the export then has one row per participant × decision time
//! with the right flags, replay is exact but for the erased participant's decisions (reported
//! as unverifiable, not as mismatches), and no table holds the erased participant's id.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;
use std::process::Command;

use justin_backup::csv::CsvReader;
use justin_e2e::{env_for, justin, reported_backup, run, ScratchDir, Served, TestDatabase};

const PARTICIPANTS: u32 = 6;
const TIMES: u32 = 10;
/// Participant i starts at decision time i and stays for LENGTH decision times.
const LENGTH: u32 = 6;
const WARMUP: u32 = 5;
const WARMUP_PROBABILITY: f64 = 0.3;
/// Participant 1 withdraws at decision time 4; participant 2 is erased after the run.
const WITHDRAWN: (u32, u32) = (1, 4);
const ERASED: u32 = 2;

fn study_env(db: &TestDatabase) -> Vec<(&'static str, String)> {
    let mut env = env_for(db);
    env.extend([
        (
            "JUSTIN_ALGORITHM__WARMUP__PROBABILITY",
            WARMUP_PROBABILITY.to_string(),
        ),
        (
            "JUSTIN_ALGORITHM__WARMUP__FIRST_DECISIONS",
            WARMUP.to_string(),
        ),
    ]);
    env
}

/// The export's rows, as column name → value.
fn export_rows(dir: &Path, env: &[(&str, String)]) -> Vec<BTreeMap<String, String>> {
    let out = run(justin(dir, env).args(["export", "--out", "study.csv"]));
    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
    let text = std::fs::read(dir.join("study.csv")).unwrap();
    let mut reader = CsvReader::new(Cursor::new(text));
    let header: Vec<String> = reader
        .next_record()
        .unwrap()
        .unwrap()
        .into_iter()
        .map(Option::unwrap_or_default)
        .collect();
    let mut rows = Vec::new();
    while let Some(record) = reader.next_record().unwrap() {
        assert_eq!(record.len(), header.len());
        rows.push(
            header
                .iter()
                .cloned()
                .zip(record.into_iter().map(Option::unwrap_or_default))
                .collect(),
        );
    }
    rows
}

/// A row's probability of action 1.
fn prob(row: &BTreeMap<String, String>) -> f64 {
    row["action1_prob"].parse().unwrap()
}

/// Every member of a backup archive, as one text.
fn archive_text(archive: &Path) -> String {
    let out = Command::new("tar")
        .arg("-xOf")
        .arg(archive)
        .output()
        .expect("the tar command runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_simulated_trial_keeps_the_whole_grid_with_its_flags() {
    let db = TestDatabase::create();
    let (served_dir, sim_dir) = (ScratchDir::new(), ScratchDir::new());
    let env = study_env(&db);
    let served = Served::start(served_dir.path(), &env);

    let withdraw = format!("{}@{}", WITHDRAWN.0, WITHDRAWN.1);
    let erase = ERASED.to_string();
    let (participants, times, length) = (
        PARTICIPANTS.to_string(),
        TIMES.to_string(),
        LENGTH.to_string(),
    );
    let out = run(justin(sim_dir.path(), &[]).args([
        "simulate",
        "--url",
        &served.base_url,
        "--out",
        "summary.csv",
        "--participants",
        &participants,
        "--decision-times",
        &times,
        "--update-every",
        "20",
        "--seed",
        "7",
        "--features",
        "temperature:28:4",
        "--outcome-field",
        "clicks",
        "--enroll-every",
        "1",
        "--study-length",
        &length,
        "--withdraw",
        &withdraw,
        "--erase",
        &erase,
    ]));
    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
    let pseudonym = out
        .stdout
        .lines()
        .find_map(|l| l.split_once("their decisions are kept as "))
        .map(|(_, p)| p.trim().to_owned())
        .unwrap_or_else(|| panic!("no erasure reported: {}", out.stdout));
    assert!(pseudonym.starts_with("erased-"), "{pseudonym}");

    let rows = export_rows(served_dir.path(), &env);
    assert_eq!(rows.len(), (PARTICIPANTS * TIMES) as usize);
    let mut seen = BTreeMap::new();
    for row in &rows {
        let user = &row["user_id"];
        let p: u32 = if *user == pseudonym {
            ERASED
        } else {
            let number = user
                .strip_prefix("sim-7-")
                .unwrap_or_else(|| panic!("{user}"));
            assert_ne!(number, ERASED.to_string(), "the erased id is in the export");
            number.parse().unwrap()
        };
        let t: u32 = row["decision_idx"].parse().unwrap();
        assert!(seen.insert((p, t), row).is_none(), "({p}, {t}) twice");
    }
    assert_eq!(
        seen.len(),
        (PARTICIPANTS * TIMES) as usize,
        "the whole grid"
    );

    for p in 0..PARTICIPANTS {
        let mut in_study_so_far = 0;
        for t in 0..TIMES {
            let row = seen[&(p, t)];
            let what = format!("participant {p}, decision time {t}: {row:?}");
            let in_window = p <= t && t < p + LENGTH;
            let withdrawn = p == WITHDRAWN.0 && t >= WITHDRAWN.1;
            if !in_window || withdrawn {
                assert_eq!(row["in_study"], "false", "{what}");
                assert_eq!(row["available"], "false", "{what}");
                let reason = if withdrawn {
                    "withdrawn"
                } else {
                    "not_in_study"
                };
                assert_eq!(row["unavailable_reason"], reason, "{what}");
                assert_eq!(row["action"], "0", "{what}");
                assert_eq!(prob(row), 0.0, "{what}");
                assert_eq!(row["outcome"], "", "nothing uploaded: {what}");
                continue;
            }
            assert_eq!(row["in_study"], "true", "{what}");
            assert_eq!(row["available"], "true", "{what}");
            if in_study_so_far < WARMUP {
                assert_eq!(row["policy"], "warmup", "{what}");
                assert_eq!(prob(row), WARMUP_PROBABILITY, "{what}");
            } else {
                assert_eq!(row["policy"], "algorithm", "{what}");
            }
            in_study_so_far += 1;
            if p == ERASED {
                assert_eq!(row["context"], "{}", "{what}");
                assert_eq!(row["state"], "[]", "{what}");
                assert_eq!(row["outcome"], "", "{what}");
            } else {
                assert!(row["context"].contains("temperature"), "{what}");
                assert!(row["outcome"].contains("clicks"), "{what}");
            }
        }
    }

    // Replay is exact for everyone but the erased participant, whose decisions it reports as
    // unverifiable rather than as mismatches.
    let replay = run(justin(served_dir.path(), &env).args(["replay"]));
    assert!(
        replay.status.success(),
        "{}\n{}",
        replay.stdout,
        replay.stderr
    );
    let said = format!("{}{}", replay.stdout, replay.stderr);
    assert!(said.contains(&pseudonym), "{said}");
    assert!(said.contains("0 mismatches"), "{said}");

    // No table holds the erased participant's id: a backup of every table taken now has none,
    // while the one taken just before the erasure does.
    let backup = run(justin(served_dir.path(), &env).args(["backup"]));
    assert!(backup.status.success(), "{}", backup.stderr);
    let after = archive_text(&reported_backup(served_dir.path(), &backup));
    let erased_id = format!("sim-7-{ERASED}");
    assert!(
        !after.contains(&format!("{erased_id},")),
        "the id is still stored"
    );
    assert!(
        !after.contains(&format!("{erased_id}\"")),
        "the id is still stored"
    );
    assert!(after.contains(&pseudonym));
    assert!(
        after.contains("erasures"),
        "the audit record's table is backed up"
    );
    drop(served);
}
