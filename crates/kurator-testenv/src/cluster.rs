//! One cluster: its kube-apiserver, the components running against it (kube-controller-manager,
//! kube-scheduler, kwok with its simulated nodes), certificates and kubeconfig.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::Mutex;

use crate::apiserver::{self, ApiserverParams};
use crate::certs::{CertPaths, ClusterCerts, write_file};
use crate::controller_manager::{self, ControllerManagerParams};
use crate::crds::{install_crds, parse_crds};
use crate::error::{Error, Result};
use crate::fake_nodes;
use crate::kubeconfig;
use crate::kwok::{self, KwokParams};
use crate::process::{Proc, ProcessInfo, WaitError, free_port, lost_port_race};
use crate::scheduler::{self, SchedulerParams};
use crate::state::{self, ClusterState};
use crate::storage;

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
    pub(crate) scheduler: Mutex<Option<Proc>>,
    pub(crate) kwok: Mutex<Option<Proc>>,
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

/// The programs that simulate a cluster's nodes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NodePrograms<'a> {
    pub scheduler: &'a Path,
    pub kwok: &'a Path,
}

/// Inputs to start one cluster.
pub(crate) struct ClusterSetup<'a> {
    pub name: &'a str,
    pub run_id: &'a str,
    pub etcd_url: &'a str,
    pub apiserver_bin: &'a Path,
    pub controller_manager_bin: Option<&'a Path>,
    /// kube-scheduler and kwok with [`fake_nodes::FAKE_NODES`] simulated nodes, if wanted.
    pub nodes: Option<NodePrograms<'a>>,
    pub state_dir: &'a Path,
    pub detached: bool,
    pub timeout: Duration,
}

impl ClusterSetup<'_> {
    fn pid_file(&self, component: &str) -> Option<PathBuf> {
        self.detached.then(|| {
            self.state_dir
                .join("run")
                .join(format!("{}-{component}.pid", self.name))
        })
    }

    fn log(&self, component: &str) -> PathBuf {
        log_path(self.state_dir, self.name, component)
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

/// The processes that run against a cluster's apiserver, in start order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Component {
    ControllerManager,
    Scheduler,
    Kwok,
}

impl Component {
    const ALL: [Component; 3] = [
        Component::ControllerManager,
        Component::Scheduler,
        Component::Kwok,
    ];

    /// Waits until a (re)started process of this component works again.
    async fn wait_ready(
        self,
        proc: &mut Proc,
        timeout: Duration,
    ) -> std::result::Result<(), WaitError> {
        match self {
            Component::ControllerManager => {
                controller_manager::wait_until_healthy(proc, timeout).await
            }
            Component::Scheduler => scheduler::wait_until_ready(proc, timeout).await,
            Component::Kwok => kwok::wait_until_ready(proc, timeout).await,
        }
    }
}

impl ClusterHandle {
    /// Generates certificates, starts kube-apiserver on a free port (retrying port races),
    /// writes the kubeconfig, then starts the requested components concurrently. On failure
    /// nothing of this cluster keeps running (not even when detached).
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
                log: setup.log("kube-apiserver"),
                pid_file: setup.pid_file("kube-apiserver"),
                service_account_admission: setup.controller_manager_bin.is_some(),
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

        let handle = ClusterHandle {
            name: name.to_string(),
            port,
            kubeconfig_path,
            kubeconfig_yaml: yaml,
            detached: setup.detached,
            timeout: setup.timeout,
            apiserver: Mutex::new(proc),
            controller_manager: Mutex::new(None),
            scheduler: Mutex::new(None),
            kwok: Mutex::new(None),
        };
        if let Err(e) = handle.start_components(&setup, &dir, &cert_paths).await {
            handle.kill().await;
            return Err(e);
        }
        Ok(handle)
    }

    /// Starts kube-controller-manager, kube-scheduler and kwok (those `setup` asks for)
    /// concurrently; with kwok, creates the simulated Nodes and waits until they are Ready.
    /// Every process that started is recorded in `self`, also when another one failed.
    async fn start_components(
        &self,
        setup: &ClusterSetup<'_>,
        dir: &Path,
        certs: &CertPaths,
    ) -> Result<()> {
        let name = setup.name;
        let kubeconfig = self.kubeconfig_path.as_path();
        let controller_manager = async {
            let Some(program) = setup.controller_manager_bin else {
                return Ok(None);
            };
            let params = ControllerManagerParams {
                program,
                cluster: name,
                kubeconfig,
                cert_dir: &dir.join("kcm"),
                certs,
                log: setup.log("kube-controller-manager"),
                pid_file: setup.pid_file("kube-controller-manager"),
            };
            // Served by its host-path provisioner; created first, so a failure leaves no
            // process unrecorded.
            storage::create_default_class(&self.client().await?).await?;
            controller_manager::start(&params, setup.detached, setup.timeout)
                .await
                .map(Some)
        };
        let scheduler = async {
            let Some(programs) = setup.nodes else {
                return Ok(None);
            };
            let params = SchedulerParams {
                program: programs.scheduler,
                cluster: name,
                kubeconfig,
                cert_dir: &dir.join("scheduler"),
                log: setup.log("kube-scheduler"),
                pid_file: setup.pid_file("kube-scheduler"),
            };
            scheduler::start(&params, setup.detached, setup.timeout)
                .await
                .map(Some)
        };
        let kwok = async {
            let Some(programs) = setup.nodes else {
                return Ok(None);
            };
            let client = self.client().await?;
            fake_nodes::create(&client).await?;
            let params = KwokParams {
                program: programs.kwok,
                cluster: name,
                kubeconfig,
                config_dir: dir,
                log: setup.log("kwok"),
                pid_file: setup.pid_file("kwok"),
            };
            let proc = kwok::start(&params, &client, setup.detached, setup.timeout).await?;
            Ok(Some(proc))
        };
        let (controller_manager, scheduler, kwok) =
            futures::join!(controller_manager, scheduler, kwok);
        let mut first_error = None;
        for (component, started) in
            Component::ALL
                .into_iter()
                .zip([controller_manager, scheduler, kwok])
        {
            match started {
                Ok(proc) => {
                    if let Some(p) = &proc {
                        tracing::info!(cluster = name, process = %p.spec.name, pid = p.pid, "ready");
                    }
                    *self.slot(component).lock().await = proc;
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn slot(&self, component: Component) -> &Mutex<Option<Proc>> {
        match component {
            Component::ControllerManager => &self.controller_manager,
            Component::Scheduler => &self.scheduler,
            Component::Kwok => &self.kwok,
        }
    }

    /// A handle for the processes a state file records.
    pub(crate) fn adopt(record: &ClusterState, timeout: Duration) -> Result<ClusterHandle> {
        let kubeconfig_yaml = std::fs::read_to_string(&record.kubeconfig_path)
            .map_err(|e| Error::io("reading", &record.kubeconfig_path, e))?;
        let adopt = |spec: &Option<_>| Mutex::new(spec.as_ref().map(state::adopt));
        Ok(ClusterHandle {
            name: record.name.clone(),
            port: record.port,
            kubeconfig_path: record.kubeconfig_path.clone(),
            kubeconfig_yaml,
            detached: true,
            timeout,
            apiserver: Mutex::new(state::adopt(&record.apiserver)),
            controller_manager: adopt(&record.controller_manager),
            scheduler: adopt(&record.scheduler),
            kwok: adopt(&record.kwok),
        })
    }

    /// What a state file records of this cluster.
    pub(crate) async fn record(&self) -> ClusterState {
        let spec = |proc: &Option<Proc>| proc.as_ref().map(|p| p.spec.clone());
        ClusterState {
            name: self.name.clone(),
            port: self.port,
            kubeconfig_path: self.kubeconfig_path.clone(),
            apiserver: self.apiserver.lock().await.spec.clone(),
            controller_manager: spec(&*self.controller_manager.lock().await),
            scheduler: spec(&*self.scheduler.lock().await),
            kwok: spec(&*self.kwok.lock().await),
        }
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
    /// kube-controller-manager, kube-scheduler and kwok keep running (as they would in a real
    /// outage) and reconnect after [`ClusterHandle::start`].
    pub async fn stop(&self) -> Result<()> {
        let mut proc = self.apiserver.lock().await;
        proc.kill().await?;
        tracing::info!(cluster = %self.name, "kube-apiserver stopped");
        Ok(())
    }

    /// Restarts a stopped kube-apiserver with the same port, certificates and etcd prefix and
    /// waits until it is ready; then restarts, with their old flags, those of
    /// kube-controller-manager, kube-scheduler and kwok that exited meanwhile. A no-op if
    /// everything runs.
    pub async fn start(&self) -> Result<()> {
        self.start_apiserver().await?;
        for component in Component::ALL {
            let mut slot = self.slot(component).lock().await;
            let Some(old) = slot.as_mut() else {
                continue;
            };
            if old.is_running() {
                continue;
            }
            let mut proc = Proc::spawn(old.spec.clone(), self.detached)?;
            if let Err(err) = component.wait_ready(&mut proc, self.timeout).await {
                proc.kill().await.ok();
                return Err(proc.startup_error(err.describe(self.timeout, "readiness")));
            }
            tracing::info!(cluster = %self.name, process = %proc.spec.name, pid = proc.pid, "restarted");
            *slot = Some(proc);
        }
        Ok(())
    }

    async fn start_apiserver(&self) -> Result<()> {
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

    /// Kills every process of this cluster, components first (a failed launch).
    async fn kill(&self) {
        for component in Component::ALL.into_iter().rev() {
            if let Some(proc) = self.slot(component).lock().await.as_mut() {
                proc.kill().await.ok();
            }
        }
        self.apiserver.lock().await.kill().await.ok();
    }

    /// Kills every process of this cluster, components first (blocking; used by teardown).
    pub(crate) fn kill_blocking(&mut self) {
        for proc in [
            &mut self.kwok,
            &mut self.scheduler,
            &mut self.controller_manager,
        ] {
            if let Some(proc) = proc.get_mut() {
                proc.kill_blocking();
            }
        }
        self.apiserver.get_mut().kill_blocking();
    }

    /// Names of this cluster's processes that are not running.
    /// Its kube-apiserver, then kube-controller-manager, kube-scheduler and kwok (those that
    /// this cluster was started with).
    pub async fn processes(&self) -> Vec<ProcessInfo> {
        let cluster = Some(self.name.as_str());
        let mut all = vec![self.apiserver.lock().await.info(cluster)];
        for component in Component::ALL {
            if let Some(proc) = self.slot(component).lock().await.as_mut() {
                all.push(proc.info(cluster));
            }
        }
        all
    }

    pub(crate) async fn dead_processes(&self) -> Vec<String> {
        let mut dead = Vec::new();
        let mut api = self.apiserver.lock().await;
        if !api.is_running() {
            dead.push(api.spec.name.clone());
        }
        for component in Component::ALL {
            if let Some(proc) = self.slot(component).lock().await.as_mut()
                && !proc.is_running()
            {
                dead.push(proc.spec.name.clone());
            }
        }
        dead
    }
}

fn server_url(port: u16) -> String {
    format!("https://127.0.0.1:{port}")
}
