use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kurator_api::{
    apps::ApplicationStatus,
    cluster::SecretKeyRef,
    rollout::{ClusterRolloutState, ClusterRolloutStatus, StagedRolloutStatus},
};

use super::*;
use crate::application::build::{PolicyTargets, Target};

const V1: &str = "main@sha1:1111111111111111111111111111111111111111";
const V2: &str = "main@sha1:2222222222222222222222222222222222222222";

fn status(json: serde_json::Value) -> Option<FluxStatus> {
    Some(serde_json::from_value(json).expect("flux status"))
}

/// A Ready object at generation 2 whose status carries `fields` besides.
fn ready_with(fields: serde_json::Value) -> FluxObject {
    let mut json = serde_json::json!({
        "observedGeneration": 2,
        "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded",
            "message": "", "lastTransitionTime": "2026-12-02T04:00:00Z"}],
    });
    json.as_object_mut()
        .unwrap()
        .extend(fields.as_object().cloned().unwrap_or_default());
    FluxObject {
        generation: Some(2),
        status: status(json),
        pinned_revision_id: None,
    }
}

fn kustomization_at(revision: &str) -> Option<Seen> {
    let object = ready_with(serde_json::json!({"lastAppliedRevision": revision}));
    Some(Seen {
        revision: revision_of(&object, RevisionFrom::Kustomization),
        generation: object.generation,
        status: object.status,
    })
}

fn revision_of(object: &FluxObject, from: RevisionFrom) -> Option<String> {
    revision(object, from, &BTreeMap::new(), None)
}

#[test]
fn a_cluster_is_at_a_revision_only_when_all_its_objects_agree() {
    let same = "sha1:1111111111111111111111111111111111111111";
    let c = observe_cluster("m1".into(), &[kustomization_at(V1), kustomization_at(same)]);
    assert!(c.ready && c.healthy);
    assert_eq!(c.applied_revision.as_deref(), Some(V1));

    let c = observe_cluster("m1".into(), &[kustomization_at(V1), kustomization_at(V2)]);
    assert_eq!(c.applied_revision, None);

    let c = observe_cluster("m1".into(), &[kustomization_at(V1), None]);
    assert!(!c.ready);
    assert_eq!(c.message.as_deref(), Some("no Flux object yet"));
}

#[test]
fn oci_revisions_agree_by_digest() {
    // A Kustomization on a pinned OCIRepository applies `sha256:…`; on the tracking one
    // (before the first pin) `<tag>@sha256:…`.
    let hex = "3".repeat(64);
    let tracked = format!("latest@sha256:{hex}");
    let pinned = format!("sha256:{hex}");
    let c = observe_cluster(
        "m1".into(),
        &[kustomization_at(&pinned), kustomization_at(&tracked)],
    );
    assert_eq!(c.applied_revision.as_deref(), Some(pinned.as_str()));
    assert!(c.healthy_at(Some(&tracked)));
    let other = format!("latest@sha256:{}", "4".repeat(64));
    assert!(!c.healthy_at(Some(&other)));
}

/// kustomize-controller's status while it reconciles again (`Ready` Unknown), having
/// finished generation `observed`.
fn reconciling(generation: i64, observed: i64, revision: &str) -> Option<Seen> {
    Some(Seen {
        revision: Some(revision.to_string()),
        generation: Some(generation),
        status: status(serde_json::json!({
            "observedGeneration": observed,
            "lastAppliedRevision": revision,
            "conditions": [{"type": "Ready", "status": "Unknown", "reason": "Progressing",
                "message": "Reconciliation in progress", "observedGeneration": generation,
                "lastTransitionTime": "2026-12-02T04:00:00Z"}],
        })),
    })
}

#[test]
fn flux_reconciling_a_finished_generation_again_is_rechecking_a_new_one_is_not() {
    // The periodic drift check: not ready, but no verdict on health either.
    let c = observe_cluster("m1".into(), &[reconciling(2, 2, V1)]);
    assert!(!c.ready);
    assert!(c.rechecking);
    assert!(c.rechecking_at(Some(V1)));
    assert!(!c.rechecking_at(Some(V2)));
    assert_eq!(c.message.as_deref(), Some("Reconciliation in progress"));
    // A new generation (a pin) being applied: Flux has not finished it.
    let c = observe_cluster("m1".into(), &[reconciling(3, 2, V1)]);
    assert!(!c.ready && !c.rechecking);
    // One object rechecking, another failed: the cluster is not healthy.
    let mut failed = kustomization_at(V1).expect("object");
    let ready = &mut failed.status.as_mut().expect("status").conditions[0];
    ready.status = "False".into();
    let c = observe_cluster("m1".into(), &[reconciling(2, 2, V1), Some(failed)]);
    assert!(!c.ready && !c.rechecking);
    // Ready: not rechecking.
    let c = observe_cluster("m1".into(), &[kustomization_at(V1)]);
    assert!(c.ready && !c.rechecking);
}

#[test]
fn an_object_not_observed_at_its_generation_is_not_ready() {
    let mut seen = kustomization_at("sha1:11").expect("object");
    seen.generation = Some(3);
    let c = observe_cluster("m1".into(), &[Some(seen)]);
    assert!(!c.ready);
    assert!(c.message.is_some());
}

// HelmReleases, through `observations` as the controller calls it.

fn app(source: &str, policies: &str, state: StagedRolloutStatus) -> Application {
    let mut app: Application = serde_saphyr::from_str(&format!(
        "
metadata: {{name: shop, namespace: default, uid: u1}}
spec:
  source: {source}
  destination: {{fleet: quickstart}}
  syncPolicies:
{policies}
  stagedRollout:
    stages: [{{name: all, rest: true}}]
"
    ))
    .expect("fixture");
    app.status = Some(ApplicationStatus {
        staged_rollout: Some(state),
        ..Default::default()
    });
    app
}

const GIT: &str = "{gitRepository: {url: 'http://127.0.0.1/shop.git', interval: 1m}}";
const OCI: &str = "{ociRepository: {url: 'oci://127.0.0.1/shop', interval: 1m}}";
const HELM: &str = "    - helm: {interval: 1m, chart: {spec: {chart: ./charts/shop}}}";
const HELM_REVISION: &str = "    - helm: {interval: 1m, chart: {spec: {chart: ./charts/shop, reconcileStrategy: Revision}}}";
const KUSTOMIZATION: &str = "    - kustomization: {interval: 1m, prune: true}";

/// The state after a run pinned m1 to V2, the rest staying on V1.
fn state() -> StagedRolloutStatus {
    let cluster = |revision: &str| ClusterRolloutStatus {
        name: "m1".into(),
        stage: Some("all".into()),
        revision: Some(revision.into()),
        state: ClusterRolloutState::Progressing,
        since: Time("2026-12-02T04:00:00Z".parse().unwrap()),
        policy_failures_at_start: None,
        message: None,
    };
    StagedRolloutStatus {
        stable_revision: Some(V1.into()),
        clusters: vec![cluster(V2)],
        ..Default::default()
    }
}

fn resolved(policies: usize) -> Resolved {
    let target = Target {
        fleet: "quickstart".into(),
        cluster_name: "m1".into(),
        cluster_kind: ClusterKind::AttachedCluster,
        kubeconfig: SecretKeyRef {
            name: "m1".into(),
            key: "value".into(),
        },
    };
    Resolved {
        policies: vec![
            PolicyTargets {
                targets: vec![target],
                substitute: false,
            };
            policies
        ],
        complete: true,
        ..Default::default()
    }
}

/// m1's observation when each of its objects (by kind) is `object`.
fn observe_m1(
    app: &Application,
    object: impl Fn(FluxKind) -> Option<FluxObject>,
) -> ObservedCluster {
    let policies = app.spec.sync_policies.len();
    let observed = observations(
        app,
        &resolved(policies),
        Some(V2.into()),
        |kind, _| object(kind),
        &[],
    );
    observed.clusters.into_iter().next().expect("m1")
}

fn pinned_to(id: &str, chart_version: &str) -> FluxObject {
    FluxObject {
        pinned_revision_id: Some(id.into()),
        ..ready_with(serde_json::json!({"lastAttemptedRevision": chart_version}))
    }
}

#[test]
fn a_git_chart_runs_the_revision_of_the_pinned_source_its_spec_names() {
    let app = app(GIT, HELM, state());
    // Flux records only the chart version; the revision label names the pinned source.
    let c = observe_m1(&app, |_| Some(pinned_to("2222222222", "0.1.0")));
    assert_eq!(c.applied_revision.as_deref(), Some(V2));
    assert!(c.healthy_at(Some(V2)));
    let c = observe_m1(&app, |_| Some(pinned_to("1111111111", "0.1.0")));
    assert_eq!(c.applied_revision.as_deref(), Some(V1));
    // A revision no longer in use (its pinned source is garbage): unknown.
    let c = observe_m1(&app, |_| Some(pinned_to("3333333333", "0.1.0")));
    assert_eq!(c.applied_revision, None);
}

#[test]
fn a_git_chart_not_ready_at_its_generation_runs_no_known_revision() {
    let app = app(GIT, HELM, state());
    // Just repointed (generation 3, Flux still at 2): the release may be on the old chart.
    let c = observe_m1(&app, |_| {
        Some(FluxObject {
            generation: Some(3),
            ..pinned_to("2222222222", "0.1.0")
        })
    });
    assert_eq!(c.applied_revision, None);
    assert!(!c.ready);
    // Failed at it: not known to run it either.
    let failed = FluxObject {
        status: status(serde_json::json!({
            "observedGeneration": 2, "lastAttemptedRevision": "0.1.0",
            "conditions": [{"type": "Ready", "status": "False", "reason": "UpgradeFailed",
                "message": "boom", "observedGeneration": 2}],
        })),
        ..pinned_to("2222222222", "0.1.0")
    };
    let c = observe_m1(&app, |_| Some(failed.clone()));
    assert_eq!(c.applied_revision, None);
    assert_eq!(c.message.as_deref(), Some("boom"));
    assert!(c.failing, "Ready False is a failure, not progress");
    // Rechecked at the generation it finished (`Ready` Unknown): still on that chart.
    let rechecking = FluxObject {
        status: status(serde_json::json!({
            "observedGeneration": 2, "lastAttemptedRevision": "0.1.0",
            "conditions": [{"type": "Ready", "status": "Unknown", "reason": "Progressing",
                "message": "reconciling", "observedGeneration": 2}],
        })),
        ..pinned_to("2222222222", "0.1.0")
    };
    let c = observe_m1(&app, |_| Some(rechecking.clone()));
    assert!(c.applied_revision.is_some() && c.rechecking && !c.ready);
    assert!(!c.failing);
}

#[test]
fn a_git_chart_before_its_first_pin_runs_the_tracking_sources_revision() {
    // No revision label: the HelmRelease still names the tracking source, whose latest
    // revision it runs once Ready at its generation (what adopting the first revision needs).
    let app = app(GIT, HELM, StagedRolloutStatus::default());
    let tracking = ready_with(serde_json::json!({"lastAttemptedRevision": "0.1.0"}));
    let c = observe_m1(&app, |_| Some(tracking.clone()));
    assert_eq!(c.applied_revision.as_deref(), Some(V2));
}

#[test]
fn with_the_revision_strategy_the_chart_version_must_name_the_commit() {
    let app = app(GIT, HELM_REVISION, state());
    let c = observe_m1(&app, |_| {
        Some(pinned_to("2222222222", "0.1.0+222222222222"))
    });
    assert_eq!(c.applied_revision.as_deref(), Some(V2));
    // With values files Flux appends the HelmChart's generation.
    let c = observe_m1(&app, |_| {
        Some(pinned_to("2222222222", "0.1.0+222222222222.4"))
    });
    assert_eq!(c.applied_revision.as_deref(), Some(V2));
    // Ready on a chart still built from the previous commit: not at V2 yet.
    let c = observe_m1(&app, |_| {
        Some(pinned_to("2222222222", "0.1.0+111111111111"))
    });
    assert_eq!(c.applied_revision, None);
    let c = observe_m1(&app, |_| Some(pinned_to("2222222222", "0.1.0")));
    assert_eq!(c.applied_revision, None);
}

#[test]
fn an_oci_chart_runs_the_digest_flux_attempted() {
    let hex = "5".repeat(64);
    let app = app(OCI, HELM, StagedRolloutStatus::default());
    let object = ready_with(serde_json::json!({
        "lastAttemptedRevision": format!("0.1.0+{}", &hex[..12]),
        "lastAttemptedRevisionDigest": format!("sha256:{hex}"),
    }));
    let c = observe_m1(&app, |_| Some(object.clone()));
    assert_eq!(
        c.applied_revision.as_deref(),
        Some(format!("sha256:{hex}").as_str())
    );
    assert!(c.runs(Some(&format!("0.1.0@sha256:{hex}"))));
}

#[test]
fn a_kustomization_and_a_chart_of_one_cluster_agree_by_digest() {
    let policies = format!("{KUSTOMIZATION}\n{HELM}");
    let app = app(GIT, &policies, state());
    let c = observe_m1(&app, |kind| match kind {
        FluxKind::Kustomization => Some(ready_with(serde_json::json!({
            "lastAppliedRevision": "sha1:2222222222222222222222222222222222222222"
        }))),
        _ => Some(pinned_to("2222222222", "0.1.0")),
    });
    assert_eq!(
        c.applied_revision.as_deref(),
        Some("sha1:2222222222222222222222222222222222222222")
    );
    assert!(c.healthy_at(Some(V2)));
    let c = observe_m1(&app, |kind| match kind {
        FluxKind::Kustomization => Some(ready_with(serde_json::json!({"lastAppliedRevision": V2}))),
        _ => Some(pinned_to("1111111111", "0.1.0")),
    });
    assert_eq!(c.applied_revision, None);
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

const REPOSITORY: &str = "{helmRepository: {url: 'http://127.0.0.1/charts', interval: 1m}}";
const HELM_SHOP: &str =
    "    - helm: {interval: 1m, chart: {spec: {chart: shop, version: '>=1.0.0'}}}";

/// The state after a run pinned m1 to chart version 1.1.0 from a stable 1.0.0.
fn chart_state() -> StagedRolloutStatus {
    let mut state = state();
    state.stable_revision = Some("1.0.0".into());
    state.clusters[0].revision = Some("1.1.0".into());
    state
}

#[test]
fn a_repository_chart_runs_the_version_its_spec_pins() {
    let app = app(REPOSITORY, HELM_SHOP, chart_state());
    let id = revision_id("1.1.0");
    let c = observe_m1(&app, |_| Some(pinned_to(&id, "1.1.0")));
    assert_eq!(c.applied_revision.as_deref(), Some("1.1.0"));
    // With valuesFiles Flux gives the version the HelmChart's generation as build metadata.
    let c = observe_m1(&app, |_| Some(pinned_to(&id, "1.1.0+3")));
    assert_eq!(c.applied_revision.as_deref(), Some("1.1.0"));
    // Ready, but on a chart helm-controller read before the HelmChart moved to 1.1.0.
    let c = observe_m1(&app, |_| Some(pinned_to(&id, "1.0.0")));
    assert_eq!(c.applied_revision, None);
    let c = observe_m1(&app, |_| Some(pinned_to(&revision_id("1.0.0"), "1.0.0")));
    assert_eq!(c.applied_revision.as_deref(), Some("1.0.0"));
}

#[test]
fn a_repository_chart_before_its_first_pin_runs_the_latest_only_at_that_version() {
    let app = app(REPOSITORY, HELM_SHOP, StagedRolloutStatus::default());
    let observe = |version: &str| {
        let object = ready_with(serde_json::json!({"lastAttemptedRevision": version}));
        let observed = observations(
            &app,
            &resolved(1),
            Some("1.1.0".into()),
            |_, _| Some(object.clone()),
            &[],
        );
        observed.clusters[0].applied_revision.clone()
    };
    assert_eq!(observe("1.1.0").as_deref(), Some("1.1.0"));
    assert_eq!(observe("1.0.0"), None);
}
