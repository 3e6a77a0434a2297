//! Pure: a metric gate's query per cluster and its verdict, the policy gate's verdict.
//!
//! Anything short of a clean measurement fails a metric gate with the reason (a query error,
//! no series, several series for one cluster, NaN): a gate that cannot see must not pass a
//! stage. The policy gate waits instead on stale or missing reports, since they say nothing
//! about the new revision yet.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kurator_api::rollout::{GateOutcome, GateResult, MetricGate};

/// The placeholder a metric query may carry for the cluster's name.
pub const CLUSTER_PLACEHOLDER: &str = "$cluster";
/// The label each member's series carry in Thanos Query (the metric plugin's external label).
pub const CLUSTER_LABEL: &str = "cluster";
/// Gate name of the policy check in status.
pub const POLICY_GATE: &str = "policy";
/// Gate name of the approval in status.
pub const APPROVAL_GATE: &str = "approval";

/// Whether the query runs once per cluster (it has the placeholder) or once per stage.
pub fn per_cluster(gate: &MetricGate) -> bool {
    gate.query.contains(CLUSTER_PLACEHOLDER)
}

/// The query for one cluster: the placeholder replaced by the name, escaped for a PromQL
/// string (names are DNS labels; escaping keeps that an assumption we do not rely on).
pub fn query_for(gate: &MetricGate, cluster: &str) -> String {
    let escaped = cluster.replace('\\', "\\\\").replace('"', "\\\"");
    gate.query.replace(CLUSTER_PLACEHOLDER, &escaped)
}

/// Splits a stage-wide query's series by their `cluster` label, for the given clusters. A
/// cluster without a series gets an empty list (the verdict says "no series").
pub fn split_by_cluster(
    series: &[(BTreeMap<String, String>, f64)],
    clusters: &[String],
) -> BTreeMap<String, Vec<f64>> {
    let mut by_cluster: BTreeMap<String, Vec<f64>> =
        clusters.iter().map(|c| (c.clone(), Vec::new())).collect();
    for (labels, value) in series {
        if let Some(values) = labels
            .get(CLUSTER_LABEL)
            .and_then(|c| by_cluster.get_mut(c))
        {
            values.push(*value);
        }
    }
    by_cluster
}

/// What a metric query returned for one cluster: the values of its series, or the error.
pub type MetricSample = Result<Vec<f64>, String>;

/// The verdict of a metric gate on one cluster, measured at `measured_at`.
pub fn evaluate_metric(
    gate: &MetricGate,
    cluster: &str,
    sample: &MetricSample,
    measured_at: Time,
) -> GateResult {
    let mut result = GateResult {
        gate: gate.name.clone(),
        cluster: Some(cluster.to_string()),
        outcome: GateOutcome::Failed,
        value: None,
        comparison: Some(gate.comparison),
        threshold: Some(gate.threshold),
        message: None,
        evaluated_at: Some(measured_at),
    };
    let message = match sample.as_deref() {
        Err(error) => format!("query failed: {error}"),
        Ok([]) => "the query returned no series for the cluster".to_string(),
        Ok([value]) if value.is_nan() => "the query returned NaN".to_string(),
        Ok([value]) => {
            let holds = gate.comparison.holds(*value, gate.threshold);
            result.value = Some(*value);
            if holds {
                result.outcome = GateOutcome::Passed;
                return result;
            }
            format!(
                "{} is not {} {}",
                value,
                gate.comparison.as_str(),
                gate.threshold
            )
        }
        Ok(many) => format!(
            "the query returned {} series for the cluster, expected one (aggregate by cluster)",
            many.len()
        ),
    };
    result.message = Some(message);
    result
}

/// One cluster's policy reports now: failed results, and whether the counts may be out of date.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyCounts {
    pub failed: i64,
    pub stale: bool,
}

/// The policy gate on one cluster: no more failed results than when it was pinned.
pub fn evaluate_policy(
    cluster: &str,
    at_start: Option<i64>,
    now: Option<PolicyCounts>,
    at: Time,
) -> GateResult {
    let mut result = GateResult {
        gate: POLICY_GATE.to_string(),
        cluster: Some(cluster.to_string()),
        outcome: GateOutcome::Pending,
        value: None,
        comparison: None,
        threshold: None,
        message: None,
        evaluated_at: None,
    };
    let message = match now {
        None => "no policy reports for the cluster yet (is the fleet's policy plugin on?)".into(),
        Some(counts) if counts.stale => "the cluster's policy reports are stale".to_string(),
        Some(counts) => {
            // A cluster pinned before any report existed started from zero failures.
            let new = counts.failed - at_start.unwrap_or(0);
            result.value = Some(new.max(0) as f64);
            result.threshold = Some(0.0);
            result.comparison = Some(kurator_api::rollout::Comparison::LessOrEqual);
            result.evaluated_at = Some(at);
            if new <= 0 {
                result.outcome = GateOutcome::Passed;
                return result;
            }
            result.outcome = GateOutcome::Failed;
            format!("{new} new failed policy results since the cluster was updated")
        }
    };
    result.message = Some(message);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use kurator_api::rollout::Comparison;

    fn gate(query: &str, comparison: Comparison, threshold: f64) -> MetricGate {
        MetricGate {
            name: "error-rate".into(),
            query: query.into(),
            comparison,
            threshold,
        }
    }

    fn at() -> Time {
        Time("2026-12-02T04:00:00Z".parse().expect("time"))
    }

    #[test]
    fn the_placeholder_selects_per_cluster_queries() {
        let g = gate(
            r#"sum(rate(errors{cluster="$cluster"}[1m]))"#,
            Comparison::Less,
            1.0,
        );
        assert!(per_cluster(&g));
        assert_eq!(
            query_for(&g, "m1"),
            r#"sum(rate(errors{cluster="m1"}[1m]))"#
        );
        assert_eq!(
            query_for(&g, r#"a"b"#),
            r#"sum(rate(errors{cluster="a\"b"}[1m]))"#
        );
        assert!(!per_cluster(&gate(
            "sum by (cluster) (x)",
            Comparison::Less,
            1.0
        )));
    }

    #[test]
    fn stage_wide_series_are_split_by_their_cluster_label() {
        let s = |c: &str, v: f64| ([(CLUSTER_LABEL.to_string(), c.to_string())].into(), v);
        let series = vec![
            s("m1", 0.1),
            s("m2", 0.2),
            s("m2", 0.3),
            s("elsewhere", 9.0),
            (BTreeMap::new(), 5.0),
        ];
        let split = split_by_cluster(&series, &["m1".into(), "m2".into(), "m3".into()]);
        assert_eq!(split["m1"], [0.1]);
        assert_eq!(split["m2"], [0.2, 0.3]);
        assert!(split["m3"].is_empty());
        assert_eq!(split.len(), 3);
    }

    #[test]
    fn metric_verdicts_with_value_threshold_and_reason() {
        let g = gate("q", Comparison::Less, 0.05);
        let passed = evaluate_metric(&g, "m1", &Ok(vec![0.01]), at());
        assert_eq!(passed.outcome, GateOutcome::Passed);
        assert_eq!((passed.value, passed.threshold), (Some(0.01), Some(0.05)));
        assert_eq!(passed.message, None);

        let cases: [(MetricSample, Option<f64>, &str); 5] = [
            (Ok(vec![0.12]), Some(0.12), "0.12 is not < 0.05"),
            (Ok(vec![0.05]), Some(0.05), "0.05 is not < 0.05"),
            (
                Ok(vec![]),
                None,
                "the query returned no series for the cluster",
            ),
            (Ok(vec![f64::NAN]), None, "the query returned NaN"),
            (
                Err("thanos: 503 Service Unavailable".into()),
                None,
                "query failed: thanos: 503 Service Unavailable",
            ),
        ];
        for (sample, value, message) in cases {
            let r = evaluate_metric(&g, "m1", &sample, at());
            assert_eq!(r.outcome, GateOutcome::Failed, "{message}");
            assert_eq!(r.value, value, "{message}");
            assert_eq!(r.message.as_deref(), Some(message));
            assert_eq!(r.cluster.as_deref(), Some("m1"));
        }
        let many = evaluate_metric(&g, "m1", &Ok(vec![0.0, 0.0]), at());
        assert_eq!(many.outcome, GateOutcome::Failed);
        assert!(many.message.unwrap().contains("2 series"));
        let ge = gate("q", Comparison::GreaterOrEqual, 0.99);
        assert_eq!(
            evaluate_metric(&ge, "m1", &Ok(vec![0.995]), at()).outcome,
            GateOutcome::Passed
        );
    }

    #[test]
    fn policy_gate_counts_new_failures_and_waits_on_stale_reports() {
        let fresh = |failed| {
            Some(PolicyCounts {
                failed,
                stale: false,
            })
        };
        let same = evaluate_policy("m1", Some(2), fresh(2), at());
        assert_eq!(same.outcome, GateOutcome::Passed);
        assert_eq!(same.value, Some(0.0));
        // Fewer failures (something was fixed) is not a failure.
        assert_eq!(
            evaluate_policy("m1", Some(2), fresh(1), at()).outcome,
            GateOutcome::Passed
        );
        let worse = evaluate_policy("m1", Some(2), fresh(5), at());
        assert_eq!(worse.outcome, GateOutcome::Failed);
        assert_eq!(worse.value, Some(3.0));
        assert_eq!(
            worse.message.as_deref(),
            Some("3 new failed policy results since the cluster was updated")
        );
        assert_eq!(
            evaluate_policy("m1", None, fresh(1), at()).outcome,
            GateOutcome::Failed
        );
        let stale = evaluate_policy(
            "m1",
            Some(0),
            Some(PolicyCounts {
                failed: 9,
                stale: true,
            }),
            at(),
        );
        assert_eq!(stale.outcome, GateOutcome::Pending);
        assert_eq!(stale.evaluated_at, None);
        assert_eq!(
            evaluate_policy("m1", Some(0), None, at()).outcome,
            GateOutcome::Pending
        );
    }
}
