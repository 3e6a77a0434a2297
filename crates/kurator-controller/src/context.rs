//! What every reconcile can reach: the host client, the shared stores, member clients,
//! metrics and settings.

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Client,
    core::PartialObjectMeta,
    runtime::{
        events::{Recorder, Reporter},
        reflector::Store,
    },
};
use kurator_api::{
    Application, AttachedCluster, Cluster, CustomCluster, Fleet,
    flux::{
        GitRepository, HelmChart, HelmRelease, HelmRepository, Kustomization, OCIRepository,
        StatusView,
    },
};

use tokio::sync::watch;

use crate::{
    application::apply::{FanoutBudget, RecentWrites},
    index::Indexes,
    member::MemberClients,
    metrics::Metrics,
    plugins::{collector::PolicyReportCollector, render::ChartMirrors},
};

/// Tunables, set from `kurator controller` flags.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How often a ready AttachedCluster is health-checked again.
    pub health_interval: Duration,
    /// Upper bound for one member health check.
    pub probe_timeout: Duration,
    /// Reconciles running at once, per controller.
    pub concurrency: u16,
    /// Chart repository rewrites (`--chart-mirror FROM=TO`).
    pub chart_mirrors: ChartMirrors,
    /// Thanos Query's base URL for staged-rollout metric gates (`--thanos-url`), instead of the
    /// fleet's Thanos Query Service through the host API server's service proxy: for a
    /// controller outside the host's network, or a Thanos Query on loopback, which the API
    /// server refuses to proxy to (the playground, the tests). It serves every fleet.
    pub thanos_url: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            health_interval: Duration::from_secs(30),
            probe_timeout: Duration::from_secs(10),
            concurrency: 16,
            chart_mirrors: ChartMirrors::default(),
            thanos_url: None,
        }
    }
}

/// Read-only views of the host's objects, fed by one watch per kind.
#[derive(Clone)]
pub struct Stores {
    pub attached_clusters: Store<AttachedCluster>,
    pub clusters: Store<Cluster>,
    pub custom_clusters: Store<CustomCluster>,
    pub fleets: Store<Fleet>,
    pub applications: Store<Application>,
    /// Secret metadata only: enough to notice a kubeconfig change without caching secrets.
    pub secrets: Store<PartialObjectMeta<Secret>>,
    /// Flux's objects: these stays empty (never ready) while Flux is not installed.
    pub flux: FluxStores,
    /// One gate per watch of a kurator kind (and Secrets).
    pub listed: Vec<Listed>,
}

/// The Flux objects on the host, without their specs ([`StatusView`]).
#[derive(Clone)]
pub struct FluxStores {
    pub git_repositories: Store<StatusView<GitRepository>>,
    pub helm_repositories: Store<StatusView<HelmRepository>>,
    pub oci_repositories: Store<StatusView<OCIRepository>>,
    /// Staged rollouts' tracking HelmCharts (`<app>-track`).
    pub helm_charts: Store<StatusView<HelmChart>>,
    pub kustomizations: Store<StatusView<Kustomization>>,
    pub helm_releases: Store<StatusView<HelmRelease>>,
    /// One gate per Flux watch.
    pub listed: Vec<Listed>,
}

impl FluxStores {
    /// Whether every Flux watch delivered its first list within `timeout`. False while Flux's
    /// CRDs are missing: their watches keep retrying.
    pub async fn ready_within(&self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, Listed::all(&self.listed))
            .await
            .is_ok()
    }
}

impl Stores {
    /// Resolves once every watch of a kurator kind has delivered its first full list, so no
    /// reconcile acts on a partial view (a missing cluster would otherwise look deleted).
    pub async fn wait_until_ready(&self) {
        Listed::all(&self.listed).await;
    }
}

/// Whether a watch has delivered its first full list.
///
/// kube's `Store::wait_until_ready` is not used by reconciles: it polls one oneshot receiver
/// from every waiting task, and a oneshot keeps only the last task's waker, so of several
/// reconciles waiting at once all but one could wait forever (seen at start-up with 100
/// existing clusters).
#[derive(Clone, Debug)]
pub struct Listed(watch::Receiver<bool>);

impl Listed {
    /// The gate and the switch that opens it.
    pub fn new() -> (watch::Sender<bool>, Self) {
        let (tx, rx) = watch::channel(false);
        (tx, Self(rx))
    }

    /// Resolves once listed. Also resolves when the watch is gone: the process is stopping.
    pub async fn wait(&self) {
        let _ = self.0.clone().wait_for(|listed| *listed).await;
    }

    async fn all(gates: &[Listed]) {
        futures::future::join_all(gates.iter().map(Listed::wait)).await;
    }
}

/// Versions of objects last written, by key. Losing it (a restart) costs one write per object.
#[derive(Clone, Debug, Default)]
pub struct WriteCache(Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>);

impl WriteCache {
    fn map(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, String>> {
        self.0.lock().expect("write cache poisoned")
    }

    pub fn is_current(&self, key: &str, version: &str) -> bool {
        self.map().get(key).is_some_and(|v| v == version)
    }

    pub fn record(&self, key: String, version: String) {
        self.map().insert(key, version);
    }

    pub fn forget(&self, key: &str) {
        self.map().remove(key);
    }
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub stores: Stores,
    /// Lookups by Secret, fleet, cluster and owner, kept from the same watch events.
    pub indexes: Arc<Indexes>,
    pub members: Arc<MemberClients>,
    /// Flux objects written whose watch events may not have arrived yet.
    pub recent_writes: Arc<RecentWrites>,
    /// Flux objects Application reconciles may hold at once.
    pub fanout_budget: Arc<FanoutBudget>,
    /// What plugin steps last wrote outside the watched kinds (member Secret copies, sidecar
    /// discovery), so unchanged objects are not written again.
    pub plugin_writes: WriteCache,
    /// Members' PolicyReports, watched while a fleet's policy plugin is on. `runtime::run`
    /// replaces it with one that queues plugin reconciles on changes.
    pub policy_reports: PolicyReportCollector,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    pub settings: Settings,
}

impl Context {
    pub fn new(
        client: Client,
        stores: Stores,
        indexes: Arc<Indexes>,
        metrics: Arc<Metrics>,
        settings: Settings,
    ) -> Self {
        let reporter = Reporter {
            controller: "kurator".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            stores,
            indexes,
            members: Arc::default(),
            recent_writes: Arc::default(),
            fanout_budget: Arc::default(),
            plugin_writes: WriteCache::default(),
            policy_reports: PolicyReportCollector::new(|_, _| {}),
            metrics,
            settings,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Many reconciles wait at once at start-up; every one of them must be released.
    #[tokio::test]
    async fn a_listed_gate_releases_every_concurrent_waiter() {
        let (mark_listed, listed) = Listed::new();
        let waiters: Vec<_> = (0..32)
            .map(|_| {
                let listed = listed.clone();
                tokio::spawn(async move { listed.wait().await })
            })
            .collect();
        tokio::task::yield_now().await;
        mark_listed.send_replace(true);
        let all = futures::future::join_all(waiters);
        let done = tokio::time::timeout(Duration::from_secs(10), all)
            .await
            .expect("every waiter is released");
        assert!(done.iter().all(Result::is_ok));
    }

    #[tokio::test]
    async fn a_gate_stays_closed_until_listed() {
        let (_mark_listed, listed) = Listed::new();
        let waited = tokio::time::timeout(Duration::from_millis(50), listed.wait()).await;
        assert!(waited.is_err());
    }
}
