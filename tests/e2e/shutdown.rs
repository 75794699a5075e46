//! Graceful shutdown of the real binary: SIGTERM stops accepting, lets the request in flight
//! finish, and leaves the update under way finished or cleanly put back for the next start.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};
use justin_e2e::{env_for, justin, sql_lines, CallbackReceiver, ScratchDir, Served, TestDatabase};
use serde_json::json;

/// `justin serve` whose standard output the test reads line by line.
struct Watched {
    child: Child,
    addr: String,
    lines: mpsc::Receiver<String>,
}

impl Watched {
    fn start(dir: &std::path::Path, env: &[(&str, String)]) -> Self {
        let mut env = env.to_vec();
        env.push(("JUSTIN_SERVER__PORT", "0".into()));
        let mut child = justin(dir, &env)
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the justin binary starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut watched = Self {
            child,
            addr: String::new(),
            lines,
        };
        let line = watched.wait_for_line("listening on http://");
        let at = line.find("http://").unwrap() + "http://".len();
        watched.addr = line[at..].trim().to_owned();
        watched
    }

    /// Waits for a line of output containing `text` and returns it.
    fn wait_for_line(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => {}
                Err(_) => panic!("justin never printed {text:?}"),
            }
        }
    }

    fn terminate(&self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid} failed");
    }

    fn wait_exit(mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "justin did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

#[test]
fn sigterm_lets_the_request_in_flight_finish_then_exits_cleanly() {
    let db = TestDatabase::create();
    let dir = ScratchDir::new();
    let mut env = env_for(&db);
    env.push(("JUSTIN_SERVER__SHUTDOWN_GRACE_SECS", "30".into()));
    let served = Watched::start(dir.path(), &env);

    // A request whose body is still arriving when the stop begins. `Expect: 100-continue`
    // makes the server say when it has read the head: from then on the request is in flight.
    let mut stream = TcpStream::connect(&served.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let body = json!({ "user_id": "in-flight" }).to_string();
    write!(
        stream,
        "POST /api/v1/add_user HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        served.addr,
        body.len()
    )
    .unwrap();
    let mut interim = [0_u8; 25];
    stream.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    let (first, rest) = body.split_at(body.len() / 2);
    stream.write_all(first.as_bytes()).unwrap();

    served.terminate();
    served.wait_for_line("SIGTERM received");
    // No new connections: the listening socket closes (the request in flight is still open).
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(&served.addr).is_ok() {
        assert!(
            Instant::now() < deadline,
            "still accepting connections after SIGTERM"
        );
        std::thread::yield_now();
    }
    stream.write_all(rest.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(
        response.starts_with("HTTP/1.1 201"),
        "the request in flight was answered: {response:?}"
    );

    let status = served.wait_exit();
    assert!(status.success(), "a clean exit after SIGTERM: {status}");
    let users = sql_lines(
        db.url(),
        "SELECT user_id AS out FROM users WHERE user_id = 'in-flight'",
    );
    assert_eq!(users, ["in-flight"], "the request in flight was stored");
    let again = Served::start(dir.path(), &env);
    let (status, body) = again.post("/api/v1/add_user", &json!({ "user_id": "after" }));
    assert_eq!(
        status, 201,
        "the service starts again on the same database: {body}"
    );
}

/// A service on PostgreSQL whose update has started and is held by a lock on `study_data`.
struct HeldUpdate {
    db: TestDatabase,
    dir: ScratchDir,
    env: Vec<(&'static str, String)>,
    receiver: CallbackReceiver,
    served: Watched,
    blocker: PgConnection,
    id: String,
}

fn held_update(grace_secs: u64) -> HeldUpdate {
    let db = TestDatabase::Postgres(justin_store::testing::TestDatabase::create());
    let dir = ScratchDir::new();
    let mut env = env_for(&db);
    env.push(("JUSTIN_SERVER__SHUTDOWN_GRACE_SECS", grace_secs.to_string()));
    env.push(("JUSTIN_UPDATE__POLL_INTERVAL_MS", "100".into()));
    let receiver = CallbackReceiver::start();
    let served = Watched::start(dir.path(), &env);

    // The update's backup reads every table; this lock holds it there.
    let mut blocker = PgConnection::establish(db.url()).unwrap();
    blocker
        .batch_execute("BEGIN; LOCK TABLE study_data IN ACCESS EXCLUSIVE MODE;")
        .unwrap();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let answer: serde_json::Value = agent
        .post(format!("http://{}/api/v1/update", served.addr))
        .send_json(json!({ "timestamp": "2025-01-01T12:00:00Z", "callback_url": receiver.url() }))
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    let id = answer["update_id"]
        .as_str()
        .expect("an update id")
        .to_owned();
    let started = format!(
        "SELECT CAST(attempts AS TEXT) AS out FROM model_update_requests WHERE id = '{id}'"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while sql_lines(db.url(), &started) != ["1"] {
        assert!(Instant::now() < deadline, "the update never started");
        std::thread::yield_now();
    }
    HeldUpdate {
        db,
        dir,
        env,
        receiver,
        served,
        blocker,
        id,
    }
}

// PostgreSQL only (as below): it holds the update with `LOCK TABLE`, which SQLite lacks.
#[test]
fn pg_sigterm_lets_an_update_that_finishes_within_the_grace_period_finish() {
    // Every field is bound: the scratch directory must outlive the process using it.
    let HeldUpdate {
        db,
        dir: _dir,
        env: _,
        receiver,
        served,
        mut blocker,
        id,
    } = held_update(30);

    served.terminate();
    served.wait_for_line("SIGTERM received");
    blocker.batch_execute("ROLLBACK").unwrap();
    let callback = receiver.next();
    let error = sql_lines(
        db.url(),
        &format!("SELECT COALESCE(error, '') AS out FROM model_update_requests WHERE id = '{id}'"),
    );
    assert_eq!(callback["status"], "completed", "{callback} {error:?}");
    assert_eq!(callback["update_id"], id.as_str(), "{callback}");
    let status = served.wait_exit();
    assert!(status.success(), "a clean exit after SIGTERM: {status}");
    let request = sql_lines(
        db.url(),
        &format!(
            "SELECT status || ' ' || CAST(attempts AS TEXT) || ' ' || \
             CAST(parameter_version AS TEXT) AS out FROM model_update_requests WHERE id = '{id}'"
        ),
    );
    assert_eq!(request, ["completed 1 2"], "finished, once");
}

#[test]
fn pg_sigterm_puts_back_an_update_that_does_not_finish_within_the_grace_period() {
    let HeldUpdate {
        db,
        dir,
        env,
        receiver,
        served,
        mut blocker,
        id,
    } = held_update(1);

    served.terminate();
    served.wait_for_line("did not finish within server.shutdown_grace_secs");
    blocker.batch_execute("ROLLBACK").unwrap();
    let status = served.wait_exit();
    assert!(status.success(), "a clean exit after SIGTERM: {status}");

    let request = sql_lines(
        db.url(),
        &format!(
            "SELECT status || ' ' || CAST(attempts AS TEXT) || ' ' || \
             CASE WHEN started_at IS NULL THEN 'unstarted' ELSE 'started' END AS out \
             FROM model_update_requests WHERE id = '{id}'"
        ),
    );
    assert_eq!(request, ["processing 0 unstarted"], "put back, uncounted");
    let versions = sql_lines(
        db.url(),
        "SELECT CAST(version AS TEXT) AS out FROM model_parameters",
    );
    assert_eq!(versions, ["1"], "nothing was published");
    assert_eq!(
        receiver.try_next(),
        None,
        "no callback for an update put back"
    );

    // The next start runs it to its end, as its first attempt.
    let restarted = Served::start(dir.path(), &env);
    let callback = receiver.next();
    assert_eq!(callback["status"], "completed", "{callback}");
    assert_eq!(callback["update_id"], id.as_str(), "{callback}");
    let (_, status) = restarted.get(&format!("/api/v1/update/{id}"));
    assert_eq!(status["attempts"], 1, "{status}");
    assert_eq!(status["parameter_version"], 2, "{status}");
}
