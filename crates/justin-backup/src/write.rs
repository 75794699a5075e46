//! Writing a backup archive: the file's name, a private work directory for the tables' CSV,
//! and the tar itself, written as `<name>.partial`, synced and renamed when complete.
//!
//! The CSVs go to temporary files first because a tar entry needs its size up front; memory use
//! does not grow with the data. Whatever fails, dropping the [`PendingBackup`] removes the
//! partial file and the work directory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::manifest::{Manifest, MANIFEST};
use crate::FormatError;

fn write_failure(what: impl std::fmt::Display, e: io::Error) -> FormatError {
    FormatError::Write(format!("{what}: {e}"))
}

/// A backup being written into a directory.
#[derive(Debug)]
pub struct PendingBackup {
    dir: PathBuf,
    path: PathBuf,
    partial: PathBuf,
    work_dir: PathBuf,
    taken_at: DateTime<Utc>,
}

impl PendingBackup {
    /// Starts a backup taken at `taken_at` in `dir` (created if need be): names the archive
    /// `justin-backup-<time>.tar` and creates its private work directory.
    ///
    /// # Errors
    /// [`FormatError::Write`] when the archive exists already or a directory cannot be
    /// created.
    pub fn create(dir: &Path, taken_at: DateTime<Utc>) -> Result<Self, FormatError> {
        fs::create_dir_all(dir)
            .map_err(|e| write_failure(format!("cannot create {}", dir.display()), e))?;
        let name = format!(
            "justin-backup-{}.tar",
            taken_at.format("%Y%m%dT%H%M%S%.6fZ")
        );
        let path = dir.join(&name);
        if path.exists() {
            return Err(FormatError::Write(format!(
                "{} exists already",
                path.display()
            )));
        }
        let partial = dir.join(format!("{name}.partial"));
        let work_dir = dir.join(format!(".{name}.tmp"));
        // Creating (not reusing) the directory also keeps two backups of one instant apart.
        create_private_dir(&work_dir)
            .map_err(|e| write_failure(format!("cannot create {}", work_dir.display()), e))?;
        Ok(Self {
            dir: dir.to_owned(),
            path,
            partial,
            work_dir,
            taken_at,
        })
    }

    /// Where the adapter writes the CSV of `table` (with its header line) before
    /// [`finish`](Self::finish) packs it.
    pub fn csv_path(&self, table: &str) -> PathBuf {
        self.work_dir.join(crate::manifest::csv_file_name(table))
    }

    /// Writes the archive (the manifest, then every table's CSV in the manifest's order from
    /// [`csv_path`](Self::csv_path)), syncs it and renames it into place; returns its path.
    ///
    /// # Errors
    /// [`FormatError::Write`] when a file cannot be read, written, synced or renamed.
    pub fn finish(self, manifest: &Manifest) -> Result<PathBuf, FormatError> {
        self.write_archive(manifest)?;
        fs::rename(&self.partial, &self.path).map_err(|e| {
            write_failure(
                format!(
                    "cannot rename {} to {}",
                    self.partial.display(),
                    self.path.display()
                ),
                e,
            )
        })?;
        // Makes the rename itself durable; the data was synced before it. A directory that
        // cannot be synced (some file systems) does not make the backup fail.
        let _ = File::open(&self.dir).and_then(|d| d.sync_all());
        Ok(self.path.clone())
    }

    fn write_archive(&self, manifest: &Manifest) -> Result<(), FormatError> {
        let failed =
            |e: io::Error| write_failure(format!("cannot write {}", self.partial.display()), e);
        let mtime = u64::try_from(self.taken_at.timestamp()).unwrap_or(0);
        let mut archive = tar::Builder::new(BufWriter::new(
            create_private_file(&self.partial).map_err(failed)?,
        ));

        let json = manifest.to_json()?;
        let mut header = entry_header(json.len() as u64, mtime);
        archive
            .append_data(&mut header, MANIFEST, json.as_slice())
            .map_err(failed)?;

        for table in &manifest.tables {
            let file = File::open(self.csv_path(&table.name)).map_err(failed)?;
            let size = file.metadata().map_err(failed)?.len();
            let mut header = entry_header(size, mtime);
            archive
                .append_data(&mut header, &table.file, file)
                .map_err(failed)?;
        }

        let file = archive
            .into_inner()
            .map_err(failed)?
            .into_inner()
            .map_err(|e| failed(e.into_error()))?;
        file.sync_all().map_err(failed)
    }
}

impl Drop for PendingBackup {
    fn drop(&mut self) {
        // After a successful rename the partial file is gone; NotFound is expected then.
        let _ = fs::remove_file(&self.partial);
        let _ = fs::remove_dir_all(&self.work_dir);
    }
}

/// A tar header with fixed ownership and permissions, so archives do not carry the server's
/// user names and read the same wherever they are unpacked.
fn entry_header(size: u64, mtime: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_size(size);
    header.set_mode(0o600);
    header.set_mtime(mtime);
    header.set_entry_type(tar::EntryType::Regular);
    header
}

/// Backups hold participants' data: readable by the service's user only.
fn create_private_file(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

fn create_private_dir(path: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)
}
