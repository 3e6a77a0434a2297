//! Harness: real control planes (host + members) and the controllers running in-process.

#![allow(dead_code)]

pub mod kyverno;
pub mod rollout;

use std::{collections::BTreeMap, fmt::Debug, sync::Arc, time::Duration};

use k8s_openapi::{
    ByteString, NamespaceResourceScope,
    api::core::v1::{Event, Secret},
};
use kube::{
    Api, Client, Resource,
    api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use kurator_api::{
    AttachedCluster,
    cluster::{AttachedClusterSpec, SecretKeyRef},
    fleet::{ClusterKind, Fleet, FleetCluster, FleetSpec},
};
use kurator_controller::{Settings, metrics::Metrics, runtime};
use kurator_testenv::TestEnv;
use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::oneshot;

pub const NS: &str = "default";

pub struct Harness {
    pub env: TestEnv,
    pub client: Client,
    /// Behind a lock so that [`Harness::start_controller`] takes `&self`: a stand-in
    /// borrowing `env` (e.g. `MetricsStandIn`) can start before the controllers it configures.
    controller: std::sync::Mutex<Option<RunningController>>,
}

struct RunningController {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Harness {
    /// A host with `members` member clusters and the controllers, health-checking every
    /// `health_interval`.
    pub async fn start(members: usize, health_interval: Duration) -> Harness {
        Self::start_with(members, health_interval, false).await
    }

    /// As `start`, with Flux's controllers running against the host when `flux` is set.
    pub async fn start_with(members: usize, health_interval: Duration, flux: bool) -> Harness {
        let settings = Settings {
            health_interval,
            ..Default::default()
        };
        Self::start_with_settings(members, flux, settings).await
    }

    /// As `start_with`, with every controller setting given.
    pub async fn start_with_settings(members: usize, flux: bool, settings: Settings) -> Harness {
        let env = Self::environment(members, flux).await;
        Self::with_controller(env, settings).await
    }

    /// The control planes (and Flux) without the controllers, for tests that prepare the host
    /// before the controllers' first list.
    pub async fn environment(members: usize, flux: bool) -> TestEnv {
        TestEnv::builder()
            .members(members)
            .flux(flux)
            .crds(vec![kurator_api::crds::all_yaml()])
            .start()
            .await
            .expect("test environment starts")
    }

    /// Starts the controllers against `env`'s host.
    pub async fn with_controller(env: TestEnv, settings: Settings) -> Harness {
        let client = env.host().client().await.expect("host client");
        Self::with_controller_as(env, client, settings).await
    }

    /// Starts the controllers against `env`'s host with `controller_client` (e.g. a
    /// ServiceAccount's token, to run them under that account's RBAC); the harness's own
    /// `client`, for the test's calls, stays the host's admin.
    pub async fn with_controller_as(
        env: TestEnv,
        controller_client: Client,
        settings: Settings,
    ) -> Harness {
        let h = Self::without_controller(env).await;
        h.start_controller_as(controller_client, settings);
        h
    }

    /// `env` without the controllers yet: [`Harness::start_controller`] starts them.
    pub async fn without_controller(env: TestEnv) -> Harness {
        let client = env.host().client().await.expect("host client");
        Harness {
            env,
            client,
            controller: std::sync::Mutex::new(None),
        }
    }

    /// Starts the controllers against the host as its admin, once.
    pub fn start_controller(&self, settings: Settings) {
        self.start_controller_as(self.client.clone(), settings);
    }

    fn start_controller_as(&self, controller_client: Client, settings: Settings) {
        let mut running = self.controller.lock().unwrap();
        assert!(running.is_none(), "the controllers run already");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(runtime::run(
            controller_client,
            settings,
            Arc::new(Metrics::default()),
            async {
                let _ = stopped.await;
            },
        ));
        *running = Some(RunningController { stop, task });
    }

    /// Whether the controllers are still running (they stop only on shutdown).
    pub fn controller_running(&self) -> bool {
        self.controller
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|c| !c.task.is_finished())
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
    {
        Api::namespaced(self.client.clone(), NS)
    }

    /// A client for each member, in order.
    pub async fn member_clients(&self) -> Vec<Client> {
        futures::future::join_all(
            self.env
                .members()
                .iter()
                .map(|m| async { m.client().await.expect("member client") }),
        )
        .await
    }

    /// Kubeconfig Secret `name` holding `kubeconfig` under `key`.
    pub async fn put_secret(&self, name: &str, key: &str, kubeconfig: &str) {
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(
                key.to_string(),
                ByteString(kubeconfig.as_bytes().to_vec()),
            )])),
            ..Default::default()
        };
        apply(&self.api::<Secret>(), name, &secret).await;
    }

    /// An AttachedCluster named `name` for member `member` (1-based), Secret and all.
    pub async fn attach_member(&self, name: &str, member: usize) {
        let kubeconfig = self.env.members()[member - 1].kubeconfig_yaml();
        self.put_secret(name, "value", &kubeconfig).await;
        self.create_attached(name, name, "value").await;
    }

    /// Attaches `members` (member 1, 2, … in order) and puts them in the AttachedCluster fleet
    /// `quickstart`; returns once the fleet counts every one ready (within `wait`).
    pub async fn attach_quickstart(&self, members: &[&str], wait: Duration) {
        for (i, name) in members.iter().enumerate() {
            self.attach_member(name, i + 1).await;
        }
        let fleets: Api<Fleet> = self.api();
        apply(
            &fleets,
            "quickstart",
            &attached_fleet("quickstart", members),
        )
        .await;
        wait_for(&fleets, "quickstart", wait, |f| {
            f.status
                .as_ref()
                .is_some_and(|s| s.ready_clusters == members.len() as i32)
        })
        .await;
    }

    pub async fn create_attached(&self, name: &str, secret: &str, key: &str) {
        let ac = AttachedCluster::new(
            name,
            AttachedClusterSpec {
                kubeconfig: SecretKeyRef {
                    name: secret.into(),
                    key: key.into(),
                },
            },
        );
        self.api::<AttachedCluster>()
            .create(&PostParams::default(), &ac)
            .await
            .expect("create AttachedCluster");
    }

    /// Events recorded about objects named `name`, as text.
    pub async fn events_about(&self, name: &str) -> String {
        let events = self
            .api::<Event>()
            .list(&ListParams::default())
            .await
            .expect("list events");
        events
            .items
            .iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(name))
            .map(|e| format!("{:?} {:?}\n", e.reason, e.message))
            .collect()
    }

    pub async fn shutdown(self) {
        let running = self.controller.lock().unwrap().take();
        if let Some(RunningController { stop, task }) = running {
            let _ = stop.send(());
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let running = self
            .controller
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(c) = running {
            c.task.abort();
        }
    }
}

/// Server-side apply of a typed object (field manager `test`).
pub async fn apply<K>(api: &Api<K>, name: &str, obj: &K)
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + Debug,
{
    let mut value = serde_json::to_value(obj).expect("serialisable");
    value["apiVersion"] = K::api_version(&()).into();
    value["kind"] = K::kind(&()).into();
    api.patch(
        name,
        &PatchParams::apply("test").force(),
        &Patch::Apply(&value),
    )
    .await
    .expect("apply");
}

/// [`kurator_testenv::wait::until`] for tests that panic: on timeout the message names what
/// was awaited and the last thing seen.
pub async fn until<F, Fut, O>(what: impl std::fmt::Display, timeout: Duration, check: F) -> O::Value
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = O>,
    O: kurator_testenv::wait::Observation,
{
    kurator_testenv::wait::until(what, timeout, check)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Polls `name` until `check` holds, or panics after `timeout` showing the last state seen.
pub async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    timeout: Duration,
    check: impl Fn(&K) -> bool,
) -> K
where
    K: Resource + Clone + DeserializeOwned + Debug + Serialize,
{
    until(format!("{name} to meet the condition"), timeout, || async {
        match api.get_opt(name).await.expect("get") {
            Some(obj) if check(&obj) => Ok(Some(obj)),
            Some(obj) => Err(format!(
                "\n{}",
                serde_saphyr::to_string(&obj).unwrap_or_default()
            )),
            None => Err("<absent>".to_string()),
        }
    })
    .await
}

/// Polls until `name` no longer exists.
pub async fn wait_gone<K>(api: &Api<K>, name: &str, timeout: Duration)
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    until(format!("{name} to be gone"), timeout, || async {
        api.get_opt(name).await.expect("get").is_none()
    })
    .await
}

/// Reason of the `Ready` condition.
pub fn ready_reason(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
) -> Option<String> {
    kurator_api::conditions::find(conditions, "Ready").map(|c| c.reason.clone())
}

/// A Fleet `name` of the given AttachedClusters, without plugins.
pub fn attached_fleet(name: &str, members: &[&str]) -> Fleet {
    Fleet::new(
        name,
        FleetSpec {
            clusters: members
                .iter()
                .map(|m| FleetCluster {
                    name: m.to_string(),
                    kind: ClusterKind::AttachedCluster,
                })
                .collect(),
            plugin: None,
        },
    )
}

/// Creates or updates the metric plugin's object-store Secret `thanos-objstore` (key
/// `objstore.yml`) in the test namespace with `config`.
pub async fn put_objstore(h: &Harness, config: &str) {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("thanos-objstore".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            kurator_controller::plugins::objstore::OBJSTORE_KEY.to_string(),
            ByteString(config.as_bytes().to_vec()),
        )])),
        ..Default::default()
    };
    apply(&h.api::<Secret>(), "thanos-objstore", &secret).await;
}

/// The metric plugin's binaries (Prometheus, Thanos) and a chart repository serving the real
/// metric and grafana charts; keep the directory as long as the repository.
pub async fn metric_charts() -> (
    kurator_testenv::MetricsBinaries,
    tempfile::TempDir,
    kurator_testenv::HelmRepo,
) {
    let binaries = tokio::task::spawn_blocking(kurator_testenv::ensure_metrics_binaries)
        .await
        .unwrap()
        .expect("Prometheus and Thanos binaries");
    let dir = tempfile::tempdir().expect("temporary directory");
    let charts =
        kurator_testenv::HelmRepo::start(dir.path().join("charts")).expect("chart repository");
    kurator_testenv::add_plugin_charts(&charts).expect("the real metric and grafana charts");
    (binaries, dir, charts)
}
