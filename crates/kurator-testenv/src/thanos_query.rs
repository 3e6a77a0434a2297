//! Thanos Query on the host as a local process, standing in for the kubelet that would run
//! the bitnami thanos chart's query Pod: its Store API endpoints come from a file-SD file
//! (which the caller rewrites from the controller's discovery objects; Thanos watches it)
//! plus static `--endpoint`s. Its HTTP API is read with the crate's own HTTP client (kube's,
//! over plain HTTP on loopback), so no further client is needed.
//!
//! Files: `<state>/metrics/host/stores.json`; log: `logs/host-thanos-query.log`. Detached
//! processes write a pid file to `run/` but are not recorded in `env.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::cluster::log_path;
use crate::error::{Error, Result};
use crate::metrics::{pid_file, start_thanos, thanos_grpc_port, thanos_http_port};
use crate::process::{Proc, ProcessInfo, ProcessSpec, free_port};
use crate::thanos::{self, QueryFlags};

/// The cluster name Thanos Query's process and log are named after.
const HOST: &str = "host";
/// How long one HTTP API call may take.
const API_TIMEOUT: Duration = Duration::from_secs(10);

/// Inputs to start Thanos Query on the host.
#[derive(Debug, Clone)]
pub struct HostThanosQueryParams<'a> {
    /// The `thanos` binary ([`crate::ensure_thanos_binary`]).
    pub thanos: &'a Path,
    /// The environment's state dir.
    pub state_dir: &'a Path,
    /// What the SD file lists at the start (`host:port` or `dns+host:port`).
    pub sd_endpoints: Vec<String>,
    /// `--endpoint=` flags: endpoints known before the start (e.g. a store gateway).
    pub static_endpoints: Vec<String>,
    pub detached: bool,
    pub timeout: Duration,
}

impl<'a> HostThanosQueryParams<'a> {
    /// Defaults: no endpoints, attached, 60 s to become ready.
    pub fn new(thanos: &'a Path, state_dir: &'a Path) -> Self {
        HostThanosQueryParams {
            thanos,
            state_dir,
            sd_endpoints: Vec::new(),
            static_endpoints: Vec::new(),
            detached: false,
            timeout: Duration::from_secs(60),
        }
    }
}

/// One series of an instant query's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    /// The value as Prometheus prints it (`"1"`, `"0.25"`, `"NaN"`).
    pub value: String,
}

/// An instant vector and the warnings Thanos added (e.g. a store that failed: partial
/// responses are on, as the chart leaves them).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InstantVector {
    pub samples: Vec<Sample>,
    pub warnings: Vec<String>,
}

impl InstantVector {
    /// The values of the samples that carry `label`, by that label's value.
    pub fn by_label(&self, label: &str) -> BTreeMap<String, String> {
        self.samples
            .iter()
            .filter_map(|s| Some((s.labels.get(label)?.clone(), s.value.clone())))
            .collect()
    }
}

/// One Store API endpoint as Thanos Query sees it (`/api/v1/stores`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreStatus {
    /// `host:port`.
    pub name: String,
    /// The store type (`sidecar`, `store`, …).
    pub kind: String,
    /// The last health check's error, if it failed.
    pub last_error: Option<String>,
    /// The external label sets the store announced.
    pub label_sets: Vec<BTreeMap<String, String>>,
}

/// Thanos Query running on the host. Dropping it kills it (unless detached).
pub struct HostThanosQuery {
    http_port: u16,
    grpc_port: u16,
    sd_file: PathBuf,
    http: LoopbackHttp,
    // Behind a lock so it can be listed through `&self` while the owner queries it.
    proc: std::sync::Mutex<Proc>,
}

impl std::fmt::Debug for HostThanosQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostThanosQuery")
            .field("http_url", &self.http_url())
            .field("sd_file", &self.sd_file)
            .field("proc", &self.proc)
            .finish_non_exhaustive()
    }
}

impl HostThanosQuery {
    /// Writes the SD file, starts Thanos Query on free loopback ports and waits for
    /// `/-/ready`.
    pub async fn start(p: HostThanosQueryParams<'_>) -> Result<HostThanosQuery> {
        let dir = p.state_dir.join("metrics").join(HOST);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("creating", &dir, e))?;
        // The extension tells Thanos (Prometheus's file SD) the format.
        let sd_file = dir.join("stores.json");
        thanos::replace_file(&sd_file, &thanos::render_sd_file(&p.sd_endpoints)?)?;
        let name = format!("{HOST}-thanos-query");
        let spec_for = |http_port: u16| ProcessSpec {
            name: name.clone(),
            program: p.thanos.to_path_buf(),
            args: thanos::query_args(&QueryFlags {
                http_port,
                // A port race on it shows in the log like one on the HTTP port: retried.
                grpc_port: free_port().unwrap_or(0),
                sd_file: &sd_file,
                static_endpoints: &p.static_endpoints,
            }),
            log: log_path(p.state_dir, HOST, "thanos-query"),
            pid_file: pid_file(p.state_dir, p.detached, &name),
            env: Vec::new(),
        };
        let proc = start_thanos(spec_for, p.detached, p.timeout).await?;
        let http_port = thanos_http_port(&proc.spec).unwrap_or_default();
        let grpc_port = thanos_grpc_port(&proc.spec).unwrap_or_default();
        let http = LoopbackHttp::new(http_port, "Thanos Query")?;
        tracing::info!(http_port, grpc_port, "thanos query ready");
        Ok(HostThanosQuery {
            http_port,
            grpc_port,
            sd_file,
            http,
            proc: std::sync::Mutex::new(proc),
        })
    }

    /// `http://127.0.0.1:<port>`: the Prometheus-compatible query API (what the chart's
    /// query Service serves on 9090).
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// `127.0.0.1:<port>`: Thanos Query's own Store API.
    pub fn grpc_address(&self) -> String {
        format!("127.0.0.1:{}", self.grpc_port)
    }

    /// The file-SD file Thanos Query watches.
    pub fn sd_file(&self) -> &Path {
        &self.sd_file
    }

    /// Rewrites the SD file to list exactly `endpoints` (`host:port`, or `dns+host:port`).
    /// Thanos notices the change by itself within seconds; wait for the effect with
    /// [`Self::stores`] or a query.
    pub fn set_sd_endpoints(&self, endpoints: &[String]) -> Result<()> {
        thanos::replace_file(&self.sd_file, &thanos::render_sd_file(endpoints)?)
    }

    /// The process, for `kurator dev status`.
    pub fn processes(&self) -> Vec<ProcessInfo> {
        let mut proc = self.proc.lock().unwrap_or_else(|e| e.into_inner());
        vec![proc.info(Some(HOST))]
    }

    /// Kills the process and waits until it is gone.
    pub async fn stop(&mut self) -> Result<()> {
        self.proc
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .kill()
            .await
    }

    /// `GET /api/v1/query?query=<promql>` (an instant query at the current time).
    pub async fn instant_query(&self, promql: &str) -> Result<InstantVector> {
        let path = format!("/api/v1/query?query={}", percent_encode(promql));
        parse_instant_vector(&self.http.get(&path).await?)
    }

    /// `GET /api/v1/stores`: the endpoints Thanos Query currently uses.
    pub async fn stores(&self) -> Result<Vec<StoreStatus>> {
        parse_stores(&self.http.get("/api/v1/stores").await?)
    }
}

/// A plain-HTTP client for one loopback port (Thanos and Prometheus APIs).
#[derive(Clone)]
pub(crate) struct LoopbackHttp {
    port: u16,
    what: &'static str,
    client: kube::Client,
}

impl LoopbackHttp {
    pub fn new(port: u16, what: &'static str) -> Result<Self> {
        let uri: http::Uri = format!("http://127.0.0.1:{port}")
            .parse()
            .map_err(|e| Error::Usage(format!("invalid {what} url: {e}")))?;
        let mut config = kube::Config::new(uri);
        config.connect_timeout = Some(Duration::from_secs(2));
        let client = kube::Client::try_from(config)
            .map_err(|e| Error::kube(format!("creating a {what} client"), e))?;
        Ok(LoopbackHttp { port, what, client })
    }

    /// The body of a successful `GET <path>`.
    pub async fn get(&self, path: &str) -> Result<String> {
        let request = http::Request::get(path)
            .body(Vec::new())
            .map_err(|e| Error::Usage(format!("invalid {} request {path}: {e}", self.what)))?;
        let context = || format!("GET http://127.0.0.1:{}{path} ({})", self.port, self.what);
        match tokio::time::timeout(API_TIMEOUT, self.client.request_text(request)).await {
            Ok(Ok(body)) => Ok(body),
            Ok(Err(e)) => Err(Error::kube(context(), e)),
            Err(_) => Err(Error::Usage(format!(
                "{}: no answer within {}s",
                context(),
                API_TIMEOUT.as_secs()
            ))),
        }
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters (a PromQL query holds
/// braces, quotes, spaces).
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[derive(Deserialize)]
struct ApiResponse<T> {
    status: String,
    data: Option<T>,
    #[serde(default)]
    warnings: Vec<String>,
    #[serde(default)]
    error: Option<String>,
}

fn decode<T: for<'de> Deserialize<'de>>(body: &str, what: &str) -> Result<(T, Vec<String>)> {
    let response: ApiResponse<T> = serde_json::from_str(body)
        .map_err(|e| Error::Usage(format!("Thanos Query {what}: unexpected answer ({e})")))?;
    match (response.status.as_str(), response.data) {
        ("success", Some(data)) => Ok((data, response.warnings)),
        _ => Err(Error::Usage(format!(
            "Thanos Query {what}: {}",
            response.error.unwrap_or(response.status)
        ))),
    }
}

fn parse_instant_vector(body: &str) -> Result<InstantVector> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Data {
        result_type: String,
        result: Vec<Series>,
    }
    #[derive(Deserialize)]
    struct Series {
        metric: BTreeMap<String, String>,
        value: (f64, String),
    }
    let (data, warnings): (Data, _) = decode(body, "query")?;
    if data.result_type != "vector" {
        return Err(Error::Usage(format!(
            "Thanos Query query: a {} result, not an instant vector",
            data.result_type
        )));
    }
    Ok(InstantVector {
        samples: data
            .result
            .into_iter()
            .map(|s| Sample {
                labels: s.metric,
                value: s.value.1,
            })
            .collect(),
        warnings,
    })
}

fn parse_stores(body: &str) -> Result<Vec<StoreStatus>> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Store {
        name: String,
        last_error: Option<String>,
        #[serde(default)]
        label_sets: Option<Vec<BTreeMap<String, String>>>,
    }
    let (data, _): (BTreeMap<String, Vec<Store>>, _) = decode(body, "stores")?;
    let mut stores: Vec<StoreStatus> = data
        .into_iter()
        .flat_map(|(kind, stores)| {
            stores.into_iter().map(move |s| StoreStatus {
                name: s.name,
                kind: kind.clone(),
                last_error: s.last_error,
                label_sets: s.label_sets.unwrap_or_default(),
            })
        })
        .collect();
    stores.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(stores)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promql_is_percent_encoded() {
        assert_eq!(
            percent_encode(r#"count by (cluster) (up{job="apiserver"})"#),
            "count%20by%20%28cluster%29%20%28up%7Bjob%3D%22apiserver%22%7D%29"
        );
    }

    #[test]
    fn instant_vectors_keep_labels_values_and_warnings() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"cluster":"member1"},"value":[1764640000.5,"1"]},
            {"metric":{"cluster":"member2"},"value":[1764640000.5,"2"]}]},
            "warnings":["fetch series for {cluster=\"member3\"}: connection refused"]}"#;
        let vector = parse_instant_vector(body).expect("parse");
        assert_eq!(
            vector.by_label("cluster"),
            BTreeMap::from([
                ("member1".to_string(), "1".to_string()),
                ("member2".to_string(), "2".to_string())
            ])
        );
        assert_eq!(vector.warnings.len(), 1);
        let error = r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        let err = parse_instant_vector(error).expect_err("error");
        assert!(err.to_string().contains("parse error"), "{err}");
    }

    #[test]
    fn stores_are_listed_by_name_with_their_type() {
        let body = r#"{"status":"success","data":{"sidecar":[
            {"name":"127.0.1.2:10901","lastCheck":"2026-12-02T01:00:00Z","lastError":null,
             "labelSets":[{"cluster":"member2"}],"minTime":0,"maxTime":1},
            {"name":"127.0.1.1:10901","lastError":"rpc error","labelSets":null}]}}"#;
        let stores = parse_stores(body).expect("parse");
        assert_eq!(stores[0].name, "127.0.1.1:10901");
        assert_eq!(stores[0].last_error.as_deref(), Some("rpc error"));
        assert_eq!(stores[1].kind, "sidecar");
        assert_eq!(stores[1].label_sets[0]["cluster"], "member2");
    }
}
