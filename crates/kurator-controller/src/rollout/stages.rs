//! Pure: which stage each cluster of the destination belongs to, and how many of a stage's
//! clusters may be updating at once.
//!
//! A cluster goes to the first stage that selects it (by labels, by name, or as the rest), so
//! overlapping stages never update a cluster twice. A stage may select nothing: it is kept
//! (empty) so the run can say so and pass through it.

use std::collections::{BTreeMap, BTreeSet};

use kurator_api::rollout::{RolloutStage, StagedRolloutSpec};

/// A cluster of the Application's destination fleets, as the stores show it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DestinationCluster {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// The clusters of one stage, by name (sorted).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AssignedStage {
    pub name: String,
    pub clusters: Vec<String>,
}

/// Every stage in spec order, and the clusters no stage selects.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Assignment {
    pub stages: Vec<AssignedStage>,
    pub unassigned: Vec<String>,
}

impl Assignment {
    /// Index of the stage a cluster belongs to.
    pub fn stage_of(&self, cluster: &str) -> Option<usize> {
        self.stages.iter().position(|s| {
            s.clusters
                .binary_search_by(|c| c.as_str().cmp(cluster))
                .is_ok()
        })
    }

    pub fn clusters_of(&self, stage: usize) -> &[String] {
        self.stages.get(stage).map_or(&[], |s| &s.clusters)
    }
}

/// Assigns each cluster to the first stage that selects it.
pub fn assign(spec: &StagedRolloutSpec, clusters: &[DestinationCluster]) -> Assignment {
    let mut taken: BTreeSet<String> = BTreeSet::new();
    let mut stages = Vec::with_capacity(spec.stages.len());
    for stage in &spec.stages {
        let mut selected: Vec<String> = clusters
            .iter()
            .filter(|c| !taken.contains(c.name.as_str()) && selects(stage, c))
            .map(|c| c.name.clone())
            .collect();
        selected.sort();
        selected.dedup();
        taken.extend(selected.iter().cloned());
        stages.push(AssignedStage {
            name: stage.name.clone(),
            clusters: selected,
        });
    }
    let mut unassigned: Vec<String> = clusters
        .iter()
        .filter(|c| !taken.contains(c.name.as_str()))
        .map(|c| c.name.clone())
        .collect();
    unassigned.sort();
    unassigned.dedup();
    Assignment { stages, unassigned }
}

/// Whether a stage's selector (exactly one kind, admission enforces it) takes the cluster.
/// A stage with none selects nothing rather than everything: a typo must not widen a canary.
fn selects(stage: &RolloutStage, cluster: &DestinationCluster) -> bool {
    if let Some(selector) = &stage.cluster_selector {
        return selector
            .match_labels
            .iter()
            .all(|(k, v)| cluster.labels.get(k) == Some(v));
    }
    if let Some(names) = &stage.clusters {
        return names.iter().any(|n| n == &cluster.name);
    }
    stage.rest == Some(true)
}

/// How many more clusters of a stage may be pinned now, given how many are updating.
pub fn free_slots(stage: &RolloutStage, stage_size: usize, updating: usize) -> usize {
    let limit = stage
        .max_concurrent
        .map_or(stage_size, |m| usize::try_from(m.max(1)).unwrap_or(1));
    limit.saturating_sub(updating)
}

/// The stage's clusters in the order they are updated, cut into `maxConcurrent` batches: what
/// a run does when every cluster takes equally long (for `kurator describe` and the benchmark).
pub fn batches<'a>(stage: &RolloutStage, clusters: &'a [String]) -> Vec<&'a [String]> {
    let size = stage
        .max_concurrent
        .map_or(clusters.len(), |m| usize::try_from(m.max(1)).unwrap_or(1))
        .max(1);
    clusters.chunks(size).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kurator_api::apps::ClusterSelector;

    fn cluster(name: &str, labels: &[(&str, &str)]) -> DestinationCluster {
        DestinationCluster {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn by_label(name: &str, key: &str, value: &str) -> RolloutStage {
        RolloutStage {
            name: name.into(),
            cluster_selector: Some(ClusterSelector {
                match_labels: [(key.to_string(), value.to_string())].into(),
            }),
            ..Default::default()
        }
    }

    fn by_name(name: &str, clusters: &[&str]) -> RolloutStage {
        RolloutStage {
            name: name.into(),
            clusters: Some(clusters.iter().map(|c| c.to_string()).collect()),
            ..Default::default()
        }
    }

    fn rest(name: &str) -> RolloutStage {
        RolloutStage {
            name: name.into(),
            rest: Some(true),
            ..Default::default()
        }
    }

    fn fleet() -> Vec<DestinationCluster> {
        vec![
            cluster("m4", &[("region", "us")]),
            cluster("m1", &[("stage", "canary"), ("region", "eu")]),
            cluster("m2", &[("region", "eu")]),
            cluster("m3", &[("region", "eu")]),
            cluster("m5", &[]),
        ]
    }

    fn names(a: &Assignment) -> Vec<(String, Vec<String>)> {
        a.stages
            .iter()
            .map(|s| (s.name.clone(), s.clusters.clone()))
            .collect()
    }

    #[test]
    fn labels_names_and_rest_with_first_stage_winning() {
        let spec = StagedRolloutSpec {
            stages: vec![
                by_label("canary", "stage", "canary"),
                // m1 is in the EU too, but the canary took it.
                by_label("europe", "region", "eu"),
                by_name("us", &["m4", "not-in-the-fleet"]),
                rest("rest"),
            ],
            ..Default::default()
        };
        let a = assign(&spec, &fleet());
        let s = |v: &[&str]| v.iter().map(|c| c.to_string()).collect::<Vec<_>>();
        assert_eq!(
            names(&a),
            vec![
                ("canary".to_string(), s(&["m1"])),
                ("europe".to_string(), s(&["m2", "m3"])),
                ("us".to_string(), s(&["m4"])),
                ("rest".to_string(), s(&["m5"])),
            ]
        );
        assert!(a.unassigned.is_empty());
        assert_eq!(a.stage_of("m3"), Some(1));
        assert_eq!(a.stage_of("nope"), None);
    }

    #[test]
    fn empty_stages_are_kept_and_unselected_clusters_reported() {
        let spec = StagedRolloutSpec {
            stages: vec![
                by_label("asia", "region", "asia"),
                by_label("europe", "region", "eu"),
            ],
            ..Default::default()
        };
        let a = assign(&spec, &fleet());
        assert_eq!(a.stages[0].clusters, Vec::<String>::new());
        assert_eq!(a.clusters_of(1), ["m1", "m2", "m3"]);
        assert_eq!(a.unassigned, ["m4", "m5"]);
    }

    #[test]
    fn a_stage_without_selector_selects_nothing() {
        let spec = StagedRolloutSpec {
            stages: vec![RolloutStage {
                name: "typo".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let a = assign(&spec, &fleet());
        assert!(a.stages[0].clusters.is_empty());
        assert_eq!(a.unassigned.len(), 5);
    }

    #[test]
    fn max_concurrent_bounds_the_window_and_the_batches() {
        let mut stage = rest("rest");
        let clusters: Vec<String> = (1..=5).map(|i| format!("m{i}")).collect();
        assert_eq!(free_slots(&stage, 5, 0), 5);
        assert_eq!(batches(&stage, &clusters).len(), 1);
        stage.max_concurrent = Some(2);
        assert_eq!(free_slots(&stage, 5, 0), 2);
        assert_eq!(free_slots(&stage, 5, 1), 1);
        assert_eq!(free_slots(&stage, 5, 3), 0);
        let b = batches(&stage, &clusters);
        assert_eq!(b, vec![&clusters[0..2], &clusters[2..4], &clusters[4..5]]);
        assert!(batches(&stage, &[]).is_empty());
    }
}
