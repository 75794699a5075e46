//! The store's tests against real SQLite files: the shared storage conformance suite, then
//! what only this adapter has (concurrent load without lock errors, `:memory:` URLs, backups
//! written here restored here and their file format, the update lease across "processes", the
//! migrations, the export's snapshot, erasure down to the file's bytes, and setup errors). One
//! binary, so the suite links once.
//!
//! Every test gets a database file of its own from `TestDatabase::create`; nothing needs to be
//! installed.

// A test binary: helpers outside `#[test]` functions report failures by panicking too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod conformance {
    use justin_store_sqlite::testing::TestDatabase;

    justin_core::store_conformance_suite!(TestDatabase::create);
}

mod backup;
mod erasure;
mod export;
mod jobs;
mod load;
mod memory;
mod migrations;
mod setup;

mod support {
    use std::collections::BTreeMap;
    use std::io::Read;

    pub use justin_testkit::ScratchDir;

    /// Reads every entry of a tar file into memory (the test archives are small).
    pub fn unpack(path: &std::path::Path) -> BTreeMap<String, String> {
        let mut archive = tar::Archive::new(std::fs::File::open(path).unwrap());
        archive
            .entries()
            .unwrap()
            .map(|entry| {
                let mut entry = entry.unwrap();
                let name = entry.path().unwrap().to_string_lossy().into_owned();
                let mut text = String::new();
                entry.read_to_string(&mut text).unwrap();
                (name, text)
            })
            .collect()
    }

    /// Writes `entries` as a tar file at `path`, in order.
    pub fn pack(path: &std::path::Path, entries: &[(&str, String)]) {
        let mut builder = tar::Builder::new(std::fs::File::create(path).unwrap());
        for (name, text) in entries {
            let mut header = tar::Header::new_ustar();
            header.set_size(text.len() as u64);
            header.set_mode(0o600);
            header.set_entry_type(tar::EntryType::Regular);
            builder
                .append_data(&mut header, name, text.as_bytes())
                .unwrap();
        }
        builder.finish().unwrap();
    }
}
