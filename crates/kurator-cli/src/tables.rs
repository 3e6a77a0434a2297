//! Pure, kubectl-style tables for `kurator get` (snapshot tested).

use comfy_table::{Table, presets::NOTHING};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::ResourceExt;
use kurator_api::{Application, AttachedCluster, Fleet, conditions, labels::FLEET_NAME};

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(NOTHING)
        .set_header(header.iter().map(|h| h.to_string()));
    t
}

fn render(t: Table) -> String {
    // comfy-table pads each cell with one space on the left; kubectl starts at column 0.
    let mut out: String = t
        .lines()
        .map(|l| format!("{}\n", l.strip_prefix(' ').unwrap_or(&l).trim_end()))
        .collect();
    if out.is_empty() {
        out.push('\n');
    }
    out
}

/// A kubectl-style table of `rows` under `header`, each line prefixed with `indent`.
pub fn text_table(header: &[&str], rows: Vec<Vec<String>>, indent: &str) -> String {
    let mut t = table(header);
    for row in rows {
        t.add_row(row);
    }
    // comfy-table pads each cell with one space on the left; kubectl starts at column 0.
    t.lines()
        .map(|l| format!("{indent}{}\n", l.strip_prefix(' ').unwrap_or(&l).trim_end()))
        .collect()
}

/// kubectl's short age: 45s, 12m, 5h, 3d.
pub fn age(created: Option<&Time>, now: Timestamp) -> String {
    let Some(created) = created else {
        return "<unknown>".into();
    };
    let secs = (now.as_second() - created.0.as_second()).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// NAMESPACE (with -A), NAME, READY, VERSION, FLEET, AGE; `wide` adds REASON and MESSAGE.
pub fn clusters(
    items: &[AttachedCluster],
    all_namespaces: bool,
    wide: bool,
    now: Timestamp,
) -> String {
    let mut header = vec!["NAME", "READY", "VERSION", "FLEET", "AGE"];
    if all_namespaces {
        header.insert(0, "NAMESPACE");
    }
    if wide {
        header.extend(["REASON", "MESSAGE"]);
    }
    let mut t = table(&header);
    for ac in items {
        let status = ac.status.clone().unwrap_or_default();
        let ready = conditions::find(&status.conditions, conditions::READY);
        let mut row = vec![
            ac.name_any(),
            if ready.is_none() {
                "Unknown".into()
            } else {
                status.ready.to_string()
            },
            status.version.clone().unwrap_or_else(|| "-".into()),
            ac.labels()
                .get(FLEET_NAME)
                .cloned()
                .unwrap_or_else(|| "-".into()),
            age(ac.metadata.creation_timestamp.as_ref(), now),
        ];
        if all_namespaces {
            row.insert(0, ac.namespace().unwrap_or_default());
        }
        if wide {
            row.push(ready.map_or("-".into(), |c| c.reason.clone()));
            row.push(ready.map_or("-".into(), |c| c.message.clone()));
        }
        t.add_row(row);
    }
    render(t)
}

/// NAMESPACE (with -A), NAME, PHASE, READY x/y, AGE; `wide` adds REASON and UNREADY.
pub fn fleets(items: &[Fleet], all_namespaces: bool, wide: bool, now: Timestamp) -> String {
    let mut header = vec!["NAME", "PHASE", "READY", "AGE"];
    if all_namespaces {
        header.insert(0, "NAMESPACE");
    }
    if wide {
        header.extend(["REASON", "UNREADY"]);
    }
    let mut t = table(&header);
    for fleet in items {
        let status = fleet.status.clone().unwrap_or_default();
        let total = fleet.spec.clusters.len();
        let mut row = vec![
            fleet.name_any(),
            status.phase.clone().unwrap_or_else(|| "Pending".into()),
            format!("{}/{}", status.ready_clusters, total),
            age(fleet.metadata.creation_timestamp.as_ref(), now),
        ];
        if all_namespaces {
            row.insert(0, fleet.namespace().unwrap_or_default());
        }
        if wide {
            row.push(status.reason.clone().unwrap_or_else(|| "-".into()));
            let unready: Vec<String> = status
                .clusters
                .iter()
                .filter(|c| !c.ready)
                .map(|c| format!("{}({})", c.name, c.reason.as_deref().unwrap_or("NotReady")))
                .collect();
            row.push(if unready.is_empty() {
                "-".into()
            } else {
                unready.join(",")
            });
        }
        t.add_row(row);
    }
    render(t)
}

/// NAMESPACE (with -A), NAME, REVISION, SYNCED x/y, READY, AGE; `wide` adds REASON.
pub fn applications(
    items: &[Application],
    all_namespaces: bool,
    wide: bool,
    now: Timestamp,
) -> String {
    let mut header = vec!["NAME", "REVISION", "SYNCED", "READY", "AGE"];
    if all_namespaces {
        header.insert(0, "NAMESPACE");
    }
    if wide {
        header.push("REASON");
    }
    let mut t = table(&header);
    for app in items {
        let status = app.status.clone().unwrap_or_default();
        let ready = conditions::find(&status.conditions, conditions::READY);
        let mut row = vec![
            app.name_any(),
            status
                .source_revision
                .as_deref()
                .map(short_revision)
                .unwrap_or_else(|| "-".into()),
            status.synced.clone().unwrap_or_else(|| "-".into()),
            ready.map_or("Unknown".into(), |c| c.status.clone()),
            age(app.metadata.creation_timestamp.as_ref(), now),
        ];
        if all_namespaces {
            row.insert(0, app.namespace().unwrap_or_default());
        }
        if wide {
            row.push(ready.map_or("-".into(), |c| c.reason.clone()));
        }
        t.add_row(row);
    }
    render(t)
}

/// `master@sha1:0123456789abcdef…` → `master@sha1:0123456`: enough to tell commits apart.
pub fn short_revision(revision: &str) -> String {
    match revision.split_once(':') {
        Some((prefix, digest)) if digest.len() > 7 => format!("{prefix}:{}", &digest[..7]),
        _ => revision.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kurator_api::{
        cluster::{AttachedClusterSpec, AttachedClusterStatus, SecretKeyRef},
        conditions::{Desired, merge},
        fleet::{ClusterKind, FleetCluster, FleetClusterStatus, FleetSpec, FleetStatus},
    };

    fn t(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    fn attached(name: &str, ready: Option<bool>, fleet: Option<&str>) -> AttachedCluster {
        let mut ac = AttachedCluster::new(
            name,
            AttachedClusterSpec {
                kubeconfig: SecretKeyRef {
                    name: name.into(),
                    key: "value".into(),
                },
            },
        );
        ac.metadata.namespace = Some("default".into());
        ac.metadata.creation_timestamp = Some(t(0));
        if let Some(fleet) = fleet {
            ac.metadata.labels = Some([(FLEET_NAME.to_string(), fleet.to_string())].into());
        }
        ac.status = ready.map(|ready| {
            let (reason, message) = if ready {
                ("Healthy", "API server answers")
            } else {
                ("Unreachable", "connection refused")
            };
            AttachedClusterStatus {
                ready,
                version: Some("v1.35.4".into()),
                conditions: merge(
                    &[],
                    vec![Desired::new("Ready", ready, reason, message)],
                    Some(1),
                    t(0),
                ),
                observed_generation: Some(1),
            }
        });
        ac
    }

    #[test]
    fn cluster_table() {
        let items = [
            attached("kurator-member1", Some(true), Some("quickstart")),
            attached("kurator-member2", Some(false), Some("quickstart")),
            attached("new", None, None),
        ];
        let now = Timestamp::from_second(3 * 3600).unwrap();
        insta::assert_snapshot!(clusters(&items, false, false, now), @r"
        NAME             READY    VERSION  FLEET       AGE
        kurator-member1  true     v1.35.4  quickstart  3h
        kurator-member2  false    v1.35.4  quickstart  3h
        new              Unknown  -        -           3h
        ");
        insta::assert_snapshot!(clusters(&items[1..2], true, true, now), @r"
        NAMESPACE  NAME             READY  VERSION  FLEET       AGE  REASON       MESSAGE
        default    kurator-member2  false  v1.35.4  quickstart  3h   Unreachable  connection refused
        ");
    }

    #[test]
    fn fleet_table() {
        let mut fleet = Fleet::new(
            "quickstart",
            FleetSpec {
                clusters: ["m1", "m2"]
                    .map(|n| FleetCluster {
                        name: n.into(),
                        kind: ClusterKind::AttachedCluster,
                    })
                    .to_vec(),
                plugin: None,
            },
        );
        fleet.metadata.creation_timestamp = Some(t(0));
        fleet.status = Some(FleetStatus {
            phase: Some("Running".into()),
            reason: Some("ClustersNotReady".into()),
            ready_clusters: 1,
            un_ready_clusters: 1,
            clusters: vec![FleetClusterStatus {
                name: "m2".into(),
                kind: ClusterKind::AttachedCluster,
                ready: false,
                reason: Some("Unreachable".into()),
                message: None,
            }],
            ..Default::default()
        });
        let now = Timestamp::from_second(90).unwrap();
        insta::assert_snapshot!(fleets(std::slice::from_ref(&fleet), false, true, now), @r"
        NAME        PHASE    READY  AGE  REASON            UNREADY
        quickstart  Running  1/2    90s  ClustersNotReady  m2(Unreachable)
        ");
    }

    #[test]
    fn application_table() {
        let mut app: Application = serde_saphyr::from_str(
            "metadata: {name: demo, namespace: default}\nspec:\n  source:\n    gitRepository: {url: 'https://e.com/r.git', interval: 1m}\n  destination: {fleet: quickstart}\n  syncPolicies:\n  - kustomization: {interval: 1m, prune: true}\n",
        )
        .unwrap();
        app.metadata.creation_timestamp = Some(t(0));
        app.status = Some(kurator_api::apps::ApplicationStatus {
            source_revision: Some("master@sha1:0123456789abcdef0123456789abcdef01234567".into()),
            synced: Some("1/2".into()),
            conditions: merge(
                &[],
                vec![Desired::new("Ready", false, "NotSynced", "m2 behind")],
                Some(1),
                t(0),
            ),
            ..Default::default()
        });
        let now = Timestamp::from_second(600).unwrap();
        insta::assert_snapshot!(applications(std::slice::from_ref(&app), false, true, now), @r"
        NAME  REVISION             SYNCED  READY  AGE  REASON
        demo  master@sha1:0123456  1/2     False  10m  NotSynced
        ");
    }

    #[test]
    fn ages() {
        let now = Timestamp::from_second(200_000).unwrap();
        assert_eq!(age(Some(&t(200_000 - 59)), now), "59s");
        assert_eq!(age(Some(&t(200_000 - 600)), now), "10m");
        assert_eq!(age(Some(&t(200_000 - 10_800)), now), "3h");
        assert_eq!(age(Some(&t(0)), now), "2d");
        assert_eq!(age(None, now), "<unknown>");
    }
}
