//! Pure: the annotation `kurator rollout promote|pause|resume|abort|undo` writes, and when it
//! refuses to write one.
//!
//! The controller acts once per new annotation value (token) and ignores a request that does
//! not apply with only an Event; refusing here, from the same status the controller reads,
//! tells the person at once instead.

use kurator_api::rollout::{RunPhase, StagePhase, StagedRolloutStatus, annotation};
use kurator_controller::rollout::observe::promote_token;
use serde_json::json;

/// One request kind, as typed after `kurator rollout`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Promote,
    Pause,
    Resume,
    Abort,
    Undo,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Promote => "promote",
            Verb::Pause => "pause",
            Verb::Resume => "resume",
            Verb::Abort => "abort",
            Verb::Undo => "undo",
        }
    }

    /// The annotation the controller reads for this request.
    pub fn annotation(self) -> &'static str {
        match self {
            Verb::Promote => annotation::PROMOTE,
            Verb::Pause => annotation::PAUSE,
            Verb::Resume => annotation::RESUME,
            Verb::Abort => annotation::ABORT,
            Verb::Undo => annotation::UNDO,
        }
    }
}

/// The annotation to write and what it asks for, in words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub annotation: &'static str,
    pub token: String,
    pub what: String,
}

impl Request {
    /// The merge patch of `metadata.annotations` that writes it.
    pub fn patch(&self) -> serde_json::Value {
        json!({"metadata": {"annotations": {self.annotation: self.token}}})
    }
}

/// Why a request is not written: it would be ignored by the controller.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// The request for `verb` given the Application's `status.stagedRollout`; `nonce` makes each
/// request's token new (the current time), so the same request typed twice acts twice.
pub fn build(
    verb: Verb,
    app: &str,
    status: &StagedRolloutStatus,
    nonce: &str,
) -> Result<Request, Refused> {
    let run = status.run.as_ref();
    let no_run = || {
        Refused(format!(
            "{app} has no rollout run in progress; nothing to {}",
            verb.as_str()
        ))
    };
    let (token, what) = match verb {
        Verb::Promote => {
            let run = run.ok_or_else(no_run)?;
            if run.stage.phase != StagePhase::AwaitingApproval {
                return Err(Refused(format!(
                    "stage {} of run {} is {:?}, not awaiting approval; promote approves a stage \
                     whose other gates passed",
                    run.stage.name, run.id, run.stage.phase
                )));
            }
            (
                promote_token(run.id, &run.stage.name, nonce),
                format!("approve stage {} of run {}", run.stage.name, run.id),
            )
        }
        Verb::Pause => {
            let run = run.ok_or_else(no_run)?;
            if run.phase == RunPhase::Paused {
                return Err(Refused(format!(
                    "run {} is already paused ({})",
                    run.id,
                    pause_reason(status)
                )));
            }
            (
                nonce.to_string(),
                format!("pause run {} at stage {}", run.id, run.stage.name),
            )
        }
        Verb::Resume => {
            let run = run.ok_or_else(no_run)?;
            if run.phase != RunPhase::Paused {
                return Err(Refused(format!(
                    "run {} is {:?}, not paused",
                    run.id, run.phase
                )));
            }
            (
                nonce.to_string(),
                format!("resume run {} at stage {}", run.id, run.stage.name),
            )
        }
        Verb::Abort => {
            let run = run.ok_or_else(no_run)?;
            (
                nonce.to_string(),
                format!(
                    "abort run {}: every cluster off {} goes back to it",
                    run.id,
                    run.from_revision.as_deref().unwrap_or("(first deployment)")
                ),
            )
        }
        Verb::Undo => {
            if let Some(run) = run {
                return Err(Refused(format!(
                    "run {} is in progress; undo rolls back a finished run (abort this one \
                     instead)",
                    run.id
                )));
            }
            let last = status.history.first();
            let target = last
                .filter(|h| h.phase == RunPhase::Succeeded)
                .and_then(|h| h.from_revision.as_deref());
            let Some(target) = target else {
                return Err(Refused(format!(
                    "the last run of {app} did not succeed from an earlier revision; nothing to \
                     undo"
                )));
            };
            (
                nonce.to_string(),
                format!("roll {app} back to {target}, as a new staged run"),
            )
        }
    };
    Ok(Request {
        annotation: verb.annotation(),
        token,
        what,
    })
}

fn pause_reason(status: &StagedRolloutStatus) -> String {
    status
        .run
        .as_ref()
        .and_then(|r| r.paused.as_ref())
        .map_or_else(|| "no reason recorded".into(), |p| p.reason.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
    use kurator_api::rollout::{PauseReason, RolloutRun, RunSummary, StageProgress};
    use kurator_controller::rollout::observe::{Requests, parse_promote, request};

    fn t() -> Time {
        Time(Timestamp::from_second(0).unwrap())
    }

    fn with_run(phase: RunPhase, stage_phase: StagePhase) -> StagedRolloutStatus {
        StagedRolloutStatus {
            run: Some(RolloutRun {
                id: 4,
                from_revision: Some("main@sha1:1111".into()),
                to_revision: "main@sha1:2222".into(),
                phase,
                started_at: t(),
                stage: StageProgress {
                    index: 1,
                    name: "europe".into(),
                    phase: stage_phase,
                    started_at: t(),
                    healthy_since: None,
                    verifying_since: None,
                    gates: Vec::new(),
                },
                paused: (phase == RunPhase::Paused).then(|| PauseReason {
                    reason: "ManualPause".into(),
                    message: "paused by kurator rollout pause".into(),
                    since: t(),
                }),
            }),
            last_run_id: 4,
            ..Default::default()
        }
    }

    /// The annotations of `request`, as the controller reads them.
    fn read_back(request: &Request) -> Requests {
        let annotations = request.patch()["metadata"]["annotations"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        Requests::from_annotations(&annotations)
    }

    #[test]
    fn promote_names_the_run_and_stage_awaiting_approval() {
        let status = with_run(RunPhase::Progressing, StagePhase::AwaitingApproval);
        let request = build(Verb::Promote, "shop", &status, "2026-12-02T05:00:00Z").unwrap();
        assert_eq!(request.annotation, annotation::PROMOTE);
        assert_eq!(request.token, "4/europe/2026-12-02T05:00:00Z");
        assert_eq!(request.what, "approve stage europe of run 4");
        let requests = read_back(&request);
        let token = requests
            .new_token(request::PROMOTE, &status)
            .expect("a new token");
        assert_eq!(parse_promote(token), Some((4, "europe")));
    }

    #[test]
    fn promote_is_refused_without_a_run_or_before_approval_is_due() {
        let none = StagedRolloutStatus::default();
        assert_eq!(
            build(Verb::Promote, "shop", &none, "n").unwrap_err().0,
            "shop has no rollout run in progress; nothing to promote"
        );
        let verifying = with_run(RunPhase::Progressing, StagePhase::Verifying);
        let refused = build(Verb::Promote, "shop", &verifying, "n").unwrap_err();
        assert!(
            refused
                .0
                .starts_with("stage europe of run 4 is Verifying, not awaiting approval"),
            "{refused}"
        );
    }

    #[test]
    fn other_requests_carry_the_nonce_and_are_refused_when_the_controller_would_ignore_them() {
        let progressing = with_run(RunPhase::Progressing, StagePhase::Soaking);
        let paused = with_run(RunPhase::Paused, StagePhase::Soaking);
        let pause = build(Verb::Pause, "shop", &progressing, "n1").unwrap();
        assert_eq!(
            (pause.annotation, pause.token.as_str()),
            (annotation::PAUSE, "n1")
        );
        assert_eq!(read_back(&pause).pause.as_deref(), Some("n1"));
        assert!(build(Verb::Pause, "shop", &paused, "n").is_err());
        assert_eq!(
            build(Verb::Resume, "shop", &progressing, "n")
                .unwrap_err()
                .0,
            "run 4 is Progressing, not paused"
        );
        let resume = build(Verb::Resume, "shop", &paused, "n2").unwrap();
        assert_eq!(resume.annotation, annotation::RESUME);
        let abort = build(Verb::Abort, "shop", &paused, "n3").unwrap();
        assert_eq!(
            abort.what,
            "abort run 4: every cluster off main@sha1:1111 goes back to it"
        );
        assert!(build(Verb::Abort, "shop", &StagedRolloutStatus::default(), "n").is_err());
        assert!(build(Verb::Undo, "shop", &progressing, "n").is_err());
    }

    #[test]
    fn undo_needs_a_last_run_that_succeeded_from_an_earlier_revision() {
        let summary = |phase, from: Option<&str>| RunSummary {
            id: 2,
            from_revision: from.map(Into::into),
            to_revision: "main@sha1:2222".into(),
            phase,
            started_at: t(),
            finished_at: t(),
            stage: "rest".into(),
            message: None,
            failed_gates: Vec::new(),
        };
        let mut status = StagedRolloutStatus {
            history: vec![summary(RunPhase::Succeeded, Some("main@sha1:1111"))],
            ..Default::default()
        };
        let undo = build(Verb::Undo, "shop", &status, "n").unwrap();
        assert_eq!(undo.annotation, annotation::UNDO);
        assert_eq!(
            undo.what,
            "roll shop back to main@sha1:1111, as a new staged run"
        );
        status.history = vec![summary(RunPhase::RolledBack, Some("main@sha1:1111"))];
        assert!(build(Verb::Undo, "shop", &status, "n").is_err());
        status.history = vec![summary(RunPhase::Succeeded, None)];
        assert!(build(Verb::Undo, "shop", &status, "n").is_err());
    }
}
