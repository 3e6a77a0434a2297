//! The simulated fleet the scenarios run on, and the controller's loop around `step`.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kurator_api::{
    apps::ClusterSelector,
    rollout::{
        Comparison, MetricGate, OnFailure, RolloutGates, RolloutStage, StagedRolloutSpec,
        StagedRolloutStatus,
    },
};

use crate::rollout::{
    gates::PolicyCounts,
    machine::step,
    observe::{Action, MetricObservation, Observations, ObservedCluster},
};

pub(super) const V1: &str = "main@sha1:1111111111";
pub(super) const V2: &str = "main@sha1:2222222222";
pub(super) const V3: &str = "main@sha1:3333333333";
pub(super) const V4: &str = "main@sha1:4444444444";

pub(super) fn labelled(key: &str, value: &str) -> Option<ClusterSelector> {
    Some(ClusterSelector {
        match_labels: [(key.to_string(), value.to_string())].into(),
    })
}

pub(super) fn spec(on_failure: OnFailure, europe_approval: bool) -> StagedRolloutSpec {
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
pub(super) struct World {
    pub(super) spec: StagedRolloutSpec,
    pub(super) state: StagedRolloutStatus,
    pub(super) observed: Observations,
    pub(super) now: Timestamp,
    /// Every Event so far, as `reason: message`.
    pub(super) events: Vec<String>,
}

impl World {
    /// A fleet running v1 everywhere, adopted without a run.
    pub(super) fn new(spec: StagedRolloutSpec) -> Self {
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
            rechecking: false,
            failing: false,
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

    pub(super) fn now(&self) -> Time {
        Time(self.now)
    }

    /// One reconcile, checked for idempotency.
    pub(super) fn step(&mut self) -> Vec<Action> {
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

    pub(super) fn wait(&mut self, minutes: i64) {
        self.now += SignedDuration::from_mins(minutes);
    }

    pub(super) fn cluster(&mut self, name: &str) -> &mut ObservedCluster {
        self.observed
            .clusters
            .iter_mut()
            .find(|c| c.name == name)
            .expect("cluster")
    }

    /// Flux applies every pin, and the clusters are healthy (except the ones told otherwise).
    pub(super) fn flux_converges(&mut self) {
        for entry in self.state.clusters.clone() {
            let cluster = self.cluster(&entry.name);
            cluster.applied_revision = entry.revision;
        }
    }

    /// Thanos answers the metric gate for a cluster, measured now.
    pub(super) fn measure(&mut self, cluster: &str, value: f64) {
        let now = self.now();
        self.observed.metrics.insert(
            ("error-rate".into(), cluster.into()),
            MetricObservation {
                measured_at: now,
                sample: Ok(vec![value]),
            },
        );
    }

    pub(super) fn commit(&mut self, revision: &str) {
        self.observed.latest_revision = Some(revision.into());
    }

    pub(super) fn revision(&self, name: &str) -> Option<&str> {
        self.entry(name).revision.as_deref()
    }

    pub(super) fn entry(&self, name: &str) -> &kurator_api::rollout::ClusterRolloutStatus {
        self.state
            .clusters
            .iter()
            .find(|c| c.name == name)
            .expect("cluster in status")
    }

    pub(super) fn run(&self) -> &kurator_api::rollout::RolloutRun {
        self.state.run.as_ref().expect("a run")
    }

    /// Steps, with Flux converging and a good canary measurement, until the run ends.
    /// `steps` reconciles 5 s apart, Flux converging before each and the canary's metric
    /// passing after each: enough steps take the run past the canary to "europe".
    pub(super) fn advance_with_a_healthy_canary(&mut self, steps: usize) {
        for _ in 0..steps {
            self.flux_converges();
            self.step();
            self.wait(5);
            self.measure("m1", 0.01);
        }
    }

    pub(super) fn until_done(&mut self) {
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

pub(super) fn pins(actions: &[Action]) -> Vec<(String, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Pin { cluster, revision } => Some((cluster.clone(), revision.clone())),
            _ => None,
        })
        .collect()
}

pub(super) fn pin(cluster: &str, revision: &str) -> (String, String) {
    (cluster.to_string(), revision.to_string())
}
