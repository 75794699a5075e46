//! The simulator's options: command-line flags over an optional TOML file over the defaults
//! (layered with figment), then checked into a [`Plan`]. The API key comes from the flag or
//! the `JUSTIN_API_KEY` environment variable only, never from the file, and is never shown.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::client::ApiKey;
use crate::model::{self, Gaps, Model, RewardModel};

/// The environment variable the API key is read from when `--api-key` is not given.
pub const API_KEY_ENV: &str = "JUSTIN_API_KEY";

/// `justin simulate`'s flags. Every option but `--config` and `--api-key` may also be set in
/// the `--config` file, under the flag's name with `_` for `-`; a flag wins over the file.
#[derive(Debug, Default, clap::Args, Serialize)]
pub struct Args {
    /// A TOML file of options, e.g. `participants = 20` and `features = "temperature:25:5"`.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// The API key to send as `Authorization: Bearer <key>` [default: $JUSTIN_API_KEY].
    /// Prefer the environment variable: other users of the machine can see flags.
    #[arg(long, value_name = "KEY")]
    #[serde(skip)]
    pub api_key: Option<ApiKey>,
    /// The service's base URL [default: http://127.0.0.1:5000].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Participants to register and drive [default: 10].
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participants: Option<u32>,
    /// Decision times per participant and decision type [default: 10].
    #[arg(long, value_name = "T")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision_times: Option<u32>,
    /// The decision types, comma-separated; each decision time has one decision of each
    /// [default: default].
    #[arg(long, value_name = "TYPES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision_types: Option<String>,
    /// Request an update after every K decisions, counted over all participants [default: 10].
    #[arg(long, value_name = "K")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_every: Option<u32>,
    /// The seed of the contexts, the noise and availability [default: 1].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// The context features as name:mean:sd, comma-separated; each is drawn from a normal
    /// distribution [default: temperature:25:5].
    #[arg(long, value_name = "SPECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub features: Option<String>,
    /// The reward at action 0 with every feature at 0 [default: 0].
    #[arg(long, value_name = "X", allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reward_intercept: Option<f64>,
    /// The treatment effect (of action 1) with every feature at 0 [default: 0].
    #[arg(long, value_name = "X", allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reward_action: Option<f64>,
    /// The features' main effects on the reward as name=value, comma-separated [default: none].
    #[arg(long, value_name = "COEFS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reward_coef: Option<String>,
    /// The action × feature interactions as name=value, comma-separated [default: none].
    #[arg(long, value_name = "COEFS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reward_action_coef: Option<String>,
    /// The standard deviation of the reward's normal noise [default: 1].
    #[arg(long, value_name = "SD", allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noise_sd: Option<f64>,
    /// The outcome field the reward is sent in (`clicks` for flat_prob) [default: reward].
    #[arg(long, value_name = "NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome_field: Option<String>,
    /// The probability that a decision time is unavailable [default: 0].
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable_share: Option<f64>,
    /// The start of every participant's id, followed by its number [default: sim-<seed>-].
    #[arg(long, value_name = "PREFIX")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_prefix: Option<String>,
    /// The CSV file the summary is written to [default: simulation.csv].
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out: Option<PathBuf>,
    /// Threads driving the participants, each its own share of them [default: 1].
    #[arg(long, value_name = "C")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// The address the callback receiver listens on [default: 127.0.0.1:0, a free port].
    #[arg(long, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback_listen: Option<String>,
    /// The callback URL given to the service, when it must reach the receiver by another
    /// address [default: http://<the address listened on>/callback].
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// The clip bounds MIN,MAX used when the parameters hold no min_probability and
    /// max_probability [default: 0.2,0.8].
    #[arg(long, value_name = "MIN,MAX")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clip: Option<String>,
    /// Seconds to wait for an update to finish before stopping [default: 300].
    #[arg(long, value_name = "SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_timeout_secs: Option<u64>,
    /// Seconds each request may take [default: 60].
    #[arg(long, value_name = "SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_timeout_secs: Option<u64>,
    /// Staggered enrollment: participant i's time in the study starts at decision time
    /// i × N, sent as `study_start` when it is registered; 0 starts everyone at once and sends
    /// no dates [default: 0].
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enroll_every: Option<u32>,
    /// Each participant's time in the study lasts this many decision times, sent as
    /// `study_end`; 0 leaves it open [default: 0].
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub study_length: Option<u32>,
    /// Simulated seconds between two decision times. With enrollment dates, decisions carry
    /// the simulated time (decision time t at the run's start + t × S); otherwise the clock's
    /// [default: 3600].
    #[arg(long, value_name = "SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision_time_secs: Option<u64>,
    /// The simulated clock's origin, RFC 3339 (e.g. 2026-01-05T08:00:00Z): decision time t
    /// is sent as this + t × --decision-time-secs, and the run has dates (every participant
    /// gets a `study_start`) even without --enroll-every or --study-length [default: the
    /// run's start, and dates only with enrollment options].
    #[arg(long, value_name = "TIME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// The probability that a decision time gets no /action call at all [default: 0].
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missed_call_share: Option<f64>,
    /// The probability that an available decision gets no upload (its outcome is missing)
    /// [default: 0].
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing_outcome_share: Option<f64>,
    /// The probability that each context value is sent as null (a sensor not worn, a survey
    /// skipped); the reward still follows the value drawn [default: 0].
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub null_context_share: Option<f64>,
    /// The probability that an available decision's upload is held back and sent only after
    /// the next update has completed, so that update does not use it [default: 0].
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub late_upload_share: Option<f64>,
    /// Participants who withdraw, as participant@decision_time, comma-separated: the
    /// withdrawal is sent just before that decision time's first decision [default: none].
    #[arg(long, value_name = "LIST")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub withdraw: Option<String>,
    /// Participants erased after the run (their ids, contexts and outcomes deleted), as
    /// participant numbers, comma-separated [default: none].
    #[arg(long, value_name = "LIST")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub erase: Option<String>,
    /// Participants whose app goes silent, as participant@decision_time, comma-separated:
    /// from that decision time on they make no /action call and no upload (still registered,
    /// not withdrawn), as the watchdog's missed decisions [default: none].
    #[arg(long, value_name = "LIST")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub silent: Option<String>,
}

/// Every option but the key, with its default: what the file and the flags are layered over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Settings {
    url: String,
    participants: u32,
    decision_times: u32,
    decision_types: String,
    update_every: u32,
    seed: u64,
    features: String,
    reward_intercept: f64,
    reward_action: f64,
    reward_coef: String,
    reward_action_coef: String,
    noise_sd: f64,
    outcome_field: String,
    unavailable_share: f64,
    user_prefix: Option<String>,
    out: PathBuf,
    concurrency: u32,
    callback_listen: String,
    callback_url: Option<String>,
    clip: String,
    update_timeout_secs: u64,
    request_timeout_secs: u64,
    enroll_every: u32,
    study_length: u32,
    decision_time_secs: u64,
    start: Option<String>,
    missed_call_share: f64,
    missing_outcome_share: f64,
    null_context_share: f64,
    late_upload_share: f64,
    withdraw: String,
    erase: String,
    silent: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:5000".into(),
            participants: 10,
            decision_times: 10,
            decision_types: "default".into(),
            update_every: 10,
            seed: 1,
            features: "temperature:25:5".into(),
            reward_intercept: 0.0,
            reward_action: 0.0,
            reward_coef: String::new(),
            reward_action_coef: String::new(),
            noise_sd: 1.0,
            outcome_field: "reward".into(),
            unavailable_share: 0.0,
            user_prefix: None,
            out: "simulation.csv".into(),
            concurrency: 1,
            callback_listen: "127.0.0.1:0".into(),
            callback_url: None,
            clip: "0.2,0.8".into(),
            update_timeout_secs: 300,
            request_timeout_secs: 60,
            enroll_every: 0,
            study_length: 0,
            decision_time_secs: 3600,
            start: None,
            missed_call_share: 0.0,
            missing_outcome_share: 0.0,
            null_context_share: 0.0,
            late_upload_share: 0.0,
            withdraw: String::new(),
            erase: String::new(),
            silent: String::new(),
        }
    }
}

/// The trial's life as the simulator plays it: enrollment windows in decision times,
/// withdrawals and erasures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Life {
    /// Participant i starts at decision time i × this (0: everyone at once, no dates sent).
    pub enroll_every: u32,
    /// Decision times each participant's window lasts (`None`: open).
    pub study_length: Option<u32>,
    /// Simulated seconds between decision times.
    pub decision_time_secs: u64,
    /// The simulated clock's origin, when `--start` gives one.
    pub start: Option<DateTime<Utc>>,
    /// (participant, decision time) of each withdrawal.
    pub withdrawals: Vec<(u32, u32)>,
    /// Participants erased after the run.
    pub erasures: Vec<u32>,
    /// (participant, decision time) from which each silent participant makes no call.
    pub silences: Vec<(u32, u32)>,
}

impl Life {
    /// Whether decisions carry simulated times and registrations enrollment dates: with
    /// staggered enrollment, a study length or a `--start`.
    pub fn dated(&self) -> bool {
        self.enroll_every > 0 || self.study_length.is_some() || self.start.is_some()
    }

    /// The decision time participant `p` starts at.
    pub fn start_time(&self, p: u32) -> u64 {
        u64::from(p) * u64::from(self.enroll_every)
    }

    /// Whether `p` is silent at decision time `t` (makes no call and no upload).
    pub fn silent_at(&self, p: u32, t: u64) -> bool {
        self.silences
            .iter()
            .any(|&(who, from)| who == p && t >= u64::from(from))
    }

    /// The decision time at which `p` withdraws, if they do.
    pub fn withdraws_at(&self, p: u32) -> Option<u32> {
        self.withdrawals
            .iter()
            .find_map(|&(who, at)| (who == p).then_some(at))
    }
}

fn participant_list(text: &str, flag: &str, participants: u32) -> Result<Vec<u32>, String> {
    let mut out = Vec::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let p: u32 = item
            .parse()
            .map_err(|_| format!("{flag}: {item:?} is not a participant number"))?;
        if p >= participants {
            return Err(format!(
                "{flag}: participant {p} does not exist (participants are 0 to {})",
                participants - 1
            ));
        }
        if out.contains(&p) {
            return Err(format!("{flag}: participant {p} is named twice"));
        }
        out.push(p);
    }
    Ok(out)
}

fn withdrawals(text: &str, participants: u32, times: u32) -> Result<Vec<(u32, u32)>, String> {
    participant_times(text, "--withdraw", participants, times)
}

/// A list of participant@decision_time, each participant at most once.
fn participant_times(
    text: &str,
    flag: &str,
    participants: u32,
    times: u32,
) -> Result<Vec<(u32, u32)>, String> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let malformed = || format!("{flag}: {item:?} is not participant@decision_time");
        let (who, at) = item.split_once('@').ok_or_else(malformed)?;
        let who: u32 = who.trim().parse().map_err(|_| malformed())?;
        let at: u32 = at.trim().parse().map_err(|_| malformed())?;
        if who >= participants {
            return Err(format!(
                "{flag}: participant {who} does not exist (participants are 0 to {})",
                participants - 1
            ));
        }
        if at >= times {
            return Err(format!(
                "{flag}: decision time {at} is past the run's last ({})",
                times - 1
            ));
        }
        if out.iter().any(|&(w, _)| w == who) {
            return Err(format!("{flag}: participant {who} is named twice"));
        }
        out.push((who, at));
    }
    Ok(out)
}

/// A checked simulation: what to run and against which service.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The service's base URL.
    pub url: String,
    /// The API key, if any.
    pub api_key: Option<ApiKey>,
    /// Participants.
    pub participants: u32,
    /// Decision times per participant and type.
    pub decision_times: u32,
    /// The decision types, at least one.
    pub decision_types: Vec<String>,
    /// Decisions between updates, at least 1.
    pub update_every: u64,
    /// The simulator's seed.
    pub seed: u64,
    /// Contexts, availability and rewards.
    pub model: Model,
    /// The outcome field the reward goes in.
    pub outcome_field: String,
    /// The start of every participant's id.
    pub user_prefix: String,
    /// The CSV file.
    pub out: PathBuf,
    /// Threads driving participants, at least 1.
    pub concurrency: usize,
    /// Where the callback receiver listens.
    pub callback_listen: String,
    /// The callback URL, when not derived from the listening address.
    pub callback_url: Option<String>,
    /// The clip bounds when the parameters have none.
    pub clip: (f64, f64),
    /// How long to wait for an update.
    pub update_timeout: Duration,
    /// How long one request may take.
    pub request_timeout: Duration,
    /// Enrollment, withdrawals and erasures.
    pub life: Life,
}

impl Plan {
    /// Layers the defaults, the `--config` file and the flags, and checks the result. The
    /// key is `env_key` (`$JUSTIN_API_KEY`) unless `--api-key` gives one.
    ///
    /// # Errors
    /// A file that does not exist or does not parse, an unknown key, or a value that is out
    /// of range or malformed; the message names the option.
    pub fn from_args(args: Args, env_key: Option<String>) -> Result<Self, String> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(file) = &args.config {
            figment = figment.merge(Toml::file_exact(file));
        }
        let api_key = args
            .api_key
            .clone()
            .or_else(|| env_key.filter(|k| !k.is_empty()).map(ApiKey::new));
        let settings: Settings = figment
            .merge(Serialized::defaults(&args))
            .extract()
            .map_err(|e| match &args.config {
                Some(file) => format!("{}: {e}", file.display()),
                None => e.to_string(),
            })?;
        Self::check(settings, api_key)
    }

    fn check(s: Settings, api_key: Option<ApiKey>) -> Result<Self, String> {
        let url = s.url.trim_end_matches('/').to_owned();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("--url: {url:?} is not an http or https URL"));
        }
        let at_least_one = |value: u32, flag: &str| {
            if value == 0 {
                Err(format!("{flag} must be at least 1"))
            } else {
                Ok(value)
            }
        };
        let participants = at_least_one(s.participants, "--participants")?;
        let decision_times = at_least_one(s.decision_times, "--decision-times")?;
        let update_every = at_least_one(s.update_every, "--update-every")?;
        let concurrency = at_least_one(s.concurrency, "--concurrency")?;
        if s.request_timeout_secs == 0 {
            return Err("--request-timeout-secs must be at least 1".into());
        }
        let decision_types = decision_types(&s.decision_types)?;
        let features = model::parse_features(&s.features)?;
        let coef = model::parse_coefficients(&s.reward_coef, "--reward-coef", &features)?;
        let action_coef =
            model::parse_coefficients(&s.reward_action_coef, "--reward-action-coef", &features)?;
        for (value, flag) in [
            (s.reward_intercept, "--reward-intercept"),
            (s.reward_action, "--reward-action"),
        ] {
            if !value.is_finite() {
                return Err(format!("{flag} must be a finite number"));
            }
        }
        if !(s.noise_sd.is_finite() && s.noise_sd >= 0.0) {
            return Err("--noise-sd must be a finite number, 0 or more".into());
        }
        for (share, flag) in [
            (s.unavailable_share, "--unavailable-share"),
            (s.missed_call_share, "--missed-call-share"),
            (s.missing_outcome_share, "--missing-outcome-share"),
            (s.null_context_share, "--null-context-share"),
            (s.late_upload_share, "--late-upload-share"),
        ] {
            if !(0.0..=1.0).contains(&share) {
                return Err(format!(
                    "{flag} must lie in [0, 1] (a probability), not {share}"
                ));
            }
        }
        if s.outcome_field.trim().is_empty() {
            return Err("--outcome-field must not be empty".into());
        }
        let user_prefix = s.user_prefix.unwrap_or_else(|| format!("sim-{}-", s.seed));
        if s.decision_time_secs == 0 {
            return Err("--decision-time-secs must be at least 1".into());
        }
        let life = Life {
            enroll_every: s.enroll_every,
            study_length: (s.study_length > 0).then_some(s.study_length),
            decision_time_secs: s.decision_time_secs,
            start: s.start.as_deref().map(start).transpose()?,
            withdrawals: withdrawals(&s.withdraw, participants, decision_times)?,
            erasures: participant_list(&s.erase, "--erase", participants)?,
            silences: participant_times(&s.silent, "--silent", participants, decision_times)?,
        };
        Ok(Self {
            url,
            api_key,
            participants,
            decision_times,
            decision_types,
            update_every: u64::from(update_every),
            seed: s.seed,
            model: Model {
                features,
                reward: RewardModel {
                    intercept: s.reward_intercept,
                    action_intercept: s.reward_action,
                    coef,
                    action_coef,
                    noise_sd: s.noise_sd,
                },
                unavailable_share: s.unavailable_share,
                gaps: Gaps {
                    missed_call: s.missed_call_share,
                    missing_outcome: s.missing_outcome_share,
                    late_upload: s.late_upload_share,
                    null_value: s.null_context_share,
                },
            },
            outcome_field: s.outcome_field,
            user_prefix,
            out: s.out,
            // A u32 always fits a usize on the platforms Rust's std supports with threads.
            concurrency: usize::try_from(concurrency).unwrap_or(usize::MAX),
            callback_listen: s.callback_listen,
            callback_url: s.callback_url,
            clip: clip(&s.clip)?,
            update_timeout: Duration::from_secs(s.update_timeout_secs),
            request_timeout: Duration::from_secs(s.request_timeout_secs),
            life,
        })
    }

    /// Every decision of the run: participants × decision times × decision types.
    pub fn total_decisions(&self) -> u64 {
        u64::from(self.participants)
            * u64::from(self.decision_times)
            * self.decision_types.len() as u64
    }
}

fn decision_types(text: &str) -> Result<Vec<String>, String> {
    let mut types: Vec<String> = Vec::new();
    for name in model::items(text) {
        if types.iter().any(|t| t == name) {
            return Err(format!("--decision-types: {name} is given twice"));
        }
        types.push(name.to_owned());
    }
    if types.is_empty() {
        return Err("--decision-types must name at least one type".into());
    }
    Ok(types)
}

fn start(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            format!("--start: {text:?} is not an RFC 3339 time such as 2026-01-05T08:00:00Z ({e})")
        })
}

fn clip(text: &str) -> Result<(f64, f64), String> {
    let bad = || format!("--clip: {text:?} is not MIN,MAX with 0 <= MIN < MAX <= 1");
    let (min, max) = text.split_once(',').ok_or_else(bad)?;
    let min: f64 = min.trim().parse().map_err(|_| bad())?;
    let max: f64 = max.trim().parse().map_err(|_| bad())?;
    if 0.0 <= min && min < max && max <= 1.0 {
        Ok((min, max))
    } else {
        Err(bad())
    }
}

#[cfg(test)]
// figment's Jail closures return figment's own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use clap::Parser;
    use figment::Jail;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn plan(flags: &[&str]) -> Result<Plan, String> {
        let cli = Cli::try_parse_from(std::iter::once("simulate").chain(flags.iter().copied()))
            .map_err(|e| e.to_string())?;
        Plan::from_args(cli.args, None)
    }

    #[test]
    fn the_defaults_make_a_small_study_on_the_local_service() {
        let p = plan(&[]).unwrap();
        assert_eq!(p.url, "http://127.0.0.1:5000");
        assert_eq!(p.total_decisions(), 100);
        assert_eq!(p.decision_types, ["default"]);
        assert_eq!(p.update_every, 10);
        assert_eq!(p.user_prefix, "sim-1-");
        assert_eq!(p.outcome_field, "reward");
        assert_eq!(p.clip, (0.2, 0.8));
        assert_eq!(p.model.features.len(), 1);
        assert!(p.api_key.is_none());
        assert_eq!(
            p.life,
            Life {
                decision_time_secs: 3600,
                ..Life::default()
            }
        );
        assert!(!p.life.dated());
    }

    #[test]
    fn the_trial_life_options_are_read_and_checked() {
        let p = plan(&[
            "--participants",
            "4",
            "--decision-times",
            "8",
            "--enroll-every",
            "2",
            "--study-length",
            "5",
            "--withdraw",
            "1@3",
            "--erase",
            "2, 0",
        ])
        .unwrap();
        assert!(p.life.dated());
        assert_eq!(p.life.start_time(3), 6);
        assert_eq!(p.life.study_length, Some(5));
        assert_eq!(p.life.withdraws_at(1), Some(3));
        assert_eq!(p.life.withdraws_at(0), None);
        assert_eq!(p.life.erasures, [2, 0]);

        let refused = |flags: &[&str], says: &str| {
            let e = plan(flags).unwrap_err();
            assert!(e.contains(says), "{flags:?}: {e}");
        };
        refused(
            &["--participants", "2", "--erase", "2"],
            "participant 2 does not exist",
        );
        refused(&["--erase", "1,1"], "named twice");
        refused(&["--erase", "x"], "not a participant number");
        refused(&["--withdraw", "1"], "not participant@decision_time");
        refused(&["--withdraw", "1@10"], "past the run's last");
        refused(&["--withdraw", "1@2,1@3"], "named twice");
        refused(
            &["--silent", "1"],
            "--silent: \"1\" is not participant@decision_time",
        );
        refused(&["--silent", "1@10"], "past the run's last");
        let p = plan(&["--silent", "1@3"]).unwrap();
        assert!(!p.life.silent_at(1, 2));
        assert!(p.life.silent_at(1, 3) && p.life.silent_at(1, 9));
        assert!(!p.life.silent_at(0, 9));
        refused(&["--decision-time-secs", "0"], "--decision-time-secs");
    }

    #[test]
    fn the_start_and_the_gaps_are_read() {
        let p = plan(&[
            "--start",
            "2026-01-05T09:00:00+01:00",
            "--missed-call-share",
            "0.1",
            "--missing-outcome-share",
            "0",
            "--late-upload-share",
            "1",
        ])
        .unwrap();
        let at = DateTime::parse_from_rfc3339("2026-01-05T08:00:00Z").unwrap();
        assert_eq!(p.life.start, Some(at.with_timezone(&Utc)));
        assert!(p.life.dated(), "a start dates the run");
        assert_eq!(
            p.model.gaps,
            Gaps {
                missed_call: 0.1,
                missing_outcome: 0.0,
                late_upload: 1.0,
                null_value: 0.0,
            }
        );
        assert_eq!(plan(&[]).unwrap().model.gaps, Gaps::default());
    }

    #[test]
    fn flags_set_the_reward_model() {
        let p = plan(&[
            "--features",
            "temperature:25:5,steps:-1:2",
            "--reward-intercept",
            "-1.5",
            "--reward-action",
            "0.3",
            "--reward-coef",
            "steps=0.2",
            "--reward-action-coef",
            "temperature=-0.01,steps=0.5",
            "--noise-sd",
            "0",
            "--seed",
            "9",
            "--clip",
            "0.1, 0.9",
        ])
        .unwrap();
        assert_eq!(p.clip, (0.1, 0.9));
        let r = &p.model.reward;
        assert_eq!(r.intercept, -1.5);
        assert_eq!(r.action_intercept, 0.3);
        assert_eq!(r.coef, [0.0, 0.2]);
        assert_eq!(r.action_coef, [-0.01, 0.5]);
        assert_eq!(r.noise_sd, 0.0);
        assert_eq!(p.model.features[1].mean, -1.0);
        assert_eq!(p.user_prefix, "sim-9-");
    }

    #[test]
    fn bad_values_name_their_option() {
        for (flags, expected) in [
            (
                &["--participants", "0"][..],
                "--participants must be at least 1",
            ),
            (
                &["--update-every", "0"],
                "--update-every must be at least 1",
            ),
            (&["--decision-types", " , "], "--decision-types must name"),
            (&["--decision-types", "a,a"], "a is given twice"),
            (&["--reward-coef", "mood=1"], "--reward-coef: \"mood\""),
            (&["--noise-sd", "-1"], "--noise-sd"),
            (&["--unavailable-share", "1.5"], "--unavailable-share"),
            (
                &["--missed-call-share", "-0.1"],
                "--missed-call-share must lie in [0, 1] (a probability), not -0.1",
            ),
            (
                &["--missing-outcome-share", "1.01"],
                "--missing-outcome-share must lie in [0, 1]",
            ),
            (
                &["--late-upload-share", "NaN"],
                "--late-upload-share must lie in [0, 1]",
            ),
            (&["--late-upload-share", "half"], "invalid value 'half'"),
            (
                &["--start", "2026-01-05 08:00"],
                "--start: \"2026-01-05 08:00\" is not an RFC 3339 time",
            ),
            (&["--clip", "0.8,0.2"], "--clip"),
            (&["--clip", "0.2"], "--clip"),
            (&["--request-timeout-secs", "0"], "--request-timeout-secs"),
            (&["--url", "127.0.0.1:5000"], "--url"),
            (&["--outcome-field", " "], "--outcome-field"),
            (&["--participants", "many"], "invalid value 'many'"),
        ] {
            let err = plan(flags).unwrap_err();
            assert!(err.contains(expected), "{flags:?}: {err}");
        }
    }

    #[test]
    fn the_key_comes_from_the_flag_or_else_the_environment() {
        let cli = Cli::try_parse_from(["simulate"]).unwrap();
        let p = Plan::from_args(cli.args, Some("from-env-0123456789".into())).unwrap();
        assert!(p.api_key.is_some());
        let cli = Cli::try_parse_from(["simulate"]).unwrap();
        assert!(Plan::from_args(cli.args, Some(String::new()))
            .unwrap()
            .api_key
            .is_none());
        let cli = Cli::try_parse_from(["simulate", "--api-key", "from-flag-0123456789"]).unwrap();
        let p = Plan::from_args(cli.args, None).unwrap();
        assert!(!format!("{p:?}").contains("from-flag"), "the key is hidden");
    }

    #[test]
    fn a_config_file_sets_options_and_flags_win() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "sim.toml",
                r#"
                participants = 3
                decision_types = "morning,evening"
                features = "mood:0:1"
                reward_coef = "mood=2"
                seed = 5
                "#,
            )?;
            let p = plan(&["--config", "sim.toml", "--participants", "4"])?;
            assert_eq!(p.participants, 4);
            assert_eq!(p.decision_types, ["morning", "evening"]);
            assert_eq!(p.model.reward.coef, [2.0]);
            assert_eq!(p.seed, 5);
            assert_eq!(p.user_prefix, "sim-5-");

            jail.create_file("typo.toml", "participant = 3")?;
            let err = plan(&["--config", "typo.toml"]).unwrap_err();
            assert!(
                err.contains("typo.toml") && err.contains("participant"),
                "{err}"
            );
            let err = plan(&["--config", "missing.toml"]).unwrap_err();
            assert!(err.contains("missing.toml"), "{err}");
            Ok(())
        });
    }
}
