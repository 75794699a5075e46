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

mod callbacks;
mod decisions;
mod parameters;
mod readiness;
mod replay;
mod support;
mod updates;
mod uploads;
