//! What the real bitnami charts render from the product's values, read back from the
//! clusters after Flux installed them (no `helm template` here: the rendering is Helm's own,
//! inside helm-controller).

use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    core::v1::{PersistentVolumeClaim, Secret, Service},
};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind},
};
use serde_json::Value;

/// The Prometheus resource kube-prometheus creates (`fullnameOverride: prometheus`).
pub const PROMETHEUS: &str = "prometheus-prometheus";
/// The Thanos sidecar Service in each member (what the controller reads the address of).
pub const SIDECAR_SERVICE: &str = "prometheus-prometheus-thanos";
/// The grafana chart's datasource Secret (`fullnameOverride: grafana`).
pub const GRAFANA_DATASOURCES: &str = "grafana-datasources";

/// The fleet namespace's Helm release names are `<namespace>-<component>`, and the bitnami
/// charts name their objects after the release.
fn thanos_object(namespace: &str, part: &str) -> String {
    format!("{namespace}-thanos-{part}")
}

pub async fn prometheus(member: &Client) -> Option<DynamicObject> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "monitoring.coreos.com",
        "v1",
        "Prometheus",
    ));
    Api::<DynamicObject>::namespaced_with(member.clone(), "monitoring", &resource)
        .get_opt(PROMETHEUS)
        .await
        .ok()
        .flatten()
}

/// In a member: the chart's Prometheus carries `externalLabels.cluster=<cluster>` and the
/// Thanos sidecar reading the object-store Secret `secret`; the sidecar Service is a
/// LoadBalancer on gRPC 10901.
pub async fn check_member(member: &Client, cluster: &str, secret: &str) -> Result<(), String> {
    let prometheus = prometheus(member)
        .await
        .ok_or(format!("{cluster}: no Prometheus monitoring/{PROMETHEUS}"))?;
    let spec = &prometheus.data["spec"];
    if spec["externalLabels"]["cluster"] != cluster {
        return Err(format!(
            "{cluster}: externalLabels {}",
            spec["externalLabels"]
        ));
    }
    let containers = spec["containers"].as_array().cloned().unwrap_or_default();
    let sidecar = containers
        .iter()
        .find(|c| c["name"] == "thanos-sidecar")
        .ok_or(format!(
            "{cluster}: no thanos-sidecar container in {containers:?}"
        ))?;
    let args: Vec<&str> = sidecar["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !args.contains(&"--objstore.config=$(OBJSTORE_CONFIG)") {
        return Err(format!("{cluster}: sidecar args {args:?}"));
    }
    let env = sidecar["env"].as_array().cloned().unwrap_or_default();
    let objstore = env
        .iter()
        .find(|e| e["name"] == "OBJSTORE_CONFIG")
        .map(|e| &e["valueFrom"]["secretKeyRef"]);
    let expected = serde_json::json!({"name": secret, "key": "objstore.yml"});
    if objstore != Some(&expected) {
        return Err(format!(
            "{cluster}: sidecar OBJSTORE_CONFIG from {objstore:?}"
        ));
    }
    let service = Api::<Service>::namespaced(member.clone(), "monitoring")
        .get(SIDECAR_SERVICE)
        .await
        .map_err(|e| format!("{cluster}: sidecar Service: {e}"))?;
    let spec = service.spec.unwrap_or_default();
    let grpc = spec
        .ports
        .unwrap_or_default()
        .into_iter()
        .find(|p| p.name.as_deref() == Some("grpc"))
        .map(|p| p.port);
    if spec.type_.as_deref() != Some("LoadBalancer") || grpc != Some(10901) {
        return Err(format!(
            "{cluster}: sidecar Service type {:?}, grpc port {grpc:?}",
            spec.type_
        ));
    }
    Ok(())
}

/// On the host: Thanos Query's Deployment asks DNS for the controller's headless Service
/// (`dnssrv+_grpc._tcp.<service>.<namespace>.svc.cluster.local`, which needs its port named
/// `grpc`) and for every `dns+` store; the store gateway reads the object-store Secret from a
/// bound volume; Thanos Query's Service serves HTTP on 9090.
pub async fn check_thanos(
    host: &Client,
    namespace: &str,
    discovery_service: &str,
    secret: &str,
    dns_stores: &[&str],
) -> Result<(), String> {
    let query = Api::<Deployment>::namespaced(host.clone(), namespace)
        .get(&thanos_object(namespace, "query"))
        .await
        .map_err(|e| format!("Thanos Query Deployment: {e}"))?;
    let args: Vec<String> = query
        .spec
        .and_then(|s| s.template.spec)
        .map(|s| s.containers)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.name == "query")
        .and_then(|c| c.args)
        .unwrap_or_default();
    let mut wanted = vec![format!(
        "--endpoint=dnssrv+_grpc._tcp.{discovery_service}.{namespace}.svc.cluster.local"
    )];
    wanted.extend(dns_stores.iter().map(|s| format!("--endpoint={s}")));
    for arg in &wanted {
        if !args.contains(arg) {
            return Err(format!("Thanos Query lacks {arg}: {args:?}"));
        }
    }
    let headless = Api::<Service>::namespaced(host.clone(), namespace)
        .get(discovery_service)
        .await
        .map_err(|e| format!("{discovery_service}: {e}"))?;
    let named_grpc = headless
        .spec
        .and_then(|s| s.ports)
        .unwrap_or_default()
        .iter()
        .any(|p| p.name.as_deref() == Some("grpc"));
    if !named_grpc {
        return Err(format!("{discovery_service} has no port named grpc"));
    }
    check_query_service(host, namespace).await?;

    let name = thanos_object(namespace, "storegateway");
    let store = Api::<StatefulSet>::namespaced(host.clone(), namespace)
        .get(&name)
        .await
        .map_err(|e| format!("store gateway: {e}"))?;
    let volumes = store
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|s| s.volumes)
        .unwrap_or_default();
    let reads_secret = volumes
        .iter()
        .any(|v| v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) == Some(secret));
    if !reads_secret {
        return Err(format!("store gateway volumes without Secret {secret}"));
    }
    let claim = Api::<PersistentVolumeClaim>::namespaced(host.clone(), namespace)
        .get(&format!("data-{name}-0"))
        .await
        .map_err(|e| format!("store gateway's claim: {e}"))?;
    let phase = claim.status.and_then(|s| s.phase);
    if phase.as_deref() != Some("Bound") {
        return Err(format!("store gateway's claim {phase:?}"));
    }
    Ok(())
}

/// Thanos Query's Service, `<namespace>-thanos-query`, with HTTP on 9090.
async fn check_query_service(host: &Client, namespace: &str) -> Result<(), String> {
    let name = thanos_object(namespace, "query");
    let service = Api::<Service>::namespaced(host.clone(), namespace)
        .get(&name)
        .await
        .map_err(|e| format!("Service {name}: {e}"))?;
    let http = service
        .spec
        .and_then(|s| s.ports)
        .unwrap_or_default()
        .into_iter()
        .find(|p| p.name.as_deref() == Some("http"))
        .map(|p| p.port);
    if http != Some(9090) {
        return Err(format!("Service {name}: http port {http:?}"));
    }
    Ok(())
}

/// The datasources Grafana is provisioned with: the chart's Secret, decoded.
pub async fn grafana_datasources(host: &Client, namespace: &str) -> Option<Value> {
    let secret = Api::<Secret>::namespaced(host.clone(), namespace)
        .get_opt(GRAFANA_DATASOURCES)
        .await
        .ok()
        .flatten()?;
    let bytes = secret.data?.remove("datasources.yaml")?;
    serde_saphyr::from_str(std::str::from_utf8(&bytes.0).ok()?).ok()
}

/// On the host: Grafana's provisioned default datasource is Thanos Query's Service on 9090,
/// and Grafana's Deployment mounts that Secret as its datasource provisioning.
pub async fn check_grafana(host: &Client, namespace: &str) -> Result<(), String> {
    let datasources = grafana_datasources(host, namespace).await.ok_or(format!(
        "no Secret {GRAFANA_DATASOURCES} with datasources.yaml"
    ))?;
    let thanos = &datasources["datasources"][0];
    let url = format!("http://{}:9090", thanos_object(namespace, "query"));
    if thanos["type"] != "prometheus"
        || thanos["url"] != url.as_str()
        || thanos["isDefault"] != true
    {
        return Err(format!("datasource {thanos} (expected {url})"));
    }
    check_query_service(host, namespace).await?;
    let grafana = Api::<Deployment>::namespaced(host.clone(), namespace)
        .get("grafana")
        .await
        .map_err(|e| format!("Grafana Deployment: {e}"))?;
    let pod = grafana
        .spec
        .and_then(|s| s.template.spec)
        .unwrap_or_default();
    let mounted = pod.volumes.unwrap_or_default().iter().any(|v| {
        v.name == "datasources"
            && v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) == Some(GRAFANA_DATASOURCES)
    });
    if !mounted {
        return Err("Grafana does not mount its datasources Secret".into());
    }
    Ok(())
}
