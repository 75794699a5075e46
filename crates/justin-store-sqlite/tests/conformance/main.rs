//! The store's tests against real SQLite files: the shared storage conformance suite, then
//! what only this adapter has (concurrent load without lock errors, `:memory:` URLs, backups
//! written here restored here and their file format, the update lease across "processes", the
//! migrations, the export's snapshot, and setup errors). One binary, so the suite links once.
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
mod export;
mod jobs;
mod load;
mod memory;
mod migrations;
mod setup;

mod support {
    use std::collections::BTreeMap;
    use std::io::Read;

    use chrono::{DateTime, Utc};
    use justin_core::{
        Action, Availability, Decision, DecisionIdx, DecisionType, Probability, State, StudyRecord,
        UserId,
    };
    pub use justin_testkit::ScratchDir;

    pub fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_750_000_000 + seconds, 0).unwrap()
    }

    pub fn user(name: &str) -> UserId {
        UserId::parse(name).unwrap()
    }

    pub fn context() -> justin_core::JsonObject {
        let serde_json::Value::Object(map) = serde_json::json!({"steps": 10}) else {
            unreachable!()
        };
        map
    }

    pub fn decision(user_id: &str, idx: i64, parameter_version: i64) -> Decision {
        Decision {
            user_id: user(user_id),
            decision_type: DecisionType::default(),
            decision_idx: DecisionIdx::new(idx).unwrap(),
            requested_at: at(idx),
            sent_timestamp: "2025-01-01T12:00:00Z".into(),
            decided_at: at(idx + 1),
            availability: Availability::Available,
            context: context(),
            state: State::new(vec![1.0, 2.5]).unwrap(),
            action: Action::One,
            action_prob: Probability::new(0.75).unwrap(),
            parameter_version,
            rng_seed: 42,
        }
    }

    /// `d` as an unavailable decision of type `kind`: no draw, with `reason`.
    pub fn unavailable(d: Decision, kind: &str, reason: Option<&str>) -> Decision {
        Decision {
            decision_type: DecisionType::parse(kind).unwrap(),
            availability: Availability::unavailable(reason.map(str::to_owned)).unwrap(),
            action: Action::Zero,
            action_prob: Probability::ZERO,
            ..d
        }
    }

    /// The upload agreeing with decision `d`.
    pub fn upload_for(d: &Decision) -> StudyRecord {
        StudyRecord {
            user_id: d.user_id.clone(),
            decision_type: d.decision_type.clone(),
            decision_idx: d.decision_idx,
            requested_at: d.requested_at,
            sent_timestamp: d.sent_timestamp.clone(),
            received_at: d.decided_at,
            context: context(),
            action: d.action,
            action_prob: d.action_prob,
            state: State::new(vec![3.0]).unwrap(),
            outcome: context(),
            reward: 1.5,
            available: d.availability.is_available(),
        }
    }

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
