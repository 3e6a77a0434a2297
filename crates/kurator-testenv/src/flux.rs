//! Flux source-, kustomize- and helm-controller as local processes against the host cluster.
//!
//! They read the host kubeconfig from `KUBECONFIG` (Flux has no `--kubeconfig` flag), bind
//! only loopback ports (health probe; source-controller also its artifact server), and log
//! to `logs/host-<controller>.log`. Readiness is `GET /readyz` on the health port, plus an
//! accepting artifact server for source-controller.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cluster::log_path;
use crate::error::{Error, Result};
use crate::flux_binaries::FluxBinaries;
use crate::health::http_get_ok;
use crate::process::{Proc, ProcessSpec, WaitError, free_port, lost_port_race, wait_ready};

const ATTEMPTS: usize = 4;
/// The cluster the controllers run against (prefix of process and log names).
const CLUSTER: &str = "host";
const HEALTH_FLAG: &str = "--health-addr=127.0.0.1:";
const STORAGE_FLAG: &str = "--storage-addr=127.0.0.1:";

/// The three controllers, in start (and record) order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Controller {
    Source,
    Kustomize,
    Helm,
}

impl Controller {
    pub const ALL: [Controller; 3] = [Controller::Source, Controller::Kustomize, Controller::Helm];

    pub fn name(self) -> &'static str {
        match self {
            Controller::Source => "source-controller",
            Controller::Kustomize => "kustomize-controller",
            Controller::Helm => "helm-controller",
        }
    }

    fn program(self, binaries: &FluxBinaries) -> &Path {
        match self {
            Controller::Source => &binaries.source_controller,
            Controller::Kustomize => &binaries.kustomize_controller,
            Controller::Helm => &binaries.helm_controller,
        }
    }
}

/// Inputs to start the controllers.
pub(crate) struct FluxParams<'a> {
    pub binaries: &'a FluxBinaries,
    /// Kubeconfig of the host cluster.
    pub kubeconfig: &'a Path,
    pub state_dir: &'a Path,
    pub detached: bool,
    pub timeout: Duration,
}

/// Artifact storage of source-controller inside the state dir.
pub(crate) fn storage_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("flux").join("storage")
}

fn spec(p: &FluxParams<'_>, which: Controller, health_port: u16, storage_port: u16) -> ProcessSpec {
    let name = format!("{CLUSTER}-{}", which.name());
    let mut args = vec![
        "--metrics-addr=0".to_string(),
        format!("{HEALTH_FLAG}{health_port}"),
        "--requeue-dependency=2s".into(),
        "--log-encoding=console".into(),
    ];
    match which {
        Controller::Source => {
            args.push(format!(
                "--storage-path={}",
                storage_dir(p.state_dir).display()
            ));
            args.push(format!("{STORAGE_FLAG}{storage_port}"));
            args.push(format!("--storage-adv-addr=127.0.0.1:{storage_port}"));
        }
        Controller::Kustomize => {}
        Controller::Helm => args.push("--graceful-shutdown-timeout=2s".into()),
    }
    ProcessSpec {
        program: which.program(p.binaries).to_path_buf(),
        args,
        log: log_path(p.state_dir, CLUSTER, which.name()),
        pid_file: p
            .detached
            .then(|| p.state_dir.join("run").join(format!("{name}.pid"))),
        env: vec![
            ("KUBECONFIG".to_string(), p.kubeconfig.display().to_string()),
            ("NO_PROXY".to_string(), "127.0.0.1,localhost".to_string()),
        ],
        name,
    }
}

fn port_flag(spec: &ProcessSpec, flag: &str) -> Option<u16> {
    spec.args
        .iter()
        .find_map(|a| a.strip_prefix(flag))
        .and_then(|p| p.parse().ok())
}

/// Starts the three controllers concurrently and waits until each is ready. The caller
/// must have installed every Flux CRD on the host before (the controllers watch sources of
/// all kinds). On failure nothing keeps running.
pub(crate) async fn start(p: &FluxParams<'_>) -> Result<Vec<Proc>> {
    let storage = storage_dir(p.state_dir);
    std::fs::create_dir_all(&storage).map_err(|e| Error::io("creating", &storage, e))?;
    let results = futures::future::join_all(Controller::ALL.map(|c| start_one(p, c))).await;
    let mut procs = Vec::new();
    let mut first_error = None;
    for result in results {
        match result {
            Ok(proc) => procs.push(proc),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        for proc in &mut procs {
            proc.kill().await.ok();
        }
        return Err(e);
    }
    Ok(procs)
}

async fn start_one(p: &FluxParams<'_>, which: Controller) -> Result<Proc> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let health_port = free_port()?;
        let storage_port = match which {
            Controller::Source => free_port()?,
            _ => 0,
        };
        let mut proc = Proc::spawn(spec(p, which, health_port, storage_port), p.detached)?;
        match wait_until_ready(&mut proc, p.timeout).await {
            Ok(()) => {
                tracing::info!(
                    controller = which.name(),
                    pid = proc.pid,
                    health_port,
                    "flux controller ready"
                );
                return Ok(proc);
            }
            Err(WaitError::Exited(status)) if attempt < ATTEMPTS && lost_port_race(&proc) => {
                tracing::warn!(%status, controller = which.name(), "lost a port race, retrying");
            }
            Err(err) => {
                proc.kill().await.ok();
                return Err(proc.startup_error(err.describe(p.timeout, "/readyz")));
            }
        }
    }
}

/// Waits for `/readyz` on the health port (and, for source-controller, for the artifact
/// server to accept connections).
pub(crate) async fn wait_until_ready(
    proc: &mut Proc,
    timeout: Duration,
) -> std::result::Result<(), WaitError> {
    let Some(health) = port_flag(&proc.spec, HEALTH_FLAG) else {
        return Err(WaitError::Exited(format!("no usable {HEALTH_FLAG}<port>")));
    };
    let storage = port_flag(&proc.spec, STORAGE_FLAG);
    wait_ready(proc, timeout, || async move {
        if !http_get_ok(health, "/readyz").await {
            return false;
        }
        match storage {
            Some(port) => tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok(),
            None => true,
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_bind_loopback_and_pass_the_kubeconfig_by_env() {
        let binaries = FluxBinaries {
            source_controller: "/bin/source-controller".into(),
            kustomize_controller: "/bin/kustomize-controller".into(),
            helm_controller: "/bin/helm-controller".into(),
            crd_dirs: Vec::new(),
        };
        let p = FluxParams {
            binaries: &binaries,
            kubeconfig: Path::new("/state/clusters/host/kubeconfig"),
            state_dir: Path::new("/state"),
            detached: true,
            timeout: Duration::from_secs(1),
        };
        let source = spec(&p, Controller::Source, 4000, 4001);
        assert_eq!(source.name, "host-source-controller");
        assert_eq!(port_flag(&source, HEALTH_FLAG), Some(4000));
        assert_eq!(port_flag(&source, STORAGE_FLAG), Some(4001));
        for flag in [
            "--metrics-addr=0",
            "--storage-path=/state/flux/storage",
            "--storage-adv-addr=127.0.0.1:4001",
            "--requeue-dependency=2s",
        ] {
            assert!(source.args.iter().any(|a| a == flag), "{flag}");
        }
        assert!(
            source
                .env
                .iter()
                .any(|(k, v)| k == "KUBECONFIG" && v == "/state/clusters/host/kubeconfig")
        );
        assert_eq!(
            source.log,
            Path::new("/state/logs/host-source-controller.log")
        );
        assert_eq!(
            source.pid_file.as_deref(),
            Some(Path::new("/state/run/host-source-controller.pid"))
        );

        let helm = spec(&p, Controller::Helm, 4002, 0);
        assert!(
            helm.args
                .iter()
                .any(|a| a.starts_with("--graceful-shutdown-timeout="))
        );
        assert_eq!(port_flag(&helm, STORAGE_FLAG), None);
        assert!(!helm.args.iter().any(|a| a.starts_with("--kubeconfig")));
    }
}
