//! A process that dies at startup yields an error naming it, with the tail of its log, and
//! leaves nothing running.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Result, ensure};
use kurator_testenv::{Binaries, ControllerManagerMode, Error, TestEnv};

fn script(dir: &Path, name: &str, body: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n"))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

/// Pids of live (non-zombie) processes whose command line mentions `dir`.
fn live_processes_mentioning(dir: &Path) -> Result<Vec<u32>> {
    let needle = dir.display().to_string();
    Ok(std::fs::read_dir("/proc")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid: &u32| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
                && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                    !s.rsplit_once(')')
                        .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
                })
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_apiserver_is_reported_with_its_log() -> Result<()> {
    crate::common::init();
    let real = tokio::task::spawn_blocking(kurator_testenv::ensure_binaries).await??;
    let scratch =
        std::env::temp_dir().join(format!("kurator-testenv-errors-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let broken = script(
        &scratch,
        "kube-apiserver",
        "echo 'E1125 boom: cannot start' >&2; exit 3",
    )?;
    let state = scratch.join("state");

    let result = TestEnv::builder()
        .binaries(Binaries {
            kube_apiserver: broken,
            ..real
        })
        .controller_manager(ControllerManagerMode::None)
        .state_dir(&state)
        .start()
        .await;
    let err = result.expect_err("a broken apiserver must fail the start");
    let text = err.to_string();
    let Error::Startup { process, log, .. } = &err else {
        anyhow::bail!("expected a startup error, got {text}");
    };
    ensure!(process == "host-kube-apiserver", "{text}");
    ensure!(text.contains("exited"), "{text}");
    ensure!(
        text.contains("boom: cannot start"),
        "log tail missing: {text}"
    );
    ensure!(log.ends_with("logs/host-kube-apiserver.log"), "{text}");
    // The state dir with the logs is kept for debugging, but etcd was killed.
    ensure!(log.is_file());
    let etcd_pid = live_processes_mentioning(&state)?;
    ensure!(etcd_pid.is_empty(), "etcd still running: {etcd_pid:?}");
    std::fs::remove_dir_all(&scratch)?;
    Ok(())
}

/// A component that dies after its cluster's apiserver is up fails the start too, and even a
/// detached environment leaves no apiserver, scheduler or etcd behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_kwok_is_reported_and_its_cluster_is_torn_down() -> Result<()> {
    crate::common::init();
    let real = tokio::task::spawn_blocking(kurator_testenv::ensure_binaries).await??;
    let scratch = std::env::temp_dir().join(format!(
        "kurator-testenv-kwok-errors-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&scratch)?;
    let broken = script(&scratch, "kwok", "echo 'kwok: no stages' >&2; exit 1")?;
    let state = scratch.join("state");

    let result = TestEnv::builder()
        .binaries(Binaries {
            kwok: broken,
            ..real
        })
        .state_dir(&state)
        .detached(true)
        .start()
        .await;
    let err = result.expect_err("a broken kwok must fail the start");
    let text = err.to_string();
    let Error::Startup { process, .. } = &err else {
        anyhow::bail!("expected a startup error, got {text}");
    };
    ensure!(process == "host-kwok", "{text}");
    ensure!(text.contains("no stages"), "log tail missing: {text}");
    let left = live_processes_mentioning(&state)?;
    ensure!(left.is_empty(), "still running: {left:?}");
    std::fs::remove_dir_all(&scratch)?;
    Ok(())
}
