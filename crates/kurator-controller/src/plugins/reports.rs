//! Fleet-wide policy reports, the pure part: each member's PolicyReports and
//! ClusterPolicyReports reduced to counts ([`ReportCounts`]), summed per member
//! ([`ClusterReports`], kept up to date by [`super::collector`]) and aggregated into the
//! Fleet's `status.policyReport` ([`aggregate`]).
//!
//! Reports are reduced as soon as they arrive: a member keeps, per report, its five counts and
//! its failures per policy (usually none), never the results themselves, so thousands of
//! reports in a thousand members cost little memory.
//!
//! The output depends only on the input (no clock): an unchanged input gives an unchanged
//! status, and every list is in a fixed order.

use std::collections::BTreeMap;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kurator_api::policy_report::{
    ClusterPolicyReport, ClusterReportStatus, FailingPolicy, FleetPolicyReport, MAX_CLUSTERS,
    MAX_FAILING_CLUSTER_NAMES, MAX_MESSAGE_LEN, MAX_TOP_FAILING, PolicyReport, PolicyReportResult,
    PolicyReportSummary, PolicyResult, PolicyResultCounts, truncate_message,
};

/// Results of each kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub pass: u64,
    pub fail: u64,
    pub warn: u64,
    pub error: u64,
    pub skip: u64,
}

impl Counts {
    /// Counts one result; a result outside the five kinds counts nowhere.
    pub fn record(&mut self, result: &PolicyResult) {
        match result {
            PolicyResult::Pass => self.pass += 1,
            PolicyResult::Fail => self.fail += 1,
            PolicyResult::Warn => self.warn += 1,
            PolicyResult::Error => self.error += 1,
            PolicyResult::Skip => self.skip += 1,
            PolicyResult::Other(_) => {}
        }
    }

    pub fn add(&mut self, other: &Counts) {
        self.pass = self.pass.saturating_add(other.pass);
        self.fail = self.fail.saturating_add(other.fail);
        self.warn = self.warn.saturating_add(other.warn);
        self.error = self.error.saturating_add(other.error);
        self.skip = self.skip.saturating_add(other.skip);
    }

    pub fn sub(&mut self, other: &Counts) {
        self.pass = self.pass.saturating_sub(other.pass);
        self.fail = self.fail.saturating_sub(other.fail);
        self.warn = self.warn.saturating_sub(other.warn);
        self.error = self.error.saturating_sub(other.error);
        self.skip = self.skip.saturating_sub(other.skip);
    }

    /// A writer's `summary` (negative counts read as zero).
    pub fn from_summary(summary: &PolicyReportSummary) -> Counts {
        let n = |v: i64| u64::try_from(v).unwrap_or(0);
        Counts {
            pass: n(summary.pass),
            fail: n(summary.fail),
            warn: n(summary.warn),
            error: n(summary.error),
            skip: n(summary.skip),
        }
    }

    pub fn is_zero(&self) -> bool {
        *self == Counts::default()
    }

    pub fn to_api(self) -> PolicyResultCounts {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        PolicyResultCounts {
            pass: n(self.pass),
            fail: n(self.fail),
            warn: n(self.warn),
            error: n(self.error),
            skip: n(self.skip),
        }
    }
}

/// One report (or a sum of reports) reduced to what the fleet aggregate needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReportCounts {
    pub counts: Counts,
    /// Failing results per policy; policies without failures are left out.
    pub failing: BTreeMap<String, u64>,
}

impl ReportCounts {
    /// Counts `results`, which are authoritative (a writer's `summary` may lag them). Only a
    /// report without any result falls back on its `summary`, which names no policy.
    pub fn of(summary: Option<&PolicyReportSummary>, results: &[PolicyReportResult]) -> Self {
        let mut out = ReportCounts::default();
        if results.is_empty() {
            if let Some(summary) = summary {
                out.counts = Counts::from_summary(summary);
            }
            return out;
        }
        for r in results {
            let Some(result) = &r.result else { continue };
            out.counts.record(result);
            if *result == PolicyResult::Fail {
                *out.failing.entry(r.policy.clone()).or_default() += 1;
            }
        }
        out
    }

    pub fn of_policy_report(report: &PolicyReport) -> Self {
        Self::of(report.summary.as_ref(), &report.results)
    }

    pub fn of_cluster_policy_report(report: &ClusterPolicyReport) -> Self {
        Self::of(report.summary.as_ref(), &report.results)
    }

    pub fn add(&mut self, other: &ReportCounts) {
        self.counts.add(&other.counts);
        for (policy, fail) in &other.failing {
            let entry = self.failing.entry(policy.clone()).or_default();
            *entry = entry.saturating_add(*fail);
        }
    }

    /// Removes what `add(other)` added (sums stay exact: counts are integers).
    pub fn sub(&mut self, other: &ReportCounts) {
        self.counts.sub(&other.counts);
        for (policy, fail) in &other.failing {
            if let Some(entry) = self.failing.get_mut(policy) {
                *entry = entry.saturating_sub(*fail);
                if *entry == 0 {
                    self.failing.remove(policy);
                }
            }
        }
    }

    pub fn sum<'a>(reports: impl IntoIterator<Item = &'a ReportCounts>) -> ReportCounts {
        let mut total = ReportCounts::default();
        for r in reports {
            total.add(r);
        }
        total
    }
}

/// One member's reports as last known, and whether they are current.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterReports {
    /// The member's PolicyReports and ClusterPolicyReports, summed.
    pub counts: ReportCounts,
    /// How many reports `counts` sums.
    pub reports: usize,
    /// When the member's reports were last received (a listing or a change); `None` before the
    /// first successful listing.
    pub last_seen: Option<Timestamp>,
    /// Set while `counts` may be out of date (the last known), after they had been read once:
    /// since when, on the controller's clock.
    pub stale_since: Option<Timestamp>,
    /// Why, set with `stale_since`.
    pub stale_cause: Option<StaleCause>,
    /// Why the reports are stale or missing (e.g. the member is unreachable, or the
    /// wgpolicyk8s.io CRDs are not installed there yet). Never credentials.
    pub error: Option<String>,
}

/// Why a member's counts are stale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StaleCause {
    /// The member's API cannot be read.
    Unreachable,
    /// The member answers, but Kyverno's reports controller there has stopped renewing its
    /// leader Lease: nothing updates the reports. `error` says since when.
    ReportsControllerDown,
}

/// The Fleet's `status.policyReport` for these members (keyed by cluster name).
///
/// Totals and top failing policies include stale members' last known counts. `clusters` has
/// one entry per member by name (the first [`MAX_CLUSTERS`] when there are more); top failing
/// policies are ordered by failures (descending) then name, at most [`MAX_TOP_FAILING`], each
/// naming at most [`MAX_FAILING_CLUSTER_NAMES`] members (most failures first, then by name).
/// Timestamps are cut to whole seconds, as the API stores them.
pub fn aggregate(clusters: &BTreeMap<String, ClusterReports>) -> FleetPolicyReport {
    /// A policy's fleet-wide failures and failures per member.
    type Failures<'a> = (u64, Vec<(&'a str, u64)>);
    let mut totals = Counts::default();
    let mut failing: BTreeMap<&str, Failures> = BTreeMap::new();
    let mut entries = Vec::with_capacity(clusters.len().min(MAX_CLUSTERS));
    for (name, member) in clusters {
        totals.add(&member.counts.counts);
        for (policy, fail) in &member.counts.failing {
            let entry = failing.entry(policy.as_str()).or_default();
            entry.0 = entry.0.saturating_add(*fail);
            entry.1.push((name.as_str(), *fail));
        }
        if entries.len() < MAX_CLUSTERS {
            entries.push(cluster_status(name, member));
        }
    }
    let mut top: Vec<(&str, Failures)> = failing.into_iter().filter(|(_, (n, _))| *n > 0).collect();
    top.sort_by(|a, b| b.1.0.cmp(&a.1.0).then_with(|| a.0.cmp(b.0)));
    top.truncate(MAX_TOP_FAILING);
    let top_failing = top
        .into_iter()
        .map(|(policy, (fail, mut members))| {
            members.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
            FailingPolicy {
                policy: policy.to_string(),
                fail: i64::try_from(fail).unwrap_or(i64::MAX),
                cluster_count: i64::try_from(members.len()).unwrap_or(i64::MAX),
                clusters: members
                    .iter()
                    .take(MAX_FAILING_CLUSTER_NAMES)
                    .map(|(name, _)| name.to_string())
                    .collect(),
            }
        })
        .collect();
    FleetPolicyReport {
        totals: totals.to_api(),
        clusters: entries,
        top_failing,
    }
}

fn cluster_status(name: &str, member: &ClusterReports) -> ClusterReportStatus {
    let unreachable = member.stale_cause != Some(StaleCause::ReportsControllerDown);
    let message = match (member.stale_since, &member.error) {
        (Some(since), Some(error)) if unreachable => {
            Some(format!("unreachable since {}: {error}", rfc3339(since)))
        }
        (Some(since), None) if unreachable => Some(format!("unreachable since {}", rfc3339(since))),
        (Some(since), None) => Some(format!(
            "Kyverno's reports controller not running since {}",
            rfc3339(since)
        )),
        (_, Some(error)) => Some(error.clone()),
        (None, None) => None,
    };
    let mut status = ClusterReportStatus {
        name: name.to_string(),
        last_seen: member.last_seen.map(whole_seconds),
        stale: member.stale_since.is_some(),
        stale_since: member.stale_since.map(whole_seconds),
        message: message.map(|m| truncate_message(&m, MAX_MESSAGE_LEN)),
        ..Default::default()
    };
    status.set_counts(member.counts.counts.to_api());
    status
}

fn whole_seconds(t: Timestamp) -> Time {
    Time(Timestamp::from_second(t.as_second()).unwrap_or(t))
}

/// `2024-01-11T02:40:40Z`, as the API writes times.
pub fn rfc3339(t: Timestamp) -> String {
    k8s_openapi::jiff::fmt::strtime::format("%Y-%m-%dT%H:%M:%SZ", t)
        .unwrap_or_else(|_| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    fn result(policy: &str, result: &str) -> PolicyReportResult {
        PolicyReportResult {
            policy: policy.into(),
            result: Some(PolicyResult::parse(result)),
            ..Default::default()
        }
    }

    fn member(reports: &[ReportCounts], last_seen: i64) -> ClusterReports {
        ClusterReports {
            counts: ReportCounts::sum(reports),
            reports: reports.len(),
            last_seen: Some(at(last_seen)),
            ..Default::default()
        }
    }

    fn failing(policy: &str, n: usize) -> ReportCounts {
        ReportCounts::of(None, &vec![result(policy, "fail"); n])
    }

    #[test]
    fn counts_come_from_results_not_the_summary() {
        // The summary lags: it still says 5 failures where results show one.
        let summary = PolicyReportSummary {
            pass: 0,
            fail: 5,
            ..Default::default()
        };
        let results = [
            result("a", "pass"),
            result("a", "fail"),
            result("b", "warn"),
            result("b", "error"),
            result("c", "skip"),
            result("c", "Skip"),
            result("d", "quarantined"),
            PolicyReportResult::default(),
        ];
        let r = ReportCounts::of(Some(&summary), &results);
        assert_eq!(
            r.counts,
            Counts {
                pass: 1,
                fail: 1,
                warn: 1,
                error: 1,
                skip: 2
            }
        );
        assert_eq!(r.failing, BTreeMap::from([("a".to_string(), 1)]));
    }

    #[test]
    fn the_summary_counts_when_there_are_no_results() {
        let summary = PolicyReportSummary {
            pass: 7,
            fail: 2,
            warn: -1,
            ..Default::default()
        };
        let r = ReportCounts::of(Some(&summary), &[]);
        assert_eq!(
            r.counts,
            Counts {
                pass: 7,
                fail: 2,
                ..Default::default()
            }
        );
        assert!(r.failing.is_empty(), "a summary names no policy");
        assert_eq!(ReportCounts::of(None, &[]), ReportCounts::default());
    }

    #[test]
    fn sums_add_and_subtract_exactly() {
        let a = ReportCounts::of(None, &[result("p", "fail"), result("q", "pass")]);
        let b = ReportCounts::of(None, &[result("p", "fail"), result("r", "fail")]);
        let mut sum = ReportCounts::sum([&a, &b]);
        assert_eq!(sum.counts.fail, 3);
        assert_eq!(sum.failing["p"], 2);
        sum.sub(&b);
        assert_eq!(sum, a);
        sum.sub(&a);
        assert_eq!(sum, ReportCounts::default(), "no zero entries left behind");
    }

    #[test]
    fn aggregates_members_and_marks_stale_ones() {
        let healthy = member(
            &[
                ReportCounts::of(
                    None,
                    &[result("require-labels", "fail"), result("no-priv", "pass")],
                ),
                ReportCounts::of(None, &[result("no-priv", "pass")]),
            ],
            100,
        );
        let mut stale = member(&[failing("require-labels", 2)], 50);
        stale.stale_since = Some(Timestamp::new(60, 999_000_000).unwrap());
        stale.error = Some("connection refused".into());
        let never = ClusterReports {
            error: Some("the wgpolicyk8s.io CRDs are not installed".into()),
            ..Default::default()
        };
        let mut kyverno_down = member(&[failing("require-labels", 1)], 40);
        kyverno_down.stale_since = Some(at(45));
        kyverno_down.stale_cause = Some(StaleCause::ReportsControllerDown);
        kyverno_down.error = Some(
            "Kyverno's reports controller has not renewed its Lease \
             kyverno/kyverno-reports-controller since 1970-01-01T00:00:44Z"
                .into(),
        );
        let clusters = BTreeMap::from([
            ("m1".to_string(), healthy),
            ("m2".to_string(), stale),
            ("m3".to_string(), never),
            ("m4".to_string(), kyverno_down),
        ]);
        let report = aggregate(&clusters);
        insta::assert_yaml_snapshot!(report, @r#"
        totals:
          pass: 2
          fail: 4
          warn: 0
          error: 0
          skip: 0
        clusters:
          - name: m1
            pass: 2
            fail: 1
            warn: 0
            error: 0
            skip: 0
            lastSeen: "1970-01-01T00:01:40Z"
            stale: false
          - name: m2
            pass: 0
            fail: 2
            warn: 0
            error: 0
            skip: 0
            lastSeen: "1970-01-01T00:00:50Z"
            stale: true
            staleSince: "1970-01-01T00:01:00Z"
            message: "unreachable since 1970-01-01T00:01:00Z: connection refused"
          - name: m3
            pass: 0
            fail: 0
            warn: 0
            error: 0
            skip: 0
            stale: false
            message: the wgpolicyk8s.io CRDs are not installed
          - name: m4
            pass: 0
            fail: 1
            warn: 0
            error: 0
            skip: 0
            lastSeen: "1970-01-01T00:00:40Z"
            stale: true
            staleSince: "1970-01-01T00:00:45Z"
            message: "Kyverno's reports controller has not renewed its Lease kyverno/kyverno-reports-controller since 1970-01-01T00:00:44Z"
        topFailing:
          - policy: require-labels
            fail: 4
            clusterCount: 3
            clusters:
              - m2
              - m1
              - m4
        "#);
        // Deterministic: the same input gives the same output.
        assert_eq!(aggregate(&clusters), report);
        assert_eq!(aggregate(&BTreeMap::new()), FleetPolicyReport::default());
    }

    #[test]
    fn top_failing_is_ordered_and_bounded() {
        // 15 policies p00..p14, policy pNN failing NN times (p00: never) in each of 12 members;
        // q fails as often as p14 and sorts after it by name.
        let clusters: BTreeMap<String, ClusterReports> = (0..12)
            .map(|m| {
                let mut reports: Vec<ReportCounts> =
                    (0..15).map(|p| failing(&format!("p{p:02}"), p)).collect();
                reports.push(failing("q", 14));
                (format!("m{m:02}"), member(&reports, 0))
            })
            .collect();
        let report = aggregate(&clusters);
        let top: Vec<(&str, i64)> = report
            .top_failing
            .iter()
            .map(|p| (p.policy.as_str(), p.fail))
            .collect();
        assert_eq!(
            top,
            vec![
                ("p14", 168),
                ("q", 168),
                ("p13", 156),
                ("p12", 144),
                ("p11", 132),
                ("p10", 120),
                ("p09", 108),
                ("p08", 96),
                ("p07", 84),
                ("p06", 72),
            ]
        );
        for p in &report.top_failing {
            assert_eq!(p.cluster_count, 12);
            assert_eq!(p.clusters.len(), MAX_FAILING_CLUSTER_NAMES);
            assert_eq!(p.clusters[0], "m00", "ties between members go by name");
        }
        assert_eq!(report.totals.fail, 12 * ((0..15).sum::<i64>() + 14));
    }

    #[test]
    fn member_names_go_most_failing_first() {
        let clusters = BTreeMap::from([
            ("a".to_string(), member(&[failing("p", 1)], 0)),
            ("b".to_string(), member(&[failing("p", 3)], 0)),
            ("c".to_string(), member(&[failing("p", 3)], 0)),
            ("d".to_string(), member(&[ReportCounts::default()], 0)),
        ]);
        let report = aggregate(&clusters);
        assert_eq!(report.top_failing[0].clusters, ["b", "c", "a"]);
        assert_eq!(report.top_failing[0].cluster_count, 3);
    }

    #[test]
    fn cluster_entries_and_messages_are_bounded() {
        let mut clusters: BTreeMap<String, ClusterReports> = (0..MAX_CLUSTERS + 5)
            .map(|i| (format!("m{i:05}"), member(&[failing("p", 1)], 0)))
            .collect();
        clusters.get_mut("m00000").unwrap().error = Some("x".repeat(10_000));
        let report = aggregate(&clusters);
        assert_eq!(report.clusters.len(), MAX_CLUSTERS);
        assert_eq!(
            report.totals.fail,
            (MAX_CLUSTERS + 5) as i64,
            "totals count every member"
        );
        assert_eq!(
            report.top_failing[0].cluster_count,
            (MAX_CLUSTERS + 5) as i64
        );
        assert!(report.clusters[0].message.as_ref().unwrap().len() <= MAX_MESSAGE_LEN);
    }
}
