//! The numerics JustIn's decision algorithms share: small dense symmetric matrices with their
//! Cholesky factors ([`linalg`]) and the standard normal distribution function ([`normal`]).
//! A crate of its own, depending on nothing, so that `justin-algos` and an algorithm crate
//! outside this workspace can both use it without either depending on the other. It does no IO
//! and draws no random numbers: every function is a deterministic function of its arguments, so
//! a replayed decision computes what the original one did.

pub mod linalg;
pub mod normal;
