//! Policy reports: the `wgpolicyk8s.io/v1alpha2` PolicyReport and ClusterPolicyReport that
//! Kyverno writes in each member, and their fleet-wide aggregate kept in the Fleet's status.
//!
//! The report kinds belong to the Kubernetes Policy working group (Kyverno installs their
//! CRDs): they are not in [`crate::crds::all`]. Both are one generic struct,
//! [`PolicyReportOf`], with one hand-written [`kube::Resource`] implementation, so
//! `Api<PolicyReport>` and watchers work against a member.
//!
//! Decoding is tolerant, as a report written by any tool must never break a watch: every
//! field is optional or defaulted, unknown fields are ignored, a field of the wrong type
//! decodes as its default, a result string we do not know is kept as
//! [`PolicyResult::Other`], and the result timestamp is read either as `metav1.Timestamp`
//! (`{seconds, nanos}`, what Kyverno writes) or as an RFC 3339 string.
//!
//! [`FleetPolicyReport`] is the aggregate in `Fleet.status.policyReport`; its size is bounded
//! (see the constants below) whatever the members hold.

use std::{borrow::Cow, collections::BTreeMap, marker::PhantomData};

use k8s_openapi::{
    ClusterResourceScope, NamespaceResourceScope,
    api::core::v1::ObjectReference,
    apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time},
};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, de::DeserializeOwned};

pub const GROUP: &str = "wgpolicyk8s.io";
pub const VERSION: &str = "v1alpha2";

// --- The member-side report kinds -------------------------------------------------------------

/// One policy result: `pass`, `fail`, `warn`, `error`, `skip`, or any other string (kept).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyResult {
    Pass,
    Fail,
    Warn,
    Error,
    Skip,
    /// A value outside the v1alpha2 enum; counted nowhere.
    Other(String),
}

impl PolicyResult {
    pub fn as_str(&self) -> &str {
        match self {
            PolicyResult::Pass => "pass",
            PolicyResult::Fail => "fail",
            PolicyResult::Warn => "warn",
            PolicyResult::Error => "error",
            PolicyResult::Skip => "skip",
            PolicyResult::Other(s) => s,
        }
    }

    /// Case-insensitive: `Fail` and `FAIL` are `fail`.
    pub fn parse(s: &str) -> PolicyResult {
        match s.to_ascii_lowercase().as_str() {
            "pass" => PolicyResult::Pass,
            "fail" => PolicyResult::Fail,
            "warn" => PolicyResult::Warn,
            "error" => PolicyResult::Error,
            "skip" => PolicyResult::Skip,
            _ => PolicyResult::Other(s.to_string()),
        }
    }
}

impl std::fmt::Display for PolicyResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for PolicyResult {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for PolicyResult {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Ok(PolicyResult::parse(&s))
    }
}

/// A report's `summary`: the number of results of each kind, as the writer counted them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyReportSummary {
    #[serde(default, deserialize_with = "lenient")]
    pub pass: i64,
    #[serde(default, deserialize_with = "lenient")]
    pub fail: i64,
    #[serde(default, deserialize_with = "lenient")]
    pub warn: i64,
    #[serde(default, deserialize_with = "lenient")]
    pub error: i64,
    #[serde(default, deserialize_with = "lenient")]
    pub skip: i64,
}

/// `metav1.Timestamp` (`{seconds, nanos}`), what Kyverno writes in `results[].timestamp`.
/// Also decodes an RFC 3339 string; anything else decodes as the epoch.
#[derive(Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct ResultTimestamp {
    pub seconds: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub nanos: i32,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

impl ResultTimestamp {
    pub fn to_time(self) -> Option<Time> {
        k8s_openapi::jiff::Timestamp::new(self.seconds, self.nanos)
            .ok()
            .map(Time)
    }
}

impl<'de> Deserialize<'de> for ResultTimestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        Ok(match value {
            serde_json::Value::Object(map) => ResultTimestamp {
                seconds: map.get("seconds").and_then(|v| v.as_i64()).unwrap_or(0),
                nanos: map
                    .get("nanos")
                    .and_then(|v| v.as_i64())
                    .and_then(|n| i32::try_from(n).ok())
                    .unwrap_or(0),
            },
            serde_json::Value::String(s) => s
                .parse::<k8s_openapi::jiff::Timestamp>()
                .map(|t| ResultTimestamp {
                    seconds: t.as_second(),
                    nanos: t.subsec_nanosecond(),
                })
                .unwrap_or_default(),
            _ => ResultTimestamp::default(),
        })
    }
}

/// One entry of `results`: a policy rule's verdict on zero or more resources.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyReportResult {
    /// The policy's name (`namespace/name` for namespaced Kyverno Policies).
    #[serde(default, deserialize_with = "lenient")]
    pub policy: String,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub rule: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub result: Option<PolicyResult>,
    /// `critical`, `high`, `medium`, `low` or `info`.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub severity: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub category: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub message: Option<String>,
    /// The resources the result is about; empty when the report's `scope` is.
    #[serde(
        default,
        deserialize_with = "lenient_vec",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub resources: Vec<ObjectReference>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub resource_selector: Option<LabelSelector>,
    /// The tool that produced the result (`kyverno`).
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub source: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub timestamp: Option<ResultTimestamp>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub scored: Option<bool>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub properties: BTreeMap<String, String>,
}

/// Decodes a field as `T`, or as `T::default()` when it holds something else: one odd field
/// must not make a whole report (and the watch listing it) fail to decode.
fn lenient<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned + Default,
{
    let value = serde_json::Value::deserialize(deserializer)?;
    Ok(serde_json::from_value(value).unwrap_or_default())
}

/// A list whose undecodable items are dropped (a non-list decodes as empty).
fn lenient_vec<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    let value = serde_json::Value::deserialize(deserializer)?;
    Ok(match value {
        serde_json::Value::Array(items) => items
            .into_iter()
            .filter_map(|item| serde_json::from_value(item).ok())
            .collect(),
        _ => Vec::new(),
    })
}

/// Which of the two report kinds a [`PolicyReportOf`] is: [`Namespaced`] (PolicyReport) or
/// [`ClusterScoped`] (ClusterPolicyReport).
pub trait ReportKind:
    Clone + Copy + std::fmt::Debug + Default + PartialEq + Send + Sync + 'static
{
    const KIND: &'static str;
    const PLURAL: &'static str;
    /// `NamespaceResourceScope` or `ClusterResourceScope`.
    type Scope;
}

/// Marker of [`PolicyReport`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Namespaced;

/// Marker of [`ClusterPolicyReport`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClusterScoped;

impl ReportKind for Namespaced {
    const KIND: &'static str = "PolicyReport";
    const PLURAL: &'static str = "policyreports";
    type Scope = NamespaceResourceScope;
}

impl ReportKind for ClusterScoped {
    const KIND: &'static str = "ClusterPolicyReport";
    const PLURAL: &'static str = "clusterpolicyreports";
    type Scope = ClusterResourceScope;
}

/// `wgpolicyk8s.io/v1alpha2` PolicyReport: results about namespaced resources.
pub type PolicyReport = PolicyReportOf<Namespaced>;
/// `wgpolicyk8s.io/v1alpha2` ClusterPolicyReport: results about cluster-scoped resources.
pub type ClusterPolicyReport = PolicyReportOf<ClusterScoped>;

/// A report `{ metadata, scope, scopeSelector, summary, results }` of either kind.
///
/// Not kube's `#[derive(CustomResource)]` as the Flux kinds are: a report has no `spec` (its
/// fields sit at the top level), and the derived decoding could not be as lenient as a report
/// from any tool needs (see the module doc). The two kinds have the same body, so one generic
/// struct with a marker type ([`ReportKind`]) carries one hand-written [`kube::Resource`] and
/// serde implementation for both; [`PolicyReport`] and [`ClusterPolicyReport`] are aliases.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase", bound(deserialize = ""))]
pub struct PolicyReportOf<K: ReportKind> {
    pub metadata: ObjectMeta,
    /// The object the whole report is about (Kyverno: one report per resource).
    #[serde(deserialize_with = "lenient")]
    pub scope: Option<ObjectReference>,
    #[serde(deserialize_with = "lenient")]
    pub scope_selector: Option<LabelSelector>,
    /// The writer's counts; may lag `results`, which are authoritative.
    #[serde(deserialize_with = "lenient")]
    pub summary: Option<PolicyReportSummary>,
    #[serde(deserialize_with = "lenient_vec")]
    pub results: Vec<PolicyReportResult>,
    #[serde(skip)]
    marker: PhantomData<K>,
}

impl<K: ReportKind> PolicyReportOf<K> {
    pub const KIND: &'static str = K::KIND;

    /// A new report named `name` (the namespace is the caller's).
    pub fn new(name: &str) -> Self {
        Self {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..ObjectMeta::default()
            },
            ..Self::default()
        }
    }
}

impl<K: ReportKind> kube::Resource for PolicyReportOf<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(K::KIND)
    }
    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(GROUP)
    }
    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(VERSION)
    }
    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(K::PLURAL)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// Writes `apiVersion` and `kind` and omits unset fields.
impl<K: ReportKind> Serialize for PolicyReportOf<K> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct(K::KIND, 7)?;
        s.serialize_field("apiVersion", &format!("{GROUP}/{VERSION}"))?;
        s.serialize_field("kind", K::KIND)?;
        s.serialize_field("metadata", &self.metadata)?;
        match &self.scope {
            Some(scope) => s.serialize_field("scope", scope)?,
            None => s.skip_field("scope")?,
        }
        match &self.scope_selector {
            Some(selector) => s.serialize_field("scopeSelector", selector)?,
            None => s.skip_field("scopeSelector")?,
        }
        match &self.summary {
            Some(summary) => s.serialize_field("summary", summary)?,
            None => s.skip_field("summary")?,
        }
        if self.results.is_empty() {
            s.skip_field("results")?;
        } else {
            s.serialize_field("results", &self.results)?;
        }
        s.end()
    }
}

// --- The fleet aggregate ----------------------------------------------------------------------

/// At most this many policies in [`FleetPolicyReport::top_failing`].
pub const MAX_TOP_FAILING: usize = 10;
/// At most this many cluster names per [`FailingPolicy`].
pub const MAX_FAILING_CLUSTER_NAMES: usize = 10;
/// At most this many entries in [`FleetPolicyReport::clusters`]: a fleet's own bound on its
/// members (`spec.clusters` maxItems).
pub const MAX_CLUSTERS: usize = 2000;
/// Messages longer than this many bytes are cut (on a character boundary, with `…`).
pub const MAX_MESSAGE_LEN: usize = 256;

/// The members' policy reports, aggregated: totals, one line per member, the policies that
/// fail most. Bounded whatever the members hold: `clusters` ≤ [`MAX_CLUSTERS`] entries,
/// `topFailing` ≤ [`MAX_TOP_FAILING`] entries of ≤ [`MAX_FAILING_CLUSTER_NAMES`] names,
/// messages ≤ [`MAX_MESSAGE_LEN`] bytes: under 0.5 MiB for a full fleet.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FleetPolicyReport {
    /// Sums over every member, stale ones included (their last known counts).
    #[serde(default)]
    pub totals: PolicyResultCounts,
    /// One entry per member, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 2000))]
    pub clusters: Vec<ClusterReportStatus>,
    /// The policies with the most failing results fleet-wide: by failures (descending), then
    /// by name; at most 10.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub top_failing: Vec<FailingPolicy>,
}

/// Number of results of each kind.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyResultCounts {
    #[serde(default)]
    pub pass: i64,
    #[serde(default)]
    pub fail: i64,
    #[serde(default)]
    pub warn: i64,
    #[serde(default)]
    pub error: i64,
    #[serde(default)]
    pub skip: i64,
}

impl PolicyResultCounts {
    pub fn total(&self) -> i64 {
        self.pass + self.fail + self.warn + self.error + self.skip
    }
}

/// One member's reports, summed over its PolicyReports and ClusterPolicyReports.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterReportStatus {
    /// The member (the fleet's cluster name).
    pub name: String,
    #[serde(default)]
    pub pass: i64,
    #[serde(default)]
    pub fail: i64,
    #[serde(default)]
    pub warn: i64,
    #[serde(default)]
    pub error: i64,
    #[serde(default)]
    pub skip: i64,
    /// When the controller last received the member's reports (a listing or a change). While
    /// the member is reachable the counts are current whatever this says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Time>,
    /// The counts are the last known ones and may be out of date: the member cannot be read,
    /// or Kyverno's reports controller there has stopped renewing its leader Lease (nothing
    /// updates the reports). `message` says which.
    #[serde(default)]
    pub stale: bool,
    /// Since when the counts may be out of date (set with `stale`): when the member stopped
    /// answering, or when Kyverno last renewed its Lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_since: Option<Time>,
    /// Why the counts are stale or missing (never credentials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl ClusterReportStatus {
    pub fn counts(&self) -> PolicyResultCounts {
        PolicyResultCounts {
            pass: self.pass,
            fail: self.fail,
            warn: self.warn,
            error: self.error,
            skip: self.skip,
        }
    }

    pub fn set_counts(&mut self, counts: PolicyResultCounts) {
        self.pass = counts.pass;
        self.fail = counts.fail;
        self.warn = counts.warn;
        self.error = counts.error;
        self.skip = counts.skip;
    }
}

/// A policy with failing results, fleet-wide.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FailingPolicy {
    pub policy: String,
    /// Failing results, summed over the members.
    pub fail: i64,
    /// How many members report failures of this policy.
    pub cluster_count: i64,
    /// Those members, most failures first (then by name); at most 10.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub clusters: Vec<String>,
}

/// `message` cut to at most `max` bytes on a character boundary, marked with `…`.
pub fn truncate_message(message: &str, max: usize) -> String {
    if message.len() <= max {
        return message.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

#[cfg(test)]
mod tests;
