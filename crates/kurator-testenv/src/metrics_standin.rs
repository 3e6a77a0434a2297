//! Stands in for the kubelet that would run the metric plugin's Pods: no kubelet runs
//! containers here (kwok only marks Pods Running), so for a fleet's metric plugin this runs
//! the real programs as local processes, configured from what the product rendered and
//! copied, whichever chart (real or stand-in) rendered the objects:
//!
//! - per member whose `prometheus-<cluster>` HelmRelease is Ready on the host: a
//!   [`MemberMetrics`] (Prometheus + Thanos sidecar) with the external labels of the
//!   release's values (`prometheus.externalLabels`), scraping the member's kube-apiserver
//!   and the member's extra targets given to the stand-in (an application's
//!   [`crate::AppExporter`], standing in for its Pods), the object-store configuration of the
//!   member's copied Secret (`prometheus.thanos.objectStorageConfig.{secretName,secretKey}`
//!   in the release's target namespace), and the sidecar listening where the simulated
//!   network forwards the member's sidecar Service's load-balancer address
//!   ([`LoadBalancerPool::loopback_for`]), at the Service's port;
//! - on the host: one [`HostThanosQuery`] whose SD file follows the controller's discovery
//!   objects: the EndpointSlices of `thanos-sidecar-remote` in the fleet namespace
//!   (addresses × ports, forwarded as above) and the `thanos` release's `query.stores`
//!   (`dns+host:port` entries for hostname load balancers).
//!
//! A changed Secret copy restarts that member's sidecar; changed labels or address restart
//! both processes; a release gone stops them. [`MetricsStandIn::run`] reconciles every
//! second until dropped; the processes are killed when the stand-in is dropped.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::{Api, Client};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::cluster::ClusterHandle;
use crate::error::{Error, Result};
use crate::load_balancer::LoadBalancerPool;
use crate::metrics::{MemberMetrics, MemberMetricsParams, MetricsBinaries};
use crate::process::ProcessInfo;
use crate::prometheus::ScrapeTarget;
use crate::thanos_query::{HostThanosQuery, HostThanosQueryParams};

/// The headless Service on the host whose EndpointSlices list the member sidecars.
const SIDECAR_REMOTE_SERVICE: &str = "thanos-sidecar-remote";
/// The host's Thanos release.
const THANOS_RELEASE: &str = "thanos";
/// Where the kube-prometheus chart goes when the release names no target namespace.
const DEFAULT_TARGET_NAMESPACE: &str = "monitoring";
const DEFAULT_OBJSTORE_KEY: &str = "objstore.yml";
/// The sidecar's gRPC port, which its Service exposes.
const SIDECAR_PORT: u16 = crate::thanos::SIDECAR_GRPC_PORT;
const RECONCILE_EVERY: Duration = Duration::from_secs(1);

/// Inputs of [`MetricsStandIn::start`].
#[derive(Clone)]
pub struct MetricsStandInParams<'a> {
    pub binaries: &'a MetricsBinaries,
    /// The host cluster (HelmReleases and discovery objects).
    pub host: Client,
    /// The fleet's namespace on the host.
    pub namespace: String,
    /// The fleet's member clusters: the name the fleet uses (e.g. `kurator-member1`) and
    /// the test-environment cluster behind it.
    pub members: Vec<(String, &'a ClusterHandle)>,
    /// The pool the members' load-balancer simulators hand addresses out from.
    pub pool: LoadBalancerPool,
    pub state_dir: &'a Path,
    pub scrape_interval: Duration,
    /// Per member (the fleet's name for it), what its Prometheus scrapes besides its
    /// kube-apiserver, e.g. an [`crate::AppExporter`]'s [`crate::AppExporter::scrape_target`].
    pub extra_scrape_targets: BTreeMap<String, Vec<ScrapeTarget>>,
    /// Detached (playground): the processes outlive this one.
    pub detached: bool,
    /// How long one process may take to become ready.
    pub timeout: Duration,
}

/// What a member's processes are started from.
#[derive(Clone, PartialEq)]
struct MemberWanted {
    external_labels: BTreeMap<String, String>,
    objstore: Option<String>,
    sidecar: SocketAddr,
}

impl std::fmt::Debug for MemberWanted {
    // Never print the object-store configuration: it may hold credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberWanted")
            .field("external_labels", &self.external_labels)
            .field("objstore", &self.objstore.as_ref().map(|_| ".."))
            .field("sidecar", &self.sidecar)
            .finish()
    }
}

struct RunningMember {
    wanted: MemberWanted,
    metrics: MemberMetrics,
}

#[derive(Default)]
struct State {
    members: BTreeMap<String, RunningMember>,
    sd_endpoints: Vec<String>,
}

/// The stand-in for one fleet; see the module docs.
pub struct MetricsStandIn<'a> {
    params: MetricsStandInParams<'a>,
    query: HostThanosQuery,
    state: Mutex<State>,
}

impl<'a> MetricsStandIn<'a> {
    /// Starts the host's Thanos Query (no endpoints yet); [`Self::run`] or
    /// [`Self::reconcile`] do the rest.
    pub async fn start(params: MetricsStandInParams<'a>) -> Result<MetricsStandIn<'a>> {
        let mut query = HostThanosQueryParams::new(&params.binaries.thanos, params.state_dir);
        query.detached = params.detached;
        query.timeout = params.timeout;
        let query = HostThanosQuery::start(query).await?;
        tracing::info!(fleet_namespace = %params.namespace, query = %query.http_url(),
            "Thanos Query runs as a local process, standing in for the thanos chart's Pod \
             (no kubelet here)");
        Ok(MetricsStandIn {
            params,
            query,
            state: Mutex::default(),
        })
    }

    /// Reconciles every second, forever (drop the future to stop; errors are logged).
    pub async fn run(&self) {
        loop {
            if let Err(e) = self.reconcile().await {
                tracing::warn!(error = %e, "metrics stand-in: reconciling failed; retrying");
            }
            tokio::time::sleep(RECONCILE_EVERY).await;
        }
    }

    /// One pass: starts, restarts and stops member processes and rewrites Query's SD file.
    pub async fn reconcile(&self) -> Result<()> {
        let mut state = self.state.lock().await;
        let releases = helm_releases(&self.params.host, &self.params.namespace).await?;
        for (cluster, handle) in &self.params.members {
            let release = releases.get(&format!("prometheus-{cluster}"));
            let wanted = match release {
                // One member's API server down must not hold the others up: keep what runs.
                Some(release) if is_ready(release) => {
                    match self.member_wanted(cluster, handle, release).await {
                        Ok(wanted) => wanted,
                        Err(e) => {
                            tracing::warn!(%cluster, error = %e, "reading the member failed");
                            continue;
                        }
                    }
                }
                // Upgrading (not Ready for a while): keep what runs.
                Some(_) => continue,
                None => None,
            };
            self.converge(&mut state, cluster, handle, wanted).await;
        }
        let endpoints = self.discovered_endpoints(&releases).await?;
        if endpoints != state.sd_endpoints {
            tracing::info!(?endpoints, "Thanos Query's endpoints follow the discovery");
            self.query.set_sd_endpoints(&endpoints)?;
            state.sd_endpoints = endpoints;
        }
        Ok(())
    }

    /// What to run for `cluster` (`None`: nothing yet, e.g. no load-balancer address).
    async fn member_wanted(
        &self,
        cluster: &str,
        handle: &ClusterHandle,
        release: &DynamicObject,
    ) -> Result<Option<MemberWanted>> {
        let values = release.data.pointer("/spec/values").unwrap_or(&Value::Null);
        let external_labels = external_labels(values);
        let namespace = release
            .data
            .pointer("/spec/targetNamespace")
            .and_then(Value::as_str)
            .unwrap_or(DEFAULT_TARGET_NAMESPACE);
        let client = handle.client().await?;
        let services = Api::<Service>::namespaced(client.clone(), namespace)
            .list(&ListParams::default())
            .await
            .map_err(|e| Error::kube(format!("listing Services in {cluster}"), e))?;
        let Some((advertised, port)) = services.items.iter().find_map(sidecar_load_balancer) else {
            tracing::debug!(%cluster, "the sidecar Service has no load-balancer address yet");
            return Ok(None);
        };
        let Some(listen) = self.params.pool.loopback_for(advertised) else {
            tracing::warn!(%cluster, %advertised, "the sidecar's load-balancer address is not \
                from the simulator's pool: nothing forwards it here, not standing in");
            return Ok(None);
        };
        let objstore = match objstore_secret(values) {
            Some((name, key)) => {
                let secret = Api::<Secret>::namespaced(client, namespace)
                    .get_opt(&name)
                    .await
                    .map_err(|e| Error::kube(format!("reading Secret {name} in {cluster}"), e))?;
                secret
                    .and_then(|s| s.data?.remove(&key))
                    .and_then(|bytes| String::from_utf8(bytes.0).ok())
            }
            None => None,
        };
        Ok(Some(MemberWanted {
            external_labels,
            objstore,
            sidecar: SocketAddr::new(listen, port),
        }))
    }

    /// Brings `cluster`'s processes to `wanted`; failures are logged and retried next pass.
    async fn converge(
        &self,
        state: &mut State,
        cluster: &str,
        handle: &ClusterHandle,
        wanted: Option<MemberWanted>,
    ) {
        let running = state.members.get(cluster).map(|r| r.wanted.clone());
        match (running, wanted) {
            (None, None) => {}
            (Some(_), None) => {
                if let Some(mut gone) = state.members.remove(cluster) {
                    tracing::info!(%cluster, "prometheus release gone: stopping its processes");
                    if let Err(e) = gone.metrics.stop().await {
                        tracing::warn!(%cluster, error = %e, "stopping member metrics failed");
                    }
                }
            }
            (Some(now), Some(wanted)) if now == wanted => {}
            (Some(now), Some(wanted))
                if now.external_labels == wanted.external_labels
                    && now.sidecar == wanted.sidecar =>
            {
                let member = state.members.get_mut(cluster).expect("running");
                // A sidecar is ready only once it reads its Prometheus: restarting it during
                // an outage would hold every pass until the timeout. Done once it is back.
                if !member.metrics.prometheus_running() {
                    tracing::debug!(%cluster, "Prometheus down: the sidecar restart waits");
                    return;
                }
                tracing::info!(%cluster, "object-store Secret copy changed: restarting the sidecar");
                match member
                    .metrics
                    .restart_sidecar(wanted.objstore.as_deref())
                    .await
                {
                    Ok(()) => member.wanted = wanted,
                    Err(e) => tracing::warn!(%cluster, error = %e, "restarting the sidecar failed"),
                }
            }
            (_, Some(wanted)) => {
                if let Some(mut old) = state.members.remove(cluster) {
                    tracing::info!(%cluster, "labels or address changed: restarting");
                    old.metrics.stop().await.ok();
                }
                match self.start_member(cluster, handle, &wanted).await {
                    Ok(metrics) => {
                        tracing::info!(%cluster, sidecar = %wanted.sidecar,
                            labels = ?wanted.external_labels,
                            "Prometheus and Thanos sidecar run as local processes, standing in \
                             for the kube-prometheus chart's Pod (no kubelet here)");
                        state
                            .members
                            .insert(cluster.to_string(), RunningMember { wanted, metrics });
                    }
                    Err(e) => {
                        tracing::warn!(%cluster, error = %e, "starting member metrics failed")
                    }
                }
            }
        }
    }

    async fn start_member(
        &self,
        cluster: &str,
        handle: &ClusterHandle,
        wanted: &MemberWanted,
    ) -> Result<MemberMetrics> {
        let mut p = MemberMetricsParams::new(
            self.params.binaries,
            handle,
            self.params.state_dir,
            wanted.external_labels.clone(),
            wanted.sidecar,
        );
        p.objstore_config = wanted.objstore.clone();
        p.scrape_interval = self.params.scrape_interval;
        p.extra_targets = self
            .params
            .extra_scrape_targets
            .get(cluster)
            .cloned()
            .unwrap_or_default();
        p.detached = self.params.detached;
        p.timeout = self.params.timeout;
        MemberMetrics::start(p).await
    }

    /// Query's endpoints from the discovery objects: slice addresses × ports, forwarded to
    /// where the sidecars listen, and the thanos release's `dns+` stores.
    async fn discovered_endpoints(
        &self,
        releases: &BTreeMap<String, DynamicObject>,
    ) -> Result<Vec<String>> {
        let slices =
            Api::<EndpointSlice>::namespaced(self.params.host.clone(), &self.params.namespace)
                .list(&ListParams::default().labels(&format!(
                    "kubernetes.io/service-name={SIDECAR_REMOTE_SERVICE}"
                )))
                .await
                .map_err(|e| Error::kube("listing the sidecar EndpointSlices", e))?;
        let mut endpoints = slice_endpoints(&slices.items, &self.params.pool);
        if let Some(stores) = releases
            .get(THANOS_RELEASE)
            .and_then(|r| r.data.pointer("/spec/values/query/stores"))
            .and_then(Value::as_array)
        {
            endpoints.extend(stores.iter().filter_map(Value::as_str).map(str::to_string));
        }
        endpoints.sort();
        endpoints.dedup();
        Ok(endpoints)
    }

    /// The host's Thanos Query.
    pub fn query(&self) -> &HostThanosQuery {
        &self.query
    }

    /// `http://127.0.0.1:<port>`: Thanos Query's HTTP API (for `--thanos-url`).
    pub fn query_url(&self) -> String {
        self.query.http_url()
    }

    /// The members whose processes run, with their sidecar's address.
    pub async fn running_members(&self) -> BTreeMap<String, SocketAddr> {
        let state = self.state.lock().await;
        state
            .members
            .iter()
            .map(|(c, r)| (c.clone(), r.wanted.sidecar))
            .collect()
    }

    /// What Query's SD file lists now.
    pub async fn sd_endpoints(&self) -> Vec<String> {
        self.state.lock().await.sd_endpoints.clone()
    }

    /// Kills `cluster`'s Prometheus (an outage; the stand-in does not restart it).
    pub async fn stop_prometheus(&self, cluster: &str) -> Result<()> {
        let mut state = self.state.lock().await;
        match state.members.get_mut(cluster) {
            Some(member) => member.metrics.stop_prometheus().await,
            None => Err(not_running(cluster)),
        }
    }

    /// Starts `cluster`'s Prometheus again after [`Self::stop_prometheus`].
    pub async fn start_prometheus(&self, cluster: &str) -> Result<()> {
        let mut state = self.state.lock().await;
        match state.members.get_mut(cluster) {
            Some(member) => member.metrics.start_prometheus().await,
            None => Err(not_running(cluster)),
        }
    }

    /// `cluster`'s sidecar's own metrics (e.g. `thanos_objstore_bucket_*`).
    pub async fn sidecar_metrics(&self, cluster: &str) -> Result<String> {
        let state = self.state.lock().await;
        match state.members.get(cluster) {
            Some(member) => member.metrics.sidecar_metrics().await,
            None => Err(not_running(cluster)),
        }
    }

    /// The processes it runs now: Thanos Query, then each member's.
    pub async fn processes(&self) -> Vec<ProcessInfo> {
        let mut processes = self.query.processes();
        let mut state = self.state.lock().await;
        processes.extend(
            state
                .members
                .values_mut()
                .flat_map(|m| m.metrics.processes()),
        );
        processes
    }
}

fn not_running(cluster: &str) -> Error {
    Error::Usage(format!("no member metrics run for {cluster}"))
}

/// The fleet namespace's HelmReleases by name (deleted ones left out).
async fn helm_releases(host: &Client, namespace: &str) -> Result<BTreeMap<String, DynamicObject>> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "helm.toolkit.fluxcd.io",
        "v2",
        "HelmRelease",
    ));
    let api: Api<DynamicObject> = Api::namespaced_with(host.clone(), namespace, &resource);
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| Error::kube(format!("listing HelmReleases in {namespace}"), e))?;
    Ok(list
        .items
        .into_iter()
        .filter(|r| r.metadata.deletion_timestamp.is_none())
        .filter_map(|r| Some((r.metadata.name.clone()?, r)))
        .collect())
}

/// Pure: whether a HelmRelease's `Ready` condition is `True`.
fn is_ready(release: &DynamicObject) -> bool {
    release
        .data
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// Pure: `prometheus.externalLabels` of rendered kube-prometheus values.
fn external_labels(values: &Value) -> BTreeMap<String, String> {
    values
        .pointer("/prometheus/externalLabels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect()
}

/// Pure: `(secretName, secretKey)` of `prometheus.thanos.objectStorageConfig`.
fn objstore_secret(values: &Value) -> Option<(String, String)> {
    let config = values.pointer("/prometheus/thanos/objectStorageConfig")?;
    let name = config.get("secretName")?.as_str()?.to_string();
    let key = config
        .get("secretKey")
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_OBJSTORE_KEY)
        .to_string();
    Some((name, key))
}

/// Pure: a LoadBalancer Service exposing the sidecar's port, with its first ingress IP.
fn sidecar_load_balancer(service: &Service) -> Option<(IpAddr, u16)> {
    let spec = service.spec.as_ref()?;
    if spec.type_.as_deref() != Some("LoadBalancer") {
        return None;
    }
    let port = spec
        .ports
        .iter()
        .flatten()
        .find(|p| p.port == i32::from(SIDECAR_PORT))?;
    let ip = service
        .status
        .as_ref()?
        .load_balancer
        .as_ref()?
        .ingress
        .iter()
        .flatten()
        .find_map(|i| i.ip.as_deref()?.parse().ok())?;
    Some((ip, u16::try_from(port.port).ok()?))
}

/// Pure: `address:port` for every slice address and port, forwarded through `pool` (an
/// address not from the pool is kept as it is: nothing here forwards it).
fn slice_endpoints(slices: &[EndpointSlice], pool: &LoadBalancerPool) -> Vec<String> {
    let mut out = Vec::new();
    for slice in slices {
        let ports: Vec<u16> = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| u16::try_from(p.port?).ok())
            .collect();
        for endpoint in &slice.endpoints {
            for address in &endpoint.addresses {
                let Ok(ip) = address.parse::<IpAddr>() else {
                    continue;
                };
                let ip = pool.loopback_for(ip).unwrap_or(ip);
                out.extend(
                    ports
                        .iter()
                        .map(|port| SocketAddr::new(ip, *port).to_string()),
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort};
    use serde_json::json;

    #[test]
    fn release_values_give_labels_and_the_secret() {
        let values = json!({"prometheus": {
            "externalLabels": {"cluster": "kurator-member1"},
            "thanos": {"objectStorageConfig": {"secretName": "thanos-objstore", "secretKey": "objstore.yml"}},
        }});
        assert_eq!(
            external_labels(&values),
            BTreeMap::from([("cluster".to_string(), "kurator-member1".to_string())])
        );
        assert_eq!(
            objstore_secret(&values),
            Some(("thanos-objstore".into(), "objstore.yml".into()))
        );
        assert_eq!(objstore_secret(&json!({})), None);
        assert!(external_labels(&json!({})).is_empty());
    }

    #[test]
    fn readiness_is_the_ready_condition() {
        let release = |status: &str| DynamicObject {
            types: None,
            metadata: Default::default(),
            data: json!({"status": {"conditions": [{"type": "Ready", "status": status}]}}),
        };
        assert!(is_ready(&release("True")));
        assert!(!is_ready(&release("False")));
    }

    #[test]
    fn slices_are_forwarded_to_the_loopback_pairs() {
        let pool = LoadBalancerPool::new([127, 0, 10]);
        let slice = EndpointSlice {
            address_type: "IPv4".into(),
            endpoints: vec![
                Endpoint {
                    addresses: vec!["198.51.100.2".into()],
                    ..Default::default()
                },
                Endpoint {
                    addresses: vec!["10.1.0.1".into()],
                    ..Default::default()
                },
            ],
            ports: Some(vec![EndpointPort {
                port: Some(10901),
                ..Default::default()
            }]),
            metadata: Default::default(),
        };
        assert_eq!(
            slice_endpoints(&[slice], &pool),
            ["127.0.10.2:10901", "10.1.0.1:10901"]
        );
    }
}
