//! Pure: the Flux objects of a staged rollout, from `status.stagedRollout` (docs/rollout.md,
//! "Revision pinning"). The tracking GitRepository `<app>` stays as built; one GitRepository
//! `<app>-r-<id>` pinned by `ref.commit` per revision in use is added; each cluster's
//! Kustomization points at the pinned source of its revision, and a cluster without a revision
//! yet (first deployment, stage not reached) gets no Kustomization.

use std::collections::BTreeMap;

use kurator_api::{
    Application,
    flux::{GitRepository, GitRepositoryRef},
    rollout::StagedRolloutStatus,
};

use super::build::{Desired, Source, label, label_value};
use crate::rollout::pinning::{git_commit, pinned_source_name, revision_id, revisions_in_use};

/// Label on a pinned source: the revision id it is pinned to.
pub const REVISION_LABEL: &str = "apps.kurator.dev/revision";

/// Why a staged rollout cannot drive this Application's objects.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RolloutBuildError {
    #[error(
        "staged rollout supports git sources only for now; Helm and OCI sources are refused (docs/rollout.md)"
    )]
    UnsupportedSource,
}

/// Whether a staged rollout can handle `app`'s source (git only, for now).
pub fn supported(app: &Application) -> Result<(), RolloutBuildError> {
    let source = &app.spec.source;
    let helm_policy = app.spec.sync_policies.iter().any(|p| p.helm.is_some());
    if source.git_repository.is_some() && !helm_policy {
        Ok(())
    } else {
        Err(RolloutBuildError::UnsupportedSource)
    }
}

/// Rewrites `desired` (as `build::build` made it) for the rollout `state`.
pub fn pin(app_name: &str, desired: &mut Desired, state: &StagedRolloutStatus) {
    let Source::Git(tracking) = &desired.source else {
        return;
    };
    let mut pinned: BTreeMap<String, GitRepository> = BTreeMap::new();
    for revision in revisions_in_use(state) {
        let Some(commit) = git_commit(&revision) else {
            continue;
        };
        let name = pinned_source_name(app_name, &revision);
        let mut source = tracking.clone();
        source.metadata.name = Some(name.clone());
        source
            .metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(REVISION_LABEL.into(), revision_id(&revision));
        // `commit` alone: it takes precedence over every other ref field anyway.
        source.spec.reference = Some(GitRepositoryRef {
            commit: Some(commit.to_string()),
            ..GitRepositoryRef::default()
        });
        pinned.insert(name, source);
    }
    desired.pinned_sources = pinned.into_values().collect();

    // Cluster label value → the pinned source of its revision.
    let source_of: BTreeMap<String, Option<String>> = state
        .clusters
        .iter()
        .map(|c| {
            let source = c
                .revision
                .as_deref()
                .filter(|r| git_commit(r).is_some())
                .map(|r| pinned_source_name(app_name, r));
            (label_value(&c.name), source)
        })
        .collect();
    desired.kustomizations.retain_mut(|k| {
        let cluster = k
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(label::CLUSTER))
            .cloned()
            .unwrap_or_default();
        match source_of.get(&cluster) {
            Some(Some(source)) => {
                k.spec.source_ref.name = source.clone();
                true
            }
            _ => false,
        }
    });
}

#[cfg(test)]
mod tests;
