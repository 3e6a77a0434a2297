//! Pure: the Flux objects of a staged rollout, from `status.stagedRollout` (docs/rollout.md,
//! "Revision pinning"). The tracking source `<app>` stays as built; one copy of it per
//! revision in use, `<app>-r-<id>`, is added, pinned by `ref.commit` (GitRepository) or
//! `ref.digest` (OCIRepository); each cluster's Kustomization (`sourceRef`) and HelmRelease
//! (`chart.spec.sourceRef` or `chartRef`) points at the pinned source of its revision, and a
//! cluster without a revision yet (first deployment, stage not reached) gets neither. A pinned
//! HelmRelease also carries the revision id as a label: Flux reports only a chart version for
//! a chart from git, so the label is how the observation tells which revision it runs.

use std::collections::BTreeMap;

use kurator_api::{
    Application,
    flux::{GitRepositoryRef, OciRepositoryRef},
    rollout::StagedRolloutStatus,
};

use super::build::{Desired, Source, label, label_value};
use crate::rollout::pinning::{
    git_commit, oci_digest, pinned_source_name, revision_id, revisions_in_use,
};

/// Label on a pinned source: the revision id it is pinned to.
pub const REVISION_LABEL: &str = "apps.kurator.dev/revision";

/// Why a staged rollout cannot drive this Application's objects.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RolloutBuildError {
    #[error(
        "staged rollout does not support helmRepository sources yet: a chart version cannot be pinned yet (docs/rollout.md)"
    )]
    HelmRepositorySource,
}

/// Whether a staged rollout can handle `app`'s source: a GitRepository or an OCIRepository,
/// whatever its policies (Kustomizations, HelmReleases with a chart from that source).
pub fn supported(app: &Application) -> Result<(), RolloutBuildError> {
    if app.spec.source.helm_repository.is_some() {
        return Err(RolloutBuildError::HelmRepositorySource);
    }
    Ok(())
}

/// The copy of `tracking` pinned to `revision`, named `<app>-r-<id>`; `None` when the revision
/// does not name a commit (git) or digest (OCI), or the source kind cannot be pinned.
fn pinned_source(app_name: &str, tracking: &Source, revision: &str) -> Option<Source> {
    let mut source = match tracking {
        Source::Git(git) => {
            let mut git = git.clone();
            // `commit` alone: it takes precedence over every other ref field anyway.
            git.spec.reference = Some(GitRepositoryRef {
                commit: Some(git_commit(revision)?.to_string()),
                ..GitRepositoryRef::default()
            });
            Source::Git(git)
        }
        Source::Oci(oci) => {
            let mut oci = oci.clone();
            // `digest` alone: it takes precedence over `tag` and `semver` anyway.
            oci.spec.reference = Some(OciRepositoryRef {
                digest: Some(oci_digest(revision)?),
                ..OciRepositoryRef::default()
            });
            Source::Oci(oci)
        }
        Source::Helm(_) => return None,
    };
    let meta = source.metadata_mut();
    meta.name = Some(pinned_source_name(app_name, revision));
    meta.labels
        .get_or_insert_with(Default::default)
        .insert(REVISION_LABEL.into(), revision_id(revision));
    Some(source)
}

/// Rewrites `desired` (as `build::build` made it) for the rollout `state`.
pub fn pin(app_name: &str, desired: &mut Desired, state: &StagedRolloutStatus) {
    // Revision → its pinned source's name, for the revisions that can be pinned.
    let mut pinned: BTreeMap<String, Source> = BTreeMap::new();
    let mut name_of: BTreeMap<String, String> = BTreeMap::new();
    for revision in revisions_in_use(state) {
        let Some(source) = pinned_source(app_name, &desired.source, &revision) else {
            continue;
        };
        let name = source.metadata().name.clone().unwrap_or_default();
        name_of.insert(revision, name.clone());
        pinned.insert(name, source);
    }
    desired.pinned_sources = pinned.into_values().collect();

    // Cluster label value → the pinned source of its revision and the revision's id.
    let source_of: BTreeMap<String, Option<(&String, String)>> = state
        .clusters
        .iter()
        .map(|c| {
            let source = c
                .revision
                .as_ref()
                .and_then(|r| Some((name_of.get(r)?, revision_id(r))));
            (label_value(&c.name), source)
        })
        .collect();
    let pinned_for = |labels: &Option<BTreeMap<String, String>>| {
        let cluster = labels.as_ref().and_then(|l| l.get(label::CLUSTER));
        cluster.and_then(|c| source_of.get(c).cloned().flatten())
    };
    desired.kustomizations.retain_mut(|k| {
        let Some((source, _)) = pinned_for(&k.metadata.labels) else {
            return false;
        };
        k.spec.source_ref.name = source.clone();
        true
    });
    desired.helm_releases.retain_mut(|h| {
        let Some((source, id)) = pinned_for(&h.metadata.labels) else {
            return false;
        };
        if let Some(chart) = &mut h.spec.chart {
            chart.spec.source_ref.name = source.clone();
        }
        if let Some(chart_ref) = &mut h.spec.chart_ref {
            chart_ref.name = source.clone();
        }
        h.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(REVISION_LABEL.into(), id);
        true
    });
}

#[cfg(test)]
mod tests;
