//! The synthetic study: context features drawn from normal distributions, availability, and
//! a linear reward model with noise. Every decision draws from a generator of its own, seeded
//! from the simulator's seed, the participant's number and the decision index, so a run's
//! contexts, noise and availability do not depend on the order in which threads reach the
//! decisions, nor on how often updates are requested.

use justin_core::DecisionRng;
use serde_json::{Map, Value};

/// One context feature, drawn from N(mean, sd²).
#[derive(Debug, Clone, PartialEq)]
pub struct Feature {
    /// Its key in the context.
    pub name: String,
    /// Its mean.
    pub mean: f64,
    /// Its standard deviation (0 makes it a constant).
    pub sd: f64,
}

/// Parses `name:mean:sd,...` (an empty text gives no features).
///
/// # Errors
/// A part that is not `name:mean:sd`, a number that is not finite, a negative sd, or a name
/// given twice.
pub fn parse_features(text: &str) -> Result<Vec<Feature>, String> {
    let mut features: Vec<Feature> = Vec::new();
    for part in items(text) {
        let fields: Vec<&str> = part.split(':').map(str::trim).collect();
        let [name, mean, sd] = fields[..] else {
            return Err(format!("--features: {part:?} is not name:mean:sd"));
        };
        if name.is_empty() {
            return Err(format!("--features: {part:?} has no name"));
        }
        let mean = number(mean, "--features", name)?;
        let sd = number(sd, "--features", name)?;
        if sd < 0.0 {
            return Err(format!("--features: the sd of {name} must not be negative"));
        }
        if features.iter().any(|f| f.name == name) {
            return Err(format!("--features: {name} is given twice"));
        }
        features.push(Feature {
            name: name.to_owned(),
            mean,
            sd,
        });
    }
    Ok(features)
}

/// Parses `name=value,...` into one coefficient per feature, in the features' order (0 for
/// a feature not named). `flag` names the option in messages.
///
/// # Errors
/// A part that is not `name=value`, a value that is not a finite number, a name that is not a
/// feature, or a name given twice.
pub fn parse_coefficients(
    text: &str,
    flag: &str,
    features: &[Feature],
) -> Result<Vec<f64>, String> {
    let mut coefficients = vec![0.0; features.len()];
    let mut named = vec![false; features.len()];
    for part in items(text) {
        let Some((name, value)) = part.split_once('=') else {
            return Err(format!("{flag}: {part:?} is not name=value"));
        };
        let name = name.trim();
        let Some(at) = features.iter().position(|f| f.name == name) else {
            return Err(format!(
                "{flag}: {name:?} is not one of the features (--features)"
            ));
        };
        if named[at] {
            return Err(format!("{flag}: {name} is given twice"));
        }
        named[at] = true;
        coefficients[at] = number(value.trim(), flag, name)?;
    }
    Ok(coefficients)
}

/// The comma-separated items of `text`, trimmed, without empty ones.
pub fn items(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn number(text: &str, flag: &str, name: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(x),
        _ => Err(format!(
            "{flag}: {text:?} for {name} is not a finite number"
        )),
    }
}

/// The reward of a decision: `intercept + Σ coef·x + action·(action_intercept + Σ
/// action_coef·x) + N(0, noise_sd²)`.
#[derive(Debug, Clone, PartialEq)]
pub struct RewardModel {
    /// The reward at action 0 with every feature at 0.
    pub intercept: f64,
    /// The treatment effect with every feature at 0.
    pub action_intercept: f64,
    /// The main effects, one per feature.
    pub coef: Vec<f64>,
    /// The action × feature interactions, one per feature.
    pub action_coef: Vec<f64>,
    /// The noise's standard deviation.
    pub noise_sd: f64,
}

/// What the simulator draws for one decision time.
#[derive(Debug, Clone, PartialEq)]
pub struct Draw {
    /// Whether the participant is available for treatment.
    pub available: bool,
    /// The features' values, in the features' order.
    pub values: Vec<f64>,
    /// The reward noise, before scaling by `noise_sd`: a standard normal draw.
    pub noise: f64,
    /// Whether the study server asks for this decision at all (no `/action` call when not).
    pub called: bool,
    /// Whether the outcome goes missing: no upload (for an available decision only).
    pub outcome_missing: bool,
    /// Whether the upload is held back until the next update has completed (for an available
    /// decision only).
    pub upload_late: bool,
    /// Which features' values are sent as `null` (a sensor not worn, a survey skipped), in the
    /// features' order; the reward still follows the drawn values.
    pub nulls: Vec<bool>,
}

/// The shares of decision times with no call, of available decisions with no upload, and of
/// available decisions whose upload is held back until after the next update.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Gaps {
    /// The probability that a decision time gets no `/action` call.
    pub missed_call: f64,
    /// The probability that an available decision gets no upload.
    pub missing_outcome: f64,
    /// The probability that an available decision's upload is held back until the next update
    /// has completed.
    pub late_upload: f64,
    /// The probability that each context value is sent as `null`.
    pub null_value: f64,
}

/// The features, the reward model and the share of unavailable decision times.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// The context features.
    pub features: Vec<Feature>,
    /// The reward model.
    pub reward: RewardModel,
    /// The probability that a decision time is unavailable.
    pub unavailable_share: f64,
    /// Missed calls, missing outcomes and late uploads.
    pub gaps: Gaps,
}

impl Model {
    /// The draws of decision `decision_idx` of participant number `participant`.
    pub fn draw(&self, seed: u64, participant: u64, decision_idx: u64) -> Draw {
        let mut normal = Normal::new(decision_seed(seed, participant, decision_idx));
        // Always the same draws in the same order, so that changing the unavailable share
        // leaves the contexts and the noise as they were.
        let available = normal.uniform() >= self.unavailable_share;
        let values = self
            .features
            .iter()
            .map(|f| f.mean + f.sd * normal.standard())
            .collect();
        let noise = normal.standard();
        // Drawn after everything else, so that the gaps leave the draws above as they were.
        let called = normal.uniform() >= self.gaps.missed_call;
        let outcome_missing = normal.uniform() < self.gaps.missing_outcome;
        let upload_late = normal.uniform() < self.gaps.late_upload;
        let nulls = self
            .features
            .iter()
            .map(|_| normal.uniform() < self.gaps.null_value)
            .collect();
        Draw {
            available,
            values,
            noise,
            called,
            outcome_missing,
            upload_late,
            nulls,
        }
    }

    /// The context sent to the service: each feature's value under its name, `null` where
    /// the draw lost it.
    pub fn context(&self, draw: &Draw) -> Map<String, Value> {
        self.features
            .iter()
            .zip(&draw.values)
            .enumerate()
            .map(|(i, (f, &x))| {
                let lost = draw.nulls.get(i).copied().unwrap_or(false);
                (
                    f.name.clone(),
                    if lost { Value::Null } else { Value::from(x) },
                )
            })
            .collect()
    }

    /// The reward of `draw` when the service chose `action` (0 or 1).
    pub fn reward(&self, draw: &Draw, action: u8) -> f64 {
        let r = &self.reward;
        let dot = |coef: &[f64]| -> f64 { coef.iter().zip(&draw.values).map(|(c, x)| c * x).sum() };
        let effect = r.action_intercept + dot(&r.action_coef);
        r.intercept + dot(&r.coef) + f64::from(action) * effect + r.noise_sd * draw.noise
    }
}

/// The SplitMix64 finaliser: spreads nearby inputs over the whole range.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The seed of one decision's generator. Chained rather than XORed together, so that
/// (participant, decision) pairs cannot cancel out.
fn decision_seed(seed: u64, participant: u64, decision_idx: u64) -> u64 {
    mix(mix(mix(seed) ^ participant) ^ decision_idx)
}

/// Uniform and standard normal draws (Box–Muller) from a PCG32 generator of the simulator's
/// own; the service's generators are not involved.
#[derive(Debug, Clone)]
pub struct Normal {
    rng: DecisionRng,
    spare: Option<f64>,
}

impl Normal {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: DecisionRng::from_seed(seed),
            spare: None,
        }
    }

    /// A uniform draw from [0, 1).
    pub fn uniform(&mut self) -> f64 {
        self.rng.uniform()
    }

    /// A standard normal draw. Box–Muller gives two per pair of uniforms; the second is kept
    /// for the next call.
    pub fn standard(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        // 1 - u lies in (0, 1], so its logarithm is finite.
        let u1 = 1.0 - self.rng.uniform();
        let u2 = self.rng.uniform();
        let radius = (-2.0 * u1.ln()).sqrt();
        let angle = std::f64::consts::TAU * u2;
        self.spare = Some(radius * angle.sin());
        radius * angle.cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features() -> Vec<Feature> {
        parse_features("temperature:25:5, steps:0:1").unwrap()
    }

    fn model(unavailable_share: f64) -> Model {
        let features = features();
        Model {
            reward: RewardModel {
                intercept: 1.0,
                action_intercept: 0.5,
                coef: parse_coefficients("temperature=0.1", "--reward-coef", &features).unwrap(),
                action_coef: parse_coefficients("steps=-2", "--reward-action-coef", &features)
                    .unwrap(),
                noise_sd: 0.0,
            },
            features,
            unavailable_share,
            gaps: Gaps::default(),
        }
    }

    #[test]
    fn features_parse_with_their_moments() {
        assert_eq!(
            features(),
            vec![
                Feature {
                    name: "temperature".into(),
                    mean: 25.0,
                    sd: 5.0
                },
                Feature {
                    name: "steps".into(),
                    mean: 0.0,
                    sd: 1.0
                },
            ]
        );
        assert_eq!(parse_features(" ").unwrap(), vec![]);
    }

    #[test]
    fn malformed_features_are_refused_with_the_reason() {
        for (text, reason) in [
            ("temperature:25", "is not name:mean:sd"),
            ("temperature:25:5:1", "is not name:mean:sd"),
            (":25:5", "has no name"),
            ("t:warm:5", "is not a finite number"),
            ("t:1:inf", "is not a finite number"),
            ("t:1:-1", "must not be negative"),
            ("t:1:1,t:2:2", "given twice"),
        ] {
            let err = parse_features(text).unwrap_err();
            assert!(err.contains(reason), "{text}: {err}");
        }
    }

    #[test]
    fn coefficients_line_up_with_the_features() {
        let f = features();
        assert_eq!(
            parse_coefficients("steps=2, temperature=-0.5", "--reward-coef", &f).unwrap(),
            vec![-0.5, 2.0]
        );
        assert_eq!(
            parse_coefficients("", "--reward-coef", &f).unwrap(),
            vec![0.0, 0.0]
        );
        for (text, reason) in [
            ("steps", "is not name=value"),
            ("mood=1", "is not one of the features"),
            ("steps=x", "is not a finite number"),
            ("steps=1,steps=2", "given twice"),
        ] {
            let err = parse_coefficients(text, "--reward-coef", &f).unwrap_err();
            assert!(err.starts_with("--reward-coef: "), "{err}");
            assert!(err.contains(reason), "{text}: {err}");
        }
    }

    #[test]
    fn the_reward_follows_the_linear_model() {
        let m = model(0.0);
        let draw = Draw {
            available: true,
            values: vec![20.0, 0.5],
            noise: 0.0,
            called: true,
            outcome_missing: false,
            upload_late: false,
            nulls: vec![false, false],
        };
        // 1 + 0.1·20 = 3 without treatment; the effect is 0.5 - 2·0.5 = -0.5.
        assert!((m.reward(&draw, 0) - 3.0).abs() < 1e-12);
        assert!((m.reward(&draw, 1) - 2.5).abs() < 1e-12);
        let noisy = Model {
            reward: RewardModel {
                noise_sd: 2.0,
                ..m.reward.clone()
            },
            ..m
        };
        let draw = Draw {
            noise: -0.25,
            ..draw
        };
        assert!((noisy.reward(&draw, 0) - 2.5).abs() < 1e-12);
    }

    #[test]
    fn draws_depend_only_on_the_seed_participant_and_decision() {
        let m = model(0.3);
        assert_eq!(m.draw(7, 3, 11), m.draw(7, 3, 11));
        assert_ne!(m.draw(7, 3, 11), m.draw(8, 3, 11));
        assert_ne!(m.draw(7, 3, 11), m.draw(7, 4, 11));
        assert_ne!(m.draw(7, 3, 11), m.draw(7, 3, 12));
        // Swapping participant and decision gives another generator.
        assert_ne!(m.draw(7, 3, 11), m.draw(7, 11, 3));
    }

    #[test]
    fn the_unavailable_share_changes_availability_only() {
        let never = model(0.0).draw(5, 1, 2);
        let always = model(1.0).draw(5, 1, 2);
        assert!(never.available);
        assert!(!always.available);
        assert_eq!(never.values, always.values);
        assert_eq!(never.noise, always.noise);
    }

    #[test]
    fn the_gaps_change_nothing_else_and_come_in_their_shares() {
        let plain = model(0.25);
        let gappy = Model {
            gaps: Gaps {
                missed_call: 0.1,
                missing_outcome: 0.2,
                late_upload: 0.3,
                null_value: 0.1,
            },
            ..plain.clone()
        };
        let n = 20_000u32;
        let (mut missed, mut missing, mut late, mut nulls) = (0u32, 0u32, 0u32, 0u32);
        for i in 0..n {
            let (p, d) = (u64::from(i % 100), u64::from(i / 100));
            let (a, b) = (plain.draw(42, p, d), gappy.draw(42, p, d));
            assert_eq!(
                (a.available, &a.values, a.noise),
                (b.available, &b.values, b.noise)
            );
            assert!(a.called && !a.outcome_missing && !a.upload_late);
            assert!(a.nulls.iter().all(|n| !n));
            assert_eq!(b, gappy.draw(42, p, d), "the same draw each time");
            missed += u32::from(!b.called);
            missing += u32::from(b.outcome_missing);
            late += u32::from(b.upload_late);
            nulls += b.nulls.iter().map(|n| u32::from(*n)).sum::<u32>();
            let context = gappy.context(&b);
            for (f, lost) in gappy.features.iter().zip(&b.nulls) {
                assert_eq!(context[&f.name].is_null(), *lost);
            }
        }
        let features = u32::try_from(plain.features.len()).unwrap();
        let null_share = f64::from(nulls) / f64::from(n * features);
        assert!((null_share - 0.1).abs() < 0.02, "{null_share} for 0.1");
        for (count, share) in [(missed, 0.1), (missing, 0.2), (late, 0.3)] {
            let seen = f64::from(count) / f64::from(n);
            assert!((seen - share).abs() < 0.02, "{seen} for {share}");
        }
        let all = Model {
            gaps: Gaps {
                missed_call: 1.0,
                missing_outcome: 1.0,
                late_upload: 1.0,
                null_value: 1.0,
            },
            ..plain
        };
        let d = all.draw(1, 2, 3);
        assert!(!d.called && d.outcome_missing && d.upload_late);
    }

    #[test]
    fn features_have_roughly_their_mean_and_sd() {
        let m = model(0.25);
        let n = 20_000u32;
        let (mut sum, mut sum_sq, mut unavailable) = (0.0, 0.0, 0u32);
        for i in 0..n {
            let d = m.draw(42, u64::from(i % 100), u64::from(i / 100));
            sum += d.values[0];
            sum_sq += d.values[0] * d.values[0];
            unavailable += u32::from(!d.available);
        }
        let mean = sum / f64::from(n);
        let sd = (sum_sq / f64::from(n) - mean * mean).sqrt();
        // Standard errors: 5/√20000 ≈ 0.035 for the mean, about 0.025 for the sd.
        assert!((mean - 25.0).abs() < 0.15, "mean {mean}");
        assert!((sd - 5.0).abs() < 0.15, "sd {sd}");
        let share = f64::from(unavailable) / f64::from(n);
        assert!((share - 0.25).abs() < 0.02, "unavailable share {share}");
    }

    #[test]
    fn standard_normal_draws_have_mean_0_and_sd_1() {
        let mut g = Normal::new(1);
        let n = 50_000;
        let draws: Vec<f64> = (0..n).map(|_| g.standard()).collect();
        let mean = draws.iter().sum::<f64>() / f64::from(n);
        let var = draws.iter().map(|z| (z - mean).powi(2)).sum::<f64>() / f64::from(n);
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((var - 1.0).abs() < 0.03, "variance {var}");
        let within_one = draws.iter().filter(|z| z.abs() < 1.0).count();
        let share = within_one as f64 / f64::from(n);
        assert!((share - 0.6827).abs() < 0.01, "share within 1 sd {share}");
    }

    #[test]
    fn the_context_names_each_feature() {
        let m = model(0.0);
        let draw = Draw {
            available: true,
            values: vec![21.5, -1.0],
            noise: 0.0,
            called: true,
            outcome_missing: false,
            upload_late: false,
            nulls: vec![false, false],
        };
        let context = Value::Object(m.context(&draw));
        assert_eq!(
            context,
            serde_json::json!({"temperature": 21.5, "steps": -1.0})
        );
    }
}
