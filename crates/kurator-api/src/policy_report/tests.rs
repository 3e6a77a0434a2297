use super::*;
use kube::Resource;

#[test]
fn resources_address_the_wgpolicy_api() {
    assert_eq!(
        PolicyReport::url_path(&(), Some("default")),
        "/apis/wgpolicyk8s.io/v1alpha2/namespaces/default/policyreports"
    );
    assert_eq!(
        ClusterPolicyReport::url_path(&(), None),
        "/apis/wgpolicyk8s.io/v1alpha2/clusterpolicyreports"
    );
    assert_eq!(PolicyReport::api_version(&()), "wgpolicyk8s.io/v1alpha2");
    assert_eq!(ClusterPolicyReport::kind(&()), "ClusterPolicyReport");
}

#[test]
fn report_kinds_are_not_our_crds() {
    assert!(
        crate::crds::all()
            .iter()
            .all(|c| c.spec.group != GROUP && !c.spec.names.kind.contains("PolicyReport"))
    );
}

/// Compiles only if the types work with typed Apis and watchers.
#[allow(dead_code)]
fn usable_with_kube(client: kube::Client) {
    let _: kube::Api<PolicyReport> = kube::Api::namespaced(client.clone(), "default");
    let _: kube::Api<PolicyReport> = kube::Api::all(client.clone());
    let api: kube::Api<ClusterPolicyReport> = kube::Api::all(client);
    let _ = kube::runtime::watcher(api, Default::default());
}

/// A report as Kyverno 1.11 writes it (one per resource, `scope` set).
const KYVERNO_REPORT: &str = r#"
apiVersion: wgpolicyk8s.io/v1alpha2
kind: PolicyReport
metadata:
  name: 0c2d5e38-1d4a-4a2f-9b0e-4a6d4d1c2f3a
  namespace: default
  labels:
    app.kubernetes.io/managed-by: kyverno
  ownerReferences:
  - apiVersion: apps/v1
    kind: Deployment
    name: nginx
    uid: 0c2d5e38-1d4a-4a2f-9b0e-4a6d4d1c2f3a
scope:
  apiVersion: apps/v1
  kind: Deployment
  name: nginx
  namespace: default
  uid: 0c2d5e38-1d4a-4a2f-9b0e-4a6d4d1c2f3a
summary: {error: 0, fail: 1, pass: 1, skip: 0, warn: 0}
results:
- category: Pod Security Standards (Baseline)
  message: validation rule 'adding-capabilities' passed.
  policy: disallow-capabilities
  result: pass
  rule: autogen-adding-capabilities
  scored: true
  severity: medium
  source: kyverno
  timestamp: {nanos: 0, seconds: 1704940840}
  properties: {process: background scan}
- category: Pod Security Standards (Baseline)
  message: 'validation error: Privileged mode is disallowed.'
  policy: disallow-privileged-containers
  result: fail
  rule: autogen-privileged-containers
  scored: true
  severity: medium
  source: kyverno
  timestamp: {nanos: 0, seconds: 1704940840}
  futureField: [1, 2]
"#;

#[test]
fn decodes_kyverno_reports() {
    let r: PolicyReport = serde_saphyr::from_str(KYVERNO_REPORT).unwrap();
    assert_eq!(r.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(
        r.scope.as_ref().unwrap().kind.as_deref(),
        Some("Deployment")
    );
    assert_eq!(r.summary.as_ref().unwrap().fail, 1);
    assert_eq!(r.results.len(), 2);
    let failed = &r.results[1];
    assert_eq!(failed.policy, "disallow-privileged-containers");
    assert_eq!(failed.result, Some(PolicyResult::Fail));
    assert_eq!(failed.severity.as_deref(), Some("medium"));
    assert_eq!(
        failed.timestamp.unwrap().to_time().unwrap().0.as_second(),
        1704940840
    );
    assert_eq!(r.results[0].properties["process"], "background scan");
    // Round trip: what we write decodes to the same value.
    let text = serde_json::to_string(&r).unwrap();
    assert!(text.starts_with(r#"{"apiVersion":"wgpolicyk8s.io/v1alpha2","kind":"PolicyReport""#));
    let back: PolicyReport = serde_json::from_str(&text).unwrap();
    assert_eq!(back, r);
}

#[test]
fn decoding_tolerates_odd_reports() {
    let odd = r#"{
            "apiVersion": "wgpolicyk8s.io/v1alpha2", "kind": "ClusterPolicyReport",
            "metadata": {"name": "odd"},
            "scope": "not an object",
            "summary": {"pass": "three", "fail": 2},
            "results": [
                {"policy": "p", "result": "Quarantined", "timestamp": "2024-01-11T02:40:40Z",
                 "resources": [{"kind": "Namespace", "name": "a"}, 7]},
                {"result": "FAIL", "scored": "yes", "properties": ["x"]},
                42
            ]
        }"#;
    let r: ClusterPolicyReport = serde_json::from_str(odd).unwrap();
    assert_eq!(r.scope, None);
    assert_eq!(
        r.summary,
        Some(PolicyReportSummary {
            fail: 2,
            ..Default::default()
        })
    );
    assert_eq!(r.results.len(), 2);
    assert_eq!(
        r.results[0].result,
        Some(PolicyResult::Other("Quarantined".into()))
    );
    assert_eq!(r.results[0].timestamp.unwrap().seconds, 1704940840);
    assert_eq!(r.results[0].resources.len(), 1);
    assert_eq!(r.results[1].policy, "");
    assert_eq!(r.results[1].result, Some(PolicyResult::Fail));
    assert_eq!(r.results[1].scored, None);
    // Nothing at all is still a report.
    let empty: PolicyReport = serde_json::from_str("{}").unwrap();
    assert_eq!(empty, PolicyReport::default());
}

#[test]
fn messages_are_cut_on_char_boundaries() {
    assert_eq!(truncate_message("short", 10), "short");
    let cut = truncate_message("ééééé", 7);
    assert!(cut.len() <= 7, "{cut}");
    assert_eq!(cut, "éé…");
}

#[test]
fn aggregate_serialises_camel_case() {
    let report = FleetPolicyReport {
        totals: PolicyResultCounts {
            pass: 3,
            fail: 1,
            ..Default::default()
        },
        clusters: vec![ClusterReportStatus {
            name: "m1".into(),
            pass: 3,
            fail: 1,
            stale: true,
            stale_since: Some(Time(k8s_openapi::jiff::Timestamp::from_second(60).unwrap())),
            message: Some("unreachable".into()),
            ..Default::default()
        }],
        top_failing: vec![FailingPolicy {
            policy: "p".into(),
            fail: 1,
            cluster_count: 1,
            clusters: vec!["m1".into()],
        }],
    };
    insta::assert_snapshot!(serde_json::to_string(&report).unwrap(), @r#"{"totals":{"pass":3,"fail":1,"warn":0,"error":0,"skip":0},"clusters":[{"name":"m1","pass":3,"fail":1,"warn":0,"error":0,"skip":0,"stale":true,"staleSince":"1970-01-01T00:01:00Z","message":"unreachable"}],"topFailing":[{"policy":"p","fail":1,"clusterCount":1,"clusters":["m1"]}]}"#);
}

#[test]
fn serialisation_writes_type_meta_and_omits_unset_fields() {
    assert_eq!(PolicyReport::KIND, "PolicyReport");
    assert_eq!(ClusterPolicyReport::KIND, "ClusterPolicyReport");
    insta::assert_snapshot!(serde_json::to_string(&PolicyReport::new("r")).unwrap(), @r#"{"apiVersion":"wgpolicyk8s.io/v1alpha2","kind":"PolicyReport","metadata":{"name":"r"}}"#);
    let mut c = ClusterPolicyReport::new("c");
    c.summary = Some(PolicyReportSummary {
        pass: 1,
        ..Default::default()
    });
    insta::assert_snapshot!(serde_json::to_string(&c).unwrap(), @r#"{"apiVersion":"wgpolicyk8s.io/v1alpha2","kind":"ClusterPolicyReport","metadata":{"name":"c"},"summary":{"pass":1,"fail":0,"warn":0,"error":0,"skip":0}}"#);
}
