//! API keys through the binary: keys set in the environment (one as its digest from
//! `justin hash-key`, one as it is) guard `/api/v1`, the access log names the key of each
//! request and never shows a key or its digest; an open API warns at start-up, and does not
//! start on a network address.

use std::io::Write;
use std::process::Stdio;

use justin_e2e::{env_for, files_under, justin, Finished, ScratchDir, Served, TestDatabase, WAIT};

/// `justin hash-key` with `input` on standard input.
fn hash_key(dir: &std::path::Path, input: &str) -> Finished {
    let mut child = justin(dir, &[])
        .arg("hash-key")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the justin binary starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    Finished {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A random key, as an operator would make one.
fn new_key() -> String {
    format!("k-{}", uuid::Uuid::new_v4().simple())
}

#[test]
fn hash_key_prints_the_digest_auth_api_keys_takes() {
    let dir = ScratchDir::new();
    // `printf %s correct-horse-battery-staple | sha256sum`
    let digest = "87cbebfeebc05f7c54ac9336c4b4bbec831227a641951a4bde7edd56020f8590";
    for input in [
        "correct-horse-battery-staple",
        "correct-horse-battery-staple\n",
        "correct-horse-battery-staple\r\n",
    ] {
        let out = hash_key(dir.path(), input);
        assert!(out.status.success(), "{input:?}: {}", out.stderr);
        assert_eq!(out.stdout, format!("{digest}\n"), "{input:?}");
    }
    let out = hash_key(dir.path(), "short\n");
    assert!(!out.status.success());
    assert!(out.stderr.contains("at least 16"), "{}", out.stderr);
    assert!(
        !dir.path().join("logs").exists(),
        "hash-key writes no log file"
    );
}

#[test]
fn keys_from_the_environment_guard_the_api_and_stay_out_of_the_logs() {
    let db = TestDatabase::create();
    let dir = ScratchDir::new();
    let app_key = new_key();
    let dev_key = new_key();
    let app_digest = hash_key(dir.path(), &app_key).stdout.trim().to_owned();
    let dev_digest = hash_key(dir.path(), &dev_key).stdout.trim().to_owned();
    assert_eq!(app_digest.len(), 64);
    let mut env = env_for(&db);
    env.push((
        "JUSTIN_AUTH__API_KEYS",
        format!(r#"[{{name="study-app",sha256="{app_digest}"}},{{name="dev",key="{dev_key}"}}]"#),
    ));
    let served = Served::start(dir.path(), &env);

    let refused = served.send("GET", "/api/v1/parameters", None, &[]);
    assert_eq!(refused.status, 401, "{}", refused.json);
    let refused_id = refused.header("x-request-id").unwrap().to_owned();
    let wrong = served.send(
        "GET",
        "/api/v1/parameters",
        None,
        &[("Authorization", "Bearer not-a-key-at-all-0000")],
    );
    assert_eq!(wrong.status, 401, "{}", wrong.json);

    let app_bearer = format!("Bearer {app_key}");
    let ok = served.send(
        "GET",
        "/api/v1/parameters?probe=1",
        None,
        &[("Authorization", &app_bearer)],
    );
    assert_eq!(ok.status, 200, "{}", ok.json);
    let ok_id = ok.header("x-request-id").unwrap().to_owned();
    let dev_bearer = format!("Bearer {dev_key}");
    let dev = served.send(
        "POST",
        "/api/v1/add_user",
        Some(&serde_json::json!({ "user_id": "p1" })),
        &[
            ("Authorization", &dev_bearer),
            ("X-Request-Id", "study-req-42"),
        ],
    );
    assert_eq!(dev.status, 201, "{}", dev.json);
    assert_eq!(dev.header("x-request-id"), Some("study-req-42"));
    let (status, _) = served.get("/healthz");
    assert_eq!(status, 200, "/healthz needs no key");

    let out = served.terminate_with_output();
    let logs = files_under(&dir.path().join("logs"));
    let app_log = &logs
        .iter()
        .find(|(path, _)| path.ends_with("app.log"))
        .expect("app.log exists")
        .1;
    let line_of = |id: &str| {
        app_log
            .lines()
            .find(|line| line.contains(&format!("request_id={id}")))
            .unwrap_or_else(|| panic!("no access line for {id}:\n{app_log}"))
            .to_owned()
    };
    let line = line_of(&ok_id);
    assert!(
        line.contains("justin::access: GET /api/v1/parameters 200 ")
            && line.contains("ms request_id=")
            && line.ends_with("key=study-app"),
        "method, path without query, status, latency, id and key name: {line}"
    );
    assert!(!line.contains("probe"), "no query string: {line}");
    assert!(line_of("study-req-42").contains("POST /api/v1/add_user 201 "));
    assert!(line_of("study-req-42").ends_with("key=dev"));
    assert!(line_of(&refused_id).contains("GET /api/v1/parameters 401 "));
    assert!(line_of(&refused_id).ends_with("key=-"));
    assert!(
        out.stdout
            .contains(&format!("request_id={ok_id} key=study-app")),
        "access lines go to standard output too:\n{}",
        out.stdout
    );

    let mut places = logs.clone();
    places.push(("standard output".into(), out.stdout));
    places.push(("standard error".into(), out.stderr));
    for (place, text) in &places {
        for secret in [&app_key, &dev_key, &app_digest, &dev_digest] {
            assert!(
                !text.contains(secret.as_str()),
                "{} shows a key or its digest",
                place.display()
            );
        }
    }
}

#[test]
fn an_open_api_warns_at_start_up() {
    let db = TestDatabase::create();
    let dir = ScratchDir::new();
    let served = Served::start(dir.path(), &env_for(&db));
    let (status, _) = served.get("/api/v1/parameters");
    assert_eq!(status, 200, "without keys the API is open");
    let out = served.terminate_with_output();
    let warning =
        "WARN  justin_http::startup: auth.api_keys is empty: the API under /api/v1 is OPEN";
    assert!(out.stdout.contains(warning), "{}", out.stdout);
    let app_log = std::fs::read_to_string(dir.path().join("logs/app.log")).unwrap();
    assert!(app_log.contains(warning), "{app_log}");
}

#[test]
fn an_open_api_does_not_start_on_a_network_address() {
    let db = TestDatabase::create();
    let dir = ScratchDir::new();
    let mut env = env_for(&db);
    env.push(("JUSTIN_SERVER__HOST", "0.0.0.0".into()));
    env.push(("JUSTIN_SERVER__PORT", "0".into()));
    // Should it start anyway, it would serve until killed: wait for its end with a deadline.
    let stderr_path = dir.path().join("stderr.txt");
    let mut child = justin(dir.path(), &env)
        .arg("serve")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("the justin binary starts");
    let pid = child.id().to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait()));
    let Ok(status) = rx.recv_timeout(WAIT) else {
        std::process::Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .ok();
        panic!("an open API on 0.0.0.0 started serving");
    };
    assert!(!status.unwrap().success());
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    for hint in [
        "0.0.0.0",
        "auth.api_keys",
        "auth.allow_unauthenticated = true",
    ] {
        assert!(stderr.contains(hint), "{hint:?} missing: {stderr}");
    }
}
