//! The study dashboard in a real browser: headless Chromium (through `chromedriver`) loads each
//! page of a simulated study's dashboard, sending a read-only key as HTTP Basic credentials,
//! and what the pages show is checked against the JSON API: the number of participants, the
//! latest parameter version, each day's decisions, the update history and a red finding for the
//! participant the simulator kept silent. A screenshot of each page is written to
//! `target/dashboard-screenshots/` (the pictures in docs/operations.md are copies).
//!
//! The test's name starts with `browser_`: `make test` runs it on its own, only where Chromium
//! and ChromeDriver are installed (and requires them under `CI=true`), and the other end-to-end
//! runs leave it out. Run alone it fails, with the install command, when they are missing.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::path::{Path, PathBuf};

use chrono::{DurationRound, SecondsFormat, TimeDelta, Utc};
use justin_backup::csv::CsvReader;
use justin_e2e::{env_for, justin, run, ScratchDir, Served, TestDatabase};
use justin_testkit::webdriver::{self, Browser};
use serde_json::Value;

/// The key the simulator (the study server) uses.
const FULL_KEY: &str = "study-server-key-0123456789abcdef";
/// The study team's key: reading only, enough for the dashboard.
const READ_KEY: &str = "study-team-read-key-0123456789ab";
/// Participants in the simulated study, named `p-0`, `p-1`, ...
const PARTICIPANTS: u32 = 4;
/// Decision times per participant, one an hour, the last at the latest full hour.
const DECISION_TIMES: i64 = 8;
/// The participant (by number) whose app goes silent, and the decision time from which on.
const SILENT: (u32, u32) = (2, 3);

/// The schedule: every hour on the hour, UTC. With the watchdog's defaults (a time counts as
/// missed 30 minutes after it, three missed in a row are red) the silent participant's four or
/// five missed hours are red, and the others, whose last decision is at the latest full hour,
/// have missed nothing.
fn schedule() -> String {
    let times: Vec<String> = (0..24)
        .map(|h| format!(r#"{{decision_type="default",at="{h:02}:00"}}"#))
        .collect();
    format!("[{}]", times.join(","))
}

/// A service with the study server's key and the team's read key, and the schedule.
fn serve(dir: &Path, db: &TestDatabase) -> Served {
    let mut env = env_for(db);
    env.push((
        "JUSTIN_AUTH__API_KEYS",
        format!(
            r#"[{{name="study-server",key="{FULL_KEY}"}},{{name="study-team",key="{READ_KEY}",access="read"}}]"#
        ),
    ));
    env.push(("JUSTIN_SCHEDULE__TIMES", schedule()));
    env.push(("JUSTIN_SCHEDULE__TIME_ZONE", "UTC".to_owned()));
    // The overview shows the background check's latest report: one every second, so a report
    // made after the simulation comes soon.
    env.push(("JUSTIN_MONITOR__CHECK_EVERY_SECS", "1".to_owned()));
    Served::start(dir, &env)
}

/// The simulated study: hourly decision times whose last is the latest full hour, windows
/// left open, and participant [`SILENT`] making no call from its decision time on.
fn simulate(dir: &Path, url: &str) {
    let hour = Utc::now().duration_trunc(TimeDelta::hours(1)).unwrap();
    let start = hour - TimeDelta::hours(DECISION_TIMES - 1);
    let silent = format!("{}@{}", SILENT.0, SILENT.1);
    let mut cmd = justin(dir, &[("JUSTIN_API_KEY", FULL_KEY.to_owned())]);
    cmd.args(["simulate", "--url", url, "--out", "summary.csv"])
        .args(["--participants", &PARTICIPANTS.to_string()])
        .args(["--decision-times", &DECISION_TIMES.to_string()])
        .args(["--decision-time-secs", "3600", "--update-every", "8"])
        .args(["--start", &start.to_rfc3339_opts(SecondsFormat::Secs, true)])
        .args(["--user-prefix", "p-", "--outcome-field", "clicks"])
        .args(["--silent", &silent]);
    let out = run(&mut cmd);
    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
}

/// A GET with the read key as a Bearer token; the status and the body.
fn get(base_url: &str, path: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .get(format!("{base_url}{path}"))
        .header("Authorization", format!("Bearer {READ_KEY}"))
        .call()
        .unwrap_or_else(|e| panic!("GET {path}: no answer: {e}"));
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().unwrap();
    (status, body)
}

/// A GET whose answer must be 200 and JSON.
fn get_json(base_url: &str, path: &str) -> Value {
    let (status, body) = get(base_url, path);
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"))
}

/// GET /api/v1/export's rows, each a map of column to value.
fn export_rows(base_url: &str) -> Vec<BTreeMap<String, String>> {
    let (status, body) = get(base_url, "/api/v1/export");
    assert_eq!(status, 200, "GET /api/v1/export: {body}");
    let mut reader = CsvReader::new(Cursor::new(body.into_bytes()));
    let header: Vec<String> = reader
        .next_record()
        .unwrap()
        .unwrap()
        .into_iter()
        .map(Option::unwrap_or_default)
        .collect();
    let mut rows = Vec::new();
    while let Some(record) = reader.next_record().unwrap() {
        let values = record.into_iter().map(Option::unwrap_or_default);
        rows.push(header.iter().cloned().zip(values).collect());
    }
    rows
}

/// The directory the screenshots go to: `target/dashboard-screenshots` of the build that runs
/// this test (the test binary is `target/<profile>/deps/e2e-<hash>`).
fn screenshot_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe
        .ancestors()
        .nth(3)
        .expect("the test binary lives in target/<profile>/deps");
    target.join("dashboard-screenshots")
}

/// The page at `path`, opened with the read key as Basic credentials in the URL (Chromium sends
/// them with the top-level request), and its screenshot saved as `dashboard-<name>.png`.
fn open(browser: &Browser, base_url: &str, path: &str, name: &str) {
    let authority = base_url.strip_prefix("http://").unwrap();
    browser.goto(&format!("http://study-team:{READ_KEY}@{authority}{path}"));
    let title = browser.title();
    assert!(
        !title.is_empty() && !browser.source().contains("\"status\":\"failed\""),
        "{path} did not show a page: {title:?}\n{}",
        browser.source()
    );
    // Every chart has a title and a table of its numbers.
    for chart in browser.find_all("svg[role=img]") {
        assert!(
            chart.find("title").is_some(),
            "{path}: a chart without a <title>"
        );
    }
    browser.screenshot(&screenshot_dir().join(format!("dashboard-{name}.png")));
}

/// An element's text as an integer.
fn integer(browser: &Browser, css: &str) -> i64 {
    let text = browser.expect(css).text();
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{css} shows {text:?}, not an integer: {e}"))
}

#[test]
fn browser_the_dashboard_shows_what_the_api_says() {
    if let Some(missing) = webdriver::missing() {
        panic!("browser test: {missing}");
    }
    let db = TestDatabase::create();
    let (served_dir, sim_dir) = (ScratchDir::new(), ScratchDir::new());
    let served = serve(served_dir.path(), &db);
    let base = served.base_url.clone();
    simulate(sim_dir.path(), &base);

    // Without a key the dashboard asks the browser for one.
    let anonymous: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let refused = anonymous.get(format!("{base}/dashboard")).call().unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    let challenge = refused.headers().get("WWW-Authenticate").unwrap();
    assert!(
        challenge.to_str().unwrap().starts_with("Basic"),
        "{challenge:?}"
    );

    // What the API says.
    let rows = export_rows(&base);
    let participants: BTreeSet<String> = rows.iter().map(|r| r["user_id"].clone()).collect();
    assert_eq!(
        participants.len(),
        PARTICIPANTS as usize,
        "{participants:?}"
    );
    let silent_id = format!("p-{}", SILENT.0);
    assert!(participants.contains(&silent_id), "{participants:?}");
    // Decisions count on the day of their own timestamp, uploads on the day of theirs: an
    // upload sent after midnight for a decision made before it counts on the next day.
    let mut per_day: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for row in &rows {
        per_day
            .entry(row["request_timestamp"][..10].to_owned())
            .or_default()
            .0 += 1;
        let uploaded = &row["upload_request_timestamp"];
        if !uploaded.is_empty() {
            per_day.entry(uploaded[..10].to_owned()).or_default().1 += 1;
        }
    }
    let version = get_json(&base, "/api/v1/parameters")["version"]
        .as_i64()
        .unwrap();
    assert!(
        version >= 2,
        "the simulated study completed updates: version {version}"
    );
    let report = get_json(&base, "/api/v1/monitor");
    let missed = |f: &&Value| {
        f["severity"] == "red" && f["kind"] == "missed_decisions" && f["participant"] == *silent_id
    };
    assert!(
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| missed(&f)),
        "no red missed_decisions finding for {silent_id}: {report}"
    );
    assert_eq!(report["state"], "red", "{report}");
    let missed_by: BTreeSet<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "missed_decisions")
        .filter_map(|f| f["participant"].as_str())
        .collect();
    assert_eq!(missed_by, BTreeSet::from([silent_id.as_str()]), "{report}");

    let browser = Browser::start();

    // The overview, once it shows a background check made after the report above (checks run
    // every second; the page shows their times to the second).
    let api_checked = report["checked_at"].as_str().unwrap()[..19].to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        open(&browser, &base, "/dashboard", "overview");
        let checked = browser
            .expect("#monitor-checked-at")
            .attribute("datetime")
            .unwrap_or_default();
        if checked[..checked.len().min(19)] > *api_checked.as_str() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the overview still shows a check from {checked}, before the API's {api_checked}"
        );
    }
    assert_eq!(browser.expect("#monitor-state").text().trim(), "red");
    assert_eq!(
        integer(&browser, "#participants-count"),
        PARTICIPANTS as i64
    );
    assert_eq!(integer(&browser, "#parameter-version"), version);
    for (day, (decisions, uploads)) in &per_day {
        let cell = format!("#per-day tr[data-day=\"{day}\"] td[data-col=\"decisions\"]");
        assert_eq!(integer(&browser, &cell), *decisions, "decisions on {day}");
        let cell = format!("#per-day tr[data-day=\"{day}\"] td[data-col=\"uploads\"]");
        assert_eq!(integer(&browser, &cell), *uploads, "uploads on {day}");
    }
    let finding = format!(
        "#findings tr[data-severity=\"red\"][data-kind=\"missed_decisions\"][data-participant=\"{silent_id}\"]"
    );
    browser.expect(&finding);
    let shown_missed: BTreeSet<String> = browser
        .find_all("#findings tr[data-kind=\"missed_decisions\"]")
        .iter()
        .filter_map(|row| row.attribute("data-participant"))
        .collect();
    assert_eq!(shown_missed, BTreeSet::from([silent_id.clone()]));

    // The participants.
    open(&browser, &base, "/dashboard/participants", "participants");
    let shown: BTreeSet<String> = browser
        .find_all("#participants tr[data-participant]")
        .iter()
        .filter_map(|row| row.attribute("data-participant"))
        .collect();
    assert_eq!(shown, participants);
    for id in &participants {
        let row = browser.expect(&format!("#participants tr[data-participant=\"{id}\"]"));
        for col in ["status", "last-decision", "last-upload"] {
            let cell = row.find(&format!("td[data-col=\"{col}\"]"));
            assert!(cell.is_some(), "{id}: no {col} cell");
        }
        let last = rows
            .iter()
            .filter(|r| r["user_id"] == *id)
            .map(|r| &r["request_timestamp"])
            .max();
        let shown = row.find("td[data-col=\"last-decision\"]").unwrap().text();
        // The page may show the instant in a shorter form; the date and the hour and minute
        // are in it.
        let last = last.unwrap();
        assert!(
            shown.contains(&last[..10]) && shown.contains(&last[11..16]),
            "{id}: last decision {last}, the page shows {shown:?}"
        );
    }

    // The update history: each update is one the API knows, the newest made the current version.
    open(&browser, &base, "/dashboard/updates", "updates");
    let ids: Vec<String> = browser
        .find_all("#updates tr[data-update-id]")
        .iter()
        .filter_map(|row| row.attribute("data-update-id"))
        .collect();
    assert_eq!(
        ids.len() as i64,
        version - 1,
        "one completed update per version after the first: {ids:?}"
    );
    let mut newest = None;
    for id in &ids {
        let update = get_json(&base, &format!("/api/v1/update/{id}"));
        assert_eq!(update["update_status"], "completed", "{update}");
        if update["parameter_version"] == version {
            newest = Some(id.clone());
        }
        let row = browser.expect(&format!("#updates tr[data-update-id=\"{id}\"]"));
        assert!(
            row.find(&format!("a[href$=\"/dashboard/updates/{id}\"]"))
                .is_some(),
            "the history links to update {id}'s page"
        );
    }
    let newest = newest.expect("the update that stored the current version is in the history");

    // The newest update's page compares the version before it with the one it stored.
    open(
        &browser,
        &base,
        &format!("/dashboard/updates/{newest}"),
        "update",
    );
    assert_eq!(integer(&browser, "#version-after"), version);
    assert_eq!(integer(&browser, "#version-before"), version - 1);
}
