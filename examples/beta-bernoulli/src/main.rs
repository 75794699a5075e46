//! The service binary: JustIn's command line with the built-in algorithms and
//! `beta_bernoulli`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut algorithms = justin_algos::builtin();
    if let Err(e) = algorithms.register(justin_beta_bernoulli::registration()) {
        eprintln!("justin-beta-bernoulli: {e}");
        return ExitCode::FAILURE;
    }
    justin_http::run(algorithms)
}
