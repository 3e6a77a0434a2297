//! The metric plugin: Thanos on the host, Prometheus with a Thanos sidecar in every member.

use kurator_api::fleet::MetricConfig;
use serde_json::{Value, json};

use super::{
    Component, MONITORING_NAMESPACE, Member, Plugin, RenderInput, SIDECAR_REMOTE_SERVICE, Spec,
    build, chart, common_problems, component, layered, merge_values,
};

/// The key of the object-store Secret Thanos reads.
const OBJSTORE_KEY: &str = "objstore.yml";

/// The object-store Secret's name, when set.
fn secret_name(metric: &MetricConfig) -> Option<&str> {
    metric
        .thanos
        .as_ref()
        .and_then(|t| t.object_store_config.as_ref())
        .map(|o| o.secret_name.trim())
        .filter(|s| !s.is_empty())
}

pub(super) fn problems(metric: &MetricConfig) -> Vec<String> {
    let mut out = Vec::new();
    if secret_name(metric).is_none() {
        out.push(
            "spec.plugin.metric.thanos.objectStoreConfig.secretName is required: a Secret holding objstore.yml"
                .to_string(),
        );
    }
    if let Some(thanos) = &metric.thanos {
        out.extend(common_problems(
            "spec.plugin.metric.thanos",
            thanos.chart.as_ref(),
            thanos.extra_args.as_ref(),
        ));
    }
    if let Some(prometheus) = &metric.prometheus {
        out.extend(common_problems(
            "spec.plugin.metric.prometheus",
            prometheus.chart.as_ref(),
            prometheus.extra_args.as_ref(),
        ));
    }
    out
}

/// Upstream's thanos chart defaults (manifests/profiles/fleet/plugins/thanos.yaml), the
/// sidecar discovery keys aside (injected).
fn thanos_defaults() -> Value {
    json!({
        "queryFrontend": { "enabled": false },
        "bucketweb": { "enabled": false },
        "compactor": { "enabled": false },
        "storegateway": { "enabled": true },
        "ruler": { "enabled": false },
        "metrics": { "enabled": false },
        "minio": { "enabled": false },
    })
}

/// Upstream's kube-prometheus defaults (manifests/profiles/fleet/plugins/prometheus.yaml)
/// but for `exporters.enabled: false`: the chart's subchart conditions read
/// `exporters.enabled` first, so it would override the per-exporter switches the Fleet spec
/// offers. Both exporters stay off by default, as upstream.
fn prometheus_defaults() -> Value {
    json!({
        "alertmanager": { "enabled": false },
        "exporters": {
            "node-exporter": { "enabled": false },
            "kube-state-metrics": { "enabled": false },
        },
        "blackboxExporter": { "enabled": false },
        "operator": { "service": { "type": "ClusterIP" } },
        "prometheus": {
            "disableCompaction": true,
            "thanos": {
                "create": true,
                "service": { "type": "LoadBalancer" },
                "objectStorageConfig": { "secretKey": OBJSTORE_KEY },
            },
            "service": { "type": "ClusterIP" },
        },
    })
}

pub(super) fn render(
    input: &RenderInput<'_>,
    metric: &MetricConfig,
    members: &[&Member],
) -> Vec<Component> {
    let Some(secret) = secret_name(metric) else {
        return Vec::new();
    };
    let thanos = metric.thanos.as_ref();
    let prometheus = metric.prometheus.as_ref();
    let mut out = Vec::new();

    let injected = json!({
        "existingObjstoreSecret": secret,
        "query": {
            "dnsDiscovery": {
                "sidecarsService": SIDECAR_REMOTE_SERVICE,
                "sidecarsNamespace": input.namespace,
            },
        },
    });
    out.push(build(
        input,
        Spec {
            plugin: Plugin::Metric,
            component: component::THANOS,
            member: None,
            chart: chart(component::THANOS, thanos.and_then(|t| t.chart.as_ref())),
            target_namespace: input.namespace.to_string(),
            values: layered(
                thanos_defaults(),
                thanos.and_then(|t| t.extra_args.as_ref()),
                injected,
            ),
        },
    ));

    let prometheus_chart = chart(
        component::PROMETHEUS,
        prometheus.and_then(|p| p.chart.as_ref()),
    );
    for member in members {
        let mut injected = json!({
            // The sidecar Service's name (`prometheus-prometheus-thanos`) derives from it.
            "fullnameOverride": "prometheus",
            "prometheus": {
                "externalLabels": { "cluster": member.name },
                "thanos": { "objectStorageConfig": { "secretName": secret } },
            },
        });
        let exporters = [
            (
                "node-exporter",
                prometheus.and_then(|p| p.node_exporter.as_ref()),
            ),
            (
                "kube-state-metrics",
                prometheus.and_then(|p| p.kube_state_metrics.as_ref()),
            ),
        ];
        for (key, exporter) in exporters.into_iter().filter_map(|(key, e)| Some((key, e?))) {
            injected["exporters"][key] = json!({ "enabled": exporter.enabled });
        }
        out.push(build(
            input,
            Spec {
                plugin: Plugin::Metric,
                component: component::PROMETHEUS,
                member: Some(member),
                chart: prometheus_chart.clone(),
                target_namespace: MONITORING_NAMESPACE.to_string(),
                values: layered(
                    prometheus_defaults(),
                    prometheus.and_then(|p| p.extra_args.as_ref()),
                    injected,
                ),
            },
        ));
    }
    out
}

/// Adds Thanos Query store addresses (e.g. `dns+<hostname>:10901` for members whose sidecar
/// load balancer has a hostname only) to the `thanos` component's `query.stores`, after any
/// the user listed in `extraArgs`. No-op without stores or without a thanos component.
pub fn add_query_stores(components: &mut [Component], stores: &[String]) {
    if stores.is_empty() {
        return;
    }
    let Some(thanos) = components
        .iter_mut()
        .find(|c| c.plugin == Plugin::Metric && c.component == component::THANOS)
    else {
        return;
    };
    let values = thanos.release.spec.values.get_or_insert_with(|| json!({}));
    let mut all: Vec<Value> = values
        .pointer("/query/stores")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for store in stores {
        let store = Value::String(store.clone());
        if !all.contains(&store) {
            all.push(store);
        }
    }
    merge_values(values, json!({ "query": { "stores": all } }));
}
