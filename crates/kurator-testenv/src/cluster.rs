//! One cluster: its kube-apiserver (and optionally kube-controller-manager), certificates and
//! kubeconfig.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::Mutex;

use crate::apiserver::{self, ApiserverParams};
use crate::certs::{ClusterCerts, write_file};
use crate::controller_manager::{self, ControllerManagerParams};
use crate::crds::{install_crds, parse_crds};
use crate::error::{Error, Result};
use crate::kubeconfig;
use crate::process::{Proc, WaitError, free_port, lost_port_race};

const PORT_ATTEMPTS: usize = 4;
/// Restarts keep the port; if it is briefly taken, retry this often.
const RESTART_ATTEMPTS: usize = 10;

/// A running (or deliberately stopped) cluster of a [`crate::TestEnv`].
pub struct ClusterHandle {
    name: String,
    port: u16,
    kubeconfig_path: PathBuf,
    kubeconfig_yaml: String,
    detached: bool,
    timeout: Duration,
    pub(crate) apiserver: Mutex<Proc>,
    pub(crate) controller_manager: Mutex<Option<Proc>>,
}

impl std::fmt::Debug for ClusterHandle {
    // Never print the kubeconfig: it holds the admin key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterHandle")
            .field("name", &self.name)
            .field("server_url", &self.server_url())
            .field("kubeconfig_path", &self.kubeconfig_path)
            .finish_non_exhaustive()
    }
}

/// Inputs to start one cluster.
pub(crate) struct ClusterSetup<'a> {
    pub name: &'a str,
    pub run_id: &'a str,
    pub etcd_url: &'a str,
    pub apiserver_bin: &'a Path,
    pub controller_manager_bin: Option<&'a Path>,
    pub state_dir: &'a Path,
    pub detached: bool,
    pub timeout: Duration,
}

impl ClusterSetup<'_> {
    fn pid_file(&self, process: &str) -> Option<PathBuf> {
        self.detached
            .then(|| self.state_dir.join("run").join(format!("{process}.pid")))
    }
}

/// Where a cluster keeps its files inside the state dir.
pub(crate) fn cluster_dir(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join("clusters").join(name)
}

pub(crate) fn log_path(state_dir: &Path, cluster: &str, component: &str) -> PathBuf {
    state_dir
        .join("logs")
        .join(format!("{cluster}-{component}.log"))
}

impl ClusterHandle {
    /// Generates certificates, starts kube-apiserver on a free port (retrying port races),
    /// writes the kubeconfig and starts kube-controller-manager if requested.
    pub(crate) async fn launch(setup: ClusterSetup<'_>) -> Result<ClusterHandle> {
        let name = setup.name;
        let dir = cluster_dir(setup.state_dir, name);
        let cert_dir = dir.join("certs");
        let certs = ClusterCerts::generate(name)?;
        let cert_paths = certs.write(&cert_dir)?;

        let mut attempt = 0;
        let (proc, port, yaml) = loop {
            attempt += 1;
            let port = free_port()?;
            let spec = apiserver::spec(&ApiserverParams {
                program: setup.apiserver_bin,
                cluster: name,
                run_id: setup.run_id,
                etcd_url: setup.etcd_url,
                port,
                certs: &cert_paths,
                cert_dir: &cert_dir,
                log: log_path(setup.state_dir, name, "kube-apiserver"),
                pid_file: setup.pid_file(&format!("{name}-kube-apiserver")),
            });
            let yaml = kubeconfig::render(
                name,
                &server_url(port),
                &certs.serving_ca,
                &certs.admin_cert,
                &certs.admin_key,
            );
            let client = kubeconfig::client(name, &yaml).await?;
            let mut proc = Proc::spawn(spec, setup.detached)?;
            match apiserver::wait(&mut proc, &client, setup.timeout).await {
                Ok(()) => break (proc, port, yaml),
                Err(WaitError::Exited(status))
                    if attempt < PORT_ATTEMPTS && lost_port_race(&proc) =>
                {
                    tracing::warn!(cluster = name, %status, "kube-apiserver lost a port race, retrying");
                }
                Err(err) => {
                    proc.kill().await.ok();
                    return Err(proc.startup_error(err.describe(setup.timeout, "/readyz")));
                }
            }
        };
        tracing::info!(cluster = name, port, pid = proc.pid, "kube-apiserver ready");

        let kubeconfig_path = dir.join("kubeconfig");
        write_file(&kubeconfig_path, &yaml, 0o600)?;

        let mut handle = ClusterHandle {
            name: name.to_string(),
            port,
            kubeconfig_path,
            kubeconfig_yaml: yaml,
            detached: setup.detached,
            timeout: setup.timeout,
            apiserver: Mutex::new(proc),
            controller_manager: Mutex::new(None),
        };
        if let Some(program) = setup.controller_manager_bin {
            let kcm = controller_manager::start(
                &ControllerManagerParams {
                    program,
                    cluster: name,
                    kubeconfig: &handle.kubeconfig_path,
                    cert_dir: &dir.join("kcm"),
                    log: log_path(setup.state_dir, name, "kube-controller-manager"),
                    pid_file: setup.pid_file(&format!("{name}-kube-controller-manager")),
                },
                setup.detached,
                setup.timeout,
            )
            .await?;
            tracing::info!(
                cluster = name,
                pid = kcm.pid,
                "kube-controller-manager ready"
            );
            *handle.controller_manager.get_mut() = Some(kcm);
        }
        Ok(handle)
    }

    /// A handle for processes found through a state file.
    pub(crate) fn adopt(
        name: String,
        port: u16,
        kubeconfig_path: PathBuf,
        apiserver: Proc,
        controller_manager: Option<Proc>,
        timeout: Duration,
    ) -> Result<ClusterHandle> {
        let kubeconfig_yaml = std::fs::read_to_string(&kubeconfig_path)
            .map_err(|e| Error::io("reading", &kubeconfig_path, e))?;
        Ok(ClusterHandle {
            name,
            port,
            kubeconfig_path,
            kubeconfig_yaml,
            detached: true,
            timeout,
            apiserver: Mutex::new(apiserver),
            controller_manager: Mutex::new(controller_manager),
        })
    }

    /// Cluster name: `host`, `member1`, `member2`, …
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> String {
        server_url(self.port)
    }

    /// The apiserver's port on 127.0.0.1 (stable across [`ClusterHandle::stop`]/[`ClusterHandle::start`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kubeconfig file (mode 0600) with inline CA, client cert and key; context = cluster name.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// The kubeconfig text (contains the admin private key: do not log it).
    pub fn kubeconfig_yaml(&self) -> String {
        self.kubeconfig_yaml.clone()
    }

    /// A `kube::Config` for the cluster as `admin` (group `system:masters`).
    pub async fn config(&self) -> Result<kube::Config> {
        kubeconfig::config(&self.name, &self.kubeconfig_yaml).await
    }

    /// A new `kube::Client` for the cluster as `admin` (group `system:masters`).
    pub async fn client(&self) -> Result<kube::Client> {
        kubeconfig::client(&self.name, &self.kubeconfig_yaml).await
    }

    /// Installs CRDs (YAML texts, several `---` documents each allowed) in this cluster and
    /// waits until they are served, e.g. a chart's CRDs in a member.
    pub async fn install_crds(&self, crds: &[String]) -> Result<()> {
        let crds = parse_crds(crds)?;
        install_crds(&self.client().await?, &crds, self.timeout).await
    }

    /// Whether the apiserver process is running.
    pub async fn is_running(&self) -> bool {
        self.apiserver.lock().await.is_running()
    }

    /// Simulates an outage: SIGKILLs the kube-apiserver and waits until it has exited.
    /// kube-controller-manager (if any) keeps running and reconnects after [`ClusterHandle::start`].
    pub async fn stop(&self) -> Result<()> {
        let mut proc = self.apiserver.lock().await;
        proc.kill().await?;
        tracing::info!(cluster = %self.name, "kube-apiserver stopped");
        Ok(())
    }

    /// Restarts a stopped kube-apiserver with the same port, certificates and etcd prefix and
    /// waits until it is ready. A no-op if it is running.
    pub async fn start(&self) -> Result<()> {
        let mut guard = self.apiserver.lock().await;
        if guard.is_running() {
            return Ok(());
        }
        let client = self.client().await?;
        let spec = guard.spec.clone();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut proc = Proc::spawn(spec.clone(), self.detached)?;
            match apiserver::wait(&mut proc, &client, self.timeout).await {
                Ok(()) => {
                    tracing::info!(cluster = %self.name, pid = proc.pid, "kube-apiserver restarted");
                    *guard = proc;
                    return Ok(());
                }
                Err(WaitError::Exited(_))
                    if attempt < RESTART_ATTEMPTS && lost_port_race(&proc) =>
                {
                    tracing::warn!(cluster = %self.name, port = self.port,
                        "port still taken, retrying the restart");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(err) => {
                    proc.kill().await.ok();
                    return Err(proc.startup_error(err.describe(self.timeout, "/readyz")));
                }
            }
        }
    }

    /// Kills kube-controller-manager and kube-apiserver (blocking; used by teardown).
    pub(crate) fn kill_blocking(&mut self) {
        if let Some(kcm) = self.controller_manager.get_mut() {
            kcm.kill_blocking();
        }
        self.apiserver.get_mut().kill_blocking();
    }

    /// Names of this cluster's processes that are not running.
    pub(crate) async fn dead_processes(&self) -> Vec<String> {
        let mut dead = Vec::new();
        let mut api = self.apiserver.lock().await;
        if !api.is_running() {
            dead.push(api.spec.name.clone());
        }
        if let Some(kcm) = self.controller_manager.lock().await.as_mut()
            && !kcm.is_running()
        {
            dead.push(kcm.spec.name.clone());
        }
        dead
    }
}

fn server_url(port: u16) -> String {
    format!("https://127.0.0.1:{port}")
}
