//! Collects the members' policy reports: one background task per (fleet, member) watching the
//! member's `wgpolicyk8s.io/v1alpha2` PolicyReports and ClusterPolicyReports, reducing each
//! report to counts as it arrives ([`ReportCounts`]) and keeping the member's sums for
//! [`super::reports::aggregate`].
//!
//! - **Watches**: `kube::runtime::watcher` on each kind (cluster-wide), folded into a store of
//!   counts with the reflector's semantics (a re-list replaces the store atomically at
//!   `InitDone`). Only counts are kept, never whole reports.
//! - **Health**: a watch that breaks after it was established (connection reset, read
//!   timeout, an error event) resumes by itself from its resourceVersion. A failed listing or a
//!   failed watch start means the member cannot be read: the task restarts the watcher after a
//!   backoff (1 s doubling to 30 s, each delay jittered down to half), and a fresh watcher proves recovery with a full
//!   listing. While that fails, a member that had been read keeps its counts and is marked
//!   stale (`stale_since`); the first successful listing clears it.
//! - **Kyverno down** ([`lease`]): the member answers but Kyverno's reports controller has
//!   stopped renewing its leader Lease, so nothing updates the reports: they are marked stale
//!   too, until the Lease is renewed.
//! - **CRDs missing** (404 until Kyverno installs them): "no reports yet", not stale. The task
//!   watches the CRD itself and re-lists as soon as it is established, polling at most every
//!   60 s when it may not watch CRDs.
//! - **Notifications**: `notify(fleet namespace, fleet)` whenever a member's sums or health
//!   change, coalesced over [`DEBOUNCE`] (one call per fleet per window, however many members
//!   changed).
//! - **Lifetime**: tasks stop when their member is retained away, when `ensure` restarts them
//!   with a new client, and when the last clone of the collector is dropped.
//!
//! The member client must not time out idle reads quickly: every read timeout costs a watch
//! restart (cheap, no re-listing, but a request). Errors are described without credentials.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Debug,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use futures::StreamExt;
use k8s_openapi::{
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    jiff::Timestamp,
};
use kube::{
    Api, Client, Resource,
    runtime::watcher::{self, Event},
};
use kurator_api::policy_report::{self, ClusterPolicyReport, PolicyReport};
use serde::de::DeserializeOwned;
use tokio::{sync::mpsc, task::AbortHandle};

use self::state::{Health, MemberState};
use super::reports::{ClusterReports, ReportCounts};

mod lease;
mod state;

pub use self::lease::{LEASE_GRACE, REPORTS_LEASE};

/// Changes within this window after the first one make a single notification per fleet.
pub const DEBOUNCE: Duration = Duration::from_millis(200);
/// Restart delays after a failed listing or watch start.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// Delays between listings while a CRD is missing (a CRD watch cuts them short).
const MISSING_MAX: Duration = Duration::from_secs(60);
/// Pause before resuming a watch that broke after it was established.
const RESUME_DELAY: Duration = Duration::from_millis(500);
/// Pause between a CRD becoming established and listing it.
const CRD_SETTLE: Duration = Duration::from_millis(200);
/// Longest error description kept.
const MAX_ERROR_LEN: usize = 200;

type FleetKey = (String, String);
type MemberKey = (String, String, String);
type Notify = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// Keeps one watch per (fleet, member) on the member's policy reports. Cheap to clone (all
/// clones share the watches); the watches stop when the last clone is dropped.
#[derive(Clone)]
pub struct PolicyReportCollector {
    inner: Arc<Inner>,
}

struct Inner {
    watches: Mutex<BTreeMap<MemberKey, Watch>>,
    changes: mpsc::UnboundedSender<FleetKey>,
    /// The notifier's input and callback until the first `ensure` starts it (inside a runtime).
    idle_notifier: Mutex<Option<(mpsc::UnboundedReceiver<FleetKey>, Notify)>>,
    notifier: Mutex<Option<AbortHandle>>,
}

struct Watch {
    client_version: String,
    state: Arc<Mutex<MemberState>>,
    task: AbortHandle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for watch in lock(&self.watches).values() {
            watch.task.abort();
        }
        if let Some(notifier) = lock(&self.notifier).take() {
            notifier.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl PolicyReportCollector {
    /// `notify` is called with (fleet namespace, fleet name) whenever a member's reports change
    /// or its watch health changes, at most once per fleet per [`DEBOUNCE`] window. It runs on
    /// a Tokio task: keep it short (e.g. send to a channel).
    pub fn new(notify: impl Fn(&str, &str) + Send + Sync + 'static) -> Self {
        let (changes, rx) = mpsc::unbounded_channel();
        PolicyReportCollector {
            inner: Arc::new(Inner {
                watches: Mutex::new(BTreeMap::new()),
                changes,
                idle_notifier: Mutex::new(Some((rx, Arc::new(notify)))),
                notifier: Mutex::new(None),
            }),
        }
    }

    /// Ensures a watch for this member with this client; `client_version` identifies the
    /// client (the kubeconfig Secret's resourceVersion): a different version restarts the
    /// watch, keeping the last known reports until the new one has listed. Idempotent and
    /// cheap; must be called inside a Tokio runtime.
    pub fn ensure(
        &self,
        fleet_ns: &str,
        fleet: &str,
        cluster: &str,
        client: Client,
        client_version: &str,
    ) {
        self.start_notifier();
        let key = (fleet_ns.to_string(), fleet.to_string(), cluster.to_string());
        let mut watches = lock(&self.inner.watches);
        if let Some(w) = watches.get(&key)
            && w.client_version == client_version
            && !w.task.is_finished()
        {
            return;
        }
        let state = match watches.remove(&key) {
            Some(old) => {
                old.task.abort();
                old.state
            }
            None => Arc::default(),
        };
        let member = Member {
            state: state.clone(),
            fleet: (key.0.clone(), key.1.clone()),
            cluster: key.2.clone(),
            changes: self.inner.changes.clone(),
        };
        tracing::debug!(
            namespace = fleet_ns,
            fleet,
            cluster,
            "watching policy reports"
        );
        let task = tokio::spawn(run_member(client, member)).abort_handle();
        watches.insert(
            key,
            Watch {
                client_version: client_version.to_string(),
                state,
                task,
            },
        );
    }

    /// Stops the watches of this fleet's members not in `keep` (all of them for an empty set)
    /// and forgets their reports.
    pub fn retain(&self, fleet_ns: &str, fleet: &str, keep: &BTreeSet<String>) {
        lock(&self.inner.watches).retain(|(ns, f, cluster), watch| {
            let stays = ns != fleet_ns || f != fleet || keep.contains(cluster);
            if !stays {
                watch.task.abort();
                tracing::debug!(
                    namespace = ns,
                    fleet = f,
                    cluster,
                    "stopped watching policy reports"
                );
            }
            stays
        });
    }

    /// The last known reports of this fleet's members, for [`super::reports::aggregate`].
    pub fn snapshot(&self, fleet_ns: &str, fleet: &str) -> BTreeMap<String, ClusterReports> {
        let watches = lock(&self.inner.watches);
        let start = (fleet_ns.to_string(), fleet.to_string(), String::new());
        watches
            .range(start..)
            .take_while(|((ns, f, _), _)| ns == fleet_ns && f == fleet)
            .map(|((_, _, cluster), watch)| (cluster.clone(), lock(&watch.state).view()))
            .collect()
    }

    /// How many member watches run (all fleets).
    pub fn watch_count(&self) -> usize {
        lock(&self.inner.watches)
            .values()
            .filter(|w| !w.task.is_finished())
            .count()
    }

    fn start_notifier(&self) {
        let Some((rx, notify)) = lock(&self.inner.idle_notifier).take() else {
            return;
        };
        let task = tokio::spawn(notifier(rx, notify)).abort_handle();
        *lock(&self.inner.notifier) = Some(task);
    }
}

/// Calls `notify` once per fleet for the changes of each [`DEBOUNCE`] window.
async fn notifier(mut rx: mpsc::UnboundedReceiver<FleetKey>, notify: Notify) {
    while let Some(first) = rx.recv().await {
        let mut pending = BTreeSet::from([first]);
        let window = tokio::time::sleep(DEBOUNCE);
        tokio::pin!(window);
        loop {
            tokio::select! {
                () = &mut window => break,
                next = rx.recv() => match next {
                    Some(key) => {
                        pending.insert(key);
                    }
                    None => break,
                },
            }
        }
        for (ns, fleet) in pending {
            notify(&ns, &fleet);
        }
    }
}

// --- One member -------------------------------------------------------------------------------

/// A member task's handle on its state and on the notifier.
#[derive(Clone)]
struct Member {
    state: Arc<Mutex<MemberState>>,
    fleet: FleetKey,
    cluster: String,
    changes: mpsc::UnboundedSender<FleetKey>,
}

impl Member {
    /// Applies `f` to the state; notifies when it reports a change.
    fn update(&self, f: impl FnOnce(&mut MemberState, Timestamp) -> bool) {
        let changed = f(&mut lock(&self.state), Timestamp::now());
        if changed {
            let _ = self.changes.send(self.fleet.clone());
        }
    }
}

/// The two report kinds, as the member task needs them.
trait Report:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
    /// Index into [`MemberState::kinds`].
    const INDEX: usize;
    /// The CRD serving the kind.
    const CRD: &'static str;
    const PLURAL: &'static str;
    fn counts(&self) -> ReportCounts;
}

impl Report for PolicyReport {
    const INDEX: usize = 0;
    const CRD: &'static str = "policyreports.wgpolicyk8s.io";
    const PLURAL: &'static str = "PolicyReports";
    fn counts(&self) -> ReportCounts {
        ReportCounts::of_policy_report(self)
    }
}

impl Report for ClusterPolicyReport {
    const INDEX: usize = 1;
    const CRD: &'static str = "clusterpolicyreports.wgpolicyk8s.io";
    const PLURAL: &'static str = "ClusterPolicyReports";
    fn counts(&self) -> ReportCounts {
        ReportCounts::of_cluster_policy_report(self)
    }
}

const KIND_NAMES: [&str; 2] = [PolicyReport::KIND, ClusterPolicyReport::KIND];

fn key<K: Report>(obj: &K) -> String {
    let meta = obj.meta();
    match &meta.namespace {
        Some(ns) => format!("{ns}/{}", meta.name.as_deref().unwrap_or_default()),
        None => meta.name.clone().unwrap_or_default(),
    }
}

/// The member's task: both kinds and Kyverno's Lease, until aborted.
async fn run_member(client: Client, member: Member) {
    tokio::join!(
        watch_kind::<PolicyReport>(client.clone(), member.clone()),
        watch_kind::<ClusterPolicyReport>(client.clone(), member.clone()),
        lease::watch_lease(client, member),
    );
}

/// Why a watcher had to be restarted.
struct Failure {
    /// 404: the kind is not served (its CRD is not installed).
    missing: bool,
    message: String,
}

async fn watch_kind<K: Report>(client: Client, member: Member) {
    let api: Api<K> = Api::all(client.clone());
    let mut retry = Backoff::new(RETRY_MIN, RETRY_MAX);
    let mut missing_retry = Backoff::new(RETRY_MIN, MISSING_MAX);
    loop {
        let failure = follow(&api, &member, &mut retry, &mut missing_retry).await;
        if failure.missing {
            member.update(|s, now| s.missing(K::INDEX, now));
            tracing::debug!(
                namespace = member.fleet.0,
                fleet = member.fleet.1,
                cluster = member.cluster,
                crd = K::CRD,
                "CRD not installed in the member; waiting for it"
            );
            let delay = missing_retry.next_delay();
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = crd_becomes_ready(client.clone(), K::CRD) => {
                    missing_retry.reset();
                    tokio::time::sleep(CRD_SETTLE).await;
                }
            }
        } else {
            let message = failure.message;
            member.update(|s, now| {
                let changed = s.set_health(K::INDEX, Health::Failing(message.clone()), now);
                if changed {
                    tracing::warn!(
                        namespace = member.fleet.0, fleet = member.fleet.1, cluster = member.cluster,
                        error = %message, stale = s.stale_since.is_some(),
                        "cannot read the member's policy reports"
                    );
                }
                changed
            });
            tokio::time::sleep(retry.next_delay()).await;
        }
    }
}

/// Runs one watcher until it fails in a way that needs a fresh start (a failed listing or
/// watch start); errors of an established watch are left to the watcher to resume.
async fn follow<K: Report>(
    api: &Api<K>,
    member: &Member,
    retry: &mut Backoff,
    missing_retry: &mut Backoff,
) -> Failure {
    let mut stream =
        watcher::watcher(api.clone(), watcher::Config::default().any_semantic()).boxed();
    loop {
        match stream.next().await {
            Some(Ok(event)) => {
                let listed = matches!(event, Event::InitDone);
                member.update(|s, now| {
                    let was_failing = matches!(s.kinds[K::INDEX].health, Health::Failing(_));
                    let changed = s.apply(event, now);
                    if listed && was_failing {
                        tracing::info!(
                            namespace = member.fleet.0,
                            fleet = member.fleet.1,
                            cluster = member.cluster,
                            kind = K::PLURAL,
                            "member's policy reports readable again"
                        );
                    }
                    changed
                });
                if listed {
                    retry.reset();
                    missing_retry.reset();
                }
            }
            Some(Err(err)) => match err {
                watcher::Error::WatchFailed(_) | watcher::Error::WatchError(_) => {
                    tracing::debug!(
                        cluster = member.cluster, kind = K::PLURAL,
                        error = %describe_watch(&err), "report watch interrupted, resuming"
                    );
                    tokio::time::sleep(RESUME_DELAY).await;
                }
                watcher::Error::InitialListFailed(e) | watcher::Error::WatchStartFailed(e) => {
                    let missing = matches!(&e, kube::Error::Api(s) if s.code == 404);
                    // A partial listing is dropped: the next watcher lists again.
                    member.update(|s, _| {
                        s.kinds[K::INDEX].buffer = None;
                        false
                    });
                    return Failure {
                        missing,
                        message: format!("cannot list {}: {}", K::PLURAL, describe_error(&e)),
                    };
                }
                other => {
                    return Failure {
                        missing: false,
                        message: format!("cannot watch {}: {}", K::PLURAL, describe_watch(&other)),
                    };
                }
            },
            None => {
                return Failure {
                    missing: false,
                    message: format!("the {} watch ended", K::PLURAL),
                };
            }
        }
    }
}

/// Returns once the CRD `name` becomes established and serves v1alpha2 after having been
/// absent or not ready; pends forever when CRDs cannot be watched (the caller's timer wins).
async fn crd_becomes_ready(client: Client, name: &'static str) {
    let api: Api<CustomResourceDefinition> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = watcher::watcher(api, config).boxed();
    // Whether it was ready at the last complete listing; `None` before the first.
    let mut ready: Option<bool> = None;
    let mut listed_ready = false;
    loop {
        match stream.next().await {
            Some(Ok(Event::Init)) => listed_ready = false,
            Some(Ok(Event::InitApply(crd))) => listed_ready |= serves_reports(&crd),
            Some(Ok(Event::InitDone)) => {
                if ready == Some(false) && listed_ready {
                    return;
                }
                ready = Some(listed_ready);
            }
            Some(Ok(Event::Apply(crd))) => {
                let now_ready = serves_reports(&crd);
                if now_ready && ready == Some(false) {
                    return;
                }
                ready = Some(now_ready);
            }
            Some(Ok(Event::Delete(_))) => ready = Some(false),
            Some(Err(_)) | None => return std::future::pending().await,
        }
    }
}

fn serves_reports(crd: &CustomResourceDefinition) -> bool {
    let established = crd
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        });
    established
        && crd
            .spec
            .versions
            .iter()
            .any(|v| v.name == policy_report::VERSION && v.served)
}

/// A kube error for people: an API error as `code message`, anything else as its chain of
/// causes (`client error (Connect): tcp connect error: Connection refused`); cut to 200
/// bytes. Kube errors carry no credentials.
pub fn describe_error(e: &kube::Error) -> String {
    let text = match e {
        kube::Error::Api(status) => {
            let message = if status.message.is_empty() {
                &status.reason
            } else {
                &status.message
            };
            format!("{} {message}", status.code)
        }
        other => chain(other),
    };
    kurator_api::policy_report::truncate_message(&text, MAX_ERROR_LEN)
}

fn describe_watch(e: &watcher::Error) -> String {
    match e {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => describe_error(e),
        watcher::Error::WatchError(status) => format!("{} {}", status.code, status.message),
        other => chain(other),
    }
}

/// `outer: cause: root cause`, repeated texts once.
fn chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

/// Exponential backoff with "equal jitter" (so a thousand members do not retry in step):
/// the n-th delay lies between half and all of `min · 2ⁿ`, capped at `max`. backon (as kube's
/// watcher uses it) adds up to 100 % jitter on top of its delay, so it is given half of each.
struct Backoff {
    builder: ExponentialBuilder,
    delays: ExponentialBackoff,
    max: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        let builder = ExponentialBuilder::default()
            .with_min_delay(min / 2)
            .with_max_delay(max / 2)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times();
        Backoff {
            builder,
            delays: builder.build(),
            max,
        }
    }

    fn reset(&mut self) {
        self.delays = self.builder.build();
    }

    fn next_delay(&mut self) -> Duration {
        // Without a maximum number of attempts the iterator never ends.
        self.delays.next().unwrap_or(self.max)
    }
}

#[cfg(test)]
mod tests;
