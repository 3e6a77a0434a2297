//! Pure: the Fleet controller's part of the status (membership, phase, `Ready`) from the
//! membership plan and the plugin conditions the plugins controller wrote.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kurator_api::{
    Fleet,
    conditions::{self, Desired},
    fleet::{FleetClusterStatus, FleetStatus, phase},
};

use super::membership::{Plan, reason as member_reason};
use crate::plugins::{Plugin, enabled};

/// The condition types this controller owns; the plugins controller owns one per plugin.
pub const OWN_CONDITIONS: [&str; 3] = [
    conditions::READY,
    reason::CLUSTERS_READY,
    reason::MEMBERSHIP_CONFLICT,
];

/// The part of a stored status this controller writes, for comparison with what it would
/// write now.
pub fn own_part(status: &FleetStatus) -> FleetStatus {
    let mut own = FleetStatus {
        plugin_endpoints: Default::default(),
        plugins: Vec::new(),
        policy_report: None,
        ..status.clone()
    };
    own.conditions
        .retain(|c| OWN_CONDITIONS.contains(&c.type_.as_str()));
    own.conditions.sort_by_key(|c| {
        OWN_CONDITIONS
            .iter()
            .position(|t| *t == c.type_)
            .unwrap_or_default()
    });
    own
}

/// A plugin the fleet is waiting for: its condition type and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingPlugin {
    pub condition: &'static str,
    pub message: String,
}

/// The enabled plugins whose condition (written by the plugins controller) is not True for
/// the current generation.
pub fn plugins_pending(fleet: &Fleet) -> Vec<PendingPlugin> {
    let config = fleet.spec.plugin.clone().unwrap_or_default();
    let stored = fleet
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let generation = fleet.metadata.generation;
    enabled(&config)
        .into_iter()
        .filter_map(|plugin: Plugin| {
            let condition = plugin.condition();
            let message = match conditions::find(stored, condition) {
                None => "waiting for the plugins controller".to_string(),
                Some(c) if c.observed_generation < generation => format!(
                    "waiting for the plugins controller to act on generation {}",
                    generation.unwrap_or_default()
                ),
                Some(c) if c.status != conditions::TRUE => c.message.clone(),
                Some(_) => return None,
            };
            Some(PendingPlugin { condition, message })
        })
        .collect()
}

/// Fleet condition types and reasons (documented in docs/conditions.md).
pub mod reason {
    pub const CLUSTERS_READY: &str = "ClustersReady";
    pub const MEMBERSHIP_CONFLICT: &str = "MembershipConflict";

    pub const ALL_CLUSTERS_READY: &str = "AllClustersReady";
    pub const CLUSTERS_NOT_READY: &str = "ClustersNotReady";
    pub const NO_CLUSTERS: &str = "NoClusters";
    pub const NO_CONFLICT: &str = "NoConflict";
    pub const PLUGINS_NOT_READY: &str = "PluginsNotReady";
}

/// At most this many clusters are named in a condition message; the rest are counted.
const NAMED_IN_MESSAGE: usize = 10;

pub fn build_status(
    fleet: &Fleet,
    plan: &Plan,
    pending_plugins: &[PendingPlugin],
    now: Time,
) -> FleetStatus {
    let previous = fleet.status.clone().unwrap_or_default();
    let members = &plan.members;
    let ready = members.iter().filter(|m| m.ready).count();
    let unready: Vec<&FleetClusterStatus> = members.iter().filter(|m| !m.ready).collect();
    let conflicts: Vec<&FleetClusterStatus> = unready
        .iter()
        .copied()
        .filter(|m| m.reason.as_deref() == Some(member_reason::CLAIMED_BY_OTHER_FLEET))
        .collect();

    let clusters_ready = if members.is_empty() {
        Desired::new(
            reason::CLUSTERS_READY,
            true,
            reason::NO_CLUSTERS,
            "the fleet lists no clusters",
        )
    } else if unready.is_empty() {
        Desired::new(
            reason::CLUSTERS_READY,
            true,
            reason::ALL_CLUSTERS_READY,
            format!("all {ready} clusters are ready"),
        )
    } else {
        Desired::new(
            reason::CLUSTERS_READY,
            false,
            reason::CLUSTERS_NOT_READY,
            format!(
                "{} of {} clusters not ready: {}",
                unready.len(),
                members.len(),
                describe(&unready)
            ),
        )
    };
    let conflict = if conflicts.is_empty() {
        Desired::new(
            reason::MEMBERSHIP_CONFLICT,
            false,
            reason::NO_CONFLICT,
            "no cluster is claimed by another fleet",
        )
    } else {
        Desired::new(
            reason::MEMBERSHIP_CONFLICT,
            true,
            member_reason::CLAIMED_BY_OTHER_FLEET,
            format!(
                "clusters already in another fleet are left out: {}",
                describe(&conflicts)
            ),
        )
    };
    let ready_condition = if !conflicts.is_empty() {
        Desired::new(
            conditions::READY,
            false,
            reason::MEMBERSHIP_CONFLICT,
            conflict.message.clone(),
        )
    } else if clusters_ready.status == conditions::TRUE && !pending_plugins.is_empty() {
        let named: Vec<String> = pending_plugins
            .iter()
            .map(|p| format!("{}: {}", p.condition, p.message))
            .collect();
        Desired::new(
            conditions::READY,
            false,
            reason::PLUGINS_NOT_READY,
            named.join("; "),
        )
    } else {
        Desired {
            type_: conditions::READY.into(),
            ..clusters_ready.clone()
        }
    };
    let is_ready = ready_condition.status == conditions::TRUE;
    let generation = fleet.metadata.generation;
    FleetStatus {
        phase: Some(
            if is_ready {
                phase::READY
            } else {
                phase::RUNNING
            }
            .to_string(),
        ),
        reason: Some(ready_condition.reason.clone()),
        ready_clusters: ready as i32,
        un_ready_clusters: unready.len() as i32,
        credential_secret: previous.credential_secret.clone(),
        clusters: members.clone(),
        conditions: conditions::merge(
            &previous.conditions,
            vec![ready_condition, clusters_ready, conflict],
            generation,
            now,
        ),
        observed_generation: generation,
        // The plugins controller writes the rest.
        ..Default::default()
    }
}

/// `name (Reason: message); ...`, naming at most NAMED_IN_MESSAGE clusters.
fn describe(members: &[&FleetClusterStatus]) -> String {
    let mut parts: Vec<String> = members
        .iter()
        .take(NAMED_IN_MESSAGE)
        .map(|m| {
            let reason = m.reason.as_deref().unwrap_or("NotReady");
            match &m.message {
                Some(message) => format!("{} ({reason}: {message})", m.name),
                None => format!("{} ({reason})", m.name),
            }
        })
        .collect();
    if members.len() > NAMED_IN_MESSAGE {
        parts.push(format!("and {} more", members.len() - NAMED_IN_MESSAGE));
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;
    use kurator_api::fleet::ClusterKind;

    fn m(name: &str, ready: bool, reason: &str) -> FleetClusterStatus {
        FleetClusterStatus {
            name: name.into(),
            kind: ClusterKind::AttachedCluster,
            ready,
            reason: Some(reason.into()),
            message: Some("why".into()),
        }
    }

    fn now() -> Time {
        Time(Timestamp::from_second(100).unwrap())
    }

    #[test]
    fn all_ready_is_phase_ready() {
        let plan = Plan {
            members: vec![m("a", true, "Healthy"), m("b", true, "Healthy")],
            ..Default::default()
        };
        let s = build_status(&Fleet::new("f", Default::default()), &plan, &[], now());
        assert_eq!(s.phase.as_deref(), Some("Ready"));
        assert_eq!((s.ready_clusters, s.un_ready_clusters), (2, 0));
        assert!(conditions::is_true(&s.conditions, "Ready"));
    }

    #[test]
    fn unready_members_are_named_with_their_reason() {
        let plan = Plan {
            members: vec![m("a", true, "Healthy"), m("b", false, "Unreachable")],
            ..Default::default()
        };
        let s = build_status(&Fleet::new("f", Default::default()), &plan, &[], now());
        assert_eq!(s.phase.as_deref(), Some("Running"));
        let c = conditions::find(&s.conditions, reason::CLUSTERS_READY).unwrap();
        assert_eq!(c.message, "1 of 2 clusters not ready: b (Unreachable: why)");
        assert!(!conditions::is_true(&s.conditions, "Ready"));
    }

    #[test]
    fn conflicts_make_the_fleet_unready_with_their_own_reason() {
        let plan = Plan {
            members: vec![m("a", false, member_reason::CLAIMED_BY_OTHER_FLEET)],
            ..Default::default()
        };
        let s = build_status(&Fleet::new("f", Default::default()), &plan, &[], now());
        let ready = conditions::find(&s.conditions, "Ready").unwrap();
        assert_eq!(ready.reason, reason::MEMBERSHIP_CONFLICT);
        assert!(conditions::is_true(
            &s.conditions,
            reason::MEMBERSHIP_CONFLICT
        ));
    }

    #[test]
    fn long_lists_are_cut() {
        let members: Vec<_> = (0..15)
            .map(|i| m(&format!("c{i}"), false, "NotFound"))
            .collect();
        let s = build_status(
            &Fleet::new("f", Default::default()),
            &Plan {
                members,
                ..Default::default()
            },
            &[],
            now(),
        );
        let c = conditions::find(&s.conditions, reason::CLUSTERS_READY).unwrap();
        assert!(c.message.ends_with("and 5 more"), "{}", c.message);
    }

    fn with_metric(generation: i64, metric: Option<(&str, i64)>) -> Fleet {
        let mut fleet: Fleet = serde_json::from_value(serde_json::json!({
            "apiVersion": "fleet.kurator.dev/v1alpha1",
            "kind": "Fleet",
            "metadata": { "name": "f", "namespace": "ns", "generation": generation },
            "spec": { "plugin": { "metric": { "thanos": { "objectStoreConfig": { "secretName": "s" } } } } }
        }))
        .unwrap();
        if let Some((status, observed)) = metric {
            let mut c = conditions::merge(
                &[],
                vec![Desired::new(
                    "MetricReady",
                    status == "True",
                    "Installed",
                    "all good",
                )],
                Some(observed),
                now(),
            );
            c[0].status = status.into();
            fleet.status = Some(FleetStatus {
                conditions: c,
                ..Default::default()
            });
        }
        fleet
    }

    #[test]
    fn the_fleet_waits_for_plugin_conditions_of_the_current_generation() {
        let missing = plugins_pending(&with_metric(2, None));
        assert_eq!(missing[0].condition, "MetricReady");
        assert!(
            missing[0]
                .message
                .contains("waiting for the plugins controller")
        );
        let stale = plugins_pending(&with_metric(2, Some(("True", 1))));
        assert!(stale[0].message.contains("generation 2"), "{stale:?}");
        let unready = plugins_pending(&with_metric(2, Some(("False", 2))));
        assert_eq!(unready[0].message, "all good");
        assert!(plugins_pending(&with_metric(2, Some(("True", 2)))).is_empty());
        // A plugin that is not enabled is not waited for.
        assert!(plugins_pending(&Fleet::new("f", Default::default())).is_empty());
    }

    #[test]
    fn pending_plugins_make_a_ready_fleet_unready() {
        let plan = Plan {
            members: vec![m("a", true, "Healthy")],
            ..Default::default()
        };
        let pending = [PendingPlugin {
            condition: "MetricReady",
            message: "thanos not ready".into(),
        }];
        let s = build_status(&Fleet::new("f", Default::default()), &plan, &pending, now());
        let ready = conditions::find(&s.conditions, "Ready").unwrap();
        assert_eq!(ready.reason, reason::PLUGINS_NOT_READY);
        assert_eq!(ready.message, "MetricReady: thanos not ready");
        // The plugins controller's condition is not part of this controller's write.
        assert!(conditions::find(&s.conditions, "MetricReady").is_none());
    }

    #[test]
    fn the_own_part_leaves_out_what_the_plugins_controller_writes() {
        let mut stored = with_metric(1, Some(("True", 1))).status.unwrap();
        stored.plugins = vec![Default::default()];
        stored.conditions.extend(conditions::merge(
            &[],
            vec![
                Desired::new(reason::CLUSTERS_READY, true, "x", "y"),
                Desired::new(conditions::READY, true, "x", "y"),
            ],
            Some(1),
            now(),
        ));
        let own = own_part(&stored);
        assert!(own.plugins.is_empty());
        let types: Vec<&str> = own.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, vec![conditions::READY, reason::CLUSTERS_READY]);
    }
}
