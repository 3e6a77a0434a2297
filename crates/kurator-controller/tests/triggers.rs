//! The trigger table and the watches end to end: an Application follows a deleted
//! AttachedCluster and a Cluster's readiness within seconds (its own requeue is minutes
//! away), and a Flux object of a shape the controller never writes does not break the watch
//! (it broke the list when Flux objects were decoded with their specs; they are cached
//! without them now, and any object that still fails to decode is skipped, `watch::Lenient`).

use std::time::Duration;

use crate::common::{Harness, apply, wait_for};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use kurator_api::{
    Application, AttachedCluster, Cluster, Fleet, flux::Kustomization, labels::MANAGED_BY,
};
use kurator_controller::Settings;
use kurator_testenv::GitServer;

const WAIT: Duration = Duration::from_secs(90);
/// Far below the Application's 300 s requeue: only a trigger gets the status there in time.
const SOON: Duration = Duration::from_secs(15);

fn fleet() -> Fleet {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "fleet.kurator.dev/v1alpha1",
        "kind": "Fleet",
        "metadata": { "name": "quickstart", "namespace": "default" },
        "spec": { "clusters": [
            { "name": "kurator-member1", "kind": "AttachedCluster" },
            { "name": "capi-member2", "kind": "Cluster" }
        ] }
    }))
    .unwrap()
}

fn application(url: &str) -> Application {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps.kurator.dev/v1alpha1",
        "kind": "Application",
        "metadata": { "name": "demo", "namespace": "default" },
        "spec": {
            "source": { "gitRepository": { "interval": "5s", "url": url, "ref": { "branch": "master" } } },
            "syncPolicies": [ {
                "destination": { "fleet": "quickstart" },
                "kustomization": { "interval": "5m0s", "path": "./deploy", "prune": true }
            } ]
        }
    }))
    .unwrap()
}

/// Valid for Flux (workload identity instead of a Secret), but not a shape this controller
/// writes; labelled as if it were ours, so the watch sees it.
fn foreign_kustomization() -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": { "name": "foreign", "namespace": "default", "labels": { MANAGED_BY: "kurator" } },
        "spec": {
            "interval": "10m",
            "prune": false,
            "suspend": true,
            "sourceRef": { "kind": "GitRepository", "name": "nowhere" },
            "kubeConfig": { "configMapRef": { "name": "workload-identity" } }
        }
    })
}

fn cluster_state(a: &Application, cluster: &str) -> Option<(bool, String)> {
    a.status
        .as_ref()?
        .clusters
        .iter()
        .find(|c| c.cluster == cluster)
        .map(|c| (c.ready, c.reason.clone().unwrap_or_default()))
}

#[tokio::test]
async fn applications_follow_cluster_deletion_and_readiness_and_survive_a_foreign_flux_object() {
    // A Flux object that does not decode, present before the controllers' first list (the
    // list of every Kustomization used to fail as a whole on one such object).
    let env = Harness::environment(2, true).await;
    let host = env.host().client().await.unwrap();
    let raw: Api<kube::api::DynamicObject> = Api::namespaced_with(
        host,
        "default",
        &kube::api::ApiResource::erase::<Kustomization>(&()),
    );
    raw.create(
        &PostParams::default(),
        &serde_json::from_value(foreign_kustomization()).unwrap(),
    )
    .await
    .expect("Flux accepts the foreign Kustomization");
    let settings = Settings {
        health_interval: Duration::from_secs(10),
        ..Default::default()
    };
    let h = Harness::with_controller(env, settings).await;

    let git = GitServer::start(h.env.state_dir().join("git")).unwrap();
    let repo = git.create_repo("demo").unwrap();
    repo.commit_files(
        &[(
            "deploy/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: demo\n  namespace: default\n",
        )],
        "v1",
    )
    .unwrap();

    h.attach_member("kurator-member1", 1).await;
    let member2 = h.env.members()[1].kubeconfig_yaml();
    h.put_secret("capi-member2-kubeconfig", "value", &member2)
        .await;
    let clusters: Api<Cluster> = h.api();
    apply(
        &clusters,
        "capi-member2",
        &Cluster::new("capi-member2", Default::default()),
    )
    .await;
    let set_phase = |phase: &'static str| {
        let clusters = clusters.clone();
        async move {
            let status = serde_json::json!({ "status": { "phase": phase } });
            clusters
                .patch_status(
                    "capi-member2",
                    &PatchParams::default(),
                    &Patch::Merge(&status),
                )
                .await
                .unwrap();
        }
    };
    set_phase("Ready").await;
    let fleets: Api<Fleet> = h.api();
    apply(&fleets, "quickstart", &fleet()).await;
    let apps: Api<Application> = h.api();
    apply(&apps, "demo", &application(&repo.url())).await;

    // The Kustomization watch still works: the Application syncs to both members.
    wait_for(&apps, "demo", WAIT, |a| {
        a.status.as_ref().and_then(|s| s.synced.as_deref()) == Some("2/2")
    })
    .await;

    // A Cluster that stops being Ready shows in the Application, and so does its return.
    set_phase("Provisioning").await;
    wait_for(&apps, "demo", SOON, |a| {
        cluster_state(a, "capi-member2") == Some((false, "ClusterNotReady".into()))
    })
    .await;
    set_phase("Ready").await;
    wait_for(&apps, "demo", WAIT, |a| {
        cluster_state(a, "capi-member2").is_some_and(|(ready, _)| ready)
    })
    .await;

    // A deleted AttachedCluster leaves the Application's status, and its Kustomization goes.
    let attached: Api<AttachedCluster> = h.api();
    attached
        .delete("kurator-member1", &DeleteParams::default())
        .await
        .unwrap();
    let a = wait_for(&apps, "demo", SOON, |a| {
        cluster_state(a, "kurator-member1").is_none()
            && a.status.as_ref().is_some_and(|s| s.total_clusters == 1)
    })
    .await;
    assert!(cluster_state(&a, "capi-member2").is_some());
    let ks: Api<Kustomization> = h.api();
    crate::common::wait_gone(&ks, "demo-0-attachedcluster-kurator-member1", SOON).await;
    // The foreign object was skipped, not touched.
    assert!(
        raw.get_opt("foreign")
            .await
            .unwrap()
            .is_some_and(|o| o.labels().contains_key(MANAGED_BY))
    );
    h.shutdown().await;
}
