//! `kurator bench rollout`: one Application over N clusters in S stages (by label), every gate
//! passing at once (health only, no soak, no approval), on the same setup as `bench fanout`
//! (real API servers, our controller as its own process, Flux's CRDs without its controllers).
//! A client does Flux's work ([`super::standin`]): it moves the tracking source to each new
//! commit and marks each Kustomization Ready at its pinned revision as soon as it can.
//!
//! Measured per run (a new commit, after a first deployment that is not timed): the time from
//! the commit until the run is Succeeded; the controller's time per stage transition beyond
//! Flux's work ([`super::timeline`]); the controller's writes by kind; its CPU and peak RSS.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Args;
use futures::{StreamExt, stream::BoxStream};
use kube::{Api, Resource, api::PostParams, runtime::watcher};
use kurator_api::{
    Application,
    flux::{GitRepository, Kustomization},
    rollout::RunPhase,
};
use kurator_controller::rollout::pinning::pinned_source_name;

use super::{
    Started, cpu_seconds, peak_rss_mb,
    requests::{self, RequestCounts},
    setup,
    standin::Standin,
    start,
    timeline::{self, RunTimes, median},
};

#[derive(Args, Debug)]
pub struct RolloutArgs {
    /// Clusters of the Application's fleet.
    #[arg(long, default_value_t = 500)]
    pub clusters: usize,
    /// Stages, each selecting its clusters by label (an equal share, in name order).
    #[arg(long, default_value_t = 5)]
    pub stages: usize,
    /// Staged runs measured, each a new commit; their medians are printed too.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Member API servers the clusters share.
    #[arg(long, default_value_t = 2)]
    pub members: usize,
}

const APP: &str = "rollout";
const STAGE_LABEL: &str = "bench.kurator.dev/stage";
/// One run, at most.
const RUN_DEADLINE: Duration = Duration::from_secs(600);

/// The stage of cluster `i` of `clusters`: equal shares in order.
fn stage_of(i: usize, clusters: usize, stages: usize) -> usize {
    i * stages / clusters
}

/// A commit id for run `n`: 40 hex digits whose first 10 (a pinned source's name) differ.
fn commit(n: usize) -> String {
    format!("{n:04x}").repeat(10)
}

fn application(ns: &str, stages: usize) -> Application {
    let stages: String = (0..stages)
        .map(|s| {
            format!("      - name: s{s}\n        clusterSelector: {{matchLabels: {{{STAGE_LABEL}: s{s}}}}}\n")
        })
        .collect();
    let yaml = format!(
        "metadata: {{name: {APP}, namespace: {ns}}}\nspec:\n  source:\n    gitRepository: {{url: 'http://127.0.0.1:1/bench.git', interval: 10m, ref: {{branch: master}}}}\n  destination: {{fleet: bench}}\n  syncPolicies:\n    - kustomization: {{interval: 10m, prune: true, path: ./deploy}}\n  stagedRollout:\n    progressDeadline: 10m\n    stages:\n{stages}"
    );
    serde_saphyr::from_str(&yaml).expect("benchmark Application is valid")
}

/// The controller's writes during one run, by kind.
struct Writes {
    kustomizations: f64,
    git_repositories: f64,
    application_status: f64,
    events: f64,
    all: f64,
}

impl Writes {
    fn of(counts: &RequestCounts) -> Self {
        fn resource<K: Resource<DynamicType = ()>>() -> (String, String) {
            (K::group(&()).into_owned(), K::plural(&()).into_owned())
        }
        let writes = |(group, plural): (String, String)| counts.writes_of(&group, &plural);
        let (group, plural) = resource::<Application>();
        Writes {
            kustomizations: writes(resource::<Kustomization>()),
            git_repositories: writes(resource::<GitRepository>()),
            application_status: counts.writes_of(&group, &format!("{plural}/status")),
            events: counts.writes_of("events.k8s.io", "events") + counts.writes_of("", "events"),
            all: counts.all_writes(),
        }
    }
}

struct Row {
    total: Duration,
    times: RunTimes,
    /// From the last Kustomization marked Ready until the observer saw the run Succeeded.
    finish: Duration,
    writes: Writes,
    cpu: f64,
    peak_rss_mb: f64,
}

impl Row {
    /// The controller's own time in the run: to the first stage, each transition, the end.
    fn controller_part(&self) -> Duration {
        self.times.first_stage_written
            + self
                .times
                .transitions
                .iter()
                .map(|t| t.to_all_written)
                .sum::<Duration>()
            + self.finish
    }
}

pub async fn run(args: RolloutArgs) -> anyhow::Result<()> {
    let (n, stages) = (args.clusters, args.stages);
    if stages == 0 || stages > 20 || n < stages {
        bail!("--stages must be 1 to 20 and at most --clusters");
    }
    let Started {
        env,
        client,
        controller,
        metrics,
    } = start(args.members).await?;
    let pid = controller.0.id();
    let ns = format!("rollout-{n}");
    setup(&client, &env, &ns, n, |i| {
        BTreeMap::from([(
            STAGE_LABEL.to_string(),
            format!("s{}", stage_of(i, n, stages)),
        )])
    })
    .await?;
    let mut stage_clusters = vec![Vec::new(); stages];
    for i in 0..n {
        stage_clusters[stage_of(i, n, stages)].push(format!("c{i}"));
    }
    let mut standin = Standin::start(client.clone(), &ns);
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns);
    apps.create(&PostParams::default(), &application(&ns, stages))
        .await?;

    let mut rows = Vec::new();
    // Run 1 is the first deployment (Kustomizations created, not changed): not timed.
    for run in 1..=args.runs + 1 {
        let sha = commit(run);
        let revision = format!("master@sha1:{sha}");
        let before = requests::settled(metrics).await?;
        let cpu0 = cpu_seconds(pid)?;
        standin.take_marks();
        let mut observer = Observer::start(&apps).await?;
        let started = Instant::now();
        let committed = standin.commit(APP, &revision).await?;
        let succeeded = observer.succeeded(run as i64, &mut standin).await?;
        let total = succeeded - started;
        let cpu = cpu_seconds(pid)? - cpu0;
        let during = requests::settled(metrics).await?.since(&before);
        let marks = standin.take_marks();
        let times = timeline::run_times(
            &marks,
            &stage_clusters,
            &pinned_source_name(APP, &revision),
            &format!("sha1:{sha}"),
            committed,
        )
        .with_context(|| format!("run {run}"))?;
        let finish = succeeded
            .checked_duration_since(times.last_ready)
            .context("the run Succeeded before its last cluster was Ready")?;
        let row = Row {
            total,
            times,
            finish,
            writes: Writes::of(&during),
            cpu,
            peak_rss_mb: peak_rss_mb(pid)?,
        };
        eprintln!(
            "run {run}{}: {:.2} s",
            if run == 1 { " (first deployment)" } else { "" },
            row.total.as_secs_f64()
        );
        if run > 1 {
            rows.push(row);
        }
    }
    drop(controller);
    drop(env);
    print_table(&rows, n, stages);
    Ok(())
}

/// Watches the benchmark's Application for the end of a run.
struct Observer {
    changes: BoxStream<'static, Result<watcher::Event<Application>, watcher::Error>>,
}

impl Observer {
    /// Started (its initial list done) before the commit, so the end is seen as it happens.
    async fn start(apps: &Api<Application>) -> anyhow::Result<Self> {
        let config = watcher::Config::default().fields(&format!("metadata.name={APP}"));
        let mut changes = watcher(apps.clone(), config).boxed();
        loop {
            match changes.next().await {
                Some(Ok(watcher::Event::InitDone)) => return Ok(Observer { changes }),
                Some(Ok(_)) => {}
                Some(Err(e)) => bail!("watching the Application: {e}"),
                None => bail!("the Application watch ended"),
            }
        }
    }

    /// When the Application's status showed run `id` Succeeded.
    async fn succeeded(&mut self, id: i64, standin: &mut Standin) -> anyhow::Result<Instant> {
        let deadline = tokio::time::Instant::now() + RUN_DEADLINE;
        loop {
            tokio::select! {
                event = self.changes.next() => match event {
                    Some(Ok(watcher::Event::Apply(a) | watcher::Event::InitApply(a))) => {
                        match run_outcome(&a, id) {
                            Some(Ok(())) => return Ok(Instant::now()),
                            Some(Err(why)) => bail!("run {id}: {why}"),
                            None => {}
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => bail!("watching the Application: {e}"),
                    None => bail!("the Application watch ended"),
                },
                // The stand-in failing would otherwise show only as the deadline.
                _ = tokio::time::sleep(Duration::from_secs(1)) => standin.check().await?,
                _ = tokio::time::sleep_until(deadline) => {
                    bail!("run {id} not Succeeded after {} s", RUN_DEADLINE.as_secs())
                }
            }
        }
    }
}

/// Whether run `id` has ended: `Ok` when it Succeeded, why not when it ended otherwise or is
/// paused; `None` while it goes on (or has not started).
fn run_outcome(app: &Application, id: i64) -> Option<Result<(), String>> {
    let state = app.status.as_ref()?.staged_rollout.as_ref()?;
    if let Some(run) = state.run.as_ref().filter(|r| r.id == id) {
        return match &run.paused {
            Some(paused) if run.phase == RunPhase::Paused => Some(Err(format!(
                "paused: {:?}: {}",
                paused.reason, paused.message
            ))),
            _ => None,
        };
    }
    let last = state.history.first().filter(|h| h.id == id)?;
    Some(if last.phase == RunPhase::Succeeded {
        Ok(())
    } else {
        Err(format!(
            "ended {:?}: {}",
            last.phase,
            last.message.as_deref().unwrap_or_default()
        ))
    })
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn print_table(rows: &[Row], clusters: usize, stages: usize) {
    println!(
        "| run | commit → Succeeded | controller's part | commit → stage 1 written | transition: to first write (median) | to every write: median | max | last Ready → Succeeded | Kustomization writes / cluster | GitRepository writes | status writes / stage | Event writes / stage | all writes / cluster | controller CPU | controller peak RSS |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let per_cluster = clusters.max(1) as f64;
    let per_stage = stages.max(1) as f64;
    let mut columns: Vec<Vec<f64>> = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let to_first: Vec<Duration> = r
            .times
            .transitions
            .iter()
            .map(|t| t.to_first_written)
            .collect();
        let to_all: Vec<Duration> = r
            .times
            .transitions
            .iter()
            .map(|t| t.to_all_written)
            .collect();
        let zero = Duration::ZERO;
        let values = [
            r.total.as_secs_f64(),
            r.controller_part().as_secs_f64(),
            r.times.first_stage_written.as_secs_f64(),
            median(&to_first).unwrap_or(zero).as_secs_f64(),
            median(&to_all).unwrap_or(zero).as_secs_f64(),
            to_all.iter().max().copied().unwrap_or(zero).as_secs_f64(),
            r.finish.as_secs_f64(),
            r.writes.kustomizations / per_cluster,
            r.writes.git_repositories,
            r.writes.application_status / per_stage,
            r.writes.events / per_stage,
            r.writes.all / per_cluster,
            r.cpu,
            r.peak_rss_mb,
        ];
        println!("| {} | {} |", i + 1, render(&values));
        for (c, v) in values.into_iter().enumerate() {
            if columns.len() <= c {
                columns.push(Vec::new());
            }
            columns[c].push(v);
        }
    }
    if rows.len() > 1 {
        let medians: Vec<f64> = columns.iter().map(|c| median_f64(c)).collect();
        println!("| **median** | {} |", render(&medians));
    }
}

/// One row's cells: times (the first seven values, seconds), counts, CPU seconds, MB.
fn render(values: &[f64]) -> String {
    let d = Duration::from_secs_f64;
    values
        .iter()
        .enumerate()
        .map(|(c, v)| match c {
            0..=2 => secs(d(*v)),
            3..=6 => ms(d(*v)),
            8 => format!("{v:.0}"),
            12 => format!("{v:.2} s"),
            13 => format!("{v:.1} MB"),
            _ => format!("{v:.2}"),
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

fn median_f64(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_get_equal_shares_in_order() {
        let of = |i| stage_of(i, 500, 5);
        assert_eq!((of(0), of(99), of(100), of(499)), (0, 0, 1, 4));
        let counts = (0..7).fold([0; 3], |mut c, i| {
            c[stage_of(i, 7, 3)] += 1;
            c
        });
        assert_eq!(counts, [3, 2, 2]);
    }

    #[test]
    fn commits_name_distinct_pinned_sources() {
        assert_eq!(commit(2).len(), 40);
        let name = |n| pinned_source_name(APP, &format!("master@sha1:{}", commit(n)));
        assert_ne!(name(2), name(3));
    }

    #[test]
    fn the_application_has_one_stage_per_label() {
        let app = application("ns", 3);
        let stages = &app.spec.staged_rollout.as_ref().unwrap().stages;
        assert_eq!(stages.len(), 3);
        let selector = stages[2].cluster_selector.as_ref().unwrap();
        assert_eq!(selector.match_labels[STAGE_LABEL], "s2");
        assert!(
            stages
                .iter()
                .all(|s| s.gates.is_empty() && s.soak.is_none())
        );
    }

    fn with_state(yaml: &str) -> Application {
        let mut app = application("ns", 1);
        app.status =
            Some(serde_saphyr::from_str(&format!("stagedRollout:\n{yaml}")).expect("status"));
        app
    }

    #[test]
    fn a_run_is_over_when_history_says_so() {
        let running = with_state(
            "  run: {id: 2, toRevision: b, phase: Progressing, startedAt: '2026-12-02T04:00:00Z', stage: {index: 0, name: s0, phase: Updating, startedAt: '2026-12-02T04:00:00Z'}}\n  history: [{id: 1, toRevision: a, phase: Succeeded, startedAt: '2026-12-02T03:00:00Z', finishedAt: '2026-12-02T03:01:00Z', stage: s0}]\n",
        );
        assert_eq!(run_outcome(&running, 2), None);
        assert_eq!(run_outcome(&running, 1), Some(Ok(())));
        let rolled_back = with_state(
            "  history: [{id: 2, toRevision: b, phase: RolledBack, startedAt: '2026-12-02T03:00:00Z', finishedAt: '2026-12-02T03:01:00Z', stage: s0, message: bad}]\n",
        );
        assert_eq!(
            run_outcome(&rolled_back, 2),
            Some(Err("ended RolledBack: bad".into()))
        );
        assert_eq!(run_outcome(&application("ns", 1), 2), None);
    }
}
