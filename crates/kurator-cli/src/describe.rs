//! `kurator describe fleet|application NAME`: one object, its conditions and its members.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Condition, jiff::Timestamp};
use kube::{
    Api, ResourceExt,
    api::{ApiResource, DynamicObject},
};
use kurator_api::{
    Application, Fleet, fleet::PluginComponentStatus, policy_report::FleetPolicyReport,
};

use kurator_controller::rollout::stages::assign;

use crate::{
    rollout::{self, render},
    tables::{age, short_revision},
};

#[derive(Args, Debug)]
pub struct DescribeArgs {
    pub what: Describe,
    pub name: String,
    #[arg(short, long)]
    pub namespace: Option<String>,
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Describe {
    Fleet,
    #[value(alias = "app")]
    Application,
}

pub async fn run(args: DescribeArgs) -> anyhow::Result<()> {
    let client = crate::client(args.kubeconfig.as_ref()).await?;
    let ns = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let now = Timestamp::now();
    let text = match args.what {
        Describe::Fleet => {
            let fleet = Api::<Fleet>::namespaced(client, &ns)
                .get(&args.name)
                .await
                .with_context(|| format!("fleet {ns}/{}", args.name))?;
            fleet_text(&fleet, now)
        }
        Describe::Application => {
            // As JSON first: `spec.stagedRollout` is read from it whether or not the typed
            // Application carries the field.
            let raw = Api::<DynamicObject>::namespaced_with(
                client.clone(),
                &ns,
                &ApiResource::erase::<Application>(&()),
            )
            .get(&args.name)
            .await
            .with_context(|| format!("application {ns}/{}", args.name))?;
            let what = || format!("application {ns}/{}", args.name);
            let app: Application =
                serde_json::from_value(serde_json::to_value(&raw)?).with_context(what)?;
            let stages = match rollout::from_json(&raw.data).with_context(what)? {
                Some((spec, _)) => {
                    let clusters = rollout::destination_clusters(client, &ns, &app).await?;
                    Some(render::stages_text(&spec, &assign(&spec, &clusters)))
                }
                None => None,
            };
            application_text_with_stages(&app, stages.as_deref(), now)
        }
    };
    print!("{text}");
    Ok(())
}

fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    crate::tables::text_table(header, rows, "  ")
}

fn conditions_text(conditions: &[Condition]) -> String {
    if conditions.is_empty() {
        return "Conditions: none yet\n".into();
    }
    let rows = conditions
        .iter()
        .map(|c| {
            vec![
                c.type_.clone(),
                c.status.clone(),
                c.reason.clone(),
                c.message.clone(),
            ]
        })
        .collect();
    format!(
        "Conditions:\n{}",
        table(&["TYPE", "STATUS", "REASON", "MESSAGE"], rows)
    )
}

/// Pure: the text of `kurator describe fleet`.
pub fn fleet_text(fleet: &Fleet, now: Timestamp) -> String {
    let status = fleet.status.clone().unwrap_or_default();
    let mut out = format!(
        "Name:       {}\nNamespace:  {}\nAge:        {}\nPhase:      {}\nReady:      {}/{}\n",
        fleet.name_any(),
        fleet.namespace().unwrap_or_default(),
        age(fleet.metadata.creation_timestamp.as_ref(), now),
        status.phase.as_deref().unwrap_or("Pending"),
        status.ready_clusters,
        fleet.spec.clusters.len(),
    );
    let rows = status
        .clusters
        .iter()
        .map(|c| {
            vec![
                c.name.clone(),
                c.kind.to_string(),
                c.ready.to_string(),
                c.reason.clone().unwrap_or_else(|| "-".into()),
                c.message.clone().unwrap_or_default(),
            ]
        })
        .collect();
    out.push_str(&format!(
        "Clusters:\n{}",
        table(&["NAME", "KIND", "READY", "REASON", "MESSAGE"], rows)
    ));
    out.push_str(&plugins_text(&status.plugins));
    if let Some(report) = &status.policy_report {
        out.push_str(&policy_text(report, now));
    }
    out.push_str(&conditions_text(&status.conditions));
    out
}

/// The fleet's policy summary: results per cluster (stale ones with their age and why) and
/// the most-failing policies.
fn policy_text(report: &FleetPolicyReport, now: Timestamp) -> String {
    let t = &report.totals;
    let mut out = format!(
        "Policy reports: {} pass, {} fail, {} warn, {} error, {} skip\n",
        t.pass, t.fail, t.warn, t.error, t.skip
    );
    let rows = report
        .clusters
        .iter()
        .map(|c| {
            let state = if c.stale {
                format!("stale for {}", age(c.stale_since.as_ref(), now))
            } else if c.last_seen.is_none() {
                "no reports yet".to_string()
            } else {
                "current".to_string()
            };
            vec![
                c.name.clone(),
                c.pass.to_string(),
                c.fail.to_string(),
                c.warn.to_string(),
                c.error.to_string(),
                c.skip.to_string(),
                state,
                c.message.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "CLUSTER", "PASS", "FAIL", "WARN", "ERROR", "SKIP", "REPORT", "MESSAGE",
        ],
        rows,
    ));
    if !report.top_failing.is_empty() {
        let rows = report
            .top_failing
            .iter()
            .map(|p| vec![p.policy.clone(), p.fail.to_string(), p.clusters.join(", ")])
            .collect();
        out.push_str(&format!(
            "Most failing policies:\n{}",
            table(&["POLICY", "FAIL", "CLUSTERS"], rows)
        ));
    }
    out
}

/// Plugin × cluster matrix: one row per plugin component, one column for the host and one per
/// member; a cell is `Ready`, the reason it is not, or `-` where the component does not run.
fn plugins_text(plugins: &[PluginComponentStatus]) -> String {
    if plugins.is_empty() {
        return String::new();
    }
    const HOST: &str = "(host)";
    let mut columns: Vec<&str> = Vec::new();
    let mut rows: Vec<(&str, &str)> = Vec::new();
    for p in plugins {
        let column = p.cluster.as_deref().unwrap_or(HOST);
        if !columns.contains(&column) {
            columns.push(column);
        }
        if !rows.contains(&(p.plugin.as_str(), p.component.as_str())) {
            rows.push((p.plugin.as_str(), p.component.as_str()));
        }
    }
    // The host first, then members in the order they first appear.
    columns.sort_by_key(|c| *c != HOST);
    let cells = rows
        .iter()
        .map(|(plugin, component)| {
            let mut row = vec![plugin.to_string(), component.to_string()];
            row.extend(columns.iter().map(|column| {
                plugins
                    .iter()
                    .find(|p| {
                        p.plugin == *plugin
                            && p.component == *component
                            && p.cluster.as_deref().unwrap_or(HOST) == *column
                    })
                    .map_or("-".to_string(), |p| {
                        if p.ready {
                            "Ready".to_string()
                        } else {
                            p.reason.clone().unwrap_or_else(|| "NotReady".into())
                        }
                    })
            }));
            row
        })
        .collect();
    let mut header = vec!["PLUGIN", "COMPONENT"];
    header.extend(columns.iter().copied());
    format!("Plugins:\n{}", table(&header, cells))
}

/// Pure: the text of `kurator describe application` for an Application without
/// `spec.stagedRollout`.
pub fn application_text(app: &Application, now: Timestamp) -> String {
    application_text_with_stages(app, None, now)
}

/// Pure: the text of `kurator describe application`; `stages` is the rendered
/// `spec.stagedRollout` ([`render::stages_text`]), shown before the conditions.
pub fn application_text_with_stages(
    app: &Application,
    stages: Option<&str>,
    now: Timestamp,
) -> String {
    let status = app.status.clone().unwrap_or_default();
    let source = &app.spec.source;
    let (kind, url) = if let Some(g) = &source.git_repository {
        ("GitRepository", g.url.as_str())
    } else if let Some(h) = &source.helm_repository {
        ("HelmRepository", h.url.as_str())
    } else if let Some(o) = &source.oci_repository {
        ("OCIRepository", o.url.as_str())
    } else {
        ("-", "-")
    };
    let mut out = format!(
        "Name:       {}\nNamespace:  {}\nAge:        {}\nSource:     {kind} {url}\nRevision:   {}\nSynced:     {}\n",
        app.name_any(),
        app.namespace().unwrap_or_default(),
        age(app.metadata.creation_timestamp.as_ref(), now),
        status.source_revision.as_deref().unwrap_or("-"),
        status.synced.as_deref().unwrap_or("-"),
    );
    let rows = status
        .clusters
        .iter()
        .map(|c| {
            vec![
                c.policy.clone(),
                c.fleet.clone(),
                c.cluster.clone(),
                c.kind.clone(),
                c.ready.to_string(),
                c.applied_revision
                    .as_deref()
                    .map(short_revision)
                    .unwrap_or_else(|| "-".into()),
                match (&c.reason, &c.message) {
                    (Some(r), Some(m)) => format!("{r}: {m}"),
                    (Some(r), None) => r.clone(),
                    _ => "-".into(),
                },
            ]
        })
        .collect();
    out.push_str(&format!(
        "Clusters:\n{}",
        table(
            &[
                "POLICY", "FLEET", "CLUSTER", "KIND", "SYNCED", "REVISION", "WHY"
            ],
            rows
        )
    ));
    out.push_str(stages.unwrap_or_default());
    out.push_str(&conditions_text(&status.conditions));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kurator_api::{
        apps::{ApplicationClusterStatus, ApplicationStatus},
        conditions::{Desired, merge},
        fleet::ClusterKind,
    };

    #[test]
    fn application_description() {
        let mut app: Application = serde_saphyr::from_str(
            "metadata: {name: demo, namespace: default}\nspec:\n  source:\n    gitRepository: {url: 'http://127.0.0.1:1/podinfo.git', interval: 1m}\n  destination: {fleet: quickstart}\n  syncPolicies:\n  - kustomization: {interval: 1m, prune: true}\n",
        )
        .unwrap();
        let t0 = Time(Timestamp::from_second(0).unwrap());
        app.metadata.creation_timestamp = Some(t0.clone());
        let cluster = |name: &str, ready: bool, revision: &str, why: Option<(&str, &str)>| {
            ApplicationClusterStatus {
                policy: "demo-0".into(),
                fleet: "quickstart".into(),
                cluster: name.into(),
                cluster_kind: ClusterKind::AttachedCluster,
                kind: "Kustomization".into(),
                name: format!("demo-0-attachedcluster-{name}"),
                applied_revision: Some(revision.into()),
                ready,
                reason: why.map(|w| w.0.into()),
                message: why.map(|w| w.1.into()),
            }
        };
        app.status = Some(ApplicationStatus {
            source_revision: Some("master@sha1:bbbbbbbbbbbbbbbb".into()),
            synced: Some("1/2".into()),
            clusters: vec![
                cluster("m1", true, "master@sha1:bbbbbbbbbbbbbbbb", None),
                cluster(
                    "m2",
                    false,
                    "master@sha1:aaaaaaaaaaaaaaaa",
                    Some(("OutdatedRevision", "at a, source at b")),
                ),
            ],
            conditions: merge(
                &[],
                vec![Desired::new(
                    "Ready",
                    false,
                    "NotSynced",
                    "1 of 2 not synced",
                )],
                None,
                t0,
            ),
            ..Default::default()
        });
        insta::assert_snapshot!(application_text(&app, Timestamp::from_second(30).unwrap()), @r"
        Name:       demo
        Namespace:  default
        Age:        30s
        Source:     GitRepository http://127.0.0.1:1/podinfo.git
        Revision:   master@sha1:bbbbbbbbbbbbbbbb
        Synced:     1/2
        Clusters:
          POLICY  FLEET       CLUSTER  KIND           SYNCED  REVISION             WHY
          demo-0  quickstart  m1       Kustomization  true    master@sha1:bbbbbbb  -
          demo-0  quickstart  m2       Kustomization  false   master@sha1:aaaaaaa  OutdatedRevision: at a, source at b
        Conditions:
          TYPE   STATUS  REASON     MESSAGE
          Ready  False   NotSynced  1 of 2 not synced
        ");
    }

    #[test]
    fn application_description_with_stages_before_the_conditions() {
        use kurator_api::rollout::StagedRolloutSpec;
        use kurator_controller::rollout::stages::DestinationCluster;
        let mut app: Application = serde_saphyr::from_str(
            "metadata: {name: shop, namespace: default}\nspec:\n  source:\n    gitRepository: {url: 'http://127.0.0.1:1/shop.git', interval: 1m}\n  destination: {fleet: quickstart}\n  syncPolicies:\n  - kustomization: {interval: 1m, prune: true}\n",
        )
        .unwrap();
        app.metadata.creation_timestamp = Some(Time(Timestamp::from_second(0).unwrap()));
        let spec: StagedRolloutSpec = serde_saphyr::from_str(
            "stages:\n- {name: canary, clusters: [m1]}\n- {name: rest, rest: true, maxConcurrent: 1}\n",
        )
        .unwrap();
        let clusters = ["m1", "m2", "m3"].map(|name| DestinationCluster {
            name: name.into(),
            labels: Default::default(),
        });
        let stages = render::stages_text(&spec, &assign(&spec, &clusters));
        insta::assert_snapshot!(
            application_text_with_stages(&app, Some(&stages), Timestamp::from_second(5).unwrap()),
            @r#"
            Name:       shop
            Namespace:  default
            Age:        5s
            Source:     GitRepository http://127.0.0.1:1/shop.git
            Revision:   -
            Synced:     -
            Clusters:
              POLICY  FLEET  CLUSTER  KIND  SYNCED  REVISION  WHY
            Staged rollout: onFailure Pause, progressDeadline 10m
              #  STAGE   SELECTS   CLUSTERS  AT ONCE        SOAK  GATES
              1  canary  names m1  m1        all (1 batch)  -     health
              2  rest    the rest  m2,m3     1 (2 batches)  -     health
            Conditions: none yet
        "#
        );
    }

    #[test]
    fn fleet_description_with_a_plugin_matrix() {
        use kurator_api::fleet::{FleetClusterStatus, FleetStatus};
        let mut fleet: Fleet = serde_saphyr::from_str(
            "metadata: {name: quickstart, namespace: default}\nspec:\n  clusters:\n  - {name: m1, kind: AttachedCluster}\n  - {name: m2, kind: AttachedCluster}\n",
        )
        .unwrap();
        let t0 = Time(Timestamp::from_second(0).unwrap());
        fleet.metadata.creation_timestamp = Some(t0.clone());
        let component =
            |plugin: &str, component: &str, cluster: Option<&str>, why: Option<&str>| {
                PluginComponentStatus {
                    plugin: plugin.into(),
                    component: component.into(),
                    cluster: cluster.map(Into::into),
                    release: match cluster {
                        Some(c) => format!("{component}-{c}"),
                        None => component.into(),
                    },
                    ready: why.is_none(),
                    reason: why.map(Into::into),
                    message: None,
                }
            };
        let member = |name: &str| FleetClusterStatus {
            name: name.into(),
            kind: ClusterKind::AttachedCluster,
            ready: true,
            reason: None,
            message: None,
        };
        fleet.status = Some(FleetStatus {
            phase: Some("Running".into()),
            ready_clusters: 2,
            clusters: vec![member("m1"), member("m2")],
            plugins: vec![
                component("metric", "thanos", None, None),
                component("metric", "prometheus", Some("m1"), None),
                component("metric", "prometheus", Some("m2"), Some("InstallFailed")),
                component("kyverno", "kyverno", Some("m1"), None),
                component("kyverno", "kyverno", Some("m2"), None),
                component("kyverno", "kyverno-policies", Some("m1"), None),
                component(
                    "kyverno",
                    "kyverno-policies",
                    Some("m2"),
                    Some("WaitingForKyverno"),
                ),
            ],
            policy_report: Some(policy_report()),
            ..Default::default()
        });
        insta::assert_snapshot!(fleet_text(&fleet, Timestamp::from_second(90).unwrap()), @r"
        Name:       quickstart
        Namespace:  default
        Age:        90s
        Phase:      Running
        Ready:      2/2
        Clusters:
          NAME  KIND             READY  REASON  MESSAGE
          m1    AttachedCluster  true   -
          m2    AttachedCluster  true   -
        Plugins:
          PLUGIN   COMPONENT         (host)  m1     m2
          metric   thanos            Ready   -      -
          metric   prometheus        -       Ready  InstallFailed
          kyverno  kyverno           -       Ready  Ready
          kyverno  kyverno-policies  -       Ready  WaitingForKyverno
        Policy reports: 10 pass, 2 fail, 0 warn, 0 error, 0 skip
          CLUSTER  PASS  FAIL  WARN  ERROR  SKIP  REPORT         MESSAGE
          m1       6     0     0     0      0     current        -
          m2       4     2     0     0      0     stale for 30s  Kyverno's reports controller has not renewed its Lease kyverno/kyverno-reports-controller since 1970-01-01T00:01:00Z
        Most failing policies:
          POLICY                          FAIL  CLUSTERS
          disallow-privileged-containers  2     m2
        Conditions: none yet
        ");
    }

    fn policy_report() -> FleetPolicyReport {
        use kurator_api::policy_report::{ClusterReportStatus, FailingPolicy, PolicyResultCounts};
        let at = |second: i64| Some(Time(Timestamp::from_second(second).unwrap()));
        FleetPolicyReport {
            totals: PolicyResultCounts {
                pass: 10,
                fail: 2,
                ..Default::default()
            },
            clusters: vec![
                ClusterReportStatus {
                    name: "m1".into(),
                    pass: 6,
                    last_seen: at(80),
                    ..Default::default()
                },
                ClusterReportStatus {
                    name: "m2".into(),
                    pass: 4,
                    fail: 2,
                    last_seen: at(30),
                    stale: true,
                    stale_since: at(60),
                    message: Some(
                        "Kyverno's reports controller has not renewed its Lease \
                         kyverno/kyverno-reports-controller since 1970-01-01T00:01:00Z"
                            .into(),
                    ),
                    ..Default::default()
                },
            ],
            top_failing: vec![FailingPolicy {
                policy: "disallow-privileged-containers".into(),
                fail: 2,
                cluster_count: 1,
                clusters: vec!["m2".into()],
            }],
        }
    }
}
