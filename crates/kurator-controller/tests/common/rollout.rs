//! Staged-rollout test helpers for an Application `shop` with one Kustomization policy.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client};
use kurator_api::{
    Application, conditions,
    flux::Kustomization,
    rollout::{RunPhase, StagedRolloutStatus},
};
use kurator_controller::rollout::pinning::same_revision;

use super::{Harness, NS, until};

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
    ended_at(a, id, phase, |r| same_revision(r, &format!("sha1:{sha}")))
}

/// The last run is `id`, ended with `phase`, and `stable` holds for the stable revision.
pub fn ended_at(a: &Application, id: i64, phase: RunPhase, stable: impl Fn(&str) -> bool) -> bool {
    rollout(a).is_some_and(|state| {
        state.run.is_none()
            && state
                .history
                .first()
                .is_some_and(|h| h.id == id && h.phase == phase)
            && state.stable_revision.as_deref().is_some_and(stable)
    })
}

/// The `StagedRollout` condition's reason.
pub fn rollout_reason(a: &Application) -> Option<String> {
    let s = a.status.as_ref()?;
    conditions::find(&s.conditions, "StagedRollout").map(|c| c.reason.clone())
}

/// The `version` of ConfigMap `name` in the member, as Flux applied it.
pub async fn member_version(client: &Client, name: &str) -> Option<String> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    cms.get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|cm| cm.data?.get("version").cloned())
}

/// Waits until the members' ConfigMap `name` holds the versions `want` (by member, in order).
pub async fn wait_members(clients: &[Client], name: &str, want: &[&str]) {
    until(format!("members at {want:?}"), MEMBERS_WAIT, || async {
        let mut got = Vec::new();
        for c in clients {
            got.push(member_version(c, name).await.unwrap_or_default());
        }
        if got == want {
            Ok(())
        } else {
            Err(format!("members hold {got:?}"))
        }
    })
    .await
}

/// How long the members may take to apply a revision.
const MEMBERS_WAIT: Duration = Duration::from_secs(60);
