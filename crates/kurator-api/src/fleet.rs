//! `fleet.kurator.dev/v1alpha1` Fleet: a group of clusters plus the plugins installed on them.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A group of clusters managed as one: same applications, same monitoring, same policies.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "fleet.kurator.dev",
    version = "v1alpha1",
    kind = "Fleet",
    plural = "fleets",
    namespaced,
    status = "FleetStatus",
    category = "kurator-dev",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyClusters"),
    printcolumn(
        name = "Unready",
        type_ = "integer",
        json_path = ".status.unReadyClusters"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct FleetSpec {
    /// The clusters of the fleet, in the fleet's namespace. A cluster belongs to one fleet.
    #[serde(default)]
    #[schemars(length(max = 2000))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name", "kind"]))]
    pub clusters: Vec<FleetCluster>,
    /// Plugins installed on every cluster of the fleet (and on the host where they aggregate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<PluginConfig>,
}

/// A reference to a cluster object in the fleet's namespace.
#[derive(
    Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[serde(rename_all = "camelCase")]
pub struct FleetCluster {
    /// Name of the cluster object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Kind of the cluster object. Defaults to `Cluster`, as upstream.
    #[serde(default)]
    pub kind: ClusterKind,
}

/// The kinds of cluster objects a fleet can hold.
#[derive(
    Serialize,
    Deserialize,
    JsonSchema,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
)]
pub enum ClusterKind {
    #[default]
    Cluster,
    AttachedCluster,
    CustomCluster,
}

impl ClusterKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterKind::Cluster => "Cluster",
            ClusterKind::AttachedCluster => "AttachedCluster",
            ClusterKind::CustomCluster => "CustomCluster",
        }
    }
}

impl std::fmt::Display for ClusterKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Plugins of a fleet.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PluginConfig {
    /// Prometheus with a Thanos sidecar on every cluster, Thanos Query on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<MetricConfig>,
    /// Grafana on the host (with a Thanos datasource when metric is on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grafana: Option<GrafanaConfig>,
    /// Policy management on every cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyConfig>,
}

/// Monitoring: Thanos on the host, Prometheus on the members.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "has(self.thanos) && has(self.thanos.objectStoreConfig) && self.thanos.objectStoreConfig.secretName != ''"
).message("the metric plugin needs thanos.objectStoreConfig.secretName: a Secret holding objstore.yml"))]
pub struct MetricConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thanos: Option<ThanosConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusConfig>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ThanosConfig {
    /// Chart override; fields left empty keep the default (bitnamicharts thanos 12.5.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<ChartConfig>,
    /// Object store of the Thanos sidecars and store gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_store_config: Option<ObjectStoreConfig>,
    /// Helm values merged over the defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::free_form_object")]
    pub extra_args: Option<serde_json::Value>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStoreConfig {
    /// Secret in the fleet's namespace holding key `objstore.yml` (Thanos object-store format).
    #[schemars(length(max = 253))]
    pub secret_name: String,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusConfig {
    /// Chart override; fields left empty keep the default (bitnamicharts kube-prometheus 8.9.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<ChartConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_exporter: Option<ExporterConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_state_metrics: Option<ExporterConfig>,
    /// Helm values merged over the defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::free_form_object")]
    pub extra_args: Option<serde_json::Value>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
pub struct ExporterConfig {
    #[serde(default)]
    pub enabled: bool,
}

/// Where a plugin's Helm chart comes from. Empty fields keep the component's default.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
pub struct ChartConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub repository: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub version: Option<String>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GrafanaConfig {
    /// Chart override; fields left empty keep the default (bitnamicharts grafana 8.2.33).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<ChartConfig>,
    /// Helm values merged over the defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::free_form_object")]
    pub extra_args: Option<serde_json::Value>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
pub struct PolicyConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kyverno: Option<KyvernoConfig>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KyvernoConfig {
    /// Chart override; fields left empty keep the default (kyverno 3.0.0). The repository and
    /// version also serve the kyverno-policies release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<ChartConfig>,
    /// Pod security standard enforced or audited on every cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_security: Option<PodSecurityPolicy>,
    /// Helm values merged over the defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::free_form_object")]
    pub extra_args: Option<serde_json::Value>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodSecurityPolicy {
    #[serde(default)]
    pub standard: PodSecurityStandard,
    #[serde(default)]
    pub severity: PolicySeverity,
    #[serde(default)]
    pub validation_failure_action: ValidationFailureAction,
}

/// https://kubernetes.io/docs/concepts/security/pod-security-standards
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PodSecurityStandard {
    Privileged,
    #[default]
    Baseline,
    Restricted,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PolicySeverity {
    Low,
    #[default]
    Medium,
    High,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ValidationFailureAction {
    Enforce,
    #[default]
    Audit,
}

/// Kurator's fleet phases.
pub mod phase {
    pub const PENDING: &str = "Pending";
    pub const RUNNING: &str = "Running";
    pub const READY: &str = "Ready";
    pub const FAILED: &str = "Failed";
    pub const TERMINATING: &str = "Terminating";
    pub const TERMINATE_SUCCEEDED: &str = "TerminateSucceeded";
    pub const TERMINATE_FAILED: &str = "TerminateFailed";
}

/// What the controller last observed of a Fleet.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FleetStatus {
    /// Kurator's phase: Running while members are not all ready, Ready when they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// CamelCase reason for the phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default)]
    pub ready_clusters: i32,
    /// Unready members, missing ones included.
    #[serde(default)]
    pub un_ready_clusters: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_secret: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub plugin_endpoints: BTreeMap<String, Vec<String>>,
    /// Per-member state, in spec order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<FleetClusterStatus>,
    /// Per enabled plugin component and cluster: whether its HelmRelease is ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<PluginComponentStatus>,
    /// The members' policy reports (the format Kyverno writes), aggregated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_report: Option<crate::policy_report::FleetPolicyReport>,
    /// `Ready`, `ClustersReady`, `MembershipConflict` and one per enabled plugin
    /// (`MetricReady`, `GrafanaReady`, `PolicyReady`); see docs/conditions.md. A map keyed by
    /// `type`: the fleet and plugins controllers each own their own entries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// One plugin component (a HelmRelease) as the fleet sees it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PluginComponentStatus {
    /// `metric`, `grafana` or `kyverno` (the `fleet.kurator.dev/plugin` label).
    pub plugin: String,
    /// `thanos`, `prometheus`, `grafana`, `kyverno` or `kyverno-policies`.
    pub component: String,
    /// The member it installs into; absent for components installed on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The HelmRelease's name, in the fleet's namespace.
    pub release: String,
    pub ready: bool,
    /// CamelCase reason when not ready (the HelmRelease's own, or Pending/WaitingForKyverno).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One member as the fleet sees it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FleetClusterStatus {
    pub name: String,
    pub kind: ClusterKind,
    pub ready: bool,
    /// CamelCase reason when not ready (NotFound, NotReady, ClaimedByOtherFleet ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
