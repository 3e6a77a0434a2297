//! The simulated Nodes of a cluster: plain Node objects that kwok keeps Ready, sized so that
//! ordinary test workloads fit, labelled like real Linux nodes and without taints, so every
//! Pod without special constraints schedules onto them.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{ListParams, PostParams};

use crate::error::{Error, Result};
use crate::kwok::NODE_ANNOTATION;
use crate::process::{Proc, WaitError, wait_ready};

/// Simulated nodes per cluster: more than one, so that spreading and anti-affinity mean
/// something, few enough to start fast.
pub const FAKE_NODES: usize = 3;

/// Label every simulated node carries (`type=kwok`, as in kwok's own examples).
pub const FAKE_NODE_LABEL: (&str, &str) = ("type", "kwok");

/// Allocatable per node: far more than test workloads request, like a roomy real node.
const CPU: &str = "32";
const MEMORY: &str = "128Gi";
const PODS: &str = "110";

/// `kwok-node-1` … `kwok-node-N`.
pub(crate) fn node_names() -> Vec<String> {
    (1..=FAKE_NODES).map(|i| format!("kwok-node-{i}")).collect()
}

/// `10.240.0.<i>` for `kwok-node-<i>`: each node its own address (kwok gives host-network Pods
/// their node's), outside the Service and Pod ranges. Nothing listens there.
fn internal_ip(name: &str) -> String {
    let index = name.rsplit('-').next().unwrap_or("0");
    format!("10.240.0.{index}")
}

fn fake_node(name: &str) -> Node {
    let labels = [
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", "amd64"),
        ("kubernetes.io/hostname", name),
        FAKE_NODE_LABEL,
    ];
    let resources: BTreeMap<String, Quantity> = [("cpu", CPU), ("memory", MEMORY), ("pods", PODS)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
        .collect();
    Node {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(
                labels
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            annotations: Some(BTreeMap::from([(
                NODE_ANNOTATION.0.to_string(),
                NODE_ANNOTATION.1.to_string(),
            )])),
            ..Default::default()
        },
        spec: None,
        // Kept on create; kwok's node-initialize stage adds conditions, addresses and
        // nodeInfo and keeps these values.
        status: Some(NodeStatus {
            allocatable: Some(resources.clone()),
            capacity: Some(resources),
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: internal_ip(name),
                },
                NodeAddress {
                    type_: "Hostname".into(),
                    address: name.to_string(),
                },
            ]),
            ..Default::default()
        }),
    }
}

/// Creates the simulated Nodes (those that exist already are left alone).
pub(crate) async fn create(client: &kube::Client) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    for name in node_names() {
        match nodes
            .create(&PostParams::default(), &fake_node(&name))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(e) => return Err(Error::kube(format!("creating fake node {name}"), e)),
        }
    }
    Ok(())
}

/// How many simulated Nodes report `Ready=True`.
async fn ready_count(nodes: &Api<Node>) -> usize {
    let (key, value) = FAKE_NODE_LABEL;
    let list = tokio::time::timeout(
        Duration::from_secs(5),
        nodes.list(&ListParams::default().labels(&format!("{key}={value}"))),
    )
    .await;
    let Ok(Ok(list)) = list else {
        return 0;
    };
    list.items
        .iter()
        .filter(|node| {
            node.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count()
}

/// Waits until kwok (`proc`) has made every simulated Node Ready.
pub(crate) async fn wait_ready_nodes(
    kwok: &mut Proc,
    client: &kube::Client,
    timeout: Duration,
) -> std::result::Result<(), WaitError> {
    let nodes: Api<Node> = Api::all(client.clone());
    wait_ready(kwok, timeout, || {
        let nodes = &nodes;
        async move { ready_count(nodes).await == FAKE_NODES }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_look_like_untainted_linux_nodes_kwok_manages() {
        let names = node_names();
        assert_eq!(names.len(), FAKE_NODES);
        let node = fake_node(&names[0]);
        let labels = node.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels["kubernetes.io/os"], "linux");
        assert_eq!(labels["kubernetes.io/arch"], "amd64");
        assert_eq!(labels["kubernetes.io/hostname"], "kwok-node-1");
        assert_eq!(labels["type"], "kwok");
        assert_eq!(
            node.metadata.annotations.unwrap_or_default()["kwok.x-k8s.io/node"],
            "fake"
        );
        assert!(node.spec.is_none(), "no taints");
        let allocatable = node
            .status
            .clone()
            .and_then(|s| s.allocatable)
            .unwrap_or_default();
        let addresses = node.status.and_then(|s| s.addresses).unwrap_or_default();
        assert_eq!(addresses[0].address, "10.240.0.1");
        assert_eq!(allocatable["pods"].0, "110");
        let ips: Vec<String> = names.iter().map(|n| internal_ip(n)).collect();
        assert_eq!(ips, ["10.240.0.1", "10.240.0.2", "10.240.0.3"]);
    }
}
