//! Standard `metav1.Condition` helpers: `lastTransitionTime` moves only when the status flips,
//! and comparisons ignore timestamps so unchanged status is never rewritten.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Summary condition on every kind.
pub const READY: &str = "Ready";

pub const TRUE: &str = "True";
pub const FALSE: &str = "False";
pub const UNKNOWN: &str = "Unknown";

/// A condition as the controller wants it, before timestamps are settled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub type_: String,
    pub status: &'static str,
    pub reason: String,
    pub message: String,
}

impl Desired {
    pub fn new(type_: &str, ok: bool, reason: &str, message: impl Into<String>) -> Self {
        Self {
            type_: type_.to_string(),
            status: if ok { TRUE } else { FALSE },
            reason: reason.to_string(),
            message: message.into(),
        }
    }

    pub fn unknown(type_: &str, reason: &str, message: impl Into<String>) -> Self {
        Self {
            status: UNKNOWN,
            ..Self::new(type_, false, reason, message)
        }
    }
}

/// Merge `desired` into `existing`: keeps `lastTransitionTime` of a condition whose status did
/// not change, stamps `now` on the ones that flipped or are new, and drops condition types that
/// are no longer wanted. Order follows `desired`.
pub fn merge(
    existing: &[Condition],
    desired: Vec<Desired>,
    generation: Option<i64>,
    now: Time,
) -> Vec<Condition> {
    desired
        .into_iter()
        .map(|d| {
            let previous = existing.iter().find(|c| c.type_ == d.type_);
            let last_transition_time = match previous {
                Some(p) if p.status == d.status => p.last_transition_time.clone(),
                _ => now.clone(),
            };
            Condition {
                type_: d.type_,
                status: d.status.to_string(),
                reason: d.reason,
                message: d.message,
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// Looks a condition up by type.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when the condition of that type is present with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == TRUE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn transition_time_moves_only_on_flip() {
        let first = merge(
            &[],
            vec![Desired::new(READY, false, "Unreachable", "down")],
            Some(1),
            at(10),
        );
        assert_eq!(first[0].last_transition_time, at(10));

        let same = merge(
            &first,
            vec![Desired::new(READY, false, "Unauthorized", "401")],
            Some(2),
            at(20),
        );
        assert_eq!(
            same[0].last_transition_time,
            at(10),
            "status unchanged: time kept"
        );
        assert_eq!(same[0].reason, "Unauthorized");
        assert_eq!(same[0].observed_generation, Some(2));

        let flipped = merge(
            &same,
            vec![Desired::new(READY, true, "Healthy", "ok")],
            Some(2),
            at(30),
        );
        assert_eq!(flipped[0].last_transition_time, at(30));
        assert!(is_true(&flipped, READY));
    }

    #[test]
    fn unwanted_conditions_are_dropped() {
        let two = merge(
            &[],
            vec![
                Desired::new(READY, true, "A", ""),
                Desired::new("Other", true, "B", ""),
            ],
            None,
            at(1),
        );
        let one = merge(&two, vec![Desired::new(READY, true, "A", "")], None, at(2));
        assert_eq!(one.len(), 1);
        assert!(find(&one, "Other").is_none());
    }
}
