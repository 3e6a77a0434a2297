//! Apply: server-side apply of the plugins' Flux objects on the host (skipped when the
//! desired-state hash is unchanged), object-store copies in the members, sidecar discovery on
//! the host, deletion of what is no longer wanted, and the members' policy report watches.

use std::collections::BTreeSet;

use futures::{FutureExt, StreamExt, future::BoxFuture, stream};
use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::reflector::{ObjectRef, Store},
};
use kurator_api::{
    flux::{HelmRelease, HelmRepository},
    labels::{FIELD_MANAGER, FLEET, MANAGED_BY, PLUGIN},
    policy_report::FleetPolicyReport,
};
use tracing::{debug, warn};

use super::{
    Component, MEMBER_CONCURRENCY, Plugin,
    dereference::Reachable,
    objstore::{self, ObjectStore},
    render::{self, MONITORING_NAMESPACE},
    reports, sidecar,
    status::{Failure, reason},
};
use crate::{
    application::{apply::delete_object, apply_all, build::label_value},
    context::Context,
    error::Error,
    index::Kind,
    member,
};

fn objstore_key(namespace: &str, fleet: &str, cluster: &str) -> String {
    format!("objstore/{namespace}/{fleet}/{cluster}")
}

/// Copies the object-store Secret into every member that does not hold the current version.
pub async fn copy_object_store(
    ctx: &Context,
    namespace: &str,
    fleet: &str,
    store: &ObjectStore,
    members: &[Reachable],
) -> Vec<Failure> {
    let copies: Vec<BoxFuture<'_, Result<(), Failure>>> = members
        .iter()
        .map(|r| {
            let key = objstore_key(namespace, fleet, r.name());
            let version = format!("{}/{}", store.hash, r.member.secret_version);
            (key, version, r)
        })
        .filter(|(key, version, _)| !ctx.plugin_writes.is_current(key, version))
        .map(|(key, version, r)| {
            async move {
                let result = async {
                    let client = member::client(ctx, namespace, &r.member, false)
                        .await
                        .map_err(|e| e.to_string())?;
                    objstore::copy_to_member(&client, MONITORING_NAMESPACE, fleet, store)
                        .await
                        .map_err(|e| e.to_string())
                }
                .await;
                match result {
                    Ok(()) => {
                        ctx.plugin_writes.record(key, version);
                        Ok(())
                    }
                    Err(e) => Err(Failure {
                        plugin: Plugin::Metric,
                        reason: reason::MEMBER_UNREACHABLE,
                        message: format!("copying the object-store Secret to {}: {e}", r.name()),
                    }),
                }
            }
            .boxed()
        })
        .collect();
    stream::iter(copies)
        .buffer_unordered(MEMBER_CONCURRENCY)
        .filter_map(|r| async move { r.err() })
        .collect()
        .await
}

/// Applies every component's HelmRepository and HelmRelease.
pub async fn apply_components(ctx: &Context, components: &[Component]) -> Result<(), Error> {
    let flux = &ctx.stores.flux;
    let repositories: Vec<HelmRepository> =
        components.iter().map(|c| c.repository.clone()).collect();
    let releases: Vec<HelmRelease> = components.iter().map(|c| c.release.clone()).collect();
    apply_all(ctx, &flux.helm_repositories, &repositories).await?;
    apply_all(ctx, &flux.helm_releases, &releases).await?;
    Ok(())
}

/// Writes the discovery objects unless the write cache holds this version.
pub async fn apply_discovery(
    ctx: &Context,
    fleet: &str,
    discovery: &sidecar::Discovery,
) -> Result<(), Error> {
    let namespace = discovery
        .service
        .metadata
        .namespace
        .clone()
        .unwrap_or_default();
    let version = format!(
        "{:08x}",
        crate::application::build::fnv1a(&format!(
            "{}{}",
            serde_json::to_string(&discovery.service)?,
            serde_json::to_string(&discovery.slices)?
        ))
    );
    let key = format!("sidecar/{namespace}/{fleet}");
    if ctx.plugin_writes.is_current(&key, &version) {
        return Ok(());
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut service = serde_json::to_value(&discovery.service)?;
    service["apiVersion"] = "v1".into();
    service["kind"] = "Service".into();
    Api::<Service>::namespaced(ctx.client.clone(), &namespace)
        .patch(
            render::SIDECAR_REMOTE_SERVICE,
            &params,
            &Patch::Apply(&service),
        )
        .await?;
    for slice in &discovery.slices {
        let mut body = serde_json::to_value(slice)?;
        body["apiVersion"] = "discovery.k8s.io/v1".into();
        body["kind"] = "EndpointSlice".into();
        Api::<EndpointSlice>::namespaced(ctx.client.clone(), &namespace)
            .patch(&slice.name_any(), &params, &Patch::Apply(&body))
            .await?;
    }
    ctx.plugin_writes.record(key, version);
    Ok(())
}

/// Write-cache version of a fleet whose discovery objects are known to be gone.
const DISCOVERY_REMOVED: &str = "removed";

/// Deletes this fleet's discovery objects, if it wrote them (another fleet of the namespace
/// may own `thanos-sidecar-remote`). Checked once per fleet and process, not on every
/// reconcile; level-based, so it also cleans up what a previous process wrote.
pub async fn remove_discovery(ctx: &Context, namespace: &str, fleet: &str) -> Result<(), Error> {
    let key = format!("sidecar/{namespace}/{fleet}");
    if ctx.plugin_writes.is_current(&key, DISCOVERY_REMOVED) {
        return Ok(());
    }
    let ours = Api::<Service>::namespaced(ctx.client.clone(), namespace)
        .get_metadata_opt(render::SIDECAR_REMOTE_SERVICE)
        .await?
        .is_some_and(|s| {
            let labels = s.labels();
            labels.get(MANAGED_BY).map(String::as_str) == Some(render::MANAGED_BY_FLEET_MANAGER)
                && labels.get(FLEET) == Some(&label_value(fleet))
        });
    if ours {
        delete_object::<Service>(&ctx.client, namespace, render::SIDECAR_REMOTE_SERVICE).await?;
        for family in ["ipv4", "ipv6"] {
            let name = format!("{}-{family}", render::SIDECAR_REMOTE_SERVICE);
            delete_object::<EndpointSlice>(&ctx.client, namespace, &name).await?;
        }
    }
    ctx.plugin_writes.record(key, DISCOVERY_REMOVED.into());
    Ok(())
}

/// Deletes this fleet's plugin objects that are no longer wanted (plugin disabled, cluster
/// left), and the object-store copy of a member that no longer runs this fleet's Prometheus.
/// Objects of `frozen` plugins (invalid configuration) are kept.
pub async fn prune(
    ctx: &Context,
    namespace: &str,
    fleet: &str,
    fleet_uid: &str,
    components: &[Component],
    frozen: &BTreeSet<&str>,
) -> Result<Vec<Failure>, Error> {
    let wanted: BTreeSet<String> = components.iter().map(|c| c.release.name_any()).collect();
    let flux = &ctx.stores.flux;
    let unwanted_repos = unwanted(
        ctx,
        &flux.helm_repositories,
        Kind::HelmRepository,
        fleet,
        fleet_uid,
        &wanted,
        frozen,
    );
    let unwanted_releases = unwanted(
        ctx,
        &flux.helm_releases,
        Kind::HelmRelease,
        fleet,
        fleet_uid,
        &wanted,
        frozen,
    );
    for key in &unwanted_releases {
        debug!(release = %key.name, "removing plugin component");
        delete_object::<HelmRelease>(&ctx.client, &key.namespace, &key.name).await?;
    }
    for key in &unwanted_repos {
        delete_object::<HelmRepository>(&ctx.client, &key.namespace, &key.name).await?;
    }
    let wanted_metric_members: BTreeSet<&str> = components
        .iter()
        .filter(|c| c.plugin == Plugin::Metric)
        .filter_map(|c| c.cluster.as_deref())
        .collect();
    let mut failures = Vec::new();
    for key in &unwanted_releases {
        let Some(cluster) = key.name.strip_prefix("prometheus-") else {
            continue;
        };
        if !wanted_metric_members.contains(cluster) {
            failures.extend(remove_objstore_copy(ctx, namespace, fleet, cluster).await);
        }
    }
    Ok(failures)
}

/// This fleet's plugin objects of one kind (by owner UID, from the index) not wanted any more.
fn unwanted<K: Resource<DynamicType = ()> + Clone>(
    ctx: &Context,
    store: &Store<K>,
    kind: Kind,
    fleet: &str,
    fleet_uid: &str,
    wanted: &BTreeSet<String>,
    frozen: &BTreeSet<&str>,
) -> Vec<crate::index::Key> {
    let fleet_label = label_value(fleet);
    ctx.indexes
        .owned_by(fleet_uid, &[kind])
        .into_iter()
        .filter(|key| !wanted.contains(&key.name))
        .filter(|key| {
            store
                .get(&ObjectRef::new(&key.name).within(&key.namespace))
                .is_some_and(|o| {
                    let labels = o.meta().labels.clone().unwrap_or_default();
                    labels.get(MANAGED_BY).map(String::as_str)
                        == Some(render::MANAGED_BY_FLEET_MANAGER)
                        && labels.get(FLEET) == Some(&fleet_label)
                        && !labels
                            .get(PLUGIN)
                            .is_some_and(|p| frozen.contains(p.as_str()))
                })
        })
        .collect()
}

/// Removes the object-store copy from one member; a failure is returned for the status.
pub async fn remove_objstore_copy(
    ctx: &Context,
    namespace: &str,
    fleet: &str,
    cluster: &str,
) -> Option<Failure> {
    // The cluster object is gone, or has no kubeconfig: there is nothing to reach.
    let found = member::find_by_name(&ctx.stores, namespace, cluster)?;
    found.kubeconfig.as_ref()?;
    let result = async {
        let client = member::client(ctx, namespace, &found, false)
            .await
            .map_err(|e| e.to_string())?;
        objstore::remove_from_member(&client, MONITORING_NAMESPACE, fleet)
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    ctx.plugin_writes
        .forget(&objstore_key(namespace, fleet, cluster));
    result.err().map(|e| {
        warn!(cluster, error = %e, "removing the object-store Secret copy failed");
        Failure {
            plugin: Plugin::Metric,
            reason: reason::MEMBER_UNREACHABLE,
            message: format!("removing the object-store Secret copy from {cluster}: {e}"),
        }
    })
}

/// Watches the members' policy reports while the policy plugin is on (and stops the watches
/// of members that left); returns the aggregate of what the watches hold.
pub async fn policy_reports(
    ctx: &Context,
    namespace: &str,
    fleet: &str,
    members: &[Reachable],
    on: bool,
) -> Option<FleetPolicyReport> {
    if !on {
        ctx.policy_reports
            .retain(namespace, fleet, &BTreeSet::new());
        return None;
    }
    let mut keep = BTreeSet::new();
    for r in members {
        keep.insert(r.name().to_string());
        match member::client(ctx, namespace, &r.member, true).await {
            Ok(client) => ctx.policy_reports.ensure(
                namespace,
                fleet,
                r.name(),
                client,
                &r.member.secret_version,
            ),
            Err(e) => debug!(cluster = %r.name(), error = %e, "no client for policy reports"),
        }
    }
    ctx.policy_reports.retain(namespace, fleet, &keep);
    Some(reports::aggregate(
        &ctx.policy_reports.snapshot(namespace, fleet),
    ))
}
