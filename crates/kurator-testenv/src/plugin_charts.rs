//! The real upstream charts of the metric and grafana plugins (bitnami thanos, kube-prometheus
//! and grafana, the versions Kurator installs), served by [`HelmRepo`] in end-to-end tests and
//! the local playground.
//!
//! The packaged archives are test data kept outside the repository, in `../shared/charts/`
//! relative to the workspace root (see its README.md), and are read from there at run time:
//! never copied into the repository. [`PLUGIN_CHARTS_ENV`] points elsewhere. Each archive is
//! checked to be the chart it claims (its `Chart.yaml` names and versions it) before it is
//! served; a missing directory or archive is an error naming the path and the variable.
//!
//! Nothing of them is stood in for: these are the charts users install. What the test
//! environment cannot give them (no container runs; kwok simulates Pods) is described where
//! the tests use them (`kurator-controller/tests/plugins_flux.rs`, docs/testing.md).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::helm_repo::{HelmRepo, chart_metadata, write_atomically, write_index};

/// Overrides the directory holding the plugin chart archives.
pub const PLUGIN_CHARTS_ENV: &str = "KURATOR_PLUGIN_CHARTS";

/// `(name, version)` of every chart served, as Kurator's metric and grafana plugins ask for
/// them (`oci://registry-1.docker.io/bitnamicharts`).
pub const PLUGIN_CHARTS: &[(&str, &str)] = &[
    ("thanos", "12.5.1"),
    ("kube-prometheus", "8.9.1"),
    ("grafana", "8.2.33"),
];

/// The default location: `../shared/charts` beside the workspace root this crate was built in.
fn default_dir() -> PathBuf {
    // The crate sits at `<workspace>/crates/kurator-testenv`. The archives sit in `shared/`
    // beside the checkout; a clone made deeper (a CI job's directory) finds the nearest
    // `shared/charts` of its ancestors. None found: the path beside the workspace, to be named.
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap_or(Path::new("/"));
    workspace
        .ancestors()
        .skip(1)
        .map(|dir| dir.join("shared").join("charts"))
        .find(|dir| dir.is_dir())
        .unwrap_or_else(|| {
            workspace
                .parent()
                .unwrap_or(Path::new("/"))
                .join("shared")
                .join("charts")
        })
}

/// Where the plugin chart archives are read from: [`PLUGIN_CHARTS_ENV`] when set (and not
/// empty), else `shared/charts` beside the workspace root or, failing that, beside its nearest
/// ancestor that has one. The directory is not checked here.
pub fn plugin_charts_dir() -> PathBuf {
    std::env::var_os(PLUGIN_CHARTS_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(default_dir)
}

/// Every archive of [`PLUGIN_CHARTS`] in [`plugin_charts_dir`], checked, in that order.
pub fn plugin_chart_archives() -> Result<Vec<PathBuf>> {
    plugin_chart_archives_in(&plugin_charts_dir())
}

/// Every archive of [`PLUGIN_CHARTS`] in `dir`, checked, in that order.
pub fn plugin_chart_archives_in(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Err(Error::PluginCharts(format!(
            "{} is not a directory: it must hold the bitnami chart archives {} (set {PLUGIN_CHARTS_ENV} \
             to their directory)",
            dir.display(),
            archive_names().join(", "),
        )));
    }
    PLUGIN_CHARTS
        .iter()
        .map(|(name, version)| {
            let archive = dir.join(format!("{name}-{version}.tgz"));
            check_archive(&archive, name, version)?;
            Ok(archive)
        })
        .collect()
}

fn archive_names() -> Vec<String> {
    PLUGIN_CHARTS
        .iter()
        .map(|(name, version)| format!("{name}-{version}.tgz"))
        .collect()
}

/// The archive exists and its `Chart.yaml` says `name` `version`.
fn check_archive(archive: &Path, name: &str, version: &str) -> Result<()> {
    let bytes = std::fs::read(archive).map_err(|e| {
        Error::PluginCharts(format!(
            "cannot read {} ({e}): the {name} {version} chart archive is expected there (set \
             {PLUGIN_CHARTS_ENV} to the directory holding it)",
            archive.display()
        ))
    })?;
    let meta = chart_metadata(&bytes)
        .map_err(|e| Error::PluginCharts(format!("{}: {e}", archive.display())))?;
    let field = |k: &str| meta.get(k).and_then(|v| v.as_str()).unwrap_or_default();
    if field("name") != name || field("version") != version {
        return Err(Error::PluginCharts(format!(
            "{}: Chart.yaml says {} {}, expected {name} {version}",
            archive.display(),
            field("name"),
            field("version"),
        )));
    }
    Ok(())
}

/// The default values (`<chart>/values.yaml`) of the served chart `name`, as JSON.
pub fn plugin_chart_values(name: &str) -> Result<serde_json::Value> {
    let text = plugin_chart_file(name, "values.yaml")?;
    serde_saphyr::from_str(&text)
        .map_err(|e| Error::PluginCharts(format!("{name}: values.yaml: {e}")))
}

/// The text of `<chart>/<file>` (e.g. `crds/crd-servicemonitor.yaml`) in the served chart
/// `name` (the chart's own file, not a subchart's).
pub fn plugin_chart_file(name: &str, file: &str) -> Result<String> {
    let archives = plugin_chart_archives()?;
    let Some(archive) = PLUGIN_CHARTS
        .iter()
        .zip(&archives)
        .find_map(|((n, _), archive)| (*n == name).then_some(archive))
    else {
        return Err(Error::PluginCharts(format!("{name} is not a plugin chart")));
    };
    let bytes = std::fs::read(archive).map_err(|e| Error::io("reading", archive, e))?;
    chart_file(&bytes, file).map_err(|e| Error::PluginCharts(format!("{}: {e}", archive.display())))
}

/// The text of `<chart>/<file>` in a chart archive (the chart's own, not a subchart's).
fn chart_file(tgz: &[u8], file: &str) -> std::result::Result<String, String> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tgz));
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let path = entry.path().map_err(|e| e.to_string())?.into_owned();
        let mut parts = path.components();
        parts.next();
        if parts.as_path() == Path::new(file) {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).map_err(|e| e.to_string())?;
            return Ok(text);
        }
    }
    Err(format!("no <chart>/{file} in the archive"))
}

/// Copies the plugin charts into `repo` and regenerates its index. Point Kurator's
/// `--chart-mirror oci://registry-1.docker.io/bitnamicharts=<repo url>` at it.
pub fn add_plugin_charts(repo: &HelmRepo) -> Result<Vec<PathBuf>> {
    write_plugin_charts(repo.dir())
}

/// Copies the plugin charts into `dir` (which must exist) and regenerates `<dir>/index.yaml`;
/// for a repository served with [`crate::serve_helm_repo`]. Returns the copies' paths.
pub fn write_plugin_charts(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut copies = Vec::new();
    for archive in plugin_chart_archives()? {
        let bytes = std::fs::read(&archive).map_err(|e| Error::io("reading", &archive, e))?;
        let copy = dir.join(archive.file_name().unwrap_or_default());
        write_atomically(&copy, &bytes)?;
        copies.push(copy);
    }
    write_index(dir)?;
    Ok(copies)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_location_is_beside_the_workspace() {
        let dir = default_dir();
        assert!(dir.ends_with("shared/charts"), "{}", dir.display());
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .and_then(Path::parent)
            .expect("workspace root");
        assert!(
            workspace.join("Cargo.lock").is_file(),
            "{}",
            workspace.display()
        );
        assert_eq!(
            dir.parent().and_then(Path::parent),
            workspace.parent(),
            "{}",
            dir.display()
        );
    }
}
