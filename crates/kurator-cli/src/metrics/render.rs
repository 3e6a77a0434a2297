//! Pure: an answer of Thanos Query, by cluster, as a table or as JSON (snapshot tested).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::api::{Answer, QueryData, RawSeries, Sample};

/// The label Thanos sidecars add to every series of a member (the Prometheus external label
/// the metric plugin sets to the cluster's name).
pub const CLUSTER_LABEL: &str = "cluster";

/// What `-o json` prints. Field names and order are stable; `value` is set for a vector
/// result, `values` for a matrix, `scalar` for a scalar or string result.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryResult {
    pub fleet: String,
    pub namespace: String,
    pub query: String,
    pub result_type: String,
    pub series: Vec<Series>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scalar: Option<Sample>,
    /// Clusters of the fleet with no series in a vector or matrix result, sorted.
    pub clusters_without_series: Vec<String>,
    pub warnings: Vec<String>,
}

/// One series: its `cluster` label (`None` when it has none), its other labels, its sample(s).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Series {
    pub cluster: Option<String>,
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Sample>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<Sample>,
}

/// The fleet's identity and clusters, and the query, as the result names them.
pub struct Context<'a> {
    pub fleet: &'a str,
    pub namespace: &'a str,
    pub query: &'a str,
    /// The clusters of the fleet (its `spec.clusters`).
    pub clusters: &'a [String],
}

/// Series sorted by cluster (series without one last), then by labels.
pub fn by_cluster(context: &Context<'_>, answer: Answer) -> QueryResult {
    let result_type = answer.data.result_type().to_string();
    let (raw, scalar) = match answer.data {
        QueryData::Vector(s) | QueryData::Matrix(s) => (Some(s), None),
        QueryData::Scalar(s) | QueryData::String(s) => (None, Some(s)),
    };
    let mut series: Vec<Series> = raw
        .iter()
        .flatten()
        .cloned()
        .map(
            |RawSeries {
                 mut metric,
                 value,
                 values,
             }| Series {
                cluster: metric.remove(CLUSTER_LABEL),
                labels: metric,
                value,
                values,
            },
        )
        .collect();
    series.sort_by(|a, b| {
        (a.cluster.is_none(), &a.cluster, &a.labels).cmp(&(
            b.cluster.is_none(),
            &b.cluster,
            &b.labels,
        ))
    });
    // A scalar has no series and so no clusters: naming every cluster as missing would mislead.
    let clusters_without_series = if raw.is_some() {
        let seen: BTreeSet<&str> = series.iter().filter_map(|s| s.cluster.as_deref()).collect();
        let missing: BTreeSet<&String> = context
            .clusters
            .iter()
            .filter(|c| !seen.contains(c.as_str()))
            .collect();
        missing.into_iter().cloned().collect()
    } else {
        Vec::new()
    };
    QueryResult {
        fleet: context.fleet.to_string(),
        namespace: context.namespace.to_string(),
        query: context.query.to_string(),
        result_type,
        series,
        scalar,
        clusters_without_series,
        warnings: answer.warnings,
    }
}

/// `-o json`: pretty, with a final newline.
pub fn json(result: &QueryResult) -> String {
    serde_json::to_string_pretty(result).expect("plain data serializes") + "\n"
}

/// `-o table`: CLUSTER, VALUE, LABELS (the other labels, PromQL style); then a line naming
/// the fleet's clusters without series. A matrix shows each series' latest sample and how many
/// there are; a scalar or string shows its value alone. Warnings go to stderr (the caller's).
pub fn table(result: &QueryResult) -> String {
    if let Some(scalar) = &result.scalar {
        return crate::tables::text_table(&["VALUE"], vec![vec![scalar.value.clone()]], "");
    }
    let mut out = if result.series.is_empty() {
        "no series\n".to_string()
    } else {
        let rows = result
            .series
            .iter()
            .map(|s| {
                vec![
                    s.cluster.clone().unwrap_or_else(|| "-".into()),
                    value_cell(s),
                    labels_cell(&s.labels),
                ]
            })
            .collect();
        crate::tables::text_table(&["CLUSTER", "VALUE", "LABELS"], rows, "")
    };
    if !result.clusters_without_series.is_empty() {
        out.push_str(&format!(
            "no series from {}\n",
            result.clusters_without_series.join(", ")
        ));
    }
    out
}

fn value_cell(series: &Series) -> String {
    if let Some(sample) = &series.value {
        return sample.value.clone();
    }
    match series.values.last() {
        Some(last) => format!("{} (latest of {})", last.value, series.values.len()),
        None => "-".into(),
    }
}

/// `{job="prometheus", instance="127.0.0.1:9090"}` (sorted), or `-` for none.
fn labels_cell(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "-".into();
    }
    let pairs: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}={}", serde_json::to_string(v).expect("a string")))
        .collect();
    format!("{{{}}}", pairs.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(labels: &[(&str, &str)], value: &str) -> RawSeries {
        RawSeries {
            metric: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value: Some(Sample {
                timestamp: 1764633600.0,
                value: value.into(),
            }),
            values: Vec::new(),
        }
    }

    fn context(clusters: &[String]) -> Context<'_> {
        Context {
            fleet: "quickstart",
            namespace: "default",
            query: "up",
            clusters,
        }
    }

    fn vector() -> Answer {
        Answer {
            data: QueryData::Vector(vec![
                series(&[("__name__", "up"), ("job", "node")], "0"),
                series(
                    &[
                        ("cluster", "member2"),
                        ("instance", "127.0.0.1:9090"),
                        ("job", "prometheus"),
                    ],
                    "1",
                ),
                series(&[("cluster", "member1"), ("instance", "a\"b")], "0.25"),
                series(
                    &[("cluster", "member1"), ("instance", "127.0.0.1:9090")],
                    "NaN",
                ),
            ]),
            warnings: vec!["partial response".into()],
        }
    }

    #[test]
    fn table_by_cluster_names_the_silent_ones() {
        let clusters = ["member3", "member1", "member2", "member4"].map(String::from);
        let result = by_cluster(&context(&clusters), vector());
        insta::assert_snapshot!(table(&result), @r#"
        CLUSTER  VALUE  LABELS
        member1  NaN    {instance="127.0.0.1:9090"}
        member1  0.25   {instance="a\"b"}
        member2  1      {instance="127.0.0.1:9090", job="prometheus"}
        -        0      {__name__="up", job="node"}
        no series from member3, member4
        "#);
    }

    #[test]
    fn empty_scalar_and_matrix_tables() {
        let clusters = ["m1".to_string()];
        let empty = Answer {
            data: QueryData::Vector(Vec::new()),
            warnings: Vec::new(),
        };
        insta::assert_snapshot!(table(&by_cluster(&context(&clusters), empty)), @r"
        no series
        no series from m1
        ");
        let scalar = Answer {
            data: QueryData::Scalar(Sample {
                timestamp: 1.0,
                value: "2".into(),
            }),
            warnings: Vec::new(),
        };
        let result = by_cluster(&context(&clusters), scalar);
        assert!(result.clusters_without_series.is_empty());
        insta::assert_snapshot!(table(&result), @r"
        VALUE
        2
        ");
        let mut ranged = series(&[("cluster", "m1")], "");
        ranged.value = None;
        ranged.values = vec![
            Sample {
                timestamp: 1.0,
                value: "1".into(),
            },
            Sample {
                timestamp: 2.0,
                value: "0".into(),
            },
        ];
        let matrix = Answer {
            data: QueryData::Matrix(vec![ranged]),
            warnings: Vec::new(),
        };
        insta::assert_snapshot!(table(&by_cluster(&context(&clusters), matrix)), @r"
        CLUSTER  VALUE            LABELS
        m1       0 (latest of 2)  -
        ");
    }

    #[test]
    fn json_is_stable() {
        let clusters = ["member1".to_string(), "member3".to_string()];
        let answer = Answer {
            data: QueryData::Vector(vec![
                series(&[("job", "node")], "0"),
                series(&[("cluster", "member1"), ("job", "prometheus")], "1"),
            ]),
            warnings: vec!["partial response".into()],
        };
        insta::assert_snapshot!(json(&by_cluster(&context(&clusters), answer)), @r#"
        {
          "fleet": "quickstart",
          "namespace": "default",
          "query": "up",
          "resultType": "vector",
          "series": [
            {
              "cluster": "member1",
              "labels": {
                "job": "prometheus"
              },
              "value": {
                "timestamp": 1764633600.0,
                "value": "1"
              }
            },
            {
              "cluster": null,
              "labels": {
                "job": "node"
              },
              "value": {
                "timestamp": 1764633600.0,
                "value": "0"
              }
            }
          ],
          "clustersWithoutSeries": [
            "member3"
          ],
          "warnings": [
            "partial response"
          ]
        }
        "#);
    }
}
