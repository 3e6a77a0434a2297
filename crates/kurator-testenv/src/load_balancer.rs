//! A stand-in for a cloud load balancer controller: member clusters have none, so a Service of
//! type `LoadBalancer` never gets an address and Helm (kstatus) waits for it forever. Tests
//! assign addresses with [`assign_load_balancer_ingress`]; [`run_load_balancer_simulator`]
//! gives every such Service one address, and [`run_load_balancer_pool_simulator`] gives each
//! its own from a [`LoadBalancerPool`] shared by all clusters.
//!
//! A pool address is what the Service reports (`198.51.100.N`, TEST-NET-2: the controller
//! refuses loopback addresses in discovery, as the API server refuses them in
//! EndpointSlices), and the pool pairs it with a loopback address (`<prefix>.N`) where the
//! process standing in for the Service's Pod listens: the simulated network forwards one to
//! the other, as a cloud load balancer forwards its address to the Pods.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};

use crate::error::{Error, Result};

/// One `status.loadBalancer.ingress` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LoadBalancerIngress {
    /// An IP address (`ip`), as most cloud load balancers report.
    Ip(String),
    /// A DNS name (`hostname`), as e.g. AWS ELBs report.
    Hostname(String),
}

impl LoadBalancerIngress {
    /// [`LoadBalancerIngress::Ip`] if `address` parses as an IP address, else
    /// [`LoadBalancerIngress::Hostname`].
    pub fn for_address(address: &str) -> LoadBalancerIngress {
        if address.parse::<IpAddr>().is_ok() {
            LoadBalancerIngress::Ip(address.to_string())
        } else {
            LoadBalancerIngress::Hostname(address.to_string())
        }
    }

    fn to_json(&self) -> serde_json::Value {
        match self {
            LoadBalancerIngress::Ip(ip) => serde_json::json!({ "ip": ip }),
            LoadBalancerIngress::Hostname(host) => serde_json::json!({ "hostname": host }),
        }
    }
}

/// The merge patch setting `status.loadBalancer.ingress` to exactly `[ingress]`.
fn ingress_patch(ingress: &LoadBalancerIngress) -> serde_json::Value {
    serde_json::json!({ "status": { "loadBalancer": { "ingress": [ingress.to_json()] } } })
}

/// Sets `status.loadBalancer.ingress` of Service `namespace/name` to `[ingress]` through the
/// status subresource (replacing any previous entries), as a cloud controller would.
pub async fn assign_load_balancer_ingress(
    client: kube::Client,
    namespace: &str,
    name: &str,
    ingress: LoadBalancerIngress,
) -> Result<()> {
    let api: Api<Service> = Api::namespaced(client, namespace);
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(&ingress_patch(&ingress)),
    )
    .await
    .map_err(|e| {
        Error::kube(
            format!("setting status.loadBalancer.ingress of Service {namespace}/{name}"),
            e,
        )
    })?;
    Ok(())
}

/// The first three octets of every address a [`LoadBalancerPool`] hands out (TEST-NET-2,
/// RFC 5737: documentation only, never routed).
pub const POOL_ADVERTISED_PREFIX: [u8; 3] = [198, 51, 100];
/// Addresses per pool: the last octet runs 1..=254.
const POOL_SIZE: u8 = 254;

/// Which Service: `(cluster, namespace, name)`.
type ServiceKey = (String, String, String);

/// Distinct load-balancer addresses for the Services of several clusters, each stable for
/// its Service (a Service deleted and created again gets its old address back), each paired
/// with a loopback address to listen on. Clones share the allocations.
#[derive(Debug, Clone)]
pub struct LoadBalancerPool {
    loopback_prefix: [u8; 3],
    allocated: Arc<Mutex<BTreeMap<ServiceKey, u8>>>,
}

impl LoadBalancerPool {
    /// A pool whose listen addresses are `<loopback_prefix>.N` (e.g. `[127, 0, 10]`; pick a
    /// prefix no other process on the machine uses, as every sidecar listens on one port).
    pub fn new(loopback_prefix: [u8; 3]) -> LoadBalancerPool {
        LoadBalancerPool {
            loopback_prefix,
            allocated: Arc::default(),
        }
    }

    /// The address Service `namespace/name` in `cluster` reports; allocated on first use.
    /// `None` once all addresses are taken.
    pub fn address_for(&self, cluster: &str, namespace: &str, name: &str) -> Option<Ipv4Addr> {
        let key = (cluster.to_string(), namespace.to_string(), name.to_string());
        let mut allocated = self.allocated.lock().unwrap_or_else(|e| e.into_inner());
        let last = match allocated.get(&key) {
            Some(last) => *last,
            None => {
                let used: BTreeSet<u8> = allocated.values().copied().collect();
                let free = (1..=POOL_SIZE).find(|n| !used.contains(n))?;
                allocated.insert(key, free);
                free
            }
        };
        let [a, b, c] = POOL_ADVERTISED_PREFIX;
        Some(Ipv4Addr::new(a, b, c, last))
    }

    /// Pure: where traffic to the pool address `advertised` arrives (`<prefix>.N` for
    /// `198.51.100.N`); `None` for an address not from a pool.
    pub fn loopback_for(&self, advertised: IpAddr) -> Option<IpAddr> {
        let IpAddr::V4(v4) = advertised else {
            return None;
        };
        let [a, b, c, last] = v4.octets();
        if [a, b, c] != POOL_ADVERTISED_PREFIX || last == 0 || last > POOL_SIZE {
            return None;
        }
        let [p, q, r] = self.loopback_prefix;
        Some(IpAddr::V4(Ipv4Addr::new(p, q, r, last)))
    }
}

/// `(namespace, name)` of a Service of type `LoadBalancer` that has no ingress yet.
fn waiting_for_address(svc: &Service) -> Option<(String, String)> {
    let is_lb = svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer");
    let has_ingress = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .is_some_and(|ingress| !ingress.is_empty());
    if !is_lb || has_ingress || svc.metadata.deletion_timestamp.is_some() {
        return None;
    }
    Some((svc.metadata.namespace.clone()?, svc.metadata.name.clone()?))
}

/// Watches Services in all namespaces and gives every `type: LoadBalancer` Service without an
/// ingress the address `address` (an IP; anything that does not parse as one is used as a
/// hostname). Runs until the future is dropped (abort its task to stop); API errors are
/// logged, the watch restarts with backoff and failed assignments are retried every second.
pub async fn run_load_balancer_simulator(client: kube::Client, address: String) {
    let ingress = LoadBalancerIngress::for_address(&address);
    tracing::info!(%address, "load balancer simulator watching Services");
    run_simulator(client, move |_, _| Some(ingress.clone())).await
}

/// Watches Services in all namespaces of `cluster` and gives every `type: LoadBalancer`
/// Service without an ingress its own address from `pool` (see [`LoadBalancerPool`]). Runs
/// until the future is dropped, like [`run_load_balancer_simulator`].
pub async fn run_load_balancer_pool_simulator(
    client: kube::Client,
    cluster: String,
    pool: LoadBalancerPool,
) {
    tracing::info!(%cluster, "load balancer simulator watching Services, one address each");
    run_simulator(client, move |ns, name| {
        let address = pool.address_for(&cluster, ns, name);
        if address.is_none() {
            tracing::warn!(%cluster, %ns, %name, "the load balancer pool is exhausted");
        }
        address.map(|ip| LoadBalancerIngress::Ip(ip.to_string()))
    })
    .await
}

/// The simulator's loop: `ingress_for(namespace, name)` picks a Service's address (`None`:
/// none to give, it keeps waiting).
async fn run_simulator(
    client: kube::Client,
    ingress_for: impl Fn(&str, &str) -> Option<LoadBalancerIngress>,
) {
    let api: Api<Service> = Api::all(client.clone());
    let mut services = watcher(api, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    let mut retry: BTreeSet<(String, String)> = BTreeSet::new();
    let mut watch_ended = false;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            event = services.next(), if !watch_ended => match event {
                Some(Ok(svc)) => {
                    if let Some(key) = waiting_for_address(&svc)
                        && let Some(ingress) = ingress_for(&key.0, &key.1)
                    {
                        assign_or_queue(&client, key, &ingress, &mut retry, true).await;
                    }
                }
                Some(Err(e)) => tracing::warn!(error = %e, "watching Services failed; retrying"),
                // The watcher never ends; if it did, finish the pending retries.
                None => watch_ended = true,
            },
            _ = tick.tick(), if !retry.is_empty() => {
                for (ns, name) in std::mem::take(&mut retry) {
                    let api = Api::<Service>::namespaced(client.clone(), &ns);
                    match api.get_opt(&name).await {
                        Ok(Some(svc)) => {
                            if let Some(key) = waiting_for_address(&svc)
                                && let Some(ingress) = ingress_for(&key.0, &key.1)
                            {
                                assign_or_queue(&client, key, &ingress, &mut retry, false).await;
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::debug!(%ns, %name, error = %e, "reading Service failed");
                            retry.insert((ns, name));
                        }
                    }
                }
            }
            else => return,
        }
    }
}

/// Assigns `ingress` to Service `key`; on failure, queues it for a retry (warning on the
/// first failure only, so a Service the API server keeps rejecting does not flood the log).
async fn assign_or_queue(
    client: &kube::Client,
    key: (String, String),
    ingress: &LoadBalancerIngress,
    retry: &mut BTreeSet<(String, String)>,
    first_attempt: bool,
) {
    let (ns, name) = &key;
    match assign_load_balancer_ingress(client.clone(), ns, name, ingress.clone()).await {
        Ok(()) => tracing::info!(%ns, %name, ?ingress, "load balancer address assigned"),
        Err(e) => {
            if first_attempt {
                tracing::warn!(%ns, %name, error = %e, "assigning a load balancer address failed");
            } else {
                tracing::debug!(%ns, %name, error = %e, "assigning a load balancer address failed");
            }
            retry.insert(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        LoadBalancerIngress as K8sIngress, LoadBalancerStatus, ServiceSpec, ServiceStatus,
    };
    use kube::api::ObjectMeta;

    fn service(type_: &str, ingress: Option<Vec<K8sIngress>>) -> Service {
        Service {
            metadata: ObjectMeta {
                namespace: Some("monitoring".into()),
                name: Some("prometheus-prometheus-thanos".into()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                type_: Some(type_.into()),
                ..ServiceSpec::default()
            }),
            status: Some(ServiceStatus {
                load_balancer: Some(LoadBalancerStatus { ingress }),
                ..ServiceStatus::default()
            }),
        }
    }

    #[test]
    fn pool_addresses_are_distinct_stable_and_paired_with_loopback() {
        let pool = LoadBalancerPool::new([127, 0, 10]);
        let a = pool
            .address_for("member1", "monitoring", "sidecar")
            .unwrap();
        let b = pool
            .clone()
            .address_for("member2", "monitoring", "sidecar")
            .unwrap();
        assert_eq!(a, Ipv4Addr::new(198, 51, 100, 1));
        assert_eq!(b, Ipv4Addr::new(198, 51, 100, 2));
        assert_eq!(
            pool.address_for("member1", "monitoring", "sidecar"),
            Some(a)
        );
        assert_eq!(
            pool.loopback_for(IpAddr::V4(b)),
            Some("127.0.10.2".parse().unwrap())
        );
        assert_eq!(pool.loopback_for("10.1.0.1".parse().unwrap()), None);
        assert_eq!(pool.loopback_for("198.51.100.0".parse().unwrap()), None);
        for n in 3..=POOL_SIZE {
            assert!(pool.address_for("member1", "ns", &n.to_string()).is_some());
        }
        assert_eq!(pool.address_for("member3", "monitoring", "sidecar"), None);
    }

    #[test]
    fn address_kinds() {
        assert_eq!(
            LoadBalancerIngress::for_address("172.18.0.10"),
            LoadBalancerIngress::Ip("172.18.0.10".into())
        );
        assert_eq!(
            LoadBalancerIngress::for_address("fd00::1"),
            LoadBalancerIngress::Ip("fd00::1".into())
        );
        assert_eq!(
            LoadBalancerIngress::for_address("lb.example.com"),
            LoadBalancerIngress::Hostname("lb.example.com".into())
        );
    }

    #[test]
    fn patch_replaces_the_ingress_list() {
        assert_eq!(
            ingress_patch(&LoadBalancerIngress::Ip("10.0.0.1".into())),
            serde_json::json!({"status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}}})
        );
        assert_eq!(
            ingress_patch(&LoadBalancerIngress::Hostname("a.elb.example".into())),
            serde_json::json!({
                "status": {"loadBalancer": {"ingress": [{"hostname": "a.elb.example"}]}}
            })
        );
    }

    #[test]
    fn only_load_balancers_without_ingress_wait_for_an_address() {
        let key = Some((
            "monitoring".to_string(),
            "prometheus-prometheus-thanos".to_string(),
        ));
        assert_eq!(waiting_for_address(&service("LoadBalancer", None)), key);
        assert_eq!(
            waiting_for_address(&service("LoadBalancer", Some(vec![]))),
            key
        );
        let assigned = K8sIngress {
            ip: Some("10.0.0.1".into()),
            ..K8sIngress::default()
        };
        assert_eq!(
            waiting_for_address(&service("LoadBalancer", Some(vec![assigned]))),
            None
        );
        assert_eq!(waiting_for_address(&service("ClusterIP", None)), None);
        let mut no_status = service("LoadBalancer", None);
        no_status.status = None;
        assert_eq!(waiting_for_address(&no_status), key);
    }
}
