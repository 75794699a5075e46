//! The two steps at scale on PostgreSQL (a model update over a bulk-filled `study_data`, timed
//! to its callback, and the export of one decision per filled record against `COPY`), the
//! service's memory sampled while each runs, and the CPU a step costs the service.

use super::*;

/// Samples a process's VmRSS every [`RSS_INTERVAL`] until finished.
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    samples: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl RssSampler {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let samples = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, peak, samples) =
                (Arc::clone(&stop), Arc::clone(&peak), Arc::clone(&samples));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(rss) = service::rss_kib(pid) {
                        peak.fetch_max(rss, Ordering::Relaxed);
                        samples.fetch_add(1, Ordering::Relaxed);
                    }
                    std::thread::sleep(RSS_INTERVAL);
                }
            })
        };
        Self {
            stop,
            peak,
            samples,
            thread,
        }
    }

    /// Stops sampling; the largest sample (KiB) and the number of samples.
    fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().ok();
        (
            self.peak.load(Ordering::Relaxed),
            self.samples.load(Ordering::Relaxed),
        )
    }
}

/// The export at scale: one decision per filled study record, then `GET /api/v1/export` read to
/// the end while the service's memory is sampled, against PostgreSQL's own `COPY` of the same
/// rows.
pub(crate) fn export_at_scale(
    args: &Args,
    service: &mut Service,
    conn: &mut diesel::PgConnection,
    database_url: &str,
) -> Result<ExportReport> {
    use std::io::Read;

    println!(
        "justin-bench: postgres: filling actions with {} rows for the export",
        args.rows
    );
    pg::fill_actions(conn, args.rows, 0, args.users, USER_PREFIX)?;
    let mut out = ExportReport {
        decisions_filled: args.rows,
        decisions: pg::count_rows(conn, "actions")?,
        ..ExportReport::default()
    };
    out.copy_ceiling_secs = pg::copy_export_ceiling(database_url)?.as_secs_f64();

    let pid = service.pid();
    let sampler = RssSampler::start(pid);
    std::thread::sleep(RSS_INTERVAL * 3);
    out.rss_before_kib = service::rss_kib(pid)?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(args.update_timeout)))
        .build()
        .into();
    let sent = Instant::now();
    let read = (|| -> Result<(u64, u64, Duration)> {
        let response = agent
            .get(format!("{}/api/v1/export", service.base_url))
            .call()
            .context(|| "GET /api/v1/export got no answer".to_owned())?;
        let status = response.status().as_u16();
        if status != 200 {
            return fail(format!("GET /api/v1/export answered {status}"));
        }
        let mut body = response.into_body().into_reader();
        let mut buffer = vec![0_u8; 256 * 1024];
        let (mut bytes, mut lines) = (0_u64, 0_u64);
        let mut first_byte = None;
        loop {
            let n = body
                .read(&mut buffer)
                .context(|| "reading the export failed".to_owned())?;
            if n == 0 {
                break;
            }
            first_byte.get_or_insert_with(|| sent.elapsed());
            bytes += n as u64;
            lines += buffer[..n].iter().filter(|b| **b == b'\n').count() as u64;
        }
        Ok((bytes, lines, first_byte.unwrap_or_default()))
    })();
    let elapsed = sent.elapsed();
    let (peak, samples) = sampler.finish();
    let (bytes, lines, first_byte) = read?;
    out.bytes = bytes;
    out.rows = lines.saturating_sub(1);
    out.seconds = elapsed.as_secs_f64();
    out.first_byte_secs = first_byte.as_secs_f64();
    out.ratio_to_ceiling = out.copy_ceiling_secs / out.seconds.max(f64::MIN_POSITIVE);
    out.rss_peak_kib = peak.max(out.rss_before_kib);
    out.rss_growth_kib = out.rss_peak_kib - out.rss_before_kib;
    out.rss_samples = samples;
    Ok(out)
}

/// Runs `step`, measuring the CPU time the service, the load generator and the machine spent
/// meanwhile.
pub(crate) fn with_cpu<T>(
    service_pid: u32,
    step: impl FnOnce() -> Result<T>,
) -> Result<(T, cpu::Usage)> {
    let before = cpu::Reading::now(service_pid);
    let started = Instant::now();
    let result = step()?;
    let secs = started.elapsed().as_secs_f64();
    let usage = before.usage_until(&cpu::Reading::now(service_pid), secs, *TICKS);
    Ok((result, usage))
}

/// The update at scale: fills `study_data`, requests an update with backups on, and times it
/// to the callback while sampling the service's memory.
pub(crate) fn update_at_scale(
    args: &Args,
    service: &mut Service,
    conn: &mut diesel::PgConnection,
    backups: &Path,
) -> Result<UpdateReport> {
    let mut out = UpdateReport {
        rows_filled: args.rows,
        ..UpdateReport::default()
    };
    println!("justin-bench: postgres: filling study_data with {} rows (INSERT ... SELECT FROM generate_series)", args.rows);
    let fill = Instant::now();
    pg::fill_study_data(conn, args.rows, args.users, USER_PREFIX)?;
    out.fill_secs = fill.elapsed().as_secs_f64();
    timed_update(args, service, conn, backups, out)
}

/// The update with missing outcomes imputed, at scale: adds `args.rows / 10` decisions without
/// an upload to the study the export step left (one decision per filled upload), times an
/// update of the running service (missing outcomes left out) over it, then restarts the
/// service with `[update] missing_outcomes = "default_reward"` (window 0) and times the same
/// update again. Both read the same uploads and back up the same tables; the second also
/// streams the decisions without an upload. Returns the two reports, leave-out first, and how
/// many decisions the second should have imputed (those added here and the route steps'
/// decisions without an upload).
pub(crate) fn imputing_update_at_scale(
    args: &Args,
    service: &mut Service,
    start: impl FnOnce(&[(&'static str, String)]) -> Result<Service>,
    conn: &mut diesel::PgConnection,
    backups: &Path,
) -> Result<(UpdateReport, UpdateReport, u64)> {
    let extra = (args.rows / 10).max(1);
    println!(
        "justin-bench: postgres: adding {extra} decisions without an upload for the update with \
         the default reward"
    );
    let fill = Instant::now();
    pg::fill_actions(conn, extra, args.rows, args.users, USER_PREFIX)?;
    let fill_secs = fill.elapsed().as_secs_f64();
    let unrewarded = pg::count_unrewarded(conn)?;
    let leave_out = timed_update(
        args,
        service,
        conn,
        backups,
        UpdateReport {
            fill_secs,
            ..UpdateReport::default()
        },
    )?;
    let imputing_service = start(&[
        ("JUSTIN_UPDATE__MISSING_OUTCOMES", "default_reward".into()),
        ("JUSTIN_UPDATE__OUTCOME_WINDOW_MINS", "0".into()),
        ("JUSTIN_UPDATE__DEFAULT_REWARD", "0".into()),
    ])?;
    let leave_out_service = std::mem::replace(service, imputing_service);
    leave_out_service.stop()?;
    let imputing = timed_update(
        args,
        service,
        conn,
        backups,
        UpdateReport {
            fill_secs,
            ..UpdateReport::default()
        },
    )?;
    Ok((leave_out, imputing, unrewarded))
}

/// Requests an update of the study as it stands and times it to its callback while sampling
/// the service's memory; `out` carries what the caller filled in.
fn timed_update(
    args: &Args,
    service: &mut Service,
    conn: &mut diesel::PgConnection,
    backups: &Path,
    mut out: UpdateReport,
) -> Result<UpdateReport> {
    out.study_rows = pg::count_rows(conn, "study_data")?;
    let receiver = Receiver::start("127.0.0.1:0", None).map_err(BenchError)?;
    let pid = service.pid();

    let sampler = RssSampler::start(pid);
    std::thread::sleep(RSS_INTERVAL * 3);
    out.rss_before_kib = service::rss_kib(pid)?;

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(load::REQUEST_TIMEOUT))
        .build()
        .into();
    let body =
        serde_json::json!({"timestamp": "2025-01-01T12:00:00Z", "callback_url": receiver.url()});
    let sent = Instant::now();
    let answer = agent
        .post(format!("{}/api/v1/update", service.base_url))
        .send_json(&body);
    let accepted = sent.elapsed();
    let result = match answer {
        Ok(mut response) => {
            let status = response.status().as_u16();
            let json: serde_json::Value = response.body_mut().read_json().unwrap_or_default();
            if status != 202 {
                Err(BenchError(format!(
                    "POST /api/v1/update answered {status}: {json}"
                )))
            } else {
                match json["update_id"].as_str() {
                    Some(id) => Ok(id.to_owned()),
                    None => Err(BenchError(format!(
                        "POST /api/v1/update answered 202 without update_id: {json}"
                    ))),
                }
            }
        }
        Err(e) => Err(BenchError(format!(
            "POST /api/v1/update got no answer: {e}"
        ))),
    };
    let arrival = match &result {
        Ok(_) => receiver.next(Duration::from_secs(args.update_timeout)),
        Err(_) => None,
    };
    let (peak, samples) = sampler.finish();
    let update_id = result?;
    let Some(arrival) = arrival else {
        return fail(format!(
            "the update's callback did not arrive within {} s (update {update_id}); raise --update-timeout if it is merely slow",
            args.update_timeout
        ));
    };
    out.accepted_secs = accepted.as_secs_f64();
    out.request_to_callback_secs = arrival.at.duration_since(sent).as_secs_f64();
    out.callback_status = arrival
        .update()
        .map_or("unreadable", |(_, status)| status)
        .to_owned();
    out.rss_peak_kib = peak.max(out.rss_before_kib);
    out.rss_growth_kib = out.rss_peak_kib - out.rss_before_kib;
    out.rss_samples = samples;

    let mut status = agent
        .get(format!("{}/api/v1/update/{update_id}", service.base_url))
        .call()
        .context(|| format!("GET /api/v1/update/{update_id} got no answer"))?;
    let json: serde_json::Value = status
        .body_mut()
        .read_json()
        .context(|| format!("GET /api/v1/update/{update_id} answered something other than JSON"))?;
    out.update_status = json["update_status"]
        .as_str()
        .unwrap_or("unreadable")
        .to_owned();
    out.rows_read = json["provenance"]["rows_read"].as_u64();
    out.rows_imputed = json["provenance"]["imputed"]["rows"].as_u64();
    out.backup_file = json["provenance"]["backup_file"]
        .as_str()
        .map(str::to_owned);
    out.backup_bytes = out
        .backup_file
        .as_ref()
        .and_then(|file| std::fs::metadata(backups.join(file)).ok())
        .map(|m| m.len());
    Ok(out)
}
