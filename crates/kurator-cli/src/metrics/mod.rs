//! `kurator metrics query PROMQL --fleet NAME`: an instant query through the fleet's Thanos
//! Query, printed by cluster (docs/metrics.md).
//!
//! - `discover.rs` finds Thanos Query: `--thanos-url` / `KURATOR_THANOS_URL`, else the thanos
//!   release's query Service on the host, through the API server's service proxy;
//! - `api.rs` builds the Prometheus HTTP API request and parses its answer (pure);
//! - `render.rs` puts the answer by cluster, names the fleet's clusters without series, and
//!   renders a table or JSON (pure).

pub mod api;
pub mod discover;
pub mod render;

use std::{path::PathBuf, time::Duration};

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, Subcommand, ValueEnum};
use kube::{Api, Client};
use kurator_api::Fleet;

use self::{
    api::{Answer, Refusal},
    discover::Endpoint,
};

#[derive(Subcommand, Debug)]
pub enum MetricsCommand {
    /// Instant PromQL query through the fleet's Thanos Query, by cluster.
    #[command(
        long_about = "Instant PromQL query (Prometheus HTTP API /api/v1/query) through the \
fleet's Thanos Query, printed by cluster: CLUSTER (the series' `cluster` label, `-` without \
one), VALUE, LABELS. Clusters of the fleet with no series are named after the table. Thanos \
Query is found on the host through the API server's service proxy (the metric plugin's thanos \
release, in the fleet's namespace), unless --thanos-url or KURATOR_THANOS_URL names it."
    )]
    Query(QueryArgs),
}

#[derive(Args, Debug)]
pub struct QueryArgs {
    /// The PromQL expression, e.g. 'count by (cluster) (up)'.
    pub promql: String,
    /// The fleet whose clusters the result is read by.
    #[arg(long)]
    pub fleet: String,
    /// The fleet's namespace (default: the kubeconfig context's).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// Thanos Query's (or any Prometheus HTTP API's) URL, instead of finding it on the host.
    #[arg(long, env = discover::THANOS_URL_ENV)]
    pub thanos_url: Option<String>,
    /// How long the query may take, lookup included.
    #[arg(long, default_value = "30s", value_parser = crate::controller_cmd::parse_duration)]
    pub timeout: Duration,
    /// The host cluster's kubeconfig.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

pub async fn run(command: MetricsCommand) -> anyhow::Result<()> {
    match command {
        MetricsCommand::Query(args) => {
            let timeout = args.timeout;
            tokio::time::timeout(timeout, query(args))
                .await
                .map_err(|_| anyhow!("no answer within {timeout:?} (--timeout)"))?
        }
    }
}

async fn query(args: QueryArgs) -> anyhow::Result<()> {
    let host_config = crate::config(args.kubeconfig.as_ref())
        .await
        .context("host cluster")?;
    let result = fleet_query(
        host_config,
        args.namespace.as_deref(),
        &args.fleet,
        &args.promql,
        args.thanos_url.as_deref(),
    )
    .await?;
    match args.output {
        Format::Json => print!("{}", render::json(&result)),
        Format::Table => {
            for warning in &result.warnings {
                eprintln!("warning: {warning}");
            }
            print!("{}", render::table(&result));
        }
    }
    Ok(())
}

/// The instant query `promql` through the Thanos Query of fleet `name` (in `namespace`, else
/// the kubeconfig context's), or at `thanos_url`, by the fleet's clusters.
pub async fn fleet_query(
    host_config: kube::Config,
    namespace: Option<&str>,
    name: &str,
    promql: &str,
    thanos_url: Option<&str>,
) -> anyhow::Result<render::QueryResult> {
    let url = thanos_url.map(discover::checked_url).transpose()?;
    let ns = namespace
        .map(str::to_string)
        .unwrap_or_else(|| host_config.default_namespace.clone());
    let host = Client::try_from(host_config.clone()).context("host cluster")?;
    let fleet = Api::<Fleet>::namespaced(host.clone(), &ns)
        .get_opt(name)
        .await
        .with_context(|| format!("reading fleet {ns}/{name}"))?
        .ok_or_else(|| anyhow!("fleet {ns}/{name} not found"))?;
    let endpoint = match url {
        Some(url) => Endpoint::Url(url),
        None => {
            if fleet
                .spec
                .plugin
                .as_ref()
                .and_then(|p| p.metric.as_ref())
                .is_none()
            {
                bail!(
                    "fleet {ns}/{name} has no metric plugin (spec.plugin.metric), so no Thanos Query serves its metrics; enable it, or pass --thanos-url"
                );
            }
            discover::thanos_query(&host, &ns).await?
        }
    };
    let answer = send(host_config, &endpoint, promql).await?;
    let clusters: Vec<String> = fleet.spec.clusters.iter().map(|c| c.name.clone()).collect();
    Ok(render::by_cluster(
        &render::Context {
            fleet: name,
            namespace: &ns,
            query: promql,
            clusters: &clusters,
        },
        answer,
    ))
}

/// Sends the instant query to `endpoint` (a service proxy path on the host's API server, or a
/// URL) and parses the answer, with a message that says which side failed.
async fn send(host: kube::Config, endpoint: &Endpoint, promql: &str) -> anyhow::Result<Answer> {
    let (config, path) = match endpoint {
        // kube's client doubles as a plain HTTP(S) client here (same TLS stack, no
        // credentials: the config holds none); the URL's path is kept as a prefix.
        Endpoint::Url(url) => (
            kube::Config::new(url.parse().context("--thanos-url")?),
            api::query_path(promql),
        ),
        Endpoint::ServiceProxy {
            namespace,
            service,
            port,
        } => (
            host,
            Endpoint::proxy_prefix(namespace, service, port) + &api::query_path(promql),
        ),
    };
    // kube retries 503 answers up to 15 times with backoff; here a 503 is Prometheus' query
    // timeout or the service proxy's "no endpoints": retrying would only hide it (or run a
    // heavy query again).
    let mut config = config;
    config.default_retry = false;
    let client = Client::try_from(config)?;
    let request = http::Request::get(path)
        .header(http::header::ACCEPT, "application/json")
        .body(kube::client::Body::from(Vec::new()))?;
    let not_reachable = || format!("Thanos Query not reachable ({})", endpoint.describe());
    let response = client.send(request).await.with_context(not_reachable)?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect_bytes()
        .await
        .with_context(not_reachable)?;
    api::parse_answer(status, &body).map_err(|refusal| match refusal {
        Refusal::Query { error_type, error } => {
            anyhow!("Thanos Query refused the query ({error_type}): {error}")
        }
        Refusal::NotPrometheus { status, message } => match endpoint {
            Endpoint::ServiceProxy { .. } => anyhow!(
                "{}: the API server answered HTTP {status}: {message}",
                not_reachable()
            ),
            Endpoint::Url(url) => {
                anyhow!("{url} did not answer as a Prometheus HTTP API (HTTP {status}): {message}")
            }
        },
    })
}
