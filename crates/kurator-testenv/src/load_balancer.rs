//! A stand-in for a cloud load balancer controller: member clusters have none, so a Service of
//! type `LoadBalancer` never gets an address and Helm (kstatus) waits for it forever. Tests
//! assign addresses with [`assign_load_balancer_ingress`]; the playground runs
//! [`run_load_balancer_simulator`], which gives every such Service one address.

use std::collections::BTreeSet;
use std::net::IpAddr;
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
    let api: Api<Service> = Api::all(client.clone());
    let mut services = watcher(api, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    let mut retry: BTreeSet<(String, String)> = BTreeSet::new();
    let mut watch_ended = false;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(%address, "load balancer simulator watching Services");
    loop {
        tokio::select! {
            event = services.next(), if !watch_ended => match event {
                Some(Ok(svc)) => {
                    if let Some(key) = waiting_for_address(&svc) {
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
                            if let Some(key) = waiting_for_address(&svc) {
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
