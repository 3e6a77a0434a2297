//! Fleet membership and status against real API servers.

use std::time::Duration;

use crate::common::{Harness, apply, wait_for, wait_gone};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use kurator_api::{
    AttachedCluster, Cluster, CustomCluster, Fleet, conditions,
    fleet::{ClusterKind, FleetCluster, FleetSpec},
    labels::{FLEET_FINALIZER, FLEET_NAME},
};

const WAIT: Duration = Duration::from_secs(30);

fn spec(clusters: &[(&str, ClusterKind)]) -> FleetSpec {
    FleetSpec {
        clusters: clusters
            .iter()
            .map(|(n, k)| FleetCluster {
                name: n.to_string(),
                kind: *k,
            })
            .collect(),
        plugin: None,
    }
}

fn attached(names: &[&str]) -> FleetSpec {
    spec(
        &names
            .iter()
            .map(|n| (*n, ClusterKind::AttachedCluster))
            .collect::<Vec<_>>(),
    )
}

fn label(obj: &impl ResourceExt) -> Option<String> {
    obj.labels().get(FLEET_NAME).cloned()
}

fn counts(f: &Fleet) -> Option<(i32, i32, String)> {
    f.status.as_ref().map(|s| {
        (
            s.ready_clusters,
            s.un_ready_clusters,
            s.phase.clone().unwrap_or_default(),
        )
    })
}

fn condition(f: &Fleet, type_: &str) -> Option<(String, String, String)> {
    let c = conditions::find(&f.status.as_ref()?.conditions, type_)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

#[tokio::test]
async fn membership_lifecycle() {
    let h = Harness::start(2, Duration::from_secs(5)).await;
    let acs: Api<AttachedCluster> = h.api();
    let fleets: Api<Fleet> = h.api();
    h.attach_member("m1", 1).await;
    h.attach_member("m2", 2).await;

    apply(&fleets, "f", &Fleet::new("f", attached(&["m1", "m2"]))).await;
    let f = wait_for(&fleets, "f", WAIT, |f| {
        counts(f) == Some((2, 0, "Ready".into()))
    })
    .await;
    assert!(f.finalizers().contains(&FLEET_FINALIZER.to_string()));
    assert_eq!(condition(&f, "Ready").unwrap().1, "AllClustersReady");
    for name in ["m1", "m2"] {
        assert_eq!(label(&acs.get(name).await.unwrap()).as_deref(), Some("f"));
    }

    // A missing cluster is named, with why, and counts as unready.
    apply(
        &fleets,
        "f",
        &Fleet::new("f", attached(&["m1", "m2", "ghost"])),
    )
    .await;
    let f = wait_for(&fleets, "f", WAIT, |f| {
        counts(f) == Some((2, 1, "Running".into()))
    })
    .await;
    let (status, reason, message) = condition(&f, "ClustersReady").unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "ClustersNotReady")
    );
    assert!(message.contains("ghost (NotFound"), "{message}");

    // m2 leaves the fleet: it loses the label, m1 keeps it.
    apply(&fleets, "f", &Fleet::new("f", attached(&["m1"]))).await;
    wait_for(&fleets, "f", WAIT, |f| {
        counts(f) == Some((1, 0, "Ready".into()))
    })
    .await;
    wait_for(&acs, "m2", WAIT, |ac| label(ac).is_none()).await;
    assert_eq!(label(&acs.get("m1").await.unwrap()).as_deref(), Some("f"));

    // Readiness changes are watched: m1's outage shows on the fleet.
    h.env.members()[0].stop().await.unwrap();
    let f = wait_for(&fleets, "f", Duration::from_secs(60), |f| {
        counts(f) == Some((0, 1, "Running".into()))
    })
    .await;
    assert!(
        condition(&f, "ClustersReady")
            .unwrap()
            .2
            .contains("m1 (Unreachable")
    );
    h.env.members()[0].start().await.unwrap();
    wait_for(&fleets, "f", Duration::from_secs(60), |f| {
        counts(f) == Some((1, 0, "Ready".into()))
    })
    .await;

    // Deleting the fleet removes the labels, then the finalizer.
    fleets.delete("f", &DeleteParams::default()).await.unwrap();
    wait_gone(&fleets, "f", WAIT).await;
    assert_eq!(label(&acs.get("m1").await.unwrap()), None);
    assert!(h.events_about("f").await.contains("AllClustersReady"));
    h.shutdown().await;
}

#[tokio::test]
async fn a_contested_cluster_stays_with_its_fleet_without_flapping() {
    let h = Harness::start(1, Duration::from_secs(5)).await;
    let acs: Api<AttachedCluster> = h.api();
    let fleets: Api<Fleet> = h.api();
    h.attach_member("m1", 1).await;

    fleets
        .create(
            &PostParams::default(),
            &Fleet::new("first", attached(&["m1"])),
        )
        .await
        .unwrap();
    wait_for(&fleets, "first", WAIT, |f| {
        counts(f) == Some((1, 0, "Ready".into()))
    })
    .await;
    apply(&fleets, "second", &Fleet::new("second", attached(&["m1"]))).await;
    let second = wait_for(&fleets, "second", WAIT, |f| {
        condition(f, "MembershipConflict").is_some_and(|c| c.0 == "True")
    })
    .await;
    assert_eq!(counts(&second), Some((0, 1, "Running".into())));
    let (_, reason, message) = condition(&second, "Ready").unwrap();
    assert_eq!(reason, "MembershipConflict");
    assert!(
        message.contains("m1") && message.contains("first"),
        "{message}"
    );

    // A spec change makes `second` reconcile again; it must still leave m1 alone.
    apply(
        &fleets,
        "second",
        &Fleet::new("second", attached(&["m1", "ghost"])),
    )
    .await;
    let second = wait_for(&fleets, "second", WAIT, |f| {
        f.status.as_ref().and_then(|s| s.observed_generation) == f.metadata.generation
    })
    .await;
    assert!(condition(&second, "MembershipConflict").is_some_and(|c| c.0 == "True"));
    assert_eq!(
        label(&acs.get("m1").await.unwrap()).as_deref(),
        Some("first")
    );
    let first = fleets.get("first").await.unwrap();
    assert_eq!(counts(&first), Some((1, 0, "Ready".into())));

    // Once `first` is gone, `second` takes the cluster.
    fleets
        .delete("first", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(&acs, "m1", WAIT, |ac| {
        label(ac).as_deref() == Some("second")
    })
    .await;
    let second = wait_for(&fleets, "second", WAIT, |f| {
        counts(f).is_some_and(|c| c.0 == 1)
    })
    .await;
    assert!(condition(&second, "MembershipConflict").is_some_and(|c| c.0 == "False"));
    h.shutdown().await;
}

#[tokio::test]
async fn cluster_and_custom_cluster_members_follow_their_phase() {
    let h = Harness::start(0, Duration::from_secs(5)).await;
    let fleets: Api<Fleet> = h.api();
    let clusters: Api<Cluster> = h.api();
    let customs: Api<CustomCluster> = h.api();
    clusters
        .create(
            &PostParams::default(),
            &Cluster::new("capi", Default::default()),
        )
        .await
        .unwrap();
    customs
        .create(
            &PostParams::default(),
            &CustomCluster::new("vms", Default::default()),
        )
        .await
        .unwrap();
    fleets
        .create(
            &PostParams::default(),
            &Fleet::new(
                "mixed",
                spec(&[
                    ("capi", ClusterKind::Cluster),
                    ("vms", ClusterKind::CustomCluster),
                ]),
            ),
        )
        .await
        .unwrap();
    // The message is part of the wait: the first reconcile may run before the controller's
    // cache has seen the Cluster just created (then it names capi NotFound, also 0 of 2).
    wait_for(&fleets, "mixed", WAIT, |f| {
        counts(f) == Some((0, 2, "Running".into()))
            && condition(f, "ClustersReady")
                .is_some_and(|c| c.2.contains("capi (Provisioning: phase unknown)"))
    })
    .await;

    let ready = serde_json::json!({ "status": { "phase": "Ready", "kubeconfigSecretRef": "vms-kubeconfig" } });
    clusters
        .patch_status("capi", &PatchParams::default(), &Patch::Merge(&ready))
        .await
        .unwrap();
    customs
        .patch_status("vms", &PatchParams::default(), &Patch::Merge(&ready))
        .await
        .unwrap();
    wait_for(&fleets, "mixed", WAIT, |f| {
        counts(f) == Some((2, 0, "Ready".into()))
    })
    .await;
    assert_eq!(
        label(&clusters.get("capi").await.unwrap()).as_deref(),
        Some("mixed")
    );
    assert_eq!(
        label(&customs.get("vms").await.unwrap()).as_deref(),
        Some("mixed")
    );

    // A member deleted behind the fleet's back is reported missing.
    customs
        .delete("vms", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(&fleets, "mixed", WAIT, |f| {
        counts(f) == Some((1, 1, "Running".into()))
            && condition(f, "ClustersReady").is_some_and(|c| c.2.contains("vms (NotFound"))
    })
    .await;
    h.shutdown().await;
}

#[tokio::test]
async fn controllers_survive_a_host_api_server_restart() {
    let h = Harness::start(1, Duration::from_secs(5)).await;
    let fleets: Api<Fleet> = h.api();
    h.attach_member("m1", 1).await;
    apply(&fleets, "f", &Fleet::new("f", attached(&["m1"]))).await;
    wait_for(&fleets, "f", WAIT, |f| {
        counts(f) == Some((1, 0, "Ready".into()))
    })
    .await;

    h.env.host().stop().await.expect("stop host");
    h.env.host().start().await.expect("start host");

    // New work after the restart is picked up by the same controller instance.
    apply(&fleets, "f", &Fleet::new("f", attached(&["m1", "ghost"]))).await;
    wait_for(&fleets, "f", Duration::from_secs(60), |f| {
        counts(f) == Some((1, 1, "Running".into()))
    })
    .await;
    h.shutdown().await;
}
