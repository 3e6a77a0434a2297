//! Fleet controller: keeps the membership label on the fleet's clusters, and reports each
//! member's readiness, `readyClusters` / `unReadyClusters`, Kurator's phase and conditions.
//! Cluster and fleet changes arrive through watches; nothing is polled.

pub mod membership;
pub mod status;

use std::{collections::BTreeSet, sync::Arc};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        controller::Action,
        finalizer::{Event as Finalizer, finalizer},
        reflector::ObjectRef,
    },
};
use kurator_api::{
    AttachedCluster, Cluster, CustomCluster, Fleet,
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
    index::cluster_of,
    member,
    status::{apply_status, publish_ready_transition},
};

pub const CONTROLLER: &str = "fleet";

#[instrument(skip_all, fields(fleet = %fleet.name_any(), namespace = fleet.namespace().unwrap_or_default()))]
pub async fn reconcile(fleet: Arc<Fleet>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.stores.wait_until_ready().await;
    let _measure = ctx.metrics.reconcile(CONTROLLER);
    let namespace = fleet.namespace().unwrap_or_default();
    let api: Api<Fleet> = Api::namespaced(ctx.client.clone(), &namespace);
    let fleet = crate::finalizer::ensure(&api, fleet, FLEET_FINALIZER).await?;
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
    let inputs = dereference(fleet, namespace, ctx);
    // build
    let plan = inputs.plan(fleet);
    // apply
    for cluster in &plan.add_label {
        set_label(ctx, namespace, cluster, Some(&fleet.name_any())).await?;
    }
    for cluster in &plan.remove_label {
        set_label(ctx, namespace, cluster, None).await?;
    }
    // status: membership and Ready; the plugins controller writes its own part.
    let status = build_status(
        fleet,
        &plan,
        &status::plugins_pending(fleet),
        Time(Timestamp::now()),
    );
    let api: Api<Fleet> = Api::namespaced(ctx.client.clone(), namespace);
    let previous = fleet.status.as_ref().map(status::own_part);
    if apply_status(ctx, &api, fleet, previous.as_ref(), &status).await? {
        let before = previous
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default();
        publish_ready_transition(ctx, fleet, before, &status.conditions, "Reconcile").await;
    }
    // Everything that changes the outcome arrives through the trigger table.
    Ok(Action::await_change())
}

/// Removes the membership label from every cluster this fleet labelled.
async fn cleanup(fleet: &Fleet, namespace: &str, ctx: &Context) -> Result<Action, Error> {
    let api: Api<Fleet> = Api::namespaced(ctx.client.clone(), namespace);
    let previous = fleet.status.as_ref().map(status::own_part);
    let terminating = FleetStatus {
        phase: Some(phase::TERMINATING.into()),
        reason: Some(phase::TERMINATING.into()),
        ..previous.clone().unwrap_or_default()
    };
    apply_status(ctx, &api, fleet, previous.as_ref(), &terminating).await?;
    for cluster in labelled_with(&fleet.name_any(), namespace, ctx) {
        set_label(ctx, namespace, &cluster, None).await?;
    }
    info!("fleet deleted, membership labels removed");
    Ok(Action::await_change())
}

/// What a membership plan reads, from the stores and indexes.
pub struct Inputs {
    /// This fleet's listed clusters as the stores show them.
    views: Vec<(FleetCluster, Option<ClusterView>)>,
    /// The clusters that carry this fleet's label today.
    labelled: Vec<FleetCluster>,
    /// Every fleet of the namespace that lists one of this fleet's clusters.
    claimants: Vec<Arc<Fleet>>,
}

impl Inputs {
    pub fn plan(&self, fleet: &Fleet) -> Plan {
        let lookup = |c: &FleetCluster| {
            self.views
                .iter()
                .find(|(listed, _)| listed == c)
                .and_then(|(_, view)| view.clone())
        };
        plan(fleet, lookup, &self.labelled, &self.claimants)
    }
}

/// Reads a fleet's clusters, the clusters labelled for it and the fleets competing for them.
pub fn dereference(fleet: &Fleet, namespace: &str, ctx: &Context) -> Inputs {
    let index = &ctx.indexes;
    let views = fleet
        .spec
        .clusters
        .iter()
        .map(|c| (c.clone(), view(c, namespace, ctx)))
        .collect();
    let mut claimant_keys: BTreeSet<String> = fleet
        .spec
        .clusters
        .iter()
        .flat_map(|c| index.fleets_listing(namespace, c.kind, &c.name))
        .map(|k| k.name)
        .collect();
    claimant_keys.insert(fleet.name_any());
    let claimants = claimant_keys
        .iter()
        .filter_map(|name| {
            ctx.stores
                .fleets
                .get(&ObjectRef::new(name).within(namespace))
        })
        .collect();
    Inputs {
        views,
        labelled: labelled_with(&fleet.name_any(), namespace, ctx),
        claimants,
    }
}

/// Clusters of any kind in `namespace` whose membership label names `fleet`.
pub fn labelled_with(fleet: &str, namespace: &str, ctx: &Context) -> Vec<FleetCluster> {
    ctx.indexes
        .labelled_for(namespace, fleet)
        .iter()
        .filter_map(cluster_of)
        .collect()
}

/// How one listed cluster looks in the stores, whatever its kind.
fn view(cluster: &FleetCluster, namespace: &str, ctx: &Context) -> Option<ClusterView> {
    let member = member::lookup(&ctx.stores, namespace, cluster)?;
    Some(ClusterView {
        fleet_label: member.fleet_label().map(str::to_string),
        ready: member.readiness.ready,
        reason: member.readiness.reason,
        message: member.readiness.message,
    })
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
