//! After the routes: what the service stored, counted in its own database, against what it
//! acknowledged with 201. Every decision answered must be stored exactly once, and every upload
//! stored as matching its logged decision (`action_logged`); otherwise the figures would measure
//! a service that loses or duplicates data.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;

use crate::error::{fail, Context, Result};

/// A connection to the service's database, of either backend.
pub enum Db {
    /// PostgreSQL.
    Pg(PgConnection),
    /// A SQLite file, read while the service may write to it.
    Sqlite(SqliteConnection),
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = Text)]
    out: String,
}

impl Db {
    /// Opens `url`: `sqlite://<path>` or a PostgreSQL URL.
    pub fn open(url: &str) -> Result<Self> {
        match url.strip_prefix("sqlite://") {
            Some(path) => {
                let mut conn = SqliteConnection::establish(path)
                    .context(|| format!("cannot open the SQLite database {path}"))?;
                // Wait for the service's write lock rather than fail on it.
                conn.batch_execute("PRAGMA busy_timeout = 30000;")
                    .context(|| format!("cannot set up the connection to {path}"))?;
                Ok(Self::Sqlite(conn))
            }
            None => Ok(Self::Pg(crate::pg::connect(url)?)),
        }
    }

    /// `SELECT count(*) FROM {from}`, `from` including any WHERE clause.
    pub fn count(&mut self, from: &str) -> Result<u64> {
        let sql = format!("SELECT CAST(count(*) AS TEXT) AS out FROM {from}");
        let rows = match self {
            Self::Pg(conn) => diesel::sql_query(&sql).load::<Count>(conn),
            Self::Sqlite(conn) => diesel::sql_query(&sql).load::<Count>(conn),
        }
        .context(|| format!("{sql:?} failed"))?;
        match rows.first() {
            Some(row) => row
                .out
                .parse()
                .context(|| format!("{sql:?} gave {:?}", row.out)),
            None => fail(format!("{sql:?} returned no row")),
        }
    }
}

/// What the service acknowledged.
#[derive(Debug, Default, Clone, Copy)]
pub struct Acknowledged {
    /// Users registered (201 from `/add_user`).
    pub users: u64,
    /// Decisions stored (201 from `/action`).
    pub decisions: u64,
    /// Uploads stored (201 from `/upload_data`).
    pub uploads: u64,
}

/// Compares the rows in `db` with `acked`; one message per difference.
pub fn verify(db: &mut Db, acked: Acknowledged) -> Result<Vec<String>> {
    let checks = [
        ("users", "users", acked.users),
        ("decisions", "actions", acked.decisions),
        ("uploads", "study_data", acked.uploads),
        (
            "uploads matching a logged decision",
            "study_data WHERE action_logged",
            acked.uploads,
        ),
    ];
    let mut differences = Vec::new();
    for (what, from, expected) in checks {
        let stored = db.count(from)?;
        if stored != expected {
            differences.push(format!(
                "the service acknowledged {expected} {what} with 201 but its database holds {stored} (SELECT count(*) FROM {from})"
            ));
        }
    }
    Ok(differences)
}
