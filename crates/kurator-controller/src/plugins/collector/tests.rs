use super::state::LeaseInfo;
use super::*;
use crate::plugins::reports::StaleCause;
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::SignedDuration,
};
use kurator_api::policy_report::{PolicyReportResult, PolicyResult};

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(secs).unwrap()
}

fn report(ns: &str, name: &str, results: &[(&str, &str)]) -> PolicyReport {
    let mut r = PolicyReport::new(name);
    r.metadata.namespace = Some(ns.into());
    r.results = results
        .iter()
        .map(|(policy, result)| PolicyReportResult {
            policy: policy.to_string(),
            result: Some(PolicyResult::parse(result)),
            ..Default::default()
        })
        .collect();
    r
}

#[test]
fn listing_replaces_the_store_at_init_done() {
    let mut s = MemberState::default();
    assert!(!s.apply(Event::<PolicyReport>::Init, at(1)));
    assert!(!s.apply(Event::InitApply(report("a", "r1", &[("p", "fail")])), at(1)));
    // Nothing visible until the listing completes.
    assert_eq!(s.view().counts, ReportCounts::default());
    assert!(s.apply(Event::<PolicyReport>::InitDone, at(2)));
    let view = s.view();
    assert_eq!(view.counts.counts.fail, 1);
    assert_eq!(view.reports, 1);
    assert_eq!(view.last_seen, Some(at(2)));

    // Changes: a report updated, one added, one deleted.
    assert!(s.apply(Event::Apply(report("a", "r1", &[("p", "pass")])), at(3)));
    assert!(
        !s.apply(Event::Apply(report("a", "r1", &[("p", "pass")])), at(4)),
        "an update with the same counts changes nothing"
    );
    assert!(s.apply(Event::Apply(report("b", "r1", &[("q", "fail")])), at(5)));
    assert_eq!(s.view().counts.failing, BTreeMap::from([("q".into(), 1)]));
    assert!(s.apply(Event::Delete(report("b", "r1", &[])), at(6)));
    assert!(!s.apply(Event::Delete(report("b", "r1", &[])), at(6)));
    let view = s.view();
    assert_eq!(view.counts.counts.pass, 1);
    assert_eq!(view.counts.counts.fail, 0);
    assert!(view.counts.failing.is_empty());

    // A re-list that misses r1 drops it.
    s.apply(Event::<PolicyReport>::Init, at(7));
    assert!(s.apply(Event::<PolicyReport>::InitDone, at(7)));
    assert_eq!(s.view().reports, 0);
}

#[test]
fn failure_after_data_is_stale_and_recovery_clears_it() {
    let mut s = MemberState::default();
    // Failing before any data: an error, not stale.
    assert!(s.set_health(0, Health::Failing("cannot list: refused".into()), at(1)));
    assert_eq!(s.view().stale_since, None);
    assert_eq!(s.view().error.as_deref(), Some("cannot list: refused"));

    s.apply(Event::<PolicyReport>::Init, at(2));
    s.apply(Event::InitApply(report("a", "r", &[("p", "fail")])), at(2));
    assert!(s.apply(Event::<PolicyReport>::InitDone, at(2)));
    s.set_health(1, Health::Synced, at(2));
    assert_eq!(s.view().error, None);

    assert!(s.set_health(0, Health::Failing("refused".into()), at(10)));
    assert!(
        !s.set_health(0, Health::Failing("timed out".into()), at(20)),
        "a new error text alone does not notify"
    );
    let view = s.view();
    assert_eq!(view.stale_since, Some(at(10)));
    assert_eq!(view.counts.counts.fail, 1, "counts kept while stale");
    assert_eq!(view.error.as_deref(), Some("timed out"));

    s.apply(Event::<PolicyReport>::Init, at(30));
    s.apply(Event::InitApply(report("a", "r", &[("p", "fail")])), at(30));
    assert!(s.apply(Event::<PolicyReport>::InitDone, at(30)));
    let view = s.view();
    assert_eq!((view.stale_since, view.error), (None, None));
    assert_eq!(view.last_seen, Some(at(30)));
}

#[test]
fn missing_crds_mean_no_reports_not_stale() {
    let mut s = MemberState::default();
    s.apply(Event::<PolicyReport>::Init, at(1));
    s.apply(Event::InitApply(report("a", "r", &[("p", "fail")])), at(1));
    s.apply(Event::<PolicyReport>::InitDone, at(1));
    assert!(s.missing(1, at(2)));
    assert_eq!(
        s.view().error.as_deref(),
        Some("the ClusterPolicyReport CRD (wgpolicyk8s.io) is not installed")
    );
    // The CRD of PolicyReports is removed: its reports go.
    assert!(s.missing(0, at(3)));
    let view = s.view();
    assert_eq!(view.reports, 0);
    assert_eq!(view.stale_since, None);
    assert_eq!(
        view.error.as_deref(),
        Some("the wgpolicyk8s.io CRDs are not installed (no Kyverno yet)")
    );
    assert!(!s.missing(0, at(4)), "still missing: no change");
}

/// A member whose reports were listed at `t`: one failing report.
fn listed(t: i64) -> MemberState {
    let mut s = MemberState::default();
    s.apply(Event::<PolicyReport>::Init, at(t));
    s.apply(Event::InitApply(report("a", "r", &[("p", "fail")])), at(t));
    s.apply(Event::<PolicyReport>::InitDone, at(t));
    s.set_health(1, Health::Synced, at(t));
    s
}

/// The Lease as client-go writes it: held, renewed at `renewed`, 12 s.
fn held(renewed: i64) -> Option<LeaseInfo> {
    Some(LeaseInfo {
        holder: Some("kyverno-reports-controller-7d9f".into()),
        renewed: at(renewed),
        duration: SignedDuration::from_secs(12),
    })
}

const DOWN: &str = "Kyverno's reports controller has not renewed its Lease \
                    kyverno/kyverno-reports-controller since 1970-01-01T00:01:40Z";

#[test]
fn a_lease_is_read_as_client_go_writes_it() {
    let mut lease = Lease::default();
    assert_eq!(LeaseInfo::of(&lease), None, "no spec");
    lease.spec = Some(LeaseSpec {
        holder_identity: Some("kyverno-reports-controller-7d9f".into()),
        lease_duration_seconds: Some(12),
        acquire_time: Some(MicroTime(at(50))),
        renew_time: Some(MicroTime(at(100))),
        ..Default::default()
    });
    assert_eq!(LeaseInfo::of(&lease), held(100));
    // client-go's release: no holder, 1 s, renewed at the release.
    let spec = lease.spec.as_mut().unwrap();
    spec.holder_identity = Some(String::new());
    spec.lease_duration_seconds = Some(1);
    let released = LeaseInfo::of(&lease).unwrap();
    assert_eq!(released.holder, None);
    assert_eq!(released.duration, SignedDuration::from_secs(1));
    // Without a duration or a time it cannot expire: no evidence.
    lease.spec.as_mut().unwrap().lease_duration_seconds = None;
    assert_eq!(LeaseInfo::of(&lease), None);
}

#[test]
fn a_fresh_lease_is_current_until_its_deadline() {
    let mut s = listed(100);
    assert!(
        !s.observe_lease(held(100), at(101)),
        "a fresh Lease changes nothing"
    );
    // Deadline: renewal + 12 s + grace.
    let deadline = at(112).checked_add(LEASE_GRACE).unwrap();
    assert_eq!(s.lease.next_deadline(), Some(deadline));
    assert!(!s.check_lease(at(116)));
    assert_eq!((s.view().stale_since, s.view().error), (None, None));

    // The timer fires at the deadline: stale since the last renewal, with why.
    assert!(s.check_lease(deadline));
    let view = s.view();
    assert_eq!(view.stale_since, Some(at(100)));
    assert_eq!(view.stale_cause, Some(StaleCause::ReportsControllerDown));
    assert_eq!(view.error.as_deref(), Some(DOWN));
    assert_eq!(view.counts.counts.fail, 1, "counts kept while stale");
    assert_eq!(
        s.lease.next_deadline(),
        None,
        "nothing to wait for once expired"
    );
    assert!(!s.check_lease(at(200)), "still expired: no change");
}

#[test]
fn an_expired_lease_at_first_sight_is_stale_at_once() {
    // The controller starts while Kyverno has been gone for a while.
    let mut s = listed(1000);
    assert!(s.observe_lease(held(100), at(1000)));
    let view = s.view();
    assert_eq!(view.stale_since, Some(at(100)));
    assert_eq!(view.error.as_deref(), Some(DOWN));
    // The same Lease listed again (a watch restart) changes nothing.
    assert!(!s.observe_lease(held(100), at(1010)));
}

#[test]
fn a_renewal_clears_staleness() {
    let mut s = listed(100);
    s.observe_lease(held(100), at(100));
    assert!(s.check_lease(at(200)));
    // Kyverno runs again and takes its Lease back.
    assert!(s.observe_lease(held(205), at(205)));
    let view = s.view();
    assert_eq!(
        (view.stale_since, view.stale_cause, view.error),
        (None, None, None)
    );
    assert_eq!(
        s.lease.next_deadline(),
        at(217).checked_add(LEASE_GRACE).ok()
    );
}

#[test]
fn renewals_seen_count_on_our_clock() {
    // The member's clock is 60 s behind ours: its renewTime alone looks expired.
    let mut s = listed(1000);
    s.observe_lease(held(940), at(1000));
    assert!(
        s.view().stale_since.is_some(),
        "first sight: only renewTime to go by"
    );
    // But we see it renew: judged from when we saw that.
    assert!(s.observe_lease(held(942), at(1002)));
    assert_eq!(s.view().stale_since, None);
    assert_eq!(
        s.lease.next_deadline(),
        at(1014).checked_add(LEASE_GRACE).ok()
    );
    assert!(!s.check_lease(at(1018)));
    assert!(s.check_lease(at(1019)), "no renewal for 12 s + grace");
    assert_eq!(s.view().stale_since, Some(at(1002)));
}

#[test]
fn no_lease_is_not_stale() {
    let mut s = listed(100);
    assert!(!s.observe_lease(None, at(100)));
    assert!(!s.check_lease(at(10_000)));
    assert_eq!(s.lease.next_deadline(), None);
    assert_eq!((s.view().stale_since, s.view().error), (None, None));
    // An expired Lease that is deleted (Kyverno uninstalled) is no evidence any more.
    s.observe_lease(held(100), at(100));
    assert!(s.check_lease(at(200)));
    assert!(s.observe_lease(None, at(201)));
    assert_eq!((s.view().stale_since, s.view().error), (None, None));
}

#[test]
fn a_released_lease_expires_after_its_second() {
    let mut s = listed(100);
    s.observe_lease(held(100), at(100));
    let released = LeaseInfo {
        holder: None,
        renewed: at(110),
        duration: SignedDuration::from_secs(1),
    };
    assert!(!s.observe_lease(Some(released), at(110)));
    assert!(s.check_lease(at(116)));
    assert_eq!(
        s.view().error.as_deref(),
        Some(
            "Kyverno's reports controller released its Lease kyverno/kyverno-reports-controller \
             at 1970-01-01T00:01:50Z and no instance has taken it over"
        )
    );
}

#[test]
fn an_expired_lease_before_any_report_is_said_but_not_stale() {
    let mut s = MemberState::default();
    assert!(s.observe_lease(held(100), at(200)), "the error shows");
    let view = s.view();
    assert_eq!(
        view.stale_since, None,
        "nothing read yet: nothing to be stale"
    );
    assert_eq!(view.error.as_deref(), Some(DOWN));
    // The first listing makes it stale, since the last renewal.
    s.apply(Event::<PolicyReport>::Init, at(201));
    assert!(s.apply(Event::<PolicyReport>::InitDone, at(201)));
    assert_eq!(s.view().stale_since, Some(at(100)));
}

#[test]
fn an_unreachable_member_outranks_an_expired_lease() {
    let mut s = listed(100);
    s.observe_lease(held(100), at(100));
    // The member stops answering; its Lease's deadline passes meanwhile.
    assert!(s.set_health(
        0,
        Health::Failing("cannot list PolicyReports: refused".into()),
        at(110)
    ));
    assert_eq!(s.view().stale_cause, Some(StaleCause::Unreachable));
    assert!(!s.check_lease(at(200)), "already stale: the cause stays");
    let view = s.view();
    assert_eq!(view.stale_since, Some(at(110)));
    assert_eq!(view.stale_cause, Some(StaleCause::Unreachable));
    assert_eq!(
        view.error.as_deref(),
        Some("cannot list PolicyReports: refused")
    );

    // It answers again but Kyverno is still down: stale continues, now for that reason.
    s.apply(Event::<PolicyReport>::Init, at(210));
    assert!(s.apply(Event::<PolicyReport>::InitDone, at(210)));
    let view = s.view();
    assert_eq!(view.stale_since, Some(at(110)), "stale without a break");
    assert_eq!(view.stale_cause, Some(StaleCause::ReportsControllerDown));
    assert_eq!(view.error.as_deref(), Some(DOWN));

    // Kyverno back: current.
    assert!(s.observe_lease(held(215), at(215)));
    assert_eq!((s.view().stale_since, s.view().error), (None, None));

    // The other way round: Kyverno down first, then the member unreachable, then back with
    // Kyverno running.
    assert!(s.check_lease(at(300)));
    assert_eq!(s.view().stale_since, Some(at(215)));
    assert!(s.set_health(1, Health::Failing("refused".into()), at(310)));
    assert_eq!(s.view().stale_cause, Some(StaleCause::Unreachable));
    assert_eq!(s.view().stale_since, Some(at(215)));
    s.observe_lease(held(320), at(320));
    assert_eq!(s.view().stale_cause, Some(StaleCause::Unreachable));
    assert!(s.set_health(1, Health::Synced, at(321)));
    assert_eq!((s.view().stale_since, s.view().error), (None, None));
}

#[test]
fn backoff_grows_to_its_cap_with_jitter() {
    let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
    let delays: Vec<Duration> = (0..6).map(|_| b.next_delay()).collect();
    for (d, base) in delays.iter().zip([1, 2, 4, 8, 8, 8]) {
        let base = Duration::from_secs(base);
        assert!(
            *d >= base / 2 && *d <= base,
            "{delays:?}: {d:?} vs {base:?}"
        );
    }
    // Jittered: six delays are not all exactly at the lower bound.
    assert!(
        delays
            .iter()
            .zip([1, 2, 4, 8, 8, 8])
            .any(|(d, base)| *d > Duration::from_secs(base) / 2),
        "{delays:?}"
    );
    b.reset();
    assert!(b.next_delay() <= Duration::from_secs(1));
}

#[test]
fn api_errors_are_described_briefly() {
    let e = kube::Error::Api(
        kube::core::Status::failure("404 page not found", "NotFound")
            .with_code(404)
            .boxed(),
    );
    assert_eq!(describe_error(&e), "404 404 page not found");
}

#[tokio::test]
async fn notifications_are_coalesced_per_fleet() {
    let calls = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = calls.clone();
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(notifier(
        rx,
        Arc::new(move |ns: &str, fleet: &str| lock(&seen).push(format!("{ns}/{fleet}"))),
    ));
    for _ in 0..50 {
        tx.send(("ns".into(), "a".into())).unwrap();
        tx.send(("ns".into(), "b".into())).unwrap();
    }
    drop(tx);
    task.await.unwrap();
    assert_eq!(*lock(&calls), ["ns/a", "ns/b"]);
}

#[tokio::test]
async fn dropping_the_collector_stops_its_tasks() {
    // A client that never connects anywhere useful: the task just retries.
    let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
    let client = Client::try_from(config).unwrap();
    let collector = PolicyReportCollector::new(|_, _| {});
    collector.ensure("ns", "f", "m1", client.clone(), "1");
    collector.ensure("ns", "f", "m2", client.clone(), "1");
    collector.ensure("ns", "g", "m1", client.clone(), "1");
    collector.ensure("ns", "f", "m1", client.clone(), "1");
    assert_eq!(collector.watch_count(), 3);
    assert_eq!(
        collector
            .snapshot("ns", "f")
            .into_keys()
            .collect::<Vec<_>>(),
        ["m1", "m2"]
    );
    let handles: Vec<AbortHandle> = lock(&collector.inner.watches)
        .values()
        .map(|w| w.task.clone())
        .collect();
    collector.retain("ns", "f", &BTreeSet::from(["m2".to_string()]));
    assert_eq!(
        collector
            .snapshot("ns", "f")
            .into_keys()
            .collect::<Vec<_>>(),
        ["m2"]
    );
    assert_eq!(collector.snapshot("ns", "g").len(), 1);
    drop(collector);
    // Aborted tasks finish at their next poll.
    tokio::time::timeout(Duration::from_secs(5), async {
        while !handles.iter().all(AbortHandle::is_finished) {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("tasks stop");
}
