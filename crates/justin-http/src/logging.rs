//! Logging with fern: standard output, `app.log` (everything at the configured level) and
//! `rl.log` (only the algorithm's records). Records carry no request bodies, contexts or
//! outcomes: handlers log what happened, not what was sent, and the access log
//! ([`crate::access_log`]) writes bodies only when the operator sets `logging.log_bodies`.

use std::path::Path;

use justin_core::service::RL_TARGET;
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

/// Whether a record belongs in `rl.log`.
fn is_algorithm_record(target: &str) -> bool {
    target == RL_TARGET || target.starts_with("justin_algos")
}

/// Installs the global logger.
///
/// # Errors
/// When the level is invalid, the log directory cannot be created or a log file cannot be
/// opened.
pub fn init(config: &LoggingConfig) -> Result<(), String> {
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
            .filter(|meta| is_algorithm_record(meta.target()))
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
    fn algorithm_records_are_recognised() {
        assert!(is_algorithm_record(RL_TARGET));
        assert!(is_algorithm_record("justin_algos::flat_prob"));
        assert!(!is_algorithm_record("justin_http::routes"));
    }
}
