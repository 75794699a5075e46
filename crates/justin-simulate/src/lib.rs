//! The study simulator, run as `justin simulate` (the `justin` binary parses [`Args`] and calls
//! [`run`]): it drives a running JustIn service through a synthetic study, as a research
//! team's rehearsal and as a load for the benchmark. It registers the participants, then for
//! each decision time, each decision type and each participant draws a context, asks for the
//! action, simulates the reward and uploads it; after every K decisions it requests an update,
//! waits for it, and summarises the decisions since the previous one. It is a client of the
//! service's HTTP API only: it reads no configuration of the service and writes no log.
//!
//! The decisions run in a fixed order, decision round (decision time × type) first, then
//! participant, and every update waits for the window before it, so the decisions of each
//! window are drawn under the same parameters. Contexts, noise and availability come from the
//! simulator's seed alone; the actions come from the service.

pub mod callback;
mod client;
mod model;
mod settings;
mod summary;

use std::fs::File;
use std::io::BufWriter;
use std::ops::Range;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde_json::{json, Map, Value};

pub use settings::Args;

use callback::Receiver;
use client::Client;
use settings::{Plan, API_KEY_ENV};
use summary::{CsvWriter, Outcome, Row, Tally};

/// How long the simulator waits for an update's callback before asking the service where the
/// update stands, and again between two such questions.
const POLL_EVERY: Duration = Duration::from_secs(1);

/// Runs `justin simulate`: exit 0 after a run whose updates all completed, 1 otherwise.
pub fn run(args: Args) -> ExitCode {
    let env_key = std::env::var(API_KEY_ENV).ok();
    match Plan::from_args(args, env_key).and_then(|plan| simulate(&plan)) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("justin simulate: {message}");
            ExitCode::FAILURE
        }
    }
}

fn simulate(plan: &Plan) -> Result<ExitCode, String> {
    let began = Instant::now();
    let client = Client::new(&plan.url, plan.api_key.clone(), plan.request_timeout);
    let receiver = Receiver::start(&plan.callback_listen, plan.callback_url.clone())?;
    let out = &plan.out;
    let write_error = |e: std::io::Error| format!("cannot write {}: {e}", out.display());
    let file = File::create(out).map_err(write_error)?;
    let mut csv = CsvWriter::new(BufWriter::new(file)).map_err(write_error)?;

    let start = plan.life.start.unwrap_or_else(Utc::now);
    for participant in 0..plan.participants {
        client.add_user(&registration(plan, start, participant))?;
    }
    let mut parameters = client.parameters()?;
    let total = plan.total_decisions();
    let types = &plan.decision_types;
    println!(
        "simulating {total} decisions against {}: {} participants × {} decision times × {} \
         decision type{} ({}), an update every {} decisions",
        client.base(),
        plan.participants,
        plan.decision_times,
        types.len(),
        if types.len() == 1 { "" } else { "s" },
        types.join(", "),
        plan.update_every
    );
    let (low, high) = parameters.clip.unwrap_or(plan.clip);
    let source = if parameters.clip.is_some() {
        "the parameters' min_probability and max_probability"
    } else {
        "--clip"
    };
    println!("at_min and at_max: shares of available decisions at {low} and {high} ({source})");
    println!("{}", summary::table_header());

    let (mut updates, mut failed) = (0u64, Vec::new());
    let mut gaps = Tally::default();
    for (number, (range, update)) in (1..).zip(windows(total, plan.update_every)) {
        let clip = parameters.clip.unwrap_or(plan.clip);
        let started = Instant::now();
        let done = run_window(plan, &client, start, range)?;
        let (outcomes, held): (Vec<_>, Vec<Option<(u64, Value)>>) = done
            .into_iter()
            .map(|d| (d.outcome, d.held.map(|upload| (d.at, upload))))
            .unzip();
        let decision_seconds = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let update_status = if update {
            updates += 1;
            let (id, status) = run_update(&client, &receiver, plan.update_timeout)?;
            if status != "completed" {
                failed.push(id);
            }
            status
        } else {
            "none".to_owned()
        };
        let update_seconds = if update {
            started.elapsed().as_secs_f64()
        } else {
            0.0
        };
        // The uploads held back from this window go now that its update has finished (after
        // the window itself when none follows it), in the run's order.
        let mut held: Vec<(u64, Value)> = held.into_iter().flatten().collect();
        held.sort_by_key(|&(at, _)| at);
        for (_, upload) in &held {
            client.upload(upload)?;
        }
        parameters = client.parameters()?;
        let tally = Tally::of(&outcomes, clip);
        gaps.missed_calls += tally.missed_calls;
        gaps.missing_outcomes += tally.missing_outcomes;
        gaps.late_uploads += tally.late_uploads;
        let row = Row {
            update: number,
            update_status,
            parameter_version: parameters.version,
            tally,
            clip,
            decision_seconds,
            update_seconds,
        };
        println!("{}", summary::table_row(&row));
        csv.write(&row).map_err(write_error)?;
    }
    for &participant in &plan.life.erasures {
        let pseudonym = client.erase(&user_id(plan, u64::from(participant)))?;
        println!("participant {participant} erased: their decisions are kept as {pseudonym}");
    }
    if gaps.missed_calls + gaps.missing_outcomes + gaps.late_uploads > 0 {
        println!(
            "{} decision times without a call, {} available decisions without an upload, {} \
             uploads sent after the next update",
            gaps.missed_calls, gaps.missing_outcomes, gaps.late_uploads
        );
    }
    println!(
        "{total} decision times and {updates} updates in {:.1} s; summary written to {}",
        began.elapsed().as_secs_f64(),
        out.display()
    );
    if let Some(last) = failed.last() {
        eprintln!(
            "justin simulate: {} of {updates} updates failed; GET /api/v1/update/{last} gives \
             the reason of the last",
            failed.len()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The windows of a run of `total` decisions with an update every `every`: each window's
/// decisions (positions in the run's order), and whether an update follows it. Only a last
/// window shorter than `every` has none.
fn windows(total: u64, every: u64) -> impl Iterator<Item = (Range<u64>, bool)> {
    (0..total.div_ceil(every)).map(move |w| {
        let start = w * every;
        let end = total.min(start + every);
        (start..end, end - start == every)
    })
}

/// The id of participant number `participant`.
fn user_id(plan: &Plan, participant: u64) -> String {
    format!("{}{participant}", plan.user_prefix)
}

/// Now, as the API takes a timestamp.
fn now() -> String {
    stamp(Utc::now())
}

fn stamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The simulated time of decision time `t`: the run's start plus `t` decision intervals.
fn simulated(plan: &Plan, start: DateTime<Utc>, t: u64) -> DateTime<Utc> {
    let secs = t.saturating_mul(plan.life.decision_time_secs);
    start + TimeDelta::seconds(i64::try_from(secs).unwrap_or(i64::MAX / 1000))
}

/// The `add_user` body of participant `p`: with `study_start` and `study_end` when the run
/// has enrollment dates.
fn registration(plan: &Plan, start: DateTime<Utc>, p: u32) -> Value {
    let mut body = json!({"user_id": user_id(plan, u64::from(p))});
    if plan.life.dated() {
        let first = plan.life.start_time(p);
        body["study_start"] = json!(stamp(simulated(plan, start, first)));
        if let Some(length) = plan.life.study_length {
            let end = simulated(plan, start, first + u64::from(length));
            body["study_end"] = json!(stamp(end));
        }
    }
    body
}

/// A decision time played: its position in the run, what it came to, and its upload when it
/// is held back until after the next update.
struct Done {
    at: u64,
    outcome: Outcome,
    held: Option<Value>,
}

/// Runs the decisions at positions `range`. With more than one thread, each participant
/// belongs to one thread, so a participant's decisions keep their order. The first error
/// stops every thread.
fn run_window(
    plan: &Plan,
    client: &Client,
    start: DateTime<Utc>,
    range: Range<u64>,
) -> Result<Vec<Done>, String> {
    let participants = u64::from(plan.participants);
    let threads = plan.concurrency.min(plan.participants as usize).max(1) as u64;
    if threads == 1 {
        return range.map(|at| decide(plan, client, start, at)).collect();
    }
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|worker| {
                let (range, stop) = (range.clone(), &stop);
                scope.spawn(move || {
                    let mut done = Vec::new();
                    for at in range.filter(|at| at % participants % threads == worker) {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        match decide(plan, client, start, at) {
                            Ok(outcome) => done.push(outcome),
                            Err(e) => {
                                stop.store(true, Ordering::Relaxed);
                                return Err(e);
                            }
                        }
                    }
                    Ok(done)
                })
            })
            .collect();
        let mut all = Vec::new();
        let mut first_error = None;
        for worker in workers {
            match worker.join() {
                Ok(Ok(done)) => all.extend(done),
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(_) => {
                    first_error.get_or_insert_with(|| "a simulator thread panicked".to_owned());
                }
            }
        }
        first_error.map_or(Ok(all), Err)
    })
}

/// One decision at position `at` of the run: ask for the action, simulate the reward, upload
/// (not for a participant out of the study: there is nothing to observe). A participant who
/// withdraws at this decision time is withdrawn first. The decision's own draws may skip the
/// call and, for an available decision (the ones an update reads), leave the outcome missing
/// (no upload) or hold the upload back: it is returned then, for the caller to send after the
/// next update.
fn decide(plan: &Plan, client: &Client, start: DateTime<Utc>, at: u64) -> Result<Done, String> {
    let participants = u64::from(plan.participants);
    let (participant, round) = (at % participants, at / participants);
    let types = plan.decision_types.len() as u64;
    // The remainder is below the number of types, so the index exists.
    let decision_type = &plan.decision_types[(round % types) as usize];
    let user = user_id(plan, participant);
    let time = round / types;
    // `participant` is below `plan.participants`, a u32.
    let number = u32::try_from(participant).unwrap_or(u32::MAX);
    if round % types == 0
        && plan
            .life
            .withdraws_at(number)
            .is_some_and(|w| u64::from(w) == time)
    {
        client.withdraw(&user, "simulated withdrawal")?;
    }
    let draw = plan.model.draw(plan.seed, participant, round);
    if !draw.called || plan.life.silent_at(number, time) {
        return Ok(Done {
            at,
            outcome: Outcome::MISSED,
            held: None,
        });
    }
    let context = Value::Object(plan.model.context(&draw));
    let timestamp = if plan.life.dated() {
        stamp(simulated(plan, start, time))
    } else {
        now()
    };

    let mut request = json!({
        "user_id": user,
        "decision_idx": round,
        "timestamp": timestamp,
        "context": context,
        "decision_type": decision_type,
        "available": draw.available,
    });
    if !draw.available {
        request["unavailable_reason"] = json!("simulated");
    }
    let decision = client.action(&request)?;
    let mut outcome = Outcome {
        called: true,
        available: false,
        action_prob: decision.action_prob,
        reward: 0.0,
        outcome_missing: false,
        upload_late: false,
    };
    if !decision.in_study {
        return Ok(Done {
            at,
            outcome,
            held: None,
        });
    }
    let reward = plan.model.reward(&draw, decision.action);
    // The algorithm may declare a decision not available (a context value it needs is
    // missing): it is then as one the study server marked unavailable.
    let available = draw.available && decision.available;
    outcome.available = available;
    outcome.reward = reward;
    if available && draw.outcome_missing {
        outcome.outcome_missing = true;
        return Ok(Done {
            at,
            outcome,
            held: None,
        });
    }

    let mut observed = Map::new();
    observed.insert(plan.outcome_field.clone(), json!(reward));
    let upload = json!({
        "user_id": user,
        "decision_idx": round,
        "timestamp": now(),
        "decision_type": decision_type,
        "data": {
            "context": context,
            "action": decision.action,
            "action_prob": decision.action_prob,
            "state": decision.state,
            "outcome": observed,
        },
    });
    if available && draw.upload_late {
        outcome.upload_late = true;
        return Ok(Done {
            at,
            outcome,
            held: Some(upload),
        });
    }
    client.upload(&upload)?;
    Ok(Done {
        at,
        outcome,
        held: None,
    })
}

/// Requests an update and waits until it has finished: its id and final status. The
/// callback tells first; asking the service every [`POLL_EVERY`] covers a callback that never
/// comes (a receiver the service cannot reach).
fn run_update(
    client: &Client,
    receiver: &Receiver,
    timeout: Duration,
) -> Result<(String, String), String> {
    let id = client.request_update(&now(), receiver.url())?;
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // Whatever the callback says, the service's record is the one reported.
        receiver.wait_for(&id, left.min(POLL_EVERY));
        let status = client.update_status(&id)?;
        if status != "processing" {
            return Ok((id, status));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "update {id} was still processing after {} s (--update-timeout-secs); \
                 GET /api/v1/update/{id} shows where it stands",
                timeout.as_secs()
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_window_but_a_short_last_one_ends_in_an_update() {
        let w: Vec<_> = windows(30, 20).collect();
        assert_eq!(w, [(0..20, true), (20..30, false)]);
        let w: Vec<_> = windows(60, 20).collect();
        assert_eq!(w, [(0..20, true), (20..40, true), (40..60, true)]);
        let w: Vec<_> = windows(5, 20).collect();
        assert_eq!(w, [(0..5, false)]);
    }
}
