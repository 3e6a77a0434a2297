//! Pure: the Flux objects of a staged rollout, from `status.stagedRollout` (docs/rollout.md,
//! "Revision pinning"). The tracking source `<app>` stays as built; one copy of it per
//! revision in use, `<app>-r-<id>`, is added, pinned by `ref.commit` (GitRepository) or
//! `ref.digest` (OCIRepository); each cluster's Kustomization (`sourceRef`) and HelmRelease
//! (`chart.spec.sourceRef` or `chartRef`) points at the pinned source of its revision, and a
//! cluster without a revision yet (first deployment, stage not reached) gets neither. With a
//! HelmRepository (an index of every version) a revision is a chart version: a HelmChart
//! `<app>-track` with the policies' version range tells the latest, and each HelmRelease is
//! pinned by `chart.spec.version: <exact version>`. A pinned HelmRelease also carries the
//! revision id as a label: Flux reports only a chart version for a chart from git, so the
//! label is how the observation tells which revision it runs.

use std::collections::BTreeMap;

use kurator_api::{
    Application,
    flux::{
        FluxKind, GitRepositoryRef, HelmChart, HelmChartSourceReference, HelmChartSpec,
        HelmRelease, HelmRepository, OciRepositoryRef,
    },
    rollout::StagedRolloutStatus,
};

use super::build::{Desired, Source, label, label_value};
use crate::rollout::pinning::{
    git_commit, oci_digest, pinned_source_name, revision_id, revisions_in_use, tracking_chart_name,
};

/// Label on a pinned source: the revision id it is pinned to.
pub const REVISION_LABEL: &str = "apps.kurator.dev/revision";

/// Why a staged rollout cannot drive this Application's objects.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RolloutBuildError {
    #[error(
        "a staged rollout of a helmRepository source needs every helm policy to use the same chart and version range (a run rolls out one chart version): {first} and {other} differ"
    )]
    HelmRepositoryCharts { first: String, other: String },
}

/// Whether a staged rollout can handle `app`'s source: a GitRepository or an OCIRepository
/// whatever its policies; a HelmRepository when every helm policy names the same chart and
/// version range (its revision is one chart version).
pub fn supported(app: &Application) -> Result<(), RolloutBuildError> {
    if app.spec.source.helm_repository.is_none() {
        return Ok(());
    }
    let mut charts = app
        .spec
        .sync_policies
        .iter()
        .filter_map(|p| p.helm.as_ref())
        .map(|h| {
            let spec = &h.chart.spec;
            format!(
                "{} {}",
                spec.chart,
                spec.version.as_deref().unwrap_or("(any version)")
            )
        });
    let Some(first) = charts.next() else {
        return Ok(());
    };
    match charts.find(|c| *c != first) {
        Some(other) => Err(RolloutBuildError::HelmRepositoryCharts { first, other }),
        None => Ok(()),
    }
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

/// The HelmChart `<app>-track`: the chart and version range of the releases, from the
/// Application's HelmRepository. Its artifact revision is the latest chart version in range.
fn tracking_chart(
    app_name: &str,
    repository: &HelmRepository,
    release: &HelmRelease,
) -> Option<HelmChart> {
    let template = &release.spec.chart.as_ref()?.spec;
    let mut metadata = repository.metadata.clone();
    metadata.name = Some(tracking_chart_name(app_name));
    Some(HelmChart {
        metadata,
        spec: HelmChartSpec {
            chart: template.chart.clone(),
            version: template.version.clone(),
            source_ref: HelmChartSourceReference {
                kind: FluxKind::HelmRepository.as_str().into(),
                name: repository.metadata.name.clone().unwrap_or_default(),
            },
            interval: template
                .interval
                .clone()
                .or_else(|| repository.spec.interval.clone())
                .unwrap_or_else(|| DEFAULT_CHART_INTERVAL.into()),
        },
        status: None,
    })
}

/// How often the tracking HelmChart looks for a new version when neither the chart template
/// nor the HelmRepository says.
const DEFAULT_CHART_INTERVAL: &str = "1m";

/// What a cluster's objects are pinned to for one revision.
#[derive(Clone)]
struct PinTo {
    /// The pinned source (git, OCI).
    source: Option<String>,
    /// The exact chart version (HelmRepository).
    chart_version: Option<String>,
    /// The revision's id, for the HelmRelease's label.
    id: String,
}

/// Rewrites `desired` (as `build::build` made it) for the rollout `state`.
pub fn pin(app_name: &str, desired: &mut Desired, state: &StagedRolloutStatus) {
    if let (Source::Helm(repository), Some(release)) =
        (&desired.source, desired.helm_releases.first())
    {
        desired.tracking_chart = tracking_chart(app_name, repository, release);
    }
    let helm_repository = matches!(desired.source, Source::Helm(_));
    let mut pinned: BTreeMap<String, Source> = BTreeMap::new();
    let mut pin_to: BTreeMap<String, PinTo> = BTreeMap::new();
    for revision in revisions_in_use(state) {
        let id = revision_id(&revision);
        if helm_repository {
            // A chart version; a commit or digest left from another source kind is none.
            if git_commit(&revision).is_none() && oci_digest(&revision).is_none() {
                let to = PinTo {
                    source: None,
                    chart_version: Some(revision.clone()),
                    id,
                };
                pin_to.insert(revision, to);
            }
            continue;
        }
        let Some(source) = pinned_source(app_name, &desired.source, &revision) else {
            continue;
        };
        let name = source.metadata().name.clone().unwrap_or_default();
        let to = PinTo {
            source: Some(name.clone()),
            chart_version: None,
            id,
        };
        pin_to.insert(revision, to);
        pinned.insert(name, source);
    }
    desired.pinned_sources = pinned.into_values().collect();

    // Cluster label value → what its revision pins it to.
    let of_cluster: BTreeMap<String, Option<&PinTo>> = state
        .clusters
        .iter()
        .map(|c| {
            let to = c.revision.as_ref().and_then(|r| pin_to.get(r));
            (label_value(&c.name), to)
        })
        .collect();
    let pin_for = |labels: &Option<BTreeMap<String, String>>| {
        let cluster = labels.as_ref().and_then(|l| l.get(label::CLUSTER));
        cluster.and_then(|c| of_cluster.get(c).copied().flatten())
    };
    desired.kustomizations.retain_mut(|k| {
        let Some(source) = pin_for(&k.metadata.labels).and_then(|to| to.source.as_ref()) else {
            return false;
        };
        k.spec.source_ref.name = source.clone();
        true
    });
    desired.helm_releases.retain_mut(|h| {
        let Some(to) = pin_for(&h.metadata.labels) else {
            return false;
        };
        if let Some(chart) = &mut h.spec.chart {
            if let Some(source) = &to.source {
                chart.spec.source_ref.name = source.clone();
            }
            if let Some(version) = &to.chart_version {
                chart.spec.version = Some(version.clone());
            }
        }
        if let (Some(chart_ref), Some(source)) = (&mut h.spec.chart_ref, &to.source) {
            chart_ref.name = source.clone();
        }
        h.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(REVISION_LABEL.into(), to.id.clone());
        true
    });
}

#[cfg(test)]
mod tests;
