//! Minimal typed Flux resources: the fields Kurator sets and reads, no more.
//!
//! - `source.toolkit.fluxcd.io/v1`: [`GitRepository`], [`HelmRepository`], [`OCIRepository`]
//!   (their specs are the ones an Application embeds, see [`crate::apps`]), and [`HelmChart`]
//!   (a staged rollout's tracking chart);
//! - `kustomize.toolkit.fluxcd.io/v1`: [`Kustomization`];
//! - `helm.toolkit.fluxcd.io/v2`: [`HelmRelease`].
//!
//! These CRDs belong to Flux: they are not in [`crate::crds::all`]; a host runs Flux's own.
//! Each type is kube's `#[derive(CustomResource)]` on its spec (schema disabled: we never
//! generate these CRDs), so `Api<Kustomization>` and reflector stores work. The derived
//! serialisation writes `apiVersion` and `kind`, skips a `None` status, and the specs omit
//! every unset field, so a server-side apply owns exactly what we send. Statuses are loose
//! ([`FluxStatus`]): unknown fields are kept, missing ones default, so a newer Flux never
//! breaks a watch. [`readiness`] is the one rule for "is this Flux object ready".

use std::collections::BTreeMap;

use kube::CustomResource;
use serde::{Deserialize, Serialize};

pub use crate::apps::{CommonMetadata, NamespacedObjectReference};

mod readiness;
mod source;
mod status_view;

pub use readiness::{FluxReadiness, readiness};
pub use status_view::{DESIRED_HASH, HasFluxStatus, StatusView};

pub use source::{
    GitRepository, GitRepositoryRef, GitRepositorySpec, HelmChart, HelmChartSourceReference,
    HelmChartSpec, HelmRepository, HelmRepositorySpec, LocalObjectReference, OCIRepository,
    OciRepositoryRef, OciRepositorySpec,
};

type Json = serde_json::Value;

pub const SOURCE_GROUP: &str = "source.toolkit.fluxcd.io";
pub const SOURCE_VERSION: &str = "v1";
pub const KUSTOMIZE_GROUP: &str = "kustomize.toolkit.fluxcd.io";
pub const KUSTOMIZE_VERSION: &str = "v1";
pub const HELM_GROUP: &str = "helm.toolkit.fluxcd.io";
pub const HELM_VERSION: &str = "v2";

/// The Flux kinds Kurator creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum FluxKind {
    GitRepository,
    HelmRepository,
    #[serde(rename = "OCIRepository")]
    OciRepository,
    HelmChart,
    Kustomization,
    HelmRelease,
}

impl FluxKind {
    pub const ALL: [FluxKind; 6] = [
        FluxKind::GitRepository,
        FluxKind::HelmRepository,
        FluxKind::OciRepository,
        FluxKind::HelmChart,
        FluxKind::Kustomization,
        FluxKind::HelmRelease,
    ];

    /// The Kubernetes kind, as Flux spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            FluxKind::GitRepository => "GitRepository",
            FluxKind::HelmRepository => "HelmRepository",
            FluxKind::OciRepository => "OCIRepository",
            FluxKind::HelmChart => "HelmChart",
            FluxKind::Kustomization => "Kustomization",
            FluxKind::HelmRelease => "HelmRelease",
        }
    }

    pub fn group(self) -> &'static str {
        match self {
            FluxKind::GitRepository
            | FluxKind::HelmRepository
            | FluxKind::OciRepository
            | FluxKind::HelmChart => SOURCE_GROUP,
            FluxKind::Kustomization => KUSTOMIZE_GROUP,
            FluxKind::HelmRelease => HELM_GROUP,
        }
    }

    pub fn version(self) -> &'static str {
        match self {
            FluxKind::GitRepository
            | FluxKind::HelmRepository
            | FluxKind::OciRepository
            | FluxKind::HelmChart => SOURCE_VERSION,
            FluxKind::Kustomization => KUSTOMIZE_VERSION,
            FluxKind::HelmRelease => HELM_VERSION,
        }
    }

    pub fn api_version(self) -> String {
        format!("{}/{}", self.group(), self.version())
    }

    /// The kind of a typed resource, when it is one of Flux's kinds above.
    pub fn of<K: kube::Resource<DynamicType = ()>>() -> Option<FluxKind> {
        let (group, kind) = (K::group(&()), K::kind(&()));
        FluxKind::ALL
            .into_iter()
            .find(|k| k.group() == group && k.as_str() == kind)
    }

    /// A source kind (GitRepository, HelmRepository, OCIRepository, HelmChart).
    pub fn is_source(self) -> bool {
        self.group() == SOURCE_GROUP
    }
}

impl std::fmt::Display for FluxKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reference to a Flux source (Kustomization `sourceRef`, HelmRelease `chart.spec.sourceRef`
/// and `chartRef`). The namespace defaults to the referring object's.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CrossNamespaceSourceReference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// `kubeConfig`: where Flux finds the kubeconfig of the cluster it applies to.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct KubeConfigReference {
    pub secret_ref: SecretKeyReference,
}

/// A key of a Secret in the referring object's namespace. Flux reads `value` or
/// `value.yaml` when the key is unset.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretKeyReference {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// Kustomization `postBuild`: variable substitution after kustomize build.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PostBuild {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub substitute: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub substitute_from: Option<Vec<Json>>,
}

/// The Flux Kustomization spec: the fields an Application policy carries (`wait` included)
/// plus the ones Kurator fills in (`sourceRef`, `kubeConfig`, `postBuild`).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "kustomize.toolkit.fluxcd.io",
    version = "v1",
    kind = "Kustomization",
    plural = "kustomizations",
    namespaced,
    status = "FluxStatus",
    schema = "disabled",
    derive = "Default",
    derive = "PartialEq",
    doc = "Flux `Kustomization` (kustomize.toolkit.fluxcd.io/v1)."
)]
#[serde(rename_all = "camelCase")]
pub struct KustomizationSpec {
    pub source_ref: CrossNamespaceSourceReference,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_config: Option<KubeConfigReference>,
    pub interval: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub prune: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<NamespacedObjectReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patches: Option<Vec<Json>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<Vec<Json>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub common_metadata: Option<CommonMetadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_build: Option<PostBuild>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<bool>,
}

/// The Flux HelmRelease spec: the fields an Application policy carries plus `kubeConfig` and
/// the chart's `sourceRef` (or `chartRef` for an OCIRepository source). Exactly one of `chart`
/// and `chartRef` is set.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "helm.toolkit.fluxcd.io",
    version = "v2",
    kind = "HelmRelease",
    plural = "helmreleases",
    namespaced,
    status = "FluxStatus",
    schema = "disabled",
    derive = "Default",
    derive = "PartialEq",
    doc = "Flux `HelmRelease` (helm.toolkit.fluxcd.io/v2)."
)]
#[serde(rename_all = "camelCase")]
pub struct HelmReleaseSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<HelmChartTemplate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart_ref: Option<CrossNamespaceSourceReference>,
    pub interval: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_config: Option<KubeConfigReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<NamespacedObjectReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_history: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_client: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install: Option<Json>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<Json>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<Json>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uninstall: Option<Json>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values_from: Option<Vec<Json>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Json>,
}

/// HelmRelease `chart`: the template of the HelmChart Flux creates.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct HelmChartTemplate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<CommonMetadata>,
    pub spec: HelmChartTemplateSpec,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HelmChartTemplateSpec {
    pub chart: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub source_ref: CrossNamespaceSourceReference,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconcile_strategy: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values_files: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<Json>,
}

impl Kustomization {
    pub const KIND: FluxKind = FluxKind::Kustomization;
}

impl HelmRelease {
    pub const KIND: FluxKind = FluxKind::HelmRelease;
}

macro_rules! has_flux_status {
    ($($kind:ty),*) => {$(
        impl HasFluxStatus for $kind {
            fn flux_status(&self) -> Option<&FluxStatus> {
                self.status.as_ref()
            }
        }
    )*};
}
has_flux_status!(
    Kustomization,
    HelmRelease,
    GitRepository,
    HelmRepository,
    OCIRepository,
    HelmChart
);

/// The status of any Flux object, loosely typed: the fields Kurator reads, everything else
/// kept in `rest` so a copy into the Application's status loses nothing.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FluxStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<FluxCondition>,
    /// Sources: the artifact last fetched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<Artifact>,
    /// Kustomization: the source revision last applied successfully.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_revision: Option<String>,
    /// Kustomization and HelmRelease: the source revision last attempted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempted_revision: Option<String>,
    #[serde(flatten)]
    pub rest: serde_json::Map<String, Json>,
}

/// A metav1 Condition as Flux writes it; every field optional so nothing fails to decode.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FluxCondition {
    #[serde(default, rename = "type")]
    pub type_: String,
    #[serde(default)]
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A source artifact.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<String>,
    #[serde(flatten)]
    pub rest: serde_json::Map<String, Json>,
}

/// Flux's condition types.
pub mod condition {
    pub const READY: &str = "Ready";
    pub const RECONCILING: &str = "Reconciling";
    pub const STALLED: &str = "Stalled";
}

impl FluxStatus {
    pub fn condition(&self, type_: &str) -> Option<&FluxCondition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    /// The revision the object stands at: a source's artifact revision, else the last applied
    /// revision (Kustomization), else the last attempted one (HelmRelease).
    pub fn revision(&self) -> Option<&str> {
        self.artifact
            .as_ref()
            .and_then(|a| a.revision.as_deref())
            .or(self.last_applied_revision.as_deref())
            .or(self.last_attempted_revision.as_deref())
    }
}

#[cfg(test)]
mod tests;
