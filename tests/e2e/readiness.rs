//! Readiness follows the database: `/readyz` answers 503 in the JSON envelope while PostgreSQL
//! refuses the service, and 200 again once it is back, without a restart.

use justin_e2e::{execute, ScratchDir, Served};
use justin_store::testing::TestDatabase;

/// The server's own `postgres` database, from which the test database is administered.
fn admin_url(db: &TestDatabase) -> String {
    let (server, _) = db
        .url()
        .rsplit_once('/')
        .expect("a database URL has a path");
    format!("{server}/postgres")
}

// PostgreSQL only: it takes the database away with ALLOW_CONNECTIONS and pg_terminate_backend.
#[test]
fn pg_readyz_follows_the_database() {
    let db = TestDatabase::create();
    let name = db.name().to_owned();
    let dir = ScratchDir::new();
    let served = Served::start(
        dir.path(),
        &[
            ("JUSTIN_DATABASE__URL", db.url().to_owned()),
            // Bound how long a checkout waits for a connection PostgreSQL will refuse.
            ("JUSTIN_DATABASE__CONNECT_TIMEOUT_SECS", "1".to_owned()),
        ],
    );
    let (status, body) = served.get("/readyz");
    assert_eq!((status, body["status"].as_str()), (200, Some("ready")));

    let admin = admin_url(&db);
    execute(
        &admin,
        &format!(
            "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}';"
        ),
    );
    let (status, body) = served.get("/readyz");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "failed", "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    let (status, _) = served.get("/healthz");
    assert_eq!(status, 200, "the process itself is alive");

    execute(
        &admin,
        &format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true"),
    );
    // The pool drops connections PostgreSQL closed as it meets them; a bounded number of
    // requests brings it back to 200 without a restart.
    let recovered = (0..20).any(|_| served.get("/readyz").0 == 200);
    assert!(
        recovered,
        "/readyz answers 200 again once the database is back"
    );
}
