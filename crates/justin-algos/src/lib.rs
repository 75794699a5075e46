//! Decision algorithms for JustIn, and the registry that finds one by the name given in
//! `algorithm.name`. Each algorithm is a type implementing [`justin_core::Algorithm`]; adding
//! one means adding a module and a line in [`by_name`], never a branch in the core.

use std::sync::Arc;

use justin_core::Algorithm;

pub mod flat_prob;
pub mod linalg;

pub use flat_prob::FlatProb;

/// The names of every algorithm this build knows.
pub const NAMES: &[&str] = &[flat_prob::NAME];

/// The algorithm registered under `name`, or `None` when there is none.
pub fn by_name(name: &str) -> Option<Arc<dyn Algorithm>> {
    match name {
        flat_prob::NAME => Some(Arc::new(FlatProb)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_name_resolves_to_itself() {
        for name in NAMES {
            let algorithm = by_name(name).unwrap();
            assert_eq!(algorithm.name(), *name);
        }
        assert!(by_name("no_such_algorithm").is_none());
    }
}
