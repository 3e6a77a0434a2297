//! The real metrics data path on two members: a real Prometheus per member scraping its own
//! kube-apiserver with `cluster` external labels, a real Thanos sidecar per member on its own
//! loopback IP at port 10901 (as the load-balancer simulator will hand them out), and a real
//! Thanos Query on the host that finds the sidecars through a file-SD file.
//!
//! member1 also runs a test application's [`AppExporter`] (its error rate from the ConfigMap
//! created there) as an extra scrape target of its Prometheus.
//!
//! Checked through Query's HTTP API: both clusters answer `count by (cluster) (up)`; the
//! app's `http_requests_total` answers for member1 only, 500s included; a
//! stopped Prometheus takes its cluster's series out of instant queries (its sidecar fails
//! the read and Query answers with the others plus a warning) and back when it runs again;
//! a sidecar restarted with another object-store configuration uses the new bucket; and a
//! member removed from the SD file is no longer asked.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, api::PostParams};
use kurator_testenv::{
    AppExporter, AppExporterParams, ControllerManagerMode, HostThanosQuery, HostThanosQueryParams,
    HostThanosStore, HostThanosStoreParams, InstantVector, MemberMetrics, MemberMetricsParams,
    SIDECAR_GRPC_PORT, TestEnv, ensure_metrics_binaries, wait,
};

/// Prometheus scrapes every 5 s; Thanos Query re-reads its endpoints every 5 s. Generous for
/// a loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(90);
const UP_BY_CLUSTER: &str = "count by (cluster) (up)";
const APISERVERS_UP: &str = r#"count by (cluster) (up{job="apiserver"})"#;

/// A loopback IP per member that no other test process uses at the same time (every
/// sidecar listens on port 10901, as behind its Service).
fn sidecar_address(member: usize) -> SocketAddr {
    let pid = std::process::id();
    let ip = [
        127,
        100 + (pid % 100) as u8,
        (pid / 100 % 250) as u8,
        member as u8,
    ];
    SocketAddr::from((ip, SIDECAR_GRPC_PORT))
}

fn filesystem_bucket(dir: &std::path::Path) -> String {
    format!(
        "type: FILESYSTEM\nconfig:\n  directory: {}\n",
        dir.display()
    )
}

/// The clusters an instant query answered for, and the answer (for failure messages).
async fn clusters_answering(
    query: &HostThanosQuery,
    promql: &str,
) -> Result<BTreeSet<String>, String> {
    match query.instant_query(promql).await {
        Ok(vector) => Ok(vector.by_label("cluster").into_keys().collect()),
        Err(e) => Err(e.to_string()),
    }
}

/// Waits until `promql` answers for exactly `expected` clusters; returns the last answer.
async fn wait_for_clusters(
    query: &HostThanosQuery,
    promql: &str,
    expected: &[&str],
) -> Result<InstantVector> {
    let expected: BTreeSet<String> = expected.iter().map(|c| c.to_string()).collect();
    let what = format!("`{promql}` through Thanos Query to answer for {expected:?}");
    Ok(wait::until(what, WAIT, || async {
        match query.instant_query(promql).await {
            Ok(vector) => {
                let clusters: BTreeSet<String> = vector.by_label("cluster").into_keys().collect();
                if clusters == expected {
                    Ok(Some(vector))
                } else {
                    Err(format!(
                        "clusters {clusters:?}, warnings {:?}",
                        vector.warnings
                    ))
                }
            }
            Err(e) => Err(e.to_string()),
        }
    })
    .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_sidecars_and_query_answer_by_cluster() -> Result<()> {
    let started = Instant::now();
    let binaries = tokio::task::spawn_blocking(ensure_metrics_binaries).await??;
    let env = TestEnv::builder()
        .members(2)
        .nodes(false)
        .controller_manager(ControllerManagerMode::None)
        .start()
        .await?;
    let state = env.state_dir().to_path_buf();

    // member1 runs an application (its ConfigMap says half its requests fail), whose
    // exporter member1's Prometheus scrapes besides the apiserver.
    let member1 = env.members()[0].client().await?;
    let app_config: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "shop"},
        "data": {kurator_testenv::ERROR_RATE_KEY: "0.5"},
    }))?;
    Api::<ConfigMap>::namespaced(member1, "default")
        .create(&PostParams::default(), &app_config)
        .await?;
    let app =
        AppExporter::start(AppExporterParams::new(&env.members()[0], "default", "shop")).await?;

    let mut members = Vec::new();
    for (index, cluster) in env.members().iter().enumerate() {
        let labels = BTreeMap::from([("cluster".to_string(), cluster.name().to_string())]);
        let mut params = MemberMetricsParams::new(
            &binaries,
            cluster,
            &state,
            labels,
            sidecar_address(index + 1),
        );
        params.objstore_config = Some(filesystem_bucket(&state.join("bucket-a")));
        if index == 0 {
            params.extra_targets = vec![app.scrape_target()];
        }
        members.push(MemberMetrics::start(params).await?);
    }
    let sidecars: Vec<String> = members
        .iter()
        .map(|m| m.sidecar_grpc_address().to_string())
        .collect();
    // A store gateway on the sidecars' bucket, as a static endpoint of Query.
    let bucket_a = filesystem_bucket(&state.join("bucket-a"));
    let store = HostThanosStore::start(HostThanosStoreParams {
        thanos: &binaries.thanos,
        state_dir: &state,
        objstore_config: &bucket_a,
        detached: false,
        timeout: WAIT,
    })
    .await?;
    let mut params = HostThanosQueryParams::new(&binaries.thanos, &state);
    params.sd_endpoints = sidecars.clone();
    params.static_endpoints = vec![store.grpc_address()];
    let query = HostThanosQuery::start(params).await?;
    eprintln!(
        "processes ready after {:.1}s",
        started.elapsed().as_secs_f64()
    );

    // Both clusters, each with the one apiserver target up (waited for by job: member1's app
    // exporter, a second target, may be scraped first).
    let t = Instant::now();
    let both = wait_for_clusters(&query, APISERVERS_UP, &["member1", "member2"]).await?;
    eprintln!(
        "both clusters answered after {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let apiservers = query.instant_query(APISERVERS_UP).await?;
    ensure!(
        apiservers.by_label("cluster").len() == 2
            && apiservers.by_label("cluster").values().all(|v| v == "1"),
        "one apiserver target per cluster: {apiservers:?} (all targets: {both:?})"
    );
    // The app's series reach Query with member1's external label, 500s among them once the
    // exporter follows the ConfigMap.
    let app_errors = format!(
        r#"sum by (cluster) ({}{{job="{}",code="500"}})"#,
        kurator_testenv::REQUESTS_METRIC,
        kurator_testenv::APP_JOB
    );
    wait::until(
        format!("`{app_errors}` above 0 for member1 only"),
        WAIT,
        || async {
            match query.instant_query(&app_errors).await {
                Ok(v) => {
                    let by_cluster = v.by_label("cluster");
                    let above_zero = by_cluster
                        .get("member1")
                        .and_then(|x| x.parse::<f64>().ok())
                        .is_some_and(|x| x > 0.0);
                    if above_zero && by_cluster.len() == 1 {
                        Ok(())
                    } else {
                        Err(format!(
                            "{by_cluster:?}, the exporter at {:?}",
                            app.error_rate()
                        ))
                    }
                }
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await?;
    let up = query.instant_query(r#"up{job="apiserver"}"#).await?;
    ensure!(
        up.samples.iter().all(|s| s.value == "1"),
        "the apiservers are scraped with the client certificate: {up:?}"
    );
    let stores = query.stores().await?;
    let names_of = |kind: &str| -> Vec<String> {
        stores
            .iter()
            .filter(|s| s.kind == kind)
            .map(|s| s.name.clone())
            .collect()
    };
    ensure!(
        names_of("sidecar") == sidecars,
        "Query's sidecars {stores:?}, SD file {sidecars:?}"
    );
    ensure!(
        names_of("store") == vec![store.grpc_address()],
        "the store gateway is a static endpoint: {stores:?}"
    );

    // member2's Prometheus down: its series leave instant queries, member1 still answers.
    members[1].stop_prometheus().await?;
    let t = Instant::now();
    let without = wait_for_clusters(&query, UP_BY_CLUSTER, &["member1"]).await?;
    eprintln!(
        "member2's series gone {:.1}s after its Prometheus stopped; warnings: {:?}",
        t.elapsed().as_secs_f64(),
        without.warnings
    );
    ensure!(
        without
            .warnings
            .iter()
            .any(|w| w.contains(r#"cluster="member2""#) && w.contains("connection refused")),
        "Query's warning names the store of the cluster that failed: {:?}",
        without.warnings
    );
    ensure!(
        members[1].sidecar_running(),
        "the sidecar outlives its Prometheus"
    );
    members[1].start_prometheus().await?;
    wait_for_clusters(&query, UP_BY_CLUSTER, &["member1", "member2"]).await?;

    // A changed object-store configuration: the restarted sidecar uses the new bucket.
    let bucket_b = state.join("bucket-b");
    members[0]
        .restart_sidecar(Some(&filesystem_bucket(&bucket_b)))
        .await?;
    // The bucket label of a FILESYSTEM bucket is `fs: <directory>`.
    let buckets: BTreeSet<String> = members[0]
        .sidecar_metrics()
        .await?
        .lines()
        .filter(|l| l.starts_with("thanos_objstore_bucket_operations_total{"))
        .filter_map(|l| {
            l.split("bucket=\"")
                .nth(1)?
                .split('"')
                .next()
                .map(str::to_string)
        })
        .collect();
    let wanted = format!("fs: {}", bucket_b.display());
    ensure!(
        buckets == BTreeSet::from([wanted.clone()]),
        "member1's sidecar uses {buckets:?}, not [{wanted}]"
    );
    wait_for_clusters(&query, UP_BY_CLUSTER, &["member1", "member2"]).await?;

    // member1 leaves the SD file: Query stops asking it.
    query.set_sd_endpoints(&sidecars[1..])?;
    let t = Instant::now();
    wait_for_clusters(&query, UP_BY_CLUSTER, &["member2"]).await?;
    eprintln!(
        "member1's series gone {:.1}s after the SD file dropped it",
        t.elapsed().as_secs_f64()
    );
    let answering = clusters_answering(&query, "up")
        .await
        .map_err(anyhow::Error::msg)
        .context("plain `up`")?;
    ensure!(
        answering == BTreeSet::from(["member2".to_string()]),
        "{answering:?}"
    );
    let stores = query.stores().await?;
    ensure!(
        stores
            .iter()
            .filter(|s| s.kind == "sidecar")
            .all(|s| s.name == sidecars[1]),
        "only member2's sidecar is left: {stores:?}"
    );
    eprintln!("whole test {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}
