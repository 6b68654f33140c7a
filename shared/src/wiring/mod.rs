//! Composition roots: each assembles the engine with one deployment's adapters, once per
//! process. `embedded` is the one-machine default (`steward serve`); `aws` is what each Lambda
//! function builds at start.

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "embedded")]
pub mod embedded;
