//! Application controller: turns each Application into Flux objects (one source, one
//! Kustomization or HelmRelease per policy and cluster) and reports their state.

pub mod build;
pub mod status;
pub mod targets;
