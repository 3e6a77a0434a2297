//! Staged rollout of an Application across the clusters of its fleets (issue 12): the spec
//! (`spec.stagedRollout`) and the status the controller keeps (`status.stagedRollout`).
//!
//! Served as `ApplicationSpec::staged_rollout` / `ApplicationStatus::staged_rollout`
//! (docs/rollout.md). The status is also the rollout's whole memory: a controller killed at any instant resumes
//! from it (which field makes which step idempotent is documented on the field).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::apps::ClusterSelector;

/// Annotations `kurator rollout promote|pause|resume|abort|undo` write on the Application. Each
/// value is a token; the controller acts once per new token and records it in
/// [`StagedRolloutStatus::handled_requests`].
pub mod annotation {
    pub const PROMOTE: &str = "rollout.apps.kurator.dev/promote";
    pub const PAUSE: &str = "rollout.apps.kurator.dev/pause";
    pub const RESUME: &str = "rollout.apps.kurator.dev/resume";
    pub const ABORT: &str = "rollout.apps.kurator.dev/abort";
    pub const UNDO: &str = "rollout.apps.kurator.dev/undo";
}

/// How a new revision of the Application's source reaches its clusters: stage after stage,
/// each promoted only when its gates pass. Without it every cluster gets a new revision at
/// once (as before).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.stages.all(s, self.stages.exists_one(t, t.name == s.name))")
    .message("stage names must be unique"))]
#[x_kube(validation = Rule::new(
    "self.stages.all(s, !(has(s.rest) && s.rest) || s.name == self.stages[size(self.stages) - 1].name)"
).message("only the last stage may say rest: true"))]
pub struct StagedRolloutSpec {
    /// The stages, in order. A cluster of the destination fleets belongs to the first stage
    /// that selects it; a cluster no stage selects is not updated by a run (give the last stage
    /// `rest: true` to catch every remaining cluster).
    #[schemars(length(min = 1, max = 20))]
    pub stages: Vec<RolloutStage>,
    /// What happens when a stage fails a gate: `Pause` (the default) holds the run where it
    /// is; `Rollback` returns the failed stage's clusters to the run's previous revision and
    /// ends the run.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// How long a cluster may take to become Ready and healthy at a new revision before it
    /// counts as failed. Default 10m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::duration")]
    pub progress_deadline: Option<String>,
}

/// One stage: which clusters, how many at once, how long to soak, which gates.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "[has(self.clusterSelector), has(self.clusters), has(self.rest) && self.rest].filter(x, x).size() == 1"
).message("a stage selects its clusters by exactly one of clusterSelector, clusters or rest: true"))]
pub struct RolloutStage {
    /// Shown in status, events and the CLI; unique within the rollout.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// The destination's clusters whose labels match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_selector: Option<ClusterSelector>,
    /// The destination's clusters with these names (a name not in the destination is ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2000))]
    pub clusters: Option<Vec<String>>,
    /// Every cluster of the destination no earlier stage selected. Last stage only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rest: Option<bool>,
    /// At most this many clusters of the stage are updating at once (a rolling window);
    /// all of them when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_concurrent: Option<i32>,
    /// How long every cluster of the stage must stay Ready and healthy at the new revision
    /// before the gates are evaluated. No soak when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::duration")]
    pub soak: Option<String>,
    /// What must hold before the next stage starts. Health (every Flux object of the stage's
    /// clusters Ready at the new revision, workloads healthy) is always required.
    #[serde(default, skip_serializing_if = "RolloutGates::is_empty")]
    pub gates: RolloutGates,
}

/// The checks of one stage, on top of health.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.metrics) || self.metrics.all(m, self.metrics.exists_one(n, n.name == m.name))")
    .message("metric gate names must be unique within a stage"))]
pub struct RolloutGates {
    /// PromQL checks through the fleet's Thanos Query, each evaluated per cluster of the stage.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub metrics: Vec<MetricGate>,
    /// No new failed results in the policy reports of the stage's clusters since each was
    /// updated (needs the fleet's policy plugin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<bool>,
    /// Held until `kurator rollout promote` once the other gates pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<bool>,
}

impl RolloutGates {
    /// Health only.
    pub fn is_empty(&self) -> bool {
        self == &RolloutGates::default()
    }
}

/// One metric check: passes for a cluster when `value <comparison> threshold` holds.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MetricGate {
    /// Shown in status and events; unique within the stage.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// An instant PromQL query. With `$cluster` in it, the placeholder is replaced by the
    /// cluster's name and the query runs once per cluster (it must return one series).
    /// Without, it runs once per stage and each series is matched to a cluster by its
    /// `cluster` label (keep it: `sum by (cluster) (...)`).
    #[schemars(length(min = 1, max = 4096))]
    pub query: String,
    /// How the value compares with the threshold for the check to pass.
    pub comparison: Comparison,
    pub threshold: f64,
}

/// `<`, `<=`, `>` or `>=`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Comparison {
    #[default]
    #[serde(rename = "<")]
    Less,
    #[serde(rename = "<=")]
    LessOrEqual,
    #[serde(rename = ">")]
    Greater,
    #[serde(rename = ">=")]
    GreaterOrEqual,
}

impl Comparison {
    pub fn as_str(self) -> &'static str {
        match self {
            Comparison::Less => "<",
            Comparison::LessOrEqual => "<=",
            Comparison::Greater => ">",
            Comparison::GreaterOrEqual => ">=",
        }
    }

    /// Whether `value <self> threshold` holds (false for NaN, as every comparison with NaN).
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparison::Less => value < threshold,
            Comparison::LessOrEqual => value <= threshold,
            Comparison::Greater => value > threshold,
            Comparison::GreaterOrEqual => value >= threshold,
        }
    }
}

/// What a failed stage does.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnFailure {
    /// Hold the run where it is: nothing more is updated until resume, abort or a new revision.
    #[default]
    Pause,
    /// Return the failed stage's clusters to the run's previous revision and end the run.
    Rollback,
}

// ---------------------------------------------------------------------------------------------
// Status

/// The rollout's state, kept in `status.stagedRollout`. The controller reads nothing else to
/// know where a run stands.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StagedRolloutStatus {
    /// The revision the last successful run delivered: what rollbacks return to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_revision: Option<String>,
    /// The latest source revision a run was started for (or adopted without a run). A run
    /// starts only for a revision different from this one, so a revision is never rolled out
    /// twice (after an abort, an undo or a restart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_source_revision: Option<String>,
    /// The run in progress (or paused); none between runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RolloutRun>,
    /// Each cluster's pinned revision and state. Outlives runs: after a rollback the fleet may
    /// be mixed. The per-cluster Flux objects are built from this list, never from events.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 2000))]
    pub clusters: Vec<ClusterRolloutStatus>,
    /// The last runs, newest first (at most [`MAX_HISTORY`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub history: Vec<RunSummary>,
    /// The token of the last request of each kind acted on (promote, pause, resume, abort,
    /// undo): an annotation whose value equals it is not acted on again.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub handled_requests: BTreeMap<String, String>,
    /// Number of the last run started (runs are numbered from 1).
    #[serde(default)]
    pub last_run_id: i64,
}

/// How many gate results a stage keeps (the schema's bound on `stage.gates`).
pub const MAX_STAGE_GATES: usize = 4000;

/// How many past runs the status keeps.
pub const MAX_HISTORY: usize = 10;

/// One run: from one revision to another, stage by stage.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutRun {
    pub id: i64,
    /// The stable revision when the run started; none for a first deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_revision: Option<String>,
    pub to_revision: String,
    pub phase: RunPhase,
    pub started_at: Time,
    /// The stage being updated or verified.
    pub stage: StageProgress,
    /// Why the run is paused (set with phase Paused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<PauseReason>,
}

/// Where the current stage stands.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StageProgress {
    /// Index in `spec.stagedRollout.stages`. Promotion is this number moving by one, written
    /// before any cluster of the next stage is pinned: a restart cannot promote twice.
    pub index: i32,
    pub name: String,
    pub phase: StagePhase,
    pub started_at: Time,
    /// Since when every cluster of the stage is healthy at the new revision (the soak clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_since: Option<Time>,
    /// When gate evaluation was asked for: only results measured after it count, so a
    /// restart cannot skip a gate with a result measured before the soak ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verifying_since: Option<Time>,
    /// The gates' latest results for the stage: failed, pending and approval results first;
    /// past [`MAX_STAGE_GATES`] entries passed ones are left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4000))]
    pub gates: Vec<GateResult>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RunPhase {
    #[default]
    Progressing,
    Paused,
    /// Every stage promoted: the run's revision is the stable one.
    Succeeded,
    /// A stage failed and its clusters went back to the previous revision.
    RolledBack,
    /// Stopped by `kurator rollout abort`: updated clusters went back.
    Aborted,
    /// A newer revision started a new run.
    Superseded,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StagePhase {
    /// Clusters being pinned to the new revision (at most `maxConcurrent` at once).
    #[default]
    Updating,
    /// Every cluster healthy; waiting for the soak time.
    Soaking,
    /// Waiting for gate results measured after the soak.
    Verifying,
    /// Gates passed; waiting for `kurator rollout promote`.
    AwaitingApproval,
}

/// Why a run is paused.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PauseReason {
    /// CamelCase: `ManualPause`, `GateFailed`, `HealthFailed`, `NoRevisionToRollBackTo`.
    pub reason: String,
    pub message: String,
    pub since: Time,
}

/// One gate's result, for one cluster (metric, policy) or for the stage (approval).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GateResult {
    /// `policy`, `approval` or the metric gate's name.
    pub gate: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    pub outcome: GateOutcome,
    /// The measured value (metric: the query's value; policy: new failed results).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comparison: Option<Comparison>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Why it failed or waits (a query error, no series, NaN, stale reports ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluated_at: Option<Time>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GateOutcome {
    #[default]
    Pending,
    Passed,
    Failed,
}

/// One cluster of the destination.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRolloutStatus {
    pub name: String,
    /// The stage that selects it; none when no stage does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// The revision its Flux objects are pinned to; none before its first deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    pub state: ClusterRolloutState,
    /// When it entered this state (the progress deadline counts from here).
    pub since: Time,
    /// Failed policy results when it was pinned to the run's revision: the policy gate's
    /// baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_failures_at_start: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClusterRolloutState {
    /// Waiting for its stage (runs its pinned, previous revision).
    #[default]
    Pending,
    /// Pinned to the run's revision, not yet Ready and healthy there.
    Progressing,
    /// Ready and healthy at its pinned revision.
    Healthy,
    /// Missed the progress deadline, or its stage failed a gate on it.
    Failed,
    /// Returned to the previous revision after its stage failed.
    RolledBack,
}

/// A past run.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    pub id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_revision: Option<String>,
    pub to_revision: String,
    /// Succeeded, RolledBack, Aborted or Superseded.
    pub phase: RunPhase,
    pub started_at: Time,
    pub finished_at: Time,
    /// The last stage it reached.
    pub stage: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The gate results that ended it (a rollback's measured values stay visible here).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub failed_gates: Vec<GateResult>,
}

/// How many failed gate results a history entry keeps.
pub const MAX_FAILED_GATES: usize = 20;

#[cfg(test)]
mod tests;
