//! Pure: when the next step is due without any watch event (a soak ending, a progress deadline
//! passing). The controller requeues for it; metric gates being measured are polled on top.

use jiff::SignedDuration;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kurator_api::rollout::{
    ClusterRolloutState, RunPhase, StagePhase, StagedRolloutSpec, StagedRolloutStatus,
};

use super::{machine::DEFAULT_PROGRESS_DEADLINE, observe::parse_duration};

/// A deadline is checked strictly after it passed.
const PAST: SignedDuration = SignedDuration::from_secs(1);

/// The earliest time a step changes something by the clock alone; none when only an event
/// (Flux, a measurement, a request, a commit) can.
pub fn next_wakeup(spec: &StagedRolloutSpec, state: &StagedRolloutStatus) -> Option<Time> {
    let run = state
        .run
        .as_ref()
        .filter(|r| r.phase == RunPhase::Progressing)?;
    let stage_spec = spec.stages.get(usize::try_from(run.stage.index).ok()?)?;
    let mut due = Vec::new();
    if run.stage.phase == StagePhase::Soaking {
        let soak = stage_spec
            .soak
            .as_deref()
            .and_then(parse_duration)
            .unwrap_or_default();
        due.extend(
            run.stage
                .healthy_since
                .as_ref()
                .and_then(|t| t.0.checked_add(soak).ok()),
        );
    }
    let deadline = spec
        .progress_deadline
        .as_deref()
        .and_then(parse_duration)
        .unwrap_or(DEFAULT_PROGRESS_DEADLINE);
    due.extend(
        state
            .clusters
            .iter()
            .filter(|c| c.stage.as_deref() == Some(run.stage.name.as_str()))
            .filter(|c| c.state == ClusterRolloutState::Progressing)
            .filter_map(|c| c.since.0.checked_add(deadline + PAST).ok()),
    );
    due.into_iter().min().map(Time)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::observe::Observations;
    use kurator_api::rollout::RolloutStage;

    #[test]
    fn soak_end_and_the_earliest_deadline() {
        let spec = StagedRolloutSpec {
            stages: vec![RolloutStage {
                name: "all".into(),
                rest: Some(true),
                soak: Some("5m".into()),
                ..Default::default()
            }],
            progress_deadline: Some("2m".into()),
            ..Default::default()
        };
        let t0 = Time("2026-12-02T04:00:00Z".parse().unwrap());
        let observed = Observations {
            latest_revision: Some("v1".into()),
            clusters: vec![crate::rollout::observe::ObservedCluster {
                name: "m1".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let (state, _) = crate::rollout::machine::step(&spec, &Default::default(), &observed, &t0);
        // m1 pinned to v1 at t0: the deadline (2m, checked strictly after) is the next wake-up.
        let due = next_wakeup(&spec, &state).expect("a deadline");
        assert_eq!(due.0.to_string(), "2026-12-02T04:02:01Z");
        // Healthy: the soak end is next.
        let mut healthy = observed.clone();
        healthy.clusters[0].applied_revision = Some("v1".into());
        healthy.clusters[0].ready = true;
        healthy.clusters[0].healthy = true;
        let t1 = Time("2026-12-02T04:01:00Z".parse().unwrap());
        let (state, _) = crate::rollout::machine::step(&spec, &state, &healthy, &t1);
        assert_eq!(state.run.as_ref().unwrap().stage.phase, StagePhase::Soaking);
        let due = next_wakeup(&spec, &state).expect("the soak end");
        assert_eq!(due.0.to_string(), "2026-12-02T04:06:00Z");
        let t2 = Time("2026-12-02T04:06:00Z".parse().unwrap());
        let (state, _) = crate::rollout::machine::step(&spec, &state, &healthy, &t2);
        assert!(state.run.is_none(), "no gates: promoted and done");
        assert_eq!(next_wakeup(&spec, &state), None);
    }
}
