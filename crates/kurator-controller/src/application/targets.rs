//! Pure: which clusters each sync policy deploys to (the dereference step's decisions).
//!
//! A policy's destination is its own, else the Application's. Its clusters are the members
//! of that fleet (listed in the fleet's spec *and* carrying its membership label, so a cluster
//! claimed by another fleet is not used), filtered by `clusterSelector.matchLabels`.

use std::collections::BTreeMap;

use kurator_api::{
    Application, Fleet,
    cluster::SecretKeyRef,
    fleet::{ClusterKind, FleetCluster},
};

use super::build::{PolicyTargets, Target};

/// A cluster object as the stores show it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterInfo {
    pub labels: BTreeMap<String, String>,
    /// Where its kubeconfig lives; `None` while a CustomCluster has none yet.
    pub kubeconfig: Option<SecretKeyRef>,
    pub ready: bool,
}

/// The resolution of every policy.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resolved {
    /// Same index as `spec.syncPolicies`.
    pub policies: Vec<PolicyTargets>,
    /// Readiness of each targeted cluster, by (kind, name).
    pub cluster_ready: BTreeMap<(ClusterKind, String), bool>,
    /// Labels of each targeted cluster, by (kind, name): what staged rollout stages select.
    pub cluster_labels: BTreeMap<(ClusterKind, String), BTreeMap<String, String>>,
    /// Human-readable problems (missing fleet, cluster without kubeconfig ...).
    pub problems: Vec<String>,
    /// False when a destination could not be read: nothing may be pruned then, or a
    /// temporarily missing fleet would delete its workloads.
    pub complete: bool,
}

/// Resolves every policy of `app`. `fleet` looks a fleet up in the app's namespace;
/// `cluster` looks a cluster object up there.
pub fn resolve(
    app: &Application,
    fleet: impl Fn(&str) -> Option<Fleet>,
    cluster: impl Fn(&FleetCluster) -> Option<ClusterInfo>,
) -> Resolved {
    let mut resolved = Resolved {
        complete: true,
        ..Default::default()
    };
    for (index, policy) in app.spec.sync_policies.iter().enumerate() {
        let mut targets = PolicyTargets {
            targets: Vec::new(),
            substitute: policy.cluster_variables == Some(true) && policy.kustomization.is_some(),
        };
        let Some(destination) = policy
            .destination
            .as_ref()
            .or(app.spec.destination.as_ref())
        else {
            // Admission rejects this; kept for objects stored before the rule existed.
            resolved
                .problems
                .push(format!("sync policy {index} has no destination"));
            resolved.complete = false;
            resolved.policies.push(targets);
            continue;
        };
        let Some(fleet_obj) = fleet(&destination.fleet) else {
            resolved
                .problems
                .push(format!("fleet {} not found", destination.fleet));
            resolved.complete = false;
            resolved.policies.push(targets);
            continue;
        };
        let selector = destination
            .cluster_selector
            .as_ref()
            .map(|s| &s.match_labels);
        for member in &fleet_obj.spec.clusters {
            let Some(info) = cluster(member) else {
                continue;
            };
            let is_member =
                info.labels.get(kurator_api::labels::FLEET_NAME) == Some(&destination.fleet);
            let selected = selector
                .is_none_or(|wanted| wanted.iter().all(|(k, v)| info.labels.get(k) == Some(v)));
            if !is_member || !selected {
                continue;
            }
            let Some(kubeconfig) = info.kubeconfig.clone() else {
                resolved.problems.push(format!(
                    "{} {} has no kubeconfig yet",
                    member.kind, member.name
                ));
                continue;
            };
            resolved
                .cluster_ready
                .insert((member.kind, member.name.clone()), info.ready);
            resolved
                .cluster_labels
                .insert((member.kind, member.name.clone()), info.labels.clone());
            targets.targets.push(Target {
                fleet: destination.fleet.clone(),
                cluster_name: member.name.clone(),
                cluster_kind: member.kind,
                kubeconfig,
            });
        }
        resolved.policies.push(targets);
    }
    resolved.problems.sort();
    resolved.problems.dedup();
    resolved
}

#[cfg(test)]
mod tests {
    use super::*;
    use kurator_api::{
        apps::{ApplicationDestination, ClusterSelector},
        fleet::FleetSpec,
        labels::FLEET_NAME,
    };

    fn app(yaml: &str) -> Application {
        serde_saphyr::from_str(yaml).expect("fixture")
    }

    const TWO_POLICIES: &str = "
metadata: {name: demo, namespace: default}
spec:
  source:
    gitRepository: {url: 'https://example.com/repo.git', interval: 1m}
  destination: {fleet: quickstart}
  syncPolicies:
    - kustomization: {interval: 1m, prune: true}
      clusterVariables: true
    - destination:
        fleet: other
      kustomization: {interval: 1m, prune: true}
";

    fn fleet(name: &str, clusters: &[&str]) -> Fleet {
        Fleet::new(
            name,
            FleetSpec {
                clusters: clusters
                    .iter()
                    .map(|c| FleetCluster {
                        name: c.to_string(),
                        kind: ClusterKind::AttachedCluster,
                    })
                    .collect(),
                plugin: None,
            },
        )
    }

    fn info(fleet: &str, extra: &[(&str, &str)], ready: bool) -> ClusterInfo {
        let mut labels: BTreeMap<String, String> = extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        labels.insert(FLEET_NAME.into(), fleet.into());
        ClusterInfo {
            labels,
            kubeconfig: Some(SecretKeyRef {
                name: "kc".into(),
                key: "value".into(),
            }),
            ready,
        }
    }

    #[test]
    fn app_destination_is_the_default_and_missing_fleets_block_pruning() {
        let app = app(TWO_POLICIES);
        let r = resolve(
            &app,
            |n| (n == "quickstart").then(|| fleet(n, &["m1", "m2"])),
            |c| Some(info("quickstart", &[], c.name == "m1")),
        );
        assert_eq!(r.policies[0].targets.len(), 2);
        assert!(r.policies[0].substitute);
        assert!(r.policies[1].targets.is_empty());
        assert_eq!(r.problems, vec!["fleet other not found".to_string()]);
        assert!(!r.complete);
        assert_eq!(
            r.cluster_ready
                .get(&(ClusterKind::AttachedCluster, "m2".into())),
            Some(&false)
        );
    }

    #[test]
    fn selector_and_membership_filter_clusters() {
        let mut app = app(TWO_POLICIES);
        app.spec.sync_policies.truncate(1);
        app.spec.destination = Some(ApplicationDestination {
            fleet: "quickstart".into(),
            cluster_selector: Some(ClusterSelector {
                match_labels: [("env".to_string(), "prod".to_string())].into(),
            }),
        });
        let r = resolve(
            &app,
            |n| Some(fleet(n, &["prod", "dev", "elsewhere", "gone"])),
            |c| match c.name.as_str() {
                "prod" => Some(info("quickstart", &[("env", "prod")], true)),
                "dev" => Some(info("quickstart", &[("env", "dev")], true)),
                // Listed, labelled for the selector, but owned by another fleet.
                "elsewhere" => Some(info("other", &[("env", "prod")], true)),
                _ => None,
            },
        );
        let names: Vec<&str> = r.policies[0]
            .targets
            .iter()
            .map(|t| t.cluster_name.as_str())
            .collect();
        assert_eq!(names, ["prod"]);
        assert!(r.complete);
    }

    #[test]
    fn clusters_without_kubeconfig_are_reported() {
        let mut app = app(TWO_POLICIES);
        app.spec.sync_policies.truncate(1);
        let r = resolve(
            &app,
            |n| Some(fleet(n, &["vm"])),
            |_| {
                Some(ClusterInfo {
                    kubeconfig: None,
                    ..info("quickstart", &[], false)
                })
            },
        );
        assert!(r.policies[0].targets.is_empty());
        assert_eq!(
            r.problems,
            vec!["AttachedCluster vm has no kubeconfig yet".to_string()]
        );
    }
}
