//! kube-controller-manager restricted to garbage collection and namespace deletion.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::process::{Proc, ProcessSpec, WaitError, free_port, lost_port_race, wait_ready};

/// Controllers enabled (names as in kube-controller-manager v1.35 `--controllers`).
pub(crate) const CONTROLLERS: &str = "garbage-collector-controller,namespace-controller";

const ATTEMPTS: usize = 4;

pub(crate) struct ControllerManagerParams<'a> {
    pub program: &'a Path,
    pub cluster: &'a str,
    pub kubeconfig: &'a Path,
    pub cert_dir: &'a Path,
    pub log: PathBuf,
    pub pid_file: Option<PathBuf>,
}

fn spec(p: &ControllerManagerParams<'_>, port: u16) -> ProcessSpec {
    ProcessSpec {
        name: format!("{}-kube-controller-manager", p.cluster),
        program: p.program.to_path_buf(),
        args: vec![
            format!("--kubeconfig={}", p.kubeconfig.display()),
            "--leader-elect=false".into(),
            format!("--controllers={CONTROLLERS}"),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={port}"),
            format!("--cert-dir={}", p.cert_dir.display()),
            "--profiling=false".into(),
        ],
        log: p.log.clone(),
        pid_file: p.pid_file.clone(),
        env: Vec::new(),
    }
}

/// The port of the secure-serving endpoint (only used for `/healthz`).
fn port_of(spec: &ProcessSpec) -> Option<u16> {
    spec.args
        .iter()
        .find_map(|a| a.strip_prefix("--secure-port="))
        .and_then(|p| p.parse().ok())
}

/// Client for the self-signed health endpoint (anonymous, certificate not verified: it only
/// ever reads `/healthz` on loopback).
fn health_client(port: u16) -> Result<kube::Client> {
    let uri: http::Uri = format!("https://127.0.0.1:{port}")
        .parse()
        .map_err(|e| Error::Usage(format!("invalid controller-manager url: {e}")))?;
    let mut config = kube::Config::new(uri);
    config.accept_invalid_certs = true;
    config.connect_timeout = Some(Duration::from_secs(2));
    kube::Client::try_from(config)
        .map_err(|e| Error::kube("creating controller-manager health client", e))
}

async fn healthy(client: &kube::Client) -> bool {
    let Ok(req) = http::Request::get("/healthz").body(Vec::new()) else {
        return false;
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(3), client.request_text(req)).await,
        Ok(Ok(body)) if body.trim() == "ok"
    )
}

/// Starts kube-controller-manager and waits for its `/healthz`.
pub(crate) async fn start(
    p: &ControllerManagerParams<'_>,
    detached: bool,
    timeout: Duration,
) -> Result<Proc> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let port = free_port()?;
        let mut proc = Proc::spawn(spec(p, port), detached)?;
        match wait_until_healthy(&mut proc, timeout).await {
            Ok(()) => return Ok(proc),
            Err(WaitError::Exited(status)) if attempt < ATTEMPTS && lost_port_race(&proc) => {
                tracing::warn!(%status, cluster = p.cluster,
                    "kube-controller-manager lost a port race, retrying");
            }
            Err(err) => {
                proc.kill().await.ok();
                return Err(proc.startup_error(err.describe(timeout, "/healthz")));
            }
        }
    }
}

/// Waits for `/healthz` of an already spawned kube-controller-manager.
pub(crate) async fn wait_until_healthy(
    proc: &mut Proc,
    timeout: Duration,
) -> std::result::Result<(), WaitError> {
    let Some(client) = port_of(&proc.spec).and_then(|port| health_client(port).ok()) else {
        return Err(WaitError::Exited("no usable --secure-port".into()));
    };
    wait_ready(proc, timeout, || healthy(&client)).await
}
