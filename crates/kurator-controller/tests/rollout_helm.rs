//! Staged rollouts of Helm charts (docs/rollout.md, "Revision pinning"): real Flux (source
//! and helm controllers), two members, stages `canary` (by name, with an approval gate) then
//! `rest`.
//! - A chart kept in git: each member's HelmRelease takes its chart from the GitRepository
//!   pinned to its revision; with `reconcileStrategy: Revision` Flux puts the commit into the
//!   chart version, which the controller checks against the pinned revision.
//! - A chart from a Helm repository: the revision is a chart version, told by the tracking
//!   HelmChart `<app>-track`; each HelmRelease is pinned by `chart.spec.version`.

use std::time::Duration;

use crate::common::{
    Harness, apply, ready_reason,
    rollout::{ended, ended_at, rollout_reason, wait_members},
    until, wait_for,
};
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use kurator_api::{
    Application,
    flux::{GitRepository, HelmRelease},
    rollout::{RunPhase, StagePhase, annotation},
};
use kurator_controller::rollout::observe::promote_token;

const WAIT: Duration = Duration::from_secs(60);
const MEMBERS: [&str; 2] = ["kurator-member1", "kurator-member2"];

/// The chart's files at `value` (the ConfigMap the release installs says it).
fn chart(value: &str) -> [(&'static str, String); 2] {
    [
        (
            "charts/greeter/Chart.yaml",
            "apiVersion: v2\nname: greeter\nversion: 0.1.0\ntype: application\n".into(),
        ),
        (
            "charts/greeter/templates/cm.yaml",
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: greeter\n  namespace: default\ndata:\n  version: {value}\n"
            ),
        ),
    ]
}

fn commit(repo: &kurator_testenv::GitRepo, value: &str) -> String {
    let files = chart(value);
    let files: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
    repo.commit_files(&files, value).unwrap()
}

fn application(url: &str, gates: &str) -> Application {
    serde_saphyr::from_str(&format!(
        "apiVersion: apps.kurator.dev/v1alpha1
kind: Application
metadata: {{name: greeter, namespace: default}}
spec:
  source:
    gitRepository: {{url: '{url}', interval: 2s, ref: {{branch: master}}}}
  destination: {{fleet: quickstart}}
  syncPolicies:
    - helm:
        interval: 1m
        chart:
          spec: {{chart: ./charts/greeter, reconcileStrategy: Revision, interval: 2s}}
        install: {{disableWait: true}}
        upgrade: {{disableWait: true}}
  stagedRollout:
    progressDeadline: 45s
    stages:
      - name: canary
        clusters: [kurator-member1]
        soak: 2s{gates}
      - name: rest
        rest: true
"
    ))
    .expect("application")
}

fn pinned(sha: &str) -> String {
    format!("greeter-r-{}", &sha[..10])
}

/// Each member's HelmRelease: the GitRepository its chart comes from, and whether it is Ready
/// at its generation.
async fn releases(h: &Harness) -> Vec<(String, bool)> {
    release_charts(h, |chart| chart.source_ref.name).await
}

/// Each member's HelmRelease: `what` of its chart, and whether it is Ready at its generation.
async fn release_charts(
    h: &Harness,
    what: impl Fn(kurator_api::flux::HelmChartTemplateSpec) -> String,
) -> Vec<(String, bool)> {
    let api: Api<HelmRelease> = h.api();
    let mut out = Vec::new();
    for member in MEMBERS {
        let name = format!("greeter-0-attachedcluster-{member}");
        let Some(hr) = api.get_opt(&name).await.expect("get") else {
            out.push((String::new(), false));
            continue;
        };
        let ready =
            kurator_api::flux::readiness(hr.metadata.generation, hr.status.as_ref()).is_ready();
        let source = hr.spec.chart.map(|c| what(c.spec)).unwrap_or_default();
        out.push((source, ready));
    }
    out
}

#[tokio::test]
async fn a_git_chart_reaches_the_canary_then_after_approval_the_rest() {
    let h = Harness::start_with(2, Duration::from_secs(10), true).await;
    let git = kurator_testenv::GitServer::start(h.env.state_dir().join("git")).unwrap();
    let repo = git.create_repo("greeter").unwrap();
    let v1 = commit(&repo, "v1");
    h.attach_quickstart(&MEMBERS, WAIT).await;
    let clients = h.member_clients().await;

    // Run 1, a first deployment: the canary, then the rest; v1 becomes stable.
    let apps: Api<Application> = h.api();
    apply(&apps, "greeter", &application(&repo.url(), "")).await;
    wait_for(&apps, "greeter", WAIT, |a| {
        ended(a, 1, RunPhase::Succeeded, &v1)
    })
    .await;
    wait_members(&clients, "greeter", &["v1", "v1"]).await;

    // Run 2 with an approval gate: v2 reaches the canary only; member2's release stays on
    // v1's pinned source, Ready (Flux keeps reconciling it), so the Application is not Ready.
    apply(
        &apps,
        "greeter",
        &application(&repo.url(), "\n        gates: {approval: true}"),
    )
    .await;
    let v2 = commit(&repo, "v2");
    let a = wait_for(&apps, "greeter", WAIT, |a| {
        rollout_reason(a).as_deref() == Some("AwaitingApproval")
    })
    .await;
    wait_members(&clients, "greeter", &["v2", "v1"]).await;
    until("the canary alone on v2", WAIT, || async {
        let got = releases(&h).await;
        let want = [(pinned(&v2), true), (pinned(&v1), true)];
        if got == want {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    })
    .await;
    let state = a.status.as_ref().unwrap().staged_rollout.clone().unwrap();
    let run = state.run.expect("run 2 in progress");
    assert_eq!((run.id, run.stage.phase), (2, StagePhase::AwaitingApproval));
    let git_repos: Api<GitRepository> = h.api();
    let pin = git_repos.get(&pinned(&v2)).await.unwrap();
    assert_eq!(
        pin.spec.reference.and_then(|r| r.commit).as_deref(),
        Some(v2.as_str())
    );
    // Flux built the canary's chart from v2's commit: the version carries it.
    let canary: Api<HelmRelease> = h.api();
    let canary = canary
        .get("greeter-0-attachedcluster-kurator-member1")
        .await
        .unwrap();
    let version = canary
        .status
        .and_then(|s| s.last_attempted_revision)
        .unwrap_or_default();
    assert_eq!(version, format!("0.1.0+{}", &v2[..12]));
    let a = wait_for(&apps, "greeter", WAIT, |a| {
        a.status
            .as_ref()
            .is_some_and(|s| ready_reason(&s.conditions).as_deref() == Some("NotSynced"))
    })
    .await;
    let member2 = a.status.unwrap().clusters;
    let member2 = member2
        .iter()
        .find(|c| c.cluster == "kurator-member2")
        .expect("member2's entry");
    assert_eq!(member2.reason.as_deref(), Some("OutdatedRevision"));

    // Approved: the rest gets v2, the run succeeds and the Application is Ready again.
    let token = promote_token(run.id, "canary", "e2e");
    let patch = serde_json::json!({"metadata": {"annotations": {annotation::PROMOTE: token}}});
    apps.patch("greeter", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_for(&apps, "greeter", WAIT, |a| {
        ended(a, 2, RunPhase::Succeeded, &v2)
    })
    .await;
    wait_members(&clients, "greeter", &["v2", "v2"]).await;
    wait_for(&apps, "greeter", WAIT, |a| {
        a.status
            .as_ref()
            .is_some_and(|s| ready_reason(&s.conditions).as_deref() == Some("AllClustersSynced"))
    })
    .await;
    assert_eq!(
        releases(&h).await,
        [(pinned(&v2), true), (pinned(&v2), true)]
    );
    h.shutdown().await;
}

fn greeter(value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: greeter\n  namespace: default\ndata:\n  version: {value}\n"
    )
}

fn repository_application(url: &str, gates: &str) -> Application {
    serde_saphyr::from_str(&format!(
        "apiVersion: apps.kurator.dev/v1alpha1
kind: Application
metadata: {{name: greeter, namespace: default}}
spec:
  source:
    helmRepository: {{url: '{url}', interval: 2s}}
  destination: {{fleet: quickstart}}
  syncPolicies:
    - helm:
        interval: 1m
        chart:
          spec: {{chart: greeter, version: '>=0.1.0', interval: 2s}}
        install: {{disableWait: true}}
        upgrade: {{disableWait: true}}
  stagedRollout:
    progressDeadline: 45s
    stages:
      - name: canary
        clusters: [kurator-member1]
        soak: 2s{gates}
      - name: rest
        rest: true
"
    ))
    .expect("application")
}

#[tokio::test]
async fn a_helm_repository_chart_version_reaches_the_canary_then_after_approval_the_rest() {
    let h = Harness::start_with(2, Duration::from_secs(10), true).await;
    let charts = kurator_testenv::HelmRepo::start(h.env.state_dir().join("charts")).unwrap();
    charts
        .add_chart("greeter", "0.1.0", &[("templates/cm.yaml", &greeter("v1"))])
        .unwrap();
    h.attach_quickstart(&MEMBERS, WAIT).await;
    let clients = h.member_clients().await;

    // Run 1, a first deployment of 0.1.0 (the only version in range).
    let apps: Api<Application> = h.api();
    apply(&apps, "greeter", &repository_application(&charts.url(), "")).await;
    wait_for(&apps, "greeter", WAIT, |a| {
        ended_at(a, 1, RunPhase::Succeeded, |r| r == "0.1.0")
    })
    .await;
    wait_members(&clients, "greeter", &["v1", "v1"]).await;
    let tracking: Api<kurator_api::flux::HelmChart> = h.api();
    let tracking = tracking.get("greeter-track").await.unwrap();
    assert_eq!(tracking.spec.version.as_deref(), Some(">=0.1.0"));

    // 0.2.0 published: run 2 pins the canary to it, member2 stays on 0.1.0, Ready.
    apply(
        &apps,
        "greeter",
        &repository_application(&charts.url(), "\n        gates: {approval: true}"),
    )
    .await;
    charts
        .add_chart("greeter", "0.2.0", &[("templates/cm.yaml", &greeter("v2"))])
        .unwrap();
    let a = wait_for(&apps, "greeter", WAIT, |a| {
        rollout_reason(a).as_deref() == Some("AwaitingApproval")
    })
    .await;
    wait_members(&clients, "greeter", &["v2", "v1"]).await;
    let versions =
        |chart: kurator_api::flux::HelmChartTemplateSpec| chart.version.unwrap_or_default();
    assert_eq!(
        release_charts(&h, versions).await,
        [("0.2.0".to_string(), true), ("0.1.0".to_string(), true)]
    );
    let run = a
        .status
        .unwrap()
        .staged_rollout
        .unwrap()
        .run
        .expect("run 2");
    assert_eq!((run.id, run.to_revision.as_str()), (2, "0.2.0"));

    // Approved: the rest gets 0.2.0.
    let token = promote_token(run.id, "canary", "e2e");
    let patch = serde_json::json!({"metadata": {"annotations": {annotation::PROMOTE: token}}});
    apps.patch("greeter", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_for(&apps, "greeter", WAIT, |a| {
        ended_at(a, 2, RunPhase::Succeeded, |r| r == "0.2.0")
    })
    .await;
    wait_members(&clients, "greeter", &["v2", "v2"]).await;
    wait_for(&apps, "greeter", WAIT, |a| {
        a.status
            .as_ref()
            .is_some_and(|s| ready_reason(&s.conditions).as_deref() == Some("AllClustersSynced"))
    })
    .await;
    h.shutdown().await;
}
