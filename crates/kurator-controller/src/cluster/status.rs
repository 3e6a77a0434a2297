//! Pure: the AttachedCluster status that follows from one health check.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kurator_api::{
    AttachedCluster,
    cluster::AttachedClusterStatus,
    conditions::{self, Desired},
};

/// Stable reasons of the AttachedCluster `Ready` condition (documented in docs/conditions.md).
pub mod reason {
    pub const HEALTHY: &str = "Healthy";
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    pub const KEY_NOT_FOUND: &str = "KeyNotFound";
    pub const KUBECONFIG_INVALID: &str = "KubeconfigInvalid";
    pub const UNREACHABLE: &str = "Unreachable";
    pub const UNAUTHORIZED: &str = "Unauthorized";
    pub const FORBIDDEN: &str = "Forbidden";
}

/// Outcome of one health check.
#[derive(Clone, Debug, PartialEq)]
pub enum Health {
    Healthy {
        version: String,
    },
    Unhealthy {
        reason: &'static str,
        message: String,
    },
}

impl Health {
    pub fn unhealthy(reason: &'static str, message: impl Into<String>) -> Self {
        Health::Unhealthy {
            reason,
            message: message.into(),
        }
    }
}

/// Status for `ac` after `health`. The last known version is kept while the cluster is down.
pub fn build_status(ac: &AttachedCluster, health: &Health, now: Time) -> AttachedClusterStatus {
    let previous = ac.status.clone().unwrap_or_default();
    let (ready, version, condition) = match health {
        Health::Healthy { version } => (
            true,
            Some(version.clone()),
            Desired::new(
                conditions::READY,
                true,
                reason::HEALTHY,
                format!("API server answers, version {version}"),
            ),
        ),
        Health::Unhealthy { reason, message } => (
            false,
            previous.version.clone(),
            Desired::new(conditions::READY, false, reason, message.clone()),
        ),
    };
    let generation = ac.metadata.generation;
    AttachedClusterStatus {
        ready,
        version,
        conditions: conditions::merge(&previous.conditions, vec![condition], generation, now),
        observed_generation: generation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn healthy_then_unreachable_keeps_version_and_flips_time() {
        let mut ac = AttachedCluster::new("m1", Default::default());
        ac.metadata.generation = Some(3);
        let healthy = build_status(
            &ac,
            &Health::Healthy {
                version: "v1.35.4".into(),
            },
            at(1),
        );
        assert!(healthy.ready);
        assert_eq!(healthy.observed_generation, Some(3));
        ac.status = Some(healthy.clone());

        let again = build_status(
            &ac,
            &Health::Healthy {
                version: "v1.35.4".into(),
            },
            at(2),
        );
        assert_eq!(again, healthy, "a second identical check changes nothing");

        let down = build_status(
            &ac,
            &Health::unhealthy(reason::UNREACHABLE, "refused"),
            at(3),
        );
        assert!(!down.ready);
        assert_eq!(down.version.as_deref(), Some("v1.35.4"));
        let ready = conditions::find(&down.conditions, conditions::READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "Unreachable")
        );
        assert_eq!(ready.last_transition_time, at(3));
    }
}
