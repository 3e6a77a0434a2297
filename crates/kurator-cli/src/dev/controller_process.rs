//! The playground's controller: this same binary, `kurator controller`, in the background.

use std::{
    fs::File,
    net::{SocketAddr, TcpListener},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;

pub fn log_path(state: &Path) -> PathBuf {
    state.join("controller.log")
}

fn pid_path(state: &Path) -> PathBuf {
    state.join("controller.pid")
}

/// Starts the controller detached from this terminal; returns its metrics address.
pub fn start(state: &Path, host_kubeconfig: &Path) -> anyhow::Result<SocketAddr> {
    let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let log = File::create(log_path(state))?;
    let exe = std::env::current_exe().context("locating the kurator binary")?;
    let child = Command::new(exe)
        .args([
            "controller",
            "--health-interval",
            "10s",
            "--probe-timeout",
            "5s",
            "--metrics-addr",
        ])
        .arg(addr.to_string())
        .arg("--kubeconfig")
        .arg(host_kubeconfig)
        .env("RUST_LOG", "info,kube=warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: Ctrl-C in this terminal does not reach it.
        .process_group(0)
        .spawn()
        .context("starting kurator controller")?;
    std::fs::write(pid_path(state), child.id().to_string())?;
    Ok(addr)
}

/// The controller's pid, if it is alive.
pub fn running_pid(state: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pid_path(state))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    alive(pid).then_some(pid)
}

pub fn is_running(state: &Path) -> bool {
    running_pid(state).is_some()
}

fn alive(pid: i32) -> bool {
    // A zombie (state Z) has exited; only its parent can reap it.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Stops the controller (SIGTERM, then SIGKILL after 5 s). Returns whether one was running.
pub fn stop(state: &Path) -> bool {
    let Some(pid) = running_pid(state) else {
        return false;
    };
    // SAFETY: plain kill(2) on a pid we started and recorded.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if alive(pid) {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let _ = std::fs::remove_file(pid_path(state));
    true
}
