//! The Prometheus HTTP API's instant query (`GET /api/v1/query`), which Thanos Query serves:
//! the request and the answer, parsed. Pure: sending is the caller's (`query.rs`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The path of an instant query for `promql`, relative to the API's root.
pub fn query_path(promql: &str) -> String {
    let params = form_urlencoded::Serializer::new(String::new())
        .append_pair("query", promql)
        .finish();
    format!("/api/v1/query?{params}")
}

/// One sample: the evaluation time (Unix seconds) and the value as the server spelled it
/// (`"1"`, `"0.25"`, `"NaN"`, `"+Inf"`): printed verbatim, never rounded.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(from = "(f64, String)")]
pub struct Sample {
    pub timestamp: f64,
    pub value: String,
}

impl From<(f64, String)> for Sample {
    fn from((timestamp, value): (f64, String)) -> Sample {
        Sample { timestamp, value }
    }
}

/// One series of a vector (`value`) or matrix (`values`) result.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct RawSeries {
    #[serde(default)]
    pub metric: BTreeMap<String, String>,
    #[serde(default)]
    pub value: Option<Sample>,
    #[serde(default)]
    pub values: Vec<Sample>,
}

/// The `data` of a successful answer.
#[derive(Clone, Debug, PartialEq)]
pub enum QueryData {
    Vector(Vec<RawSeries>),
    Matrix(Vec<RawSeries>),
    Scalar(Sample),
    String(Sample),
}

impl QueryData {
    pub fn result_type(&self) -> &'static str {
        match self {
            QueryData::Vector(_) => "vector",
            QueryData::Matrix(_) => "matrix",
            QueryData::Scalar(_) => "scalar",
            QueryData::String(_) => "string",
        }
    }
}

/// A successful answer: its data and the server's warnings (Thanos Query warns, for example,
/// when a store it fans out to did not answer and the result is partial).
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    pub data: QueryData,
    pub warnings: Vec<String>,
}

/// Why an answer is not a result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The API's own error (`"status": "error"`): a PromQL parse or execution error, a timeout.
    Query { error_type: String, error: String },
    /// Not a Prometheus API answer: a proxy's or an API server's, or nothing parseable. The
    /// text is that answer's message (an API server `Status`'s `message`), shortened.
    NotPrometheus { status: u16, message: String },
}

#[derive(Deserialize)]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    warnings: Vec<String>,
}

#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum Data {
    Vector(Vec<RawSeries>),
    Matrix(Vec<RawSeries>),
    Scalar(Sample),
    String(Sample),
}

/// Longest message kept from an answer that is not the API's (an HTML error page, say).
const MESSAGE_LIMIT: usize = 300;

/// Parses an answer with HTTP status `status` and body `body`.
pub fn parse_answer(status: u16, body: &[u8]) -> Result<Answer, Refusal> {
    if let Ok(envelope) = serde_json::from_slice::<Envelope>(body) {
        match (envelope.status.as_str(), envelope.data) {
            ("success", Some(data)) if (200..300).contains(&status) => {
                let data = match data {
                    Data::Vector(s) => QueryData::Vector(s),
                    Data::Matrix(s) => QueryData::Matrix(s),
                    Data::Scalar(s) => QueryData::Scalar(s),
                    Data::String(s) => QueryData::String(s),
                };
                return Ok(Answer {
                    data,
                    warnings: envelope.warnings,
                });
            }
            ("error", _) => {
                return Err(Refusal::Query {
                    error_type: envelope.error_type.unwrap_or_else(|| "error".into()),
                    error: envelope.error.unwrap_or_default(),
                });
            }
            _ => {}
        }
    }
    Err(Refusal::NotPrometheus {
        status,
        message: foreign_message(body),
    })
}

/// The message of an answer that is not the API's: a Kubernetes `Status`'s `message` (the API
/// server's service proxy answers with one), else the body's text, on one line and shortened.
fn foreign_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Status {
        kind: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(status) = serde_json::from_slice::<Status>(body)
        && status.kind == "Status"
    {
        return status.message;
    }
    let text = String::from_utf8_lossy(body);
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > MESSAGE_LIMIT {
        let short: String = one_line.chars().take(MESSAGE_LIMIT).collect();
        format!("{short}…")
    } else if one_line.is_empty() {
        "(empty answer)".into()
    } else {
        one_line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_path_encodes_promql() {
        assert_eq!(
            query_path(r#"count by (cluster) (up{job="a b"})"#),
            "/api/v1/query?query=count+by+%28cluster%29+%28up%7Bjob%3D%22a+b%22%7D%29"
        );
    }

    #[test]
    fn vector_answer() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"cluster":"member1","job":"prometheus"},"value":[1764633600.5,"1"]}]},
            "warnings":["store 10.0.0.1:10901 unreachable"]}"#;
        let answer = parse_answer(200, body).unwrap();
        assert_eq!(answer.warnings, ["store 10.0.0.1:10901 unreachable"]);
        let QueryData::Vector(series) = answer.data else {
            panic!("a vector")
        };
        assert_eq!(series[0].metric["cluster"], "member1");
        assert_eq!(
            series[0].value,
            Some(Sample {
                timestamp: 1764633600.5,
                value: "1".into()
            })
        );
    }

    #[test]
    fn scalar_and_matrix_answers() {
        let scalar = br#"{"status":"success","data":{"resultType":"scalar","result":[1.5,"2"]}}"#;
        assert_eq!(
            parse_answer(200, scalar).unwrap().data,
            QueryData::Scalar(Sample {
                timestamp: 1.5,
                value: "2".into()
            })
        );
        let matrix = br#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{},"values":[[1,"1"],[2,"0"]]}]}}"#;
        let QueryData::Matrix(series) = parse_answer(200, matrix).unwrap().data else {
            panic!("a matrix")
        };
        assert_eq!(series[0].values.len(), 2);
    }

    #[test]
    fn promql_error() {
        let body = br#"{"status":"error","errorType":"bad_data","error":"1:5: parse error: unexpected end of input"}"#;
        assert_eq!(
            parse_answer(400, body),
            Err(Refusal::Query {
                error_type: "bad_data".into(),
                error: "1:5: parse error: unexpected end of input".into()
            })
        );
    }

    #[test]
    fn api_server_status_and_other_answers() {
        let status = br#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"no endpoints available for service \"t-thanos-query\"","reason":"ServiceUnavailable","code":503}"#;
        assert_eq!(
            parse_answer(503, status),
            Err(Refusal::NotPrometheus {
                status: 503,
                message: r#"no endpoints available for service "t-thanos-query""#.into()
            })
        );
        let html = format!("<html>\n<body>{}</body></html>", "x".repeat(400));
        let Err(Refusal::NotPrometheus { status, message }) = parse_answer(502, html.as_bytes())
        else {
            panic!("refused")
        };
        assert_eq!(status, 502);
        assert!(message.starts_with("<html> <body>xxx"), "{message}");
        assert!(message.ends_with('…') && message.chars().count() == 301);
        assert_eq!(
            parse_answer(200, b""),
            Err(Refusal::NotPrometheus {
                status: 200,
                message: "(empty answer)".into()
            })
        );
    }
}
