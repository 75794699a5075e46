//! Helpers for the end-to-end tests: find the built `justin` binary, run it in a scratch
//! directory against a fresh database of either backend ([`TestDatabase`], chosen by
//! [`BACKEND_VAR`]), talk to it over HTTP ([`Served`]), receive its callbacks
//! ([`CallbackReceiver`]), and check or change its tables in SQL both dialects accept
//! ([`execute`], [`sql_lines`], [`row_counts`]). What other suites need too comes from
//! justin-testkit and is re-exported here; what is about the binary is here.
//!
//! These helpers only run inside tests, so a failure to set up the test is a panic with a
//! message saying what to fix.
#![allow(clippy::expect_used, clippy::unwrap_used)]

pub mod cluster;
pub mod nginx;

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

pub use justin_testkit::{
    connect, execute, row_counts, sql_lines, Backend, CallbackReceiver, Client, Reply, ScratchDir,
    TestConnection, TestDatabase, BACKEND_VAR, TABLES, WAIT,
};
use serde_json::Value;

/// The `justin` binary built for this test run (`JUSTIN_BIN` overrides).
pub fn justin_bin() -> PathBuf {
    built_bin(
        "justin",
        "JUSTIN_BIN",
        "cargo build -p justin-http --bin justin",
    )
}

/// The binary of the example algorithm crate, examples/beta-bernoulli: justin with the
/// `beta_bernoulli` algorithm registered (`JUSTIN_EXAMPLE_BIN` overrides). `make test` builds
/// it into the workspace's target directory, next to justin.
pub fn example_bin() -> PathBuf {
    built_bin(
        "justin-beta-bernoulli",
        "JUSTIN_EXAMPLE_BIN",
        "cd examples/beta-bernoulli && CARGO_TARGET_DIR=<the workspace's target directory> cargo build",
    )
}

/// The directory of the example algorithm crate.
pub fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/beta-bernoulli")
}

/// The binary `name` built for this test run, or the one `override_var` names.
fn built_bin(name: &str, override_var: &str, build: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(override_var) {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test binary knows its path");
    // target/<profile>/deps/e2e-<hash> -> target/<profile>/<name>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps");
    let bin = profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is missing: build it first with `{build}` (`make test` does)",
        bin.display()
    );
    bin
}

/// A loopback port nothing listens on right now, for a process the test starts on it.
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `count` different loopback ports nothing listens on right now.
pub fn free_ports(count: usize) -> Vec<u16> {
    // Held until all are chosen, so that none is handed out twice.
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port can be found"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("a bound port").port())
        .collect()
}

/// A `justin` command in `dir`, with only the given environment on top of a clean one:
/// inherited `JUSTIN_*` and `DATABASE_URL` variables would change what is tested.
pub fn justin(dir: &Path, env: &[(&str, String)]) -> Command {
    command(&justin_bin(), dir, env)
}

/// Like [`justin`], for the binary `bin` (a binary with other algorithms registered).
pub fn command(bin: &Path, dir: &Path, env: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.current_dir(dir);
    for (key, _) in std::env::vars() {
        if key.starts_with("JUSTIN_") || key == "DATABASE_URL" {
            cmd.env_remove(key);
        }
    }
    for (key, value) in env {
        cmd.env(key, value);
    }
    cmd
}

/// What a finished command printed.
#[derive(Debug)]
pub struct Finished {
    /// Its exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs a command to its end.
pub fn run(cmd: &mut Command) -> Finished {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .expect("the justin binary runs");
    Finished {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A `justin serve` process and the database it serves.
pub struct Served {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    client: Client,
    stdout: Captured,
    stderr: Captured,
    /// Where the process writes its log files (`logging.dir`, under the directory it runs in).
    log_dir: PathBuf,
}

/// What one of the process's output streams printed, read by a thread of its own.
struct Captured {
    text: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
}

impl Captured {
    /// Reads `stream` line by line into the buffer, calling `on_line` with each line.
    fn spawn(stream: impl Read + Send + 'static, on_line: impl Fn(&str) + Send + 'static) -> Self {
        let text = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&text);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                on_line(&line);
                let mut text = sink.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        Self {
            text,
            reader: Some(reader),
        }
    }

    /// Everything printed, once the stream has closed (the process has ended).
    fn finish(&mut self) -> String {
        if let Some(reader) = self.reader.take() {
            reader.join().ok();
        }
        self.text.lock().unwrap().clone()
    }
}

impl Served {
    /// Starts `justin serve` in `dir` with `env` and waits until it listens.
    pub fn start(dir: &Path, env: &[(&str, String)]) -> Self {
        Self::start_on(dir, env, 0)
    }

    /// Starts `justin serve` in `dir` with `env` on `port` of the loopback address (0: a free
    /// one) and waits until it listens.
    pub fn start_on(dir: &Path, env: &[(&str, String)], port: u16) -> Self {
        Self::start_bin(&justin_bin(), dir, env, port)
    }

    /// Like [`Served::start_on`], for the binary `bin` (a binary with other algorithms
    /// registered).
    pub fn start_bin(bin: &Path, dir: &Path, env: &[(&str, String)], port: u16) -> Self {
        let mut env = env.to_vec();
        env.push(("JUSTIN_SERVER__PORT", port.to_string()));
        let log_dir = env
            .iter()
            .find(|(key, _)| *key == "JUSTIN_LOGGING__DIR")
            .map_or_else(|| dir.join("logs"), |(_, value)| dir.join(value));
        let mut child = command(bin, dir, &env)
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the justin binary starts");
        let (tx, rx) = mpsc::channel();
        let stdout = Captured::spawn(child.stdout.take().expect("stdout is piped"), move |line| {
            if let Some(at) = line.find("listening on http://") {
                let url = line[at + "listening on ".len()..].trim().to_owned();
                tx.send(url).ok();
            }
        });
        let mut stderr = Captured::spawn(child.stderr.take().expect("stderr is piped"), |_| {});
        let Ok(base_url) = rx.recv_timeout(WAIT) else {
            child.kill().ok();
            child.wait().ok();
            panic!(
                "{} serve did not start listening: {}",
                bin.display(),
                stderr.finish()
            );
        };
        // No timeout of its own: a request takes what the service takes.
        let client = Client::new(base_url.clone(), None);
        Self {
            child,
            base_url,
            client,
            stdout,
            stderr,
            log_dir,
        }
    }

    /// A client of the service, for another thread.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// POSTs JSON; the status and the JSON answer ([`Client::post_json`]).
    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.client.post_json(path, body)
    }

    /// GETs; the status and the JSON answer ([`Client::get`]).
    pub fn get(&self, path: &str) -> (u16, Value) {
        self.client.get(path)
    }

    /// Sends `method path` with extra headers and, when given, a JSON body ([`Client::send`]).
    pub fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        self.client.send(method, path, body, headers)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process with SIGKILL, as a crash or the OOM killer would: no shutdown code
    /// runs. Waits for it to be gone.
    pub fn kill_hard(mut self) -> ExitStatus {
        // std's Child::kill sends SIGKILL on Unix.
        self.child.kill().expect("SIGKILL can be sent");
        self.child.wait().expect("the process can be waited for")
    }

    /// Asks the process to stop (SIGTERM) and waits for it.
    pub fn terminate(mut self) -> ExitStatus {
        self.sigterm()
    }

    /// Asks the process to stop (SIGTERM), waits for it, and returns what it printed.
    pub fn terminate_with_output(mut self) -> Finished {
        let status = self.sigterm();
        Finished {
            status,
            stdout: self.stdout.finish(),
            stderr: self.stderr.finish(),
        }
    }

    fn sigterm(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid} failed");
        self.child.wait().expect("the process can be waited for")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        // Already stopped when terminate() ran; otherwise stop it hard.
        self.child.kill().ok();
        self.child.wait().ok();
        // A failing test shows what the service logged: the cause of a 500 is in its log only.
        if std::thread::panicking() {
            let stderr = self.stderr.finish();
            if !stderr.is_empty() {
                eprintln!(
                    "--- `justin serve` at {}: stderr ---\n{stderr}",
                    self.base_url
                );
            }
            // Read without panicking: a panic while panicking aborts the test binary.
            let files = std::fs::read_dir(&self.log_dir)
                .into_iter()
                .flatten()
                .flatten();
            for path in files.map(|entry| entry.path()) {
                if let Ok(bytes) = std::fs::read(&path) {
                    eprintln!(
                        "--- `justin serve` at {}: {} ---\n{}",
                        self.base_url,
                        path.display(),
                        String::from_utf8_lossy(&bytes)
                    );
                }
            }
        }
    }
}

/// The environment that points `justin` at `db` with files under its working directory.
pub fn env_for(db: &TestDatabase) -> Vec<(&'static str, String)> {
    vec![
        ("JUSTIN_DATABASE__URL", db.url().to_owned()),
        ("JUSTIN_LOGGING__LEVEL", "info".into()),
    ]
}

/// The backup file a `justin backup` or `justin reset-db --yes` run reported, as a path under
/// the directory it ran in.
pub fn reported_backup(dir: &Path, out: &Finished) -> PathBuf {
    let reported = out
        .stdout
        .lines()
        .find_map(|line| {
            line.split_once("backup written to ")
                .map(|(_, path)| path.trim())
        })
        .unwrap_or_else(|| panic!("no backup path in the output: {}", out.stdout));
    let path = dir.join(reported);
    assert!(path.is_file(), "{} is not a file", path.display());
    path
}

/// Every file in `dir` and its subdirectories, with its contents (lossily as text): what a
/// process wrote into its log directory.
pub fn files_under(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("a directory entry can be read").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let bytes = std::fs::read(&path)
                    .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
                found.push((path, String::from_utf8_lossy(&bytes).into_owned()));
            }
        }
    }
    found.sort();
    found
}
