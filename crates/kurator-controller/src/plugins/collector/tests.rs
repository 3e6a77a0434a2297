use super::*;
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
