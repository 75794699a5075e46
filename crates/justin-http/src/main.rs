//! The `justin` binary: JustIn's command line ([`justin_http::run`]) with the built-in
//! algorithms. A binary of an algorithm crate outside this workspace is the same few lines
//! with its own algorithm registered next to them (see docs/algorithms.md).

use std::process::ExitCode;

fn main() -> ExitCode {
    justin_http::run(justin_algos::builtin())
}
