//! The core of JustIn: the domain types of a study, the [`Algorithm`] trait researchers
//! implement and the [`Registry`] a service binary builds them from, the ports the core needs
//! from the outside (storage, clock, callback delivery) and the use cases written against them.
//! This crate does no IO; adapters in other crates do.

pub mod algorithm;
pub mod analysis;
#[cfg(any(test, feature = "conformance"))]
pub mod builders;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod dashboard;
pub mod domain;
pub mod monitor;
pub mod ports;
pub mod recording;
pub mod registry;
pub mod rng;
pub mod schedule;
pub mod service;
pub mod tables;
#[cfg(feature = "testing")]
pub mod testing;
mod tolerance;

pub use algorithm::{
    names, ActionChoice, Algorithm, AlgorithmError, Prepared, PreparedPolicy, MISSING_CONTEXT,
};
pub use analysis::{
    usable_covariate_name, AnalysisFunction, AnalysisModel, ArgSource, ArgSpec, UpdateFunctionKind,
    GRID_COLUMNS,
};
pub use domain::{
    Action, Availability, CallbackDelivery, CallbackStatus, CompletedUpdate, Correction,
    CorrectionRecorded, Decision, DecisionHistory, DecisionIdx, DecisionType, Enrollment, Erasure,
    ExportLine, ExportRow, ExportedUpload, Imputation, ImputedReward, ImputedRewards, InvalidValue,
    JsonObject, ModelParameters, OutOfStudy, Participant, ParticipantFacts, ParticipantStatus,
    Policy, Probability, Provenance, SentTime, State, StudyRecord, UpdateInclusion, UpdateRecord,
    UpdateRequest, UpdateStatus, UserId, Withdrawal,
};
pub use monitor::{Finding, FindingKind, MonitorReport, MonitorSettings, Severity};
#[cfg(feature = "testing")]
pub use ports::TestingStore;
pub use ports::{
    BackupReport, BoxError, CallbackNotifier, CallbackPayload, Clock, DecisionGuard,
    DecisionStream, ExportLineStream, ExportStream, NoTelemetry, Recorded, RestoreReport, Store,
    StoreError, StudyDataStream, Telemetry, UpdateEnd, UpdateJob, UpdateOutcome,
    UpdateRecordStream, UploadRecorded,
};
pub use registry::{BuildError, Constructor, Registration, Registry, RegistryError};
pub use rng::DecisionRng;
pub use schedule::{
    parse_time_of_day, DecisionKey, PlaceBy, Placer, Schedule, ScheduleError, ScheduledTime,
    Unplaced,
};
pub use service::{
    ActionRequest, ActionResponse, CallbackPolicy, CheckOutcome, DefaultReward, DomainError,
    HostDecisionRequest, MonitorSetup, ParticipantView, ReplayMismatch, ReplaySummary, Service,
    ServiceSettings, TrialSettings, Unverifiable, UploadRequest, Warmup,
};
