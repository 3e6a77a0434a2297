//! Flags of the Thanos components the test environment runs (pure), as the bitnami thanos
//! chart and the Prometheus operator configure them: a member's sidecar next to its
//! Prometheus, and Thanos Query on the host with file service discovery.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The port of the sidecar's gRPC Store API, as the chart's sidecar Service exposes it.
pub const SIDECAR_GRPC_PORT: u16 = 10901;

/// How often Thanos Query re-reads its SD file and resolves `dns+` names. Thanos also
/// watches the file, so a rewrite is seen at once; this is the fallback, and bounds how long
/// a `dns+` name's answer may be stale.
const SD_REFRESH: &str = "5s";

/// Inputs of a sidecar's flags.
#[derive(Debug, Clone)]
pub(crate) struct SidecarFlags<'a> {
    pub prometheus_port: u16,
    pub tsdb: &'a Path,
    pub grpc: SocketAddr,
    pub http_port: u16,
    pub objstore_config: Option<&'a Path>,
}

pub(crate) fn sidecar_args(f: &SidecarFlags<'_>) -> Vec<String> {
    let mut args = vec![
        "sidecar".to_string(),
        format!("--prometheus.url=http://127.0.0.1:{}", f.prometheus_port),
        format!("--tsdb.path={}", f.tsdb.display()),
        format!("--grpc-address={}", f.grpc),
        format!("--http-address=127.0.0.1:{}", f.http_port),
        "--log.level=info".into(),
    ];
    if let Some(config) = f.objstore_config {
        args.push(format!("--objstore.config-file={}", config.display()));
    }
    args
}

/// Inputs of Thanos Query's flags.
#[derive(Debug, Clone)]
pub(crate) struct QueryFlags<'a> {
    pub http_port: u16,
    pub grpc_port: u16,
    pub sd_file: &'a Path,
    pub static_endpoints: &'a [String],
}

pub(crate) fn query_args(f: &QueryFlags<'_>) -> Vec<String> {
    let mut args = vec![
        "query".to_string(),
        format!("--http-address=127.0.0.1:{}", f.http_port),
        format!("--grpc-address=127.0.0.1:{}", f.grpc_port),
        format!("--store.sd-files={}", f.sd_file.display()),
        format!("--store.sd-interval={SD_REFRESH}"),
        format!("--store.sd-dns-interval={SD_REFRESH}"),
        "--log.level=info".into(),
    ];
    args.extend(f.static_endpoints.iter().map(|e| format!("--endpoint={e}")));
    args
}

/// The file-SD document listing `endpoints` (`host:port`, or `dns+host:port` which Thanos
/// resolves itself), in Prometheus's `file_sd_configs` format.
pub(crate) fn render_sd_file(endpoints: &[String]) -> Result<String> {
    for endpoint in endpoints {
        let address = endpoint
            .strip_prefix("dnssrv+")
            .or_else(|| endpoint.strip_prefix("dnssrvnoa+"))
            .or_else(|| endpoint.strip_prefix("dns+"))
            .unwrap_or(endpoint);
        if address.is_empty() || address.contains(char::is_whitespace) {
            return Err(Error::Usage(format!(
                "not a Thanos endpoint (host:port): {endpoint:?}"
            )));
        }
    }
    let groups = if endpoints.is_empty() {
        serde_json::json!([])
    } else {
        serde_json::json!([{ "targets": endpoints }])
    };
    // JSON is YAML, and keeps an empty list an explicit `[]`.
    serde_json::to_string_pretty(&groups)
        .map_err(|e| Error::Usage(format!("rendering the SD file: {e}")))
}

/// Writes `text` to `path` atomically (a temporary file renamed over it), so Thanos never
/// reads half a file.
pub(crate) fn replace_file(path: &Path, text: &str) -> Result<()> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp: PathBuf = path.with_file_name(format!(".{file_name}.tmp"));
    std::fs::write(&tmp, text).map_err(|e| Error::io("writing", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io("renaming to", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecar_listens_where_its_service_address_points() {
        let grpc: SocketAddr = "127.0.1.2:10901".parse().expect("addr");
        let args = sidecar_args(&SidecarFlags {
            prometheus_port: 9090,
            tsdb: Path::new("/m/prometheus-data"),
            grpc,
            http_port: 4000,
            objstore_config: Some(Path::new("/m/objstore.yml")),
        });
        assert_eq!(args[0], "sidecar");
        for flag in [
            "--prometheus.url=http://127.0.0.1:9090",
            "--tsdb.path=/m/prometheus-data",
            "--grpc-address=127.0.1.2:10901",
            "--http-address=127.0.0.1:4000",
            "--objstore.config-file=/m/objstore.yml",
        ] {
            assert!(args.iter().any(|a| a == flag), "{flag}: {args:?}");
        }
        let without = sidecar_args(&SidecarFlags {
            objstore_config: None,
            prometheus_port: 9090,
            tsdb: Path::new("/m/prometheus-data"),
            grpc,
            http_port: 4000,
        });
        assert!(!without.iter().any(|a| a.starts_with("--objstore")));
    }

    #[test]
    fn query_reads_the_sd_file_and_static_endpoints() {
        let endpoints = vec!["127.0.0.1:10905".to_string()];
        let args = query_args(&QueryFlags {
            http_port: 1,
            grpc_port: 2,
            sd_file: Path::new("/h/stores.json"),
            static_endpoints: &endpoints,
        });
        assert_eq!(args[0], "query");
        for flag in [
            "--http-address=127.0.0.1:1",
            "--grpc-address=127.0.0.1:2",
            "--store.sd-files=/h/stores.json",
            "--endpoint=127.0.0.1:10905",
        ] {
            assert!(args.iter().any(|a| a == flag), "{flag}: {args:?}");
        }
    }

    #[test]
    fn sd_file_lists_the_endpoints_as_one_target_group() {
        let text = render_sd_file(&[
            "127.0.1.1:10901".to_string(),
            "dns+sidecar.example:10901".to_string(),
        ])
        .expect("render");
        let doc: serde_json::Value = serde_saphyr::from_str(&text).expect("yaml");
        assert_eq!(
            doc,
            serde_json::json!([{ "targets": ["127.0.1.1:10901", "dns+sidecar.example:10901"] }])
        );
        assert_eq!(render_sd_file(&[]).expect("empty").trim(), "[]");
        assert!(render_sd_file(&["dns+".to_string()]).is_err());
    }
}
