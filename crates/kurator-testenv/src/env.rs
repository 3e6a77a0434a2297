//! [`TestEnv`]: one etcd plus a host and N member control planes.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::binaries::{Binaries, ensure_binaries};
use crate::cluster::{ClusterHandle, ClusterSetup, NodePrograms};
use crate::crds::{install_crds, parse_crds};
use crate::error::{Error, Result};
use crate::etcd;
use crate::flux::{self, FluxParams};
use crate::flux_binaries::{FluxBinaries, ensure_flux_binaries};
use crate::process::{Proc, ProcessInfo};
use crate::state::{self, EnvState, EtcdState};

/// Environment variable: when set (and not `0`), state dirs are kept on drop.
pub const KEEP_ENV: &str = "KURATOR_TESTENV_KEEP";

/// Which clusters get a kube-controller-manager (garbage collection, namespace deletion, the
/// workload controllers: Deployments, ReplicaSets, StatefulSets, DaemonSets, Jobs, endpoints
/// and EndpointSlices, ServiceAccounts and their tokens). A cluster with one also admits Pods
/// through the ServiceAccount admission plugin, as real clusters do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ControllerManagerMode {
    /// No controller-manager: deleted namespaces stay `Terminating`, no ownerReference GC,
    /// Deployments never create Pods.
    None,
    /// Only the host cluster.
    Host,
    /// Every cluster (default).
    #[default]
    All,
}

/// Configures and starts a [`TestEnv`]. Get one with [`TestEnv::builder`].
#[derive(Debug, Clone)]
pub struct TestEnvBuilder {
    members: usize,
    controller_manager: ControllerManagerMode,
    nodes: bool,
    crds: Vec<String>,
    state_dir: Option<PathBuf>,
    detached: bool,
    timeout: Duration,
    binaries: Option<Binaries>,
    flux: bool,
    flux_binaries: Option<FluxBinaries>,
}

impl Default for TestEnvBuilder {
    fn default() -> Self {
        TestEnvBuilder {
            members: 0,
            controller_manager: ControllerManagerMode::All,
            nodes: true,
            crds: Vec::new(),
            state_dir: None,
            detached: false,
            timeout: Duration::from_secs(60),
            binaries: None,
            flux: false,
            flux_binaries: None,
        }
    }
}

impl TestEnvBuilder {
    /// Number of member clusters (`member1`..`memberN`), besides `host`. Default 0.
    pub fn members(mut self, n: usize) -> Self {
        self.members = n;
        self
    }

    /// Where kube-controller-manager runs. Default [`ControllerManagerMode::All`].
    pub fn controller_manager(mut self, mode: ControllerManagerMode) -> Self {
        self.controller_manager = mode;
        self
    }

    /// Simulated nodes in every cluster (default on): kube-scheduler and kwok run against each
    /// apiserver, and [`FAKE_NODES`](crate::FAKE_NODES) Ready Nodes labelled
    /// [`FAKE_NODE_LABEL`](crate::FAKE_NODE_LABEL) take Pods, which kwok reports Running and
    /// Ready (no container runs). Turn it off where only the API matters and the two extra
    /// processes per cluster would be noise (e.g. a benchmark of the controller's CPU).
    pub fn nodes(mut self, enabled: bool) -> Self {
        self.nodes = enabled;
        self
    }

    /// CustomResourceDefinition YAML (each string may hold several `---` documents) to
    /// install on the host before `start` returns.
    pub fn crds(mut self, crds: Vec<String>) -> Self {
        self.crds.extend(crds);
        self
    }

    /// State directory (logs, certs, kubeconfigs, etcd data, `env.json`). It must not exist
    /// or be empty; a stale directory of a dead detached environment is cleaned up. Default:
    /// a fresh `$TMPDIR/kurator-testenv-<run-id>`.
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// Detached mode (playground): processes run in their own session and survive this
    /// process; `Drop` leaves them running. Use [`TestEnv::attach`] and
    /// [`TestEnv::stop_all`] with the state dir later.
    pub fn detached(mut self, detached: bool) -> Self {
        self.detached = detached;
        self
    }

    /// Readiness timeout per process start (default 60 s).
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Use these binaries instead of [`ensure_binaries`].
    pub fn binaries(mut self, binaries: Binaries) -> Self {
        self.binaries = Some(binaries);
        self
    }

    /// Runs Flux source-, kustomize- and helm-controller against the host: all Flux CRDs are
    /// installed on the host first, then the controllers start (logs in
    /// `logs/host-<controller>.log`). The first use builds them (minutes, see
    /// [`ensure_flux_binaries`]). Default off.
    pub fn flux(mut self, enabled: bool) -> Self {
        self.flux = enabled;
        self
    }

    /// Use these Flux binaries instead of [`ensure_flux_binaries`] (implies nothing: combine
    /// with [`TestEnvBuilder::flux`]).
    pub fn flux_binaries(mut self, binaries: FluxBinaries) -> Self {
        self.flux_binaries = Some(binaries);
        self
    }

    /// Builds the binaries if needed (first run: minutes), starts etcd and all control planes
    /// concurrently, installs the CRDs, and returns once everything is ready.
    pub async fn start(self) -> Result<TestEnv> {
        crate::install_crypto_provider();
        let started = Instant::now();
        let mut crds = parse_crds(&self.crds)?;
        let (given, given_flux, flux_wanted) =
            (self.binaries.clone(), self.flux_binaries.clone(), self.flux);
        let (binaries, flux_binaries) = tokio::task::spawn_blocking(move || {
            let binaries = match given {
                Some(b) => b,
                None => ensure_binaries()?,
            };
            let flux = match (flux_wanted, given_flux) {
                (false, _) => None,
                (true, Some(f)) => Some(f),
                (true, None) => Some(ensure_flux_binaries()?),
            };
            Ok::<_, Error>((binaries, flux))
        })
        .await
        .map_err(|e| Error::Usage(format!("binary build task failed: {e}")))??;
        if let Some(flux) = &flux_binaries {
            // Installed together with the caller's CRDs, all before any controller starts.
            crds.extend(parse_crds(&flux.crds()?)?);
        }
        let run_id = random_id();
        let state_dir = prepare_state_dir(self.state_dir.as_deref(), &run_id)?;
        let mut record = EnvState::new(&run_id, self.detached);
        record.write(&state_dir)?;

        let etcd = match etcd::start(&binaries.etcd, &state_dir, self.detached, self.timeout).await
        {
            Ok(etcd) => etcd,
            Err(e) => {
                eprintln!(
                    "kurator-testenv: start failed; state dir with logs kept at {}",
                    state_dir.display()
                );
                return Err(e);
            }
        };
        record.etcd = Some(EtcdState {
            client_port: etcd.client_port,
            process: etcd.proc.spec.clone(),
        });
        let etcd_url = etcd.url();
        let mut env = TestEnv {
            run_id,
            state_dir,
            etcd: Mutex::new(etcd.proc),
            etcd_port: etcd.client_port,
            clusters: Vec::new(),
            flux: Mutex::new(Vec::new()),
            detached: self.detached,
            keep: AtomicBool::new(false),
            failed: false,
        };

        let names: Vec<String> = std::iter::once("host".to_string())
            .chain((1..=self.members).map(|i| format!("member{i}")))
            .collect();
        let launches = names.iter().map(|name| {
            let with_kcm = match self.controller_manager {
                ControllerManagerMode::None => false,
                ControllerManagerMode::Host => name == "host",
                ControllerManagerMode::All => true,
            };
            ClusterHandle::launch(ClusterSetup {
                name,
                run_id: &env.run_id,
                etcd_url: &etcd_url,
                apiserver_bin: &binaries.kube_apiserver,
                controller_manager_bin: with_kcm
                    .then_some(binaries.kube_controller_manager.as_path()),
                nodes: self.nodes.then_some(NodePrograms {
                    scheduler: &binaries.kube_scheduler,
                    kwok: &binaries.kwok,
                }),
                state_dir: &env.state_dir,
                detached: self.detached,
                timeout: self.timeout,
            })
        });
        let results = futures::future::join_all(launches).await;
        let mut first_error = None;
        for result in results {
            match result {
                Ok(cluster) => env.clusters.push(cluster),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(env.fail(e));
        }

        if !crds.is_empty() {
            let installed = async {
                let client = env.host().client().await?;
                install_crds(&client, &crds, self.timeout).await
            }
            .await;
            if let Err(e) = installed {
                return Err(env.fail(e));
            }
        }

        if let Some(binaries) = &flux_binaries {
            let started = flux::start(&FluxParams {
                binaries,
                kubeconfig: env.host().kubeconfig_path(),
                state_dir: &env.state_dir,
                detached: self.detached,
                timeout: self.timeout,
            })
            .await;
            match started {
                Ok(procs) => {
                    record.flux = procs.iter().map(|p| p.spec.clone()).collect();
                    *env.flux.get_mut().unwrap_or_else(|e| e.into_inner()) = procs;
                }
                Err(e) => return Err(env.fail(e)),
            }
        }

        for cluster in &env.clusters {
            record.clusters.push(cluster.record().await);
        }
        record.complete = true;
        if let Err(e) = record.write(&env.state_dir) {
            return Err(env.fail(e));
        }
        tracing::info!(
            clusters = env.clusters.len(),
            seconds = started.elapsed().as_secs_f64(),
            state_dir = %env.state_dir.display(),
            "test environment ready"
        );
        Ok(env)
    }
}

/// Real etcd + kube-apiserver control planes on loopback, each with kube-controller-manager,
/// kube-scheduler and kwok's simulated nodes (see [`TestEnvBuilder`]).
///
/// Dropping it kills every process and removes the state dir, except: when the thread is
/// panicking (a failed test), after [`TestEnv::keep_on_drop`], or with `KURATOR_TESTENV_KEEP=1`
/// the state dir (with `logs/<cluster>-<component>.log`) is kept and its path printed. A
/// detached or attached environment is left running on drop.
pub struct TestEnv {
    run_id: String,
    state_dir: PathBuf,
    etcd: Mutex<Proc>,
    etcd_port: u16,
    clusters: Vec<ClusterHandle>,
    /// Flux controllers (empty unless started with [`TestEnvBuilder::flux`]).
    flux: Mutex<Vec<Proc>>,
    detached: bool,
    keep: AtomicBool,
    /// Start failed: kill even in detached mode, keep the logs.
    failed: bool,
}

impl std::fmt::Debug for TestEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestEnv")
            .field("run_id", &self.run_id)
            .field("state_dir", &self.state_dir)
            .field("etcd_url", &self.etcd_url())
            .field("clusters", &self.clusters)
            .field("detached", &self.detached)
            .finish()
    }
}

impl TestEnv {
    /// A builder with defaults: no members, controller-manager and simulated nodes in every
    /// cluster, no CRDs.
    pub fn builder() -> TestEnvBuilder {
        TestEnvBuilder::default()
    }

    /// Reattaches to a detached environment. `Ok(None)` if `state_dir` holds none, or it
    /// did not finish starting, or none of its processes is alive. The returned value never
    /// kills anything on drop; see [`TestEnv::dead_processes`] for partial outages.
    pub fn attach(state_dir: impl AsRef<Path>) -> Result<Option<TestEnv>> {
        let state_dir = state_dir.as_ref();
        let Some(record) = EnvState::read(state_dir)? else {
            return Ok(None);
        };
        let Some(etcd_state) = record.etcd.as_ref().filter(|_| record.complete) else {
            return Ok(None);
        };
        let etcd = state::adopt(&etcd_state.process);
        let mut clusters = Vec::new();
        let mut any_alive = etcd.pid != 0;
        for c in &record.clusters {
            any_alive |= std::iter::once(&c.apiserver)
                .chain(c.component_specs())
                .any(|spec| state::adopt(spec).pid != 0);
            clusters.push(ClusterHandle::adopt(c, state::ATTACHED_TIMEOUT)?);
        }
        let flux: Vec<Proc> = record.flux.iter().map(state::adopt).collect();
        any_alive |= flux.iter().any(|p| p.pid != 0);
        if !any_alive {
            return Ok(None);
        }
        crate::install_crypto_provider();
        Ok(Some(TestEnv {
            run_id: record.run_id,
            state_dir: state_dir.to_path_buf(),
            etcd: Mutex::new(etcd),
            etcd_port: etcd_state.client_port,
            clusters,
            flux: Mutex::new(flux),
            detached: true,
            keep: AtomicBool::new(true),
            failed: false,
        }))
    }

    /// Stops a detached environment from any process: SIGKILLs every recorded process that
    /// is still alive, waits for it, and removes `state_dir`. Blocking (well under a second).
    /// Returns `Ok(false)` (and touches nothing) if `state_dir` holds no environment.
    pub fn stop_all(state_dir: impl AsRef<Path>) -> Result<bool> {
        state::stop_all(state_dir.as_ref())
    }

    /// Unique id of this run (also the first segment of every etcd prefix).
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// State directory: `env.json`, `logs/`, `clusters/<name>/{kubeconfig,certs}`, etcd data.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Directory of the process logs (`<cluster>-<component>.log`, `etcd.log`).
    pub fn log_dir(&self) -> PathBuf {
        self.state_dir.join("logs")
    }

    /// `http://127.0.0.1:<port>` of the shared etcd.
    pub fn etcd_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.etcd_port)
    }

    /// The host cluster.
    pub fn host(&self) -> &ClusterHandle {
        &self.clusters[0]
    }

    /// Member clusters in order (`member1`, `member2`, …).
    pub fn members(&self) -> &[ClusterHandle] {
        &self.clusters[1..]
    }

    /// All clusters, host first.
    pub fn clusters(&self) -> &[ClusterHandle] {
        &self.clusters
    }

    /// A cluster by name.
    pub fn cluster(&self, name: &str) -> Option<&ClusterHandle> {
        self.clusters.iter().find(|c| c.name() == name)
    }

    /// Whether the processes outlive this value (detached or attached).
    pub fn is_detached(&self) -> bool {
        self.detached
    }

    /// Keep the state dir (logs, certs, kubeconfigs) when this value is dropped.
    pub fn keep_on_drop(&self) {
        self.keep.store(true, Ordering::Relaxed);
    }

    /// Whether this environment runs Flux and all three controllers are alive.
    pub fn flux_running(&self) -> bool {
        let mut flux = self.flux.lock().unwrap_or_else(|e| e.into_inner());
        !flux.is_empty() && flux.iter_mut().all(Proc::is_running)
    }

    /// Every process of the environment, running or not: etcd, then each cluster's (host
    /// first, see [`ClusterHandle::processes`]), then the Flux controllers (on the host).
    pub async fn processes(&self) -> Vec<ProcessInfo> {
        let mut all = vec![
            self.etcd
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .info(None),
        ];
        for cluster in &self.clusters {
            all.extend(cluster.processes().await);
        }
        let host = Some(self.host().name());
        let mut flux = self.flux.lock().unwrap_or_else(|e| e.into_inner());
        all.extend(flux.iter_mut().map(|proc| proc.info(host)));
        all
    }

    /// Names of processes that are not running (e.g. `member1-kube-apiserver` after
    /// [`ClusterHandle::stop`], or after a crash).
    pub async fn dead_processes(&self) -> Vec<String> {
        let mut dead = Vec::new();
        {
            let mut etcd = self.etcd.lock().unwrap_or_else(|e| e.into_inner());
            if !etcd.is_running() {
                dead.push(etcd.spec.name.clone());
            }
            let mut flux = self.flux.lock().unwrap_or_else(|e| e.into_inner());
            dead.extend(
                flux.iter_mut()
                    .filter_map(|p| (!p.is_running()).then(|| p.spec.name.clone())),
            );
        }
        for c in &self.clusters {
            dead.extend(c.dead_processes().await);
        }
        dead
    }

    /// Installs more CRDs on the host and waits until they are served.
    pub async fn install_crds(&self, crds: Vec<String>) -> Result<()> {
        let crds = parse_crds(&crds)?;
        let client = self.host().client().await?;
        install_crds(&client, &crds, Duration::from_secs(60)).await
    }

    fn kill_all(&mut self) {
        for proc in self.flux.get_mut().unwrap_or_else(|e| e.into_inner()) {
            proc.kill_blocking();
        }
        for cluster in &mut self.clusters {
            cluster.kill_blocking();
        }
        self.etcd
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .kill_blocking();
    }

    /// A start failed: kill what runs (even when detached), keep the logs.
    fn fail(mut self, error: Error) -> Error {
        self.failed = true;
        self.keep_on_drop();
        drop(self);
        error
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if self.detached && !self.failed {
            return;
        }
        self.kill_all();
        let keep_env = std::env::var(KEEP_ENV).is_ok_and(|v| !v.is_empty() && v != "0");
        if self.keep.load(Ordering::Relaxed) || std::thread::panicking() || keep_env {
            eprintln!(
                "kurator-testenv: state dir with logs kept at {}",
                self.state_dir.display()
            );
        } else if let Err(e) = fs::remove_dir_all(&self.state_dir) {
            tracing::warn!(dir = %self.state_dir.display(), error = %e, "cannot remove state dir");
        }
    }
}

fn random_id() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 4];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        // Fall back to something unique enough for a local run id.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        bytes = (nanos ^ std::process::id()).to_be_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Creates the state dir. A given dir must be absent or empty, unless it holds a dead
/// environment, which is cleaned up first.
fn prepare_state_dir(requested: Option<&Path>, run_id: &str) -> Result<PathBuf> {
    let dir = match requested {
        Some(dir) => dir.to_path_buf(),
        None => std::env::temp_dir().join(format!("kurator-testenv-{run_id}")),
    };
    if let Some(existing) = EnvState::read(&dir)? {
        let alive = existing.specs().iter().any(|s| state::adopt(s).pid != 0);
        if alive {
            return Err(Error::Usage(format!(
                "an environment is already running in {} (attach to it or stop it first)",
                dir.display()
            )));
        }
        state::stop_all(&dir)?;
    }
    if dir.exists() {
        let mut entries = fs::read_dir(&dir).map_err(|e| Error::io("reading", &dir, e))?;
        if entries.next().is_some() {
            return Err(Error::Usage(format!(
                "state dir {} exists and is not empty",
                dir.display()
            )));
        }
    }
    for sub in ["logs", "run", "clusters"] {
        let p = dir.join(sub);
        fs::create_dir_all(&p).map_err(|e| Error::io("creating", &p, e))?;
    }
    Ok(dir)
}
