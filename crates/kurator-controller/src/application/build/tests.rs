//! Golden and property tests of the Application builder.
use super::*;
use kurator_api::apps::ApplicationDestination;

const DEMO: &str = r#"
apiVersion: apps.kurator.dev/v1alpha1
kind: Application
metadata:
  name: gitrepo-kustomization-demo
  namespace: default
  uid: 6c1f4c1e-5b1a-4c36-9d0e-000000000001
spec:
  source:
    gitRepository:
      interval: 3m0s
      ref:
        branch: master
      timeout: 1m0s
      url: https://github.com/stefanprodan/podinfo
  syncPolicies:
    - destination:
        fleet: quickstart
      kustomization:
        interval: 5m0s
        path: ./deploy/webapp
        prune: true
        timeout: 2m0s
    - destination:
        fleet: quickstart
      kustomization:
        targetNamespace: default
        interval: 5m0s
        path: ./kustomize
        prune: true
        timeout: 2m0s
"#;

const UID: &str = "6c1f4c1e-5b1a-4c36-9d0e-000000000001";

fn app(yaml: &str) -> Application {
    serde_saphyr::from_str(yaml).expect("fixture is an Application")
}

fn attached(fleet: &str, name: &str) -> Target {
    Target {
        fleet: fleet.into(),
        cluster_name: name.into(),
        cluster_kind: ClusterKind::AttachedCluster,
        kubeconfig: SecretKeyRef {
            name: name.into(),
            key: format!("{name}.config"),
        },
    }
}

fn quickstart() -> Vec<Target> {
    vec![
        attached("quickstart", "kurator-member1"),
        attached("quickstart", "kurator-member2"),
    ]
}

fn targets(targets: Vec<Target>) -> PolicyTargets {
    PolicyTargets {
        targets,
        substitute: false,
    }
}

/// Every object as the API server would receive it, source first.
fn objects(d: &Desired) -> Vec<serde_json::Value> {
    let mut all = vec![
        match &d.source {
            Source::Git(s) => serde_json::to_value(s),
            Source::Helm(s) => serde_json::to_value(s),
            Source::Oci(s) => serde_json::to_value(s),
        }
        .unwrap(),
    ];
    all.extend(
        d.kustomizations
            .iter()
            .map(|k| serde_json::to_value(k).unwrap()),
    );
    all.extend(
        d.helm_releases
            .iter()
            .map(|h| serde_json::to_value(h).unwrap()),
    );
    all
}

fn names(d: &Desired) -> Vec<String> {
    d.kustomizations
        .iter()
        .map(|k| k.name_any())
        .chain(d.helm_releases.iter().map(|h| h.name_any()))
        .collect()
}

#[test]
fn gitrepo_kustomization_demo_to_two_attached_clusters() {
    let app = app(DEMO);
    let d = build(&app, &[targets(quickstart()), targets(quickstart())]).unwrap();
    assert_eq!(
        names(&d),
        [
            "gitrepo-kustomization-demo-0-attachedcluster-kurator-member1",
            "gitrepo-kustomization-demo-0-attachedcluster-kurator-member2",
            "gitrepo-kustomization-demo-1-attachedcluster-kurator-member1",
            "gitrepo-kustomization-demo-1-attachedcluster-kurator-member2",
        ]
    );
    insta::assert_yaml_snapshot!(objects(&d));
}

#[test]
fn helm_repository_with_helm_policy() {
    let app = app(r#"
metadata: {name: kyverno, namespace: team-a, uid: 6c1f4c1e-5b1a-4c36-9d0e-000000000001}
spec:
  source:
    helmRepository:
      url: https://kyverno.github.io/kyverno/
      interval: 5m
  destination:
    fleet: prod
  syncPolicies:
    - name: kyverno-release
      helm:
        releaseName: kyverno
        targetNamespace: kyverno
        interval: 10m
        chart:
          metadata:
            labels: {team: a}
          spec:
            chart: kyverno
            version: "3.0.0"
            reconcileStrategy: ChartVersion
        install:
          createNamespace: true
        upgrade:
          remediation: {retries: 3}
        values:
          admissionController: {replicas: 1}
        valuesFrom:
          - kind: ConfigMap
            name: kyverno-values
        dependsOn:
          - name: cert-manager
"#);
    let d = build(&app, &[targets(vec![attached("prod", "east")])]).unwrap();
    assert!(d.kustomizations.is_empty());
    let hr = &d.helm_releases[0];
    assert_eq!(hr.name_any(), "kyverno-release-attachedcluster-east");
    let chart = hr.spec.chart.as_ref().unwrap();
    assert_eq!(chart.spec.source_ref.kind, "HelmRepository");
    assert_eq!(chart.spec.source_ref.name, "kyverno");
    insta::assert_yaml_snapshot!(objects(&d));
}

#[test]
fn oci_repository_source_for_kustomization_and_helm_policies() {
    let app = app(r#"
metadata: {name: podinfo-oci, namespace: default, uid: 6c1f4c1e-5b1a-4c36-9d0e-000000000001}
spec:
  source:
    ociRepository:
      url: oci://ghcr.io/stefanprodan/manifests/podinfo
      interval: 1m
      ref: {tag: latest}
  destination:
    fleet: quickstart
  syncPolicies:
    - kustomization:
        interval: 5m
        path: ./
        prune: true
    - helm:
        interval: 5m
        chart:
          spec: {chart: podinfo}
"#);
    let member1 = vec![attached("quickstart", "kurator-member1")];
    let d = build(&app, &[targets(member1.clone()), targets(member1)]).unwrap();
    assert_eq!(d.source.kind(), FluxKind::OciRepository);
    assert_eq!(d.kustomizations[0].spec.source_ref.kind, "OCIRepository");
    // Flux v2 HelmRelease takes OCI artifacts through chartRef, not chart.spec.sourceRef.
    let hr = &d.helm_releases[0].spec;
    assert!(hr.chart.is_none());
    assert_eq!(hr.chart_ref.as_ref().unwrap().kind, "OCIRepository");
    insta::assert_yaml_snapshot!(objects(&d));
}

#[test]
fn two_policies_to_different_fleets() {
    let mut app = app(DEMO);
    app.spec.sync_policies[1].name = Some("web".into());
    app.spec.sync_policies[1].destination = Some(ApplicationDestination {
        fleet: "edge".into(),
        cluster_selector: None,
    });
    let edge = Target {
        fleet: "edge".into(),
        cluster_name: "store-42".into(),
        cluster_kind: ClusterKind::Cluster,
        kubeconfig: SecretKeyRef {
            name: "store-42-kubeconfig".into(),
            key: "value".into(),
        },
    };
    let d = build(
        &app,
        &[
            targets(vec![attached("quickstart", "kurator-member1")]),
            targets(vec![edge]),
        ],
    )
    .unwrap();
    assert_eq!(
        names(&d),
        [
            "gitrepo-kustomization-demo-0-attachedcluster-kurator-member1",
            "web-cluster-store-42",
        ]
    );
    insta::assert_yaml_snapshot!(objects(&d));
}

#[test]
fn wait_reaches_the_flux_kustomization_only_when_set() {
    let mut app = app(DEMO);
    let policy = app.spec.sync_policies[0].kustomization.as_mut().unwrap();
    policy.wait = Some(true);
    let d = build(
        &app,
        &[
            targets(vec![attached("quickstart", "kurator-member1")]),
            targets(vec![attached("quickstart", "kurator-member1")]),
        ],
    )
    .unwrap();
    let waits: Vec<Option<bool>> = d.kustomizations.iter().map(|k| k.spec.wait).collect();
    assert_eq!(waits, [Some(true), None]);
    let json = serde_json::to_value(&d.kustomizations[0]).unwrap();
    assert_eq!(json["spec"]["wait"], true);
}

#[test]
fn long_names_are_cut_to_63_characters() {
    let mut app = app(DEMO);
    app.metadata.name = Some("a-rather-long-application-name-for-the-storefront".into());
    app.spec.sync_policies.truncate(1);
    let cluster = "member-cluster-in-the-eu-west-region-number-0001";
    let d = build(&app, &[targets(vec![attached("quickstart", cluster)])]).unwrap();
    let k = &d.kustomizations[0];
    let full =
        format!("a-rather-long-application-name-for-the-storefront-0-attachedcluster-{cluster}");
    assert_eq!(k.name_any(), full[..63]);
    assert_eq!(k.name_any().len(), 63);
    // Label values stay within 63 characters, shortened with a stable hash.
    let labels = k.labels();
    assert_eq!(
        labels[label::POLICY],
        "a-rather-long-application-name-for-the-storefront-0"
    );
    assert_eq!(labels[label::CLUSTER], cluster);
    let long_fleet = "f".repeat(70);
    let v = label_value(&long_fleet);
    assert_eq!(v.len(), 63);
    assert_eq!(v, label_value(&long_fleet));
    assert_ne!(v, label_value(&"f".repeat(71)));
    assert!(v.starts_with(&"f".repeat(54)));
}

#[test]
fn resource_names_follow_upstream() {
    // As in upstream Kurator's rollout docs.
    assert_eq!(
        resource_name(
            "rollout-demo-0",
            ClusterKind::AttachedCluster,
            "kurator-member1"
        ),
        "rollout-demo-0-attachedcluster-kurator-member1"
    );
    assert_eq!(
        resource_name("p", ClusterKind::CustomCluster, "Edge.Cluster"),
        "p-customcluster-edge.cluster"
    );
    // A cut that leaves a separator at the end would be an invalid name: drop it.
    let policy = "x".repeat(50);
    let name = resource_name(&policy, ClusterKind::Cluster, "abc-def");
    // "<50 x>-cluster-abc-" is 63 characters; the trailing '-' goes.
    assert_eq!(name, format!("{policy}-cluster-abc"));
}

#[test]
fn policy_names_default_to_app_and_index() {
    let mut app = app(DEMO);
    assert_eq!(policy_name(&app, 0), "gitrepo-kustomization-demo-0");
    app.spec.sync_policies[1].name = Some("web".into());
    assert_eq!(policy_name(&app, 1), "web");
    app.spec.sync_policies[1].name = Some(String::new());
    assert_eq!(policy_name(&app, 1), "gitrepo-kustomization-demo-1");
}

#[test]
fn per_cluster_variables_when_substitute_is_on() {
    let mut app = app(DEMO);
    app.spec.sync_policies.truncate(1);
    let d = build(
        &app,
        &[PolicyTargets {
            targets: quickstart(),
            substitute: true,
        }],
    )
    .unwrap();
    let vars = &d.kustomizations[1]
        .spec
        .post_build
        .as_ref()
        .unwrap()
        .substitute;
    assert_eq!(vars[substitute::CLUSTER], "kurator-member2");
    assert_eq!(vars[substitute::FLEET], "quickstart");
    assert_eq!(vars[substitute::CLUSTER_KIND], "AttachedCluster");
    insta::assert_yaml_snapshot!(objects(&d));
    // Off: no postBuild at all (server-side apply then owns none of it).
    let off = build(&app, &[targets(quickstart())]).unwrap();
    assert!(
        off.kustomizations
            .iter()
            .all(|k| k.spec.post_build.is_none())
    );
}

#[test]
fn order_does_not_depend_on_target_order() {
    let app = app(DEMO);
    let mut reversed = quickstart();
    reversed.reverse();
    let a = build(&app, &[targets(quickstart()), targets(reversed.clone())]).unwrap();
    let b = build(&app, &[targets(reversed), targets(quickstart())]).unwrap();
    assert_eq!(a, b);
}

#[test]
fn no_targets_means_only_the_source() {
    let app = app(DEMO);
    let d = build(&app, &[PolicyTargets::default(), PolicyTargets::default()]).unwrap();
    assert!(d.kustomizations.is_empty() && d.helm_releases.is_empty());
    assert_eq!(
        d.refs().into_iter().collect::<Vec<_>>(),
        [FluxObjectRef {
            kind: FluxKind::GitRepository,
            namespace: "default".into(),
            name: "gitrepo-kustomization-demo".into(),
        }]
    );
}

#[test]
fn invalid_inputs_are_reported() {
    let demo = app(DEMO);
    let two = [targets(quickstart()), targets(quickstart())];

    let mut unsaved = demo.clone();
    unsaved.metadata.uid = None;
    assert_eq!(build(&unsaved, &two), Err(BuildError::Unsaved("uid")));

    assert_eq!(
        build(&demo, &two[..1]),
        Err(BuildError::TargetCount {
            policies: 2,
            targets: 1
        })
    );

    let mut no_source = demo.clone();
    no_source.spec.source.git_repository = None;
    assert_eq!(build(&no_source, &two), Err(BuildError::Source));

    let mut both = demo.clone();
    both.spec.sync_policies[1].helm = Some(Default::default());
    assert_eq!(
        build(&both, &two),
        Err(BuildError::PolicyKind {
            policy: "gitrepo-kustomization-demo-1".into()
        })
    );

    let mut helm_source = demo.clone();
    helm_source.spec.source.git_repository = None;
    helm_source.spec.source.helm_repository = Some(apps::HelmRepositorySpec {
        url: "https://charts.example".into(),
        ..Default::default()
    });
    assert_eq!(
        build(&helm_source, &two),
        Err(BuildError::IncompatibleSource {
            policy: "gitrepo-kustomization-demo-0".into(),
            kind: FluxKind::HelmRepository,
        })
    );

    let mut same_name = demo.clone();
    same_name.spec.sync_policies[0].name = Some("web".into());
    same_name.spec.sync_policies[1].name = Some("web".into());
    assert_eq!(
        build(&same_name, &two),
        Err(BuildError::DuplicateName {
            name: "web-attachedcluster-kurator-member1".into(),
            first: "web".into(),
            second: "web".into(),
        })
    );
}

#[test]
fn prune_selects_owned_labelled_objects_no_longer_desired() {
    let app = app(DEMO);
    // member2 left the fleet; policy 1 still deploys to member1.
    let member1 = vec![attached("quickstart", "kurator-member1")];
    let desired = build(&app, &[targets(member1.clone()), targets(member1)]).unwrap();

    let ours = app_labels("gitrepo-kustomization-demo");
    let existing =
        |kind, ns: &str, name: &str, labels: &BTreeMap<String, String>, uid: &str| Existing {
            object: FluxObjectRef {
                kind,
                namespace: ns.into(),
                name: name.into(),
            },
            labels: labels.clone(),
            owner_uids: vec![uid.into()],
        };
    let k = FluxKind::Kustomization;
    let mut all = vec![
        // still wanted
        existing(
            FluxKind::GitRepository,
            "default",
            "gitrepo-kustomization-demo",
            &ours,
            UID,
        ),
        existing(
            k,
            "default",
            "gitrepo-kustomization-demo-0-attachedcluster-kurator-member1",
            &ours,
            UID,
        ),
        // gone: the cluster left
        existing(
            k,
            "default",
            "gitrepo-kustomization-demo-1-attachedcluster-kurator-member2",
            &ours,
            UID,
        ),
        existing(
            k,
            "default",
            "gitrepo-kustomization-demo-0-attachedcluster-kurator-member2",
            &ours,
            UID,
        ),
        // gone: a policy that was removed, and a source of the previous kind
        existing(
            FluxKind::HelmRelease,
            "default",
            "old-attachedcluster-kurator-member1",
            &ours,
            UID,
        ),
        existing(
            FluxKind::OciRepository,
            "default",
            "gitrepo-kustomization-demo",
            &ours,
            UID,
        ),
        // not ours: another app, no label, another owner, another namespace
        existing(
            k,
            "default",
            "other-0-attachedcluster-kurator-member1",
            &app_labels("other"),
            UID,
        ),
        existing(k, "default", "unlabelled", &BTreeMap::new(), UID),
        existing(k, "default", "foreign", &ours, "someone-else"),
        existing(
            k,
            "elsewhere",
            "gitrepo-kustomization-demo-0-attachedcluster-kurator-member2",
            &ours,
            UID,
        ),
    ];
    let pruned = prune(&app, &all, &desired);
    insta::assert_yaml_snapshot!(pruned.iter().map(ToString::to_string).collect::<Vec<_>>());

    // Desired objects built here are recognised as existing ones.
    all = desired
        .kustomizations
        .iter()
        .filter_map(Existing::of)
        .collect();
    assert!(prune(&app, &all, &desired).is_empty());
    let mut unsaved = app.clone();
    unsaved.metadata.uid = None;
    assert!(prune(&unsaved, &all, &desired).is_empty());
}
