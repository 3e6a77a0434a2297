//! The issue's scenarios, step by step, on a simulated fleet of four clusters: m1 (the
//! canary), m2 and m3 (Europe, one at a time), m4 (the rest).
//!
//! Every step of every scenario is run twice: the second time, from its own output with the
//! same observations, it must change nothing and ask for nothing. That is the property that
//! makes a SIGKILL (or a lost status write) safe.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kurator_api::{
    apps::ClusterSelector,
    rollout::{
        ClusterRolloutState as State, Comparison, GateOutcome, MetricGate, OnFailure, RolloutGates,
        RolloutStage, RunPhase, StagePhase, StagedRolloutSpec, StagedRolloutStatus,
    },
};

use super::{
    condition::{self, reason},
    gates::PolicyCounts,
    machine::{event, step},
    observe::{Action, MetricObservation, Observations, ObservedCluster, promote_token},
};

const V1: &str = "main@sha1:1111111111";
const V2: &str = "main@sha1:2222222222";
const V3: &str = "main@sha1:3333333333";
const V4: &str = "main@sha1:4444444444";

fn labelled(key: &str, value: &str) -> Option<ClusterSelector> {
    Some(ClusterSelector {
        match_labels: [(key.to_string(), value.to_string())].into(),
    })
}

fn spec(on_failure: OnFailure, europe_approval: bool) -> StagedRolloutSpec {
    StagedRolloutSpec {
        on_failure,
        progress_deadline: Some("10m".into()),
        stages: vec![
            RolloutStage {
                name: "canary".into(),
                cluster_selector: labelled("stage", "canary"),
                soak: Some("5m".into()),
                gates: RolloutGates {
                    metrics: vec![MetricGate {
                        name: "error-rate".into(),
                        query: r#"errors{cluster="$cluster"}"#.into(),
                        comparison: Comparison::Less,
                        threshold: 0.05,
                    }],
                    policy: Some(true),
                    approval: None,
                },
                ..Default::default()
            },
            RolloutStage {
                name: "europe".into(),
                cluster_selector: labelled("region", "eu"),
                max_concurrent: Some(1),
                gates: RolloutGates {
                    approval: europe_approval.then_some(true),
                    ..Default::default()
                },
                ..Default::default()
            },
            RolloutStage {
                name: "rest".into(),
                rest: Some(true),
                ..Default::default()
            },
        ],
    }
}

/// The fleet, the controller's state, and a clock.
struct World {
    spec: StagedRolloutSpec,
    state: StagedRolloutStatus,
    observed: Observations,
    now: Timestamp,
    /// Every Event so far, as `reason: message`.
    events: Vec<String>,
}

impl World {
    /// A fleet running v1 everywhere, adopted without a run.
    fn new(spec: StagedRolloutSpec) -> Self {
        let cluster = |name: &str, labels: &[(&str, &str)]| ObservedCluster {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            applied_revision: Some(V1.into()),
            ready: true,
            healthy: true,
            message: None,
            policy: Some(PolicyCounts {
                failed: 1,
                stale: false,
            }),
        };
        let mut world = World {
            spec,
            state: StagedRolloutStatus::default(),
            observed: Observations {
                latest_revision: Some(V1.into()),
                clusters: vec![
                    cluster("m1", &[("stage", "canary"), ("region", "eu")]),
                    cluster("m2", &[("region", "eu")]),
                    cluster("m3", &[("region", "eu")]),
                    cluster("m4", &[]),
                ],
                ..Default::default()
            },
            now: "2026-12-02T04:00:00Z".parse().expect("time"),
            events: Vec::new(),
        };
        world.step();
        assert_eq!(world.state.stable_revision.as_deref(), Some(V1));
        assert!(world.state.run.is_none());
        world
    }

    fn now(&self) -> Time {
        Time(self.now)
    }

    /// One reconcile, checked for idempotency.
    fn step(&mut self) -> Vec<Action> {
        let (state, actions) = step(&self.spec, &self.state, &self.observed, &self.now());
        let (again, repeated) = step(&self.spec, &state, &self.observed, &self.now());
        assert_eq!(again, state, "a repeated step changed the state");
        assert_eq!(repeated, vec![], "a repeated step asked for actions");
        for action in &actions {
            if let Action::Event {
                reason, message, ..
            } = action
            {
                self.events.push(format!("{reason}: {message}"));
            }
        }
        self.state = state;
        actions
    }

    fn wait(&mut self, minutes: i64) {
        self.now += SignedDuration::from_mins(minutes);
    }

    fn cluster(&mut self, name: &str) -> &mut ObservedCluster {
        self.observed
            .clusters
            .iter_mut()
            .find(|c| c.name == name)
            .expect("cluster")
    }

    /// Flux applies every pin, and the clusters are healthy (except the ones told otherwise).
    fn flux_converges(&mut self) {
        for entry in self.state.clusters.clone() {
            let cluster = self.cluster(&entry.name);
            cluster.applied_revision = entry.revision;
        }
    }

    /// Thanos answers the metric gate for a cluster, measured now.
    fn measure(&mut self, cluster: &str, value: f64) {
        let now = self.now();
        self.observed.metrics.insert(
            ("error-rate".into(), cluster.into()),
            MetricObservation {
                measured_at: now,
                sample: Ok(vec![value]),
            },
        );
    }

    fn commit(&mut self, revision: &str) {
        self.observed.latest_revision = Some(revision.into());
    }

    fn revision(&self, name: &str) -> Option<&str> {
        self.entry(name).revision.as_deref()
    }

    fn entry(&self, name: &str) -> &kurator_api::rollout::ClusterRolloutStatus {
        self.state
            .clusters
            .iter()
            .find(|c| c.name == name)
            .expect("cluster in status")
    }

    fn run(&self) -> &kurator_api::rollout::RolloutRun {
        self.state.run.as_ref().expect("a run")
    }

    /// Steps, with Flux converging and a good canary measurement, until the run ends.
    fn until_done(&mut self) {
        for _ in 0..20 {
            self.flux_converges();
            self.step();
            if self.state.run.is_none() {
                return;
            }
            self.wait(5);
            self.measure("m1", 0.01);
        }
        panic!("the run did not end: {:#?}", self.state.run);
    }
}

fn pins(actions: &[Action]) -> Vec<(String, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Pin { cluster, revision } => Some((cluster.clone(), revision.clone())),
            _ => None,
        })
        .collect()
}

fn pin(cluster: &str, revision: &str) -> (String, String) {
    (cluster.to_string(), revision.to_string())
}

#[test]
fn v2_reaches_the_canary_only_then_each_stage_after_soak_and_gates() {
    let mut w = World::new(spec(OnFailure::Pause, false));
    w.commit(V2);
    assert_eq!(pins(&w.step()), [pin("m1", V2)]);
    assert_eq!(w.run().stage.name, "canary");
    for other in ["m2", "m3", "m4"] {
        assert_eq!(w.revision(other), Some(V1));
        assert_eq!(w.entry(other).state, State::Pending);
    }

    w.flux_converges();
    assert!(pins(&w.step()).is_empty());
    assert_eq!(w.entry("m1").state, State::Healthy);
    assert_eq!(w.run().stage.phase, StagePhase::Soaking);

    w.wait(4);
    w.step();
    assert_eq!(w.run().stage.phase, StagePhase::Soaking, "soak is 5m");
    w.wait(1);
    let actions = w.step();
    assert!(actions.contains(&Action::EvaluateGates {
        stage: "canary".into(),
        clusters: vec!["m1".into()],
    }));
    assert_eq!(w.run().stage.phase, StagePhase::Verifying);
    assert_eq!(w.run().stage.gates[0].outcome, GateOutcome::Pending);

    w.measure("m1", 0.01);
    // Europe one at a time: m2 first.
    assert_eq!(pins(&w.step()), [pin("m2", V2)]);
    assert_eq!(w.run().stage.name, "europe");
    assert_eq!(w.revision("m3"), Some(V1));
    w.flux_converges();
    assert_eq!(pins(&w.step()), [pin("m3", V2)]);
    w.flux_converges();
    // Europe has no soak and no gates: promoted, and the rest starts in the same step.
    assert_eq!(pins(&w.step()), [pin("m4", V2)]);
    w.flux_converges();
    w.step();
    assert!(w.state.run.is_none());
    assert_eq!(w.state.stable_revision.as_deref(), Some(V2));
    assert_eq!(w.state.history[0].phase, RunPhase::Succeeded);
    assert_eq!(condition::condition(&w.state).reason, reason::SUCCEEDED);
    insta::assert_yaml_snapshot!(w.events);
}

#[test]
fn a_policy_failure_pauses_at_the_canary_and_later_stages_stay() {
    let mut w = World::new(spec(OnFailure::Pause, false));
    w.commit(V2);
    w.until_done();
    w.commit(V3);
    w.step();
    w.flux_converges();
    // v3 violates the pod security policy: two more failed results on the canary.
    w.cluster("m1").policy = Some(PolicyCounts {
        failed: 3,
        stale: false,
    });
    w.step();
    w.wait(5);
    w.step();
    w.measure("m1", 0.0);
    assert!(pins(&w.step()).is_empty());
    let run = w.run();
    assert_eq!(run.phase, RunPhase::Paused);
    let paused = run.paused.as_ref().expect("paused");
    assert_eq!(paused.reason, reason::GATE_FAILED);
    assert_eq!(
        paused.message,
        "stage canary: policy on m1: 2 new failed policy results since the cluster was updated"
    );
    let policy = run.stage.gates.iter().find(|g| g.gate == "policy").unwrap();
    assert_eq!(policy.value, Some(2.0));
    assert_eq!(w.entry("m1").state, State::Failed);
    for other in ["m2", "m3", "m4"] {
        assert_eq!(w.revision(other), Some(V2), "{other} stays on v2");
    }
    assert_eq!(condition::condition(&w.state).reason, reason::GATE_FAILED);
    // Time passes, nothing moves.
    w.wait(60);
    assert!(pins(&w.step()).is_empty());
    assert_eq!(w.run().phase, RunPhase::Paused);
}

#[test]
fn a_metric_above_threshold_rolls_the_canary_back_with_the_value_in_status() {
    let mut w = World::new(spec(OnFailure::Rollback, false));
    w.commit(V2);
    w.until_done();
    w.commit(V4);
    assert_eq!(pins(&w.step()), [pin("m1", V4)]);
    w.flux_converges();
    w.step();
    w.wait(5);
    w.step();
    w.measure("m1", 0.12);
    assert_eq!(pins(&w.step()), [pin("m1", V2)]);
    assert!(w.state.run.is_none());
    assert_eq!(w.state.stable_revision.as_deref(), Some(V2));
    assert_eq!(w.entry("m1").state, State::RolledBack);
    assert_eq!(w.revision("m4"), Some(V2));
    let last = &w.state.history[0];
    assert_eq!(last.phase, RunPhase::RolledBack);
    assert_eq!(last.failed_gates[0].value, Some(0.12));
    assert_eq!(last.failed_gates[0].threshold, Some(0.05));
    assert_eq!(condition::condition(&w.state).reason, reason::ROLLED_BACK);
    // The rolled-back revision is not rolled out again while it stays the latest.
    w.flux_converges();
    w.wait(30);
    assert!(pins(&w.step()).is_empty());
    assert!(w.state.run.is_none());
    insta::assert_yaml_snapshot!(w.state);
}

#[test]
fn approval_holds_the_stage_until_promote_names_it() {
    let mut w = World::new(spec(OnFailure::Pause, true));
    w.commit(V2);
    for _ in 0..5 {
        w.flux_converges();
        w.step();
        w.wait(5);
        w.measure("m1", 0.01);
    }
    assert_eq!(w.run().stage.name, "europe");
    assert_eq!(w.run().stage.phase, StagePhase::AwaitingApproval);
    assert!(
        w.events
            .iter()
            .any(|e| e.starts_with(event::APPROVAL_REQUIRED))
    );
    assert_eq!(
        condition::condition(&w.state).reason,
        reason::AWAITING_APPROVAL
    );
    // A promote typed for the canary does not approve Europe.
    let run = w.run().id;
    w.observed.requests.promote = Some(promote_token(run, "canary", "t1"));
    assert!(pins(&w.step()).is_empty());
    assert!(w.events.last().unwrap().starts_with(event::REQUEST_IGNORED));
    w.wait(60);
    w.step();
    assert_eq!(w.run().stage.phase, StagePhase::AwaitingApproval);

    w.observed.requests.promote = Some(promote_token(run, "europe", "t2"));
    assert_eq!(pins(&w.step()), [pin("m4", V2)]);
    assert_eq!(w.run().stage.name, "rest");
    assert_eq!(
        w.state.handled_requests["promote"],
        promote_token(run, "europe", "t2")
    );
}

#[test]
fn a_restart_skips_no_gate_and_promotes_nothing_twice() {
    let mut w = World::new(spec(OnFailure::Pause, false));
    w.commit(V2);
    w.step();
    w.flux_converges();
    w.step();
    // A measurement taken during the soak, before verification started.
    w.wait(3);
    w.measure("m1", 0.01);
    w.wait(2);
    w.step();
    assert_eq!(w.run().stage.phase, StagePhase::Verifying);
    // The controller is killed and restarted: the same state comes back from status.
    let restarted = w.state.clone();
    w.state = restarted;
    w.wait(1);
    w.step();
    assert_eq!(
        w.run().stage.name,
        "canary",
        "the old measurement does not count"
    );
    assert_eq!(w.run().stage.gates[0].outcome, GateOutcome::Pending);

    w.measure("m1", 0.01);
    let before = w.state.clone();
    assert_eq!(pins(&w.step()), [pin("m2", V2)]);
    let promoted = w.state.clone();
    // Killed after the step but before its status write: the step runs again from `before`.
    let (replayed, actions) = step(&w.spec, &before, &w.observed, &w.now());
    assert_eq!(replayed, promoted);
    assert_eq!(pins(&actions), [pin("m2", V2)]);
    // Killed after the status write: the next step does not promote the canary again.
    let actions = w.step();
    assert!(actions.is_empty());
    assert_eq!(w.run().stage.index, 1);
    assert_eq!(w.state.last_run_id, 1);
}

#[test]
fn a_new_commit_supersedes_the_run_and_starts_again_at_the_canary() {
    let mut w = World::new(spec(OnFailure::Pause, false));
    w.commit(V2);
    for _ in 0..3 {
        w.flux_converges();
        w.step();
        w.wait(5);
        w.measure("m1", 0.01);
    }
    assert_eq!(w.run().stage.name, "europe");
    assert_eq!(w.revision("m2"), Some(V2));
    w.commit(V3);
    assert_eq!(pins(&w.step()), [pin("m1", V3)]);
    let run = w.run();
    assert_eq!((run.id, run.stage.name.as_str()), (2, "canary"));
    assert_eq!(run.from_revision.as_deref(), Some(V1));
    assert_eq!(run.to_revision, V3);
    assert_eq!(w.state.history[0].phase, RunPhase::Superseded);
    // m2 keeps the superseded revision until Europe's turn; m3 and m4 keep v1.
    assert_eq!(w.revision("m2"), Some(V2));
    assert_eq!(w.revision("m3"), Some(V1));
    w.until_done();
    for c in ["m1", "m2", "m3", "m4"] {
        assert_eq!(w.revision(c), Some(V3));
    }
    assert_eq!(w.state.stable_revision.as_deref(), Some(V3));
}

#[test]
fn a_failure_pause_is_superseded_by_a_fix_but_a_manual_pause_holds() {
    let mut w = World::new(spec(OnFailure::Pause, false));
    w.commit(V2);
    w.step();
    w.observed.requests.pause = Some("p1".into());
    w.step();
    assert_eq!(
        w.run().paused.as_ref().unwrap().reason,
        reason::MANUAL_PAUSE
    );
    w.commit(V3);
    assert!(
        pins(&w.step()).is_empty(),
        "the manual pause holds the new run"
    );
    assert_eq!(w.run().to_revision, V3);
    assert_eq!(w.run().phase, RunPhase::Paused);
    w.observed.requests.resume = Some("r1".into());
    assert_eq!(pins(&w.step()), [pin("m1", V3)]);
    assert_eq!(w.run().phase, RunPhase::Progressing);
}

#[test]
fn a_cluster_past_its_deadline_fails_the_stage_and_resume_retries_it() {
    let mut w = World::new(spec(OnFailure::Pause, false));
    w.commit(V2);
    w.step();
    w.flux_converges();
    w.cluster("m1").ready = false;
    w.cluster("m1").message = Some("Deployment/shop: 0/1 replicas available".into());
    w.wait(10);
    w.step();
    assert_eq!(
        w.run().phase,
        RunPhase::Progressing,
        "the deadline is not passed yet"
    );
    w.wait(1);
    w.step();
    let paused = w.run().paused.clone().expect("paused");
    assert_eq!(paused.reason, reason::HEALTH_FAILED);
    assert!(
        paused.message.contains("0/1 replicas available"),
        "{}",
        paused.message
    );
    assert_eq!(w.entry("m1").state, State::Failed);
    // Fixed in the cluster; resume watches it again.
    w.cluster("m1").ready = true;
    w.observed.requests.resume = Some("r1".into());
    w.step();
    assert_eq!(w.entry("m1").state, State::Healthy);
    assert_eq!(w.run().stage.phase, StagePhase::Soaking);
}

#[test]
fn abort_returns_updated_clusters_and_does_not_restart_the_revision() {
    let mut w = World::new(spec(OnFailure::Pause, false));
    w.commit(V2);
    w.step();
    w.flux_converges();
    w.observed.requests.abort = Some("a1".into());
    assert_eq!(pins(&w.step()), [pin("m1", V1)]);
    assert!(w.state.run.is_none());
    assert_eq!(w.state.history[0].phase, RunPhase::Aborted);
    assert_eq!(w.entry("m1").state, State::RolledBack);
    w.wait(60);
    assert!(pins(&w.step()).is_empty(), "v2 is not rolled out again");
    // The next commit starts a run from the stable revision.
    w.commit(V3);
    w.step();
    assert_eq!(w.run().from_revision.as_deref(), Some(V1));
}

#[test]
fn undo_rolls_out_the_previous_revision_as_a_new_run() {
    let mut w = World::new(spec(OnFailure::Pause, false));
    w.commit(V2);
    w.until_done();
    w.observed.requests.undo = Some("u1".into());
    assert_eq!(pins(&w.step()), [pin("m1", V1)]);
    let run = w.run();
    assert_eq!(
        (run.from_revision.as_deref(), run.to_revision.as_str()),
        (Some(V2), V1)
    );
    w.until_done();
    assert_eq!(w.state.stable_revision.as_deref(), Some(V1));
    assert_eq!(w.revision("m4"), Some(V1));
    assert_eq!(w.state.observed_source_revision.as_deref(), Some(V2));
}

#[test]
fn empty_stages_pass_through_and_joining_clusters_get_their_stage_revision() {
    let mut spec = spec(OnFailure::Pause, false);
    spec.stages.insert(
        1,
        RolloutStage {
            name: "asia".into(),
            cluster_selector: labelled("region", "asia"),
            ..Default::default()
        },
    );
    let mut w = World::new(spec);
    w.commit(V2);
    for _ in 0..3 {
        w.flux_converges();
        w.step();
        w.wait(5);
        w.measure("m1", 0.01);
    }
    assert_eq!(w.run().stage.name, "europe");
    assert!(
        w.events
            .iter()
            .any(|e| e == "StageEmpty: stage asia selects no cluster")
    );
    // A new canary joins after the canary stage passed: it gets v2; a new cluster of the
    // rest gets the stable v1 until its stage.
    let mut joining = w.observed.clusters[0].clone();
    joining.name = "m0".into();
    joining.applied_revision = None;
    w.observed.clusters.insert(0, joining.clone());
    joining.name = "m9".into();
    joining.labels.clear();
    w.observed.clusters.push(joining);
    let actions = w.step();
    assert_eq!(pins(&actions), [pin("m0", V2), pin("m9", V1)]);
    assert_eq!(w.entry("m9").state, State::Pending);
    // A cluster leaving the fleet leaves the status.
    w.observed.clusters.retain(|c| c.name != "m3");
    w.step();
    assert!(w.state.clusters.iter().all(|c| c.name != "m3"));
}

#[test]
fn a_huge_stage_keeps_its_failures_within_the_status_bound() {
    let spec = StagedRolloutSpec {
        stages: vec![RolloutStage {
            name: "all".into(),
            rest: Some(true),
            gates: spec(OnFailure::Pause, false).stages[0].gates.clone(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let now = Time("2026-12-02T04:00:00Z".parse().expect("time"));
    let mut observed = Observations {
        latest_revision: Some(V2.into()),
        ..Default::default()
    };
    for i in 0..2001 {
        let name = format!("m{i:04}");
        observed.clusters.push(ObservedCluster {
            name: name.clone(),
            applied_revision: Some(V2.into()),
            ready: true,
            healthy: true,
            policy: Some(PolicyCounts::default()),
            ..Default::default()
        });
        let value = if name == "m2000" { 0.5 } else { 0.0 };
        observed.metrics.insert(
            ("error-rate".into(), name),
            MetricObservation {
                measured_at: now.clone(),
                sample: Ok(vec![value]),
            },
        );
    }
    // Every cluster pinned at once, then healthy and verified in one step.
    let mut before = observed.clone();
    for cluster in &mut before.clusters {
        cluster.applied_revision = Some(V1.into());
    }
    let (state, actions) = step(&spec, &StagedRolloutStatus::default(), &before, &now);
    assert_eq!(pins(&actions).len(), 2001);
    let (state, _) = step(&spec, &state, &observed, &now);
    let run = state.run.as_ref().expect("paused run");
    assert_eq!(run.phase, RunPhase::Paused);
    let gates = &run.stage.gates;
    assert_eq!(gates.len(), kurator_api::rollout::MAX_STAGE_GATES);
    assert_eq!(gates[0].outcome, GateOutcome::Failed);
    assert_eq!(gates[0].cluster.as_deref(), Some("m2000"));
    assert_eq!(step(&spec, &state, &observed, &now).0, state);
}

#[test]
fn abort_after_a_supersede_returns_every_cluster_to_the_stable_revision() {
    let mut w = World::new(spec(OnFailure::Pause, false));
    w.commit(V2);
    for _ in 0..3 {
        w.flux_converges();
        w.step();
        w.wait(5);
        w.measure("m1", 0.01);
    }
    assert_eq!(w.revision("m2"), Some(V2));
    w.commit(V3);
    w.step();
    w.flux_converges();
    w.observed.requests.abort = Some("a1".into());
    let mut back = pins(&w.step());
    back.sort();
    assert_eq!(back, [pin("m1", V1), pin("m2", V1)]);
    assert!(
        w.state
            .clusters
            .iter()
            .all(|c| c.revision.as_deref() == Some(V1))
    );
}

#[test]
fn a_cluster_relabelled_into_a_promoted_stage_gets_the_new_revision() {
    let mut w = World::new(spec(OnFailure::Pause, false));
    w.commit(V2);
    for _ in 0..3 {
        w.flux_converges();
        w.step();
        w.wait(5);
        w.measure("m1", 0.01);
    }
    assert_eq!(w.run().stage.name, "europe");
    assert_eq!(w.entry("m4").state, State::Pending);
    // m4 becomes a canary, a stage already promoted.
    w.cluster("m4")
        .labels
        .insert("stage".into(), "canary".into());
    assert_eq!(pins(&w.step()), [pin("m4", V2)]);
    assert_eq!(w.entry("m4").stage.as_deref(), Some("canary"));
    w.until_done();
    assert!(
        w.state
            .clusters
            .iter()
            .all(|c| c.revision.as_deref() == Some(V2))
    );
}
