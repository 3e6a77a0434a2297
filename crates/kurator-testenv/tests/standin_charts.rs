//! The stand-in plugin charts, without Kubernetes: they package, the repository index lists
//! them, the embedded table matches `charts/` on disk, plain files are valid YAML, templates
//! are well formed and only read value keys the chart's defaults define, and the values
//! Kurator injects exist in those defaults.
//!
//! Rendering itself is not checked here (no Go template engine in Rust); the charts were
//! rendered with Helm v4's engine during development, with the defaults and with the values
//! of Kurator's plugin testdata. Doing that in CI would mean building a Go program against
//! Helm (minutes on a 2-core runner), so it is left to the end-to-end tests, where
//! helm-controller installs the charts.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use kurator_testenv::{
    HelmRepo, STANDIN_CHART_FILES, STANDIN_CHARTS, add_standin_charts, write_standin_charts,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn scratch(tag: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "kurator-testenv-standin-{tag}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn charts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("charts")
}

fn files_of(chart: &str) -> &'static [(&'static str, &'static str)] {
    STANDIN_CHART_FILES
        .iter()
        .find(|(name, _, _)| *name == chart)
        .map(|(_, _, files)| *files)
        .unwrap_or_else(|| panic!("no stand-in chart {chart}"))
}

fn file_of(chart: &str, path: &str) -> &'static str {
    files_of(chart)
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, text)| *text)
        .unwrap_or_else(|| panic!("no {path} in stand-in chart {chart}"))
}

fn is_template(path: &str) -> bool {
    path.starts_with("templates/")
}

fn yaml(text: &str) -> Result<serde_json::Value> {
    Ok(serde_saphyr::from_str(text)?)
}

/// Relative paths of the regular files under `dir`, sorted.
fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, base, out)?;
        } else {
            let rel = path
                .strip_prefix(base)?
                .to_string_lossy()
                .replace('\\', "/");
            out.push(rel);
        }
    }
    Ok(())
}

/// `(path inside the archive, contents)` of every entry of a `.tgz`.
fn unpack(archive: &Path) -> Result<BTreeMap<String, String>> {
    let bytes = std::fs::read(archive)?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
    let mut entries = BTreeMap::new();
    for entry in tar.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.to_string_lossy().into_owned();
        let mut text = String::new();
        entry.read_to_string(&mut text)?;
        entries.insert(path, text);
    }
    Ok(entries)
}

#[test]
fn embedded_files_are_exactly_the_chart_sources_on_disk() -> Result<()> {
    let root = charts_dir();
    let mut on_disk_charts: Vec<String> = std::fs::read_dir(&root)?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_>>()?;
    on_disk_charts.sort();
    let mut listed: Vec<String> = STANDIN_CHARTS.iter().map(|(n, _)| n.to_string()).collect();
    listed.sort();
    assert_eq!(
        on_disk_charts, listed,
        "chart directories vs STANDIN_CHARTS"
    );

    for (name, _, files) in STANDIN_CHART_FILES {
        let dir = root.join(name);
        let mut on_disk = Vec::new();
        walk(&dir, &dir, &mut on_disk)?;
        on_disk.sort();
        let mut embedded: Vec<String> = files.iter().map(|(p, _)| p.to_string()).collect();
        embedded.sort();
        assert_eq!(
            embedded, on_disk,
            "{name}: embedded files vs charts/{name}/"
        );
        for (path, text) in *files {
            let disk = std::fs::read_to_string(dir.join(path))?;
            assert_eq!(*text, disk, "{name}/{path}");
        }
    }
    Ok(())
}

#[test]
fn all_charts_package_with_their_own_chart_yaml() -> Result<()> {
    let dir = scratch("package")?;
    let archives = write_standin_charts(&dir)?;
    assert_eq!(archives.len(), STANDIN_CHARTS.len());
    for ((name, version, files), archive) in STANDIN_CHART_FILES.iter().zip(&archives) {
        assert_eq!(archive, &dir.join(format!("{name}-{version}.tgz")));
        let entries = unpack(archive)?;
        let expected: BTreeSet<String> = files.iter().map(|(p, _)| format!("{name}/{p}")).collect();
        let got: BTreeSet<String> = entries.keys().cloned().collect();
        assert_eq!(got, expected, "{name}: archive entries");
        for (path, text) in *files {
            assert_eq!(entries[&format!("{name}/{path}")], *text, "{name}/{path}");
        }
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[tokio::test]
async fn repository_index_lists_the_three_charts() -> Result<()> {
    let dir = scratch("index")?;
    let repo = HelmRepo::start(&dir)?;
    add_standin_charts(&repo)?;

    let index = yaml(&std::fs::read_to_string(dir.join("index.yaml"))?)?;
    assert_eq!(index["apiVersion"], "v1");
    let entries = index["entries"].as_object().context("entries")?;
    assert_eq!(entries.len(), 3, "{entries:?}");
    for (name, version) in STANDIN_CHARTS {
        let versions = entries[*name].as_array().context("versions")?;
        assert_eq!(versions.len(), 1, "{name}");
        let entry = &versions[0];
        assert_eq!(entry["name"], *name);
        assert_eq!(entry["version"], *version);
        assert_eq!(entry["apiVersion"], "v2");
        assert_eq!(entry["urls"][0], format!("{name}-{version}.tgz"));
        let description = entry["description"].as_str().unwrap_or_default();
        assert!(description.starts_with("Stand-in for tests"), "{name}");
    }

    // Served over HTTP as source-controller will fetch it.
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", repo.port())).await?;
    stream
        .write_all(b"GET /kube-prometheus-8.9.1.tgz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let head = String::from_utf8_lossy(&response[..response.len().min(64)]).into_owned();
    ensure!(head.contains(" 200 "), "GET chart archive: {head}");

    drop(repo);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn plain_chart_files_are_valid_yaml() -> Result<()> {
    for (name, _, files) in STANDIN_CHART_FILES {
        for (path, text) in *files {
            if is_template(path) {
                continue;
            }
            let docs: Vec<Option<serde_json::Value>> = serde_saphyr::from_multiple(text)
                .with_context(|| format!("{name}/{path} is not valid YAML"))?;
            ensure!(
                docs.iter().flatten().count() == 1,
                "{name}/{path}: expected one YAML document"
            );
        }
        let values = yaml(file_of(name, "values.yaml"))?;
        ensure!(values.is_object(), "{name}/values.yaml is not a map");
    }
    Ok(())
}

/// The actions (`{{ ... }}` contents) of a template; fails on unbalanced delimiters.
fn actions(text: &str) -> Result<Vec<&str>> {
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        let Some(open) = rest.find("{{") else {
            ensure!(!rest.contains("}}"), "`}}}}` without `{{{{`");
            return Ok(out);
        };
        ensure!(
            !rest[..open].contains("}}"),
            "`}}}}` without `{{{{` before {:?}",
            &rest[open..rest.len().min(open + 40)]
        );
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            bail!("`{{{{` never closed: {:?}", &after[..after.len().min(40)]);
        };
        let inner = &after[..close];
        ensure!(!inner.contains("{{"), "nested `{{{{` in {inner:?}");
        out.push(inner);
        rest = &after[close + 2..];
    }
}

/// Checks that `if`/`range`/`with`/`define`/`block` are closed by `end` and `else` appears
/// only inside a block.
fn check_blocks(actions: &[&str]) -> Result<()> {
    let mut open: Vec<&str> = Vec::new();
    for action in actions {
        let body = action.trim_start_matches('-').trim_end_matches('-').trim();
        if body.starts_with("/*") {
            ensure!(body.ends_with("*/"), "unterminated comment {body:?}");
            continue;
        }
        match body.split_whitespace().next().unwrap_or("") {
            kw @ ("if" | "range" | "with" | "define" | "block") => open.push(kw),
            "else" => ensure!(!open.is_empty(), "`else` outside a block"),
            "end" => {
                open.pop().context("`end` without a block")?;
            }
            _ => {}
        }
    }
    ensure!(open.is_empty(), "unclosed blocks: {open:?}");
    Ok(())
}

/// Dotted paths read through `.Values.` (or `$.Values.`), e.g. `query.service.type`.
fn values_paths(text: &str) -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    for (i, _) in text.match_indices(".Values.") {
        let path: String = text[i + ".Values.".len()..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
            .collect();
        let path = path.trim_end_matches('.');
        if !path.is_empty() {
            paths.insert(path.to_string());
        }
    }
    paths
}

/// Whether `path` (dotted, or a list of segments for keys with dots or dashes) is a key of
/// `values`, every segment but the last being a map.
fn has_path(values: &serde_json::Value, segments: &[&str]) -> bool {
    let mut node = values;
    for segment in segments {
        match node.as_object().and_then(|m| m.get(*segment)) {
            Some(next) => node = next,
            None => return false,
        }
    }
    true
}

#[test]
fn templates_are_well_formed_and_read_only_defined_values() -> Result<()> {
    for (name, _, files) in STANDIN_CHART_FILES {
        let values = yaml(file_of(name, "values.yaml"))?;
        for (path, text) in files.iter().filter(|(p, _)| is_template(p)) {
            let acts = actions(text).with_context(|| format!("{name}/{path}"))?;
            check_blocks(&acts).with_context(|| format!("{name}/{path}"))?;
            for value_path in values_paths(text) {
                let segments: Vec<&str> = value_path.split('.').collect();
                ensure!(
                    has_path(&values, &segments),
                    "{name}/{path} reads .Values.{value_path}, which values.yaml does not define \
                     (Helm fails on a nil map in the middle of a path)"
                );
            }
            for workload in [
                "Deployment",
                "StatefulSet",
                "DaemonSet",
                "Pod",
                "Job",
                "CronJob",
                "ReplicaSet",
            ] {
                ensure!(
                    !text.contains(&format!("kind: {workload}\n")),
                    "{name}/{path} renders a {workload}: nothing would ever become ready"
                );
            }
        }
    }
    Ok(())
}

#[test]
fn template_checks_catch_mistakes() {
    assert!(actions("a {{ .x }} b").is_ok());
    assert!(actions("a {{ .x } b").is_err());
    assert!(actions("a .x }} b").is_err());
    assert!(actions("{{ {{ .x }}").is_err());
    assert!(check_blocks(&actions("{{- if .a }}x{{ else }}y{{- end }}").unwrap()).is_ok());
    assert!(check_blocks(&actions("{{- if .a }}{{ range .b }}{{ end }}").unwrap()).is_err());
    assert!(check_blocks(&actions("{{ end }}").unwrap()).is_err());
    assert!(check_blocks(&actions("{{/* if */}}").unwrap()).is_ok());
    assert_eq!(
        values_paths("{{ $.Values.a.b | quote }} {{ .Values.c }}."),
        BTreeSet::from(["a.b".to_string(), "c".to_string()])
    );
}

/// Every value key Kurator v0.4.0's plugins inject (pkg/fleet-manager/plugin testdata and
/// manifests/profiles/fleet/plugins) exists in the stand-in's defaults, so the stand-ins accept
/// the same keys the upstream charts do.
#[test]
fn values_kurator_injects_are_chart_keys() -> Result<()> {
    let injected: &[(&str, &[&[&str]])] = &[
        (
            "thanos",
            &[
                &["existingObjstoreSecret"],
                &["query", "dnsDiscovery", "sidecarsService"],
                &["query", "dnsDiscovery", "sidecarsNamespace"],
                &["queryFrontend", "enabled"],
                &["bucketweb", "enabled"],
                &["compactor", "enabled"],
                &["storegateway", "enabled"],
                &["ruler", "enabled"],
                &["metrics", "enabled"],
                &["minio", "enabled"],
            ],
        ),
        (
            "kube-prometheus",
            &[
                &["fullnameOverride"],
                &["alertmanager", "enabled"],
                &["blackboxExporter", "enabled"],
                &["exporters", "enabled"],
                &["exporters", "kube-state-metrics", "enabled"],
                &["exporters", "node-exporter", "enabled"],
                &["operator", "service", "type"],
                &["prometheus", "disableCompaction"],
                &["prometheus", "externalLabels"],
                &["prometheus", "service", "type"],
                &["prometheus", "thanos", "create"],
                &["prometheus", "thanos", "objectStorageConfig", "secretName"],
                &["prometheus", "thanos", "objectStorageConfig", "secretKey"],
                &["prometheus", "thanos", "service", "type"],
            ],
        ),
        (
            "grafana",
            &[
                &["fullnameOverride"],
                &["admin", "password"],
                &["datasources", "secretDefinition"],
                &["service", "type"],
            ],
        ),
    ];
    for (chart, keys) in injected {
        let values = yaml(file_of(chart, "values.yaml"))?;
        for key in *keys {
            ensure!(
                has_path(&values, key),
                "{chart}: values.yaml lacks {}",
                key.join(".")
            );
        }
    }
    let prometheus = yaml(file_of("kube-prometheus", "values.yaml"))?;
    assert_eq!(
        prometheus["prometheus"]["thanos"]["service"]["type"],
        "ClusterIP"
    );
    assert_eq!(
        prometheus["prometheus"]["thanos"]["service"]["ports"]["grpc"],
        10901
    );
    Ok(())
}
