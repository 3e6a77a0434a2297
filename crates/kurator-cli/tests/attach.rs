//! `kurator attach`, `detach` and `version` as a user runs them: the built binary against a
//! real host and member, with `kurator controller` running as a process (leader election on,
//! so `kurator version` finds the controller's version on its Lease).

mod common;
// `kurator rollout` in this binary: each test binary costs CI a link.
#[path = "attach/rollout.rs"]
mod rollout;

use std::{collections::BTreeMap, path::Path, process::Stdio, time::Duration};

use common::{Run, run};

use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
};
use kurator_api::{
    AttachedCluster, Fleet,
    cluster::{AttachedClusterSpec, SecretKeyRef},
    fleet::{ClusterKind, FleetCluster, FleetSpec},
    labels::{MANAGED_BY, MANAGED_BY_CLI},
};
use kurator_testenv::{TestEnv, wait};
use tokio::process::{Child, Command};

const KURATOR: &str = env!("CARGO_BIN_EXE_kurator");
const NS: &str = "default";
/// Upper bound of one CLI run (attach waits at most its own 60 s).
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

async fn kurator(args: &[&str]) -> Run {
    let mut command = Command::new(KURATOR);
    // Every host and member is named by a flag; a developer's KUBECONFIG plays no part.
    command.args(args).env_remove("KUBECONFIG");
    run(&mut command, &format!("kurator {args:?}"), RUN_TIMEOUT).await
}

/// `kurator controller` against the host, leader election on (Lease kube-system/kurator-controller).
fn start_controller(host_kubeconfig: &Path, log: &Path) -> Child {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    Command::new(KURATOR)
        .arg("controller")
        .arg(format!("--kubeconfig={}", host_kubeconfig.display()))
        .arg(format!("--metrics-addr=127.0.0.1:{port}"))
        .env_remove("POD_NAMESPACE")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("controller starts")
}

fn entry(name: &str) -> FleetCluster {
    FleetCluster {
        name: name.into(),
        kind: ClusterKind::AttachedCluster,
    }
}

/// The only user of a kubeconfig's text, as JSON (credentials included: never print it).
fn only_user(yaml: &str) -> serde_json::Value {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(yaml).unwrap();
    assert_eq!(kubeconfig.auth_infos.len(), 1);
    serde_json::to_value(&kubeconfig.auth_infos[0]).unwrap()
}

async fn absent<K>(api: &Api<K>, name: &str) -> bool
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name).await.unwrap().is_none()
}

#[tokio::test]
async fn attach_into_a_fleet_then_detach_and_refusals() {
    let env = TestEnv::builder()
        .members(1)
        .crds(vec![kurator_api::crds::all_yaml()])
        .start()
        .await
        .expect("test environment starts");
    let host = env.host().client().await.unwrap();
    let host_kubeconfig = env.host().kubeconfig_path().display().to_string();
    let member = &env.members()[0];
    let member_kubeconfig = member.kubeconfig_path().display().to_string();
    let fleets: Api<Fleet> = Api::namespaced(host.clone(), NS);
    let clusters: Api<AttachedCluster> = Api::namespaced(host.clone(), NS);
    let secrets: Api<Secret> = Api::namespaced(host.clone(), NS);
    fleets
        .create(
            &PostParams::default(),
            &Fleet::new(
                "team",
                FleetSpec {
                    clusters: vec![entry("other")],
                    plugin: None,
                },
            ),
        )
        .await
        .unwrap();
    let log = env.log_dir().join("kurator-controller.log");
    let _controller = start_controller(env.host().kubeconfig_path(), &log);
    let attach = |name: &'static str, kubeconfig: String, extra: &'static [&'static str]| {
        let host_kubeconfig = host_kubeconfig.clone();
        async move {
            let mut args = vec![
                "attach",
                name,
                "--kubeconfig",
                &kubeconfig,
                "--host-kubeconfig",
                &host_kubeconfig,
                "-n",
                NS,
            ];
            args.extend_from_slice(extra);
            kurator(&args).await
        }
    };

    // A fleet that does not exist: refused before anything is written.
    let run = attach("m1", member_kubeconfig.clone(), &["--fleet", "nope"]).await;
    assert!(!run.ok, "{}", run.text());
    assert!(
        run.stderr.contains("Fleet default/nope not found"),
        "{}",
        run.text()
    );
    assert!(absent(&clusters, "m1").await && absent(&secrets, "m1-kubeconfig").await);

    // An exec plugin: refused, naming the user and the fix, nothing written.
    let exec = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: eks\nclusters:\n- name: eks\n  cluster:\n    server: {}\ncontexts:\n- name: eks\n  context:\n    cluster: eks\n    user: aws\nusers:\n- name: aws\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: aws\n      args: [eks, get-token]\n",
        member.server_url()
    );
    let exec_file = env.state_dir().join("exec.kubeconfig");
    std::fs::write(&exec_file, exec).unwrap();
    let run = attach("eks", exec_file.display().to_string(), &[]).await;
    assert!(!run.ok, "{}", run.text());
    eprintln!("kurator attach (exec):\n{}", run.text());
    assert!(
        run.stderr
            .contains("user \"aws\" uses an exec credential plugin (exec)"),
        "{}",
        run.text()
    );
    assert!(absent(&clusters, "eks").await && absent(&secrets, "eks-kubeconfig").await);

    // member1 into the fleet: Ready, the fleet's other entry kept, no key material printed.
    let started = std::time::Instant::now();
    let run = attach("m1", member_kubeconfig.clone(), &["--fleet", "team"]).await;
    eprintln!("attach to Ready took {:?}", started.elapsed());
    let controller_log = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        run.ok,
        "{}\ncontroller log:\n{}",
        run.text(),
        controller_log()
    );
    assert!(
        run.stdout.contains("Fleet default/team: m1 added"),
        "{}",
        run.text()
    );
    assert!(
        run.stdout
            .contains("AttachedCluster default/m1 is Ready (Kubernetes v1.35.4)"),
        "{}",
        run.text()
    );
    let member_user = only_user(&member.kubeconfig_yaml());
    let key = member_user["user"]["client-key-data"].as_str().unwrap();
    assert!(!run.text().contains(key), "key material printed");
    eprintln!("kurator attach:\n{}", run.text());
    let secret = secrets.get("m1-kubeconfig").await.unwrap();
    assert_eq!(secret.metadata.labels.unwrap()[MANAGED_BY], MANAGED_BY_CLI);
    let stored = String::from_utf8(secret.data.unwrap()["value"].0.clone()).unwrap();
    // Compared, not shown: the assertion message must not print credentials.
    assert!(only_user(&stored) == member_user, "the stored user differs");
    let stored = kube::config::Kubeconfig::from_yaml(&stored).unwrap();
    assert_eq!(stored.current_context.as_deref(), Some("member1"));
    assert_eq!(stored.contexts.len(), 1);
    let ac = clusters.get("m1").await.unwrap();
    assert_eq!(
        ac.spec.kubeconfig,
        SecretKeyRef {
            name: "m1-kubeconfig".into(),
            key: "value".into()
        }
    );
    assert_eq!(
        fleets.get("team").await.unwrap().spec.clusters,
        [entry("other"), entry("m1")]
    );

    // Again: an update, the fleet untouched.
    let run = attach("m1", member_kubeconfig.clone(), &["--fleet", "team"]).await;
    assert!(run.ok, "{}", run.text());
    assert!(
        run.stdout.contains("Fleet default/team already lists m1"),
        "{}",
        run.text()
    );

    // The controller's version, from its leader Lease.
    let run = kurator(&["version", "--kubeconfig", &host_kubeconfig]).await;
    assert!(run.ok, "{}", run.text());
    eprintln!("kurator version:\n{}", run.text());
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        run.stdout.starts_with(&format!("client: {version}")),
        "{}",
        run.text()
    );
    assert!(
        run.stdout.contains(&format!(
            "controller: {version} (Lease kube-system/kurator-controller, leader "
        )),
        "{}",
        run.text()
    );

    // A cluster that never becomes Ready: the reason is printed and attach fails with it.
    let dead = member
        .kubeconfig_yaml()
        .replace(&member.server_url(), "https://127.0.0.1:1");
    let dead_file = env.state_dir().join("dead.kubeconfig");
    std::fs::write(&dead_file, dead).unwrap();
    let run = attach(
        "dead",
        dead_file.display().to_string(),
        &["--timeout", "3s"],
    )
    .await;
    assert!(!run.ok, "{}", run.text());
    assert!(
        run.stdout.contains("  not ready: Unreachable: "),
        "{}",
        run.text()
    );
    assert!(
        run.stderr
            .contains("AttachedCluster default/dead is not Ready after 3s: Unreachable: "),
        "{}",
        run.text()
    );

    // `kurator version` against a host that does not answer: said, and still exit 0.
    let run = kurator(&["version", "--kubeconfig", &dead_file.display().to_string()]).await;
    assert!(run.ok, "{}", run.text());
    assert!(
        run.stdout
            .contains("controller: unknown (cannot read its leader Lease: "),
        "{}",
        run.text()
    );

    // A user's Secret is neither overwritten by attach nor deleted by detach.
    let user_secret = Secret {
        metadata: ObjectMeta {
            name: Some("u1-kubeconfig".into()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            "value".to_string(),
            ByteString(member.kubeconfig_yaml().into_bytes()),
        )])),
        ..Secret::default()
    };
    secrets
        .create(&PostParams::default(), &user_secret)
        .await
        .unwrap();
    let run = attach("u1", member_kubeconfig.clone(), &["--no-wait"]).await;
    assert!(!run.ok, "{}", run.text());
    assert!(
        run.stderr
            .contains("Secret default/u1-kubeconfig exists and was not created by kurator attach"),
        "{}",
        run.text()
    );
    let by_hand = AttachedCluster::new(
        "u1",
        AttachedClusterSpec {
            kubeconfig: SecretKeyRef {
                name: "u1-kubeconfig".into(),
                key: "value".into(),
            },
        },
    );
    clusters
        .create(&PostParams::default(), &by_hand)
        .await
        .unwrap();
    let run = kurator(&["detach", "u1", "-n", NS, "--kubeconfig", &host_kubeconfig]).await;
    assert!(run.ok, "{}", run.text());
    assert!(
        run.stdout
            .contains("Secret default/u1-kubeconfig kept: kurator attach did not create it"),
        "{}",
        run.text()
    );
    assert!(!absent(&secrets, "u1-kubeconfig").await);

    // Detach: out of the fleet, AttachedCluster and Secret gone, the other entry kept.
    let run = kurator(&[
        "detach",
        "m1",
        "-n",
        NS,
        "--host-kubeconfig",
        &host_kubeconfig,
    ])
    .await;
    assert!(run.ok, "{}", run.text());
    eprintln!("kurator detach:\n{}", run.text());
    for line in [
        "Fleet default/team: m1 removed",
        "AttachedCluster default/m1 deleted",
        "Secret default/m1-kubeconfig deleted",
    ] {
        assert!(run.stdout.contains(line), "{}", run.text());
    }
    wait::until(
        "m1 and its Secret gone",
        Duration::from_secs(30),
        || async { absent(&clusters, "m1").await && absent(&secrets, "m1-kubeconfig").await },
    )
    .await
    .unwrap();
    assert_eq!(
        fleets.get("team").await.unwrap().spec.clusters,
        [entry("other")]
    );

    let run = kurator(&["detach", "m1", "-n", NS, "--kubeconfig", &host_kubeconfig]).await;
    assert!(!run.ok, "{}", run.text());
    assert!(run.stderr.contains("nothing to detach"), "{}", run.text());
}
