//! The core's tests over its in-memory ports (feature `testing`): first the store contract of
//! the conformance suite, run against `MemoryStore` as the database adapters run it against
//! theirs, then the use cases driven through `Service` with a manual clock and a recording
//! notifier. Nothing here touches a database, a file or the real time, so every test is
//! deterministic and takes milliseconds. One binary, so it links once.

// A test binary: helpers outside `#[test]` functions report failures by panicking too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod store_contract {
    use justin_core::testing::MemoryStore;

    justin_core::store_contract_suite!(MemoryStore::new);
}

/// The checks of durable storage that read backups only through the port: the memory store
/// keeps its backups in memory under the path it reports, so it can run these.
mod backups_kept_in_memory {
    use justin_core::testing::MemoryStore;

    justin_core::store_conformance_suite!(@tests MemoryStore::new;
        restore_puts_back_every_row_and_continues_ids,
        numbers_come_back_bit_for_bit_after_a_restore,
        backup_and_restore_keep_the_life_of_the_trial,
    );
}

mod callbacks;
mod decisions;
mod erasure;
mod fallback;
mod host;
mod monitor;
mod parameters;
mod participants;
mod policies;
mod readiness;
mod replay;
mod support;
mod telemetry;
mod update_replay;
mod updates;
mod uploads;
mod warmup;
