//! A staged rollout survives SIGKILLs of the real `kurator controller` (issue 12,
//! docs/rollout.md "Controller restart"): real Flux, the git server, three members, stages
//! `canary` (approval gate, soak) then `rest` (soak). Killed while the canary awaits approval,
//! the restarted controller does not skip the gate; `kurator rollout promote` (the binary)
//! lets the run go on; killed in the middle of the rest's soak, the restarted controller
//! neither restarts nor skips the soak. Each member's Kustomization moves to v2 once, each
//! stage is promoted once (one Event), and run 2 is in the history once.

mod common;

use std::{collections::BTreeMap, time::Duration};

use common::{
    Run,
    controller::{Controller, sample_sum},
    run,
};
use k8s_openapi::{
    ByteString,
    api::{
        core::v1::{ConfigMap, Secret},
        events::v1::Event,
    },
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    Api, Client, Resource,
    api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use kurator_api::{
    Application, AttachedCluster, Fleet,
    cluster::{AttachedClusterSpec, SecretKeyRef},
    fleet::{ClusterKind, FleetCluster, FleetSpec},
    flux::Kustomization,
    rollout::{RunPhase, StagePhase, StagedRolloutStatus, annotation},
};
use kurator_controller::rollout::{observe::promote_token, pinning::same_revision};
use kurator_testenv::{GitServer, TestEnv};
use tokio::process::Command;

const KURATOR: &str = env!("CARGO_BIN_EXE_kurator");
const NS: &str = "default";
const WAIT: Duration = Duration::from_secs(60);
const MEMBERS: [&str; 3] = ["kurator-member1", "kurator-member2", "kurator-member3"];
/// The rest stage's soak: long enough to kill the controller in its middle, keep it down a
/// while and still restart it well before the soak ends.
const REST_SOAK: SignedDuration = SignedDuration::from_secs(15);
/// How far into the rest's soak the controller is killed, and how long it stays down.
const KILL_INTO_SOAK: SignedDuration = SignedDuration::from_secs(3);
const DOWN: Duration = Duration::from_secs(3);

fn configmap(value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: shop\n  namespace: default\ndata:\n  version: {value}\n"
    )
}

/// Application `shop` over fleet `quickstart`: `canary` (kurator-member1) then `rest`, with
/// the stages' extra YAML (gates, soak) as given. Flux re-checks each Kustomization every 5 s,
/// more often than the rest soaks, as with any soak longer than the sync interval: those
/// routine passes (`Ready` Unknown for a moment) must not restart a soak.
fn application(url: &str, canary: &str, rest: &str) -> serde_json::Value {
    serde_saphyr::from_str(&format!(
        "apiVersion: apps.kurator.dev/v1alpha1
kind: Application
metadata: {{name: shop, namespace: default}}
spec:
  source:
    gitRepository: {{url: '{url}', interval: 2s, ref: {{branch: master}}}}
  destination: {{fleet: quickstart}}
  syncPolicies:
    - kustomization: {{interval: 5s, retryInterval: 2s, path: ./deploy, prune: true, wait: true, timeout: 30s}}
  stagedRollout:
    progressDeadline: 45s
    stages:
      - name: canary
        clusters: [kurator-member1]{canary}
      - name: rest
        rest: true{rest}
"
    ))
    .expect("application")
}

fn kustomization_name(member: &str) -> String {
    format!("shop-0-attachedcluster-{member}")
}

fn pinned(sha: &str) -> String {
    format!("shop-r-{}", &sha[..10])
}

async fn kurator(args: &[&str]) -> Run {
    let mut command = Command::new(KURATOR);
    command.args(args).env_remove("KUBECONFIG");
    run(&mut command, &format!("kurator {args:?}"), WAIT).await
}

/// Each member's Kustomization as (sourceRef name, generation). Not its readiness: Flux's
/// periodic reconcile makes it Unknown for a moment, any time.
async fn kustomizations(client: &Client) -> Vec<(String, i64)> {
    let api: Api<Kustomization> = Api::namespaced(client.clone(), NS);
    let mut out = Vec::new();
    for member in MEMBERS {
        let k = api.get(&kustomization_name(member)).await.expect("get");
        let generation = k.metadata.generation.unwrap_or_default();
        out.push((k.spec.source_ref.name.clone(), generation));
    }
    out
}

/// Waits until the members' ConfigMaps hold `want` (by member, in order).
async fn wait_members(clients: &[Client], want: [&str; 3]) {
    until(format!("members at {want:?}"), WAIT, || async {
        let mut got = Vec::new();
        for c in clients {
            let cms: Api<ConfigMap> = Api::namespaced(c.clone(), NS);
            let value = cms.get_opt("shop").await.ok().flatten();
            got.push(value.and_then(|cm| cm.data?.get("version").cloned()));
        }
        if got.iter().map(|v| v.as_deref().unwrap_or("")).eq(want) {
            Ok(())
        } else {
            Err(format!("members hold {got:?}"))
        }
    })
    .await
}

async fn until<F, Fut, O>(what: impl std::fmt::Display, timeout: Duration, check: F) -> O::Value
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = O>,
    O: kurator_testenv::wait::Observation,
{
    kurator_testenv::wait::until(what, timeout, check)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Polls shop's `status.stagedRollout` until `check` returns a value.
async fn wait_rollout<T>(
    apps: &Api<Application>,
    what: &str,
    timeout: Duration,
    check: impl Fn(&StagedRolloutStatus) -> Option<T>,
) -> T {
    until(what, timeout, || async {
        let app = apps.get("shop").await.expect("get shop");
        let state = app.status.and_then(|s| s.staged_rollout);
        match state.as_ref().and_then(&check) {
            Some(value) => Ok(Some(value)),
            None => Err(format!(
                "\n{}",
                serde_saphyr::to_string(&state).unwrap_or_default()
            )),
        }
    })
    .await
}

/// The last run is `id`, Succeeded, and the stable revision is `sha`'s.
fn succeeded(state: &StagedRolloutStatus, id: i64, sha: &str) -> bool {
    state.run.is_none()
        && state
            .history
            .first()
            .is_some_and(|h| h.id == id && h.phase == RunPhase::Succeeded)
        && state
            .stable_revision
            .as_deref()
            .is_some_and(|r| same_revision(r, &format!("sha1:{sha}")))
}

/// A line of `text` whose first words are `cells`, the revision cell ending in `sha1:<7>`.
fn has_cluster_row(text: &str, stage: &str, cluster: &str, sha: &str, state: &str) -> bool {
    let revision = format!("sha1:{}", &sha[..7]);
    text.lines().any(|l| {
        let words: Vec<&str> = l.split_whitespace().collect();
        words.len() >= 4
            && words[0] == stage
            && words[1] == cluster
            && words[2].ends_with(&revision)
            && words[3] == state
    })
}

/// Occurrences of Events about shop with `reason` whose note starts with `note` (a repeat
/// within one process is one Event with a series count; one per process is a new Event).
async fn events(client: &Client, reason: &str, note: &str) -> i32 {
    let api: Api<Event> = Api::namespaced(client.clone(), NS);
    api.list(&ListParams::default().fields("regarding.name=shop"))
        .await
        .expect("list events")
        .items
        .iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter(|e| e.note.as_deref().is_some_and(|n| n.starts_with(note)))
        .map(|e| e.series.as_ref().map_or(1, |s| s.count))
        .sum()
}

/// Reconciles of Applications the controller finished without an error.
async fn clean_app_reconciles(controller: &Controller) -> Option<f64> {
    let text = controller.metrics().await?;
    let label = r#"controller="application""#;
    let finished = sample_sum(&text, "kurator_reconcile_duration_seconds_count", label);
    let failed = sample_sum(&text, "kurator_reconcile_errors_total", label);
    Some(finished - failed)
}

async fn attach(client: &Client, env: &TestEnv) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let clusters: Api<AttachedCluster> = Api::namespaced(client.clone(), NS);
    for (name, member) in MEMBERS.iter().zip(env.members()) {
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(
                "value".to_string(),
                ByteString(member.kubeconfig_yaml().into_bytes()),
            )])),
            ..Default::default()
        };
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
        let spec = AttachedClusterSpec {
            kubeconfig: SecretKeyRef {
                name: name.to_string(),
                key: "value".into(),
            },
        };
        clusters
            .create(&PostParams::default(), &AttachedCluster::new(name, spec))
            .await
            .unwrap();
    }
    let fleet = Fleet::new(
        "quickstart",
        FleetSpec {
            clusters: MEMBERS
                .iter()
                .map(|m| FleetCluster {
                    name: m.to_string(),
                    kind: ClusterKind::AttachedCluster,
                })
                .collect(),
            plugin: None,
        },
    );
    Api::<Fleet>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &fleet)
        .await
        .unwrap();
}

async fn apply_app(apps: &Api<Application>, app: &serde_json::Value) {
    apps.patch(
        "shop",
        &PatchParams::apply("test").force(),
        &Patch::Apply(app),
    )
    .await
    .expect("apply shop");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_at_approval_and_mid_soak_neither_skips_nor_repeats_a_stage() {
    kurator_cli::install_crypto_provider();
    let started = std::time::Instant::now();
    let env = TestEnv::builder()
        .members(3)
        .flux(true)
        .crds(vec![kurator_api::crds::all_yaml()])
        .start()
        .await
        .expect("test environment starts");
    let client = env.host().client().await.unwrap();
    let kubeconfig = env.host().kubeconfig_path().to_path_buf();
    let kubeconfig_arg = kubeconfig.display().to_string();
    let log = env
        .state_dir()
        .join("logs")
        .join("controller-under-test.log");
    let git = GitServer::start(env.state_dir().join("git")).unwrap();
    let repo = git.create_repo("shop").unwrap();
    let v1 = repo
        .commit_files(&[("deploy/cm.yaml", &configmap("v1"))], "v1")
        .unwrap();
    let mut clients = Vec::new();
    for m in env.members() {
        clients.push(m.client().await.unwrap());
    }
    attach(&client, &env).await;
    let controller = Controller::start(&kubeconfig, &log);
    let fleets: Api<Fleet> = Api::namespaced(client.clone(), NS);
    until("the fleet ready", WAIT, || async {
        let fleet = fleets.get("quickstart").await.unwrap();
        fleet.status.is_some_and(|s| s.ready_clusters == 3)
    })
    .await;
    eprintln!("{:?}: environment and fleet ready", started.elapsed());

    // Run 1, a first deployment without gates or soaks: v1 becomes stable everywhere.
    let apps: Api<Application> = Api::namespaced(client.clone(), NS);
    apply_app(&apps, &application(&repo.url(), "", "")).await;
    wait_rollout(&apps, "run 1 succeeded", WAIT, |s| {
        succeeded(s, 1, &v1).then_some(())
    })
    .await;
    wait_members(&clients, ["v1", "v1", "v1"]).await;
    // The gates of run 2: the canary soaks and waits for approval, the rest soaks.
    let gated = application(
        &repo.url(),
        "\n        soak: 2s\n        gates: {approval: true}",
        &format!("\n        soak: {}s", REST_SOAK.as_secs()),
    );
    apply_app(&apps, &gated).await;
    until("the gated spec observed", WAIT, || async {
        let app = apps.get("shop").await.unwrap();
        let generation = app.meta().generation;
        app.status
            .is_some_and(|s| s.observed_generation == generation)
    })
    .await;
    let before = kustomizations(&client).await;
    assert!(
        before.iter().all(|(source, _)| *source == pinned(&v1)),
        "{before:?}"
    );
    eprintln!("{:?}: run 1 done", started.elapsed());

    // Run 2: v2 reaches the canary, which soaks, then awaits approval.
    let v2 = repo
        .commit_files(&[("deploy/cm.yaml", &configmap("v2"))], "v2")
        .unwrap();
    wait_rollout(&apps, "run 2 awaiting approval", WAIT, |s| {
        let run = s.run.as_ref()?;
        (run.id == 2 && run.stage.phase == StagePhase::AwaitingApproval).then_some(())
    })
    .await;
    wait_members(&clients, ["v2", "v1", "v1"]).await;
    eprintln!("{:?}: run 2 awaiting approval", started.elapsed());

    // Kill #1 while the canary awaits approval. While the controller is down, a stale promote
    // (naming run 1's canary, as typed while looking at an old status) is written: the
    // restarted controller must record it as handled, which only its rollout step does.
    controller.kill();
    let stale = promote_token(1, "canary", "stale");
    let patch = serde_json::json!({"metadata": {"annotations": {annotation::PROMOTE: stale}}});
    apps.patch("shop", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let controller = Controller::start(&kubeconfig, &log);
    until(
        "the restarted controller to finish an Application reconcile",
        WAIT,
        || async {
            clean_app_reconciles(&controller)
                .await
                .is_some_and(|n| n >= 1.0)
        },
    )
    .await;
    let state = wait_rollout(&apps, "the stale promote handled", WAIT, |s| {
        (s.handled_requests.get("promote") == Some(&stale)).then(|| s.clone())
    })
    .await;
    // The gate held: still run 2's canary awaiting approval, no approval recorded, the rest on
    // v1 (their Kustomizations not even rewritten).
    let run = state.run.as_ref().expect("run 2 in progress");
    assert_eq!(
        (run.id, run.stage.name.as_str(), run.stage.phase),
        (2, "canary", StagePhase::AwaitingApproval)
    );
    assert!(
        !run.stage.gates.iter().any(|g| g.gate == "approval"),
        "{:?}",
        run.stage.gates
    );
    assert!(
        events(
            &client,
            "RequestIgnored",
            "promote ignored: it names 1/canary/stale"
        )
        .await
            >= 1
    );
    let now = kustomizations(&client).await;
    assert_eq!(now[0].0, pinned(&v2));
    assert_eq!(
        now[1..],
        before[1..],
        "the rest's Kustomizations are untouched"
    );
    wait_members(&clients, ["v2", "v1", "v1"]).await;

    // What `kurator rollout status` shows of it.
    let status = kurator(&["rollout", "status", "shop", "--kubeconfig", &kubeconfig_arg]).await;
    assert!(status.ok, "{}", status.text());
    let text = &status.stdout;
    assert!(text.contains("RUN 2 "), "{text}");
    assert!(text.contains("stage canary (1/2)"), "{text}");
    assert!(text.contains(": AwaitingApproval"), "{text}");
    assert!(
        has_cluster_row(text, "canary", MEMBERS[0], &v2, "Healthy"),
        "{text}"
    );
    for member in &MEMBERS[1..] {
        assert!(
            has_cluster_row(text, "rest", member, &v1, "Pending"),
            "{text}"
        );
    }
    assert!(text.contains("HISTORY"), "{text}");

    // `kurator rollout promote`, the binary: the run goes on to the rest.
    let promote = kurator(&[
        "rollout",
        "promote",
        "shop",
        "--kubeconfig",
        &kubeconfig_arg,
    ])
    .await;
    assert!(promote.ok, "{}", promote.text());
    assert!(promote.stdout.contains("2/canary/"), "{}", promote.stdout);
    eprintln!("{:?}: promoted", started.elapsed());
    let healthy_since = wait_rollout(&apps, "the rest soaking", WAIT, |s| {
        let run = s.run.as_ref()?;
        let soaking = run.stage.name == "rest" && run.stage.phase == StagePhase::Soaking;
        soaking.then(|| run.stage.healthy_since.clone())?
    })
    .await
    .0;
    let soak_end = healthy_since + REST_SOAK;
    wait_members(&clients, ["v2", "v2", "v2"]).await;

    // Kill #2 a few seconds into the rest's soak; down a while, so that a soak counted from
    // the restart would end well after the original end.
    let kill_at = healthy_since + KILL_INTO_SOAK;
    let wait = Timestamp::now().duration_until(kill_at);
    if let Ok(wait) = Duration::try_from(wait) {
        tokio::time::sleep(wait).await;
    }
    controller.kill();
    let killed = Timestamp::now();
    assert!(
        killed < soak_end,
        "killed at {killed}, after the soak ended"
    );
    tokio::time::sleep(DOWN).await;
    let restarted = Timestamp::now();
    let mut controller = Controller::start(&kubeconfig, &log);
    eprintln!(
        "{:?}: killed {} into the soak, restarted {} into it",
        started.elapsed(),
        killed.duration_since(healthy_since),
        restarted.duration_since(healthy_since)
    );
    // Until the run ends, the soak clock stays the one written before the kill.
    let finished = wait_rollout(&apps, "run 2 succeeded", WAIT, |s| {
        if let Some(run) = &s.run {
            assert_eq!(run.stage.name, "rest", "{s:?}");
            assert_eq!(
                run.stage.healthy_since.as_ref().map(|t| t.0),
                Some(healthy_since),
                "the soak restarted"
            );
        }
        succeeded(s, 2, &v2).then(|| s.clone())
    })
    .await;
    let finished_at = finished.history[0].finished_at.0;
    eprintln!(
        "{:?}: run 2 succeeded at {}, soak end {}",
        started.elapsed(),
        finished_at,
        soak_end
    );
    assert!(
        finished_at >= soak_end,
        "finished at {finished_at}, before the soak's end {soak_end}"
    );
    assert!(
        finished_at < restarted + REST_SOAK,
        "finished at {finished_at}: the soak was counted from the restart at {restarted}"
    );
    wait_members(&clients, ["v2", "v2", "v2"]).await;

    // Each member's Kustomization moved to v2 once: one spec change each (generation + 1).
    let after = kustomizations(&client).await;
    for ((member, (_, generation)), (source, now)) in MEMBERS.iter().zip(&before).zip(&after) {
        assert_eq!(
            (source.as_str(), *now),
            (pinned(&v2).as_str(), generation + 1),
            "{member}'s Kustomization"
        );
    }
    // Each stage promoted once, the run succeeded once, its approval asked for once.
    for stage in ["canary", "rest"] {
        let note = format!("run 2: stage {stage} promoted");
        assert_eq!(events(&client, "StagePromoted", &note).await, 1, "{note}");
    }
    assert_eq!(events(&client, "RolloutSucceeded", "run 2:").await, 1);
    assert_eq!(
        events(&client, "ApprovalRequired", "run 2: stage canary passed").await,
        1
    );
    // Run 2 is in the history once, newest first.
    let ids: Vec<i64> = finished.history.iter().map(|h| h.id).collect();
    assert_eq!(ids, [2, 1]);
    assert_eq!(finished.last_run_id, 2);
    assert!(
        controller.running(),
        "the controller exited; see {}",
        log.display()
    );
    eprintln!("{:?}: done", started.elapsed());
}
