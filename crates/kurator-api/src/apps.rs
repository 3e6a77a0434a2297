//! `apps.kurator.dev/v1alpha1` Application: one source, sync policies, fleet destinations.
//! Source and policy fields mirror the Flux specs Kurator embeds (field names unchanged).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The Flux source specs an Application embeds as they are (defined with their Flux kinds).
pub use crate::flux::{
    GitRepositoryRef, GitRepositorySpec, HelmRepositorySpec, LocalObjectReference,
    OciRepositoryRef, OciRepositorySpec,
};

type Json = serde_json::Value;

/// An application distributed through GitOps to the clusters of one or more fleets.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "apps.kurator.dev",
    version = "v1alpha1",
    kind = "Application",
    namespaced,
    status = "ApplicationStatus",
    category = "kurator-dev",
    printcolumn(
        name = "Revision",
        type_ = "string",
        json_path = ".status.sourceRevision"
    ),
    printcolumn(name = "Synced", type_ = "string", json_path = ".status.synced"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.destination) || self.syncPolicies.all(p, has(p.destination))")
    .message("every sync policy needs a destination: set spec.destination or the policy's own destination"))]
pub struct ApplicationSpec {
    /// Where the artifact comes from: exactly one of gitRepository, helmRepository, ociRepository.
    pub source: ApplicationSource,
    /// How the artifact is applied and where. Policy names default to `<app>-<index>`.
    #[schemars(length(min = 1, max = 64))]
    pub sync_policies: Vec<ApplicationSyncPolicy>,
    /// Default destination for policies that do not name their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<ApplicationDestination>,
    /// Deliver a new source revision stage by stage instead of to every cluster at once
    /// (docs/rollout.md). Unset: every cluster gets a new revision at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged_rollout: Option<crate::rollout::StagedRolloutSpec>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "[has(self.gitRepository), has(self.helmRepository), has(self.ociRepository)].filter(x, x).size() == 1"
).message("exactly one of gitRepository, helmRepository or ociRepository must be set"))]
pub struct ApplicationSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_repository: Option<GitRepositorySpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helm_repository: Option<HelmRepositorySpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oci_repository: Option<OciRepositorySpec>,
}

/// Which clusters of which fleet receive a policy.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationDestination {
    /// A Fleet in the Application's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub fleet: String,
    /// Only the fleet's clusters whose labels match; all of them when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_selector: Option<ClusterSelector>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
}

/// How the artifact is applied: exactly one of kustomization or helm.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.kustomization) != has(self.helm)")
    .message("exactly one of kustomization or helm must be set in a sync policy"))]
#[x_kube(validation = Rule::new("!has(self.clusterVariables) || !self.clusterVariables || has(self.kustomization)")
    .message("clusterVariables needs a kustomization policy (Flux substitutes variables in Kustomizations only)"))]
pub struct ApplicationSyncPolicy {
    /// Defaults to `<application>-<index>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63), regex(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kustomization: Option<Kustomization>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helm: Option<HelmRelease>,
    /// Overrides the Application's destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<ApplicationDestination>,
    /// Kurator in Rust addition, off by default: set `KURATOR_CLUSTER`, `KURATOR_FLEET` and
    /// `KURATOR_CLUSTER_KIND` in each generated Kustomization's `postBuild.substitute`, so one
    /// manifest can say `${KURATOR_CLUSTER}`. Off by default because Flux then rewrites every
    /// `${...}` in the manifests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_variables: Option<bool>,
}

/// The subset of the Flux Kustomization spec (kustomize.toolkit.fluxcd.io/v1) Kurator exposes.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Kustomization {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub common_metadata: Option<CommonMetadata>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub depends_on: Vec<NamespacedObjectReference>,
    #[schemars(schema_with = "crate::schema::duration")]
    pub interval: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::duration")]
    pub retry_interval: Option<String>,
    /// Path in the source; defaults to its root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub path: Option<String>,
    /// Delete from the clusters what the source no longer contains.
    pub prune: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::free_form_list")]
    pub patches: Option<Vec<Json>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::free_form_list")]
    pub images: Option<Vec<Json>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub target_namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::duration")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub components: Vec<String>,
    /// Wait for every object applied to become ready (Flux's health checks, within
    /// `timeout`): the cluster counts as synced only then. Not in upstream Kurator v0.4.0;
    /// passed to the Flux Kustomization's `wait` as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<bool>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
pub struct CommonMetadata {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
pub struct NamespacedObjectReference {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// The subset of the Flux HelmRelease spec (helm.toolkit.fluxcd.io/v2) Kurator exposes.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HelmRelease {
    pub chart: HelmChartTemplate,
    #[schemars(schema_with = "crate::schema::duration")]
    pub interval: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 53))]
    pub release_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub target_namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub depends_on: Vec<NamespacedObjectReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::duration")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_history: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_client: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::free_form_object")]
    pub install: Option<Json>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::free_form_object")]
    pub upgrade: Option<Json>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::free_form_object")]
    pub rollback: Option<Json>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::free_form_object")]
    pub uninstall: Option<Json>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::free_form_list")]
    pub values_from: Option<Vec<Json>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::free_form_object")]
    pub values: Option<Json>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
pub struct HelmChartTemplate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<CommonMetadata>,
    pub spec: HelmChartTemplateSpec,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HelmChartTemplateSpec {
    /// Chart name in the repository (or path in a git source).
    #[schemars(length(min = 1, max = 2048))]
    pub chart: String,
    /// SemVer expression; latest when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::duration")]
    pub interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^(ChartVersion|Revision)$"))]
    pub reconcile_strategy: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values_files: Vec<String>,
}

/// What the controller last observed of an Application.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationStatus {
    /// A copy of the Flux source's status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_status: Option<ApplicationSourceStatus>,
    /// The status of each Flux Kustomization / HelmRelease, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sync_status: Vec<ApplicationSyncStatus>,
    /// The source's latest artifact revision (e.g. `master@sha1:…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_revision: Option<String>,
    /// `synced/total` selected clusters, for display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced: Option<String>,
    /// Selected clusters that run the source's latest revision.
    #[serde(default)]
    pub synced_clusters: i32,
    /// Clusters selected by all policies.
    #[serde(default)]
    pub total_clusters: i32,
    /// One entry per policy × selected cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<ApplicationClusterStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Where the staged rollout stands (with `spec.stagedRollout`): the controller's only
    /// memory of a run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged_rollout: Option<crate::rollout::StagedRolloutStatus>,
}

/// Where one policy stands on one cluster.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationClusterStatus {
    pub policy: String,
    pub fleet: String,
    pub cluster: String,
    pub cluster_kind: crate::fleet::ClusterKind,
    /// `Kustomization` or `HelmRelease`, and its name on the host.
    pub kind: String,
    pub name: String,
    /// The revision Flux last applied to the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_revision: Option<String>,
    /// Applied and at the source's latest revision.
    pub ready: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationSourceStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::free_form_object")]
    pub git_repo_status: Option<Json>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::free_form_object")]
    pub helm_repo_status: Option<Json>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::free_form_object")]
    pub oci_repo_status: Option<Json>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationSyncStatus {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::free_form_object")]
    pub kustomization_status: Option<Json>,
    /// Capitalised as upstream spells it.
    #[serde(
        default,
        rename = "HelmReleaseStatus",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(schema_with = "crate::schema::free_form_object")]
    pub helm_release_status: Option<Json>,
}
