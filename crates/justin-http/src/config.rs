//! Typed configuration, read once at start-up.
//!
//! Sources, later ones winning: built-in defaults, the TOML file (`config.toml` in the working
//! directory, or the file named by `JUSTIN_CONFIG`), `DATABASE_URL`, then `JUSTIN_`-prefixed
//! environment variables with `__` between section and key. A value of the wrong type, or a key
//! that does not exist, stops start-up with a message naming the key.
//!
//! | key | env var | default |
//! |---|---|---|
//! | `server.host` | `JUSTIN_SERVER__HOST` | `127.0.0.1` |
//! | `server.port` | `JUSTIN_SERVER__PORT` | `5000` (0 picks a free port) |
//! | `server.workers` | `JUSTIN_SERVER__WORKERS` | `0` (one per core) |
//! | `server.max_body_bytes` | `JUSTIN_SERVER__MAX_BODY_BYTES` | `1048576` |
//! | `server.shutdown_grace_secs` | `JUSTIN_SERVER__SHUTDOWN_GRACE_SECS` | `30` |
//! | `server.naive_time_zone` | `JUSTIN_SERVER__NAIVE_TIME_ZONE` | `UTC` (IANA name) |
//! | `server.header_timeout_secs` | `JUSTIN_SERVER__HEADER_TIMEOUT_SECS` | `5` |
//! | `server.body_timeout_secs` | `JUSTIN_SERVER__BODY_TIMEOUT_SECS` | `10` |
//! | `server.max_connections` | `JUSTIN_SERVER__MAX_CONNECTIONS` | `512` |
//! | `server.decision_threads` | `JUSTIN_SERVER__DECISION_THREADS` | `64` |
//! | `auth.api_keys` | `JUSTIN_AUTH__API_KEYS` (`[{name="app",sha256="..."}]`) | `[]` (API open) |
//! | `auth.allow_unauthenticated` | `JUSTIN_AUTH__ALLOW_UNAUTHENTICATED` | `false` |
//! | `database.url` | `JUSTIN_DATABASE__URL`, `DATABASE_URL` | `sqlite://justin.db` (or `postgres://...`) |
//! | `database.pool_size` | `JUSTIN_DATABASE__POOL_SIZE` | `10` |
//! | `database.connect_timeout_secs` | `JUSTIN_DATABASE__CONNECT_TIMEOUT_SECS` | `5` |
//! | `database.run_migrations` | `JUSTIN_DATABASE__RUN_MIGRATIONS` | `true` |
//! | `database.create_if_missing` | `JUSTIN_DATABASE__CREATE_IF_MISSING` | `true` |
//! | `algorithm.name` | `JUSTIN_ALGORITHM__NAME` | `flat_prob` |
//! | `algorithm.seed` | `JUSTIN_ALGORITHM__SEED` | `42` |
//! | `algorithm.priors_file` | `JUSTIN_ALGORITHM__PRIORS_FILE` | none |
//! | `algorithm.options` | (table; `JUSTIN_ALGORITHM__OPTIONS__<KEY>`) | `{}` (what the algorithm is built with) |
//! | `algorithm.priors` | (table) | `{ probability_of_action = 0.5 }` |
//! | `algorithm.warmup.probability` | `JUSTIN_ALGORITHM__WARMUP__PROBABILITY` | none (no warm-up) |
//! | `algorithm.warmup.until` | `JUSTIN_ALGORITHM__WARMUP__UNTIL` | none |
//! | `algorithm.warmup.first_decisions` | `JUSTIN_ALGORITHM__WARMUP__FIRST_DECISIONS` | none |
//! | `algorithm.warmup.until_participants` | `JUSTIN_ALGORITHM__WARMUP__UNTIL_PARTICIPANTS` | none |
//! | `algorithm.warmup.until_first_update` | `JUSTIN_ALGORITHM__WARMUP__UNTIL_FIRST_UPDATE` | `false` |
//! | `algorithm.fallback.probability` | `JUSTIN_ALGORITHM__FALLBACK__PROBABILITY` | none (no fallback) |
//! | `backup.enabled` | `JUSTIN_BACKUP__ENABLED` | `true` |
//! | `backup.dir` | `JUSTIN_BACKUP__DIR` | `backups` |
//! | `logging.level` | `JUSTIN_LOGGING__LEVEL` | `info` |
//! | `logging.dir` | `JUSTIN_LOGGING__DIR` | `logs` |
//! | `logging.stdout` | `JUSTIN_LOGGING__STDOUT` | `true` |
//! | `logging.log_bodies` | `JUSTIN_LOGGING__LOG_BODIES` | `false` |
//! | `update.callback_timeout_secs` | `JUSTIN_UPDATE__CALLBACK_TIMEOUT_SECS` | `10` (per attempt) |
//! | `update.callback_attempts` | `JUSTIN_UPDATE__CALLBACK_ATTEMPTS` | `5` |
//! | `update.callback_backoff_ms` | `JUSTIN_UPDATE__CALLBACK_BACKOFF_MS` | `500` (doubles per retry) |
//! | `update.callback_allowed_hosts` | `JUSTIN_UPDATE__CALLBACK_ALLOWED_HOSTS` | `[]` (any host) |
//! | `update.max_attempts` | `JUSTIN_UPDATE__MAX_ATTEMPTS` | `3` |
//! | `update.poll_interval_ms` | `JUSTIN_UPDATE__POLL_INTERVAL_MS` | `1000` |
//! | `update.include_warmup` | `JUSTIN_UPDATE__INCLUDE_WARMUP` | `true` |
//! | `update.include_fallback` | `JUSTIN_UPDATE__INCLUDE_FALLBACK` | `false` |
//! | `update.include_host` | `JUSTIN_UPDATE__INCLUDE_HOST` | `false` |
//! | `update.missing_outcomes` | `JUSTIN_UPDATE__MISSING_OUTCOMES` | `leave_out` (or `default_reward`) |
//! | `update.outcome_window_mins` | `JUSTIN_UPDATE__OUTCOME_WINDOW_MINS` | unset (needed by `default_reward`) |
//! | `update.default_reward` | `JUSTIN_UPDATE__DEFAULT_REWARD` | unset (needed by `default_reward`) |
//! | `schedule.place_by` | `JUSTIN_SCHEDULE__PLACE_BY` | `time` |
//! | `schedule.time_zone` | `JUSTIN_SCHEDULE__TIME_ZONE` | `server.naive_time_zone` |
//! | `schedule.first_decision_idx` | `JUSTIN_SCHEDULE__FIRST_DECISION_IDX` | `0` |
//! | `metrics.enabled` | `JUSTIN_METRICS__ENABLED` | `true` (`false`: nothing counted, `/metrics` 404) |
//! | `schedule.times` | `JUSTIN_SCHEDULE__TIMES` (`[{decision_type="morning",at="08:00"}]`) | `[]` (no schedule) |
//! | `monitor.enabled` | `JUSTIN_MONITOR__ENABLED` | `true` (background check in `serve`) |
//! | `monitor.check_every_secs` | `JUSTIN_MONITOR__CHECK_EVERY_SECS` | `60` |
//! | `monitor.outcome_due_mins` | `JUSTIN_MONITOR__OUTCOME_DUE_MINS` | `1440` |
//! | `monitor.outcome_lookback_hours` | `JUSTIN_MONITOR__OUTCOME_LOOKBACK_HOURS` | `168` |
//! | `monitor.missed_grace_mins` | `JUSTIN_MONITOR__MISSED_GRACE_MINS` | `30` |
//! | `monitor.missed_red_after` | `JUSTIN_MONITOR__MISSED_RED_AFTER` | `3` |
//! | `monitor.update_every_hours` | `JUSTIN_MONITOR__UPDATE_EVERY_HOURS` | none (no expectation) |
//! | `monitor.window_hours` | `JUSTIN_MONITOR__WINDOW_HOURS` | `24` |
//! | `monitor.min_share_count` | `JUSTIN_MONITOR__MIN_SHARE_COUNT` | `20` |
//! | `monitor.fallback_share_yellow`, `_red` | `JUSTIN_MONITOR__FALLBACK_SHARE_YELLOW`, ... | `0.05`, `0.2` |
//! | `monitor.refused_share_yellow`, `_red` | `JUSTIN_MONITOR__REFUSED_SHARE_YELLOW`, ... | `0.01`, `0.05` |
//! | `monitor.clip_share_yellow`, `_red` | `JUSTIN_MONITOR__CLIP_SHARE_YELLOW`, ... | `0.9`, `0.99` |
//! | `monitor.alert_url` | `JUSTIN_MONITOR__ALERT_URL` | none (no alerts) |
//!
//! Keys added to the service after its first release are left out of the configuration's
//! fingerprint while they hold their defaults, so a configuration that does not use them keeps
//! the fingerprint it had.

use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use justin_core::{
    AlgorithmError, BuildError, DefaultReward, JsonObject, Probability, Registry, TrialSettings,
    UpdateInclusion, Warmup,
};
use serde::{Deserialize, Serialize};

/// The environment variable naming another configuration file.
pub const CONFIG_ENV: &str = "JUSTIN_CONFIG";
/// The configuration file read when `JUSTIN_CONFIG` is not set.
pub const DEFAULT_CONFIG_FILE: &str = "config.toml";

/// Most `server.decision_threads` may be.
const MAX_DECISION_THREADS: usize = 1024;

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `JUSTIN_CONFIG` names a file that does not exist.
    #[error("the configuration file {0} (from {CONFIG_ENV}) does not exist")]
    MissingFile(PathBuf),
    /// A value has the wrong type or a key is unknown; figment's message names the key.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The HTTP server.
    pub server: ServerConfig,
    /// The database.
    pub database: DatabaseConfig,
    /// The decision algorithm.
    pub algorithm: AlgorithmConfig,
    /// Backups.
    pub backup: BackupConfig,
    /// API keys.
    pub auth: AuthConfig,
    /// Logging.
    pub logging: LoggingConfig,
    /// Model updates.
    pub update: UpdateConfig,
    /// The study's schedule of decision times; none unless `times` is set.
    #[serde(skip_serializing_if = "ScheduleConfig::is_off")]
    pub schedule: ScheduleConfig,
    /// The metrics at `/metrics`.
    #[serde(skip_serializing_if = "crate::metrics::MetricsConfig::is_default")]
    pub metrics: crate::metrics::MetricsConfig,
    /// The watchdog.
    #[serde(skip_serializing_if = "crate::monitor::MonitorConfig::is_default")]
    pub monitor: crate::monitor::MonitorConfig,
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub host: String,
    /// Port to listen on; 0 picks a free one (the log says which).
    pub port: u16,
    /// HTTP worker threads; 0 means one per core.
    pub workers: usize,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// How long a stop waits for requests in flight before closing their connections.
    pub shutdown_grace_secs: u64,
    /// How long a client may take to send a request's line and headers, from the moment its
    /// connection is accepted or its previous answer was sent; then 408 and the connection
    /// is closed.
    pub header_timeout_secs: u64,
    /// How long a client may take to send a request's whole body once its headers are in;
    /// then 408 and the connection is closed.
    pub body_timeout_secs: u64,
    /// Open client connections at most; further ones are answered 503 and closed at once.
    pub max_connections: usize,
    /// Decisions (`/action`) in progress at once, on threads of their own; further ones wait
    /// in a queue. Decisions waiting for their batch hold no database connection, so this
    /// may exceed `database.pool_size`: it bounds how many one transaction can write.
    pub decision_threads: usize,
    /// The IANA time zone (`Europe/Berlin`) a request's `timestamp` without an offset is read
    /// in.
    pub naive_time_zone: String,
}

impl ServerConfig {
    /// [`ServerConfig::naive_time_zone`], read.
    ///
    /// # Errors
    /// When it is not an IANA time zone name.
    pub fn naive_time_zone(&self) -> Result<chrono_tz::Tz, String> {
        self.naive_time_zone.parse().map_err(|_| {
            format!(
                "{:?} is not an IANA time zone name (such as UTC or Europe/Berlin)",
                self.naive_time_zone
            )
        })
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 5000,
            workers: 0,
            max_body_bytes: 1024 * 1024,
            shutdown_grace_secs: 30,
            naive_time_zone: "UTC".into(),
            header_timeout_secs: 5,
            body_timeout_secs: 10,
            max_connections: 512,
            decision_threads: 64,
        }
    }
}

/// `[database]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://<path>` (relative to the working directory), `sqlite://:memory:` for a
    /// throwaway database, or a `postgres://` / `postgresql://` URL.
    pub url: String,
    /// Connections in the pool.
    pub pool_size: u32,
    /// How long to wait for a connection before answering 503.
    pub connect_timeout_secs: u64,
    /// Run pending migrations when serving starts.
    pub run_migrations: bool,
    /// Create the database when it does not exist.
    pub create_if_missing: bool,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            // Zero setup: a file in the working directory. Studies in production move to
            // PostgreSQL (docs/operations.md says when and how).
            url: "sqlite://justin.db".into(),
            pool_size: 10,
            connect_timeout_secs: 5,
            run_migrations: true,
            create_if_missing: true,
        }
    }
}

/// `[algorithm]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlgorithmConfig {
    /// The registered name of the algorithm.
    pub name: String,
    /// The study seed every decision's generator derives from.
    pub seed: u64,
    /// A JSON file of priors; when set, it replaces `priors`.
    pub priors_file: Option<PathBuf>,
    /// Settings the algorithm is built with (`thompson`'s features, say); each algorithm
    /// documents the keys it takes and refuses others.
    pub options: JsonObject,
    /// Priors given inline.
    pub priors: JsonObject,
    /// The warm-up phase; off unless `probability` is set.
    #[serde(skip_serializing_if = "WarmupConfig::is_off")]
    pub warmup: WarmupConfig,
    /// The fallback policy; off unless `probability` is set.
    #[serde(skip_serializing_if = "FallbackConfig::is_off")]
    pub fallback: FallbackConfig,
}

/// `[algorithm.warmup]`: decisions are drawn with a fixed probability while any configured
/// condition holds. `probability` and at least one condition go together.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WarmupConfig {
    /// P(action = 1) during warm-up, from 0 to 1; setting it turns warm-up on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
    /// Warm-up holds for decisions whose request `timestamp` is before this time (read as a
    /// request's `timestamp` is, in `server.naive_time_zone` without an offset). A TOML
    /// date-time or a string.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "toml_time::optional"
    )]
    pub until: Option<String>,
    /// Warm-up holds for each participant's first this many decisions of each decision type
    /// (those in the study and drawn by the service).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_decisions: Option<u32>,
    /// Warm-up holds until this many participants have started (at each decision's time).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until_participants: Option<u32>,
    /// Warm-up holds until the first model update has completed.
    #[serde(skip_serializing_if = "is_false")]
    pub until_first_update: bool,
}

impl WarmupConfig {
    fn is_off(&self) -> bool {
        *self == Self::default()
    }

    /// The configured conditions' keys.
    fn conditions(&self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        if self.until.is_some() {
            keys.push("until");
        }
        if self.first_decisions.is_some() {
            keys.push("first_decisions");
        }
        if self.until_participants.is_some() {
            keys.push("until_participants");
        }
        if self.until_first_update {
            keys.push("until_first_update");
        }
        keys
    }
}

/// `[algorithm.fallback]`: when the algorithm fails for a request the service accepted, the
/// decision is drawn with this probability instead of failing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FallbackConfig {
    /// P(action = 1) of a fallback decision, from 0 to 1; unset, a failing algorithm fails
    /// the request (500).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
}

impl FallbackConfig {
    fn is_off(&self) -> bool {
        self.probability.is_none()
    }
}

// Serde's `skip_serializing_if` takes a reference.
#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_false(value: &bool) -> bool {
    !*value
}

#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_true(value: &bool) -> bool {
    *value
}

/// Reading a time that TOML may give as a native date-time or as a string.
mod toml_time {
    use serde::{Deserialize, Deserializer};

    /// figment hands a TOML date-time over as a map with this one key (the toml crate's
    /// private name for it).
    const TOML_DATETIME: &str = "$__toml_private_datetime";

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Toml(std::collections::BTreeMap<String, String>),
    }

    pub fn required<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        optional(d)?.ok_or_else(|| serde::de::Error::custom("expected a time or a string"))
    }

    pub fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        match Option::<Raw>::deserialize(d)? {
            None => Ok(None),
            Some(Raw::Text(text)) => Ok(Some(text)),
            Some(Raw::Toml(mut map)) => match (map.remove(TOML_DATETIME), map.is_empty()) {
                (Some(text), true) => Ok(Some(text)),
                _ => Err(serde::de::Error::custom("expected a date-time or a string")),
            },
        }
    }
}

impl Default for AlgorithmConfig {
    fn default() -> Self {
        let mut priors = JsonObject::new();
        priors.insert("probability_of_action".into(), serde_json::json!(0.5));
        Self {
            name: "flat_prob".into(),
            seed: 42,
            priors_file: None,
            options: JsonObject::new(),
            priors,
            warmup: WarmupConfig::default(),
            fallback: FallbackConfig::default(),
        }
    }
}

/// `[backup]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    /// Back up the database before every model update.
    pub enabled: bool,
    /// Where backup files go.
    pub dir: PathBuf,
}

impl Default for BackupConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: "backups".into(),
        }
    }
}

/// `[auth]`: who may call `/api/v1`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The accepted API keys; when empty, the API is open to anyone who can reach it.
    pub api_keys: Vec<ApiKeyConfig>,
    /// Serve an open API (no keys) on an address other than loopback.
    pub allow_unauthenticated: bool,
}

/// One entry of `auth.api_keys`: a name for the logs and the key, given either as its SHA-256
/// digest (so that no secret sits in the configuration) or as it is.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Who holds the key (a study's app server); logged with each request it makes.
    pub name: String,
    /// The SHA-256 digest of the key, 64 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The key itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// What the key may do: `full` (the default), `read` (only reads: `GET` under `/api/v1`,
    /// the dashboard and the metrics) or `metrics` (only `/metrics`, for a scraper).
    #[serde(default, skip_serializing_if = "KeyAccess::is_full")]
    pub access: KeyAccess,
}

/// What an API key may do (`auth.api_keys[].access`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyAccess {
    /// Everything: the study server's key.
    #[default]
    Full,
    /// Reads only: `GET` and `HEAD` under `/api/v1`, the dashboard and `/metrics`; for the
    /// study team's dashboard and for `justin monitor` run from another machine.
    Read,
    /// `/metrics` only: for a Prometheus scraper.
    Metrics,
}

impl KeyAccess {
    /// Whether this is the default, `full`.
    pub fn is_full(&self) -> bool {
        *self == Self::Full
    }
}

impl std::fmt::Debug for ApiKeyConfig {
    // Key material stays out of anything that prints the configuration.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |set: bool| if set { "<hidden>" } else { "-" };
        f.debug_struct("ApiKeyConfig")
            .field("name", &self.name)
            .field("sha256", &hidden(self.sha256.is_some()))
            .field("key", &hidden(self.key.is_some()))
            .field("access", &self.access)
            .finish()
    }
}

/// `[logging]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// Level filter: a level, optionally followed by `target=level` pairs
    /// (`info,justin_store=debug`).
    pub level: String,
    /// Directory of `app.log` and `rl.log`.
    pub dir: PathBuf,
    /// Also log to standard output.
    pub stdout: bool,
    /// Write request bodies (health data) into the access log, for debugging only.
    pub log_bodies: bool,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            dir: "logs".into(),
            stdout: true,
            log_bodies: false,
        }
    }
}

/// `[update]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpdateConfig {
    /// How long one callback POST may take.
    pub callback_timeout_secs: u64,
    /// How many POSTs a callback gets before it is recorded as failed.
    pub callback_attempts: u32,
    /// The wait before the second POST; it doubles for each one after.
    pub callback_backoff_ms: u64,
    /// The only hosts callbacks may be sent to; empty allows any.
    pub callback_allowed_hosts: Vec<String>,
    /// How many times one update may be started (it is started again when the process
    /// running it died) before it is recorded as failed.
    pub max_attempts: u32,
    /// How often the update worker looks for requests stored by other processes.
    pub poll_interval_ms: u64,
    /// Updates learn from warm-up decisions (their probabilities are known).
    #[serde(skip_serializing_if = "is_true")]
    pub include_warmup: bool,
    /// Updates learn from fallback decisions.
    #[serde(skip_serializing_if = "is_false")]
    pub include_fallback: bool,
    /// Updates learn from decisions the study server made itself (`/host_decision`).
    #[serde(skip_serializing_if = "is_false")]
    pub include_host: bool,
    /// How updates treat a decision whose outcome never came: `leave_out` (not learned from)
    /// or `default_reward` (learned from with `default_reward` once `outcome_window_mins`
    /// have passed since it was made, and recorded as imputed).
    #[serde(skip_serializing_if = "is_leave_out")]
    pub missing_outcomes: String,
    /// How long after a decision its outcome may arrive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome_window_mins: Option<u64>,
    /// The reward of a decision past the window without an upload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_reward: Option<f64>,
}

/// The value of `update.missing_outcomes` that keeps updates as the template has them.
const LEAVE_OUT: &str = "leave_out";

fn is_leave_out(value: &str) -> bool {
    value == LEAVE_OUT
}

impl Default for UpdateConfig {
    fn default() -> Self {
        Self {
            callback_timeout_secs: 10,
            callback_attempts: 5,
            callback_backoff_ms: 500,
            callback_allowed_hosts: Vec::new(),
            max_attempts: 3,
            poll_interval_ms: 1000,
            include_warmup: true,
            include_fallback: false,
            include_host: false,
            missing_outcomes: LEAVE_OUT.to_owned(),
            outcome_window_mins: None,
            default_reward: None,
        }
    }
}

/// `[schedule]`: the decision times of one study day, which give every decision a cell of the
/// study-wide calendar (`justin export --for lifejacket`). Off unless `times` is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    /// How a decision finds its cell: `time` (its request timestamp, the nearest scheduled
    /// time of its type) or `index` (its decision_idx).
    pub place_by: String,
    /// The IANA time zone study days are counted in; default `server.naive_time_zone`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// For `place_by = "index"`: the decision_idx of each type's first decision.
    pub first_decision_idx: i64,
    /// The decision times of one day, in order.
    pub times: Vec<ScheduleTimeConfig>,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            place_by: "time".into(),
            time_zone: None,
            first_decision_idx: 0,
            times: Vec::new(),
        }
    }
}

impl ScheduleConfig {
    fn is_off(&self) -> bool {
        *self == Self::default()
    }
}

/// One entry of `schedule.times`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleTimeConfig {
    /// The decision type decided at this time; default the default type (`default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_type: Option<String>,
    /// The local time of day, `"HH:MM"` or `"HH:MM:SS"` (a TOML local time works too).
    #[serde(deserialize_with = "toml_time::required")]
    pub at: String,
}

impl Config {
    /// Reads the configuration from the file named by `JUSTIN_CONFIG` (or `config.toml` when
    /// present) and the environment, and checks it; `algorithm.name` must name one of
    /// `algorithms`, which must accept `[algorithm.options]`.
    ///
    /// # Errors
    /// When `JUSTIN_CONFIG` names a missing file, or a value is invalid.
    pub fn load(algorithms: &Registry) -> Result<Self, ConfigError> {
        let file = match std::env::var_os(CONFIG_ENV) {
            Some(path) => {
                let path = PathBuf::from(path);
                if !path.is_file() {
                    return Err(ConfigError::MissingFile(path));
                }
                path
            }
            None => PathBuf::from(DEFAULT_CONFIG_FILE),
        };
        Self::from_figment(Self::figment(&file), algorithms)
    }

    /// The layered sources, without extracting them.
    pub fn figment(file: &Path) -> Figment {
        // No layer of serialised defaults: every struct fills missing keys from its Default
        // at extraction, so a `[algorithm.priors]` table replaces the default priors whole
        // instead of being merged into them.
        Figment::new()
            .merge(Toml::file(file))
            .merge(
                Env::raw()
                    .only(&["DATABASE_URL"])
                    .map(|_| "database.url".into()),
            )
            .merge(
                Env::prefixed("JUSTIN_")
                    .split("__")
                    // JUSTIN_CONFIG and variables of other tools (JUSTIN_TEST_DATABASE_URL)
                    // have no section: they are not configuration keys.
                    .filter(|key| key.as_str().contains('.')),
            )
    }

    /// Extracts and checks a configuration; `algorithms` are the algorithms `algorithm.name`
    /// may name.
    ///
    /// # Errors
    /// When a value has the wrong type, a key is unknown, or a value is out of range.
    pub fn from_figment(figment: Figment, algorithms: &Registry) -> Result<Self, ConfigError> {
        let config: Self = figment
            .extract()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        config.validate(algorithms)?;
        Ok(config)
    }

    fn validate(&self, algorithms: &Registry) -> Result<(), ConfigError> {
        let invalid = |key: &str, why: &str| Err(ConfigError::Invalid(format!("{key}: {why}")));
        if self.database.pool_size < 2 {
            // A running update holds one connection; requests and its backup need another.
            return invalid("database.pool_size", "must be at least 2");
        }
        if self.database.connect_timeout_secs == 0 {
            return invalid("database.connect_timeout_secs", "must be at least 1");
        }
        if let Err(e) = crate::database::Backend::of(&self.database.url) {
            return invalid("database.url", &e);
        }
        if self.server.max_body_bytes == 0 {
            return invalid("server.max_body_bytes", "must be at least 1");
        }
        if let Err(e) = self.server.naive_time_zone() {
            return invalid("server.naive_time_zone", &e);
        }
        if self.server.header_timeout_secs == 0 {
            return invalid("server.header_timeout_secs", "must be at least 1");
        }
        if self.server.body_timeout_secs == 0 {
            return invalid("server.body_timeout_secs", "must be at least 1");
        }
        if self.server.max_connections == 0 {
            return invalid("server.max_connections", "must be at least 1");
        }
        if !(1..=MAX_DECISION_THREADS).contains(&self.server.decision_threads) {
            return invalid(
                "server.decision_threads",
                &format!("must be between 1 and {MAX_DECISION_THREADS}"),
            );
        }
        if self.update.callback_timeout_secs == 0 {
            return invalid("update.callback_timeout_secs", "must be at least 1");
        }
        if self.update.callback_attempts == 0 {
            return invalid("update.callback_attempts", "must be at least 1");
        }
        if self.update.max_attempts == 0 {
            return invalid("update.max_attempts", "must be at least 1");
        }
        if self.update.poll_interval_ms == 0 {
            return invalid("update.poll_interval_ms", "must be at least 1");
        }
        if let Err(e) = crate::auth::ApiKeys::from_config(&self.auth.api_keys) {
            return Err(ConfigError::Invalid(e));
        }
        if let Err(e) = crate::logging::parse_level(&self.logging.level) {
            return invalid("logging.level", &e);
        }
        self.trial()?;
        self.schedule()?;
        self.monitor.check(&self.update.callback_allowed_hosts)?;
        match algorithms.build(&self.algorithm.name, &self.algorithm.options) {
            Ok(_) => {}
            Err(e @ (BuildError::Unknown { .. } | BuildError::Misnamed { .. })) => {
                return invalid("algorithm.name", &e.to_string())
            }
            // InvalidOptions names algorithm.options itself.
            Err(BuildError::Refused(e @ AlgorithmError::InvalidOptions(_))) => {
                return Err(ConfigError::Invalid(e.to_string()))
            }
            Err(e) => return invalid("algorithm.options", &e.to_string()),
        }
        Ok(())
    }

    /// SHA-256 of the effective configuration (every key, as JSON with sorted keys), hex:
    /// stored with each update so an audit can tell which settings produced it.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        // The hash is stored and shown: keep the database password and the API keys (plain or
        // digested) out of what is hashed. Key names stay: they are not secret.
        let mut shown = self.clone();
        shown.database.url = justin_store::mask_password(&self.database.url);
        for entry in &mut shown.auth.api_keys {
            entry.sha256 = entry.sha256.as_ref().map(|_| "***".to_owned());
            entry.key = entry.key.as_ref().map(|_| "***".to_owned());
        }
        // Serialising plain structs and string-keyed maps cannot fail; an empty input would
        // still give a stable (if useless) hash rather than stop an update.
        let canonical = serde_json::to_vec(&shown).unwrap_or_default();
        Sha256::digest(&canonical)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Warm-up, fallback and which decisions updates learn from, checked.
    ///
    /// # Errors
    /// When a probability is outside [0, 1], `algorithm.warmup.until` is not a timestamp,
    /// a count is 0, or warm-up has a probability without a condition or a condition without
    /// a probability; the message names the key.
    pub fn trial(&self) -> Result<TrialSettings, ConfigError> {
        let invalid = |key: &str, why: &str| ConfigError::Invalid(format!("{key}: {why}"));
        let probability = |key: &str, value: f64| {
            Probability::new(value)
                .map_err(|_| invalid(key, &format!("must be a number from 0 to 1, not {value}")))
        };
        let w = &self.algorithm.warmup;
        let conditions = w.conditions();
        let warmup = match (w.probability, conditions.first()) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(invalid(
                    "algorithm.warmup.probability",
                    "warm-up needs a condition: set algorithm.warmup.until, first_decisions, \
                     until_participants or until_first_update = true",
                ))
            }
            (None, Some(key)) => {
                return Err(invalid(
                    &format!("algorithm.warmup.{key}"),
                    "warm-up needs algorithm.warmup.probability",
                ))
            }
            (Some(p), Some(_)) => {
                let zone = self
                    .server
                    .naive_time_zone()
                    .map_err(|e| invalid("server.naive_time_zone", &e))?;
                let until = w
                    .until
                    .as_deref()
                    .map(|raw| crate::timestamp::parse(raw, zone))
                    .transpose()
                    .map_err(|e| {
                        let why = e.to_string();
                        invalid(
                            "algorithm.warmup.until",
                            why.strip_prefix("timestamp ").unwrap_or(&why),
                        )
                    })?;
                if w.first_decisions == Some(0) {
                    return Err(invalid(
                        "algorithm.warmup.first_decisions",
                        "must be at least 1",
                    ));
                }
                if w.until_participants == Some(0) {
                    return Err(invalid(
                        "algorithm.warmup.until_participants",
                        "must be at least 1",
                    ));
                }
                Some(Warmup {
                    probability: probability("algorithm.warmup.probability", p)?,
                    until,
                    first_decisions: w.first_decisions,
                    until_participants: w.until_participants,
                    until_first_update: w.until_first_update,
                })
            }
        };
        let fallback = self
            .algorithm
            .fallback
            .probability
            .map(|p| probability("algorithm.fallback.probability", p))
            .transpose()?;
        Ok(TrialSettings {
            warmup,
            fallback,
            include: UpdateInclusion {
                warmup: self.update.include_warmup,
                fallback: self.update.include_fallback,
                host: self.update.include_host,
            },
            missing_outcomes: self.missing_outcomes()?,
        })
    }

    /// The outcome window and default reward, checked; `None` when missing outcomes are left
    /// out.
    fn missing_outcomes(&self) -> Result<Option<DefaultReward>, ConfigError> {
        let invalid = |key: &str, why: &str| ConfigError::Invalid(format!("update.{key}: {why}"));
        let u = &self.update;
        match u.missing_outcomes.as_str() {
            LEAVE_OUT => {
                if u.default_reward.is_some() {
                    return Err(invalid(
                        "default_reward",
                        "is used only with update.missing_outcomes = \"default_reward\"",
                    ));
                }
                Ok(None)
            }
            "default_reward" => {
                let Some(window) = u.outcome_window_mins else {
                    return Err(invalid(
                        "outcome_window_mins",
                        "missing_outcomes = \"default_reward\" needs the outcome window: how \
                         many minutes after a decision its outcome may still arrive",
                    ));
                };
                let window = i64::try_from(window)
                    .ok()
                    .and_then(chrono::TimeDelta::try_minutes)
                    .filter(|w| *w <= chrono::TimeDelta::days(36_500))
                    .ok_or_else(|| invalid("outcome_window_mins", "must be at most 100 years"))?;
                match u.default_reward {
                    Some(reward) if reward.is_finite() => {
                        Ok(Some(DefaultReward { window, reward }))
                    }
                    Some(reward) => Err(invalid(
                        "default_reward",
                        &format!("must be a finite number, not {reward}"),
                    )),
                    None => Err(invalid(
                        "default_reward",
                        "missing_outcomes = \"default_reward\" needs the reward to learn from",
                    )),
                }
            }
            other => Err(invalid(
                "missing_outcomes",
                &format!("must be \"leave_out\" or \"default_reward\", not {other:?}"),
            )),
        }
    }

    /// The study's schedule, checked; `None` when `schedule.times` is not set.
    ///
    /// # Errors
    /// When a key of `[schedule]` is set without `times`, or a value is unusable; the message
    /// names the key.
    pub fn schedule(&self) -> Result<Option<justin_core::Schedule>, ConfigError> {
        let s = &self.schedule;
        let invalid = |key: &str, why: &str| ConfigError::Invalid(format!("schedule.{key}: {why}"));
        if s.times.is_empty() {
            return if s.is_off() {
                Ok(None)
            } else {
                Err(invalid(
                    "times",
                    "a schedule needs at least one decision time, such as times = [{ at = \"08:00\" }]",
                ))
            };
        }
        let place_by =
            justin_core::PlaceBy::parse(&s.place_by).map_err(|e| invalid("place_by", &e))?;
        let time_zone = match &s.time_zone {
            None => self
                .server
                .naive_time_zone()
                .map_err(|e| ConfigError::Invalid(format!("server.naive_time_zone: {e}")))?,
            Some(name) => name.parse().map_err(|_| {
                invalid(
                    "time_zone",
                    &format!(
                        "{name:?} is not an IANA time zone name (such as UTC or Europe/Berlin)"
                    ),
                )
            })?,
        };
        let mut times = Vec::with_capacity(s.times.len());
        for (i, entry) in s.times.iter().enumerate() {
            let decision_type = match &entry.decision_type {
                None => justin_core::DecisionType::default(),
                Some(raw) => justin_core::DecisionType::parse(raw.clone())
                    .map_err(|e| invalid(&format!("times[{i}].decision_type"), &e.0))?,
            };
            let at = justin_core::parse_time_of_day(&entry.at)
                .map_err(|e| invalid(&format!("times[{i}].at"), &e))?;
            times.push(justin_core::ScheduledTime { decision_type, at });
        }
        justin_core::Schedule::new(place_by, time_zone, s.first_decision_idx, times)
            .map(Some)
            .map_err(|e| invalid(&e.key, &e.message))
    }

    /// The priors: the file's when `algorithm.priors_file` is set, else the inline table.
    ///
    /// # Errors
    /// When the file cannot be read or is not a JSON object.
    pub fn priors(&self) -> Result<JsonObject, ConfigError> {
        let Some(path) = &self.algorithm.priors_file else {
            return Ok(self.algorithm.priors.clone());
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::Invalid(format!(
                "algorithm.priors_file: cannot read {}: {e}",
                path.display()
            ))
        })?;
        match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(serde_json::Value::Object(map)) => Ok(map),
            Ok(_) => Err(ConfigError::Invalid(format!(
                "algorithm.priors_file: {} must hold a JSON object",
                path.display()
            ))),
            Err(e) => Err(ConfigError::Invalid(format!(
                "algorithm.priors_file: {} is not valid JSON: {e}",
                path.display()
            ))),
        }
    }
}

#[cfg(test)]
// figment's Jail closures return figment's own (large) error type; that is its API.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    /// Loads `config.toml` from the jail's directory, with the jail's environment.
    fn load_in_jail() -> figment::Result<Config> {
        Config::from_figment(
            Config::figment(Path::new("config.toml")),
            &justin_algos::builtin(),
        )
        .map_err(|e| figment::Error::from(e.to_string()))
    }

    #[test]
    fn defaults_without_a_file() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            let config = load_in_jail()?;
            assert_eq!(config, Config::default());
            assert_eq!(config.server.port, 5000);
            assert_eq!(config.algorithm.seed, 42);
            Ok(())
        });
    }

    #[test]
    fn file_then_env_override() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "config.toml",
                "[server]\nport = 6000\n[algorithm]\nseed = 7\n",
            )?;
            jail.set_env("JUSTIN_SERVER__PORT", "8080");
            jail.set_env("DATABASE_URL", "postgres://a@b/c");
            let config = load_in_jail()?;
            assert_eq!(config.server.port, 8080);
            assert_eq!(config.algorithm.seed, 7);
            assert_eq!(config.database.url, "postgres://a@b/c");
            jail.set_env("JUSTIN_DATABASE__URL", "postgres://x@y/z");
            let config = load_in_jail()?;
            assert_eq!(config.database.url, "postgres://x@y/z");
            Ok(())
        });
    }

    #[test]
    fn the_shutdown_grace_period_is_configurable() {
        Jail::expect_with(|jail| {
            assert_eq!(load_in_jail()?.server.shutdown_grace_secs, 30);
            jail.set_env("JUSTIN_SERVER__SHUTDOWN_GRACE_SECS", "5");
            assert_eq!(load_in_jail()?.server.shutdown_grace_secs, 5);
            Ok(())
        });
    }

    #[test]
    fn the_naive_time_zone_is_an_iana_name() {
        Jail::expect_with(|jail| {
            assert_eq!(
                load_in_jail()?.server.naive_time_zone(),
                Ok(chrono_tz::Tz::UTC)
            );
            jail.set_env("JUSTIN_SERVER__NAIVE_TIME_ZONE", "Europe/Berlin");
            assert_eq!(
                load_in_jail()?.server.naive_time_zone(),
                Ok(chrono_tz::Tz::Europe__Berlin)
            );
            jail.set_env("JUSTIN_SERVER__NAIVE_TIME_ZONE", "Mars/Olympus");
            let message = load_in_jail().unwrap_err().to_string();
            assert!(
                message.contains("server.naive_time_zone")
                    && message.contains("\"Mars/Olympus\" is not an IANA time zone name"),
                "{message}"
            );
            Ok(())
        });
    }

    #[test]
    fn fingerprint_follows_the_settings() {
        let a = Config::default();
        let mut b = Config::default();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint().len(), 64);
        b.algorithm.seed = 43;
        assert_ne!(a.fingerprint(), b.fingerprint());
    }

    #[test]
    fn the_repository_config_file_holds_the_defaults() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config.toml");
        let config: Config = Figment::new().merge(Toml::file(file)).extract().unwrap();
        assert_eq!(config, Config::default());
    }

    #[test]
    fn without_trial_keys_there_is_no_warmup_nor_fallback_and_updates_take_warmup_only() {
        let trial = Config::default().trial().unwrap();
        assert_eq!(trial, TrialSettings::default());
        assert_eq!(trial.warmup, None);
        assert_eq!(trial.fallback, None);
        assert_eq!(
            trial.include,
            UpdateInclusion {
                warmup: true,
                fallback: false,
                host: false
            }
        );
    }

    #[test]
    fn warmup_fallback_and_inclusion_are_read() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "config.toml",
                "[algorithm.warmup]\nprobability = 0.3\nuntil = 2025-02-01T00:00:00Z\n\
                 first_decisions = 5\nuntil_participants = 20\nuntil_first_update = true\n\
                 [algorithm.fallback]\nprobability = 0.25\n\
                 [update]\ninclude_warmup = false\ninclude_fallback = true\ninclude_host = true\n",
            )?;
            let trial = load_in_jail()?.trial().unwrap();
            let until = chrono::DateTime::parse_from_rfc3339("2025-02-01T00:00:00Z")
                .unwrap()
                .with_timezone(&chrono::Utc);
            assert_eq!(
                trial.warmup,
                Some(Warmup {
                    probability: Probability::new(0.3).unwrap(),
                    until: Some(until),
                    first_decisions: Some(5),
                    until_participants: Some(20),
                    until_first_update: true,
                })
            );
            assert_eq!(trial.fallback, Some(Probability::new(0.25).unwrap()));
            assert_eq!(
                trial.include,
                UpdateInclusion {
                    warmup: false,
                    fallback: true,
                    host: true
                }
            );
            Ok(())
        });
    }

    #[test]
    fn warmup_until_is_read_as_a_request_timestamp_is() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "config.toml",
                "[server]\nnaive_time_zone = \"Europe/Berlin\"\n\
                 [algorithm.warmup]\nprobability = 0.5\nuntil = \"2025-02-01 00:00:00\"\n",
            )?;
            let warmup = load_in_jail()?.trial().unwrap().warmup.unwrap();
            assert_eq!(
                warmup.until.map(|t| t.to_rfc3339()),
                Some("2025-01-31T23:00:00+00:00".to_owned())
            );
            jail.set_env(
                "JUSTIN_ALGORITHM__WARMUP__UNTIL",
                "2025-02-01T00:00:00+02:00",
            );
            let warmup = load_in_jail()?.trial().unwrap().warmup.unwrap();
            assert_eq!(
                warmup.until.map(|t| t.to_rfc3339()),
                Some("2025-01-31T22:00:00+00:00".to_owned())
            );
            Ok(())
        });
    }

    #[test]
    fn a_warmup_half_configured_stops_start_up_naming_the_key() {
        let cases = [
            (
                "[algorithm.warmup]\nprobability = 0.5\n",
                "invalid configuration: algorithm.warmup.probability: warm-up needs a \
                 condition: set algorithm.warmup.until, first_decisions, until_participants \
                 or until_first_update = true",
            ),
            (
                "[algorithm.warmup]\nprobability = 0.5\nuntil_first_update = false\n",
                "invalid configuration: algorithm.warmup.probability: warm-up needs a \
                 condition: set algorithm.warmup.until, first_decisions, until_participants \
                 or until_first_update = true",
            ),
            (
                "[algorithm.warmup]\nfirst_decisions = 5\n",
                "invalid configuration: algorithm.warmup.first_decisions: warm-up needs \
                 algorithm.warmup.probability",
            ),
            (
                "[algorithm.warmup]\nuntil = 2025-01-01T00:00:00Z\n",
                "invalid configuration: algorithm.warmup.until: warm-up needs \
                 algorithm.warmup.probability",
            ),
            (
                "[algorithm.warmup]\nuntil_participants = 3\n",
                "invalid configuration: algorithm.warmup.until_participants: warm-up needs \
                 algorithm.warmup.probability",
            ),
            (
                "[algorithm.warmup]\nuntil_first_update = true\n",
                "invalid configuration: algorithm.warmup.until_first_update: warm-up needs \
                 algorithm.warmup.probability",
            ),
        ];
        for (file, expected) in cases {
            Jail::expect_with(|jail| {
                jail.create_file("config.toml", file)?;
                let err = load_in_jail().unwrap_err().to_string();
                assert_eq!(err, expected, "{file}");
                Ok(())
            });
        }
    }

    #[test]
    fn bad_trial_values_stop_start_up_naming_the_key() {
        let cases = [
            (
                "[algorithm.warmup]\nprobability = 1.5\nfirst_decisions = 5\n",
                "algorithm.warmup.probability: must be a number from 0 to 1, not 1.5",
            ),
            (
                "[algorithm.warmup]\nprobability = 0.5\nfirst_decisions = 0\n",
                "algorithm.warmup.first_decisions: must be at least 1",
            ),
            (
                "[algorithm.warmup]\nprobability = 0.5\nuntil_participants = 0\n",
                "algorithm.warmup.until_participants: must be at least 1",
            ),
            (
                "[algorithm.warmup]\nprobability = 0.5\nuntil = \"next week\"\n",
                "algorithm.warmup.until: must be an ISO 8601 date-time",
            ),
            (
                "[algorithm.fallback]\nprobability = -0.1\n",
                "algorithm.fallback.probability: must be a number from 0 to 1, not -0.1",
            ),
            (
                "[algorithm.fallback]\nprobability = \"half\"\n",
                "probability",
            ),
            ("[algorithm.fallback]\nprobabilty = 0.5\n", "probabilty"),
            ("[algorithm.warmup]\nfirst = 5\n", "first"),
            ("[update]\ninclude_host = \"yes\"\n", "include_host"),
        ];
        for (file, expected) in cases {
            Jail::expect_with(|jail| {
                jail.create_file("config.toml", file)?;
                let err = load_in_jail().unwrap_err().to_string();
                assert!(err.contains(expected), "{file}: {err}");
                Ok(())
            });
        }
    }

    #[test]
    fn missing_outcomes_are_left_out_unless_a_window_and_a_default_reward_are_set() {
        let with = |change: &dyn Fn(&mut UpdateConfig)| {
            let mut config = Config::default();
            change(&mut config.update);
            config.trial().map(|t| t.missing_outcomes)
        };
        assert_eq!(with(&|_| {}).unwrap(), None);
        assert_eq!(
            with(&|u| {
                u.missing_outcomes = "default_reward".into();
                u.outcome_window_mins = Some(90);
                u.default_reward = Some(-0.5);
            })
            .unwrap(),
            Some(DefaultReward {
                window: chrono::TimeDelta::minutes(90),
                reward: -0.5
            })
        );
        let refused = |change: &dyn Fn(&mut UpdateConfig), key: &str| match with(change) {
            Err(ConfigError::Invalid(message)) => {
                assert!(message.starts_with(key), "{message}")
            }
            other => panic!("expected {key} refused, got {other:?}"),
        };
        refused(
            &|u| u.missing_outcomes = "impute".into(),
            "update.missing_outcomes",
        );
        refused(
            &|u| {
                u.missing_outcomes = "default_reward".into();
                u.default_reward = Some(0.0);
            },
            "update.outcome_window_mins",
        );
        refused(
            &|u| {
                u.missing_outcomes = "default_reward".into();
                u.outcome_window_mins = Some(60);
            },
            "update.default_reward",
        );
        refused(
            &|u| {
                u.missing_outcomes = "default_reward".into();
                u.outcome_window_mins = Some(60);
                u.default_reward = Some(f64::NAN);
            },
            "update.default_reward",
        );
        refused(&|u| u.default_reward = Some(1.0), "update.default_reward");
        // Unset, the keys are not part of what is hashed.
        let shown = serde_json::to_value(Config::default()).unwrap();
        assert!(shown["update"].get("missing_outcomes").is_none(), "{shown}");
    }

    #[test]
    fn trial_keys_change_the_fingerprint_only_when_they_differ_from_their_defaults() {
        let default = Config::default().fingerprint();
        let mut same = Config::default();
        same.update.include_warmup = true;
        same.algorithm.warmup.until_first_update = false;
        assert_eq!(same.fingerprint(), default);
        // Keys at their defaults are not part of what is hashed.
        let shown = serde_json::to_value(Config::default()).unwrap();
        assert!(shown["algorithm"].get("warmup").is_none(), "{shown}");
        assert!(shown["update"].get("include_warmup").is_none(), "{shown}");

        let changed = |change: &dyn Fn(&mut Config)| {
            let mut config = Config::default();
            change(&mut config);
            config.fingerprint()
        };
        let all = [
            changed(&|c| c.algorithm.warmup.probability = Some(0.5)),
            changed(&|c| c.algorithm.warmup.until = Some("2025-01-01".into())),
            changed(&|c| c.algorithm.warmup.first_decisions = Some(5)),
            changed(&|c| c.algorithm.warmup.until_participants = Some(5)),
            changed(&|c| c.algorithm.warmup.until_first_update = true),
            changed(&|c| c.algorithm.fallback.probability = Some(0.5)),
            changed(&|c| c.update.include_warmup = false),
            changed(&|c| c.update.include_fallback = true),
            changed(&|c| c.update.include_host = true),
        ];
        let distinct: std::collections::BTreeSet<_> = all.iter().collect();
        assert_eq!(distinct.len(), all.len());
        assert!(!distinct.contains(&default));
    }

    #[test]
    fn the_schedule_is_read_and_checked() {
        Jail::expect_with(|jail| {
            assert_eq!(load_in_jail()?.schedule().unwrap(), None);
            jail.create_file(
                "config.toml",
                "[server]\nnaive_time_zone = \"Europe/Berlin\"\n\
                 [schedule]\ntimes = [{ decision_type = \"morning\", at = \"08:00\" }, \
                 { at = 20:30:00 }]\n",
            )?;
            let config = load_in_jail()?;
            let schedule = config.schedule().unwrap().unwrap();
            assert_eq!(schedule.place_by(), justin_core::PlaceBy::Time);
            assert_eq!(schedule.time_zone(), chrono_tz::Tz::Europe__Berlin);
            assert_eq!(schedule.first_decision_idx(), 0);
            let times: Vec<_> = schedule
                .times()
                .iter()
                .map(|t| (t.decision_type.to_string(), t.at.to_string()))
                .collect();
            assert_eq!(
                times,
                [
                    ("morning".to_owned(), "08:00:00".to_owned()),
                    ("default".to_owned(), "20:30:00".to_owned())
                ]
            );
            // A schedule is part of what is hashed; no schedule leaves the hash as it was.
            assert_ne!(config.fingerprint(), Config::default().fingerprint());
            jail.create_file(
                "config.toml",
                "[schedule]\nplace_by = \"index\"\ntime_zone = \"UTC\"\n\
                 first_decision_idx = 1\ntimes = [{ at = \"08:00\" }]\n",
            )?;
            let schedule = load_in_jail()?.schedule().unwrap().unwrap();
            assert_eq!(schedule.place_by(), justin_core::PlaceBy::Index);
            assert_eq!(schedule.first_decision_idx(), 1);
            Ok(())
        });
        let cases = [
            (
                "[schedule]\nplace_by = \"index\"\n",
                "schedule.times: a schedule needs at least one decision time",
            ),
            (
                "[schedule]\nplace_by = \"when\"\ntimes = [{ at = \"08:00\" }]\n",
                "schedule.place_by: must be \"time\" or \"index\", not \"when\"",
            ),
            (
                "[schedule]\ntime_zone = \"Mars/Olympus\"\ntimes = [{ at = \"08:00\" }]\n",
                "schedule.time_zone: \"Mars/Olympus\" is not an IANA time zone name",
            ),
            (
                "[schedule]\ntimes = [{ at = \"8 am\" }]\n",
                "schedule.times[0].at: must be a time of day written HH:MM or HH:MM:SS",
            ),
            (
                "[schedule]\ntimes = [{ at = \"08:00\" }, { at = \"07:00\" }]\n",
                "schedule.times[1].at: the times of the day must be strictly increasing",
            ),
            (
                "[schedule]\ntimes = [{ at = \"08:00\", decision_type = \"a b\" }]\n",
                "schedule.times[0].decision_type: decision_type may only hold",
            ),
            (
                "[schedule]\nfirst_decision_idx = -1\ntimes = [{ at = \"08:00\" }]\n",
                "schedule.first_decision_idx: must not be negative",
            ),
            (
                "[schedule]\ntimes = [{ at = \"08:00\", type = \"a\" }]\n",
                "type",
            ),
            ("[schedule]\ntimes = [{ decision_type = \"a\" }]\n", "at"),
            ("[schedule]\nplace = \"time\"\n", "place"),
        ];
        for (file, expected) in cases {
            Jail::expect_with(|jail| {
                jail.create_file("config.toml", file)?;
                let err = load_in_jail().unwrap_err().to_string();
                assert!(err.contains(expected), "{file}: {err}");
                Ok(())
            });
        }
    }

    #[test]
    fn a_priors_table_replaces_the_default_priors() {
        Jail::expect_with(|jail| {
            jail.create_file("config.toml", "[algorithm.priors]\nmean = [0.0, 1.0]\n")?;
            let config = load_in_jail()?;
            assert_eq!(config.algorithm.priors.len(), 1);
            assert!(config.algorithm.priors.contains_key("mean"));
            Ok(())
        });
    }

    #[test]
    fn algorithm_options_are_read_and_checked() {
        Jail::expect_with(|jail| {
            assert!(load_in_jail()?.algorithm.options.is_empty());
            jail.create_file(
                "config.toml",
                "[algorithm]\nname = \"thompson\"\n\
                 [algorithm.options]\nfeatures = [\"steps\"]\nmax_probability = 0.9\n",
            )?;
            let config = load_in_jail()?;
            assert_eq!(
                serde_json::Value::Object(config.algorithm.options.clone()),
                serde_json::json!({ "features": ["steps"], "max_probability": 0.9 })
            );
            assert_ne!(config.fingerprint(), Config::default().fingerprint());
            jail.set_env(
                "JUSTIN_ALGORITHM__OPTIONS__FEATURES",
                r#"["steps", "mood"]"#,
            );
            let config = load_in_jail()?;
            assert_eq!(
                config.algorithm.options["features"],
                serde_json::json!(["steps", "mood"])
            );
            jail.set_env(
                "JUSTIN_ALGORITHM__OPTIONS__FEATURES",
                r#"["steps", "steps"]"#,
            );
            let err = load_in_jail().unwrap_err().to_string();
            assert!(err.contains("algorithm.options"), "{err}");
            assert!(err.contains("\"steps\" twice"), "{err}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            // thompson cannot be built without its features; flat_prob takes no options.
            jail.set_env("JUSTIN_ALGORITHM__NAME", "thompson");
            let err = load_in_jail().unwrap_err().to_string();
            assert!(err.contains("algorithm.options"), "{err}");
            assert!(err.contains("features is required"), "{err}");
            jail.set_env("JUSTIN_ALGORITHM__NAME", "flat_prob");
            jail.set_env("JUSTIN_ALGORITHM__OPTIONS__FEATURES", "[]");
            let err = load_in_jail().unwrap_err().to_string();
            assert!(err.contains("algorithm.options"), "{err}");
            assert!(err.contains("flat_prob takes no options"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn bad_value_names_the_key() {
        Jail::expect_with(|jail| {
            jail.set_env("JUSTIN_SERVER__PORT", "not-a-port");
            let err = Config::from_figment(
                Config::figment(Path::new("config.toml")),
                &justin_algos::builtin(),
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains("port"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn unknown_key_is_refused() {
        Jail::expect_with(|jail| {
            jail.create_file("config.toml", "[server]\nprot = 1\n")?;
            let err = Config::from_figment(
                Config::figment(Path::new("config.toml")),
                &justin_algos::builtin(),
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains("prot"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn unrelated_justin_variables_are_ignored() {
        Jail::expect_with(|jail| {
            jail.set_env("JUSTIN_TEST_DATABASE_URL", "postgres://t@u/v");
            jail.set_env("JUSTIN_CONFIG", "elsewhere.toml");
            assert!(Config::from_figment(
                Config::figment(Path::new("config.toml")),
                &justin_algos::builtin()
            )
            .is_ok());
            Ok(())
        });
    }

    #[test]
    fn the_database_url_names_a_known_adapter() {
        Jail::expect_with(|jail| {
            assert_eq!(load_in_jail()?.database.url, "sqlite://justin.db");
            jail.set_env("JUSTIN_DATABASE__URL", "postgresql://u@h/d");
            assert!(load_in_jail().is_ok());
            jail.set_env("JUSTIN_DATABASE__URL", "mysql://u@h/d");
            let err = load_in_jail().unwrap_err().to_string();
            assert!(err.contains("database.url"), "{err}");
            assert!(err.contains("sqlite://"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn out_of_range_values_are_refused() {
        Jail::expect_with(|jail| {
            jail.set_env("JUSTIN_DATABASE__POOL_SIZE", "0");
            let err = Config::from_figment(
                Config::figment(Path::new("config.toml")),
                &justin_algos::builtin(),
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains("database.pool_size"), "{err}");
            Ok(())
        });
        for threads in ["0", "1025"] {
            Jail::expect_with(|jail| {
                jail.set_env("JUSTIN_SERVER__DECISION_THREADS", threads);
                let err = load_in_jail().unwrap_err().to_string();
                assert_eq!(
                    err,
                    "invalid configuration: server.decision_threads: must be between 1 and 1024"
                );
                Ok(())
            });
        }
        Jail::expect_with(|jail| {
            jail.set_env("JUSTIN_SERVER__DECISION_THREADS", "1024");
            assert_eq!(load_in_jail()?.server.decision_threads, 1024);
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("JUSTIN_ALGORITHM__NAME", "nope");
            let err = Config::from_figment(
                Config::figment(Path::new("config.toml")),
                &justin_algos::builtin(),
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains("algorithm.name"), "{err}");
            assert!(err.ends_with("known: flat_prob, thompson"), "{err}");
            Ok(())
        });
    }

    /// `flat_prob` under another name: an algorithm registered from outside the built-ins.
    #[derive(Debug)]
    struct Renamed(justin_algos::FlatProb);

    impl justin_core::Algorithm for Renamed {
        fn name(&self) -> &str {
            "renamed"
        }
        fn initial_parameters(
            &self,
            priors: &JsonObject,
        ) -> Result<serde_json::Value, AlgorithmError> {
            self.0.initial_parameters(priors)
        }
        fn make_state(&self, context: &JsonObject) -> Result<justin_core::State, AlgorithmError> {
            self.0.make_state(context)
        }
        fn get_action(
            &self,
            user: &justin_core::UserId,
            state: &justin_core::State,
            parameters: &serde_json::Value,
            decision_idx: justin_core::DecisionIdx,
            rng: &mut justin_core::DecisionRng,
        ) -> Result<justin_core::ActionChoice, AlgorithmError> {
            self.0
                .get_action(user, state, parameters, decision_idx, rng)
        }
        fn make_reward(
            &self,
            user: &justin_core::UserId,
            state: &justin_core::State,
            action: justin_core::Action,
            outcome: &JsonObject,
        ) -> Result<f64, AlgorithmError> {
            self.0.make_reward(user, state, action, outcome)
        }
        fn update(
            &self,
            current: &serde_json::Value,
            data: &mut dyn Iterator<Item = justin_core::StudyRecord>,
        ) -> Result<serde_json::Value, AlgorithmError> {
            self.0.update(current, data)
        }
    }

    /// The built-ins and `renamed`, which takes the options `flat_prob` takes (none).
    fn with_renamed() -> Registry {
        let mut algorithms = justin_algos::builtin();
        algorithms
            .register(justin_core::Registration::new(
                "renamed",
                "renamed_crate",
                |options| {
                    Ok(std::sync::Arc::new(Renamed(
                        justin_algos::FlatProb::from_options(options)?,
                    )))
                },
            ))
            .unwrap();
        algorithms
    }

    #[test]
    fn algorithm_name_selects_a_registered_algorithm() {
        Jail::expect_with(|jail| {
            let figment = || Config::figment(Path::new("config.toml"));
            jail.set_env("JUSTIN_ALGORITHM__NAME", "renamed");
            let err = Config::from_figment(figment(), &justin_algos::builtin())
                .unwrap_err()
                .to_string();
            assert_eq!(
                err,
                "invalid configuration: algorithm.name: unknown algorithm \"renamed\"; \
                 known: flat_prob, thompson"
            );
            let config = Config::from_figment(figment(), &with_renamed()).unwrap();
            assert_eq!(config.algorithm.name, "renamed");
            // Its options are checked as a built-in's are.
            jail.set_env("JUSTIN_ALGORITHM__OPTIONS__FEATURES", "[]");
            let err = Config::from_figment(figment(), &with_renamed())
                .unwrap_err()
                .to_string();
            assert_eq!(
                err,
                "invalid configuration: invalid algorithm.options: flat_prob takes no options; \
                 remove \"features\""
            );
            jail.set_env("JUSTIN_ALGORITHM__NAME", "nope");
            let err = Config::from_figment(figment(), &with_renamed())
                .unwrap_err()
                .to_string();
            assert!(
                err.ends_with("known: flat_prob, thompson, renamed"),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    fn an_algorithm_must_answer_to_its_registered_name() {
        Jail::expect_with(|jail| {
            let mut algorithms = Registry::new();
            algorithms
                .register(justin_core::Registration::new(
                    "alias",
                    "alias_crate",
                    |options| {
                        Ok(std::sync::Arc::new(justin_algos::FlatProb::from_options(
                            options,
                        )?))
                    },
                ))
                .unwrap();
            jail.set_env("JUSTIN_ALGORITHM__NAME", "alias");
            let err = Config::from_figment(Config::figment(Path::new("config.toml")), &algorithms)
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(
                    "invalid configuration: algorithm.name: the algorithm registered as \"alias\" \
                     says its name is \"flat_prob\""
                ),
                "{err}"
            );
            Ok(())
        });
    }

    /// `printf %s correct-horse-battery-staple | sha256sum`
    const DIGEST: &str = "87cbebfeebc05f7c54ac9336c4b4bbec831227a641951a4bde7edd56020f8590";

    #[test]
    fn api_keys_come_from_the_file() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "config.toml",
                &format!(
                    "[[auth.api_keys]]\nname = \"app\"\nsha256 = \"{DIGEST}\"\n\
                     [[auth.api_keys]]\nname = \"dev\"\nkey = \"a-long-enough-dev-key\"\n"
                ),
            )?;
            let config = load_in_jail()?;
            assert_eq!(config.auth.api_keys.len(), 2);
            assert_eq!(config.auth.api_keys[0].name, "app");
            assert_eq!(config.auth.api_keys[0].sha256.as_deref(), Some(DIGEST));
            assert_eq!(
                config.auth.api_keys[1].key.as_deref(),
                Some("a-long-enough-dev-key")
            );
            assert!(!config.auth.allow_unauthenticated);
            Ok(())
        });
    }

    #[test]
    fn api_keys_from_the_environment_replace_the_files() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "config.toml",
                "[[auth.api_keys]]\nname = \"old\"\nkey = \"a-long-enough-old-key\"\n",
            )?;
            jail.set_env(
                "JUSTIN_AUTH__API_KEYS",
                format!(r#"[{{name="app",sha256="{DIGEST}"}}, {{name = "dev", key = "a-long-enough-dev-key"}}]"#),
            );
            jail.set_env("JUSTIN_AUTH__ALLOW_UNAUTHENTICATED", "true");
            let config = load_in_jail()?;
            let names: Vec<_> = config
                .auth
                .api_keys
                .iter()
                .map(|k| k.name.as_str())
                .collect();
            assert_eq!(names, ["app", "dev"]);
            assert_eq!(config.auth.api_keys[0].sha256.as_deref(), Some(DIGEST));
            assert!(config.auth.allow_unauthenticated);
            Ok(())
        });
    }

    #[test]
    fn an_unusable_api_key_stops_start_up_naming_it() {
        Jail::expect_with(|jail| {
            jail.set_env("JUSTIN_AUTH__API_KEYS", r#"[{name="app",sha256="abc"}]"#);
            let err = load_in_jail().unwrap_err().to_string();
            assert!(err.contains(r#"auth.api_keys[0] ("app")"#), "{err}");
            assert!(err.contains("64 hex digits"), "{err}");
            jail.set_env("JUSTIN_AUTH__API_KEYS", r#"[{name="app",secret="abc"}]"#);
            let err = load_in_jail().unwrap_err().to_string();
            assert!(err.contains("secret"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn key_material_stays_out_of_the_fingerprint_and_debug_output() {
        let with_key = |sha256: Option<&str>, key: Option<&str>| {
            let mut config = Config::default();
            config.auth.api_keys.push(ApiKeyConfig {
                name: "app".into(),
                sha256: sha256.map(Into::into),
                key: key.map(Into::into),
                access: KeyAccess::Full,
            });
            config
        };
        let a = with_key(Some(DIGEST), None);
        let b = with_key(Some(&"0".repeat(64)), None);
        assert_eq!(a.fingerprint(), b.fingerprint(), "the digest is not hashed");
        let c = with_key(None, Some("a-long-enough-key-one"));
        let d = with_key(None, Some("a-long-enough-key-two"));
        assert_eq!(c.fingerprint(), d.fingerprint(), "the key is not hashed");
        assert_ne!(a.fingerprint(), Config::default().fingerprint());
        let shown = format!("{a:?} {c:?}");
        assert!(!shown.contains(DIGEST), "{shown}");
        assert!(!shown.contains("a-long-enough-key-one"), "{shown}");
        assert!(shown.contains("app"), "{shown}");
    }

    #[test]
    fn new_keys_have_safe_defaults() {
        let config = Config::default();
        assert!(config.auth.api_keys.is_empty());
        assert!(!config.auth.allow_unauthenticated);
        assert!(!config.logging.log_bodies);
    }

    #[test]
    fn priors_file_replaces_inline_priors() {
        Jail::expect_with(|jail| {
            jail.create_file("priors.json", r#"{"probability_of_action": 0.3}"#)?;
            jail.create_file("broken.json", "{")?;
            jail.set_env("JUSTIN_ALGORITHM__PRIORS_FILE", "priors.json");
            let config = load_in_jail()?;
            let priors = config.priors().map_err(|e| e.to_string())?;
            assert_eq!(priors["probability_of_action"], serde_json::json!(0.3));

            let mut broken = config.clone();
            broken.algorithm.priors_file = Some("broken.json".into());
            assert!(broken
                .priors()
                .unwrap_err()
                .to_string()
                .contains("not valid JSON"));
            broken.algorithm.priors_file = Some("missing.json".into());
            assert!(broken
                .priors()
                .unwrap_err()
                .to_string()
                .contains("cannot read"));
            Ok(())
        });
    }
}
