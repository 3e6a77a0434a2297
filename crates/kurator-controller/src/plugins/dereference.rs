//! Dereference: what the plugin pipeline reads. From the stores and indexes: the fleet's
//! members and which of their releases are Ready. From the host API: the object-store Secret.
//! From the members: their Thanos sidecar Services. Failed calls are returned, not raised, so
//! the status can name them.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use futures::{FutureExt, StreamExt, future::BoxFuture, stream};
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::{Api, runtime::reflector::ObjectRef};
use kurator_api::{
    Fleet,
    fleet::PluginConfig,
    flux::{HelmRelease, StatusView},
};

use super::{
    MEMBER_CONCURRENCY, Plugin,
    render::{self, MONITORING_NAMESPACE},
    sidecar,
    status::{self, Failure, reason},
};
use crate::{
    context::Context,
    fleet::{self, membership},
    member::{self, Member},
};

/// A member the plugins install into: listed, not claimed by another fleet, with a
/// kubeconfig.
#[derive(Clone, Debug)]
pub struct Reachable {
    pub render: render::Member,
    pub member: Member,
}

impl Reachable {
    pub fn name(&self) -> &str {
        &self.render.name
    }
}

/// The fleet's members the plugins install into, from the same membership plan the Fleet
/// controller makes.
pub fn members(fleet: &Fleet, namespace: &str, ctx: &Context) -> Vec<Reachable> {
    let plan = fleet::dereference(fleet, namespace, ctx).plan(fleet);
    plan.members
        .iter()
        .filter(|m| {
            m.reason.as_deref() != Some(membership::reason::NOT_FOUND)
                && m.reason.as_deref() != Some(membership::reason::CLAIMED_BY_OTHER_FLEET)
        })
        .filter_map(|m| {
            let cluster = kurator_api::fleet::FleetCluster {
                name: m.name.clone(),
                kind: m.kind,
            };
            let member = member::lookup(&ctx.stores, namespace, &cluster)?;
            Some(Reachable {
                render: render::Member {
                    name: m.name.clone(),
                    kubeconfig: member.kubeconfig.clone()?,
                },
                member,
            })
        })
        .collect()
}

/// The object-store Secret as read from the host.
#[derive(Clone, Debug)]
pub enum SecretRead {
    /// The metric plugin is off (or its spec is invalid): nothing was read.
    NotNeeded,
    /// The Secret's name, and the Secret (`None` when it does not exist).
    Read(String, Option<Box<Secret>>),
    /// The host could not be asked.
    Failed(Failure),
}

/// Reads the metric plugin's object-store Secret (not cached: the watch sees Secret
/// metadata only, so secret data is never held beyond this reconcile).
pub async fn object_store_secret(
    config: &PluginConfig,
    spec_valid: bool,
    namespace: &str,
    ctx: &Context,
) -> SecretRead {
    let Some(metric) = config.metric.as_ref().filter(|_| spec_valid) else {
        return SecretRead::NotNeeded;
    };
    let name = metric
        .thanos
        .as_ref()
        .and_then(|t| t.object_store_config.as_ref())
        .map(|o| o.secret_name.clone())
        .unwrap_or_default();
    match Api::<Secret>::namespaced(ctx.client.clone(), namespace)
        .get_opt(&name)
        .await
    {
        Ok(secret) => SecretRead::Read(name, secret.map(Box::new)),
        Err(e) => SecretRead::Failed(Failure {
            plugin: Plugin::Metric,
            reason: reason::SECRET_UNREADABLE,
            message: format!("reading the object-store Secret {namespace}/{name} failed: {e}"),
        }),
    }
}

/// A HelmRelease of the fleet's namespace, from the store.
pub fn release(ctx: &Context, namespace: &str, name: &str) -> Option<Arc<StatusView<HelmRelease>>> {
    ctx.stores
        .flux
        .helm_releases
        .get(&ObjectRef::new(name).within(namespace))
}

/// The members whose `<component>-<cluster>` HelmRelease is Ready.
pub fn ready_members(
    ctx: &Context,
    namespace: &str,
    component: &str,
    members: &[Reachable],
) -> BTreeSet<String> {
    members
        .iter()
        .filter(|r| {
            let name = format!("{component}-{}", r.name());
            status::release_state(release(ctx, namespace, &name).as_deref()).0
        })
        .map(|r| r.name().to_string())
        .collect()
}

/// One member's sidecar addresses, or why they could not be read.
type SidecarLookup = (String, Result<Vec<sidecar::Address>, String>);

/// Each member's Thanos sidecar addresses (16 members at a time, each bounded by the probe
/// timeout), and the members that could not be read or have no address yet.
pub async fn sidecar_addresses(
    ctx: &Context,
    namespace: &str,
    members: &[&Reachable],
) -> (BTreeMap<String, Vec<sidecar::Address>>, Vec<Failure>) {
    let timeout = ctx.settings.probe_timeout;
    let lookups: Vec<BoxFuture<'_, SidecarLookup>> = members
        .iter()
        .map(|r| {
            async move {
                let result = async {
                    let client = member::client(ctx, namespace, &r.member, false)
                        .await
                        .map_err(|e| e.to_string())?;
                    let api = Api::<Service>::namespaced(client, MONITORING_NAMESPACE);
                    match tokio::time::timeout(timeout, api.get_opt(render::SIDECAR_SERVICE)).await
                    {
                        Err(_) => Err("no answer in time".to_string()),
                        Ok(Err(e)) => Err(e.to_string()),
                        Ok(Ok(service)) => {
                            Ok(service.map(|s| sidecar::addresses(&s)).unwrap_or_default())
                        }
                    }
                }
                .await;
                (r.name().to_string(), result)
            }
            .boxed()
        })
        .collect();
    let results: Vec<_> = stream::iter(lookups)
        .buffer_unordered(MEMBER_CONCURRENCY)
        .collect()
        .await;
    let mut failures = Vec::new();
    let mut out = BTreeMap::new();
    for (cluster, result) in results {
        match result {
            Ok(addresses) if !addresses.is_empty() => {
                out.insert(cluster, addresses);
            }
            // Thanos Query cannot reach this member yet: say so and look again, since
            // nothing watches the members' Services.
            Ok(_) => failures.push(Failure {
                plugin: Plugin::Metric,
                reason: reason::SIDECAR_ADDRESS_PENDING,
                message: format!(
                    "the Thanos sidecar Service of {cluster} has no load-balancer address yet"
                ),
            }),
            Err(e) => failures.push(Failure {
                plugin: Plugin::Metric,
                reason: reason::MEMBER_UNREACHABLE,
                message: format!("reading the Thanos sidecar Service of {cluster} failed: {e}"),
            }),
        }
    }
    (out, failures)
}
