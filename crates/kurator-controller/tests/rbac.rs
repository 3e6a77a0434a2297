//! The Helm chart's RBAC, proven: `charts/kurator` packaged into a local chart repository and
//! installed into the test host by real Flux helm-controller (real Helm, its CRDs from
//! `crds/`, its Deployment's Pods simulated by kwok), then the controllers run in-process with
//! a TokenRequest token of the chart's ServiceAccount, so every host call they make goes
//! through the chart's ClusterRole and Role: AttachedClusters, a Fleet, an Application through
//! Flux to a member and the policy plugin's HelmReleases. A chart upgrade keeps every custom
//! resource. A copy of the ClusterRole without `fleets/status` and `applications/finalizers`
//! makes clear `Forbidden` Events naming each permission while the controllers keep working.

mod chart;

use std::{collections::BTreeMap, time::Duration};

use crate::common::{Harness, NS, apply, attached_fleet, until, wait_for};
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        coordination::v1::Lease,
        core::v1::{ConfigMap, Secret, Service, ServiceAccount},
        discovery::v1::EndpointSlice,
        policy::v1::PodDisruptionBudget,
        rbac::v1::{ClusterRole, ClusterRoleBinding, RoleRef, Subject},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    apimachinery::pkg::util::intstr::IntOrString,
};
use kube::{
    Api, ResourceExt,
    api::{DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use kurator_api::{Application, AttachedCluster, Fleet, conditions};
use kurator_controller::{
    Settings, leader,
    plugins::{
        objstore::OBJSTORE_KEY,
        render::{ChartMirrors, SIDECAR_REMOTE_SERVICE},
    },
};
use kurator_testenv::{GitServer, run_load_balancer_simulator};

use chart::{
    chart_repository, deployment_args, environment, helm_releases, install_chart,
    service_account_client, wait_release_ready,
};

const WAIT: Duration = Duration::from_secs(120);
/// Where the chart is installed, as a platform team would.
const RELEASE_NS: &str = "kurator-system";
const RELEASE: &str = "kurator";
const KYVERNO: &str = "https://kyverno.github.io/kyverno";
const BITNAMI: &str = "oci://registry-1.docker.io/bitnamicharts";

fn condition(f: &Fleet, type_: &str) -> Option<(String, String)> {
    let c = conditions::find(&f.status.as_ref()?.conditions, type_)?;
    Some((c.status.clone(), c.message.clone()))
}

/// `Kind/name` → UID of every object of `K` in the default namespace.
async fn uids<K>(h: &Harness) -> Vec<(String, String)>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let list = h
        .api::<K>()
        .list(&ListParams::default())
        .await
        .expect("list");
    list.items
        .iter()
        .map(|o| {
            (
                format!("{}/{}", K::kind(&()), o.name_any()),
                o.uid().unwrap_or_default(),
            )
        })
        .collect()
}

/// UIDs of every custom resource in the default namespace.
async fn custom_resources(h: &Harness) -> BTreeMap<String, String> {
    let mut all = uids::<AttachedCluster>(h).await;
    all.extend(uids::<Fleet>(h).await);
    all.extend(uids::<Application>(h).await);
    all.into_iter().collect()
}

/// Merges `values` into the HelmRelease's values (as `kubectl edit` or a git change would).
async fn set_values(releases: &Api<DynamicObject>, values: serde_json::Value) {
    releases
        .patch(
            RELEASE,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"values": values}})),
        )
        .await
        .expect("HelmRelease values changed");
}

#[tokio::test]
async fn the_chart_installed_by_helm_runs_every_controller_under_its_own_rbac_and_upgrades() {
    let (repo, _dir) = chart_repository();
    let env = environment(2).await;
    let admin = env.host().client().await.expect("host client");
    install_chart(&admin, &repo, serde_json::json!({})).await;

    // What real Helm rendered from the defaults.
    let args = deployment_args(&admin).await;
    for flag in [
        "controller",
        "--leader-elect=true",
        "--metrics-addr=0.0.0.0:8080",
        "--log-format=json",
        "--concurrency=16",
        "--lease-namespace=kurator-system",
    ] {
        assert!(args.iter().any(|a| a == flag), "{flag} not in {args:?}");
    }
    let deployment = Api::<Deployment>::namespaced(admin.clone(), RELEASE_NS)
        .get(RELEASE)
        .await
        .unwrap();
    assert_eq!(
        deployment.status.as_ref().and_then(|s| s.ready_replicas),
        Some(2)
    );
    chart::assert_hardened(&deployment);
    let pdb = Api::<PodDisruptionBudget>::namespaced(admin.clone(), RELEASE_NS)
        .get(RELEASE)
        .await
        .expect("the chart's PodDisruptionBudget");
    assert_eq!(
        pdb.spec.and_then(|s| s.min_available),
        Some(IntOrString::Int(1))
    );
    Api::<Service>::namespaced(admin.clone(), RELEASE_NS)
        .get(&format!("{RELEASE}-metrics"))
        .await
        .expect("the metrics Service");
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    for crd in [
        "fleets.fleet.kurator.dev",
        "attachedclusters.cluster.kurator.dev",
        "applications.apps.kurator.dev",
    ] {
        assert!(
            crds.get_opt(crd).await.unwrap().is_some(),
            "{crd} installed by Helm from crds/"
        );
    }

    let controller = service_account_client(&env, &admin, RELEASE).await;
    // The leader Lease through the chart's Role, as a replica would take it.
    let manager = leader::lease_manager(
        controller.clone(),
        RELEASE_NS,
        "kurator-controller",
        "rbac-test",
    )
    .await
    .expect("lease manager");
    let (mut leading, lease_task) = manager.watch().await;
    tokio::time::timeout(WAIT, async {
        while !*leading.borrow_and_update() {
            leading.changed().await.expect("leader election runs");
        }
    })
    .await
    .expect("the ServiceAccount takes the leader Lease");
    let lease = Api::<Lease>::namespaced(admin.clone(), RELEASE_NS)
        .get("kurator-controller")
        .await
        .expect("Lease");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("rbac-test")
    );

    let settings = Settings {
        health_interval: Duration::from_secs(10),
        chart_mirrors: ChartMirrors(vec![
            (KYVERNO.to_string(), repo.url()),
            (BITNAMI.to_string(), repo.url()),
        ]),
        ..Default::default()
    };
    let h = Harness::with_controller_as(env, controller, settings).await;

    // AttachedClusters and a Fleet.
    let members = ["kurator-member1", "kurator-member2"];
    for (i, name) in members.iter().enumerate() {
        h.attach_member(name, i + 1).await;
    }
    for name in members {
        wait_for(&h.api::<AttachedCluster>(), name, WAIT, |ac| {
            ac.status.as_ref().is_some_and(|s| s.ready)
        })
        .await;
    }
    let fleets: Api<Fleet> = h.api();
    apply(
        &fleets,
        "quickstart",
        &attached_fleet("quickstart", &members),
    )
    .await;
    wait_for(&fleets, "quickstart", WAIT, |f| {
        f.status.as_ref().is_some_and(|s| s.ready_clusters == 2)
            && condition(f, "Ready").is_some_and(|c| c.0 == "True")
    })
    .await;

    // An Application through Flux to both members.
    let git = GitServer::start(h.env.state_dir().join("git")).unwrap();
    let source = git.create_repo("webapp").unwrap();
    source
        .commit_files(
            &[(
                "deploy/cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: webapp\n  namespace: default\ndata:\n  version: v1\n",
            )],
            "v1",
        )
        .unwrap();
    let app: Application = serde_saphyr::from_str(&format!(
        "apiVersion: apps.kurator.dev/v1alpha1
kind: Application
metadata:
  name: webapp
  namespace: default
spec:
  source:
    gitRepository:
      interval: 5s
      ref:
        branch: master
      url: {}
  syncPolicies:
    - destination:
        fleet: quickstart
      kustomization:
        interval: 5m0s
        path: ./deploy
        prune: true
",
        source.url()
    ))
    .unwrap();
    apply(&h.api::<Application>(), "webapp", &app).await;
    for member in h.member_clients().await {
        until(
            "the Application's ConfigMap in the member",
            WAIT,
            || async {
                let found = Api::<ConfigMap>::namespaced(member.clone(), NS)
                    .get_opt("webapp")
                    .await
                    .ok()
                    .flatten();
                if found.is_some() {
                    return Ok(());
                }
                let app = h.api::<Application>().get("webapp").await.unwrap();
                let events = h.events_about("webapp").await;
                Err(format!("status {:?}, events {events}", app.status))
            },
        )
        .await;
    }
    wait_for(&h.api::<Application>(), "webapp", WAIT, |a| {
        a.status
            .as_ref()
            .and_then(|s| conditions::find(&s.conditions, "Ready"))
            .is_some_and(|c| c.status == "True")
    })
    .await;

    // The policy plugin renders its HelmReleases and Flux installs them.
    fleets
        .patch(
            "quickstart",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"plugin": {"policy": {"kyverno": {
                "podSecurity": {"standard": "baseline", "severity": "high", "validationFailureAction": "Audit"}
            }}}}})),
        )
        .await
        .unwrap();
    let f = wait_for(&fleets, "quickstart", WAIT, |f| {
        condition(f, "PolicyReady").is_some_and(|c| c.0 == "True")
    })
    .await;
    let plugins = f.status.unwrap().plugins;
    for member in members {
        for release in [
            format!("kyverno-{member}"),
            format!("kyverno-policies-{member}"),
        ] {
            assert!(
                plugins.iter().any(|p| p.release == release && p.ready),
                "{release}: {plugins:?}"
            );
        }
    }

    // The metric plugin: its object-store Secret read on the host and copied into the members
    // through their kubeconfigs, the sidecars' Service and EndpointSlice written on the host.
    h.put_secret(
        "thanos-objstore",
        OBJSTORE_KEY,
        "type: S3\nconfig:\n  bucket: thanos\n  endpoint: minio.example:9000\n",
    )
    .await;
    let simulators: Vec<_> = h
        .member_clients()
        .await
        .into_iter()
        .zip(["10.1.0.1", "10.1.0.2"])
        .map(|(member, ip)| tokio::spawn(run_load_balancer_simulator(member, ip.into())))
        .collect();
    fleets
        .patch(
            "quickstart",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"plugin": {"metric": {
                "thanos": {"objectStoreConfig": {"secretName": "thanos-objstore"}}
            }}}})),
        )
        .await
        .unwrap();
    wait_for(&fleets, "quickstart", WAIT, |f| {
        ["MetricReady", "PolicyReady", "Ready"]
            .iter()
            .all(|c| condition(f, c).is_some_and(|c| c.0 == "True"))
    })
    .await;
    let remote = Api::<Service>::namespaced(h.client.clone(), NS)
        .get(SIDECAR_REMOTE_SERVICE)
        .await
        .expect("the sidecars' Service on the host");
    assert_eq!(
        remote
            .labels()
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("fleet-manager")
    );
    let slice = Api::<EndpointSlice>::namespaced(h.client.clone(), NS)
        .get(&format!("{SIDECAR_REMOTE_SERVICE}-ipv4"))
        .await
        .expect("the sidecars' EndpointSlice on the host");
    let mut addresses: Vec<&String> = slice.endpoints.iter().flat_map(|e| &e.addresses).collect();
    addresses.sort();
    assert_eq!(addresses, ["10.1.0.1", "10.1.0.2"]);
    for member in h.member_clients().await {
        let copy = Api::<Secret>::namespaced(member, "monitoring")
            .get_opt("thanos-objstore")
            .await
            .unwrap();
        assert!(
            copy.is_some(),
            "the object-store Secret copied into the member"
        );
    }

    // Upgrade: changed values reach the Deployment (and the optional ServiceMonitor, once
    // its CRD is there), every custom resource stays.
    let before = custom_resources(&h).await;
    assert_eq!(before.len(), 4, "{before:?}");
    let releases = helm_releases(&admin);
    chart::install_service_monitor_crd(&admin).await;
    set_values(
        &releases,
        serde_json::json!({"controller": {"concurrency": 8}, "serviceMonitor": {"enabled": true}}),
    )
    .await;
    wait_release_ready(&admin).await;
    chart::assert_service_monitor_selects_the_metrics_service(&admin).await;
    let args = deployment_args(&admin).await;
    assert!(args.iter().any(|a| a == "--concurrency=8"), "{args:?}");
    let upgraded = releases.get(RELEASE).await.unwrap();
    assert_eq!(
        upgraded.data["status"]["history"][0]["version"], 2,
        "a second Helm revision: {:?}",
        upgraded.data["status"]["history"]
    );
    assert_eq!(custom_resources(&h).await, before);

    // values.schema.json, enforced by Helm: an unknown log format is refused, nothing changes.
    set_values(
        &releases,
        serde_json::json!({"controller": {"logFormat": "xml"}}),
    )
    .await;
    let refused = until("Helm to refuse logFormat xml", WAIT, || async {
        let release = releases.get(RELEASE).await.expect("get HelmRelease");
        match chart::ready_condition(&release) {
            Some((status, _, message)) if status == "False" && message.contains("logFormat") => {
                Ok(Some(message))
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(refused.contains("schema"), "{refused}");
    let args = deployment_args(&admin).await;
    assert!(args.iter().any(|a| a == "--log-format=json"), "{args:?}");
    set_values(
        &releases,
        serde_json::json!({"controller": {"logFormat": "json"}}),
    )
    .await;
    wait_release_ready(&admin).await;
    wait_for(&fleets, "quickstart", WAIT, |f| {
        condition(f, "Ready").is_some_and(|c| c.0 == "True")
    })
    .await;
    assert!(h.controller_running());
    for simulator in simulators {
        simulator.abort();
    }
    lease_task.abort();
    h.shutdown().await;
}

#[tokio::test]
async fn a_missing_rule_is_a_forbidden_event_naming_it_and_the_controllers_keep_running() {
    let (repo, _dir) = chart_repository();
    let env = environment(1).await;
    let admin = env.host().client().await.expect("host client");
    install_chart(&admin, &repo, serde_json::json!({})).await;

    // A copy of the chart's ClusterRole without fleets/status and applications/finalizers,
    // bound to its own account. The test API servers run OwnerReferencesPermissionEnforcement,
    // so the second is needed for the Flux objects' owner references.
    let roles: Api<ClusterRole> = Api::all(admin.clone());
    let chart_role = roles.get(RELEASE).await.expect("the chart's ClusterRole");
    let mut rules = chart_role.rules.clone().unwrap_or_default();
    let before = rules.len();
    rules.retain(|r| {
        !r.resources
            .iter()
            .flatten()
            .any(|res| res == "fleets/status" || res == "applications/finalizers")
    });
    assert_eq!(
        rules.len(),
        before - 2,
        "the chart grants fleets/status and applications/finalizers in a rule each"
    );
    let limited = "kurator-without-fleet-status";
    roles
        .create(
            &PostParams::default(),
            &ClusterRole {
                metadata: ObjectMeta {
                    name: Some(limited.into()),
                    ..Default::default()
                },
                rules: Some(rules),
                ..Default::default()
            },
        )
        .await
        .expect("limited ClusterRole");
    Api::<ServiceAccount>::namespaced(admin.clone(), RELEASE_NS)
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: ObjectMeta {
                    name: Some(limited.into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .expect("limited ServiceAccount");
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(
            &PostParams::default(),
            &ClusterRoleBinding {
                metadata: ObjectMeta {
                    name: Some(limited.into()),
                    ..Default::default()
                },
                role_ref: RoleRef {
                    api_group: "rbac.authorization.k8s.io".into(),
                    kind: "ClusterRole".into(),
                    name: limited.into(),
                },
                subjects: Some(vec![Subject {
                    kind: "ServiceAccount".into(),
                    name: limited.into(),
                    namespace: Some(RELEASE_NS.into()),
                    ..Default::default()
                }]),
            },
        )
        .await
        .expect("limited ClusterRoleBinding");
    let controller = service_account_client(&env, &admin, limited).await;
    let settings = Settings {
        health_interval: Duration::from_secs(10),
        ..Default::default()
    };
    let h = Harness::with_controller_as(env, controller, settings).await;

    let fleets: Api<Fleet> = h.api();
    apply(
        &fleets,
        "quickstart",
        &attached_fleet("quickstart", &["kurator-member1"]),
    )
    .await;
    let events = until("a Forbidden event on the fleet", WAIT, || async {
        let events = h.events_about("quickstart").await;
        if events.contains("Forbidden") && events.contains("fleets/status") {
            Ok(Some(events))
        } else {
            Err(events)
        }
    })
    .await;
    assert!(
        events.contains(&format!("system:serviceaccount:{RELEASE_NS}:{limited}"))
            && events.contains("cannot patch resource"),
        "the event names who lacks which verb: {events}"
    );

    // Still running: the AttachedCluster controller writes its status, the fleet its label.
    h.attach_member("kurator-member1", 1).await;
    let ac = wait_for(&h.api::<AttachedCluster>(), "kurator-member1", WAIT, |ac| {
        ac.status.as_ref().is_some_and(|s| s.ready)
            && ac
                .labels()
                .get(kurator_api::labels::FLEET_NAME)
                .map(String::as_str)
                == Some("quickstart")
    })
    .await;
    assert!(ac.status.is_some());
    assert!(h.controller_running(), "the controllers keep running");
    let f = fleets.get("quickstart").await.unwrap();
    assert!(
        f.status.is_none(),
        "no status could be written: {:?}",
        f.status
    );

    // Without applications/finalizers the Application's Flux source, owned with
    // blockOwnerDeletion, is refused (the admission plugin's message names no permission; the
    // controller's event adds it).
    let app: Application = serde_saphyr::from_str(
        "metadata: {name: webapp, namespace: default}
spec:
  source:
    gitRepository: {url: 'http://127.0.0.1:1/webapp.git', interval: 1m, ref: {branch: master}}
  syncPolicies:
    - destination: {fleet: quickstart}
      kustomization: {interval: 5m0s, path: ./deploy, prune: true}
",
    )
    .unwrap();
    apply(&h.api::<Application>(), "webapp", &app).await;
    let events = until("a Forbidden event on the Application", WAIT, || async {
        let events = h.events_about("webapp").await;
        if events.contains("Forbidden") && events.contains("applications/finalizers") {
            Ok(Some(events))
        } else {
            Err(events)
        }
    })
    .await;
    assert!(
        events.contains("cannot set blockOwnerDeletion"),
        "the event quotes the API server: {events}"
    );
    assert!(h.controller_running(), "the controllers keep running");
    h.shutdown().await;
}
