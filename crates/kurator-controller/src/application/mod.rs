//! Application controller: turns each Application into Flux objects (one source, one
//! Kustomization or HelmRelease per policy and cluster), prunes what is no longer wanted, and
//! reports where every cluster stands.
//!
//! Pipeline: dereference (`targets`, from the stores) → build (`build`, pure) → apply
//! (`apply`) → status (`status`, pure). With `spec.stagedRollout`, a rollout step
//! (`rollout_step`: observe, `rollout::machine::step`, status written first) runs between
//! build and apply, and `rollout_build` pins each cluster's Kustomization to its revision.

pub mod apply;
pub mod build;
pub mod rollout_build;
pub mod rollout_metrics;
pub mod rollout_observe;
pub mod rollout_step;
pub mod status;
pub mod targets;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures::{FutureExt, StreamExt, TryStreamExt, future::BoxFuture, stream};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api, Resource, ResourceExt,
    runtime::{
        controller::Action,
        finalizer::{Event as Finalizer, finalizer},
        reflector::{ObjectRef, Store},
    },
};
use kurator_api::{
    Application, Fleet,
    fleet::FleetCluster,
    flux::{
        FluxKind, FluxStatus, GitRepository, HelmChart, HelmRelease, HelmRepository, Kustomization,
        OCIRepository, StatusView,
    },
    labels::APP_FINALIZER,
};
use tracing::{info, instrument};

use self::{
    apply::{apply_object, delete_object, flux_installed},
    build::{Desired, Existing, FluxObjectRef, Source},
    status::{Blocker, Observed, build_status},
    targets::{ClusterInfo, resolve},
};
use crate::{
    context::{Context, FluxStores},
    error::Error,
    index::{Key, Kind, stored},
    status::{apply_status, publish_ready_transition},
};

pub const CONTROLLER: &str = "application";

/// Flux objects written at once by one reconcile.
const WRITE_CONCURRENCY: usize = 16;

/// How long a reconcile waits for the Flux watches before asking whether Flux is installed.
const FLUX_WAIT: Duration = Duration::from_secs(5);
/// How often an Application re-checks while Flux is missing.
const FLUX_MISSING_RETRY: Duration = Duration::from_secs(30);

#[instrument(skip_all, fields(application = %app.name_any(), namespace = app.namespace().unwrap_or_default()))]
pub async fn reconcile(app: Arc<Application>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.stores.wait_until_ready().await;
    let _measure = ctx.metrics.reconcile(CONTROLLER);
    let namespace = app.namespace().unwrap_or_default();
    let api: Api<Application> = Api::namespaced(ctx.client.clone(), &namespace);
    let app = crate::finalizer::ensure(&api, app, APP_FINALIZER).await?;
    Ok(finalizer(&api, APP_FINALIZER, app, |event| async {
        match event {
            Finalizer::Apply(app) => reconcile_app(&app, &namespace, &ctx).await,
            Finalizer::Cleanup(app) => cleanup(&app, &ctx).await,
        }
    })
    .await?)
}

async fn reconcile_app(app: &Application, namespace: &str, ctx: &Context) -> Result<Action, Error> {
    let flux = &ctx.stores.flux;
    if !flux.ready_within(FLUX_WAIT).await {
        if flux_installed(&ctx.client).await? {
            // Installed just now: the watches catch up within their backoff.
            return Ok(Action::requeue(Duration::from_secs(2)));
        }
        write_status(
            app,
            namespace,
            ctx,
            &targets::Resolved::default(),
            &Observed::default(),
            Some(&Blocker::FluxNotInstalled),
            kept_rollout(app),
        )
        .await?;
        return Ok(Action::requeue(FLUX_MISSING_RETRY));
    }

    // dereference
    let resolved = resolve(
        app,
        |fleet| {
            ctx.stores
                .fleets
                .get(&ObjectRef::<Fleet>::new(fleet).within(namespace))
                .map(|f| (*f).clone())
        },
        |cluster| cluster_info(ctx, namespace, cluster),
    );
    let objects: usize = resolved.policies.iter().map(|p| p.targets.len()).sum();
    let _held = ctx.fanout_budget.hold(objects).await;
    // build
    let built = build::build(app, &resolved.policies)
        .map_err(|e| Blocker::InvalidSpec(e.to_string()))
        .and_then(|desired| match &app.spec.staged_rollout {
            Some(_) => rollout_build::supported(app)
                .map(|()| desired)
                .map_err(|e| Blocker::UnsupportedRolloutSource(e.to_string())),
            None => Ok(desired),
        });
    let mut desired = match built {
        Ok(desired) => desired,
        Err(blocker) => {
            write_status(
                app,
                namespace,
                ctx,
                &resolved,
                &Observed::default(),
                Some(&blocker),
                kept_rollout(app),
            )
            .await?;
            return Ok(Action::await_change());
        }
    };
    // staged rollout: step and write its state, then pin each cluster to its revision
    let rollout = match &app.spec.staged_rollout {
        Some(spec) => {
            let state = rollout_step::step(app, spec, namespace, ctx, &resolved).await?;
            rollout_build::pin(&app.name_any(), &mut desired, &state);
            Some((spec, state))
        }
        None => None,
    };
    // apply: bounded concurrency, so a large fan-out is not a chain of round trips
    let mut writes = apply_source(ctx, &desired.source).await? as usize;
    writes += apply_pinned(ctx, &desired.pinned_sources).await?;
    let tracking_chart: Vec<HelmChart> = desired.tracking_chart.iter().cloned().collect();
    writes += apply_all(ctx, &flux.helm_charts, &tracking_chart).await?;
    writes += apply_all(ctx, &flux.kustomizations, &desired.kustomizations).await?;
    writes += apply_all(ctx, &flux.helm_releases, &desired.helm_releases).await?;
    let mut pruned = 0;
    if resolved.complete {
        let uid = app.uid().unwrap_or_default();
        let unwanted = build::prune(app, &existing(ctx, &uid), &desired);
        pruned = unwanted.len();
        // Owned futures: closures over borrowed items trip the Send check of the controller.
        let deletes: Vec<BoxFuture<'static, Result<(), Error>>> = unwanted
            .into_iter()
            .map(|object| {
                let client = ctx.client.clone();
                async move { delete(&client, &object).await }.boxed()
            })
            .collect();
        stream::iter(deletes)
            .buffer_unordered(WRITE_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
    }
    if writes + pruned > 0 {
        info!(writes, pruned, "flux objects updated");
    }
    // status
    write_status(
        app,
        namespace,
        ctx,
        &resolved,
        &observed(flux, namespace, &desired),
        None,
        rollout.as_ref().map(|(_, state)| state),
    )
    .await?;
    // Flux object changes, fleet and cluster changes all trigger a reconcile; the long
    // requeue only guards against a missed event. A rollout also moves by the clock (soak
    // end, progress deadline).
    Ok(Action::requeue(match &rollout {
        Some((spec, state)) => rollout_step::requeue_after(spec, state, IDLE_REQUEUE),
        None => IDLE_REQUEUE,
    }))
}

/// Requeue of an Application with nothing due (guards against a missed event).
const IDLE_REQUEUE: Duration = Duration::from_secs(300);

/// The stored rollout state, kept as it is by a status write that does not step the rollout
/// (server-side apply would otherwise drop the rollout's only memory).
fn kept_rollout(app: &Application) -> Option<&kurator_api::rollout::StagedRolloutStatus> {
    app.spec.staged_rollout.as_ref()?;
    app.status.as_ref()?.staged_rollout.as_ref()
}

/// Deletes every Flux object the Application owns; Flux prunes the workloads from the
/// members (prune: true) and uninstalls releases. Works with the fleet and clusters gone.
async fn cleanup(app: &Application, ctx: &Context) -> Result<Action, Error> {
    let flux = &ctx.stores.flux;
    if !flux.ready_within(FLUX_WAIT).await && !flux_installed(&ctx.client).await? {
        return Ok(Action::await_change());
    }
    let uid = app.metadata.uid.clone().unwrap_or_default();
    for e in existing(ctx, &uid) {
        delete(&ctx.client, &e.object).await?;
    }
    info!("application deleted, flux objects removed");
    Ok(Action::await_change())
}

async fn write_status(
    app: &Application,
    namespace: &str,
    ctx: &Context,
    resolved: &targets::Resolved,
    observed: &Observed,
    blocker: Option<&Blocker>,
    rollout: Option<&kurator_api::rollout::StagedRolloutStatus>,
) -> Result<(), Error> {
    let now = Time(Timestamp::now());
    let mut status = build_status(app, resolved, observed, blocker, now.clone());
    let rollout_condition = match (blocker, rollout) {
        (Some(Blocker::UnsupportedRolloutSource(message)), _) => {
            Some(kurator_api::conditions::Desired::new(
                crate::rollout::condition::TYPE,
                false,
                status::reason::STAGED_ROLLOUT_UNSUPPORTED_SOURCE,
                message.clone(),
            ))
        }
        (_, Some(state)) => Some(crate::rollout::condition::condition(state)),
        _ => None,
    };
    status.staged_rollout = rollout.cloned();
    let previous = app.status.as_ref();
    if let Some(condition) = rollout_condition {
        let before = previous
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default();
        let merged = rollout_step::with_condition(before, condition, app.metadata.generation, now);
        status.conditions.extend(
            merged
                .into_iter()
                .filter(|c| c.type_ == crate::rollout::condition::TYPE),
        );
    }
    let api: Api<Application> = Api::namespaced(ctx.client.clone(), namespace);
    if apply_status(ctx, &api, app, previous, &status).await? {
        let before = previous
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default();
        publish_ready_transition(ctx, app, before, &status.conditions, "Sync").await;
    }
    Ok(())
}

pub(crate) fn cluster_info(
    ctx: &Context,
    namespace: &str,
    cluster: &FleetCluster,
) -> Option<ClusterInfo> {
    let member = crate::member::lookup(&ctx.stores, namespace, cluster)?;
    Some(ClusterInfo {
        labels: member.labels,
        kubeconfig: member.kubeconfig,
        ready: member.readiness.ready,
    })
}

/// Applies every object (those already up to date cost nothing); returns how many were written.
pub(crate) async fn apply_all<K>(
    ctx: &Context,
    store: &Store<StatusView<K>>,
    objects: &[K],
) -> Result<usize, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    // Owned futures (closures over borrowed items trip the Send check of the controller),
    // made as the stream pulls them: only the objects being written are copied.
    let (client, recent) = (ctx.client.clone(), ctx.recent_writes.clone());
    let applies = stream::iter(objects.iter().cloned()).map(
        move |object| -> BoxFuture<'static, Result<bool, Error>> {
            let (client, store, recent) = (client.clone(), store.clone(), recent.clone());
            async move { apply_object(&client, &store, &recent, object).await }.boxed()
        },
    );
    let written: Vec<bool> = applies
        .buffer_unordered(WRITE_CONCURRENCY)
        .try_collect()
        .await?;
    Ok(written.into_iter().filter(|w| *w).count())
}

/// Applies a staged rollout's pinned sources (each of the tracking source's kind).
async fn apply_pinned(ctx: &Context, pinned: &[Source]) -> Result<usize, Error> {
    let flux = &ctx.stores.flux;
    let (mut git, mut oci) = (Vec::new(), Vec::new());
    for source in pinned {
        match source {
            Source::Git(s) => git.push(s.clone()),
            Source::Oci(s) => oci.push(s.clone()),
            // A HelmRepository is an index of every version: never pinned (`rollout_build`).
            Source::Helm(_) => {}
        }
    }
    Ok(apply_all(ctx, &flux.git_repositories, &git).await?
        + apply_all(ctx, &flux.oci_repositories, &oci).await?)
}

async fn apply_source(ctx: &Context, source: &Source) -> Result<bool, Error> {
    let flux = &ctx.stores.flux;
    match source {
        Source::Git(s) => {
            apply_object(
                &ctx.client,
                &flux.git_repositories,
                &ctx.recent_writes,
                s.clone(),
            )
            .await
        }
        Source::Helm(s) => {
            apply_object(
                &ctx.client,
                &flux.helm_repositories,
                &ctx.recent_writes,
                s.clone(),
            )
            .await
        }
        Source::Oci(s) => {
            apply_object(
                &ctx.client,
                &flux.oci_repositories,
                &ctx.recent_writes,
                s.clone(),
            )
            .await
        }
    }
}

async fn delete(client: &kube::Client, object: &FluxObjectRef) -> Result<(), Error> {
    let (ns, name) = (object.namespace.as_str(), object.name.as_str());
    match object.kind {
        FluxKind::GitRepository => delete_object::<GitRepository>(client, ns, name).await,
        FluxKind::HelmRepository => delete_object::<HelmRepository>(client, ns, name).await,
        FluxKind::OciRepository => delete_object::<OCIRepository>(client, ns, name).await,
        FluxKind::HelmChart => delete_object::<HelmChart>(client, ns, name).await,
        FluxKind::Kustomization => delete_object::<Kustomization>(client, ns, name).await,
        FluxKind::HelmRelease => delete_object::<HelmRelease>(client, ns, name).await,
    }
}

/// Every Flux object the Application owns (by UID, from the index), as the prune step sees it.
fn existing(ctx: &Context, uid: &str) -> Vec<Existing> {
    let flux = &ctx.stores.flux;
    let kinds = [
        Kind::GitRepository,
        Kind::HelmRepository,
        Kind::OciRepository,
        Kind::HelmChart,
        Kind::Kustomization,
        Kind::HelmRelease,
    ];
    ctx.indexes
        .owned_by(uid, &kinds)
        .into_iter()
        .filter_map(|key| match key.kind {
            Kind::GitRepository => Existing::of(stored(&flux.git_repositories, &key)?.as_ref()),
            Kind::HelmRepository => Existing::of(stored(&flux.helm_repositories, &key)?.as_ref()),
            Kind::OciRepository => Existing::of(stored(&flux.oci_repositories, &key)?.as_ref()),
            Kind::HelmChart => Existing::of(stored(&flux.helm_charts, &key)?.as_ref()),
            Kind::Kustomization => Existing::of(stored(&flux.kustomizations, &key)?.as_ref()),
            _ => Existing::of(stored(&flux.helm_releases, &key)?.as_ref()),
        })
        .collect()
}

/// Flux's status of the desired objects, from the stores.
fn observed(flux: &FluxStores, namespace: &str, desired: &Desired) -> Observed {
    let name = desired.source.metadata().name.clone().unwrap_or_default();
    let key = |n: &str| (n.to_string(), namespace.to_string());
    let at = |kind| Key::new(kind, namespace, &name);
    let at_name = |kind, name: &str| Key::new(kind, namespace, name);
    let (source_generation, source) = match &desired.source {
        Source::Git(_) => stored(&flux.git_repositories, &at(Kind::GitRepository))
            .map(|o| (o.metadata.generation, o.status.clone())),
        Source::Helm(_) => stored(&flux.helm_repositories, &at(Kind::HelmRepository))
            .map(|o| (o.metadata.generation, o.status.clone())),
        Source::Oci(_) => stored(&flux.oci_repositories, &at(Kind::OciRepository))
            .map(|o| (o.metadata.generation, o.status.clone())),
    }
    .unwrap_or_default();
    let mut objects: BTreeMap<String, (Option<i64>, FluxStatus)> = BTreeMap::new();
    for k in &desired.kustomizations {
        let (n, ns) = key(&k.name_any());
        if let Some(found) = flux.kustomizations.get(&ObjectRef::new(&n).within(&ns))
            && let Some(status) = found.status.clone()
        {
            objects.insert(n, (found.metadata.generation, status));
        }
    }
    let mut pinned_revision_ids = BTreeMap::new();
    for h in &desired.helm_releases {
        let (n, ns) = key(&h.name_any());
        let Some(found) = flux.helm_releases.get(&ObjectRef::new(&n).within(&ns)) else {
            continue;
        };
        if let Some(id) = found
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(rollout_build::REVISION_LABEL))
        {
            pinned_revision_ids.insert(n.clone(), id.clone());
        }
        if let Some(status) = found.status.clone() {
            objects.insert(n, (found.metadata.generation, status));
        }
    }
    let latest_revision = desired.tracking_chart.as_ref().and_then(|chart| {
        let found = stored(
            &flux.helm_charts,
            &at_name(Kind::HelmChart, &chart.name_any()),
        )?;
        found.status.as_ref()?.artifact.as_ref()?.revision.clone()
    });
    Observed {
        source,
        source_generation,
        objects,
        pinned_revision_ids,
        latest_revision,
    }
}
