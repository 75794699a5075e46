//! Getting a database ready: reading and masking PostgreSQL URLs, creating the configured
//! database when it is missing, and applying the migrations embedded from `migrations/`.
//!
//! URLs are handled by hand rather than with a URL crate: the only operations needed are
//! "replace the database name" and "hide the password", and libpq, not this code, is the judge
//! of everything else in the URL.

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use justin_core::BoxError;

use crate::error::SetupError;

/// The migrations in the workspace's `migrations/` directory, compiled into the binary.
pub(crate) const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");

/// The database every PostgreSQL server has, used to create or drop others.
pub(crate) const MAINTENANCE_DATABASE: &str = "postgres";

/// Key of the advisory lock that serialises migrations, so that several instances starting at
/// once against one database do not race to create the same tables.
pub(crate) const MIGRATION_LOCK_KEY: i64 = 0x6a75_7374_696e_4d31; // "justinM1"

/// A `postgres://` URL, split where this crate needs to cut it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PgUrl {
    /// `postgres://user:pass@host:port`, untouched.
    origin: String,
    /// The database name, percent-decoded; empty when the URL names none.
    database: String,
    /// Everything after `?`, untouched.
    query: Option<String>,
}

impl PgUrl {
    /// Splits a `postgres://` or `postgresql://` URL.
    pub(crate) fn parse(url: &str) -> Result<Self, SetupError> {
        let invalid = |reason: &str| SetupError::InvalidUrl {
            url: mask_password(url),
            reason: reason.into(),
        };
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .ok_or_else(|| invalid("it must start with postgres:// or postgresql://"))?;
        let without_fragment = rest.split('#').next().unwrap_or_default();
        let (before_query, query) = match without_fragment.split_once('?') {
            Some((before, query)) => (before, Some(query.to_owned())),
            None => (without_fragment, None),
        };
        let (authority, path) = match before_query.split_once('/') {
            Some((authority, path)) => (authority, path),
            None => (before_query, ""),
        };
        let database = percent_decode(path)
            .ok_or_else(|| invalid("the database name is not valid percent-encoded UTF-8"))?;
        let origin_len = url.len() - rest.len() + authority.len();
        Ok(Self {
            origin: url[..origin_len].to_owned(),
            database,
            query,
        })
    }

    /// The database the URL names (empty: libpq's default, the user's name).
    pub(crate) fn database(&self) -> &str {
        &self.database
    }

    /// The same server, user and options, but database `name`.
    pub(crate) fn with_database(&self, name: &str) -> String {
        let mut url = format!("{}/{}", self.origin, percent_encode(name));
        if let Some(query) = &self.query {
            url.push('?');
            url.push_str(query);
        }
        url
    }

    /// This URL with libpq's `connect_timeout` set, unless it sets one already. A connection
    /// made outside the pool otherwise waits for the operating system's TCP timeout when the
    /// server does not answer.
    pub(crate) fn with_connect_timeout(url: &str, timeout: Duration) -> String {
        if url.contains("connect_timeout=") {
            return url.to_owned();
        }
        // libpq counts whole seconds and treats anything below 2 as 2.
        let seconds = timeout.as_secs().max(2);
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}connect_timeout={seconds}")
    }
}

/// `url` with the password replaced by `****`, both in the user-info part and in a
/// `password=` parameter. Also used for key/value connection strings.
pub fn mask_password(url: &str) -> String {
    let mut masked = url.to_owned();
    if let Some(scheme_end) = masked.find("://") {
        let authority_start = scheme_end + 3;
        let authority_end = masked[authority_start..]
            .find(['/', '?', '#'])
            .map_or(masked.len(), |i| authority_start + i);
        if let Some(at) = masked[authority_start..authority_end].rfind('@') {
            let userinfo = authority_start..authority_start + at;
            if let Some(colon) = masked[userinfo.clone()].find(':') {
                masked.replace_range(userinfo.start + colon + 1..userinfo.end, "****");
            }
        }
    }
    let mut search_from = 0;
    while let Some(found) = masked[search_from..].find("password=") {
        let value_start = search_from + found + "password=".len();
        let value_end = masked[value_start..]
            .find(['&', ' ', '#'])
            .map_or(masked.len(), |i| value_start + i);
        masked.replace_range(value_start..value_end, "****");
        search_from = value_start + "****".len();
    }
    masked
}

fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = raw.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn percent_encode(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `name` as a quoted SQL identifier, safe to splice into DDL (which takes no bind parameters).
pub(crate) fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Opens one connection outside any pool.
pub(crate) fn connect_once(url: &str, timeout: Duration) -> Result<PgConnection, SetupError> {
    PgConnection::establish(&PgUrl::with_connect_timeout(url, timeout)).map_err(|e| {
        SetupError::Connect {
            url: mask_password(url),
            reason: e.to_string(),
        }
    })
}

#[derive(QueryableByName)]
struct Exists {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    exists: bool,
}

fn database_exists(conn: &mut PgConnection, name: &str) -> QueryResult<bool> {
    diesel::sql_query("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS exists")
        .bind::<Text, _>(name)
        .get_result::<Exists>(conn)
        .map(|row| row.exists)
}

/// Creates the database `url` names unless it exists, working through the maintenance
/// database on the same server. Returns whether it created it.
pub(crate) fn create_database_if_missing(
    url: &PgUrl,
    timeout: Duration,
) -> Result<bool, SetupError> {
    let name = url.database();
    if name.is_empty() {
        // libpq then connects to the database named like the user; nothing to create.
        return Ok(false);
    }
    let maintenance_url = url.with_database(MAINTENANCE_DATABASE);
    let failed = |reason: String| SetupError::CreateDatabase {
        database: name.to_owned(),
        url: mask_password(&maintenance_url),
        reason,
    };
    let mut conn = connect_once(&maintenance_url, timeout)?;
    if database_exists(&mut conn, name).map_err(|e| failed(e.to_string()))? {
        return Ok(false);
    }
    match conn.batch_execute(&format!("CREATE DATABASE {}", quote_identifier(name))) {
        Ok(()) => {
            log::info!("created database {name:?}");
            Ok(true)
        }
        // Another process may have created it between the check and the CREATE; the server
        // reports that as duplicate_database, which Diesel does not name, so look again.
        Err(e) => match database_exists(&mut conn, name) {
            Ok(true) => Ok(false),
            _ => Err(failed(e.to_string())),
        },
    }
}

/// Creates database `name` on the server of `maintenance_url` (for the test databases).
#[cfg(feature = "testing")]
pub(crate) fn create_database(
    maintenance_url: &str,
    name: &str,
    timeout: Duration,
) -> Result<(), SetupError> {
    let mut conn = connect_once(maintenance_url, timeout)?;
    conn.batch_execute(&format!("CREATE DATABASE {}", quote_identifier(name)))
        .map_err(|e| SetupError::CreateDatabase {
            database: name.to_owned(),
            url: mask_password(maintenance_url),
            reason: e.to_string(),
        })
}

/// Applies the pending embedded migrations and returns their names, oldest first.
///
/// Runs under a transaction-scoped advisory lock, so concurrent callers apply each migration
/// once, and a failure leaves the schema as it was.
pub(crate) fn run_migrations(conn: &mut PgConnection) -> Result<Vec<String>, SetupError> {
    conn.transaction::<_, BoxError, _>(|conn| {
        diesel::sql_query("SELECT pg_advisory_xact_lock($1)")
            .bind::<diesel::sql_types::BigInt, _>(MIGRATION_LOCK_KEY)
            .execute(conn)?;
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
    fn parse_splits_origin_database_and_query() {
        let url =
            PgUrl::parse("postgres://u:p@db.example:5433/my%20study?sslmode=disable").unwrap();
        assert_eq!(url.database(), "my study");
        assert_eq!(
            url.with_database("postgres"),
            "postgres://u:p@db.example:5433/postgres?sslmode=disable"
        );
        assert_eq!(
            url.with_database("my study"),
            "postgres://u:p@db.example:5433/my%20study?sslmode=disable"
        );
    }

    #[test]
    fn parse_accepts_url_without_database() {
        let url = PgUrl::parse("postgresql://localhost").unwrap();
        assert_eq!(url.database(), "");
        assert_eq!(url.with_database("x"), "postgresql://localhost/x");
    }

    #[test]
    fn parse_refuses_other_schemes() {
        assert!(PgUrl::parse("mysql://localhost/db").is_err());
        assert!(PgUrl::parse("host=localhost dbname=x").is_err());
    }

    #[test]
    fn mask_hides_passwords() {
        assert_eq!(
            mask_password("postgres://justin:s3cr%40t@host:5432/db"),
            "postgres://justin:****@host:5432/db"
        );
        assert_eq!(
            mask_password("postgres://justin@host/db?password=hunter2&sslmode=require"),
            "postgres://justin@host/db?password=****&sslmode=require"
        );
        assert_eq!(
            mask_password("host=h password=hunter2 dbname=x"),
            "host=h password=**** dbname=x"
        );
        assert_eq!(mask_password("postgres://host/db"), "postgres://host/db");
    }

    #[test]
    fn connect_timeout_is_added_once() {
        assert_eq!(
            PgUrl::with_connect_timeout("postgres://h/db", Duration::from_millis(300)),
            "postgres://h/db?connect_timeout=2"
        );
        assert_eq!(
            PgUrl::with_connect_timeout("postgres://h/db?a=b", Duration::from_secs(7)),
            "postgres://h/db?a=b&connect_timeout=7"
        );
        assert_eq!(
            PgUrl::with_connect_timeout("postgres://h/db?connect_timeout=9", Duration::ZERO),
            "postgres://h/db?connect_timeout=9"
        );
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_identifier("study"), "\"study\"");
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
    }
}
