//! Pure: one step of a staged rollout, `step(spec, state, observations, now) -> (state, actions)`.
//!
//! The state is `status.stagedRollout` and nothing else, so a controller killed at any instant
//! resumes where the last status write left it. A step called again with its own output and the
//! same observations returns that output unchanged and no actions (unit-tested): that is what
//! makes a lost status write or a SIGKILL harmless. Order within a step: clusters joining or
//! leaving the destination, requests (abort, pause, resume, promote, undo), a new source
//! revision (supersede), then the current stage (health, pinning, soak, gates, promotion),
//! then the health of every other cluster.

use std::collections::BTreeMap;

use jiff::SignedDuration;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kurator_api::rollout::{
    ClusterRolloutState as State, ClusterRolloutStatus, GateOutcome, GateResult, MAX_FAILED_GATES,
    MAX_HISTORY, PauseReason, RolloutRun, RolloutStage, RunPhase, RunSummary, StagePhase,
    StageProgress, StagedRolloutSpec, StagedRolloutStatus,
};

use super::{
    condition::reason,
    gates::APPROVAL_GATE,
    observe::{Action, Observations, ObservedCluster, parse_promote, request},
    stages::{self, Assignment, DestinationCluster},
};

/// `progressDeadline` when unset.
pub const DEFAULT_PROGRESS_DEADLINE: SignedDuration = SignedDuration::from_mins(10);
/// Clusters named in one Event at most.
const NAMED_IN_EVENT: usize = 10;

/// Event reasons (besides the pause reasons of [`reason`]).
pub mod event {
    pub const RUN_STARTED: &str = "RolloutStarted";
    pub const ADOPTED: &str = "RolloutAdopted";
    pub const CLUSTER_UPDATING: &str = "ClusterUpdating";
    pub const CLUSTER_FAILED: &str = "ClusterFailed";
    pub const STAGE_EMPTY: &str = "StageEmpty";
    pub const STAGE_SOAKING: &str = "StageSoaking";
    pub const STAGE_RESTARTED: &str = "StageHealthLost";
    pub const STAGE_VERIFYING: &str = "StageVerifying";
    pub const APPROVAL_REQUIRED: &str = "ApprovalRequired";
    pub const STAGE_PROMOTED: &str = "StagePromoted";
    pub const SUCCEEDED: &str = "RolloutSucceeded";
    pub const ROLLED_BACK: &str = "RolledBack";
    pub const PAUSED: &str = "Paused";
    pub const RESUMED: &str = "Resumed";
    pub const ABORTED: &str = "Aborted";
    pub const SUPERSEDED: &str = "Superseded";
    pub const UNDO: &str = "UndoStarted";
    pub const REQUEST_IGNORED: &str = "RequestIgnored";
}

/// One step. `spec` is `spec.stagedRollout`, `state` the current `status.stagedRollout`.
pub fn step(
    spec: &StagedRolloutSpec,
    state: &StagedRolloutStatus,
    observed: &Observations,
    now: &Time,
) -> (StagedRolloutStatus, Vec<Action>) {
    // Admission requires a stage; an object stored without one is left alone.
    if spec.stages.is_empty() {
        return (state.clone(), Vec::new());
    }
    let destination: Vec<DestinationCluster> = observed
        .clusters
        .iter()
        .map(|c| DestinationCluster {
            name: c.name.clone(),
            labels: c.labels.clone(),
        })
        .collect();
    let mut machine = Machine {
        spec,
        observed: observed
            .clusters
            .iter()
            .map(|c| (c.name.as_str(), c))
            .collect(),
        observations: observed,
        assignment: stages::assign(spec, &destination),
        now: now.clone(),
        s: state.clone(),
        actions: Vec::new(),
    };
    machine.sync_clusters();
    machine.handle_requests();
    machine.follow_source();
    machine.advance();
    machine.track_other_clusters();
    (machine.s, machine.actions)
}

struct Machine<'a> {
    spec: &'a StagedRolloutSpec,
    observations: &'a Observations,
    observed: BTreeMap<&'a str, &'a ObservedCluster>,
    assignment: Assignment,
    now: Time,
    s: StagedRolloutStatus,
    actions: Vec<Action>,
}

impl Machine<'_> {
    fn event(&mut self, warning: bool, reason: &str, message: String) {
        self.actions.push(Action::Event {
            warning,
            reason: reason.to_string(),
            message,
        });
    }

    /// An Event of the current run: its note names the run, so that the same transition in a
    /// later run is an Event of its own (kube's recorder folds Events with equal notes into
    /// one series, which would show run 2's as run 1's).
    fn run_event(&mut self, warning: bool, reason: &str, message: String) {
        let message = match self.s.run.as_ref() {
            Some(run) => format!("run {}: {message}", run.id),
            None => message,
        };
        self.event(warning, reason, message);
    }

    fn elapsed_since(&self, since: &Time) -> SignedDuration {
        self.now.0.duration_since(since.0)
    }

    fn entry_ref(&self, name: &str) -> Option<&ClusterRolloutStatus> {
        let index = self
            .s
            .clusters
            .binary_search_by(|c| c.name.as_str().cmp(name))
            .ok()?;
        self.s.clusters.get(index)
    }

    fn state_of(&self, name: &str) -> Option<State> {
        self.entry_ref(name).map(|c| c.state)
    }

    fn entry(&mut self, name: &str) -> Option<&mut ClusterRolloutStatus> {
        let index = self
            .s
            .clusters
            .binary_search_by(|c| c.name.as_str().cmp(name))
            .ok()?;
        self.s.clusters.get_mut(index)
    }

    /// Moves a cluster to `state` (stamping `since` only when the state changes).
    fn set_state(&mut self, name: &str, state: State, message: Option<String>) {
        let now = self.now.clone();
        if let Some(entry) = self.entry(name) {
            if entry.state != state {
                entry.state = state;
                entry.since = now;
            }
            entry.message = message;
        }
    }

    fn pin(&mut self, name: &str, revision: &str, state: State) {
        let now = self.now.clone();
        if let Some(entry) = self.entry(name) {
            entry.revision = Some(revision.to_string());
            entry.state = state;
            entry.since = now;
            self.actions.push(Action::Pin {
                cluster: name.to_string(),
                revision: revision.to_string(),
            });
        }
    }

    fn stage_spec(&self) -> Option<(usize, &RolloutStage)> {
        let index = usize::try_from(self.s.run.as_ref()?.stage.index).ok()?;
        Some((index, self.spec.stages.get(index)?))
    }

    fn new_stage(&self, index: usize) -> StageProgress {
        StageProgress {
            index: i32::try_from(index).unwrap_or(i32::MAX),
            name: self.spec.stages[index].name.clone(),
            phase: StagePhase::Updating,
            started_at: self.now.clone(),
            healthy_since: None,
            verifying_since: None,
            gates: Vec::new(),
        }
    }

    /// The destination's clusters, in name order: joined ones get the revision their stage is
    /// at, gone ones leave the list.
    fn sync_clusters(&mut self) {
        let mut previous: BTreeMap<String, ClusterRolloutStatus> =
            std::mem::take(&mut self.s.clusters)
                .into_iter()
                .map(|c| (c.name.clone(), c))
                .collect();
        let mut names: Vec<&str> = self.observed.keys().copied().collect();
        names.dedup();
        let mut joined = Vec::new();
        for name in names {
            let stage_index = self.assignment.stage_of(name);
            let stage = stage_index.map(|i| self.assignment.stages[i].name.clone());
            // A cluster joining a stage the run already promoted, or moved into one by its
            // labels, gets the new revision (it is not verified there, as any cluster added to a
            // fleet); otherwise it keeps its revision, or gets the stable one.
            let promoted = self.s.run.as_ref().filter(|run| {
                stage_index.is_some_and(|i| i < usize::try_from(run.stage.index).unwrap_or(0))
            });
            if let Some(mut entry) = previous.remove(name) {
                entry.stage = stage;
                if let Some(run) = promoted.filter(|_| entry.state == State::Pending) {
                    entry.revision = Some(run.to_revision.clone());
                    entry.state = State::Progressing;
                    entry.since = self.now.clone();
                    joined.push((name.to_string(), run.to_revision.clone()));
                }
                self.s.clusters.push(entry);
                continue;
            }
            let (revision, state) = match promoted {
                Some(run) => (Some(run.to_revision.clone()), State::Progressing),
                None if self.s.run.is_some() => (self.s.stable_revision.clone(), State::Pending),
                None => (self.s.stable_revision.clone(), State::Progressing),
            };
            if let Some(revision) = &revision {
                joined.push((name.to_string(), revision.clone()));
            }
            self.s.clusters.push(ClusterRolloutStatus {
                name: name.to_string(),
                stage,
                state: if revision.is_some() {
                    state
                } else {
                    State::Pending
                },
                revision,
                since: self.now.clone(),
                policy_failures_at_start: None,
                message: None,
            });
        }
        for (cluster, revision) in joined {
            self.actions.push(Action::Pin { cluster, revision });
        }
    }

    fn handle_requests(&mut self) {
        let requests = &self.observations.requests;
        let mut new = Vec::new();
        for kind in [
            request::ABORT,
            request::PAUSE,
            request::RESUME,
            request::PROMOTE,
            request::UNDO,
        ] {
            if let Some(token) = requests.new_token(kind, &self.s) {
                new.push((kind, token.to_string()));
            }
        }
        for (kind, token) in new {
            self.s
                .handled_requests
                .insert(kind.to_string(), token.clone());
            match kind {
                request::ABORT => self.abort(),
                request::PAUSE => self.pause(),
                request::RESUME => self.resume(),
                request::PROMOTE => self.approve(&token),
                _ => self.undo(),
            }
        }
    }

    fn ignored(&mut self, what: &str, why: &str) {
        self.event(
            false,
            event::REQUEST_IGNORED,
            format!("{what} ignored: {why}"),
        );
    }

    fn abort(&mut self) {
        let Some(run) = self.s.run.clone() else {
            return self.ignored("abort", "no run in progress");
        };
        let mut back = 0;
        if let Some(from) = &run.from_revision {
            // Every cluster off the stable revision: this run's, and any a superseded run or an
            // earlier rollback left behind.
            let updated: Vec<String> = self
                .s
                .clusters
                .iter()
                .filter(|c| c.revision.is_some() && c.revision.as_ref() != Some(from))
                .map(|c| c.name.clone())
                .collect();
            back = updated.len();
            for name in updated {
                self.pin(&name, from, State::RolledBack);
            }
        }
        let message = format!(
            "run {} to {} aborted at stage {}; {back} cluster(s) back on {}",
            run.id,
            run.to_revision,
            run.stage.name,
            run.from_revision
                .as_deref()
                .unwrap_or("nothing (first deployment: kept)")
        );
        self.event(true, event::ABORTED, message.clone());
        self.end_run(RunPhase::Aborted, Some(message), Vec::new());
    }

    fn pause(&mut self) {
        let now = self.now.clone();
        let Some(run) = self.s.run.as_mut().filter(|r| r.paused.is_none()) else {
            return self.ignored("pause", "no progressing run");
        };
        run.phase = RunPhase::Paused;
        run.paused = Some(PauseReason {
            reason: reason::MANUAL_PAUSE.to_string(),
            message: "paused by kurator rollout pause".to_string(),
            since: now,
        });
        let message = format!("run {} paused at stage {}", run.id, run.stage.name);
        self.event(false, event::PAUSED, message);
    }

    /// Continues a paused run. A stage paused by a failure is retried: its failed clusters
    /// are watched again and its gates measured anew (after a new soak).
    fn resume(&mut self) {
        let Some(run) = self.s.run.as_mut().filter(|r| r.paused.is_some()) else {
            return self.ignored("resume", "no paused run");
        };
        let manual = run.paused.as_ref().map(|p| p.reason.as_str()) == Some(reason::MANUAL_PAUSE);
        run.phase = RunPhase::Progressing;
        run.paused = None;
        if !manual {
            reset_verification(&mut run.stage);
        }
        let (id, stage) = (run.id, run.stage.name.clone());
        if !manual {
            let failed: Vec<String> = self
                .s
                .clusters
                .iter()
                .filter(|c| c.stage.as_deref() == Some(stage.as_str()) && c.state == State::Failed)
                .map(|c| c.name.clone())
                .collect();
            for name in failed {
                self.set_state(&name, State::Progressing, None);
            }
        }
        self.event(
            false,
            event::RESUMED,
            format!("run {id} resumed at stage {stage}"),
        );
    }

    /// Records an approval of the stage the token names; promotion happens in [`Self::advance`].
    fn approve(&mut self, token: &str) {
        let now = self.now.clone();
        let Some(run) = self.s.run.as_mut() else {
            return self.ignored("promote", "no run in progress");
        };
        if parse_promote(token) != Some((run.id, run.stage.name.as_str())) {
            let why = format!(
                "it names {token}, the run is {} at stage {}",
                run.id, run.stage.name
            );
            return self.ignored("promote", &why);
        }
        if !run.stage.gates.iter().any(|g| g.gate == APPROVAL_GATE) {
            run.stage.gates.push(GateResult {
                gate: APPROVAL_GATE.to_string(),
                cluster: None,
                outcome: GateOutcome::Passed,
                value: None,
                comparison: None,
                threshold: None,
                message: Some("approved by kurator rollout promote".to_string()),
                evaluated_at: Some(now),
            });
        }
    }

    /// `undo`: with no run, roll the fleet back to the last successful run's previous revision,
    /// as a new staged run through the same gates.
    fn undo(&mut self) {
        if self.s.run.is_some() {
            return self.ignored("undo", "a run is in progress (abort it instead)");
        }
        let target = self
            .s
            .history
            .first()
            .filter(|h| h.phase == RunPhase::Succeeded)
            .and_then(|h| h.from_revision.clone());
        let Some(target) = target else {
            return self.ignored(
                "undo",
                "the last run did not succeed from an earlier revision",
            );
        };
        self.event(
            false,
            event::UNDO,
            format!("undo: rolling out {target} again"),
        );
        self.start_run(self.s.stable_revision.clone(), target, None);
    }

    /// A new latest revision starts a run, superseding the current one. The first revision of
    /// an Application whose clusters all run it already is adopted without a run.
    fn follow_source(&mut self) {
        let Some(latest) = self.observations.latest_revision.clone() else {
            return;
        };
        if self.s.observed_source_revision.as_deref() == Some(latest.as_str()) {
            return;
        }
        self.s.observed_source_revision = Some(latest.clone());
        if let Some(run) = self.s.run.clone() {
            if run.to_revision == latest {
                return;
            }
            let message = format!(
                "run {} to {} superseded by {latest}",
                run.id, run.to_revision
            );
            self.event(false, event::SUPERSEDED, message.clone());
            // A person's pause holds the new run too; a failure's does not (a fix goes ahead).
            let manual = run.paused.filter(|p| p.reason == reason::MANUAL_PAUSE);
            self.end_run(RunPhase::Superseded, Some(message), Vec::new());
            return self.start_run(run.from_revision, latest, manual);
        }
        if self.s.stable_revision.as_deref() == Some(latest.as_str()) {
            return;
        }
        let all_there = !self.observed.is_empty()
            && self
                .observed
                .values()
                .all(|c| c.runs(Some(latest.as_str())));
        if self.s.stable_revision.is_none() && all_there {
            self.s.stable_revision = Some(latest.clone());
            let now = self.now.clone();
            for entry in &mut self.s.clusters {
                entry.revision = Some(latest.clone());
                entry.state = State::Progressing;
                entry.since = now.clone();
            }
            let message = format!("every cluster already runs {latest}: adopted as stable");
            return self.event(false, event::ADOPTED, message);
        }
        self.start_run(self.s.stable_revision.clone(), latest, None);
    }

    fn start_run(&mut self, from: Option<String>, to: String, paused: Option<PauseReason>) {
        self.s.last_run_id += 1;
        let now = self.now.clone();
        for entry in &mut self.s.clusters {
            if entry.state != State::Pending {
                entry.state = State::Pending;
                entry.since = now.clone();
            }
            entry.policy_failures_at_start = None;
            entry.message = None;
        }
        let message = format!(
            "run {}: {} → {to}",
            self.s.last_run_id,
            from.as_deref().unwrap_or("(first deployment)")
        );
        self.s.run = Some(RolloutRun {
            id: self.s.last_run_id,
            from_revision: from,
            to_revision: to,
            phase: if paused.is_some() {
                RunPhase::Paused
            } else {
                RunPhase::Progressing
            },
            started_at: now,
            stage: self.new_stage(0),
            paused,
        });
        self.event(false, event::RUN_STARTED, message);
    }

    fn end_run(&mut self, phase: RunPhase, message: Option<String>, mut failed: Vec<GateResult>) {
        let Some(run) = self.s.run.take() else { return };
        failed.truncate(MAX_FAILED_GATES);
        // Nothing waits for a stage any more: their health is watched again.
        let now = self.now.clone();
        for entry in &mut self.s.clusters {
            if entry.state == State::Pending && entry.revision.is_some() {
                entry.state = State::Progressing;
                entry.since = now.clone();
            }
        }
        self.s.history.insert(
            0,
            RunSummary {
                id: run.id,
                from_revision: run.from_revision,
                to_revision: run.to_revision,
                phase,
                started_at: run.started_at,
                finished_at: self.now.clone(),
                stage: run.stage.name,
                message,
                failed_gates: failed,
            },
        );
        self.s.history.truncate(MAX_HISTORY);
    }
}

/// Back to updating: the soak restarts and every gate but an approval is measured again.
fn reset_verification(stage: &mut StageProgress) {
    stage.phase = StagePhase::Updating;
    stage.healthy_since = None;
    stage.verifying_since = None;
    stage.gates.retain(|g| g.gate == APPROVAL_GATE);
}

/// Names for an Event: the first few and how many more.
fn named(names: &[String]) -> String {
    let mut text = names
        .iter()
        .take(NAMED_IN_EVENT)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > NAMED_IN_EVENT {
        text.push_str(&format!(" and {} more", names.len() - NAMED_IN_EVENT));
    }
    text
}

mod stage;
