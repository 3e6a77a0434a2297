//! Wires the controllers: one watch per kind feeding shared stores, and a controller per
//! reconciled kind reading them.

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{
    FutureExt, StreamExt,
    channel::mpsc::{self, UnboundedReceiver, UnboundedSender},
    future::BoxFuture,
};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, Resource, ResourceExt,
    core::PartialObjectMeta,
    runtime::{
        Controller, WatchStreamExt,
        controller::{self, Action},
        reflector::{self, Store},
        watcher,
    },
};
use kurator_api::{
    Application, AttachedCluster, Cluster, CustomCluster, Fleet,
    fleet::ClusterKind,
    flux::{GitRepository, HelmRelease, HelmRepository, Kustomization, OCIRepository},
    labels::FLEET_NAME,
};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::{
    application, cluster,
    context::{Context, FluxStores, Listed, Settings, Stores},
    error::{Category, Error},
    fleet,
    metrics::Metrics,
    plugins::collector::PolicyReportCollector,
};

/// A watch feeding a store and any number of controllers.
///
/// Each subscriber gets its own unbounded channel of changed objects. kube-runtime's shared
/// `ReflectHandle` is not used: when a broadcast object is gone from the store by the time it
/// is read, its `poll_next` returns `Pending` without arranging a wake-up, and a controller fed
/// by it could stall indefinitely (seen at start-up with 100 existing clusters). Controllers
/// drain their triggers continuously, so the channels stay short.
struct Shared<K: Resource + Clone + 'static>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store: Store<K>,
    writer: reflector::store::Writer<K>,
    subscribers: Mutex<Vec<UnboundedSender<Arc<K>>>>,
    listed: Listed,
    mark_listed: watch::Sender<bool>,
}

impl<K> Shared<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    fn new() -> Self {
        let (store, writer) = reflector::store();
        let (mark_listed, listed) = Listed::new();
        Self {
            store,
            writer,
            subscribers: Mutex::default(),
            listed,
            mark_listed,
        }
    }

    /// Every object the watch applies from now on, and the whole store after each (re)list.
    fn subscribe(&self) -> UnboundedReceiver<Arc<K>> {
        let (tx, rx) = mpsc::unbounded();
        self.subscribers
            .lock()
            .expect("subscriber list poisoned")
            .push(tx);
        rx
    }

    /// The task that drives the watch and feeds the store and the subscribers. Deletions go to
    /// `on_delete` (a deleted object can no longer be read from the store by a controller).
    fn watch(self, api: Api<K>, on_delete: impl Fn(&K) + Send + 'static) -> BoxFuture<'static, ()> {
        let subscribers = self
            .subscribers
            .into_inner()
            .expect("subscriber list poisoned");
        let (store, mark_listed) = (self.store, self.mark_listed);
        let publish = move |obj: Arc<K>| {
            for tx in &subscribers {
                // A closed channel means its controller stopped; nothing needs the event.
                let _ = tx.unbounded_send(obj.clone());
            }
        };
        watcher(api, watcher::Config::default().any_semantic())
            .default_backoff()
            .reflect(self.writer)
            .for_each(move |event| {
                match event {
                    Ok(watcher::Event::Apply(obj)) => publish(Arc::new(obj)),
                    // After a (re)list the store is complete: publish it whole, like a resync.
                    Ok(watcher::Event::InitDone) => {
                        let objects = store.state();
                        debug!(kind = %K::kind(&()), objects = objects.len(), "listed");
                        mark_listed.send_replace(true);
                        objects.into_iter().for_each(&publish);
                    }
                    Ok(watcher::Event::Delete(obj)) => on_delete(&obj),
                    Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                    Err(e) => warn!(kind = %K::kind(&()), error = %e, "watch error, retrying"),
                }
                futures::future::ready(())
            })
            .boxed()
    }
}

/// Queues reconciles of `refs` through a controller's `reconcile_on` channel.
fn send_all<R>(tx: &UnboundedSender<R>, refs: impl IntoIterator<Item = R>) {
    for r in refs {
        // The receiver lives as long as its controller; after that nothing needs the event.
        let _ = tx.unbounded_send(r);
    }
}

/// Runs every controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let attached = Shared::<AttachedCluster>::new();
    let clusters = Shared::<Cluster>::new();
    let custom = Shared::<CustomCluster>::new();
    let fleets = Shared::<Fleet>::new();
    let applications = Shared::<Application>::new();
    let secrets = Shared::<PartialObjectMeta<Secret>>::new();
    let git = Shared::<GitRepository>::new();
    let helm_repos = Shared::<HelmRepository>::new();
    let oci = Shared::<OCIRepository>::new();
    let kustomizations = Shared::<Kustomization>::new();
    let helm_releases = Shared::<HelmRelease>::new();

    let stores = Stores {
        attached_clusters: attached.store.clone(),
        clusters: clusters.store.clone(),
        custom_clusters: custom.store.clone(),
        fleets: fleets.store.clone(),
        applications: applications.store.clone(),
        secrets: secrets.store.clone(),
        flux: FluxStores {
            git_repositories: git.store.clone(),
            helm_repositories: helm_repos.store.clone(),
            oci_repositories: oci.store.clone(),
            kustomizations: kustomizations.store.clone(),
            helm_releases: helm_releases.store.clone(),
            listed: vec![
                git.listed.clone(),
                helm_repos.listed.clone(),
                oci.listed.clone(),
                kustomizations.listed.clone(),
                helm_releases.listed.clone(),
            ],
        },
        listed: vec![
            attached.listed.clone(),
            clusters.listed.clone(),
            custom.listed.clone(),
            fleets.listed.clone(),
            applications.listed.clone(),
            secrets.listed.clone(),
        ],
    };
    // Deletions and policy report changes reach the controllers through these.
    let (fleet_tx, fleet_rx) = mpsc::unbounded();
    let (ac_tx, ac_rx) = mpsc::unbounded();
    let (app_tx, app_rx) = mpsc::unbounded();

    let mut ctx = Context::new(client.clone(), stores.clone(), metrics, settings.clone());
    ctx.policy_reports = PolicyReportCollector::new({
        let tx = fleet_tx.clone();
        move |namespace, name| send_all(&tx, [reflector::ObjectRef::new(name).within(namespace)])
    });
    let ctx = Arc::new(ctx);
    let config = controller::Config::default()
        .concurrency(settings.concurrency)
        .debounce(Duration::from_millis(50));
    let shutdown = Box::pin(shutdown).shared();

    let ac_store = stores.attached_clusters.clone();
    let cluster_controller = Controller::for_shared_stream(attached.subscribe(), ac_store.clone())
        .with_config(config.clone())
        .watches_shared_stream(secrets.subscribe(), move |secret| {
            cluster::clusters_using_secret(&ac_store, &secret)
        })
        .reconcile_on(ac_rx)
        .graceful_shutdown_on(shutdown.clone())
        .run(
            cluster::reconcile,
            error_policy(cluster::CONTROLLER),
            ctx.clone(),
        )
        .for_each(log_result(cluster::CONTROLLER));

    let fleet_store = stores.fleets.clone();
    let (f1, f2, f3, f4) = (
        fleet_store.clone(),
        fleet_store.clone(),
        fleet_store.clone(),
        fleet_store.clone(),
    );
    let fleet_controller = Controller::for_shared_stream(fleets.subscribe(), fleet_store.clone())
        .with_config(config.clone())
        .watches_shared_stream(attached.subscribe(), move |c| {
            map_cluster(&f1, ClusterKind::AttachedCluster, c.as_ref())
        })
        .watches_shared_stream(clusters.subscribe(), move |c| {
            map_cluster(&f2, ClusterKind::Cluster, c.as_ref())
        })
        .watches_shared_stream(custom.subscribe(), move |c| {
            map_cluster(&f3, ClusterKind::CustomCluster, c.as_ref())
        })
        .watches_shared_stream(helm_releases.subscribe(), |r| fleet_owner_of(r.as_ref()))
        .watches_shared_stream(secrets.subscribe(), move |s| {
            fleets_using_secret(&f4, s.as_ref())
        })
        .reconcile_on(fleet_rx)
        .graceful_shutdown_on(shutdown.clone())
        .run(
            fleet::reconcile,
            error_policy(fleet::CONTROLLER),
            ctx.clone(),
        )
        .for_each(log_result(fleet::CONTROLLER));

    let app_store = stores.applications.clone();
    let (a1, a2) = (app_store.clone(), app_store.clone());
    let application_controller =
        Controller::for_shared_stream(applications.subscribe(), app_store.clone())
            .with_config(config)
            .watches_shared_stream(fleets.subscribe(), move |f| apps_for_fleet(&a1, f.as_ref()))
            .watches_shared_stream(attached.subscribe(), move |c| {
                apps_for_cluster(&a2, c.as_ref())
            })
            .watches_shared_stream(git.subscribe(), |o| application::owner_of(o.as_ref()))
            .watches_shared_stream(helm_repos.subscribe(), |o| {
                application::owner_of(o.as_ref())
            })
            .watches_shared_stream(oci.subscribe(), |o| application::owner_of(o.as_ref()))
            .watches_shared_stream(kustomizations.subscribe(), |o| {
                application::owner_of(o.as_ref())
            })
            .watches_shared_stream(helm_releases.subscribe(), |o| {
                application::owner_of(o.as_ref())
            })
            .reconcile_on(app_rx)
            .graceful_shutdown_on(shutdown)
            .run(
                application::reconcile,
                error_policy(application::CONTROLLER),
                ctx.clone(),
            )
            .for_each(log_result(application::CONTROLLER));

    // The watches run until the controllers stop; the controllers wait for the stores. The
    // Flux watches keep retrying (with backoff) while Flux's CRDs are missing.
    let watches = futures::future::join_all([
        attached.watch(Api::all(client.clone()), {
            let (fleets, tx) = (stores.fleets.clone(), fleet_tx.clone());
            move |c| send_all(&tx, map_cluster(&fleets, ClusterKind::AttachedCluster, c))
        }),
        clusters.watch(Api::all(client.clone()), {
            let (fleets, tx) = (stores.fleets.clone(), fleet_tx.clone());
            move |c| send_all(&tx, map_cluster(&fleets, ClusterKind::Cluster, c))
        }),
        custom.watch(Api::all(client.clone()), {
            let (fleets, tx) = (stores.fleets.clone(), fleet_tx.clone());
            move |c| send_all(&tx, map_cluster(&fleets, ClusterKind::CustomCluster, c))
        }),
        fleets.watch(Api::all(client.clone()), {
            let (apps, tx) = (stores.applications.clone(), app_tx.clone());
            move |f| send_all(&tx, apps_for_fleet(&apps, f))
        }),
        applications.watch(Api::all(client.clone()), |_| {}),
        secrets.watch(Api::all(client.clone()), {
            let (acs, fleets, to_fleet) = (
                stores.attached_clusters.clone(),
                stores.fleets.clone(),
                fleet_tx.clone(),
            );
            move |secret| {
                send_all(&ac_tx, cluster::clusters_using_secret(&acs, secret));
                send_all(&to_fleet, fleets_using_secret(&fleets, secret));
            }
        }),
        git.watch(Api::all(client.clone()), owner_sender(&app_tx)),
        helm_repos.watch(Api::all(client.clone()), owner_sender(&app_tx)),
        oci.watch(Api::all(client.clone()), owner_sender(&app_tx)),
        kustomizations.watch(Api::all(client.clone()), owner_sender(&app_tx)),
        helm_releases.watch(Api::all(client.clone()), {
            let (to_app, to_fleet) = (owner_sender(&app_tx), fleet_tx.clone());
            move |r| {
                to_app(r);
                send_all(&to_fleet, fleet_owner_of(r));
            }
        }),
    ]);
    // Each reconcile waits for every store's first list, so none acts on a partial view.
    let controllers =
        futures::future::join3(cluster_controller, fleet_controller, application_controller);
    tokio::select! {
        _ = watches => warn!("watches ended"),
        _ = controllers => info!("controllers stopped"),
    }
}

/// On deletion of a Flux object, reconcile its Application (it recreates what it wants).
fn owner_sender<K: Resource>(
    tx: &UnboundedSender<reflector::ObjectRef<Application>>,
) -> impl Fn(&K) + Send + 'static {
    let tx = tx.clone();
    move |o| send_all(&tx, application::owner_of(o))
}

/// The Fleet owning a plugin object.
fn fleet_owner_of<K: Resource>(obj: &K) -> Option<reflector::ObjectRef<Fleet>> {
    let namespace = obj.meta().namespace.as_deref()?;
    obj.meta()
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.kind == "Fleet" && o.api_version.starts_with("fleet.kurator.dev/"))
        .map(|o| reflector::ObjectRef::new(&o.name).within(namespace))
}

/// Fleets whose metric plugin reads this Secret (the object store).
fn fleets_using_secret(
    fleets: &Store<Fleet>,
    secret: &PartialObjectMeta<Secret>,
) -> Vec<reflector::ObjectRef<Fleet>> {
    let (Some(namespace), Some(name)) = (
        secret.metadata.namespace.as_deref(),
        secret.metadata.name.as_deref(),
    ) else {
        return Vec::new();
    };
    fleets
        .state()
        .iter()
        .filter(|f| f.namespace().as_deref() == Some(namespace))
        .filter(|f| {
            f.spec
                .plugin
                .as_ref()
                .and_then(|p| p.metric.as_ref())
                .and_then(|m| m.thanos.as_ref())
                .and_then(|t| t.object_store_config.as_ref())
                .is_some_and(|o| o.secret_name == name)
        })
        .map(|f| reflector::ObjectRef::from_obj(f.as_ref()))
        .collect()
}

/// Applications with a destination in this fleet.
fn apps_for_fleet(
    apps: &Store<Application>,
    fleet: &Fleet,
) -> Vec<reflector::ObjectRef<Application>> {
    let namespace = fleet.namespace().unwrap_or_default();
    application::applications_for_fleet(apps, &namespace, &fleet.name_any())
}

/// Applications deploying to the fleet this cluster belongs to (its readiness shows in them).
fn apps_for_cluster<K: ResourceExt>(
    apps: &Store<Application>,
    cluster: &K,
) -> Vec<reflector::ObjectRef<Application>> {
    let (Some(fleet), Some(namespace)) = (cluster.labels().get(FLEET_NAME), cluster.namespace())
    else {
        return Vec::new();
    };
    application::applications_for_fleet(apps, &namespace, fleet)
}

fn map_cluster<K: ResourceExt>(
    fleets: &Store<Fleet>,
    kind: ClusterKind,
    cluster: &K,
) -> Vec<reflector::ObjectRef<Fleet>> {
    let label = cluster.labels().get(FLEET_NAME).map(String::as_str);
    fleet::fleets_for_cluster(
        fleets,
        kind,
        &cluster.name_any(),
        cluster.namespace().as_deref(),
        label,
    )
}

/// Transient errors retry in seconds; rejected writes retry slowly (the input must change).
fn error_policy<K>(controller: &'static str) -> impl Fn(Arc<K>, &Error, Arc<Context>) -> Action {
    move |_, error, ctx| {
        ctx.metrics.error(controller, error);
        match error.category() {
            Category::Transient => Action::requeue(Duration::from_secs(5)),
            Category::Rejected | Category::Internal => Action::requeue(Duration::from_secs(60)),
        }
    }
}

fn log_result<K, E: std::fmt::Display>(
    controller: &'static str,
) -> impl FnMut(Result<K, E>) -> futures::future::Ready<()> {
    move |result| {
        if let Err(e) = result {
            warn!(controller, error = %e, "reconcile failed");
        }
        futures::future::ready(())
    }
}
