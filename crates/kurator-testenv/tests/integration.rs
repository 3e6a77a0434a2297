//! kurator-testenv's integration tests, in one test binary: as a binary each, every file
//! linked the crate and its dependencies again. Each file is a module (select one with
//! `cargo test -p kurator-testenv --test integration kyverno::`).

mod common;

mod control_planes;
mod detached;
mod flux;
mod flux_detached;
mod kyverno;
mod kyverno_charts;
mod metrics;
mod nodes;
mod plugin_charts;
mod servers;
mod startup_errors;
