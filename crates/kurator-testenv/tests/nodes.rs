//! Simulated nodes: kube-scheduler, kwok and the workload controllers in every cluster make
//! Pods behave as in a real cluster (no container runs).
//!
//! One environment (host + one member) is shared by the steps below; each step works in its
//! own namespace of the member and polls its condition with a deadline.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, Node, Pod, PodSpec, PodTemplateSpec, Service, ServiceAccount,
    ServicePort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use kurator_testenv::{FAKE_NODE_LABEL, FAKE_NODES, TestEnv, wait};

const WAIT: Duration = Duration::from_secs(60);
/// An image nobody pulls: kwok only reads the Pod spec.
const IMAGE: &str = "registry.k8s.io/pause:3.10";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_run_on_simulated_nodes() -> Result<()> {
    crate::common::init();
    let binaries = tokio::task::spawn_blocking(kurator_testenv::ensure_binaries).await??;
    let started = Instant::now();
    let env = TestEnv::builder()
        .members(1)
        .binaries(binaries)
        .start()
        .await?;
    eprintln!(
        "warm start of host + 1 member with nodes: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let member = env.members()[0].client().await?;

    for cluster in env.clusters() {
        every_fake_node_is_ready(&cluster.client().await?, cluster.name()).await?;
    }
    default_service_account_in_a_new_namespace(&member).await?;
    deployment_becomes_available(&member).await?;
    job_completes(&member).await?;
    unmatched_node_selector_stays_pending(&member).await?;
    service_gets_ready_endpoints(&member).await?;
    pods_schedule_again_after_an_outage(&env, &member).await?;
    crate::common::ensure_all_running(&env).await?;
    Ok(())
}

fn labels(app: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_string(), app.to_string())])
}

fn pod_template(app: &str, node_selector: Option<BTreeMap<String, String>>) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(app)),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "main".into(),
                image: Some(IMAGE.into()),
                ..Default::default()
            }],
            node_selector,
            ..Default::default()
        }),
    }
}

fn deployment(
    app: &str,
    replicas: i32,
    node_selector: Option<BTreeMap<String, String>>,
) -> Deployment {
    Deployment {
        metadata: ObjectMeta {
            name: Some(app.into()),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(labels(app)),
                ..Default::default()
            },
            template: pod_template(app, node_selector),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn namespace(client: &Client, name: &str) -> Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    namespaces.create(&PostParams::default(), &ns).await?;
    Ok(())
}

/// `type` → `status` of a Deployment's conditions.
fn deployment_conditions(d: &Deployment) -> BTreeMap<String, String> {
    d.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(|cs| {
            cs.iter()
                .map(|c| (c.type_.clone(), c.status.clone()))
                .collect()
        })
        .unwrap_or_default()
}

fn pod_condition<'a>(
    pod: &'a Pod,
    type_: &str,
) -> Option<&'a k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

async fn pods_of(client: &Client, ns: &str, app: &str) -> Result<Vec<Pod>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    Ok(pods
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await?
        .items)
}

async fn every_fake_node_is_ready(client: &Client, cluster: &str) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let (key, value) = FAKE_NODE_LABEL;
    let list = nodes
        .list(&ListParams::default().labels(&format!("{key}={value}")))
        .await?;
    ensure!(
        list.items.len() == FAKE_NODES,
        "{cluster}: {} nodes",
        list.items.len()
    );
    for node in &list.items {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        let status = node.status.clone().unwrap_or_default();
        let ready = status
            .conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        ensure!(ready, "{cluster}/{name} is not Ready");
        let taints = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        ensure!(taints.is_empty(), "{cluster}/{name} has taints {taints:?}");
        let labels = node.metadata.labels.clone().unwrap_or_default();
        ensure!(labels.get("kubernetes.io/os").map(String::as_str) == Some("linux"));
        ensure!(labels.get("kubernetes.io/hostname").map(String::as_str) == Some(name));
        let internal_ip = status
            .addresses
            .clone()
            .unwrap_or_default()
            .into_iter()
            .find(|a| a.type_ == "InternalIP");
        ensure!(internal_ip.is_some(), "{cluster}/{name} has no InternalIP");
        let allocatable = status.allocatable.unwrap_or_default();
        ensure!(allocatable.contains_key("cpu") && allocatable.contains_key("pods"));
    }
    Ok(())
}

async fn default_service_account_in_a_new_namespace(client: &Client) -> Result<()> {
    namespace(client, "fresh").await?;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "fresh");
    wait::until("ServiceAccount fresh/default", WAIT, || async {
        anyhow::Ok(accounts.get_opt("default").await?.is_some())
    })
    .await?;
    // The CA bundle the token volume of every Pod points at is published as well.
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "fresh");
    wait::until("ConfigMap fresh/kube-root-ca.crt", WAIT, || async {
        anyhow::Ok(config_maps.get_opt("kube-root-ca.crt").await?.is_some())
    })
    .await?;
    Ok(())
}

async fn deployment_becomes_available(client: &Client) -> Result<()> {
    namespace(client, "web").await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "web");
    deployments
        .create(&PostParams::default(), &deployment("web", 2, None))
        .await?;
    let t = Instant::now();
    wait::until(
        "Deployment web/web Available with 2 replicas",
        WAIT,
        || async {
            let d = deployments.get("web").await?;
            let available = d
                .status
                .as_ref()
                .and_then(|s| s.available_replicas)
                .unwrap_or(0);
            let conditions = deployment_conditions(&d);
            if available == 2 && conditions.get("Available").map(String::as_str) == Some("True") {
                anyhow::Ok(Ok(()))
            } else {
                Ok(Err(format!(
                    "available {available}, conditions {conditions:?}"
                )))
            }
        },
    )
    .await?;
    eprintln!("Deployment available in {:.1}s", t.elapsed().as_secs_f64());

    let fake_nodes = fake_node_names(client).await?;
    let pods = pods_of(client, "web", "web").await?;
    ensure!(pods.len() == 2, "{} pods", pods.len());
    for pod in &pods {
        let spec = pod.spec.clone().unwrap_or_default();
        let status = pod.status.clone().unwrap_or_default();
        let node = spec.node_name.unwrap_or_default();
        ensure!(
            fake_nodes.contains(&node),
            "bound to {node:?}, not a fake node"
        );
        ensure!(
            status.phase.as_deref() == Some("Running"),
            "{:?}",
            status.phase
        );
        ensure!(pod_condition(pod, "Ready").is_some_and(|c| c.status == "True"));
        let ip = status.pod_ip.unwrap_or_default();
        ensure!(ip.starts_with("10.244."), "pod IP {ip:?}");
        // Admitted by the ServiceAccount plugin, as in a real cluster.
        ensure!(spec.service_account_name.as_deref() == Some("default"));
    }
    Ok(())
}

async fn fake_node_names(client: &Client) -> Result<Vec<String>> {
    let nodes: Api<Node> = Api::all(client.clone());
    let (key, value) = FAKE_NODE_LABEL;
    Ok(nodes
        .list(&ListParams::default().labels(&format!("{key}={value}")))
        .await?
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect())
}

async fn job_completes(client: &Client) -> Result<()> {
    namespace(client, "batch").await?;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "batch");
    let mut template = pod_template("once", None);
    if let Some(spec) = template.spec.as_mut() {
        spec.restart_policy = Some("Never".into());
    }
    let job = Job {
        metadata: ObjectMeta {
            name: Some("once".into()),
            ..Default::default()
        },
        spec: Some(JobSpec {
            template,
            ..Default::default()
        }),
        ..Default::default()
    };
    jobs.create(&PostParams::default(), &job).await?;
    wait::until("Job batch/once Complete", WAIT, || async {
        let job = jobs.get("once").await?;
        let status = job.status.unwrap_or_default();
        let complete = status
            .conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Complete" && c.status == "True");
        let succeeded = status.succeeded.unwrap_or(0);
        if complete && succeeded == 1 {
            anyhow::Ok(Ok(()))
        } else {
            Ok(Err(format!("complete {complete}, succeeded {succeeded}")))
        }
    })
    .await?;
    Ok(())
}

async fn unmatched_node_selector_stays_pending(client: &Client) -> Result<()> {
    namespace(client, "nowhere").await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "nowhere");
    let selector = BTreeMap::from([("disktype".to_string(), "no-such-disk".to_string())]);
    deployments
        .create(
            &PostParams::default(),
            &deployment("stuck", 2, Some(selector)),
        )
        .await?;
    wait::until("both Pods of nowhere/stuck Unschedulable", WAIT, || async {
        let pods = pods_of(client, "nowhere", "stuck").await?;
        let unschedulable = pods
            .iter()
            .filter(|p| {
                p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending")
                    && pod_condition(p, "PodScheduled").is_some_and(|c| {
                        c.status == "False" && c.reason.as_deref() == Some("Unschedulable")
                    })
            })
            .count();
        anyhow::Ok(
            (unschedulable == 2)
                .then_some(())
                .ok_or(format!("{unschedulable} of {} unschedulable", pods.len())),
        )
    })
    .await?;
    let d = deployments.get("stuck").await?;
    let status = d.status.clone().unwrap_or_default();
    ensure!(status.available_replicas.unwrap_or(0) == 0, "{status:?}");
    ensure!(
        deployment_conditions(&d)
            .get("Available")
            .map(String::as_str)
            == Some("False"),
        "{:?}",
        deployment_conditions(&d)
    );
    for pod in pods_of(client, "nowhere", "stuck").await? {
        let node = pod.spec.and_then(|s| s.node_name);
        ensure!(node.is_none(), "bound to {node:?}");
    }
    Ok(())
}

async fn service_gets_ready_endpoints(client: &Client) -> Result<()> {
    namespace(client, "svc").await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "svc");
    deployments
        .create(&PostParams::default(), &deployment("api", 2, None))
        .await?;
    let services: Api<Service> = Api::namespaced(client.clone(), "svc");
    let service = Service {
        metadata: ObjectMeta {
            name: Some("api".into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(labels("api")),
            ports: Some(vec![ServicePort {
                port: 80,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    services.create(&PostParams::default(), &service).await?;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "svc");
    let addresses = wait::until(
        "EndpointSlice of svc/api with 2 ready endpoints",
        WAIT,
        || async {
            let list = slices
                .list(&ListParams::default().labels("kubernetes.io/service-name=api"))
                .await?;
            let ready: Vec<String> = list
                .items
                .iter()
                .flat_map(|s| &s.endpoints)
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
                .flat_map(|e| e.addresses.clone())
                .collect();
            anyhow::Ok(if ready.len() == 2 {
                Ok(Some(ready))
            } else {
                Err(format!("ready {ready:?}"))
            })
        },
    )
    .await?;
    let pod_ips: Vec<String> = pods_of(client, "svc", "api")
        .await?
        .into_iter()
        .filter_map(|p| p.status.and_then(|s| s.pod_ip))
        .collect();
    for address in &addresses {
        ensure!(
            pod_ips.contains(address),
            "{address} is no Pod IP of {pod_ips:?}"
        );
    }
    Ok(())
}

/// The scheduler and kwok keep running through an apiserver outage (or are restarted by
/// `start`), so a Deployment scaled afterwards still gets Running Pods.
async fn pods_schedule_again_after_an_outage(env: &TestEnv, client: &Client) -> Result<()> {
    let member = &env.members()[0];
    member.stop().await?;
    member.start().await?;
    let dead = env.dead_processes().await;
    if !dead.is_empty() {
        bail!("after the restart these are not running: {dead:?}");
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "web");
    let scale = serde_json::json!({"spec": {"replicas": 3}});
    wait::until("scaling web/web after the restart", WAIT, || async {
        anyhow::Ok(
            deployments
                .patch("web", &PatchParams::default(), &Patch::Merge(&scale))
                .await
                .map(|_| ()),
        )
    })
    .await?;
    wait::until(
        "web/web available with 3 replicas after the outage",
        WAIT,
        || async {
            let d = deployments.get("web").await?;
            let available = d.status.and_then(|s| s.available_replicas).unwrap_or(0);
            anyhow::Ok(
                (available == 3)
                    .then_some(())
                    .ok_or(format!("available {available}")),
            )
        },
    )
    .await?;
    Ok(())
}
