//! The `justin` command line, for whichever algorithms a binary registers: serve the API, run
//! migrations, take a backup, reset or restore the database, erase a participant, replay or
//! export the decisions,
//! print the digest of an API key for `auth.api_keys`, or print the API's OpenAPI document;
//! and `justin simulate`, a synthetic study driven through a running service. [`run`] is the
//! whole of a service binary's `main`, given its [`Registry`].

use std::process::ExitCode;

use chrono::Utc;
use clap::{Parser, Subcommand};
use justin_core::{Registry, Store};

use crate::config::Config;
use crate::database::{Database, OpenMode};
use crate::startup;

/// The target of the command line's own log records, whichever binary runs it.
const LOG_TARGET: &str = "justin";

/// JustIn: a decision service for digital health studies.
#[derive(Debug, Parser)]
#[command(name = "justin", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Run pending database migrations and exit.
    Migrate,
    /// Write a backup of every table into backup.dir and exit.
    Backup,
    /// Delete every row of every table, after taking a backup. Without --yes, only says what
    /// would be deleted.
    ResetDb {
        /// Really delete.
        #[arg(long)]
        yes: bool,
    },
    /// Replace every row of every table with a backup's. Without --yes, only checks the file
    /// and says what it would replace.
    Restore {
        /// The backup file (`justin-backup-*.tar`).
        file: std::path::PathBuf,
        /// Really replace.
        #[arg(long)]
        yes: bool,
    },
    /// Erase a participant: delete their uploads and history and keep their decisions without
    /// context or state under a pseudonym, after a backup into backup.dir. Without --yes,
    /// only says what would be erased.
    EraseUser {
        /// The participant's id.
        user_id: String,
        /// Really erase.
        #[arg(long)]
        yes: bool,
    },
    /// Re-derive every stored decision from its stored state, parameter version and seed, and
    /// report each one that differs. Decisions of erased participants cannot be checked and
    /// are reported apart; decisions the study server made itself are counted, not replayed.
    /// Exits 1 when any decision differs.
    Replay {
        /// Replay the updates instead: recompute every parameter version from the version
        /// before it and the study records its update read, report each as OK, WITHIN
        /// TOLERANCE, MISMATCH or UNVERIFIABLE, and name every record that disagrees with
        /// what it was derived from, with the versions that read it. Exits 1 on any mismatch
        /// or such record.
        #[arg(long)]
        updates: bool,
    },
    /// Write the analysis table: one CSV row per decision with the study data uploaded for
    /// it (the columns are listed in docs/api.md). The file appears whole or not at all.
    /// With `--for lifejacket DIR`: write the files an adaptivity-aware analysis (lifejacket)
    /// starts from into DIR instead (docs/analysis.md); needs a [schedule].
    Export {
        /// The CSV file to write (replaced if it exists); `-` writes to standard output.
        #[arg(
            long,
            value_name = "FILE",
            required_unless_present = "format",
            conflicts_with = "format"
        )]
        out: Option<std::path::PathBuf>,
        /// The analysis to export for: `lifejacket` writes a directory of files.
        #[arg(long = "for", value_name = "ANALYSIS", value_enum, requires = "dir")]
        format: Option<ExportFor>,
        /// The directory to write (created; refused when not empty), with `--for`.
        #[arg(value_name = "DIR", requires = "format")]
        dir: Option<std::path::PathBuf>,
    },
    /// Read an API key from standard input and print its SHA-256 digest, the value of
    /// `sha256` in `auth.api_keys`. Reads no configuration and writes no log.
    HashKey,
    /// Print the OpenAPI document of the HTTP API (what `docs/openapi.json` holds) and exit.
    Openapi,
    /// Drive a running service through a synthetic study and summarise each update (see
    /// docs/simulation.md). Exits 1 on any refused request or failed update.
    Simulate(Box<justin_simulate::Args>),
    /// Check the study now, as GET /api/v1/monitor does, and print the report, for cron.
    /// Exits 0 when green, 1 when yellow, 2 when red, 3 when it cannot check (configuration,
    /// database, usage).
    Monitor {
        /// Print the report as JSON (the route's body) instead of lines of text.
        #[arg(long)]
        json: bool,
    },
}

/// `justin monitor`'s exit status when it cannot check at all.
const MONITOR_CANNOT_CHECK: u8 = 3;

/// What `justin export --for` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ExportFor {
    /// The files lifejacket's analysis is built from (docs/analysis.md).
    Lifejacket,
}

/// Runs the command the process's arguments name, with `algorithms` as the algorithms
/// `algorithm.name` can select, and returns the process's exit code. Parses the arguments,
/// reads the configuration and installs the logger: call it once per process, as `main`.
pub fn run(algorithms: Registry) -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // What clap does itself, except that `justin monitor` keeps 1 and 2 for yellow
            // and red: its usage errors exit 3.
            let monitor = std::env::args().nth(1).as_deref() == Some("monitor");
            let code = e.exit_code();
            e.print().ok();
            return if monitor && code != 0 {
                ExitCode::from(MONITOR_CANNOT_CHECK)
            } else {
                ExitCode::from(u8::try_from(code).unwrap_or(2))
            };
        }
    };
    if matches!(cli.command, Some(Command::Openapi)) {
        // The document depends on the code only: no configuration, no logging.
        return openapi().unwrap_or_else(|message| fail(&message));
    }
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::HashKey = command {
        // Before the configuration and the logger: it needs neither, and must work while the
        // configuration is being written.
        return hash_key();
    }
    if let Command::Simulate(args) = command {
        // A client of a service, maybe on another machine: no configuration, no log.
        return justin_simulate::run(*args);
    }
    let is_monitor = matches!(command, Command::Monitor { .. });
    let failed = |message: &str| {
        let code = fail(message);
        if is_monitor {
            ExitCode::from(MONITOR_CANNOT_CHECK)
        } else {
            code
        }
    };
    let mut config = match Config::load(&algorithms) {
        Ok(config) => config,
        Err(e) => return failed(&e.to_string()),
    };
    if is_monitor
        || matches!(&command, Command::Export { out: Some(out), .. } if out.as_os_str() == "-")
    {
        // Standard output carries the table: log lines go to the log files only.
        config.logging.stdout = false;
    }
    if let Err(e) = crate::logging::init(&config.logging, &algorithms) {
        return failed(&e);
    }
    let outcome = match command {
        Command::Serve => serve(config, &algorithms),
        Command::Migrate => migrate(&config),
        Command::Backup => backup(&config),
        Command::ResetDb { yes } => reset_db(&config, &algorithms, yes),
        Command::Restore { file, yes } => restore(&config, &file, yes),
        Command::EraseUser { user_id, yes } => erase_user(&config, &algorithms, &user_id, yes),
        Command::Replay { updates: false } => replay(&config, &algorithms),
        Command::Replay { updates: true } => replay_updates(&config, &algorithms),
        Command::Export {
            out: Some(out),
            format: None,
            ..
        } => export(&config, &out),
        Command::Export {
            format: Some(ExportFor::Lifejacket),
            dir: Some(dir),
            ..
        } => export_lifejacket(&config, &algorithms, &dir),
        // clap requires --out, or --for with DIR.
        Command::Export { .. } => Err("name --out FILE, or --for lifejacket DIR".into()),
        Command::HashKey => Ok(hash_key()),
        Command::Openapi => openapi(),
        Command::Simulate(args) => Ok(justin_simulate::run(*args)),
        Command::Monitor { json } => monitor(&config, &algorithms, json),
    };
    match outcome {
        Ok(code) => code,
        Err(message) => failed(&message),
    }
}

/// `justin hash-key`: the key is the whole of standard input, without one final line break.
fn hash_key() -> ExitCode {
    use std::io::{IsTerminal, Read};

    let mut stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("Type the API key, then Enter and Ctrl-D:");
    }
    let mut input = String::new();
    if let Err(e) = stdin.read_to_string(&mut input) {
        eprintln!("justin: cannot read the key from standard input: {e}");
        return ExitCode::FAILURE;
    }
    let key = input
        .strip_suffix('\n')
        .map_or(input.as_str(), |k| k.strip_suffix('\r').unwrap_or(k));
    if let Err(why) = crate::auth::check_key(key) {
        eprintln!("justin: {why}");
        return ExitCode::FAILURE;
    }
    println!("{}", crate::auth::digest_hex(key));
    ExitCode::SUCCESS
}

fn fail(message: &str) -> ExitCode {
    log::error!(target: LOG_TARGET, "{message}");
    eprintln!("justin: {message}");
    ExitCode::FAILURE
}

fn openapi() -> Result<ExitCode, String> {
    let text = crate::openapi::document_json()
        .map_err(|e| format!("cannot serialize the OpenAPI document: {e}"))?;
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

fn serve(config: Config, algorithms: &Registry) -> Result<ExitCode, String> {
    if config.backup.enabled {
        log::info!(
            target: LOG_TARGET,
            "backups before updates go to {}",
            config.backup.dir.display()
        );
    } else {
        log::warn!(
            target: LOG_TARGET,
            "backups before updates are off (backup.enabled = false)"
        );
    }
    let server = startup::start(config, algorithms).map_err(|e| e.to_string())?;
    server
        .stop_on_signals()
        .map_err(|e| format!("cannot listen for stop signals: {e}"))?;
    server
        .wait()
        .map_err(|e| format!("the server failed: {e}"))?;
    log::info!(target: LOG_TARGET, "stopped");
    Ok(ExitCode::SUCCESS)
}

/// Opens the store without changing the schema: maintenance commands work on what is there.
fn open_store(config: &Config) -> Result<std::sync::Arc<dyn Store>, String> {
    Ok(Database::open(&config.database, OpenMode::AS_IS)?.store())
}

fn migrate(config: &Config) -> Result<ExitCode, String> {
    let mode = OpenMode {
        create_if_missing: config.database.create_if_missing,
        run_migrations: false,
    };
    let database = Database::open(&config.database, mode)?;
    let applied = database.run_migrations()?;
    if applied.is_empty() {
        println!("the database is up to date");
    }
    for name in applied {
        println!("applied {name}");
    }
    Ok(ExitCode::SUCCESS)
}

fn backup(config: &Config) -> Result<ExitCode, String> {
    let store = open_store(config)?;
    let report = store
        .backup(&config.backup.dir, Utc::now())
        .map_err(|e| format!("backup failed: {}", justin_core::service::error_chain(&e)))?;
    println!("backup written to {}", report.path.display());
    Ok(ExitCode::SUCCESS)
}

fn reset_db(config: &Config, algorithms: &Registry, yes: bool) -> Result<ExitCode, String> {
    let store = open_store(config)?;
    let counts = store
        .row_counts()
        .map_err(|e| justin_core::service::error_chain(&e))?;
    if !yes {
        println!("reset-db would delete every row of every table:");
        for (table, rows) in &counts {
            println!("  {table}: {rows} rows");
        }
        println!("Nothing was deleted. Run again with --yes to delete (a backup is taken first).");
        return Ok(ExitCode::from(2));
    }
    let report = store.backup(&config.backup.dir, Utc::now()).map_err(|e| {
        format!(
            "backup before reset failed, nothing was deleted: {}",
            justin_core::service::error_chain(&e)
        )
    })?;
    println!("backup written to {}", report.path.display());
    store
        .reset()
        .map_err(|e| justin_core::service::error_chain(&e))?;
    for (table, rows) in &counts {
        println!("deleted {rows} rows from {table}");
    }
    // Leave the database ready to serve: the priors are version 1 again.
    let service = startup::build_service(config, algorithms).map_err(|e| e.to_string())?;
    let installed = service
        .current_parameters()
        .map_err(|e| justin_core::service::error_chain(&e))?;
    println!(
        "installed the priors as {} parameters version {}",
        installed.algorithm, installed.version
    );
    log::warn!(
        target: LOG_TARGET,
        "the database was reset; backup at {}",
        report.path.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn restore(config: &Config, file: &std::path::Path, yes: bool) -> Result<ExitCode, String> {
    let store = open_store(config)?;
    if !file.is_file() {
        return Err(format!("{} is not a file", file.display()));
    }
    let counts = store
        .row_counts()
        .map_err(|e| justin_core::service::error_chain(&e))?;
    if !yes {
        let held = store.check_backup(file).map_err(|e| {
            format!(
                "{} cannot be restored: {}",
                file.display(),
                justin_core::service::error_chain(&e)
            )
        })?;
        println!(
            "{} is a complete backup. Restoring it would replace every row of every table:",
            file.display()
        );
        for (table, rows) in &held.row_counts {
            let now = counts
                .iter()
                .find(|(t, _)| t == table)
                .map_or(0, |(_, n)| *n);
            println!("  {table}: {now} rows now, {rows} rows in the backup");
        }
        println!("Nothing was changed. Run again with --yes to restore.");
        return Ok(ExitCode::from(2));
    }
    let report = store.restore(file).map_err(|e| {
        format!(
            "restore failed, nothing was changed: {}",
            justin_core::service::error_chain(&e)
        )
    })?;
    for (table, rows) in &report.row_counts {
        println!("restored {rows} rows into {table}");
    }
    log::warn!(
        target: LOG_TARGET,
        "the database was restored from {}",
        file.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn erase_user(
    config: &Config,
    algorithms: &Registry,
    user_id: &str,
    yes: bool,
) -> Result<ExitCode, String> {
    let user = justin_core::UserId::parse(user_id).map_err(|e| e.0)?;
    // Erasure changes rows, not the schema: no database creation, no migrations, no priors.
    let database = Database::open(&config.database, OpenMode::AS_IS)?;
    let service = startup::service_on(config, algorithms, &database).map_err(|e| e.to_string())?;
    let chain = |e: &justin_core::DomainError| justin_core::service::error_chain(e);
    let view = match service.participant(&user) {
        Err(justin_core::DomainError::UserNotFound) => {
            return Err(format!(
                "{user_id:?} is not registered (or was erased already); nothing was erased"
            ))
        }
        other => other.map_err(|e| chain(&e))?,
    };
    if !yes {
        let p = &view.participant;
        println!("erase-user would erase the participant {user_id:?}:");
        println!(
            "  {} uploads (contexts, states, outcomes): deleted",
            p.uploads
        );
        println!("  their history (enrollment, changes, withdrawal): deleted");
        println!(
            "  {} decisions: kept for the trial's randomization record, without context, \
             state or reason, under a pseudonym",
            p.decisions
        );
        println!("  their id, time in the study and withdrawal reason: removed");
        println!(
            "A backup is taken into {} first; it, and every earlier backup, still holds the \
             participant's data.",
            config.backup.dir.display()
        );
        println!("Nothing was changed. Run again with --yes to erase.");
        return Ok(ExitCode::from(2));
    }
    let erasure = service
        .erase_participant(&user)
        .map_err(|e| format!("erasure failed, nothing was erased: {}", chain(&e)))?;
    println!("erased; the audit record:");
    println!("  id: {}", erasure.id);
    println!("  erased_at: {}", erasure.erased_at.to_rfc3339());
    println!("  participant_number: {}", erasure.participant_number);
    println!("  pseudonym: {}", erasure.pseudonym);
    for (table, rows) in &erasure.row_counts {
        println!("  {table}: {rows} rows");
    }
    println!("  backup_file: {}", erasure.backup_file);
    // The id is personal data and stays out of the log; the audit record identifies the erasure.
    log::warn!(
        target: LOG_TARGET,
        "participant erased (erasure {}, backup {})",
        erasure.id,
        erasure.backup_file
    );
    Ok(ExitCode::SUCCESS)
}

fn replay(config: &Config, algorithms: &Registry) -> Result<ExitCode, String> {
    // Replay reads only: no database creation, no migrations, no priors.
    let database = Database::open(&config.database, OpenMode::AS_IS)?;
    let service = startup::service_on(config, algorithms, &database).map_err(|e| e.to_string())?;
    let summary = service
        .replay(
            &mut |m| {
                let show = |a: Option<justin_core::Action>| {
                    a.map_or_else(|| "-".to_owned(), |a| a.as_i16().to_string())
                };
                let show_p = |p: Option<justin_core::Probability>| {
                    p.map_or_else(|| "-".to_owned(), |p| p.get().to_string())
                };
                println!(
                    "MISMATCH user_id={} decision_type={} decision_idx={} stored action={} action_prob={} replayed action={} action_prob={}: {}",
                    m.user_id,
                    m.decision_type,
                    m.decision_idx.get(),
                    m.stored_action.as_i16(),
                    m.stored_prob.get(),
                    show(m.replayed_action),
                    show_p(m.replayed_prob),
                    m.reason
                );
            },
            &mut |u| {
                println!(
                    "UNVERIFIABLE user_id={} decision_type={} decision_idx={}: {}",
                    u.user_id,
                    u.decision_type,
                    u.decision_idx.get(),
                    u.reason
                );
            },
        )
        .map_err(|e| format!("replay failed: {}", justin_core::service::error_chain(&e)))?;
    println!(
        "replayed {} decisions: {} mismatches; {} unverifiable (erased participants); {} decided by the host (stored as sent, not replayed)",
        summary.checked, summary.mismatches, summary.unverifiable, summary.host_decided
    );
    Ok(if summary.mismatches == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `justin replay --updates`: one line per completed update, then one per record that
/// disagrees with what it was derived from, then the summary.
fn replay_updates(config: &Config, algorithms: &Registry) -> Result<ExitCode, String> {
    use justin_core::service::{UpdateVerdict, UPDATE_REPLAY_TOLERANCE};
    // Replay reads only: no database creation, no migrations, no priors.
    let database = Database::open(&config.database, OpenMode::AS_IS)?;
    let service = startup::service_on(config, algorithms, &database).map_err(|e| e.to_string())?;
    let summary = service
        .replay_updates(
            &mut |v| {
                let verdict = match &v.verdict {
                    UpdateVerdict::Exact => "OK".to_owned(),
                    UpdateVerdict::WithinTolerance {
                        largest_relative_difference,
                    } => format!(
                        "WITHIN TOLERANCE (largest relative difference {largest_relative_difference:e}, tolerance {UPDATE_REPLAY_TOLERANCE:e})"
                    ),
                    UpdateVerdict::Mismatch { reason } => format!("MISMATCH: {reason}"),
                    UpdateVerdict::Unverifiable { reason } => format!("UNVERIFIABLE: {reason}"),
                };
                println!(
                    "version {} update_id={} rows_read={} rows_stored={}: {verdict}",
                    v.parameter_version, v.update_id, v.rows_read, v.rows_streamed
                );
            },
            &mut |r| {
                let versions: Vec<String> = r.versions.iter().map(i64::to_string).collect();
                println!(
                    "INCONSISTENT user_id={} decision_type={} decision_idx={} read_by_versions={}: {}",
                    r.user_id,
                    r.decision_type,
                    r.decision_idx.get(),
                    versions.join(","),
                    r.reason
                );
            },
        )
        .map_err(|e| {
            format!(
                "update replay failed: {}",
                justin_core::service::error_chain(&e)
            )
        })?;
    println!(
        "replayed {} updates: {} exact, {} within tolerance (relative {UPDATE_REPLAY_TOLERANCE:e}), {} mismatches, {} unverifiable (records erased since, or another algorithm); {} inconsistent records",
        summary.versions,
        summary.exact,
        summary.within_tolerance,
        summary.mismatches,
        summary.unverifiable,
        summary.inconsistent_rows
    );
    Ok(if summary.failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `justin export`: streams the store's export into `out` through a file beside it, renamed
/// into place only once every row is written, so a failed export never leaves a cut table
/// under the name an analysis script reads.
fn export(config: &Config, out: &std::path::Path) -> Result<ExitCode, String> {
    use std::io::Write;

    let store = open_store(config)?;
    let rows = store
        .export_lines()
        .map_err(|e| format!("export failed: {}", justin_core::service::error_chain(&e)))?;
    let failed = |e: &dyn std::error::Error| {
        format!("export failed: {}", justin_core::service::error_chain(e))
    };
    if out.as_os_str() == "-" {
        let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
        let written = crate::export::write_all(&mut stdout, rows).map_err(|e| failed(&e))?;
        stdout.flush().map_err(|e| failed(&e))?;
        log::info!(
            target: LOG_TARGET,
            "export wrote {written} decisions to standard output"
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut partial = out.as_os_str().to_owned();
    partial.push(".partial");
    let partial = std::path::PathBuf::from(partial);
    let written = (|| -> Result<u64, String> {
        let file = create_private_partial(&partial)
            .map_err(|e| format!("cannot create {}: {e}", partial.display()))?;
        let mut writer = std::io::BufWriter::with_capacity(256 * 1024, file);
        let written = crate::export::write_all(&mut writer, rows).map_err(|e| failed(&e))?;
        let file = writer
            .into_inner()
            .map_err(|e| format!("cannot write {}: {e}", partial.display()))?;
        file.sync_all()
            .map_err(|e| format!("cannot write {}: {e}", partial.display()))?;
        std::fs::rename(&partial, out)
            .map_err(|e| format!("cannot move the export to {}: {e}", out.display()))?;
        Ok(written)
    })()
    .inspect_err(|_| {
        // Nothing half-written stays behind; the error says what went wrong.
        let _ = std::fs::remove_file(&partial);
    })?;
    println!("exported {written} decisions to {}", out.display());
    Ok(ExitCode::SUCCESS)
}

/// `justin export --for lifejacket DIR`.
fn export_lifejacket(
    config: &Config,
    algorithms: &Registry,
    dir: &std::path::Path,
) -> Result<ExitCode, String> {
    let schedule = config.schedule().map_err(|e| e.to_string())?;
    let algorithm = algorithms
        .build(&config.algorithm.name, &config.algorithm.options)
        .map_err(|e| e.to_string())?;
    // Refuse before opening the database when the export cannot be made at all.
    crate::lifejacket::check(algorithm.as_ref(), schedule.as_ref())
        .map_err(|e| format!("export refused: {e}"))?;
    let store = open_store(config)?;
    let counts = crate::lifejacket::export(
        store.as_ref(),
        algorithm.as_ref(),
        schedule.as_ref(),
        dir,
        Utc::now(),
    )
    .map_err(|e| match e {
        crate::lifejacket::LifejacketError::Refused(why) => format!("export refused: {why}"),
        other => format!(
            "export failed, nothing was left in {}: {other}",
            dir.display()
        ),
    })?;
    println!(
        "exported {} participants ({} grid rows, {} decisions placed, {} unplaced, {} left \
         out, {} without any decision) and {} updates for lifejacket to {}",
        counts.participants,
        counts.grid_rows,
        counts.decisions,
        counts.unplaced_decisions,
        counts.participants_left_out,
        counts.participants_without_decisions,
        counts.updates,
        dir.display()
    );
    if counts.policy_decreases > 0 {
        println!(
            "warning: {} in-study rows have a policy number below the participant's previous \
             one (lifejacket refuses this); see docs/analysis.md",
            counts.policy_decreases
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Creates the export's partial file readable by the service's user only (the export holds
/// participants' data, as backups do, and the rename keeps the mode). A leftover of an earlier
/// export at that name (a file or a symlink) is removed first, then the file is created with
/// `O_CREAT | O_EXCL`, which never follows a symlink: should one appear in between, the
/// creation fails instead of writing through it.
fn create_private_partial(partial: &std::path::Path) -> std::io::Result<std::fs::File> {
    match std::fs::remove_file(partial) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(partial)
}

/// `justin monitor`: the report as the route gives it, on standard output (log lines go to
/// the log files only), and the state as the exit status.
fn monitor(config: &Config, algorithms: &Registry, json: bool) -> Result<ExitCode, String> {
    // Reads only: no database creation, no migrations, no priors.
    let database = Database::open(&config.database, OpenMode::AS_IS)?;
    let service = startup::service_on(config, algorithms, &database).map_err(|e| e.to_string())?;
    let report = service
        .monitor_report()
        .map_err(|e| format!("cannot check: {}", justin_core::service::error_chain(&e)))?;
    let text = if json {
        let body = crate::routes::monitor::show::MonitorResponse::from(&report);
        let mut text = serde_json::to_string_pretty(&body)
            .map_err(|e| format!("cannot serialize the report: {e}"))?;
        text.push('\n');
        text
    } else {
        monitor_text(&report)
    };
    // A reader that went away (`| head`) is no reason to fail: the exit status still tells.
    std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes()).ok();
    Ok(ExitCode::from(match report.state {
        justin_core::Severity::Green => 0,
        justin_core::Severity::Yellow => 1,
        justin_core::Severity::Red => 2,
    }))
}

/// The report as lines: the state, then one line per finding.
fn monitor_text(report: &justin_core::MonitorReport) -> String {
    use std::fmt::Write;
    let mut out = format!(
        "{} at {} ({} finding{})\n",
        report.state.as_str(),
        report
            .checked_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        report.findings.len(),
        if report.findings.len() == 1 { "" } else { "s" }
    );
    for f in &report.findings {
        let mut line = format!("{:<6} {}", f.severity.as_str(), f.kind.as_str());
        if let Some(p) = &f.participant {
            write!(line, " participant={p}").ok();
        }
        if let Some(t) = &f.decision_type {
            write!(line, " decision_type={t}").ok();
        }
        if let Some(since) = f.since {
            write!(
                line,
                " since={}",
                since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )
            .ok();
        }
        writeln!(out, "{line}: {}", f.message).ok();
    }
    out
}
