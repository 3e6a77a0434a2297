//! Staged rollout (issue 12), the pure core: no I/O, nothing wired to the controller yet
//! (docs/rollout.md is the design).
//!
//! - [`stages`]: which clusters each stage holds, `maxConcurrent`;
//! - [`gates`]: metric and policy verdicts;
//! - [`machine`]: `step(spec, state, observations, now) -> (state, actions)`, the run's
//!   transitions, idempotent so that a controller killed at any instant resumes from status;
//! - [`observe`]: what a step reads (observations, requests) and asks for (actions);
//! - [`condition`]: the `StagedRollout` condition derived from the state;
//! - [`pinning`]: pinned source names, refs, which revisions are still in use;
//! - [`schedule`]: when the next step is due by the clock alone (soak end, deadlines).

pub mod condition;
pub mod gates;
pub mod machine;
pub mod observe;
pub mod pinning;
pub mod schedule;
pub mod stages;

#[cfg(test)]
mod tests;
