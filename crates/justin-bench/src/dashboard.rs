//! The dashboard at scale: a study of `--dashboard-participants` × `--dashboard-decisions`
//! decisions, each with its upload, seeded in bulk into a fresh database of the backend (one
//! `INSERT ... SELECT` per table: PostgreSQL's `generate_series`, SQLite's recursive CTE in one
//! transaction), then one real update through the API (so the history has an update with
//! provenance and a page comparing the policy before and after it), then timed `GET`s of each
//! dashboard page, one at a time: the first request of each page on its own (it may bring the
//! dashboard's own summaries up to date with the seeded rows), then `--dashboard-requests`
//! timed ones, reported as p50 and p99.
//!
//! Rows are seeded in time order (every participant's first decision, then every participant's
//! second, ...), so their ids follow their decision times as in a running study, where each
//! decision is stored when it is made; uploads follow their decisions in the same order.
//!
//! The seeded study follows a schedule of five decision times a day (08:00 to 20:00 UTC, every
//! three hours), the last of them today, with rewards and probabilities that vary by
//! participant and time; the service runs with that `[schedule]`, so the overview shows the
//! watchdog's report over it too.

use super::*;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;

use crate::report::Latency;

/// Decision times a day in the seeded study, and the hour of the first.
const PER_DAY: u64 = 5;
const FIRST_HOUR: u64 = 8;
/// The service's schedule matching the seeded times.
const SCHEDULE: &str = r#"[{at="08:00"},{at="11:00"},{at="14:00"},{at="17:00"},{at="20:00"}]"#;
/// Every seeded participant's id starts with this, followed by its number.
const PREFIX: &str = "dash-";

/// One page's timings.
#[derive(Debug, serde::Serialize)]
pub struct PageTiming {
    /// The page: `overview`, `participants`, `updates` or `update` (one update's page).
    pub page: String,
    /// The path requested.
    pub path: String,
    /// Milliseconds the first request took (not counted in the latencies).
    pub first_ms: f64,
    /// Timed requests (after the first).
    pub requests: u64,
    /// Their latencies.
    pub latency: Option<Latency>,
    /// Requests that did not answer 200 with HTML, first included.
    pub failed: u64,
    /// The first failure, if any.
    pub failure: Option<String>,
}

/// The dashboard step on one backend.
#[derive(Debug, serde::Serialize, Default)]
pub struct DashboardReport {
    /// Participants seeded.
    pub participants: u64,
    /// Decisions seeded per participant (each with its upload).
    pub decisions_per_participant: u64,
    /// Rows in `actions` and `study_data` after seeding.
    pub decisions: u64,
    /// Uploads stored.
    pub uploads: u64,
    /// Seconds the seeding took (inserts and statistics).
    pub seed_secs: f64,
    /// Seconds from requesting the update over the seeded study to its callback.
    pub update_secs: f64,
    /// Each page's timings.
    pub pages: Vec<PageTiming>,
}

/// Seeds a fresh database of `backend`, starts the service on it and times the pages.
pub(crate) fn dashboard_at_scale(
    args: &Args,
    bin: &Path,
    scratch: &Path,
    backend: Backend,
    pg_url: &str,
) -> Result<DashboardReport> {
    let dir = scratch.join(format!("dashboard-{backend:?}").to_lowercase());
    std::fs::create_dir_all(&dir).context(|| format!("cannot create {}", dir.display()))?;
    let database = match backend {
        Backend::Postgres => Some(pg::BenchDatabase::create(pg_url)?),
        Backend::Sqlite => None,
    };
    let url = database.as_ref().map_or_else(
        || format!("sqlite://{}", dir.join("dashboard.db").display()),
        |d| d.url.clone(),
    );
    let result = measure(args, bin, &dir, &url);
    if let Some(database) = database {
        database.drop_now()?;
    }
    result
}

fn measure(args: &Args, bin: &Path, dir: &Path, url: &str) -> Result<DashboardReport> {
    let mut env = service::fixed_env();
    env.push(("JUSTIN_DATABASE__URL", url.to_owned()));
    env.push((
        "JUSTIN_LOGGING__DIR",
        dir.join("logs").display().to_string(),
    ));
    env.push((
        "JUSTIN_BACKUP__DIR",
        dir.join("backups").display().to_string(),
    ));
    // The update here is for the history's sake; its backup is measured by the update step.
    env.push(("JUSTIN_BACKUP__ENABLED", "false".into()));
    env.push(("JUSTIN_SCHEDULE__TIMES", SCHEDULE.into()));
    env.push(("JUSTIN_SCHEDULE__TIME_ZONE", "UTC".into()));
    // Started first: it creates and migrates the database and stores parameter version 1.
    let mut service = Service::start(bin, dir, &env)?;
    let (participants, per) = (args.dashboard_participants, args.dashboard_decisions);
    let mut out = DashboardReport {
        participants,
        decisions_per_participant: per,
        ..DashboardReport::default()
    };
    let (days, first_day, start) = first_time(per);
    println!(
        "justin-bench: dashboard: seeding {participants} participants × {per} decisions with uploads ({days} days from {first_day})"
    );
    let seeding = Instant::now();
    seed(url, PREFIX, participants, per, start)?;
    out.seed_secs = seeding.elapsed().as_secs_f64();
    let mut db = stored::Db::open(url)?;
    out.decisions = db.count("actions")?;
    out.uploads = db.count("study_data WHERE action_logged")?;
    drop(db);
    if out.decisions != participants * per || out.uploads != out.decisions {
        return fail(format!(
            "seeding stored {} decisions and {} uploads, not {}",
            out.decisions,
            out.uploads,
            participants * per
        ));
    }
    println!(
        "justin-bench: dashboard: seeded {} decisions and uploads in {:.1} s; requesting an update",
        out.decisions, out.seed_secs
    );
    let requested = Instant::now();
    let update_id = update(args, &service.base_url)?;
    out.update_secs = requested.elapsed().as_secs_f64();
    ensure_running(&mut service, "the dashboard's update")?;

    // The first request of a page may bring the dashboard's summaries up to date with the
    // whole seeded study: it gets as long as an update.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(args.update_timeout)))
        .build()
        .into();
    let pages = [
        ("overview", "/dashboard".to_owned()),
        ("participants", "/dashboard/participants".to_owned()),
        ("updates", "/dashboard/updates".to_owned()),
        ("update", format!("/dashboard/updates/{update_id}")),
    ];
    for (name, path) in pages {
        let page = time_page(
            &agent,
            &service.base_url,
            name,
            &path,
            args.dashboard_requests,
        );
        println!("{}", row(&page));
        out.pages.push(page);
        ensure_running(&mut service, &path)?;
    }
    service.stop()?;
    Ok(out)
}

/// The days a study of `per` decisions per participant spans, its first day, and the time of
/// its first decision (seconds since the epoch), such that the last decision falls today.
fn first_time(per: u64) -> (u64, chrono::NaiveDate, i64) {
    let days = per.div_ceil(PER_DAY);
    let today = chrono::Utc::now().date_naive();
    let first_day = today - chrono::Days::new(days.saturating_sub(1));
    let start = first_day
        .and_hms_opt(FIRST_HOUR as u32, 0, 0)
        .map(|t| t.and_utc().timestamp())
        .unwrap_or_default();
    (days, first_day, start)
}

/// Seeds the database at `url` (the service has created its tables) with `participants`
/// participants `{prefix}0`, `{prefix}1`, ..., each with `per` decisions (indexes 0 to
/// `per - 1`) and their uploads, five a day, the first at `start` (seconds since the epoch),
/// then gathers the planner's statistics.
pub(crate) fn seed(url: &str, prefix: &str, participants: u64, per: u64, start: i64) -> Result<()> {
    match stored::Db::open(url)? {
        stored::Db::Pg(mut conn) => seed_postgres(&mut conn, prefix, participants, per, start),
        stored::Db::Sqlite(mut conn) => seed_sqlite(&mut conn, prefix, participants, per, start),
    }
}

/// The time of the first decision of a seeded study of `per` decisions per participant whose
/// last decision falls today (seconds since the epoch).
pub(crate) fn seed_start(per: u64) -> i64 {
    first_time(per).2
}

/// The table row of one page.
pub(crate) fn row(page: &PageTiming) -> String {
    let latency = page.latency.map_or("no timed request".to_owned(), |l| {
        format!(
            "p50 {:8.1} ms  p99 {:8.1} ms  max {:8.1} ms",
            l.p50_ms, l.p99_ms, l.max_ms
        )
    });
    format!(
        "dashboard {:<13} first {:8.1} ms  {latency}  ({} requests, {} failed)",
        page.page, page.first_ms, page.requests, page.failed
    )
}

/// Requests an update and waits for its callback; the update's id.
fn update(args: &Args, base_url: &str) -> Result<String> {
    let receiver = Receiver::start("127.0.0.1:0", None).map_err(BenchError)?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(load::REQUEST_TIMEOUT))
        .build()
        .into();
    let body = serde_json::json!({
        "timestamp": chrono::Utc::now().to_rfc3339(),
        "callback_url": receiver.url(),
    });
    let mut answer = agent
        .post(format!("{base_url}/api/v1/update"))
        .send_json(&body)
        .context(|| "POST /api/v1/update got no answer".to_owned())?;
    let status = answer.status().as_u16();
    let json: serde_json::Value = answer.body_mut().read_json().unwrap_or_default();
    let Some(id) = json["update_id"].as_str().filter(|_| status == 202) else {
        return fail(format!("POST /api/v1/update answered {status}: {json}"));
    };
    let Some(arrival) = receiver.next(Duration::from_secs(args.update_timeout)) else {
        return fail(format!(
            "the update's callback did not arrive within {} s (update {id})",
            args.update_timeout
        ));
    };
    match arrival.update() {
        Some((_, "completed")) => Ok(id.to_owned()),
        other => fail(format!("the update {id} did not complete: {other:?}")),
    }
}

/// One untimed-for-the-percentiles first request, then `requests` timed ones, one at a time.
fn time_page(
    agent: &ureq::Agent,
    base_url: &str,
    name: &str,
    path: &str,
    requests: u64,
) -> PageTiming {
    let mut page = PageTiming {
        page: name.to_owned(),
        path: path.to_owned(),
        first_ms: 0.0,
        requests: 0,
        latency: None,
        failed: 0,
        failure: None,
    };
    let mut times = Vec::new();
    for n in 0..=requests {
        let sent = Instant::now();
        let outcome = get_page(agent, &format!("{base_url}{path}"));
        let elapsed = sent.elapsed().as_secs_f64() * 1000.0;
        if let Err(e) = outcome {
            page.failed += 1;
            page.failure.get_or_insert(e);
        }
        if n == 0 {
            page.first_ms = elapsed;
        } else {
            times.push(elapsed);
        }
    }
    page.requests = times.len() as u64;
    times.sort_by(f64::total_cmp);
    let quantile =
        |q: f64| times[((q * times.len() as f64).ceil() as usize).clamp(1, times.len()) - 1];
    if !times.is_empty() {
        page.latency = Some(Latency {
            p50_ms: quantile(0.50),
            p99_ms: quantile(0.99),
            max_ms: times[times.len() - 1],
            mean_ms: times.iter().sum::<f64>() / times.len() as f64,
        });
    }
    page
}

/// GETs a page and reads it to the end; an error unless it is a 200 with HTML.
fn get_page(agent: &ureq::Agent, url: &str) -> std::result::Result<(), String> {
    let mut response = agent.get(url).call().map_err(|e| format!("{url}: {e}"))?;
    let status = response.status().as_u16();
    let html = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    let body = response
        .body_mut()
        .with_config()
        .limit(64 * 1024 * 1024)
        .read_to_string()
        .map_err(|e| format!("{url}: {e}"))?;
    if status == 200 && html {
        Ok(())
    } else {
        Err(format!(
            "{url} answered {status}: {}",
            body.chars().take(200).collect::<String>()
        ))
    }
}

/// The seeded decision of participant `u` at index `i`: its time, temperature, probability
/// (spread over the clip bounds [0.2, 0.8], some at each bound) and the draw's uniform number.
/// Both dialects compute the same numbers from these expressions.
fn decision_columns(start: i64) -> String {
    format!(
        "{start} + (i / {PER_DAY}) * 86400 + (i % {PER_DAY}) * 10800 AS ts, \
         (150 + (u * 7 + i) % 200) / 10.0 AS t, \
         min_max(0.1 + ((u * 31 + i * 17) % 90) / 100.0) AS p, \
         ((u * 13 + i * 29) % 100) / 100.0 AS r"
    )
}

fn seed_postgres(
    conn: &mut PgConnection,
    prefix: &str,
    participants: u64,
    per: u64,
    start: i64,
) -> Result<()> {
    let columns = decision_columns(start)
        .replace("min_max(", "least(0.8, greatest(0.2, ")
        .replace("/ 100.0) AS p", "/ 100.0)) AS p");
    let ts = "to_timestamp(ts)";
    let users = format!(
        "INSERT INTO users (user_id, created_at) \
             SELECT '{prefix}' || u, to_timestamp({start}) FROM generate_series(0, {last_u}) AS u;",
        last_u = participants.saturating_sub(1),
    );
    let decisions = format!(
        "INSERT INTO actions (user_id, decision_idx, request_timestamp, created_at, context, state, \
             action, action_prob, parameter_version, rng_seed, decision_type, available, \
             unavailable_reason, sent_timestamp) \
         SELECT '{prefix}' || u, i, {ts}, {ts}, ('{{\"temperature\":' || round(t, 1) || '}}')::json, \
             ('[' || round(t, 1) || ']')::json, (r < p)::int::smallint, p, 1, u * {per} + i, 'default', true, \
             NULL, to_char({ts} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') \
         FROM generate_series(0, {last_u}) AS u CROSS JOIN generate_series(0, {last_i}) AS i, \
             LATERAL (SELECT {columns}) AS x ORDER BY i, u; \
         INSERT INTO study_data (user_id, decision_idx, request_timestamp, created_at, context, \
             action, action_prob, state, outcome, reward, action_logged, decision_type, \
             available, sent_timestamp, policy) \
         SELECT user_id, decision_idx, request_timestamp + interval '1 hour', \
             request_timestamp + interval '1 hour', context, action, action_prob, state, \
             ('{{\"clicks\":' || rng_seed % 10 || '}}')::json, (rng_seed % 10)::float8, true, \
             decision_type, true, \
             to_char((request_timestamp + interval '1 hour') AT TIME ZONE 'UTC', \
                     'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
             'algorithm' \
         FROM actions ORDER BY id;",
        last_u = participants.saturating_sub(1),
        last_i = per.saturating_sub(1),
    );
    if participants == 0 {
        return Ok(());
    }
    let sql = if per == 0 { users } else { users + &decisions };
    pg::execute(conn, &sql)?;
    // Each on its own: VACUUM cannot run inside the transaction a multi-statement string is.
    for table in ["users", "actions", "study_data"] {
        pg::execute(conn, &format!("VACUUM ANALYZE {table}"))?;
    }
    // The fill's pages written out now rather than by the checkpoints its WAL would trigger
    // while the steps measure: a study that holds these rows wrote them out long ago. Only a
    // superuser (or a member of pg_checkpoint) may; without it the steps run as they are.
    if let Err(e) = pg::execute(conn, "CHECKPOINT") {
        println!(
            "justin-bench: no CHECKPOINT after seeding ({e}); checkpoints may run during the steps"
        );
    }
    Ok(())
}

fn seed_sqlite(
    conn: &mut SqliteConnection,
    prefix: &str,
    participants: u64,
    per: u64,
    start: i64,
) -> Result<()> {
    let columns = decision_columns(start)
        .replace("min_max(", "min(0.8, max(0.2, ")
        .replace("/ 100.0) AS p", "/ 100.0)) AS p");
    // The service's own text form of an instant: RFC 3339, UTC, microseconds.
    let text =
        |secs: &str| format!("strftime('%Y-%m-%dT%H:%M:%S', {secs}, 'unixepoch') || '.000000Z'");
    let sent = |secs: &str| format!("strftime('%Y-%m-%dT%H:%M:%SZ', {secs}, 'unixepoch')");
    let numbers = |name: &str, last: u64| {
        format!("{name}(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM {name} WHERE n < {last})")
    };
    let users = format!(
        "WITH RECURSIVE {us} INSERT INTO users (user_id, created_at) \
             SELECT '{prefix}' || n, {created} FROM us;",
        us = numbers("us", participants.saturating_sub(1)),
        created = text(&start.to_string()),
    );
    let decisions = format!(
        "WITH RECURSIVE {us}, {is}, \
             d AS (SELECT u, i, {columns} FROM (SELECT us.n AS u, is_.n AS i FROM us, is_)) \
         INSERT INTO actions (user_id, decision_idx, request_timestamp, created_at, context, \
             state, action, action_prob, parameter_version, rng_seed, decision_type, available, \
             unavailable_reason, sent_timestamp) \
         SELECT '{prefix}' || u, i, {ts}, {ts}, json_object('temperature', t), json_array(t), \
             r < p, p, 1, u * {per} + i, 'default', 1, NULL, {ts_sent} FROM d ORDER BY i, u; \
         INSERT INTO study_data (user_id, decision_idx, request_timestamp, created_at, context, \
             action, action_prob, state, outcome, reward, action_logged, decision_type, \
             available, sent_timestamp, policy) \
         SELECT user_id, decision_idx, {upload}, {upload}, context, action, action_prob, state, \
             json_object('clicks', rng_seed % 10), CAST(rng_seed % 10 AS REAL), 1, \
             decision_type, 1, {upload_sent}, 'algorithm' \
         FROM actions ORDER BY id;",
        us = numbers("us", participants.saturating_sub(1)),
        is = numbers("is_", per.saturating_sub(1)),
        ts = text("ts"),
        ts_sent = sent("ts"),
        upload = text("unixepoch(request_timestamp) + 3600"),
        upload_sent = sent("unixepoch(request_timestamp) + 3600"),
    );
    if participants == 0 {
        return Ok(());
    }
    // The seeding connection's page cache holds the indexes' pages the fill touches (the
    // decisions arrive in time order, so every participant's part of the key index grows at
    // once); with SQLite's default of 2 MB each insert reads its pages back from the file.
    // The fill is one transaction into a scratch file, so it waits for no disk flush; its pages
    // are then moved from the write-ahead log into the database file, as SQLite's automatic
    // checkpoints would otherwise do during the steps.
    let sql = format!(
        "PRAGMA cache_size = -4194304; PRAGMA synchronous = OFF; \
         BEGIN; {users} {} COMMIT; ANALYZE; PRAGMA synchronous = NORMAL; \
         PRAGMA wal_checkpoint(TRUNCATE);",
        if per == 0 { "" } else { decisions.as_str() }
    );
    conn.batch_execute(&sql)
        .context(|| "seeding the SQLite database failed".to_owned())
}
