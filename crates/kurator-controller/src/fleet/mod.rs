//! Fleet controller: keeps the membership label on the fleet's clusters, and reports each
//! member's readiness, `readyClusters` / `unReadyClusters`, Kurator's phase and conditions.
//! Cluster and fleet changes arrive through watches; nothing is polled.

pub mod membership;
mod status;

use std::sync::Arc;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        controller::Action,
        finalizer::{Event as Finalizer, finalizer},
        reflector::{ObjectRef, Store},
    },
};
use kurator_api::{
    AttachedCluster, Cluster, CustomCluster, Fleet,
    cluster::PROVISIONED_READY_PHASE,
    conditions,
    fleet::{ClusterKind, FleetCluster, FleetStatus, phase},
    labels::{FLEET_FINALIZER, FLEET_NAME},
};
use serde::de::DeserializeOwned;
use tracing::{info, instrument};

pub use membership::{ClusterView, Plan, plan};
pub use status::{build_status, reason};

use crate::{
    context::Context,
    error::Error,
    plugins,
    status::{apply_status, publish_ready_transition},
};

pub const CONTROLLER: &str = "fleet";

/// How soon a fleet is reconciled again after a member write or read failed.
const PLUGIN_RETRY: std::time::Duration = std::time::Duration::from_secs(15);

#[instrument(skip_all, fields(fleet = %fleet.name_any(), namespace = fleet.namespace().unwrap_or_default()))]
pub async fn reconcile(fleet: Arc<Fleet>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.stores.wait_until_ready().await;
    let _measure = ctx.metrics.reconcile(CONTROLLER);
    let namespace = fleet.namespace().unwrap_or_default();
    let api: Api<Fleet> = Api::namespaced(ctx.client.clone(), &namespace);
    Ok(finalizer(&api, FLEET_FINALIZER, fleet, |event| async {
        match event {
            Finalizer::Apply(fleet) => apply(&fleet, &namespace, &ctx).await,
            Finalizer::Cleanup(fleet) => cleanup(&fleet, &namespace, &ctx).await,
        }
    })
    .await?)
}

async fn apply(fleet: &Fleet, namespace: &str, ctx: &Context) -> Result<Action, Error> {
    // dereference
    let fleets: Vec<Arc<Fleet>> = ctx
        .stores
        .fleets
        .state()
        .into_iter()
        .filter(|f| f.namespace().as_deref() == Some(namespace))
        .collect();
    let labelled = labelled_with(&fleet.name_any(), namespace, ctx);
    // build
    let plan = plan(fleet, |c| view(c, namespace, ctx), &labelled, &fleets);
    // apply
    for cluster in &plan.add_label {
        set_label(ctx, namespace, cluster, Some(&fleet.name_any())).await?;
    }
    for cluster in &plan.remove_label {
        set_label(ctx, namespace, cluster, None).await?;
    }
    // plugins: their own dereference → validate → build → apply steps
    let plugins = plugins::reconcile::reconcile(fleet, namespace, &plan.members, ctx).await?;
    // status
    let status = build_status(fleet, &plan, &plugins, Time(Timestamp::now()));
    let api: Api<Fleet> = Api::namespaced(ctx.client.clone(), namespace);
    let previous = fleet.status.as_ref();
    if apply_status(&api, fleet, previous, &status).await? {
        let before = previous
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default();
        publish_ready_transition(ctx, fleet, before, &status.conditions, "Reconcile").await;
    }
    // Member writes and reads are retried; everything else arrives through watches.
    Ok(if plugins.retry {
        Action::requeue(PLUGIN_RETRY)
    } else {
        Action::await_change()
    })
}

/// Removes the membership label from every cluster this fleet labelled.
async fn cleanup(fleet: &Fleet, namespace: &str, ctx: &Context) -> Result<Action, Error> {
    let api: Api<Fleet> = Api::namespaced(ctx.client.clone(), namespace);
    let previous = fleet.status.as_ref();
    let terminating = FleetStatus {
        phase: Some(phase::TERMINATING.into()),
        reason: Some(phase::TERMINATING.into()),
        ..previous.cloned().unwrap_or_default()
    };
    apply_status(&api, fleet, previous, &terminating).await?;
    let labelled = labelled_with(&fleet.name_any(), namespace, ctx);
    plugins::reconcile::cleanup(fleet, namespace, &labelled, ctx).await;
    for cluster in labelled {
        set_label(ctx, namespace, &cluster, None).await?;
    }
    info!("fleet deleted, membership labels removed");
    Ok(Action::await_change())
}

/// Clusters of any kind in `namespace` whose membership label names `fleet`.
fn labelled_with(fleet: &str, namespace: &str, ctx: &Context) -> Vec<FleetCluster> {
    fn collect<K: Resource<DynamicType = ()> + Clone>(
        store: &Store<K>,
        kind: ClusterKind,
        fleet: &str,
        ns: &str,
    ) -> Vec<FleetCluster> {
        store
            .state()
            .iter()
            .filter(|c| c.namespace().as_deref() == Some(ns))
            .filter(|c| c.labels().get(FLEET_NAME).map(String::as_str) == Some(fleet))
            .map(|c| membership::cluster_ref(kind, &c.name_any()))
            .collect()
    }
    let stores = &ctx.stores;
    let mut all = collect(
        &stores.attached_clusters,
        ClusterKind::AttachedCluster,
        fleet,
        namespace,
    );
    all.extend(collect(
        &stores.clusters,
        ClusterKind::Cluster,
        fleet,
        namespace,
    ));
    all.extend(collect(
        &stores.custom_clusters,
        ClusterKind::CustomCluster,
        fleet,
        namespace,
    ));
    all
}

/// How one listed cluster looks in the stores, whatever its kind.
fn view(cluster: &FleetCluster, namespace: &str, ctx: &Context) -> Option<ClusterView> {
    let label =
        |labels: &std::collections::BTreeMap<String, String>| labels.get(FLEET_NAME).cloned();
    match cluster.kind {
        ClusterKind::AttachedCluster => {
            let ac = ctx
                .stores
                .attached_clusters
                .get(&ObjectRef::new(&cluster.name).within(namespace))?;
            let status = ac.status.clone().unwrap_or_default();
            let ready_condition = conditions::find(&status.conditions, conditions::READY);
            Some(ClusterView {
                ready: status.ready,
                reason: ready_condition
                    .map_or(membership::reason::PENDING.into(), |c| c.reason.clone()),
                message: ready_condition.map_or("not checked yet".into(), |c| c.message.clone()),
                fleet_label: label(ac.labels()),
            })
        }
        ClusterKind::Cluster => {
            let c = ctx
                .stores
                .clusters
                .get(&ObjectRef::new(&cluster.name).within(namespace))?;
            Some(provisioned_view(
                c.status.as_ref().and_then(|s| s.phase.as_deref()),
                label(c.labels()),
            ))
        }
        ClusterKind::CustomCluster => {
            let c = ctx
                .stores
                .custom_clusters
                .get(&ObjectRef::new(&cluster.name).within(namespace))?;
            Some(provisioned_view(
                c.status.as_ref().and_then(|s| s.phase.as_deref()),
                label(c.labels()),
            ))
        }
    }
}

fn provisioned_view(phase: Option<&str>, fleet_label: Option<String>) -> ClusterView {
    let ready = phase == Some(PROVISIONED_READY_PHASE);
    ClusterView {
        ready,
        reason: if ready {
            PROVISIONED_READY_PHASE.into()
        } else {
            membership::reason::PROVISIONING.into()
        },
        message: format!("phase {}", phase.unwrap_or("unknown")),
        fleet_label,
    }
}

/// Sets (or with `None` removes) the membership label on one cluster object.
async fn set_label(
    ctx: &Context,
    namespace: &str,
    cluster: &FleetCluster,
    fleet: Option<&str>,
) -> Result<(), Error> {
    match cluster.kind {
        ClusterKind::AttachedCluster => {
            patch_label::<AttachedCluster>(ctx, namespace, &cluster.name, fleet).await
        }
        ClusterKind::Cluster => patch_label::<Cluster>(ctx, namespace, &cluster.name, fleet).await,
        ClusterKind::CustomCluster => {
            patch_label::<CustomCluster>(ctx, namespace, &cluster.name, fleet).await
        }
    }
}

/// A merge patch of one label: the label is shared with users and other fleets, so we
/// change only that key instead of owning the whole label set.
async fn patch_label<K>(
    ctx: &Context,
    namespace: &str,
    name: &str,
    fleet: Option<&str>,
) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = serde_json::json!({ "metadata": { "labels": { FLEET_NAME: fleet } } });
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        // Gone already: nothing to label or unlabel.
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Fleets in `namespace` that list the cluster or carry it through its label: the fleets to
/// reconcile when that cluster changes.
pub fn fleets_for_cluster(
    fleets: &Store<Fleet>,
    kind: ClusterKind,
    name: &str,
    namespace: Option<&str>,
    label: Option<&str>,
) -> Vec<ObjectRef<Fleet>> {
    let cluster = membership::cluster_ref(kind, name);
    fleets
        .state()
        .iter()
        .filter(|f| f.namespace().as_deref() == namespace)
        .filter(|f| f.spec.clusters.contains(&cluster) || Some(f.name_any().as_str()) == label)
        .map(|f| ObjectRef::from_obj(f.as_ref()))
        .collect()
}
