//! Kyverno's real charts packaged from the `github.com/kyverno/kyverno` Go module and served
//! by a test Helm repository of their own, and beside the real metric and grafana charts in
//! one repository.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, ensure};
use kurator_testenv::{
    HelmRepo, KYVERNO_CHART_NAMES, KYVERNO_CHART_RELEASES, add_kyverno_charts, add_plugin_charts,
};
use serde_json::Value;

/// Every file of a chart archive, by path.
fn archive_files(archive: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
    let bytes = std::fs::read(archive)?;
    let mut files = BTreeMap::new();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
    for entry in tar.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.display().to_string();
        let mut contents = Vec::new();
        entry.read_to_end(&mut contents)?;
        files.insert(path, contents);
    }
    Ok(files)
}

fn yaml(bytes: &[u8]) -> Result<Value> {
    Ok(serde_saphyr::from_str(std::str::from_utf8(bytes)?)?)
}

#[test]
fn real_kyverno_charts_are_packaged_indexed_and_carry_the_values_kurator_sets() -> Result<()> {
    let root = std::env::temp_dir().join(format!("kurator-kyverno-charts-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let plugins = HelmRepo::start(root.join("plugins"))?;
    add_plugin_charts(&plugins)?;
    let dir = root.join("kyverno");
    let repo = HelmRepo::start(&dir)?;
    let charts = add_kyverno_charts(&repo)?;
    ensure!(repo.url() != plugins.url());
    ensure!(charts.len() == 4, "{charts:?}");

    for chart in &charts {
        let files = archive_files(&chart.archive)?;
        let name = &chart.name;
        let meta = yaml(
            files
                .get(&format!("{name}/Chart.yaml"))
                .context("Chart.yaml")?,
        )?;
        ensure!(meta["name"] == name.as_str(), "{meta}");
        ensure!(meta["version"] == chart.version.as_str(), "{meta}");
        // Real charts, not the stand-ins of the same name and version.
        ensure!(
            !meta["description"]
                .as_str()
                .unwrap_or_default()
                .starts_with("Stand-in"),
            "{meta}"
        );
        ensure!(files.contains_key(&format!("{name}/values.yaml")));
        ensure!(
            files.keys().all(|p| p.starts_with(&format!("{name}/"))),
            "one top-level directory"
        );
        // `.helmignore` excludes ci/ and the README template, as `helm package` would.
        ensure!(
            !files
                .keys()
                .any(|p| p.contains("/ci/") || p.ends_with("README.md.gotmpl")),
            "{:?}",
            files.keys().collect::<Vec<_>>()
        );
    }

    let by_key = |name: &str, version: &str| {
        charts
            .iter()
            .find(|c| c.name == name && c.version == version)
            .with_context(|| format!("{name} {version} missing"))
    };
    // Kurator's default pair (module v1.10.0) ...
    let default_policies = archive_files(&by_key("kyverno-policies", "3.0.0")?.archive)?;
    let privileged = default_policies
        .get("kyverno-policies/templates/baseline/disallow-privileged-containers.yaml")
        .context("the baseline policy the plugin relies on")?;
    ensure!(String::from_utf8_lossy(privileged).contains("Privileged mode is disallowed."));
    let default_kyverno = archive_files(&by_key("kyverno", "3.0.0")?.archive)?;
    let meta = yaml(&default_kyverno["kyverno/Chart.yaml"])?;
    ensure!(meta["appVersion"] == "v1.10.0", "{meta}");
    // ... and the pair matching the binaries, whose CRDs come as a subchart.
    let (module_version, chart_version) = KYVERNO_CHART_RELEASES[1];
    let matching = archive_files(&by_key("kyverno", chart_version)?.archive)?;
    ensure!(yaml(&matching["kyverno/Chart.yaml"])?["appVersion"] == module_version);
    ensure!(
        matching
            .keys()
            .any(|p| p.starts_with("kyverno/charts/crds/"))
    );

    let index = yaml(&std::fs::read(dir.join("index.yaml"))?)?;
    for name in KYVERNO_CHART_NAMES {
        let mut versions: Vec<&str> = index["entries"][name]
            .as_array()
            .context("index entry")?
            .iter()
            .filter_map(|e| e["version"].as_str())
            .collect();
        versions.sort();
        ensure!(versions == ["3.0.0", chart_version], "{name}: {versions:?}");
        for entry in index["entries"][name].as_array().into_iter().flatten() {
            let file = entry["urls"][0].as_str().unwrap_or_default();
            ensure!(dir.join(file).is_file(), "{file}");
            ensure!(
                entry["digest"].as_str().map(str::len) == Some(64),
                "{entry}"
            );
        }
    }
    ensure!(
        index["entries"].as_object().map(|e| e.len()) == Some(2),
        "{index}"
    );

    // The values Kurator's policy plugin sets are keys of every packaged chart.
    for chart in &charts {
        let files = archive_files(&chart.archive)?;
        let values = yaml(&files[&format!("{}/values.yaml", chart.name)])?;
        let keys: &[&str] = match chart.name.as_str() {
            "kyverno" => &["fullnameOverride"],
            // Its `fullnameOverride` (Kurator sets it, as upstream does) is not a key of
            // this chart: it names nothing by its release, so nothing depends on it.
            _ => &[
                "podSecurityStandard",
                "podSecuritySeverity",
                "validationFailureAction",
            ],
        };
        for key in keys {
            ensure!(
                values.get(key).is_some(),
                "{} {}: values.yaml lacks {key}",
                chart.name,
                chart.version
            );
        }
    }

    // The real charts share a repository with the metric and grafana ones.
    add_kyverno_charts(&plugins)?;
    let shared = yaml(&std::fs::read(plugins.dir().join("index.yaml"))?)?;
    ensure!(
        shared["entries"].as_object().map(|e| e.len()) == Some(5),
        "{shared}"
    );
    drop((repo, plugins));
    std::fs::remove_dir_all(&root)?;
    Ok(())
}
