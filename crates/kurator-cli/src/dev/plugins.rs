//! `kurator dev up --plugins`: the quickstart fleet with the metric, grafana and policy
//! plugins, installed by Flux from the playground's chart repository.
//!
//! The playground has no kubelet: kwok runs every Pod as a simulated one. The chart repository
//! serves the real kyverno and kyverno-policies charts, and the real bitnami thanos,
//! kube-prometheus and grafana charts of the metric and grafana plugins (read from
//! `../shared/charts/`, or `KURATOR_PLUGIN_CHARTS`). Standing in for the kubelet that would run
//! their Pods, the background half (`serve`) runs real programs as local processes, configured
//! from what the product rendered:
//! - Kyverno, once the kyverno chart's Deployments exist in a member, so the fleet's policy
//!   report shows Kyverno's own results (an example workload that violates the baseline
//!   standard is applied to the second member);
//! - per member, Prometheus and a Thanos sidecar ([`kurator_testenv::MetricsStandIn`]) from
//!   the member's prometheus release and Secret copy, and on the host Thanos Query following
//!   the controller's discovery objects; its URL is written to the state dir, where `dev env`
//!   exports it as `KURATOR_THANOS_URL` for `kurator metrics query`.
//!
//! Member LoadBalancer Services get a documentation address: one each from 198.51.100.0/24
//! (RFC 5737) with the metric plugin, forwarded to a loopback address where the sidecar
//! listens, else 192.0.2.x. All of this is said on screen.

use std::{net::SocketAddr, path::Path};

use anyhow::Context as _;
use kube::Client;
use kurator_testenv::{
    AppExporter, AppExporterParams, ClusterHandle, KyvernoStandIn, KyvernoStandInParams,
    LoadBalancerPool, MetricsStandIn, MetricsStandInParams, TestEnv,
};

use super::quickstart::{NAMESPACE, SHOP, member_name};
use crate::manifest;

/// Upstream chart repositories, served by the playground instead (`--chart-mirror`).
pub const MIRRORED: &[&str] = &[
    "oci://registry-1.docker.io/bitnamicharts",
    "https://kyverno.github.io/kyverno",
];

const OBJSTORE_YAML: &str =
    include_str!("../../../../examples/quickstart/plugins/thanos-objstore.yaml");
const FLEET_YAML: &str = include_str!("../../../../examples/quickstart/plugins/fleet.yaml");
const VIOLATING_YAML: &str =
    include_str!("../../../../examples/quickstart/plugins/privileged-debug.yaml");
/// The example object store's FILESYSTEM directory.
const EXAMPLE_BUCKET: &str = "/var/thanos/data";
/// The fleet-wide query `dev up --plugins` ends with.
pub const FLEET_QUERY: &str = "sum by (cluster) (rate(apiserver_request_total[1m]))";
/// The example workload's file, and the policy it violates.
pub const VIOLATING_FILE: &str = "examples/quickstart/plugins/privileged-debug.yaml";
pub const VIOLATED_POLICY: &str = "disallow-privileged-containers";
/// In the test environment's state dir: the Kyverno and metric processes `serve` runs, for
/// `dev status`.
pub const PLUGIN_PROCESSES: &str = "plugin-processes.json";
/// In the test environment's state dir: Thanos Query's URL, written by `serve`.
pub const THANOS_URL_FILE: &str = "thanos-query.url";
/// How long one Kyverno, Prometheus or Thanos process may take to become ready.
const PROCESS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);
/// How often the members' Prometheus scrape (the chart's default is 30 s; shorter, so the
/// first rate answers within a minute and the shop's 30 s error-rate window holds 6 samples).
const SCRAPE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// `--chart-mirror` arguments for the controller.
pub fn mirror_args(charts: SocketAddr) -> Vec<String> {
    MIRRORED
        .iter()
        .map(|from| format!("--chart-mirror={from}=http://{charts}"))
        .collect()
}

/// Writes the real metric and grafana charts (from `../shared/charts/`, or
/// `KURATOR_PLUGIN_CHARTS`), with `kyverno` the real Kyverno charts, and their index into
/// `dir` (served by `dev serve-plugins`).
pub fn write_charts(dir: &Path, kyverno: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    kurator_testenv::write_plugin_charts(dir).context("writing the metric and grafana charts")?;
    if kyverno {
        kurator_testenv::write_kyverno_charts(dir).context("writing the Kyverno charts")?;
    }
    kurator_testenv::write_index(dir).context("writing the chart index")?;
    Ok(())
}

/// The object-store Secret, its FILESYSTEM bucket moved to `bucket` (the example's
/// directory is a container's, not writable here), and the fleet with its plugins.
pub async fn apply(client: &Client, bucket: &Path) -> anyhow::Result<()> {
    // Quoted (JSON is YAML): a path may hold characters YAML would read otherwise.
    let quoted = serde_json::to_string(&bucket.display().to_string())?;
    let objstore = OBJSTORE_YAML.replace(EXAMPLE_BUCKET, &quoted);
    for (file, yaml) in [
        ("thanos-objstore.yaml", objstore.as_str()),
        ("fleet.yaml", FLEET_YAML),
    ] {
        let objects =
            manifest::parse(yaml).with_context(|| format!("examples/quickstart/plugins/{file}"))?;
        manifest::apply(client, &objects, NAMESPACE).await?;
    }
    Ok(())
}

/// What the background half of the plugin support runs besides the chart repository.
pub struct Serve<'a> {
    /// The charts' directory and the address to serve it on.
    pub dir: &'a Path,
    pub addr: SocketAddr,
    /// The test environment's state (logs go to its `logs/`, the process list and Thanos
    /// Query's URL beside them).
    pub env_dir: &'a Path,
    /// Run Kyverno in the members where its chart is installed.
    pub kyverno: bool,
    /// Run Prometheus and a Thanos sidecar per member and Thanos Query on the host.
    pub metrics: bool,
    /// Each member's kubeconfig, `<env_dir>/clusters/<name>/kubeconfig`.
    pub members: &'a [std::path::PathBuf],
}

/// The background half of the plugin support: serves the charts, gives every member
/// LoadBalancer Service an address (there is no cloud controller) and runs what [`Serve`]
/// asks for, until SIGTERM (`kurator dev down`).
pub async fn serve(p: Serve<'_>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(p.addr).await?;
    let binaries = if p.kyverno {
        Some(tokio::task::spawn_blocking(kurator_testenv::ensure_kyverno_binaries).await??)
    } else {
        None
    };
    let mut tasks = tokio::task::JoinSet::new();
    // Each sidecar listens on its Service's port (10901) at its own loopback address.
    let pool = LoadBalancerPool::new(loopback_prefix());
    // Kept for this process's lifetime: dropping one stops its Kyverno.
    let mut stand_ins = Vec::new();
    for (index, kubeconfig) in p.members.iter().enumerate() {
        let client = crate::client(Some(kubeconfig)).await?;
        if p.metrics {
            tasks.spawn(kurator_testenv::run_load_balancer_pool_simulator(
                client,
                member_name(index + 1),
                pool.clone(),
            ));
        } else {
            tasks.spawn(kurator_testenv::run_load_balancer_simulator(
                client,
                load_balancer_address(index),
            ));
        }
        let Some(binaries) = &binaries else {
            continue;
        };
        let cluster = kubeconfig
            .parent()
            .and_then(Path::file_name)
            .context("a member kubeconfig outside <env>/clusters/<name>/")?
            .to_string_lossy()
            .into_owned();
        stand_ins.push(
            KyvernoStandIn::spawn(KyvernoStandInParams {
                binaries: binaries.clone(),
                cluster,
                kubeconfig: kubeconfig.clone(),
                state_dir: p.env_dir.to_path_buf(),
                timeout: PROCESS_TIMEOUT,
            })
            .await?,
        );
    }
    let (env, metrics_binaries) = if p.metrics {
        let env = TestEnv::attach(p.env_dir)?
            .with_context(|| format!("no playground in {}", p.env_dir.display()))?;
        let binaries = tokio::task::spawn_blocking(kurator_testenv::ensure_metrics_binaries)
            .await?
            .context("Prometheus (Debian's prometheus package) and Thanos")?;
        (Some(env), Some(binaries))
    } else {
        (None, None)
    };
    // Standing in for the staged-rollout example's container in each member (docs/rollout.md,
    // Walkthrough): its /metrics, with the error rate of the `shop` ConfigMap Flux applied.
    let mut app_exporters = Vec::new();
    if let Some(env) = &env {
        for (index, member) in env.members().iter().enumerate() {
            let exporter = AppExporter::start(AppExporterParams::new(member, NAMESPACE, SHOP))
                .await
                .context("starting the shop's stand-in")?;
            app_exporters.push((member_name(index + 1), exporter));
        }
    }
    let metrics = match (&env, &metrics_binaries) {
        (Some(env), Some(binaries)) => {
            let host = env.host().client().await?;
            let stand_in = MetricsStandIn::start(MetricsStandInParams {
                binaries,
                host,
                namespace: NAMESPACE.into(),
                members: env
                    .members()
                    .iter()
                    .enumerate()
                    .map(|(index, member)| (member_name(index + 1), member))
                    .collect(),
                pool: pool.clone(),
                state_dir: p.env_dir,
                scrape_interval: SCRAPE_INTERVAL,
                extra_scrape_targets: app_exporters
                    .iter()
                    .map(|(cluster, exporter)| (cluster.clone(), vec![exporter.scrape_target()]))
                    .collect(),
                detached: false,
                timeout: PROCESS_TIMEOUT,
            })
            .await
            .context("starting Thanos Query")?;
            replace_file(&p.env_dir.join(THANOS_URL_FILE), &stand_in.query_url())?;
            Some(stand_in)
        }
        _ => None,
    };
    // Until SIGTERM (`kurator dev down`): then the Kyverno and metric processes stop with it.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let status_file = p.env_dir.join(PLUGIN_PROCESSES);
    let publish = async {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(2));
        loop {
            every.tick().await;
            let mut processes: Vec<kurator_testenv::ProcessInfo> = stand_ins
                .iter()
                .flat_map(KyvernoStandIn::processes)
                .collect();
            if let Some(metrics) = &metrics {
                processes.extend(metrics.processes().await);
            }
            let written = serde_json::to_string_pretty(&processes)
                .map_err(anyhow::Error::from)
                .and_then(|json| replace_file(&status_file, &json));
            if let Err(e) = written {
                tracing::warn!(error = %e, "writing {}", status_file.display());
            }
        }
    };
    let stand_in_metrics = async {
        match &metrics {
            Some(metrics) => metrics.run().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        served = kurator_testenv::serve_helm_repo(p.dir.to_path_buf(), listener) => served?,
        _ = terminate.recv() => {}
        () = publish => {}
        () = stand_in_metrics => {}
    }
    drop(metrics);
    drop(app_exporters);
    for stand_in in stand_ins {
        stand_in.stop().await;
    }
    Ok(())
}

/// A loopback prefix for the sidecars' addresses, apart from the tests' (`127.10-99.x`) and
/// from another playground's (it follows the pid).
fn loopback_prefix() -> [u8; 3] {
    let pid = std::process::id();
    [127, 100 + (pid % 100) as u8, (pid / 100 % 250) as u8]
}

/// Writes `text` to `file` at once (readers never see half of it).
fn replace_file(file: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, file)?;
    Ok(())
}

/// Thanos Query's URL, as the plugin support wrote it (`None` if it runs none).
pub fn thanos_url(env_dir: &Path) -> Option<String> {
    std::fs::read_to_string(env_dir.join(THANOS_URL_FILE))
        .ok()
        .map(|url| url.trim().to_string())
}

/// The Kyverno and metric processes the plugin support runs, as it last wrote them (none if it does not).
pub fn plugin_processes(env_dir: &Path) -> Vec<kurator_testenv::ProcessInfo> {
    std::fs::read(env_dir.join(PLUGIN_PROCESSES))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// Applies the example workload that violates the baseline standard to `member`.
pub async fn apply_violating_workload(member: &ClusterHandle) -> anyhow::Result<()> {
    let client = member.client().await?;
    let objects = manifest::parse(VIOLATING_YAML).context(VIOLATING_FILE)?;
    manifest::apply(&client, &objects, NAMESPACE)
        .await
        .with_context(|| format!("applying {VIOLATING_FILE} to {}", member.name()))
}

/// Member `index`'s load-balancer address: from TEST-NET-1 (RFC 5737, documentation only),
/// so it looks like a real one without pointing anywhere.
pub fn load_balancer_address(index: usize) -> String {
    format!("192.0.2.{}", index + 1)
}
