//! Pure: the times of one staged run, from what the Flux stand-in ([`super::standin`]) saw and
//! did. Flux's own work is marking each Kustomization Ready at the revision its source is
//! pinned to; everything between the last Kustomization of stage k marked Ready and the
//! controller having written every Kustomization of stage k+1 with the new pinned source is the
//! controller's.

use std::time::{Duration, Instant};

/// One thing the stand-in saw or did, at `at`.
#[derive(Clone, Debug, PartialEq)]
pub struct Mark {
    pub at: Instant,
    /// The cluster the Kustomization is for (its `apps.kurator.dev/cluster` label).
    pub cluster: String,
    pub what: Seen,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Seen {
    /// The stand-in's watch delivered the Kustomization with this `sourceRef.name` (the
    /// controller's write, as Flux would see it).
    Written { source: String },
    /// The stand-in's status write marking it Ready at `revision` returned.
    Ready { revision: String },
}

/// The controller's part of one run between stages, and at both ends.
#[derive(Clone, Debug, PartialEq)]
pub struct RunTimes {
    /// From the commit (the tracking source's new artifact) until every Kustomization of the
    /// first stage is written with the new pinned source.
    pub first_stage_written: Duration,
    /// For each stage after the first: from the last Kustomization of the stage before it
    /// marked Ready to the first and to the last of its own written with the new source.
    pub transitions: Vec<Transition>,
    /// When the last Kustomization of the last stage was marked Ready.
    pub last_ready: Instant,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Transition {
    pub to_first_written: Duration,
    pub to_all_written: Duration,
}

/// Why a run's marks do not make a staged run.
#[derive(Clone, Debug, PartialEq)]
pub enum TimelineError {
    EmptyStage {
        stage: usize,
    },
    Missing {
        stage: usize,
        cluster: String,
        what: &'static str,
    },
    OutOfOrder {
        stage: usize,
        previous: usize,
    },
    BeforeCommit {
        stage: usize,
    },
}

impl std::fmt::Display for TimelineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::EmptyStage { stage } => write!(f, "stage {stage} has no cluster"),
            Self::Missing {
                stage,
                cluster,
                what,
            } => write!(f, "cluster {cluster} of stage {stage} was never {what}"),
            Self::OutOfOrder { stage, previous } => {
                write!(
                    f,
                    "stage {stage} was written before stage {previous} was Ready"
                )
            }
            Self::BeforeCommit { stage } => {
                write!(f, "stage {stage} was written before the commit")
            }
        }
    }
}

impl std::error::Error for TimelineError {}

/// The times of the run that took every cluster to the pinned source `source` at `revision`,
/// committed at `committed`. `stages[k]` are the clusters of stage k. Marks about other sources
/// or revisions (an earlier run's) are ignored; a cluster's first matching mark counts.
pub fn run_times(
    marks: &[Mark],
    stages: &[Vec<String>],
    source: &str,
    revision: &str,
    committed: Instant,
) -> Result<RunTimes, TimelineError> {
    let first = |cluster: &str, ready: bool| {
        marks
            .iter()
            .filter(|m| m.cluster == cluster)
            .filter(|m| match &m.what {
                Seen::Written { source: s } => !ready && s == source,
                Seen::Ready { revision: r } => ready && r == revision,
            })
            .map(|m| m.at)
            .min()
    };
    // Per stage: (first written, last written, last ready).
    let mut spans = Vec::new();
    for (stage, clusters) in stages.iter().enumerate() {
        let mut written = Vec::new();
        let mut ready = Vec::new();
        for cluster in clusters {
            let missing = |what| TimelineError::Missing {
                stage,
                cluster: cluster.clone(),
                what,
            };
            written.push(first(cluster, false).ok_or_else(|| missing("written"))?);
            ready.push(first(cluster, true).ok_or_else(|| missing("marked Ready"))?);
        }
        let (Some(first_written), Some(last_written), Some(last_ready)) = (
            written.iter().min(),
            written.iter().max(),
            ready.iter().max(),
        ) else {
            return Err(TimelineError::EmptyStage { stage });
        };
        spans.push((*first_written, *last_written, *last_ready));
    }
    let Some((&(first_written, last_written, _), rest)) = spans.split_first() else {
        return Err(TimelineError::EmptyStage { stage: 0 });
    };
    let first_stage_written = last_written
        .checked_duration_since(committed)
        .filter(|_| first_written >= committed)
        .ok_or(TimelineError::BeforeCommit { stage: 0 })?;
    let mut transitions = Vec::new();
    for (i, &(first_written, last_written, _)) in rest.iter().enumerate() {
        let previous_ready = spans[i].2;
        let out_of_order = TimelineError::OutOfOrder {
            stage: i + 1,
            previous: i,
        };
        transitions.push(Transition {
            to_first_written: first_written
                .checked_duration_since(previous_ready)
                .ok_or_else(|| out_of_order.clone())?,
            to_all_written: last_written
                .checked_duration_since(previous_ready)
                .ok_or(out_of_order)?,
        });
    }
    Ok(RunTimes {
        first_stage_written,
        transitions,
        last_ready: spans.last().expect("one stage at least").2,
    })
}

/// The median of `values` (the mean of the two middle ones for an even count); `None` when
/// empty.
pub fn median(values: &[Duration]) -> Option<Duration> {
    let mut sorted = values.to_vec();
    sorted.sort();
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: &str = "app-r-2222222222";
    const REVISION: &str = "sha1:2222222222222222222222222222222222222222";

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    fn written(t0: Instant, at: u64, cluster: &str, source: &str) -> Mark {
        Mark {
            at: ms(t0, at),
            cluster: cluster.into(),
            what: Seen::Written {
                source: source.into(),
            },
        }
    }

    fn ready(t0: Instant, at: u64, cluster: &str, revision: &str) -> Mark {
        Mark {
            at: ms(t0, at),
            cluster: cluster.into(),
            what: Seen::Ready {
                revision: revision.into(),
            },
        }
    }

    fn stages() -> Vec<Vec<String>> {
        vec![vec!["a".into(), "b".into()], vec!["c".into(), "d".into()]]
    }

    #[test]
    fn a_transition_runs_from_the_last_ready_to_the_first_and_last_written() {
        let t0 = Instant::now();
        let marks = vec![
            // An earlier run's marks do not count.
            written(t0, 0, "a", "app-r-1111111111"),
            ready(t0, 1, "a", "sha1:1111111111111111111111111111111111111111"),
            written(t0, 20, "a", SOURCE),
            written(t0, 30, "b", SOURCE),
            ready(t0, 40, "a", REVISION),
            ready(t0, 100, "b", REVISION),
            // Stage 2: first written 15 ms after stage 1's last Ready, last 45 ms after.
            written(t0, 115, "d", SOURCE),
            written(t0, 145, "c", SOURCE),
            ready(t0, 150, "c", REVISION),
            ready(t0, 160, "d", REVISION),
            // A second Ready of the same cluster (a later status write) is not the first.
            ready(t0, 900, "d", REVISION),
        ];
        let times = run_times(&marks, &stages(), SOURCE, REVISION, ms(t0, 10)).unwrap();
        assert_eq!(times.first_stage_written, Duration::from_millis(20));
        assert_eq!(
            times.transitions,
            vec![Transition {
                to_first_written: Duration::from_millis(15),
                to_all_written: Duration::from_millis(45),
            }]
        );
        assert_eq!(times.last_ready, ms(t0, 160));
    }

    #[test]
    fn a_stage_written_before_the_previous_is_ready_is_an_error() {
        let t0 = Instant::now();
        let marks = vec![
            written(t0, 20, "a", SOURCE),
            written(t0, 20, "b", SOURCE),
            ready(t0, 40, "a", REVISION),
            written(t0, 50, "c", SOURCE),
            ready(t0, 60, "b", REVISION),
            written(t0, 70, "d", SOURCE),
            ready(t0, 80, "c", REVISION),
            ready(t0, 80, "d", REVISION),
        ];
        assert_eq!(
            run_times(&marks, &stages(), SOURCE, REVISION, t0),
            Err(TimelineError::OutOfOrder {
                stage: 1,
                previous: 0
            })
        );
    }

    #[test]
    fn a_cluster_never_written_or_never_ready_is_an_error() {
        let t0 = Instant::now();
        let mut marks = vec![
            written(t0, 20, "a", SOURCE),
            written(t0, 20, "b", SOURCE),
            ready(t0, 40, "a", REVISION),
            ready(t0, 40, "b", REVISION),
            written(t0, 50, "c", SOURCE),
            ready(t0, 60, "c", REVISION),
        ];
        let missing = |what| {
            Err(TimelineError::Missing {
                stage: 1,
                cluster: "d".into(),
                what,
            })
        };
        assert_eq!(
            run_times(&marks, &stages(), SOURCE, REVISION, t0),
            missing("written")
        );
        marks.push(written(t0, 55, "d", SOURCE));
        assert_eq!(
            run_times(&marks, &stages(), SOURCE, REVISION, t0),
            missing("marked Ready")
        );
        // Written before the commit: an earlier run, not this one.
        marks.push(ready(t0, 70, "d", REVISION));
        assert_eq!(
            run_times(&marks, &stages(), SOURCE, REVISION, ms(t0, 30)),
            Err(TimelineError::BeforeCommit { stage: 0 })
        );
        assert!(run_times(&marks, &stages(), SOURCE, REVISION, t0).is_ok());
        assert_eq!(
            run_times(&marks, &[vec![]], SOURCE, REVISION, t0),
            Err(TimelineError::EmptyStage { stage: 0 })
        );
    }

    #[test]
    fn medians() {
        let d = Duration::from_millis;
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[d(3), d(1), d(2)]), Some(d(2)));
        assert_eq!(median(&[d(4), d(1), d(2), d(3)]), Some(d(2) + d(1) / 2));
    }
}
