//! End-to-end data path of the metric plugin: the brief's metric fleet on two members, the
//! controller and real Flux installing the charts from the local chart repository, and
//! [`MetricsStandIn`] running what the charts' Pods would run (no kubelet here): a real
//! Prometheus + Thanos sidecar per member, configured from the rendered HelmRelease values
//! and the member's Secret copy, listening where the load-balancer simulator's address for
//! the sidecar Service is forwarded, and a real Thanos Query on the host whose endpoints
//! follow the controller's discovery EndpointSlices.
//!
//! Checked through Thanos Query: both clusters answer `count by (cluster) (up)`; a stopped
//! Prometheus leaves its cluster out (named as missing) and back once restarted; a changed
//! object-store Secret reaches the sidecars (their bucket metric names the new bucket); a
//! member removed from the fleet leaves the discovery and the answers.

use std::{
    collections::BTreeSet,
    path::Path,
    time::{Duration, Instant},
};

use crate::common::{Harness, apply, put_objstore, until};
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use kurator_api::Fleet;
use kurator_controller::{Settings, plugins::render::ChartMirrors};
use kurator_testenv::{
    LoadBalancerPool, MetricsStandIn, MetricsStandInParams, run_load_balancer_pool_simulator,
    run_load_balancer_simulator,
};

/// Flux installs, Prometheus scrapes every 5 s and Query re-reads its SD file every 5 s:
/// generous for a loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(180);
const METRIC_FLEET: &str = include_str!("../../kurator-api/tests/fixtures/seed/fleet-metric.yaml");
const BITNAMI: &str = "oci://registry-1.docker.io/bitnamicharts";
const UP_BY_CLUSTER: &str = "count by (cluster) (up)";
const MEMBERS: [&str; 2] = ["kurator-member1", "kurator-member2"];

/// A loopback prefix no other test process uses at the same time: every sidecar listens on
/// port 10901, as behind its Service.
fn loopback_prefix() -> [u8; 3] {
    let pid = std::process::id();
    [127, 10 + (pid % 90) as u8, (pid / 90 % 250) as u8]
}

fn filesystem_bucket(dir: &Path) -> String {
    format!(
        "type: FILESYSTEM\nconfig:\n  directory: {}\n",
        dir.display()
    )
}

/// Waits until `count by (cluster) (up)` answers for exactly `expected`; returns the
/// fleet's clusters that did not answer (for the message a user would see).
async fn wait_for_clusters(stand_in: &MetricsStandIn<'_>, expected: &[&str]) -> Vec<String> {
    let expected: BTreeSet<String> = expected.iter().map(|c| c.to_string()).collect();
    let answered = until(
        format!("`{UP_BY_CLUSTER}` through Thanos Query to answer for {expected:?}"),
        WAIT,
        || async {
            match stand_in.query().instant_query(UP_BY_CLUSTER).await {
                Ok(vector) => {
                    let clusters: BTreeSet<String> =
                        vector.by_label("cluster").into_keys().collect();
                    if clusters == expected {
                        Ok(Some(clusters))
                    } else {
                        Err(format!(
                            "clusters {clusters:?}, warnings {:?}, endpoints {:?}",
                            vector.warnings,
                            stand_in.sd_endpoints().await
                        ))
                    }
                }
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await;
    MEMBERS
        .iter()
        .filter(|c| !answered.contains(**c))
        .map(|c| c.to_string())
        .collect()
}

/// The buckets `cluster`'s sidecar reports in `thanos_objstore_bucket_operations_total`.
async fn sidecar_buckets(stand_in: &MetricsStandIn<'_>, cluster: &str) -> BTreeSet<String> {
    let Ok(metrics) = stand_in.sidecar_metrics(cluster).await else {
        return BTreeSet::new();
    };
    metrics
        .lines()
        .filter(|l| l.starts_with("thanos_objstore_bucket_operations_total{"))
        .filter_map(|l| l.split("bucket=\"").nth(1)?.split('"').next())
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_metrics_reach_thanos_query_through_members_coming_and_going() {
    let started = Instant::now();
    let (binaries, _charts_dir, charts) = crate::common::metric_charts().await;
    let settings = Settings {
        health_interval: Duration::from_secs(10),
        chart_mirrors: ChartMirrors(vec![(BITNAMI.to_string(), charts.url())]),
        ..Default::default()
    };
    let h = Harness::start_with_settings(2, true, settings).await;
    h.attach_member(MEMBERS[0], 1).await;
    h.attach_member(MEMBERS[1], 2).await;
    let state = h.env.state_dir().to_path_buf();
    put_objstore(&h, &filesystem_bucket(&state.join("bucket-a"))).await;
    let fleet: Fleet = serde_saphyr::from_str(METRIC_FLEET).unwrap();
    let fleets: Api<Fleet> = h.api();
    apply(&fleets, "quickstart", &fleet).await;

    // Each member's sidecar Service gets its own pool address; Grafana's on the host one.
    let pool = LoadBalancerPool::new(loopback_prefix());
    let mut simulators = Vec::new();
    for (name, cluster) in MEMBERS.iter().zip(h.env.members()) {
        simulators.push(tokio::spawn(run_load_balancer_pool_simulator(
            cluster.client().await.unwrap(),
            name.to_string(),
            pool.clone(),
        )));
    }
    simulators.push(tokio::spawn(run_load_balancer_simulator(
        h.client.clone(),
        "192.0.2.100".into(),
    )));

    let stand_in = MetricsStandIn::start(MetricsStandInParams {
        binaries: &binaries,
        host: h.client.clone(),
        namespace: "default".into(),
        members: MEMBERS
            .iter()
            .map(|m| m.to_string())
            .zip(h.env.members())
            .collect(),
        pool: pool.clone(),
        state_dir: &state,
        scrape_interval: Duration::from_secs(5),
        extra_scrape_targets: Default::default(),
        detached: false,
        timeout: Duration::from_secs(120),
    })
    .await
    .expect("Thanos Query starts");

    let scenario = async {
        // Both clusters answer, each from its own sidecar address.
        let missing = wait_for_clusters(&stand_in, &MEMBERS).await;
        assert!(missing.is_empty(), "{missing:?}");
        eprintln!(
            "both clusters answered {:.1}s after the start",
            started.elapsed().as_secs_f64()
        );
        let running = stand_in.running_members().await;
        let addresses: BTreeSet<String> = running.values().map(|a| a.to_string()).collect();
        assert_eq!(
            addresses.len(),
            2,
            "distinct sidecar addresses: {running:?}"
        );
        let endpoints: BTreeSet<String> = stand_in.sd_endpoints().await.into_iter().collect();
        assert_eq!(
            endpoints, addresses,
            "Query's endpoints are the discovery's"
        );

        // member2's Prometheus down: its series leave the answer and it is named missing.
        let t = Instant::now();
        stand_in.stop_prometheus(MEMBERS[1]).await.unwrap();
        let missing = wait_for_clusters(&stand_in, &MEMBERS[..1]).await;
        assert_eq!(missing, [MEMBERS[1]]);
        // Partial responses are on (as the chart leaves them): Query's warning names it too.
        until("Query's warning to name member2", WAIT, || async {
            match stand_in.query().instant_query(UP_BY_CLUSTER).await {
                Ok(v) if v.warnings.iter().any(|w| w.contains(MEMBERS[1])) => Ok(()),
                Ok(v) => Err(format!("warnings {:?}", v.warnings)),
                Err(e) => Err(e.to_string()),
            }
        })
        .await;
        stand_in.start_prometheus(MEMBERS[1]).await.unwrap();
        wait_for_clusters(&stand_in, &MEMBERS).await;
        eprintln!(
            "Prometheus outage and recovery seen in {:.1}s",
            t.elapsed().as_secs_f64()
        );

        // A changed object store reaches both sidecars through the members' Secret copies.
        let t = Instant::now();
        let bucket_b = state.join("bucket-b");
        put_objstore(&h, &filesystem_bucket(&bucket_b)).await;
        // The bucket label of a FILESYSTEM bucket is `fs: <directory>`.
        let wanted = BTreeSet::from([format!("fs: {}", bucket_b.display())]);
        for member in MEMBERS {
            until(
                format!("{member}'s sidecar to use {wanted:?}"),
                WAIT,
                || async {
                    let buckets = sidecar_buckets(&stand_in, member).await;
                    if buckets == wanted {
                        Ok(())
                    } else {
                        Err(format!("buckets {buckets:?}"))
                    }
                },
            )
            .await;
        }
        wait_for_clusters(&stand_in, &MEMBERS).await;
        eprintln!(
            "the new bucket reached both sidecars in {:.1}s",
            t.elapsed().as_secs_f64()
        );

        // member2 removed from the fleet: its sidecar leaves the discovery and the answers.
        let t = Instant::now();
        let member2_sidecar = running[MEMBERS[1]].to_string();
        fleets
            .patch(
                "quickstart",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"clusters": [
                    {"name": MEMBERS[0], "kind": "AttachedCluster"}
                ]}})),
            )
            .await
            .unwrap();
        until("member2's sidecar to leave the discovery", WAIT, || async {
            let endpoints = stand_in.sd_endpoints().await;
            let running = stand_in.running_members().await;
            if endpoints.contains(&member2_sidecar) || running.contains_key(MEMBERS[1]) {
                Err(format!("endpoints {endpoints:?}, running {running:?}"))
            } else {
                Ok(())
            }
        })
        .await;
        wait_for_clusters(&stand_in, &MEMBERS[..1]).await;
        eprintln!(
            "member2 left the answers {:.1}s after its removal",
            t.elapsed().as_secs_f64()
        );
    };
    tokio::select! {
        () = stand_in.run() => unreachable!("the stand-in runs until dropped"),
        () = scenario => {}
    }
    eprintln!("total {:.1}s", started.elapsed().as_secs_f64());
    drop(stand_in);
    for simulator in simulators {
        simulator.abort();
    }
    h.shutdown().await;
}
