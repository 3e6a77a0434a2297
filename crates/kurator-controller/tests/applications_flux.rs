//! Application distribution end to end: real Flux controllers on the host, a git server and
//! a Helm repository on loopback, workloads landing in real member API servers.

use std::time::Duration;

use crate::common::{Harness, NS, apply, attached_fleet, until, wait_for, wait_gone};
use k8s_openapi::{
    api::{apps::v1::Deployment, core::v1::ConfigMap},
    apimachinery::pkg::apis::meta::v1::Condition,
    jiff::Timestamp,
};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, Patch, PatchParams},
};
use kurator_api::{
    Application, AttachedCluster, Fleet, conditions,
    flux::{HelmRelease, Kustomization},
    labels::APP_NAME,
};
use kurator_testenv::{GitServer, HelmRepo};

const WAIT: Duration = Duration::from_secs(90);

fn configmap(name: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: default\ndata:\n  version: {value}\n"
    )
}

fn synced(a: &Application) -> Option<(String, String)> {
    let s = a.status.as_ref()?;
    let ready = conditions::find(&s.conditions, "Ready")?;
    Some((ready.reason.clone(), s.synced.clone().unwrap_or_default()))
}

async fn member_value(client: &Client, name: &str) -> Option<String> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    cms.get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|cm| cm.data?.get("version").cloned())
}

async fn wait_member(client: &Client, name: &str, want: Option<&str>) {
    until(format!("{name}: {want:?} in the member"), WAIT, || async {
        let got = member_value(client, name).await;
        if got.as_deref() == want {
            Ok(())
        } else {
            Err(format!("member has {got:?}"))
        }
    })
    .await
}

#[tokio::test]
async fn gitrepo_kustomization_demo_to_both_members_then_update_shrink_delete() {
    let h = Harness::start_with(2, Duration::from_secs(10), true).await;
    let git = GitServer::start(h.env.state_dir().join("git")).unwrap();
    let repo = git.create_repo("podinfo").unwrap();
    repo.commit_files(
        &[
            ("deploy/webapp/cm.yaml", &configmap("webapp", "v1")),
            ("kustomize/cm.yaml", &configmap("kustomized", "v1")),
        ],
        "v1",
    )
    .unwrap();
    h.attach_quickstart(&["kurator-member1", "kurator-member2"], WAIT)
        .await;

    // The brief's Application, pointed at the local repository (and a short interval).
    let yaml = format!(
        "apiVersion: apps.kurator.dev/v1alpha1
kind: Application
metadata:
  name: gitrepo-kustomization-demo
  namespace: default
spec:
  source:
    gitRepository:
      interval: 5s
      ref:
        branch: master
      timeout: 1m0s
      url: {}
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
",
        repo.url()
    );
    let app: Application = serde_saphyr::from_str(&yaml).unwrap();
    let apps: Api<Application> = h.api();
    apply(&apps, "gitrepo-kustomization-demo", &app).await;

    // (a) both members get both paths; status says 4/4.
    let a = wait_for(&apps, "gitrepo-kustomization-demo", WAIT, |a| {
        synced(a) == Some(("AllClustersSynced".into(), "4/4".into()))
    })
    .await;
    let first_revision = a.status.as_ref().unwrap().source_revision.clone().unwrap();
    let m1 = h.env.members()[0].client().await.unwrap();
    let m2 = h.env.members()[1].client().await.unwrap();
    for client in [&m1, &m2] {
        assert_eq!(member_value(client, "webapp").await.as_deref(), Some("v1"));
        assert_eq!(
            member_value(client, "kustomized").await.as_deref(),
            Some("v1")
        );
    }
    let ks: Api<Kustomization> = h.api();
    let names: Vec<String> = ks
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|k| k.name_any())
        .collect();
    assert!(
        names.contains(&"gitrepo-kustomization-demo-0-attachedcluster-kurator-member1".to_string()),
        "{names:?}"
    );

    // (b) a new commit reaches both members and the status follows.
    let sha = repo
        .commit_files(
            &[("deploy/webapp/cm.yaml", &configmap("webapp", "v2"))],
            "v2",
        )
        .unwrap();
    let a = wait_for(&apps, "gitrepo-kustomization-demo", WAIT, |a| {
        let s = a.status.as_ref();
        s.and_then(|s| s.source_revision.as_deref())
            .is_some_and(|r| r.contains(&sha))
            && synced(a) == Some(("AllClustersSynced".into(), "4/4".into()))
    })
    .await;
    assert_ne!(
        a.status.as_ref().unwrap().source_revision.as_deref(),
        Some(first_revision.as_str())
    );
    assert!(a.status.unwrap().clusters.iter().all(|c| {
        c.applied_revision
            .as_deref()
            .is_some_and(|r| r.contains(&sha))
    }));
    wait_member(&m1, "webapp", Some("v2")).await;
    wait_member(&m2, "webapp", Some("v2")).await;

    // (c) member2 leaves the fleet: its workload is pruned, member1 keeps its own.
    let fleets: Api<Fleet> = h.api();
    apply(
        &fleets,
        "quickstart",
        &attached_fleet("quickstart", &["kurator-member1"]),
    )
    .await;
    wait_for(&apps, "gitrepo-kustomization-demo", WAIT, |a| {
        synced(a) == Some(("AllClustersSynced".into(), "2/2".into()))
    })
    .await;
    wait_member(&m2, "webapp", None).await;
    wait_member(&m2, "kustomized", None).await;
    assert_eq!(member_value(&m1, "webapp").await.as_deref(), Some("v2"));

    // (f) deleting the Application leaves nothing of it on the host or the members.
    apps.delete("gitrepo-kustomization-demo", &Default::default())
        .await
        .unwrap();
    wait_gone(&apps, "gitrepo-kustomization-demo", WAIT).await;
    wait_member(&m1, "webapp", None).await;
    wait_member(&m1, "kustomized", None).await;
    let selector = ListParams::default().labels(&format!("{APP_NAME}=gitrepo-kustomization-demo"));
    until("no Kustomizations left on the host", WAIT, || async {
        let left: Vec<String> = ks
            .list(&selector)
            .await
            .unwrap()
            .items
            .iter()
            .map(|k| k.name_any())
            .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("left: {left:?}"))
        }
    })
    .await;
    h.shutdown().await;
}

#[tokio::test]
async fn helm_release_to_the_selected_member_only() {
    let h = Harness::start_with(2, Duration::from_secs(10), true).await;
    let charts = HelmRepo::start(h.env.state_dir().join("charts")).unwrap();
    charts
        .add_chart(
            "greeter",
            "0.1.0",
            &[
                ("values.yaml", "greeting: hello\n"),
                (
                    "templates/cm.yaml",
                    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: greeter\n  namespace: default\ndata:\n  version: {{ .Values.greeting }}\n",
                ),
            ],
        )
        .unwrap();
    h.attach_quickstart(&["kurator-member1", "kurator-member2"], WAIT)
        .await;
    // (e) only clusters labelled env=prod are selected.
    let acs: Api<AttachedCluster> = h.api();
    let prod = serde_json::json!({"metadata": {"labels": {"env": "prod"}}});
    acs.patch(
        "kurator-member1",
        &PatchParams::default(),
        &Patch::Merge(&prod),
    )
    .await
    .unwrap();

    let yaml = format!(
        "metadata: {{name: greeter, namespace: default}}
spec:
  source:
    helmRepository: {{url: '{}', interval: 1m}}
  syncPolicies:
    - destination:
        fleet: quickstart
        clusterSelector:
          matchLabels: {{env: prod}}
      helm:
        interval: 1m
        chart:
          spec: {{chart: greeter, version: 0.1.0}}
        values: {{greeting: hi-from-kurator}}
        install: {{disableWait: true}}
        upgrade: {{disableWait: true}}
",
        charts.url()
    );
    let app: Application = serde_saphyr::from_str(&yaml).unwrap();
    let apps: Api<Application> = h.api();
    apply(&apps, "greeter", &app).await;

    // (d) the release's objects land, with the injected value.
    wait_for(&apps, "greeter", WAIT, |a| {
        synced(a) == Some(("AllClustersSynced".into(), "1/1".into()))
    })
    .await;
    let m1 = h.env.members()[0].client().await.unwrap();
    let m2 = h.env.members()[1].client().await.unwrap();
    wait_member(&m1, "greeter", Some("hi-from-kurator")).await;
    assert_eq!(
        member_value(&m2, "greeter").await,
        None,
        "member2 is not selected"
    );
    let hrs: Api<HelmRelease> = h.api();
    let names: Vec<String> = hrs
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|r| r.name_any())
        .collect();
    assert_eq!(names, ["greeter-0-attachedcluster-kurator-member1"]);
    h.shutdown().await;
}

#[tokio::test]
async fn cluster_variables_and_an_unready_member_beside_a_ready_one() {
    let h = Harness::start_with(2, Duration::from_secs(2), true).await;
    let git = GitServer::start(h.env.state_dir().join("git")).unwrap();
    let repo = git.create_repo("vars").unwrap();
    let manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: whoami\n  namespace: default\ndata:\n  version: ${KURATOR_CLUSTER}@${KURATOR_FLEET}\n";
    repo.commit_files(&[("deploy/cm.yaml", manifest)], "v1")
        .unwrap();
    h.attach_quickstart(&["kurator-member1", "kurator-member2"], WAIT)
        .await;
    let yaml = format!(
        "metadata: {{name: vars, namespace: default}}
spec:
  source:
    gitRepository: {{url: '{}', interval: 1m, ref: {{branch: master}}}}
  destination: {{fleet: quickstart}}
  syncPolicies:
    - clusterVariables: true
      kustomization: {{interval: 1m, prune: true, path: ./deploy}}
",
        repo.url()
    );
    let apps: Api<Application> = h.api();
    apply(&apps, "vars", &serde_saphyr::from_str(&yaml).unwrap()).await;
    wait_for(&apps, "vars", WAIT, |a| {
        synced(a) == Some(("AllClustersSynced".into(), "2/2".into()))
    })
    .await;
    let m1 = h.env.members()[0].client().await.unwrap();
    let m2 = h.env.members()[1].client().await.unwrap();
    // One manifest, a value per cluster.
    wait_member(&m1, "whoami", Some("kurator-member1@quickstart")).await;
    wait_member(&m2, "whoami", Some("kurator-member2@quickstart")).await;

    // member2 goes down: it is shown as such, member1 stays synced.
    h.env.members()[1].stop().await.unwrap();
    let a = wait_for(&apps, "vars", WAIT, |a| {
        a.status.as_ref().is_some_and(|s| {
            s.clusters.iter().any(|c| {
                c.cluster == "kurator-member2" && c.reason.as_deref() == Some("ClusterNotReady")
            })
        })
    })
    .await;
    let status = a.status.unwrap();
    assert_eq!(status.synced.as_deref(), Some("1/2"));
    assert!(
        status
            .clusters
            .iter()
            .any(|c| c.cluster == "kurator-member1" && c.ready)
    );
    h.shutdown().await;
}

/// Deployment `podinfo` with one replica; `node` pins it with a nodeSelector on
/// `kubernetes.io/hostname` (the fake nodes are `kwok-node-1..3`).
fn podinfo_deployment(node: Option<&str>) -> String {
    let selector = node
        .map(|n| format!("      nodeSelector:\n        kubernetes.io/hostname: {n}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: podinfo
  namespace: default
spec:
  replicas: 1
  selector:
    matchLabels: {{app: podinfo}}
  template:
    metadata:
      labels: {{app: podinfo}}
    spec:
{selector}      containers:
        - name: podinfo
          image: ghcr.io/stefanprodan/podinfo:6.5.0
"
    )
}

/// The member's Deployment `podinfo` and its `Available` condition (status, lastTransitionTime).
async fn podinfo_available(client: &Client) -> Option<(Deployment, String, Option<Timestamp>)> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let deployment = deployments.get_opt("podinfo").await.ok().flatten()?;
    let available = deployment
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Available")?
        .clone();
    let since = available.last_transition_time.map(|t| t.0);
    Some((deployment, available.status, since))
}

fn ready_condition(a: &Application) -> Option<&Condition> {
    conditions::find(&a.status.as_ref()?.conditions, "Ready")
}

/// `wait: true` both ways on the simulated nodes: first a Deployment no node can run, then a
/// revision they can.
#[tokio::test]
async fn wait_true_is_ready_only_once_the_deployment_is_available() {
    let h = Harness::start_with(1, Duration::from_secs(10), true).await;
    let git = GitServer::start(h.env.state_dir().join("git")).unwrap();
    let repo = git.create_repo("waited").unwrap();
    // First a revision that can never become ready: no node has this hostname.
    repo.commit_files(
        &[("deploy/podinfo.yaml", &podinfo_deployment(Some("nowhere")))],
        "pinned nowhere",
    )
    .unwrap();
    h.attach_quickstart(&["kurator-member1"], WAIT).await;
    // A short timeout, so that Flux gives up on the health check quickly.
    let yaml = format!(
        "metadata: {{name: waited, namespace: default}}
spec:
  source:
    gitRepository: {{url: '{}', interval: 5s, ref: {{branch: master}}}}
  syncPolicies:
    - destination: {{fleet: quickstart}}
      kustomization: {{interval: 1m, prune: true, path: ./deploy, timeout: 20s, wait: true}}
",
        repo.url()
    );
    let apps: Api<Application> = h.api();
    apply(&apps, "waited", &serde_saphyr::from_str(&yaml).unwrap()).await;
    let created = std::time::Instant::now();
    let ks: Api<Kustomization> = h.api();
    wait_for(&ks, "waited-0-attachedcluster-kurator-member1", WAIT, |k| {
        k.spec.wait == Some(true)
    })
    .await;

    // Never available: Flux applies the Deployment, waits 20 s for it, and reports the failed
    // health check; the Application is never Ready meanwhile and says why, naming it.
    let member = h.env.members()[0].client().await.unwrap();
    let failed = until("Flux's health check to fail", WAIT, || async {
        let app = apps.get("waited").await.expect("get");
        if let Some(ready) = ready_condition(&app) {
            assert_ne!(
                ready.status, "True",
                "Ready while the Deployment cannot be available: {ready:?}"
            );
        }
        let cluster = app.status.as_ref().and_then(|s| s.clusters.first());
        match cluster {
            Some(c) if c.reason.as_deref() == Some("HealthCheckFailed") => Ok(Some(app.clone())),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    eprintln!(
        "health check failure reported {:.1}s after the Application was created",
        created.elapsed().as_secs_f64()
    );
    let status = failed.status.as_ref().unwrap();
    let health = "timeout waiting for: [Deployment/default/podinfo status: 'InProgress']";
    let cluster = &status.clusters[0];
    assert!(!cluster.ready, "{cluster:?}");
    assert!(
        cluster
            .message
            .as_deref()
            .is_some_and(|m| m.contains(health)),
        "{cluster:?}"
    );
    let ready = ready_condition(&failed).unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "NotSynced")
    );
    assert!(
        ready.message.contains("HealthCheckFailed") && ready.message.contains(health),
        "{ready:?}"
    );
    assert_eq!(status.synced.as_deref(), Some("0/1"));
    let (_, available, _) = podinfo_available(&member)
        .await
        .expect("Deployment applied");
    assert_eq!(available, "False", "the pinned Deployment is not Available");

    // A revision the fake nodes can run: Ready once the Deployment is Available.
    let sha = repo
        .commit_files(
            &[("deploy/podinfo.yaml", &podinfo_deployment(None))],
            "schedulable",
        )
        .unwrap();
    let pushed = std::time::Instant::now();
    let synced = wait_for(&apps, "waited", WAIT, |a| {
        ready_condition(a).is_some_and(|c| c.status == "True")
    })
    .await;
    eprintln!(
        "Ready {:.1}s after the schedulable revision was pushed",
        pushed.elapsed().as_secs_f64()
    );
    let status = synced.status.as_ref().unwrap();
    assert!(
        status.clusters[0]
            .applied_revision
            .as_deref()
            .is_some_and(|r| r.contains(&sha)),
        "{status:?}"
    );
    let (deployment, available, available_since) = podinfo_available(&member)
        .await
        .expect("Deployment applied");
    assert_eq!(available, "True", "{deployment:?}");
    let node_selector = deployment
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .node_selector;
    assert_eq!(node_selector, None, "the new revision's Deployment");
    // Became Ready after (or in the same second as) the Deployment became Available.
    let ready_since = ready_condition(&synced).unwrap().last_transition_time.0;
    let available_since = available_since.expect("Available has a transition time");
    assert!(
        available_since <= ready_since,
        "Ready at {ready_since}, Available only at {available_since}"
    );
    h.shutdown().await;
}
