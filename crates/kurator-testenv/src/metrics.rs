//! A member's metrics stack as local processes, standing in for the kubelet that would run
//! the kube-prometheus chart's Prometheus Pod with its Thanos sidecar container: a real
//! Prometheus (Debian's package) scraping the member's kube-apiserver (and any extra targets
//! given, e.g. an application's [`crate::AppExporter`]), and a real Thanos
//! sidecar serving its data over gRPC on an address the caller chooses (the loopback IP the
//! load-balancer simulator gave the member's sidecar Service, port 10901).
//!
//! Files: `<state>/metrics/<cluster>/` (`prometheus.yml`, the scrape client certificate,
//! `prometheus-data/`, `objstore.yml`); logs: `logs/<cluster>-prometheus.log`,
//! `logs/<cluster>-thanos-sidecar.log`. Detached processes write pid files to `run/` but are
//! not recorded in `env.json`: whoever starts them (the playground's support process) owns
//! them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::certs::write_file;
use crate::cluster::{ClusterHandle, log_path};
use crate::error::{Error, Result};
use crate::health::http_get_ok;
use crate::process::{
    Proc, ProcessInfo, ProcessSpec, WaitError, lost_port_race, start_on_free_port, wait_ready,
};
use crate::prometheus::{self, PrometheusFiles, ScrapeSettings, ScrapeTarget};
use crate::thanos::{self, SidecarFlags};
use crate::thanos_binaries::{ensure_thanos_binary, prometheus_binary};
use crate::thanos_query::LoopbackHttp;

/// Readiness path of Prometheus and of every Thanos component.
pub(crate) const READY_PATH: &str = "/-/ready";
/// How often a restart on a kept port is tried while the port is briefly taken.
const RESTART_ATTEMPTS: usize = 10;

/// The programs of the metrics stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsBinaries {
    /// Debian's `prometheus`.
    pub prometheus: PathBuf,
    /// `thanos` built from the pinned Go module.
    pub thanos: PathBuf,
}

/// Finds Prometheus and builds Thanos if needed (see [`ensure_thanos_binary`]).
///
/// **Blocking**: from async code call it through [`tokio::task::spawn_blocking`].
pub fn ensure_metrics_binaries() -> Result<MetricsBinaries> {
    Ok(MetricsBinaries {
        prometheus: prometheus_binary()?,
        thanos: ensure_thanos_binary()?,
    })
}

/// Inputs to start one member's Prometheus and Thanos sidecar.
#[derive(Clone)]
pub struct MemberMetricsParams<'a> {
    pub binaries: &'a MetricsBinaries,
    /// The member whose kube-apiserver is scraped (with its admin client certificate).
    pub cluster: &'a ClusterHandle,
    /// The environment's state dir (files under `metrics/<cluster>/`, logs under `logs/`).
    pub state_dir: &'a Path,
    /// `global.external_labels`: what the product rendered as the Prometheus resource's
    /// `externalLabels` (e.g. `cluster=<cluster>`). Thanos needs at least one.
    pub external_labels: BTreeMap<String, String>,
    /// Where the sidecar serves its Store API (e.g. `127.0.1.1:10901`).
    pub sidecar_grpc: SocketAddr,
    /// The sidecar's `--objstore.config-file` content (e.g. a FILESYSTEM bucket), if any.
    pub objstore_config: Option<String>,
    pub scrape_interval: Duration,
    /// Scraped besides the member's kube-apiserver (e.g. an [`crate::AppExporter`]).
    pub extra_targets: Vec<ScrapeTarget>,
    /// Detached (playground): the processes outlive this one and record their pids.
    pub detached: bool,
    pub timeout: Duration,
}

impl std::fmt::Debug for MemberMetricsParams<'_> {
    // Never print the object-store configuration: it may hold credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberMetricsParams")
            .field("cluster", &self.cluster.name())
            .field("external_labels", &self.external_labels)
            .field("sidecar_grpc", &self.sidecar_grpc)
            .field(
                "objstore_config",
                &self.objstore_config.as_ref().map(|_| ".."),
            )
            .field("scrape_interval", &self.scrape_interval)
            .field("extra_targets", &self.extra_targets)
            .field("detached", &self.detached)
            .finish_non_exhaustive()
    }
}

impl<'a> MemberMetricsParams<'a> {
    /// Defaults: no object store, a 5 s scrape interval, no extra targets, attached, 60 s to
    /// become ready.
    pub fn new(
        binaries: &'a MetricsBinaries,
        cluster: &'a ClusterHandle,
        state_dir: &'a Path,
        external_labels: BTreeMap<String, String>,
        sidecar_grpc: SocketAddr,
    ) -> Self {
        MemberMetricsParams {
            binaries,
            cluster,
            state_dir,
            external_labels,
            sidecar_grpc,
            objstore_config: None,
            scrape_interval: Duration::from_secs(5),
            extra_targets: Vec::new(),
            detached: false,
            timeout: Duration::from_secs(60),
        }
    }
}

/// One member's running Prometheus and Thanos sidecar. Dropping it kills both (unless
/// detached).
#[derive(Debug)]
pub struct MemberMetrics {
    cluster: String,
    state_dir: PathBuf,
    dir: PathBuf,
    thanos: PathBuf,
    files: PrometheusFiles,
    prometheus_port: u16,
    sidecar_grpc: SocketAddr,
    objstore_config: Option<PathBuf>,
    detached: bool,
    timeout: Duration,
    // Field order is drop order: the sidecar goes before the Prometheus it reads.
    sidecar: Proc,
    prometheus: Proc,
}

impl MemberMetrics {
    /// Writes the configuration, starts Prometheus on a free loopback port and waits for
    /// `/-/ready`, then starts the sidecar and waits for its `/-/ready` (it is ready once it
    /// has read Prometheus's external labels). On failure nothing keeps running.
    pub async fn start(p: MemberMetricsParams<'_>) -> Result<MemberMetrics> {
        if p.external_labels.is_empty() {
            return Err(Error::Usage(
                "a Thanos sidecar needs external labels on its Prometheus (e.g. cluster=<name>)"
                    .into(),
            ));
        }
        let cluster = p.cluster.name().to_string();
        let dir = p.state_dir.join("metrics").join(&cluster);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("creating", &dir, e))?;
        let files = PrometheusFiles::in_dir(&dir);
        prometheus::write_scrape_credentials(&files, &p.cluster.kubeconfig_yaml())?;
        let apiserver = format!("127.0.0.1:{}", p.cluster.port());
        let config = prometheus::render_config(
            &files,
            &ScrapeSettings {
                external_labels: &p.external_labels,
                apiserver: &apiserver,
                interval: p.scrape_interval,
                extra_targets: &p.extra_targets,
            },
        )?;
        write_file(&files.config, &config, 0o644)?;

        let program = p.binaries.prometheus.clone();
        let spec_for = |port: u16| ProcessSpec {
            name: format!("{cluster}-prometheus"),
            program: program.clone(),
            args: prometheus::args(&files, port),
            log: log_path(p.state_dir, &cluster, "prometheus"),
            pid_file: pid_file(p.state_dir, p.detached, &format!("{cluster}-prometheus")),
            env: Vec::new(),
        };
        let timeout = p.timeout;
        let prometheus = start_on_free_port(spec_for, p.detached, timeout, READY_PATH, |proc| {
            wait_http_ready(proc, timeout, listen_port)
        })
        .await?;
        let prometheus_port = listen_port(&prometheus.spec).unwrap_or_default();

        let mut metrics = MemberMetrics {
            cluster,
            state_dir: p.state_dir.to_path_buf(),
            dir,
            thanos: p.binaries.thanos.clone(),
            files,
            prometheus_port,
            sidecar_grpc: p.sidecar_grpc,
            objstore_config: None,
            detached: p.detached,
            timeout,
            sidecar: Proc::adopt(placeholder_spec(), 0),
            prometheus,
        };
        let sidecar = match metrics.write_objstore_config(p.objstore_config.as_deref()) {
            Ok(()) => metrics.spawn_sidecar().await,
            Err(e) => Err(e),
        };
        match sidecar {
            Ok(sidecar) => metrics.sidecar = sidecar,
            Err(e) => {
                // Detached processes are not killed on drop.
                metrics.prometheus.kill().await.ok();
                return Err(e);
            }
        }
        tracing::info!(cluster = %metrics.cluster, prometheus = %metrics.prometheus_url(),
            sidecar = %metrics.sidecar_grpc, "member metrics ready");
        Ok(metrics)
    }

    /// The member it scrapes.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// `http://127.0.0.1:<port>`: Prometheus's API (kept across [`Self::start_prometheus`]).
    pub fn prometheus_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.prometheus_port)
    }

    /// Where the sidecar serves the Store API.
    pub fn sidecar_grpc_address(&self) -> SocketAddr {
        self.sidecar_grpc
    }

    /// The directory holding this member's configuration and data.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The sidecar's current `--objstore.config-file`, if it has one.
    pub fn objstore_config_file(&self) -> Option<&Path> {
        self.objstore_config.as_deref()
    }

    /// The sidecar's own metrics (`GET /metrics` on its HTTP port), e.g. to see which
    /// bucket it uses (`thanos_objstore_bucket_operations_total{bucket=...}`).
    pub async fn sidecar_metrics(&self) -> Result<String> {
        let port = thanos_http_port(&self.sidecar.spec)
            .ok_or_else(|| Error::Usage("the sidecar has no HTTP port".into()))?;
        LoopbackHttp::new(port, "Thanos sidecar")?
            .get("/metrics")
            .await
    }

    /// Both processes, for `kurator dev status`.
    pub fn processes(&mut self) -> Vec<ProcessInfo> {
        let cluster = self.cluster.clone();
        vec![
            self.prometheus.info(Some(&cluster)),
            self.sidecar.info(Some(&cluster)),
        ]
    }

    /// Whether Prometheus runs.
    pub fn prometheus_running(&mut self) -> bool {
        self.prometheus.is_running()
    }

    /// Whether the sidecar runs.
    pub fn sidecar_running(&mut self) -> bool {
        self.sidecar.is_running()
    }

    /// Kills Prometheus (an outage); the sidecar keeps running and fails its reads, as in a
    /// Pod whose Prometheus container died.
    pub async fn stop_prometheus(&mut self) -> Result<()> {
        self.prometheus.kill().await
    }

    /// Starts Prometheus again on the same port and data directory and waits for
    /// `/-/ready`. A no-op while it runs.
    pub async fn start_prometheus(&mut self) -> Result<()> {
        if self.prometheus.is_running() {
            return Ok(());
        }
        let spec = self.prometheus.spec.clone();
        self.prometheus = self.respawn_on_kept_port(spec, listen_port).await?;
        Ok(())
    }

    /// Restarts the sidecar with `objstore_config` as its `--objstore.config-file` (`None`:
    /// without an object store), on the same gRPC address, and waits until it is ready
    /// (which needs Prometheus running).
    pub async fn restart_sidecar(&mut self, objstore_config: Option<&str>) -> Result<()> {
        self.sidecar.kill().await?;
        self.write_objstore_config(objstore_config)?;
        self.sidecar = self.spawn_sidecar().await?;
        Ok(())
    }

    /// Kills both processes and waits until they are gone.
    pub async fn stop(&mut self) -> Result<()> {
        self.sidecar.kill().await?;
        self.prometheus.kill().await
    }

    fn write_objstore_config(&mut self, text: Option<&str>) -> Result<()> {
        self.objstore_config = match text {
            Some(text) => {
                let path = self.dir.join("objstore.yml");
                // It may hold object-store credentials.
                write_file(&path, text, 0o600)?;
                Some(path)
            }
            None => None,
        };
        Ok(())
    }

    async fn spawn_sidecar(&self) -> Result<Proc> {
        let name = format!("{}-thanos-sidecar", self.cluster);
        let spec_for = |http_port: u16| ProcessSpec {
            name: name.clone(),
            program: self.thanos.clone(),
            args: thanos::sidecar_args(&SidecarFlags {
                prometheus_port: self.prometheus_port,
                tsdb: &self.files.tsdb,
                grpc: self.sidecar_grpc,
                http_port,
                objstore_config: self.objstore_config.as_deref(),
            }),
            log: log_path(&self.state_dir, &self.cluster, "thanos-sidecar"),
            pid_file: pid_file(&self.state_dir, self.detached, &name),
            env: Vec::new(),
        };
        start_thanos(spec_for, self.detached, self.timeout).await
    }

    async fn respawn_on_kept_port(
        &self,
        spec: ProcessSpec,
        port_of: fn(&ProcessSpec) -> Option<u16>,
    ) -> Result<Proc> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let proc = Proc::spawn(spec.clone(), self.detached)?;
            let (mut proc, verdict) = wait_http_ready(proc, self.timeout, port_of).await;
            match verdict {
                Ok(()) => return Ok(proc),
                Err(WaitError::Exited(_))
                    if attempt < RESTART_ATTEMPTS && lost_port_race(&proc) =>
                {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(err) => {
                    proc.kill().await.ok();
                    return Err(proc.startup_error(err.describe(self.timeout, READY_PATH)));
                }
            }
        }
    }
}

/// Starts a Thanos component `spec_for(http_port)` describes on a free HTTP port and waits
/// until it answers `GET /-/ready` there (a lost port race is retried).
pub(crate) async fn start_thanos(
    spec_for: impl Fn(u16) -> ProcessSpec,
    detached: bool,
    timeout: Duration,
) -> Result<Proc> {
    start_on_free_port(spec_for, detached, timeout, READY_PATH, |proc| {
        wait_http_ready(proc, timeout, thanos_http_port)
    })
    .await
}

/// Waits until `GET /-/ready` on the port `port_of` reads from the process's flags answers
/// 200; hands the process back with the verdict (the shape [`start_on_free_port`] wants).
pub(crate) async fn wait_http_ready(
    mut proc: Proc,
    timeout: Duration,
    port_of: fn(&ProcessSpec) -> Option<u16>,
) -> (Proc, std::result::Result<(), WaitError>) {
    let Some(port) = port_of(&proc.spec) else {
        return (
            proc,
            Err(WaitError::Exited("no HTTP port in its flags".into())),
        );
    };
    let verdict = wait_ready(&mut proc, timeout, || http_get_ok(port, READY_PATH)).await;
    (proc, verdict)
}

/// The port of `--<flag>=127.0.0.1:<port>`.
fn port_of_flag(spec: &ProcessSpec, flag: &str) -> Option<u16> {
    spec.args
        .iter()
        .find_map(|a| a.strip_prefix(flag))
        .and_then(|addr| addr.rsplit_once(':'))
        .and_then(|(_, port)| port.parse().ok())
}

/// Prometheus's `--web.listen-address` port.
fn listen_port(spec: &ProcessSpec) -> Option<u16> {
    port_of_flag(spec, "--web.listen-address=")
}

/// A Thanos component's `--http-address` port.
pub(crate) fn thanos_http_port(spec: &ProcessSpec) -> Option<u16> {
    port_of_flag(spec, "--http-address=")
}

/// A Thanos component's `--grpc-address` port.
pub(crate) fn thanos_grpc_port(spec: &ProcessSpec) -> Option<u16> {
    port_of_flag(spec, "--grpc-address=")
}

pub(crate) fn pid_file(state_dir: &Path, detached: bool, name: &str) -> Option<PathBuf> {
    detached.then(|| state_dir.join("run").join(format!("{name}.pid")))
}

/// Stands in for the sidecar until it is spawned (pid 0 is never alive nor signalled).
fn placeholder_spec() -> ProcessSpec {
    ProcessSpec {
        name: "thanos-sidecar (not started)".into(),
        program: PathBuf::new(),
        args: Vec::new(),
        log: PathBuf::new(),
        pid_file: None,
        env: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_read_from_the_flags() {
        let spec = ProcessSpec {
            args: vec![
                "sidecar".into(),
                "--grpc-address=127.0.1.1:10901".into(),
                "--http-address=127.0.0.1:4321".into(),
            ],
            ..placeholder_spec()
        };
        assert_eq!(thanos_http_port(&spec), Some(4321));
        assert_eq!(listen_port(&spec), None);
        assert_eq!(
            pid_file(Path::new("/s"), true, "member1-prometheus"),
            Some(PathBuf::from("/s/run/member1-prometheus.pid"))
        );
        assert_eq!(pid_file(Path::new("/s"), false, "x"), None);
    }
}
