//! What a fleet needs of any of its clusters, whatever the kind ([`AttachedCluster`],
//! [`Cluster`], [`CustomCluster`]): where its kubeconfig is and whether it is ready.

use crate::{
    AttachedCluster, Cluster, CustomCluster,
    cluster::{PROVISIONED_READY_PHASE, SecretKeyRef},
    conditions,
};

/// Reasons of [`ClusterReadiness`] besides the cluster's own (documented in docs/conditions.md).
pub mod reason {
    /// An AttachedCluster the controller has not health-checked yet.
    pub const PENDING: &str = "Pending";
    /// A Cluster or CustomCluster whose phase is not `Ready` (yet).
    pub const PROVISIONING: &str = "Provisioning";
}

/// Whether a cluster can take workloads, and why (not).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterReadiness {
    pub ready: bool,
    /// CamelCase, stable: the cluster's own `Ready` reason, or one of [`reason`], or
    /// [`PROVISIONED_READY_PHASE`] for a ready provisioned cluster.
    pub reason: String,
    /// For people.
    pub message: String,
}

/// A cluster a fleet can list.
pub trait MemberCluster {
    /// The Secret (in the cluster object's namespace) holding the cluster's kubeconfig; `None`
    /// while the cluster does not say yet (a CustomCluster before provisioning).
    fn kubeconfig_ref(&self) -> Option<SecretKeyRef>;
    /// Ready or not, from the object's status alone.
    fn readiness(&self) -> ClusterReadiness;
}

/// Ready as the health check last found it (`status.ready`), with the `Ready` condition's
/// reason and message; [`reason::PENDING`] / "not checked yet" before the first check.
impl MemberCluster for AttachedCluster {
    fn kubeconfig_ref(&self) -> Option<SecretKeyRef> {
        Some(self.spec.kubeconfig.clone())
    }

    fn readiness(&self) -> ClusterReadiness {
        let status = self.status.as_ref();
        let ready = status.is_some_and(|s| s.ready);
        let condition = status.and_then(|s| conditions::find(&s.conditions, conditions::READY));
        ClusterReadiness {
            ready,
            reason: condition.map_or(reason::PENDING.into(), |c| c.reason.clone()),
            message: condition.map_or("not checked yet".into(), |c| c.message.clone()),
        }
    }
}

/// Cluster API's convention: the kubeconfig is in `<name>-kubeconfig`, key `value`.
impl MemberCluster for Cluster {
    fn kubeconfig_ref(&self) -> Option<SecretKeyRef> {
        Some(Cluster::kubeconfig_ref(self))
    }

    fn readiness(&self) -> ClusterReadiness {
        provisioned(self.status.as_ref().and_then(|s| s.phase.as_deref()))
    }
}

/// The kubeconfig Secret named in `status.kubeconfigSecretRef`, key `value`.
impl MemberCluster for CustomCluster {
    fn kubeconfig_ref(&self) -> Option<SecretKeyRef> {
        CustomCluster::kubeconfig_ref(self)
    }

    fn readiness(&self) -> ClusterReadiness {
        provisioned(self.status.as_ref().and_then(|s| s.phase.as_deref()))
    }
}

/// Ready when the phase is [`PROVISIONED_READY_PHASE`], else [`reason::PROVISIONING`];
/// message `phase X` (`phase unknown` without one).
fn provisioned(phase: Option<&str>) -> ClusterReadiness {
    let ready = phase == Some(PROVISIONED_READY_PHASE);
    ClusterReadiness {
        ready,
        reason: if ready {
            PROVISIONED_READY_PHASE.into()
        } else {
            reason::PROVISIONING.into()
        },
        message: format!("phase {}", phase.unwrap_or("unknown")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        cluster::{AttachedClusterSpec, ClusterSpec, CustomClusterSpec, ProvisionedClusterStatus},
        conditions::{Desired, merge},
    };
    use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

    fn readiness(ready: bool, reason: &str, message: &str) -> ClusterReadiness {
        ClusterReadiness {
            ready,
            reason: reason.into(),
            message: message.into(),
        }
    }

    fn attached(checked: Option<(bool, &str, &str)>) -> AttachedCluster {
        let mut ac = AttachedCluster::new(
            "m1",
            AttachedClusterSpec {
                kubeconfig: SecretKeyRef {
                    name: "m1-kubeconfig".into(),
                    key: "config".into(),
                },
            },
        );
        ac.status = checked.map(
            |(ready, reason, message)| crate::cluster::AttachedClusterStatus {
                ready,
                conditions: merge(
                    &[],
                    vec![Desired::new(conditions::READY, ready, reason, message)],
                    None,
                    Time(Timestamp::UNIX_EPOCH),
                ),
                ..Default::default()
            },
        );
        ac
    }

    #[test]
    fn an_attached_cluster_is_ready_as_its_health_check_says() {
        let unchecked = attached(None);
        assert_eq!(
            MemberCluster::kubeconfig_ref(&unchecked),
            Some(SecretKeyRef {
                name: "m1-kubeconfig".into(),
                key: "config".into()
            })
        );
        assert_eq!(
            unchecked.readiness(),
            readiness(false, reason::PENDING, "not checked yet")
        );
        assert_eq!(
            attached(Some((true, "Healthy", "v1.33.0"))).readiness(),
            readiness(true, "Healthy", "v1.33.0")
        );
        assert_eq!(
            attached(Some((false, "Unreachable", "connection refused"))).readiness(),
            readiness(false, "Unreachable", "connection refused")
        );
        // A status without conditions (written by an older controller) is not checked yet.
        let mut bare = attached(None);
        bare.status = Some(Default::default());
        assert_eq!(
            bare.readiness(),
            readiness(false, reason::PENDING, "not checked yet")
        );
    }

    fn phase(phase: Option<&str>) -> Option<ProvisionedClusterStatus> {
        Some(ProvisionedClusterStatus {
            phase: phase.map(Into::into),
            ..Default::default()
        })
    }

    #[test]
    fn a_cluster_is_ready_in_the_ready_phase() {
        let mut c = Cluster::new("capi", ClusterSpec::default());
        assert_eq!(
            MemberCluster::kubeconfig_ref(&c),
            Some(SecretKeyRef {
                name: "capi-kubeconfig".into(),
                key: "value".into()
            })
        );
        assert_eq!(
            c.readiness(),
            readiness(false, reason::PROVISIONING, "phase unknown")
        );
        c.status = phase(Some("Provisioning"));
        assert_eq!(
            c.readiness(),
            readiness(false, reason::PROVISIONING, "phase Provisioning")
        );
        c.status = phase(Some("Ready"));
        assert_eq!(
            c.readiness(),
            readiness(true, PROVISIONED_READY_PHASE, "phase Ready")
        );
    }

    #[test]
    fn a_custom_cluster_names_its_kubeconfig_once_provisioned() {
        let mut c = CustomCluster::new("vms", CustomClusterSpec::default());
        assert_eq!(MemberCluster::kubeconfig_ref(&c), None);
        assert_eq!(
            c.readiness(),
            readiness(false, reason::PROVISIONING, "phase unknown")
        );
        c.status = Some(ProvisionedClusterStatus {
            phase: Some("Ready".into()),
            kubeconfig_secret_ref: Some("vms-kubeconfig".into()),
            ..Default::default()
        });
        assert_eq!(
            MemberCluster::kubeconfig_ref(&c),
            Some(SecretKeyRef {
                name: "vms-kubeconfig".into(),
                key: "value".into()
            })
        );
        assert_eq!(
            c.readiness(),
            readiness(true, PROVISIONED_READY_PHASE, "phase Ready")
        );
        c.status = phase(Some("Failed"));
        assert_eq!(
            c.readiness(),
            readiness(false, reason::PROVISIONING, "phase Failed")
        );
    }
}
