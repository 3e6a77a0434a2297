//! `kurator dev up --plugins`: the quickstart fleet with the metric, grafana and policy
//! plugins, installed by Flux from the playground's chart repository.
//!
//! The playground has no kubelet: kwok runs every Pod as a simulated one. The chart repository
//! serves the real kyverno and kyverno-policies charts, and the real bitnami thanos,
//! kube-prometheus and grafana charts of the metric and grafana plugins (read from
//! `../shared/charts/`, or `KURATOR_PLUGIN_CHARTS`). Once the
//! kyverno chart's Deployments exist in a member, the real Kyverno runs as local processes
//! configured from them (standing in for the kubelet that would run their Pods), so the
//! fleet's policy report shows Kyverno's own results; an example workload that violates the
//! baseline standard is applied to the second member. The members' LoadBalancer Services get a
//! documentation address (192.0.2.x). All of this is said on screen.

use std::{net::SocketAddr, path::Path};

use anyhow::Context as _;
use kube::Client;
use kurator_testenv::{ClusterHandle, KyvernoStandIn, KyvernoStandInParams};

use super::quickstart::NAMESPACE;
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
/// The example workload's file, and the policy it violates.
pub const VIOLATING_FILE: &str = "examples/quickstart/plugins/privileged-debug.yaml";
pub const VIOLATED_POLICY: &str = "disallow-privileged-containers";
/// In the test environment's state dir: the Kyverno processes `serve` runs, for `dev status`.
pub const KYVERNO_PROCESSES: &str = "kyverno-processes.json";
/// How long one Kyverno may take to become ready.
const KYVERNO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

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

/// The object-store Secret and the fleet with its plugins.
pub async fn apply(client: &Client) -> anyhow::Result<()> {
    for (file, yaml) in [
        ("thanos-objstore.yaml", OBJSTORE_YAML),
        ("fleet.yaml", FLEET_YAML),
    ] {
        let objects =
            manifest::parse(yaml).with_context(|| format!("examples/quickstart/plugins/{file}"))?;
        manifest::apply(client, &objects, NAMESPACE).await?;
    }
    Ok(())
}

/// The background half of the plugin support: serves the charts, gives every member
/// LoadBalancer Service an address (there is no cloud controller) and, with `kyverno`, runs
/// Kyverno in the members where its chart is installed. `env_dir` is the test environment's
/// state (Kyverno logs go to its `logs/`); each kubeconfig is
/// `<env_dir>/clusters/<name>/kubeconfig`.
pub async fn serve(
    dir: &Path,
    addr: SocketAddr,
    env_dir: &Path,
    kyverno: bool,
    members: &[std::path::PathBuf],
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let binaries = if kyverno {
        Some(tokio::task::spawn_blocking(kurator_testenv::ensure_kyverno_binaries).await??)
    } else {
        None
    };
    let mut tasks = tokio::task::JoinSet::new();
    // Kept for this process's lifetime: dropping one stops its Kyverno.
    let mut stand_ins = Vec::new();
    for (index, kubeconfig) in members.iter().enumerate() {
        let client = crate::client(Some(kubeconfig)).await?;
        tasks.spawn(kurator_testenv::run_load_balancer_simulator(
            client,
            load_balancer_address(index),
        ));
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
                state_dir: env_dir.to_path_buf(),
                timeout: KYVERNO_TIMEOUT,
            })
            .await?,
        );
    }
    // Until SIGTERM (`kurator dev down`): then the Kyverno processes are stopped with it.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let status_file = env_dir.join(KYVERNO_PROCESSES);
    let publish = async {
        loop {
            let processes: Vec<kurator_testenv::ProcessInfo> = stand_ins
                .iter()
                .flat_map(KyvernoStandIn::processes)
                .collect();
            if let Err(e) = write_processes(&status_file, &processes) {
                tracing::warn!(error = %e, "writing {}", status_file.display());
            }
            if stand_ins.is_empty() {
                std::future::pending::<()>().await;
            }
            futures::future::select_all(stand_ins.iter_mut().map(|s| Box::pin(s.changed()))).await;
        }
    };
    tokio::select! {
        served = kurator_testenv::serve_helm_repo(dir.to_path_buf(), listener) => served?,
        _ = terminate.recv() => {}
        () = publish => {}
    }
    for stand_in in stand_ins {
        stand_in.stop().await;
    }
    Ok(())
}

fn write_processes(file: &Path, processes: &[kurator_testenv::ProcessInfo]) -> anyhow::Result<()> {
    let tmp = file.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(processes)?)?;
    std::fs::rename(&tmp, file)?;
    Ok(())
}

/// The Kyverno processes the plugin support runs, as it last wrote them (none if it does not).
pub fn kyverno_processes(env_dir: &Path) -> Vec<kurator_testenv::ProcessInfo> {
    std::fs::read(env_dir.join(KYVERNO_PROCESSES))
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
