//! Pure: what one step of the machine reads and what it asks the controller to do.

use std::collections::BTreeMap;

use jiff::SignedDuration;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kurator_api::rollout::{StagedRolloutStatus, annotation};

use super::{
    gates::{MetricSample, PolicyCounts},
    pinning::same_revision,
};

/// Everything a step looks at besides its own state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observations {
    /// The tracking source's artifact revision (`main@sha1:…`); none while it has none.
    pub latest_revision: Option<String>,
    /// The clusters of the destination fleets.
    pub clusters: Vec<ObservedCluster>,
    /// Metric gate samples by (gate name, cluster), with when they were measured.
    pub metrics: BTreeMap<(String, String), MetricObservation>,
    pub requests: Requests,
}

/// One destination cluster: its labels, and what Flux and the policy reports say of it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedCluster {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// The revision its Flux objects last applied (every policy's object, when they agree).
    pub applied_revision: Option<String>,
    /// Every Flux object of the cluster Ready at its generation.
    pub ready: bool,
    /// Its workloads healthy (Flux health checks / Helm's wait).
    pub healthy: bool,
    /// Flux's message when not ready (never credentials).
    pub message: Option<String>,
    pub policy: Option<PolicyCounts>,
    /// Not ready only because Flux is reconciling again a generation it already reconciled
    /// (its periodic drift check, a retry): `Ready` is Unknown meanwhile, which says nothing
    /// new about health.
    pub rechecking: bool,
    /// Flux says `Ready` False (an error, not progress): `message` says why. A cluster still
    /// within its progress deadline shows it at once, instead of only when the deadline fails
    /// it.
    pub failing: bool,
}

impl ObservedCluster {
    /// Ready and healthy at `revision` (compared by digest: [`same_revision`]).
    pub fn healthy_at(&self, revision: Option<&str>) -> bool {
        self.ready && self.healthy && self.runs(revision)
    }

    /// Flux is re-checking it at `revision`: no verdict, the cluster keeps the state it had
    /// (a Healthy one is not taken as having lost health, which would restart a soak at every
    /// sync interval).
    pub fn rechecking_at(&self, revision: Option<&str>) -> bool {
        self.rechecking && self.runs(revision)
    }

    /// Its Flux objects applied `revision`.
    pub fn runs(&self, revision: Option<&str>) -> bool {
        match (self.applied_revision.as_deref(), revision) {
            (Some(applied), Some(wanted)) => same_revision(applied, wanted),
            _ => false,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct MetricObservation {
    pub measured_at: Time,
    pub sample: MetricSample,
}

/// The request annotations' values (tokens) as found on the Application.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Requests {
    /// `<run id>/<stage>/<nonce>`: approves that stage of that run only.
    pub promote: Option<String>,
    pub pause: Option<String>,
    pub resume: Option<String>,
    pub abort: Option<String>,
    pub undo: Option<String>,
}

/// Request kinds, as keys of `status.stagedRollout.handledRequests`.
pub mod request {
    pub const PROMOTE: &str = "promote";
    pub const PAUSE: &str = "pause";
    pub const RESUME: &str = "resume";
    pub const ABORT: &str = "abort";
    pub const UNDO: &str = "undo";
}

impl Requests {
    /// Reads the request annotations of an Application.
    pub fn from_annotations(annotations: &BTreeMap<String, String>) -> Self {
        let get = |key: &str| annotations.get(key).filter(|v| !v.is_empty()).cloned();
        Requests {
            promote: get(annotation::PROMOTE),
            pause: get(annotation::PAUSE),
            resume: get(annotation::RESUME),
            abort: get(annotation::ABORT),
            undo: get(annotation::UNDO),
        }
    }

    /// The token of a request of `kind` not acted on yet.
    pub fn new_token<'a>(&'a self, kind: &str, state: &StagedRolloutStatus) -> Option<&'a str> {
        let token = match kind {
            request::PROMOTE => &self.promote,
            request::PAUSE => &self.pause,
            request::RESUME => &self.resume,
            request::ABORT => &self.abort,
            request::UNDO => &self.undo,
            _ => &None,
        }
        .as_deref()?;
        (state.handled_requests.get(kind).map(String::as_str) != Some(token)).then_some(token)
    }
}

/// The value `kurator rollout promote` writes: the run and stage it approves, and a nonce.
pub fn promote_token(run: i64, stage: &str, nonce: &str) -> String {
    format!("{run}/{stage}/{nonce}")
}

/// The run and stage a promote token approves.
pub fn parse_promote(token: &str) -> Option<(i64, &str)> {
    let mut parts = token.splitn(3, '/');
    let run = parts.next()?.parse().ok()?;
    let stage = parts.next()?;
    parts.next()?;
    Some((run, stage))
}

/// What a step asks of the controller, after it has written the new state. Pins and gate
/// evaluations are also derivable from the state (the controller builds Flux objects from
/// `clusters[].revision`), so one lost to a crash is redone; an Event may be lost, never doubled.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub enum Action {
    /// Point the cluster's Flux objects at this revision's pinned source.
    Pin { cluster: String, revision: String },
    /// Measure the stage's metric gates for these clusters (results come back as
    /// [`Observations::metrics`], measured after `run.stage.verifyingSince`).
    EvaluateGates {
        stage: String,
        clusters: Vec<String>,
    },
    Event {
        warning: bool,
        reason: String,
        message: String,
    },
}

/// A Go duration as the schema admits it (`90s`, `1h30m`, `1.5h`, `500ms`).
pub fn parse_duration(text: &str) -> Option<SignedDuration> {
    let mut total = 0f64;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|&n| n > 0)?;
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (0.001, 2)
        } else if rest.starts_with('s') {
            (1.0, 1)
        } else if rest.starts_with('m') {
            (60.0, 1)
        } else if rest.starts_with('h') {
            (3600.0, 1)
        } else {
            return None;
        };
        total += number * unit;
        rest = &rest[len..];
    }
    SignedDuration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let secs = |t: &str| parse_duration(t).map(|d| d.as_secs_f64());
        assert_eq!(secs("90s"), Some(90.0));
        assert_eq!(secs("1h30m"), Some(5400.0));
        assert_eq!(secs("1.5h"), Some(5400.0));
        assert_eq!(secs("500ms"), Some(0.5));
        for bad in ["", "5", "m", "5d", "5m3"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn requests_count_once_per_token_and_promote_names_its_stage() {
        let annotations = [
            (annotation::PAUSE.to_string(), "t1".to_string()),
            (
                annotation::PROMOTE.to_string(),
                promote_token(3, "canary", "t2"),
            ),
            (annotation::ABORT.to_string(), String::new()),
        ]
        .into();
        let requests = Requests::from_annotations(&annotations);
        assert_eq!(requests.abort, None);
        let mut state = StagedRolloutStatus::default();
        assert_eq!(requests.new_token(request::PAUSE, &state), Some("t1"));
        state
            .handled_requests
            .insert(request::PAUSE.into(), "t1".into());
        assert_eq!(requests.new_token(request::PAUSE, &state), None);
        let token = requests.new_token(request::PROMOTE, &state).expect("new");
        assert_eq!(parse_promote(token), Some((3, "canary")));
        assert_eq!(parse_promote("canary"), None);
        assert_eq!(parse_promote("x/canary/1"), None);
    }
}
