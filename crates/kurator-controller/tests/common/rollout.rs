//! Staged-rollout test helpers for an Application `shop` with one Kustomization policy.

use kube::Api;
use kurator_api::{
    Application,
    flux::Kustomization,
    rollout::{RunPhase, StagedRolloutStatus},
};
use kurator_controller::rollout::pinning::same_revision;

use super::Harness;

/// The Kustomization the controller writes for `member`.
pub fn kustomization_name(member: &str) -> String {
    format!("shop-0-attachedcluster-{member}")
}

/// The pinned GitRepository of commit `sha`.
pub fn pinned(sha: &str) -> String {
    format!("shop-r-{}", &sha[..10])
}

/// Each member's Kustomization: its sourceRef and whether it is Ready at its generation.
pub async fn kustomizations(h: &Harness, members: &[&str]) -> Vec<(String, bool)> {
    let api: Api<Kustomization> = h.api();
    let mut out = Vec::new();
    for member in members {
        let Some(k) = api.get_opt(&kustomization_name(member)).await.expect("get") else {
            out.push((String::new(), false));
            continue;
        };
        let ready =
            kurator_api::flux::readiness(k.metadata.generation, k.status.as_ref()).is_ready();
        out.push((k.spec.source_ref.name.clone(), ready));
    }
    out
}

/// The Application's staged-rollout status.
pub fn rollout(a: &Application) -> Option<&StagedRolloutStatus> {
    a.status.as_ref()?.staged_rollout.as_ref()
}

/// The last run is `id`, ended with `phase`, and the stable revision is `sha`'s.
pub fn ended(a: &Application, id: i64, phase: RunPhase, sha: &str) -> bool {
    rollout(a).is_some_and(|state| {
        state.run.is_none()
            && state
                .history
                .first()
                .is_some_and(|h| h.id == id && h.phase == phase)
            && state
                .stable_revision
                .as_deref()
                .is_some_and(|r| same_revision(r, &format!("sha1:{sha}")))
    })
}
