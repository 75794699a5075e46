//! The metrics step: `/action` at `--metrics-concurrency` connections on the service as it
//! runs (metrics on, the default) and on a second `justin serve` on the same database with
//! `[metrics] enabled = false`, alternating `--metrics-rounds` times so that drift of the
//! machine falls on both alike. Each step on the service with metrics checks that
//! `justin_decisions_total` moved by exactly the decisions it created; the one without must
//! answer 404 at `/metrics`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::error::{fail, Context, Result};
use crate::load::{self, Work};
use crate::report::{self, BackendReport, Phase};
use crate::scale::with_cpu;
use crate::service::Service;
use crate::{check, service_env, timing, Args};

/// The step names of the two sides, in the table and the CSV.
pub const ON: &str = "/action metrics on";
/// See [`ON`].
pub const OFF: &str = "/action metrics off";

/// What the comparison found, over every round.
#[derive(Debug, Serialize, Default)]
pub struct MetricsComparison {
    /// Connections.
    pub concurrency: usize,
    /// Rounds (one step with, one without, each).
    pub rounds: usize,
    /// Mean requests/s with metrics on.
    pub on_per_sec: f64,
    /// Mean requests/s with metrics off.
    pub off_per_sec: f64,
    /// `on_per_sec / off_per_sec`.
    pub on_to_off: f64,
    /// Mean p99 latency with metrics on, ms.
    pub on_p99_ms: f64,
    /// Mean p99 latency with metrics off, ms.
    pub off_p99_ms: f64,
}

/// Runs the comparison against `on` (the benchmark's service) and a second service it starts
/// in `dir/metrics-off`, creating fresh decisions from `next_pair`; returns the decisions
/// created. The steps go into `report.phases`, the comparison into `report.metrics`.
pub(crate) fn compare(
    args: &Args,
    dir: &Path,
    backend: &str,
    database_url: &str,
    on: &mut Service,
    next_pair: &Arc<AtomicU64>,
    report: &mut BackendReport,
) -> Result<u64> {
    let c = args.metrics_concurrency;
    let off_dir = dir.join("metrics-off");
    std::fs::create_dir_all(&off_dir).context(|| format!("cannot create {}", off_dir.display()))?;
    let mut env = service_env(&off_dir, database_url);
    env.push(("JUSTIN_METRICS__ENABLED", "false".into()));
    let bin = on.bin.clone();
    let mut off = Service::start(&bin, &off_dir, &env)?;
    let result = rounds(args, backend, on, &mut off, next_pair, report);
    match off.stop() {
        Ok((status, false)) if status.success() => {}
        Ok((status, _)) => report.errors.push(format!(
            "the service without metrics did not stop cleanly on SIGTERM: {status}"
        )),
        Err(e) => report
            .errors
            .push(format!("could not stop the service without metrics: {e}")),
    }
    let created = result?;
    let ceiling = report
        .ceilings
        .iter()
        .find(|x| x.concurrency == c)
        .map(|x| x.tps);
    for p in report
        .phases
        .iter_mut()
        .filter(|p| p.route == ON || p.route == OFF)
    {
        p.of_ceiling = ceiling.filter(|r| *r > 0.0).map(|r| p.requests_per_sec / r);
    }
    let mean = |name: &str, f: &dyn Fn(&Phase) -> f64| {
        let of: Vec<f64> = report
            .phases
            .iter()
            .filter(|p| p.route == name)
            .map(f)
            .collect();
        of.iter().sum::<f64>() / of.len().max(1) as f64
    };
    let on_per_sec = mean(ON, &|p| p.requests_per_sec);
    let off_per_sec = mean(OFF, &|p| p.requests_per_sec);
    let comparison = MetricsComparison {
        concurrency: c,
        rounds: args.metrics_rounds,
        on_per_sec,
        off_per_sec,
        on_to_off: if off_per_sec > 0.0 {
            on_per_sec / off_per_sec
        } else {
            0.0
        },
        on_p99_ms: mean(ON, &|p| p.latency.p99_ms),
        off_p99_ms: mean(OFF, &|p| p.latency.p99_ms),
    };
    println!("{}", report::metrics_line(backend, &comparison));
    report.metrics = Some(comparison);
    Ok(created)
}

fn rounds(
    args: &Args,
    backend: &str,
    on: &mut Service,
    off: &mut Service,
    next_pair: &Arc<AtomicU64>,
    report: &mut BackendReport,
) -> Result<u64> {
    let (status, _) = get(&off.base_url, "/metrics")?;
    if status != 404 {
        return fail(format!(
            "the service with [metrics] enabled = false answered {status} at /metrics, not 404"
        ));
    }
    let c = args.metrics_concurrency;
    let mut created = 0;
    for round in 0..args.metrics_rounds {
        // On first in even rounds, off first in odd ones.
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for with_metrics in order {
            let service = if with_metrics { &mut *on } else { &mut *off };
            let before = with_metrics
                .then(|| learned(&service.base_url))
                .transpose()?;
            let work = Work::Action {
                users: args.users,
                next: Arc::clone(next_pair),
                limit: None,
                extra_features: 0,
            };
            let (run, usage) = with_cpu(service.pid(), || {
                load::run(
                    &service.base_url,
                    &work,
                    c,
                    args.generator_threads,
                    timing(args),
                )
            })?;
            if let Some(before) = before {
                let after = learned(&service.base_url)?;
                if after - before != run.created {
                    report.errors.push(format!(
                        "/metrics counted {} learned decisions during a step that created {}",
                        after - before,
                        run.created
                    ));
                }
            }
            let mut phase = Phase::new(backend, &run);
            phase.route = if with_metrics { ON } else { OFF }.to_owned();
            phase.set_cpu(usage);
            println!("{}", report::phase_row(&phase));
            created += run.created;
            check(report, &phase);
            report.phases.push(phase);
            if !service.is_running() {
                return fail(format!(
                    "the service stopped during {}; its last output:\n{}",
                    if with_metrics { ON } else { OFF },
                    service.tail()
                ));
            }
        }
    }
    Ok(created)
}

/// `justin_decisions_total{kind="learned"}` as the service shows it now.
fn learned(base_url: &str) -> Result<u64> {
    let (status, text) = get(base_url, "/metrics")?;
    if status != 200 {
        return fail(format!("GET /metrics answered {status}"));
    }
    let samples: BTreeMap<&str, &str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .collect();
    samples
        .get("justin_decisions_total{kind=\"learned\"}")
        .and_then(|v| v.parse().ok())
        .map_or_else(
            || fail("/metrics shows no justin_decisions_total{kind=\"learned\"}"),
            Ok,
        )
}

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
    let text = response
        .body_mut()
        .read_to_string()
        .context(|| format!("GET {path}: unreadable body"))?;
    Ok((status, text))
}
