//! Flux's source kinds (`source.toolkit.fluxcd.io/v1`): [`GitRepository`], [`HelmRepository`],
//! [`OCIRepository`]. Their specs are also the ones an Application embeds (see
//! [`crate::apps::ApplicationSource`]), so they carry the schema attributes of our
//! Application CRD; the Flux kinds themselves have no schema here (`schema = "disabled"`).
//! [`HelmChart`] is not embedded: a staged rollout writes one to learn a Helm repository's
//! latest chart version.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{FluxKind, FluxStatus};

type Json = serde_json::Value;

/// A reference to a Secret in the Application's namespace.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
pub struct LocalObjectReference {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Flux `GitRepositorySpec` (source.toolkit.fluxcd.io/v1).
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "source.toolkit.fluxcd.io",
    version = "v1",
    kind = "GitRepository",
    plural = "gitrepositories",
    namespaced,
    status = "FluxStatus",
    schema = "disabled",
    derive = "Default",
    derive = "PartialEq",
    doc = "Flux `GitRepository` (source.toolkit.fluxcd.io/v1)."
)]
#[serde(rename_all = "camelCase")]
pub struct GitRepositorySpec {
    /// Repository URL: http, https or ssh.
    #[schemars(regex(pattern = r"^(http|https|ssh)://.*$"), length(max = 2048))]
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^(generic|azure|github)$"))]
    pub provider: Option<String>,
    /// How often to check the repository for new commits.
    #[schemars(schema_with = "crate::schema::duration")]
    pub interval: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::duration")]
    pub timeout: Option<String>,
    /// Branch, tag, semver range, ref name or commit to check out (default branch `master`).
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<GitRepositoryRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::free_form_object")]
    pub verify: Option<Json>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_secret_ref: Option<LocalObjectReference>,
    /// `.sourceignore`-style patterns excluded from the artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub ignore: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recurse_submodules: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::free_form_list")]
    pub include: Option<Vec<Json>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub sparse_checkout: Option<Vec<String>>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
pub struct GitRepositoryRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

/// Flux `HelmRepositorySpec` (source.toolkit.fluxcd.io/v1).
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "source.toolkit.fluxcd.io",
    version = "v1",
    kind = "HelmRepository",
    plural = "helmrepositories",
    namespaced,
    status = "FluxStatus",
    schema = "disabled",
    derive = "Default",
    derive = "PartialEq",
    doc = "Flux `HelmRepository` (source.toolkit.fluxcd.io/v1)."
)]
#[serde(rename_all = "camelCase")]
pub struct HelmRepositorySpec {
    /// Chart repository URL: http, https or oci.
    #[schemars(regex(pattern = r"^(http|https|oci)://.*$"), length(max = 2048))]
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_secret_ref: Option<LocalObjectReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_credentials: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::duration")]
    pub interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::duration")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::free_form_object")]
    pub access_from: Option<Json>,
    /// `default` (HTTP/S index) or `oci`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^(default|oci)$"))]
    pub type_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^(generic|aws|azure|gcp)$"))]
    pub provider: Option<String>,
}

/// Flux `OCIRepositorySpec` (source.toolkit.fluxcd.io/v1).
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "source.toolkit.fluxcd.io",
    version = "v1",
    kind = "OCIRepository",
    plural = "ocirepositories",
    namespaced,
    status = "FluxStatus",
    schema = "disabled",
    derive = "Default",
    derive = "PartialEq",
    doc = "Flux `OCIRepository` (source.toolkit.fluxcd.io/v1)."
)]
#[serde(rename_all = "camelCase")]
pub struct OciRepositorySpec {
    /// Artifact URL: oci://registry/repository.
    #[schemars(regex(pattern = r"^oci://.*$"), length(max = 2048))]
    pub url: String,
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<OciRepositoryRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::free_form_object")]
    pub layer_selector: Option<Json>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^(generic|aws|azure|gcp)$"))]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::free_form_object")]
    pub verify: Option<Json>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_secret_ref: Option<LocalObjectReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_secret_ref: Option<LocalObjectReference>,
    #[schemars(schema_with = "crate::schema::duration")]
    pub interval: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::duration")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OciRepositoryRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semver_filter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// Flux `HelmChartSpec` (source.toolkit.fluxcd.io/v1): the fields Kurator sets.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "source.toolkit.fluxcd.io",
    version = "v1",
    kind = "HelmChart",
    plural = "helmcharts",
    namespaced,
    status = "FluxStatus",
    schema = "disabled",
    derive = "Default",
    derive = "PartialEq",
    doc = "Flux `HelmChart` (source.toolkit.fluxcd.io/v1)."
)]
#[serde(rename_all = "camelCase")]
pub struct HelmChartSpec {
    /// Chart name in the repository.
    pub chart: String,
    /// Version or semver range; the artifact's revision is the version it resolved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub source_ref: HelmChartSourceReference,
    pub interval: String,
}

/// HelmChart `sourceRef`: a source in the HelmChart's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct HelmChartSourceReference {
    pub kind: String,
    pub name: String,
}

impl GitRepository {
    pub const KIND: FluxKind = FluxKind::GitRepository;
}

impl HelmChart {
    pub const KIND: FluxKind = FluxKind::HelmChart;
}

impl HelmRepository {
    pub const KIND: FluxKind = FluxKind::HelmRepository;
}

impl OCIRepository {
    pub const KIND: FluxKind = FluxKind::OciRepository;
}
