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
    flux::{GitRepository, HelmRelease, HelmRepository, Kustomization, OCIRepository},
};

use crate::{member::MemberClients, metrics::Metrics};

/// Tunables, set from `kurator controller` flags.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How often a ready AttachedCluster is health-checked again.
    pub health_interval: Duration,
    /// Upper bound for one member health check.
    pub probe_timeout: Duration,
    /// Reconciles running at once, per controller.
    pub concurrency: u16,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            health_interval: Duration::from_secs(30),
            probe_timeout: Duration::from_secs(10),
            concurrency: 16,
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
}

/// The Flux objects on the host.
#[derive(Clone)]
pub struct FluxStores {
    pub git_repositories: Store<GitRepository>,
    pub helm_repositories: Store<HelmRepository>,
    pub oci_repositories: Store<OCIRepository>,
    pub kustomizations: Store<Kustomization>,
    pub helm_releases: Store<HelmRelease>,
}

impl FluxStores {
    /// Whether every Flux watch delivered its first list within `timeout`. False while Flux's
    /// CRDs are missing: their watches keep retrying.
    pub async fn ready_within(&self, timeout: Duration) -> bool {
        let all = async {
            futures::join!(
                self.git_repositories.wait_until_ready(),
                self.helm_repositories.wait_until_ready(),
                self.oci_repositories.wait_until_ready(),
                self.kustomizations.wait_until_ready(),
                self.helm_releases.wait_until_ready(),
            )
        };
        tokio::time::timeout(timeout, all).await.is_ok()
    }
}

impl Stores {
    /// Resolves once every watch has delivered its first full list, so no reconcile acts on
    /// a partial view (a missing cluster would otherwise look deleted).
    pub async fn wait_until_ready(&self) {
        // An Err means the watch was dropped: the process is shutting down.
        let _ = futures::join!(
            self.attached_clusters.wait_until_ready(),
            self.clusters.wait_until_ready(),
            self.custom_clusters.wait_until_ready(),
            self.fleets.wait_until_ready(),
            self.applications.wait_until_ready(),
            self.secrets.wait_until_ready(),
        );
    }
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub stores: Stores,
    pub members: MemberClients,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    pub settings: Settings,
}

impl Context {
    pub fn new(client: Client, stores: Stores, metrics: Arc<Metrics>, settings: Settings) -> Self {
        let reporter = Reporter {
            controller: "kurator".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            stores,
            members: MemberClients::default(),
            metrics,
            settings,
        }
    }
}
