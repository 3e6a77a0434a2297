//! The grafana plugin: Grafana on the host, with Thanos as its default datasource when the
//! metric plugin is on.

use kurator_api::fleet::GrafanaConfig;
use serde_json::{Value, json};

use super::{
    Component, Plugin, RenderInput, Spec, THANOS_QUERY_PORT, build, chart, component, layered,
    thanos_query_service,
};

/// Upstream's grafana chart defaults (manifests/profiles/fleet/plugins/grafana.yaml).
fn defaults() -> Value {
    json!({
        "fullnameOverride": "grafana",
        "admin": { "password": "admin" },
        "service": { "type": "LoadBalancer" },
    })
}

pub(super) fn render(input: &RenderInput<'_>, grafana: &GrafanaConfig) -> Component {
    let injected = if input.plugin.metric.is_some() {
        let url = format!(
            "http://{}:{THANOS_QUERY_PORT}",
            thanos_query_service(input.namespace)
        );
        json!({
            "datasources": {
                "secretDefinition": {
                    "apiVersion": 1,
                    "datasources": [{
                        "name": "Thanos",
                        "type": "prometheus",
                        "url": url,
                        "access": "proxy",
                        "isDefault": true,
                    }],
                },
            },
        })
    } else {
        json!({})
    };
    build(
        input,
        Spec {
            plugin: Plugin::Grafana,
            component: component::GRAFANA,
            member: None,
            chart: chart(component::GRAFANA, grafana.chart.as_ref()),
            target_namespace: input.namespace.to_string(),
            values: layered(defaults(), grafana.extra_args.as_ref(), injected),
        },
    )
}
