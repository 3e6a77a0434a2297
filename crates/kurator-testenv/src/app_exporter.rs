//! A test application's `/metrics`, standing in for the application's container: no kubelet
//! runs Pods here (kwok only marks them Running), so this serves what the app would, as a
//! loopback HTTP server the member's Prometheus scrapes (as a ServiceMonitor would make it).
//!
//! It exposes `http_requests_total{code="200"}` and `{code="500"}` (Prometheus text format),
//! growing by a steady load ([`AppExporterParams::requests_per_second`], in ticks of
//! [`TICK`]). It is **configured from what the Application deployed in the member**: the
//! share of requests answered 500 is the `errorRate` key (a number in `[0, 1]`) of the
//! ConfigMap the app's manifests put there, read every [`AppExporterParams::poll`]. So a bad
//! release committed to git raises the error rate of exactly the clusters Flux applied it to,
//! and a rollback lowers it again. Without the ConfigMap the app is not deployed: no requests
//! are served and the counters stay where they are. Both series are always exposed, so an
//! error ratio never lacks its numerator. A key missing counts as 0; a value that is not a
//! number in `[0, 1]` counts as 0 and is logged. While the member's API server cannot be
//! read, the app keeps the configuration it has (as a running Pod would).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;

use crate::cluster::ClusterHandle;
use crate::error::Result;
use crate::http_server::BackgroundServer;
use crate::prometheus::ScrapeTarget;

/// How often the counters grow.
pub const TICK: Duration = Duration::from_millis(100);
/// The scrape job [`AppExporter::scrape_target`] names.
pub const APP_JOB: &str = "app";
/// The counter's name.
pub const REQUESTS_METRIC: &str = "http_requests_total";
/// The ConfigMap key holding the error rate.
pub const ERROR_RATE_KEY: &str = "errorRate";
/// Upper bound of one read of the ConfigMap.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Inputs of [`AppExporter::start`].
#[derive(Debug, Clone)]
pub struct AppExporterParams<'a> {
    /// The member the application is deployed in.
    pub cluster: &'a ClusterHandle,
    /// The ConfigMap the application's manifests deploy: namespace and name.
    pub namespace: String,
    pub configmap: String,
    /// Requests served per second while deployed.
    pub requests_per_second: u32,
    /// How often the ConfigMap is read.
    pub poll: Duration,
}

impl<'a> AppExporterParams<'a> {
    /// Defaults: 100 requests per second, the ConfigMap read every 500 ms.
    pub fn new(
        cluster: &'a ClusterHandle,
        namespace: impl Into<String>,
        configmap: impl Into<String>,
    ) -> Self {
        AppExporterParams {
            cluster,
            namespace: namespace.into(),
            configmap: configmap.into(),
            requests_per_second: 100,
            poll: Duration::from_millis(500),
        }
    }
}

/// The requests served so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counters {
    /// Answered 200.
    pub ok: u64,
    /// Answered 500.
    pub errors: u64,
    /// Errors owed by the error rate but not counted yet (below one request).
    carried: f64,
}

impl Counters {
    /// Pure: `requests` more served, `error_rate` of them answered 500 (the fraction below
    /// one request is carried to the next call, so the share is exact over time).
    pub fn serve(&mut self, requests: u64, error_rate: f64) {
        let owed = self.carried + requests as f64 * error_rate.clamp(0.0, 1.0);
        let errors = (owed.floor() as u64).min(requests);
        self.carried = owed - errors as f64;
        self.errors += errors;
        self.ok += requests - errors;
    }
}

#[derive(Debug, Default)]
struct Shared {
    counters: Counters,
    /// The error rate while the application is deployed (its ConfigMap exists).
    deployed: Option<f64>,
}

/// A running exporter; see the module docs. Dropping it stops the server.
pub struct AppExporter {
    cluster: String,
    server: BackgroundServer,
    shared: Arc<Mutex<Shared>>,
}

impl std::fmt::Debug for AppExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppExporter")
            .field("cluster", &self.cluster)
            .field("url", &self.server.url())
            .finish_non_exhaustive()
    }
}

impl AppExporter {
    /// Serves `/metrics` on a free loopback port, on its own thread, and starts following
    /// the ConfigMap.
    pub async fn start(p: AppExporterParams<'_>) -> Result<AppExporter> {
        let cluster = p.cluster.name().to_string();
        // The client is built on the server's own runtime (kube spawns its worker there).
        let config = p.cluster.config().await?;
        let shared = Arc::new(Mutex::new(Shared::default()));
        let state = shared.clone();
        let label = cluster.clone();
        let per_tick = requests_per_tick(p.requests_per_second);
        let (namespace, name, poll) = (p.namespace, p.configmap, p.poll);
        let server =
            BackgroundServer::start(&format!("{cluster}-app-exporter"), move |l| async move {
                let client = kube::Client::try_from(config).map_err(std::io::Error::other)?;
                let configmaps: Api<ConfigMap> = Api::namespaced(client, &namespace);
                let app = axum::Router::new()
                    .route("/metrics", get(metrics))
                    .with_state(state.clone());
                tokio::select! {
                    served = axum::serve(l, app) => served,
                    () = grow(state.clone(), per_tick) => Ok(()),
                    () = follow(state, configmaps, name, poll, label) => Ok(()),
                }
            })?;
        tracing::info!(%cluster, url = %server.url(), "app exporter runs, standing in for the \
            application's container (no kubelet here), configured from its deployed ConfigMap");
        Ok(AppExporter {
            cluster,
            server,
            shared,
        })
    }

    /// `127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.server.port())
    }

    /// `http://127.0.0.1:<port>/metrics`.
    pub fn metrics_url(&self) -> String {
        format!("{}/metrics", self.server.url())
    }

    /// The scrape job for the member's Prometheus ([`APP_JOB`] at [`Self::address`]).
    pub fn scrape_target(&self) -> ScrapeTarget {
        ScrapeTarget {
            job: APP_JOB.to_string(),
            address: self.address(),
        }
    }

    /// The error rate it serves with now; `None` while the application is not deployed.
    pub fn error_rate(&self) -> Option<f64> {
        lock(&self.shared).deployed
    }

    /// The requests served so far.
    pub fn counters(&self) -> Counters {
        lock(&self.shared).counters
    }
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

fn requests_per_tick(per_second: u32) -> u64 {
    (u64::from(per_second) * TICK.as_millis() as u64 / 1000).max(1)
}

async fn metrics(State(shared): State<Arc<Mutex<Shared>>>) -> String {
    // One read of both counters: a scrape never sees one ahead of the other.
    let counters = lock(&shared).counters;
    render(&counters)
}

/// The steady load: every tick, `per_tick` requests while deployed. Missed ticks are caught
/// up (tokio's default), so the rate holds on a loaded machine.
async fn grow(shared: Arc<Mutex<Shared>>, per_tick: u64) {
    let mut every = tokio::time::interval(TICK);
    loop {
        every.tick().await;
        let mut s = lock(&shared);
        if let Some(rate) = s.deployed {
            s.counters.serve(per_tick, rate);
        }
    }
}

/// Reads the ConfigMap every `poll` and applies its error rate.
async fn follow(
    shared: Arc<Mutex<Shared>>,
    configmaps: Api<ConfigMap>,
    name: String,
    poll: Duration,
    cluster: String,
) {
    let mut every = tokio::time::interval(poll);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let read = tokio::time::timeout(READ_TIMEOUT, configmaps.get_opt(&name)).await;
        let deployed = match read {
            Ok(Ok(Some(cm))) => {
                let value = cm.data.as_ref().and_then(|d| d.get(ERROR_RATE_KEY));
                Some(error_rate(value.map(String::as_str)).unwrap_or_else(|e| {
                    tracing::warn!(%cluster, configmap = %name, error = %e, "app exporter: counting as 0");
                    0.0
                }))
            }
            Ok(Ok(None)) => None,
            // The member's API server is unreachable: the app keeps what it has.
            Ok(Err(e)) => {
                tracing::debug!(%cluster, error = %e, "app exporter: reading the ConfigMap failed");
                continue;
            }
            Err(_) => continue,
        };
        let mut s = lock(&shared);
        if s.deployed != deployed {
            tracing::info!(%cluster, configmap = %name, error_rate = ?deployed,
                "app exporter follows the deployed ConfigMap");
            s.deployed = deployed;
        }
    }
}

/// Pure: the error rate a ConfigMap value says (a missing key: 0).
fn error_rate(value: Option<&str>) -> std::result::Result<f64, String> {
    let Some(text) = value else {
        return Ok(0.0);
    };
    match text.trim().parse::<f64>() {
        Ok(rate) if (0.0..=1.0).contains(&rate) => Ok(rate),
        _ => Err(format!(
            "{ERROR_RATE_KEY} {text:?} is not a number in [0, 1]"
        )),
    }
}

/// Pure: the Prometheus text exposition of `counters`.
fn render(counters: &Counters) -> String {
    format!(
        "# HELP {REQUESTS_METRIC} Requests served, by status code.\n\
         # TYPE {REQUESTS_METRIC} counter\n\
         {REQUESTS_METRIC}{{code=\"200\"}} {}\n\
         {REQUESTS_METRIC}{{code=\"500\"}} {}\n",
        counters.ok, counters.errors
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_share_is_exact_over_many_ticks() {
        let mut c = Counters::default();
        for _ in 0..100 {
            c.serve(10, 0.05);
        }
        assert_eq!((c.ok, c.errors), (950, 50));
        let mut c = Counters::default();
        c.serve(3, 0.5);
        c.serve(3, 0.5);
        assert_eq!((c.ok, c.errors), (3, 3), "the half request is carried over");
        c.serve(10, 0.0);
        assert_eq!((c.ok, c.errors), (13, 3));
        c.serve(10, 1.0);
        assert_eq!((c.ok, c.errors), (13, 13));
        c.serve(10, 7.0);
        assert_eq!((c.ok, c.errors), (13, 23), "clamped to every request");
    }

    #[test]
    fn configmap_values_give_the_error_rate() {
        assert_eq!(error_rate(None), Ok(0.0));
        assert_eq!(error_rate(Some("0.5")), Ok(0.5));
        assert_eq!(error_rate(Some(" 1 ")), Ok(1.0));
        assert!(error_rate(Some("half")).unwrap_err().contains("\"half\""));
        assert!(error_rate(Some("1.5")).is_err());
        assert!(error_rate(Some("-0.1")).is_err());
    }

    #[test]
    fn metrics_are_prometheus_text_with_both_codes() {
        let mut c = Counters::default();
        c.serve(4, 0.25);
        assert_eq!(
            render(&c),
            "# HELP http_requests_total Requests served, by status code.\n\
             # TYPE http_requests_total counter\n\
             http_requests_total{code=\"200\"} 3\n\
             http_requests_total{code=\"500\"} 1\n"
        );
        assert_eq!(requests_per_tick(100), 10);
        assert_eq!(requests_per_tick(1), 1, "at least one request a tick");
    }
}
