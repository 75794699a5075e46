//! Writing a backup archive: the file's name, a private work directory for the tables' CSV,
//! and the tar itself, written as `<name>.partial`, synced and renamed when complete.
//!
//! The CSVs go to temporary files first because a tar entry needs its size up front; memory use
//! does not grow with the data. Whatever fails, dropping the [`PendingBackup`] removes the
//! partial file and the work directory.
//!
//! A process killed while writing leaves both behind (the CSVs of a whole database). The
//! writer holds an exclusive `flock` on its work directory for as long as it exists, so
//! [`remove_leftovers`] (run when the service starts and before every backup) can tell a
//! leftover from a backup another process is writing: it removes only the work directories
//! whose lock it gets, with their partial files, and nothing but names this module writes.

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
    /// The work directory, opened and exclusively locked while this backup is written; the
    /// lock goes with the process, so a killed writer's directory is free to remove.
    _lock: File,
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
        remove_leftovers(dir);
        let partial = dir.join(format!("{name}.partial"));
        let work_dir = dir.join(format!(".{name}.tmp"));
        let lock = create_locked_dir(&work_dir)
            .map_err(|e| write_failure(format!("cannot create {}", work_dir.display()), e))?;
        Ok(Self {
            dir: dir.to_owned(),
            path,
            partial,
            work_dir,
            taken_at,
            _lock: lock,
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

/// Creates the work directory at `path` and returns it opened with an exclusive lock. Creating
/// (not reusing) the directory keeps two backups of one instant apart. A cleaner that locked
/// the new directory between its creation and the lock removes it, which the check of the
/// path against the locked directory notices; the creation is then tried again.
fn create_locked_dir(path: &Path) -> io::Result<File> {
    #[cfg(unix)]
    use std::os::unix::fs::MetadataExt;
    for _ in 0..3 {
        create_private_dir(path)?;
        let dir = File::open(path)?;
        dir.lock()?;
        let held = dir.metadata()?;
        match fs::symlink_metadata(path) {
            #[cfg(unix)]
            Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => return Ok(dir),
            #[cfg(not(unix))]
            Ok(_) => return Ok(dir),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(
        "removed by another process as soon as created",
    ))
}

/// The backup name `entry` (a name in a backup directory) is a work directory of, or `None`.
fn work_dir_backup(entry: &str) -> Option<&str> {
    let name = entry.strip_prefix('.')?.strip_suffix(".tmp")?;
    is_backup_name(name).then_some(name)
}

/// Whether `name` is an archive name [`PendingBackup::create`] writes:
/// `justin-backup-<digits, T, . and Z>.tar`.
fn is_backup_name(name: &str) -> bool {
    name.strip_prefix("justin-backup-")
        .and_then(|n| n.strip_suffix(".tar"))
        .is_some_and(|time| {
            !time.is_empty()
                && time
                    .bytes()
                    .all(|b| b.is_ascii_digit() || matches!(b, b'T' | b'Z' | b'.'))
        })
}

/// Removes what killed backups left in `dir`: each work directory `.justin-backup-<time>.tar.tmp`
/// no live process holds locked, with its partial archive `justin-backup-<time>.tar.partial`,
/// and a partial archive whose work directory is gone (a writer removes its partial archive
/// before its work directory, so such a file has no writer). Logs each removal and each
/// failure to remove, and returns the paths removed. Nothing else in `dir` is touched, and a
/// directory that cannot be listed (it does not exist yet) removes nothing.
pub fn remove_leftovers(dir: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return removed;
    };
    let names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    for entry in &names {
        if let Some(name) = work_dir_backup(entry) {
            let work_dir = dir.join(entry);
            let Ok(lock) = File::open(&work_dir) else {
                continue;
            };
            if lock.try_lock().is_err() {
                // A live backup, or a cleaner of another process at work.
                continue;
            }
            let partial = dir.join(format!("{name}.partial"));
            remove_leftover_file(partial, &mut removed);
            match fs::remove_dir_all(&work_dir) {
                Ok(()) => removed.push(work_dir),
                Err(e) => log::warn!(
                    "cannot remove {}, left by a killed backup: {e}",
                    work_dir.display()
                ),
            }
        } else if let Some(name) = entry.strip_suffix(".partial").filter(|n| is_backup_name(n)) {
            if dir.join(format!(".{name}.tmp")).exists() {
                continue;
            }
            let partial = dir.join(entry);
            remove_leftover_file(partial, &mut removed);
        }
    }
    for path in &removed {
        log::info!(
            "removed {}, left by a backup that was killed",
            path.display()
        );
    }
    removed
}

/// Removes a partial archive a killed backup left, noting it in `removed`; one already gone is
/// no failure.
fn remove_leftover_file(partial: PathBuf, removed: &mut Vec<PathBuf>) {
    match fs::remove_file(&partial) {
        Ok(()) => removed.push(partial),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => log::warn!(
            "cannot remove {}, left by a killed backup: {e}",
            partial.display()
        ),
    }
}

fn create_private_dir(path: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "justin-backup-leftovers-{tag}-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn leftovers_of_a_killed_backup_go_and_nothing_else_does() {
        let dir = scratch("killed");
        // What a backup killed while packing leaves: its work directory with CSVs, and the
        // partial archive. No process holds the directory's lock.
        let name = "justin-backup-20250101T000000.000001Z.tar";
        let work = dir.join(format!(".{name}.tmp"));
        fs::create_dir(&work).unwrap();
        fs::write(work.join("users.csv"), "id\n1\n").unwrap();
        fs::write(dir.join(format!("{name}.partial")), "half").unwrap();
        // A partial archive whose work directory is gone.
        let lone = dir.join("justin-backup-20250101T000000.000002Z.tar.partial");
        fs::write(&lone, "half").unwrap();
        // Names the backup does not write, and a finished backup, stay.
        let keep = [
            dir.join("justin-backup-20250101T000000.000003Z.tar"),
            dir.join(".other.tmp"),
            dir.join("notes.partial"),
            dir.join(".justin-backup-x;y.tar.tmp"),
        ];
        for path in &keep {
            fs::write(path, "keep").unwrap();
        }

        let mut removed = remove_leftovers(&dir);
        removed.sort();

        let mut expected = vec![work.clone(), dir.join(format!("{name}.partial")), lone];
        expected.sort();
        assert_eq!(removed, expected);
        assert!(!work.exists());
        for path in &keep {
            assert!(path.exists(), "{}", path.display());
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_backup_being_written_is_left_alone() {
        let dir = scratch("live");
        let at = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
        let pending = PendingBackup::create(&dir, at).unwrap();
        fs::write(pending.csv_path("users"), "id\n").unwrap();
        fs::write(&pending.partial, "half").unwrap();

        // Another backup starting meanwhile cleans up first.
        assert_eq!(remove_leftovers(&dir), Vec::<PathBuf>::new());
        let later = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 1).unwrap();
        let other = PendingBackup::create(&dir, later).unwrap();

        assert!(pending.csv_path("users").exists());
        assert!(pending.partial.exists());
        drop(other);
        drop(pending);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
        fs::remove_dir_all(&dir).unwrap();
    }
}
