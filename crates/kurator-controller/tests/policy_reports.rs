//! The policy report collector against a real member API server: reports written as Kyverno
//! writes them show in the collector's snapshot and aggregate; an outage keeps the last known
//! counts, marked stale; recovery clears the mark.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use kurator_api::policy_report::{ClusterPolicyReport, FleetPolicyReport, PolicyReport};
use kurator_controller::plugins::{
    collector::PolicyReportCollector,
    reports::{ClusterReports, aggregate},
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
