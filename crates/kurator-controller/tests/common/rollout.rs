//! Staged-rollout test helpers for an Application `shop` with one Kustomization policy.

use kube::Api;
use kurator_api::flux::Kustomization;

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
