//! `kurator rollout status|promote` and `kurator describe application` with stages, as a user
//! runs them: the built binary against a real API server holding an Application whose
//! `status.stagedRollout` the test writes through the status subresource (no controller: the
//! commands only read status and write request annotations).

use kube::{
    Api,
    api::{ApiResource, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams},
};
use kurator_api::{
    Application, AttachedCluster, Fleet,
    cluster::{AttachedClusterSpec, SecretKeyRef},
    fleet::FleetSpec,
    labels::FLEET_NAME,
    rollout::{StagedRolloutStatus, annotation},
};
use kurator_controller::rollout::observe::parse_promote;
use kurator_testenv::TestEnv;
use serde_json::json;

use super::{NS, entry, kurator};

/// A line of a table whose cells, split on whitespace, start with `row`'s words.
fn has_row(text: &str, row: &str) -> bool {
    let wanted: Vec<&str> = row.split_whitespace().collect();
    text.lines().any(|l| {
        l.split_whitespace()
            .collect::<Vec<_>>()
            .starts_with(&wanted)
    })
}

fn application(name: &str, staged: Option<serde_json::Value>) -> DynamicObject {
    let mut spec = json!({
        "source": {"gitRepository": {"url": "http://127.0.0.1:1/shop.git", "interval": "1m"}},
        "destination": {"fleet": "quickstart"},
        "syncPolicies": [{"kustomization": {"interval": "5m", "prune": true}}],
    });
    if let Some(staged) = staged {
        spec["stagedRollout"] = staged;
    }
    serde_json::from_value(json!({
        "apiVersion": "apps.kurator.dev/v1alpha1",
        "kind": "Application",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }))
    .unwrap()
}

const SPEC: &str = r#"{"onFailure": "Pause", "stages": [
  {"name": "canary", "clusters": ["member1"], "soak": "5m"},
  {"name": "europe", "clusterSelector": {"matchLabels": {"region": "eu"}},
   "gates": {"approval": true}},
  {"name": "everything-else", "rest": true}]}"#;

/// Run 3 at stage europe, in `phase`.
fn status_at(phase: &str) -> serde_json::Value {
    let to = "main@sha1:3333333333333333333333333333333333333333";
    let from = "main@sha1:1111111111111111111111111111111111111111";
    json!({
        "stableRevision": from,
        "observedSourceRevision": to,
        "lastRunId": 3,
        "run": {
            "id": 3, "fromRevision": from, "toRevision": to, "phase": "Progressing",
            "startedAt": "2026-12-02T05:00:00Z",
            "stage": {"index": 1, "name": "europe", "phase": phase,
                      "startedAt": "2026-12-02T05:10:00Z",
                      "gates": [{"gate": "approval", "outcome": "Pending"}]},
        },
        "clusters": [
            {"name": "member1", "stage": "canary", "revision": to, "state": "Healthy",
             "since": "2026-12-02T05:06:00Z"},
            {"name": "eu1", "stage": "europe", "revision": to, "state": "Healthy",
             "since": "2026-12-02T05:12:00Z"},
            {"name": "us1", "stage": "everything-else", "revision": from, "state": "Pending",
             "since": "2026-12-02T05:00:00Z"},
        ],
    })
}

#[tokio::test]
async fn rollout_status_promote_and_describe_stages() {
    let env = TestEnv::builder()
        .crds(vec![kurator_api::crds::all_yaml()])
        .start()
        .await
        .expect("test environment starts");
    let host = env.host().client().await.unwrap();
    let kubeconfig = env.host().kubeconfig_path().display().to_string();
    let apps: Api<DynamicObject> =
        Api::namespaced_with(host.clone(), NS, &ApiResource::erase::<Application>(&()));
    let post = PostParams::default();

    // The destination: three attached members of fleet quickstart, two in region eu.
    let fleet = Fleet::new(
        "quickstart",
        FleetSpec {
            clusters: vec![entry("member1"), entry("eu1"), entry("us1")],
            plugin: None,
        },
    );
    Api::<Fleet>::namespaced(host.clone(), NS)
        .create(&post, &fleet)
        .await
        .unwrap();
    let clusters: Api<AttachedCluster> = Api::namespaced(host.clone(), NS);
    for (name, region) in [("member1", "eu"), ("eu1", "eu"), ("us1", "us")] {
        let cluster = AttachedCluster {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    [
                        (FLEET_NAME.to_string(), "quickstart".to_string()),
                        ("region".to_string(), region.to_string()),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
            spec: AttachedClusterSpec {
                kubeconfig: SecretKeyRef {
                    name: format!("{name}-kubeconfig"),
                    key: "value".into(),
                },
            },
            status: None,
        };
        clusters.create(&post, &cluster).await.unwrap();
    }

    // Without stagedRollout: a clear refusal, exit status 1; describe shows no stages.
    apps.create(&post, &application("plain", None))
        .await
        .unwrap();
    let run = kurator(&[
        "rollout",
        "status",
        "plain",
        "-n",
        NS,
        "--kubeconfig",
        &kubeconfig,
    ])
    .await;
    assert!(!run.ok, "{}", run.text());
    assert!(
        run.stderr.contains(
            "application default/plain has no stagedRollout; it deploys every revision to \
             every cluster at once"
        ),
        "{}",
        run.text()
    );
    let run = kurator(&[
        "describe",
        "application",
        "plain",
        "--kubeconfig",
        &kubeconfig,
    ])
    .await;
    assert!(
        run.ok && !run.stdout.contains("Staged rollout"),
        "{}",
        run.text()
    );

    // With it, before the controller wrote any status.
    let staged: serde_json::Value = serde_json::from_str(SPEC).unwrap();
    apps.create(&post, &application("shop", Some(staged)))
        .await
        .unwrap();
    let stored = apps.get("shop").await.unwrap();
    assert!(
        stored.data.pointer("/spec/stagedRollout/stages/2/rest") == Some(&json!(true)),
        "the API server kept spec.stagedRollout: {:?}",
        stored.data
    );
    let run = kurator(&["rollout", "status", "shop", "--kubeconfig", &kubeconfig]).await;
    assert!(run.ok, "{}", run.text());
    assert!(
        run.stdout.contains("No rollout status yet"),
        "{}",
        run.text()
    );

    let run = kurator(&["describe", "app", "shop", "--kubeconfig", &kubeconfig]).await;
    assert!(run.ok, "{}", run.text());
    for row in [
        "1 canary names member1 member1 all",
        "2 europe labels region=eu eu1 all",
        "3 everything-else the rest us1 all",
    ] {
        assert!(has_row(&run.stdout, row), "{row:?} in:\n{}", run.stdout);
    }

    // Run 3 verifying europe: promote is refused, nothing is written.
    let write_status = |phase: &'static str| {
        let apps = apps.clone();
        async move {
            apps.patch_status(
                "shop",
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"stagedRollout": status_at(phase)}})),
            )
            .await
            .unwrap();
        }
    };
    write_status("Verifying").await;
    let run = kurator(&["rollout", "promote", "shop", "--kubeconfig", &kubeconfig]).await;
    assert!(!run.ok, "{}", run.text());
    assert!(
        run.stderr
            .contains("stage europe of run 3 is Verifying, not awaiting approval"),
        "{}",
        run.text()
    );
    let annotations = apps.get("shop").await.unwrap().metadata.annotations;
    assert!(
        !annotations
            .unwrap_or_default()
            .contains_key(annotation::PROMOTE)
    );

    // Awaiting approval: status renders the run, promote writes the token observe reads.
    write_status("AwaitingApproval").await;
    let run = kurator(&["rollout", "status", "shop", "--kubeconfig", &kubeconfig]).await;
    assert!(run.ok, "{}", run.text());
    for text in [
        "RUN 3  main@sha1:1111111 → main@sha1:3333333  Progressing",
        "stage europe (2/3) started 2026-12-02T05:10:00Z: AwaitingApproval",
        "approval pending",
    ] {
        assert!(run.stdout.contains(text), "{text:?} in:\n{}", run.stdout);
    }
    assert!(
        has_row(&run.stdout, "everything-else us1 main@sha1:1111111 Pending"),
        "{}",
        run.stdout
    );
    let run = kurator(&[
        "rollout",
        "status",
        "shop",
        "-o",
        "json",
        "--kubeconfig",
        &kubeconfig,
    ])
    .await;
    let shown: StagedRolloutStatus =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.text()));
    assert_eq!(
        shown,
        serde_json::from_value(status_at("AwaitingApproval")).unwrap()
    );

    let run = kurator(&["rollout", "promote", "shop", "--kubeconfig", &kubeconfig]).await;
    assert!(run.ok, "{}", run.text());
    assert!(
        run.stdout
            .contains("requested: approve stage europe of run 3"),
        "{}",
        run.text()
    );
    // The patch returned before the binary did: the annotation is there now.
    let app = apps.get("shop").await.unwrap();
    let token = app
        .metadata
        .annotations
        .clone()
        .unwrap_or_default()
        .remove(annotation::PROMOTE)
        .expect("the promote annotation");
    assert_eq!(parse_promote(&token), Some((3, "europe")), "{token}");
    assert!(run.stdout.contains(&token), "{}", run.text());
    let managers: Vec<_> = app
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(managers.iter().any(|m| m == "kurator-cli"), "{managers:?}");
}
