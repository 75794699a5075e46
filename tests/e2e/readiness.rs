//! Readiness follows the database: `/readyz` answers 503 in the JSON envelope while PostgreSQL
//! refuses the service, or while the database's disk is full, and 200 again once it is back,
//! without a restart.

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

/// A small tmpfs mounted for the test, unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    /// Mounts a tmpfs of `size` at `path`; `None` when mounting is not allowed (not root).
    fn mount(path: &std::path::Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(path).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        mounted.then(|| Self(path.to_owned()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Fills the file system of `path` with one file there; returns it.
fn fill(path: &std::path::Path) -> std::path::PathBuf {
    use std::io::Write;
    let filler = path.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let block = vec![0_u8; 4096];
    loop {
        match file.write(&block) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    let _ = file.sync_all();
    filler
}

/// While the disk under a SQLite database is full, `/readyz` answers 503; once a write
/// succeeds again (space was freed), 200. Needs root to mount the small file system.
#[test]
fn readyz_answers_503_while_the_database_disk_is_full() {
    let dir = ScratchDir::new();
    let Some(disk) = SmallDisk::mount(&dir.path().join("disk"), "4m") else {
        eprintln!("readyz_answers_503_while_the_database_disk_is_full: NOT RUN, cannot mount a tmpfs (run as root)");
        return;
    };
    let url = format!("sqlite://{}", disk.0.join("study.db").display());
    let served = Served::start(
        dir.path(),
        &[
            ("JUSTIN_DATABASE__URL", url),
            ("JUSTIN_BACKUP__ENABLED", "false".to_owned()),
        ],
    );
    let add = |n: usize| {
        served.post(
            "/api/v1/add_user",
            &serde_json::json!({ "user_id": format!("participant-{n:06}-{}", "x".repeat(200)) }),
        )
    };
    assert_eq!(add(0).0, 201);
    assert_eq!(served.get("/readyz").0, 200);

    let filler = fill(&disk.0);
    let mut n = 1;
    let refused = loop {
        assert!(n < 100_000, "no write failed on a full disk");
        let (status, body) = add(n);
        n += 1;
        if status != 201 {
            break (status, body);
        }
    };
    let (status, body) = served.get("/readyz");
    assert_eq!(status, 503, "after {refused:?}: {body}");
    assert_eq!(body["status"], "failed", "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );

    std::fs::remove_file(filler).unwrap();
    let (status, body) = add(n);
    assert_eq!(status, 201, "a write succeeds once space is freed: {body}");
    let (status, body) = served.get("/readyz");
    assert_eq!(status, 200, "{body}");
    drop(served);
    drop(disk);
}

/// A tablespace on the shared PostgreSQL server, dropped (after what lives in it) at drop.
struct Tablespace {
    admin: String,
    name: String,
}

impl Drop for Tablespace {
    fn drop(&mut self) {
        execute(
            &self.admin,
            &format!("DROP TABLESPACE IF EXISTS \"{}\"", self.name),
        );
    }
}

/// The same on PostgreSQL: the `users` table is moved to a tablespace on a small file system
/// the test fills, so its inserts fail with `could not extend file ...: No space left on
/// device` while PostgreSQL itself (its WAL on the machine's disk) keeps answering. Needs root
/// and the test server on this machine (the tablespace directory is local to it).
#[test]
fn pg_readyz_answers_503_while_the_database_disk_is_full() {
    let dir = ScratchDir::new();
    let Some(disk) = SmallDisk::mount(&dir.path().join("disk"), "1m") else {
        eprintln!("pg_readyz_answers_503_while_the_database_disk_is_full: NOT RUN, cannot mount a tmpfs (run as root)");
        return;
    };
    let space = disk.0.join("pg");
    std::fs::create_dir(&space).unwrap();
    let chowned = std::process::Command::new("chown")
        .args(["postgres:postgres"])
        .arg(&space)
        .status()
        .is_ok_and(|s| s.success());
    assert!(chowned, "cannot hand {} to postgres", space.display());
    // ScratchDir's directories are private to root; the server must reach the tablespace.
    for path in [dir.path(), disk.0.as_path()] {
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }

    let db = TestDatabase::create();
    let admin = admin_url(&db);
    let tablespace = Tablespace {
        admin: admin.clone(),
        name: format!("{}_small", db.name()),
    };
    execute(
        &admin,
        &format!(
            "CREATE TABLESPACE \"{}\" LOCATION '{}'",
            tablespace.name,
            space.display()
        ),
    );
    execute(
        db.url(),
        &format!("ALTER TABLE users SET TABLESPACE \"{}\"", tablespace.name),
    );
    let served = Served::start(
        dir.path(),
        &[
            ("JUSTIN_DATABASE__URL", db.url().to_owned()),
            ("JUSTIN_BACKUP__ENABLED", "false".to_owned()),
        ],
    );
    let add = |n: usize| {
        served.post(
            "/api/v1/add_user",
            &serde_json::json!({ "user_id": format!("participant-{n:06}-{}", "x".repeat(200)) }),
        )
    };
    assert_eq!(add(0).0, 201);
    assert_eq!(served.get("/readyz").0, 200);

    let filler = fill(&disk.0);
    let mut n = 1;
    let refused = loop {
        assert!(n < 100_000, "no write failed on a full disk");
        let (status, body) = add(n);
        n += 1;
        if status != 201 {
            break (status, body);
        }
    };
    let (status, body) = served.get("/readyz");
    assert_eq!(status, 503, "after {refused:?}: {body}");
    assert_eq!(body["status"], "failed", "{body}");

    std::fs::remove_file(filler).unwrap();
    let (status, body) = add(n);
    assert_eq!(status, 201, "a write succeeds once space is freed: {body}");
    let (status, body) = served.get("/readyz");
    assert_eq!(status, 200, "{body}");
    drop(served);
    drop(db);
    drop(tablespace);
    drop(disk);
}
