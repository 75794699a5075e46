//! Logging with fern: standard output, `app.log` (everything at the configured level) and
//! `rl.log` (only the algorithm's records: the service's records about the policy, and those of
//! every registered algorithm's log target). Records carry no request bodies, contexts or
//! outcomes: handlers log what happened, not what was sent, and the access log
//! ([`crate::access_log`]) writes bodies only when the operator sets `logging.log_bodies`.

use std::path::Path;

use justin_core::service::RL_TARGET;
use justin_core::Registry;
use log::LevelFilter;

use crate::config::LoggingConfig;

/// A parsed level filter: the default level and per-target overrides.
pub type LevelSpec = (LevelFilter, Vec<(String, LevelFilter)>);

/// Parses `info` or `info,justin_store=debug,actix_web=warn`.
///
/// # Errors
/// A message naming the part that is not a level.
pub fn parse_level(spec: &str) -> Result<LevelSpec, String> {
    let mut default = LevelFilter::Info;
    let mut targets = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            Some((target, level)) => {
                let level = level
                    .trim()
                    .parse()
                    .map_err(|_| format!("{level:?} is not a log level"))?;
                targets.push((target.trim().to_owned(), level));
            }
            None => {
                default = part
                    .parse()
                    .map_err(|_| format!("{part:?} is not a log level"))?;
            }
        }
    }
    Ok((default, targets))
}

/// Whether a record of `target` belongs in `rl.log`: the service's records about the policy,
/// and those whose target is one of `algorithm_targets` or a module under one.
fn is_algorithm_record(target: &str, algorithm_targets: &[String]) -> bool {
    target == RL_TARGET
        || algorithm_targets.iter().any(|prefix| {
            target
                .strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
        })
}

/// Installs the global logger; the records of every algorithm in `algorithms` (by the log
/// target it is registered with) also go to `rl.log`.
///
/// # Errors
/// When the level is invalid, the log directory cannot be created or a log file cannot be
/// opened.
pub fn init(config: &LoggingConfig, algorithms: &Registry) -> Result<(), String> {
    let algorithm_targets: Vec<String> = algorithms.log_targets().map(str::to_owned).collect();
    let (default, targets) = parse_level(&config.level)?;
    let dir: &Path = &config.dir;
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create the log directory {}: {e}", dir.display()))?;
    let open = |name: &str| {
        let path = dir.join(name);
        fern::log_file(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))
    };
    let mut root = fern::Dispatch::new()
        .format(|out, message, record| {
            out.finish(format_args!(
                "{} {:<5} {}: {}",
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                record.level(),
                record.target(),
                message
            ));
        })
        .level(default);
    for (target, level) in targets {
        root = root.level_for(target, level);
    }
    root = root.chain(open("app.log")?).chain(
        fern::Dispatch::new()
            .filter(move |meta| is_algorithm_record(meta.target(), &algorithm_targets))
            .chain(open("rl.log")?),
    );
    if config.stdout {
        root = root.chain(std::io::stdout());
    }
    root.apply()
        .map_err(|e| format!("a logger is installed already: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_per_target() {
        let (default, targets) = parse_level("warn,justin_store=debug").unwrap();
        assert_eq!(default, LevelFilter::Warn);
        assert_eq!(
            targets,
            vec![("justin_store".to_owned(), LevelFilter::Debug)]
        );
        assert!(parse_level("loud").is_err());
        assert!(parse_level("info,x=loud").is_err());
    }

    #[test]
    fn algorithm_records_are_recognised_by_the_registered_targets() {
        let targets: Vec<String> = justin_algos::builtin()
            .log_targets()
            .chain(["my_algorithm"])
            .map(str::to_owned)
            .collect();
        let routed = |target: &str| is_algorithm_record(target, &targets);
        assert!(routed(RL_TARGET));
        assert!(routed("justin_algos::flat_prob"));
        assert!(routed("justin_algos::thompson::inner"));
        assert!(routed("my_algorithm"));
        assert!(routed("my_algorithm::model"));
        assert!(
            !routed("my_algorithm_two"),
            "a prefix of a name is not a module"
        );
        assert!(!routed("justin_http::routes"));
        assert!(!is_algorithm_record("my_algorithm", &[]));
    }
}
