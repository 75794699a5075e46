//! The use cases: add a user, request an action, upload data, request an update and run it,
//! deliver its callback, replay the stored decisions and updates.
//!
//! [`Service`] is written against the ports only. It keeps the current model parameters in
//! memory, so the hot path (`request_action`) costs one storage call: the insert of the
//! decision. The cache is replaced whenever this process publishes a new version.
//!
//! Each use case has a module of its own, each adding methods to [`Service`]: `decisions`
//! (participants, actions, uploads), `corrections` (corrected uploads and a decision's
//! history), `parameters` (the parameter cache), `policies` (the policies the algorithm
//! prepared from the newest parameter versions), `updates` (the update
//! worker and its retries), `callbacks` (delivery with backoff), `replay` (decisions),
//! `update_replay` (updates) and `readiness`; `errors` holds what they fail with. Their public items are re-exported here.

mod callbacks;
mod corrections;
mod dashboard;
mod decisions;
mod errors;
mod monitor;
mod parameters;
mod participants;
mod policies;
mod readiness;
mod replay;
mod update_replay;
mod updates;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};

use crate::algorithm::Algorithm;
use crate::domain::ModelParameters;
use crate::ports::{
    BackupReport, CallbackNotifier, Clock, ExportLineStream, ExportStream, NoTelemetry, Store,
    Telemetry,
};

pub use callbacks::CallbackPolicy;
pub use dashboard::{PolicyPoint, UpdateComparison, POLICY_SAMPLE};
pub use decisions::{ActionRequest, ActionResponse, HostDecisionRequest, UploadRequest};
pub use errors::{error_chain, DomainError};
pub use monitor::{CheckOutcome, MonitorSetup};
pub use participants::ParticipantView;
pub use readiness::{is_disk_full, DISK_FULL_HOLD};
pub use replay::{ReplayMismatch, ReplaySummary, Unverifiable};
pub use update_replay::{
    InconsistentRow, UpdateReplay, UpdateReplaySummary, UpdateVerdict, UPDATE_REPLAY_TOLERANCE,
};

/// The log target of records about the algorithm (routed to `rl.log`).
pub const RL_TARGET: &str = "justin::rl";

/// Settings the use cases need, read once at start-up.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// The study seed (`algorithm.seed`).
    pub seed: u64,
    /// Where backups go before each update; `None` when backups are off.
    pub backup_dir: Option<PathBuf>,
    /// How many times an update may be started before it is abandoned as failed (an update
    /// is started again after its process died).
    pub update_attempts: u32,
    /// How callbacks are retried.
    pub callbacks: CallbackPolicy,
    /// The service's version, for provenance.
    pub service_version: String,
    /// SHA-256 of the effective configuration, hex, for provenance.
    pub config_hash: String,
    /// Warm-up, fallback and which decisions updates learn from.
    pub trial: TrialSettings,
    /// Where the backup taken before each erasure goes (always taken, whether or not backups
    /// before updates are on).
    pub erasure_backup_dir: PathBuf,
}

/// The warm-up phase (`[algorithm.warmup]`): decisions drawn with a fixed probability while
/// any configured condition holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Warmup {
    /// P(action = 1) during warm-up.
    pub probability: crate::domain::Probability,
    /// Warm-up holds for decisions whose `requested_at` is before this.
    pub until: Option<DateTime<Utc>>,
    /// Warm-up holds for each participant's first this many decisions of each type (those in
    /// the study and drawn by the service).
    pub first_decisions: Option<u32>,
    /// Warm-up holds until this many participants have started (at the decision's time).
    pub until_participants: Option<u32>,
    /// Warm-up holds while no update has completed (the decision's parameter version is 1).
    pub until_first_update: bool,
}

/// How the trial's phases and failures are handled.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TrialSettings {
    /// The warm-up phase, if configured.
    pub warmup: Option<Warmup>,
    /// The fallback probability (`[algorithm.fallback]`), if configured: when the algorithm
    /// fails for an accepted request, the decision is drawn with it instead of failing.
    pub fallback: Option<crate::domain::Probability>,
    /// Which kinds of decision updates learn from.
    pub include: crate::domain::UpdateInclusion,
    /// How updates treat a decision whose outcome never came: `None` leaves it out; with a
    /// [`DefaultReward`], one past the outcome window is learned from with the default reward.
    pub missing_outcomes: Option<DefaultReward>,
}

/// The outcome window and default reward (`[update] missing_outcomes = "default_reward"`): an
/// update learns from every decision made at least `window` before it started that has no
/// upload, with `reward`, and says so in its provenance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DefaultReward {
    /// How long after a decision its outcome may arrive.
    pub window: chrono::TimeDelta,
    /// The reward a decision past the window without an upload is learned from with.
    pub reward: f64,
}

/// The decision service: the use cases over the ports.
pub struct Service {
    store: Arc<dyn Store>,
    algorithm: Arc<dyn Algorithm>,
    clock: Arc<dyn Clock>,
    notifier: Arc<dyn CallbackNotifier>,
    /// Hears how updates and callbacks went (metrics); [`NoTelemetry`] unless set.
    telemetry: Arc<dyn Telemetry>,
    settings: ServiceSettings,
    current: RwLock<Option<Arc<ModelParameters>>>,
    /// What the algorithm prepared from the newest parameter versions drawn from.
    policies: policies::PolicyCache,
    /// Set when the process is stopping: no update starts, and the one under way is put back.
    stopping: AtomicBool,
    /// When the most recent write failed because the database's disk is full, unless a write
    /// has succeeded since: readiness answers 503 meanwhile (see [`Service::ready`]).
    disk_full_since: std::sync::Mutex<Option<DateTime<Utc>>>,
    /// Whether `disk_full_since` holds a time: every successful write reads this, and only
    /// one that has a mark to clear takes the lock, so decisions do not queue on it.
    disk_full_marked: AtomicBool,
    /// The earliest `requested_at` (microseconds since the epoch) at which the store has
    /// shown the warm-up's cohort reached, `i64::MAX` while it has not: decisions at or after
    /// it need not count participants again.
    cohort_reached_at: AtomicI64,
    /// What the watchdog checks against ([`Service::with_monitor`]).
    monitor: Arc<MonitorSetup>,
    /// The report of this instance's latest background check ([`Service::run_monitor_check`]),
    /// which the dashboard shows while it is recent.
    last_check: RwLock<Option<crate::monitor::MonitorReport>>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("algorithm", &self.algorithm.name())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// Wires the use cases to their ports.
    pub fn new(
        store: Arc<dyn Store>,
        algorithm: Arc<dyn Algorithm>,
        clock: Arc<dyn Clock>,
        notifier: Arc<dyn CallbackNotifier>,
        settings: ServiceSettings,
    ) -> Self {
        Self {
            store,
            algorithm,
            clock,
            notifier,
            telemetry: Arc::new(NoTelemetry),
            settings,
            current: RwLock::new(None),
            policies: policies::PolicyCache::default(),
            stopping: AtomicBool::new(false),
            disk_full_since: std::sync::Mutex::new(None),
            disk_full_marked: AtomicBool::new(false),
            cohort_reached_at: AtomicI64::new(i64::MAX),
            monitor: Arc::new(MonitorSetup::default()),
            last_check: RwLock::new(None),
        }
    }

    /// The same service, telling `telemetry` how its updates and callbacks go.
    #[must_use]
    pub fn with_telemetry(mut self, telemetry: Arc<dyn Telemetry>) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// Tells the update under way that the process is stopping. If it is still reading study
    /// data (or taking its backup), it stops there and its request is put back, uncounted,
    /// for the next start ([`UpdateOutcome::Requeued`]); if its algorithm has finished, it is
    /// stored as usual. From now on [`Service::run_next_update`] starts nothing.
    ///
    /// [`UpdateOutcome::Requeued`]: crate::ports::UpdateOutcome::Requeued
    pub fn stop_updates(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    pub(super) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// The configured algorithm.
    pub fn algorithm(&self) -> &dyn Algorithm {
        self.algorithm.as_ref()
    }

    /// One row per stored decision with its uploaded data, for analysis, streamed.
    ///
    /// # Errors
    /// On storage failure, here or as an item of the stream.
    pub fn export(&self) -> Result<ExportStream, DomainError> {
        Ok(self.store.export()?)
    }

    /// The rows of [`Service::export`] with their JSON as the stored text, as the CSV export
    /// writes them, streamed.
    ///
    /// # Errors
    /// On storage failure, here or as an item of the stream.
    pub fn export_lines(&self) -> Result<ExportLineStream, DomainError> {
        Ok(self.store.export_lines()?)
    }

    /// Writes a backup into `dir`.
    ///
    /// # Errors
    /// On storage or file-system failure.
    pub fn backup_to(&self, dir: &std::path::Path) -> Result<BackupReport, DomainError> {
        Ok(self.store.backup(dir, self.clock.now())?)
    }
}
