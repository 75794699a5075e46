//! A flood of stalled connections on loopback: `server.max_connections` caps how many are
//! open (the rest are answered 503 in the JSON envelope, and the log says the cap was
//! reached), the stalled ones are cut off after `server.body_timeout_secs`, `/healthz`
//! answers again, and the process gives back the memory the flood took.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use justin_e2e::{env_for, ScratchDir, Served, TestDatabase, WAIT};

/// Connections opened by the flood, and the cap they meet.
const FLOOD: usize = 600;
const CAP: usize = 50;
/// The header and body timeouts. The whole flood must be open before the first stalled
/// connection is cut off, or a connection let in after that takes a freed place and more than
/// `CAP` are counted as let in: on a loaded machine opening 600 connections took over 2 s.
const TIMEOUT_SECS: &str = "5";
/// How far above its baseline memory may settle after the flood, in kB: what actix-web's pool
/// of request objects keeps of the requests that were cut off (it keeps up to 128 per worker
/// thread for reuse, about 17 kB each here; about 0.9 MB for this cap), and the allocator's
/// bookkeeping.
const MARGIN_KB: u64 = 2048;

/// The process's resident anonymous memory (its heap and stacks, not the pages of its binary
/// that the flood's code paths brought in), in kB.
fn anon_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("RssAnon in /proc/<pid>/status")
}

/// Reads what the server sends until it closes the connection.
fn read_to_close(stream: &mut TcpStream) -> String {
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .unwrap_or_else(|e| panic!("the server held the connection ({e})"));
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn a_flood_of_stalled_connections_meets_the_cap_and_is_cut_off() {
    let db = TestDatabase::create();
    let dir = ScratchDir::new();
    let mut env = env_for(&db);
    env.push(("JUSTIN_SERVER__MAX_CONNECTIONS", CAP.to_string()));
    env.push(("JUSTIN_SERVER__BODY_TIMEOUT_SECS", TIMEOUT_SECS.into()));
    env.push(("JUSTIN_SERVER__HEADER_TIMEOUT_SECS", TIMEOUT_SECS.into()));
    let served = Served::start(dir.path(), &env);
    let addr = served.base_url.trim_start_matches("http://").to_owned();
    for _ in 0..20 {
        assert_eq!(served.get("/healthz").0, 200);
    }
    let baseline = anon_kb(served.pid());

    // Headers and one byte of a declared 100 kB body, then nothing.
    let stalled =
        b"POST /api/v1/add_user HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
Content-Length: 100000\r\n\r\n{";
    let mut flood: Vec<TcpStream> = (0..FLOOD)
        .map(|_| {
            let mut stream = TcpStream::connect(&addr).unwrap();
            // A refused connection may already be closed: the answer is read below.
            stream.write_all(stalled).ok();
            stream
        })
        .collect();
    let answers: Vec<String> = flood.iter_mut().map(read_to_close).collect();
    let refused = answers
        .iter()
        .filter(|a| a.starts_with("HTTP/1.1 503"))
        .count();
    let cut_off = answers
        .iter()
        .filter(|a| a.starts_with("HTTP/1.1 408"))
        .count();
    assert_eq!(
        refused + cut_off,
        FLOOD,
        "every connection ends with 503 or 408"
    );
    assert!(
        cut_off <= CAP,
        "at most {CAP} open at once: {cut_off} were let in"
    );
    assert!(refused >= FLOOD - CAP, "{refused} refused");
    let refusal = answers
        .iter()
        .find(|a| a.starts_with("HTTP/1.1 503"))
        .unwrap();
    let body = refusal.split_once("\r\n\r\n").unwrap().1;
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["status"], "failed", "{refusal}");
    for answer in answers.iter().filter(|a| a.starts_with("HTTP/1.1 408")) {
        assert!(answer.ends_with(r#""status":"failed"}"#), "{answer}");
    }
    drop(flood);

    assert_eq!(
        served.get("/healthz").0,
        200,
        "serving again after the flood"
    );
    let log = std::fs::read_to_string(dir.path().join("logs/app.log")).unwrap();
    assert!(
        log.contains(&format!(
            "open connections reached server.max_connections ({CAP})"
        )),
        "the log says the cap was reached"
    );
    // Memory goes back to where it was: the flood's buffers are freed and the allocator gives
    // their pages back to the system within a second or so. glibc's malloc kept them.
    let peak = anon_kb(served.pid());
    let mut now = peak;
    let deadline = Instant::now() + WAIT;
    while now > baseline + MARGIN_KB && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        now = anon_kb(served.pid());
    }
    assert!(
        now <= baseline + MARGIN_KB,
        "anonymous memory {baseline} kB before the flood, {peak} kB after it, still {now} kB"
    );
}
