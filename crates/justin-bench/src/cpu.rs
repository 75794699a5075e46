//! Where the CPU went during a step: the service's own time, the load generator's, and the
//! whole machine's busy time, read from `/proc`. On a small machine shared by the service,
//! PostgreSQL and the load generator, a throughput figure means little without knowing whether
//! the CPUs were saturated and by whom.

use std::process::Command;

/// Clock ticks per second of `/proc`'s CPU times (`getconf CLK_TCK`; 100 on Linux when it
/// cannot be asked).
pub fn ticks_per_sec() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// User plus system ticks of process `pid` ("self" for this process), from `/proc/<pid>/stat`.
pub fn process_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_process_ticks(&stat)
}

fn parse_process_ticks(stat: &str) -> Option<u64> {
    // The command name, in parentheses, may hold spaces; the fields after it start at field 3.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Ticks of every PostgreSQL server process on the machine (`comm` "postgres"), with the time
/// of its children that have ended (the postmaster's `cutime`/`cstime`), so that backends that
/// exit between two readings (pgbench's, at its end) still count.
pub fn postgres_ticks() -> Option<u64> {
    let entries = std::fs::read_dir("/proc").ok()?;
    let mut total = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if stat.contains("(postgres)") {
            total += parse_process_ticks_with_children(&stat).unwrap_or(0);
        }
    }
    Some(total)
}

fn parse_process_ticks_with_children(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    (11..=14).map(|i| fields.get(i)?.parse::<u64>().ok()).sum()
}

/// The machine's busy and total ticks over all CPUs, from `/proc/stat`.
pub fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_machine_ticks(&stat)
}

fn parse_machine_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let total: u64 = values.iter().sum();
    // idle and iowait are the 4th and 5th values.
    let idle = values.get(3)? + values.get(4).unwrap_or(&0);
    Some((total - idle, total))
}

/// A reading of every counter, to subtract from a later one.
#[derive(Debug, Clone, Copy)]
pub struct Reading {
    service: Option<u64>,
    generator: Option<u64>,
    postgres: Option<u64>,
    machine: Option<(u64, u64)>,
}

/// CPU use between two readings, in percent of one CPU (so 200 is two CPUs busy).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Usage {
    /// The wall-clock seconds the percentages are over.
    pub wall_secs: f64,
    /// The service process.
    pub service_percent: Option<f64>,
    /// The load generator (this process).
    pub load_generator_percent: Option<f64>,
    /// Every PostgreSQL server process on the machine (this benchmark's database, and any other
    /// work the server does meanwhile).
    pub postgres_percent: Option<f64>,
    /// Every process on the machine (the service, the load generator, PostgreSQL, and
    /// anything else running).
    pub machine_percent: Option<f64>,
}

impl Usage {
    /// CPU microseconds per operation, for `operations` done during the reading at `percent`.
    pub fn micros_per(percent: Option<f64>, wall_secs: f64, operations: u64) -> Option<f64> {
        let percent = percent?;
        (operations > 0).then(|| percent / 100.0 * wall_secs * 1e6 / operations as f64)
    }
}

impl Reading {
    /// Reads the counters now, for the service process `service_pid`.
    pub fn now(service_pid: u32) -> Self {
        Self {
            service: process_ticks(&service_pid.to_string()),
            generator: process_ticks("self"),
            postgres: postgres_ticks(),
            machine: machine_ticks(),
        }
    }

    /// The use from `self` to `later`, over `secs` seconds of wall-clock time.
    pub fn usage_until(&self, later: &Self, secs: f64, ticks_per_sec: u64) -> Usage {
        let percent = |ticks: u64| 100.0 * ticks as f64 / ticks_per_sec as f64 / secs;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        Usage {
            wall_secs: secs,
            service_percent: self
                .service
                .zip(later.service)
                .filter(|_| secs > 0.0)
                .map(|(a, b)| percent(b.saturating_sub(a))),
            load_generator_percent: self
                .generator
                .zip(later.generator)
                .filter(|_| secs > 0.0)
                .map(|(a, b)| percent(b.saturating_sub(a))),
            postgres_percent: self
                .postgres
                .zip(later.postgres)
                .filter(|_| secs > 0.0)
                .map(|(a, b)| percent(b.saturating_sub(a))),
            machine_percent: self.machine.zip(later.machine).and_then(
                |((busy0, total0), (busy1, total1))| {
                    let total = total1.saturating_sub(total0);
                    (total > 0)
                        .then(|| 100.0 * cpus * busy1.saturating_sub(busy0) as f64 / total as f64)
                },
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_times_are_read_after_the_command_name() {
        let stat = "42 (justin serve) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 1 2 3";
        assert_eq!(parse_process_ticks(stat), Some(300));
    }

    #[test]
    fn ended_children_count_for_postgres() {
        let stat = "7 (postgres) S 1 7 7 0 -1 4194560 100 0 0 0 250 50 1000 200 20 0 9 0 1 2 3";
        assert_eq!(parse_process_ticks_with_children(stat), Some(1500));
    }

    #[test]
    fn machine_busy_time_leaves_out_idle_and_iowait() {
        let stat = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\n";
        assert_eq!(parse_machine_ticks(stat), Some((150, 1000)));
    }
}
