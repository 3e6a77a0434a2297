//! A process that dies at startup yields an error naming it, with the tail of its log, and
//! leaves nothing running.

mod common;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_apiserver_is_reported_with_its_log() -> Result<()> {
    common::init();
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
    let etcd_pid: Option<u32> = std::fs::read_dir("/proc")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .find(|pid: &u32| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&state.display().to_string()))
                && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                    !s.rsplit_once(')')
                        .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
                })
        });
    ensure!(etcd_pid.is_none(), "etcd still running: {etcd_pid:?}");
    std::fs::remove_dir_all(&scratch)?;
    Ok(())
}
