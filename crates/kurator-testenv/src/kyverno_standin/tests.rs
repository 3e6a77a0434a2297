use super::*;
use serde_json::json;

/// A Deployment as the kyverno chart renders it (release `kyverno-kyverno-member1`,
/// `fullnameOverride: kyverno`), reduced to what the stand-in reads.
fn deployment(
    component: &str,
    container: &str,
    env: serde_json::Value,
    args: &[&str],
) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": format!("kyverno-{component}"),
            "namespace": "kyverno",
            "labels": {
                "app.kubernetes.io/component": component,
                "app.kubernetes.io/instance": "kyverno-kyverno-member1",
                "app.kubernetes.io/part-of": "kyverno",
            },
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app.kubernetes.io/component": component}},
            "template": {"spec": {"containers": [{
                "name": container,
                "image": "ghcr.io/kyverno/kyverno:v1.12.0",
                "args": args,
                "env": env,
            }]}},
        },
    }))
    .unwrap()
}

fn admission() -> Deployment {
    deployment(
        ADMISSION,
        "kyverno",
        json!([
            {"name": "KYVERNO_SERVICEACCOUNT_NAME", "value": "kyverno-admission-controller"},
            {"name": "INIT_CONFIG", "value": "kyverno"},
            {"name": "METRICS_CONFIG", "value": "kyverno-metrics"},
            {"name": "KYVERNO_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "KYVERNO_DEPLOYMENT", "value": "kyverno-admission-controller"},
            {"name": "KYVERNO_SVC", "value": "kyverno-svc"},
        ]),
        &[
            "--caSecretName=kyverno-svc.kyverno.svc.kyverno-tls-ca",
            "--backgroundServiceAccountName=system:serviceaccount:kyverno:kyverno-background-controller",
            "--servicePort=443",
            "--webhookServerPort=9443",
            "--admissionReports=true",
        ],
    )
}

fn reports() -> Deployment {
    deployment(
        REPORTS,
        "controller",
        json!([{"name": "KYVERNO_DEPLOYMENT", "value": "kyverno-reports-controller"}]),
        &["--disableMetrics=false", "--metricsPort=8000"],
    )
}

#[test]
fn both_controllers_make_one_kyverno_configured_from_the_chart() {
    let wanted = wanted(&[admission(), reports()]);
    let key = ("kyverno".to_string(), "kyverno".to_string());
    let want = &wanted[&key];
    assert_eq!(want.image_version.as_deref(), Some("v1.12.0"));
    let o = &want.options;
    assert_eq!(o.namespace, "kyverno");
    assert_eq!(o.service_name, "kyverno-svc");
    assert_eq!(o.admission_controller_name, "kyverno-admission-controller");
    assert_eq!(o.reports_controller_name, "kyverno-reports-controller");
    assert_eq!(
        o.background_controller_name,
        "kyverno-background-controller"
    );
    assert!(
        o.admission_args
            .iter()
            .any(|a| a == "--admissionReports=true")
    );
    assert!(o.reports_args.iter().any(|a| a == "--metricsPort=8000"));
}

#[test]
fn an_incomplete_scaled_down_or_deleted_release_runs_nothing() {
    assert!(wanted(&[admission()]).is_empty());
    let mut scaled = reports();
    scaled.spec.as_mut().unwrap().replicas = Some(0);
    assert!(wanted(&[admission(), scaled]).is_empty());
    let mut deleted = admission();
    deleted.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
    assert!(wanted(&[deleted, reports()]).is_empty());
}

#[test]
fn the_hook_script_names_the_webhook_configurations_to_delete() {
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "kyverno-scale-to-zero", "annotations": {"helm.sh/hook": "pre-delete"}},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{
            "name": "kubectl",
            "command": ["/bin/bash", "-c", "set -euo pipefail\nkubectl scale -n kyverno deployment -l app.kubernetes.io/part-of=kyverno --replicas=0\nsleep 30\nkubectl delete validatingwebhookconfiguration -l webhook.kyverno.io/managed-by=kyverno\nkubectl delete mutatingwebhookconfiguration -l webhook.kyverno.io/managed-by=kyverno"],
        }]}}},
    }))
    .unwrap();
    assert!(is_pre_delete_hook(&job));
    assert_eq!(
        webhook_cleanup_selectors(&job),
        [
            (true, "webhook.kyverno.io/managed-by=kyverno".to_string()),
            (false, "webhook.kyverno.io/managed-by=kyverno".to_string()),
        ]
    );
}
