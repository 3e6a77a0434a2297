//! The scenarios, step by step, on a simulated fleet of four clusters: m1 (the
//! canary), m2 and m3 (Europe, one at a time), m4 (the rest).
//!
//! Every step of every scenario is run twice: the second time, from its own output with the
//! same observations, it must change nothing and ask for nothing. That is the property that
//! makes a SIGKILL (or a lost status write) safe.

use kurator_api::rollout::{
    ClusterRolloutState as State, GateOutcome, OnFailure, RunPhase, StagePhase,
};

use self::world::{V1, V2, V3, V4, World, pin, pins, spec};
use super::{
    condition::{self, reason},
    gates::PolicyCounts,
    machine::step,
    observe::Action,
};

mod fleet_changes;
mod requests;
mod world;

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
    w.advance_with_a_healthy_canary(3);
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
fn a_pinned_source_spelling_the_commit_differently_still_counts_as_the_revision() {
    let mut w = World::new(spec(OnFailure::Pause, false));
    w.commit(V2);
    w.step();
    // The pinned GitRepository (ref.commit) names its artifact without the branch.
    w.cluster("m1").applied_revision = Some("sha1:2222222222".into());
    w.step();
    assert_eq!(w.entry("m1").state, State::Healthy);
}

#[test]
fn flux_rechecking_a_healthy_cluster_neither_restarts_the_soak_nor_asks_approval_again() {
    let mut w = World::new(spec(OnFailure::Pause, true));
    w.commit(V2);
    w.step();
    w.flux_converges();
    w.step();
    let soaking_since = w.run().stage.healthy_since.clone();
    assert_eq!(w.run().stage.phase, StagePhase::Soaking);
    // Flux's periodic drift check: `Ready` Unknown for a moment at the generation it applied.
    let recheck = |w: &mut World, name: &str, on: bool| {
        let c = w.cluster(name);
        c.ready = !on;
        c.rechecking = on;
    };
    w.wait(3);
    recheck(&mut w, "m1", true);
    w.step();
    assert_eq!(w.entry("m1").state, State::Healthy);
    assert_eq!(w.run().stage.phase, StagePhase::Soaking);
    assert_eq!(w.run().stage.healthy_since, soaking_since);
    recheck(&mut w, "m1", false);
    w.wait(2);
    w.step();
    assert_eq!(
        w.run().stage.phase,
        StagePhase::Verifying,
        "soaked 5m from the start"
    );

    // Europe, with approval: a recheck while it awaits approval does not start it over.
    w.measure("m1", 0.01);
    assert_eq!(pins(&w.step()), [pin("m2", V2)]);
    w.flux_converges();
    assert_eq!(pins(&w.step()), [pin("m3", V2)]);
    w.flux_converges();
    w.step();
    assert_eq!(w.run().stage.name, "europe");
    assert_eq!(w.run().stage.phase, StagePhase::AwaitingApproval);
    let asked = w.events.len();
    recheck(&mut w, "m2", true);
    w.step();
    assert_eq!(w.run().stage.phase, StagePhase::AwaitingApproval);
    assert_eq!(w.events.len(), asked, "{:?}", &w.events[asked..]);
    // Nor is a cluster outside the current stage taken as unhealthy.
    recheck(&mut w, "m1", true);
    w.step();
    assert_eq!(w.entry("m1").state, State::Healthy);

    // A recheck that ends badly (`Ready` False) is a health loss: the approval wait starts over.
    recheck(&mut w, "m2", false);
    w.cluster("m2").ready = false;
    w.step();
    assert_eq!(w.entry("m2").state, State::Progressing);
    assert_eq!(w.run().stage.phase, StagePhase::Updating);
    assert!(
        w.events
            .last()
            .is_some_and(|e| e.starts_with("StageHealthLost")),
        "{:?}",
        w.events
    );
}

#[test]
fn a_cluster_never_healthy_stays_progressing_while_flux_rechecks_it() {
    let mut w = World::new(spec(OnFailure::Pause, false));
    w.commit(V2);
    w.step();
    w.flux_converges();
    w.cluster("m1").ready = false;
    w.step();
    assert_eq!(w.entry("m1").state, State::Progressing);
    // Flux retries (Unknown meanwhile): no verdict, so not Healthy either.
    w.cluster("m1").rechecking = true;
    w.step();
    assert_eq!(w.entry("m1").state, State::Progressing);
    assert_eq!(w.run().stage.phase, StagePhase::Updating);
}

#[test]
fn a_canary_flux_failed_says_why_before_its_deadline() {
    let mut w = World::new(spec(OnFailure::Pause, false));
    w.commit(V2);
    w.step();
    // Flux tried v2 and failed (Ready False): the message shows at once, the state waits for
    // the deadline (Flux retries; a fix may still land).
    let broken = "kustomize build failed: accumulating resources: deploy/shop.yaml: not found";
    let c = w.cluster("m1");
    c.ready = false;
    c.healthy = false;
    c.failing = true;
    c.message = Some(broken.into());
    w.wait(1);
    w.step();
    assert_eq!(w.entry("m1").state, State::Progressing);
    assert_eq!(w.entry("m1").message.as_deref(), Some(broken));
    // A progress message from Flux's retry is not copied (status churn); the failure stays.
    let c = w.cluster("m1");
    c.failing = false;
    c.message = Some("Reconciliation in progress".into());
    w.step();
    assert_eq!(w.entry("m1").message.as_deref(), Some(broken));
    // Fixed: Healthy, and the message goes.
    w.flux_converges();
    let c = w.cluster("m1");
    (c.ready, c.healthy, c.message) = (true, true, None);
    w.step();
    assert_eq!(w.entry("m1").state, State::Healthy);
    assert_eq!(w.entry("m1").message, None);
}
