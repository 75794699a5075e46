//! The process's memory allocator. jemalloc, configured in `.cargo/config.toml`, gives pages it
//! no longer uses back to the system from a background thread, so that what a flood of
//! connections or a burst of large requests took is returned once they end; glibc's malloc
//! keeps such pages in its arenas for good. Declared in the library, so every binary built on
//! [`crate::startup`] (the `justin` binary, a study's own binary with its algorithms) has it.

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
