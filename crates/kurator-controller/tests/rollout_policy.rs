//! Staged rollout with the policy gate on real Kyverno (issue 12, docs/rollout.md "Gates"):
//! the brief's policy Fleet (pod security baseline, Audit) on two members, Kyverno installed by
//! real Flux from its real charts and run by [`KyvernoStandIn`] (as in `policy_kyverno.rs`),
//! and an Application from the git server with stages `canary` (member1, soak, `policy: true`)
//! then `rest`.
//!
//! v2, a compliant Deployment, passes the canary's policy gate and reaches member2. v3 runs a
//! privileged container: Kyverno (Audit) admits it and reports the failure from the canary,
//! the collector brings it to the Fleet's status before the soak ends, and the run pauses at
//! the canary with the policy reason; member2 stays on v2's pinned source and workload.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use crate::common::{
    Harness, NS, apply, kyverno,
    rollout::{ended, kustomizations, pinned, rollout},
    until, wait_for,
};
use k8s_openapi::api::{apps::v1::Deployment, events::v1::Event};
use kube::{Api, Client, api::ListParams};
use kurator_api::{
    Application, Fleet, conditions,
    policy_report::FleetPolicyReport,
    rollout::{ClusterRolloutState, GateOutcome, RunPhase},
};
use kurator_controller::rollout::{condition::reason, gates::POLICY_GATE, pinning::same_revision};
use kurator_testenv::GitServer;
use serde_json::json;

/// Installing Kyverno through Flux and Helm dominates (about 40 s on an idle machine).
const WAIT: Duration = Duration::from_secs(180);
const POLICY_FLEET: &str = include_str!("../../kurator-api/tests/fixtures/seed/fleet-policy.yaml");
const FLEET: &str = "quickstart-policy";
const MEMBERS: [&str; 2] = ["kurator-member1", "kurator-member2"];
const APP: &str = "shop";
const PRIVILEGED: &str = "disallow-privileged-containers";
/// Longer than Kyverno's report delay (about 12 s from the admitted request to the Fleet's
/// status, docs/testing.md "Kyverno"), so the gate is measured on reports of the new revision.
const SOAK: &str = "20s";

/// The workload at `version`; `privileged` breaks pod security baseline.
fn deployment(version: &str, privileged: bool) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata: {{name: {APP}, namespace: {NS}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {APP}}}}}
  template:
    metadata: {{labels: {{app: {APP}, version: {version}}}}}
    spec:
      containers:
        - name: app
          image: registry.k8s.io/pause:3.10
          securityContext: {{privileged: {privileged}}}
"
    )
}

fn application(url: &str) -> Application {
    serde_saphyr::from_str(&format!(
        "apiVersion: apps.kurator.dev/v1alpha1
kind: Application
metadata: {{name: {APP}, namespace: {NS}}}
spec:
  source:
    gitRepository: {{url: '{url}', interval: 2s, ref: {{branch: master}}}}
  destination: {{fleet: {FLEET}}}
  syncPolicies:
    - kustomization: {{interval: 1m, retryInterval: 2s, path: ./deploy, prune: true, wait: true, timeout: 30s}}
  stagedRollout:
    progressDeadline: 90s
    stages:
      - name: canary
        clusters: [kurator-member1]
        soak: {SOAK}
        gates: {{policy: true}}
      - name: rest
        rest: true
"
    ))
    .expect("application")
}

/// The brief's policy fleet over the two AttachedClusters, with the charts matching the
/// Kyverno binaries.
fn policy_fleet() -> Fleet {
    let brief: Fleet = serde_saphyr::from_str(POLICY_FLEET).unwrap();
    let mut value = serde_json::to_value(&brief).unwrap();
    value["spec"]["clusters"] = json!(
        MEMBERS
            .iter()
            .map(|name| json!({"name": name, "kind": "AttachedCluster"}))
            .collect::<Vec<_>>()
    );
    value["spec"]["plugin"]["policy"]["kyverno"]["chart"] = json!({"version": "3.2.0"});
    serde_json::from_value(value).unwrap()
}

fn rollout_condition(a: &Application) -> Option<(String, String)> {
    let c = conditions::find(&a.status.as_ref()?.conditions, "StagedRollout")?;
    Some((c.reason.clone(), c.message.clone()))
}

fn report(f: &Fleet) -> Option<&FleetPolicyReport> {
    f.status.as_ref()?.policy_report.as_ref()
}

/// Failed results the Fleet's status counts for `member` now, when its reports are current.
fn current_failures(f: &Fleet, member: &str) -> Option<i64> {
    let c = report(f)?.clusters.iter().find(|c| c.name == member)?;
    (!c.stale && c.message.is_none() && c.last_seen.is_some()).then_some(c.fail)
}

/// A member's workload: the version label of its Pod template and whether it is privileged.
async fn workload(member: &Client) -> Option<(String, bool)> {
    let d = Api::<Deployment>::namespaced(member.clone(), NS)
        .get_opt(APP)
        .await
        .ok()??;
    let template = d.spec?.template;
    let version = template.metadata?.labels?.get("version")?.clone();
    let privileged = template
        .spec?
        .containers
        .first()?
        .security_context
        .as_ref()?
        .privileged
        .unwrap_or(false);
    Some((version, privileged))
}

async fn wait_workloads(members: &[Client], want: [(&str, bool); 2]) {
    until(format!("member workloads at {want:?}"), WAIT, || async {
        let mut got = Vec::new();
        for m in members {
            got.push(workload(m).await);
        }
        let matches = got
            .iter()
            .zip(want)
            .all(|(g, (v, p))| g.as_ref().is_some_and(|(gv, gp)| gv == v && *gp == p));
        if matches {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    })
    .await
}

async fn wait_kustomizations(h: &Harness, want: [&str; 2]) {
    until(
        format!("Kustomizations on {want:?}, Ready"),
        WAIT,
        || async {
            let ks = kustomizations(h, &MEMBERS).await;
            if ks.iter().zip(want).all(|((s, ready), w)| s == w && *ready) {
                Ok(())
            } else {
                Err(format!("{ks:?}"))
            }
        },
    )
    .await
}

/// Events about the Application: (type, reason, note).
async fn events(h: &Harness) -> Vec<(String, String, String)> {
    Api::<Event>::namespaced(h.client.clone(), NS)
        .list(&ListParams::default().fields(&format!("regarding.name={APP}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|e| {
            let text = |s: Option<String>| s.unwrap_or_default();
            (text(e.type_), text(e.reason), text(e.note))
        })
        .collect()
}

#[tokio::test]
async fn policy_gate_passes_a_compliant_revision_and_pauses_a_privileged_one_at_the_canary() {
    let started = Instant::now();
    let kyverno::WithKyverno {
        h,
        mut stand_ins,
        charts: _charts,
        ..
    } = kyverno::start(&MEMBERS, WAIT).await;
    let members = h.member_clients().await;
    let git = GitServer::start(h.env.state_dir().join("git")).unwrap();
    let repo = git.create_repo(APP).unwrap();
    let v1 = repo
        .commit_files(&[("deploy/app.yaml", &deployment("v1", false))], "v1")
        .unwrap();

    // The fleet and the Application together: run 1 (a first deployment) goes on while Flux
    // installs Kyverno; its canary's policy gate waits for the reports to exist.
    let fleets: Api<Fleet> = h.api();
    apply(&fleets, FLEET, &policy_fleet()).await;
    // Once both are members, so that run 1's canary is not an empty stage.
    wait_for(&fleets, FLEET, WAIT, |f| {
        f.status.as_ref().is_some_and(|s| s.ready_clusters == 2)
    })
    .await;
    let apps: Api<Application> = h.api();
    apply(&apps, APP, &application(&repo.url())).await;
    for stand_in in &mut stand_ins {
        stand_in.wait_running(WAIT).await.expect("Kyverno runs");
    }
    eprintln!("[{:?}] Kyverno running in both members", started.elapsed());
    wait_for(&apps, APP, WAIT, |a| ended(a, 1, RunPhase::Succeeded, &v1)).await;
    wait_for(&fleets, FLEET, WAIT, |f| {
        MEMBERS.iter().all(|m| current_failures(f, m) == Some(0))
    })
    .await;
    eprintln!("[{:?}] run 1 (v1) succeeded", started.elapsed());

    // v2, compliant: the canary first (member2 stays on v1's pinned source), its policy gate
    // passes, then member2; run 2 succeeds.
    let v2 = repo
        .commit_files(&[("deploy/app.yaml", &deployment("v2", false))], "v2")
        .unwrap();
    wait_kustomizations(&h, [&pinned(&v2), &pinned(&v1)]).await;
    wait_workloads(&members, [("v2", false), ("v1", false)]).await;
    let a = wait_for(&apps, APP, WAIT, |a| ended(a, 2, RunPhase::Succeeded, &v2)).await;
    eprintln!("[{:?}] run 2 (v2) succeeded", started.elapsed());
    let canary = rollout(&a)
        .unwrap()
        .clusters
        .iter()
        .find(|c| c.name == MEMBERS[0])
        .cloned()
        .unwrap();
    assert_eq!(canary.policy_failures_at_start, Some(0), "{canary:?}");
    wait_workloads(&members, [("v2", false), ("v2", false)]).await;
    wait_kustomizations(&h, [&pinned(&v2), &pinned(&v2)]).await;
    let f = fleets.get(FLEET).await.unwrap();
    assert_eq!(
        current_failures(&f, MEMBERS[0]),
        Some(0),
        "{:?}",
        report(&f)
    );

    // v3 runs a privileged container: admitted (Audit), reported by Kyverno in the canary, and
    // the run pauses there with the policy reason; member2 keeps v2.
    let v3 = repo
        .commit_files(&[("deploy/app.yaml", &deployment("v3", true))], "v3")
        .unwrap();
    let committed = Instant::now();
    wait_workloads(&members, [("v3", true), ("v2", false)]).await;
    let f = wait_for(&fleets, FLEET, WAIT, |f| {
        current_failures(f, MEMBERS[0]).is_some_and(|n| n > 0)
    })
    .await;
    eprintln!(
        "[{:?}] Kyverno's failure for v3 in the Fleet's status {:?} after the commit",
        started.elapsed(),
        committed.elapsed()
    );
    let failing = report(&f).unwrap();
    let privileged = failing
        .top_failing
        .iter()
        .find(|p| p.policy == PRIVILEGED)
        .unwrap_or_else(|| panic!("{PRIVILEGED} failing: {failing:?}"));
    assert_eq!(privileged.clusters, [MEMBERS[0]], "{failing:?}");
    assert_eq!(current_failures(&f, MEMBERS[1]), Some(0), "{failing:?}");

    let a = wait_for(&apps, APP, WAIT, |a| {
        rollout_condition(a).is_some_and(|(why, _)| why == reason::GATE_FAILED)
    })
    .await;
    eprintln!(
        "[{:?}] run 3 paused {:?} after the commit",
        started.elapsed(),
        committed.elapsed()
    );
    let (_, condition_message) = rollout_condition(&a).unwrap();
    let state = rollout(&a).unwrap();
    let run = state.run.as_ref().expect("run 3 held, not ended");
    assert_eq!((run.id, run.phase), (3, RunPhase::Paused));
    assert_eq!(run.stage.name, "canary");
    assert!(same_revision(&run.to_revision, &format!("sha1:{v3}")));
    let paused = run.paused.as_ref().expect("why it paused");
    assert_eq!(paused.reason, reason::GATE_FAILED);
    let gate = run
        .stage
        .gates
        .iter()
        .find(|g| g.gate == POLICY_GATE)
        .expect("the policy gate's result");
    assert_eq!(gate.cluster.as_deref(), Some(MEMBERS[0]));
    assert_eq!(gate.outcome, GateOutcome::Failed, "{gate:?}");
    let new_failures = gate.value.expect("new failures counted");
    assert!(new_failures >= 1.0, "{gate:?}");
    let counted = format!(
        "{} new failed policy results since the cluster was updated",
        new_failures as i64
    );
    assert_eq!(gate.message.as_deref(), Some(counted.as_str()));
    let why = format!("policy on {}: {counted}", MEMBERS[0]);
    assert!(paused.message.contains(&why), "{paused:?}");
    assert!(condition_message.contains(&why), "{condition_message}");
    let clusters: Vec<(&str, ClusterRolloutState, bool)> = state
        .clusters
        .iter()
        .map(|c| {
            let at = |sha: &str| {
                c.revision
                    .as_deref()
                    .is_some_and(|r| same_revision(r, &format!("sha1:{sha}")))
            };
            let on_own = if c.name == MEMBERS[0] {
                at(&v3)
            } else {
                at(&v2)
            };
            (c.name.as_str(), c.state, on_own)
        })
        .collect();
    assert_eq!(
        clusters,
        [
            (MEMBERS[0], ClusterRolloutState::Failed, true),
            (MEMBERS[1], ClusterRolloutState::Pending, true),
        ]
    );
    // The later stage stays on v2: its Kustomization on v2's pinned source, Ready, and its
    // workload unchanged.
    assert_eq!(
        kustomizations(&h, &MEMBERS).await,
        [(pinned(&v3), true), (pinned(&v2), true)]
    );
    assert_eq!(workload(&members[1]).await, Some(("v2".into(), false)));
    until(
        "a Warning GateFailed Event naming the policy failures",
        WAIT,
        || async {
            let warned: BTreeSet<(String, String, String)> = events(&h)
                .await
                .into_iter()
                .filter(|(_, why, _)| why == reason::GATE_FAILED)
                .collect();
            if warned
                .iter()
                .any(|(type_, _, note)| type_ == "Warning" && note.contains(&why))
            {
                Ok(())
            } else {
                Err(format!("{warned:?}"))
            }
        },
    )
    .await;

    for stand_in in stand_ins {
        stand_in.stop().await;
    }
    h.shutdown().await;
    eprintln!("[{:?}] done", started.elapsed());
}
