//! kube-scheduler: binds Pods to the cluster's (simulated) nodes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::Result;
use crate::health::{SECURE_PORT_FLAG, wait_secure};
use crate::process::{Proc, ProcessSpec, WaitError, start_on_free_port};

pub(crate) struct SchedulerParams<'a> {
    pub program: &'a Path,
    pub cluster: &'a str,
    pub kubeconfig: &'a Path,
    /// Where it writes its self-signed serving certificate.
    pub cert_dir: &'a Path,
    pub log: PathBuf,
    pub pid_file: Option<PathBuf>,
}

fn spec(p: &SchedulerParams<'_>, port: u16) -> ProcessSpec {
    ProcessSpec {
        name: format!("{}-kube-scheduler", p.cluster),
        program: p.program.to_path_buf(),
        args: vec![
            format!("--kubeconfig={}", p.kubeconfig.display()),
            // One scheduler per cluster: a Lease would only delay its start.
            "--leader-elect=false".into(),
            "--bind-address=127.0.0.1".into(),
            format!("{SECURE_PORT_FLAG}{port}"),
            format!("--cert-dir={}", p.cert_dir.display()),
            "--profiling=false".into(),
        ],
        log: p.log.clone(),
        pid_file: p.pid_file.clone(),
        env: Vec::new(),
    }
}

/// Starts kube-scheduler and waits until it is ready.
pub(crate) async fn start(
    p: &SchedulerParams<'_>,
    detached: bool,
    timeout: Duration,
) -> Result<Proc> {
    start_on_free_port(
        |port| spec(p, port),
        detached,
        timeout,
        "/readyz",
        |mut proc| async move {
            let verdict = wait_until_ready(&mut proc, timeout).await;
            (proc, verdict)
        },
    )
    .await
}

/// Waits for `/readyz`, which also covers the scheduler's informers having synced (a
/// scheduler that answers `/healthz` may not bind anything yet).
pub(crate) async fn wait_until_ready(
    proc: &mut Proc,
    timeout: Duration,
) -> std::result::Result<(), WaitError> {
    wait_secure(proc, "/readyz", timeout).await
}
