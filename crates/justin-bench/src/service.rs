//! Runs the `justin` binary under test: `justin serve` in a scratch directory on a free port,
//! with the environment the benchmark chooses, stopped (and killed if it will not stop) when
//! the handle is dropped, so no server outlives a failed run.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{fail, Context, Result};

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

/// A running `justin serve` process.
pub struct Service {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
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

impl Service {
    /// Starts `justin serve` in `dir` with `env` (which should start with [`fixed_env`]) plus
    /// the inherited settings, and waits until it says where it listens.
    pub fn start(bin: &Path, dir: &Path, env: &[(&str, String)]) -> Result<Self> {
        let mut cmd = Command::new(bin);
        cmd.arg("serve").current_dir(dir);
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
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .context(|| format!("cannot start {} serve", bin.display()))?;
        let tail = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(read_lines(out, Arc::clone(&tail), Some(tx)));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(read_lines(err, Arc::clone(&tail), None));
        }
        let mut service = Self {
            child,
            base_url: String::new(),
            tail,
            readers,
            stopped: false,
        };
        let started = Instant::now();
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(url) => {
                    service.base_url = url;
                    return Ok(service);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = service.child.try_wait() {
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

    /// The process id, for reading its memory use.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        !self.stopped && matches!(self.child.try_wait(), Ok(None))
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
        self.join_readers();
        result
    }

    fn stop_inner(&mut self) -> Result<(ExitStatus, bool)> {
        self.stopped = true;
        if let Some(status) = self
            .child
            .try_wait()
            .context(|| "cannot wait for justin".into())?
        {
            return Ok((status, false));
        }
        let pid = self.child.id().to_string();
        // std has no way to send SIGTERM; `kill` is part of every Unix.
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        if sent.is_ok_and(|s| s.success()) {
            let asked = Instant::now();
            while asked.elapsed() < STOP_TIMEOUT {
                if let Some(status) = self
                    .child
                    .try_wait()
                    .context(|| "cannot wait for justin".into())?
                {
                    return Ok((status, false));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.child.kill().context(|| "cannot kill justin".into())?;
        let status = self
            .child
            .wait()
            .context(|| "cannot wait for justin".into())?;
        Ok((status, true))
    }

    fn join_readers(&mut self) {
        for reader in self.readers.drain(..) {
            reader.join().ok();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if !self.stopped {
            // A failed run: do not leave a server behind.
            self.child.kill().ok();
            self.child.wait().ok();
        }
    }
}

/// Reads `stream` line by line into `tail` (keeping the last lines), sending the URL of the
/// `listening on http://...` line to `url` when given.
fn read_lines(
    stream: impl Read + Send + 'static,
    tail: Arc<Mutex<Vec<String>>>,
    url: Option<mpsc::Sender<String>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if let (Some(tx), Some(at)) = (&url, line.find("listening on http://")) {
                let found = line[at + "listening on ".len()..].trim().to_owned();
                tx.send(found).ok();
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
