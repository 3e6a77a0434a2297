//! `kurator dev up --plugins`: the quickstart fleet with the metric, grafana and policy
//! plugins, installed by Flux from the playground's chart repository.
//!
//! The playground has no kubelet, so nothing runs: the chart repository serves stand-in charts
//! (upstream names, versions and value keys; plain objects only), the members' LoadBalancer
//! Services get a documentation address (192.0.2.x), and — since Kyverno cannot run — sample
//! PolicyReports are written into the members as Kyverno would, so the fleet's policy summary
//! has something to show. All of this is said on screen.

use std::{net::SocketAddr, path::Path};

use anyhow::Context as _;
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams},
};
use kurator_api::labels::FIELD_MANAGER;
use kurator_testenv::ClusterHandle;

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

/// `--chart-mirror` arguments for the controller.
pub fn mirror_args(charts: SocketAddr) -> Vec<String> {
    MIRRORED
        .iter()
        .map(|from| format!("--chart-mirror={from}=http://{charts}"))
        .collect()
}

/// Writes the stand-in charts and their index into `dir` (served by `dev serve-plugins`).
pub fn write_charts(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    kurator_testenv::write_standin_charts(dir).context("writing the stand-in charts")?;
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

/// The background half of the plugin support: serves the charts and gives every member
/// LoadBalancer Service an address (there is no cloud controller).
pub async fn serve(
    dir: &Path,
    addr: SocketAddr,
    members: &[std::path::PathBuf],
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let mut tasks = tokio::task::JoinSet::new();
    for (index, kubeconfig) in members.iter().enumerate() {
        let client = crate::client(Some(kubeconfig)).await?;
        tasks.spawn(kurator_testenv::run_load_balancer_simulator(
            client,
            load_balancer_address(index),
        ));
    }
    kurator_testenv::serve_helm_repo(dir.to_path_buf(), listener).await?;
    Ok(())
}

/// Member `index`'s load-balancer address: from TEST-NET-1 (RFC 5737, documentation only),
/// so it looks like a real one without pointing anywhere.
pub fn load_balancer_address(index: usize) -> String {
    format!("192.0.2.{}", index + 1)
}

fn policy_report_api() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("wgpolicyk8s.io", "v1alpha2", "PolicyReport"),
        "policyreports",
    )
}

/// Sample PolicyReports, as Kyverno would write them for the quickstart's webapp with the
/// baseline policies: all pass in the first member; in the second, the webapp also runs a
/// privileged debug container in this sample, so two policies fail.
pub async fn write_sample_reports(members: &[ClusterHandle]) -> anyhow::Result<()> {
    const POLICIES: &[&str] = &[
        "disallow-capabilities",
        "disallow-host-namespaces",
        "disallow-host-path",
        "disallow-host-ports",
        "disallow-privileged-containers",
        "restrict-seccomp",
    ];
    const FAILING_IN_SECOND: &[&str] = &["disallow-capabilities", "disallow-privileged-containers"];
    for (index, member) in members.iter().enumerate() {
        let client = member.client().await?;
        let results: Vec<serde_json::Value> = POLICIES
            .iter()
            .map(|policy| {
                let fail = index == 1 && FAILING_IN_SECOND.contains(policy);
                serde_json::json!({
                    "policy": policy,
                    "rule": policy,
                    "result": if fail { "fail" } else { "pass" },
                    "severity": "high",
                    "category": "Pod Security Standards (Baseline)",
                    "source": "kyverno",
                    "message": if fail { "validation failure: the container is privileged" } else { "validation rule passed" },
                    "resources": [{"apiVersion": "apps/v1", "kind": "Deployment", "namespace": NAMESPACE, "name": "webapp"}],
                    "scored": true,
                    "timestamp": {"seconds": 0, "nanos": 0},
                })
            })
            .collect();
        let fails = if index == 1 {
            FAILING_IN_SECOND.len()
        } else {
            0
        };
        let body = serde_json::json!({
            "apiVersion": "wgpolicyk8s.io/v1alpha2",
            "kind": "PolicyReport",
            "metadata": {
                "name": "kurator-playground-sample",
                "namespace": NAMESPACE,
                "labels": {"app.kubernetes.io/managed-by": "kyverno", "kurator.dev/playground-sample": "true"},
            },
            "summary": {"pass": POLICIES.len() - fails, "fail": fails, "warn": 0, "error": 0, "skip": 0},
            "results": results,
        });
        let api: Api<DynamicObject> = Api::namespaced_with(client, NAMESPACE, &policy_report_api());
        api.patch(
            "kurator-playground-sample",
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .with_context(|| format!("writing a sample PolicyReport into {}", member.name()))?;
    }
    Ok(())
}
