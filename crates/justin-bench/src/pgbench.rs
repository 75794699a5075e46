//! The ceiling: PostgreSQL's own `pgbench`, at the same concurrency and duration as the load
//! generator, running one INSERT of a row shaped like a decision into a table shaped like
//! `actions` (see [`crate::pg::create_ceiling_table`]), with the prepared protocol.
//!
//! Its figures come from its per-transaction log (`-l`), read with the same rules as the load
//! generator's: transactions that started in the first `warmup` seconds are left out, and the
//! rate is the count of those that started in the measured window over its length.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::error::{fail, Context, Result};
use crate::hist::Histogram;
use crate::load::USER_PREFIX;
use crate::pg::CEILING_TABLE;

/// Finds `pgbench`: on the `PATH`, else in the Debian/Ubuntu server packages' directories.
pub fn locate() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("pgbench"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let mut packaged: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| {
            dirs.flatten()
                .map(|d| d.path().join("bin/pgbench"))
                .collect()
        })
        .unwrap_or_default();
    packaged.sort();
    packaged.reverse();
    on_path.into_iter().chain(packaged).find(|p| p.is_file())
}

/// The version line `pgbench --version` prints.
pub fn version(pgbench: &Path) -> Result<String> {
    let out = Command::new(pgbench)
        .arg("--version")
        .output()
        .context(|| format!("cannot run {} --version", pgbench.display()))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The transaction pgbench runs: one INSERT of a decision (a random user of the benchmark's,
/// the default decision type, a random index out of 10^15 so keys are unique but for a
/// negligible chance, which ON CONFLICT DO NOTHING absorbs, a temperature context and state, a
/// random action, available and without a reason, drawn by the algorithm with the participant
/// in the study), every column the service's own insert writes.
pub fn script(users: u64) -> String {
    format!(
        "\\set u random(0, {last_user})\n\
         \\set idx random(0, 999999999999999)\n\
         \\set t random(150, 349)\n\
         \\set a random(0, 1)\n\
         INSERT INTO {CEILING_TABLE} (user_id, decision_type, decision_idx, request_timestamp, \
         created_at, context, state, action, action_prob, parameter_version, rng_seed, available, \
         unavailable_reason, sent_timestamp, policy, fallback_reason, decided_by, in_study) \
         VALUES ('{USER_PREFIX}' || :u::text, 'default', :idx, now(), now(), \
         ('{{\"temperature\": ' || (:t / 10.0)::text || '}}')::json, \
         ('[' || (:t / 10.0)::text || ']')::json, :a, 0.5, 1, :idx, true, NULL, \
         '2025-01-01T12:00:00', 'algorithm', NULL, NULL, true) \
         ON CONFLICT DO NOTHING;\n",
        last_user = users.max(1) - 1,
    )
}

/// What one pgbench run measured.
#[derive(Debug)]
pub struct Ceiling {
    /// Clients (`-c`).
    pub clients: usize,
    /// Threads (`-j`).
    pub threads: usize,
    /// Transactions that started in the measured window.
    pub latencies: Histogram,
    /// The window's length in seconds.
    pub window_secs: f64,
    /// pgbench's own `tps = ...` figure over its whole run (warm-up included).
    pub reported_tps: Option<f64>,
    /// Transactions pgbench reported as failed.
    pub failed: u64,
    /// Transactions in the log, warm-up included.
    pub transactions_total: u64,
    /// The command line, for the report.
    pub command: String,
}

impl Ceiling {
    /// Transactions per second in the measured window.
    pub fn rate(&self) -> f64 {
        if self.window_secs > 0.0 {
            self.latencies.count() as f64 / self.window_secs
        } else {
            0.0
        }
    }
}

/// Runs pgbench against `url` with `clients` clients for `warmup` + `measure` (rounded up to
/// whole seconds, as `-T` takes), writing its script and logs into `dir`.
pub fn run(
    pgbench: &Path,
    url: &str,
    dir: &Path,
    users: u64,
    clients: usize,
    warmup: Duration,
    measure: Duration,
) -> Result<Ceiling> {
    let script_path = dir.join("pgbench-insert.sql");
    std::fs::write(&script_path, script(users))
        .context(|| format!("cannot write {}", script_path.display()))?;
    let threads = clients.clamp(1, 2);
    let secs = (warmup + measure).as_secs_f64().ceil().max(1.0) as u64;
    let prefix = dir.join(format!("pgbench-c{clients}"));
    let args: Vec<String> = vec![
        "-n".into(),
        "-M".into(),
        "prepared".into(),
        "-c".into(),
        clients.to_string(),
        "-j".into(),
        threads.to_string(),
        "-T".into(),
        secs.to_string(),
        "-f".into(),
        script_path.display().to_string(),
        "-l".into(),
        format!("--log-prefix={}", prefix.display()),
        url.to_owned(),
    ];
    let command = format!(
        "pgbench {}",
        args[..args.len() - 1].join(" ") + " " + &crate::pg::mask(url)
    );
    let out = Command::new(pgbench)
        .args(&args)
        .current_dir(dir)
        .output()
        .context(|| format!("cannot run {}", pgbench.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return fail(format!(
            "{command} failed ({}):\n{stdout}{stderr}",
            out.status
        ));
    }
    let reported_tps = stdout
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|tps| tps.parse().ok());
    let failed = stdout
        .lines()
        .find_map(|l| l.strip_prefix("number of failed transactions: "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let mut log = String::new();
    let stem = format!("pgbench-c{clients}.");
    let entries = std::fs::read_dir(dir).context(|| format!("cannot list {}", dir.display()))?;
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&stem) {
            let text = std::fs::read_to_string(entry.path())
                .context(|| format!("cannot read {}", entry.path().display()))?;
            log.push_str(&text);
            std::fs::remove_file(entry.path()).ok();
        }
    }
    let parsed = parse_log(&log, warmup, measure)?;
    Ok(Ceiling {
        clients,
        threads,
        latencies: parsed.latencies,
        window_secs: measure.as_secs_f64(),
        reported_tps,
        failed: failed.max(parsed.failed),
        transactions_total: parsed.total,
        command,
    })
}

/// What a pgbench log holds.
#[derive(Debug)]
pub struct Parsed {
    /// Latencies of the transactions that started in the measured window.
    pub latencies: Histogram,
    /// Failed transactions.
    pub failed: u64,
    /// Every transaction logged.
    pub total: u64,
}

/// Reads pgbench's per-transaction log (`client_id transaction_no time script_no time_epoch
/// time_us ...`, `time` being the latency in µs, or `failed` and the like for a failed
/// transaction; the epoch pair being when it ended). Returns the latencies of the transactions
/// that started in `[first start + warmup, first start + warmup + measure)`.
pub fn parse_log(log: &str, warmup: Duration, measure: Duration) -> Result<Parsed> {
    let mut done = Vec::new();
    let mut failed = 0;
    let mut total = 0;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        total += 1;
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(latency), Some(epoch), Some(micros)) =
            (fields.get(2), fields.get(4), fields.get(5))
        else {
            return fail(format!(
                "pgbench wrote a log line of an unknown shape: {line:?}"
            ));
        };
        let Ok(latency) = latency.parse::<u64>() else {
            failed += 1;
            continue;
        };
        let (Ok(epoch), Ok(micros)) = (epoch.parse::<u64>(), micros.parse::<u64>()) else {
            return fail(format!(
                "pgbench wrote a log line of an unknown shape: {line:?}"
            ));
        };
        let ended = epoch * 1_000_000 + micros;
        done.push((ended.saturating_sub(latency), latency));
    }
    let mut latencies = Histogram::new();
    let Some(first) = done.iter().map(|(start, _)| *start).min() else {
        return Ok(Parsed {
            latencies,
            failed,
            total,
        });
    };
    let from = first + warmup.as_micros() as u64;
    let to = from + measure.as_micros() as u64;
    for (start, latency) in done {
        if start >= from && start < to {
            latencies.record(latency);
        }
    }
    Ok(Parsed {
        latencies,
        failed,
        total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_is_windowed_by_start_time() {
        // Transactions of 1 ms starting at 0, 0.5 s, 1.0 s, 1.5 s, 2.0 s and 2.5 s.
        let log = "0 0 1000 0 100 1000\n\
                   0 1 1000 0 100 501000\n\
                   1 0 1000 0 101 1000\n\
                   1 1 1000 0 101 501000\n\
                   0 2 1000 0 102 1000\n\
                   0 3 failed 0 102 501000\n\
                   1 2 1000 0 102 501000\n";
        let parsed = parse_log(log, Duration::from_secs(1), Duration::from_secs(1)).unwrap();
        assert_eq!(parsed.latencies.count(), 2, "the starts at 1.0 s and 1.5 s");
        assert_eq!(parsed.failed, 1);
        assert_eq!(parsed.total, 7);
    }

    #[test]
    fn a_line_of_another_shape_is_an_error() {
        assert!(parse_log("garbage\n", Duration::ZERO, Duration::from_secs(1)).is_err());
    }

    #[test]
    fn the_script_inserts_one_row_per_transaction() {
        let s = script(1000);
        assert!(s.contains("random(0, 999)"));
        assert_eq!(s.matches("INSERT").count(), 1);
        for column in ["decision_type", "available", "unavailable_reason"] {
            assert!(s.contains(column), "{column}");
        }
        assert!(s.contains("ON CONFLICT DO NOTHING"));
    }
}
