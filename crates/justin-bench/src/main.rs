//! `justin-bench`: the benchmark run by `make bench` (and, for a few seconds per
//! step, by `make bench-smoke` in CI).
//!
//! For each backend (PostgreSQL in a fresh database, then SQLite in a fresh file) it starts the
//! `justin` binary built beside it, registers the users, then drives `/action`, `/upload_data`
//! and `/add_user` at each concurrency for a fixed time. On PostgreSQL it measures, in the same
//! run, the ceiling of `/action`: pgbench inserting one decision-shaped row per transaction at
//! the same concurrency; and the update at scale: a model update over a bulk-filled
//! `study_data`, timed to its callback, with the service's memory sampled; and the export at
//! scale: `GET /api/v1/export` over one decision per filled record, against PostgreSQL's own
//! `COPY` of the same rows, with the service's memory sampled. On each backend, in a fresh
//! database of its own, it times the dashboard's pages over a study seeded in bulk
//! (src/dashboard.rs), and compares `/action` of `thompson` with ten features against
//! `flat_prob`, each on a fresh database of its own (src/algorithms_step.rs), and drives
//! `/action`, `/upload_data` and `GET /api/v1/users/{id}` on a database already holding
//! `--stored-rows` decisions and uploads against the same on one without them
//! (src/stored_rows.rs). It prints a table
//! and writes every figure to JSON and CSV files. It exits non-zero when any request failed,
//! the service misbehaved or a required part could not run.

mod algorithms_step;
mod cpu;
mod dashboard;
mod error;
mod hist;
mod http1;
mod load;
mod metrics_step;
mod pg;
mod pgbench;
mod report;
mod scale;
mod service;
mod stored;
mod stored_rows;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use justin_simulate::callback::Receiver;

use crate::error::{fail, BenchError, Context, Result};
use crate::load::{Decision, Timing, Work, NEW_USER_PREFIX, USER_PREFIX};
use crate::report::{BackendReport, CeilingReport, ExportReport, Phase, Summary, UpdateReport};
use crate::scale::{export_at_scale, imputing_update_at_scale, update_at_scale, with_cpu};
use crate::service::Service;

/// The server `make test` uses, when neither --pg-url nor JUSTIN_TEST_DATABASE_URL names one.
const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Connections that register the users before the measured steps.
const SETUP_CONCURRENCY: usize = 8;
/// Uploads are planned for this many times the expected rate, so they never run out.
const UPLOAD_MARGIN: f64 = 1.5;
/// Clock ticks per second of /proc's CPU times, asked once.
static TICKS: std::sync::LazyLock<u64> = std::sync::LazyLock::new(cpu::ticks_per_sec);
/// How often the service's memory is sampled during the update.
const RSS_INTERVAL: Duration = Duration::from_millis(20);

/// A storage backend of the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    /// A fresh database on the PostgreSQL server of --pg-url.
    Postgres,
    /// A fresh SQLite file in the scratch directory.
    Sqlite,
}

/// Benchmarks the release `justin` binary: throughput and latency of its routes at fixed
/// concurrencies, the pgbench single-insert ceiling, a model update at scale, and the
/// dashboard's pages over a seeded study.
#[derive(Debug, Parser)]
#[command(name = "justin-bench")]
struct Args {
    /// Measured seconds per step (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Seconds at the start of each step whose requests are not counted.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Connections, one step per value.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    concurrency: Vec<usize>,
    /// Threads of the load generator, each an event loop driving its share of the
    /// connections (one is plenty at the benchmark's rates, and leaves the most CPU to the
    /// service and PostgreSQL).
    #[arg(long, default_value_t = 1)]
    generator_threads: usize,
    /// Users registered before the steps.
    #[arg(long, default_value_t = 1000)]
    users: u64,
    /// Study rows bulk-inserted for the update at scale (0 skips it).
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// The backends, in order.
    #[arg(long, value_delimiter = ',', default_value = "postgres,sqlite")]
    backends: Vec<Backend>,
    /// A PostgreSQL server URL on which this user may CREATE DATABASE (default:
    /// JUSTIN_TEST_DATABASE_URL, else postgres://postgres@127.0.0.1:5432/postgres).
    #[arg(long)]
    pg_url: Option<String>,
    /// The justin binary (default: the one beside this binary).
    #[arg(long)]
    justin_bin: Option<PathBuf>,
    /// Where the JSON and CSV summaries go.
    #[arg(long, default_value = "target/bench")]
    out_dir: PathBuf,
    /// The summaries' file name prefix.
    #[arg(long, default_value = "bench")]
    label: String,
    /// Seconds to wait for the update's callback.
    #[arg(long, default_value_t = 600)]
    update_timeout: u64,
    /// Participants of the study the dashboard step seeds on each backend (0 skips the step).
    #[arg(long, default_value_t = 1000)]
    dashboard_participants: u64,
    /// Decisions per participant in that study, each with its upload.
    #[arg(long, default_value_t = 2000)]
    dashboard_decisions: u64,
    /// Timed requests of each dashboard page (after one untimed first request).
    #[arg(long, default_value_t = 50)]
    dashboard_requests: u64,
    /// Connections of the metrics step: `/action` with metrics on (this service) and off (a
    /// second one on the same database with `[metrics] enabled = false`); 0 skips it.
    #[arg(long, default_value_t = 64)]
    metrics_concurrency: usize,
    /// Alternating rounds of the metrics step (each one step on, one off).
    #[arg(long, default_value_t = 2)]
    metrics_rounds: usize,
    /// Connections of the algorithms step: `/action` of `thompson` with ten features against
    /// `flat_prob`, each on a fresh database of the backend; 0 skips it.
    #[arg(long, default_value_t = 64)]
    algorithm_concurrency: usize,
    /// Alternating rounds of the algorithms step (each one step of each algorithm).
    #[arg(long, default_value_t = 2)]
    algorithm_rounds: usize,
    /// Decisions (each with its upload) stored before the stored-rows step's routes run on a
    /// fresh database of each backend, spread evenly over the --users participants, against the
    /// same routes on a database without them (0 skips the step).
    #[arg(long, default_value_t = 10_000_000)]
    stored_rows: u64,
    /// Connections of the stored-rows step.
    #[arg(long, default_value_t = 64)]
    stored_concurrency: usize,
    /// Keep the scratch directory (service logs, backups, pgbench script) after a passing run.
    #[arg(long)]
    keep_scratch: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("justin-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A directory for the run's files, removed at the end unless the run failed or asked to keep it.
struct Scratch {
    path: PathBuf,
    keep: bool,
}

impl Scratch {
    fn new(keep: bool) -> Result<Self> {
        let path = std::env::temp_dir().join(format!(
            "justin-bench-{}-{}",
            std::process::id(),
            chrono::Utc::now().format("%Y%m%dT%H%M%S")
        ));
        std::fs::create_dir_all(&path).context(|| format!("cannot create {}", path.display()))?;
        Ok(Self { path, keep })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.keep {
            println!(
                "justin-bench: the service's logs and the run's files are in {}",
                self.path.display()
            );
        } else {
            std::fs::remove_dir_all(&self.path).ok();
        }
    }
}

fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn run(args: &Args) -> Result<bool> {
    let seconds_ok = args.seconds > 0.0 && args.seconds.is_finite();
    let warmup_ok = args.warmup >= 0.0 && args.warmup.is_finite();
    if !seconds_ok || !warmup_ok {
        return fail("--seconds must be above 0 and --warmup at least 0");
    }
    if args.concurrency.is_empty() || args.concurrency.contains(&0) {
        return fail("--concurrency needs at least one number, each above 0");
    }
    if args.generator_threads == 0 {
        return fail("--generator-threads must be above 0");
    }
    if args.users == 0 {
        return fail("--users must be above 0");
    }
    let started = Instant::now();
    let started_at = chrono::Utc::now();
    let bin = service::locate_binary(args.justin_bin.as_deref())?;
    let mut scratch = Scratch::new(args.keep_scratch)?;
    let pg_url = args
        .pg_url
        .clone()
        .or_else(|| std::env::var("JUSTIN_TEST_DATABASE_URL").ok())
        .unwrap_or_else(|| DEFAULT_PG_URL.to_owned());
    let mut summary = Summary {
        label: args.label.clone(),
        started_at: started_at.to_rfc3339(),
        ..Summary::default()
    };
    summary.environment.cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    summary.environment.loadavg_before = loadavg();
    summary.environment.git_commit = git(&["rev-parse", "HEAD"]);
    summary.environment.git_dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty());
    summary.settings = report::Settings {
        seconds: args.seconds,
        warmup_secs: args.warmup,
        concurrency: args.concurrency.clone(),
        generator_threads: args.generator_threads,
        users: args.users,
        rows: args.rows,
        service_log_level: service::LOG_LEVEL.to_owned(),
        service_settings: service::inherited_settings(&service_env(Path::new(""), ""))
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
        justin_bin: bin.display().to_string(),
    };
    println!(
        "justin-bench: {} s per step after {} s of warm-up (requests started during the warm-up are not counted), \
         connections {:?} over {} load generator thread(s), {} users; the service logs at logging.level={} (no access log), so logging does not \
         dominate; the load generator runs on the same machine ({} CPUs, load {})",
        args.seconds,
        args.warmup,
        args.concurrency,
        args.generator_threads,
        args.users,
        service::LOG_LEVEL,
        summary.environment.cpus,
        summary.environment.loadavg_before
    );
    let load_now: f64 = summary
        .environment
        .loadavg_before
        .split_whitespace()
        .next()
        .and_then(|l| l.parse().ok())
        .unwrap_or(0.0);
    if load_now > 1.0 {
        println!(
            "justin-bench: WARNING: the machine is busy before the run (load {load_now:.2} on {} CPUs): absolute \
             figures will come out low; the ratios to the pgbench ceiling, measured alongside, hold better. \
             The cpu% all column shows how busy the machine was during each step.",
            summary.environment.cpus
        );
    }
    for setting in &summary.settings.service_settings {
        println!("justin-bench: handing {setting} on to the service");
    }
    let mut ok = true;
    for backend in &args.backends {
        let outcome = match backend {
            Backend::Postgres => bench_postgres(args, &bin, &scratch.path, &pg_url, &mut summary),
            Backend::Sqlite => bench_sqlite(args, &bin, &scratch.path).map(Some),
        };
        match outcome {
            Ok(Some(mut report)) => {
                if args.dashboard_participants > 0 {
                    let step =
                        dashboard::dashboard_at_scale(args, &bin, &scratch.path, *backend, &pg_url);
                    match step {
                        Ok(dashboard) => {
                            for page in dashboard.pages.iter().filter(|p| p.failed > 0) {
                                report.errors.push(format!(
                                    "the dashboard's {} failed {} times; first: {}",
                                    page.path,
                                    page.failed,
                                    page.failure.as_deref().unwrap_or("?")
                                ));
                            }
                            report.dashboard = Some(dashboard);
                        }
                        Err(e) => report.errors.push(format!("the dashboard step: {e}")),
                    }
                }
                if args.algorithm_concurrency > 0 && args.algorithm_rounds > 0 {
                    let step = algorithms_step::compare(
                        args,
                        &bin,
                        &scratch.path,
                        *backend,
                        &pg_url,
                        &mut report,
                    );
                    if let Err(e) = step {
                        report.errors.push(format!("the algorithms step: {e}"));
                    }
                }
                if args.stored_rows > 0 && args.stored_concurrency > 0 {
                    let step = stored_rows::compare(
                        args,
                        &bin,
                        &scratch.path,
                        *backend,
                        &pg_url,
                        &mut report,
                    );
                    if let Err(e) = step {
                        report.errors.push(format!("the stored-rows step: {e}"));
                    }
                }
                ok &= report.errors.is_empty();
                summary.backends.push(report);
            }
            Ok(None) => {}
            Err(e) => {
                ok = false;
                println!("justin-bench: {backend:?}: ERROR: {e}");
                summary.backends.push(BackendReport {
                    backend: format!("{backend:?}").to_lowercase(),
                    errors: vec![e.to_string()],
                    ..BackendReport::default()
                });
            }
        }
    }
    summary.environment.loadavg_after = loadavg();
    summary.duration_secs = started.elapsed().as_secs_f64();
    summary.ok = ok && summary.backends.iter().all(|b| b.errors.is_empty());
    let text = report::render(&summary);
    println!("\n{text}");
    let stamp = started_at.format("%Y%m%dT%H%M%SZ").to_string();
    let written = report::write_files(&summary, &args.out_dir, &stamp)?;
    println!(
        "justin-bench: every figure is in {} (and {}-latest.json/.csv)",
        written.display(),
        args.label
    );
    scratch.keep |= !summary.ok;
    Ok(summary.ok)
}

/// The service's environment for a backend whose files live in `dir`.
fn service_env(dir: &Path, database_url: &str) -> Vec<(&'static str, String)> {
    let mut env = service::fixed_env();
    env.push(("JUSTIN_DATABASE__URL", database_url.to_owned()));
    env.push((
        "JUSTIN_LOGGING__DIR",
        dir.join("logs").display().to_string(),
    ));
    env.push((
        "JUSTIN_BACKUP__DIR",
        dir.join("backups").display().to_string(),
    ));
    env.push(("JUSTIN_BACKUP__ENABLED", "true".into()));
    env
}

/// Runs the PostgreSQL part; `None` when it is skipped (no server, outside CI).
fn bench_postgres(
    args: &Args,
    bin: &Path,
    scratch: &Path,
    pg_url: &str,
    summary: &mut Summary,
) -> Result<Option<BackendReport>> {
    if let Err(e) = pg::connect(pg_url) {
        let message = format!(
            "PostgreSQL part: {e}. Start PostgreSQL, or name a server with --pg-url or JUSTIN_TEST_DATABASE_URL"
        );
        if is_ci() {
            return fail(format!("{message} (CI=true requires it)"));
        }
        println!("\n!!! justin-bench: NOT RUN: {message} !!!\n");
        summary.skipped.push(message);
        return Ok(None);
    }
    for stale in pg::drop_stale(pg_url)? {
        println!("justin-bench: dropped {stale}, left behind by a benchmark run that was killed");
    }
    let mut conn = pg::connect(pg_url)?;
    summary.environment.postgres_version = Some(pg::value(
        &mut conn,
        "SELECT current_setting('server_version') AS out",
    )?);
    drop(conn);
    let pgbench = pgbench::locate();
    match &pgbench {
        Some(path) => summary.environment.pgbench_version = Some(pgbench::version(path)?),
        None => {
            let message = "the pgbench ceiling: pgbench is not installed (it ships with PostgreSQL: \
                           apt-get install postgresql-client, or postgresql-contrib on older releases); \
                           /action is reported without its ratio to the ceiling"
                .to_owned();
            println!("\n!!! justin-bench: NOT RUN: {message} !!!\n");
            summary.skipped.push(message);
        }
    }
    let database = pg::BenchDatabase::create(pg_url)?;
    println!("justin-bench: postgres: created database {}", database.name);
    let dir = scratch.join("postgres");
    let result = bench_backend(
        args,
        bin,
        &dir,
        "postgres",
        &database.url,
        Some(PgParts {
            url: &database.url,
            pgbench: pgbench.as_deref(),
        }),
    );
    let dropped = database.drop_now();
    let mut report = result?;
    if let Err(e) = dropped {
        report
            .errors
            .push(format!("could not drop the benchmark database: {e}"));
    }
    Ok(Some(report))
}

fn bench_sqlite(args: &Args, bin: &Path, scratch: &Path) -> Result<BackendReport> {
    let dir = scratch.join("sqlite");
    let url = format!("sqlite://{}", dir.join("bench.db").display());
    bench_backend(args, bin, &dir, "sqlite", &url, None)
}

/// What only the PostgreSQL run does.
struct PgParts<'a> {
    url: &'a str,
    pgbench: Option<&'a Path>,
}

fn timing(args: &Args) -> Timing {
    Timing {
        warmup: Duration::from_secs_f64(args.warmup),
        measure: Some(Duration::from_secs_f64(args.seconds)),
    }
}

/// Fails the backend when a run had failures, with the first of them.
fn check(report: &mut BackendReport, phase: &Phase) {
    if phase.failed() {
        report.errors.push(format!(
            "{} at {} connections: {} non-2xx answers {:?}, {} transport errors, {} unexpected answers; first: {}",
            phase.route,
            phase.concurrency,
            phase.non_2xx,
            phase.non_2xx_by_status,
            phase.transport_errors,
            phase.unexpected,
            phase.error_samples.join(" | ")
        ));
    }
}

fn ensure_running(service: &mut Service, step: &str) -> Result<()> {
    if service.is_running() {
        Ok(())
    } else {
        fail(format!(
            "the service stopped during {step}; its last output:\n{}",
            service.tail()
        ))
    }
}

fn bench_backend(
    args: &Args,
    bin: &Path,
    dir: &Path,
    backend: &str,
    database_url: &str,
    pg_parts: Option<PgParts<'_>>,
) -> Result<BackendReport> {
    std::fs::create_dir_all(dir).context(|| format!("cannot create {}", dir.display()))?;
    let mut report = BackendReport {
        backend: backend.to_owned(),
        database: pg::mask(database_url),
        ..BackendReport::default()
    };
    let env = service_env(dir, database_url);
    let mut service = Service::start(bin, dir, &env)?;
    println!(
        "justin-bench: {backend}: justin serves at {}",
        service.base_url
    );
    let outcome = drive_backend(
        args,
        bin,
        &mut service,
        dir,
        backend,
        database_url,
        pg_parts,
        &mut report,
    );
    report.service_rss_after_routes_kib = report
        .service_rss_after_routes_kib
        .or_else(|| service::rss_kib(service.pid()).ok());
    if let Err(e) = outcome {
        report.errors.push(e.to_string());
    }
    match service.stop() {
        Ok((status, killed)) => {
            report.service_exit = if killed {
                format!("killed after not stopping on SIGTERM ({status})")
            } else {
                status.to_string()
            };
            if killed || !status.success() {
                report.errors.push(format!(
                    "the service did not stop cleanly on SIGTERM: {}",
                    report.service_exit
                ));
            }
        }
        Err(e) => report
            .errors
            .push(format!("could not stop the service: {e}")),
    }
    scan_log(&dir.join("logs").join("app.log"), &mut report);
    if report.service_log_errors > 0 {
        report.errors.push(format!(
            "the service logged {} ERROR lines (see service_log_error_samples)",
            report.service_log_errors
        ));
    }
    Ok(report)
}

/// Counts the ERROR and WARN lines of the service's log.
fn scan_log(path: &Path, report: &mut BackendReport) {
    let Ok(text) = std::fs::read_to_string(path) else {
        report
            .errors
            .push(format!("the service wrote no log at {}", path.display()));
        return;
    };
    for line in text.lines() {
        let level = line.split_whitespace().nth(1).unwrap_or("");
        if level == "ERROR" {
            report.service_log_errors += 1;
            if report.service_log_error_samples.len() < 5 {
                report.service_log_error_samples.push(line.to_owned());
            }
        } else if level == "WARN" {
            report.service_log_warnings += 1;
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn drive_backend(
    args: &Args,
    bin: &Path,
    service: &mut Service,
    dir: &Path,
    backend: &str,
    database_url: &str,
    pg_parts: Option<PgParts<'_>>,
    report: &mut BackendReport,
) -> Result<()> {
    let base = service.base_url.clone();
    let pid = service.pid();
    let timing = timing(args);

    // The participants every decision names.
    let setup = load::run(
        &base,
        &Work::AddUser {
            prefix: USER_PREFIX,
            next: Arc::new(AtomicU64::new(0)),
            limit: Some(args.users),
        },
        SETUP_CONCURRENCY,
        args.generator_threads,
        Timing {
            warmup: Duration::ZERO,
            measure: None,
        },
    )?;
    let setup_phase = Phase::new(backend, &setup);
    if setup_phase.failed() {
        check(report, &setup_phase);
        return fail(format!("registering the {} users failed", args.users));
    }
    let mut acked = stored::Acknowledged {
        users: setup.created,
        ..stored::Acknowledged::default()
    };
    println!(
        "justin-bench: {backend}: registered {} users in {:.1} s",
        args.users, setup.window_secs
    );
    println!("{}", report::header());

    let mut pg_conn = match &pg_parts {
        Some(parts) => {
            let mut conn = pg::connect(parts.url)?;
            if parts.pgbench.is_some() {
                pg::create_ceiling_table(&mut conn)?;
            }
            Some(conn)
        }
        None => None,
    };

    let next_pair = Arc::new(AtomicU64::new(0));
    let mut pool: Vec<Decision> = Vec::new();
    let mut action_rates = Vec::new();
    for &c in &args.concurrency {
        let mut ceiling_rate = None;
        if let (Some(parts), Some(pgbench), Some(conn)) = (
            &pg_parts,
            pg_parts.as_ref().and_then(|p| p.pgbench),
            pg_conn.as_mut(),
        ) {
            let rows_before = pg::count_rows(conn, pg::CEILING_TABLE)?;
            let (ceiling, usage) = with_cpu(pid, || {
                pgbench::run(
                    pgbench,
                    parts.url,
                    dir,
                    args.users,
                    c,
                    timing.warmup,
                    Duration::from_secs_f64(args.seconds),
                )
            })?;
            let mut ceiling = CeilingReport::from(&ceiling);
            ceiling.set_cpu(usage);
            ceiling.rows_inserted = pg::count_rows(conn, pg::CEILING_TABLE)? - rows_before;
            if report.ceilings.is_empty() {
                println!(
                    "justin-bench: postgres: the ceiling is `{}` (prepared protocol)",
                    ceiling.command
                );
            }
            println!("{}", report::ceiling_row(&ceiling));
            let collisions = ceiling
                .transactions_total
                .saturating_sub(ceiling.failed + ceiling.rows_inserted);
            if collisions > ceiling.transactions_total / 1000 {
                report.errors.push(format!(
                    "pgbench at {c} clients: {collisions} of {} transactions inserted nothing; the ceiling is overstated",
                    ceiling.transactions_total
                ));
            }
            if ceiling.failed > 0 {
                report.errors.push(format!(
                    "pgbench at {c} clients: {} failed transactions",
                    ceiling.failed
                ));
            }
            ceiling_rate = Some(ceiling.tps);
            report.ceilings.push(ceiling);
        }
        let work = Work::Action {
            users: args.users,
            next: Arc::clone(&next_pair),
            limit: None,
            extra_features: 0,
        };
        let (run, usage) = with_cpu(pid, || {
            load::run(&base, &work, c, args.generator_threads, timing)
        })?;
        let mut phase = Phase::new(backend, &run);
        phase.set_cpu(usage);
        phase.of_ceiling = ceiling_rate
            .filter(|r| *r > 0.0)
            .map(|r| phase.requests_per_sec / r);
        println!("{}", report::phase_row(&phase));
        action_rates.push((c, run.rate()));
        acked.decisions += run.created;
        pool.extend(run.decisions);
        check(report, &phase);
        report.phases.push(phase);
        ensure_running(service, "/action")?;
    }
    if args.metrics_concurrency > 0 && args.metrics_rounds > 0 {
        acked.decisions += metrics_step::compare(
            args,
            dir,
            backend,
            database_url,
            service,
            &next_pair,
            report,
        )?;
    }

    let mut cursor = 0usize;
    let mut fastest_upload: f64 = 0.0;
    for &c in &args.concurrency {
        // Enough logged decisions for this step at the fastest rate seen, or make more first
        // (untimed): an upload must match a decision the service logged.
        let action_rate = action_rates
            .iter()
            .find(|(k, _)| *k == c)
            .map_or(0.0, |(_, r)| *r);
        let rate = action_rate.max(fastest_upload);
        let need = (UPLOAD_MARGIN * rate * (args.warmup + args.seconds)).ceil() as usize + 2 * c;
        let available = pool.len() - cursor.min(pool.len());
        if available < need {
            let more = (need - available) as u64;
            let from = next_pair.load(Ordering::Relaxed);
            let top_up = load::run(
                &base,
                &Work::Action {
                    users: args.users,
                    next: Arc::clone(&next_pair),
                    limit: Some(from + more),
                    extra_features: 0,
                },
                SETUP_CONCURRENCY.max(c),
                args.generator_threads,
                Timing {
                    warmup: Duration::ZERO,
                    measure: None,
                },
            )?;
            let top_up_phase = Phase::new(backend, &top_up);
            check(report, &top_up_phase);
            acked.decisions += top_up.created;
            println!(
                "justin-bench: {backend}: made {} more decisions (untimed) so that the uploads at {c} connections cannot run out",
                top_up.created
            );
            pool.extend(top_up.decisions);
        }
        let shared_cursor = Arc::new(AtomicUsize::new(cursor));
        let work = Work::UploadData {
            pool: pool.as_slice().into(),
            cursor: Arc::clone(&shared_cursor),
        };
        let (run, usage) = with_cpu(pid, || {
            load::run(&base, &work, c, args.generator_threads, timing)
        })?;
        cursor = shared_cursor.load(Ordering::Relaxed).min(pool.len());
        let mut phase = Phase::new(backend, &run);
        phase.set_cpu(usage);
        println!("{}", report::phase_row(&phase));
        fastest_upload = fastest_upload.max(run.rate());
        acked.uploads += run.created;
        if run.exhausted {
            report.errors.push(format!(
                "/api/v1/upload_data at {c} connections ran out of logged decisions to upload before its time was up; \
                 its rate is understated (the harness plans {UPLOAD_MARGIN}x the fastest rate seen)"
            ));
        }
        check(report, &phase);
        report.phases.push(phase);
        ensure_running(service, "/upload_data")?;
    }

    let new_users = Arc::new(AtomicU64::new(0));
    for &c in &args.concurrency {
        let work = Work::AddUser {
            prefix: NEW_USER_PREFIX,
            next: Arc::clone(&new_users),
            limit: None,
        };
        let (run, usage) = with_cpu(pid, || {
            load::run(&base, &work, c, args.generator_threads, timing)
        })?;
        let mut phase = Phase::new(backend, &run);
        phase.set_cpu(usage);
        println!("{}", report::phase_row(&phase));
        acked.users += run.created;
        check(report, &phase);
        report.phases.push(phase);
        ensure_running(service, "/add_user")?;
    }
    report.service_rss_after_routes_kib = service::rss_kib(service.pid()).ok();

    let mut db = stored::Db::open(database_url)?;
    let differences = stored::verify(&mut db, acked)?;
    println!(
        "justin-bench: {backend}: stored rows checked against the 201 answers: {} users, {} decisions, {} uploads{}",
        acked.users,
        acked.decisions,
        acked.uploads,
        if differences.is_empty() { ", all there exactly once" } else { ": DIFFERENCES (below)" }
    );
    report.errors.extend(differences);
    drop(db);

    if let Some(conn) = pg_conn.as_mut() {
        if args.rows > 0 {
            let update = update_at_scale(args, service, conn, &dir.join("backups"))?;
            if update.callback_status != "completed" || update.update_status != "completed" {
                report.errors.push(format!(
                    "the update at scale did not complete: callback {}, update {}",
                    update.callback_status, update.update_status
                ));
            }
            report.update = Some(update);
            let export = export_at_scale(args, service, conn, database_url)?;
            if export.rows != export.decisions {
                report.errors.push(format!(
                    "the export at scale sent {} rows for {} decisions",
                    export.rows, export.decisions
                ));
            }
            report.export = Some(export);
            let (leave_out, imputing, unrewarded) = imputing_update_at_scale(
                args,
                service,
                |extra| {
                    let mut env = service_env(dir, database_url);
                    env.extend(extra.iter().cloned());
                    Service::start(bin, dir, &env)
                },
                conn,
                &dir.join("backups"),
            )?;
            for (what, update) in [
                ("leaving missing outcomes out", &leave_out),
                ("with the default reward", &imputing),
            ] {
                if update.callback_status != "completed" || update.update_status != "completed" {
                    report.errors.push(format!(
                        "the update at scale {what} did not complete: callback {}, update {}",
                        update.callback_status, update.update_status
                    ));
                }
            }
            if imputing.rows_imputed != Some(unrewarded) {
                report.errors.push(format!(
                    "the update with the default reward imputed {:?} rows, not {unrewarded}",
                    imputing.rows_imputed
                ));
            }
            report.update_leave_out = Some(leave_out);
            report.update_default_reward = Some(imputing);
        }
    }
    Ok(())
}
