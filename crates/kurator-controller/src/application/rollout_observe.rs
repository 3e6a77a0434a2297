//! Pure: what a staged rollout step observes (`rollout::observe::Observations`), from what the
//! controller read out of its stores: the tracking source's artifact revision, each target
//! cluster's Flux objects, the fleets' policy report counts and the request annotations.

use std::collections::BTreeMap;

use kube::ResourceExt;
use kurator_api::{
    Application, Fleet,
    fleet::ClusterKind,
    flux::{self, FluxKind, FluxReadiness, FluxStatus},
};

use super::{
    build::{policy_name, resource_name},
    targets::Resolved,
};
use crate::rollout::{
    gates::PolicyCounts,
    observe::{Observations, ObservedCluster, Requests},
    pinning::{git_commit, revision_id, revisions_in_use, same_revision},
};

/// A per-cluster Flux object as the store shows it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FluxObject {
    /// `metadata.generation`.
    pub generation: Option<i64>,
    pub status: Option<FluxStatus>,
    /// The `apps.kurator.dev/revision` label of a pinned HelmRelease: the id of the revision
    /// whose pinned source its spec names (label and spec are written in one patch).
    pub pinned_revision_id: Option<String>,
}

/// How a policy's objects tell the revision they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RevisionFrom {
    /// A Kustomization: the source revision it last applied (else attempted).
    Kustomization,
    /// A HelmRelease on an OCIRepository (`chartRef`): the digest Flux records it attempted
    /// (`status.lastAttemptedRevisionDigest`).
    OciChart,
    /// A HelmRelease with a chart from a GitRepository: Flux records only the chart version,
    /// so the revision is the one of the source its spec names (the pinned source of its
    /// revision label; before the first pin, the tracking source's latest), once it is Ready
    /// at its generation. `revision_strategy`: the chart version then carries the commit
    /// (`<version>+<12 hex>`), which must agree.
    GitChart { revision_strategy: bool },
    /// A HelmRelease with a chart from a HelmRepository: the revision is a chart version, the
    /// one its spec pins (its revision label; before the first pin, the tracking chart's
    /// latest), once it is Ready at its generation and Flux's chart version agrees (Flux
    /// replaces build metadata with the generation when `valuesFiles` are set, so the
    /// versions are compared without it).
    RepositoryChart,
}

/// The observations of one step. `latest_revision` is the tracking source's artifact
/// revision; `flux_object` looks a Kustomization / HelmRelease up by kind and name in the
/// Application's namespace; `fleets` are the destination fleets (for their policy reports).
/// Metric samples are not filled here (the gate evaluator's job).
pub fn observations(
    app: &Application,
    resolved: &Resolved,
    latest_revision: Option<String>,
    flux_object: impl Fn(FluxKind, &str) -> Option<FluxObject>,
    fleets: &[Fleet],
) -> Observations {
    let policy_counts = policy_counts(fleets);
    // Revision id (a pinned HelmRelease's label) → the revision, from the stored state.
    let by_id: BTreeMap<String, String> = app
        .status
        .as_ref()
        .and_then(|s| s.staged_rollout.as_ref())
        .map(revisions_in_use)
        .unwrap_or_default()
        .into_iter()
        .map(|r| (revision_id(&r), r))
        .collect();
    let oci = app.spec.source.oci_repository.is_some();
    let repository = app.spec.source.helm_repository.is_some();
    // Every policy's object of a cluster, grouped by cluster name (the rollout's identity).
    let mut per_cluster: BTreeMap<String, (ClusterKind, Vec<Option<Seen>>)> = BTreeMap::new();
    for (index, targets) in resolved.policies.iter().enumerate() {
        let policy = policy_name(app, index);
        let helm = app
            .spec
            .sync_policies
            .get(index)
            .and_then(|p| p.helm.as_ref());
        let (kind, from) = match helm {
            None => (FluxKind::Kustomization, RevisionFrom::Kustomization),
            Some(_) if oci => (FluxKind::HelmRelease, RevisionFrom::OciChart),
            Some(_) if repository => (FluxKind::HelmRelease, RevisionFrom::RepositoryChart),
            Some(h) => (
                FluxKind::HelmRelease,
                RevisionFrom::GitChart {
                    revision_strategy: h.chart.spec.reconcile_strategy.as_deref()
                        == Some("Revision"),
                },
            ),
        };
        for target in &targets.targets {
            let name = resource_name(&policy, target.cluster_kind, &target.cluster_name);
            let seen = flux_object(kind, &name).map(|object| Seen {
                revision: revision(&object, from, &by_id, latest_revision.as_deref()),
                generation: object.generation,
                status: object.status,
            });
            per_cluster
                .entry(target.cluster_name.clone())
                .or_insert_with(|| (target.cluster_kind, Vec::new()))
                .1
                .push(seen);
        }
    }
    let clusters = per_cluster
        .into_iter()
        .map(|(name, (kind, objects))| {
            let labels = resolved
                .cluster_labels
                .get(&(kind, name.clone()))
                .cloned()
                .unwrap_or_default();
            let mut cluster = observe_cluster(name, &objects);
            cluster.labels = labels;
            cluster.policy = policy_counts.get(&cluster.name).copied();
            cluster
        })
        .collect();
    Observations {
        latest_revision,
        clusters,
        metrics: BTreeMap::new(),
        requests: Requests::from_annotations(app.annotations()),
    }
}

/// One Flux object and the source revision it runs, as far as its kind tells.
struct Seen {
    generation: Option<i64>,
    status: Option<FluxStatus>,
    revision: Option<String>,
}

/// The revision `object` runs ([`RevisionFrom`]). `by_id` maps revision ids to revisions;
/// `latest` is the tracking source's revision.
fn revision(
    object: &FluxObject,
    from: RevisionFrom,
    by_id: &BTreeMap<String, String>,
    latest: Option<&str>,
) -> Option<String> {
    let status = object.status.as_ref()?;
    match from {
        RevisionFrom::Kustomization => status
            .last_applied_revision
            .clone()
            .or_else(|| status.last_attempted_revision.clone()),
        RevisionFrom::OciChart => status
            .rest
            .get("lastAttemptedRevisionDigest")
            .and_then(|d| d.as_str())
            .filter(|d| !d.is_empty())
            .map(str::to_string),
        RevisionFrom::GitChart { .. } | RevisionFrom::RepositoryChart => {
            // Only a verdict on the current generation says which chart the release used (or
            // a recheck of it: the generation is finished, the chart it used unchanged).
            if !flux::readiness(object.generation, Some(status)).is_ready()
                && !rechecking(object.generation, Some(status))
            {
                return None;
            }
            let revision = match &object.pinned_revision_id {
                Some(id) => by_id.get(id)?.clone(),
                None => latest?.to_string(),
            };
            let chart_version = status.last_attempted_revision.as_deref();
            let agrees = match from {
                RevisionFrom::GitChart { revision_strategy } => {
                    !revision_strategy || chart_version_names(chart_version, &revision)
                }
                _ => chart_version.is_some_and(|v| version_core(v) == version_core(&revision)),
            };
            agrees.then_some(revision)
        }
    }
}

/// A chart version without its build metadata (`1.2.3+4` → `1.2.3`).
fn version_core(version: &str) -> &str {
    version.split_once('+').map_or(version, |(core, _)| core)
}

/// Whether a chart version built with `reconcileStrategy: Revision` from a git source
/// (`<version>+<first 12 hex of the commit>[.<generation>]`) names `revision`'s commit.
fn chart_version_names(version: Option<&str>, revision: &str) -> bool {
    let metadata = version
        .and_then(|v| v.split_once('+'))
        .map(|(_, m)| m.split('.').next().unwrap_or_default());
    match (metadata, git_commit(revision)) {
        (Some(short), Some(commit)) if !short.is_empty() => commit
            .to_ascii_lowercase()
            .starts_with(&short.to_ascii_lowercase()),
        _ => false,
    }
}

/// One cluster from its Flux objects: Ready when every one is Ready at its generation (with
/// `wait: true` Flux's Ready includes the workloads' health), at a revision when they all
/// run the same one; rechecking when the only objects not Ready are being reconciled again
/// at a generation Flux already finished ([`rechecking`]).
fn observe_cluster(name: String, objects: &[Option<Seen>]) -> ObservedCluster {
    let mut ready = !objects.is_empty();
    let mut all_rechecking = true;
    let mut failing = false;
    let mut message = None;
    let mut revisions = Vec::new();
    for object in objects {
        let Some(seen) = object else {
            ready = false;
            all_rechecking = false;
            message.get_or_insert_with(|| "no Flux object yet".to_string());
            revisions.push(None);
            continue;
        };
        match flux::readiness(seen.generation, seen.status.as_ref()) {
            FluxReadiness::Ready => {}
            FluxReadiness::NotReady { message: m, .. } => {
                ready = false;
                all_rechecking = false;
                // A failure's message wins over another object's progress message.
                if !failing {
                    message = Some(m);
                }
                failing = true;
            }
            FluxReadiness::Progressing { message: m, .. } => {
                ready = false;
                all_rechecking &= rechecking(seen.generation, seen.status.as_ref());
                message.get_or_insert(m);
            }
        }
        revisions.push(seen.revision.clone());
    }
    let applied_revision = match revisions.split_first() {
        Some((Some(first), rest))
            if rest
                .iter()
                .all(|r| r.as_deref().is_some_and(|r| same_revision(r, first))) =>
        {
            Some(first.clone())
        }
        _ => None,
    };
    ObservedCluster {
        name,
        labels: BTreeMap::new(),
        applied_revision,
        ready,
        healthy: ready,
        message: if ready { None } else { message },
        policy: None,
        rechecking: !ready && all_rechecking,
        failing,
    }
}

/// Flux is reconciling again a generation it already finished: `status.observedGeneration` is
/// the object's generation (Flux sets it when a reconcile ends) and `Ready` is Unknown
/// (kustomize-controller marks it so at the start of every reconcile, its periodic drift check
/// included). A new generation (a pin) is not this: Flux has not finished it.
fn rechecking(generation: Option<i64>, status: Option<&FluxStatus>) -> bool {
    let Some(status) = status else {
        return false;
    };
    let finished = generation.is_some() && status.observed_generation == generation;
    finished
        && status
            .condition(flux::condition::READY)
            .is_some_and(|ready| ready.status == "Unknown")
}

/// Failed policy results per member, from the fleets' aggregated reports. A member whose
/// reports were never read, or cannot exist (the wgpolicyk8s.io CRDs are not installed: no
/// Kyverno yet), shows zero failures without being stale; it has no counts, so the gate waits
/// instead of passing on a cluster nothing checks.
fn policy_counts(fleets: &[Fleet]) -> BTreeMap<String, PolicyCounts> {
    fleets
        .iter()
        .filter_map(|f| f.status.as_ref()?.policy_report.as_ref())
        .flat_map(|report| &report.clusters)
        .filter(|c| c.stale || (c.last_seen.is_some() && c.message.is_none()))
        .map(|c| {
            (
                c.name.clone(),
                PolicyCounts {
                    failed: c.fail,
                    stale: c.stale,
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests;
