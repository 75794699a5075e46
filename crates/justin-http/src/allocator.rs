//! The process's memory allocator: jemalloc, which gives pages it no longer uses back to the
//! system, so that what a flood of connections or a burst of large requests took is returned
//! once they end; glibc's malloc keeps such pages in its arenas for good. Declared in the
//! library, so every binary built on [`crate::run`] (the `justin` binary, a study's own binary
//! with its algorithms) has it. Its settings (a background thread that returns pages unused for
//! about a second) are compiled in from `.cargo/config.toml`, which cargo reads when it builds
//! inside a JustIn checkout; a binary built elsewhere gets jemalloc's defaults, which return
//! such pages after about ten seconds and only while the process keeps allocating.

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
