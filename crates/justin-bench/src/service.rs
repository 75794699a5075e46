//! Runs the `justin` binary under test: `justin serve` in a scratch directory on a free port,
//! with the environment the benchmark chooses, stopped (and killed if it will not stop) when
//! the handle is dropped, so no server outlives a failed run.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{fail, BenchError, Context, Result};

/// How long the service may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stop (SIGTERM) may take before the process is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Lines of the service's output kept for error messages.
const TAIL_LINES: usize = 40;

/// The log level the service runs with: warnings and errors only, so that logging (the access
/// log above all) does not dominate what is measured, plus the one start-up line that says
/// which port it listens on.
pub const LOG_LEVEL: &str = "warn,justin_http::startup=info";

/// The settings every run of the service gets: a free port, the [`LOG_LEVEL`], and standard
/// output on (the benchmark reads the port from it).
pub fn fixed_env() -> Vec<(&'static str, String)> {
    vec![
        ("JUSTIN_SERVER__PORT", "0".into()),
        ("JUSTIN_LOGGING__LEVEL", LOG_LEVEL.into()),
        ("JUSTIN_LOGGING__STDOUT", "true".into()),
    ]
}

/// Starts the service under a small `sh` guard that ends it (SIGTERM) as soon as the
/// benchmark's end of a pipe closes: when the benchmark exits, however it exits (an error, a
/// panic, Ctrl-C, `kill -9`), so no server outlives it. The guard prints the service's process
/// id first, for the memory and CPU readings.
const GUARD: &str = r#"exec 3<&0 </dev/null
"$@" 3<&- &
child=$!
echo "justin-bench-service-pid $child"
( while read -r _ <&3; do :; done; kill -TERM "$child" ) >/dev/null 2>&1 &
exec 3<&-
wait "$child""#;

/// The line of [`GUARD`] that names the service's process id.
const PID_LINE: &str = "justin-bench-service-pid ";

/// A running `justin serve` process.
pub struct Service {
    guard: Child,
    /// The service's own process id (the guard's child).
    pid: u32,
    /// The benchmark's end of the guard's pipe: closing it stops the service.
    lifeline: Option<ChildStdin>,
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    /// The binary it runs, for starting another like it.
    pub bin: PathBuf,
    tail: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
    stopped: bool,
}

/// Where the `justin` binary is: `explicit` when given, else beside this benchmark's own binary
/// (cargo builds both into the same `target/<profile>` directory).
pub fn locate_binary(explicit: Option<&Path>) -> Result<PathBuf> {
    let path = match explicit {
        Some(path) => path.to_path_buf(),
        None => {
            let exe =
                std::env::current_exe().context(|| "cannot tell where justin-bench is".into())?;
            match exe.parent() {
                Some(dir) => dir.join(format!("justin{}", std::env::consts::EXE_SUFFIX)),
                None => return fail(format!("{} has no parent directory", exe.display())),
            }
        }
    };
    if !path.is_file() {
        return fail(format!(
            "the justin binary is not at {}: build it first (`make bench` does), or name it with --justin-bin",
            path.display()
        ));
    }
    Ok(path)
}

/// The `JUSTIN_*` variables of the benchmark's own environment that are handed on to the
/// service (to try a setting such as `JUSTIN_DATABASE__POOL_SIZE=16 make bench`), except the
/// test suite's own and those the benchmark sets itself.
pub fn inherited_settings(set_here: &[(&str, String)]) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = std::env::vars()
        .filter(|(key, _)| {
            key.starts_with("JUSTIN_")
                && !key.starts_with("JUSTIN_TEST_")
                && !key.starts_with("JUSTIN_BENCH_")
                && !set_here.iter().any(|(k, _)| k == key)
        })
        .collect();
    found.sort();
    found
}

/// What the service's output told.
enum Told {
    Pid(u32),
    Url(String),
}

impl Service {
    /// Starts `justin serve` in `dir` with `env` (which should start with [`fixed_env`]) plus
    /// the inherited settings, and waits until it says where it listens.
    pub fn start(bin: &Path, dir: &Path, env: &[(&str, String)]) -> Result<Self> {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(GUARD)
            .arg("sh")
            .arg(bin)
            .arg("serve")
            .current_dir(dir);
        for (key, _) in std::env::vars() {
            if key.starts_with("JUSTIN_") || key == "DATABASE_URL" {
                cmd.env_remove(key);
            }
        }
        for (key, value) in inherited_settings(env) {
            cmd.env(key, value);
        }
        for (key, value) in env {
            cmd.env(key, value);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut guard = cmd
            .spawn()
            .context(|| format!("cannot start {} serve (through sh)", bin.display()))?;
        let tail = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let mut readers = Vec::new();
        if let Some(out) = guard.stdout.take() {
            readers.push(read_lines(out, Arc::clone(&tail), Some(tx)));
        }
        if let Some(err) = guard.stderr.take() {
            readers.push(read_lines(err, Arc::clone(&tail), None));
        }
        let lifeline = guard.stdin.take();
        let mut service = Self {
            guard,
            pid: 0,
            lifeline,
            base_url: String::new(),
            bin: bin.to_path_buf(),
            tail,
            readers,
            stopped: false,
        };
        let started = Instant::now();
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(Told::Pid(pid)) => service.pid = pid,
                Ok(Told::Url(url)) if service.pid != 0 => {
                    service.base_url = url;
                    return Ok(service);
                }
                Ok(Told::Url(_)) => {
                    return fail("justin serve listened before its process id was known");
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = service.guard.try_wait() {
                        service.stopped = true;
                        service.join_readers();
                        return fail(format!(
                            "justin serve exited ({status}) before listening; its last output:\n{}",
                            service.tail()
                        ));
                    }
                    if started.elapsed() > START_TIMEOUT {
                        return fail(format!(
                            "justin serve did not say where it listens within {}s; its last output:\n{}",
                            START_TIMEOUT.as_secs(),
                            service.tail()
                        ));
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return fail(format!(
                        "justin serve closed its output before listening; its last output:\n{}",
                        service.tail()
                    ));
                }
            }
        }
    }

    /// The service's process id, for reading its memory and CPU use.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        !self.stopped && matches!(self.guard.try_wait(), Ok(None))
    }

    /// The last lines the service printed.
    pub fn tail(&self) -> String {
        match self.tail.lock() {
            Ok(lines) => lines.join("\n"),
            Err(_) => String::from("(output unavailable)"),
        }
    }

    /// Asks the service to stop (SIGTERM) and waits for it; kills it when it has not stopped
    /// within [`STOP_TIMEOUT`]. Returns its exit status and whether it had to be killed.
    pub fn stop(mut self) -> Result<(ExitStatus, bool)> {
        let result = self.stop_inner();
        // The guard's watcher ends with its pipe.
        self.lifeline = None;
        self.join_readers();
        result
    }

    fn stop_inner(&mut self) -> Result<(ExitStatus, bool)> {
        self.stopped = true;
        let wait_error = |e: std::io::Error| BenchError(format!("cannot wait for justin: {e}"));
        if let Some(status) = self.guard.try_wait().map_err(wait_error)? {
            return Ok((status, false));
        }
        if signal("TERM", self.pid) {
            let asked = Instant::now();
            while asked.elapsed() < STOP_TIMEOUT {
                if let Some(status) = self.guard.try_wait().map_err(wait_error)? {
                    return Ok((status, false));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        signal("KILL", self.pid);
        let status = self.guard.wait().map_err(wait_error)?;
        Ok((status, true))
    }

    fn join_readers(&mut self) {
        for reader in self.readers.drain(..) {
            reader.join().ok();
        }
    }
}

/// Sends `SIG{name}` to `pid` (std can only send SIGKILL, and only to its own children; `kill`
/// is part of every Unix). Whether it was sent.
fn signal(name: &str, pid: u32) -> bool {
    pid != 0
        && Command::new("kill")
            .args([format!("-{name}"), pid.to_string()])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

impl Drop for Service {
    fn drop(&mut self) {
        if !self.stopped {
            // A failed run: do not leave a server behind.
            signal("KILL", self.pid);
            self.guard.kill().ok();
            self.guard.wait().ok();
        }
    }
}

/// Reads `stream` line by line into `tail` (keeping the last lines), sending the guard's
/// process id line and the URL of the `listening on http://...` line to `told` when given.
fn read_lines(
    stream: impl Read + Send + 'static,
    tail: Arc<Mutex<Vec<String>>>,
    told: Option<mpsc::Sender<Told>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if let Some(tx) = &told {
                if let Some(pid) = line.strip_prefix(PID_LINE) {
                    if let Ok(pid) = pid.trim().parse() {
                        tx.send(Told::Pid(pid)).ok();
                    }
                    continue;
                }
                if let Some(at) = line.find("listening on http://") {
                    let found = line[at + "listening on ".len()..].trim().to_owned();
                    tx.send(Told::Url(found)).ok();
                }
            }
            if let Ok(mut lines) = tail.lock() {
                if lines.len() == TAIL_LINES {
                    lines.remove(0);
                }
                lines.push(line);
            }
        }
    })
}

/// The resident set size of process `pid` in KiB (`VmRSS` in `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).context(|| format!("cannot read {path}"))?;
    parse_vm_rss(&status)
        .ok_or_else(|| crate::error::BenchError(format!("{path} has no VmRSS line")))
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_in_kib() {
        let status = "Name:\tjustin\nVmPeak:\t  999 kB\nVmRSS:\t   12345 kB\nThreads:\t9\n";
        assert_eq!(parse_vm_rss(status), Some(12345));
        assert_eq!(parse_vm_rss("Name:\tjustin\n"), None);
    }
}
