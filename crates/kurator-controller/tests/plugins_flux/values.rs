//! Fast (no cluster): every value the product sets for the metric and grafana plugins is a
//! key the real chart declares, so a misspelt or moved key fails here rather than being
//! silently ignored by Helm. A key under a map the chart leaves empty (`externalLabels: {}`,
//! `objectStorageConfig: {}`) or under a free-form value is the user's to name.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kurator_api::{cluster::SecretKeyRef, fleet::PluginConfig};
use kurator_controller::plugins::render::{ChartMirrors, Member, RenderInput, render};
use serde_json::Value;

/// The brief's metric and grafana plugins, with both exporters switched on (their keys too).
const PLUGIN: &str = r#"
metric:
  thanos:
    objectStoreConfig: {secretName: thanos-objstore}
  prometheus:
    nodeExporter: {enabled: true}
    kubeStateMetrics: {enabled: true}
grafana: {}
"#;

/// Dotted paths to the leaves of `values` (lists are leaves).
fn leaves(values: &Value, prefix: &str, out: &mut Vec<String>) {
    match values.as_object() {
        Some(map) if !map.is_empty() => {
            for (key, value) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                leaves(value, &path, out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

/// Whether the chart's defaults declare `path`: every step exists, or an empty map on the way
/// leaves the rest free.
fn declared(defaults: &Value, path: &str) -> bool {
    let mut at = defaults;
    for key in path.split('.') {
        match at.as_object() {
            Some(map) if map.is_empty() => return true,
            Some(map) => match map.get(key) {
                Some(next) => at = next,
                None => return false,
            },
            None => return false,
        }
    }
    true
}

#[test]
fn every_value_the_product_sets_is_a_key_of_the_real_chart() {
    let plugin: PluginConfig = serde_saphyr::from_str(PLUGIN).unwrap();
    let members = [Member {
        name: "kurator-member1".into(),
        kubeconfig: SecretKeyRef {
            name: "kurator-member1-kubeconfig".into(),
            key: "value".into(),
        },
    }];
    let components = render(&RenderInput {
        fleet_name: "quickstart",
        namespace: "default",
        owner: OwnerReference {
            api_version: "fleet.kurator.dev/v1alpha1".into(),
            kind: "Fleet".into(),
            name: "quickstart".into(),
            uid: "00000000-0000-0000-0000-000000000001".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        },
        plugin: &plugin,
        members: &members,
        kyverno_ready: &BTreeSet::new(),
        mirrors: &ChartMirrors::default(),
    });
    let mut checked = Vec::new();
    for component in &components {
        let chart = &component.release.spec.chart.as_ref().unwrap().spec.chart;
        let defaults =
            kurator_testenv::plugin_chart_values(chart).unwrap_or_else(|e| panic!("{chart}: {e}"));
        let mut paths = Vec::new();
        leaves(
            component.release.spec.values.as_ref().unwrap(),
            "",
            &mut paths,
        );
        // The values the wiring depends on must be among them.
        let undeclared: Vec<&String> = paths.iter().filter(|p| !declared(&defaults, p)).collect();
        assert!(
            undeclared.is_empty(),
            "{chart}: not keys of the chart: {undeclared:?}"
        );
        checked.push((chart.clone(), paths));
    }
    let find = |chart: &str, path: &str| {
        checked
            .iter()
            .any(|(c, paths)| c == chart && paths.iter().any(|p| p == path))
    };
    for (chart, path) in [
        ("thanos", "existingObjstoreSecret"),
        ("thanos", "query.dnsDiscovery.sidecarsService"),
        ("thanos", "query.dnsDiscovery.sidecarsNamespace"),
        ("kube-prometheus", "fullnameOverride"),
        ("kube-prometheus", "prometheus.externalLabels.cluster"),
        (
            "kube-prometheus",
            "prometheus.thanos.objectStorageConfig.secretName",
        ),
        ("kube-prometheus", "prometheus.thanos.service.type"),
        ("kube-prometheus", "exporters.node-exporter.enabled"),
        ("grafana", "datasources.secretDefinition.datasources"),
    ] {
        assert!(
            find(chart, path),
            "{chart}: {path} not rendered: {checked:?}"
        );
    }
}

#[test]
fn a_path_the_chart_does_not_declare_is_caught() {
    let defaults = serde_json::json!({"query": {"stores": [], "dnsDiscovery": {"enabled": true}}, "labels": {}});
    assert!(declared(&defaults, "query.dnsDiscovery.enabled"));
    assert!(declared(&defaults, "labels.cluster"));
    assert!(!declared(&defaults, "query.dnsDiscovery.sidecarService"));
    assert!(!declared(&defaults, "query.stores.first"));
}
