//! Thanos sidecar discovery: each member's sidecar Service is a LoadBalancer; the host's
//! Thanos Query finds the sidecars through the headless Service `thanos-sidecar-remote`.
//!
//! Upstream fills that Service's Endpoints with load-balancer IPs only and silently drops
//! hostname-only load balancers (AWS ELB, for one). Here IP addresses go into EndpointSlices
//! (one per address family) and hostnames into Thanos Query's `query.stores` as `dns+` entries,
//! so every member is queried.

use std::{collections::BTreeMap, net::IpAddr};

use super::{
    Plugin,
    render::{self, SIDECAR_REMOTE_SERVICE},
};
use k8s_openapi::{
    api::{
        core::v1::{Service, ServicePort, ServiceSpec},
        discovery::v1::{Endpoint, EndpointPort, EndpointSlice},
    },
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use kube::api::ObjectMeta;

/// The sidecar's gRPC port.
pub const SIDECAR_GRPC_PORT: i32 = 10901;

/// A member's sidecar address as its load balancer reports it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Address {
    Ip(IpAddr),
    Hostname(String),
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Ip(ip) => write!(f, "{ip}"),
            Address::Hostname(h) => f.write_str(h),
        }
    }
}

/// Pure: the addresses a member's sidecar Service offers; empty when it is not a LoadBalancer
/// or has no ingress yet.
pub fn addresses(service: &Service) -> Vec<Address> {
    let is_lb = service.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer");
    if !is_lb {
        return Vec::new();
    }
    let ingress = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref());
    let mut out: Vec<Address> = ingress
        .into_iter()
        .flatten()
        .filter_map(|i| {
            if let Some(ip) = i.ip.as_deref().and_then(|ip| ip.parse::<IpAddr>().ok()) {
                // Not reachable from the host's Thanos Query (and refused in EndpointSlices).
                routable(&ip).then_some(Address::Ip(ip))
            } else {
                i.hostname
                    .as_deref()
                    .filter(|h| !h.is_empty())
                    .map(|h| Address::Hostname(h.to_string()))
            }
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Whether another cluster could reach `ip`: not loopback, unspecified or link-local.
fn routable(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_loopback() || v4.is_unspecified() || v4.is_link_local()),
        IpAddr::V6(v6) => {
            !(v6.is_loopback() || v6.is_unspecified() || (v6.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}

/// What the host needs for a set of member sidecars.
#[derive(Clone, Debug, PartialEq)]
pub struct Discovery {
    pub service: Service,
    /// One per address family in use (possibly empty slices are still written, so a family
    /// that disappears is emptied rather than left stale).
    pub slices: Vec<EndpointSlice>,
    /// `dns+<hostname>:10901` for Thanos Query's `query.stores`.
    pub stores: Vec<String>,
    /// `<cluster>=<address>:10901`, for `status.pluginEndpoints`.
    pub endpoints: Vec<String>,
}

fn labels(fleet: &str) -> BTreeMap<String, String> {
    render::labels(fleet, Plugin::Metric, render::component::THANOS)
}

/// Pure: the host Service, EndpointSlices and Query stores for `members` (cluster → addresses).
pub fn build(
    fleet: &str,
    namespace: &str,
    owner: &OwnerReference,
    members: &BTreeMap<String, Vec<Address>>,
) -> Discovery {
    let meta = |name: &str, extra: &[(&str, &str)]| {
        let mut labels = labels(fleet);
        for (k, v) in extra {
            labels.insert(k.to_string(), v.to_string());
        }
        ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(labels),
            owner_references: Some(vec![owner.clone()]),
            ..Default::default()
        }
    };
    let service = Service {
        metadata: meta(SIDECAR_REMOTE_SERVICE, &[]),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            ports: Some(vec![ServicePort {
                name: Some("grpc".into()),
                port: SIDECAR_GRPC_PORT,
                protocol: Some("TCP".into()),
                app_protocol: Some("grpc".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    let mut stores = Vec::new();
    let mut endpoints = Vec::new();
    for (cluster, addresses) in members {
        for address in addresses {
            endpoints.push(format!("{cluster}={address}:{SIDECAR_GRPC_PORT}"));
            match address {
                Address::Ip(IpAddr::V4(ip)) => v4.push(ip.to_string()),
                Address::Ip(IpAddr::V6(ip)) => v6.push(ip.to_string()),
                Address::Hostname(h) => stores.push(format!("dns+{h}:{SIDECAR_GRPC_PORT}")),
            }
        }
    }
    let slice = |family: &str, ips: Vec<String>| EndpointSlice {
        metadata: meta(
            &format!("{SIDECAR_REMOTE_SERVICE}-{}", family.to_lowercase()),
            &[
                ("kubernetes.io/service-name", SIDECAR_REMOTE_SERVICE),
                ("endpointslice.kubernetes.io/managed-by", "kurator.dev"),
            ],
        ),
        address_type: family.to_string(),
        endpoints: ips
            .into_iter()
            .map(|ip| Endpoint {
                addresses: vec![ip],
                ..Default::default()
            })
            .collect(),
        ports: Some(vec![EndpointPort {
            name: Some("grpc".into()),
            port: Some(SIDECAR_GRPC_PORT),
            protocol: Some("TCP".into()),
            app_protocol: Some("grpc".into()),
        }]),
    };
    stores.sort();
    stores.dedup();
    // Two members behind one address would be one endpoint.
    v4.sort();
    v4.dedup();
    v6.sort();
    v6.dedup();
    Discovery {
        service,
        slices: vec![slice("IPv4", v4), slice("IPv6", v6)],
        stores,
        endpoints,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, ServiceStatus};

    fn lb(ingress: Vec<LoadBalancerIngress>) -> Service {
        Service {
            spec: Some(ServiceSpec {
                type_: Some("LoadBalancer".into()),
                ..Default::default()
            }),
            status: Some(ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: Some(ingress),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn ingress(ip: Option<&str>, hostname: Option<&str>) -> LoadBalancerIngress {
        LoadBalancerIngress {
            ip: ip.map(Into::into),
            hostname: hostname.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn ips_and_hostnames_are_both_kept() {
        let service = lb(vec![
            ingress(Some("10.0.0.7"), None),
            ingress(None, Some("abc.elb.amazonaws.com")),
            ingress(Some("fd00::7"), None),
        ]);
        assert_eq!(
            addresses(&service),
            vec![
                Address::Ip("10.0.0.7".parse().unwrap()),
                Address::Ip("fd00::7".parse().unwrap()),
                Address::Hostname("abc.elb.amazonaws.com".into()),
            ]
        );
    }

    #[test]
    fn addresses_no_other_cluster_can_reach_are_left_out() {
        let service = lb(vec![
            ingress(Some("127.0.0.1"), None),
            ingress(Some("::1"), None),
            ingress(Some("0.0.0.0"), None),
            ingress(Some("169.254.1.1"), None),
            ingress(Some("fe80::1"), None),
            ingress(Some("192.0.2.10"), None),
        ]);
        assert_eq!(
            addresses(&service),
            vec![Address::Ip("192.0.2.10".parse().unwrap())]
        );
    }

    #[test]
    fn a_service_without_load_balancer_offers_nothing() {
        let mut service = lb(vec![ingress(Some("10.0.0.7"), None)]);
        service.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
        assert!(addresses(&service).is_empty());
        assert!(addresses(&lb(vec![])).is_empty());
    }

    #[test]
    fn every_member_is_discoverable() {
        let owner = OwnerReference {
            api_version: "fleet.kurator.dev/v1alpha1".into(),
            kind: "Fleet".into(),
            name: "f".into(),
            uid: "u".into(),
            controller: Some(true),
            ..Default::default()
        };
        let members = BTreeMap::from([
            (
                "a".to_string(),
                vec![Address::Ip("10.0.0.7".parse().unwrap())],
            ),
            (
                "b".to_string(),
                vec![Address::Hostname("b.example.com".into())],
            ),
            (
                "c".to_string(),
                vec![Address::Ip("fd00::7".parse().unwrap())],
            ),
        ]);
        let d = build("f", "ns", &owner, &members);
        assert_eq!(
            d.service.metadata.name.as_deref(),
            Some(SIDECAR_REMOTE_SERVICE)
        );
        assert_eq!(
            d.service.spec.as_ref().unwrap().cluster_ip.as_deref(),
            Some("None")
        );
        assert_eq!(d.slices[0].address_type, "IPv4");
        assert_eq!(d.slices[0].endpoints[0].addresses, ["10.0.0.7"]);
        assert_eq!(d.slices[1].endpoints[0].addresses, ["fd00::7"]);
        let service_label = d.slices[0].metadata.labels.as_ref().unwrap();
        assert_eq!(
            service_label["kubernetes.io/service-name"],
            SIDECAR_REMOTE_SERVICE
        );
        assert_eq!(d.stores, ["dns+b.example.com:10901"]);
        assert_eq!(
            d.endpoints,
            [
                "a=10.0.0.7:10901",
                "b=b.example.com:10901",
                "c=fd00::7:10901"
            ]
        );
    }
}
