//! Application status from Flux's view.

use super::*;
use crate::application::build::{PolicyTargets, Target};
use k8s_openapi::jiff::Timestamp;
use kurator_api::{cluster::SecretKeyRef, fleet::ClusterKind};

const DEMO: &str = "
metadata: {name: demo, namespace: default, generation: 2}
spec:
  source:
    gitRepository: {url: 'https://example.com/repo.git', interval: 1m}
  destination: {fleet: quickstart}
  syncPolicies:
    - kustomization: {interval: 1m, prune: true, path: ./deploy}
";

fn app(yaml: &str) -> Application {
    serde_saphyr::from_str(yaml).expect("fixture")
}

fn now() -> Time {
    Time(Timestamp::from_second(1_000).unwrap())
}

fn resolved(clusters: &[(&str, bool)]) -> Resolved {
    let targets = clusters
        .iter()
        .map(|(name, _)| Target {
            fleet: "quickstart".into(),
            cluster_name: name.to_string(),
            cluster_kind: ClusterKind::AttachedCluster,
            kubeconfig: SecretKeyRef {
                name: name.to_string(),
                key: "value".into(),
            },
        })
        .collect();
    Resolved {
        policies: vec![PolicyTargets {
            targets,
            substitute: false,
        }],
        cluster_ready: clusters
            .iter()
            .map(|(n, r)| ((ClusterKind::AttachedCluster, n.to_string()), *r))
            .collect(),
        problems: vec![],
        complete: true,
        ..Resolved::default()
    }
}

fn flux(json: serde_json::Value) -> FluxStatus {
    serde_json::from_value(json).expect("flux status")
}

fn source_at(revision: &str) -> FluxStatus {
    flux(serde_json::json!({
        "observedGeneration": 1,
        "artifact": {"revision": revision, "digest": "sha256:0"},
        "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded", "message": "stored artifact"}]
    }))
}

fn applied(revision: &str) -> (Option<i64>, FluxStatus) {
    (
        Some(1),
        flux(serde_json::json!({
            "observedGeneration": 1,
            "lastAppliedRevision": revision,
            "conditions": [{"type": "Ready", "status": "True", "reason": "ReconciliationSucceeded"}]
        })),
    )
}

fn failing(message: &str) -> (Option<i64>, FluxStatus) {
    (
        Some(1),
        flux(serde_json::json!({
            "observedGeneration": 1,
            "conditions": [{"type": "Ready", "status": "False", "reason": "ReconciliationFailed", "message": message}]
        })),
    )
}

fn observed(source: &str, objects: Vec<(&str, (Option<i64>, FluxStatus))>) -> Observed {
    Observed {
        source: Some(source_at(source)),
        source_generation: None,
        objects: objects
            .into_iter()
            .map(|(n, s)| (n.to_string(), s))
            .collect(),
        pinned_revision_ids: BTreeMap::new(),
        latest_revision: None,
    }
}

const M1: &str = "demo-0-attachedcluster-m1";
const M2: &str = "demo-0-attachedcluster-m2";

fn ready(status: &ApplicationStatus) -> (String, String, String) {
    let c = conditions::find(&status.conditions, "Ready").unwrap();
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

#[test]
fn every_cluster_at_the_source_revision_is_ready() {
    let app = app(DEMO);
    let seen = observed(
        "master@sha1:abc",
        vec![
            (M1, applied("master@sha1:abc")),
            (M2, applied("master@sha1:abc")),
        ],
    );
    let s = build_status(
        &app,
        &resolved(&[("m1", true), ("m2", true)]),
        &seen,
        None,
        now(),
    );
    assert_eq!(ready(&s).1, reason::ALL_CLUSTERS_SYNCED);
    assert_eq!(s.synced.as_deref(), Some("2/2"));
    assert_eq!(s.source_revision.as_deref(), Some("master@sha1:abc"));
    assert_eq!(s.sync_status.len(), 2);
    assert!(s.sync_status[0].kustomization_status.is_some());
    assert!(s.source_status.unwrap().git_repo_status.is_some());
    assert_eq!(s.observed_generation, Some(2));
    assert!(
        s.clusters
            .iter()
            .all(|c| c.ready && c.applied_revision.as_deref() == Some("master@sha1:abc"))
    );
}

#[test]
fn a_cluster_behind_the_new_commit_is_not_synced() {
    let app = app(DEMO);
    let seen = observed(
        "master@sha1:def",
        vec![
            (M1, applied("master@sha1:def")),
            (M2, applied("master@sha1:abc")),
        ],
    );
    let s = build_status(
        &app,
        &resolved(&[("m1", true), ("m2", true)]),
        &seen,
        None,
        now(),
    );
    assert_eq!(s.synced.as_deref(), Some("1/2"));
    let (status, reason_, message) = ready(&s);
    assert_eq!(
        (status.as_str(), reason_.as_str()),
        ("False", reason::NOT_SYNCED)
    );
    assert!(
        message.contains(
            "demo-0/m2 (OutdatedRevision: at master@sha1:abc, source at master@sha1:def)"
        ),
        "{message}"
    );
    let m2 = s.clusters.iter().find(|c| c.cluster == "m2").unwrap();
    assert_eq!(
        m2.message.as_deref(),
        Some("at master@sha1:abc, source at master@sha1:def")
    );
}

/// What kustomize-controller writes when `wait: true` gives up on a workload: Ready False for
/// the current generation (the condition's own observedGeneration), while
/// `status.observedGeneration` keeps the last generation that succeeded (-1: none yet).
fn health_check_failed(message: &str) -> (Option<i64>, FluxStatus) {
    (
        Some(1),
        flux(serde_json::json!({
            "observedGeneration": -1,
            "lastAttemptedRevision": "r1",
            "conditions": [{"type": "Ready", "status": "False", "reason": "HealthCheckFailed",
                "message": message, "observedGeneration": 1}]
        })),
    )
}

#[test]
fn a_failed_health_check_is_quoted_in_the_cluster_and_the_conditions() {
    let app = app(DEMO);
    let health = "timeout waiting for: [Deployment/default/podinfo status: 'InProgress']";
    let seen = observed("r1", vec![(M1, health_check_failed(health))]);
    let s = build_status(&app, &resolved(&[("m1", true)]), &seen, None, now());
    let m1 = &s.clusters[0];
    assert!(!m1.ready);
    assert_eq!(m1.reason.as_deref(), Some("HealthCheckFailed"));
    assert_eq!(m1.message.as_deref(), Some(health));
    assert_eq!(
        ready(&s),
        (
            "False".to_string(),
            reason::NOT_SYNCED.to_string(),
            format!("1 of 1 not synced: demo-0/m1 (HealthCheckFailed: {health})")
        )
    );
}

#[test]
fn long_flux_messages_are_cut_in_conditions_but_kept_per_cluster() {
    let app = app(DEMO);
    let long = format!("kustomize build failed:\n{}", "x".repeat(1000));
    let seen = observed("r1", vec![(M1, failing(&long))]);
    let s = build_status(&app, &resolved(&[("m1", true)]), &seen, None, now());
    assert_eq!(s.clusters[0].message.as_deref(), Some(long.as_str()));
    let (_, _, message) = ready(&s);
    let quoted = message
        .strip_prefix(
            "1 of 1 not synced: demo-0/m1 (ReconciliationFailed: kustomize build failed: x",
        )
        .expect(&message);
    assert!(quoted.ends_with("x…)"), "{message}");
    assert_eq!(
        quoted.chars().count(),
        300 - "kustomize build failed: x".len() + 2
    );
}

#[test]
fn an_unready_member_is_named_and_does_not_hide_the_others() {
    let app = app(DEMO);
    let seen = observed(
        "r1",
        vec![
            (M1, applied("r1")),
            (M2, failing("dial tcp: connection refused")),
        ],
    );
    let s = build_status(
        &app,
        &resolved(&[("m1", true), ("m2", false)]),
        &seen,
        None,
        now(),
    );
    let m1 = s.clusters.iter().find(|c| c.cluster == "m1").unwrap();
    let m2 = s.clusters.iter().find(|c| c.cluster == "m2").unwrap();
    assert!(m1.ready);
    assert_eq!(m2.reason.as_deref(), Some(reason::CLUSTER_NOT_READY));
    assert_eq!(m2.message.as_deref(), Some("dial tcp: connection refused"));
}

#[test]
fn a_member_that_went_down_is_not_counted_as_synced() {
    let app = app(DEMO);
    let seen = observed("r1", vec![(M1, applied("r1")), (M2, applied("r1"))]);
    let s = build_status(
        &app,
        &resolved(&[("m1", true), ("m2", false)]),
        &seen,
        None,
        now(),
    );
    assert_eq!(s.synced.as_deref(), Some("1/2"));
    let m2 = s.clusters.iter().find(|c| c.cluster == "m2").unwrap();
    assert_eq!(m2.reason.as_deref(), Some(reason::CLUSTER_NOT_READY));
    assert_eq!(
        m2.message.as_deref(),
        Some("cluster is not Ready; last applied r1")
    );
}

#[test]
fn objects_flux_has_not_seen_yet_are_progressing() {
    let app = app(DEMO);
    let seen = Observed {
        source: None,
        source_generation: None,
        objects: BTreeMap::new(),
        pinned_revision_ids: BTreeMap::new(),
        latest_revision: None,
    };
    let s = build_status(&app, &resolved(&[("m1", true)]), &seen, None, now());
    assert_eq!(ready(&s).1, reason::SOURCE_NOT_READY);
    assert_eq!(s.clusters[0].reason.as_deref(), Some(reason::PROGRESSING));
    // Plain progress is named without Flux's (or our) message.
    let synced = conditions::find(&s.conditions, reason::SYNCED).unwrap();
    assert_eq!(synced.message, "1 of 1 not synced: demo-0/m1 (Progressing)");
    assert_eq!(s.synced.as_deref(), Some("0/1"));
    assert!(s.sync_status.is_empty());
}

#[test]
fn blockers_and_destination_problems_explain_why() {
    let app = app(DEMO);
    let seen = Observed::default();
    let s = build_status(
        &app,
        &resolved(&[]),
        &seen,
        Some(&Blocker::FluxNotInstalled),
        now(),
    );
    assert_eq!(ready(&s).1, reason::FLUX_NOT_INSTALLED);

    let mut problems = resolved(&[]);
    problems.problems.push("fleet quickstart not found".into());
    let s = build_status(&app, &problems, &seen, None, now());
    assert_eq!(ready(&s).1, reason::DESTINATION_PROBLEM);
    assert_eq!(ready(&s).2, "fleet quickstart not found");
}

#[test]
fn helm_policies_are_synced_when_the_release_is_ready() {
    let app = app("
metadata: {name: demo, namespace: default}
spec:
  source:
    helmRepository: {url: 'https://charts.example.com', interval: 1m}
  destination: {fleet: quickstart}
  syncPolicies:
    - helm: {interval: 1m, chart: {spec: {chart: podinfo}}}
");
    let release = (
        Some(3),
        flux(serde_json::json!({
            "observedGeneration": 3,
            "lastAttemptedRevision": "6.5.0",
            "conditions": [{"type": "Ready", "status": "True", "reason": "InstallSucceeded"}]
        })),
    );
    let seen = observed("sha256:index", vec![(M1, release)]);
    let s = build_status(&app, &resolved(&[("m1", true)]), &seen, None, now());
    assert_eq!(ready(&s).1, reason::ALL_CLUSTERS_SYNCED);
    assert_eq!(s.clusters[0].kind, "HelmRelease");
    assert_eq!(s.clusters[0].applied_revision.as_deref(), Some("6.5.0"));
    assert!(s.sync_status[0].helm_release_status.is_some());
}

#[test]
fn a_pinned_helm_release_is_synced_only_at_the_latest_revision() {
    // A staged rollout pins the release to a GitRepository `<app>-r-<id>` and labels it with
    // the id; Flux itself reports only the chart version.
    let app = app("
metadata: {name: demo, namespace: default}
spec:
  source:
    gitRepository: {url: 'http://127.0.0.1/demo.git', interval: 1m}
  destination: {fleet: quickstart}
  syncPolicies:
    - helm: {interval: 1m, chart: {spec: {chart: ./charts/demo}}}
");
    let release = (
        Some(3),
        flux(serde_json::json!({
            "observedGeneration": 3,
            "lastAttemptedRevision": "0.1.0",
            "conditions": [{"type": "Ready", "status": "True", "reason": "UpgradeSucceeded"}]
        })),
    );
    let latest = "main@sha1:2222222222222222222222222222222222222222";
    let mut seen = observed(latest, vec![(M1, release)]);
    seen.pinned_revision_ids
        .insert(M1.into(), "1111111111".into());
    let s = build_status(&app, &resolved(&[("m1", true)]), &seen, None, now());
    assert_eq!(ready(&s).1, reason::NOT_SYNCED);
    assert_eq!(
        s.clusters[0].reason.as_deref(),
        Some(reason::OUTDATED_REVISION)
    );
    assert_eq!(
        s.clusters[0].message.as_deref(),
        Some(format!("at revision 1111111111 (chart 0.1.0), source at {latest}").as_str())
    );
    seen.pinned_revision_ids
        .insert(M1.into(), "2222222222".into());
    let s = build_status(&app, &resolved(&[("m1", true)]), &seen, None, now());
    assert_eq!(ready(&s).1, reason::ALL_CLUSTERS_SYNCED);
}

#[test]
fn a_pinned_release_of_a_helm_repository_is_compared_with_the_tracking_charts_version() {
    let app = app("
metadata: {name: demo, namespace: default}
spec:
  source:
    helmRepository: {url: 'https://charts.example.com', interval: 1m}
  destination: {fleet: quickstart}
  syncPolicies:
    - helm: {interval: 1m, chart: {spec: {chart: podinfo}}}
");
    let release = (
        Some(3),
        flux(serde_json::json!({
            "observedGeneration": 3,
            "lastAttemptedRevision": "6.5.0",
            "conditions": [{"type": "Ready", "status": "True", "reason": "UpgradeSucceeded"}]
        })),
    );
    // The source's revision is the index's digest; the latest chart version is the tracking
    // chart's.
    let mut seen = observed("sha256:index", vec![(M1, release)]);
    seen.pinned_revision_ids
        .insert(M1.into(), crate::rollout::pinning::revision_id("6.5.0"));
    seen.latest_revision = Some("6.6.0".into());
    let s = build_status(&app, &resolved(&[("m1", true)]), &seen, None, now());
    assert_eq!(
        s.clusters[0].reason.as_deref(),
        Some(reason::OUTDATED_REVISION)
    );
    seen.latest_revision = Some("6.5.0".into());
    let s = build_status(&app, &resolved(&[("m1", true)]), &seen, None, now());
    assert_eq!(ready(&s).1, reason::ALL_CLUSTERS_SYNCED);
}

#[test]
fn identical_inputs_give_an_identical_status() {
    let mut app = app(DEMO);
    let seen = observed("r1", vec![(M1, applied("r1"))]);
    let first = build_status(&app, &resolved(&[("m1", true)]), &seen, None, now());
    app.status = Some(first.clone());
    let later = Time(Timestamp::from_second(2_000).unwrap());
    assert_eq!(
        build_status(&app, &resolved(&[("m1", true)]), &seen, None, later),
        first
    );
}

#[test]
fn a_status_for_an_older_or_unknown_generation_is_progressing() {
    let app = app(DEMO);
    let (_, mut unobserved) = applied("r1");
    unobserved.observed_generation = None;
    let (_, stale) = applied("r1");
    let seen = observed(
        "r1",
        vec![(M1, (Some(1), unobserved)), (M2, (Some(2), stale))],
    );
    let s = build_status(
        &app,
        &resolved(&[("m1", true), ("m2", true)]),
        &seen,
        None,
        now(),
    );
    assert_eq!(s.synced.as_deref(), Some("0/2"));
    let m1 = s.clusters.iter().find(|c| c.cluster == "m1").unwrap();
    let m2 = s.clusters.iter().find(|c| c.cluster == "m2").unwrap();
    assert_eq!(m1.reason.as_deref(), Some(reason::PROGRESSING));
    assert_eq!(
        m1.message.as_deref(),
        Some("Flux has not observed generation 1 yet")
    );
    assert_eq!(m2.reason.as_deref(), Some(reason::PROGRESSING));
    assert_eq!(
        m2.message.as_deref(),
        Some("Flux has not acted on generation 2 yet (observed 1)")
    );
}

#[test]
fn a_failing_source_says_why() {
    let app = app(DEMO);
    let mut source = source_at("r1");
    source.conditions[0].status = "False".into();
    source.conditions[0].reason = Some("GitOperationFailed".into());
    source.conditions[0].message = Some("authentication required".into());
    let seen = Observed {
        source: Some(source),
        source_generation: None,
        objects: BTreeMap::new(),
        pinned_revision_ids: BTreeMap::new(),
        latest_revision: None,
    };
    let s = build_status(&app, &resolved(&[("m1", true)]), &seen, None, now());
    let c = conditions::find(&s.conditions, reason::SOURCE_READY).unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_str(), c.message.as_str()),
        ("False", "GitOperationFailed", "authentication required")
    );
    assert_eq!(ready(&s).1, reason::SOURCE_NOT_READY);
}
