//! Wires the controllers: one watch per kind feeding a store and the indexes, the trigger
//! table routing every change to the controllers it wakes, and one controller per pipeline.

use std::{future::Future, sync::Arc, time::Duration};

use futures::{FutureExt, StreamExt, channel::mpsc};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, Resource,
    core::PartialObjectMeta,
    runtime::{
        Controller,
        controller::{self, Action},
        watcher,
    },
};
use kurator_api::{
    Application, AttachedCluster, Cluster, CustomCluster, Fleet,
    flux::{
        GitRepository, HelmChart, HelmRelease, HelmRepository, Kustomization, OCIRepository,
        StatusView,
    },
    labels::MANAGED_BY,
};
use tracing::{info, warn};

use crate::{
    application, cluster,
    context::{Context, FluxStores, Settings, Stores},
    error::Error,
    fleet,
    index::{Indexes, Key, Kind},
    metrics::Metrics,
    plugins::{self, collector::PolicyReportCollector, render::MANAGED_BY_FLEET_MANAGER},
    triggers::{Change, Dispatcher, Queues},
    watch::{Watch, metadata_events, never},
};

/// Flux objects the controller wrote: Applications' (`kurator`) and plugins'
/// (`fleet-manager`, upstream's value). Nobody else's Flux objects are cached.
fn flux_selector() -> String {
    format!(
        "{MANAGED_BY} in ({},{MANAGED_BY_FLEET_MANAGER})",
        application::build::MANAGED_BY_KURATOR
    )
}

/// Runs every controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let attached = Watch::<AttachedCluster>::new();
    let clusters = Watch::<Cluster>::new();
    let custom = Watch::<CustomCluster>::new();
    let fleets = Watch::<Fleet>::new();
    let applications = Watch::<Application>::new();
    let secrets = Watch::<PartialObjectMeta<Secret>>::new();
    let git = Watch::<StatusView<GitRepository>>::new();
    let helm_repos = Watch::<StatusView<HelmRepository>>::new();
    let oci = Watch::<StatusView<OCIRepository>>::new();
    let helm_charts = Watch::<StatusView<HelmChart>>::new();
    let kustomizations = Watch::<StatusView<Kustomization>>::new();
    let helm_releases = Watch::<StatusView<HelmRelease>>::new();

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
            helm_charts: helm_charts.store.clone(),
            kustomizations: kustomizations.store.clone(),
            helm_releases: helm_releases.store.clone(),
            listed: vec![
                git.listed.clone(),
                helm_repos.listed.clone(),
                oci.listed.clone(),
                helm_charts.listed.clone(),
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

    // Every reconcile request, from every watch, goes through the trigger table into these.
    let (ac_tx, ac_rx) = mpsc::unbounded();
    let (fleet_tx, fleet_rx) = mpsc::unbounded();
    let (plugins_tx, plugins_rx) = mpsc::unbounded();
    let (app_tx, app_rx) = mpsc::unbounded();
    let indexes = Arc::new(Indexes::default());
    let dispatcher = Arc::new(Dispatcher {
        index: indexes.clone(),
        queues: Queues {
            attached_clusters: ac_tx,
            fleets: fleet_tx,
            plugins: plugins_tx,
            applications: app_tx,
        },
        recent_writes: Arc::default(),
    });

    let mut ctx = Context::new(
        client.clone(),
        stores.clone(),
        indexes,
        metrics,
        settings.clone(),
    );
    ctx.recent_writes = dispatcher.recent_writes.clone();
    ctx.policy_reports = PolicyReportCollector::new({
        let dispatcher = dispatcher.clone();
        move |namespace, fleet| {
            dispatcher.dispatch(&Change {
                key: Key::new(Kind::MemberPolicyReport, namespace, fleet),
                before: None,
                after: None,
                fleet: Some(fleet.to_string()),
            })
        }
    });
    let ctx = Arc::new(ctx);
    let config = controller::Config::default()
        .concurrency(settings.concurrency)
        .debounce(Duration::from_millis(10));
    let shutdown = Box::pin(shutdown).shared();

    // Controllers are fed through their queues only: the trigger table also routes each
    // controller's own kind (`Mapper::Itself`).
    let cluster_controller =
        Controller::for_shared_stream(never(), stores.attached_clusters.clone())
            .with_config(config.clone())
            .reconcile_on(ac_rx)
            .graceful_shutdown_on(shutdown.clone())
            .run(
                cluster::reconcile,
                error_policy(cluster::CONTROLLER),
                ctx.clone(),
            )
            .for_each(log_result(cluster::CONTROLLER));
    let fleet_controller = Controller::for_shared_stream(never(), stores.fleets.clone())
        .with_config(config.clone())
        .reconcile_on(fleet_rx)
        .graceful_shutdown_on(shutdown.clone())
        .run(
            fleet::reconcile,
            error_policy(fleet::CONTROLLER),
            ctx.clone(),
        )
        .for_each(log_result(fleet::CONTROLLER));
    let plugins_controller = Controller::for_shared_stream(never(), stores.fleets.clone())
        .with_config(config.clone())
        .reconcile_on(plugins_rx)
        .graceful_shutdown_on(shutdown.clone())
        .run(
            plugins::reconcile,
            error_policy(plugins::CONTROLLER),
            ctx.clone(),
        )
        .for_each(log_result(plugins::CONTROLLER));
    let application_controller =
        Controller::for_shared_stream(never(), stores.applications.clone())
            .with_config(config)
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
    let all = watcher::Config::default;
    let ours = || watcher::Config::default().labels(&flux_selector());
    let d = || dispatcher.clone();
    let watches = futures::future::join_all([
        attached.typed(Api::all(client.clone()), all(), d()),
        clusters.typed(Api::all(client.clone()), all(), d()),
        custom.typed(Api::all(client.clone()), all(), d()),
        fleets.typed(Api::all(client.clone()), all(), d()),
        applications.typed(Api::all(client.clone()), all(), d()),
        secrets.run(
            metadata_events(Api::<PartialObjectMeta<Secret>>::all(client.clone()), all()),
            d(),
        ),
        git.typed(Api::all(client.clone()), ours(), d()),
        helm_repos.typed(Api::all(client.clone()), ours(), d()),
        oci.typed(Api::all(client.clone()), ours(), d()),
        helm_charts.typed(Api::all(client.clone()), ours(), d()),
        kustomizations.typed(Api::all(client.clone()), ours(), d()),
        helm_releases.typed(Api::all(client.clone()), ours(), d()),
    ]);
    // Each reconcile waits for every store's first list, so none acts on a partial view.
    let controllers = futures::future::join4(
        cluster_controller,
        fleet_controller,
        plugins_controller,
        application_controller,
    );
    tokio::select! {
        _ = watches => warn!("watches ended"),
        _ = controllers => info!("controllers stopped"),
    }
}

/// Retries by the error's category (see [`crate::error::Category::requeue_after`]). A call
/// the API server refused (403) also becomes a Warning Event on the object naming the missing
/// permission, beside the log line: the controller keeps running without that permission.
fn error_policy<K>(controller: &'static str) -> impl Fn(Arc<K>, &Error, Arc<Context>) -> Action
where
    K: Resource<DynamicType = ()>,
{
    move |obj, error, ctx| {
        ctx.metrics.error(controller, error);
        if let Some(message) = error.forbidden() {
            let (object, message) = (obj.object_ref(&()), message.to_string());
            let plural = K::plural(&()).to_string();
            tokio::spawn(async move {
                crate::status::publish_forbidden(&ctx, &object, &plural, controller, &message)
                    .await;
            });
        }
        Action::requeue(error.category().requeue_after())
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
