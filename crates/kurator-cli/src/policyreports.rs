//! `kurator get policyreports --fleet NAME [--by cluster|policy|resource]`: a fleet's policy
//! reports (the `wgpolicyk8s.io` reports Kyverno writes in each member).
//!
//! - `--by cluster` (default) reads the Fleet's `status.policyReport`, which the controller
//!   keeps: results per member (stale members marked with the age of their counts), totals and
//!   the most-failing policies.
//! - `--by policy` and `--by resource` read the members' PolicyReports and
//!   ClusterPolicyReports directly, through each member's kubeconfig Secret; a member that
//!   cannot be read is skipped with a note on stderr.
//!
//! Rendering is pure (`*_table`, `*_rows`) and snapshot tested.

use std::{collections::BTreeMap, time::Duration};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use futures::StreamExt;
use k8s_openapi::{api::core::v1::ObjectReference, jiff::Timestamp};
use kube::{Api, Client};
use kurator_api::{
    AttachedCluster, Cluster, CustomCluster, Fleet, MemberCluster,
    cluster::SecretKeyRef,
    fleet::ClusterKind,
    policy_report::{
        ClusterPolicyReport, FleetPolicyReport, PolicyReport, PolicyReportResult,
        PolicyReportSummary, PolicyResult,
    },
};
use kurator_controller::{
    member::{self, AccessError},
    plugins::reports::Counts,
};
use serde::Serialize;

use crate::{
    get::{GetArgs, Output},
    tables::age,
};

/// How long one member may take to answer (kubeconfig Secret aside).
const MEMBER_TIMEOUT: Duration = Duration::from_secs(10);
/// Members read at once.
const MEMBER_CONCURRENCY: usize = 8;
/// Names listed in a FAILING column before `+N`.
const NAMES_SHOWN: usize = 3;

/// `kurator get policyreports` options (flattened into `kurator get`).
#[derive(Args, Debug, Clone, Default)]
pub struct PolicyReportArgs {
    /// policyreports: the fleet whose reports to show.
    #[arg(long)]
    pub fleet: Option<String>,
    /// policyreports: one row per cluster (from the fleet's status), per policy or per
    /// resource (both read from the members).
    #[arg(long, value_enum, default_value_t = By::Cluster)]
    pub by: By,
}

#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum By {
    #[default]
    Cluster,
    Policy,
    Resource,
}

/// The output of `kurator get policyreports` (notes about skipped members go to stderr).
pub async fn render(client: &Client, args: &GetArgs, now: Timestamp) -> anyhow::Result<String> {
    let name = args
        .reports
        .fleet
        .as_deref()
        .context("kurator get policyreports needs --fleet NAME")?;
    let ns = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let fleet = Api::<Fleet>::namespaced(client.clone(), &ns)
        .get(name)
        .await
        .with_context(|| format!("fleet {ns}/{name}"))?;
    let structured = matches!(args.output, Some(Output::Json | Output::Yaml));
    if args.reports.by == By::Cluster {
        let report = fleet.status.as_ref().and_then(|s| s.policy_report.clone());
        if structured {
            return encode(&report.unwrap_or_default(), args.output);
        }
        return Ok(match report {
            Some(report) => cluster_table(&report, now),
            None => format!("No policy reports for fleet {name} yet.\n"),
        });
    }
    let (members, skipped) = read_members(client, &ns, &fleet).await;
    for s in &skipped {
        eprintln!("note: cluster {} skipped: {}", s.cluster, s.reason);
    }
    match args.reports.by {
        By::Policy => {
            let rows = policy_rows(&members);
            if structured {
                return encode(
                    &Listing {
                        items: rows,
                        skipped,
                    },
                    args.output,
                );
            }
            Ok(policy_table(&rows))
        }
        _ => {
            let rows = resource_rows(&members);
            if structured {
                return encode(
                    &Listing {
                        items: rows,
                        skipped,
                    },
                    args.output,
                );
            }
            Ok(resource_table(&rows))
        }
    }
}

#[derive(Serialize)]
struct Listing<T> {
    items: Vec<T>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    skipped: Vec<Skipped>,
}

fn encode<T: Serialize>(value: &T, output: Option<Output>) -> anyhow::Result<String> {
    Ok(match output {
        Some(Output::Yaml) => serde_saphyr::to_string(value)?,
        _ => serde_json::to_string_pretty(value)? + "\n",
    })
}

// --- Reading the members ----------------------------------------------------------------------

/// One member's reports, as listed.
#[derive(Clone, Debug, Default)]
pub struct MemberReports {
    pub cluster: String,
    pub reports: Vec<PolicyReport>,
    pub cluster_reports: Vec<ClusterPolicyReport>,
}

/// A member that could not be read, and why (never credentials).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Skipped {
    pub cluster: String,
    pub reason: String,
}

/// Reads every member of the fleet, a few at a time; members sorted by name.
async fn read_members(
    client: &Client,
    ns: &str,
    fleet: &Fleet,
) -> (Vec<MemberReports>, Vec<Skipped>) {
    let results: Vec<Result<MemberReports, Skipped>> =
        futures::stream::iter(fleet.spec.clusters.iter().map(|c| {
            let (client, ns) = (client.clone(), ns.to_string());
            async move {
                read_member(&client, &ns, &c.name, c.kind)
                    .await
                    .map_err(|reason| Skipped {
                        cluster: c.name.clone(),
                        reason,
                    })
            }
        }))
        .buffer_unordered(MEMBER_CONCURRENCY)
        .collect()
        .await;
    let (mut members, mut skipped) = (Vec::new(), Vec::new());
    for r in results {
        match r {
            Ok(m) => members.push(m),
            Err(s) => skipped.push(s),
        }
    }
    members.sort_by(|a, b| a.cluster.cmp(&b.cluster));
    skipped.sort_by(|a, b| a.cluster.cmp(&b.cluster));
    (members, skipped)
}

async fn read_member(
    host: &Client,
    ns: &str,
    name: &str,
    kind: ClusterKind,
) -> Result<MemberReports, String> {
    let secret_ref = kubeconfig_ref(host, ns, name, kind).await?;
    let member = member::client_from_secret(host, ns, &secret_ref, MEMBER_TIMEOUT)
        .await
        .map_err(|e| match e {
            AccessError::Host(secret, e) => format!("reading Secret {secret}: {}", api_error(&e)),
            other => other.to_string(),
        })?;
    let list = async {
        let reports = list_or_none(Api::<PolicyReport>::all(member.clone())).await?;
        let cluster_reports = list_or_none(Api::<ClusterPolicyReport>::all(member)).await?;
        Ok::<_, String>((reports, cluster_reports))
    };
    let (reports, cluster_reports) = tokio::time::timeout(MEMBER_TIMEOUT, list)
        .await
        .map_err(|_| format!("no answer within {}s", MEMBER_TIMEOUT.as_secs()))??;
    Ok(MemberReports {
        cluster: name.to_string(),
        reports,
        cluster_reports,
    })
}

/// All objects of a report kind; none when its CRD is not installed (404).
async fn list_or_none<K>(api: Api<K>) -> Result<Vec<K>, String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.list(&Default::default()).await {
        Ok(list) => Ok(list.items),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Vec::new()),
        Err(e) => Err(format!("cannot list policy reports: {}", api_error(&e))),
    }
}

/// Where the member's kubeconfig is, by the kind of cluster object.
async fn kubeconfig_ref(
    host: &Client,
    ns: &str,
    name: &str,
    kind: ClusterKind,
) -> Result<SecretKeyRef, String> {
    match kind {
        ClusterKind::AttachedCluster => kubeconfig_of::<AttachedCluster>(host, ns, name).await,
        ClusterKind::Cluster => kubeconfig_of::<Cluster>(host, ns, name).await,
        ClusterKind::CustomCluster => kubeconfig_of::<CustomCluster>(host, ns, name).await,
    }
}

async fn kubeconfig_of<K>(host: &Client, ns: &str, name: &str) -> Result<SecretKeyRef, String>
where
    K: MemberCluster
        + kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let kind = K::kind(&());
    Api::<K>::namespaced(host.clone(), ns)
        .get(name)
        .await
        .map_err(|e| format!("{kind} {ns}/{name}: {}", api_error(&e)))?
        .kubeconfig_ref()
        .ok_or_else(|| format!("{kind} {ns}/{name} has no kubeconfig yet"))
}

fn api_error(e: &kube::Error) -> String {
    kurator_controller::plugins::collector::describe_error(e)
}

// --- Rows (pure) ------------------------------------------------------------------------------

/// The cells of a counts row: pass, fail, warn, error, skip.
fn cells(counts: &Counts) -> [String; 5] {
    [
        counts.pass,
        counts.fail,
        counts.warn,
        counts.error,
        counts.skip,
    ]
    .map(|n| n.to_string())
}

/// One policy across the fleet.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRow {
    pub policy: String,
    /// Members with results of this policy.
    pub clusters: usize,
    #[serde(flatten)]
    pub counts: Counts,
    /// Members with failures of this policy, by name.
    pub failing_in: Vec<String>,
}

/// One resource of one member.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRow {
    pub cluster: String,
    /// Empty for cluster-scoped resources.
    pub namespace: String,
    pub kind: String,
    pub name: String,
    #[serde(flatten)]
    pub counts: Counts,
    /// Policies failing on it, by name.
    pub failing: Vec<String>,
}

/// Every result of a member, with the report it came from.
fn member_results(
    m: &MemberReports,
) -> impl Iterator<
    Item = (
        &Option<ObjectReference>,
        &[PolicyReportResult],
        Option<&PolicyReportSummary>,
    ),
> {
    m.reports
        .iter()
        .map(|r| (&r.scope, r.results.as_slice(), r.summary.as_ref()))
        .chain(
            m.cluster_reports
                .iter()
                .map(|r| (&r.scope, r.results.as_slice(), r.summary.as_ref())),
        )
}

/// One row per policy: the most failures first, then by name. Reports without results (only a
/// summary) name no policy and are left out.
pub fn policy_rows(members: &[MemberReports]) -> Vec<PolicyRow> {
    let mut rows: BTreeMap<&str, (PolicyRow, std::collections::BTreeSet<&str>)> = BTreeMap::new();
    for m in members {
        for (_, results, _) in member_results(m) {
            for r in results {
                let Some(result) = &r.result else { continue };
                let (row, clusters) = rows.entry(r.policy.as_str()).or_default();
                row.counts.record(result);
                clusters.insert(m.cluster.as_str());
                if *result == PolicyResult::Fail && !row.failing_in.contains(&m.cluster) {
                    row.failing_in.push(m.cluster.clone());
                }
            }
        }
    }
    let mut rows: Vec<PolicyRow> = rows
        .into_iter()
        .map(|(policy, (mut row, clusters))| {
            row.policy = policy.to_string();
            row.clusters = clusters.len();
            row.failing_in.sort();
            row
        })
        .collect();
    rows.sort_by(|a, b| {
        b.counts
            .fail
            .cmp(&a.counts.fail)
            .then_with(|| a.policy.cmp(&b.policy))
    });
    rows
}

/// One row per (member, resource), by member, namespace, kind and name. A result names its
/// resources, or else the report's `scope`; a report with only a summary counts for its scope.
pub fn resource_rows(members: &[MemberReports]) -> Vec<ResourceRow> {
    type Key = (String, String, String, String);
    fn row(rows: &mut BTreeMap<Key, ResourceRow>, k: Key) -> &mut ResourceRow {
        rows.entry(k.clone()).or_insert_with(|| ResourceRow {
            cluster: k.0,
            namespace: k.1,
            kind: k.2,
            name: k.3,
            ..Default::default()
        })
    }
    let mut rows: BTreeMap<Key, ResourceRow> = BTreeMap::new();
    for m in members {
        let key = |r: Option<&ObjectReference>| -> Key {
            let r = r.cloned().unwrap_or_default();
            (
                m.cluster.clone(),
                r.namespace.unwrap_or_default(),
                r.kind.unwrap_or_else(|| "-".into()),
                r.name.unwrap_or_else(|| "-".into()),
            )
        };
        for (scope, results, summary) in member_results(m) {
            if results.is_empty() {
                if let Some(summary) = summary {
                    row(&mut rows, key(scope.as_ref()))
                        .counts
                        .add(&Counts::from_summary(summary));
                }
                continue;
            }
            for r in results {
                let Some(result) = &r.result else { continue };
                let targets: Vec<Option<&ObjectReference>> = if r.resources.is_empty() {
                    vec![scope.as_ref()]
                } else {
                    r.resources.iter().map(Some).collect()
                };
                for target in targets {
                    let row = row(&mut rows, key(target));
                    row.counts.record(result);
                    if *result == PolicyResult::Fail && !row.failing.contains(&r.policy) {
                        row.failing.push(r.policy.clone());
                    }
                }
            }
        }
    }
    rows.into_values()
        .map(|mut row| {
            row.failing.sort();
            row
        })
        .collect()
}

// --- Tables (pure) ----------------------------------------------------------------------------

fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    crate::tables::text_table(header, rows, "")
}

/// `a,b,c,+2`: the first few names of `list`, and how many of `total` are not shown.
fn names_of(list: &[String], total: usize) -> String {
    if list.is_empty() && total == 0 {
        return "-".into();
    }
    let shown: Vec<&str> = list.iter().take(NAMES_SHOWN).map(String::as_str).collect();
    let mut text = shown.join(",");
    if total > shown.len() {
        if !text.is_empty() {
            text.push(',');
        }
        text.push_str(&format!("+{}", total - shown.len()));
    }
    text
}

fn names(list: &[String]) -> String {
    names_of(list, list.len())
}

/// CLUSTER, the five counts, REPORT (current / stale for AGE / no reports yet) and MESSAGE; a
/// TOTAL row; then the most failing policies.
pub fn cluster_table(report: &FleetPolicyReport, now: Timestamp) -> String {
    let mut rows: Vec<Vec<String>> = report
        .clusters
        .iter()
        .map(|c| {
            let state = if c.stale {
                format!(
                    "stale for {}",
                    age(c.stale_since.as_ref().or(c.last_seen.as_ref()), now)
                )
            } else if c.last_seen.is_none() {
                "no reports yet".to_string()
            } else {
                "current".to_string()
            };
            let mut row = vec![c.name.clone()];
            row.extend([c.pass, c.fail, c.warn, c.error, c.skip].map(|n| n.to_string()));
            row.push(state);
            row.push(c.message.clone().unwrap_or_else(|| "-".into()));
            row
        })
        .collect();
    let t = &report.totals;
    let mut total = vec!["TOTAL".to_string()];
    total.extend([t.pass, t.fail, t.warn, t.error, t.skip].map(|n| n.to_string()));
    rows.push(total);
    let mut out = table(
        &[
            "CLUSTER", "PASS", "FAIL", "WARN", "ERROR", "SKIP", "REPORT", "MESSAGE",
        ],
        rows,
    );
    if !report.top_failing.is_empty() {
        let rows = report
            .top_failing
            .iter()
            .map(|p| {
                let total = usize::try_from(p.cluster_count).unwrap_or(0);
                let clusters = names_of(&p.clusters, total.max(p.clusters.len()));
                vec![
                    p.policy.clone(),
                    p.fail.to_string(),
                    p.cluster_count.to_string(),
                    clusters,
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(
            &["MOST FAILING POLICY", "FAIL", "CLUSTERS", "FAILING IN"],
            rows,
        ));
    }
    out
}

/// POLICY, CLUSTERS (members with results), the five counts, FAILING IN.
pub fn policy_table(rows: &[PolicyRow]) -> String {
    if rows.is_empty() {
        return "No policy results found.\n".into();
    }
    let rows = rows
        .iter()
        .map(|r| {
            let mut row = vec![r.policy.clone(), r.clusters.to_string()];
            row.extend(cells(&r.counts));
            row.push(names(&r.failing_in));
            row
        })
        .collect();
    table(
        &[
            "POLICY",
            "CLUSTERS",
            "PASS",
            "FAIL",
            "WARN",
            "ERROR",
            "SKIP",
            "FAILING IN",
        ],
        rows,
    )
}

/// CLUSTER, NAMESPACE, KIND, NAME, the five counts, FAILING (policies).
pub fn resource_table(rows: &[ResourceRow]) -> String {
    if rows.is_empty() {
        return "No policy results found.\n".into();
    }
    let rows = rows
        .iter()
        .map(|r| {
            let mut row = vec![
                r.cluster.clone(),
                if r.namespace.is_empty() {
                    "-".into()
                } else {
                    r.namespace.clone()
                },
                r.kind.clone(),
                r.name.clone(),
            ];
            row.extend(cells(&r.counts));
            row.push(names(&r.failing));
            row
        })
        .collect();
    table(
        &[
            "CLUSTER",
            "NAMESPACE",
            "KIND",
            "NAME",
            "PASS",
            "FAIL",
            "WARN",
            "ERROR",
            "SKIP",
            "FAILING",
        ],
        rows,
    )
}

#[cfg(test)]
mod tests;
