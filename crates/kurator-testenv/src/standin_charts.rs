//! Stand-in Helm charts for the Fleet plugins, served by [`HelmRepo`] in end-to-end tests and
//! the local playground.
//!
//! Each chart carries the upstream chart's name and version (the ones Kurator's plugins ask
//! for) and accepts the same value keys, but renders only plain objects — ConfigMaps and
//! Services — so Helm's wait succeeds without the workloads running. Every
//! chart writes its effective values to the ConfigMap `<release>-values` (key `values.yaml`),
//! so a test can check what Kurator injected. Sources live in `crates/kurator-testenv/charts/`
//! and are embedded at compile time.
//!
//! Objects, with bitnami's naming (`<fullname>` = `fullnameOverride`, else the release name
//! when it contains the chart name, else `<release>-<chart>`):
//! - `thanos` 12.5.1: Services `<fullname>-query` (http 9090) and `<fullname>-query-grpc`
//!   (grpc 10901) when `query.enabled`; `<fullname>-query-frontend` (http 9090) when
//!   `queryFrontend.enabled`; `<fullname>-storegateway` (http 9090, grpc 10901) when
//!   `storegateway.enabled`.
//! - `kube-prometheus` 8.9.1 (fullname cut to 26 characters as upstream): Service
//!   `<fullname>-prometheus` (http 9090) and ConfigMap `<fullname>-prometheus-external-labels`
//!   (data = `prometheus.externalLabels`); with `prometheus.thanos.create` the sidecar Service
//!   `<fullname>-prometheus-thanos` (grpc 10901) of type `prometheus.thanos.service.type`.
//! - `grafana` 8.2.33: Service `<fullname>` (http 3000) of type `service.type`; ConfigMap
//!   `<fullname>-datasources` (key `datasources.yaml`) when `datasources.secretDefinition` is
//!   set (upstream writes a Secret of that name).
//!
//! The kyverno and kyverno-policies charts are the real ones ([`crate::add_kyverno_charts`]).
//!
//! A `LoadBalancer` Service (Kurator asks for one for the Thanos sidecar and for grafana) is
//! only ready for Helm once its `status.loadBalancer.ingress` is set: see
//! [`crate::assign_load_balancer_ingress`] and [`crate::run_load_balancer_simulator`].

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::helm_repo::{HelmRepo, write_chart, write_index};

/// Files of one chart: `(path inside the chart, contents)`.
pub type ChartFiles = &'static [(&'static str, &'static str)];

/// Embeds `charts/<chart>/<path>` for each path, as `(path, contents)`.
macro_rules! chart {
    ($name:literal, $version:literal, [$($path:literal),+ $(,)?]) => {
        (
            $name,
            $version,
            &[$(($path, include_str!(concat!("../charts/", $name, "/", $path)))),+],
        )
    };
}

/// Every stand-in chart as `(name, version, files)`.
pub const STANDIN_CHART_FILES: &[(&str, &str, ChartFiles)] = &[
    chart!(
        "thanos",
        "12.5.1",
        [
            "Chart.yaml",
            "values.yaml",
            "templates/_helpers.tpl",
            "templates/values-configmap.yaml",
            "templates/query-service.yaml",
            "templates/query-frontend-service.yaml",
            "templates/storegateway-service.yaml",
        ]
    ),
    chart!(
        "kube-prometheus",
        "8.9.1",
        [
            "Chart.yaml",
            "values.yaml",
            "templates/_helpers.tpl",
            "templates/values-configmap.yaml",
            "templates/prometheus-service.yaml",
            "templates/thanos-service.yaml",
        ]
    ),
    chart!(
        "grafana",
        "8.2.33",
        [
            "Chart.yaml",
            "values.yaml",
            "templates/_helpers.tpl",
            "templates/values-configmap.yaml",
            "templates/datasources.yaml",
            "templates/service.yaml",
        ]
    ),
];

/// `(name, version)` of every stand-in chart, in [`STANDIN_CHART_FILES`] order.
pub const STANDIN_CHARTS: &[(&str, &str)] = &[
    ("thanos", "12.5.1"),
    ("kube-prometheus", "8.9.1"),
    ("grafana", "8.2.33"),
];

/// Packages every stand-in chart into `repo` and regenerates its `index.yaml` once.
pub fn add_standin_charts(repo: &HelmRepo) -> Result<()> {
    write_standin_charts(repo.dir()).map(|_| ())
}

/// Writes `<name>-<version>.tgz` for every stand-in chart into `dir` (which must exist) and
/// regenerates `<dir>/index.yaml`; for a repository served with
/// [`crate::serve_helm_repo`]. Returns the archive paths.
pub fn write_standin_charts(dir: &Path) -> Result<Vec<PathBuf>> {
    let archives = STANDIN_CHART_FILES
        .iter()
        .map(|(name, version, files)| write_chart(dir, name, version, files))
        .collect::<Result<Vec<_>>>()?;
    write_index(dir)?;
    Ok(archives)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_table_and_list_agree() {
        let table: Vec<(&str, &str)> = STANDIN_CHART_FILES
            .iter()
            .map(|(name, version, _)| (*name, *version))
            .collect();
        assert_eq!(table, STANDIN_CHARTS);
    }

    #[test]
    fn every_chart_has_its_own_chart_yaml_and_values() {
        for (name, version, files) in STANDIN_CHART_FILES {
            let chart_yaml = files
                .iter()
                .find(|(path, _)| *path == "Chart.yaml")
                .map(|(_, text)| *text)
                .unwrap_or_else(|| panic!("{name}: no Chart.yaml"));
            let meta: serde_json::Value = serde_saphyr::from_str(chart_yaml).expect("Chart.yaml");
            assert_eq!(meta["apiVersion"], "v2", "{name}");
            assert_eq!(meta["name"], *name);
            assert_eq!(meta["version"], *version, "{name}");
            let description = meta["description"].as_str().unwrap_or_default();
            assert!(description.starts_with("Stand-in for tests"), "{name}");
            assert!(
                files.iter().any(|(path, _)| *path == "values.yaml"),
                "{name}"
            );
        }
    }
}
