use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kurator_api::{
    Application,
    cluster::SecretKeyRef,
    fleet::ClusterKind,
    rollout::{ClusterRolloutState, ClusterRolloutStatus, StagedRolloutStatus},
};

use super::*;
use crate::application::build::{PolicyTargets, Target, build};
use crate::rollout::pinning::revision_id;

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
            let Source::Git(s) = s else {
                panic!("a pinned GitRepository: {s:?}");
            };
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
        desired.pinned_sources[0]
            .metadata()
            .labels
            .as_ref()
            .unwrap()[REVISION_LABEL],
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

const D1: &str = "latest@sha256:1111111111111111111111111111111111111111111111111111111111111111";
const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

fn oci_app() -> Application {
    let mut app: Application = serde_saphyr::from_str(
        "
metadata: {name: shop, namespace: default, uid: u1}
spec:
  source:
    ociRepository: {url: 'oci://127.0.0.1:5000/shop', interval: 1m, ref: {tag: latest}}
  destination: {fleet: quickstart}
  syncPolicies:
    - kustomization: {interval: 1m, prune: true, path: ./}
  stagedRollout:
    stages: [{name: all, rest: true}]
",
    )
    .expect("fixture");
    app.metadata.uid = Some("u1".into());
    app
}

/// Every object as the API server would receive it: tracking source, pinned, Kustomizations.
fn objects(d: &Desired) -> Vec<serde_json::Value> {
    let source = |s: &Source| match s {
        Source::Git(s) => serde_json::to_value(s),
        Source::Helm(s) => serde_json::to_value(s),
        Source::Oci(s) => serde_json::to_value(s),
    };
    std::iter::once(&d.source)
        .chain(&d.pinned_sources)
        .map(|s| source(s).unwrap())
        .chain(
            d.kustomizations
                .iter()
                .map(|k| serde_json::to_value(k).unwrap()),
        )
        .chain(
            d.helm_releases
                .iter()
                .map(|h| serde_json::to_value(h).unwrap()),
        )
        .collect()
}

#[test]
fn oci_clusters_point_at_oci_repositories_pinned_by_digest() {
    let app = oci_app();
    assert_eq!(supported(&app), Ok(()));
    let mut desired = build(&app, &targets(&["m1", "m2", "m3"])).expect("built");
    // m1 on the new digest (as a pinned source reports it), m2 on the stable one (as the
    // tracking source reported it), m3 not reached yet.
    let state = StagedRolloutStatus {
        stable_revision: Some(D1.into()),
        clusters: vec![
            cluster("m1", Some(D2)),
            cluster("m2", Some(D1)),
            cluster("m3", None),
        ],
        ..Default::default()
    };
    pin("shop", &mut desired, &state);
    let Source::Oci(tracking) = &desired.source else {
        panic!("oci source");
    };
    // The tracking source stays as the user wrote it: it tells the latest digest of the tag.
    assert_eq!(
        tracking
            .spec
            .reference
            .as_ref()
            .and_then(|r| r.tag.as_deref()),
        Some("latest")
    );
    let pinned: Vec<(String, Option<String>, Option<String>)> = desired
        .pinned_sources
        .iter()
        .map(|s| {
            let Source::Oci(s) = s else {
                panic!("a pinned OCIRepository: {s:?}");
            };
            let r = s.spec.reference.clone().unwrap_or_default();
            (s.metadata.name.clone().unwrap(), r.digest, r.tag)
        })
        .collect();
    assert_eq!(
        pinned,
        [
            (
                "shop-r-1111111111".into(),
                Some(format!("sha256:{}", "1".repeat(64))),
                None
            ),
            (
                "shop-r-2222222222".into(),
                Some(format!("sha256:{}", "2".repeat(64))),
                None
            ),
        ]
    );
    let refs: Vec<(String, String, String)> = desired
        .kustomizations
        .iter()
        .map(|k| {
            (
                k.metadata.name.clone().unwrap(),
                k.spec.source_ref.kind.clone(),
                k.spec.source_ref.name.clone(),
            )
        })
        .collect();
    assert_eq!(
        refs,
        [
            (
                "shop-0-attachedcluster-m1".into(),
                "OCIRepository".into(),
                "shop-r-2222222222".into()
            ),
            (
                "shop-0-attachedcluster-m2".into(),
                "OCIRepository".into(),
                "shop-r-1111111111".into()
            ),
        ]
    );
    insta::assert_yaml_snapshot!(objects(&desired));
}

#[test]
fn a_revision_that_names_no_digest_pins_nothing() {
    // A git revision left in the status after the source was switched to OCI: no OCIRepository
    // can be pinned to a commit, so that cluster gets no Kustomization until it is re-pinned.
    let app = oci_app();
    let mut desired = build(&app, &targets(&["m1", "m2"])).expect("built");
    let state = StagedRolloutStatus {
        clusters: vec![cluster("m1", Some(V1)), cluster("m2", Some(D2))],
        ..Default::default()
    };
    pin("shop", &mut desired, &state);
    assert_eq!(desired.pinned_sources.len(), 1);
    let names: Vec<&str> = desired
        .kustomizations
        .iter()
        .filter_map(|k| k.metadata.name.as_deref())
        .collect();
    assert_eq!(names, ["shop-0-attachedcluster-m2"]);
}

#[test]
fn helm_repositories_need_one_chart_and_range_for_every_policy() {
    let policy = |chart: &str, version: &str| -> kurator_api::apps::ApplicationSyncPolicy {
        serde_saphyr::from_str(&format!(
            "helm: {{interval: 1m, chart: {{spec: {{chart: {chart}, version: '{version}'}}}}}}"
        ))
        .expect("policy")
    };
    let mut app = helm_app("{helmRepository: {url: 'http://127.0.0.1/charts', interval: 1m}}");
    app.spec.sync_policies = vec![policy("shop", ">=1.0.0"), policy("shop", ">=1.0.0")];
    assert_eq!(supported(&app), Ok(()));
    app.spec.sync_policies[1] = policy("shop", "~1.2.0");
    assert_eq!(
        supported(&app),
        Err(RolloutBuildError::HelmRepositoryCharts {
            first: "shop >=1.0.0".into(),
            other: "shop ~1.2.0".into()
        })
    );
}

fn helm_app(source: &str) -> Application {
    let mut app: Application = serde_saphyr::from_str(&format!(
        "
metadata: {{name: shop, namespace: default, uid: u1}}
spec:
  source: {source}
  destination: {{fleet: quickstart}}
  syncPolicies:
    - helm:
        interval: 1m
        chart: {{spec: {{chart: ./charts/shop}}}}
  stagedRollout:
    stages: [{{name: all, rest: true}}]
"
    ))
    .expect("fixture");
    app.metadata.uid = Some("u1".into());
    app
}

/// Each HelmRelease: (name, where its chart comes from, its revision label).
fn releases(d: &Desired) -> Vec<(String, String, Option<String>)> {
    d.helm_releases
        .iter()
        .map(|h| {
            let from = match (&h.spec.chart, &h.spec.chart_ref) {
                (Some(c), None) => {
                    format!(
                        "chart {}/{}",
                        c.spec.source_ref.kind, c.spec.source_ref.name
                    )
                }
                (None, Some(r)) => format!("chartRef {}/{}", r.kind, r.name),
                _ => panic!("exactly one of chart and chartRef: {h:?}"),
            };
            let label = h
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(REVISION_LABEL))
                .cloned();
            (h.metadata.name.clone().unwrap(), from, label)
        })
        .collect()
}

#[test]
fn git_charts_point_at_the_pinned_git_repository_of_their_revision() {
    let app = helm_app(
        "{gitRepository: {url: 'http://127.0.0.1/shop.git', interval: 1m, ref: {branch: main}}}",
    );
    assert_eq!(supported(&app), Ok(()));
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
    assert_eq!(
        releases(&desired),
        [
            (
                "shop-0-attachedcluster-m1".into(),
                "chart GitRepository/shop-r-2222222222".into(),
                Some("2222222222".into())
            ),
            (
                "shop-0-attachedcluster-m2".into(),
                "chart GitRepository/shop-r-1111111111".into(),
                Some("1111111111".into())
            ),
        ]
    );
    assert_eq!(desired.pinned_sources.len(), 2);
    insta::assert_yaml_snapshot!(objects(&desired));
}

#[test]
fn oci_charts_point_at_the_pinned_oci_repository_by_chart_ref() {
    let app = helm_app(
        "{ociRepository: {url: 'oci://127.0.0.1:5000/charts/shop', interval: 1m, ref: {semver: '>=1.0.0'}}}",
    );
    let mut desired = build(&app, &targets(&["m1", "m2"])).expect("built");
    let state = StagedRolloutStatus {
        clusters: vec![cluster("m1", Some(D2)), cluster("m2", Some(D1))],
        ..Default::default()
    };
    pin("shop", &mut desired, &state);
    assert_eq!(
        releases(&desired),
        [
            (
                "shop-0-attachedcluster-m1".into(),
                "chartRef OCIRepository/shop-r-2222222222".into(),
                Some("2222222222".into())
            ),
            (
                "shop-0-attachedcluster-m2".into(),
                "chartRef OCIRepository/shop-r-1111111111".into(),
                Some("1111111111".into())
            ),
        ]
    );
}

#[test]
fn helm_repository_releases_are_pinned_by_exact_chart_version() {
    let mut app = helm_app("{helmRepository: {url: 'http://127.0.0.1/charts', interval: 30s}}");
    app.spec.sync_policies[0].helm.as_mut().unwrap().chart.spec =
        serde_saphyr::from_str("{chart: shop, version: '>=1.0.0'}").expect("chart");
    let mut desired = build(&app, &targets(&["m1", "m2", "m3"])).expect("built");
    let state = StagedRolloutStatus {
        stable_revision: Some("1.0.0".into()),
        clusters: vec![
            cluster("m1", Some("1.1.0")),
            cluster("m2", Some("1.0.0")),
            // Left from a git source: no chart version, nothing deployed.
            cluster("m3", Some(V1)),
        ],
        ..Default::default()
    };
    pin("shop", &mut desired, &state);
    // No pinned source: a HelmRepository is an index of every version.
    assert!(desired.pinned_sources.is_empty());
    let chart = desired.tracking_chart.as_ref().expect("the tracking chart");
    assert_eq!(chart.metadata.name.as_deref(), Some("shop-track"));
    assert_eq!(chart.spec.version.as_deref(), Some(">=1.0.0"));
    assert_eq!(chart.spec.source_ref.kind, "HelmRepository");
    assert_eq!(chart.spec.interval, "30s");
    let versions: Vec<(String, Option<String>, Option<String>)> = desired
        .helm_releases
        .iter()
        .map(|h| {
            let chart = &h.spec.chart.as_ref().unwrap().spec;
            (
                h.metadata.name.clone().unwrap(),
                chart.version.clone(),
                h.metadata
                    .labels
                    .as_ref()
                    .unwrap()
                    .get(REVISION_LABEL)
                    .cloned(),
            )
        })
        .collect();
    assert_eq!(
        versions,
        [
            (
                "shop-0-attachedcluster-m1".into(),
                Some("1.1.0".into()),
                Some(revision_id("1.1.0"))
            ),
            (
                "shop-0-attachedcluster-m2".into(),
                Some("1.0.0".into()),
                Some(revision_id("1.0.0"))
            ),
        ]
    );
    assert!(
        desired
            .refs()
            .iter()
            .any(|r| r.kind == kurator_api::flux::FluxKind::HelmChart)
    );
    let mut all = objects(&desired);
    all.insert(1, serde_json::to_value(chart).unwrap());
    insta::assert_yaml_snapshot!(all);
}
