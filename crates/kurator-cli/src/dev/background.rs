//! The playground's own background processes (the controller, the git server): this same
//! binary, detached from the terminal, tracked by a pid file in the state directory.

use std::{
    fs::File,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;

/// One named background process (`controller`, `git-server`).
pub struct Background<'a> {
    pub state: &'a Path,
    pub name: &'static str,
}

impl Background<'_> {
    pub fn log_path(&self) -> PathBuf {
        self.state.join(format!("{}.log", self.name))
    }

    fn pid_path(&self) -> PathBuf {
        self.state.join(format!("{}.pid", self.name))
    }

    /// Starts `kurator <args>` detached from this terminal.
    pub fn start(&self, args: &[String]) -> anyhow::Result<()> {
        let log = File::create(self.log_path())?;
        let exe = std::env::current_exe().context("locating the kurator binary")?;
        let child = Command::new(exe)
            .args(args)
            .env("RUST_LOG", "info,kube=warn")
            // `dev env`'s export in this shell must not reach the controller: `dev up` passes
            // --thanos-url itself, and only with the plugins.
            .env_remove(crate::metrics::discover::THANOS_URL_ENV)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: Ctrl-C in this terminal does not reach it.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting the playground's {}", self.name))?;
        std::fs::write(self.pid_path(), child.id().to_string())?;
        Ok(())
    }

    /// Its pid, if it is alive.
    pub fn running_pid(&self) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(self.pid_path())
            .ok()?
            .trim()
            .parse()
            .ok()?;
        alive(pid).then_some(pid)
    }

    /// Stops it (SIGTERM, then SIGKILL after 5 s). Returns whether it was running.
    pub fn stop(&self) -> bool {
        let Some(pid) = self.running_pid() else {
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
        let _ = std::fs::remove_file(self.pid_path());
        true
    }
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
