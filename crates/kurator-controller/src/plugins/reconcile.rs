//! The plugin steps of a Fleet reconcile: dereference (object-store Secret, member sidecar
//! Services, HelmRelease readiness) → validate → render (pure) → apply (Flux objects on the
//! host, Secret copies in members) → prune → status.

use std::collections::{BTreeMap, BTreeSet};

use futures::{FutureExt, StreamExt, future::BoxFuture, stream};
use k8s_openapi::api::{
    core::v1::{Secret, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    core::PartialObjectMeta,
    runtime::reflector::{ObjectRef, Store},
};
use kurator_api::{
    Fleet,
    cluster::SecretKeyRef,
    conditions::Desired,
    fleet::{FleetCluster, FleetClusterStatus, PluginComponentStatus, PluginConfig},
    flux::{HelmRelease, HelmRepository},
    labels::{FIELD_MANAGER, FLEET, MANAGED_BY, PLUGIN},
    policy_report::FleetPolicyReport,
};
use tracing::{debug, warn};

use super::{
    Plugin, objstore,
    render::{self, MONITORING_NAMESPACE, Member, RenderInput},
    reports, sidecar,
    status::{self, PluginProblem, Waiting, reason},
};
use crate::{
    application::{apply::delete_object, apply_all, build::label_value, cluster_info},
    context::Context,
    error::Error,
    fleet::membership,
};

/// Member calls made at once (Secret copies, sidecar lookups).
const MEMBER_CONCURRENCY: usize = 16;

/// What the plugin steps report into the Fleet's status.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    pub components: Vec<PluginComponentStatus>,
    /// One per enabled plugin.
    pub conditions: Vec<Desired>,
    pub endpoints: BTreeMap<String, Vec<String>>,
    /// The members' policy reports, aggregated; `None` while the policy plugin is off.
    pub policy_report: Option<FleetPolicyReport>,
    /// A member could not be written or read: reconcile again soon.
    pub retry: bool,
}

/// The plugins the spec enables.
pub fn enabled(config: &PluginConfig) -> BTreeSet<Plugin> {
    let mut out = BTreeSet::new();
    if config.metric.is_some() {
        out.insert(Plugin::Metric);
    }
    if config.grafana.is_some() {
        out.insert(Plugin::Grafana);
    }
    if config.policy.as_ref().is_some_and(|p| p.kyverno.is_some()) {
        out.insert(Plugin::Policy);
    }
    out
}

/// A member the plugins install into, with where to reach it.
struct Reachable {
    member: Member,
    rv: String,
}

pub async fn reconcile(
    fleet: &Fleet,
    namespace: &str,
    members: &[FleetClusterStatus],
    ctx: &Context,
) -> Result<Outcome, Error> {
    let fleet_name = fleet.name_any();
    let config = fleet.spec.plugin.clone().unwrap_or_default();
    let enabled = enabled(&config);
    let owner = fleet
        .controller_owner_ref(&())
        .ok_or_else(|| Error::Internal("the Fleet has no uid yet".into()))?;
    let mut outcome = Outcome::default();

    // dereference: the members the plugins install into (listed, not claimed by another fleet,
    // with a kubeconfig).
    let reachable: Vec<Reachable> = members
        .iter()
        .filter(|m| {
            m.reason.as_deref() != Some(membership::reason::NOT_FOUND)
                && m.reason.as_deref() != Some(membership::reason::CLAIMED_BY_OTHER_FLEET)
        })
        .filter_map(|m| {
            let cluster = FleetCluster {
                name: m.name.clone(),
                kind: m.kind,
            };
            let kubeconfig = cluster_info(ctx, namespace, &cluster)?.kubeconfig?;
            let rv = secret_rv(&ctx.stores.secrets, namespace, &kubeconfig.name);
            Some(Reachable {
                member: Member {
                    name: m.name.clone(),
                    kubeconfig,
                },
                rv,
            })
        })
        .collect();

    // validate: the spec (render leaves a plugin with a problem out), then the object store.
    let mut problems: Vec<PluginProblem> = render::problems(&config)
        .into_iter()
        .map(|(plugin, message)| PluginProblem { plugin, message })
        .collect();
    let mut render_config = config.clone();
    let metric_invalid = problems.iter().any(|p| p.plugin == Plugin::Metric);
    let objstore = match config.metric.as_ref() {
        None => None,
        Some(_) if metric_invalid => None,
        Some(metric) => {
            let name = metric
                .thanos
                .as_ref()
                .and_then(|t| t.object_store_config.as_ref())
                .map(|o| o.secret_name.clone())
                .unwrap_or_default();
            let secret = Api::<Secret>::namespaced(ctx.client.clone(), namespace)
                .get_opt(&name)
                .await?;
            match objstore::validate(namespace, &name, secret.as_ref()) {
                Ok(store) => Some(store),
                Err(message) => {
                    problems.push(PluginProblem {
                        plugin: Plugin::Metric,
                        message,
                    });
                    // Nothing of the metric plugin is applied or pruned until it is fixed.
                    render_config.metric = None;
                    None
                }
            }
        }
    };

    // apply: object-store copies in members.
    if let Some(store) = &objstore {
        let copies: Vec<BoxFuture<'static, Result<(), String>>> = reachable
            .iter()
            .map(|r| {
                let key = format!("objstore/{namespace}/{fleet_name}/{}", r.member.name);
                let version = format!("{}/{}", store.hash, r.rv);
                (key, version, r)
            })
            .filter(|(key, version, _)| !ctx.plugin_writes.is_current(key, version))
            .map(|(key, version, r)| {
                let client = member_client(ctx, namespace, &r.member.kubeconfig, &r.rv);
                let (store, fleet_name, cluster) =
                    (store.clone(), fleet_name.clone(), r.member.name.clone());
                let writes = ctx.plugin_writes.clone();
                async move {
                    let client = client.await?;
                    objstore::copy_to_member(&client, MONITORING_NAMESPACE, &fleet_name, &store)
                        .await
                        .map_err(|e| {
                            format!("copying the object-store Secret to {cluster}: {e}")
                        })?;
                    writes.record(key, version);
                    Ok(())
                }
                .boxed()
            })
            .collect();
        let failures: Vec<String> = stream::iter(copies)
            .buffer_unordered(MEMBER_CONCURRENCY)
            .filter_map(|r| async move { r.err() })
            .collect()
            .await;
        for failure in failures {
            warn!(error = %failure, "object-store Secret copy failed; retrying");
            outcome.retry = true;
        }
    }

    // dereference: readiness of kyverno per member (kyverno-policies waits for it).
    let releases = &ctx.stores.flux.helm_releases;
    let release = |name: &str| releases.get(&ObjectRef::new(name).within(namespace));
    let kyverno_ready: BTreeSet<String> = reachable
        .iter()
        .filter(|r| {
            status::release_state(release(&format!("kyverno-{}", r.member.name)).as_deref()).0
        })
        .map(|r| r.member.name.clone())
        .collect();

    // build
    let member_list: Vec<Member> = reachable.iter().map(|r| r.member.clone()).collect();
    let input = RenderInput {
        fleet_name: &fleet_name,
        namespace,
        owner: owner.clone(),
        plugin: &render_config,
        members: &member_list,
        kyverno_ready: &kyverno_ready,
        mirrors: &ctx.settings.chart_mirrors,
    };
    let mut components = render::render(&input);
    let waiting = waiting_for_kyverno(&render_config, &member_list, &kyverno_ready);

    // dereference + build: sidecar discovery from the members whose Prometheus is installed.
    let discovery = if objstore.is_some() {
        let ready: Vec<&Reachable> = reachable
            .iter()
            .filter(|r| {
                status::release_state(release(&format!("prometheus-{}", r.member.name)).as_deref())
                    .0
            })
            .collect();
        let (addresses, failed) = sidecar_addresses(ctx, namespace, &ready).await;
        outcome.retry |= failed;
        let discovery = sidecar::build(&fleet_name, namespace, &owner, &addresses);
        render::add_query_stores(&mut components, &discovery.stores);
        outcome
            .endpoints
            .insert("thanos-sidecar".into(), discovery.endpoints.clone());
        Some(discovery)
    } else {
        None
    };

    // apply: Flux objects on the host.
    let flux = &ctx.stores.flux;
    let repositories: Vec<HelmRepository> =
        components.iter().map(|c| c.repository.clone()).collect();
    let helm_releases: Vec<HelmRelease> = components.iter().map(|c| c.release.clone()).collect();
    apply_all(&ctx.client, &flux.helm_repositories, &repositories).await?;
    apply_all(&ctx.client, releases, &helm_releases).await?;
    // Discovery is written beside the components: a failure is reported and retried without
    // holding back the rest of the fleet's status.
    let written = match &discovery {
        Some(d) => apply_discovery(ctx, &fleet_name, d).await,
        None if !problems.iter().any(|p| p.plugin == Plugin::Metric) => {
            remove_discovery(ctx, namespace, &fleet_name).await
        }
        None => Ok(()),
    };
    if let Err(e) = written {
        warn!(error = %e, "writing the Thanos sidecar discovery failed; retrying");
        outcome.retry = true;
    }

    // prune: components no longer wanted (plugin disabled, cluster left).
    let frozen: BTreeSet<&str> = problems.iter().map(|p| p.plugin.label()).collect();
    let wanted: BTreeSet<String> = helm_releases.iter().map(|r| r.name_any()).collect();
    let uid = fleet.uid().unwrap_or_default();
    let fleet_label = label_value(&fleet_name);
    let unwanted_repos = unwanted(
        &flux.helm_repositories,
        namespace,
        &fleet_label,
        &uid,
        &wanted,
        &frozen,
    );
    let unwanted_releases = unwanted(releases, namespace, &fleet_label, &uid, &wanted, &frozen);
    for name in &unwanted_releases {
        debug!(release = %name, "removing plugin component");
        delete_object::<HelmRelease>(&ctx.client, namespace, name).await?;
    }
    for name in &unwanted_repos {
        delete_object::<HelmRepository>(&ctx.client, namespace, name).await?;
    }
    // A member that no longer runs this fleet's Prometheus no longer needs the Secret copy.
    let wanted_metric_members: BTreeSet<&str> = components
        .iter()
        .filter(|c| c.plugin == Plugin::Metric)
        .filter_map(|c| c.cluster.as_deref())
        .collect();
    for name in &unwanted_releases {
        let Some(cluster) = name.strip_prefix("prometheus-") else {
            continue;
        };
        if wanted_metric_members.contains(cluster) {
            continue;
        }
        outcome.retry |= !remove_objstore_copy(ctx, namespace, &fleet_name, cluster).await;
    }

    // dereference: the members' policy reports, watched while the policy plugin is on.
    outcome.policy_report = if enabled.contains(&Plugin::Policy) {
        let mut keep = BTreeSet::new();
        for r in &reachable {
            keep.insert(r.member.name.clone());
            let client = ctx
                .members
                .watch_client(
                    &ctx.client,
                    namespace,
                    &r.member.kubeconfig,
                    &r.rv,
                    ctx.settings.probe_timeout,
                )
                .await;
            match client {
                Ok(client) => {
                    ctx.policy_reports
                        .ensure(namespace, &fleet_name, &r.member.name, client, &r.rv)
                }
                Err(e) => {
                    debug!(cluster = %r.member.name, error = %e, "no client for policy reports")
                }
            }
        }
        ctx.policy_reports.retain(namespace, &fleet_name, &keep);
        Some(reports::aggregate(
            &ctx.policy_reports.snapshot(namespace, &fleet_name),
        ))
    } else {
        ctx.policy_reports
            .retain(namespace, &fleet_name, &BTreeSet::new());
        None
    };

    // status
    let (entries, conditions) = status::build(&enabled, &components, &waiting, &problems, |name| {
        release(name).map(|r| r.as_ref().clone())
    });
    outcome.components = entries;
    outcome.conditions = conditions;
    Ok(outcome)
}

/// Removes every plugin trace of a deleted fleet that its owner references do not cover: the
/// object-store copies in members.
pub async fn cleanup(fleet: &Fleet, namespace: &str, members: &[FleetCluster], ctx: &Context) {
    ctx.policy_reports
        .retain(namespace, &fleet.name_any(), &BTreeSet::new());
    if fleet
        .spec
        .plugin
        .as_ref()
        .and_then(|p| p.metric.as_ref())
        .is_none()
    {
        return;
    }
    for cluster in members {
        remove_objstore_copy(ctx, namespace, &fleet.name_any(), &cluster.name).await;
    }
}

fn secret_rv(secrets: &Store<PartialObjectMeta<Secret>>, namespace: &str, name: &str) -> String {
    secrets
        .get(&ObjectRef::new(name).within(namespace))
        .and_then(|s| s.metadata.resource_version.clone())
        .unwrap_or_default()
}

/// A member client, as an owned future (the error is a readable, secret-free message).
fn member_client(
    ctx: &Context,
    namespace: &str,
    kubeconfig: &SecretKeyRef,
    rv: &str,
) -> BoxFuture<'static, Result<Client, String>> {
    let members = ctx.members.clone();
    let (host, namespace, kubeconfig, rv) = (
        ctx.client.clone(),
        namespace.to_string(),
        kubeconfig.clone(),
        rv.to_string(),
    );
    let timeout = ctx.settings.probe_timeout;
    async move {
        members
            .client(&host, &namespace, &kubeconfig, &rv, timeout)
            .await
            .map_err(|e| e.to_string())
    }
    .boxed()
}

async fn remove_objstore_copy(ctx: &Context, namespace: &str, fleet: &str, cluster: &str) -> bool {
    let Some(info) = cluster_info(ctx, namespace, &find_cluster(ctx, namespace, cluster)) else {
        return true; // the cluster object is gone: nothing to reach
    };
    let Some(kubeconfig) = info.kubeconfig else {
        return true;
    };
    let rv = secret_rv(&ctx.stores.secrets, namespace, &kubeconfig.name);
    let result = async {
        let client = member_client(ctx, namespace, &kubeconfig, &rv).await?;
        objstore::remove_from_member(&client, MONITORING_NAMESPACE, fleet)
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    ctx.plugin_writes
        .forget(&format!("objstore/{namespace}/{fleet}/{cluster}"));
    match result {
        Ok(()) => true,
        Err(e) => {
            warn!(cluster, error = %e, "removing the object-store Secret copy failed");
            false
        }
    }
}

/// The cluster object named `name` in any kind (AttachedCluster first).
fn find_cluster(ctx: &Context, namespace: &str, name: &str) -> FleetCluster {
    use kurator_api::fleet::ClusterKind;
    let key = ObjectRef::new(name).within(namespace);
    let kind = if ctx.stores.attached_clusters.get(&key).is_some() {
        ClusterKind::AttachedCluster
    } else if ctx
        .stores
        .custom_clusters
        .get(&ObjectRef::new(name).within(namespace))
        .is_some()
    {
        ClusterKind::CustomCluster
    } else {
        ClusterKind::Cluster
    };
    FleetCluster {
        name: name.to_string(),
        kind,
    }
}

/// Members waiting for kyverno before kyverno-policies is rendered for them.
fn waiting_for_kyverno(
    config: &PluginConfig,
    members: &[Member],
    kyverno_ready: &BTreeSet<String>,
) -> Vec<Waiting> {
    let pod_security = config
        .policy
        .as_ref()
        .and_then(|p| p.kyverno.as_ref())
        .and_then(|k| k.pod_security.as_ref());
    if pod_security.is_none() {
        return Vec::new();
    }
    members
        .iter()
        .filter(|m| !kyverno_ready.contains(&m.name))
        .map(|m| Waiting {
            plugin: Plugin::Policy,
            component: "kyverno-policies".into(),
            cluster: m.name.clone(),
            release: format!("kyverno-policies-{}", m.name),
            reason: reason::WAITING_FOR_KYVERNO,
            message: format!("installed once kyverno-{} is ready", m.name),
        })
        .collect()
}

/// One member's sidecar addresses, or why they could not be read.
type SidecarLookup = (String, Result<Vec<sidecar::Address>, String>);

/// Each ready member's sidecar addresses; `true` when some member could not be read.
async fn sidecar_addresses(
    ctx: &Context,
    namespace: &str,
    members: &[&Reachable],
) -> (BTreeMap<String, Vec<sidecar::Address>>, bool) {
    let lookups: Vec<BoxFuture<'static, SidecarLookup>> = members
        .iter()
        .map(|r| {
            let client = member_client(ctx, namespace, &r.member.kubeconfig, &r.rv);
            let cluster = r.member.name.clone();
            let timeout = ctx.settings.probe_timeout;
            async move {
                let result = async {
                    let client = client.await?;
                    let api = Api::<Service>::namespaced(client, MONITORING_NAMESPACE);
                    let get = api.get_opt(render::SIDECAR_SERVICE);
                    match tokio::time::timeout(timeout, get).await {
                        Err(_) => Err("no answer in time".to_string()),
                        Ok(Err(e)) => Err(e.to_string()),
                        Ok(Ok(service)) => {
                            Ok(service.map(|s| sidecar::addresses(&s)).unwrap_or_default())
                        }
                    }
                }
                .await;
                (cluster, result)
            }
            .boxed()
        })
        .collect();
    let results: Vec<_> = stream::iter(lookups)
        .buffer_unordered(MEMBER_CONCURRENCY)
        .collect()
        .await;
    let mut failed = false;
    let mut out = BTreeMap::new();
    for (cluster, result) in results {
        match result {
            Ok(addresses) if !addresses.is_empty() => {
                out.insert(cluster, addresses);
            }
            Ok(_) => {}
            Err(e) => {
                warn!(%cluster, error = %e, "reading the Thanos sidecar Service failed");
                failed = true;
            }
        }
    }
    (out, failed)
}

async fn apply_discovery(
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
async fn remove_discovery(ctx: &Context, namespace: &str, fleet: &str) -> Result<(), Error> {
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

/// Names of this fleet's plugin objects of one kind that are not wanted any more. Objects of
/// a plugin whose configuration is currently invalid are kept.
fn unwanted<K: Resource<DynamicType = ()> + Clone>(
    store: &Store<K>,
    namespace: &str,
    fleet: &str,
    fleet_uid: &str,
    wanted: &BTreeSet<String>,
    frozen: &BTreeSet<&str>,
) -> Vec<String> {
    store
        .state()
        .iter()
        .filter(|o| o.meta().namespace.as_deref() == Some(namespace))
        .filter(|o| {
            let labels = o.meta().labels.clone().unwrap_or_default();
            labels.get(MANAGED_BY).map(String::as_str) == Some(render::MANAGED_BY_FLEET_MANAGER)
                && labels.get(FLEET).map(String::as_str) == Some(fleet)
                && !labels
                    .get(PLUGIN)
                    .is_some_and(|p| frozen.contains(p.as_str()))
        })
        .filter(|o| {
            o.meta()
                .owner_references
                .iter()
                .flatten()
                .any(|r| r.uid == fleet_uid)
        })
        .map(|o| o.meta().name.clone().unwrap_or_default())
        .filter(|name| !wanted.contains(name))
        .collect()
}
