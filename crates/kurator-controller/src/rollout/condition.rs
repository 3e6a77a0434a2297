//! Pure: the `StagedRollout` condition, derived from the state (so it is right after any
//! restart, whatever Events were lost).

use kurator_api::{
    conditions::Desired,
    rollout::{RunPhase, StagePhase, StagedRolloutStatus},
};

pub const TYPE: &str = "StagedRollout";

pub mod reason {
    pub const PROGRESSING: &str = "Progressing";
    pub const SOAKING: &str = "Soaking";
    pub const VERIFYING: &str = "Verifying";
    pub const AWAITING_APPROVAL: &str = "AwaitingApproval";
    pub const SUCCEEDED: &str = "Succeeded";
    pub const ROLLED_BACK: &str = "RolledBack";
    pub const ABORTED: &str = "Aborted";
    pub const IDLE: &str = "NoRun";
    pub const MANUAL_PAUSE: &str = "ManualPause";
    pub const GATE_FAILED: &str = "GateFailed";
    pub const HEALTH_FAILED: &str = "HealthFailed";
    pub const NO_REVISION_TO_ROLL_BACK_TO: &str = "NoRevisionToRollBackTo";
}

/// True when the last run succeeded and none is in progress; Unknown while one progresses;
/// False when paused, rolled back or aborted.
pub fn condition(state: &StagedRolloutStatus) -> Desired {
    if let Some(run) = &state.run {
        let stage = &run.stage;
        if let Some(paused) = &run.paused {
            return Desired::new(TYPE, false, &paused.reason, paused.message.clone());
        }
        let (reason, what) = match stage.phase {
            StagePhase::Updating => (reason::PROGRESSING, "updating"),
            StagePhase::Soaking => (reason::SOAKING, "soaking"),
            StagePhase::Verifying => (reason::VERIFYING, "verifying its gates"),
            StagePhase::AwaitingApproval => (
                reason::AWAITING_APPROVAL,
                "waiting for `kurator rollout promote`",
            ),
        };
        return Desired::unknown(
            TYPE,
            reason,
            format!(
                "run {} to {}: stage {} ({}) {what}",
                run.id,
                run.to_revision,
                stage.name,
                stage.index + 1
            ),
        );
    }
    let Some(last) = state.history.first() else {
        return Desired::new(TYPE, true, reason::IDLE, "no run yet");
    };
    let message = last
        .message
        .clone()
        .unwrap_or_else(|| format!("run {} to {}: {:?}", last.id, last.to_revision, last.phase));
    match last.phase {
        RunPhase::RolledBack => Desired::new(TYPE, false, reason::ROLLED_BACK, message),
        RunPhase::Aborted => Desired::new(TYPE, false, reason::ABORTED, message),
        _ => Desired::new(TYPE, true, reason::SUCCEEDED, message),
    }
}
