//! Reading a backup archive before a restore: one pass over the tar that reads the manifest and
//! measures every CSV (its place in the file, header and record count), then the file-level
//! checks of the archive against its own manifest and the adapter's tables.
//!
//! How a CSV is measured is the adapter's choice: [`measure_csv`] counts records outside quoted
//! fields, and an adapter that parses rows itself can pass its own measure that also checks
//! every record. Nothing is held in memory beyond a read buffer; the data is read again from
//! its place in the tar by [`CheckedTable::reopen`].

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Take};
use std::path::Path;

use crate::csv::{read_header, HeaderError, RecordCounter};
use crate::manifest::{csv_file_name, holds_table, Manifest, ManifestTable, MANIFEST};
use crate::{invalid, FormatError};

/// Where a CSV lies in the tar, and what the first pass found in it.
#[derive(Debug)]
pub struct CsvEntry {
    /// Offset of its data in the file.
    pub offset: u64,
    /// Bytes of data.
    pub size: u64,
    /// The column names of its header.
    pub header: Vec<String>,
    /// Its number of data records.
    pub records: u64,
}

/// A table of an archive that passed [`verify`]: the manifest's entry and its CSV.
#[derive(Debug)]
pub struct CheckedTable {
    /// What the manifest says about the table.
    pub table: ManifestTable,
    /// Where its CSV is and what it holds.
    pub entry: CsvEntry,
}

/// An archive that passed [`verify`].
#[derive(Debug)]
pub struct CheckedBackup {
    /// The migrations the backup's database had, oldest first.
    pub migrations: Vec<String>,
    /// Every table, in the order the adapter listed them.
    pub tables: Vec<CheckedTable>,
}

/// Measures one CSV entry: given its data, its table's name and its size in bytes, returns its
/// header's column names and its number of records.
pub type Measure<'a> =
    dyn FnMut(&mut dyn Read, &str, u64) -> Result<(Vec<String>, u64), FormatError> + 'a;

/// Reads the archive at `path` and checks it against its manifest and `tables` (the adapter's
/// tables in the order it restores them, less those a backup of its migrations does not hold:
/// see [`holds_table`]), measuring each CSV with `measure`.
///
/// # Errors
/// [`FormatError::Invalid`] with the first problem found: an unreadable file, an entry that is
/// not a regular file, unexpected or appears twice, a missing or unsupported manifest, a table
/// set other than `tables`, an unexpected file name, a header or row count that disagrees with
/// the manifest, or what `measure` refuses.
pub fn verify(
    path: &Path,
    tables: &[&str],
    measure: &mut Measure<'_>,
) -> Result<CheckedBackup, FormatError> {
    let (manifest, mut csvs) = scan(path, measure)?;
    let held: Vec<&str> = tables
        .iter()
        .copied()
        .filter(|table| holds_table(&manifest.migrations, table))
        .collect();
    check_file(manifest, &mut csvs, &held)
}

/// First pass: reads the manifest and measures every CSV, without judging them yet.
fn scan(
    path: &Path,
    measure: &mut Measure<'_>,
) -> Result<(Manifest, BTreeMap<String, CsvEntry>), FormatError> {
    let unreadable = |e: io::Error| not_an_archive(path, &e);
    let file = File::open(path).map_err(unreadable)?;
    let mut archive = tar::Archive::new(BufReader::new(file));
    let mut manifest = None;
    let mut csvs = BTreeMap::new();
    for entry in archive.entries().map_err(unreadable)? {
        let mut entry = entry.map_err(unreadable)?;
        let name = entry
            .path()
            .map_err(unreadable)?
            .to_string_lossy()
            .into_owned();
        let label = entry_label(&name);
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(invalid(format!("{label} is not a regular file")));
        }
        let seen_before = if name == MANIFEST {
            manifest.replace(Manifest::read(&mut entry)?).is_some()
        } else if let Some(table) = name.strip_suffix(".csv") {
            let offset = entry.raw_file_position();
            let size = entry.size();
            let (header, records) = measure(&mut entry, table, size)?;
            csvs.insert(
                table.to_owned(),
                CsvEntry {
                    offset,
                    size,
                    header,
                    records,
                },
            )
            .is_some()
        } else {
            return Err(invalid(format!("unexpected entry {label}")));
        };
        if seen_before {
            return Err(invalid(format!("{label} appears twice")));
        }
    }
    let manifest = manifest.ok_or_else(|| invalid(format!("{MANIFEST} is missing")))?;
    Ok((manifest, csvs))
}

/// Why the file at `path` could not be read as a tar. The file may be anything (a CSV of
/// participants' data given by mistake), and the tar reader's own messages quote what it read
/// (a header's name field is the file's first 100 bytes), so only an error of the operating
/// system is shown as it is; every other is said without the file's content.
fn not_an_archive(path: &Path, e: &io::Error) -> FormatError {
    if e.raw_os_error().is_some() {
        invalid(format!("cannot read {}: {e}", path.display()))
    } else if e.kind() == io::ErrorKind::UnexpectedEof {
        invalid(format!(
            "{} is not a JustIn backup: it ends inside a tar entry",
            path.display()
        ))
    } else {
        invalid(format!(
            "{} is not a JustIn backup: it is not a tar archive, or a damaged one",
            path.display()
        ))
    }
}

/// An entry's name as errors show it: the name itself when it is one a backup could hold
/// (letters, digits, `_`, `-` and `.`, at most 64 of them), otherwise a description that quotes
/// nothing of it, since a file that is not a backup can hold anything there.
fn entry_label(name: &str) -> String {
    let plain = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if plain {
        name.to_owned()
    } else {
        format!("an entry whose name ({} bytes) no backup has", name.len())
    }
}

/// Measures a CSV entry by reading it through: its header's column names and its number of
/// data records, counted outside quoted fields. The measure for adapters that load the CSV
/// as it is (PostgreSQL's `COPY`).
///
/// # Errors
/// [`FormatError::Invalid`] when the entry is unreadable, has no header, is shorter than
/// `size` or ends inside a quoted field.
pub fn measure_csv(
    entry: &mut dyn Read,
    table: &str,
    size: u64,
) -> Result<(Vec<String>, u64), FormatError> {
    let name = csv_file_name(table);
    let unreadable = |e: io::Error| invalid(format!("cannot read {name}: {e}"));
    let mut reader = BufReader::new(entry);
    let header = read_header(&mut reader, &name).map_err(|e| header_error(&name, e))?;
    let mut counter = RecordCounter::new(io::sink());
    io::copy(&mut reader, &mut counter).map_err(unreadable)?;
    check_size(&name, header.bytes + counter.bytes, size)?;
    let records = counter
        .total()
        .map_err(|reason| invalid(format!("{name}: {reason}")))?;
    Ok((header.columns, records))
}

/// A [`HeaderError`] of the first pass as a damaged backup.
pub fn header_error(name: &str, e: HeaderError) -> FormatError {
    match e {
        HeaderError::Io(e) => invalid(format!("cannot read {name}: {e}")),
        HeaderError::Invalid(reason) => invalid(reason),
    }
}

/// Checks that all `size` bytes of the entry `name` were `read`.
///
/// # Errors
/// [`FormatError::Invalid`] naming the entry as truncated.
pub fn check_size(name: &str, read: u64, size: u64) -> Result<(), FormatError> {
    if read == size {
        Ok(())
    } else {
        Err(invalid(format!(
            "{name} is truncated: {read} of {size} bytes present"
        )))
    }
}

/// Checks the archive against its own manifest and the adapter's `expected` tables; returns
/// the tables in `expected` order with their CSVs.
fn check_file(
    mut manifest: Manifest,
    csvs: &mut BTreeMap<String, CsvEntry>,
    expected: &[&str],
) -> Result<CheckedBackup, FormatError> {
    let listed: BTreeSet<&str> = manifest.tables.iter().map(|t| t.name.as_str()).collect();
    if listed.len() != manifest.tables.len() {
        return Err(invalid("the manifest lists a table twice"));
    }
    let expected_set: BTreeSet<&str> = expected.iter().copied().collect();
    if listed != expected_set {
        return Err(invalid(format!(
            "the manifest lists the tables {listed:?}, but this schema has {expected_set:?}"
        )));
    }
    let mut tables = Vec::with_capacity(expected.len());
    for &name in expected {
        let Some(index) = manifest.tables.iter().position(|t| t.name == name) else {
            return Err(invalid(format!("the manifest does not list table {name}")));
        };
        let table = manifest.tables.swap_remove(index);
        let file = csv_file_name(name);
        if table.file != file {
            return Err(invalid(format!(
                "the manifest names {:?} for table {name}, expected {file}",
                table.file
            )));
        }
        let entry = csvs
            .remove(name)
            .ok_or_else(|| invalid(format!("{file} is missing")))?;
        if entry.header != table.columns {
            return Err(invalid(format!(
                "{file} has the columns {:?} but the manifest says {:?}",
                entry.header, table.columns
            )));
        }
        if entry.records != table.rows {
            return Err(invalid(format!(
                "{file} holds {} rows but the manifest says {}",
                entry.records, table.rows
            )));
        }
        tables.push(CheckedTable { table, entry });
    }
    if let Some(extra) = csvs.keys().next() {
        return Err(invalid(format!(
            "{extra}.csv is not a table the manifest lists"
        )));
    }
    Ok(CheckedBackup {
        migrations: manifest.migrations,
        tables,
    })
}

impl CheckedTable {
    /// Opens the table's CSV in the archive at `path` again, checks that its header is the one
    /// the first pass read (the file could have changed since), and returns a reader of its
    /// records.
    ///
    /// # Errors
    /// [`FormatError::Invalid`] when the file cannot be read or its header changed.
    pub fn reopen(&self, path: &Path) -> Result<BufReader<Take<File>>, FormatError> {
        let name = &self.table.file;
        let changed = |what: &str| invalid(format!("{name} changed during the restore ({what})"));
        let unreadable = |e: io::Error| invalid(format!("cannot read {name}: {e}"));
        let mut file = File::open(path).map_err(unreadable)?;
        file.seek(SeekFrom::Start(self.entry.offset))
            .map_err(unreadable)?;
        let mut reader = BufReader::new(file.take(self.entry.size));
        let header = read_header(&mut reader, name).map_err(|e| match e {
            HeaderError::Io(e) => unreadable(e),
            HeaderError::Invalid(reason) => changed(&reason),
        })?;
        if header.columns != self.entry.header {
            return Err(changed("its header differs"));
        }
        Ok(reader)
    }
}

#[cfg(test)]
mod tests;
