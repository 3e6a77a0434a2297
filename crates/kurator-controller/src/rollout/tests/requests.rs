//! Requests: promote, pause, resume, abort, undo.

use kurator_api::rollout::{ClusterRolloutState as State, OnFailure, RunPhase, StagePhase};

use super::world::{V1, V2, V3, World, pin, pins, spec};
use crate::rollout::{
    condition::{self, reason},
    machine::event,
    observe::promote_token,
};

#[test]
fn approval_holds_the_stage_until_promote_names_it() {
    let mut w = World::new(spec(OnFailure::Pause, true));
    w.commit(V2);
    w.advance_with_a_healthy_canary(5);
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
fn abort_after_a_supersede_returns_every_cluster_to_the_stable_revision() {
    let mut w = World::new(spec(OnFailure::Pause, false));
    w.commit(V2);
    w.advance_with_a_healthy_canary(3);
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
