//! Pure: which clusters a fleet owns, which labels to add or remove, and how each member looks.
//!
//! A cluster belongs to one fleet. Ownership is decided the same way by every fleet, so two
//! fleets claiming one cluster never fight over its label: the fleet whose name the label
//! already carries keeps it while it still lists the cluster; otherwise the oldest claimant
//! (creation time, then name) takes it.

use std::sync::Arc;

use kube::ResourceExt;
use kurator_api::{
    Fleet,
    fleet::{ClusterKind, FleetCluster, FleetClusterStatus},
};

/// Reasons a member is not ready (documented in docs/conditions.md).
pub mod reason {
    pub const NOT_FOUND: &str = "NotFound";
    pub const CLAIMED_BY_OTHER_FLEET: &str = "ClaimedByOtherFleet";
    pub use kurator_api::member::reason::{PENDING, PROVISIONING};
}

/// A cluster object as the stores show it.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterView {
    pub ready: bool,
    /// Why it is (not) ready, from the cluster's own status.
    pub reason: String,
    pub message: String,
    /// Current value of the `fleet.kurator.dev/fleet-name` label.
    pub fleet_label: Option<String>,
}

/// What the fleet controller should do and report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub add_label: Vec<FleetCluster>,
    pub remove_label: Vec<FleetCluster>,
    /// One entry per spec cluster, in spec order.
    pub members: Vec<FleetClusterStatus>,
}

/// The fleet that owns `cluster`, among the `fleets` of its namespace.
pub fn owner<'a>(
    cluster: &FleetCluster,
    label: Option<&str>,
    fleets: &'a [Arc<Fleet>],
) -> Option<&'a Fleet> {
    let claimants = fleets
        .iter()
        .filter(|f| f.metadata.deletion_timestamp.is_none() && f.spec.clusters.contains(cluster));
    let claimants: Vec<&Fleet> = claimants.map(|f| f.as_ref()).collect();
    if let Some(holder) = claimants
        .iter()
        .find(|f| Some(f.name_any().as_str()) == label)
    {
        return Some(holder);
    }
    claimants.into_iter().min_by(|a, b| {
        let key = |f: &Fleet| {
            (
                f.metadata.creation_timestamp.as_ref().map(|t| t.0),
                f.name_any(),
            )
        };
        key(a).cmp(&key(b))
    })
}

/// Plans membership for `fleet`. `lookup` finds a cluster object in the fleet's namespace;
/// `labelled` lists the clusters that carry this fleet's label today; `fleets` are all the
/// fleets of the namespace (this one included).
pub fn plan(
    fleet: &Fleet,
    lookup: impl Fn(&FleetCluster) -> Option<ClusterView>,
    labelled: &[FleetCluster],
    fleets: &[Arc<Fleet>],
) -> Plan {
    let me = fleet.name_any();
    let mut plan = Plan::default();
    for cluster in &fleet.spec.clusters {
        let Some(view) = lookup(cluster) else {
            plan.members.push(member(
                cluster,
                false,
                reason::NOT_FOUND,
                format!("{} {} not found", cluster.kind, cluster.name),
            ));
            continue;
        };
        let owner_name = owner(cluster, view.fleet_label.as_deref(), fleets).map(|f| f.name_any());
        match owner_name {
            Some(owner) if owner != me => {
                plan.members.push(member(
                    cluster,
                    false,
                    reason::CLAIMED_BY_OTHER_FLEET,
                    format!(
                        "{} {} already belongs to fleet {owner}",
                        cluster.kind, cluster.name
                    ),
                ));
                continue;
            }
            _ => {}
        }
        if view.fleet_label.as_deref() != Some(me.as_str()) {
            plan.add_label.push(cluster.clone());
        }
        plan.members
            .push(member(cluster, view.ready, &view.reason, view.message));
    }
    for cluster in labelled {
        let still_mine = plan.members.iter().any(|m| {
            m.name == cluster.name
                && m.kind == cluster.kind
                && m.reason.as_deref() != Some(reason::CLAIMED_BY_OTHER_FLEET)
        });
        if !still_mine {
            plan.remove_label.push(cluster.clone());
        }
    }
    plan
}

fn member(
    cluster: &FleetCluster,
    ready: bool,
    reason: &str,
    message: String,
) -> FleetClusterStatus {
    FleetClusterStatus {
        name: cluster.name.clone(),
        kind: cluster.kind,
        ready,
        reason: (!reason.is_empty()).then(|| reason.to_string()),
        message: (!message.is_empty()).then_some(message),
    }
}

/// Shorthand used by tests and the controller.
pub fn cluster_ref(kind: ClusterKind, name: &str) -> FleetCluster {
    FleetCluster {
        name: name.to_string(),
        kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
    use kurator_api::fleet::FleetSpec;

    fn fleet(name: &str, created: i64, clusters: &[&str]) -> Arc<Fleet> {
        let mut f = Fleet::new(
            name,
            FleetSpec {
                clusters: clusters
                    .iter()
                    .map(|c| cluster_ref(ClusterKind::AttachedCluster, c))
                    .collect(),
                plugin: None,
            },
        );
        f.metadata.creation_timestamp = Some(Time(Timestamp::from_second(created).unwrap()));
        Arc::new(f)
    }

    fn view(ready: bool, label: Option<&str>) -> ClusterView {
        ClusterView {
            ready,
            reason: if ready {
                "Healthy".into()
            } else {
                "Unreachable".into()
            },
            message: String::new(),
            fleet_label: label.map(str::to_string),
        }
    }

    #[test]
    fn labels_new_members_and_reports_missing_ones() {
        let f = fleet("quickstart", 1, &["m1", "m2"]);
        let p = plan(
            &f,
            |c| (c.name == "m1").then(|| view(true, None)),
            &[],
            std::slice::from_ref(&f),
        );
        assert_eq!(
            p.add_label,
            vec![cluster_ref(ClusterKind::AttachedCluster, "m1")]
        );
        assert_eq!(p.members[1].reason.as_deref(), Some(reason::NOT_FOUND));
        assert!(!p.members[1].ready);
    }

    #[test]
    fn members_that_left_lose_the_label() {
        let f = fleet("quickstart", 1, &["m1"]);
        let labelled = [
            cluster_ref(ClusterKind::AttachedCluster, "m1"),
            cluster_ref(ClusterKind::AttachedCluster, "m2"),
        ];
        let p = plan(
            &f,
            |_| Some(view(true, Some("quickstart"))),
            &labelled,
            std::slice::from_ref(&f),
        );
        assert!(p.add_label.is_empty());
        assert_eq!(
            p.remove_label,
            vec![cluster_ref(ClusterKind::AttachedCluster, "m2")]
        );
    }

    #[test]
    fn the_label_holder_keeps_a_contested_cluster() {
        let older = fleet("a", 1, &["m1"]);
        let newer = fleet("b", 2, &["m1"]);
        let fleets = [older.clone(), newer.clone()];
        // b got there first (it holds the label): b keeps it, a reports the conflict.
        let p_a = plan(&older, |_| Some(view(true, Some("b"))), &[], &fleets);
        assert_eq!(
            p_a.members[0].reason.as_deref(),
            Some(reason::CLAIMED_BY_OTHER_FLEET)
        );
        assert!(p_a.add_label.is_empty());
        let p_b = plan(&newer, |_| Some(view(true, Some("b"))), &[], &fleets);
        assert!(p_b.members[0].ready);
    }

    #[test]
    fn unlabelled_contested_cluster_goes_to_the_oldest_fleet_from_both_sides() {
        let older = fleet("z-old", 1, &["m1"]);
        let newer = fleet("a-new", 2, &["m1"]);
        let fleets = [older.clone(), newer.clone()];
        let p_old = plan(&older, |_| Some(view(true, None)), &[], &fleets);
        let p_new = plan(&newer, |_| Some(view(true, None)), &[], &fleets);
        assert_eq!(p_old.add_label.len(), 1);
        assert!(p_new.add_label.is_empty());
        assert_eq!(
            p_new.members[0].reason.as_deref(),
            Some(reason::CLAIMED_BY_OTHER_FLEET)
        );
    }

    #[test]
    fn stale_label_of_a_fleet_that_no_longer_lists_the_cluster_is_taken_over() {
        let gone = fleet("old", 1, &[]);
        let f = fleet("new", 2, &["m1"]);
        let fleets = [gone, f.clone()];
        let p = plan(&f, |_| Some(view(false, Some("old"))), &[], &fleets);
        assert_eq!(p.add_label.len(), 1);
        assert!(!p.members[0].ready);
        assert_eq!(p.members[0].reason.as_deref(), Some("Unreachable"));
    }
}
