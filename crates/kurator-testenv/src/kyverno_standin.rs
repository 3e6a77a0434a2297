//! Stands in for the kubelet that would run the kyverno chart's Pods in one cluster: no
//! kubelet runs containers here (kwok only marks Pods Running), so once the chart's
//! admission and reports controller Deployments exist, this starts the real Kyverno as local
//! processes ([`Kyverno`]), configured from those Deployments: namespace, names and
//! ConfigMaps from their environment, and their flags passed through.
//!
//! - A Deployment scaled to zero, or deleted, stops that Kyverno.
//! - The chart's `pre-delete` hook Job (`<release>-scale-to-zero`) is what removes Kyverno's
//!   webhook configurations on uninstall. kwok "completes" its Pod without running its
//!   script, so this does what the script does: stop Kyverno, then delete the webhook
//!   configurations the script's `kubectl delete … -l <selector>` lines select.
//! - A Kyverno that fails to start is retried after a delay (as a kubelet backs off).
//! - A chart whose image tag is not the Kyverno version built here is not started: the
//!   binaries and the chart's CRDs must match. The log says which chart version to select.
//!
//! Dropping or [`KyvernoStandIn::stop`]ping it kills the Kyverno processes it started; the
//! webhook configurations stay (as when Kyverno's Pods die), so Kyverno's `failurePolicy:
//! Fail` webhooks then refuse what they match.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Container;
use kube::api::{DeleteParams, ListParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::kubeconfig;
use crate::kyverno::{Kyverno, KyvernoOptions, KyvernoParams};
use crate::kyverno_binaries::{KYVERNO_CHART_VERSION, KYVERNO_VERSION, KyvernoBinaries};
use crate::process::ProcessInfo;

const PART_OF: &str = "app.kubernetes.io/part-of";
const COMPONENT: &str = "app.kubernetes.io/component";
const ADMISSION: &str = "admission-controller";
const REPORTS: &str = "reports-controller";
const DEPLOYMENTS: &str =
    "app.kubernetes.io/component in (admission-controller,reports-controller)";
const HOOKS: &str = "app.kubernetes.io/component=hooks";
/// Wait before starting a Kyverno again after it failed to start.
const BACKOFF: Duration = Duration::from_secs(10);
/// How often the stand-in looks for exited processes to restart.
const LIVENESS: Duration = Duration::from_secs(2);

/// One kyverno chart release in the cluster: `(namespace, app.kubernetes.io/part-of)`.
pub type Instance = (String, String);

/// What to run, taken from the chart's Deployments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub options: KyvernoOptions,
    /// The Kyverno version of the admission controller's image tag.
    pub image_version: Option<String>,
}

/// The stand-in for one cluster; see the module docs.
pub struct KyvernoStandIn {
    cluster: String,
    task: Option<JoinHandle<()>>,
    running: watch::Receiver<Vec<RunningKyverno>>,
}

/// A release whose Kyverno runs, and its processes.
#[derive(Debug, Clone, PartialEq)]
pub struct RunningKyverno {
    pub instance: Instance,
    pub processes: Vec<ProcessInfo>,
}

/// Inputs of [`KyvernoStandIn::spawn`].
#[derive(Debug, Clone)]
pub struct KyvernoStandInParams {
    pub binaries: KyvernoBinaries,
    /// The cluster's name (process and log names).
    pub cluster: String,
    /// Its admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// Logs go to `<state_dir>/logs/`.
    pub state_dir: PathBuf,
    /// How long one Kyverno may take to become ready.
    pub timeout: Duration,
}

impl KyvernoStandIn {
    /// Starts following the cluster's kyverno Deployments (needs a Tokio runtime).
    pub async fn spawn(params: KyvernoStandInParams) -> Result<KyvernoStandIn> {
        let yaml = std::fs::read_to_string(&params.kubeconfig)
            .map_err(|e| Error::io("reading", &params.kubeconfig, e))?;
        let client = kubeconfig::client(&params.cluster, &yaml).await?;
        let (tx, running) = watch::channel(Vec::new());
        let cluster = params.cluster.clone();
        let task = tokio::spawn(run(client, params, tx));
        Ok(KyvernoStandIn {
            cluster,
            task: Some(task),
            running,
        })
    }

    /// The releases whose Kyverno runs now.
    pub fn running(&self) -> Vec<Instance> {
        self.running
            .borrow()
            .iter()
            .map(|r| r.instance.clone())
            .collect()
    }

    /// The Kyverno processes it runs now.
    pub fn processes(&self) -> Vec<ProcessInfo> {
        self.running
            .borrow()
            .iter()
            .flat_map(|r| r.processes.clone())
            .collect()
    }

    /// Waits until what runs changes (a Kyverno started or stopped).
    pub async fn changed(&mut self) {
        if self.running.changed().await.is_err() {
            // Stopped: nothing will change any more.
            std::future::pending::<()>().await;
        }
    }

    /// Waits until some Kyverno runs in the cluster.
    pub async fn wait_running(&mut self, timeout: Duration) -> Result<Instance> {
        let waited = tokio::time::timeout(timeout, self.running.wait_for(|r| !r.is_empty())).await;
        match waited {
            Ok(Ok(running)) => Ok(running[0].instance.clone()),
            _ => Err(Error::Timeout {
                what: format!("Kyverno to run in {}", self.cluster),
                seconds: timeout.as_secs_f64(),
                last: Some("see logs/*-kyverno-*.log in the state dir".into()),
            }),
        }
    }

    /// Stops following the cluster and kills the Kyverno processes it started.
    pub async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            // The task owns the processes: they are killed as it is dropped.
            let _ = task.await;
        }
    }
}

impl Drop for KyvernoStandIn {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Pure: the Kyverno every complete, scaled-up release asks for, from the cluster's kyverno
/// Deployments (both controllers present, neither deleted nor scaled to zero).
pub fn wanted(deployments: &[Deployment]) -> BTreeMap<Instance, Wanted> {
    let mut parts: BTreeMap<Instance, (Option<&Deployment>, Option<&Deployment>)> = BTreeMap::new();
    for d in deployments {
        let labels = d.labels();
        let (Some(part_of), Some(component)) = (labels.get(PART_OF), labels.get(COMPONENT)) else {
            continue;
        };
        let scaled_down = d.spec.as_ref().and_then(|s| s.replicas) == Some(0);
        if d.metadata.deletion_timestamp.is_some() || scaled_down {
            continue;
        }
        let key = (d.namespace().unwrap_or_default(), part_of.clone());
        let entry = parts.entry(key).or_default();
        match component.as_str() {
            ADMISSION => entry.0 = Some(d),
            REPORTS => entry.1 = Some(d),
            _ => {}
        }
    }
    parts
        .into_iter()
        .filter_map(|(key, pair)| match pair {
            (Some(admission), Some(reports)) => Some((key, from_deployments(admission, reports))),
            _ => None,
        })
        .collect()
}

fn kyverno_container(d: &Deployment) -> Option<&Container> {
    let containers = &d.spec.as_ref()?.template.spec.as_ref()?.containers;
    containers
        .iter()
        .find(|c| c.name == "kyverno" || c.name == "controller")
        .or(containers.first())
}

fn env(container: Option<&Container>, name: &str) -> Option<String> {
    container?
        .env
        .as_ref()?
        .iter()
        .find(|e| e.name == name)?
        .value
        .clone()
}

fn from_deployments(admission: &Deployment, reports: &Deployment) -> Wanted {
    let defaults = KyvernoOptions::default();
    let a = kyverno_container(admission);
    let r = kyverno_container(reports);
    let args = |c: Option<&Container>| c.and_then(|c| c.args.clone()).unwrap_or_default();
    let admission_args = args(a);
    let background = admission_args
        .iter()
        .find_map(|a| a.strip_prefix("--backgroundServiceAccountName="))
        .and_then(|sa| sa.rsplit(':').next())
        .map(str::to_string);
    let options = KyvernoOptions {
        namespace: admission.namespace().unwrap_or(defaults.namespace),
        service_name: env(a, "KYVERNO_SVC").unwrap_or(defaults.service_name),
        admission_controller_name: env(a, "KYVERNO_DEPLOYMENT")
            .unwrap_or_else(|| admission.name_any()),
        reports_controller_name: env(r, "KYVERNO_DEPLOYMENT").unwrap_or_else(|| reports.name_any()),
        background_controller_name: background.unwrap_or(defaults.background_controller_name),
        config_map: env(a, "INIT_CONFIG").unwrap_or(defaults.config_map),
        metrics_config_map: env(a, "METRICS_CONFIG").unwrap_or(defaults.metrics_config_map),
        admission_args,
        reports_args: args(r),
    };
    let image_version = a
        .and_then(|c| c.image.as_deref())
        .and_then(|image| image.rsplit_once(':'))
        .map(|(_, tag)| tag.to_string());
    Wanted {
        options,
        image_version,
    }
}

/// Pure: the webhook-configuration selectors of the hook script's
/// `kubectl delete {validating,mutating}webhookconfiguration -l <selector>` lines.
pub fn webhook_cleanup_selectors(job: &Job) -> Vec<(bool, String)> {
    let script: Vec<String> = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|s| {
            s.containers
                .iter()
                .flat_map(|c| c.command.iter().flatten().chain(c.args.iter().flatten()))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    for line in script.iter().flat_map(|s| s.lines()) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(kind) = words
            .iter()
            .position(|w| *w == "delete")
            .and_then(|i| words.get(i + 1))
        else {
            continue;
        };
        let validating = match *kind {
            "validatingwebhookconfiguration" | "validatingwebhookconfigurations" => true,
            "mutatingwebhookconfiguration" | "mutatingwebhookconfigurations" => false,
            _ => continue,
        };
        if let Some(selector) = words
            .iter()
            .position(|w| *w == "-l" || *w == "--selector")
            .and_then(|i| words.get(i + 1))
        {
            out.push((validating, selector.to_string()));
        }
    }
    out
}

fn is_pre_delete_hook(job: &Job) -> bool {
    job.annotations()
        .get("helm.sh/hook")
        .is_some_and(|h| h.split(',').any(|h| h.trim() == "pre-delete"))
}

struct Running {
    wanted: Wanted,
    kyverno: Kyverno,
}

async fn run(
    client: Client,
    params: KyvernoStandInParams,
    running_tx: watch::Sender<Vec<RunningKyverno>>,
) {
    let deployments: Api<Deployment> = Api::all(client.clone());
    let jobs: Api<Job> = Api::all(client.clone());
    let (store, writer) = reflector::store::<Deployment>();
    let deployment_events = reflector(
        writer,
        watcher(deployments, watcher::Config::default().labels(DEPLOYMENTS)),
    )
    .default_backoff()
    // Every event, `InitDone` included: the store shows a (re-)listing only once it is done.
    .map(|_| ());
    let job_events = watcher(jobs, watcher::Config::default().labels(HOOKS))
        .default_backoff()
        .touched_objects()
        .filter_map(|job| async move { job.ok().filter(is_pre_delete_hook) });
    let mut deployment_events = std::pin::pin!(deployment_events);
    let mut job_events = std::pin::pin!(job_events);

    let mut running: BTreeMap<Instance, Running> = BTreeMap::new();
    // Releases being uninstalled: not started again while their Deployments linger.
    let mut uninstalling: Vec<Instance> = Vec::new();
    let mut retry_at: BTreeMap<Instance, tokio::time::Instant> = BTreeMap::new();
    // How often exited processes are looked for (a kubelet notices a crashed container).
    let mut liveness = tokio::time::interval(LIVENESS);
    liveness.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let next_retry = retry_at.values().min().copied();
        tokio::select! {
            Some(()) = deployment_events.next() => {}
            _ = liveness.tick() => {}
            Some(job) = job_events.next() => {
                let key = (
                    job.namespace().unwrap_or_default(),
                    job.labels().get(PART_OF).cloned().unwrap_or_default(),
                );
                if let Some(mut r) = running.remove(&key) {
                    let _ = r.kyverno.stop().await;
                }
                tracing::info!(cluster = %params.cluster, release = %key.1,
                    "the chart's pre-delete hook: Kyverno stopped, removing its webhooks");
                delete_webhooks(&client, &webhook_cleanup_selectors(&job)).await;
                if !uninstalling.contains(&key) {
                    uninstalling.push(key);
                }
            }
            _ = sleep_until(next_retry) => {}
        }
        let now = tokio::time::Instant::now();
        retry_at.retain(|_, at| *at > now);
        let deployments: Vec<Deployment> = store.state().iter().map(|d| (**d).clone()).collect();
        let wanted = wanted(&deployments);
        uninstalling.retain(|key| wanted.contains_key(key));
        // Stop what is no longer wanted or wanted differently.
        let stale: Vec<Instance> = running
            .iter()
            .filter(|(key, r)| wanted.get(*key) != Some(&r.wanted) || uninstalling.contains(key))
            .map(|(key, _)| key.clone())
            .collect();
        for key in stale {
            if let Some(mut r) = running.remove(&key) {
                tracing::info!(cluster = %params.cluster, release = %key.1, "stopping Kyverno");
                let _ = r.kyverno.stop().await;
            }
        }
        // Restart what exited, like a Deployment's Pod (restartPolicy Always).
        let mut failed = Vec::new();
        for (key, r) in running.iter_mut() {
            match r
                .kyverno
                .restart_exited(kyverno_params(&params, &r.wanted))
                .await
            {
                Ok(restarted) if restarted.is_empty() => {}
                Ok(restarted) => tracing::warn!(cluster = %params.cluster, release = %key.1,
                    ?restarted, "a Kyverno process had exited: restarted (as its kubelet would)"),
                Err(e) => {
                    tracing::warn!(cluster = %params.cluster, release = %key.1, error = %e,
                        "a Kyverno process exited and did not start again; retrying in {BACKOFF:?}");
                    failed.push(key.clone());
                }
            }
        }
        for key in failed {
            if let Some(mut r) = running.remove(&key) {
                let _ = r.kyverno.stop().await;
            }
            retry_at.insert(key, tokio::time::Instant::now() + BACKOFF);
        }
        for (key, want) in wanted {
            if running.contains_key(&key)
                || uninstalling.contains(&key)
                || retry_at.contains_key(&key)
            {
                continue;
            }
            match start(&params, &want).await {
                Ok(kyverno) => {
                    running.insert(
                        key,
                        Running {
                            wanted: want,
                            kyverno,
                        },
                    );
                }
                Err(e) => {
                    tracing::warn!(cluster = %params.cluster, release = %key.1, error = %e,
                        "Kyverno did not start; retrying in {BACKOFF:?}");
                    retry_at.insert(key, tokio::time::Instant::now() + BACKOFF);
                }
            }
        }
        let now_running: Vec<RunningKyverno> = running
            .iter_mut()
            .map(|(key, r)| RunningKyverno {
                instance: key.clone(),
                processes: r.kyverno.processes(),
            })
            .collect();
        running_tx.send_if_modified(|old| {
            let modified = *old != now_running;
            *old = now_running;
            modified
        });
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn start(params: &KyvernoStandInParams, want: &Wanted) -> Result<Kyverno> {
    if let Some(version) = &want.image_version
        && version != KYVERNO_VERSION
    {
        return Err(Error::Usage(format!(
            "the chart runs Kyverno {version}, but the test environment has {KYVERNO_VERSION} \
             binaries only: select the kyverno chart {KYVERNO_CHART_VERSION} \
             (policy.kyverno.chart.version)"
        )));
    }
    tracing::info!(cluster = %params.cluster, namespace = %want.options.namespace,
        "starting Kyverno for the chart's Deployments");
    Kyverno::start(kyverno_params(params, want)).await
}

fn kyverno_params<'a>(params: &'a KyvernoStandInParams, want: &'a Wanted) -> KyvernoParams<'a> {
    KyvernoParams {
        binaries: &params.binaries,
        cluster: &params.cluster,
        kubeconfig: &params.kubeconfig,
        state_dir: &params.state_dir,
        options: &want.options,
        detached: false,
        timeout: params.timeout,
    }
}

async fn delete_webhooks(client: &Client, selectors: &[(bool, String)]) {
    for (validating, selector) in selectors {
        let params = ListParams::default().labels(selector);
        let result = if *validating {
            Api::<ValidatingWebhookConfiguration>::all(client.clone())
                .delete_collection(&DeleteParams::default(), &params)
                .await
                .map(|_| ())
        } else {
            Api::<MutatingWebhookConfiguration>::all(client.clone())
                .delete_collection(&DeleteParams::default(), &params)
                .await
                .map(|_| ())
        };
        if let Err(e) = result {
            tracing::warn!(%selector, error = %e, "removing Kyverno's webhook configurations failed");
        }
    }
}

#[cfg(test)]
mod tests;
