//! The algorithms step: `/action` at `--algorithm-concurrency` connections on a service running
//! `flat_prob` and on one running `thompson` with ten features, each on a fresh database of
//! the backend, alternating `--algorithm-rounds` times so that drift of the machine falls on
//! both alike. Both get the same requests, whose contexts hold the ten numeric fields
//! (`temperature`, `f1` to `f9`; `flat_prob` reads the first only). `thompson` draws from
//! priors with a dense covariance and full-precision numbers, as a posterior has, so reading
//! its parameters costs what it costs in a study. The result is thompson's throughput as a
//! share of flat_prob's; each service's database must hold exactly the decisions it answered
//! 201 to.

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::error::{fail, Context, Result};
use crate::load::{self, Work, USER_PREFIX};
use crate::report::{self, BackendReport, Phase};
use crate::scale::with_cpu;
use crate::service::{self, Service};
use crate::{check, pg, stored, timing, Args, Backend, SETUP_CONCURRENCY};

/// The step names of the two sides, in the table and the CSV.
pub const FLAT: &str = "/action flat_prob";
/// See [`FLAT`].
pub const THOMPSON: &str = "/action thompson 10 feat.";
/// Context fields after `temperature` in every request of the step.
const EXTRA_FEATURES: usize = 9;

/// What the comparison found, over every round.
#[derive(Debug, Serialize, Default)]
pub struct AlgorithmComparison {
    /// Connections.
    pub concurrency: usize,
    /// Rounds (one step of each algorithm, each).
    pub rounds: usize,
    /// Features `thompson` was configured with.
    pub thompson_features: usize,
    /// Mean requests/s of `flat_prob`.
    pub flat_prob_per_sec: f64,
    /// Mean requests/s of `thompson`.
    pub thompson_per_sec: f64,
    /// `thompson_per_sec / flat_prob_per_sec`.
    pub thompson_to_flat_prob: f64,
    /// Mean p99 latency of `flat_prob`, ms.
    pub flat_prob_p99_ms: f64,
    /// Mean p99 latency of `thompson`, ms.
    pub thompson_p99_ms: f64,
    /// Mean CPU time of the `flat_prob` service per request, µs.
    pub flat_prob_service_cpu_us: Option<f64>,
    /// Mean CPU time of the `thompson` service per request, µs.
    pub thompson_service_cpu_us: Option<f64>,
}

/// One side: a service on its own fresh database.
struct Side {
    name: &'static str,
    service: Service,
    url: String,
    next_pair: Arc<AtomicU64>,
    created: u64,
    _database: Option<pg::BenchDatabase>,
}

/// The `thompson` priors for `features` features: a mean of small values of both signs and a
/// dense covariance (1e-4 × 0.3^|i-j|, positive definite), each number at full precision.
fn thompson_priors(features: usize) -> serde_json::Value {
    let k = 2 * (1 + features);
    let mean: Vec<f64> = (0..k)
        .map(|i| 0.05 * ((i as f64) * 1.7 + 0.3).sin())
        .collect();
    let covariance: Vec<Vec<f64>> = (0..k)
        .map(|i| {
            (0..k)
                .map(|j| 1e-4 * 0.3_f64.powi(i.abs_diff(j) as i32))
                .collect()
        })
        .collect();
    serde_json::json!({
        "mean": mean,
        "covariance": covariance,
        "noise_variance": 1.0,
    })
}

/// Runs the comparison on `backend`, in `scratch/algorithms-<backend>`. The steps go into
/// `report.phases` (and what went wrong into `report.errors`), the comparison into
/// `report.algorithms`.
pub(crate) fn compare(
    args: &Args,
    bin: &Path,
    scratch: &Path,
    backend: Backend,
    pg_url: &str,
    report: &mut BackendReport,
) -> Result<()> {
    let backend_name = format!("{backend:?}").to_lowercase();
    let dir = scratch.join(format!("algorithms-{backend_name}"));
    std::fs::create_dir_all(&dir).context(|| format!("cannot create {}", dir.display()))?;
    let features: Vec<String> = std::iter::once("temperature".to_owned())
        .chain((1..=EXTRA_FEATURES).map(|k| format!("f{k}")))
        .collect();
    let priors = dir.join("thompson-priors.json");
    std::fs::write(&priors, thompson_priors(features.len()).to_string())
        .context(|| format!("cannot write {}", priors.display()))?;
    let features_json =
        serde_json::to_string(&features).context(|| "cannot write the features".into())?;
    let thompson_env = vec![
        ("JUSTIN_ALGORITHM__NAME", "thompson".to_owned()),
        (
            "JUSTIN_ALGORITHM__PRIORS_FILE",
            priors.display().to_string(),
        ),
        ("JUSTIN_ALGORITHM__OPTIONS__FEATURES", features_json),
    ];
    let mut flat = start(bin, &dir, "flat_prob", backend, pg_url, &[])?;
    let mut thompson = start(bin, &dir, "thompson", backend, pg_url, &thompson_env)?;
    let mut out = AlgorithmComparison {
        concurrency: args.algorithm_concurrency,
        rounds: args.algorithm_rounds,
        thompson_features: features.len(),
        ..AlgorithmComparison::default()
    };
    let result = rounds(args, &backend_name, &mut flat, &mut thompson, report);
    for side in [flat, thompson] {
        finish(side, report);
    }
    result?;
    let mean = |name: &str, f: &dyn Fn(&Phase) -> Option<f64>| {
        let of: Vec<f64> = report
            .phases
            .iter()
            .filter(|p| p.route == name)
            .filter_map(f)
            .collect();
        (!of.is_empty()).then(|| of.iter().sum::<f64>() / of.len() as f64)
    };
    out.flat_prob_per_sec = mean(FLAT, &|p| Some(p.requests_per_sec)).unwrap_or(0.0);
    out.thompson_per_sec = mean(THOMPSON, &|p| Some(p.requests_per_sec)).unwrap_or(0.0);
    out.thompson_to_flat_prob = if out.flat_prob_per_sec > 0.0 {
        out.thompson_per_sec / out.flat_prob_per_sec
    } else {
        0.0
    };
    out.flat_prob_p99_ms = mean(FLAT, &|p| Some(p.latency.p99_ms)).unwrap_or(0.0);
    out.thompson_p99_ms = mean(THOMPSON, &|p| Some(p.latency.p99_ms)).unwrap_or(0.0);
    out.flat_prob_service_cpu_us = mean(FLAT, &|p| p.service_cpu_us_per_request);
    out.thompson_service_cpu_us = mean(THOMPSON, &|p| p.service_cpu_us_per_request);
    println!("{}", report::algorithms_line(&backend_name, &out));
    report.algorithms = Some(out);
    Ok(())
}

/// Starts `name`'s service on a fresh database of `backend` with `extra` settings, and
/// registers the users every request names.
fn start(
    bin: &Path,
    dir: &Path,
    name: &'static str,
    backend: Backend,
    pg_url: &str,
    extra: &[(&'static str, String)],
) -> Result<Side> {
    let dir = dir.join(name);
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
    env.extend(extra.iter().cloned());
    let service = Service::start(bin, &dir, &env)?;
    Ok(Side {
        name,
        service,
        url,
        next_pair: Arc::new(AtomicU64::new(0)),
        created: 0,
        _database: database,
    })
}

fn register(args: &Args, side: &Side) -> Result<()> {
    let setup = load::run(
        &side.service.base_url,
        &Work::AddUser {
            prefix: USER_PREFIX,
            next: Arc::new(AtomicU64::new(0)),
            limit: Some(args.users),
        },
        SETUP_CONCURRENCY,
        args.generator_threads,
        load::Timing {
            warmup: Duration::ZERO,
            measure: None,
        },
    )?;
    if setup.created != args.users {
        return fail(format!(
            "registering the {} users on the {} service created {}; first failure: {}",
            args.users,
            side.name,
            setup.created,
            setup.samples.join(" | ")
        ));
    }
    Ok(())
}

fn rounds(
    args: &Args,
    backend: &str,
    flat: &mut Side,
    thompson: &mut Side,
    report: &mut BackendReport,
) -> Result<()> {
    register(args, flat)?;
    register(args, thompson)?;
    println!(
        "justin-bench: {backend}: /action of flat_prob and of thompson with {} features, each on a database of its own, {} alternating rounds",
        1 + EXTRA_FEATURES,
        args.algorithm_rounds
    );
    let c = args.algorithm_concurrency;
    for round in 0..args.algorithm_rounds {
        // flat_prob first in even rounds, thompson first in odd ones.
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for is_flat in order {
            let side = if is_flat { &mut *flat } else { &mut *thompson };
            let work = Work::Action {
                users: args.users,
                next: Arc::clone(&side.next_pair),
                limit: None,
                extra_features: EXTRA_FEATURES,
            };
            let (run, usage) = with_cpu(side.service.pid(), || {
                load::run(
                    &side.service.base_url,
                    &work,
                    c,
                    args.generator_threads,
                    timing(args),
                )
            })?;
            let mut phase = Phase::new(backend, &run);
            phase.route = if is_flat { FLAT } else { THOMPSON }.to_owned();
            phase.set_cpu(usage);
            println!("{}", report::phase_row(&phase));
            side.created += run.created;
            check(report, &phase);
            report.phases.push(phase);
            if !side.service.is_running() {
                return fail(format!(
                    "the {} service stopped during its /action step; its last output:\n{}",
                    side.name,
                    side.service.tail()
                ));
            }
        }
    }
    Ok(())
}

/// Checks that `side`'s database holds exactly the decisions it answered 201 to, stops its
/// service and drops its database.
fn finish(side: Side, report: &mut BackendReport) {
    let Side {
        name,
        service,
        url,
        created,
        _database: database,
        ..
    } = side;
    match stored::Db::open(&url).and_then(|mut db| db.count("actions")) {
        Ok(stored) if stored == created => {}
        Ok(stored) => report.errors.push(format!(
            "the {name} service answered 201 to {created} decisions, and its database holds {stored}"
        )),
        Err(e) => report
            .errors
            .push(format!("could not count the {name} service's decisions: {e}")),
    }
    match service.stop() {
        Ok((status, false)) if status.success() => {}
        Ok((status, _)) => report.errors.push(format!(
            "the {name} service did not stop cleanly on SIGTERM: {status}"
        )),
        Err(e) => report
            .errors
            .push(format!("could not stop the {name} service: {e}")),
    }
    if let Some(database) = database {
        if let Err(e) = database.drop_now() {
            report
                .errors
                .push(format!("could not drop the {name} service's database: {e}"));
        }
    }
}
