//! The fleet changing under a run: empty stages, clusters joining, leaving, relabelled, and a
//! stage too large for every gate result to fit in status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kurator_api::rollout::{
    ClusterRolloutState as State, GateOutcome, OnFailure, RolloutStage, RunPhase,
    StagedRolloutSpec, StagedRolloutStatus,
};

use super::world::{V1, V2, World, labelled, pin, pins, spec};
use crate::rollout::{
    gates::PolicyCounts,
    machine::step,
    observe::{MetricObservation, Observations, ObservedCluster},
};

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
    w.advance_with_a_healthy_canary(3);
    assert_eq!(w.run().stage.name, "europe");
    assert!(
        w.events
            .iter()
            .any(|e| e == "StageEmpty: run 1: stage asia selects no cluster")
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
fn a_cluster_relabelled_into_a_promoted_stage_gets_the_new_revision() {
    let mut w = World::new(spec(OnFailure::Pause, false));
    w.commit(V2);
    w.advance_with_a_healthy_canary(3);
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
