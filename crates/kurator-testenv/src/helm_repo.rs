//! A Helm chart repository (type `default`) for source-controller: a static HTTP server over a
//! directory holding `index.yaml` and `<name>-<version>.tgz` archives.
//!
//! Archives are gzip'd tars with a single top-level `<name>/` directory (Helm's loader
//! rejects anything else). The index is regenerated from the archives' `Chart.yaml` files
//! after every [`HelmRepo::add_chart`]; `urls` are relative, so the repository works under
//! any address.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use http::{Method, StatusCode};

use crate::error::{Error, Result};
use crate::http_server::BackgroundServer;

const INDEX: &str = "index.yaml";

/// A running chart repository. Stops when dropped (the files stay on disk).
#[derive(Debug)]
pub struct HelmRepo {
    dir: PathBuf,
    server: BackgroundServer,
}

impl HelmRepo {
    /// Serves `dir` (created if missing) on `http://127.0.0.1:<free port>`, after writing an
    /// `index.yaml` for the charts already in it (an empty index if none).
    pub fn start(dir: impl Into<PathBuf>) -> Result<HelmRepo> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("creating", &dir, e))?;
        write_index(&dir)?;
        let serve_dir = dir.clone();
        let server =
            BackgroundServer::start("kurator-helm-repo", move |l| serve_static(serve_dir, l))?;
        tracing::info!(url = %server.url(), dir = %dir.display(), "helm repository listening");
        Ok(HelmRepo { dir, server })
    }

    /// `http://127.0.0.1:<port>` (no trailing slash); `<url>/index.yaml` is the index.
    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// The served directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `<name>-<version>.tgz` from `files` (`(path inside the chart, contents)`, e.g.
    /// `templates/cm.yaml`, `values.yaml`) and regenerates `index.yaml`. A `Chart.yaml`
    /// (`apiVersion: v2`, name, version) and an empty `values.yaml` are added unless given.
    /// Returns the archive path. Blocking (small file writes).
    pub fn add_chart(&self, name: &str, version: &str, files: &[(&str, &str)]) -> Result<PathBuf> {
        let archive = write_chart(&self.dir, name, version, files)?;
        write_index(&self.dir)?;
        Ok(archive)
    }
}

/// Writes the chart archive `<dir>/<name>-<version>.tgz` (see [`HelmRepo::add_chart`]); the
/// index is not touched.
pub fn write_chart(
    dir: &Path,
    name: &str,
    version: &str,
    files: &[(&str, &str)],
) -> Result<PathBuf> {
    let name_ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-');
    if !name_ok {
        return Err(Error::HelmRepo(format!(
            "invalid chart name {name:?} (lowercase letters, digits and '-')"
        )));
    }
    if version.is_empty() || version.contains(['/', ' ']) {
        return Err(Error::HelmRepo(format!(
            "invalid chart version {version:?}"
        )));
    }
    let mut entries: BTreeMap<PathBuf, Vec<u8>> = BTreeMap::new();
    for (path, contents) in files {
        let p = Path::new(path);
        if path.is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(Error::HelmRepo(format!(
                "invalid file path {path:?} in chart {name} (relative, without `..`)"
            )));
        }
        entries.insert(p.to_path_buf(), contents.as_bytes().to_vec());
    }
    entries
        .entry(PathBuf::from("Chart.yaml"))
        .or_insert_with(|| {
            format!("apiVersion: v2\nname: {name}\nversion: {version}\ntype: application\n")
                .into_bytes()
        });
    entries.entry(PathBuf::from("values.yaml")).or_default();
    let archive = dir.join(format!("{name}-{version}.tgz"));
    write_atomically(&archive, &chart_archive(name, &entries)?)?;
    Ok(archive)
}

/// A gzip'd tar of `files` (paths relative to the chart root) under the single top-level
/// directory `<name>/`, with fixed modes and times so that equal input gives equal bytes.
pub(crate) fn chart_archive(name: &str, files: &BTreeMap<PathBuf, Vec<u8>>) -> Result<Vec<u8>> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (path, contents) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(contents.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        let full = Path::new(name).join(path);
        tar.append_data(&mut header, &full, contents.as_slice())
            .map_err(|e| Error::HelmRepo(format!("archiving {}: {e}", full.display())))?;
    }
    tar.into_inner()
        .and_then(|gz| gz.finish())
        .map_err(|e| Error::HelmRepo(format!("compressing chart {name}: {e}")))
}

/// Regenerates `<dir>/index.yaml` (`apiVersion: v1`) from every `*.tgz` in `dir`.
pub fn write_index(dir: &Path) -> Result<()> {
    let mut archives: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io("reading", dir, e))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "tgz"))
        .collect();
    archives.sort();
    let mut entries: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for archive in &archives {
        let bytes = std::fs::read(archive).map_err(|e| Error::io("reading", archive, e))?;
        let meta = chart_metadata(&bytes)
            .map_err(|e| Error::HelmRepo(format!("{}: {e}", archive.display())))?;
        let field = |k: &str| meta.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let (Some(name), Some(version)) = (field("name"), field("version")) else {
            return Err(Error::HelmRepo(format!(
                "{}: Chart.yaml lacks name or version",
                archive.display()
            )));
        };
        let file = archive
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let q = |s: &str| serde_json::Value::from(s).to_string();
        let mut entry = format!(
            "  - apiVersion: {}\n    name: {}\n    version: {}\n    digest: {}\n    urls:\n      - {}\n",
            q(&field("apiVersion").unwrap_or_else(|| "v2".into())),
            q(&name),
            q(&version),
            q(&sha256_hex(&bytes)),
            q(&file),
        );
        for optional in ["appVersion", "description", "type"] {
            if let Some(v) = field(optional) {
                entry.push_str(&format!("    {optional}: {}\n", q(&v)));
            }
        }
        entries.entry(name).or_default().push(entry);
    }
    let mut text = String::from("apiVersion: v1\n");
    if entries.is_empty() {
        text.push_str("entries: {}\n");
    } else {
        text.push_str("entries:\n");
        for (name, versions) in &entries {
            text.push_str(&format!("  {}:\n", serde_json::Value::from(name.as_str())));
            for v in versions {
                text.push_str(v);
            }
        }
    }
    write_atomically(&dir.join(INDEX), text.as_bytes())
}

/// The `Chart.yaml` of a chart archive (`<dir>/Chart.yaml`, exactly one level deep).
pub(crate) fn chart_metadata(tgz: &[u8]) -> std::result::Result<serde_json::Value, String> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tgz));
    let entries = archive.entries().map_err(|e| e.to_string())?;
    for entry in entries {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let path = entry.path().map_err(|e| e.to_string())?.into_owned();
        let parts: Vec<_> = path.components().collect();
        if parts.len() == 2 && parts[1].as_os_str() == "Chart.yaml" {
            let mut text = String::new();
            entry.read_to_string(&mut text).map_err(|e| e.to_string())?;
            return serde_saphyr::from_str(&text).map_err(|e| format!("Chart.yaml: {e}"));
        }
    }
    Err("no <chart>/Chart.yaml in the archive".into())
}

fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| Error::io("writing", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io("renaming to", path, e))
}

/// Serves the files under `dir` (GET/HEAD, no directory listings) on `listener` until the
/// future is dropped. For running a chart repository as a background process of the CLI.
pub async fn serve_static(dir: PathBuf, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    let app = axum::Router::new().fallback(file).with_state(Arc::new(dir));
    axum::serve(listener, app).await
}

async fn file(State(dir): State<Arc<PathBuf>>, req: Request) -> Response {
    let status = |code: StatusCode| {
        let mut resp = Response::new(Body::from(code.canonical_reason().unwrap_or("")));
        *resp.status_mut() = code;
        resp
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return status(StatusCode::METHOD_NOT_ALLOWED);
    }
    let rel = Path::new(req.uri().path().trim_start_matches('/'));
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return status(StatusCode::NOT_FOUND);
    }
    let path = dir.join(rel);
    match tokio::fs::read(&path).await {
        Ok(bytes) => {
            tracing::debug!(path = %rel.display(), bytes = bytes.len(), "helm repository request");
            let mut resp = Response::new(Body::from(bytes));
            let content_type = if rel.extension().is_some_and(|x| x == "tgz") {
                "application/gzip"
            } else {
                "text/yaml; charset=utf-8"
            };
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(content_type),
            );
            resp
        }
        Err(_) => status(StatusCode::NOT_FOUND),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    /// The sorted paths inside a `.tgz` chart archive (also used by the Kyverno chart tests).
    pub(crate) fn archive_entry_names(bytes: &[u8]) -> Vec<String> {
        let mut names: Vec<String> = tar::Archive::new(flate2::read::GzDecoder::new(bytes))
            .entries()
            .expect("entries")
            .map(|e| {
                e.expect("entry")
                    .path()
                    .expect("path")
                    .display()
                    .to_string()
            })
            .collect();
        names.sort();
        names
    }

    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("kurator-helm-unit-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }

    #[test]
    fn chart_archive_has_one_top_level_dir_and_a_generated_chart_yaml() {
        let dir = scratch("archive");
        let archive = write_chart(
            &dir,
            "demo",
            "0.1.0",
            &[("templates/cm.yaml", "kind: ConfigMap\n")],
        )
        .expect("chart");
        assert_eq!(archive, dir.join("demo-0.1.0.tgz"));
        let bytes = std::fs::read(&archive).expect("read");
        let names = archive_entry_names(&bytes);
        assert_eq!(
            names,
            [
                "demo/Chart.yaml",
                "demo/templates/cm.yaml",
                "demo/values.yaml"
            ]
        );
        let meta = chart_metadata(&bytes).expect("Chart.yaml");
        assert_eq!(meta["apiVersion"], "v2");
        assert_eq!(meta["version"], "0.1.0");

        write_index(&dir).expect("index");
        let index: serde_json::Value =
            serde_saphyr::from_str(&std::fs::read_to_string(dir.join(INDEX)).expect("index"))
                .expect("yaml");
        assert_eq!(index["apiVersion"], "v1");
        let entry = &index["entries"]["demo"][0];
        assert_eq!(entry["urls"][0], "demo-0.1.0.tgz");
        assert_eq!(entry["name"], "demo");
        assert_eq!(entry["digest"].as_str().map(str::len), Some(64));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn empty_repository_index_and_bad_names() {
        let dir = scratch("empty");
        write_index(&dir).expect("index");
        let text = std::fs::read_to_string(dir.join(INDEX)).expect("index");
        assert_eq!(text, "apiVersion: v1\nentries: {}\n");
        assert!(write_chart(&dir, "Bad_Name", "0.1.0", &[]).is_err());
        assert!(write_chart(&dir, "ok", "0.1.0", &[("../x", "")]).is_err());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
