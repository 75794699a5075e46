//! Helpers for the end-to-end tests: find the built `justin` binary, run it in a scratch
//! directory against a fresh database of either backend ([`TestDatabase`], chosen by
//! [`BACKEND_VAR`]), talk to it over HTTP, receive its callbacks, and check or change its
//! tables in SQL both dialects accept ([`execute`], [`sql_lines`], [`row_counts`]).
//!
//! These helpers only run inside tests, so a failure to set up the test is a panic with a
//! message saying what to fix.
#![allow(clippy::expect_used, clippy::unwrap_used)]

pub mod cluster;
pub mod nginx;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use serde_json::Value;

/// How long a test waits for the binary to start or a callback to arrive before failing.
pub const WAIT: Duration = Duration::from_secs(60);

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

/// A scratch directory removed at drop.
#[derive(Debug)]
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// A new empty directory under the system's temp dir.
    pub fn new() -> Self {
        let path =
            std::env::temp_dir().join(format!("justin-e2e-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).expect("can create a scratch directory");
        Self(path)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Default for ScratchDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        // Best effort: a leftover scratch dir is harmless.
        std::fs::remove_dir_all(&self.0).ok();
    }
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
    agent: ureq::Agent,
    stdout: Captured,
    stderr: Captured,
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

/// A response's status, JSON body and headers.
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The body, parsed.
    pub json: Value,
    /// The headers.
    pub headers: ureq::http::HeaderMap,
}

impl Reply {
    /// A header's value, when present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
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
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Self {
            child,
            base_url,
            agent,
            stdout,
            stderr,
        }
    }

    /// POSTs JSON; returns the status and the JSON body.
    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let mut response = self
            .agent
            .post(format!("{}{path}", self.base_url))
            .send_json(body)
            .expect("the server answers");
        let status = response.status().as_u16();
        let json = response.body_mut().read_json().expect("the answer is JSON");
        (status, json)
    }

    /// GETs; returns the status and the JSON body.
    pub fn get(&self, path: &str) -> (u16, Value) {
        let mut response = self
            .agent
            .get(format!("{}{path}", self.base_url))
            .call()
            .expect("the server answers");
        let status = response.status().as_u16();
        let json = response.body_mut().read_json().expect("the answer is JSON");
        (status, json)
    }

    /// Sends `method path` with extra headers and, when given, a JSON body.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base_url));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = match body {
            Some(body) => self.agent.run(
                request
                    .header("Content-Type", "application/json")
                    .body(body.to_string())
                    .expect("a valid request"),
            ),
            None => self.agent.run(request.body(()).expect("a valid request")),
        };
        let mut response = response.expect("the server answers");
        Reply {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            json: response.body_mut().read_json().expect("the answer is JSON"),
        }
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
    }
}

/// The environment variable choosing the storage backend the end-to-end tests run against:
/// `postgres` (the default) or `sqlite`. `make test` runs the suite once with each.
pub const BACKEND_VAR: &str = "JUSTIN_TEST_BACKEND";

/// A storage backend the binary can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL, on the test server `JUSTIN_TEST_DATABASE_URL` names.
    Postgres,
    /// SQLite, in a file of a scratch directory.
    Sqlite,
}

/// A fresh, migrated database, dropped with the value.
pub enum TestDatabase {
    /// A database on the test PostgreSQL server.
    Postgres(justin_store::testing::TestDatabase),
    /// A SQLite file in a scratch directory.
    Sqlite(justin_store_sqlite::testing::TestDatabase),
}

impl TestDatabase {
    /// One of the backend [`BACKEND_VAR`] names; fails the test naming the variable when its
    /// value is unknown.
    pub fn create() -> Self {
        match std::env::var(BACKEND_VAR).as_deref() {
            Ok("sqlite") => Self::Sqlite(justin_store_sqlite::testing::TestDatabase::create()),
            Ok("postgres") | Err(_) => {
                Self::Postgres(justin_store::testing::TestDatabase::create())
            }
            Ok(other) => panic!("{BACKEND_VAR}={other:?}: expected postgres or sqlite"),
        }
    }

    /// The database's URL, as `database.url` takes it.
    pub fn url(&self) -> &str {
        match self {
            Self::Postgres(db) => db.url(),
            Self::Sqlite(db) => db.url(),
        }
    }

    /// Its backend.
    pub fn backend(&self) -> Backend {
        match self {
            Self::Postgres(_) => Backend::Postgres,
            Self::Sqlite(_) => Backend::Sqlite,
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

/// A local HTTP server that accepts callback POSTs and hands their JSON bodies to the test.
pub struct CallbackReceiver {
    /// Where to send callbacks.
    pub url: String,
    bodies: mpsc::Receiver<Value>,
}

impl CallbackReceiver {
    /// Starts listening on a free loopback port.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("can bind a loopback port");
        let url = format!("http://{}/callback", listener.local_addr().unwrap());
        let (tx, bodies) = mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                if let Some(body) = read_request_body(&mut stream) {
                    stream
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .ok();
                    if tx.send(body).is_err() {
                        break;
                    }
                }
            }
        });
        Self { url, bodies }
    }

    /// The next callback body, waiting at most [`WAIT`].
    pub fn next(&self) -> Value {
        self.bodies
            .recv_timeout(WAIT)
            .expect("a callback arrives in time")
    }

    /// A callback body received already and not taken yet, without waiting.
    pub fn try_next(&self) -> Option<Value> {
        self.bodies.try_recv().ok()
    }
}

/// The study's tables, in the order backups list them.
pub const TABLES: [&str; 6] = [
    "users",
    "model_parameters",
    "actions",
    "study_data",
    "model_update_requests",
    "update_provenance",
];

/// A connection of the test's own, to the database at `url` of either backend.
pub enum TestConnection {
    /// To PostgreSQL.
    Postgres(PgConnection),
    /// To a SQLite file, waiting for the service's locks rather than failing on them.
    Sqlite(SqliteConnection),
}

/// Opens a connection to `url` (`sqlite://<path>` or a PostgreSQL URL), for checks and
/// changes in SQL.
pub fn connect(url: &str) -> TestConnection {
    match url.strip_prefix("sqlite://") {
        Some(path) => {
            let mut conn = SqliteConnection::establish(path)
                .unwrap_or_else(|e| panic!("cannot open the test database {url}: {e}"));
            // The service writes to the same file; wait for its locks as it waits for ours.
            conn.batch_execute("PRAGMA busy_timeout = 30000; PRAGMA foreign_keys = ON;")
                .expect("the test database takes its pragmas");
            TestConnection::Sqlite(conn)
        }
        None => TestConnection::Postgres(
            PgConnection::establish(url)
                .unwrap_or_else(|e| panic!("cannot connect to the test database {url}: {e}")),
        ),
    }
}

impl TestConnection {
    /// Runs `sql` (one or more statements, no results) or fails the test.
    pub fn execute(&mut self, sql: &str) {
        match self {
            Self::Postgres(conn) => conn.batch_execute(sql),
            Self::Sqlite(conn) => conn.batch_execute(sql),
        }
        .unwrap_or_else(|e| panic!("{sql:?} failed: {e}"));
    }

    /// Runs a query whose rows are one text column named `out`; the rows' values in order.
    pub fn lines(&mut self, sql: &str) -> Vec<String> {
        #[derive(QueryableByName)]
        struct Line {
            #[diesel(sql_type = Text)]
            out: String,
        }
        match self {
            Self::Postgres(conn) => diesel::sql_query(sql).load::<Line>(conn),
            Self::Sqlite(conn) => diesel::sql_query(sql).load::<Line>(conn),
        }
        .unwrap_or_else(|e| panic!("{sql:?} failed: {e}"))
        .into_iter()
        .map(|line| line.out)
        .collect()
    }

    /// Rows per table of [`TABLES`].
    pub fn row_counts(&mut self) -> BTreeMap<&'static str, i64> {
        #[derive(QueryableByName)]
        struct Count {
            #[diesel(sql_type = BigInt)]
            rows: i64,
        }
        TABLES
            .iter()
            .map(|&table| {
                let sql = format!("SELECT count(*) AS rows FROM {table}");
                let count = match self {
                    Self::Postgres(conn) => diesel::sql_query(&sql).get_result::<Count>(conn),
                    Self::Sqlite(conn) => diesel::sql_query(&sql).get_result::<Count>(conn),
                }
                .unwrap_or_else(|e| panic!("cannot count the rows of {table}: {e}"));
                (table, count.rows)
            })
            .collect()
    }
}

/// Runs `sql` (statements both dialects accept, no results) on the database at `url`.
pub fn execute(url: &str, sql: &str) {
    connect(url).execute(sql);
}

/// Runs a query whose rows are one text column named `out` (write it in SQL both dialects
/// accept) on the database at `url`; the rows' values in order.
pub fn sql_lines(url: &str, sql: &str) -> Vec<String> {
    connect(url).lines(sql)
}

/// Rows per table of [`TABLES`] in the database at `url`.
pub fn row_counts(url: &str) -> BTreeMap<&'static str, i64> {
    connect(url).row_counts()
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

fn read_request_body(stream: &mut std::net::TcpStream) -> Option<Value> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    serde_json::from_slice(&body).ok()
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
