//! Pure: what a staged rollout step observes (`rollout::observe::Observations`), from what the
//! controller read out of its stores: the tracking source's artifact revision, each target
//! cluster's Flux objects, the fleets' policy report counts and the request annotations.

use std::collections::BTreeMap;

use kube::ResourceExt;
use kurator_api::{
    Application, Fleet,
    fleet::ClusterKind,
    flux::{self, FluxReadiness, FluxStatus},
};

use super::{
    build::{policy_name, resource_name},
    targets::Resolved,
};
use crate::rollout::{
    gates::PolicyCounts,
    observe::{Observations, ObservedCluster, Requests},
    pinning::same_revision,
};

/// A per-cluster Flux object as the store shows it: `metadata.generation` and status.
pub type FluxObject = (Option<i64>, Option<FluxStatus>);

/// The observations of one step. `latest_revision` is the tracking source's artifact
/// revision; `flux_object` looks a Kustomization / HelmRelease up by name in the
/// Application's namespace; `fleets` are the destination fleets (for their policy reports).
/// Metric samples are not filled here (the gate evaluator's job).
pub fn observations(
    app: &Application,
    resolved: &Resolved,
    latest_revision: Option<String>,
    flux_object: impl Fn(&str) -> Option<FluxObject>,
    fleets: &[Fleet],
) -> Observations {
    let policy_counts = policy_counts(fleets);
    // Every policy's object of a cluster, grouped by cluster name (the rollout's identity).
    let mut per_cluster: BTreeMap<String, (ClusterKind, Vec<Option<FluxObject>>)> = BTreeMap::new();
    for (index, targets) in resolved.policies.iter().enumerate() {
        let policy = policy_name(app, index);
        for target in &targets.targets {
            let name = resource_name(&policy, target.cluster_kind, &target.cluster_name);
            per_cluster
                .entry(target.cluster_name.clone())
                .or_insert_with(|| (target.cluster_kind, Vec::new()))
                .1
                .push(flux_object(&name));
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

/// One cluster from its Flux objects: Ready when every one is Ready at its generation (with
/// `wait: true` Flux's Ready includes the workloads' health), at a revision when they all
/// applied the same one.
fn observe_cluster(name: String, objects: &[Option<FluxObject>]) -> ObservedCluster {
    let mut ready = !objects.is_empty();
    let mut message = None;
    let mut revisions = Vec::new();
    for object in objects {
        let Some((generation, status)) = object else {
            ready = false;
            message.get_or_insert_with(|| "no Flux object yet".to_string());
            revisions.push(None);
            continue;
        };
        match flux::readiness(*generation, status.as_ref()) {
            FluxReadiness::Ready => {}
            FluxReadiness::NotReady { message: m, .. }
            | FluxReadiness::Progressing { message: m, .. } => {
                ready = false;
                message.get_or_insert(m);
            }
        }
        revisions.push(status.as_ref().and_then(|s| {
            s.last_applied_revision
                .clone()
                .or_else(|| s.last_attempted_revision.clone())
        }));
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
    }
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
mod tests {
    use super::*;

    fn status(json: serde_json::Value) -> Option<FluxStatus> {
        Some(serde_json::from_value(json).expect("flux status"))
    }

    fn ready_at(revision: &str) -> Option<FluxObject> {
        Some((
            Some(2),
            status(serde_json::json!({
                "observedGeneration": 2,
                "lastAppliedRevision": revision,
                "conditions": [{"type": "Ready", "status": "True", "reason": "ReconciliationSucceeded",
                    "message": "", "lastTransitionTime": "2026-12-02T04:00:00Z"}],
            })),
        ))
    }

    #[test]
    fn a_cluster_is_at_a_revision_only_when_all_its_objects_agree() {
        let a = "main@sha1:1111111111111111111111111111111111111111";
        let same = "sha1:1111111111111111111111111111111111111111";
        let c = observe_cluster("m1".into(), &[ready_at(a), ready_at(same)]);
        assert!(c.ready && c.healthy);
        assert_eq!(c.applied_revision.as_deref(), Some(a));

        let b = "main@sha1:2222222222222222222222222222222222222222";
        let c = observe_cluster("m1".into(), &[ready_at(a), ready_at(b)]);
        assert_eq!(c.applied_revision, None);

        let c = observe_cluster("m1".into(), &[ready_at(a), None]);
        assert!(!c.ready);
        assert_eq!(c.message.as_deref(), Some("no Flux object yet"));
    }

    #[test]
    fn members_without_readable_reports_have_no_policy_counts() {
        let fleet: Fleet = serde_json::from_value(serde_json::json!({
            "apiVersion": "fleet.kurator.dev/v1alpha1",
            "kind": "Fleet",
            "metadata": {"name": "f", "namespace": "default"},
            "spec": {"clusters": []},
            "status": {"policyReport": {"clusters": [
                {"name": "current", "fail": 2, "lastSeen": "2026-12-02T04:00:00Z", "stale": false},
                {"name": "stale", "fail": 1, "lastSeen": "2026-12-02T04:00:00Z", "stale": true,
                    "staleSince": "2026-12-02T04:01:00Z", "message": "unreachable since …"},
                {"name": "no-kyverno", "fail": 0, "lastSeen": "2026-12-02T04:00:00Z", "stale": false,
                    "message": "the wgpolicyk8s.io CRDs are not installed (no Kyverno yet)"},
                {"name": "never-read", "fail": 0, "stale": false,
                    "message": "connection refused"},
            ]}},
        }))
        .expect("fleet");
        let counts = policy_counts(&[fleet]);
        let counted = |failed, stale| Some(PolicyCounts { failed, stale });
        assert_eq!(counts.get("current").copied(), counted(2, false));
        assert_eq!(counts.get("stale").copied(), counted(1, true));
        assert_eq!(counts.get("no-kyverno"), None);
        assert_eq!(counts.get("never-read"), None);
    }

    #[test]
    fn oci_revisions_agree_by_digest() {
        // A Kustomization on a pinned OCIRepository applies `sha256:…`; on the tracking one
        // (before the first pin) `<tag>@sha256:…`.
        let hex = "3".repeat(64);
        let tracked = format!("latest@sha256:{hex}");
        let pinned = format!("sha256:{hex}");
        let c = observe_cluster("m1".into(), &[ready_at(&pinned), ready_at(&tracked)]);
        assert_eq!(c.applied_revision.as_deref(), Some(pinned.as_str()));
        assert!(c.healthy_at(Some(&tracked)));
        let other = format!("latest@sha256:{}", "4".repeat(64));
        assert!(!c.healthy_at(Some(&other)));
    }

    #[test]
    fn an_object_not_observed_at_its_generation_is_not_ready() {
        let mut object = ready_at("sha1:11").expect("object");
        object.0 = Some(3);
        let c = observe_cluster("m1".into(), &[Some(object)]);
        assert!(!c.ready);
        assert!(c.message.is_some());
    }
}
