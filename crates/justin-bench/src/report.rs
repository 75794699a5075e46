//! What a run found, as a table for people and as JSON and CSV files (under `target/bench/`)
//! that documentation can cite: every figure, the settings, the machine and the commit.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cpu::Usage;
use crate::error::{Context, Result};
use crate::hist::Histogram;
use crate::load::RunResult;
use crate::pgbench::Ceiling;

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

/// Latency figures in milliseconds.
#[derive(Debug, Serialize, Clone, Copy)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

impl From<&Histogram> for Latency {
    fn from(h: &Histogram) -> Self {
        Self {
            p50_ms: ms(h.quantile(0.50)),
            p99_ms: ms(h.quantile(0.99)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1000.0,
        }
    }
}

/// One route at one concurrency.
#[derive(Debug, Serialize)]
pub struct Phase {
    /// `postgres` or `sqlite`.
    pub backend: String,
    /// The path driven.
    pub route: String,
    /// Connections.
    pub concurrency: usize,
    /// The measured window (after the warm-up), in seconds.
    pub seconds: f64,
    /// Requests started in the window.
    pub requests: u64,
    /// Requests per second in the window.
    pub requests_per_sec: f64,
    /// Latencies of the requests in the window.
    pub latency: Latency,
    /// Non-2xx answers over the whole run (warm-up included).
    pub non_2xx: u64,
    /// Non-2xx answers by status.
    pub non_2xx_by_status: BTreeMap<u16, u64>,
    /// Requests without an answer over the whole run.
    pub transport_errors: u64,
    /// 2xx answers other than the expected 201, or unreadable ones.
    pub unexpected: u64,
    /// Requests sent, warm-up included.
    pub total_requests: u64,
    /// For `/action` on PostgreSQL: requests/s as a fraction of the pgbench ceiling's
    /// transactions/s at the same concurrency.
    pub of_ceiling: Option<f64>,
    /// The first failures, verbatim.
    pub error_samples: Vec<String>,
    /// CPU use over the whole step, warm-up included.
    pub cpu: Usage,
    /// The service's CPU time per request (warm-up included), in microseconds.
    pub service_cpu_us_per_request: Option<f64>,
    /// PostgreSQL's CPU time per request (warm-up included), in microseconds.
    pub postgres_cpu_us_per_request: Option<f64>,
    /// The load generator's CPU time per request (warm-up included), in microseconds: what
    /// measuring took from the CPUs the service and PostgreSQL share with it.
    pub load_generator_cpu_us_per_request: Option<f64>,
}

impl Phase {
    /// The report of `run` on `backend`.
    pub fn new(backend: &str, run: &RunResult) -> Self {
        Self {
            backend: backend.to_owned(),
            route: run.route.path().to_owned(),
            concurrency: run.concurrency,
            seconds: run.window_secs,
            requests: run.latencies.count(),
            requests_per_sec: run.rate(),
            latency: Latency::from(&run.latencies),
            non_2xx: run.non_2xx_count(),
            non_2xx_by_status: run.non_2xx.clone(),
            transport_errors: run.transport_errors,
            unexpected: run.unexpected,
            total_requests: run.total_requests,
            of_ceiling: None,
            error_samples: run.samples.clone(),
            cpu: Usage::default(),
            service_cpu_us_per_request: None,
            postgres_cpu_us_per_request: None,
            load_generator_cpu_us_per_request: None,
        }
    }

    /// Records the CPU use of the step.
    pub fn set_cpu(&mut self, usage: Usage) {
        self.cpu = usage;
        self.service_cpu_us_per_request =
            Usage::micros_per(usage.service_percent, usage.wall_secs, self.total_requests);
        self.postgres_cpu_us_per_request = (self.backend == "postgres")
            .then(|| {
                Usage::micros_per(usage.postgres_percent, usage.wall_secs, self.total_requests)
            })
            .flatten();
        self.load_generator_cpu_us_per_request = Usage::micros_per(
            usage.load_generator_percent,
            usage.wall_secs,
            self.total_requests,
        );
    }

    /// Whether the phase had any failure.
    pub fn failed(&self) -> bool {
        self.non_2xx > 0 || self.transport_errors > 0 || self.unexpected > 0
    }
}

/// pgbench's single-insert ceiling at one concurrency.
#[derive(Debug, Serialize)]
pub struct CeilingReport {
    /// Clients (`-c`), the same as the load generator's connections.
    pub concurrency: usize,
    /// pgbench threads (`-j`).
    pub threads: usize,
    /// The measured window (after the warm-up), in seconds.
    pub seconds: f64,
    /// Transactions started in the window.
    pub transactions: u64,
    /// Transactions per second in the window.
    pub tps: f64,
    /// Latencies of those transactions.
    pub latency: Latency,
    /// pgbench's own `tps` over its whole run, warm-up and all.
    pub pgbench_reported_tps: Option<f64>,
    /// Failed transactions.
    pub failed: u64,
    /// Transactions over the whole run, warm-up included.
    pub transactions_total: u64,
    /// Rows the whole run inserted: `transactions_total - failed` unless a random pair
    /// collided with an earlier one (ON CONFLICT DO NOTHING), which should be vanishingly rare.
    pub rows_inserted: u64,
    /// The command run.
    pub command: String,
    /// CPU use over the whole run, warm-up included (the service is idle meanwhile).
    pub cpu: Usage,
    /// PostgreSQL's CPU time per transaction (warm-up included), in microseconds.
    pub postgres_cpu_us_per_transaction: Option<f64>,
}

impl CeilingReport {
    /// Records the CPU use of the run.
    pub fn set_cpu(&mut self, usage: Usage) {
        self.cpu = usage;
        self.postgres_cpu_us_per_transaction = Usage::micros_per(
            usage.postgres_percent,
            usage.wall_secs,
            self.transactions_total,
        );
    }
}

impl From<&Ceiling> for CeilingReport {
    fn from(c: &Ceiling) -> Self {
        Self {
            concurrency: c.clients,
            threads: c.threads,
            seconds: c.window_secs,
            transactions: c.latencies.count(),
            tps: c.rate(),
            latency: Latency::from(&c.latencies),
            pgbench_reported_tps: c.reported_tps,
            failed: c.failed,
            transactions_total: c.transactions_total,
            rows_inserted: 0,
            command: c.command.clone(),
            cpu: Usage::default(),
            postgres_cpu_us_per_transaction: None,
        }
    }
}

/// The export at scale: `GET /api/v1/export` over as many decisions as the update read.
#[derive(Debug, Serialize, Default)]
pub struct ExportReport {
    /// Decisions bulk-inserted for it (one per filled study record).
    pub decisions_filled: u64,
    /// Rows in `actions` when the export was asked for.
    pub decisions: u64,
    /// Rows the export sent (lines after the header).
    pub rows: u64,
    /// Bytes it sent.
    pub bytes: u64,
    /// Seconds from the request to the last byte.
    pub seconds: f64,
    /// Seconds from the request to the first byte.
    pub first_byte_secs: f64,
    /// Seconds PostgreSQL's own `COPY` of the same join took, to psql (the ceiling).
    pub copy_ceiling_secs: f64,
    /// `copy_ceiling_secs / seconds`: the share of the database's own speed reached.
    pub ratio_to_ceiling: f64,
    /// The service's VmRSS just before the request, in KiB.
    pub rss_before_kib: u64,
    /// The largest VmRSS sampled until the last byte, in KiB.
    pub rss_peak_kib: u64,
    /// Peak minus before, in KiB.
    pub rss_growth_kib: u64,
    /// VmRSS samples taken.
    pub rss_samples: u64,
}

/// The update at scale.
#[derive(Debug, Serialize, Default)]
pub struct UpdateReport {
    /// Rows bulk-inserted into `study_data`.
    pub rows_filled: u64,
    /// Rows in `study_data` when the update was requested (the fill plus the uploads).
    pub study_rows: u64,
    /// Seconds the fill took (insert, vacuum, analyse).
    pub fill_secs: f64,
    /// Seconds from sending the request to its 202 answer.
    pub accepted_secs: f64,
    /// Seconds from sending the request to the callback's arrival.
    pub request_to_callback_secs: f64,
    /// The callback's `status`.
    pub callback_status: String,
    /// The update's status as `GET /api/v1/update/{id}` gives it afterwards.
    pub update_status: String,
    /// Rows the update read, as its provenance says.
    pub rows_read: Option<u64>,
    /// Of them, the decisions it learned from with the default reward (`None` when it left
    /// missing outcomes out).
    pub rows_imputed: Option<u64>,
    /// The backup file the update wrote.
    pub backup_file: Option<String>,
    /// Its size in bytes.
    pub backup_bytes: Option<u64>,
    /// The service's VmRSS just before the request, in KiB.
    pub rss_before_kib: u64,
    /// The largest VmRSS sampled until the callback, in KiB.
    pub rss_peak_kib: u64,
    /// Peak minus before, in KiB.
    pub rss_growth_kib: u64,
    /// VmRSS samples taken (one every ~20 ms).
    pub rss_samples: u64,
}

/// Everything measured on one backend.
#[derive(Debug, Serialize, Default)]
pub struct BackendReport {
    /// `postgres` or `sqlite`.
    pub backend: String,
    /// The database, password masked.
    pub database: String,
    /// The routes.
    pub phases: Vec<Phase>,
    /// pgbench's ceilings (PostgreSQL only).
    pub ceilings: Vec<CeilingReport>,
    /// The update at scale (PostgreSQL only).
    pub update: Option<UpdateReport>,
    /// After the export, with a tenth as many decisions again without an upload: the update
    /// leaving missing outcomes out, then with the default reward (PostgreSQL only).
    pub update_leave_out: Option<UpdateReport>,
    pub update_default_reward: Option<UpdateReport>,
    /// The export at scale (PostgreSQL only).
    pub export: Option<ExportReport>,
    /// The dashboard's pages over a seeded study.
    pub dashboard: Option<crate::dashboard::DashboardReport>,
    /// `/action` with metrics on and off (`--metrics-concurrency`).
    pub metrics: Option<crate::metrics_step::MetricsComparison>,
    /// `/action` of `thompson` with ten features against `flat_prob`
    /// (`--algorithm-concurrency`).
    pub algorithms: Option<crate::algorithms_step::AlgorithmComparison>,
    /// The routes on a database with `--stored-rows` decisions and uploads against one without.
    pub stored_rows: Option<crate::stored_rows::StoredRowsReport>,
    /// The service's VmRSS after the last route, in KiB.
    pub service_rss_after_routes_kib: Option<u64>,
    /// How the service ended when asked to stop.
    pub service_exit: String,
    /// ERROR lines in the service's app.log.
    pub service_log_errors: u64,
    /// WARN lines in the service's app.log.
    pub service_log_warnings: u64,
    /// The first ERROR lines, verbatim.
    pub service_log_error_samples: Vec<String>,
    /// What went wrong on this backend.
    pub errors: Vec<String>,
}

/// The machine and the code the run measured.
#[derive(Debug, Serialize, Default)]
pub struct Environment {
    /// CPUs available.
    pub cpus: usize,
    /// `/proc/loadavg` before the run.
    pub loadavg_before: String,
    /// `/proc/loadavg` after the run.
    pub loadavg_after: String,
    /// `git rev-parse HEAD`.
    pub git_commit: Option<String>,
    /// Whether tracked files differed from the commit.
    pub git_dirty: Option<bool>,
    /// PostgreSQL's `server_version`.
    pub postgres_version: Option<String>,
    /// `pgbench --version`.
    pub pgbench_version: Option<String>,
}

/// The settings of the run.
#[derive(Debug, Serialize, Default)]
pub struct Settings {
    /// Measured seconds per step.
    pub seconds: f64,
    /// Warm-up seconds per step, excluded from the figures.
    pub warmup_secs: f64,
    /// Connections per step.
    pub concurrency: Vec<usize>,
    /// The load generator's threads (event loops) the connections are shared among.
    pub generator_threads: usize,
    /// Users registered before the routes are driven.
    pub users: u64,
    /// Study rows for the update at scale.
    pub rows: u64,
    /// The service's `logging.level`.
    pub service_log_level: String,
    /// `JUSTIN_*` settings handed on to the service from the environment.
    pub service_settings: Vec<String>,
    /// The justin binary measured.
    pub justin_bin: String,
}

/// The whole run.
#[derive(Debug, Serialize, Default)]
pub struct Summary {
    /// `bench` or `smoke`.
    pub label: String,
    /// When the run started (UTC, RFC 3339).
    pub started_at: String,
    /// Its wall-clock length in seconds.
    pub duration_secs: f64,
    /// The machine and code.
    pub environment: Environment,
    /// The settings.
    pub settings: Settings,
    /// One entry per backend run.
    pub backends: Vec<BackendReport>,
    /// Parts not run, and why.
    pub skipped: Vec<String>,
    /// Whether every step passed (zero non-2xx answers and transport errors included).
    pub ok: bool,
}

/// The header line of [`row`].
pub fn header() -> String {
    format!(
        "{:<9} {:<26} {:>4} {:>10} {:>8} {:>8} {:>8} {:>9} {:>7} {:>9} {:>8}  {}",
        "backend",
        "step",
        "conn",
        "per sec",
        "p50 ms",
        "p99 ms",
        "max ms",
        "count",
        "non-2xx",
        "transport",
        "/ceiling",
        "cpu% svc/gen/pg/all"
    )
}

/// The figures of one line of the table.
pub struct Line<'a> {
    /// The backend.
    pub backend: &'a str,
    /// The step: a route, or the pgbench ceiling.
    pub step: &'a str,
    /// Connections.
    pub conn: usize,
    /// Requests (transactions) per second.
    pub rate: f64,
    /// Latencies.
    pub latency: &'a Latency,
    /// Requests in the measured window.
    pub count: u64,
    /// Non-2xx answers (failed transactions for pgbench).
    pub non_2xx: u64,
    /// Transport errors and unexpected answers.
    pub transport: u64,
    /// The fraction of the ceiling.
    pub ratio: Option<f64>,
    /// CPU use.
    pub cpu: &'a Usage,
}

fn micros(value: Option<f64>) -> String {
    value.map_or("?".into(), |v| format!("{v:.0}"))
}

fn percent(value: Option<f64>) -> String {
    value.map_or("?".into(), |v| format!("{v:.0}"))
}

/// One line of the table, under [`header`].
pub fn row(line: &Line<'_>) -> String {
    let ratio = line.ratio.map_or(String::new(), |r| format!("{r:.2}"));
    format!(
        "{:<9} {:<26} {:>4} {:>10.1} {:>8.3} {:>8.3} {:>8.3} {:>9} {:>7} {:>9} {ratio:>8}  {}/{}/{}/{}",
        line.backend,
        line.step,
        line.conn,
        line.rate,
        line.latency.p50_ms,
        line.latency.p99_ms,
        line.latency.max_ms,
        line.count,
        line.non_2xx,
        line.transport,
        percent(line.cpu.service_percent),
        percent(line.cpu.load_generator_percent),
        percent(line.cpu.postgres_percent),
        percent(line.cpu.machine_percent),
    )
}

/// The table line of a phase.
pub fn phase_row(p: &Phase) -> String {
    row(&Line {
        backend: &p.backend,
        step: &p.route,
        conn: p.concurrency,
        rate: p.requests_per_sec,
        latency: &p.latency,
        count: p.requests,
        non_2xx: p.non_2xx,
        transport: p.transport_errors + p.unexpected,
        ratio: p.of_ceiling,
        cpu: &p.cpu,
    })
}

/// The summary line of the metrics comparison.
pub fn metrics_line(backend: &str, m: &crate::metrics_step::MetricsComparison) -> String {
    format!(
        "{backend} /action at {} conn, metrics on vs off (mean of {} alternating rounds each): \
         {:.0} vs {:.0} req/s, on/off {:.3}; p99 {:.2} vs {:.2} ms",
        m.concurrency,
        m.rounds,
        m.on_per_sec,
        m.off_per_sec,
        m.on_to_off,
        m.on_p99_ms,
        m.off_p99_ms
    )
}

/// The summary line of the algorithms comparison.
pub fn algorithms_line(backend: &str, a: &crate::algorithms_step::AlgorithmComparison) -> String {
    let cpu = |us: Option<f64>| us.map_or("?".to_owned(), |us| format!("{us:.0}"));
    format!(
        "{backend} /action at {} conn, thompson ({} features) vs flat_prob (mean of {} alternating \
         rounds each): {:.0} vs {:.0} req/s, thompson/flat_prob {:.3}; p99 {:.2} vs {:.2} ms; \
         service CPU per request {} vs {} µs",
        a.concurrency,
        a.thompson_features,
        a.rounds,
        a.thompson_per_sec,
        a.flat_prob_per_sec,
        a.thompson_to_flat_prob,
        a.thompson_p99_ms,
        a.flat_prob_p99_ms,
        cpu(a.thompson_service_cpu_us),
        cpu(a.flat_prob_service_cpu_us),
    )
}

/// The table line of a ceiling.
pub fn ceiling_row(c: &CeilingReport) -> String {
    row(&Line {
        backend: "postgres",
        step: "pgbench INSERT (ceiling)",
        conn: c.concurrency,
        rate: c.tps,
        latency: &c.latency,
        count: c.transactions,
        non_2xx: c.failed,
        transport: 0,
        ratio: None,
        cpu: &c.cpu,
    })
}

/// The whole report as text.
pub fn render(summary: &Summary) -> String {
    let mut out = String::new();
    let s = &summary.settings;
    writeln!(
        out,
        "justin-bench {}: {} s per step after {} s of warm-up (not counted), {} users, connections {:?} \
         over {} load generator thread(s)",
        summary.label, s.seconds, s.warmup_secs, s.users, s.concurrency, s.generator_threads
    )
    .ok();
    writeln!(
        out,
        "commit {}{}, {} CPUs, load before {} / after {}; service logging.level={}",
        summary
            .environment
            .git_commit
            .as_deref()
            .unwrap_or("unknown"),
        if summary.environment.git_dirty == Some(true) {
            " (with uncommitted changes)"
        } else {
            ""
        },
        summary.environment.cpus,
        summary.environment.loadavg_before,
        summary.environment.loadavg_after,
        s.service_log_level
    )
    .ok();
    writeln!(out, "{}", header()).ok();
    for backend in &summary.backends {
        for p in &backend.phases {
            // Each ceiling just above the /action line it is the ceiling of.
            if p.route == crate::load::Route::Action.path() {
                for c in backend
                    .ceilings
                    .iter()
                    .filter(|c| c.concurrency == p.concurrency)
                {
                    writeln!(out, "{}", ceiling_row(c)).ok();
                }
            }
            writeln!(out, "{}", phase_row(p)).ok();
        }
    }
    for backend in &summary.backends {
        for p in backend
            .phases
            .iter()
            .filter(|p| p.route == crate::load::Route::Action.path())
        {
            let ceiling = backend
                .ceilings
                .iter()
                .find(|c| c.concurrency == p.concurrency);
            let database = if backend.backend == "postgres" {
                format!(", PostgreSQL {} µs", micros(p.postgres_cpu_us_per_request))
            } else {
                " (SQLite runs inside it)".to_owned()
            };
            writeln!(
                out,
                "{} /action CPU per request at {} conn: service {} µs{database}, load generator {} µs{}",
                backend.backend,
                p.concurrency,
                micros(p.service_cpu_us_per_request),
                micros(p.load_generator_cpu_us_per_request),
                ceiling.map_or(String::new(), |c| format!(
                    "; PostgreSQL per pgbench INSERT: {} µs",
                    micros(c.postgres_cpu_us_per_transaction)
                ))
            )
            .ok();
        }
    }
    for backend in &summary.backends {
        if let Some(m) = &backend.metrics {
            writeln!(out, "{}", metrics_line(&backend.backend, m)).ok();
        }
        if let Some(a) = &backend.algorithms {
            writeln!(out, "{}", algorithms_line(&backend.backend, a)).ok();
        }
        if let Some(s) = &backend.stored_rows {
            for line in crate::stored_rows::lines(&backend.backend, s) {
                writeln!(out, "{line}").ok();
            }
        }
        if let Some(u) = &backend.update {
            writeln!(
                out,
                "{} update over {} study rows (backup on): callback after {:.2} s (202 after {:.3} s), status {}; \
                 backup {} bytes; service RSS {} KiB before, peak {} KiB, growth {:.1} MiB ({} samples); rows read {}; fill took {:.1} s",
                backend.backend,
                u.study_rows,
                u.request_to_callback_secs,
                u.accepted_secs,
                u.callback_status,
                u.backup_bytes.map_or("?".into(), |b| b.to_string()),
                u.rss_before_kib,
                u.rss_peak_kib,
                u.rss_growth_kib as f64 / 1024.0,
                u.rss_samples,
                u.rows_read.map_or("?".into(), |r| r.to_string()),
                u.fill_secs
            )
            .ok();
        }
        if let (Some(l), Some(d)) = (&backend.update_leave_out, &backend.update_default_reward) {
            writeln!(
                out,
                "{} update over {} study rows and {} decisions without an upload: leaving them out {:.2} s \
                 (rows read {}), with the default reward {:.2} s (rows read {}, imputed {}) = {:.2}x; \
                 RSS growth {:.1} / {:.1} MiB",
                backend.backend,
                d.study_rows,
                d.rows_imputed.map_or("?".into(), |r| r.to_string()),
                l.request_to_callback_secs,
                l.rows_read.map_or("?".into(), |r| r.to_string()),
                d.request_to_callback_secs,
                d.rows_read.map_or("?".into(), |r| r.to_string()),
                d.rows_imputed.map_or("?".into(), |r| r.to_string()),
                d.request_to_callback_secs / l.request_to_callback_secs,
                l.rss_growth_kib as f64 / 1024.0,
                d.rss_growth_kib as f64 / 1024.0,
            )
            .ok();
        }
        if let Some(d) = &backend.dashboard {
            writeln!(
                out,
                "{} dashboard over {} participants × {} decisions with uploads ({} rows each in actions and study_data; \
                 seeded in {:.1} s, update over them {:.1} s), one request at a time:",
                backend.backend,
                d.participants,
                d.decisions_per_participant,
                d.decisions,
                d.seed_secs,
                d.update_secs
            )
            .ok();
            for page in &d.pages {
                writeln!(out, "  {}", crate::dashboard::row(page)).ok();
            }
        }
        if let Some(e) = &backend.export {
            writeln!(
                out,
                "{} export of {} decisions: {} rows, {:.1} MiB in {:.2} s (first byte after {:.3} s), \
                 {:.2} of PostgreSQL's own COPY of the same rows ({:.2} s); service RSS {} KiB before, \
                 peak {} KiB, growth {:.1} MiB ({} samples)",
                backend.backend,
                e.decisions,
                e.rows,
                e.bytes as f64 / (1024.0 * 1024.0),
                e.seconds,
                e.first_byte_secs,
                e.ratio_to_ceiling,
                e.copy_ceiling_secs,
                e.rss_before_kib,
                e.rss_peak_kib,
                e.rss_growth_kib as f64 / 1024.0,
                e.rss_samples
            )
            .ok();
        }
        if backend.update.is_none() && backend.backend == "sqlite" {
            writeln!(
                out,
                "sqlite: no update at scale: the benchmark runs it on PostgreSQL only"
            )
            .ok();
        }
        if !backend.service_exit.is_empty() {
            writeln!(
                out,
                "{}: service exit {}, app.log has {} ERROR and {} WARN lines",
                backend.backend,
                backend.service_exit,
                backend.service_log_errors,
                backend.service_log_warnings
            )
            .ok();
        }
        for line in &backend.service_log_error_samples {
            writeln!(out, "    {line}").ok();
        }
        for error in &backend.errors {
            writeln!(out, "{}: ERROR: {error}", backend.backend).ok();
        }
    }
    for skipped in &summary.skipped {
        writeln!(out, "NOT RUN: {skipped}").ok();
    }
    let verdict = match (summary.ok, summary.skipped.len()) {
        (false, _) => "FAILED".to_owned(),
        (true, 0) => "PASSED".to_owned(),
        (true, n) => format!("PASSED, but {n} part(s) NOT RUN (above)"),
    };
    writeln!(out, "{verdict} in {:.0} s", summary.duration_secs).ok();
    out
}

fn csv_percent(value: Option<f64>) -> String {
    value.map_or(String::new(), |v| format!("{v:.1}"))
}

fn csv_rows(summary: &Summary) -> String {
    let mut out = String::from(
        "backend,step,concurrency,seconds,count,per_sec,p50_ms,p99_ms,max_ms,mean_ms,non_2xx,transport_errors,unexpected,of_ceiling,service_cpu_percent,load_generator_cpu_percent,postgres_cpu_percent,machine_cpu_percent\n",
    );
    for b in &summary.backends {
        for c in &b.ceilings {
            let l = &c.latency;
            writeln!(
                out,
                "postgres,pgbench_insert,{},{},{},{:.3},{:.3},{:.3},{:.3},{:.3},{},0,0,,{},{},{},{}",
                c.concurrency,
                c.seconds,
                c.transactions,
                c.tps,
                l.p50_ms,
                l.p99_ms,
                l.max_ms,
                l.mean_ms,
                c.failed,
                csv_percent(c.cpu.service_percent),
                csv_percent(c.cpu.load_generator_percent),
                csv_percent(c.cpu.postgres_percent),
                csv_percent(c.cpu.machine_percent),
            )
            .ok();
        }
        for p in &b.phases {
            let l = &p.latency;
            writeln!(
                out,
                "{},{},{},{},{},{:.3},{:.3},{:.3},{:.3},{:.3},{},{},{},{},{},{},{},{}",
                p.backend,
                p.route,
                p.concurrency,
                p.seconds,
                p.requests,
                p.requests_per_sec,
                l.p50_ms,
                l.p99_ms,
                l.max_ms,
                l.mean_ms,
                p.non_2xx,
                p.transport_errors,
                p.unexpected,
                p.of_ceiling.map_or(String::new(), |r| format!("{r:.4}")),
                csv_percent(p.cpu.service_percent),
                csv_percent(p.cpu.load_generator_percent),
                csv_percent(p.cpu.postgres_percent),
                csv_percent(p.cpu.machine_percent),
            )
            .ok();
        }
        for p in b.dashboard.iter().flat_map(|d| &d.pages) {
            if let Some(l) = &p.latency {
                writeln!(
                    out,
                    "{},dashboard_{},1,,{},,{:.3},{:.3},{:.3},{:.3},{},0,0,,,,,",
                    b.backend,
                    p.page,
                    p.requests,
                    l.p50_ms,
                    l.p99_ms,
                    l.max_ms,
                    l.mean_ms,
                    p.failed,
                )
                .ok();
            }
        }
    }
    out
}

/// Writes `<label>-<stamp>.json` and `.csv` into `dir`, and copies them to
/// `<label>-latest.json` and `.csv`. Returns the JSON file's path.
pub fn write_files(summary: &Summary, dir: &Path, stamp: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).context(|| format!("cannot create {}", dir.display()))?;
    let json = serde_json::to_string_pretty(summary)
        .context(|| "cannot write the summary as JSON".into())?;
    let csv = csv_rows(summary);
    let base = format!("{}-{stamp}", summary.label);
    let latest = format!("{}-latest", summary.label);
    let json_path = dir.join(format!("{base}.json"));
    for (name, text) in [
        (format!("{base}.json"), &json),
        (format!("{base}.csv"), &csv),
        (format!("{latest}.json"), &json),
        (format!("{latest}.csv"), &csv),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text).context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(json_path)
}
