//! Flux in a detached environment (`kurator dev`): the controllers are recorded in
//! `env.json`, re-adopted by `attach` and killed by `stop_all`.

use std::path::PathBuf;

use anyhow::{Context, Result, ensure};
use kurator_testenv::{ControllerManagerMode, TestEnv};

/// Stops the detached environment and removes its parent dir however the test ends.
struct StopOnDrop {
    state: PathBuf,
    parent: PathBuf,
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = TestEnv::stop_all(&self.state);
        let _ = std::fs::remove_dir_all(&self.parent);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detached_flux_is_recorded_attached_and_stopped() -> Result<()> {
    crate::common::init();
    let (binaries, flux) = tokio::task::spawn_blocking(|| {
        Ok::<_, kurator_testenv::Error>((
            kurator_testenv::ensure_binaries()?,
            kurator_testenv::ensure_flux_binaries()?,
        ))
    })
    .await??;
    let parent = std::env::temp_dir().join(format!(
        "kurator-testenv-flux-detached-{}",
        std::process::id()
    ));
    let dir = parent.join("state");
    let _guard = StopOnDrop {
        state: dir.clone(),
        parent: parent.clone(),
    };

    let env = TestEnv::builder()
        .controller_manager(ControllerManagerMode::None)
        .binaries(binaries)
        .flux(true)
        .flux_binaries(flux)
        .state_dir(&dir)
        .detached(true)
        .start()
        .await?;
    ensure!(env.flux_running());
    drop(env); // Leaves everything running.

    let record = std::fs::read_to_string(dir.join("env.json"))?;
    for name in [
        "host-source-controller",
        "host-kustomize-controller",
        "host-helm-controller",
    ] {
        ensure!(record.contains(name), "{name} missing from env.json");
        ensure!(dir.join("run").join(format!("{name}.pid")).is_file());
    }
    let pids: Vec<i32> = ["source", "kustomize", "helm"]
        .iter()
        .map(|c| {
            let file = dir.join("run").join(format!("host-{c}-controller.pid"));
            std::fs::read_to_string(&file)?
                .trim()
                .parse::<i32>()
                .with_context(|| format!("pid in {}", file.display()))
        })
        .collect::<Result<_>>()?;

    let attached = TestEnv::attach(&dir)?.context("environment must be attachable")?;
    ensure!(
        attached.flux_running(),
        "attach re-adopts the flux controllers"
    );
    crate::common::ensure_all_running(&attached).await?;
    drop(attached);

    ensure!(
        TestEnv::stop_all(&dir)?,
        "stop_all must find the environment"
    );
    for pid in pids {
        ensure!(!running(pid), "flux controller pid {pid} survived stop_all");
    }
    Ok(())
}

/// Whether `pid` exists and is not a zombie (this test process is the parent of the detached
/// processes it started, so killed ones linger as zombies until reaped).
fn running(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
    !state.is_some_and(|s| s.starts_with('Z') || s.starts_with('X'))
}
