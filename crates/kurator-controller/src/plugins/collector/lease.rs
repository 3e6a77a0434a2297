//! Whether Kyverno's reports controller runs in a member, from its leader-election Lease.
//!
//! The reports controller is the process that writes the PolicyReports. When it stops, the
//! member's API still answers and the reports it wrote are still there, but nothing updates
//! them any more. Kyverno v1.10 to v1.12 hold `coordination.k8s.io/v1` Lease
//! `kyverno-reports-controller` in Kyverno's namespace for it (client-go leader election:
//! renewed every 2 s, `leaseDurationSeconds` 12 by default). A Lease not renewed within its
//! duration (plus [`LEASE_GRACE`]) means no instance runs, and the member's counts are marked
//! stale; a renewal clears it. No Lease (Kyverno not installed yet, or reports disabled) is no
//! evidence either way, so not stale.
//!
//! One watch per member on that Lease (field-selected by name), and a timer set at the Lease's
//! deadline so that the expiry shows without any other event. A Lease that cannot be read
//! leaves the last verdict as it was: an unreachable member is already stale through its
//! report watches, and a verdict kept across the outage avoids a flap when it comes back.

use futures::StreamExt;
use k8s_openapi::{
    api::coordination::v1::Lease,
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    Api, Client,
    runtime::watcher::{self, Event},
};

use super::state::LeaseInfo;
use super::{
    Backoff, Member, RESUME_DELAY, RETRY_MAX, RETRY_MIN, describe_error, describe_watch, lock,
};
use crate::plugins::render::KYVERNO_NAMESPACE;

/// The reports controller's leader Lease (Kyverno v1.10 to v1.12, `cmd/reports-controller`).
pub const REPORTS_LEASE: &str = "kyverno-reports-controller";
/// Allowance past a Lease's deadline before it counts as expired: the watch delivers
/// renewals with some latency, and clocks differ a little between members and the controller.
pub const LEASE_GRACE: SignedDuration = SignedDuration::from_secs(5);

/// The member's Lease watch, until aborted.
pub(super) async fn watch_lease(client: Client, member: Member) {
    let api: Api<Lease> = Api::namespaced(client, KYVERNO_NAMESPACE);
    let mut retry = Backoff::new(RETRY_MIN, RETRY_MAX);
    let mut failing = false;
    loop {
        let (error, forbidden) = follow(&api, &member, &mut retry, &mut failing).await;
        // Forbidden needs a person (the member's credentials lack `get/list/watch` on leases);
        // anything else is most likely the member being unreachable, which its report
        // watches already warn about.
        if !failing && forbidden {
            tracing::warn!(
                namespace = member.fleet.0,
                fleet = member.fleet.1,
                cluster = member.cluster,
                error,
                "cannot read Kyverno's reports controller Lease: its staleness cannot be detected"
            );
        } else {
            tracing::debug!(
                cluster = member.cluster,
                error,
                "cannot read Kyverno's Lease"
            );
        }
        failing = true;
        tokio::time::sleep(retry.next_delay()).await;
    }
}

/// Follows one watcher, waking up at the Lease's deadline, until it needs a fresh start.
/// Returns the error and whether it was a 403.
async fn follow(
    api: &Api<Lease>,
    member: &Member,
    retry: &mut Backoff,
    failing: &mut bool,
) -> (String, bool) {
    let config = watcher::Config::default()
        .fields(&format!("metadata.name={REPORTS_LEASE}"))
        .any_semantic();
    let mut stream = watcher::watcher(api.clone(), config).boxed();
    // The listing in progress: `Some(lease)` between `Init` and `InitDone`.
    let mut listing: Option<Option<LeaseInfo>> = None;
    loop {
        let deadline = lock(&member.state).lease.next_deadline();
        let timer = async {
            match deadline {
                Some(at) => tokio::time::sleep(until(at)).await,
                None => std::future::pending().await,
            }
        };
        let next = tokio::select! {
            () = timer => {
                member.update(|s, now| s.check_lease(now));
                continue;
            }
            next = stream.next() => next,
        };
        match next {
            Some(Ok(Event::Init)) => listing = Some(None),
            Some(Ok(Event::InitApply(lease))) => {
                if let Some(listed) = &mut listing {
                    *listed = LeaseInfo::of(&lease);
                }
            }
            Some(Ok(Event::InitDone)) => {
                let lease = listing.take().flatten();
                member.update(|s, now| s.observe_lease(lease, now));
                if *failing {
                    tracing::debug!(cluster = member.cluster, "Kyverno's Lease readable again");
                }
                *failing = false;
                retry.reset();
            }
            Some(Ok(Event::Apply(lease))) => {
                member.update(|s, now| s.observe_lease(LeaseInfo::of(&lease), now));
            }
            Some(Ok(Event::Delete(_))) => member.update(|s, now| s.observe_lease(None, now)),
            Some(Err(err @ (watcher::Error::WatchFailed(_) | watcher::Error::WatchError(_)))) => {
                tracing::debug!(
                    cluster = member.cluster, error = %describe_watch(&err),
                    "Lease watch interrupted, resuming"
                );
                tokio::time::sleep(RESUME_DELAY).await;
            }
            Some(Err(
                watcher::Error::InitialListFailed(e) | watcher::Error::WatchStartFailed(e),
            )) => {
                let forbidden = matches!(&e, kube::Error::Api(s) if s.code == 403);
                return (
                    format!("cannot list Leases: {}", describe_error(&e)),
                    forbidden,
                );
            }
            Some(Err(other)) => {
                return (
                    format!("cannot watch Leases: {}", describe_watch(&other)),
                    false,
                );
            }
            None => return ("the Lease watch ended".to_string(), false),
        }
    }
}

/// How long until `at` on the wall clock (zero when past), a little beyond so that the check
/// lands after the deadline.
fn until(at: Timestamp) -> std::time::Duration {
    let wait = Timestamp::now().duration_until(at);
    std::time::Duration::try_from(wait).unwrap_or_default() + std::time::Duration::from_millis(10)
}
