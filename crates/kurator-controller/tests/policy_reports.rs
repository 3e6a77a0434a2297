//! The policy report collector against a real member API server: reports written as Kyverno
//! writes them show in the collector's snapshot and aggregate; an outage keeps the last known
//! counts, marked stale; recovery clears the mark. Kyverno's reports controller stopping (its
//! leader Lease no longer renewed) marks that member stale too, and only that one.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::{
        coordination::v1::{Lease, LeaseSpec},
        core::v1::Namespace,
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use kurator_api::policy_report::{ClusterPolicyReport, FleetPolicyReport, PolicyReport};
use kurator_controller::plugins::{
    collector::{LEASE_GRACE, PolicyReportCollector, REPORTS_LEASE},
    render::KYVERNO_NAMESPACE,
    reports::{ClusterReports, StaleCause, aggregate},
};
use kurator_testenv::TestEnv;

/// The two CRDs as Kyverno installs them, reduced to what the API server needs to serve them.
const POLICY_REPORT_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: policyreports.wgpolicyk8s.io
spec:
  group: wgpolicyk8s.io
  names: {kind: PolicyReport, listKind: PolicyReportList, plural: policyreports, singular: policyreport, shortNames: [polr]}
  scope: Namespaced
  versions:
  - name: v1alpha2
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"#;

const CLUSTER_POLICY_REPORT_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: clusterpolicyreports.wgpolicyk8s.io
spec:
  group: wgpolicyk8s.io
  names: {kind: ClusterPolicyReport, listKind: ClusterPolicyReportList, plural: clusterpolicyreports, singular: clusterpolicyreport, shortNames: [cpolr]}
  scope: Cluster
  versions:
  - name: v1alpha2
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"#;

const NS: &str = "default";
const FLEET: &str = "quickstart";
const MEMBER: &str = "member1";
const WAIT: Duration = Duration::from_secs(30);

/// A report as Kyverno (1.10+) writes it: one per resource, `scope` naming it, one result per
/// policy rule, a `summary` and `{seconds, nanos}` timestamps.
fn kyverno_report(ns: &str, name: &str, results: &[(&str, &str)]) -> serde_json::Value {
    let results: Vec<serde_json::Value> = results
        .iter()
        .map(|(policy, result)| {
            serde_json::json!({
                "policy": policy,
                "rule": format!("check-{policy}"),
                "result": result,
                "severity": "medium",
                "category": "Pod Security Standards (Baseline)",
                "message": format!("validation rule 'check-{policy}' {result}ed."),
                "scored": true,
                "source": "kyverno",
                "timestamp": {"seconds": 1704940840, "nanos": 0},
            })
        })
        .collect();
    let count = |r: &str| results.iter().filter(|x| x["result"] == r).count();
    let mut report = serde_json::json!({
        "apiVersion": "wgpolicyk8s.io/v1alpha2",
        "kind": "PolicyReport",
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/managed-by": "kyverno"},
        },
        "scope": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "namespace": ns},
        "summary": {
            "pass": count("pass"), "fail": count("fail"), "warn": count("warn"),
            "error": count("error"), "skip": count("skip"),
        },
        "results": results,
    });
    if ns.is_empty() {
        report["kind"] = "ClusterPolicyReport".into();
        report["scope"] =
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "name": name});
    } else {
        report["metadata"]["namespace"] = ns.into();
    }
    report
}

async fn apply_report(client: &Client, ns: &str, name: &str, results: &[(&str, &str)]) {
    let report = kyverno_report(ns, name, results);
    let params = PatchParams::apply("kyverno").force();
    if ns.is_empty() {
        Api::<ClusterPolicyReport>::all(client.clone())
            .patch(name, &params, &Patch::Apply(&report))
            .await
            .expect("apply ClusterPolicyReport");
    } else {
        Api::<PolicyReport>::namespaced(client.clone(), ns)
            .patch(name, &params, &Patch::Apply(&report))
            .await
            .expect("apply PolicyReport");
    }
}

/// Installs the CRDs and waits until PolicyReports can be listed.
async fn install_report_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in kurator_testenv::parse_crds(&[
        POLICY_REPORT_CRD.to_string(),
        CLUSTER_POLICY_REPORT_CRD.to_string(),
    ])
    .expect("CRDs parse")
    {
        let name = crd.metadata.name.clone().unwrap();
        api.patch(
            &name,
            &PatchParams::apply("test").force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("apply CRD");
    }
    poll(WAIT, "the report CRDs to be served", || async {
        let reports = Api::<PolicyReport>::all(client.clone());
        let cluster_reports = Api::<ClusterPolicyReport>::all(client.clone());
        (reports.list(&Default::default()).await.is_ok()
            && cluster_reports.list(&Default::default()).await.is_ok())
        .then_some(())
    })
    .await;
}

/// Polls `check` until it gives a value, or panics after `timeout`.
async fn poll<T, F, Fut>(timeout: Duration, what: &str, check: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    kurator_testenv::wait::until(what, timeout, check)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Waits until the member's entry in the snapshot satisfies `check`; panics showing the last
/// snapshot otherwise.
async fn member_until(
    collector: &PolicyReportCollector,
    timeout: Duration,
    what: &str,
    check: impl Fn(&ClusterReports) -> bool,
) -> ClusterReports {
    let started = Instant::now();
    let member = kurator_testenv::wait::until(what, timeout, || async {
        let snapshot = collector.snapshot(NS, FLEET);
        match snapshot.get(MEMBER).filter(|m| check(m)) {
            Some(member) => Ok(Some(member.clone())),
            None => Err(format!("snapshot {snapshot:#?}")),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{what}: after {:?}", started.elapsed());
    member
}

fn fleet_report(collector: &PolicyReportCollector) -> FleetPolicyReport {
    aggregate(&collector.snapshot(NS, FLEET))
}

#[tokio::test]
async fn collects_member_reports_and_survives_an_outage() {
    let env = TestEnv::builder()
        .members(1)
        .start()
        .await
        .expect("test environment starts");
    let member = &env.members()[0];
    let admin = member.client().await.expect("member client");
    // The controller's way to a member: a client built from its kubeconfig Secret's text.
    let client = kurator_controller::member::client_from_kubeconfig(
        &member.kubeconfig_yaml(),
        Duration::from_secs(5),
    )
    .await
    .expect("member client from kubeconfig");

    let notified = Arc::new(AtomicUsize::new(0));
    let calls = notified.clone();
    let collector = PolicyReportCollector::new(move |ns, fleet| {
        assert_eq!((ns, fleet), (NS, FLEET));
        calls.fetch_add(1, Ordering::SeqCst);
    });
    collector.ensure(NS, FLEET, MEMBER, client.clone(), "1");

    // No Kyverno yet: no reports, said so, not stale.
    let m = member_until(&collector, WAIT, "CRDs reported missing", |m| {
        m.error
            .as_deref()
            .is_some_and(|e| e.contains("not installed"))
    })
    .await;
    assert_eq!((m.reports, m.stale_since), (0, None));

    // Kyverno installs its CRDs and writes reports: the collector notices the CRDs on its own.
    install_report_crds(&admin).await;
    apply_report(
        &admin,
        "default",
        "nginx",
        &[("disallow-privileged", "fail"), ("require-labels", "pass")],
    )
    .await;
    apply_report(
        &admin,
        "kube-public",
        "web",
        &[("disallow-privileged", "fail"), ("require-labels", "warn")],
    )
    .await;
    apply_report(&admin, "", "kube-public", &[("require-ns-labels", "fail")]).await;
    let before = notified.load(Ordering::SeqCst);
    let m = member_until(&collector, WAIT, "three reports", |m| m.reports == 3).await;
    assert_eq!(m.error, None);
    let report = fleet_report(&collector);
    let totals = report.totals;
    assert_eq!(
        (
            totals.pass,
            totals.fail,
            totals.warn,
            totals.error,
            totals.skip
        ),
        (1, 3, 1, 0, 0)
    );
    let top: Vec<(&str, i64)> = report
        .top_failing
        .iter()
        .map(|p| (p.policy.as_str(), p.fail))
        .collect();
    assert_eq!(top, [("disallow-privileged", 2), ("require-ns-labels", 1)]);
    assert_eq!(report.clusters[0].name, MEMBER);
    assert!(!report.clusters[0].stale);
    poll(WAIT, "a notification", || async {
        (notified.load(Ordering::SeqCst) > before).then_some(())
    })
    .await;

    // Kyverno fixes a resource and rescans: the counts follow (results, not the summary).
    apply_report(
        &admin,
        "default",
        "nginx",
        &[("disallow-privileged", "pass"), ("require-labels", "pass")],
    )
    .await;
    member_until(&collector, WAIT, "the update", |m| {
        m.counts.counts.fail == 2 && m.counts.counts.pass == 2
    })
    .await;
    Api::<PolicyReport>::namespaced(admin.clone(), "kube-public")
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete report");
    let m = member_until(&collector, WAIT, "the deletion", |m| m.reports == 2).await;
    assert_eq!(
        m.counts.failing,
        BTreeMap::from([("require-ns-labels".to_string(), 1)])
    );

    // A new kubeconfig (Secret resourceVersion) restarts the watch and keeps the counts.
    collector.ensure(NS, FLEET, MEMBER, client.clone(), "2");
    assert_eq!(collector.snapshot(NS, FLEET)[MEMBER].reports, 2);
    assert_eq!(collector.watch_count(), 1);

    // Outage: the last known counts stay, marked stale, with why.
    member.stop().await.expect("stop member");
    let m = member_until(&collector, Duration::from_secs(60), "stale", |m| {
        m.stale_since.is_some()
    })
    .await;
    assert_eq!((m.reports, m.counts.counts.fail), (2, 1));
    assert!(m.error.is_some());
    let status = &fleet_report(&collector).clusters[0];
    assert!(status.stale);
    assert_eq!(status.fail, 1);
    let message = status.message.as_deref().unwrap_or_default();
    assert!(message.starts_with("unreachable since "), "{message}");
    assert!(!message.contains("BEGIN"), "{message}");

    // Recovery: current again, with what changed meanwhile.
    member.start().await.expect("restart member");
    apply_report(&admin, "kube-public", "web", &[("require-labels", "fail")]).await;
    let m = member_until(&collector, Duration::from_secs(90), "recovered", |m| {
        m.stale_since.is_none() && m.reports == 3
    })
    .await;
    assert_eq!(m.error, None);
    assert_eq!(m.counts.counts.fail, 2);
    assert!(!fleet_report(&collector).clusters[0].stale);

    // The member leaves the fleet: its watch stops, its reports are forgotten.
    collector.retain(NS, FLEET, &BTreeSet::new());
    assert!(collector.snapshot(NS, FLEET).is_empty());
    assert_eq!(collector.watch_count(), 0);

    // Kyverno-written reports decode through typed Apis too (what the CLI reads).
    let listed = Api::<PolicyReport>::all(admin.clone())
        .list(&Default::default())
        .await
        .expect("list reports");
    assert_eq!(listed.items.len(), 2);
    assert!(listed.items.iter().all(|r| r.scope.is_some()));
    let _ = Api::<ClusterPolicyReport>::all(admin)
        .create(&PostParams::default(), &ClusterPolicyReport::new("typed"))
        .await
        .expect("typed create");
}

/// `leaseDurationSeconds` of the test's Leases (Kyverno's is 12); renewed every second.
const LEASE_SECONDS: i32 = 5;

/// Stands in for Kyverno's reports controller in one member: keeps its leader Lease as
/// client-go does (acquired once, `renewTime` rewritten every second) until stopped.
struct LeaseHolder {
    task: tokio::task::JoinHandle<()>,
    /// When the Lease was last renewed, once it was.
    renewed: Arc<Mutex<Option<Instant>>>,
}

impl LeaseHolder {
    fn start(client: &Client, holder: &str) -> LeaseHolder {
        let api: Api<Lease> = Api::namespaced(client.clone(), KYVERNO_NAMESPACE);
        let holder = holder.to_string();
        let renewed = Arc::new(Mutex::new(None));
        let last = renewed.clone();
        let acquired = Timestamp::now();
        let task = tokio::spawn(async move {
            loop {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(REPORTS_LEASE.into()),
                        namespace: Some(KYVERNO_NAMESPACE.into()),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(holder.clone()),
                        lease_duration_seconds: Some(LEASE_SECONDS),
                        acquire_time: Some(MicroTime(acquired)),
                        renew_time: Some(MicroTime(Timestamp::now())),
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                };
                let params = PatchParams::apply("kyverno").force();
                match api
                    .patch(REPORTS_LEASE, &params, &Patch::Apply(&lease))
                    .await
                {
                    Ok(_) => *last.lock().unwrap() = Some(Instant::now()),
                    Err(e) => eprintln!("renewing the Lease: {e}"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        LeaseHolder { task, renewed }
    }

    /// Waits until the Lease was renewed once.
    async fn renewing(&self) {
        poll(WAIT, "the Lease to be renewed", || async {
            self.renewed.lock().unwrap().map(|_| ())
        })
        .await;
    }

    /// Stops renewing (as a killed process would: the Lease is not released); returns when
    /// it was last renewed.
    async fn stop(self) -> Instant {
        self.task.abort();
        let _ = self.task.await;
        self.renewed.lock().unwrap().expect("renewed at least once")
    }
}

/// Current: the one report, not stale, nothing to say.
fn current(m: &ClusterReports) -> bool {
    m.reports == 1 && m.stale_since.is_none() && m.error.is_none()
}

/// Waits until member `down`'s entry satisfies `check`, asserting at every look that `up`,
/// once it has its report, is current.
async fn until_other_current(
    collector: &PolicyReportCollector,
    (down, up): (&str, &str),
    timeout: Duration,
    what: &str,
    check: impl Fn(&ClusterReports) -> bool,
) -> BTreeMap<String, ClusterReports> {
    let started = Instant::now();
    let snapshot = kurator_testenv::wait::until(what, timeout, || async {
        let snapshot = collector.snapshot(NS, FLEET);
        if let Some(other) = snapshot.get(up).filter(|m| m.reports == 1) {
            assert!(current(other), "{up} is affected: {other:#?}");
        }
        match snapshot.get(down).filter(|m| check(m)) {
            Some(_) => Ok(Some(snapshot)),
            None => Err(format!("snapshot {snapshot:#?}")),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{what}: after {:?}", started.elapsed());
    snapshot
}

#[tokio::test]
async fn kyverno_down_in_one_member_marks_only_that_member_stale() {
    let env = TestEnv::builder()
        .members(2)
        .start()
        .await
        .expect("test environment starts");
    let notified = Arc::new(AtomicUsize::new(0));
    let calls = notified.clone();
    let collector = PolicyReportCollector::new(move |_, _| {
        calls.fetch_add(1, Ordering::SeqCst);
    });
    // Both members run "Kyverno": its namespace, its report CRDs, one failing report, and
    // the reports controller's Lease kept renewed.
    let mut admins = Vec::new();
    let mut holders = Vec::new();
    let names: Vec<String> = env.members().iter().map(|m| m.name().to_string()).collect();
    for member in env.members() {
        let admin = member.client().await.expect("member client");
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(KYVERNO_NAMESPACE.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(admin.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create the kyverno namespace");
        install_report_crds(&admin).await;
        apply_report(
            &admin,
            "default",
            "nginx",
            &[("disallow-privileged", "fail")],
        )
        .await;
        let holder = LeaseHolder::start(
            &admin,
            &format!("kyverno-reports-controller-{}", member.name()),
        );
        holder.renewing().await;
        let client = kurator_controller::member::client_from_kubeconfig(
            &member.kubeconfig_yaml(),
            Duration::from_secs(5),
        )
        .await
        .expect("member client from kubeconfig");
        collector.ensure(NS, FLEET, member.name(), client, "1");
        admins.push(admin);
        holders.push(holder);
    }
    let pair = (names[0].as_str(), names[1].as_str());
    let (down, up) = pair;
    let started = Instant::now();
    poll(WAIT, "both members current", || async {
        let snapshot = collector.snapshot(NS, FLEET);
        (snapshot.len() == 2 && snapshot.values().all(current)).then_some(())
    })
    .await;
    eprintln!("both current: after {:?}", started.elapsed());

    // Kyverno's reports controller stops in one member: its Lease is no longer renewed.
    let last_renewal = holders.remove(0).stop().await;
    let before = notified.load(Ordering::SeqCst);
    let snapshot =
        until_other_current(&collector, pair, WAIT, "stale", |m| m.stale_since.is_some()).await;
    let waited = last_renewal.elapsed();
    let expiry = Duration::from_secs(LEASE_SECONDS as u64);
    assert!(
        waited >= expiry,
        "stale {waited:?} after the last renewal, before the Lease expired"
    );
    assert!(
        waited <= expiry + LEASE_GRACE.unsigned_abs() + Duration::from_secs(5),
        "stale only {waited:?} after the last renewal"
    );
    let m = &snapshot[down];
    assert_eq!(m.stale_cause, Some(StaleCause::ReportsControllerDown));
    assert_eq!((m.reports, m.counts.counts.fail), (1, 1), "counts kept");
    let error = m.error.as_deref().unwrap_or_default();
    let prefix = format!(
        "Kyverno's reports controller has not renewed its Lease {KYVERNO_NAMESPACE}/{REPORTS_LEASE} since "
    );
    assert!(error.starts_with(&prefix), "{error}");
    let report = aggregate(&snapshot);
    let status = report.clusters.iter().find(|c| c.name == down).unwrap();
    assert!(status.stale && status.stale_since.is_some());
    assert_eq!(
        status.message.as_deref(),
        Some(error),
        "the status says why, as is"
    );
    let other = report.clusters.iter().find(|c| c.name == up).unwrap();
    assert!(!other.stale && other.message.is_none(), "{other:?}");
    poll(WAIT, "a notification", || async {
        (notified.load(Ordering::SeqCst) > before).then_some(())
    })
    .await;

    // Kyverno runs again and renews its Lease: current again.
    let holder = LeaseHolder::start(&admins[0], &format!("kyverno-reports-controller-{down}"));
    holder.renewing().await;
    until_other_current(&collector, pair, WAIT, "current after a renewal", current).await;

    holder.stop().await;
    holders.remove(0).stop().await;
}
