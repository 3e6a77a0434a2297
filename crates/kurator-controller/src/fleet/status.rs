//! Pure: Fleet status from the membership plan.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kurator_api::{
    Fleet,
    conditions::{self, Desired},
    fleet::{FleetClusterStatus, FleetStatus, phase},
};

use super::membership::{Plan, reason as member_reason};
use crate::plugins::reconcile::Outcome;

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

pub fn build_status(fleet: &Fleet, plan: &Plan, plugins: &Outcome, now: Time) -> FleetStatus {
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
    let unready_plugins: Vec<&Desired> = plugins
        .conditions
        .iter()
        .filter(|c| c.status != conditions::TRUE)
        .collect();
    let ready_condition = if !conflicts.is_empty() {
        Desired::new(
            conditions::READY,
            false,
            reason::MEMBERSHIP_CONFLICT,
            conflict.message.clone(),
        )
    } else if clusters_ready.status == conditions::TRUE && !unready_plugins.is_empty() {
        let named: Vec<String> = unready_plugins
            .iter()
            .map(|c| format!("{}: {}", c.type_, c.message))
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
        plugin_endpoints: plugins.endpoints.clone(),
        clusters: members.clone(),
        plugins: plugins.components.clone(),
        policy_report: plugins.policy_report.clone(),
        conditions: conditions::merge(
            &previous.conditions,
            [
                vec![ready_condition, clusters_ready, conflict],
                plugins.conditions.clone(),
            ]
            .concat(),
            generation,
            now,
        ),
        observed_generation: generation,
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
        let s = build_status(
            &Fleet::new("f", Default::default()),
            &plan,
            &Outcome::default(),
            now(),
        );
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
        let s = build_status(
            &Fleet::new("f", Default::default()),
            &plan,
            &Outcome::default(),
            now(),
        );
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
        let s = build_status(
            &Fleet::new("f", Default::default()),
            &plan,
            &Outcome::default(),
            now(),
        );
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
            &Outcome::default(),
            now(),
        );
        let c = conditions::find(&s.conditions, reason::CLUSTERS_READY).unwrap();
        assert!(c.message.ends_with("and 5 more"), "{}", c.message);
    }
}
