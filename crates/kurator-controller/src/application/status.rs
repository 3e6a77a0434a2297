//! Pure: the Application status from what the controller resolved and what Flux reports.
//!
//! `Ready` is True only when every selected cluster runs the source's latest revision: each
//! Kustomization applied the source's current artifact revision, each HelmRelease is Ready at
//! its current generation.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kurator_api::{
    Application,
    apps::{
        ApplicationClusterStatus, ApplicationSourceStatus, ApplicationStatus, ApplicationSyncStatus,
    },
    conditions::{self, Desired as Condition},
    flux::{self, FluxKind, FluxReadiness, FluxStatus},
};

use super::{
    build::{policy_name, resource_name},
    targets::Resolved,
};
use crate::rollout::pinning::{revision_id, same_revision};

/// Condition types and reasons (documented in docs/conditions.md).
pub mod reason {
    pub const SOURCE_READY: &str = "SourceReady";
    pub const SYNCED: &str = "Synced";

    pub const ALL_CLUSTERS_SYNCED: &str = "AllClustersSynced";
    pub const NOT_SYNCED: &str = "NotSynced";
    pub const NO_CLUSTERS_SELECTED: &str = "NoClustersSelected";
    pub const SOURCE_NOT_READY: &str = "SourceNotReady";
    pub const DESTINATION_PROBLEM: &str = "DestinationProblem";
    pub const FLUX_NOT_INSTALLED: &str = "FluxNotInstalled";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const CLUSTER_NOT_READY: &str = "ClusterNotReady";
    pub const PROGRESSING: &str = "Progressing";
    pub const OUTDATED_REVISION: &str = "OutdatedRevision";
    /// `spec.stagedRollout` on what it cannot pin yet (`rollout_build::supported`): refused.
    pub const STAGED_ROLLOUT_UNSUPPORTED_SOURCE: &str = "StagedRolloutUnsupportedSource";
}

/// At most this many entries are named in a condition message.
const NAMED_IN_MESSAGE: usize = 10;
/// Flux's message is quoted up to this many characters per entry in a condition message (the
/// whole of it stays in `status.clusters[].message`), which keeps the condition bounded.
const QUOTED_MESSAGE_CHARS: usize = 300;

/// What stops the Application before Flux objects can be reconciled.
#[derive(Clone, Debug, PartialEq)]
pub enum Blocker {
    FluxNotInstalled,
    InvalidSpec(String),
    /// `spec.stagedRollout` on a source it does not handle yet: nothing is applied.
    UnsupportedRolloutSource(String),
}

/// Flux's view: the source's status and each per-cluster object's (generation, status), by name.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub source: Option<FluxStatus>,
    /// The source object's `metadata.generation`.
    pub source_generation: Option<i64>,
    pub objects: BTreeMap<String, (Option<i64>, FluxStatus)>,
    /// Pinned HelmReleases (staged rollout) by name: the revision id of their label, i.e. of
    /// the pinned source their spec names (Flux reports only a chart version for them).
    pub pinned_revision_ids: BTreeMap<String, String>,
    /// The latest revision when it is not the source's artifact revision: a staged rollout of
    /// a HelmRepository (an index) compares releases with its tracking chart's version.
    pub latest_revision: Option<String>,
}

pub fn build_status(
    app: &Application,
    resolved: &Resolved,
    observed: &Observed,
    blocker: Option<&Blocker>,
    now: Time,
) -> ApplicationStatus {
    let previous = app.status.clone().unwrap_or_default();
    let source_revision = observed
        .source
        .as_ref()
        .and_then(|s| s.revision())
        .map(str::to_string);
    let source_ready = observed
        .source
        .as_ref()
        .map(|status| flux::readiness(observed.source_generation, Some(status)));

    let mut clusters = Vec::new();
    let mut sync_status = Vec::new();
    for (index, policy) in app.spec.sync_policies.iter().enumerate() {
        let Some(targets) = resolved.policies.get(index) else {
            continue;
        };
        let policy_name = policy_name(app, index);
        let helm = policy.helm.is_some();
        for target in &targets.targets {
            let name = resource_name(&policy_name, target.cluster_kind, &target.cluster_name);
            let flux = observed.objects.get(&name);
            let cluster_ready = resolved
                .cluster_ready
                .get(&(target.cluster_kind, target.cluster_name.clone()))
                .copied()
                .unwrap_or(true);
            let pinned = observed.pinned_revision_ids.get(&name).map(String::as_str);
            let latest = observed.latest_revision.as_deref();
            let entry = entry(
                flux,
                helm,
                pinned,
                latest.or(source_revision.as_deref()),
                cluster_ready,
            );
            if let Some((_, status)) = flux {
                let raw = serde_json::to_value(status).ok();
                sync_status.push(ApplicationSyncStatus {
                    name: name.clone(),
                    kustomization_status: if helm { None } else { raw.clone() },
                    helm_release_status: if helm { raw } else { None },
                });
            }
            clusters.push(ApplicationClusterStatus {
                policy: policy_name.clone(),
                fleet: target.fleet.clone(),
                cluster: target.cluster_name.clone(),
                cluster_kind: target.cluster_kind,
                kind: if helm {
                    FluxKind::HelmRelease
                } else {
                    FluxKind::Kustomization
                }
                .as_str()
                .to_string(),
                name,
                applied_revision: entry.applied_revision,
                ready: entry.ready,
                reason: entry.reason,
                message: entry.message,
            });
        }
    }
    let synced = clusters.iter().filter(|c| c.ready).count();
    let total = clusters.len();

    let source_condition = match source_ready {
        Some(FluxReadiness::Ready) => Condition::new(
            reason::SOURCE_READY,
            true,
            "Succeeded",
            format!(
                "source at revision {}",
                source_revision.as_deref().unwrap_or("unknown")
            ),
        ),
        Some(FluxReadiness::NotReady {
            reason: why,
            message,
        }) => Condition::new(reason::SOURCE_READY, false, &why, message),
        Some(FluxReadiness::Progressing {
            reason: why,
            message,
        }) => Condition::new(
            reason::SOURCE_READY,
            false,
            why.as_deref().unwrap_or(reason::PROGRESSING),
            message,
        ),
        None => Condition::new(
            reason::SOURCE_READY,
            false,
            reason::PROGRESSING,
            "source not fetched yet",
        ),
    };
    let unsynced: Vec<&ApplicationClusterStatus> = clusters.iter().filter(|c| !c.ready).collect();
    let synced_condition = if total == 0 {
        Condition::new(
            reason::SYNCED,
            false,
            reason::NO_CLUSTERS_SELECTED,
            "no cluster is selected by any policy",
        )
    } else if unsynced.is_empty() {
        Condition::new(
            reason::SYNCED,
            true,
            reason::ALL_CLUSTERS_SYNCED,
            format!("all {total} policy/cluster pairs synced"),
        )
    } else {
        Condition::new(
            reason::SYNCED,
            false,
            reason::NOT_SYNCED,
            format!(
                "{} of {total} not synced: {}",
                unsynced.len(),
                describe(&unsynced)
            ),
        )
    };
    let ready = match blocker {
        Some(Blocker::FluxNotInstalled) => Condition::new(
            conditions::READY,
            false,
            reason::FLUX_NOT_INSTALLED,
            "Flux is not installed on the host: the source.toolkit.fluxcd.io, kustomize.toolkit.fluxcd.io and helm.toolkit.fluxcd.io APIs are missing",
        ),
        Some(Blocker::InvalidSpec(message)) => Condition::new(
            conditions::READY,
            false,
            reason::INVALID_SPEC,
            message.clone(),
        ),
        Some(Blocker::UnsupportedRolloutSource(message)) => Condition::new(
            conditions::READY,
            false,
            reason::STAGED_ROLLOUT_UNSUPPORTED_SOURCE,
            message.clone(),
        ),
        None if !resolved.problems.is_empty() => Condition::new(
            conditions::READY,
            false,
            reason::DESTINATION_PROBLEM,
            resolved.problems.join("; "),
        ),
        None if source_condition.status != conditions::TRUE => Condition {
            type_: conditions::READY.into(),
            reason: reason::SOURCE_NOT_READY.into(),
            ..source_condition.clone()
        },
        None => Condition {
            type_: conditions::READY.into(),
            ..synced_condition.clone()
        },
    };

    let generation = app.metadata.generation;
    ApplicationStatus {
        source_status: observed.source.as_ref().map(|s| source_status(app, s)),
        sync_status,
        source_revision,
        synced: Some(format!("{synced}/{total}")),
        synced_clusters: synced as i32,
        total_clusters: total as i32,
        clusters,
        conditions: conditions::merge(
            &previous.conditions,
            vec![ready, source_condition, synced_condition],
            generation,
            now,
        ),
        observed_generation: generation,
        // Set by the rollout step (`rollout_status`) when the spec asks for a staged rollout.
        staged_rollout: None,
    }
}

struct Entry {
    ready: bool,
    applied_revision: Option<String>,
    reason: Option<String>,
    message: Option<String>,
}

fn entry(
    flux: Option<&(Option<i64>, FluxStatus)>,
    helm: bool,
    pinned_revision_id: Option<&str>,
    source_revision: Option<&str>,
    cluster_ready: bool,
) -> Entry {
    let Some((generation, status)) = flux else {
        return Entry {
            ready: false,
            applied_revision: None,
            reason: Some(reason::PROGRESSING.into()),
            message: Some("waiting for Flux".into()),
        };
    };
    let applied = if helm {
        status.last_attempted_revision.clone()
    } else {
        status.last_applied_revision.clone()
    };
    let readiness = flux::readiness(*generation, Some(status));
    let current = readiness.is_ready();
    // By digest: a cluster pinned by a staged rollout applies `sha1:<hex>` where the tracking
    // source says `main@sha1:<hex>` for the same commit. A HelmRelease reports a chart
    // version: unpinned, Ready at its generation is at the latest; pinned, its label says
    // which revision's source it names.
    let at_latest = match (helm, pinned_revision_id) {
        (true, None) => true,
        (true, Some(id)) => source_revision.is_some_and(|s| revision_id(s) == id),
        (false, _) => applied
            .as_deref()
            .zip(source_revision)
            .is_some_and(|(a, s)| same_revision(a, s)),
    };
    // A member that is not Ready cannot confirm what it runs, whatever Flux last applied.
    let ready = current && at_latest && cluster_ready;
    let (reason, message) = if ready {
        (None, None)
    } else if !cluster_ready {
        // Flux's own word about the current generation, if it has one.
        let failing = match &readiness {
            FluxReadiness::NotReady { message, .. }
            | FluxReadiness::Progressing {
                reason: Some(_),
                message,
            } if !message.is_empty() => Some(message.clone()),
            _ => None,
        };
        let message = failing.unwrap_or_else(|| {
            format!(
                "cluster is not Ready; last applied {}",
                applied.as_deref().unwrap_or("nothing")
            )
        });
        (Some(reason::CLUSTER_NOT_READY.to_string()), Some(message))
    } else if current && !at_latest {
        let at = match pinned_revision_id {
            Some(id) => format!(
                "revision {id} (chart {})",
                applied.as_deref().unwrap_or("none")
            ),
            None => applied.as_deref().unwrap_or("none").to_string(),
        };
        (
            Some(reason::OUTDATED_REVISION.to_string()),
            Some(format!(
                "at {at}, source at {}",
                source_revision.unwrap_or("unknown")
            )),
        )
    } else {
        match readiness {
            FluxReadiness::NotReady {
                reason: why,
                message,
            } => (Some(why), Some(message)),
            FluxReadiness::Progressing {
                reason: why,
                message,
            } => (
                Some(why.unwrap_or_else(|| reason::PROGRESSING.into())),
                Some(message),
            ),
            FluxReadiness::Ready => (Some(reason::PROGRESSING.into()), None),
        }
    };
    Entry {
        ready,
        applied_revision: applied,
        reason,
        message,
    }
}

fn source_status(app: &Application, status: &FluxStatus) -> ApplicationSourceStatus {
    let raw = serde_json::to_value(status).ok();
    let source = &app.spec.source;
    ApplicationSourceStatus {
        git_repo_status: source.git_repository.as_ref().and(raw.clone()),
        helm_repo_status: source.helm_repository.as_ref().and(raw.clone()),
        oci_repo_status: source.oci_repository.as_ref().and(raw),
    }
}

/// `policy/cluster (Reason: message)` for each entry, so that the condition says what Flux
/// says (e.g. which workload failed its health check) without a look at `status.clusters`.
/// Plain `Progressing` entries go without their message ("Reconciliation in progress" for
/// each would only hide the ones that say something).
fn describe(entries: &[&ApplicationClusterStatus]) -> String {
    let mut parts: Vec<String> = entries
        .iter()
        .take(NAMED_IN_MESSAGE)
        .map(|c| {
            let reason = c.reason.as_deref().unwrap_or(reason::PROGRESSING);
            let message = c.message.as_deref().filter(|m| !m.is_empty());
            match message.filter(|_| reason != reason::PROGRESSING) {
                Some(message) => format!(
                    "{}/{} ({reason}: {})",
                    c.policy,
                    c.cluster,
                    shortened(message)
                ),
                None => format!("{}/{} ({reason})", c.policy, c.cluster),
            }
        })
        .collect();
    if entries.len() > NAMED_IN_MESSAGE {
        parts.push(format!("and {} more", entries.len() - NAMED_IN_MESSAGE));
    }
    parts.join("; ")
}

/// `message` cut to [`QUOTED_MESSAGE_CHARS`] characters, on one line.
fn shortened(message: &str) -> String {
    let line = message.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= QUOTED_MESSAGE_CHARS {
        return line;
    }
    let mut cut: String = line.chars().take(QUOTED_MESSAGE_CHARS).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests;
