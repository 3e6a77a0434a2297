//! kurator-controller's integration tests, in one test binary: as a binary each, every file
//! compiled and linked the shared harness (`common`) again, about 20 s of the test build per
//! file. Each file is a module; `scripts/test` selects by module path (`policy_kyverno::` and
//! `rollout_policy::` run in the other lane), as does `cargo test --test e2e policy_kyverno::`.

mod common;

mod applications;
mod applications_flux;
mod attached_clusters;
mod fleets;
mod metrics_thanos;
mod plugins_flux;
mod policy_kyverno;
mod policy_reports;
mod rbac;
mod rollout;
mod rollout_helm;
mod rollout_metrics;
mod rollout_policy;
mod triggers;
