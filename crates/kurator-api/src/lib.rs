//! Kurator's API: the custom resources (AttachedCluster, Cluster, CustomCluster, Fleet,
//! Application), their CRDs, condition helpers, the labels the controllers share, and what a
//! fleet needs of any member ([`MemberCluster`]), and the rules a kubeconfig Secret must follow
//! ([`kubeconfig`]).
//!
//! Types only: nothing in this crate does network I/O.

// Several `printcolumn(type_ = ...)` entries in one `#[kube]` attribute trip this lint.
#![allow(clippy::duplicated_attributes)]

pub mod apps;
pub mod cluster;
pub mod conditions;
pub mod crds;
pub mod fleet;
pub mod flux;
pub mod kubeconfig;
pub mod labels;
pub mod member;
pub mod policy_report;
pub mod rollout;
mod schema;

pub use apps::Application;
pub use cluster::{AttachedCluster, Cluster, CustomCluster};
pub use fleet::Fleet;
pub use member::{ClusterReadiness, MemberCluster};
