//! Pure: the Flux objects an Application asks for, named as upstream Kurator names them.
//!
//! - one source `<app>` (GitRepository, HelmRepository or OCIRepository) in the Application's
//!   namespace;
//! - per sync policy × target cluster, a Kustomization or HelmRelease named
//!   `lower(<policy>-<cluster kind>-<cluster name>)` cut to 63 characters (upstream
//!   `generatePolicyResourceName`), where the policy name defaults to `<app>-<index>`;
//! - `sourceRef` = the source, `kubeConfig.secretRef` = the cluster's kubeconfig Secret;
//! - every object labelled `apps.kurator.dev/app-name=<app>` and
//!   `app.kubernetes.io/managed-by=kurator`, per-cluster objects also with the fleet, cluster,
//!   cluster kind and policy ([`label`]), and controlled by the Application.
//!
//! The controller resolves fleets, selectors and kubeconfig Secrets into [`Target`]s; this
//! module only shapes objects. [`prune`] picks the existing objects that are no longer wanted.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use kurator_api::{
    Application,
    apps::{self, ApplicationSyncPolicy},
    cluster::SecretKeyRef,
    fleet::ClusterKind,
    flux::{
        CrossNamespaceSourceReference, FluxKind, GitRepository, HelmChart, HelmChartTemplate,
        HelmChartTemplateSpec, HelmRelease, HelmReleaseSpec, HelmRepository, KubeConfigReference,
        Kustomization, KustomizationSpec, OCIRepository, PostBuild, SecretKeyReference,
    },
    labels::{APP_NAME, MANAGED_BY},
};

/// Labels on the per-cluster objects, so the controller can find them by fleet, cluster or
/// policy. Values longer than a label allows are shortened by [`label_value`].
pub mod label {
    pub const FLEET: &str = "apps.kurator.dev/fleet";
    pub const CLUSTER: &str = "apps.kurator.dev/cluster";
    pub const CLUSTER_KIND: &str = "apps.kurator.dev/cluster-kind";
    pub const POLICY: &str = "apps.kurator.dev/policy";
}

/// Value of `app.kubernetes.io/managed-by` on everything we create.
pub const MANAGED_BY_KURATOR: &str = "kurator";

/// Variables set in `postBuild.substitute` when a policy opts in to per-cluster variables.
pub mod substitute {
    pub const CLUSTER: &str = "KURATOR_CLUSTER";
    pub const FLEET: &str = "KURATOR_FLEET";
    pub const CLUSTER_KIND: &str = "KURATOR_CLUSTER_KIND";
}

/// Longest Kustomization / HelmRelease name upstream generates (and longest label value).
pub const MAX_NAME_LEN: usize = 63;

/// One cluster a policy deploys to, as the controller resolved it.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub fleet: String,
    pub cluster_name: String,
    pub cluster_kind: ClusterKind,
    /// The cluster's kubeconfig Secret, in the Application's namespace.
    pub kubeconfig: SecretKeyRef,
}

/// What the controller resolved for one sync policy (same index as in `spec.syncPolicies`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PolicyTargets {
    /// The clusters of the policy's destination, selector applied. Order does not matter.
    pub targets: Vec<Target>,
    /// Add `postBuild.substitute` with `KURATOR_CLUSTER`, `KURATOR_FLEET` and
    /// `KURATOR_CLUSTER_KIND`. Kustomization policies only (HelmRelease has no postBuild).
    pub substitute: bool,
}

/// The Application's Flux source.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    Git(GitRepository),
    Helm(HelmRepository),
    Oci(OCIRepository),
}

impl Source {
    pub fn kind(&self) -> FluxKind {
        match self {
            Source::Git(_) => FluxKind::GitRepository,
            Source::Helm(_) => FluxKind::HelmRepository,
            Source::Oci(_) => FluxKind::OciRepository,
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Source::Git(s) => &s.metadata,
            Source::Helm(s) => &s.metadata,
            Source::Oci(s) => &s.metadata,
        }
    }

    pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Source::Git(s) => &mut s.metadata,
            Source::Helm(s) => &mut s.metadata,
            Source::Oci(s) => &mut s.metadata,
        }
    }

    pub fn object_ref(&self) -> FluxObjectRef {
        let meta = self.metadata();
        FluxObjectRef {
            kind: self.kind(),
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
        }
    }
}

/// Everything one Application wants, in a stable order: per-cluster objects by policy index,
/// then by name.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    pub source: Source,
    /// With a staged rollout: one copy of the source per revision in use, of the same kind,
    /// pinned by `ref.commit` (git) or `ref.digest` (OCI) (`rollout_build`). Empty otherwise.
    pub pinned_sources: Vec<Source>,
    /// With a staged rollout of a HelmRepository source: the HelmChart `<app>-track` with the
    /// policies' version range, whose artifact revision is the latest chart version.
    pub tracking_chart: Option<HelmChart>,
    pub kustomizations: Vec<Kustomization>,
    pub helm_releases: Vec<HelmRelease>,
}

impl Desired {
    /// Every object, source included.
    pub fn refs(&self) -> BTreeSet<FluxObjectRef> {
        let mut refs = BTreeSet::from([self.source.object_ref()]);
        refs.extend(self.pinned_sources.iter().map(Source::object_ref));
        refs.extend(self.tracking_chart.iter().filter_map(FluxObjectRef::of));
        refs.extend(self.kustomizations.iter().filter_map(FluxObjectRef::of));
        refs.extend(self.helm_releases.iter().filter_map(FluxObjectRef::of));
        refs
    }
}

/// Identifies one Flux object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FluxObjectRef {
    pub kind: FluxKind,
    pub namespace: String,
    pub name: String,
}

impl FluxObjectRef {
    /// `None` for a kind that is not Flux's, or an object without a name.
    pub fn of<K: Resource<DynamicType = ()>>(obj: &K) -> Option<Self> {
        Some(FluxObjectRef {
            kind: FluxKind::of::<K>()?,
            namespace: obj.meta().namespace.clone().unwrap_or_default(),
            name: obj.meta().name.clone()?,
        })
    }
}

impl std::fmt::Display for FluxObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// A Flux object as the stores show it: enough to decide whether to prune it.
#[derive(Clone, Debug, PartialEq)]
pub struct Existing {
    pub object: FluxObjectRef,
    pub labels: BTreeMap<String, String>,
    /// UIDs of the object's owners.
    pub owner_uids: Vec<String>,
}

impl Existing {
    pub fn of<K: Resource<DynamicType = ()>>(obj: &K) -> Option<Self> {
        let meta = obj.meta();
        Some(Existing {
            object: FluxObjectRef::of(obj)?,
            labels: meta.labels.clone().unwrap_or_default(),
            owner_uids: meta
                .owner_references
                .iter()
                .flatten()
                .map(|o| o.uid.clone())
                .collect(),
        })
    }
}

/// Why an Application cannot be turned into Flux objects. All are invalid-spec errors (the
/// admission rules prevent most of them): report them and wait for a change.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("the Application has no {0} yet (not read from the API server?)")]
    Unsaved(&'static str),
    #[error("spec.source needs exactly one of gitRepository, helmRepository or ociRepository")]
    Source,
    #[error("sync policy {policy} needs exactly one of kustomization or helm")]
    PolicyKind { policy: String },
    #[error("sync policy {policy}: a Kustomization cannot use a {kind} source")]
    IncompatibleSource { policy: String, kind: FluxKind },
    #[error("{policies} sync policies but targets for {targets}")]
    TargetCount { policies: usize, targets: usize },
    #[error(
        "sync policies {first} and {second} both generate {name}; give the policies distinct, shorter names"
    )]
    DuplicateName {
        name: String,
        first: String,
        second: String,
    },
}

/// Upstream's policy name: the policy's own name, else `<app>-<index>`.
pub fn policy_name(app: &Application, index: usize) -> String {
    app.spec
        .sync_policies
        .get(index)
        .and_then(|p| p.name.as_deref())
        .filter(|n| !n.is_empty())
        .map_or_else(|| format!("{}-{index}", app.name_any()), str::to_string)
}

/// Upstream's `generatePolicyResourceName`: `lower(<policy>-<kind>-<cluster>)`, first 63
/// characters. One deviation: separators left at the end by the cut are dropped, since a name
/// ending in `-` or `.` is rejected by the API server (upstream fails there).
pub fn resource_name(policy: &str, kind: ClusterKind, cluster: &str) -> String {
    let name = format!("{policy}-{}-{cluster}", kind.as_str()).to_lowercase();
    let cut = truncate(&name, MAX_NAME_LEN);
    cut.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// A label value for `value`: itself when it fits in 63 characters, else its first 54
/// characters, `-` and 8 hex digits of a hash of the whole (stable across releases).
/// Inputs are object names (lowercase alphanumerics, `-`, `.`), so only the length needs care.
pub fn label_value(value: &str) -> String {
    if value.len() <= MAX_NAME_LEN {
        return value.to_string();
    }
    format!("{}-{:08x}", truncate(value, MAX_NAME_LEN - 9), fnv1a(value))
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// 32-bit FNV-1a.
pub(crate) fn fnv1a(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5, |h: u32, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The labels every object of `app` carries.
pub fn app_labels(app_name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (APP_NAME.to_string(), label_value(app_name)),
        (MANAGED_BY.to_string(), MANAGED_BY_KURATOR.to_string()),
    ])
}

/// Builds the Flux objects for `app`. `policies[i]` holds the resolved targets of
/// `app.spec.syncPolicies[i]`.
pub fn build(app: &Application, policies: &[PolicyTargets]) -> Result<Desired, BuildError> {
    let app_name = app
        .metadata
        .name
        .clone()
        .ok_or(BuildError::Unsaved("name"))?;
    let namespace = app
        .metadata
        .namespace
        .clone()
        .ok_or(BuildError::Unsaved("namespace"))?;
    let uid = app.metadata.uid.clone().ok_or(BuildError::Unsaved("uid"))?;
    if policies.len() != app.spec.sync_policies.len() {
        return Err(BuildError::TargetCount {
            policies: app.spec.sync_policies.len(),
            targets: policies.len(),
        });
    }
    let owner = OwnerReference {
        api_version: Application::api_version(&()).into_owned(),
        kind: Application::kind(&()).into_owned(),
        name: app_name.clone(),
        uid,
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let meta = |name: &str, labels: BTreeMap<String, String>| ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(namespace.clone()),
        labels: Some(labels),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    };

    let source = {
        let s = &app.spec.source;
        let metadata = meta(&app_name, app_labels(&app_name));
        match (&s.git_repository, &s.helm_repository, &s.oci_repository) {
            (Some(spec), None, None) => Source::Git(GitRepository {
                metadata,
                spec: spec.clone(),
                status: None,
            }),
            (None, Some(spec), None) => Source::Helm(HelmRepository {
                metadata,
                spec: spec.clone(),
                status: None,
            }),
            (None, None, Some(spec)) => Source::Oci(OCIRepository {
                metadata,
                spec: spec.clone(),
                status: None,
            }),
            _ => return Err(BuildError::Source),
        }
    };
    let source_kind = source.kind();
    let source_ref = |kind: FluxKind| CrossNamespaceSourceReference {
        kind: kind.as_str().to_string(),
        name: app_name.clone(),
        ..CrossNamespaceSourceReference::default()
    };

    let mut kustomizations = Vec::new();
    let mut helm_releases = Vec::new();
    // name → policy that generated it, to refuse collisions instead of flip-flopping.
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    for (index, (policy, resolved)) in app.spec.sync_policies.iter().zip(policies).enumerate() {
        let policy_name = policy_name(app, index);
        let kind = PolicyKind::of(policy).ok_or_else(|| BuildError::PolicyKind {
            policy: policy_name.clone(),
        })?;
        let mut ks = Vec::new();
        let mut hrs = Vec::new();
        for target in &resolved.targets {
            let name = resource_name(&policy_name, target.cluster_kind, &target.cluster_name);
            if let Some(first) = names.insert(name.clone(), policy_name.clone()) {
                return Err(BuildError::DuplicateName {
                    name,
                    first,
                    second: policy_name,
                });
            }
            let mut labels = app_labels(&app_name);
            labels.extend([
                (label::FLEET.to_string(), label_value(&target.fleet)),
                (
                    label::CLUSTER.to_string(),
                    label_value(&target.cluster_name),
                ),
                (
                    label::CLUSTER_KIND.to_string(),
                    target.cluster_kind.as_str().to_string(),
                ),
                (label::POLICY.to_string(), label_value(&policy_name)),
            ]);
            let metadata = meta(&name, labels);
            let kube_config = Some(KubeConfigReference {
                secret_ref: SecretKeyReference {
                    name: target.kubeconfig.name.clone(),
                    key: Some(target.kubeconfig.key.clone()),
                },
            });
            match kind {
                PolicyKind::Kustomization(k) => {
                    if source_kind == FluxKind::HelmRepository {
                        return Err(BuildError::IncompatibleSource {
                            policy: policy_name,
                            kind: source_kind,
                        });
                    }
                    let post_build = resolved.substitute.then(|| PostBuild {
                        substitute: BTreeMap::from([
                            (substitute::CLUSTER.into(), target.cluster_name.clone()),
                            (substitute::FLEET.into(), target.fleet.clone()),
                            (
                                substitute::CLUSTER_KIND.into(),
                                target.cluster_kind.as_str().into(),
                            ),
                        ]),
                        substitute_from: None,
                    });
                    ks.push(Kustomization {
                        metadata,
                        spec: kustomization_spec(
                            k,
                            source_ref(source_kind),
                            kube_config,
                            post_build,
                        ),
                        status: None,
                    });
                }
                PolicyKind::Helm(h) => {
                    let (chart, chart_ref) = if source_kind == FluxKind::OciRepository {
                        // Flux v2 takes an OCI chart artifact through chartRef only; the
                        // OCIRepository's ref picks the version.
                        (None, Some(source_ref(source_kind)))
                    } else {
                        (
                            Some(chart_template(&h.chart, source_ref(source_kind))),
                            None,
                        )
                    };
                    hrs.push(HelmRelease {
                        metadata,
                        spec: helm_release_spec(h, chart, chart_ref, kube_config),
                        status: None,
                    });
                }
            }
        }
        ks.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        hrs.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        kustomizations.extend(ks);
        helm_releases.extend(hrs);
    }
    Ok(Desired {
        source,
        pinned_sources: Vec::new(),
        tracking_chart: None,
        kustomizations,
        helm_releases,
    })
}

/// Existing objects to delete: those in the Application's namespace, labelled with its name
/// and owned by it, that `desired` no longer contains (a cluster left the fleet, a policy was
/// removed or renamed, the source kind changed). Objects someone else owns are left alone.
/// Call it only when every policy's targets were resolved, or objects of unresolved
/// destinations would be pruned. Sorted.
pub fn prune(app: &Application, existing: &[Existing], desired: &Desired) -> Vec<FluxObjectRef> {
    let (Some(uid), Some(namespace)) = (app.metadata.uid.as_deref(), app.namespace()) else {
        return Vec::new();
    };
    let app_label = label_value(&app.name_any());
    let wanted = desired.refs();
    let mut out: Vec<FluxObjectRef> = existing
        .iter()
        .filter(|e| e.object.namespace == namespace)
        .filter(|e| e.labels.get(APP_NAME) == Some(&app_label))
        .filter(|e| e.owner_uids.iter().any(|o| o == uid))
        .filter(|e| !wanted.contains(&e.object))
        .map(|e| e.object.clone())
        .collect();
    out.sort();
    out.dedup();
    out
}

#[derive(Clone, Copy)]
enum PolicyKind<'a> {
    Kustomization(&'a apps::Kustomization),
    Helm(&'a apps::HelmRelease),
}

impl<'a> PolicyKind<'a> {
    fn of(policy: &'a ApplicationSyncPolicy) -> Option<Self> {
        match (&policy.kustomization, &policy.helm) {
            (Some(k), None) => Some(PolicyKind::Kustomization(k)),
            (None, Some(h)) => Some(PolicyKind::Helm(h)),
            _ => None,
        }
    }
}

fn kustomization_spec(
    k: &apps::Kustomization,
    source_ref: CrossNamespaceSourceReference,
    kube_config: Option<KubeConfigReference>,
    post_build: Option<PostBuild>,
) -> KustomizationSpec {
    KustomizationSpec {
        source_ref,
        kube_config,
        interval: k.interval.clone(),
        retry_interval: k.retry_interval.clone(),
        path: k.path.clone(),
        prune: k.prune,
        target_namespace: k.target_namespace.clone(),
        timeout: k.timeout.clone(),
        depends_on: k.depends_on.clone(),
        patches: k.patches.clone(),
        images: k.images.clone(),
        components: k.components.clone(),
        common_metadata: k.common_metadata.clone(),
        suspend: k.suspend,
        force: k.force,
        post_build,
        wait: k.wait,
    }
}

fn chart_template(
    chart: &apps::HelmChartTemplate,
    source_ref: CrossNamespaceSourceReference,
) -> HelmChartTemplate {
    let spec = &chart.spec;
    HelmChartTemplate {
        metadata: chart.metadata.clone(),
        spec: HelmChartTemplateSpec {
            chart: spec.chart.clone(),
            version: spec.version.clone(),
            source_ref,
            interval: spec.interval.clone(),
            reconcile_strategy: spec.reconcile_strategy.clone(),
            values_files: spec.values_files.clone(),
            verify: None,
        },
    }
}

fn helm_release_spec(
    h: &apps::HelmRelease,
    chart: Option<HelmChartTemplate>,
    chart_ref: Option<CrossNamespaceSourceReference>,
    kube_config: Option<KubeConfigReference>,
) -> HelmReleaseSpec {
    HelmReleaseSpec {
        chart,
        chart_ref,
        interval: h.interval.clone(),
        kube_config,
        suspend: h.suspend,
        release_name: h.release_name.clone(),
        target_namespace: h.target_namespace.clone(),
        storage_namespace: None,
        depends_on: h.depends_on.clone(),
        timeout: h.timeout.clone(),
        max_history: h.max_history,
        service_account_name: h.service_account_name.clone(),
        persistent_client: h.persistent_client,
        install: h.install.clone(),
        upgrade: h.upgrade.clone(),
        rollback: h.rollback.clone(),
        uninstall: h.uninstall.clone(),
        values_from: h.values_from.clone(),
        values: h.values.clone(),
    }
}

#[cfg(test)]
mod tests;
