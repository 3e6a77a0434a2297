//! Policy reports: the `wgpolicyk8s.io/v1alpha2` PolicyReport and ClusterPolicyReport that
//! Kyverno writes in each member, and their fleet-wide aggregate kept in the Fleet's status.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The members' policy reports, aggregated (placeholder: filled in by the policy report work).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FleetPolicyReport {}
