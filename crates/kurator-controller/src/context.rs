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
use kurator_api::{AttachedCluster, Cluster, CustomCluster, Fleet};

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
    /// Secret metadata only: enough to notice a kubeconfig change without caching secrets.
    pub secrets: Store<PartialObjectMeta<Secret>>,
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
