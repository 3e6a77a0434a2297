//! Installing `charts/kurator` through Flux's helm-controller, and a client holding only a
//! ServiceAccount's token.

use std::{collections::BTreeMap, path::Path};

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Namespace, Service},
};
use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DynamicObject, GroupVersionKind, ListParams},
    config::KubeConfigOptions,
};
use kurator_testenv::{HelmRepo, KuratorRelease, TestEnv, add_kyverno_charts, add_plugin_charts};

use super::{RELEASE, RELEASE_NS, WAIT};
use crate::common::until;

/// The host (and `members` members) with Flux, without Kurator's CRDs: Helm installs them.
pub async fn environment(members: usize) -> TestEnv {
    TestEnv::builder()
        .members(members)
        .flux(true)
        .start()
        .await
        .expect("test environment starts")
}

/// `charts/kurator` in this checkout.
pub fn chart_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../charts/kurator")
}

/// A chart repository serving the kurator chart (and the plugins' real charts: Kyverno's and
/// the metric plugin's bitnami ones); its directory is removed when dropped.
pub fn chart_repository() -> (HelmRepo, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let repo = HelmRepo::start(dir.path().join("charts")).expect("chart repository starts");
    kurator_testenv::add_kurator_chart(&repo, &chart_dir(), env!("CARGO_PKG_VERSION"))
        .expect("the kurator chart packaged");
    add_kyverno_charts(&repo).expect("the real Kyverno charts");
    add_plugin_charts(&repo).expect("the metric plugin's real charts");
    (repo, dir)
}

pub fn helm_releases(client: &Client) -> Api<DynamicObject> {
    kurator_testenv::helm_releases(client, RELEASE_NS)
}

pub use kurator_testenv::ready_condition;

const RELEASE_AS: KuratorRelease<'static> = KuratorRelease {
    namespace: RELEASE_NS,
    name: RELEASE,
    version: env!("CARGO_PKG_VERSION"),
};

/// Installs the chart with `values` through a HelmRepository and a HelmRelease, and waits
/// until helm-controller reports the release Ready (Helm waited for the Deployment).
pub async fn install_chart(admin: &Client, repo: &HelmRepo, values: serde_json::Value) {
    kurator_testenv::install_kurator_chart(admin, repo, &RELEASE_AS, values, WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Waits until the chart's HelmRelease is Ready for its current generation.
pub async fn wait_release_ready(admin: &Client) {
    kurator_testenv::wait_helm_release_ready(admin, RELEASE_NS, RELEASE, WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// A kube client holding only a TokenRequest token of ServiceAccount `account` (in the
/// release namespace) and the host's CA.
pub async fn service_account_client(env: &TestEnv, admin: &Client, account: &str) -> Client {
    let kubeconfig = kurator_testenv::service_account_kubeconfig(env, admin, RELEASE_NS, account)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("token kubeconfig");
    let client = Client::try_from(config).expect("token client");
    // Not the admin: the chart grants nothing on Namespaces.
    let refused = Api::<Namespace>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect_err("the ServiceAccount cannot list namespaces");
    assert!(
        matches!(&refused, kube::Error::Api(s) if s.code == 403),
        "{refused}"
    );
    client
}

pub async fn deployment_args(admin: &Client) -> Vec<String> {
    let deployment = Api::<Deployment>::namespaced(admin.clone(), RELEASE_NS)
        .get(RELEASE)
        .await
        .expect("the chart's Deployment");
    deployment.spec.unwrap().template.spec.unwrap().containers[0]
        .args
        .clone()
        .unwrap_or_default()
}

/// The Deployment as the issue asks: non-root UID 65532, read-only root filesystem, no
/// capabilities, no privilege escalation, RuntimeDefault seccomp, probes on `/healthz` and
/// `/readyz`, resource requests, and the Pod's namespace and name from the downward API.
pub fn assert_hardened(deployment: &Deployment) {
    let pod = deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    let pod_security = pod.security_context.as_ref().expect("pod securityContext");
    assert_eq!(pod_security.run_as_non_root, Some(true));
    assert_eq!(pod_security.run_as_user, Some(65532));
    let container = &pod.containers[0];
    let security = container
        .security_context
        .as_ref()
        .expect("container securityContext");
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(
        security.capabilities.as_ref().and_then(|c| c.drop.clone()),
        Some(vec!["ALL".to_string()])
    );
    assert_eq!(
        security.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
        Some("RuntimeDefault")
    );
    let path = |probe: &Option<k8s_openapi::api::core::v1::Probe>| {
        probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .and_then(|h| h.path.clone())
    };
    assert_eq!(path(&container.liveness_probe).as_deref(), Some("/healthz"));
    assert_eq!(path(&container.readiness_probe).as_deref(), Some("/readyz"));
    let requests = container
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref());
    assert!(requests.is_some_and(|r| r.contains_key("cpu") && r.contains_key("memory")));
    for (name, field) in [
        ("POD_NAMESPACE", "metadata.namespace"),
        ("POD_NAME", "metadata.name"),
    ] {
        let from = container
            .env
            .iter()
            .flatten()
            .find(|e| e.name == name)
            .and_then(|e| e.value_from.as_ref()?.field_ref.as_ref())
            .map(|f| f.field_path.as_str());
        assert_eq!(from, Some(field), "{name}");
    }
}

/// The ServiceMonitor CRD of the real kube-prometheus chart (prometheus-operator v0.63's), so
/// the chart's optional ServiceMonitor can be installed.
pub async fn install_service_monitor_crd(admin: &Client) {
    let yaml =
        kurator_testenv::plugin_chart_file("kube-prometheus", "crds/crd-servicemonitor.yaml")
            .expect("the kube-prometheus chart's ServiceMonitor CRD");
    let crds = kurator_testenv::parse_crds(&[yaml]).expect("a CRD");
    kurator_testenv::install_crds(admin, &crds, WAIT)
        .await
        .expect("the ServiceMonitor CRD established");
}

/// The chart's ServiceMonitor, as a Prometheus operator reads it, selects exactly the metrics
/// Service, in the release's namespace, on a port the Service has, at `/metrics`.
pub async fn assert_service_monitor_selects_the_metrics_service(admin: &Client) {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "monitoring.coreos.com",
        "v1",
        "ServiceMonitor",
    ));
    let monitor = until("the chart's ServiceMonitor", WAIT, || async {
        Api::<DynamicObject>::namespaced_with(admin.clone(), RELEASE_NS, &resource)
            .get_opt(RELEASE)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "not yet".to_string())
            .map(Some)
    })
    .await;
    let spec = &monitor.data["spec"];
    let selector: BTreeMap<String, String> =
        serde_json::from_value(spec["selector"]["matchLabels"].clone()).expect("matchLabels");
    assert!(!selector.is_empty(), "{spec}");
    let services = Api::<Service>::namespaced(admin.clone(), RELEASE_NS)
        .list(&ListParams::default())
        .await
        .expect("list Services");
    let selected: Vec<&Service> = services
        .items
        .iter()
        .filter(|svc| {
            let labels = svc.labels();
            selector.iter().all(|(k, v)| labels.get(k) == Some(v))
        })
        .collect();
    let names: Vec<String> = selected.iter().map(|s| s.name_any()).collect();
    assert_eq!(names, [format!("{RELEASE}-metrics")], "{spec}");
    assert_eq!(
        spec["namespaceSelector"]["matchNames"],
        serde_json::json!([RELEASE_NS])
    );
    let port_names: Vec<String> = selected[0]
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|p| p.name.clone())
        .collect();
    let endpoint = &spec["endpoints"][0];
    assert!(
        endpoint["port"]
            .as_str()
            .is_some_and(|p| port_names.iter().any(|n| n == p)),
        "endpoint {endpoint} names none of the Service's ports {port_names:?}"
    );
    assert_eq!(endpoint["path"], "/metrics");
}
