//! When two probabilities count as the same: the one tolerance every comparison of a logged
//! probability uses, whether with an upload (in the core and in each store's SQL) or with a
//! replay.

use crate::domain::Probability;

impl Probability {
    /// The largest difference between two probabilities that still counts as equal, for
    /// uploads and replay (JSON round trips of a float are exact, so this only absorbs foreign
    /// rounding). Stores bind it into the SQL that compares an upload with a logged decision.
    pub const TOLERANCE: f64 = 1e-9;

    /// Whether `self` and `other` differ by no more than [`Probability::TOLERANCE`].
    pub fn agrees_with(self, other: Probability) -> bool {
        (self.get() - other.get()).abs() <= Self::TOLERANCE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(value: f64) -> Probability {
        Probability::new(value).unwrap()
    }

    #[test]
    fn probabilities_agree_up_to_the_tolerance_and_no_further() {
        assert!(p(0.25).agrees_with(p(0.25)));
        assert!(p(0.5).agrees_with(p(0.5 + 1e-10)));
        assert!(p(0.5 + 1e-10).agrees_with(p(0.5)));
        assert!(!p(0.5).agrees_with(p(0.5 + 1e-8)));
        assert!(!p(0.0).agrees_with(p(1.0)));
    }
}
