//! The brief's policy fleet through real Flux and the real kyverno charts, with a
//! fleet-wide report from PolicyReports written as Kyverno writes them.

use std::time::Duration;

use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use kurator_api::Fleet;

use super::{WAIT, charts, condition};
use crate::common::{Harness, apply, until, wait_for};

const POLICY_FLEET: &str =
    include_str!("../../../kurator-api/tests/fixtures/seed/fleet-policy.yaml");
const PRIVILEGED: &str = "disallow-privileged-containers";

async fn cluster_policy(member: &Client, name: &str) -> Option<kube::api::DynamicObject> {
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
    let resource =
        ApiResource::from_gvk(&GroupVersionKind::gvk("kyverno.io", "v1", "ClusterPolicy"));
    Api::<DynamicObject>::all_with(member.clone(), &resource)
        .get_opt(name)
        .await
        .ok()
        .flatten()
}

/// A PolicyReport as Kyverno writes it: one result per (policy, outcome).
fn policy_report(name: &str, results: &[(&str, &str)]) -> serde_json::Value {
    let results: Vec<serde_json::Value> = results
        .iter()
        .map(|(policy, result)| {
            serde_json::json!({
                "policy": policy, "rule": policy, "result": result, "severity": "high",
                "source": "kyverno", "scored": true,
                "timestamp": {"seconds": 1_700_000_000, "nanos": 0},
                "resources": [{"apiVersion": "apps/v1", "kind": "Deployment", "namespace": "default", "name": "webapp"}],
            })
        })
        .collect();
    serde_json::json!({
        "apiVersion": "wgpolicyk8s.io/v1alpha2", "kind": "PolicyReport",
        "metadata": {"name": name, "namespace": "default"},
        "results": results,
    })
}

async fn put_policy_report(member: &Client, body: &serde_json::Value) {
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("wgpolicyk8s.io", "v1alpha2", "PolicyReport"),
        "policyreports",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(member.clone(), "default", &resource);
    let name = body["metadata"]["name"].as_str().unwrap().to_string();
    api.patch(
        &name,
        &PatchParams::apply("kyverno").force(),
        &Patch::Apply(body),
    )
    .await
    .expect("PolicyReport written");
}

fn counts(f: &Fleet, cluster: &str) -> Option<(i64, i64, bool)> {
    let report = f.status.as_ref()?.policy_report.as_ref()?;
    let c = report.clusters.iter().find(|c| c.name == cluster)?;
    c.last_seen.as_ref()?;
    Some((c.pass, c.fail, c.stale))
}

#[tokio::test]
async fn policy_from_the_brief_on_three_kinds_of_cluster_with_a_fleet_wide_report() {
    use kurator_api::{Cluster, CustomCluster};
    let (_repo, settings) = charts();
    let h = Harness::start_with_settings(3, true, settings).await;
    // The brief's policy fleet lists an AttachedCluster, a Cluster and a CustomCluster.
    h.attach_member("kurator-member1", 1).await;
    let kubeconfig = |i: usize| h.env.members()[i].kubeconfig_yaml();
    h.put_secret("kurator-member2-kubeconfig", "value", &kubeconfig(1))
        .await;
    h.put_secret("kurator-member3-kubeconfig", "value", &kubeconfig(2))
        .await;
    let clusters: Api<Cluster> = h.api();
    let customs: Api<CustomCluster> = h.api();
    apply(
        &clusters,
        "kurator-member2",
        &Cluster::new("kurator-member2", Default::default()),
    )
    .await;
    apply(
        &customs,
        "kurator-member3",
        &CustomCluster::new("kurator-member3", Default::default()),
    )
    .await;
    let ready = serde_json::json!({"status": {"phase": "Ready", "kubeconfigSecretRef": "kurator-member3-kubeconfig"}});
    clusters
        .patch_status(
            "kurator-member2",
            &PatchParams::default(),
            &Patch::Merge(&ready),
        )
        .await
        .unwrap();
    customs
        .patch_status(
            "kurator-member3",
            &PatchParams::default(),
            &Patch::Merge(&ready),
        )
        .await
        .unwrap();

    let fleet: Fleet = serde_saphyr::from_str(POLICY_FLEET).unwrap();
    let fleets: Api<Fleet> = h.api();
    apply(&fleets, "quickstart-policy", &fleet).await;
    let f = wait_for(&fleets, "quickstart-policy", WAIT, |f| {
        condition(f, "PolicyReady").is_some_and(|c| c.0 == "True")
            && condition(f, "Ready").is_some_and(|c| c.0 == "True")
    })
    .await;
    let status = f.status.unwrap();
    for member in ["kurator-member1", "kurator-member2", "kurator-member3"] {
        for release in [
            format!("kyverno-{member}"),
            format!("kyverno-policies-{member}"),
        ] {
            assert!(
                status
                    .plugins
                    .iter()
                    .any(|p| p.release == release && p.ready),
                "{release}: {:?}",
                status.plugins
            );
        }
    }
    // kyverno-policies installed Kyverno's baseline ClusterPolicies with the pod security
    // values in every member.
    let members = h.member_clients().await;
    for member in &members {
        let policy = cluster_policy(member, PRIVILEGED).await.expect(PRIVILEGED);
        assert_eq!(
            policy.metadata.annotations.unwrap_or_default()["policies.kyverno.io/severity"],
            "high"
        );
        assert_eq!(policy.data["spec"]["validationFailureAction"], "Audit");
    }

    // Reports Kyverno writes in the members are aggregated in the fleet within seconds.
    put_policy_report(
        &members[0],
        &policy_report(
            "webapp",
            &[
                ("disallow-host-path", "pass"),
                ("disallow-privileged-containers", "pass"),
            ],
        ),
    )
    .await;
    put_policy_report(
        &members[1],
        &policy_report(
            "webapp",
            &[
                ("disallow-host-path", "pass"),
                ("disallow-privileged-containers", "fail"),
            ],
        ),
    )
    .await;
    put_policy_report(
        &members[2],
        &policy_report(
            "webapp",
            &[
                ("disallow-privileged-containers", "fail"),
                ("disallow-host-ports", "warn"),
            ],
        ),
    )
    .await;
    let started = std::time::Instant::now();
    let f = wait_for(&fleets, "quickstart-policy", Duration::from_secs(30), |f| {
        counts(f, "kurator-member1") == Some((2, 0, false))
            && counts(f, "kurator-member2") == Some((1, 1, false))
            && counts(f, "kurator-member3") == Some((0, 1, false))
    })
    .await;
    eprintln!("policy reports aggregated in {:?}", started.elapsed());
    let report = f.status.unwrap().policy_report.unwrap();
    assert_eq!(
        (report.totals.pass, report.totals.fail, report.totals.warn),
        (3, 2, 1)
    );
    assert_eq!(
        report.top_failing[0].policy,
        "disallow-privileged-containers"
    );
    assert_eq!(report.top_failing[0].fail, 2);

    // A member outage keeps its last known report, marked stale.
    h.env.members()[2].stop().await.unwrap();
    let f = wait_for(&fleets, "quickstart-policy", Duration::from_secs(90), |f| {
        counts(f, "kurator-member3") == Some((0, 1, true))
    })
    .await;
    let c = f
        .status
        .unwrap()
        .policy_report
        .unwrap()
        .clusters
        .into_iter()
        .find(|c| c.name == "kurator-member3")
        .unwrap();
    assert!(c.stale_since.is_some());
    h.env.members()[2].start().await.unwrap();
    wait_for(&fleets, "quickstart-policy", Duration::from_secs(90), |f| {
        counts(f, "kurator-member3") == Some((0, 1, false))
    })
    .await;

    // Disabling the plugin uninstalls kyverno everywhere and drops the report.
    fleets
        .patch(
            "quickstart-policy",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"plugin": null}})),
        )
        .await
        .unwrap();
    wait_for(&fleets, "quickstart-policy", WAIT, |f| {
        f.status
            .as_ref()
            .is_some_and(|s| s.policy_report.is_none() && s.plugins.is_empty())
    })
    .await;
    for member in &members[..2] {
        until("the ClusterPolicy removed", WAIT, || async {
            cluster_policy(member, PRIVILEGED)
                .await
                .is_none()
                .then_some(())
        })
        .await;
    }
    h.shutdown().await;
}
