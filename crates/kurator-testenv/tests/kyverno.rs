//! Real Kyverno (admission controller + reports controller, out of cluster) in two members:
//! Enforce refuses a privileged Pod with Kyverno's message and admits a compliant one, Audit
//! admits it and the reports controller writes a PolicyReport with the failed result, and a
//! stopped Kyverno's `failurePolicy: Fail` webhook refuses Pods.
//!
//! Two members at once on purpose: Kyverno v1.10/v1.11 could not (fixed webhook port), and a
//! member whose webhooks reached the other member's Kyverno would see the other's policy.
//! No Pod runs (no kubelet): admission is what is checked.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Api, Client};
use kurator_testenv::{
    ClusterHandle, Kyverno, KyvernoOptions, KyvernoParams, TestEnv, ensure_kyverno_binaries, wait,
};
use serde_json::{Value, json};

/// Kyverno's own delays dominate: policy readiness after webhook reconfiguration, and the
/// reports controller's 10 s aggregation delay (plus leader election, on a busy machine).
const WAIT: Duration = Duration::from_secs(120);
const POLICY: &str = "disallow-privileged-containers";
const MESSAGE: &str = "Privileged mode is disallowed.";
const MANAGER: &str = "kurator-testenv-tests";

/// `disallow-privileged-containers` as the kyverno-policies chart renders it with Kurator's
/// values (`podSecurityStandard: baseline`, `podSecuritySeverity: medium`, chart defaults
/// `failurePolicy: Fail`, `background: true`); the action is the plugin's
/// `validationFailureAction`.
fn privileged_policy(action: &str) -> Value {
    json!({
        "apiVersion": "kyverno.io/v1",
        "kind": "ClusterPolicy",
        "metadata": {
            "name": POLICY,
            "annotations": {
                "policies.kyverno.io/title": "Disallow Privileged Containers",
                "policies.kyverno.io/category": "Pod Security Standards (Baseline)",
                "policies.kyverno.io/severity": "medium",
                "policies.kyverno.io/subject": "Pod",
            },
        },
        "spec": {
            "validationFailureAction": action,
            "background": true,
            "failurePolicy": "Fail",
            "rules": [{
                "name": "privileged-containers",
                "match": {"any": [{"resources": {"kinds": ["Pod"]}}]},
                "validate": {
                    "message": format!("{MESSAGE} The fields spec.containers[*].securityContext.privileged and spec.initContainers[*].securityContext.privileged must be unset or set to `false`."),
                    "pattern": {"spec": {
                        "=(ephemeralContainers)": [{"=(securityContext)": {"=(privileged)": "false"}}],
                        "=(initContainers)": [{"=(securityContext)": {"=(privileged)": "false"}}],
                        "containers": [{"=(securityContext)": {"=(privileged)": "false"}}],
                    }},
                },
            }],
        },
    })
}

fn pod(name: &str, privileged: bool) -> Result<Pod> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{
            "name": "app",
            "image": "registry.k8s.io/pause:3.10",
            "securityContext": {"privileged": privileged},
        }]},
    }))?)
}

fn resource(group: &str, version: &str, kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind))
}

/// What the chart creates before its Deployments run: the CRDs and the namespace.
async fn install_chart_prerequisites(cluster: &ClusterHandle, crds: &[String]) -> Result<()> {
    cluster.install_crds(crds).await?;
    let namespaces: Api<Namespace> = Api::all(cluster.client().await?);
    let ns = serde_json::from_value(json!({"metadata": {"name": "kyverno"}}))?;
    namespaces.create(&PostParams::default(), &ns).await?;
    Ok(())
}

/// Applies the policy and waits until Kyverno reports it ready (its webhooks then match Pods).
async fn apply_policy(client: &Client, action: &str) -> Result<()> {
    let ar = resource("kyverno.io", "v1", "ClusterPolicy");
    let policies: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let object: DynamicObject = serde_json::from_value(privileged_policy(action))?;
    policies
        .patch(
            POLICY,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&object),
        )
        .await?;
    wait::until(
        format!("ClusterPolicy {POLICY} ({action}) ready"),
        WAIT,
        || async {
            let policy = policies.get(POLICY).await?;
            let status = policy.data.get("status").cloned().unwrap_or(Value::Null);
            let ready = status["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            let action_seen = policy.data["spec"]["validationFailureAction"] == action;
            Ok::<_, anyhow::Error>(if ready && action_seen {
                Ok(())
            } else {
                Err(format!("status {status}"))
            })
        },
    )
    .await?;
    Ok(())
}

/// Creates the Pod; `Err` holds the API server's refusal message.
async fn create_pod(pods: &Api<Pod>, pod: &Pod) -> Result<std::result::Result<(), String>> {
    match pods.create(&PostParams::default(), pod).await {
        Ok(_) => Ok(Ok(())),
        Err(kube::Error::Api(status)) => Ok(Err(status.message)),
        Err(e) => Err(e.into()),
    }
}

/// Kyverno's webhooks are (re)configured asynchronously after a policy change: retry until
/// the answer is the expected one.
async fn expect_refusal(pods: &Api<Pod>, pod: &Pod, needles: &[&str]) -> Result<String> {
    wait::until(
        "the privileged Pod to be refused by Kyverno",
        WAIT,
        || async {
            match create_pod(pods, pod).await? {
                Err(message) if needles.iter().all(|n| message.contains(n)) => {
                    Ok::<_, anyhow::Error>(Ok(Some(message)))
                }
                Err(message) => Ok(Err(format!("refused with another message: {message}"))),
                Ok(()) => {
                    let name = pod.metadata.name.as_deref().unwrap_or_default();
                    pods.delete(name, &Default::default()).await?;
                    Ok(Err("admitted".to_string()))
                }
            }
        },
    )
    .await
    .map_err(Into::into)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kyverno_enforces_audits_and_reports_in_two_members() -> Result<()> {
    crate::common::init();
    let build = Instant::now();
    let binaries = tokio::task::spawn_blocking(ensure_kyverno_binaries).await??;
    eprintln!(
        "kyverno binaries ready in {:.1}s",
        build.elapsed().as_secs_f64()
    );
    let crds = binaries.crds()?;
    ensure!(
        crds.len() >= 12,
        "expected Kyverno's CRDs, got {}",
        crds.len()
    );

    let env = TestEnv::builder().members(2).start().await?;
    let [enforcing, auditing] = env.members() else {
        bail!("two members expected");
    };
    let options = KyvernoOptions::default();
    let mut started = Vec::new();
    for cluster in [enforcing, auditing] {
        install_chart_prerequisites(cluster, &crds).await?;
        let t = Instant::now();
        let kyverno = Kyverno::start(KyvernoParams {
            binaries: &binaries,
            cluster: cluster.name(),
            kubeconfig: cluster.kubeconfig_path(),
            state_dir: env.state_dir(),
            options: &options,
            detached: false,
            timeout: WAIT,
        })
        .await?;
        eprintln!(
            "{}: kyverno ready in {:.1}s at {}",
            cluster.name(),
            t.elapsed().as_secs_f64(),
            kyverno.webhook_url()
        );
        started.push(kyverno);
    }
    ensure!(
        started[0].webhook_url() != started[1].webhook_url(),
        "each member's Kyverno must listen on its own port"
    );

    // Enforce in member1: the privileged Pod is refused with Kyverno's message.
    let client1 = enforcing.client().await?;
    apply_policy(&client1, "Enforce").await?;
    let pods1: Api<Pod> = Api::namespaced(client1.clone(), "default");
    let message = expect_refusal(&pods1, &pod("privileged", true)?, &[POLICY, MESSAGE]).await?;
    ensure!(message.contains("denied the request"), "{message}");
    create_pod(&pods1, &pod("compliant", false)?)
        .await?
        .map_err(|m| anyhow!("compliant Pod refused: {m}"))?;

    // Audit in member2: admitted (so member2's webhooks reach member2's Kyverno, not
    // member1's), then reported as a failure.
    let client2 = auditing.client().await?;
    apply_policy(&client2, "Audit").await?;
    let pods2: Api<Pod> = Api::namespaced(client2.clone(), "default");
    create_pod(&pods2, &pod("privileged", true)?)
        .await?
        .map_err(|m| anyhow!("Audit refused the privileged Pod: {m}"))?;
    let reports: Api<DynamicObject> = Api::namespaced_with(
        client2.clone(),
        "default",
        &resource("wgpolicyk8s.io", "v1alpha2", "PolicyReport"),
    );
    let ephemeral: Api<DynamicObject> = Api::namespaced_with(
        client2.clone(),
        "default",
        &resource("reports.kyverno.io", "v1", "EphemeralReport"),
    );
    let t = Instant::now();
    let failed = wait::until(
        "a PolicyReport failing the privileged Pod",
        WAIT,
        || async {
            let list = reports.list(&Default::default()).await?;
            // Kyverno 1.12 writes one report per resource, named in its `scope`; older
            // releases name the resource in each result.
            let results: Vec<(Value, Value)> = list
                .items
                .iter()
                .flat_map(|report| {
                    let scope = report.data["scope"]["name"].clone();
                    let results = report.data["results"].as_array().cloned();
                    results.into_iter().flatten().map(move |r| {
                        let named = r["resources"][0]["name"].clone();
                        (
                            if named.is_null() {
                                scope.clone()
                            } else {
                                named
                            },
                            r,
                        )
                    })
                })
                .collect();
            let failed = results.iter().find(|(resource, r)| {
                r["policy"] == POLICY && r["result"] == "fail" && *resource == "privileged"
            });
            Ok::<_, anyhow::Error>(match failed {
                Some((_, result)) => Ok(Some(result.clone())),
                None => {
                    // Which step of Kyverno's pipeline is missing: the admission or
                    // background-scan report, or its aggregation into a PolicyReport.
                    let pending = ephemeral.list(&Default::default()).await?;
                    let sources: Vec<Value> = pending
                        .items
                        .iter()
                        .map(|r| json!([r.metadata.name, r.metadata.labels]))
                        .collect();
                    Err(format!(
                        "{} reports, results {results:?}; {} ephemeral reports {sources:?}",
                        list.items.len(),
                        pending.items.len()
                    ))
                }
            })
        },
    )
    .await
    .map_err(|e| anyhow!("{e}\n{}", logs_of(&mut started[1])))?;
    eprintln!(
        "PolicyReport after {:.1}s: {failed}",
        t.elapsed().as_secs_f64()
    );
    ensure!(
        failed["message"]
            .as_str()
            .is_some_and(|m| m.contains(MESSAGE)),
        "{failed}"
    );

    // Kyverno stopped in member1: its webhook configurations stay, their failurePolicy
    // Fail refuses Pods; objects its webhooks do not match are still admitted.
    started[0].stop().await?;
    ensure!(!started[0].is_running(), "Kyverno still running after stop");
    let refused = expect_refusal(
        &pods1,
        &pod("while-stopped", false)?,
        &["failed calling webhook", "connection refused"],
    )
    .await?;
    eprintln!("with Kyverno stopped: {refused}");
    let config_maps: Api<ConfigMap> = Api::namespaced(client1.clone(), "default");
    let cm = serde_json::from_value(json!({"metadata": {"name": "still-admitted"}}))?;
    config_maps
        .create(&PostParams::default(), &cm)
        .await
        .context("a ConfigMap is not matched by Kyverno's webhooks")?;
    ensure!(
        started[1].is_running(),
        "member2's Kyverno must be unaffected"
    );
    Ok(())
}

/// The log tails of a Kyverno's processes, for a failure message.
fn logs_of(kyverno: &mut Kyverno) -> String {
    kyverno
        .processes()
        .iter()
        .map(|p| {
            let log = std::fs::read_to_string(&p.log).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(30)..].join("\n");
            format!("--- {} ({}):\n{tail}", p.name, p.log.display())
        })
        .collect::<Vec<_>>()
        .join("\n")
}
