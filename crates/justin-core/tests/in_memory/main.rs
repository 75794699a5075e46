//! The core's tests over its in-memory ports (feature `testing`): the store contract of the
//! conformance suite, run against `MemoryStore` as the database adapters run it against
//! theirs. Nothing here touches a database, a file or the real time. One binary, so it links
//! once.

// A test binary: helpers outside `#[test]` functions report failures by panicking too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod store_contract {
    use justin_core::testing::MemoryStore;

    justin_core::store_contract_suite!(MemoryStore::new);
}
