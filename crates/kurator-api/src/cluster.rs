//! `cluster.kurator.dev/v1alpha1`: AttachedCluster (any existing cluster, reached through a
//! kubeconfig Secret), and the status subset of Cluster and CustomCluster that a fleet needs.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Lowercase RFC 1123 subdomain, as Kubernetes object names and upstream's key check require.
const DNS1123_SUBDOMAIN_RULE: &str =
    "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')";

/// The secret key upstream Kurator reads when none is given.
pub const DEFAULT_KUBECONFIG_KEY: &str = "value";

/// An existing Kubernetes cluster, built by any tool, attached through a kubeconfig Secret.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "cluster.kurator.dev",
    version = "v1alpha1",
    kind = "AttachedCluster",
    namespaced,
    status = "AttachedClusterStatus",
    category = "kurator-dev",
    printcolumn(name = "Ready", type_ = "boolean", json_path = ".status.ready"),
    printcolumn(name = "Version", type_ = "string", json_path = ".status.version"),
    printcolumn(
        name = "Fleet",
        type_ = "string",
        json_path = ".metadata.labels.fleet\\.kurator\\.dev/fleet-name"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct AttachedClusterSpec {
    /// The Secret, in the AttachedCluster's namespace, that holds the kubeconfig of the cluster.
    pub kubeconfig: SecretKeyRef,
}

/// A key of a Secret in the referring object's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(DNS1123_SUBDOMAIN_RULE).message(
        "must be a lowercase RFC 1123 subdomain: letters a-z, digits, '-' and '.', starting and ending with a letter or digit"
    ))]
    pub name: String,
    /// Key of the Secret that holds the kubeconfig. Defaults to `value`.
    #[serde(default = "default_kubeconfig_key")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(DNS1123_SUBDOMAIN_RULE).message(
        "must be a lowercase RFC 1123 subdomain (for example kurator-member1.config)"
    ))]
    pub key: String,
}

fn default_kubeconfig_key() -> String {
    DEFAULT_KUBECONFIG_KEY.to_string()
}

/// What the controller last observed of an AttachedCluster.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AttachedClusterStatus {
    /// True when the cluster answered the last health check with the given kubeconfig.
    #[serde(default)]
    pub ready: bool,
    /// Kubernetes version the cluster reported (`gitVersion` of `/version`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `Ready` summarises the health check; see docs/conditions.md for the reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A cluster provisioned through Cluster API. Kurator in Rust does not provision it: it only
/// reads the status a fleet needs (`phase`) and its kubeconfig Secret `<name>-kubeconfig`.
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "cluster.kurator.dev",
    version = "v1alpha1",
    kind = "Cluster",
    namespaced,
    status = "ProvisionedClusterStatus",
    category = "kurator-dev",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct ClusterSpec {
    /// The provisioning spec, kept as written.
    #[serde(flatten)]
    #[schemars(skip)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// A cluster installed on existing machines (upstream provisions it with kubespray).
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "cluster.kurator.dev",
    version = "v1alpha1",
    kind = "CustomCluster",
    namespaced,
    status = "ProvisionedClusterStatus",
    category = "kurator-dev",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct CustomClusterSpec {
    /// The provisioning spec, kept as written.
    #[serde(flatten)]
    #[schemars(skip)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// Phase value of a provisioned cluster that can take workloads.
pub const PROVISIONED_READY_PHASE: &str = "Ready";

/// The part of Cluster / CustomCluster status that a fleet reads; the rest is kept as written.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct ProvisionedClusterStatus {
    /// `Ready` once the cluster is provisioned and reachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// CustomCluster only: name of the Secret (key `value`) holding the cluster's kubeconfig.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig_secret_ref: Option<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

impl Cluster {
    /// Cluster API's convention: the kubeconfig lives in `<cluster>-kubeconfig`, key `value`.
    pub fn kubeconfig_ref(&self) -> SecretKeyRef {
        let name = self.metadata.name.clone().unwrap_or_default();
        SecretKeyRef {
            name: format!("{name}-kubeconfig"),
            key: DEFAULT_KUBECONFIG_KEY.into(),
        }
    }
}

impl CustomCluster {
    pub fn kubeconfig_ref(&self) -> Option<SecretKeyRef> {
        let name = self.status.as_ref()?.kubeconfig_secret_ref.clone()?;
        Some(SecretKeyRef {
            name,
            key: DEFAULT_KUBECONFIG_KEY.into(),
        })
    }
}
