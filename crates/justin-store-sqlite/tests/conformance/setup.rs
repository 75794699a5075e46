//! Opening a database: settings and URLs are checked with messages that say what to do, and a
//! file database is switched to WAL.

use std::time::Duration;

use justin_core::Store;
use justin_store_sqlite::{SetupError, SqliteConfig, SqliteStore};

use crate::support::ScratchDir;

fn config(url: &str) -> SqliteConfig {
    SqliteConfig {
        url: url.into(),
        ..SqliteConfig::default()
    }
}

#[test]
fn bad_settings_are_refused_with_a_clear_message() {
    let err = SqliteStore::connect(&config("postgres://localhost/db")).unwrap_err();
    assert!(matches!(err, SetupError::InvalidUrl { .. }), "{err}");
    assert!(err.to_string().contains("sqlite://"), "{err}");

    let dir = ScratchDir::new();
    let missing = format!("sqlite://{}/no/such/dir/study.db", dir.display());
    let err = SqliteStore::connect(&config(&missing)).unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");

    for (adjust, what) in [
        (
            (|c: &mut SqliteConfig| c.pool_size = 0) as fn(&mut SqliteConfig),
            "pool size",
        ),
        (|c| c.busy_timeout = Duration::ZERO, "busy timeout"),
        (|c| c.update_lease = Duration::ZERO, "update lease"),
    ] {
        let mut c = config("sqlite://:memory:");
        adjust(&mut c);
        let err = SqliteStore::connect(&c).unwrap_err();
        assert!(err.to_string().contains(what), "{err}");
    }
}

#[test]
fn a_file_database_is_created_in_wal_mode_and_reopened() {
    let dir = ScratchDir::new();
    std::fs::create_dir_all(&*dir).unwrap();
    let path = dir.join("study.db");
    let url = format!("sqlite://{}", path.display());
    let store = SqliteStore::connect(&config(&url)).unwrap();
    store.ping().unwrap();
    store
        .add_user(
            &justin_core::builders::user("alice"),
            &justin_core::Enrollment::default(),
            justin_core::builders::at(0),
        )
        .unwrap();
    assert!(path.exists());
    assert!(
        dir.join("study.db-wal").exists(),
        "the database runs in WAL mode"
    );
    drop(store);

    let again = SqliteStore::connect(&config(&url)).unwrap();
    assert!(again.run_migrations().unwrap().is_empty());
    assert!(matches!(
        again.add_user(
            &justin_core::builders::user("alice"),
            &justin_core::Enrollment::default(),
            justin_core::builders::at(0)
        ),
        Err(justin_core::StoreError::UserExists)
    ));
}
