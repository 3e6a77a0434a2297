//! Metric gates: the stage's PromQL checks through the fleet's Thanos Query, reached through
//! the host API server's service proxy (the Service the metric plugin's thanos release
//! creates, `<namespace>-thanos-query`, read with one GET: no LIST from a reconcile), or at
//! the URL the controller was given (`--thanos-url`).
//! Bounded: a few queries at once, each within [`QUERY_TIMEOUT`]. Anything short of an
//! answer (no Service, a proxy error, a PromQL error) is the sample's error, which fails the
//! gate with that reason (`rollout::gates`).

use std::{collections::BTreeMap, time::Duration};

use futures::{StreamExt, stream};
use k8s_openapi::{
    api::core::v1::Service, apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp,
};
use kube::{Api, Client};
use kurator_api::rollout::MetricGate;
use serde::Deserialize;

use crate::{
    plugins::render::{thanos_query_port, thanos_query_service},
    rollout::{
        gates::{MetricSample, per_cluster, query_for, split_by_cluster},
        observe::MetricObservation,
    },
};

/// Upper bound of one instant query (the proxy round trip included).
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Queries in flight at once for one stage.
const QUERY_CONCURRENCY: usize = 8;
/// Error texts kept in a gate's message.
const ERROR_CHARS: usize = 300;

/// Where the fleet's Thanos Query answers: the path prefix of its HTTP API on the host.
pub async fn thanos_query(client: &Client, namespace: &str) -> Result<String, String> {
    let name = thanos_query_service(namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let service = match tokio::time::timeout(QUERY_TIMEOUT, services.get_opt(&name)).await {
        Ok(Ok(Some(service))) => service,
        Ok(Ok(None)) => {
            return Err(format!(
                "Thanos Query Service {namespace}/{name} not found (is the fleet's metric plugin on?)"
            ));
        }
        Ok(Err(e)) => {
            return Err(shortened(&format!(
                "reading Service {namespace}/{name}: {e}"
            )));
        }
        Err(_) => return Err(format!("reading Service {namespace}/{name} timed out")),
    };
    let port = thanos_query_port(&service)
        .ok_or_else(|| format!("Thanos Query Service {namespace}/{name} has no ports"))?;
    Ok(format!(
        "/api/v1/namespaces/{namespace}/services/{name}:{port}/proxy"
    ))
}

/// A client and path prefix for Thanos Query at `url`, queried directly (kube's client as a
/// plain HTTP(S) client: it holds no credentials; the URL's path is kept as a prefix).
fn direct(url: &str) -> Result<(Client, String), String> {
    let uri = url
        .parse()
        .map_err(|_| format!("--thanos-url {url} is not a URL"))?;
    let mut config = kube::Config::new(uri);
    // A 503 is Thanos Query's own timeout: retrying would only run the query again.
    config.default_retry = false;
    let client = Client::try_from(config).map_err(|e| shortened(&format!("--thanos-url: {e}")))?;
    Ok((client, String::new()))
}

/// Measures every metric gate of a stage for `clusters`: with the `$cluster` placeholder once
/// per cluster, else once for the stage, split by the `cluster` label. Through `thanos_url`
/// when set, else through the fleet's Thanos Query Service in `namespace`.
pub async fn measure(
    client: &Client,
    thanos_url: Option<&str>,
    namespace: &str,
    gates: &[MetricGate],
    clusters: &[String],
) -> BTreeMap<(String, String), MetricObservation> {
    let endpoint = match thanos_url {
        Some(url) => direct(url),
        None => thanos_query(client, namespace)
            .await
            .map(|prefix| (client.clone(), prefix)),
    };
    // (gate, cluster or none for a stage-wide query, query)
    let mut queries: Vec<(String, Option<String>, String)> = Vec::new();
    for gate in gates {
        if per_cluster(gate) {
            for cluster in clusters {
                queries.push((
                    gate.name.clone(),
                    Some(cluster.clone()),
                    query_for(gate, cluster),
                ));
            }
        } else {
            queries.push((gate.name.clone(), None, gate.query.clone()));
        }
    }
    let answers: Vec<_> = stream::iter(queries)
        .map(|(gate, cluster, query)| {
            let endpoint = endpoint.clone();
            async move {
                let answer = match endpoint {
                    Ok((client, prefix)) => instant_query(&client, &prefix, &query).await,
                    Err(e) => Err(e),
                };
                (gate, cluster, answer)
            }
        })
        .buffer_unordered(QUERY_CONCURRENCY)
        .collect()
        .await;
    let measured_at = Time(Timestamp::now());
    let mut out = BTreeMap::new();
    for (gate, cluster, answer) in answers {
        let samples: Vec<(String, MetricSample)> = match (cluster, answer) {
            (Some(cluster), answer) => {
                vec![(
                    cluster,
                    answer.map(|s| s.into_iter().map(|(_, v)| v).collect()),
                )]
            }
            (None, Ok(series)) => split_by_cluster(&series, clusters)
                .into_iter()
                .map(|(c, values)| (c, Ok(values)))
                .collect(),
            (None, Err(e)) => clusters
                .iter()
                .map(|c| (c.clone(), Err(e.clone())))
                .collect(),
        };
        for (cluster, sample) in samples {
            out.insert(
                (gate.clone(), cluster),
                MetricObservation {
                    measured_at: measured_at.clone(),
                    sample,
                },
            );
        }
    }
    out
}

type Series = Vec<(BTreeMap<String, String>, f64)>;

async fn instant_query(client: &Client, prefix: &str, query: &str) -> Result<Series, String> {
    let uri = format!("{prefix}/api/v1/query?query={}", percent_encode(query));
    let request = http::Request::get(uri)
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(QUERY_TIMEOUT, client.request_text(request)).await {
        Ok(Ok(body)) => parse_answer(&body),
        Ok(Err(e)) => Err(shortened(&format!("Thanos Query: {e}"))),
        Err(_) => Err(format!(
            "Thanos Query did not answer within {}s",
            QUERY_TIMEOUT.as_secs()
        )),
    }
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    result_type: String,
    #[serde(default)]
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct RawSeries {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

/// The series of a Prometheus HTTP API instant query answer (a vector, or a scalar as one
/// series without labels).
pub fn parse_answer(body: &str) -> Result<Series, String> {
    let answer: Answer = serde_json::from_str(body)
        .map_err(|_| shortened(&format!("not a Prometheus API answer: {body}")))?;
    if answer.status != "success" {
        return Err(shortened(&format!(
            "query failed: {}",
            answer.error.unwrap_or_default()
        )));
    }
    let data = answer.data.ok_or("answer without data")?;
    let value = |text: &str| -> f64 { text.parse().unwrap_or(f64::NAN) };
    match data.result_type.as_str() {
        "vector" => {
            let series: Vec<RawSeries> =
                serde_json::from_value(data.result).map_err(|e| e.to_string())?;
            Ok(series
                .into_iter()
                .map(|s| (s.metric, value(&s.value.1)))
                .collect())
        }
        "scalar" => {
            let (_, v): (f64, String) =
                serde_json::from_value(data.result).map_err(|e| e.to_string())?;
            Ok(vec![(BTreeMap::new(), value(&v))])
        }
        other => Err(format!(
            "the query returned a {other}, not an instant vector or scalar"
        )),
    }
}

/// Query-string encoding: unreserved characters as they are, every other byte `%XX`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn shortened(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= ERROR_CHARS {
        return line;
    }
    let mut cut: String = line.chars().take(ERROR_CHARS).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_scalars_and_errors() {
        let vector = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"cluster":"m1"},"value":[1700000000.1,"0.25"]},
            {"metric":{"cluster":"m2"},"value":[1700000000.1,"NaN"]}]}}"#;
        let series = parse_answer(vector).expect("vector");
        assert_eq!(series.len(), 2);
        assert_eq!(series[0].0["cluster"], "m1");
        assert_eq!(series[0].1, 0.25);
        assert!(series[1].1.is_nan());

        let scalar = r#"{"status":"success","data":{"resultType":"scalar","result":[1.5,"+Inf"]}}"#;
        assert_eq!(parse_answer(scalar).expect("scalar")[0].1, f64::INFINITY);

        let error = r#"{"status":"error","errorType":"bad_data","error":"parse error at char 3"}"#;
        assert_eq!(
            parse_answer(error),
            Err("query failed: parse error at char 3".to_string())
        );
        let matrix = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert!(parse_answer(matrix).unwrap_err().contains("matrix"));
        assert!(parse_answer("<html>bad gateway</html>").is_err());
    }

    #[test]
    fn queries_are_encoded_for_the_query_string() {
        assert_eq!(
            percent_encode(r#"sum(up{cluster="m1"}) < 0.5"#),
            "sum%28up%7Bcluster%3D%22m1%22%7D%29%20%3C%200.5"
        );
    }
}
