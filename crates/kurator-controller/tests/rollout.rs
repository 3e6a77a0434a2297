//! Staged rollout end to end (issue 12, docs/rollout.md): real Flux and the git server, three
//! members, stages `canary` (by name) then `rest`. A new commit reaches the canary first, pinned
//! by its own GitRepository, while the other members stay on the previous commit and stay Ready
//! (no suspend: Flux keeps reconciling them); after the soak every member gets it. With an
//! approval gate the run holds until the promote annotation names its stage.

use std::{collections::BTreeSet, time::Duration};

use crate::common::{
    Harness, apply,
    rollout::{ended, kustomizations, pinned, rollout_reason, wait_members},
    until, wait_for,
};
use k8s_openapi::api::events::v1::Event;
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams},
};
use kurator_api::{
    Application,
    flux::GitRepository,
    rollout::{RunPhase, StagePhase, annotation},
};
use kurator_controller::rollout::{observe::promote_token, pinning::same_revision};

const WAIT: Duration = Duration::from_secs(60);
const MEMBERS: [&str; 3] = ["kurator-member1", "kurator-member2", "kurator-member3"];

fn configmap(value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: shop\n  namespace: default\ndata:\n  version: {value}\n"
    )
}

/// The canary stage's gates, as YAML.
const NO_GATES: &str = "";
const APPROVAL: &str = "\n        gates: {approval: true}";
/// A metric gate: no metric plugin runs here, so Thanos Query cannot be found and the gate
/// fails with that reason.
const METRIC: &str = "\n        gates: {metrics: [{name: error-rate, query: 'sum(rate(http_errors_total{cluster=\"$cluster\"}[1m]))', comparison: '<', threshold: 0.05}]}";

fn application(url: &str, gates: &str) -> Application {
    serde_saphyr::from_str(&format!(
        "apiVersion: apps.kurator.dev/v1alpha1
kind: Application
metadata: {{name: shop, namespace: default}}
spec:
  source:
    gitRepository: {{url: '{url}', interval: 2s, ref: {{branch: master}}}}
  destination: {{fleet: quickstart}}
  syncPolicies:
    - kustomization: {{interval: 1m, retryInterval: 2s, path: ./deploy, prune: true, wait: true, timeout: 30s}}
  stagedRollout:
    progressDeadline: 45s
    stages:
      - name: canary
        clusters: [kurator-member1]
        soak: 5s{gates}
      - name: rest
        rest: true
"
    ))
    .expect("application")
}

#[tokio::test]
async fn canary_first_then_the_rest_after_soak_then_an_approval_gate() {
    let h = Harness::start_with(3, Duration::from_secs(10), true).await;
    let git = kurator_testenv::GitServer::start(h.env.state_dir().join("git")).unwrap();
    let repo = git.create_repo("shop").unwrap();
    let v1 = repo
        .commit_files(&[("deploy/cm.yaml", &configmap("v1"))], "v1")
        .unwrap();
    h.attach_quickstart(&MEMBERS, WAIT).await;
    let clients = h.member_clients().await;

    // Run 1, a first deployment: canary, soak, then the rest; v1 becomes stable.
    let apps: Api<Application> = h.api();
    apply(&apps, "shop", &application(&repo.url(), NO_GATES)).await;
    wait_for(&apps, "shop", WAIT, |a| {
        ended(a, 1, RunPhase::Succeeded, &v1)
    })
    .await;
    wait_members(&clients, "shop", &["v1", "v1", "v1"]).await;

    // Run 2: v2 reaches the canary only; the others stay on v1's pinned source, Ready.
    let v2 = repo
        .commit_files(&[("deploy/cm.yaml", &configmap("v2"))], "v2")
        .unwrap();
    until("the canary alone on v2", WAIT, || async {
        let ks = kustomizations(&h, &MEMBERS).await;
        let want = [
            (pinned(&v2), true),
            (pinned(&v1), true),
            (pinned(&v1), true),
        ];
        if ks == want {
            Ok(())
        } else {
            Err(format!("{ks:?}"))
        }
    })
    .await;
    wait_members(&clients, "shop", &["v2", "v1", "v1"]).await;
    let a = apps.get("shop").await.unwrap();
    let state = a.status.as_ref().unwrap().staged_rollout.clone().unwrap();
    let run = state.run.expect("run 2 in progress");
    assert_eq!((run.id, run.stage.name.as_str()), (2, "canary"));
    let git_repos: Api<GitRepository> = h.api();
    let pin = git_repos.get(&pinned(&v2)).await.unwrap();
    assert_eq!(
        pin.spec.reference.and_then(|r| r.commit).as_deref(),
        Some(v2.as_str())
    );
    // After the soak: all on v2, run 2 in history, Succeeded.
    wait_for(&apps, "shop", WAIT, |a| {
        ended(a, 2, RunPhase::Succeeded, &v2)
    })
    .await;
    wait_members(&clients, "shop", &["v2", "v2", "v2"]).await;
    assert_eq!(
        rollout_reason(&apps.get("shop").await.unwrap()).as_deref(),
        Some("Succeeded")
    );

    // Run 3 with an approval gate on the canary: held until promote names run 3's canary.
    apply(&apps, "shop", &application(&repo.url(), APPROVAL)).await;
    let v3 = repo
        .commit_files(&[("deploy/cm.yaml", &configmap("v3"))], "v3")
        .unwrap();
    let a = wait_for(&apps, "shop", WAIT, |a| {
        rollout_reason(a).as_deref() == Some("AwaitingApproval")
    })
    .await;
    let run = a.status.unwrap().staged_rollout.unwrap().run.unwrap();
    assert_eq!(run.stage.phase, StagePhase::AwaitingApproval);
    wait_members(&clients, "shop", &["v3", "v2", "v2"]).await;
    let token = promote_token(run.id, "canary", "e2e");
    let patch = serde_json::json!({"metadata": {"annotations": {annotation::PROMOTE: token}}});
    apps.patch("shop", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_for(&apps, "shop", WAIT, |a| {
        ended(a, 3, RunPhase::Succeeded, &v3)
    })
    .await;
    wait_members(&clients, "shop", &["v3", "v3", "v3"]).await;
    // v1 is no longer in use (not stable, not the last run's from: undo's target): pruned.
    until("v1's pinned source pruned", WAIT, || async {
        git_repos.get_opt(&pinned(&v1)).await.unwrap().is_none()
    })
    .await;

    // Every transition was announced on the Application.
    let events: Api<Event> = h.api();
    let reasons: BTreeSet<String> = events
        .list(&ListParams::default().fields("regarding.name=shop"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    for reason in [
        "RolloutStarted",
        "ClusterUpdating",
        "StageSoaking",
        "StagePromoted",
        "ApprovalRequired",
        "RolloutSucceeded",
    ] {
        assert!(reasons.contains(reason), "no {reason} Event in {reasons:?}");
    }

    // Run 4 with a metric gate on the canary: measured after the soak; Thanos Query cannot be
    // found, so the gate fails with that reason and the run pauses, the rest stay on v3.
    apply(&apps, "shop", &application(&repo.url(), METRIC)).await;
    let v4 = repo
        .commit_files(&[("deploy/cm.yaml", &configmap("v4"))], "v4")
        .unwrap();
    let a = wait_for(&apps, "shop", WAIT, |a| {
        rollout_reason(a).as_deref() == Some("GateFailed")
    })
    .await;
    let run = a.status.unwrap().staged_rollout.unwrap().run.unwrap();
    assert_eq!((run.id, run.phase), (4, RunPhase::Paused));
    let gate = run
        .stage
        .gates
        .iter()
        .find(|g| g.gate == "error-rate")
        .expect("the metric gate's result");
    assert_eq!(gate.cluster.as_deref(), Some("kurator-member1"));
    assert_eq!(gate.outcome, kurator_api::rollout::GateOutcome::Failed);
    assert!(
        gate.message.as_deref().is_some_and(
            |m| m.contains("Thanos Query Service default/default-thanos-query not found")
        ),
        "{gate:?}"
    );
    assert_eq!(gate.threshold, Some(0.05));
    wait_members(&clients, "shop", &["v4", "v3", "v3"]).await;
    let ks = kustomizations(&h, &MEMBERS).await;
    assert_eq!(
        ks,
        [
            (pinned(&v4), true),
            (pinned(&v3), true),
            (pinned(&v3), true)
        ]
    );

    // A commit during the (paused) run supersedes it: run 5 from the stable v3 to v5 starts at
    // the canary (a pause by failure is not handed on), the others stay on v3.
    let v5 = repo
        .commit_files(&[("deploy/cm.yaml", &configmap("v5"))], "v5")
        .unwrap();
    let a = wait_for(&apps, "shop", WAIT, |a| {
        let state = a.status.as_ref().and_then(|s| s.staged_rollout.as_ref());
        state
            .and_then(|s| s.run.as_ref())
            .is_some_and(|r| r.id == 5)
    })
    .await;
    let state = a.status.unwrap().staged_rollout.unwrap();
    let superseded = &state.history[0];
    assert_eq!((superseded.id, superseded.phase), (4, RunPhase::Superseded));
    let run = state.run.unwrap();
    assert!(same_revision(
        run.from_revision.as_deref().unwrap(),
        &format!("sha1:{v3}")
    ));
    assert!(same_revision(&run.to_revision, &format!("sha1:{v5}")));
    assert_eq!(run.stage.name, "canary");
    wait_members(&clients, "shop", &["v5", "v3", "v3"]).await;
    assert_eq!(kustomizations(&h, &MEMBERS).await[0].0, pinned(&v5));
}
