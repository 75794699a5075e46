//! The stored-rows step: the routes a running study serves all day, on a database that already
//! holds `--stored-rows` decisions, each with its upload, against the same routes on a database
//! that holds none, measured in the same run. Two fresh databases of the backend: the first
//! with only the participants (`--users` of them, registered by SQL as the filled one's are),
//! the second with the same participants and the stored rows spread evenly over them, seeded by
//! SQL in time order with the service's indexes in place and the planner's statistics
//! gathered (src/dashboard.rs). On each, at `--stored-concurrency` connections: `/action` on
//! decision indexes above every stored one, `/upload_data` of those decisions, and
//! `GET /api/v1/users/{id}`, the participant's record with their counts. Each route's
//! throughput on the filled database is reported as a share of the empty one's, and each
//! database must hold exactly the seeded rows and what the service answered 201 to.

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{Context, Result};
use crate::load::{self, Decision, Route, Work, USER_PREFIX};
use crate::report::{self, BackendReport, Phase};
use crate::scale::with_cpu;
use crate::service::{self, Service};
use crate::{
    check, dashboard, ensure_running, pg, stored, timing, Args, Backend, SETUP_CONCURRENCY,
    UPLOAD_MARGIN,
};

/// One route on both databases.
#[derive(Debug, Serialize, Default)]
pub struct RouteComparison {
    /// The route.
    pub route: String,
    /// Requests/s on the database without stored decisions.
    pub empty_per_sec: f64,
    /// Requests/s on the database with the stored rows.
    pub filled_per_sec: f64,
    /// `filled_per_sec / empty_per_sec`.
    pub filled_to_empty: f64,
    /// p50 on each, ms.
    pub empty_p50_ms: f64,
    /// See [`Self::empty_p50_ms`].
    pub filled_p50_ms: f64,
    /// p99 on each, ms.
    pub empty_p99_ms: f64,
    /// See [`Self::empty_p99_ms`].
    pub filled_p99_ms: f64,
}

/// What the step found on one backend.
#[derive(Debug, Serialize, Default)]
pub struct StoredRowsReport {
    /// Connections.
    pub concurrency: usize,
    /// Participants on both databases.
    pub participants: u64,
    /// Decisions stored per participant on the filled database (each with its upload).
    pub decisions_per_participant: u64,
    /// Decisions on the filled database before the routes ran (as many uploads).
    pub stored_decisions: u64,
    /// Seconds seeding the filled database took (inserts, then statistics).
    pub fill_secs: f64,
    /// Each route, in the order driven.
    pub routes: Vec<RouteComparison>,
}

/// `n` as the step's names show it: `10M`, `20k`, or the number.
fn short(n: u64) -> String {
    if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("{}M", n / 1_000_000)
    } else if n >= 1000 && n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

/// The step's name of `route` on a database with `stored` decisions.
fn step_name(route: Route, stored: u64) -> String {
    let route = match route {
        Route::ShowUser => "GET /users/{id}",
        Route::Action => "/action",
        Route::UploadData => "/upload_data",
        Route::AddUser => "/add_user",
    };
    format!("{route} {} stored", short(stored))
}

/// Runs the step on `backend` in `scratch/stored-rows-<backend>`; the routes go into
/// `report.phases` (what went wrong into `report.errors`), the comparison into
/// `report.stored_rows`.
pub(crate) fn compare(
    args: &Args,
    bin: &Path,
    scratch: &Path,
    backend: Backend,
    pg_url: &str,
    report: &mut BackendReport,
) -> Result<()> {
    let name = format!("{backend:?}").to_lowercase();
    let per = args.stored_rows.div_ceil(args.users);
    let mut out = StoredRowsReport {
        concurrency: args.stored_concurrency,
        participants: args.users,
        decisions_per_participant: per,
        stored_decisions: per * args.users,
        ..StoredRowsReport::default()
    };
    println!(
        "justin-bench: {name}: /action, /upload_data and GET /api/v1/users/{{id}} at {} connections on a database \
         without decisions, then on one with {} participants × {per} decisions with uploads ({} rows each in \
         actions and study_data)",
        args.stored_concurrency, args.users, out.stored_decisions
    );
    let empty = side(args, bin, scratch, backend, pg_url, &name, 0, None, report)?;
    let filled = side(
        args,
        bin,
        scratch,
        backend,
        pg_url,
        &name,
        per,
        Some(&empty),
        report,
    )?;
    out.fill_secs = filled.fill_secs;
    for (e, f) in empty.phases.iter().zip(&filled.phases) {
        out.routes.push(RouteComparison {
            route: e.0.path().to_owned(),
            empty_per_sec: e.1,
            filled_per_sec: f.1,
            filled_to_empty: if e.1 > 0.0 { f.1 / e.1 } else { 0.0 },
            empty_p50_ms: e.2,
            filled_p50_ms: f.2,
            empty_p99_ms: e.3,
            filled_p99_ms: f.3,
        });
    }
    for line in lines(&name, &out) {
        println!("{line}");
    }
    report.stored_rows = Some(out);
    Ok(())
}

/// The summary lines of the comparison.
pub fn lines(backend: &str, s: &StoredRowsReport) -> Vec<String> {
    let mut out = vec![format!(
        "{backend} with {} stored decisions and uploads ({} participants × {}; seeded in {:.1} s) against none, \
         at {} conn:",
        s.stored_decisions, s.participants, s.decisions_per_participant, s.fill_secs, s.concurrency
    )];
    for r in &s.routes {
        out.push(format!(
            "  {:<24} {:>9.1} vs {:>9.1} req/s = {:.3}; p50 {:.2} vs {:.2} ms, p99 {:.2} vs {:.2} ms",
            r.route,
            r.filled_per_sec,
            r.empty_per_sec,
            r.filled_to_empty,
            r.filled_p50_ms,
            r.empty_p50_ms,
            r.filled_p99_ms,
            r.empty_p99_ms
        ));
    }
    out
}

/// A route's figures on one database: requests/s, p50 and p99 (ms).
type Figures = (Route, f64, f64, f64);

/// What one database's run measured: each route's figures, in order.
struct Side {
    phases: Vec<Figures>,
    fill_secs: f64,
}

/// Seeds a fresh database of `backend` with the participants and `per` decisions each (with
/// their uploads), starts the service on it and drives the three routes. `empty`, for the
/// filled database, is the run on the empty one, whose upload rate sizes the uploads.
#[allow(clippy::too_many_arguments)]
fn side(
    args: &Args,
    bin: &Path,
    scratch: &Path,
    backend: Backend,
    pg_url: &str,
    name: &str,
    per: u64,
    empty: Option<&Side>,
    report: &mut BackendReport,
) -> Result<Side> {
    let stored = per * args.users;
    let dir = scratch.join(format!("stored-rows-{name}-{}", short(stored)));
    std::fs::create_dir_all(&dir).context(|| format!("cannot create {}", dir.display()))?;
    let database = match backend {
        Backend::Postgres => Some(pg::BenchDatabase::create(pg_url)?),
        Backend::Sqlite => None,
    };
    let url = database.as_ref().map_or_else(
        || format!("sqlite://{}", dir.join("bench.db").display()),
        |d| d.url.clone(),
    );
    let mut env = service::fixed_env();
    env.push(("JUSTIN_DATABASE__URL", url.clone()));
    env.push((
        "JUSTIN_LOGGING__DIR",
        dir.join("logs").display().to_string(),
    ));
    env.push(("JUSTIN_BACKUP__ENABLED", "false".into()));
    // Started first: it creates and migrates the database.
    let mut service = Service::start(bin, &dir, &env)?;
    let result = (|| {
        if stored > 0 {
            println!(
                "justin-bench: {name}: seeding {} participants × {per} decisions with uploads",
                args.users
            );
        }
        let seeding = Instant::now();
        dashboard::seed(
            &url,
            USER_PREFIX,
            args.users,
            per,
            dashboard::seed_start(per),
        )?;
        let fill_secs = seeding.elapsed().as_secs_f64();
        if stored > 0 {
            println!(
                "justin-bench: {name}: seeded {stored} decisions and uploads in {fill_secs:.1} s"
            );
        }
        let side = drive(args, &mut service, name, per, empty, report)?;
        let mut db = stored::Db::open(&url)?;
        let decisions = db.count("actions")?;
        let uploads = db.count("study_data WHERE action_logged")?;
        if (decisions, uploads) != (stored + side.1, stored + side.2) {
            report.errors.push(format!(
                "the database seeded with {stored} decisions and uploads holds {decisions} decisions and {uploads} \
                 uploads after the service answered 201 to {} decisions and {} uploads",
                side.1, side.2
            ));
        }
        report
            .errors
            .extend(counts_shown(&service.base_url, &mut db, args.users)?);
        Ok(Side {
            phases: side.0,
            fill_secs,
        })
    })();
    match service.stop() {
        Ok((status, false)) if status.success() => {}
        Ok((status, _)) => report.errors.push(format!(
            "the service on {} stored rows did not stop cleanly on SIGTERM: {status}",
            short(stored)
        )),
        Err(e) => report.errors.push(format!(
            "could not stop the service on {} stored rows: {e}",
            short(stored)
        )),
    }
    if let Some(database) = database {
        if let Err(e) = database.drop_now() {
            report.errors.push(format!(
                "could not drop the database with {} stored rows: {e}",
                short(stored)
            ));
        }
    }
    result
}

/// Compares what `GET /api/v1/users/{id}` shows of the first and the last of the `users`
/// participants with their rows in `db` (the seeded ones and those the routes added); a
/// message per difference.
fn counts_shown(base_url: &str, db: &mut stored::Db, users: u64) -> Result<Vec<String>> {
    let mut wrong = Vec::new();
    for n in [0, users.saturating_sub(1)] {
        let user = format!("{USER_PREFIX}{n}");
        let path = format!("/api/v1/users/{user}");
        let (status, body) = get(base_url, &path)?;
        if status != 200 {
            wrong.push(format!("GET {path} answered {status}"));
            continue;
        }
        let shown: serde_json::Value = serde_json::from_str(&body)
            .context(|| format!("GET {path} answered a body that is not JSON"))?;
        for (field, table) in [("decisions", "actions"), ("uploads", "study_data")] {
            let stored = db.count(&format!("{table} WHERE user_id = '{user}'"))?;
            let answered = shown["user"][field].as_u64();
            if answered != Some(stored) {
                wrong.push(format!(
                    "GET {path} shows {field} {answered:?} but {table} holds {stored} rows of {user}"
                ));
            }
        }
    }
    Ok(wrong)
}

/// A GET of `path` on the service: its status and body.
fn get(base_url: &str, path: &str) -> Result<(u16, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut response = agent
        .get(format!("{base_url}{path}"))
        .call()
        .context(|| format!("GET {path} got no answer"))?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .read_to_string()
        .context(|| format!("GET {path}: unreadable body"))?;
    Ok((status, body))
}

/// One phase's figures for the comparison, after printing and checking it.
fn record(
    report: &mut BackendReport,
    name: &str,
    run: &load::RunResult,
    usage: crate::cpu::Usage,
    stored: u64,
) -> Figures {
    let mut phase = Phase::new(name, run);
    phase.route = step_name(run.route, stored);
    phase.set_cpu(usage);
    println!("{}", report::phase_row(&phase));
    let figures = (
        run.route,
        phase.requests_per_sec,
        phase.latency.p50_ms,
        phase.latency.p99_ms,
    );
    check(report, &phase);
    report.phases.push(phase);
    figures
}

/// The three routes on the running service; their figures, and the decisions and uploads it
/// answered 201 to.
fn drive(
    args: &Args,
    service: &mut Service,
    name: &str,
    per: u64,
    empty: Option<&Side>,
    report: &mut BackendReport,
) -> Result<(Vec<Figures>, u64, u64)> {
    let c = args.stored_concurrency;
    let stored = per * args.users;
    let base = service.base_url.clone();
    let pid = service.pid();
    let timing = timing(args);
    let mut phases = Vec::new();
    // Sequence numbers from here on give every participant decision indexes from `per` up.
    let next_pair = Arc::new(AtomicU64::new(stored));
    let action = |limit: Option<u64>| Work::Action {
        users: args.users,
        next: Arc::clone(&next_pair),
        limit,
        extra_features: 0,
    };

    let (run, usage) = with_cpu(pid, || {
        load::run(&base, &action(None), c, args.generator_threads, timing)
    })?;
    phases.push(record(report, name, &run, usage, stored));
    let mut decisions = run.created;
    let mut pool: Vec<Decision> = run.decisions;
    ensure_running(service, "/action")?;

    // Enough decisions for the uploads at the rate expected of them (this database's /action
    // rate, or the empty database's upload rate when faster), made untimed first.
    let expected = empty
        .and_then(|e| e.phases.iter().find(|p| p.0 == Route::UploadData))
        .map_or(phases[0].1, |p| p.1.max(phases[0].1));
    let need = (UPLOAD_MARGIN * expected * (args.warmup + args.seconds)).ceil() as usize + 2 * c;
    if pool.len() < need {
        let from = next_pair.load(Ordering::Relaxed);
        let top_up = load::run(
            &base,
            &action(Some(from + (need - pool.len()) as u64)),
            SETUP_CONCURRENCY.max(c),
            args.generator_threads,
            load::Timing {
                warmup: Duration::ZERO,
                measure: None,
            },
        )?;
        check(report, &Phase::new(name, &top_up));
        decisions += top_up.created;
        pool.extend(top_up.decisions);
    }
    let work = Work::UploadData {
        pool: pool.as_slice().into(),
        cursor: Arc::new(AtomicUsize::new(0)),
    };
    let (run, usage) = with_cpu(pid, || {
        load::run(&base, &work, c, args.generator_threads, timing)
    })?;
    if run.exhausted {
        report.errors.push(format!(
            "/api/v1/upload_data on {} stored rows ran out of decisions to upload before its time was up; \
             its rate is understated",
            short(stored)
        ));
    }
    let uploads = run.created;
    phases.push(record(report, name, &run, usage, stored));
    ensure_running(service, "/upload_data")?;

    let work = Work::ShowUser {
        users: args.users,
        next: Arc::new(AtomicU64::new(0)),
    };
    let (run, usage) = with_cpu(pid, || {
        load::run(&base, &work, c, args.generator_threads, timing)
    })?;
    phases.push(record(report, name, &run, usage, stored));
    ensure_running(service, "GET /api/v1/users/{id}")?;
    Ok((phases, decisions, uploads))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_show_the_stored_rows_briefly() {
        assert_eq!(short(10_000_000), "10M");
        assert_eq!(short(20_000), "20k");
        assert_eq!(short(0), "0");
        assert_eq!(short(1_500), "1500");
        assert_eq!(
            step_name(Route::ShowUser, 10_000_000),
            "GET /users/{id} 10M stored"
        );
        assert_eq!(step_name(Route::Action, 0), "/action 0 stored");
    }
}
