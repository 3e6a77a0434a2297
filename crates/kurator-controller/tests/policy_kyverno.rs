//! End-to-end: the brief's policy Fleet on two members with real Kyverno. Flux installs the
//! real kyverno and kyverno-policies charts (3.2.0, selected with the Fleet's chart override
//! to match the Kyverno v1.12.0 binaries) from a local repository; kube-scheduler and kwok run
//! the charts' Pods on simulated nodes, and [`KyvernoStandIn`] starts the real admission and
//! reports controllers once the charts' Deployments exist, standing in for the kubelet.
//!
//! Audit reports a privileged Pod in both clusters; Enforce refuses it with Kyverno's message;
//! restricted refuses a Pod that baseline admits; Kyverno down in one member marks its report
//! stale while the other stays current; removing the plugin uninstalls Kyverno and its
//! webhooks, after which Pods are no longer checked.

use std::time::{Duration, Instant};

use crate::common::{NS, apply, kyverno, until, wait_for};
use k8s_openapi::api::{admissionregistration::v1::ValidatingWebhookConfiguration, core::v1::Pod};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use kurator_api::{Fleet, conditions, flux::HelmRelease, policy_report::FleetPolicyReport};
use kurator_testenv::KyvernoStandIn;
use serde_json::json;

/// Kyverno's own delays dominate: webhook reconfiguration after a policy change, and the
/// reports controller's aggregation (plus Helm upgrades through Flux).
const WAIT: Duration = Duration::from_secs(180);
const POLICY_FLEET: &str = include_str!("../../kurator-api/tests/fixtures/seed/fleet-policy.yaml");
const FLEET: &str = "quickstart-policy";
const MEMBERS: [&str; 2] = ["kurator-member1", "kurator-member2"];
const PRIVILEGED: &str = "disallow-privileged-containers";
/// Kyverno's message for a privileged container (kyverno-policies' baseline policy).
const PRIVILEGED_MESSAGE: &str = "Privileged mode is disallowed.";
/// Webhook configurations Kyverno registers carry this label.
const KYVERNO_WEBHOOKS: &str = "webhook.kyverno.io/managed-by=kyverno";

fn condition(f: &Fleet, type_: &str) -> Option<(String, String)> {
    let c = conditions::find(&f.status.as_ref()?.conditions, type_)?;
    Some((c.status.clone(), c.message.clone()))
}

fn report(f: &Fleet) -> Option<&FleetPolicyReport> {
    f.status.as_ref()?.policy_report.as_ref()
}

fn pod(name: &str, security: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"containers": [{
            "name": "app",
            "image": "registry.k8s.io/pause:3.10",
            "securityContext": security,
        }]},
    }))
    .expect("pod")
}

fn privileged(name: &str) -> Pod {
    pod(name, json!({"privileged": true}))
}

/// Passes baseline (nothing privileged) but not restricted (may run as root, keeps its
/// capabilities, no seccomp profile).
fn baseline_only(name: &str) -> Pod {
    pod(name, json!({}))
}

/// What the restricted standard asks of a Pod.
fn restricted(name: &str) -> Pod {
    pod(
        name,
        json!({
            "allowPrivilegeEscalation": false,
            "runAsNonRoot": true,
            "runAsUser": 1000,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        }),
    )
}

/// Creates the Pod; `Err` holds the API server's refusal.
async fn create(pods: &Api<Pod>, pod: &Pod) -> Result<(), String> {
    match pods.create(&PostParams::default(), pod).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) => Err(status.message),
        Err(e) => panic!("creating a Pod: {e}"),
    }
}

/// Kyverno reconfigures its webhooks asynchronously after a policy change: tries (with fresh
/// names, deleting what was admitted) until the Pod is refused with a message holding every
/// needle.
async fn expect_refused(member: &Client, make: fn(&str) -> Pod, needles: &[&str]) -> String {
    let pods: Api<Pod> = Api::namespaced(member.clone(), NS);
    let mut attempt = 0;
    until("the Pod to be refused by Kyverno", WAIT, || {
        attempt += 1;
        let pod = make(&format!("refused-{attempt}"));
        let pods = pods.clone();
        async move {
            match create(&pods, &pod).await {
                Err(message) if needles.iter().all(|n| message.contains(n)) => Ok(Some(message)),
                Err(message) => Err(format!("refused otherwise: {message}")),
                Ok(()) => {
                    let name = pod.metadata.name.clone().unwrap_or_default();
                    let _ = pods.delete(&name, &DeleteParams::default()).await;
                    Err("admitted".to_string())
                }
            }
        }
    })
    .await
}

/// Tries until the Pod is admitted (a webhook being reconfigured may still refuse it).
async fn expect_admitted(member: &Client, pod: Pod) {
    let pods: Api<Pod> = Api::namespaced(member.clone(), NS);
    let name = pod.metadata.name.clone().unwrap_or_default();
    until(format!("Pod {name} to be admitted"), WAIT, || async {
        create(&pods, &pod).await
    })
    .await;
}

async fn set_pod_security(fleets: &Api<Fleet>, field: &str, value: &str) {
    fleets
        .patch(
            FLEET,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"plugin": {"policy": {"kyverno": {"podSecurity": {field: value}}}}}})),
        )
        .await
        .expect("patch the fleet");
}

async fn kyverno_webhooks(member: &Client) -> usize {
    Api::<ValidatingWebhookConfiguration>::all(member.clone())
        .list(&ListParams::default().labels(KYVERNO_WEBHOOKS))
        .await
        .expect("list webhook configurations")
        .items
        .len()
}

#[tokio::test]
async fn policy_from_the_brief_with_real_kyverno_audit_enforce_restricted_outage_and_removal() {
    let kyverno::WithKyverno {
        h,
        params,
        mut stand_ins,
        charts: _charts,
    } = kyverno::start(&MEMBERS, WAIT).await;
    let members = h.member_clients().await;

    // The brief's policy fleet on two AttachedClusters, with the charts matching the binaries.
    let brief: Fleet = serde_saphyr::from_str(POLICY_FLEET).unwrap();
    let mut value = serde_json::to_value(&brief).unwrap();
    value["spec"]["clusters"] = json!(
        MEMBERS
            .iter()
            .map(|name| json!({"name": name, "kind": "AttachedCluster"}))
            .collect::<Vec<_>>()
    );
    value["spec"]["plugin"]["policy"]["kyverno"]["chart"] = json!({"version": "3.2.0"});
    let fleet: Fleet = serde_json::from_value(value).unwrap();
    let fleets: Api<Fleet> = h.api();
    apply(&fleets, FLEET, &fleet).await;
    let started = Instant::now();
    wait_for(&fleets, FLEET, WAIT, |f| {
        condition(f, "PolicyReady").is_some_and(|c| c.0 == "True")
    })
    .await;
    for stand_in in &mut stand_ins {
        stand_in.wait_running(WAIT).await.expect("Kyverno runs");
    }
    eprintln!("kyverno installed and running in {:?}", started.elapsed());
    for member in &members {
        assert!(
            kyverno_webhooks(member).await > 0,
            "Kyverno registered its webhooks"
        );
    }

    // Audit: a privileged Pod is admitted in both members and reported by Kyverno.
    for member in &members {
        expect_admitted(member, privileged("privileged-audited")).await;
    }
    let started = Instant::now();
    let f = wait_for(&fleets, FLEET, WAIT, |f| {
        report(f).is_some_and(|r| {
            r.top_failing.iter().any(|p| {
                p.policy == PRIVILEGED && MEMBERS.iter().all(|m| p.clusters.iter().any(|c| c == m))
            })
        })
    })
    .await;
    eprintln!(
        "Kyverno's reports reached the fleet in {:?}",
        started.elapsed()
    );
    for cluster in &report(&f).unwrap().clusters {
        assert!(cluster.fail >= 1 && !cluster.stale, "{cluster:?}");
    }

    // A crashed reports controller (Kyverno 1.12's can panic) is started again, as the
    // kubelet restarts a Pod's container: a new process, and member1's report stays current.
    let reports_pid = |stand_in: &KyvernoStandIn| {
        stand_in
            .processes()
            .into_iter()
            .find(|p| p.name.ends_with("kyverno-reports-controller"))
            .and_then(|p| p.pid)
    };
    let crashed = reports_pid(&stand_ins[0]).expect("member1's reports controller runs");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &crashed.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    until("member1's reports controller restarted", WAIT, || async {
        match reports_pid(&stand_ins[0]) {
            Some(pid) if pid != crashed => Ok(()),
            other => Err(format!("reports controller pid {other:?}")),
        }
    })
    .await;
    let restarted_at = k8s_openapi::jiff::Timestamp::now();
    wait_for(&fleets, FLEET, WAIT, |f| {
        report(f).is_some_and(|r| {
            r.clusters.iter().any(|c| {
                c.name == MEMBERS[0]
                    && !c.stale
                    && c.last_seen.as_ref().is_some_and(|t| t.0 > restarted_at)
            })
        })
    })
    .await;

    // Enforce: a new privileged Pod is refused with Kyverno's message; a compliant one passes.
    set_pod_security(&fleets, "validationFailureAction", "Enforce").await;
    for member in &members {
        let message = expect_refused(member, privileged, &[PRIVILEGED, PRIVILEGED_MESSAGE]).await;
        assert!(message.contains("admission webhook"), "{message}");
        expect_admitted(member, baseline_only("baseline-enforced")).await;
    }

    // Restricted: what baseline admits is refused; a restricted Pod passes.
    set_pod_security(&fleets, "standard", "restricted").await;
    for member in &members {
        let message = expect_refused(member, baseline_only, &["require-run-as-nonroot"]).await;
        eprintln!("restricted refusal: {message}");
        expect_admitted(member, restricted("restricted-ok")).await;
    }

    // Kyverno down in member2: its report is stale, member1's is not. Meanwhile the chart's
    // `failurePolicy: Fail` webhooks refuse Pods there (nothing answers them).
    let down = stand_ins.pop().unwrap();
    down.stop().await;
    let f = wait_for(&fleets, FLEET, WAIT, |f| {
        report(f).is_some_and(|r| r.clusters.iter().any(|c| c.name == MEMBERS[1] && c.stale))
    })
    .await;
    let clusters = &report(&f).unwrap().clusters;
    let first = clusters.iter().find(|c| c.name == MEMBERS[0]).unwrap();
    assert!(!first.stale, "{first:?}");
    let second = clusters.iter().find(|c| c.name == MEMBERS[1]).unwrap();
    assert!(
        second
            .message
            .as_deref()
            .is_some_and(|m| m.contains("Kyverno")),
        "{second:?}"
    );
    let refused = create(
        &Api::namespaced(members[1].clone(), NS),
        &restricted("while-kyverno-is-down"),
    )
    .await
    .expect_err("no Kyverno to answer its webhook");
    assert!(refused.contains("failed calling webhook"), "{refused}");
    let h1 = &h.env.members()[1];
    stand_ins.push(kyverno::stand_in(&params, h1.name(), h1.kubeconfig_path()).await);
    wait_for(&fleets, FLEET, WAIT, |f| {
        report(f).is_some_and(|r| r.clusters.iter().all(|c| !c.stale))
    })
    .await;

    // Removing the plugin uninstalls both charts and Kyverno's webhooks; Pods pass unchecked.
    fleets
        .patch(
            FLEET,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"plugin": null}})),
        )
        .await
        .unwrap();
    let releases: Api<HelmRelease> = h.api();
    until("kyverno's HelmReleases removed", WAIT, || async {
        let left: Vec<String> = releases
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|r| r.metadata.name)
            .filter(|n| n.starts_with("kyverno"))
            .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    })
    .await;
    for member in &members {
        until("Kyverno's webhook configurations removed", WAIT, || async {
            match kyverno_webhooks(member).await {
                0 => Ok(()),
                n => Err(format!("{n} left")),
            }
        })
        .await;
        expect_admitted(member, privileged("privileged-unchecked")).await;
    }
    for stand_in in stand_ins {
        assert!(
            stand_in.running().is_empty(),
            "Kyverno stopped after uninstall"
        );
        stand_in.stop().await;
    }
    h.shutdown().await;
}
