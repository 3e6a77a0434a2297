use super::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kurator_api::policy_report::{ClusterReportStatus, FailingPolicy, PolicyResultCounts};

fn t(secs: i64) -> Time {
    Time(Timestamp::from_second(secs).unwrap())
}

fn fleet_report() -> FleetPolicyReport {
    FleetPolicyReport {
        totals: PolicyResultCounts {
            pass: 42,
            fail: 7,
            warn: 1,
            error: 0,
            skip: 2,
        },
        clusters: vec![
            ClusterReportStatus {
                name: "kurator-member1".into(),
                pass: 40,
                fail: 3,
                warn: 1,
                skip: 2,
                last_seen: Some(t(3000)),
                ..Default::default()
            },
            ClusterReportStatus {
                name: "kurator-member2".into(),
                pass: 2,
                fail: 4,
                last_seen: Some(t(3000)),
                stale: true,
                stale_since: Some(t(3300)),
                message: Some("unreachable since 1970-01-01T00:55:00Z: connection refused".into()),
                ..Default::default()
            },
            ClusterReportStatus {
                name: "kurator-member3".into(),
                message: Some("the wgpolicyk8s.io CRDs are not installed (no Kyverno yet)".into()),
                ..Default::default()
            },
            ClusterReportStatus {
                name: "kurator-member4".into(),
                fail: 1,
                last_seen: Some(t(3000)),
                stale: true,
                stale_since: Some(t(3540)),
                message: Some(
                    "Kyverno's reports controller has not renewed its Lease \
                     kyverno/kyverno-reports-controller since 1970-01-01T00:59:00Z"
                        .into(),
                ),
                ..Default::default()
            },
        ],
        top_failing: vec![
            FailingPolicy {
                policy: "disallow-privileged-containers".into(),
                fail: 5,
                cluster_count: 2,
                clusters: vec!["kurator-member2".into(), "kurator-member1".into()],
            },
            FailingPolicy {
                policy: "require-labels".into(),
                fail: 2,
                cluster_count: 12,
                clusters: (1..=10).map(|i| format!("m{i}")).collect(),
            },
        ],
    }
}

#[test]
fn by_cluster() {
    let now = Timestamp::from_second(3600).unwrap();
    insta::assert_snapshot!(cluster_table(&fleet_report(), now), @r"
    CLUSTER          PASS  FAIL  WARN  ERROR  SKIP  REPORT          MESSAGE
    kurator-member1  40    3     1     0      2     current         -
    kurator-member2  2     4     0     0      0     stale for 5m    unreachable since 1970-01-01T00:55:00Z: connection refused
    kurator-member3  0     0     0     0      0     no reports yet  the wgpolicyk8s.io CRDs are not installed (no Kyverno yet)
    kurator-member4  0     1     0     0      0     stale for 60s   Kyverno's reports controller has not renewed its Lease kyverno/kyverno-reports-controller since 1970-01-01T00:59:00Z
    TOTAL            42    7     1     0      2

    MOST FAILING POLICY             FAIL  CLUSTERS  FAILING IN
    disallow-privileged-containers  5     2         kurator-member2,kurator-member1
    require-labels                  2     12        m1,m2,m3,+9
    ");
    let empty = cluster_table(&FleetPolicyReport::default(), now);
    insta::assert_snapshot!(empty, @r"
    CLUSTER  PASS  FAIL  WARN  ERROR  SKIP  REPORT  MESSAGE
    TOTAL    0     0     0     0      0
    ");
}

fn result(policy: &str, result: &str, resources: &[(&str, &str, &str)]) -> PolicyReportResult {
    PolicyReportResult {
        policy: policy.into(),
        rule: Some(format!("check-{policy}")),
        result: Some(PolicyResult::parse(result)),
        resources: resources
            .iter()
            .map(|(ns, kind, name)| ObjectReference {
                namespace: (!ns.is_empty()).then(|| ns.to_string()),
                kind: Some(kind.to_string()),
                name: Some(name.to_string()),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn scoped(ns: &str, kind: &str, name: &str, results: Vec<PolicyReportResult>) -> PolicyReport {
    let mut r = PolicyReport::new(name);
    r.metadata.namespace = Some(ns.into());
    r.scope = Some(ObjectReference {
        namespace: Some(ns.into()),
        kind: Some(kind.into()),
        name: Some(name.into()),
        ..Default::default()
    });
    r.results = results;
    r
}

fn members() -> Vec<MemberReports> {
    // member1: Kyverno 1.10+ style (one report per resource, `scope`), plus a cluster
    // report whose results name their resources, plus a summary-only report.
    let mut summary_only = scoped("default", "Pod", "legacy", vec![]);
    summary_only.summary = Some(PolicyReportSummary {
        pass: 2,
        fail: 1,
        ..Default::default()
    });
    let mut cluster = ClusterPolicyReport::new("cpol-require-ns-labels");
    cluster.results = vec![
        result("require-ns-labels", "fail", &[("", "Namespace", "team-a")]),
        result("require-ns-labels", "pass", &[("", "Namespace", "team-b")]),
    ];
    let member1 = MemberReports {
        cluster: "member1".into(),
        reports: vec![
            scoped(
                "default",
                "Deployment",
                "nginx",
                vec![
                    result("disallow-privileged", "fail", &[]),
                    result("require-labels", "pass", &[]),
                    result("require-labels", "skip", &[]),
                ],
            ),
            summary_only,
        ],
        cluster_reports: vec![cluster],
    };
    // member2: an older style report: results name several resources each.
    let mut old = PolicyReport::new("polr-ns-web");
    old.metadata.namespace = Some("web".into());
    old.results = vec![
        result(
            "disallow-privileged",
            "fail",
            &[("web", "Pod", "a"), ("web", "Pod", "b")],
        ),
        result("require-labels", "warn", &[("web", "Pod", "a")]),
        result("require-labels", "error", &[("web", "Pod", "b")]),
    ];
    let member2 = MemberReports {
        cluster: "member2".into(),
        reports: vec![old],
        cluster_reports: vec![],
    };
    vec![member1, member2]
}

#[test]
fn by_policy() {
    insta::assert_snapshot!(policy_table(&policy_rows(&members())), @r"
    POLICY               CLUSTERS  PASS  FAIL  WARN  ERROR  SKIP  FAILING IN
    disallow-privileged  2         0     2     0     0      0     member1,member2
    require-ns-labels    1         1     1     0     0      0     member1
    require-labels       2         1     0     1     1      1     -
    ");
    assert_eq!(policy_table(&[]), "No policy results found.\n");
}

#[test]
fn by_resource() {
    insta::assert_snapshot!(resource_table(&resource_rows(&members())), @r"
    CLUSTER  NAMESPACE  KIND        NAME    PASS  FAIL  WARN  ERROR  SKIP  FAILING
    member1  -          Namespace   team-a  0     1     0     0      0     require-ns-labels
    member1  -          Namespace   team-b  1     0     0     0      0     -
    member1  default    Deployment  nginx   1     1     0     0      1     disallow-privileged
    member1  default    Pod         legacy  2     1     0     0      0     -
    member2  web        Pod         a       0     1     1     0      0     disallow-privileged
    member2  web        Pod         b       0     1     0     1      0     disallow-privileged
    ");
}

#[test]
fn rows_serialise_flat() {
    let rows = policy_rows(&members());
    insta::assert_snapshot!(serde_json::to_string(&rows[0]).unwrap(), @r#"{"policy":"disallow-privileged","clusters":2,"pass":0,"fail":2,"warn":0,"error":0,"skip":0,"failingIn":["member1","member2"]}"#);
}

#[test]
fn names_are_cut() {
    let list: Vec<String> = ["a", "b", "c", "d", "e"].map(String::from).to_vec();
    assert_eq!(names(&list), "a,b,c,+2");
    assert_eq!(names(&list[..2]), "a,b");
    assert_eq!(names(&[]), "-");
    assert_eq!(names_of(&list[..1], 4), "a,+3");
    assert_eq!(names_of(&[], 2), "+2");
}
