//! End-to-end: Fleet plugins installed by real Flux helm-controller from a local chart
//! repository into real member API servers: the real kyverno and kyverno-policies charts
//! (Kurator's default 3.0.0; no Kyverno process runs here, see `policy_kyverno.rs` for
//! that), and the real bitnami thanos 12.5.1, kube-prometheus 8.9.1 and grafana 8.2.33 charts
//! (read from `../shared/charts/`). The brief's Fleet examples are applied as written; the
//! controller's `--chart-mirror` points the upstream repositories at the local one.
//!
//! kwok simulates every Pod (Running and Ready, no container runs), so Helm's waits succeed;
//! the charts' claims (the store gateway's, Grafana's) are provisioned by the test
//! environment's default StorageClass. What the charts rendered from the product's values is
//! read back from the clusters (`rendered.rs`).

mod policy;
mod rendered;
mod values;

use std::time::Duration;

use crate::common::{Harness, NS, apply, put_objstore, until, wait_for};
use k8s_openapi::api::{
    core::v1::{Secret, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams},
};
use kurator_api::{
    Fleet, conditions,
    flux::{HelmRelease, HelmRepository},
};
use kurator_controller::{
    Settings,
    plugins::{objstore::OBJSTORE_KEY, render::ChartMirrors},
};
use kurator_testenv::{
    HelmRepo, add_kyverno_charts, add_plugin_charts, run_load_balancer_simulator,
};

const WAIT: Duration = Duration::from_secs(120);
const METRIC_FLEET: &str = include_str!("../../kurator-api/tests/fixtures/seed/fleet-metric.yaml");
const BITNAMI: &str = "oci://registry-1.docker.io/bitnamicharts";
const KYVERNO: &str = "https://kyverno.github.io/kyverno";
/// A chart repository with the real plugin charts (metric, grafana, Kyverno) (its directory
/// removed when dropped), and controller settings mirroring the upstream repositories to it.
fn charts() -> ((HelmRepo, tempfile::TempDir), Settings) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let repo = HelmRepo::start(dir.path().join("charts")).expect("chart repository starts");
    add_plugin_charts(&repo).expect("the real metric and grafana charts");
    add_kyverno_charts(&repo).expect("the real Kyverno charts");
    let settings = Settings {
        health_interval: Duration::from_secs(10),
        chart_mirrors: ChartMirrors(vec![
            (BITNAMI.to_string(), repo.url()),
            (KYVERNO.to_string(), repo.url()),
        ]),
        ..Default::default()
    };
    ((repo, dir), settings)
}

fn condition(f: &Fleet, type_: &str) -> Option<(String, String, String)> {
    let c = conditions::find(&f.status.as_ref()?.conditions, type_)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Waits until the member's Prometheus resource (the kube-prometheus chart's) is there or gone.
async fn wait_prometheus(member: &Client, cluster: &str, present: bool) {
    until(
        format!("{cluster}: Prometheus present={present}"),
        WAIT,
        || async { (rendered::prometheus(member).await.is_some() == present).then_some(()) },
    )
    .await
}

async fn objstore_copy(member: &Client) -> Option<String> {
    let secret = Api::<Secret>::namespaced(member.clone(), "monitoring")
        .get_opt("thanos-objstore")
        .await
        .ok()
        .flatten()?;
    let data = secret.data?.remove(OBJSTORE_KEY)?;
    String::from_utf8(data.0).ok()
}

async fn set_metric(fleets: &Api<Fleet>, metric: serde_json::Value) {
    fleets
        .patch(
            "quickstart",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"plugin": {"metric": metric}}})),
        )
        .await
        .unwrap();
}

async fn secret_exists(client: &Client, namespace: &str, name: &str) -> bool {
    Api::<Secret>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .ok()
        .flatten()
        .is_some()
}

#[tokio::test]
async fn metric_and_grafana_from_the_brief_through_secret_changes_disabling_and_cluster_removal() {
    let (_repo, settings) = charts();
    let h = Harness::start_with_settings(2, true, settings).await;
    h.attach_member("kurator-member1", 1).await;
    h.attach_member("kurator-member2", 2).await;
    let member1 = h.env.members()[0].client().await.unwrap();
    let member2 = h.env.members()[1].client().await.unwrap();

    // The brief's example, applied before its object-store Secret exists.
    let fleet: Fleet = serde_saphyr::from_str(METRIC_FLEET).unwrap();
    let fleets: Api<Fleet> = h.api();
    apply(&fleets, "quickstart", &fleet).await;
    let f = wait_for(&fleets, "quickstart", WAIT, |f| {
        condition(f, "MetricReady").is_some_and(|c| c.1 == "InvalidConfig")
    })
    .await;
    let (_, _, message) = condition(&f, "MetricReady").unwrap();
    assert!(
        message.contains("default/thanos-objstore") && message.contains("not found"),
        "{message}"
    );
    // Grafana does not wait for the metric plugin's problem.
    let releases: Api<HelmRelease> = h.api();
    wait_for(&releases, "grafana", WAIT, |_| true).await;
    assert!(releases.get_opt("thanos").await.unwrap().is_none());

    // A Secret without the key is named as such; a valid one lets the plugin proceed.
    put_objstore(&h, "").await;
    let secrets: Api<Secret> = h.api();
    secrets
        .patch(
            "thanos-objstore",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"data": {OBJSTORE_KEY: null, "other": "eA=="}})),
        )
        .await
        .unwrap();
    wait_for(&fleets, "quickstart", WAIT, |f| {
        condition(f, "MetricReady").is_some_and(|c| c.2.contains("has no key objstore.yml"))
    })
    .await;
    put_objstore(
        &h,
        "type: S3\nconfig:\n  bucket: thanos\n  endpoint: minio.example:9000\n",
    )
    .await;

    // Until a member's sidecar has a load-balancer address, Thanos Query cannot reach it:
    // the metric plugin says so instead of reporting Ready.
    wait_for(&fleets, "quickstart", WAIT, |f| {
        condition(f, "MetricReady").is_some_and(|c| {
            c.0 == "False"
                && c.1 == "SidecarAddressPending"
                && c.2.contains("kurator-member1")
                && c.2.contains("kurator-member2")
        })
    })
    .await;

    // No cloud controller: load balancers get an address from a simulator — an IP in one
    // member, a hostname in the other (upstream would drop it), and one on the host (Grafana).
    let simulators = [
        tokio::spawn(run_load_balancer_simulator(
            member1.clone(),
            "10.1.0.1".into(),
        )),
        tokio::spawn(run_load_balancer_simulator(
            member2.clone(),
            "member2.lb.example".into(),
        )),
        tokio::spawn(run_load_balancer_simulator(
            h.client.clone(),
            "127.0.0.1".into(),
        )),
    ];
    let f = wait_for(&fleets, "quickstart", WAIT, |f| {
        ["MetricReady", "GrafanaReady", "Ready"]
            .iter()
            .all(|c| condition(f, c).is_some_and(|c| c.0 == "True"))
    })
    .await;
    let status = f.status.unwrap();
    let components: Vec<(String, Option<String>, bool)> = status
        .plugins
        .iter()
        .map(|p| (p.release.clone(), p.cluster.clone(), p.ready))
        .collect();
    for release in [
        "thanos",
        "grafana",
        "prometheus-kurator-member1",
        "prometheus-kurator-member2",
    ] {
        assert!(
            components
                .iter()
                .any(|(r, _, ready)| r == release && *ready),
            "{release} in {components:?}"
        );
    }
    assert_eq!(
        status.plugin_endpoints["thanos-sidecar"],
        [
            "kurator-member1=10.1.0.1:10901",
            "kurator-member2=member2.lb.example:10901"
        ]
    );

    // Members: the object-store copy; the chart's Prometheus with the cluster's external
    // label and the Thanos sidecar on that Secret; the sidecar Service a LoadBalancer.
    for (client, name) in [(&member1, "kurator-member1"), (&member2, "kurator-member2")] {
        assert!(
            secret_exists(client, "monitoring", "thanos-objstore").await,
            "{name}"
        );
        if let Err(problem) = rendered::check_member(client, name, "thanos-objstore").await {
            panic!("{problem}");
        }
    }
    // Host: discovery for the IP, a static store for the hostname.
    let slice: EndpointSlice = h
        .api::<EndpointSlice>()
        .get("thanos-sidecar-remote-ipv4")
        .await
        .unwrap();
    assert_eq!(slice.endpoints[0].addresses, ["10.1.0.1"]);
    let thanos = releases.get("thanos").await.unwrap();
    let stores = &thanos.spec.values.as_ref().unwrap()["query"]["stores"];
    assert_eq!(stores, &serde_json::json!(["dns+member2.lb.example:10901"]));
    // Thanos Query as the chart rendered it: the controller's headless Service and the
    // hostname store (Flux upgrades the release with the latter once it is known).
    until(
        "Thanos Query configured with the discovery",
        WAIT,
        || async {
            rendered::check_thanos(
                &h.client,
                NS,
                "thanos-sidecar-remote",
                "thanos-objstore",
                &["dns+member2.lb.example:10901"],
            )
            .await
        },
    )
    .await;

    // Grafana on the host, with Thanos Query as its datasource.
    if let Err(problem) = rendered::check_grafana(&h.client, NS).await {
        panic!("{problem}");
    }

    // Disabling grafana uninstalls it; the other plugin stays.
    fleets
        .patch(
            "quickstart",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"plugin": {"grafana": null}}})),
        )
        .await
        .unwrap();
    wait_for(&fleets, "quickstart", WAIT, |f| {
        condition(f, "GrafanaReady").is_none()
            && condition(f, "MetricReady").is_some_and(|c| c.0 == "True")
    })
    .await;
    until(
        "grafana's HelmRelease and HelmRepository removed",
        WAIT,
        || async {
            let release = releases.get_opt("grafana").await.unwrap().is_some();
            let repository = h
                .api::<HelmRepository>()
                .get_opt("grafana")
                .await
                .unwrap()
                .is_some();
            if release || repository {
                Err(format!("left: release {release}, repository {repository}"))
            } else {
                Ok(())
            }
        },
    )
    .await;
    until("Grafana's datasource Secret removed", WAIT, || async {
        rendered::grafana_datasources(&h.client, NS)
            .await
            .is_none()
            .then_some(())
    })
    .await;

    // Removing a cluster uninstalls its components there only and removes the Secret copy.
    fleets
        .patch(
            "quickstart",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"clusters": [
                {"name": "kurator-member1", "kind": "AttachedCluster"}
            ]}})),
        )
        .await
        .unwrap();
    wait_prometheus(&member2, "kurator-member2", false).await;
    until("the Secret copy in member2 removed", WAIT, || async {
        !secret_exists(&member2, "monitoring", "thanos-objstore").await
    })
    .await;
    assert!(rendered::prometheus(&member1).await.is_some());
    assert!(secret_exists(&member1, "monitoring", "thanos-objstore").await);
    let f = wait_for(&fleets, "quickstart", WAIT, |f| {
        f.status.as_ref().is_some_and(|s| {
            s.plugin_endpoints.get("thanos-sidecar")
                == Some(&vec!["kurator-member1=10.1.0.1:10901".to_string()])
        })
    })
    .await;
    assert!(
        f.status
            .unwrap()
            .plugins
            .iter()
            .all(|p| p.cluster.as_deref() != Some("kurator-member2"))
    );

    // A changed object store reaches the member's copy.
    put_objstore(&h, "type: GCS\nconfig:\n  bucket: thanos-2\n").await;
    until("the copy in member1 updated", WAIT, || async {
        let copy = objstore_copy(&member1).await;
        if copy.as_deref() == Some("type: GCS\nconfig:\n  bucket: thanos-2\n") {
            Ok(())
        } else {
            Err(format!("copy: {copy:?}"))
        }
    })
    .await;

    // Disabling the metric plugin uninstalls it and removes the copy and the discovery.
    let metric = serde_json::to_value(&fleet.spec.plugin.as_ref().unwrap().metric).unwrap();
    set_metric(&fleets, serde_json::Value::Null).await;
    wait_prometheus(&member1, "kurator-member1", false).await;
    until("no traces of the metric plugin", WAIT, || async {
        let copy = secret_exists(&member1, "monitoring", "thanos-objstore").await;
        let discovery = h
            .api::<Service>()
            .get_opt("thanos-sidecar-remote")
            .await
            .unwrap()
            .is_some();
        let release = releases.get_opt("thanos").await.unwrap().is_some();
        if copy || discovery || release {
            Err(format!(
                "left: Secret copy {copy}, discovery Service {discovery}, thanos release {release}"
            ))
        } else {
            Ok(())
        }
    })
    .await;
    let f = wait_for(&fleets, "quickstart", WAIT, |f| {
        condition(f, "MetricReady").is_none()
    })
    .await;
    assert!(f.status.unwrap().plugins.is_empty());

    // Enabled again, then the fleet deleted: the copy is removed with it.
    set_metric(&fleets, metric).await;
    until("the copy in member1 restored", WAIT, || async {
        secret_exists(&member1, "monitoring", "thanos-objstore").await
    })
    .await;
    // Deleting the fleet removes the remaining copy; Flux objects go with their owner.
    fleets
        .delete("quickstart", &DeleteParams::default())
        .await
        .unwrap();
    until("the Secret copy in member1 removed", WAIT, || async {
        !secret_exists(&member1, "monitoring", "thanos-objstore").await
    })
    .await;
    for simulator in simulators {
        simulator.abort();
    }
    h.shutdown().await;
}
