//! Minimal typed Flux resources: the fields Kurator sets and reads, no more.
//!
//! - `source.toolkit.fluxcd.io/v1`: [`GitRepository`], [`HelmRepository`], [`OCIRepository`]
//!   (their specs are the ones an Application embeds, see [`crate::apps`]);
//! - `kustomize.toolkit.fluxcd.io/v1`: [`Kustomization`];
//! - `helm.toolkit.fluxcd.io/v2`: [`HelmRelease`].
//!
//! These CRDs belong to Flux: they are not in [`crate::crds::all`]; a host runs Flux's own.
//! Each type implements [`kube::Resource`] so `Api<Kustomization>` and reflector stores work.
//! Serialisation writes `apiVersion` and `kind` and omits every unset field, so a server-side
//! apply owns exactly what we send. Statuses are loose ([`FluxStatus`]): unknown fields are
//! kept, missing ones default, so a newer Flux never breaks a watch.

use std::{borrow::Cow, collections::BTreeMap};

use k8s_openapi::{NamespaceResourceScope, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use serde::{Deserialize, Serialize};

pub use crate::apps::{
    CommonMetadata, GitRepositorySpec, HelmRepositorySpec, NamespacedObjectReference,
    OciRepositorySpec,
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
    Kustomization,
    HelmRelease,
}

impl FluxKind {
    pub const ALL: [FluxKind; 5] = [
        FluxKind::GitRepository,
        FluxKind::HelmRepository,
        FluxKind::OciRepository,
        FluxKind::Kustomization,
        FluxKind::HelmRelease,
    ];

    /// The Kubernetes kind, as Flux spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            FluxKind::GitRepository => "GitRepository",
            FluxKind::HelmRepository => "HelmRepository",
            FluxKind::OciRepository => "OCIRepository",
            FluxKind::Kustomization => "Kustomization",
            FluxKind::HelmRelease => "HelmRelease",
        }
    }

    pub fn group(self) -> &'static str {
        match self {
            FluxKind::GitRepository | FluxKind::HelmRepository | FluxKind::OciRepository => {
                SOURCE_GROUP
            }
            FluxKind::Kustomization => KUSTOMIZE_GROUP,
            FluxKind::HelmRelease => HELM_GROUP,
        }
    }

    pub fn version(self) -> &'static str {
        match self {
            FluxKind::GitRepository | FluxKind::HelmRepository | FluxKind::OciRepository => {
                SOURCE_VERSION
            }
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

    /// A source kind (GitRepository, HelmRepository, OCIRepository).
    pub fn is_source(self) -> bool {
        self.group() == SOURCE_GROUP
    }
}

impl std::fmt::Display for FluxKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Defines a namespaced Flux resource `{ metadata, spec, status }` with `kube::Resource`,
/// `HasSpec`, `HasStatus` and serde impls that write `apiVersion`/`kind` and skip a missing
/// status.
macro_rules! flux_resource {
    ($(#[$doc:meta])* $kind:ident, $spec:ty, $status:ty, $flux_kind:expr, $plural:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Default, PartialEq)]
        pub struct $kind {
            pub metadata: ObjectMeta,
            pub spec: $spec,
            pub status: Option<$status>,
        }

        impl $kind {
            pub const KIND: FluxKind = $flux_kind;

            /// A new object named `name` (namespace, labels and owners are the caller's).
            pub fn new(name: &str, spec: $spec) -> Self {
                Self {
                    metadata: ObjectMeta {
                        name: Some(name.to_string()),
                        ..ObjectMeta::default()
                    },
                    spec,
                    status: None,
                }
            }
        }

        impl kube::Resource for $kind {
            type DynamicType = ();
            type Scope = NamespaceResourceScope;

            fn kind(_: &()) -> Cow<'_, str> {
                Cow::Borrowed(Self::KIND.as_str())
            }
            fn group(_: &()) -> Cow<'_, str> {
                Cow::Borrowed(Self::KIND.group())
            }
            fn version(_: &()) -> Cow<'_, str> {
                Cow::Borrowed(Self::KIND.version())
            }
            fn plural(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($plural)
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }

        impl kube::core::object::HasSpec for $kind {
            type Spec = $spec;
            fn spec(&self) -> &$spec {
                &self.spec
            }
            fn spec_mut(&mut self) -> &mut $spec {
                &mut self.spec
            }
        }

        impl kube::core::object::HasStatus for $kind {
            type Status = $status;
            fn status(&self) -> Option<&$status> {
                self.status.as_ref()
            }
            fn status_mut(&mut self) -> &mut Option<$status> {
                &mut self.status
            }
        }

        impl Serialize for $kind {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeStruct;
                let fields = if self.status.is_some() { 5 } else { 4 };
                let mut s = serializer.serialize_struct(stringify!($kind), fields)?;
                s.serialize_field("apiVersion", &Self::KIND.api_version())?;
                s.serialize_field("kind", Self::KIND.as_str())?;
                s.serialize_field("metadata", &self.metadata)?;
                s.serialize_field("spec", &self.spec)?;
                match &self.status {
                    Some(status) => s.serialize_field("status", status)?,
                    None => s.skip_field("status")?,
                }
                s.end()
            }
        }

        impl<'de> Deserialize<'de> for $kind {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                #[derive(Deserialize)]
                struct Repr {
                    #[serde(default)]
                    metadata: ObjectMeta,
                    spec: $spec,
                    #[serde(default)]
                    status: Option<$status>,
                }
                let r = Repr::deserialize(deserializer)?;
                Ok(Self {
                    metadata: r.metadata,
                    spec: r.spec,
                    status: r.status,
                })
            }
        }
    };
}

flux_resource!(
    /// Flux `GitRepository` (source.toolkit.fluxcd.io/v1).
    GitRepository,
    GitRepositorySpec,
    FluxStatus,
    FluxKind::GitRepository,
    "gitrepositories"
);
flux_resource!(
    /// Flux `HelmRepository` (source.toolkit.fluxcd.io/v1).
    HelmRepository,
    HelmRepositorySpec,
    FluxStatus,
    FluxKind::HelmRepository,
    "helmrepositories"
);
flux_resource!(
    /// Flux `OCIRepository` (source.toolkit.fluxcd.io/v1).
    OCIRepository,
    OciRepositorySpec,
    FluxStatus,
    FluxKind::OciRepository,
    "ocirepositories"
);
flux_resource!(
    /// Flux `Kustomization` (kustomize.toolkit.fluxcd.io/v1).
    Kustomization,
    KustomizationSpec,
    FluxStatus,
    FluxKind::Kustomization,
    "kustomizations"
);
flux_resource!(
    /// Flux `HelmRelease` (helm.toolkit.fluxcd.io/v2).
    HelmRelease,
    HelmReleaseSpec,
    FluxStatus,
    FluxKind::HelmRelease,
    "helmreleases"
);

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

/// The Flux Kustomization spec: the fields an Application policy carries plus the ones Kurator
/// fills in (`sourceRef`, `kubeConfig`, `postBuild`, `wait`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
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
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
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

    /// `Some(true)` / `Some(false)` when the Ready condition is True / False, `None` when it is
    /// Unknown or missing (still reconciling).
    pub fn ready(&self) -> Option<bool> {
        match self.condition(condition::READY)?.status.as_str() {
            "True" => Some(true),
            "False" => Some(false),
            _ => None,
        }
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

    /// Whether Flux has seen `generation` of the object (its spec as we last wrote it).
    pub fn observed(&self, generation: Option<i64>) -> bool {
        generation.is_none() || self.observed_generation >= generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource;

    #[test]
    fn resources_address_flux_apis() {
        assert_eq!(
            GitRepository::url_path(&(), Some("default")),
            "/apis/source.toolkit.fluxcd.io/v1/namespaces/default/gitrepositories"
        );
        assert_eq!(
            OCIRepository::url_path(&(), Some("ns")),
            "/apis/source.toolkit.fluxcd.io/v1/namespaces/ns/ocirepositories"
        );
        assert_eq!(
            HelmRepository::url_path(&(), None),
            "/apis/source.toolkit.fluxcd.io/v1/helmrepositories"
        );
        assert_eq!(
            Kustomization::url_path(&(), Some("default")),
            "/apis/kustomize.toolkit.fluxcd.io/v1/namespaces/default/kustomizations"
        );
        assert_eq!(
            HelmRelease::url_path(&(), Some("default")),
            "/apis/helm.toolkit.fluxcd.io/v2/namespaces/default/helmreleases"
        );
        assert_eq!(OCIRepository::kind(&()), "OCIRepository");
        assert_eq!(
            FluxKind::of::<OCIRepository>(),
            Some(FluxKind::OciRepository)
        );
        assert_eq!(FluxKind::of::<crate::Fleet>(), None);
    }

    /// Compiles only if the types work with typed Apis and reflector stores.
    #[allow(dead_code)]
    fn usable_with_kube(client: kube::Client) {
        let _: kube::Api<GitRepository> = kube::Api::namespaced(client.clone(), "default");
        let _: kube::Api<HelmRepository> = kube::Api::namespaced(client.clone(), "default");
        let _: kube::Api<OCIRepository> = kube::Api::namespaced(client.clone(), "default");
        let _: kube::Api<HelmRelease> = kube::Api::all(client.clone());
        let api: kube::Api<Kustomization> = kube::Api::all(client);
        let _ = kube::runtime::reflector(
            kube::runtime::reflector::store::Writer::<Kustomization>::default(),
            kube::runtime::watcher(api, Default::default()),
        );
    }

    #[test]
    fn flux_kinds_are_not_our_crds() {
        let ours: Vec<String> = crate::crds::all()
            .iter()
            .map(|c| c.spec.group.clone())
            .collect();
        assert!(ours.iter().all(|g| !g.ends_with("fluxcd.io")));
    }

    #[test]
    fn serialisation_writes_type_meta_and_omits_unset_fields() {
        let k = Kustomization::new(
            "demo",
            KustomizationSpec {
                source_ref: CrossNamespaceSourceReference {
                    kind: "GitRepository".into(),
                    name: "demo".into(),
                    ..Default::default()
                },
                interval: "5m".into(),
                prune: true,
                ..Default::default()
            },
        );
        insta::assert_snapshot!(serde_json::to_string(&k).unwrap(), @r#"{"apiVersion":"kustomize.toolkit.fluxcd.io/v1","kind":"Kustomization","metadata":{"name":"demo"},"spec":{"sourceRef":{"kind":"GitRepository","name":"demo"},"interval":"5m","prune":true}}"#);
        let back: Kustomization =
            serde_json::from_str(&serde_json::to_string(&k).unwrap()).unwrap();
        assert_eq!(back, k);
    }

    #[test]
    fn decodes_flux_objects_with_status_and_unknown_fields() {
        let yaml = r#"
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata:
  name: demo-0-attachedcluster-kurator-member1
  namespace: default
  generation: 2
spec:
  interval: 5m0s
  path: ./deploy/webapp
  prune: true
  sourceRef:
    kind: GitRepository
    name: demo
  kubeConfig:
    secretRef:
      name: kurator-member1
      key: kurator-member1.config
  healthChecks: []
  deletionPolicy: MirrorPrune
status:
  observedGeneration: 2
  lastAppliedRevision: master@sha1:dc830d02a6e0bcbf63bcc387e8bde57d5627aec2
  lastAttemptedRevision: master@sha1:dc830d02a6e0bcbf63bcc387e8bde57d5627aec2
  conditions:
  - type: Ready
    status: "True"
    reason: ReconciliationSucceeded
    message: "Applied revision: master@sha1:dc830d02"
    lastTransitionTime: "2024-01-11T02:40:40Z"
  inventory:
    entries:
    - id: default_podinfo_apps_Deployment
      v: v1
"#;
        let k: Kustomization = serde_saphyr::from_str(yaml).unwrap();
        let status = k.status.as_ref().unwrap();
        assert_eq!(status.ready(), Some(true));
        assert!(status.observed(k.metadata.generation));
        assert_eq!(
            status.revision(),
            Some("master@sha1:dc830d02a6e0bcbf63bcc387e8bde57d5627aec2")
        );
        assert!(status.rest.contains_key("inventory"));
        assert_eq!(
            k.spec.kube_config.unwrap().secret_ref.key.as_deref(),
            Some("kurator-member1.config")
        );

        let git = r#"
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: demo, namespace: default, generation: 3}
spec: {interval: 3m0s, url: "https://github.com/stefanprodan/podinfo", ref: {branch: master}}
status:
  observedGeneration: 2
  artifact:
    revision: master@sha1:dc830d02
    digest: sha256:abc
    url: http://source-controller/gitrepository/default/demo/dc830d02.tar.gz
    lastUpdateTime: "2024-01-11T02:40:00Z"
    size: 1234
  conditions:
  - {type: Ready, status: Unknown, reason: Progressing}
"#;
        let g: GitRepository = serde_saphyr::from_str(git).unwrap();
        let status = g.status.as_ref().unwrap();
        assert_eq!(status.ready(), None);
        assert!(!status.observed(g.metadata.generation));
        assert_eq!(status.revision(), Some("master@sha1:dc830d02"));
        let copied = serde_json::to_value(status).unwrap();
        assert_eq!(copied["artifact"]["size"], 1234);
    }
}
