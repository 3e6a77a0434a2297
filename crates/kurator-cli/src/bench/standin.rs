//! Flux's part of `bench rollout`, done by a client instead of Flux's controllers (which do
//! not run in the benchmarks: `bench fanout` only waits for the Kustomizations to exist).
//! What Flux would do, reduced to its status writes, as soon as it can:
//!
//! - a commit: the tracking GitRepository's artifact moves to the new revision;
//! - a GitRepository pinned by `ref.commit`: marked Ready with an artifact at that commit;
//! - a Kustomization: once its source is marked, marked Ready at the source's revision and at
//!   its generation (what `wait: true` would report once the workloads are healthy).
//!
//! Everything else in a staged run is the controller's. The stand-in records when its watch
//! saw each Kustomization with a new `sourceRef` and when its Ready write returned
//! ([`Mark`]); [`super::timeline`] turns that into the controller's time per stage.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex},
    time::Instant,
};

use anyhow::{Context as _, bail};
use futures::{FutureExt as _, StreamExt, future::BoxFuture, stream::FuturesUnordered};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{WatchStreamExt, watcher},
};
use kurator_api::flux::{GitRepository, Kustomization};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use super::timeline::{Mark, Seen};

/// Status writes in flight at once (Flux's kustomize-controller reconciles 4 objects at once by
/// default, each far slower than one status write).
const IN_FLIGHT: usize = 16;
/// The label the controller puts on each Kustomization: the cluster it is for.
const CLUSTER_LABEL: &str = "apps.kurator.dev/cluster";

/// The running stand-in. Dropping it stops it.
pub struct Standin {
    commits: mpsc::UnboundedSender<Commit>,
    marks: Arc<Mutex<Vec<Mark>>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

struct Commit {
    source: String,
    revision: String,
    done: oneshot::Sender<anyhow::Result<Instant>>,
}

impl Standin {
    /// Starts watching the GitRepositories and Kustomizations of `ns`.
    pub fn start(client: Client, ns: &str) -> Self {
        let (commits, receiver) = mpsc::unbounded_channel();
        let marks = Arc::new(Mutex::new(Vec::new()));
        let flux = Flux {
            sources: Api::namespaced(client.clone(), ns),
            kustomizations: Api::namespaced(client, ns),
            marks: marks.clone(),
            known_sources: HashMap::new(),
            known_kustomizations: HashMap::new(),
            generations: HashMap::new(),
            sent: HashMap::new(),
            queue: VecDeque::new(),
            queued: HashSet::new(),
        };
        let task = tokio::spawn(flux.run(receiver));
        Standin {
            commits,
            marks,
            task,
        }
    }

    /// A new commit of the tracking source `source`: its artifact moves to `revision`. Returns
    /// when that status write returned.
    pub async fn commit(&self, source: &str, revision: &str) -> anyhow::Result<Instant> {
        let (done, answer) = oneshot::channel();
        let commit = Commit {
            source: source.into(),
            revision: revision.into(),
            done,
        };
        if self.commits.send(commit).is_err() || self.task.is_finished() {
            bail!("the Flux stand-in stopped");
        }
        answer.await.context("the Flux stand-in stopped")?
    }

    /// What the stand-in saw and did since the last call.
    pub fn take_marks(&self) -> Vec<Mark> {
        std::mem::take(&mut *self.marks.lock().expect("not poisoned"))
    }

    /// An error that stopped the stand-in, if it stopped.
    pub async fn check(&mut self) -> anyhow::Result<()> {
        if self.task.is_finished() {
            return (&mut self.task).await?;
        }
        Ok(())
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One status write.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Job {
    Source { name: String, revision: String },
    Kustomization { name: String, revision: String },
}

/// A Kustomization as last seen.
struct SeenKustomization {
    cluster: String,
    generation: i64,
    source: String,
}

struct Flux {
    sources: Api<GitRepository>,
    kustomizations: Api<Kustomization>,
    marks: Arc<Mutex<Vec<Mark>>>,
    /// Source name → its revision, once the stand-in marked it Ready there.
    known_sources: HashMap<String, String>,
    known_kustomizations: HashMap<String, SeenKustomization>,
    /// `metadata.generation` as last seen, by [`job_key`].
    generations: HashMap<String, i64>,
    /// What was last written (or queued) per job target: (generation, revision), so a watch
    /// event that has not caught up with our own write does not repeat it.
    sent: HashMap<String, (i64, String)>,
    queue: VecDeque<Job>,
    queued: HashSet<Job>,
}

type Done = (
    Job,
    Option<oneshot::Sender<anyhow::Result<Instant>>>,
    kube::Result<()>,
);

impl Flux {
    async fn run(mut self, mut commits: mpsc::UnboundedReceiver<Commit>) -> anyhow::Result<()> {
        let mut sources = watcher(self.sources.clone(), watcher::Config::default())
            .default_backoff()
            .boxed();
        let mut kustomizations = watcher(self.kustomizations.clone(), watcher::Config::default())
            .default_backoff()
            .boxed();
        let mut in_flight: FuturesUnordered<BoxFuture<'static, Done>> = FuturesUnordered::new();
        loop {
            while in_flight.len() < IN_FLIGHT
                && let Some(job) = self.queue.pop_front()
            {
                self.queued.remove(&job);
                in_flight.push(self.write(job, None));
            }
            tokio::select! {
                commit = commits.recv() => {
                    let Some(Commit { source, revision, done }) = commit else {
                        return Ok(());
                    };
                    // Flux's source-controller fetching the commit: ahead of the queue.
                    in_flight.push(self.write(Job::Source { name: source, revision }, Some(done)));
                }
                event = sources.next() => match event {
                    Some(Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s))) => {
                        self.source_seen(&s)
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => bail!("watching GitRepositories: {e}"),
                    None => bail!("the GitRepository watch ended"),
                },
                event = kustomizations.next() => match event {
                    Some(Ok(watcher::Event::Apply(k) | watcher::Event::InitApply(k))) => {
                        self.kustomization_seen(&k)
                    }
                    Some(Ok(watcher::Event::Delete(k))) => {
                        self.known_kustomizations.remove(&k.name_any());
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => bail!("watching Kustomizations: {e}"),
                    None => bail!("the Kustomization watch ended"),
                },
                Some((job, done, result)) = in_flight.next(), if !in_flight.is_empty() => {
                    self.written(job, done, result)?
                }
            }
        }
    }

    /// A pinned source needs its artifact at its commit.
    fn source_seen(&mut self, source: &GitRepository) {
        let generation = source.metadata.generation.unwrap_or_default();
        self.generations
            .insert(format!("gitrepository/{}", source.name_any()), generation);
        let Some(commit) = source
            .spec
            .reference
            .as_ref()
            .and_then(|r| r.commit.clone())
        else {
            // The tracking source: it moves by [`Standin::commit`] only.
            return;
        };
        let revision = format!("sha1:{commit}");
        self.enqueue(
            Job::Source {
                name: source.name_any(),
                revision,
            },
            generation,
        );
    }

    fn kustomization_seen(&mut self, k: &Kustomization) {
        let name = k.name_any();
        let generation = k.metadata.generation.unwrap_or_default();
        self.generations
            .insert(format!("kustomization/{name}"), generation);
        let source = k.spec.source_ref.name.clone();
        let cluster = k.labels().get(CLUSTER_LABEL).cloned().unwrap_or_default();
        let changed = self
            .known_kustomizations
            .get(&name)
            .is_none_or(|seen| seen.source != source);
        if changed {
            self.mark(
                &cluster,
                Seen::Written {
                    source: source.clone(),
                },
            );
        }
        self.known_kustomizations.insert(
            name.clone(),
            SeenKustomization {
                cluster,
                generation,
                source,
            },
        );
        self.reconcile_kustomization(&name);
    }

    /// Marks `name` Ready once its source has an artifact.
    fn reconcile_kustomization(&mut self, name: &str) {
        let Some(seen) = self.known_kustomizations.get(name) else {
            return;
        };
        let Some(revision) = self.known_sources.get(&seen.source).cloned() else {
            return;
        };
        let generation = seen.generation;
        self.enqueue(
            Job::Kustomization {
                name: name.to_string(),
                revision,
            },
            generation,
        );
    }

    fn enqueue(&mut self, job: Job, generation: i64) {
        let (Job::Source { name, revision } | Job::Kustomization { name, revision }) = &job;
        let key = job_key(&job, name);
        let wanted = (generation, revision.clone());
        if self.sent.get(&key) == Some(&wanted) {
            return;
        }
        self.sent.insert(key, wanted);
        if self.queued.insert(job.clone()) {
            self.queue.push_back(job);
        }
    }

    fn write(
        &self,
        job: Job,
        done: Option<oneshot::Sender<anyhow::Result<Instant>>>,
    ) -> BoxFuture<'static, Done> {
        let now = serde_json::to_value(Time(Timestamp::now())).expect("a time serialises");
        let (Job::Source { name, revision } | Job::Kustomization { name, revision }) = &job;
        // The newest generation seen, not the one the job was queued for.
        let generation = self
            .generations
            .get(&job_key(&job, name))
            .copied()
            .filter(|g| *g > 0);
        let (name, revision) = (name.clone(), revision.clone());
        let sources = self.sources.clone();
        let kustomizations = self.kustomizations.clone();
        async move {
            let params = PatchParams::default();
            let result = match &job {
                Job::Source { .. } => {
                    let message = format!("stored artifact for revision '{revision}'");
                    let status = json!({"status": {
                        "observedGeneration": generation,
                        "artifact": {
                            "revision": revision,
                            "digest": digest(&revision),
                            "path": format!("gitrepository/bench/{name}/artifact.tar.gz"),
                            "url": format!("http://source-controller.flux-system/gitrepository/bench/{name}/artifact.tar.gz"),
                            "lastUpdateTime": now,
                        },
                        "conditions": [ready(generation, "Succeeded", &message, &now)],
                    }});
                    sources
                        .patch_status(&name, &params, &Patch::Merge(&status))
                        .await
                        .map(|_| ())
                }
                Job::Kustomization { .. } => {
                    let message = format!("Applied revision: {revision}");
                    let status = json!({"status": {
                        "observedGeneration": generation,
                        "lastAppliedRevision": revision,
                        "lastAttemptedRevision": revision,
                        "conditions": [ready(generation, "ReconciliationSucceeded", &message, &now)],
                    }});
                    kustomizations
                        .patch_status(&name, &params, &Patch::Merge(&status))
                        .await
                        .map(|_| ())
                }
            };
            (job, done, result)
        }
        .boxed()
    }

    fn written(
        &mut self,
        job: Job,
        done: Option<oneshot::Sender<anyhow::Result<Instant>>>,
        result: kube::Result<()>,
    ) -> anyhow::Result<()> {
        let at = Instant::now();
        match result {
            Ok(()) => {}
            // Deleted meanwhile (the controller prunes sources no revision uses).
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
            Err(e) => {
                let message = format!("the stand-in's status write for {job:?} failed: {e}");
                if let Some(done) = done {
                    let _ = done.send(Err(anyhow::anyhow!(message.clone())));
                }
                bail!(message);
            }
        }
        if let Some(done) = done {
            let _ = done.send(Ok(at));
        }
        match job {
            Job::Source { name, revision } => {
                self.known_sources.insert(name.clone(), revision);
                let waiting: Vec<String> = self
                    .known_kustomizations
                    .iter()
                    .filter(|(_, k)| k.source == name)
                    .map(|(n, _)| n.clone())
                    .collect();
                for k in waiting {
                    self.reconcile_kustomization(&k);
                }
            }
            Job::Kustomization { name, revision } => {
                if let Some(cluster) = self
                    .known_kustomizations
                    .get(&name)
                    .map(|k| k.cluster.clone())
                {
                    self.mark(&cluster, Seen::Ready { revision });
                }
            }
        }
        Ok(())
    }

    fn mark(&self, cluster: &str, what: Seen) {
        self.marks.lock().expect("not poisoned").push(Mark {
            at: Instant::now(),
            cluster: cluster.to_string(),
            what,
        });
    }
}

/// Where a job's target is kept in [`Flux::generations`] and [`Flux::sent`].
fn job_key(job: &Job, name: &str) -> String {
    match job {
        Job::Source { .. } => format!("gitrepository/{name}"),
        Job::Kustomization { .. } => format!("kustomization/{name}"),
    }
}

/// An artifact digest (required by Flux's schema) that differs per revision: its commit,
/// zero-padded to a sha256's length.
fn digest(revision: &str) -> String {
    let commit = revision.rsplit(':').next().unwrap_or_default();
    format!("sha256:{commit:0>64}")
}

fn ready(
    generation: Option<i64>,
    reason: &str,
    message: &str,
    now: &serde_json::Value,
) -> serde_json::Value {
    json!({
        "type": "Ready",
        "status": "True",
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": now,
    })
}
