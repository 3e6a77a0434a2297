//! `config/crd/` must be exactly what the types generate.

use std::path::Path;

#[test]
fn checked_in_crds_are_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/crd");
    let mut stale = Vec::new();
    let crds = kurator_api::crds::all();
    for crd in &crds {
        let file = dir.join(kurator_api::crds::file_name(crd));
        let on_disk = std::fs::read_to_string(&file).unwrap_or_default();
        if on_disk != kurator_api::crds::to_yaml(crd) {
            stale.push(file.display().to_string());
        }
    }
    let files = std::fs::read_dir(&dir).expect("config/crd exists").count();
    assert_eq!(
        files,
        crds.len(),
        "config/crd holds files that no type generates"
    );
    assert!(
        stale.is_empty(),
        "stale CRDs: {stale:?}\nregenerate with: cargo run -p kurator-cli -- crds --out-dir config/crd"
    );
}

/// The Helm chart installs the same CRDs: `charts/kurator/crds/` is a copy of `config/crd/`.
#[test]
fn the_charts_crds_are_config_crd() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let read = |dir: &str| -> std::collections::BTreeMap<String, String> {
        std::fs::read_dir(root.join(dir))
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .map(|entry| {
                let path = entry.expect("directory entry").path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read_to_string(&path).expect("readable CRD"))
            })
            .collect()
    };
    let (config, chart) = (read("config/crd"), read("charts/kurator/crds"));
    assert_eq!(
        config.keys().collect::<Vec<_>>(),
        chart.keys().collect::<Vec<_>>(),
        "the chart's crds/ must hold exactly config/crd/'s files"
    );
    let differ: Vec<&String> = config.keys().filter(|k| config[*k] != chart[*k]).collect();
    assert!(
        differ.is_empty(),
        "charts/kurator/crds differs from config/crd in {differ:?}\ncopy them with: cp config/crd/*.yaml charts/kurator/crds/"
    );
}

/// The chart's appVersion (its default image tag) is the crates' version.
#[test]
fn the_charts_app_version_is_the_crate_version() {
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../charts/kurator/Chart.yaml");
    let text = std::fs::read_to_string(&chart).expect("charts/kurator/Chart.yaml");
    let app_version = text
        .lines()
        .find_map(|l| l.strip_prefix("appVersion:"))
        .map(|v| v.trim().trim_matches('"'))
        .expect("Chart.yaml has appVersion");
    assert_eq!(app_version, env!("CARGO_PKG_VERSION"));
}
