//! Detached mode (`kurator dev up`/`down`): processes outlive the `TestEnv` value, another
//! process can attach to them and stop them.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kurator_testenv::wait;
use kurator_testenv::{ControllerManagerMode, TestEnv};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detached_attach_and_stop_all() -> Result<()> {
    crate::common::init();
    let parent =
        std::env::temp_dir().join(format!("kurator-testenv-detached-{}", std::process::id()));
    let dir = parent.join("state");
    // Nothing there yet.
    ensure!(TestEnv::attach(&dir)?.is_none());
    ensure!(!TestEnv::stop_all(&dir)?);

    let env = TestEnv::builder()
        .members(1)
        .controller_manager(ControllerManagerMode::None)
        .state_dir(&dir)
        .detached(true)
        .start()
        .await?;
    ensure!(env.is_detached());
    let host_url = env.host().server_url();
    drop(env); // Leaves everything running.

    let result = async {
        let attached = TestEnv::attach(&dir)?.context("environment must be attachable")?;
        crate::common::ensure_all_running(&attached).await?;
        ensure!(attached.host().server_url() == host_url);
        let names: Vec<&str> = attached.clusters().iter().map(|c| c.name()).collect();
        ensure!(names == ["host", "member1"], "{names:?}");
        // Every recorded process, by cluster, each with its pid (no controller-manager here).
        let processes: Vec<(Option<String>, String, bool)> = attached
            .processes()
            .await
            .into_iter()
            .map(|p| (p.cluster, p.name, p.pid.is_some()))
            .collect();
        let expected: Vec<(Option<String>, String, bool)> = [
            (None, "etcd"),
            (Some("host"), "host-kube-apiserver"),
            (Some("host"), "host-kube-scheduler"),
            (Some("host"), "host-kwok"),
            (Some("member1"), "member1-kube-apiserver"),
            (Some("member1"), "member1-kube-scheduler"),
            (Some("member1"), "member1-kwok"),
        ]
        .into_iter()
        .map(|(cluster, name)| (cluster.map(str::to_string), name.to_string(), true))
        .collect();
        ensure!(processes == expected, "{processes:?}");

        let ns: Api<Namespace> = Api::all(attached.host().client().await?);
        ns.get("default").await?;

        // Starting a second environment in the same dir is refused while it runs.
        let again = TestEnv::builder()
            .state_dir(&dir)
            .detached(true)
            .start()
            .await;
        ensure!(again.is_err(), "second start in a live state dir must fail");

        // Outage and restart through the attached handle (the new process is detached too).
        let member = &attached.members()[0];
        // kube-scheduler and kwok outlive the apiserver, as in a real outage.
        member.stop().await?;
        let dead = attached.dead_processes().await;
        ensure!(dead == ["member1-kube-apiserver"], "{dead:?}");
        member.start().await?;
        let reattached = TestEnv::attach(&dir)?.context("still attachable")?;
        crate::common::ensure_all_running(&reattached).await?;

        // A component that died is restarted by `start`, detached, with its old flags.
        let kwok_pid = std::fs::read_to_string(dir.join("run").join("member1-kwok.pid"))?;
        let killed = std::process::Command::new("kill")
            .args(["-9", kwok_pid.trim()])
            .status()?;
        ensure!(killed.success());
        wait::until(
            "member1-kwok to be reported dead",
            Duration::from_secs(10),
            || async {
                let dead = reattached.dead_processes().await;
                (dead == ["member1-kwok"])
                    .then_some(())
                    .ok_or(format!("{dead:?}"))
            },
        )
        .await?;
        let kwok = |processes: Vec<kurator_testenv::ProcessInfo>| {
            processes.into_iter().find(|p| p.name == "member1-kwok")
        };
        let stopped = kwok(reattached.processes().await).context("member1-kwok listed")?;
        ensure!(stopped.pid.is_none(), "{stopped:?}");
        reattached.members()[0].start().await?;
        crate::common::ensure_all_running(&reattached).await?;
        let new_pid = std::fs::read_to_string(dir.join("run").join("member1-kwok.pid"))?;
        ensure!(new_pid != kwok_pid, "pid file not rewritten");
        let restarted = kwok(reattached.processes().await).context("member1-kwok listed")?;
        ensure!(
            restarted.pid.map(|p| p.to_string()) == Some(new_pid.trim().to_string()),
            "{restarted:?}, pid file {new_pid}"
        );
        let again = TestEnv::attach(&dir)?.context("attachable after the restart")?;
        crate::common::ensure_all_running(&again).await?;
        Ok::<_, anyhow::Error>(())
    }
    .await;

    ensure!(
        TestEnv::stop_all(&dir)?,
        "stop_all must find the environment"
    );
    ensure!(!dir.exists(), "stop_all removes the state dir");
    ensure!(TestEnv::attach(&dir)?.is_none());
    let _ = std::fs::remove_dir_all(&parent);
    result?;

    // Every process is gone: the host port refuses connections.
    let port = host_url.rsplit(':').next().unwrap_or_default().to_string();
    wait::until(
        "host apiserver port to close",
        Duration::from_secs(10),
        || {
            let port = port.clone();
            async move {
                tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
                    .await
                    .is_err()
            }
        },
    )
    .await?;
    Ok(())
}
