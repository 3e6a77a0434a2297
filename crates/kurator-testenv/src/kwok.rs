//! kwok ("Kubernetes WithOut Kubelet") stands in for the kubelets of a cluster's simulated
//! nodes: it keeps the fake Nodes Ready and plays each bound Pod's lifecycle through its
//! stages (Running and Ready with a Pod IP, Job Pods succeed, deletions finish). No container
//! runs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::certs::write_file;
use crate::error::Result;
use crate::fake_nodes;
use crate::health::http_get_ok;
use crate::process::{Proc, ProcessSpec, WaitError, start_on_free_port, wait_ready};

/// The stages kwok plays (its upstream "fast" node and pod stages).
const STAGES: &str = include_str!("../kwok/stages.yaml");

/// The annotation that marks a Node as kwok's (and the selector kwok manages Nodes by), so
/// that a real node, should anyone register one, is never touched.
pub(crate) const NODE_ANNOTATION: (&str, &str) = ("kwok.x-k8s.io/node", "fake");

/// Pod IPs kwok hands out; apart from the Service range (10.0.0.0/24) so an EndpointSlice
/// never shows a Service address.
const POD_CIDR: &str = "10.244.0.0/16";

const SERVER_FLAG: &str = "--server-address=127.0.0.1:";

pub(crate) struct KwokParams<'a> {
    pub program: &'a Path,
    pub cluster: &'a str,
    pub kubeconfig: &'a Path,
    /// Where the stage configuration is written (the cluster's directory).
    pub config_dir: &'a Path,
    pub log: PathBuf,
    pub pid_file: Option<PathBuf>,
}

fn config_path(dir: &Path) -> PathBuf {
    dir.join("kwok-stages.yaml")
}

fn spec(p: &KwokParams<'_>, port: u16) -> ProcessSpec {
    let (key, value) = NODE_ANNOTATION;
    ProcessSpec {
        name: format!("{}-kwok", p.cluster),
        program: p.program.to_path_buf(),
        args: vec![
            format!("--kubeconfig={}", p.kubeconfig.display()),
            // An explicit --config also keeps kwok from reading ~/.kwok/kwok.yaml.
            format!("--config={}", config_path(p.config_dir).display()),
            "--manage-all-nodes=false".into(),
            format!("--manage-nodes-with-annotation-selector={key}={value}"),
            format!("--cidr={POD_CIDR}"),
            // Its HTTP server is only used for /healthz (it starts once the controllers run).
            format!("{SERVER_FLAG}{port}"),
        ],
        log: p.log.clone(),
        pid_file: p.pid_file.clone(),
        env: Vec::new(),
    }
}

/// Writes the stage configuration, starts kwok and waits for its `/healthz` and then until it
/// has made every simulated Node Ready.
///
/// Both waits count as start-up: another process on the port kwok lost may answer the
/// `/healthz` probe, and kwok only exits on the taken port a moment later; the retry on
/// another port then covers that exit too.
pub(crate) async fn start(
    p: &KwokParams<'_>,
    client: &kube::Client,
    detached: bool,
    timeout: Duration,
) -> Result<Proc> {
    write_file(&config_path(p.config_dir), STAGES, 0o644)?;
    start_on_free_port(
        |port| spec(p, port),
        detached,
        timeout,
        "/healthz and all fake Nodes Ready",
        |mut proc| async move {
            let mut verdict = wait_until_ready(&mut proc, timeout).await;
            if verdict.is_ok() {
                verdict = fake_nodes::wait_ready_nodes(&mut proc, client, timeout).await;
            }
            (proc, verdict)
        },
    )
    .await
}

/// Waits until kwok's `/healthz` answers.
pub(crate) async fn wait_until_ready(
    proc: &mut Proc,
    timeout: Duration,
) -> std::result::Result<(), WaitError> {
    let Some(port) = proc
        .spec
        .args
        .iter()
        .find_map(|a| a.strip_prefix(SERVER_FLAG))
        .and_then(|p| p.parse::<u16>().ok())
    else {
        return Err(WaitError::Exited(format!("no usable {SERVER_FLAG}<port>")));
    };
    wait_ready(proc, timeout, || http_get_ok(port, "/healthz")).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manages_only_annotated_nodes_with_the_embedded_stages() {
        let p = KwokParams {
            program: Path::new("/bin/kwok"),
            cluster: "member1",
            kubeconfig: Path::new("/state/clusters/member1/kubeconfig"),
            config_dir: Path::new("/state/clusters/member1"),
            log: PathBuf::from("/state/logs/member1-kwok.log"),
            pid_file: None,
        };
        let s = spec(&p, 4100);
        assert_eq!(s.name, "member1-kwok");
        for flag in [
            "--config=/state/clusters/member1/kwok-stages.yaml",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            "--server-address=127.0.0.1:4100",
        ] {
            assert!(s.args.iter().any(|a| a == flag), "{flag}");
        }
        let stages: Vec<&str> = STAGES
            .lines()
            .filter_map(|l| l.strip_prefix("  name: "))
            .collect();
        assert_eq!(
            stages,
            ["node-initialize", "pod-ready", "pod-complete", "pod-delete"]
        );
    }
}
