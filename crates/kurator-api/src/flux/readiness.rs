//! The one rule for "is this Flux object ready": [`readiness`].

use super::{FluxStatus, condition};

/// Where a Flux object stands for its current generation (see [`readiness`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FluxReadiness {
    /// Flux has acted on the current generation and its `Ready` condition is True.
    Ready,
    /// Flux has acted on the current generation and its `Ready` condition is False: Flux's
    /// reason (`NotReady` if it gave none) and message.
    NotReady { reason: String, message: String },
    /// Flux has not reported on the current generation yet, or reports that it is still
    /// working on it. `reason` is Flux's own only when its `Ready` condition is Unknown for the
    /// current generation (e.g. `Progressing`, `DependencyNotReady`); callers pick their own
    /// otherwise. `message` says what is awaited.
    Progressing {
        reason: Option<String>,
        message: String,
    },
}

impl FluxReadiness {
    pub fn is_ready(&self) -> bool {
        matches!(self, FluxReadiness::Ready)
    }
}

/// Whether a Flux object is ready, from its `metadata.generation` and its status.
///
/// The rule, for every caller: an object is [`Ready`](FluxReadiness::Ready) or
/// [`NotReady`](FluxReadiness::NotReady) only once Flux has observed its current generation,
/// and then by its `Ready` condition (True / False). Until then it is
/// [`Progressing`](FluxReadiness::Progressing), which covers:
/// - no status at all;
/// - `status.observedGeneration` missing while `metadata.generation` is set (an object whose
///   status has no `observedGeneration` counts as not yet observed), or lower than it —
///   unless the `Ready` condition itself is stamped with the current generation (below);
/// - no `Ready` condition, or one with status Unknown (or anything but True / False);
/// - a `Ready` condition whose own `observedGeneration` is set and lower than the generation
///   (a verdict about an older spec).
///
/// A `Ready` condition whose own `observedGeneration` is the current generation is Flux's
/// verdict on it even when `status.observedGeneration` lags: Flux stamps every condition it
/// writes with the generation it judged, but moves `status.observedGeneration` only when a
/// reconcile succeeds, so a first reconcile that fails (a failed health check, a build error)
/// leaves it at -1 and its reason and message would otherwise never be seen.
///
/// Without a generation (an object not read from an API server) the generation checks are
/// skipped and only the `Ready` condition counts.
pub fn readiness(generation: Option<i64>, status: Option<&FluxStatus>) -> FluxReadiness {
    let progressing = |message: String| FluxReadiness::Progressing {
        reason: None,
        message,
    };
    let Some(status) = status else {
        return progressing("Flux has not reported on it yet".into());
    };
    let judged_current = generation.is_some_and(|generation| {
        status
            .condition(condition::READY)
            .and_then(|ready| ready.observed_generation)
            .is_some_and(|observed| observed >= generation)
    });
    if let Some(generation) = generation.filter(|_| !judged_current) {
        match status.observed_generation {
            None => {
                return progressing(format!("Flux has not observed generation {generation} yet"));
            }
            // Flux writes -1 before its first reconcile.
            Some(observed) if observed < 0 => {
                return progressing(format!(
                    "Flux has not reconciled generation {generation} yet"
                ));
            }
            Some(observed) if observed < generation => {
                return progressing(format!(
                    "Flux has not acted on generation {generation} yet (observed {observed})"
                ));
            }
            Some(_) => {}
        }
    }
    let Some(ready) = status.condition(condition::READY) else {
        return progressing("Flux has not reported a Ready condition yet".into());
    };
    if let (Some(generation), Some(observed)) = (generation, ready.observed_generation)
        && observed < generation
    {
        return progressing(format!(
            "the Ready condition is about generation {observed}, not {generation}"
        ));
    }
    match ready.status.as_str() {
        "True" => FluxReadiness::Ready,
        "False" => FluxReadiness::NotReady {
            reason: ready
                .reason
                .clone()
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| "NotReady".into()),
            message: ready.message.clone().unwrap_or_default(),
        },
        _ => FluxReadiness::Progressing {
            reason: ready.reason.clone().filter(|r| !r.is_empty()),
            message: ready
                .message
                .clone()
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| "Flux is reconciling it".into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flux::FluxCondition;

    fn status(observed: Option<i64>, ready: Option<(&str, Option<i64>)>) -> FluxStatus {
        FluxStatus {
            observed_generation: observed,
            conditions: ready
                .map(|(status, observed)| FluxCondition {
                    type_: "Ready".into(),
                    status: status.into(),
                    observed_generation: observed,
                    reason: Some(format!("Reason{status}")),
                    message: Some(format!("message {status}")),
                    ..Default::default()
                })
                .into_iter()
                .collect(),
            ..Default::default()
        }
    }

    fn progressing(r: &FluxReadiness) -> bool {
        matches!(r, FluxReadiness::Progressing { .. })
    }

    #[test]
    fn ready_when_the_current_generation_is_observed_and_ready() {
        let s = status(Some(2), Some(("True", Some(2))));
        assert_eq!(readiness(Some(2), Some(&s)), FluxReadiness::Ready);
        // A newer observation is as good (the store lags the API).
        assert!(readiness(Some(1), Some(&s)).is_ready());
        // Without a condition generation, the status's counts.
        let s = status(Some(2), Some(("True", None)));
        assert!(readiness(Some(2), Some(&s)).is_ready());
    }

    #[test]
    fn not_ready_carries_fluxs_reason_and_message() {
        let s = status(Some(2), Some(("False", Some(2))));
        assert_eq!(
            readiness(Some(2), Some(&s)),
            FluxReadiness::NotReady {
                reason: "ReasonFalse".into(),
                message: "message False".into()
            }
        );
        let mut bare = status(Some(2), Some(("False", None)));
        bare.conditions[0].reason = None;
        bare.conditions[0].message = None;
        assert_eq!(
            readiness(Some(2), Some(&bare)),
            FluxReadiness::NotReady {
                reason: "NotReady".into(),
                message: String::new()
            }
        );
    }

    #[test]
    fn no_status_is_progressing() {
        let r = readiness(Some(1), None);
        assert!(progressing(&r), "{r:?}");
        assert!(progressing(&readiness(None, None)));
    }

    #[test]
    fn a_missing_observed_generation_is_not_yet_observed() {
        let s = status(None, Some(("True", None)));
        assert_eq!(
            readiness(Some(1), Some(&s)),
            FluxReadiness::Progressing {
                reason: None,
                message: "Flux has not observed generation 1 yet".into()
            }
        );
        // Without a generation there is nothing to compare: the condition decides.
        assert!(readiness(None, Some(&s)).is_ready());
    }

    #[test]
    fn an_older_observed_generation_is_progressing_whatever_ready_says() {
        for verdict in ["True", "False"] {
            let s = status(Some(1), Some((verdict, Some(1))));
            let r = readiness(Some(2), Some(&s));
            assert_eq!(
                r,
                FluxReadiness::Progressing {
                    reason: None,
                    message: "Flux has not acted on generation 2 yet (observed 1)".into()
                }
            );
        }
    }

    #[test]
    fn a_ready_condition_stamped_with_the_current_generation_decides_when_status_lags() {
        // What kustomize-controller writes when the first reconcile fails its health check.
        let failed = status(Some(-1), Some(("False", Some(1))));
        assert_eq!(
            readiness(Some(1), Some(&failed)),
            FluxReadiness::NotReady {
                reason: "ReasonFalse".into(),
                message: "message False".into()
            }
        );
        // A failure of a new spec, after an earlier generation succeeded.
        let failed = status(Some(1), Some(("False", Some(2))));
        assert!(matches!(
            readiness(Some(2), Some(&failed)),
            FluxReadiness::NotReady { .. }
        ));
        // Still working on it: Flux's own reason.
        let working = status(None, Some(("Unknown", Some(1))));
        assert_eq!(
            readiness(Some(1), Some(&working)),
            FluxReadiness::Progressing {
                reason: Some("ReasonUnknown".into()),
                message: "message Unknown".into()
            }
        );
    }

    #[test]
    fn fluxs_initial_minus_one_reads_as_not_reconciled_yet() {
        let s = status(Some(-1), None);
        assert_eq!(
            readiness(Some(1), Some(&s)),
            FluxReadiness::Progressing {
                reason: None,
                message: "Flux has not reconciled generation 1 yet".into()
            }
        );
    }

    #[test]
    fn a_ready_condition_about_an_older_generation_is_progressing() {
        let s = status(Some(2), Some(("True", Some(1))));
        assert_eq!(
            readiness(Some(2), Some(&s)),
            FluxReadiness::Progressing {
                reason: None,
                message: "the Ready condition is about generation 1, not 2".into()
            }
        );
        // Without a generation the condition's own generation is not compared either.
        assert!(readiness(None, Some(&s)).is_ready());
    }

    #[test]
    fn a_missing_ready_condition_is_progressing() {
        let s = status(Some(2), None);
        assert_eq!(
            readiness(Some(2), Some(&s)),
            FluxReadiness::Progressing {
                reason: None,
                message: "Flux has not reported a Ready condition yet".into()
            }
        );
    }

    #[test]
    fn an_unknown_ready_condition_is_progressing_with_fluxs_reason() {
        let s = status(Some(2), Some(("Unknown", Some(2))));
        assert_eq!(
            readiness(Some(2), Some(&s)),
            FluxReadiness::Progressing {
                reason: Some("ReasonUnknown".into()),
                message: "message Unknown".into()
            }
        );
        let mut odd = status(Some(2), Some(("", None)));
        odd.conditions[0].reason = None;
        odd.conditions[0].message = None;
        assert_eq!(
            readiness(Some(2), Some(&odd)),
            FluxReadiness::Progressing {
                reason: None,
                message: "Flux is reconciling it".into()
            }
        );
    }
}
