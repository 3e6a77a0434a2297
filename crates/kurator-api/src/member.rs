//! What every cluster kind tells a fleet: where its kubeconfig is and whether it is ready.

use crate::{
    AttachedCluster, Cluster, CustomCluster,
    cluster::{PROVISIONED_READY_PHASE, SecretKeyRef},
    conditions,
};

/// Reasons a member is not (yet) ready, beside the cluster's own.
pub mod reason {
    /// An AttachedCluster not health-checked yet.
    pub const PENDING: &str = "Pending";
    /// A Cluster or CustomCluster whose phase is not Ready.
    pub const PROVISIONING: &str = "Provisioning";
}

/// Whether a cluster can take workloads, and why not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterReadiness {
    pub ready: bool,
    pub reason: String,
    pub message: String,
}

/// Implemented by the three cluster kinds a fleet can hold.
pub trait MemberCluster: kube::ResourceExt {
    /// Where the kubeconfig lives, in the cluster's namespace; `None` while there is none.
    fn kubeconfig_ref(&self) -> Option<SecretKeyRef>;
    fn readiness(&self) -> ClusterReadiness;
}

impl MemberCluster for AttachedCluster {
    fn kubeconfig_ref(&self) -> Option<SecretKeyRef> {
        Some(self.spec.kubeconfig.clone())
    }

    fn readiness(&self) -> ClusterReadiness {
        let status = self.status.clone().unwrap_or_default();
        let ready = conditions::find(&status.conditions, conditions::READY);
        ClusterReadiness {
            ready: status.ready,
            reason: ready.map_or(reason::PENDING.into(), |c| c.reason.clone()),
            message: ready.map_or("not checked yet".into(), |c| c.message.clone()),
        }
    }
}

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

impl MemberCluster for Cluster {
    fn kubeconfig_ref(&self) -> Option<SecretKeyRef> {
        Some(Cluster::kubeconfig_ref(self))
    }

    fn readiness(&self) -> ClusterReadiness {
        provisioned(self.status.as_ref().and_then(|s| s.phase.as_deref()))
    }
}

impl MemberCluster for CustomCluster {
    fn kubeconfig_ref(&self) -> Option<SecretKeyRef> {
        CustomCluster::kubeconfig_ref(self)
    }

    fn readiness(&self) -> ClusterReadiness {
        provisioned(self.status.as_ref().and_then(|s| s.phase.as_deref()))
    }
}
