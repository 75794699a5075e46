//! `justin simulate` against a real `justin serve` that requires an API key: a study run
//! whose summary and stored data agree, the same run twice giving the same summary, the
//! simulated clock's start, missed calls, missing outcomes and late uploads as the export shows
//! them, and the clear stops on a refused key and an unreachable service.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;

use justin_backup::csv::CsvReader;
use justin_e2e::{
    env_for, justin, row_counts, run, sql_lines, Finished, ScratchDir, Served, TestDatabase,
};

/// The key the service accepts.
const KEY: &str = "simulator-key-0123456789abcdef";

/// The CSV header the simulator writes.
const HEADER: &str = "update,update_status,parameter_version,decisions,unavailable,mean_reward,\
                      mean_action_prob,share_at_min,share_at_max,min_probability,\
                      max_probability,decision_seconds,decisions_per_second,update_seconds,\
                      missed_calls,missing_outcomes,late_uploads";

/// The default algorithm, flat_prob, needs a temperature and counts clicks.
const STUDY: [&str; 14] = [
    "--participants",
    "5",
    "--decision-times",
    "6",
    "--update-every",
    "20",
    "--seed",
    "7",
    "--features",
    "temperature:28:4",
    "--reward-coef",
    "temperature=0.1",
    "--outcome-field",
    "clicks",
];

/// A service in `dir` on `db` that accepts [`KEY`] only.
fn serve(dir: &Path, db: &TestDatabase) -> Served {
    let mut env = env_for(db);
    env.push((
        "JUSTIN_AUTH__API_KEYS",
        format!(r#"[{{name="simulator",key="{KEY}"}}]"#),
    ));
    Served::start(dir, &env)
}

/// `justin simulate` in `dir` against `url` with `key` in `JUSTIN_API_KEY`, writing
/// `summary.csv` there.
fn simulate(dir: &Path, url: &str, key: &str, flags: &[&str]) -> Finished {
    let mut cmd = justin(dir, &[("JUSTIN_API_KEY", key.to_owned())]);
    cmd.args(["simulate", "--url", url, "--out", "summary.csv"])
        .args(flags);
    run(&mut cmd)
}

/// The CSV's lines, each split into fields.
fn csv(dir: &Path) -> (String, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(dir.join("summary.csv")).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default().to_owned();
    let rows = lines
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect();
    (header, rows)
}

/// The one value of a one-row query.
fn one(url: &str, sql: &str) -> String {
    let lines = sql_lines(url, sql);
    assert_eq!(lines.len(), 1, "{sql}: {lines:?}");
    lines[0].clone()
}

#[test]
fn simulate_runs_a_study_and_summarises_each_update() {
    let db = TestDatabase::create();
    let (served_dir, sim_dir) = (ScratchDir::new(), ScratchDir::new());
    let served = serve(served_dir.path(), &db);

    let mut flags = STUDY.to_vec();
    flags.extend(["--decision-types", "morning,evening", "--concurrency", "2"]);
    let out = simulate(sim_dir.path(), &served.base_url, KEY, &flags);
    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
    assert!(!out.stdout.contains(KEY) && !out.stderr.contains(KEY));

    // 5 participants × 6 decision times × 2 types = 60 decisions: three windows of 20, each
    // followed by a completed update that stored the next parameter version.
    let (header, rows) = csv(sim_dir.path());
    assert_eq!(header, HEADER);
    assert_eq!(rows.len(), 3, "{rows:?}");
    for (i, row) in rows.iter().enumerate() {
        let expected = [(i + 1).to_string(), "completed".into(), (i + 2).to_string()];
        assert_eq!(row[..3], expected, "{row:?}");
        assert_eq!(row[3..5], ["20", "0"], "{row:?}");
        // flat_prob keeps its probability in [0.2, 0.8], the default --clip.
        assert_eq!(row[9..11], ["0.2", "0.8"], "{row:?}");
    }
    let table_rows = out.stdout.lines().filter(|l| l.contains("completed"));
    assert_eq!(table_rows.count(), 3, "{}", out.stdout);

    let counts = row_counts(db.url());
    assert_eq!(counts["users"], 5);
    assert_eq!(counts["actions"], 60);
    assert_eq!(counts["study_data"], 60);
    assert_eq!(counts["model_parameters"], 4);
    assert_eq!(counts["model_update_requests"], 3);
    let per_user = sql_lines(
        db.url(),
        "SELECT user_id || ':' || CAST(count(*) AS TEXT) || ':' || CAST(max(decision_idx) AS TEXT) \
         AS out FROM actions GROUP BY user_id ORDER BY user_id",
    );
    let expected: Vec<String> = (0..5).map(|p| format!("sim-7-{p}:12:11")).collect();
    assert_eq!(per_user, expected, "12 decisions each, indices 0 to 11");
    assert_eq!(
        one(
            db.url(),
            "SELECT CAST(count(*) AS TEXT) AS out FROM study_data WHERE action_logged"
        ),
        "60",
        "every upload matched its logged decision"
    );
    assert_eq!(
        one(
            db.url(),
            "SELECT CAST(count(*) AS TEXT) AS out FROM model_update_requests \
             WHERE status = 'completed'"
        ),
        "3"
    );

    // The summary's mean rewards are the means of what the service stored.
    let stored: f64 = one(
        db.url(),
        "SELECT CAST(sum(reward) AS TEXT) AS out FROM study_data",
    )
    .parse()
    .unwrap();
    let summarised: f64 = rows
        .iter()
        .map(|r| 20.0 * r[5].parse::<f64>().unwrap())
        .sum();
    assert!(
        (stored - summarised).abs() < 1e-6,
        "{stored} vs {summarised}"
    );

    let params = served.send(
        "GET",
        "/api/v1/parameters",
        None,
        &[("Authorization", &format!("Bearer {KEY}"))],
    );
    assert_eq!(params.status, 200);
    assert_eq!(params.json["version"], 4);
}

#[test]
fn simulate_gives_the_same_summary_for_the_same_seed() {
    let mut summaries = Vec::new();
    for _ in 0..2 {
        let db = TestDatabase::create();
        let (served_dir, sim_dir) = (ScratchDir::new(), ScratchDir::new());
        let served = serve(served_dir.path(), &db);
        let out = simulate(sim_dir.path(), &served.base_url, KEY, &STUDY);
        assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
        let (_, rows) = csv(sim_dir.path());
        // 30 decisions: one window of 20 with its update, then 10 without one.
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(rows[0][..4], ["1", "completed", "2", "20"]);
        assert_eq!(rows[1][..4], ["2", "none", "2", "10"]);
        assert_eq!(row_counts(db.url())["study_data"], 30);
        // Everything but the timings (the last three columns).
        summaries.push(
            rows.into_iter()
                .map(|r| r[..11].to_vec())
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(summaries[0], summaries[1]);
}

#[test]
fn simulate_stops_at_a_refused_key_and_names_the_status() {
    let db = TestDatabase::create();
    let (served_dir, sim_dir) = (ScratchDir::new(), ScratchDir::new());
    let served = serve(served_dir.path(), &db);
    let wrong = "not-the-key-0123456789abcdef";

    let out = simulate(sim_dir.path(), &served.base_url, wrong, &STUDY);
    assert_eq!(out.status.code(), Some(1), "{}", out.stdout);
    assert!(
        out.stderr
            .contains("POST /api/v1/add_user answered 401: Invalid credentials"),
        "{}",
        out.stderr
    );
    assert!(!out.stdout.contains(wrong) && !out.stderr.contains(wrong));
    assert_eq!(row_counts(db.url())["users"], 0);
}

#[test]
fn simulate_names_the_service_it_cannot_reach() {
    let dir = ScratchDir::new();
    // A port nothing listens on any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");

    let out = simulate(dir.path(), &url, KEY, &STUDY);
    assert_eq!(out.status.code(), Some(1), "{}", out.stdout);
    assert!(
        out.stderr
            .contains(&format!("cannot reach the service at {url}")),
        "{}",
        out.stderr
    );
}

/// Decision types and unavailable decision times reach the service as such.
#[test]
fn simulate_sends_decision_types_and_unavailable_decision_times() {
    let db = TestDatabase::create();
    let (served_dir, sim_dir) = (ScratchDir::new(), ScratchDir::new());
    let served = serve(served_dir.path(), &db);

    let mut flags = STUDY.to_vec();
    flags.extend([
        "--decision-types",
        "morning,evening",
        "--unavailable-share",
        "0.3",
    ]);
    let out = simulate(sim_dir.path(), &served.base_url, KEY, &flags);
    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);

    let per_type = sql_lines(
        db.url(),
        "SELECT decision_type || ':' || CAST(count(*) AS TEXT) AS out FROM actions \
         GROUP BY decision_type ORDER BY decision_type",
    );
    assert_eq!(per_type, ["evening:30", "morning:30"]);
    // The service answers an unavailable decision time with probability 0.
    let (_, rows) = csv(sim_dir.path());
    let unavailable: u64 = rows.iter().map(|r| r[4].parse::<u64>().unwrap()).sum();
    assert!(unavailable > 0, "{rows:?}");
    let at_zero = one(
        db.url(),
        "SELECT CAST(count(*) AS TEXT) AS out FROM actions WHERE action_prob = 0",
    );
    assert_eq!(at_zero, unavailable.to_string());
}

/// The export's rows, as column name → value (empty for a missing value).
fn export_rows(dir: &Path, db: &TestDatabase) -> Vec<BTreeMap<String, String>> {
    let out = run(justin(dir, &env_for(db)).args(["export", "--out", "study.csv"]));
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

/// The sum of one count column of the summary.
fn total(rows: &[Vec<String>], column: &str) -> u64 {
    let at = HEADER.split(',').position(|c| c == column).unwrap();
    rows.iter().map(|r| r[at].parse::<u64>().unwrap()).sum()
}

/// `--start` puts decision time t at the start plus t decision intervals; `--missed-call-share`
/// leaves decision times without any decision, `--missing-outcome-share` leaves available
/// decisions without an upload, and `--late-upload-share` sends uploads only after the update
/// that follows their decision, so the first version that used them is one later. The summary
/// counts each, and the export agrees with it.
#[test]
fn simulate_starts_its_clock_and_misses_calls_outcomes_and_update_windows() {
    const PARTICIPANTS: u64 = 6;
    const TIMES: u64 = 10;
    const EVERY: u64 = 12;
    let db = TestDatabase::create();
    let (served_dir, sim_dir) = (ScratchDir::new(), ScratchDir::new());
    let served = serve(served_dir.path(), &db);

    // The study's seed, features and outcome, with a grid of its own.
    let mut flags = STUDY[6..].to_vec();
    flags.extend([
        "--participants",
        "6",
        "--decision-times",
        "10",
        "--update-every",
        "12",
        "--concurrency",
        "3",
        "--unavailable-share",
        "0.2",
        "--start",
        "2026-01-05T08:00:00Z",
        "--missed-call-share",
        "0.15",
        "--missing-outcome-share",
        "0.2",
        "--late-upload-share",
        "0.25",
    ]);
    let out = simulate(sim_dir.path(), &served.base_url, KEY, &flags);
    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
    let (header, summary) = csv(sim_dir.path());
    assert_eq!(header, HEADER);
    // 60 decision times, five windows of 12, each ending in a completed update.
    assert_eq!(summary.len(), 5, "{summary:?}");
    let (decisions, missed) = (
        total(&summary, "decisions"),
        total(&summary, "missed_calls"),
    );
    let missing = total(&summary, "missing_outcomes");
    let late = total(&summary, "late_uploads");
    assert_eq!(decisions + missed, PARTICIPANTS * TIMES);
    assert!(missed > 0 && missing > 0 && late > 0, "{summary:?}");
    assert!(
        out.stdout.contains(&format!(
            "{missed} decision times without a call, {missing} available decisions without \
             an upload, {late} uploads sent after the next update"
        )),
        "{}",
        out.stdout
    );

    let rows = export_rows(served_dir.path(), &db);
    assert_eq!(rows.len() as u64, decisions, "a missed call stores nothing");
    let (mut without_upload, mut sent_late) = (0u64, 0u64);
    for row in &rows {
        let participant: u64 = row["user_id"]
            .strip_prefix("sim-7-")
            .unwrap()
            .parse()
            .unwrap();
        let t: u64 = row["decision_idx"].parse().unwrap();
        // Decision time t is t hours after the start, as sent and as stored.
        let expected = format!("2026-01-05T{:02}:00:00.000000Z", 8 + t);
        assert_eq!(row["request_timestamp"], expected, "{row:?}");
        assert_eq!(row["in_study"], "true", "{row:?}");
        // The window of the decision, and the version the update after it stored.
        let window = (t * PARTICIPANTS + participant) / EVERY;
        assert_eq!(
            row["parameter_version"],
            (window + 1).to_string(),
            "{row:?}"
        );
        let next = window + 2;
        if row["outcome"].is_empty() {
            assert_eq!(
                row["available"], "true",
                "only available outcomes go missing"
            );
            without_upload += 1;
            continue;
        }
        if row["available"] == "false" {
            // An update reads available decisions only.
            assert_eq!(row["used_in_update"], "false", "{row:?}");
            continue;
        }
        match row["used_in_version"].parse::<u64>() {
            Ok(v) if v == next => {}
            Ok(v) => {
                assert_eq!(
                    v,
                    next + 1,
                    "a late upload is used by the update after: {row:?}"
                );
                sent_late += 1;
            }
            // The last window's late uploads come after the last update.
            Err(_) => {
                assert_eq!(next, 6, "{row:?}");
                sent_late += 1;
            }
        }
    }
    assert_eq!(without_upload, missing);
    assert_eq!(sent_late, late);
    assert_eq!(
        one(
            db.url(),
            "SELECT CAST(count(*) AS TEXT) AS out FROM study_data WHERE action_logged"
        ),
        (decisions - missing).to_string(),
        "every upload sent, late or not, matched its decision"
    );
}
