//! AttachedCluster health against real member API servers.

use std::time::{Duration, Instant};

use crate::common::{Harness, ready_reason, wait_for};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, api::DeleteParams};
use kurator_api::AttachedCluster;

fn reason_is(ac: &AttachedCluster, reason: &str) -> bool {
    ac.status
        .as_ref()
        .and_then(|s| ready_reason(&s.conditions))
        .as_deref()
        == Some(reason)
}

const MARKER: &str = "do-not-leak-7f3a9c";

#[tokio::test]
async fn kubeconfig_problems_become_reasons_and_secret_changes_are_seen_at_once() {
    // A long health interval: every change below must arrive through the Secret watch.
    let h = Harness::start(2, Duration::from_secs(600)).await;
    let acs: Api<AttachedCluster> = h.api();
    let quick = Duration::from_secs(15);

    h.create_attached("c1", "c1-kubeconfig", "kurator-member1.config")
        .await;
    let ac = wait_for(&acs, "c1", quick, |ac| reason_is(ac, "SecretNotFound")).await;
    assert!(!ac.status.unwrap().ready);

    h.put_secret("c1-kubeconfig", "other-key", "irrelevant")
        .await;
    wait_for(&acs, "c1", quick, |ac| reason_is(ac, "KeyNotFound")).await;

    let garbage = format!("clusters: [{MARKER}\nusers: {MARKER}");
    h.put_secret("c1-kubeconfig", "kurator-member1.config", &garbage)
        .await;
    let ac = wait_for(&acs, "c1", quick, |ac| reason_is(ac, "KubeconfigInvalid")).await;
    let status_text = serde_json::to_string(&ac.status).unwrap();
    assert!(
        !status_text.contains(MARKER),
        "kubeconfig content leaked into status: {status_text}"
    );

    let member1 = h.env.members()[0].kubeconfig_yaml();
    let started = Instant::now();
    h.put_secret("c1-kubeconfig", "kurator-member1.config", &member1)
        .await;
    let ac = wait_for(&acs, "c1", quick, |ac| {
        ac.status.as_ref().is_some_and(|s| s.ready)
    })
    .await;
    eprintln!(
        "secret fix seen and cluster ready after {:?}",
        started.elapsed()
    );
    let status = ac.status.unwrap();
    assert_eq!(status.version.as_deref(), Some("v1.35.4"));
    assert_eq!(ready_reason(&status.conditions).as_deref(), Some("Healthy"));
    assert_eq!(status.observed_generation, ac.metadata.generation);

    // member1's server and CA, member2's client certificate: member1 does not trust it.
    let mut mixed = kube::config::Kubeconfig::from_yaml(&member1).unwrap();
    let other = kube::config::Kubeconfig::from_yaml(&h.env.members()[1].kubeconfig_yaml()).unwrap();
    mixed.auth_infos[0].auth_info = other.auth_infos[0].auth_info.clone();
    let mixed = serde_saphyr::to_string(&mixed).unwrap();
    h.put_secret("c1-kubeconfig", "kurator-member1.config", &mixed)
        .await;
    let ac = wait_for(&acs, "c1", quick, |ac| reason_is(ac, "Unauthorized")).await;
    assert!(!ac.status.unwrap().ready);

    h.api::<Secret>()
        .delete("c1-kubeconfig", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(&acs, "c1", quick, |ac| reason_is(ac, "SecretNotFound")).await;

    let events = h.events_about("c1").await;
    for reason in [
        "SecretNotFound",
        "KeyNotFound",
        "KubeconfigInvalid",
        "Healthy",
        "Unauthorized",
    ] {
        assert!(events.contains(reason), "no {reason} event in:\n{events}");
    }
    assert!(
        !events.contains(MARKER),
        "kubeconfig content leaked into events"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn member_outage_and_recovery() {
    // The default health interval: the promise is "Ready=False within 60 s" as shipped.
    let h = Harness::start(1, kurator_controller::Settings::default().health_interval).await;
    let acs: Api<AttachedCluster> = h.api();
    h.attach_member("m1", 1).await;
    wait_for(&acs, "m1", Duration::from_secs(30), |ac| {
        ac.status.as_ref().is_some_and(|s| s.ready)
    })
    .await;

    let member = &h.env.members()[0];
    member.stop().await.expect("stop member1");
    let ac = wait_for(&acs, "m1", Duration::from_secs(60), |ac| {
        reason_is(ac, "Unreachable")
    })
    .await;
    let status = ac.status.unwrap();
    assert!(!status.ready);
    assert_eq!(
        status.version.as_deref(),
        Some("v1.35.4"),
        "last known version is kept"
    );

    member.start().await.expect("restart member1");
    wait_for(&acs, "m1", Duration::from_secs(60), |ac| {
        reason_is(ac, "Healthy")
    })
    .await;
    h.shutdown().await;
}
