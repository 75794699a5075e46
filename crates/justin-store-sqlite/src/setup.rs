//! Getting a database ready: reading `sqlite://` URLs, configuring every pooled connection,
//! and applying the migrations embedded from `migrations/sqlite/`.
//!
//! `sqlite://:memory:` gives a throwaway database: a new file under the system's temporary
//! directory, removed when the last clone of the store goes away. A true SQLite in-memory
//! database cannot do what the port needs of a pool: a private one is invisible to the pool's
//! other connections, and a shared-cache one has no WAL, so an open stream or update job would
//! block every writer with table-lock errors that the busy timeout does not absorb. A
//! temporary file behaves exactly like a configured one and is gone afterwards.

use std::path::{Path, PathBuf};
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::CustomizeConnection;
use diesel::sql_types::Text;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use justin_core::BoxError;

use crate::error::SetupError;

/// The migrations in the workspace's `migrations/sqlite/` directory, compiled into the binary.
pub(crate) const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");

/// The prefix every URL this adapter accepts starts with.
pub const URL_PREFIX: &str = "sqlite://";

/// Where a database lives, as the URL says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Location {
    /// A file, relative to the working directory unless absolute.
    File(PathBuf),
    /// `:memory:`: a throwaway database (see the module documentation).
    Memory,
}

impl Location {
    /// Reads `sqlite://<path>` or `sqlite://:memory:`.
    pub(crate) fn parse(url: &str) -> Result<Self, SetupError> {
        let invalid = |reason: &str| SetupError::InvalidUrl {
            url: url.to_owned(),
            reason: reason.into(),
        };
        let rest = url.strip_prefix(URL_PREFIX).ok_or_else(|| {
            invalid("it must start with sqlite:// (sqlite://<path> or sqlite://:memory:)")
        })?;
        if rest.is_empty() {
            return Err(invalid(
                "it names no file; use sqlite://<path> (e.g. sqlite://justin.db) or sqlite://:memory:",
            ));
        }
        if rest == ":memory:" {
            return Ok(Self::Memory);
        }
        if rest.contains('?') || rest.starts_with("file:") {
            return Err(invalid(
                "give a plain file path; SQLite options are set by the service",
            ));
        }
        Ok(Self::File(PathBuf::from(rest)))
    }
}

/// Checks that the file's directory exists, so that SQLite's "unable to open database file"
/// comes with the reason.
pub(crate) fn check_directory(url: &str, path: &Path) -> Result<(), SetupError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => return Ok(()),
    };
    if dir.is_dir() {
        Ok(())
    } else {
        Err(SetupError::Connect {
            url: url.to_owned(),
            reason: format!(
                "the directory {} does not exist; create it or choose another path",
                dir.display()
            ),
        })
    }
}

/// A database file that exists for the life of a store opened on `sqlite://:memory:`.
#[derive(Debug)]
pub(crate) struct Throwaway {
    path: PathBuf,
}

impl Throwaway {
    pub(crate) fn new() -> Self {
        Self {
            path: std::env::temp_dir().join(format!(
                "justin-memory-{}.db",
                uuid::Uuid::new_v4().simple()
            )),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        // The WAL and shared-memory files sit beside the database; NotFound is fine.
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut name = self.path.clone().into_os_string();
            name.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(name));
        }
    }
}

/// Sets up every connection the pool opens. SQLite keeps these settings per connection, so
/// they are applied on each one, not once per database.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionSetup {
    pub busy_timeout: Duration,
}

impl ConnectionSetup {
    /// The statements, in order: the busy timeout first, so that the journal-mode switch
    /// (which needs a lock) already waits instead of failing while another connection holds
    /// one.
    ///
    /// `secure_delete` makes SQLite overwrite with zeros whatever leaves a page (deleted or
    /// overwritten rows, cells a page split moved away, pages put on the free list), so that
    /// an erased participant's data is not left in the file's free space. It costs writes only
    /// when rows are deleted or overwritten (erasure, reset, restore, the few updates), not
    /// when decisions and uploads are appended.
    pub(crate) fn sql(self) -> String {
        let millis = self.busy_timeout.as_millis().min(i32::MAX as u128);
        format!(
            "PRAGMA busy_timeout = {millis}; \
             PRAGMA journal_mode = WAL; \
             PRAGMA synchronous = NORMAL; \
             PRAGMA foreign_keys = ON; \
             PRAGMA secure_delete = ON;"
        )
    }
}

impl CustomizeConnection<SqliteConnection, diesel::r2d2::Error> for ConnectionSetup {
    fn on_acquire(&self, conn: &mut SqliteConnection) -> Result<(), diesel::r2d2::Error> {
        conn.batch_execute(&self.sql())
            .map_err(diesel::r2d2::Error::QueryError)
    }
}

#[derive(QueryableByName)]
struct JournalMode {
    #[diesel(sql_type = Text)]
    journal_mode: String,
}

/// The journal mode the connection's database is in (`wal` once set up).
pub(crate) fn journal_mode(conn: &mut SqliteConnection) -> QueryResult<String> {
    diesel::sql_query("PRAGMA journal_mode")
        .get_result::<JournalMode>(conn)
        .map(|m| m.journal_mode.to_ascii_lowercase())
}

/// Applies the pending embedded migrations and returns their names, oldest first.
///
/// Runs in one `BEGIN IMMEDIATE` transaction: concurrent callers (several processes starting
/// at once) take turns on SQLite's write lock and apply each migration once, and a failure
/// leaves the schema as it was.
pub(crate) fn run_migrations(conn: &mut SqliteConnection) -> Result<Vec<String>, SetupError> {
    conn.immediate_transaction::<_, BoxError, _>(|conn| {
        let pending = conn.pending_migrations(MIGRATIONS)?;
        let names = pending.iter().map(|m| m.name().to_string()).collect();
        conn.run_migrations(&pending)?;
        Ok(names)
    })
    .map_err(|e| SetupError::Migrate {
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_file_or_memory() {
        assert_eq!(
            Location::parse("sqlite://justin.db").unwrap(),
            Location::File("justin.db".into())
        );
        assert_eq!(
            Location::parse("sqlite:///var/lib/justin/study.db").unwrap(),
            Location::File("/var/lib/justin/study.db".into())
        );
        assert_eq!(
            Location::parse("sqlite://:memory:").unwrap(),
            Location::Memory
        );
    }

    #[test]
    fn other_urls_are_refused_with_a_reason() {
        for url in [
            "postgres://localhost/db",
            "sqlite://",
            "justin.db",
            "sqlite://file:x.db?mode=ro",
        ] {
            let err = Location::parse(url).unwrap_err().to_string();
            assert!(err.contains(url), "{err}");
        }
    }

    #[test]
    fn a_throwaway_database_leaves_no_files() {
        let throwaway = Throwaway::new();
        let path = throwaway.path().to_owned();
        for suffix in ["", "-wal", "-shm"] {
            let mut name = path.clone().into_os_string();
            name.push(suffix);
            std::fs::write(PathBuf::from(name), b"x").unwrap();
        }
        drop(throwaway);
        let dir = path.parent().unwrap();
        let stem = path.file_name().unwrap().to_string_lossy().into_owned();
        let left: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(&stem))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn busy_timeout_is_set_before_the_journal_mode() {
        let sql = ConnectionSetup {
            busy_timeout: Duration::from_millis(2500),
        }
        .sql();
        let busy = sql.find("busy_timeout = 2500").unwrap();
        assert!(busy < sql.find("journal_mode = WAL").unwrap());
        assert!(sql.contains("foreign_keys = ON"));
        assert!(sql.contains("synchronous = NORMAL"));
        assert!(sql.contains("secure_delete = ON"));
    }

    /// The workspace builds the bundled SQLite without STAT4 (`.cargo/config.toml`): with it,
    /// an analysed database would compile the service's prepared writes again on every call
    /// (docs/performance.md, "SQLite without STAT4"). This fails when the flag is lost.
    #[test]
    fn the_bundled_sqlite_is_built_without_stat4() {
        #[derive(QueryableByName)]
        struct Used {
            #[diesel(sql_type = diesel::sql_types::Integer)]
            used: i32,
        }
        let mut conn = SqliteConnection::establish(":memory:").unwrap();
        let option = |conn: &mut SqliteConnection, name: &str| {
            diesel::sql_query("SELECT sqlite_compileoption_used(?) AS used")
                .bind::<Text, _>(name)
                .get_result::<Used>(conn)
                .unwrap()
                .used
        };
        // The query itself works: an option the bundled build does set reads as used.
        assert_eq!(option(&mut conn, "ENABLE_FTS5"), 1);
        assert_eq!(option(&mut conn, "ENABLE_STAT4"), 0);
    }
}
