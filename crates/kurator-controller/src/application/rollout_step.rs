//! The staged rollout step of a reconcile (docs/rollout.md, "For the next engineer: wiring
//! it"): observe from the stores, `machine::step`, write `status.stagedRollout` (before any
//! Flux object is changed by it), then emit the step's Events. The Flux objects are built from
//! the written state (`rollout_build::pin`), never from the actions, so a step lost to a crash
//! is redone by the next reconcile.

use std::{collections::BTreeSet, time::Duration};

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};
use kube::{
    Api, Resource, ResourceExt,
    runtime::{
        events::{Event, EventType},
        reflector::ObjectRef,
    },
};
use kurator_api::{
    Application, Fleet, conditions,
    flux::FluxKind,
    rollout::{
        GateOutcome, MetricGate, RunPhase, StagePhase, StagedRolloutSpec, StagedRolloutStatus,
    },
};
use tracing::info;

use super::{
    rollout_build::REVISION_LABEL,
    rollout_metrics,
    rollout_observe::{self, FluxObject},
    targets::Resolved,
};
use crate::{
    context::Context,
    error::Error,
    index::{Key, Kind, stored},
    rollout::{condition, machine, observe::Action, pinning::tracking_chart_name, schedule},
    status::apply_status,
};

/// How often a stage whose gates are being measured is looked at again.
const VERIFY_POLL: Duration = Duration::from_secs(30);
/// Event notes are cut to this many characters.
const EVENT_NOTE_CHARS: usize = 1000;

/// Runs one step for `app` and writes its state. Returns the state the Flux objects are to be
/// built from.
pub async fn step(
    app: &Application,
    spec: &StagedRolloutSpec,
    namespace: &str,
    ctx: &Context,
    resolved: &Resolved,
) -> Result<StagedRolloutStatus, Error> {
    let flux = &ctx.stores.flux;
    let latest_revision = tracking_revision(ctx, app, namespace);
    let fleet_names: BTreeSet<&str> = resolved
        .policies
        .iter()
        .flat_map(|p| &p.targets)
        .map(|t| t.fleet.as_str())
        .collect();
    let fleets: Vec<Fleet> = fleet_names
        .into_iter()
        .filter_map(|f| {
            ctx.stores
                .fleets
                .get(&ObjectRef::<Fleet>::new(f).within(namespace))
        })
        .map(|f| (*f).clone())
        .collect();
    let mut observed = rollout_observe::observations(
        app,
        resolved,
        latest_revision,
        |kind, name| match kind {
            FluxKind::Kustomization => flux
                .kustomizations
                .get(&ObjectRef::new(name).within(namespace))
                .map(|k| FluxObject {
                    generation: k.metadata.generation,
                    status: k.status.clone(),
                    pinned_revision_id: None,
                }),
            _ => flux
                .helm_releases
                .get(&ObjectRef::new(name).within(namespace))
                .map(|h| FluxObject {
                    generation: h.metadata.generation,
                    status: h.status.clone(),
                    pinned_revision_id: h
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(REVISION_LABEL))
                        .cloned(),
                }),
        },
        &fleets,
    );
    let mut now = Time(Timestamp::now());
    let previous = app
        .status
        .as_ref()
        .and_then(|s| s.staged_rollout.clone())
        .unwrap_or_default();
    let (mut state, mut actions) = machine::step(spec, &previous, &observed, &now);
    // Metric gates waiting for a measurement (just asked for, or after a restart): measure
    // now, after `verifyingSince`, and step again with the results.
    if let Some((gates, clusters)) = metrics_due(spec, &state) {
        observed.metrics = rollout_metrics::measure(
            &ctx.client,
            ctx.settings.thanos_url.as_deref(),
            namespace,
            gates,
            &clusters,
        )
        .await;
        now = Time(Timestamp::now());
        let (next, more) = machine::step(spec, &state, &observed, &now);
        state = next;
        actions.extend(more);
    }

    if app.status.as_ref().and_then(|s| s.staged_rollout.as_ref()) != Some(&state) {
        // The state first: everything after it (pins, Events) is derived from what is written.
        let mut status = app.status.clone().unwrap_or_default();
        status.staged_rollout = Some(state.clone());
        status.conditions = with_condition(
            &status.conditions,
            condition::condition(&state),
            app.metadata.generation,
            now,
        );
        let api: Api<Application> = Api::namespaced(ctx.client.clone(), namespace);
        apply_status(ctx, &api, app, app.status.as_ref(), &status).await?;
    }
    publish(ctx, app, &actions).await;
    Ok(state)
}

/// The tracking source's artifact revision (`main@sha1:…`, `latest@sha256:…`; for a
/// HelmRepository the tracking HelmChart's, a chart version): the latest revision a run
/// rolls out.
fn tracking_revision(ctx: &Context, app: &Application, namespace: &str) -> Option<String> {
    let flux = &ctx.stores.flux;
    let name = app.name_any();
    let source = &app.spec.source;
    let status = if source.git_repository.is_some() {
        stored(
            &flux.git_repositories,
            &Key::new(Kind::GitRepository, namespace, &name),
        )?
        .status
        .clone()
    } else if source.oci_repository.is_some() {
        stored(
            &flux.oci_repositories,
            &Key::new(Kind::OciRepository, namespace, &name),
        )?
        .status
        .clone()
    } else {
        let chart = tracking_chart_name(&name);
        stored(
            &flux.helm_charts,
            &Key::new(Kind::HelmChart, namespace, &chart),
        )?
        .status
        .clone()
    };
    status?.artifact?.revision
}

/// The current stage's metric gates and the clusters with a result still pending, when the
/// run is verifying.
fn metrics_due<'a>(
    spec: &'a StagedRolloutSpec,
    state: &StagedRolloutStatus,
) -> Option<(&'a [MetricGate], Vec<String>)> {
    let run = state
        .run
        .as_ref()
        .filter(|r| r.phase == RunPhase::Progressing)?;
    if run.stage.phase != StagePhase::Verifying {
        return None;
    }
    let gates = &spec
        .stages
        .get(usize::try_from(run.stage.index).ok()?)?
        .gates
        .metrics;
    let mut clusters: Vec<String> = run
        .stage
        .gates
        .iter()
        .filter(|g| g.outcome == GateOutcome::Pending)
        .filter(|g| gates.iter().any(|m| m.name == g.gate))
        .filter_map(|g| g.cluster.clone())
        .collect();
    clusters.sort();
    clusters.dedup();
    (!clusters.is_empty()).then_some((gates.as_slice(), clusters))
}

/// `existing` with the condition of `desired`'s type replaced (others kept as they are).
pub fn with_condition(
    existing: &[Condition],
    desired: conditions::Desired,
    generation: Option<i64>,
    now: Time,
) -> Vec<Condition> {
    let type_ = desired.type_.clone();
    let mut out: Vec<Condition> = existing
        .iter()
        .filter(|c| c.type_ != type_)
        .cloned()
        .collect();
    out.extend(conditions::merge(existing, vec![desired], generation, now));
    out
}

async fn publish(ctx: &Context, app: &Application, actions: &[Action]) {
    let object = app.object_ref(&());
    for action in actions {
        match action {
            Action::Event {
                warning,
                reason,
                message,
            } => {
                let event = Event {
                    type_: if *warning {
                        EventType::Warning
                    } else {
                        EventType::Normal
                    },
                    reason: reason.clone(),
                    note: Some(message.chars().take(EVENT_NOTE_CHARS).collect()),
                    action: event_action(message),
                    secondary: None,
                };
                info!(%reason, %message, "rollout");
                if let Err(e) = ctx.recorder.publish(&event, &object).await {
                    tracing::warn!(error = %e, "publishing event failed");
                }
            }
            Action::Pin { cluster, revision } => info!(%cluster, %revision, "cluster pinned"),
            // Measured in `step` (`metrics_due`), from the state, so a restart measures too.
            Action::EvaluateGates { stage, clusters } => {
                info!(%stage, clusters = clusters.len(), "gates to evaluate")
            }
        }
    }
}

/// The Event's `action`: kube's recorder folds Events with the same type, reason and action
/// into one Event's series, keeping the first note. A constant action would hide every later
/// run's "run N: ..." (and a second stage's promotion) behind the first; the note's start
/// keeps each transition its own Event, while a true repeat still counts in a series.
fn event_action(message: &str) -> String {
    format!("Rollout: {message}")
        .chars()
        .take(EVENT_ACTION_CHARS)
        .collect()
}

/// The API server's limit for `action` (events.k8s.io/v1).
const EVENT_ACTION_CHARS: usize = 128;

/// When to look again: the soak end or the earliest progress deadline, polled while gates are
/// being measured, else the controller's usual long requeue.
pub fn requeue_after(
    spec: &StagedRolloutSpec,
    state: &StagedRolloutStatus,
    idle: Duration,
) -> Duration {
    let now = Timestamp::now();
    let mut after = idle;
    if let Some(due) = schedule::next_wakeup(spec, state) {
        // Already due (negative): soon, not in a tight loop.
        let wait = Duration::try_from(now.duration_until(due.0)).unwrap_or_default();
        after = after.min(wait.max(Duration::from_secs(1)));
    }
    let verifying = state
        .run
        .as_ref()
        .is_some_and(|r| r.stage.phase == StagePhase::Verifying);
    if verifying {
        after = after.min(VERIFY_POLL);
    }
    after
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_transition_is_its_own_event_action_within_the_api_limit() {
        let canary = event_action("run 2: stage canary promoted");
        let rest = event_action("run 2: stage rest promoted");
        assert_ne!(canary, rest);
        assert_eq!(canary, "Rollout: run 2: stage canary promoted");
        let long = event_action(&"é".repeat(500));
        assert_eq!(long.chars().count(), EVENT_ACTION_CHARS);
    }
}
