//! The JustIn backup file format, shared by every storage adapter so that each restores the
//! others' backups: one tar holding `manifest.json` and one `<table>.csv` per table, in
//! PostgreSQL's `COPY ... (FORMAT csv, HEADER true)` dialect.
//!
//! This crate knows files, not databases. An adapter produces each table's CSV into a
//! [`PendingBackup`] and hands over a [`Manifest`]; to restore, it lets [`read::verify`] check
//! an archive against itself and the adapter's table list, then compares the result with its
//! live schema and imports each table from [`read::CheckedTable::reopen`].

pub mod csv;
pub mod manifest;
pub mod read;
pub mod write;

pub use manifest::{Manifest, ManifestTable, FORMAT_VERSION};
pub use write::PendingBackup;

/// Why a backup could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The file is not a backup this build can restore; the reason says why, naming the entry.
    #[error("{0}")]
    Invalid(String),
    /// Writing a backup failed (a file system error, or the target exists already).
    #[error("{0}")]
    Write(String),
}

/// A [`FormatError::Invalid`] with `reason`.
pub(crate) fn invalid(reason: impl Into<String>) -> FormatError {
    FormatError::Invalid(reason.into())
}
