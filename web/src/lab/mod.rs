//! The learning lab: a load generator in the page, and guided experiments that break the real cluster and
//! measure what happens.
//!
//! - [`model`]: the arithmetic (messages from counters, per-second figures, gaps, leaders per term, samples),
//!   plain Rust tested natively;
//! - [`load`]: the load generator;
//! - [`experiments`]: the experiments, each a sequence of control-API steps, observations and checks.

pub mod experiments;
pub mod load;
pub mod model;
