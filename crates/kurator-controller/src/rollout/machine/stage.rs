//! The current stage: health of its clusters, pinning within `maxConcurrent`, soak, gates,
//! approval, promotion; a failure's consequence; and the health of the clusters outside it.

use kurator_api::rollout::{
    ClusterRolloutState as State, GateOutcome, GateResult, MAX_STAGE_GATES, OnFailure, PauseReason,
    RunPhase, StagePhase,
};

use super::{DEFAULT_PROGRESS_DEADLINE, Machine, event, named, reason, reset_verification};
use crate::rollout::{
    gates::{self, APPROVAL_GATE},
    observe::{Action, parse_duration},
    stages,
};

impl Machine<'_> {
    /// Moves the current stage as far as the observations allow, promoting through as many
    /// stages as are done (empty stages, gates already passed).
    pub(super) fn advance(&mut self) {
        for _ in 0..=self.spec.stages.len() {
            let Some(run) = self.s.run.as_ref() else {
                return;
            };
            if run.phase != RunPhase::Progressing {
                return;
            }
            let Some((index, _)) = self.stage_spec() else {
                // The spec lost stages under a run: nothing is left to update.
                return self.finish();
            };
            let members = self.assignment.clusters_of(index).to_vec();
            if members.is_empty() {
                let message = format!("stage {} selects no cluster", run.stage.name);
                self.run_event(false, event::STAGE_EMPTY, message);
            } else if !self.stage_done(index, &members) {
                return;
            }
            if !self.promote() {
                return;
            }
        }
    }

    /// Health, pinning, soak and gates of a non-empty stage; true when it may be promoted.
    fn stage_done(&mut self, index: usize, members: &[String]) -> bool {
        let stage_spec = &self.spec.stages[index];
        let run = self.s.run.as_ref().expect("advance checked");
        let to = run.to_revision.clone();
        let stage_name = run.stage.name.clone();

        // Health of the clusters already pinned.
        let deadline = self
            .spec
            .progress_deadline
            .as_deref()
            .and_then(parse_duration)
            .unwrap_or(DEFAULT_PROGRESS_DEADLINE);
        let mut failed = Vec::new();
        for name in members {
            let Some(entry) = self.entry_ref(name) else {
                continue;
            };
            let observed = self.observed.get(name.as_str()).copied();
            let revision = entry.revision.as_deref();
            let healthy = observed.is_some_and(|o| o.healthy_at(revision));
            let rechecking = observed.is_some_and(|o| o.rechecking_at(revision));
            let failing = observed.is_some_and(|o| o.failing);
            let flux_message = observed.and_then(|o| o.message.clone());
            match entry.state {
                State::Progressing if healthy => self.set_state(name, State::Healthy, None),
                State::Progressing if self.elapsed_since(&entry.since) > deadline => {
                    let message = format!(
                        "not Ready and healthy at {to} within {deadline:#}{}",
                        flux_message.map(|m| format!(": {m}")).unwrap_or_default()
                    );
                    self.set_state(name, State::Failed, Some(message.clone()));
                    failed.push(format!("{name}: {message}"));
                }
                State::Healthy if !healthy && !rechecking => {
                    self.set_state(name, State::Progressing, flux_message);
                }
                // Flux failed it (a broken manifest, say): say why now, not only once the
                // deadline fails it. Progress messages are not copied: they would churn status.
                State::Progressing if failing && entry.message != flux_message => {
                    self.set_state(name, State::Progressing, flux_message);
                }
                _ => {}
            }
        }
        if !failed.is_empty() {
            self.run_event(true, event::CLUSTER_FAILED, failed.join("; "));
            let message = format!("stage {stage_name}: {}", failed.join("; "));
            self.fail_stage(reason::HEALTH_FAILED, message, Vec::new());
            return false;
        }

        // Pin the next clusters, at most `maxConcurrent` updating at once.
        let updating = members
            .iter()
            .filter(|n| self.state_of(n) == Some(State::Progressing))
            .count();
        let slots = stages::free_slots(stage_spec, members.len(), updating);
        let next: Vec<String> = members
            .iter()
            .filter(|n| self.state_of(n) == Some(State::Pending))
            .take(slots)
            .cloned()
            .collect();
        for name in &next {
            let failures = self
                .observed
                .get(name.as_str())
                .and_then(|o| o.policy)
                .map(|p| p.failed);
            self.pin(name, &to, State::Progressing);
            if let Some(entry) = self.entry(name) {
                entry.policy_failures_at_start = failures;
                entry.message = None;
            }
        }
        if !next.is_empty() {
            let message = format!("stage {stage_name}: updating {} to {to}", named(&next));
            self.run_event(false, event::CLUSTER_UPDATING, message);
        }

        // Soak: every cluster healthy for `soak`.
        let all_healthy = members
            .iter()
            .all(|n| self.state_of(n) == Some(State::Healthy));
        let now = self.now.clone();
        let soak = stage_spec
            .soak
            .as_deref()
            .and_then(parse_duration)
            .unwrap_or_default();
        let has_metrics = !stage_spec.gates.metrics.is_empty();
        let has_checks = has_metrics || stage_spec.gates.policy == Some(true);
        let stage = &mut self.s.run.as_mut().expect("a run").stage;
        if !all_healthy {
            if stage.phase != StagePhase::Updating {
                reset_verification(stage);
                let message = format!("stage {stage_name}: a cluster lost health; soak restarts");
                self.run_event(false, event::STAGE_RESTARTED, message);
            }
            return false;
        }
        if stage.healthy_since.is_none() {
            stage.healthy_since = Some(now.clone());
            stage.phase = StagePhase::Soaking;
            let message = if soak.is_zero() {
                format!("stage {stage_name}: every cluster healthy")
            } else {
                format!("stage {stage_name}: every cluster healthy, soaking {soak:#}")
            };
            self.run_event(false, event::STAGE_SOAKING, message);
        }
        let stage = &mut self.s.run.as_mut().expect("a run").stage;
        if stage.phase == StagePhase::Soaking {
            let since = stage.healthy_since.clone().expect("set above");
            if now.0.duration_since(since.0) < soak {
                return false;
            }
            stage.phase = StagePhase::Verifying;
            stage.verifying_since = Some(now);
            if has_metrics {
                self.actions.push(Action::EvaluateGates {
                    stage: stage_name.clone(),
                    clusters: members.to_vec(),
                });
            }
            if has_checks {
                let message = format!("stage {stage_name}: evaluating gates");
                self.run_event(false, event::STAGE_VERIFYING, message);
            }
        }
        self.verify(index, members)
    }

    /// Verifying and approval: true when the stage may be promoted.
    fn verify(&mut self, index: usize, members: &[String]) -> bool {
        let stage_spec = &self.spec.stages[index];
        let stage = &self.s.run.as_ref().expect("a run").stage;
        let stage_name = stage.name.clone();
        if stage.phase == StagePhase::Verifying {
            let results = self.measure(index, members);
            let stage = &mut self.s.run.as_mut().expect("a run").stage;
            let approval: Vec<GateResult> = stage
                .gates
                .iter()
                .filter(|g| g.gate == APPROVAL_GATE)
                .cloned()
                .collect();
            // Keep an unchanged result as it was (its time included): no status churn.
            let mut merged: Vec<GateResult> = results
                .into_iter()
                .map(|new| {
                    stage
                        .gates
                        .iter()
                        .find(|old| {
                            old.gate == new.gate
                                && old.cluster == new.cluster
                                && old.outcome == new.outcome
                                && old.value == new.value
                                && old.message == new.message
                        })
                        .cloned()
                        .unwrap_or(new)
                })
                .collect();
            merged.extend(approval);
            if merged.len() > MAX_STAGE_GATES {
                // Keep what decides the stage: the approval, failures, pending results; passed
                // ones are dropped first. The verdict below stays the same.
                merged.sort_by_key(|g| match g.outcome {
                    _ if g.gate == APPROVAL_GATE => 0,
                    GateOutcome::Failed => 1,
                    GateOutcome::Pending => 2,
                    GateOutcome::Passed => 3,
                });
                merged.truncate(MAX_STAGE_GATES);
            }
            stage.gates = merged;
            let failed: Vec<GateResult> = stage
                .gates
                .iter()
                .filter(|g| g.outcome == GateOutcome::Failed)
                .cloned()
                .collect();
            if !failed.is_empty() {
                let text = |g: &GateResult| {
                    format!(
                        "{} on {}: {}",
                        g.gate,
                        g.cluster.as_deref().unwrap_or("the stage"),
                        g.message.as_deref().unwrap_or("failed")
                    )
                };
                for gate in &failed {
                    if let Some(cluster) = gate.cluster.clone() {
                        let message = format!(
                            "{}: {}",
                            gate.gate,
                            gate.message.as_deref().unwrap_or("failed")
                        );
                        self.set_state(&cluster, State::Failed, Some(message));
                    }
                }
                let listed: Vec<String> = failed.iter().take(3).map(text).collect();
                let more = failed.len().saturating_sub(3);
                let message = format!(
                    "stage {stage_name}: {}{}",
                    listed.join("; "),
                    if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    }
                );
                self.fail_stage(reason::GATE_FAILED, message, failed);
                return false;
            }
            if stage
                .gates
                .iter()
                .any(|g| g.outcome == GateOutcome::Pending)
            {
                return false;
            }
            if stage_spec.gates.approval != Some(true) {
                return true;
            }
            stage.phase = StagePhase::AwaitingApproval;
            let message = format!(
                "stage {stage_name} passed its gates: run `kurator rollout promote` to go on"
            );
            self.run_event(false, event::APPROVAL_REQUIRED, message);
        }
        let stage = &self.s.run.as_ref().expect("a run").stage;
        stage.phase == StagePhase::AwaitingApproval
            && stage
                .gates
                .iter()
                .any(|g| g.gate == APPROVAL_GATE && g.outcome == GateOutcome::Passed)
    }

    /// The metric and policy verdicts of the stage's clusters, from measurements taken after
    /// verification started (older ones are pending: a restart cannot skip a gate with them).
    fn measure(&self, index: usize, members: &[String]) -> Vec<GateResult> {
        let stage_spec = &self.spec.stages[index];
        let run = self.s.run.as_ref().expect("a run");
        // Set whenever the phase is Verifying; a hand-edited status without it counts from now.
        let since = run
            .stage
            .verifying_since
            .clone()
            .unwrap_or_else(|| self.now.clone());
        let mut results = Vec::new();
        for gate in &stage_spec.gates.metrics {
            for cluster in members {
                let key = (gate.name.clone(), cluster.clone());
                let fresh = self
                    .observations
                    .metrics
                    .get(&key)
                    .filter(|m| m.measured_at.0 >= since.0);
                results.push(match fresh {
                    Some(m) => {
                        gates::evaluate_metric(gate, cluster, &m.sample, m.measured_at.clone())
                    }
                    None => GateResult {
                        gate: gate.name.clone(),
                        cluster: Some(cluster.clone()),
                        outcome: GateOutcome::Pending,
                        value: None,
                        comparison: Some(gate.comparison),
                        threshold: Some(gate.threshold),
                        message: Some("waiting for a measurement".to_string()),
                        evaluated_at: None,
                    },
                });
            }
        }
        if stage_spec.gates.policy == Some(true) {
            for cluster in members {
                let at_start = self
                    .entry_ref(cluster)
                    .and_then(|c| c.policy_failures_at_start);
                let now = self.observed.get(cluster.as_str()).and_then(|o| o.policy);
                results.push(gates::evaluate_policy(
                    cluster,
                    at_start,
                    now,
                    self.now.clone(),
                ));
            }
        }
        results
    }

    /// The current stage passed: the next one starts, or the run succeeds. False when the run
    /// ended.
    fn promote(&mut self) -> bool {
        let run = self.s.run.as_ref().expect("a run");
        let index = usize::try_from(run.stage.index).unwrap_or(usize::MAX);
        let message = format!("run {}: stage {} promoted", run.id, run.stage.name);
        self.event(false, event::STAGE_PROMOTED, message);
        if index + 1 >= self.spec.stages.len() {
            self.finish();
            return false;
        }
        let next = self.new_stage(index + 1);
        self.s.run.as_mut().expect("a run").stage = next;
        true
    }

    fn finish(&mut self) {
        let run = self.s.run.as_ref().expect("a run");
        let message = format!("run {}: every stage runs {}", run.id, run.to_revision);
        self.s.stable_revision = Some(run.to_revision.clone());
        self.event(false, event::SUCCEEDED, message.clone());
        self.end_run(RunPhase::Succeeded, Some(message), Vec::new());
    }

    /// `onFailure`: pause with the reason, or put the stage's clusters back on the run's
    /// previous revision and end the run (pause when there is none).
    fn fail_stage(&mut self, why: &str, message: String, failed: Vec<GateResult>) {
        let run = self.s.run.as_ref().expect("a run");
        let from = run.from_revision.clone();
        let (to, stage) = (run.to_revision.clone(), run.stage.name.clone());
        let (why, message) = match (self.spec.on_failure, from) {
            (OnFailure::Rollback, Some(from)) => {
                let updated: Vec<String> = self
                    .s
                    .clusters
                    .iter()
                    .filter(|c| {
                        c.stage.as_deref() == Some(stage.as_str())
                            && c.revision.as_deref() == Some(to.as_str())
                    })
                    .map(|c| c.name.clone())
                    .collect();
                for name in &updated {
                    let kept = self.entry(name).and_then(|e| e.message.clone());
                    self.pin(name, &from, State::RolledBack);
                    if let Some(entry) = self.entry(name) {
                        entry.message = kept;
                    }
                }
                let message = format!("{message}; {} back on {from}", named(&updated));
                self.run_event(true, event::ROLLED_BACK, message.clone());
                return self.end_run(RunPhase::RolledBack, Some(message), failed);
            }
            (OnFailure::Rollback, None) => (
                reason::NO_REVISION_TO_ROLL_BACK_TO,
                format!("{message}; no previous revision to roll back to"),
            ),
            (OnFailure::Pause, _) => (why, message),
        };
        let now = self.now.clone();
        let run = self.s.run.as_mut().expect("a run");
        run.phase = RunPhase::Paused;
        run.paused = Some(PauseReason {
            reason: why.to_string(),
            message: message.clone(),
            since: now,
        });
        self.run_event(true, why, message);
    }

    /// Clusters outside the current stage (or all of them between runs): Healthy when Ready
    /// and healthy at their pinned revision, Progressing otherwise. Informational: they do not
    /// move a run. Pending and RolledBack ones keep their state until a run moves them.
    pub(super) fn track_other_clusters(&mut self) {
        let current = self.s.run.as_ref().map(|r| r.stage.name.clone());
        let updates: Vec<(String, State, Option<String>)> = self
            .s
            .clusters
            .iter()
            .filter(|c| current.is_none() || c.stage != current)
            .filter(|c| matches!(c.state, State::Progressing | State::Healthy | State::Failed))
            .filter_map(|c| {
                let observed = self.observed.get(c.name.as_str())?;
                let healthy = observed.healthy_at(c.revision.as_deref());
                let rechecking = observed.rechecking_at(c.revision.as_deref());
                match (c.state, healthy) {
                    (State::Healthy, true)
                    | (State::Progressing, false)
                    | (State::Failed, false) => None,
                    (State::Healthy, false) if rechecking => None,
                    (_, true) => Some((c.name.clone(), State::Healthy, None)),
                    (_, false) => {
                        Some((c.name.clone(), State::Progressing, observed.message.clone()))
                    }
                }
            })
            .collect();
        for (name, state, message) in updates {
            self.set_state(&name, state, message);
        }
    }
}
