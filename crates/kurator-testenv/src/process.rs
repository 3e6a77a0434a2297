//! Child processes: spawning with logs, liveness, killing.
//!
//! Every process gets its own process group (its pid), so a kill reaches anything it forked.
//! Attached (non-detached) processes are spawned from one long-lived helper thread with
//! `PR_SET_PDEATHSIG=SIGKILL`: if the test binary dies without running `Drop` (SIGKILL,
//! abort, a `TestEnv` kept in a `static`), the kernel kills them too. Detached processes are
//! put in their own session instead, so they outlive the CLI that started them.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::binaries::log_tail;
use crate::error::{Error, Result};
use crate::wait;

/// How long a SIGKILLed process may take to go, and how often we look.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
const KILL_POLL: Duration = Duration::from_millis(20);

/// What to run, serialisable so that a detached environment can restart a process later.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct ProcessSpec {
    /// `<cluster>-<component>`, e.g. `member1-kube-apiserver`.
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub log: PathBuf,
    /// Where the pid is recorded (detached environments), so another process can find it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_file: Option<PathBuf>,
    /// Extra environment variables (on top of the inherited environment).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<(String, String)>,
}

/// One process of a [`crate::TestEnv`] and whether it runs, as `kurator dev status` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// The cluster whose API server it serves or works against (`host`, `member1`, …);
    /// `None` for the etcd all clusters share.
    pub cluster: Option<String>,
    /// `<cluster>-<component>` (e.g. `member1-kwok`, `host-kustomize-controller`) or `etcd`.
    pub name: String,
    /// The process id while it runs; `None` once it has exited.
    pub pid: Option<u32>,
    pub log: PathBuf,
}

/// A running (or exited) process.
#[derive(Debug)]
pub(crate) struct Proc {
    pub spec: ProcessSpec,
    pub pid: u32,
    /// `None` for processes found through a state file (not our children).
    child: Option<Child>,
    /// Kill the process when this value is dropped (attached, non-detached processes).
    kill_on_drop: bool,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.kill_on_drop {
            self.kill_blocking();
        }
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// Runs `f` on the process-lifetime spawner thread (see the module docs).
fn on_spawner_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    static SPAWNER: OnceLock<Option<mpsc::Sender<Job>>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("kurator-testenv-spawner".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
            })
            .ok()
            .map(|_| tx)
    });
    let tx = tx.as_ref()?;
    let (rtx, rrx) = mpsc::sync_channel(1);
    tx.send(Box::new(move || {
        let _ = rtx.send(f());
    }))
    .ok()?;
    rrx.recv().ok()
}

impl Proc {
    /// Starts `spec`, appending its stdout and stderr to `spec.log`.
    pub fn spawn(spec: ProcessSpec, detached: bool) -> Result<Proc> {
        if let Some(dir) = spec.log.parent() {
            fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
        }
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log)
            .map_err(|e| Error::io("opening log", &spec.log, e))?;
        let _ = writeln!(
            log,
            "=== kurator-testenv: starting {} ({} {})",
            spec.name,
            spec.program.display(),
            spec.args.join(" ")
        );
        let log_err = log
            .try_clone()
            .map_err(|e| Error::io("opening log", &spec.log, e))?;

        let mut cmd = Command::new(&spec.program);
        cmd.args(&spec.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost")
            .envs(spec.env.iter().map(|(k, v)| (k, v)));
        // etcd reads ETCD_* variables as flags; never let the caller's environment leak in.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ETCD_") {
                cmd.env_remove(key);
            }
        }

        let child = if detached {
            // SAFETY: setsid is async-signal-safe; the closure touches no other state.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::setsid() == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            cmd.spawn()
        } else {
            cmd.process_group(0);
            // SAFETY: prctl and getppid are async-signal-safe.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            on_spawner_thread(move || cmd.spawn())
                .unwrap_or_else(|| Err(std::io::Error::other("the process spawner thread is gone")))
        };
        let child = child.map_err(|source| Error::Spawn {
            process: spec.name.clone(),
            program: spec.program.clone(),
            source,
        })?;
        let pid = child.id();
        tracing::debug!(process = %spec.name, pid, log = %spec.log.display(), "spawned");
        let mut proc = Proc {
            spec,
            pid,
            child: Some(child),
            kill_on_drop: !detached,
        };
        if let Some(pid_file) = proc.spec.pid_file.clone()
            && let Err(e) = fs::write(&pid_file, pid.to_string())
        {
            proc.kill_blocking();
            return Err(Error::io("writing", pid_file, e));
        }
        Ok(proc)
    }

    /// A process started by another (or an earlier) `TestEnv`, known by pid only.
    pub fn adopt(spec: ProcessSpec, pid: u32) -> Proc {
        Proc {
            spec,
            pid,
            child: None,
            kill_on_drop: false,
        }
    }

    /// `Some(description)` if the process has exited.
    pub fn exit_status(&mut self) -> Option<String> {
        match &mut self.child {
            Some(child) => match child.try_wait() {
                Ok(Some(status)) => Some(status.to_string()),
                Ok(None) => None,
                Err(e) => Some(format!("unknown ({e})")),
            },
            None => (!pid_alive(self.pid, Some(&self.spec.program))).then(|| "exited".into()),
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.exit_status().is_none()
    }

    /// What [`ProcessInfo`] says about this process, which works for `cluster`.
    pub fn info(&mut self, cluster: Option<&str>) -> ProcessInfo {
        ProcessInfo {
            cluster: cluster.map(str::to_string),
            name: self.spec.name.clone(),
            pid: self.is_running().then_some(self.pid),
            log: self.spec.log.clone(),
        }
    }

    /// The last lines of the process log.
    pub fn log_tail(&self) -> String {
        log_tail(&self.spec.log, 25)
    }

    /// A startup error for this process with the tail of its log.
    pub fn startup_error(&self, reason: impl Into<String>) -> Error {
        Error::Startup {
            process: self.spec.name.clone(),
            reason: reason.into(),
            log: self.spec.log.clone(),
            tail: self.log_tail(),
        }
    }

    fn signal_group(&self) {
        let Ok(pid) = libc::pid_t::try_from(self.pid) else {
            return;
        };
        if pid <= 1 {
            return;
        }
        // SAFETY: plain syscalls. The group id equals the pid (process_group(0) or setsid).
        unsafe {
            if libc::kill(-pid, libc::SIGKILL) == -1 {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }

    /// SIGKILLs the process group and waits (blocking, at most 10 s) until the process is gone.
    pub fn kill_blocking(&mut self) {
        if !self.is_running() {
            return;
        }
        self.signal_group();
        match &mut self.child {
            Some(child) => {
                let _ = child.wait();
            }
            None => {
                // Best effort: teardown goes on whether or not it is gone.
                let _ = wait::until_blocking(
                    "the process to exit after SIGKILL",
                    KILL_TIMEOUT,
                    KILL_POLL,
                    || !pid_alive(self.pid, None),
                );
            }
        }
    }

    /// SIGKILLs the process group and waits without blocking the runtime.
    pub async fn kill(&mut self) -> Result<()> {
        if !self.is_running() {
            return Ok(());
        }
        self.signal_group();
        let what = format!(
            "{} (pid {}) to exit after SIGKILL",
            self.spec.name, self.pid
        );
        wait::until_every(what, KILL_TIMEOUT, KILL_POLL, || {
            let gone = !self.is_running();
            async move { gone }
        })
        .await
    }
}

/// Whether `pid` is a live (non-zombie) process, and if `program` is given, whether it runs
/// that program (guards against pid reuse).
pub(crate) fn pid_alive(pid: u32, program: Option<&std::path::Path>) -> bool {
    // pid 0 stands for "no process"; kill(0, ..) and waitpid(0, ..) would address our own
    // process group, so never pass it (or pid 1) on.
    let Ok(raw) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if raw <= 1 {
        return false;
    }
    // Reap it if it happens to be our child; harmless (ECHILD) otherwise.
    // SAFETY: plain syscalls on a pid.
    unsafe {
        let mut status = 0;
        libc::waitpid(raw, &mut status, libc::WNOHANG);
        if libc::kill(raw, 0) == -1 {
            return false;
        }
    }
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Format: "pid (comm) S ..."; the state follows the last ')'.
    if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r.trim_start())
        && (rest.starts_with('Z') || rest.starts_with('X'))
    {
        return false;
    }
    match program {
        None => true,
        Some(program) => {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
            argv0 == program.as_os_str().as_encoded_bytes()
        }
    }
}

/// Why waiting for readiness ended without success.
#[derive(Debug)]
pub(crate) enum WaitError {
    /// The process exited (status description).
    Exited(String),
    /// The probe never succeeded in time.
    TimedOut,
}

impl WaitError {
    /// A reason for [`Error::Startup`].
    pub fn describe(&self, timeout: Duration, probe: &str) -> String {
        match self {
            WaitError::Exited(status) => format!("exited ({status})"),
            WaitError::TimedOut => format!("{probe} not OK after {:.0}s", timeout.as_secs_f64()),
        }
    }
}

/// Polls `probe` every [`wait::INTERVAL`] until it returns true, the process exits, or
/// `timeout` passes.
pub(crate) async fn wait_ready<F, Fut>(
    proc: &mut Proc,
    timeout: Duration,
    mut probe: F,
) -> std::result::Result<(), WaitError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let what = format!("{} to become ready", proc.spec.name);
    let outcome = wait::until(what, timeout, || {
        // Done either way once the process has exited.
        let exited = proc.exit_status();
        let probe = probe();
        async move {
            match exited {
                Some(status) => Some(Err(status)),
                None => probe.await.then_some(Ok(())),
            }
        }
    })
    .await;
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(status)) => Err(WaitError::Exited(status)),
        Err(_) => Err(WaitError::TimedOut),
    }
}

/// How often a process that lost the race for its port is tried on another one.
const PORT_ATTEMPTS: usize = 4;

/// Spawns the process `spec_for(port)` describes on a free loopback port and waits with
/// `ready` (which hands the process back with its verdict); a process that lost the race for
/// its port is retried on another one. On failure nothing keeps running and the error carries
/// the log tail.
pub(crate) async fn start_on_free_port<R, Fut>(
    spec_for: impl Fn(u16) -> ProcessSpec,
    detached: bool,
    timeout: Duration,
    probe: &str,
    mut ready: R,
) -> Result<Proc>
where
    R: FnMut(Proc) -> Fut,
    Fut: std::future::Future<Output = (Proc, std::result::Result<(), WaitError>)>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        let proc = Proc::spawn(spec_for(free_port()?), detached)?;
        let (mut proc, mut verdict) = ready(proc).await;
        // A probe may have been answered by whoever holds the port this process lost: it is
        // only ready if it is still running.
        if verdict.is_ok()
            && let Some(status) = proc.exit_status()
        {
            verdict = Err(WaitError::Exited(status));
        }
        match verdict {
            Ok(()) => return Ok(proc),
            Err(WaitError::Exited(status)) if attempt < PORT_ATTEMPTS && lost_port_race(&proc) => {
                tracing::warn!(%status, process = %proc.spec.name, "lost a port race, retrying");
            }
            Err(err) => {
                proc.kill().await.ok();
                return Err(proc.startup_error(err.describe(timeout, probe)));
            }
        }
    }
}

/// Whether the last run of the process died because its port was taken (a race between
/// picking a free port and the process binding it).
pub(crate) fn lost_port_race(proc: &Proc) -> bool {
    let tail = log_tail(&proc.spec.log, 40);
    let last_run = tail
        .rsplit("=== kurator-testenv: starting")
        .next()
        .unwrap_or("");
    last_run.contains("address already in use")
}

/// A port that was free a moment ago on 127.0.0.1.
pub(crate) fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
        .map_err(|e| Error::io("binding", "127.0.0.1:0", e))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::io("reading local address of", "127.0.0.1:0", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_with_log(log: PathBuf) -> ProcessSpec {
        ProcessSpec {
            name: "x".into(),
            program: "/bin/true".into(),
            args: Vec::new(),
            log,
            pid_file: None,
            env: Vec::new(),
        }
    }

    #[test]
    fn port_race_is_read_from_the_last_run_only() {
        let dir = std::env::temp_dir().join(format!("kurator-testenv-unit-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let log = dir.join("x.log");
        let proc = Proc::adopt(spec_with_log(log.clone()), 0);
        fs::write(
            &log,
            "=== kurator-testenv: starting x\nE run.go:72] failed to listen on 127.0.0.1:1: \
             bind: address already in use\n",
        )
        .expect("write");
        assert!(lost_port_race(&proc));
        fs::write(
            &log,
            "=== kurator-testenv: starting x\nbind: address already in use\n\
             === kurator-testenv: starting x\nE some other failure\n",
        )
        .expect("write");
        assert!(!lost_port_race(&proc));
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    /// The first run loses its port, but the readiness probe is answered anyway (by whoever
    /// holds the port): that run still counts as a lost race and the next port is tried.
    #[tokio::test]
    async fn probe_answered_for_an_exited_process_is_a_lost_race() {
        let dir =
            std::env::temp_dir().join(format!("kurator-testenv-unit3-{}", std::process::id()));
        let attempts = std::sync::atomic::AtomicUsize::new(0);
        let spec_for = |port: u16| {
            let first = attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
            let script = if first {
                format!("echo 'listen tcp 127.0.0.1:{port}: bind: address already in use'; exit 1")
            } else {
                "exec sleep 30".to_string()
            };
            ProcessSpec {
                name: "racer".into(),
                program: "/bin/sh".into(),
                args: vec!["-c".into(), script],
                log: dir.join("racer.log"),
                pid_file: None,
                env: Vec::new(),
            }
        };
        let timeout = Duration::from_secs(10);
        let mut proc = start_on_free_port(
            spec_for,
            false,
            timeout,
            "/healthz",
            |mut proc| async move {
                if proc.spec.args[1].contains("exit 1") {
                    // Answered "ready" only once the process is already gone.
                    wait::until("the losing run to exit", timeout, || {
                        let exited = proc.exit_status().is_some();
                        async move { exited.then_some(()) }
                    })
                    .await
                    .expect("first run exits");
                }
                (proc, Ok(()))
            },
        )
        .await
        .expect("second port is used");
        assert_eq!(attempts.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert!(proc.is_running(), "the second run is kept");
        assert!(proc.spec.args[1].contains("sleep"));
        proc.kill_blocking();
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn pid_zero_is_never_alive_or_signalled() {
        assert!(!pid_alive(0, None));
        let mut proc = Proc::adopt(spec_with_log("/nonexistent.log".into()), 0);
        assert!(!proc.is_running());
        proc.kill_blocking(); // must not signal our own process group
    }

    #[test]
    fn spawned_process_is_killed_and_reaped() {
        let dir =
            std::env::temp_dir().join(format!("kurator-testenv-unit2-{}", std::process::id()));
        let spec = ProcessSpec {
            name: "sleeper".into(),
            program: "/bin/sleep".into(),
            args: vec!["30".into()],
            log: dir.join("sleeper.log"),
            pid_file: None,
            env: Vec::new(),
        };
        let mut proc = Proc::spawn(spec, false).expect("spawn");
        assert!(proc.is_running());
        assert!(pid_alive(
            proc.pid,
            Some(std::path::Path::new("/bin/sleep"))
        ));
        proc.kill_blocking();
        assert!(!proc.is_running());
        assert!(
            fs::read_to_string(dir.join("sleeper.log"))
                .expect("log")
                .contains("starting sleeper")
        );
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
