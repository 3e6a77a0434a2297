//! Pure: the Flux objects a Fleet's plugins want (see docs/plugins.md and
//! ../shared/reference/kurator-behaviour.md, "Plugins").
//!
//! Every component is a HelmRepository + HelmRelease pair with the same name, in the Fleet's
//! namespace, owned by the Fleet and labelled as upstream Kurator labels them ([`labels`]).
//! Fleet-scoped components (`thanos`, `grafana`) install on the host and are named after the
//! component; per-cluster ones (`prometheus`, `kyverno`, `kyverno-policies`) are named
//! `<component>-<cluster>` and install into the member through `kubeConfig.secretRef`.
//!
//! Helm values are layered ([`merge_values`]): values the controller injects win over the
//! user's `extraArgs`, which win over the chart defaults (upstream's, in metric.rs, grafana.rs
//! and policy.rs).
//!
//! Invalid configuration (admission rejects it, but the builder stays defensive) is reported by
//! [`problems`]; a plugin with a problem is left out of [`render`] entirely, so the caller can
//! report it and leave that plugin's existing objects alone instead of pruning them.

mod grafana;
mod metric;
mod policy;

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kurator_api::{
    cluster::SecretKeyRef,
    fleet::{ChartConfig, PluginConfig},
    flux::{
        CrossNamespaceSourceReference, HelmChartTemplate, HelmChartTemplateSpec, HelmRelease,
        HelmReleaseSpec, HelmRepository, HelmRepositorySpec, KubeConfigReference,
        SecretKeyReference,
    },
    labels::{COMPONENT, FLEET, MANAGED_BY, PLUGIN},
};
use serde_json::Value;

use super::{Component, Plugin};
use crate::application::build::label_value;

pub use metric::add_query_stores;

/// Where each member's Prometheus and its Thanos sidecar run.
pub const MONITORING_NAMESPACE: &str = "monitoring";
/// Where each member's Kyverno and its policies run.
pub const KYVERNO_NAMESPACE: &str = "kyverno";
/// The Thanos sidecar Service the kube-prometheus chart creates in each member's
/// `monitoring` namespace (`fullnameOverride: prometheus`), a LoadBalancer (upstream
/// `PrometheusThanosServiceName`, pkg/fleet-manager/fleet_plugin.go).
pub const SIDECAR_SERVICE: &str = "prometheus-prometheus-thanos";
/// The headless Service on the host, in the Fleet's namespace, through which Thanos Query
/// discovers the members' sidecars (`query.dnsDiscovery.sidecarsService`).
pub const SIDECAR_REMOTE_SERVICE: &str = "thanos-sidecar-remote";
/// Suffix of the Thanos Query Service on the host: the full name is
/// `<fleet namespace>-thanos-query` (see [`thanos_query_service`]).
pub const THANOS_QUERY_SERVICE: &str = "thanos-query";
/// Thanos Query's HTTP port (Grafana's datasource).
pub const THANOS_QUERY_PORT: u16 = 9090;
/// `app.kubernetes.io/managed-by` on every plugin object (upstream's value).
pub const MANAGED_BY_FLEET_MANAGER: &str = "fleet-manager";

/// `fleet.kurator.dev/component` values.
pub mod component {
    pub const THANOS: &str = "thanos";
    pub const PROMETHEUS: &str = "prometheus";
    pub const GRAFANA: &str = "grafana";
    pub const KYVERNO: &str = "kyverno";
    pub const KYVERNO_POLICIES: &str = "kyverno-policies";
}

/// HelmRepository `interval` (upstream's spelling).
pub const REPOSITORY_INTERVAL: &str = "5m0s";
/// HelmRelease `interval`.
pub const RELEASE_INTERVAL: &str = "1m0s";
/// HelmRelease `timeout`.
pub const RELEASE_TIMEOUT: &str = "15m0s";
/// HelmRelease install and upgrade remediation retries.
pub const RELEASE_RETRIES: i32 = 3;

/// A member cluster a per-cluster component installs into.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    pub name: String,
    /// Its kubeconfig Secret (in the Fleet's namespace), for `kubeConfig.secretRef`.
    pub kubeconfig: SecretKeyRef,
}

/// Chart repository rewrites for air-gapped hosts and the playground: a repository URL that
/// starts with `from` is fetched from `to` instead (`--chart-mirror FROM=TO`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChartMirrors(pub Vec<(String, String)>);

impl ChartMirrors {
    pub fn rewrite(&self, url: &str) -> String {
        for (from, to) in &self.0 {
            if let Some(rest) = url.strip_prefix(from.as_str()) {
                return format!("{to}{rest}");
            }
        }
        url.to_string()
    }
}

/// Everything rendering needs.
#[derive(Clone, Debug)]
pub struct RenderInput<'a> {
    pub fleet_name: &'a str,
    pub namespace: &'a str,
    /// Owner reference to the Fleet (controller: true) set on every object.
    pub owner: OwnerReference,
    pub plugin: &'a PluginConfig,
    /// Members (ready or not) in a stable order.
    pub members: &'a [Member],
    /// Members whose `kyverno-<cluster>` release is Ready: only these get kyverno-policies.
    pub kyverno_ready: &'a BTreeSet<String>,
    pub mirrors: &'a ChartMirrors,
}

/// A Helm chart: where it comes from and which version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chart {
    pub repository: String,
    pub name: String,
    pub version: String,
}

impl Chart {
    fn new(repository: &str, name: &str, version: &str) -> Chart {
        Chart {
            repository: repository.into(),
            name: name.into(),
            version: version.into(),
        }
    }

    /// This chart with the override's non-empty fields (upstream blanks the fields left
    /// empty; we keep the defaults).
    pub fn overridden(mut self, o: Option<&ChartConfig>) -> Chart {
        let Some(o) = o else { return self };
        let set = |field: &mut String, value: &Option<String>| {
            if let Some(v) = value.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
                *field = v.to_string();
            }
        };
        set(&mut self.repository, &o.repository);
        set(&mut self.name, &o.name);
        set(&mut self.version, &o.version);
        self
    }
}

/// Repository of the bitnami charts (thanos, kube-prometheus, grafana).
pub const BITNAMI_REPOSITORY: &str = "oci://registry-1.docker.io/bitnamicharts";
/// Repository of the kyverno and kyverno-policies charts.
pub const KYVERNO_REPOSITORY: &str = "https://kyverno.github.io/kyverno/";

/// The chart a component installs unless the Fleet overrides it; `None` for an unknown
/// component.
pub fn default_chart(component: &str) -> Option<Chart> {
    let (repository, name, version) = match component {
        component::THANOS => (BITNAMI_REPOSITORY, "thanos", "12.5.1"),
        component::PROMETHEUS => (BITNAMI_REPOSITORY, "kube-prometheus", "8.9.1"),
        component::GRAFANA => (BITNAMI_REPOSITORY, "grafana", "8.2.33"),
        component::KYVERNO => (KYVERNO_REPOSITORY, "kyverno", "3.0.0"),
        component::KYVERNO_POLICIES => (KYVERNO_REPOSITORY, "kyverno-policies", "3.0.0"),
        _ => return None,
    };
    Some(Chart::new(repository, name, version))
}

/// The default chart of a known component with the Fleet's override applied.
fn chart(component: &str, o: Option<&ChartConfig>) -> Chart {
    default_chart(component)
        .expect("a known component")
        .overridden(o)
}

/// The name of a component's HelmRepository and HelmRelease: `<component>-<cluster>` for a
/// per-cluster component, `<component>` for a fleet-scoped one.
pub fn resource_name(component: &str, cluster: Option<&str>) -> String {
    match cluster {
        Some(cluster) => format!("{component}-{cluster}"),
        None => component.to_string(),
    }
}

/// The Thanos Query Service on the host. Flux names the Helm release
/// `<targetNamespace>-<HelmRelease name>` = `<namespace>-thanos` (upstream sets no
/// `releaseName`) and the bitnami chart prefixes its objects with it. Flux shortens release
/// names over 53 characters, so this holds for namespaces of up to 46 characters.
pub fn thanos_query_service(namespace: &str) -> String {
    format!("{namespace}-{THANOS_QUERY_SERVICE}")
}

/// The Thanos Query Service's port to reach it on through the service proxy: the one named
/// `http` (the chart's), else the one numbered [`THANOS_QUERY_PORT`], else the first; by name
/// when it has one. `None` for a Service without ports.
pub fn thanos_query_port(service: &k8s_openapi::api::core::v1::Service) -> Option<String> {
    let ports = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or_default();
    let port = ports
        .iter()
        .find(|p| p.name.as_deref() == Some("http"))
        .or_else(|| {
            ports
                .iter()
                .find(|p| p.port == i32::from(THANOS_QUERY_PORT))
        })
        .or_else(|| ports.first())?;
    Some(match port.name.as_deref().filter(|n| !n.is_empty()) {
        Some(name) => name.to_string(),
        None => port.port.to_string(),
    })
}

/// The labels of a component's objects (upstream's). The fleet name is shortened the way
/// Application labels are when it exceeds 63 characters ([`label_value`]).
pub fn labels(fleet: &str, plugin: Plugin, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.to_string(), MANAGED_BY_FLEET_MANAGER.to_string()),
        (FLEET.to_string(), label_value(fleet)),
        (PLUGIN.to_string(), plugin.label().to_string()),
        (COMPONENT.to_string(), component.to_string()),
    ])
}

/// Deep merge of Helm values: `overlay`'s keys win; where both sides hold an object the two
/// are merged key by key; anything else (scalars, arrays, `null`) replaces what `base` holds.
pub fn merge_values(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Object(base), Value::Object(overlay)) => {
            for (key, value) in overlay {
                match base.get_mut(&key) {
                    Some(slot) => merge_values(slot, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, overlay) => *base = overlay,
    }
}

/// `chart defaults < extraArgs < injected`.
fn layered(defaults: Value, extra_args: Option<&Value>, injected: Value) -> Value {
    let mut values = defaults;
    if let Some(extra) = extra_args.filter(|v| v.is_object()) {
        merge_values(&mut values, extra.clone());
    }
    merge_values(&mut values, injected);
    values
}

/// What keeps a plugin from being rendered, one message per problem, with the plugin it
/// concerns. [`render`] leaves such a plugin out entirely.
pub fn problems(plugin: &PluginConfig) -> Vec<(Plugin, String)> {
    let mut out = Vec::new();
    if let Some(metric) = &plugin.metric {
        out.extend(
            metric::problems(metric)
                .into_iter()
                .map(|m| (Plugin::Metric, m)),
        );
    }
    if let Some(grafana) = &plugin.grafana {
        let path = "spec.plugin.grafana";
        out.extend(
            common_problems(path, grafana.chart.as_ref(), grafana.extra_args.as_ref())
                .into_iter()
                .map(|m| (Plugin::Grafana, m)),
        );
    }
    if let Some(kyverno) = plugin.policy.as_ref().and_then(|p| p.kyverno.as_ref()) {
        let path = "spec.plugin.policy.kyverno";
        out.extend(
            common_problems(path, kyverno.chart.as_ref(), kyverno.extra_args.as_ref())
                .into_iter()
                .map(|m| (Plugin::Policy, m)),
        );
    }
    out
}

/// Problems of a chart override and `extraArgs` at `path`.
fn common_problems(
    path: &str,
    chart: Option<&ChartConfig>,
    extra_args: Option<&Value>,
) -> Vec<String> {
    let mut out = Vec::new();
    let repository = chart.and_then(|c| c.repository.as_deref()).map(str::trim);
    if let Some(url) = repository.filter(|r| !r.is_empty())
        && !["http://", "https://", "oci://"]
            .iter()
            .any(|scheme| url.starts_with(scheme))
    {
        out.push(format!(
            "{path}.chart.repository {url:?} must start with http://, https:// or oci://"
        ));
    }
    if let Some(extra) = extra_args
        && !(extra.is_object() || extra.is_null())
    {
        out.push(format!("{path}.extraArgs must be an object of Helm values"));
    }
    out
}

/// The components the plugins want, in a stable order: metric (thanos, then prometheus per
/// member), grafana, policy (kyverno per member, then kyverno-policies per ready member);
/// members in input order. Plugins with [`problems`] are left out.
pub fn render(input: &RenderInput<'_>) -> Vec<Component> {
    let broken: BTreeSet<Plugin> = problems(input.plugin).into_iter().map(|(p, _)| p).collect();
    let mut seen = BTreeSet::new();
    let members: Vec<&Member> = input
        .members
        .iter()
        .filter(|m| seen.insert(m.name.as_str()))
        .collect();
    let mut out = Vec::new();
    let plugin = input.plugin;
    if let Some(metric) = plugin
        .metric
        .as_ref()
        .filter(|_| !broken.contains(&Plugin::Metric))
    {
        out.extend(metric::render(input, metric, &members));
    }
    if let Some(grafana) = plugin
        .grafana
        .as_ref()
        .filter(|_| !broken.contains(&Plugin::Grafana))
    {
        out.push(grafana::render(input, grafana));
    }
    let kyverno = plugin.policy.as_ref().and_then(|p| p.kyverno.as_ref());
    if let Some(kyverno) = kyverno.filter(|_| !broken.contains(&Plugin::Policy)) {
        out.extend(policy::render(input, kyverno, &members));
    }
    out
}

/// One component, before it becomes Flux objects.
struct Spec<'a> {
    plugin: Plugin,
    component: &'static str,
    /// `None`: fleet-scoped, installed on the host.
    member: Option<&'a Member>,
    chart: Chart,
    target_namespace: String,
    values: Value,
}

fn build(input: &RenderInput<'_>, spec: Spec<'_>) -> Component {
    let cluster = spec.member.map(|m| m.name.clone());
    let name = resource_name(spec.component, cluster.as_deref());
    let metadata = ObjectMeta {
        name: Some(name.clone()),
        namespace: Some(input.namespace.to_string()),
        labels: Some(labels(input.fleet_name, spec.plugin, spec.component)),
        owner_references: Some(vec![input.owner.clone()]),
        ..ObjectMeta::default()
    };
    let url = input.mirrors.rewrite(&spec.chart.repository);
    let repository = HelmRepository {
        metadata: metadata.clone(),
        spec: HelmRepositorySpec {
            type_: url.starts_with("oci://").then(|| "oci".to_string()),
            url,
            interval: Some(REPOSITORY_INTERVAL.into()),
            ..HelmRepositorySpec::default()
        },
        status: None,
    };
    // Helm keeps its release records in the target namespace for members (the Fleet's
    // namespace may not exist there) and in the Fleet's namespace on the host.
    let storage_namespace = match spec.member {
        Some(_) => spec.target_namespace.clone(),
        None => input.namespace.to_string(),
    };
    let release = HelmRelease {
        metadata,
        spec: HelmReleaseSpec {
            chart: Some(HelmChartTemplate {
                metadata: None,
                spec: HelmChartTemplateSpec {
                    chart: spec.chart.name,
                    version: Some(spec.chart.version),
                    source_ref: CrossNamespaceSourceReference {
                        kind: HelmRepository::KIND.as_str().into(),
                        name,
                        ..CrossNamespaceSourceReference::default()
                    },
                    ..HelmChartTemplateSpec::default()
                },
            }),
            interval: RELEASE_INTERVAL.into(),
            kube_config: spec.member.map(|m| KubeConfigReference {
                secret_ref: SecretKeyReference {
                    name: m.kubeconfig.name.clone(),
                    key: Some(m.kubeconfig.key.clone()),
                },
            }),
            target_namespace: Some(spec.target_namespace),
            storage_namespace: Some(storage_namespace),
            timeout: Some(RELEASE_TIMEOUT.into()),
            // A failed install or upgrade is retried instead of left stalled: kyverno-policies,
            // for one, can meet Kyverno's webhooks before they answer.
            install: Some(serde_json::json!({
                "createNamespace": true,
                "remediation": { "retries": RELEASE_RETRIES },
            })),
            upgrade: Some(serde_json::json!({ "remediation": { "retries": RELEASE_RETRIES } })),
            values: Some(spec.values),
            ..HelmReleaseSpec::default()
        },
        status: None,
    };
    Component {
        plugin: spec.plugin,
        component: spec.component.to_string(),
        cluster,
        repository,
        release,
    }
}

#[cfg(test)]
mod tests;
