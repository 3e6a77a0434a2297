use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kurator_api::{
    Application,
    cluster::SecretKeyRef,
    fleet::ClusterKind,
    rollout::{ClusterRolloutState, ClusterRolloutStatus, StagedRolloutStatus},
};

use super::*;
use crate::application::build::{PolicyTargets, Target, build};

const V1: &str = "main@sha1:1111111111111111111111111111111111111111";
const V2: &str = "main@sha1:2222222222222222222222222222222222222222";

fn app() -> Application {
    let mut app: Application = serde_saphyr::from_str(
        "
metadata: {name: shop, namespace: default, uid: u1}
spec:
  source:
    gitRepository: {url: 'http://127.0.0.1/shop.git', interval: 1m, ref: {branch: main}}
  destination: {fleet: quickstart}
  syncPolicies:
    - kustomization: {interval: 1m, prune: true}
  stagedRollout:
    stages: [{name: all, rest: true}]
",
    )
    .expect("fixture");
    app.metadata.uid = Some("u1".into());
    app
}

fn targets(names: &[&str]) -> Vec<PolicyTargets> {
    vec![PolicyTargets {
        targets: names
            .iter()
            .map(|n| Target {
                fleet: "quickstart".into(),
                cluster_name: n.to_string(),
                cluster_kind: ClusterKind::AttachedCluster,
                kubeconfig: SecretKeyRef {
                    name: n.to_string(),
                    key: "value".into(),
                },
            })
            .collect(),
        substitute: false,
    }]
}

fn cluster(name: &str, revision: Option<&str>) -> ClusterRolloutStatus {
    ClusterRolloutStatus {
        name: name.into(),
        stage: Some("all".into()),
        revision: revision.map(str::to_string),
        state: ClusterRolloutState::Healthy,
        since: Time("2026-12-02T04:00:00Z".parse().unwrap()),
        policy_failures_at_start: None,
        message: None,
    }
}

#[test]
fn each_cluster_points_at_its_revisions_pinned_source() {
    let app = app();
    let mut desired = build(&app, &targets(&["m1", "m2", "m3"])).expect("built");
    let state = StagedRolloutStatus {
        stable_revision: Some(V1.into()),
        clusters: vec![
            cluster("m1", Some(V2)),
            cluster("m2", Some(V1)),
            cluster("m3", None),
        ],
        ..Default::default()
    };
    pin("shop", &mut desired, &state);
    let sources: Vec<(String, Option<String>)> = desired
        .pinned_sources
        .iter()
        .map(|s| {
            (
                s.metadata.name.clone().unwrap(),
                s.spec.reference.as_ref().and_then(|r| r.commit.clone()),
            )
        })
        .collect();
    assert_eq!(
        sources,
        [
            ("shop-r-1111111111".into(), Some("1".repeat(40))),
            ("shop-r-2222222222".into(), Some("2".repeat(40))),
        ]
    );
    assert_eq!(
        desired.pinned_sources[0].metadata.labels.as_ref().unwrap()[REVISION_LABEL],
        "1111111111"
    );
    let refs: Vec<(String, String)> = desired
        .kustomizations
        .iter()
        .map(|k| {
            (
                k.metadata.name.clone().unwrap(),
                k.spec.source_ref.name.clone(),
            )
        })
        .collect();
    // m3 has no revision yet: nothing is deployed there.
    assert_eq!(
        refs,
        [
            (
                "shop-0-attachedcluster-m1".into(),
                "shop-r-2222222222".into()
            ),
            (
                "shop-0-attachedcluster-m2".into(),
                "shop-r-1111111111".into()
            ),
        ]
    );
    // The tracking source stays as the user wrote it.
    let Source::Git(tracking) = &desired.source else {
        panic!("git source");
    };
    assert_eq!(tracking.metadata.name.as_deref(), Some("shop"));
    assert!(
        desired.refs().len() == 5,
        "tracking + 2 pinned + 2 kustomizations"
    );
}

#[test]
fn helm_and_oci_sources_are_refused() {
    let mut app = app();
    assert_eq!(supported(&app), Ok(()));
    app.spec.source.git_repository = None;
    app.spec.source.oci_repository = Some(Default::default());
    assert_eq!(supported(&app), Err(RolloutBuildError::UnsupportedSource));
}
