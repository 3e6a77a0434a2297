//! Kyverno's admission controller and reports controller as local processes against one
//! cluster, standing in for the kubelet that would run the kyverno chart's Deployments.
//!
//! Both run out of cluster (`--kubeconfig`). The admission controller gets
//! `--serverIP=127.0.0.1:<port>` and `--webhookServerPort=<port>`, so it registers its
//! webhooks by URL (`https://127.0.0.1:<port>/...`, its own self-signed CA in `caBundle`) and
//! the cluster's kube-apiserver calls it on loopback. Everything else comes from the
//! environment variables the chart's Deployment sets (namespace, names of the Deployment,
//! Service, ServiceAccount and ConfigMaps); the ConfigMaps may be absent (Kyverno then uses
//! its defaults). The CRDs and the namespace must exist before the start: the chart creates
//! them.
//!
//! Readiness: the admission controller answers `/health/readiness` on its webhook port and
//! has registered its policy validation webhook at that port; the reports controller holds
//! its leader Lease. Logs: `logs/<cluster>-kyverno-{admission,reports}-controller.log`.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;

use crate::cluster::log_path;
use crate::error::{Error, Result};
use crate::health;
use crate::kubeconfig;
use crate::kyverno_binaries::KyvernoBinaries;
use crate::process::{
    Proc, ProcessInfo, ProcessSpec, WaitError, free_port, lost_port_race, wait_ready,
};

const ATTEMPTS: usize = 4;
const WEBHOOK_PORT_FLAG: &str = "--webhookServerPort=";
/// Written by the admission controller as soon as it leads; validates Kyverno policies.
pub const POLICY_WEBHOOK_CONFIGURATION: &str = "kyverno-policy-validating-webhook-cfg";
/// The leader Lease of the reports controller (in the Kyverno namespace).
const REPORTS_LEASE: &str = "kyverno-reports-controller";

/// Names Kyverno reads from its environment: those the kyverno chart renders for a release
/// named `kyverno` in namespace `kyverno` by default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KyvernoOptions {
    /// `KYVERNO_NAMESPACE`: where its Secrets (CA, TLS pair) and Leases live.
    pub namespace: String,
    /// `KYVERNO_SVC`: the Service name, part of the certificate's names and Secret names.
    pub service_name: String,
    /// `KYVERNO_DEPLOYMENT` and `KYVERNO_SERVICEACCOUNT_NAME` of the admission controller.
    pub admission_controller_name: String,
    /// `KYVERNO_DEPLOYMENT` and `KYVERNO_SERVICEACCOUNT_NAME` of the reports controller.
    pub reports_controller_name: String,
    /// `--backgroundServiceAccountName` (the background controller's ServiceAccount).
    pub background_controller_name: String,
    /// `INIT_CONFIG`: Kyverno's ConfigMap.
    pub config_map: String,
    /// `METRICS_CONFIG`: Kyverno's metrics ConfigMap.
    pub metrics_config_map: String,
    /// Further flags of the chart's admission controller container (feature switches,
    /// logging), passed through; the flags this module sets itself win.
    pub admission_args: Vec<String>,
    /// Further flags of the chart's reports controller container.
    pub reports_args: Vec<String>,
}

impl Default for KyvernoOptions {
    fn default() -> Self {
        KyvernoOptions {
            namespace: "kyverno".into(),
            service_name: "kyverno-svc".into(),
            admission_controller_name: "kyverno-admission-controller".into(),
            reports_controller_name: "kyverno-reports-controller".into(),
            background_controller_name: "kyverno-background-controller".into(),
            config_map: "kyverno".into(),
            metrics_config_map: "kyverno-metrics".into(),
            admission_args: Vec::new(),
            reports_args: Vec::new(),
        }
    }
}

/// Inputs to start Kyverno against one cluster.
#[derive(Debug, Clone, Copy)]
pub struct KyvernoParams<'a> {
    pub binaries: &'a KyvernoBinaries,
    /// The cluster's name (process and log names).
    pub cluster: &'a str,
    /// Its admin kubeconfig: Kyverno's `--kubeconfig`.
    pub kubeconfig: &'a Path,
    /// The environment's state dir (logs go to its `logs/`, pid files to `run/`).
    pub state_dir: &'a Path,
    pub options: &'a KyvernoOptions,
    /// Detached (playground): the processes outlive this one and record their pids.
    pub detached: bool,
    pub timeout: Duration,
}

/// Kyverno running against one cluster. Dropping it kills both processes (unless detached).
#[derive(Debug)]
pub struct Kyverno {
    cluster: String,
    webhook_port: u16,
    admission: Proc,
    reports: Proc,
}

/// Which of the two processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Component {
    Admission,
    Reports,
}

impl Component {
    fn log_name(self) -> &'static str {
        match self {
            Component::Admission => "kyverno-admission-controller",
            Component::Reports => "kyverno-reports-controller",
        }
    }
}

/// What [`spec`] needs from [`KyvernoParams`] (a cluster's name and kubeconfig rather than
/// a running cluster, so the flags can be checked without one).
struct SpecInput<'a> {
    binaries: &'a KyvernoBinaries,
    options: &'a KyvernoOptions,
    cluster: &'a str,
    kubeconfig: &'a Path,
    state_dir: &'a Path,
    detached: bool,
}

impl<'a> From<&KyvernoParams<'a>> for SpecInput<'a> {
    fn from(p: &KyvernoParams<'a>) -> Self {
        SpecInput {
            binaries: p.binaries,
            options: p.options,
            cluster: p.cluster,
            kubeconfig: p.kubeconfig,
            state_dir: p.state_dir,
            detached: p.detached,
        }
    }
}

fn spec(p: &SpecInput<'_>, which: Component, port: u16, metrics_port: u16) -> ProcessSpec {
    let o = p.options;
    let cluster = p.cluster;
    let (program, deployment) = match which {
        Component::Admission => (
            &p.binaries.admission_controller,
            &o.admission_controller_name,
        ),
        Component::Reports => (&p.binaries.reports_controller, &o.reports_controller_name),
    };
    let chart_args = match which {
        Component::Admission => &o.admission_args,
        Component::Reports => &o.reports_args,
    };
    let mut own = vec![
        format!("--kubeconfig={}", p.kubeconfig.display()),
        // Kyverno binds the metrics listener on every interface (":<port>"): a free port
        // keeps parallel clusters apart. `--disableMetrics` only stops recording.
        format!("--metricsPort={metrics_port}"),
        "--disableMetrics=true".into(),
        "--loggingFormat=text".into(),
    ];
    if which == Component::Admission {
        let secret =
            |kind: &str| format!("{}.{}.svc.kyverno-tls-{kind}", o.service_name, o.namespace);
        own.extend([
            format!("--serverIP=127.0.0.1:{port}"),
            format!("{WEBHOOK_PORT_FLAG}{port}"),
            format!("--caSecretName={}", secret("ca")),
            format!("--tlsSecretName={}", secret("pair")),
            format!(
                "--backgroundServiceAccountName=system:serviceaccount:{}:{}",
                o.namespace, o.background_controller_name
            ),
        ]);
    }
    let mut args = pass_through(chart_args, &own);
    args.extend(own);
    let name = format!("{cluster}-{}", which.log_name());
    ProcessSpec {
        program: program.clone(),
        args,
        log: log_path(p.state_dir, cluster, which.log_name()),
        pid_file: p
            .detached
            .then(|| p.state_dir.join("run").join(format!("{name}.pid"))),
        env: vec![
            ("KYVERNO_NAMESPACE".into(), o.namespace.clone()),
            ("KYVERNO_SVC".into(), o.service_name.clone()),
            ("KYVERNO_DEPLOYMENT".into(), deployment.clone()),
            ("KYVERNO_SERVICEACCOUNT_NAME".into(), deployment.clone()),
            // The leader election identity: stable, so a restarted process takes its Lease
            // back at once instead of waiting for it to expire.
            ("KYVERNO_POD_NAME".into(), format!("{deployment}-{cluster}")),
            ("INIT_CONFIG".into(), o.config_map.clone()),
            ("METRICS_CONFIG".into(), o.metrics_config_map.clone()),
        ],
        name,
    }
}

/// The chart's flags that this module does not set itself, in their order.
fn pass_through(chart_args: &[String], own: &[String]) -> Vec<String> {
    let flag_name = |arg: &str| arg.split('=').next().unwrap_or(arg).to_string();
    let own: Vec<String> = own.iter().map(|a| flag_name(a)).collect();
    chart_args
        .iter()
        .filter(|a| !own.contains(&flag_name(a)))
        .cloned()
        .collect()
}

impl Kyverno {
    /// Starts the admission controller, waits until its webhooks are registered and it
    /// answers, then starts the reports controller and waits until it leads. On failure
    /// nothing keeps running.
    pub async fn start(p: KyvernoParams<'_>) -> Result<Kyverno> {
        let yaml = std::fs::read_to_string(p.kubeconfig)
            .map_err(|e| Error::io("reading", p.kubeconfig, e))?;
        let client = kubeconfig::client(p.cluster, &yaml).await?;
        let (admission, webhook_port) = start_one(&p, &client, Component::Admission).await?;
        let (reports, _) = start_one(&p, &client, Component::Reports).await?;
        tracing::info!(cluster = p.cluster, webhook_port, "kyverno ready");
        Ok(Kyverno {
            cluster: p.cluster.to_string(),
            webhook_port,
            admission,
            reports,
        })
    }

    /// The cluster it runs against.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// `https://127.0.0.1:<port>`: where the API server calls Kyverno's webhooks.
    pub fn webhook_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.webhook_port)
    }

    /// Both processes, for `kurator dev status`.
    pub fn processes(&mut self) -> Vec<ProcessInfo> {
        let cluster = self.cluster.clone();
        [&mut self.admission, &mut self.reports]
            .into_iter()
            .map(|proc| ProcessInfo {
                cluster: Some(cluster.clone()),
                name: proc.spec.name.clone(),
                pid: proc.is_running().then_some(proc.pid),
                log: proc.spec.log.clone(),
            })
            .collect()
    }

    /// Whether both processes are running.
    pub fn is_running(&mut self) -> bool {
        self.admission.is_running() && self.reports.is_running()
    }

    /// Starts again each process that exited, as a kubelet restarts a Pod's crashed container
    /// (Kyverno 1.12's reports controller can panic, e.g. in its aggregate controller, and
    /// then exits): the components restarted, by log name. On failure the other keeps running.
    pub async fn restart_exited(&mut self, p: KyvernoParams<'_>) -> Result<Vec<&'static str>> {
        let mut restarted = Vec::new();
        if self.admission.is_running() && self.reports.is_running() {
            return Ok(restarted);
        }
        let yaml = std::fs::read_to_string(p.kubeconfig)
            .map_err(|e| Error::io("reading", p.kubeconfig, e))?;
        let client = kubeconfig::client(p.cluster, &yaml).await?;
        if !self.admission.is_running() {
            let (admission, webhook_port) = start_one(&p, &client, Component::Admission).await?;
            self.admission = admission;
            self.webhook_port = webhook_port;
            restarted.push(Component::Admission.log_name());
        }
        if !self.reports.is_running() {
            self.reports = start_one(&p, &client, Component::Reports).await?.0;
            restarted.push(Component::Reports.log_name());
        }
        Ok(restarted)
    }

    /// Kills both processes and waits until they are gone. Kyverno's webhook
    /// configurations stay registered (out of cluster it never removes them), so requests
    /// its `failurePolicy: Fail` webhooks match are refused until it runs again.
    pub async fn stop(&mut self) -> Result<()> {
        self.reports.kill().await?;
        self.admission.kill().await
    }
}

async fn start_one(
    p: &KyvernoParams<'_>,
    client: &kube::Client,
    which: Component,
) -> Result<(Proc, u16)> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let port = free_port()?;
        let spec = spec(&SpecInput::from(p), which, port, free_port()?);
        let mut proc = Proc::spawn(spec, p.detached)?;
        let outcome = match which {
            Component::Admission => {
                let health = health::loopback_client(port)?;
                wait_ready(&mut proc, p.timeout, || {
                    admission_ready(&health, client, port)
                })
                .await
            }
            Component::Reports => {
                let leases: Api<Lease> = Api::namespaced(client.clone(), &p.options.namespace);
                let identity = env_value(&proc.spec, "KYVERNO_POD_NAME");
                wait_ready(&mut proc, p.timeout, || leads(&leases, identity.clone())).await
            }
        };
        match outcome {
            Ok(()) if attempt < ATTEMPTS && webhook_server_lost_its_port(&proc) => {
                // Kyverno keeps running without its webhook server, and the readiness probe
                // may have been answered by whoever holds that port (another test's Kyverno).
                tracing::warn!(process = %proc.spec.name, "webhook server lost a port race, retrying");
                proc.kill().await.ok();
            }
            Ok(()) => return Ok((proc, port)),
            Err(WaitError::Exited(status)) if attempt < ATTEMPTS && lost_port_race(&proc) => {
                tracing::warn!(%status, process = %proc.spec.name, "lost a port race, retrying");
            }
            Err(err) => {
                proc.kill().await.ok();
                let probe = match which {
                    Component::Admission => "webhook registration and /health/readiness",
                    Component::Reports => "leader Lease",
                };
                return Err(proc.startup_error(err.describe(p.timeout, probe)));
            }
        }
    }
}

/// Whether the last run's webhook server could not bind its port: Kyverno logs it and keeps
/// running. The whole run is read (it logs much before it is ready, unlike a process that exits).
fn webhook_server_lost_its_port(proc: &Proc) -> bool {
    let log = std::fs::read_to_string(&proc.spec.log).unwrap_or_default();
    let last_run = log
        .rsplit("=== kurator-testenv: starting")
        .next()
        .unwrap_or("");
    last_run.contains("failed to start server") && last_run.contains("address already in use")
}

fn env_value(spec: &ProcessSpec, key: &str) -> String {
    spec.env
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

/// Registered (its policy webhook points at our port) and serving.
async fn admission_ready(health: &kube::Client, client: &kube::Client, port: u16) -> bool {
    let configs: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let url = format!("https://127.0.0.1:{port}/");
    let registered = matches!(
        configs.get_opt(POLICY_WEBHOOK_CONFIGURATION).await,
        Ok(Some(config)) if config.webhooks.iter().flatten().any(|w| {
            w.client_config.url.as_deref().is_some_and(|u| u.starts_with(&url))
        })
    );
    if !registered {
        return false;
    }
    health::get_text(health, "/health/readiness")
        .await
        .is_some()
}

async fn leads(leases: &Api<Lease>, identity: String) -> bool {
    matches!(
        leases.get_opt(REPORTS_LEASE).await,
        Ok(Some(lease)) if lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref())
            == Some(identity.as_str())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_register_webhooks_by_loopback_url_on_the_chosen_port() {
        let binaries = KyvernoBinaries {
            admission_controller: "/bin/kyverno".into(),
            reports_controller: "/bin/kyverno-reports-controller".into(),
            crd_dir: "/crds".into(),
        };
        let options = KyvernoOptions {
            // As the chart renders them: passed through unless this module sets the flag.
            reports_args: vec![
                "--disableMetrics=false".into(),
                "--otelConfig=prometheus".into(),
                "--metricsPort=8000".into(),
            ],
            ..Default::default()
        };
        let input = SpecInput {
            binaries: &binaries,
            options: &options,
            cluster: "member1",
            kubeconfig: Path::new("/state/clusters/member1/kubeconfig"),
            state_dir: Path::new("/state"),
            detached: true,
        };
        let admission = spec(&input, Component::Admission, 4000, 4001);
        assert_eq!(admission.name, "member1-kyverno-admission-controller");
        assert_eq!(admission.program, Path::new("/bin/kyverno"));
        for flag in [
            "--kubeconfig=/state/clusters/member1/kubeconfig",
            "--serverIP=127.0.0.1:4000",
            "--webhookServerPort=4000",
            "--metricsPort=4001",
            "--caSecretName=kyverno-svc.kyverno.svc.kyverno-tls-ca",
            "--tlsSecretName=kyverno-svc.kyverno.svc.kyverno-tls-pair",
            "--backgroundServiceAccountName=system:serviceaccount:kyverno:kyverno-background-controller",
        ] {
            assert!(
                admission.args.iter().any(|a| a == flag),
                "{flag}: {:?}",
                admission.args
            );
        }
        assert_eq!(env_value(&admission, "KYVERNO_NAMESPACE"), "kyverno");
        assert_eq!(
            env_value(&admission, "KYVERNO_DEPLOYMENT"),
            "kyverno-admission-controller"
        );
        assert_eq!(
            env_value(&admission, "KYVERNO_POD_NAME"),
            "kyverno-admission-controller-member1"
        );
        assert_eq!(
            admission.log,
            Path::new("/state/logs/member1-kyverno-admission-controller.log")
        );
        assert_eq!(
            admission.pid_file.as_deref(),
            Some(Path::new(
                "/state/run/member1-kyverno-admission-controller.pid"
            ))
        );

        let reports = spec(&input, Component::Reports, 0, 4002);
        assert_eq!(
            reports.program,
            Path::new("/bin/kyverno-reports-controller")
        );
        assert!(reports.args.iter().any(|a| a == "--metricsPort=4002"));
        assert!(!reports.args.iter().any(|a| a == "--metricsPort=8000"));
        assert!(reports.args.iter().any(|a| a == "--otelConfig=prometheus"));
        // Only the admission controller serves webhooks.
        assert!(!reports.args.iter().any(|a| a.starts_with("--serverIP")));
        assert_eq!(
            env_value(&reports, "KYVERNO_DEPLOYMENT"),
            "kyverno-reports-controller"
        );
    }
}
