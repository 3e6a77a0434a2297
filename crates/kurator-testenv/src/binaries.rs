//! Building and caching etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok
//! (and, through the same machinery, the Flux controllers: see `flux_binaries.rs`).
//!
//! The binaries are compiled from the pinned wrapper Go modules in `tools/testenv/`, whose
//! `go.mod`/`go.sum` are embedded in this crate so that the `kurator` binary is self-contained.
//! Each binary is cached under `<cache>/bin/<name>-<version>-<hash8>`, where `hash8` covers the
//! wrapper files and the build flags: editing a wrapper rebuilds, everything else is free.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::go_module::{CacheLock, go_command, module_source, yaml_files_under};

/// Kubernetes release the control planes run (kube-apiserver, kube-controller-manager,
/// kube-scheduler).
pub const KUBERNETES_VERSION: &str = "v1.35.4";
/// etcd release.
pub const ETCD_VERSION: &str = "v3.6.16";
/// kwok release (simulated nodes: it plays the kubelet's part for Nodes and Pods).
pub const KWOK_VERSION: &str = "v0.8.0";

/// Fixed build date stamped into the Kubernetes binaries (reproducible builds).
const BUILD_DATE: &str = "2026-01-01T00:00:00Z";
/// Bump when the build recipe changes in a way the flags below do not capture.
const RECIPE: &str = "kurator-testenv-build-1";

const K8S_GO_MOD: &str = include_str!("../../../tools/testenv/kubernetes/go.mod");
const K8S_GO_SUM: &str = include_str!("../../../tools/testenv/kubernetes/go.sum");
const ETCD_GO_MOD: &str = include_str!("../../../tools/testenv/etcd/go.mod");
const ETCD_GO_SUM: &str = include_str!("../../../tools/testenv/etcd/go.sum");
const KWOK_GO_MOD: &str = include_str!("../../../tools/testenv/kwok/go.mod");
const KWOK_GO_SUM: &str = include_str!("../../../tools/testenv/kwok/go.sum");

/// Environment variable naming a directory with prebuilt `etcd`, `kube-apiserver`,
/// `kube-controller-manager`, `kube-scheduler` and `kwok` (no build happens then).
pub const BIN_DIR_ENV: &str = "KURATOR_TESTENV_BIN_DIR";
/// Environment variable overriding the cache directory.
pub const CACHE_ENV: &str = "KURATOR_TESTENV_CACHE";
/// Environment variable naming the `go` executable (default: `go` on `PATH`).
pub const GO_ENV: &str = "KURATOR_TESTENV_GO";

/// Paths of the control-plane binaries (Flux: [`crate::FluxBinaries`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binaries {
    pub etcd: PathBuf,
    pub kube_apiserver: PathBuf,
    pub kube_controller_manager: PathBuf,
    pub kube_scheduler: PathBuf,
    pub kwok: PathBuf,
}

pub(crate) struct Wrapper {
    /// Directory name under tools/testenv.
    pub name: &'static str,
    pub go_mod: &'static str,
    pub go_sum: &'static str,
    pub version: &'static str,
    pub ldflags: String,
}

pub(crate) struct Target<'a> {
    pub wrapper: &'a Wrapper,
    pub binary: &'static str,
    /// Main package to `go build`.
    pub package: &'static str,
    /// CRDs cached next to the binary, from the module source (at `wrapper.version`).
    pub crds: Option<CrdSource>,
}

/// Where a module keeps its CRDs: every `*.yaml` under `dir` (recursively) of `module`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CrdSource {
    pub module: &'static str,
    /// Relative to the module root, e.g. `config/crd/bases`.
    pub dir: &'static str,
}

fn kubernetes_wrapper() -> Wrapper {
    let v = KUBERNETES_VERSION;
    let minor = v.split('.').nth(1).unwrap_or("0");
    let mut flags = vec!["-s".to_string(), "-w".to_string()];
    for pkg in [
        "k8s.io/component-base/version",
        "k8s.io/client-go/pkg/version",
    ] {
        flags.push(format!("-X {pkg}.gitVersion={v}"));
        flags.push(format!("-X {pkg}.gitMajor=1"));
        flags.push(format!("-X {pkg}.gitMinor={minor}"));
        flags.push(format!("-X {pkg}.gitTreeState=clean"));
        flags.push(format!("-X {pkg}.buildDate={BUILD_DATE}"));
    }
    Wrapper {
        name: "kubernetes",
        go_mod: K8S_GO_MOD,
        go_sum: K8S_GO_SUM,
        version: KUBERNETES_VERSION,
        ldflags: flags.join(" "),
    }
}

fn etcd_wrapper() -> Wrapper {
    Wrapper {
        name: "etcd",
        go_mod: ETCD_GO_MOD,
        go_sum: ETCD_GO_SUM,
        version: ETCD_VERSION,
        ldflags: format!("-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA={ETCD_VERSION}"),
    }
}

fn kwok_wrapper() -> Wrapper {
    Wrapper {
        name: "kwok",
        go_mod: KWOK_GO_MOD,
        go_sum: KWOK_GO_SUM,
        version: KWOK_VERSION,
        // kwok's own release script stamps the version the same way.
        ldflags: format!(
            "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version={}",
            KWOK_VERSION.trim_start_matches('v')
        ),
    }
}

impl Wrapper {
    /// Short hash of the wrapper files and build flags.
    pub(crate) fn hash8(&self) -> String {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for part in [RECIPE, self.go_mod, self.go_sum, &self.ldflags] {
            ctx.update(part.as_bytes());
            ctx.update(&[0]);
        }
        ctx.finish()
            .as_ref()
            .iter()
            .take(4)
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

impl Target<'_> {
    pub(crate) fn file_name(&self) -> String {
        format!(
            "{}-{}-{}",
            self.binary,
            self.wrapper.version,
            self.wrapper.hash8()
        )
    }
}

/// The cache directory: `$KURATOR_TESTENV_CACHE`, else `$XDG_CACHE_HOME/kurator-testenv`, else
/// `$HOME/.cache/kurator-testenv`.
pub fn cache_dir() -> Result<PathBuf> {
    let non_empty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(dir) = non_empty(CACHE_ENV) {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = non_empty("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(dir).join("kurator-testenv"));
    }
    if let Some(home) = non_empty("HOME") {
        return Ok(PathBuf::from(home).join(".cache").join("kurator-testenv"));
    }
    Err(Error::NoCacheDir)
}

/// Returns the paths of etcd, kube-apiserver, kube-controller-manager, kube-scheduler and
/// kwok, building missing ones first.
///
/// **Blocking**: a cold build takes minutes. From async code call it through
/// [`tokio::task::spawn_blocking`] (the [`crate::TestEnv`] builder does this).
///
/// With `KURATOR_TESTENV_BIN_DIR` set, the binaries are taken from that directory and nothing
/// is built. Otherwise they are cached under [`cache_dir`]`/bin`. Builds are serialised by an
/// exclusive file lock on `<cache>/build.lock`, and each binary is written to a temporary
/// path and renamed into place, so concurrent test processes never see a partial file.
pub fn ensure_binaries() -> Result<Binaries> {
    if let Some(dir) = prebuilt_dir() {
        return Ok(Binaries {
            etcd: pick_prebuilt(&dir, "etcd")?,
            kube_apiserver: pick_prebuilt(&dir, "kube-apiserver")?,
            kube_controller_manager: pick_prebuilt(&dir, "kube-controller-manager")?,
            kube_scheduler: pick_prebuilt(&dir, "kube-scheduler")?,
            kwok: pick_prebuilt(&dir, "kwok")?,
        });
    }

    let k8s = kubernetes_wrapper();
    let etcd = etcd_wrapper();
    let kwok = kwok_wrapper();
    let targets = [
        Target {
            wrapper: &etcd,
            binary: "etcd",
            package: "go.etcd.io/etcd/server/v3",
            crds: None,
        },
        Target {
            wrapper: &k8s,
            binary: "kube-apiserver",
            package: "k8s.io/kubernetes/cmd/kube-apiserver",
            crds: None,
        },
        Target {
            wrapper: &k8s,
            binary: "kube-controller-manager",
            package: "k8s.io/kubernetes/cmd/kube-controller-manager",
            crds: None,
        },
        Target {
            wrapper: &k8s,
            binary: "kube-scheduler",
            package: "k8s.io/kubernetes/cmd/kube-scheduler",
            crds: None,
        },
        Target {
            wrapper: &kwok,
            binary: "kwok",
            package: "sigs.k8s.io/kwok/cmd/kwok",
            crds: None,
        },
    ];
    match <[Built; 5]>::try_from(ensure_targets(&targets)?) {
        Ok(
            [
                etcd,
                kube_apiserver,
                kube_controller_manager,
                kube_scheduler,
                kwok,
            ],
        ) => Ok(Binaries {
            etcd: etcd.binary,
            kube_apiserver: kube_apiserver.binary,
            kube_controller_manager: kube_controller_manager.binary,
            kube_scheduler: kube_scheduler.binary,
            kwok: kwok.binary,
        }),
        Err(_) => unreachable!("five targets"),
    }
}

/// `$KURATOR_TESTENV_BIN_DIR`, if set and not empty.
pub(crate) fn prebuilt_dir() -> Option<PathBuf> {
    std::env::var_os(BIN_DIR_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// `<dir>/<name>`, which must be a file.
pub(crate) fn pick_prebuilt(dir: &Path, name: &str) -> Result<PathBuf> {
    let p = dir.join(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(Error::MissingPrebuilt(p))
    }
}

/// A cached build: the binary and, for targets with `crds_module`, the directory of the
/// module's CRD YAML files.
#[derive(Debug)]
pub(crate) struct Built {
    pub binary: PathBuf,
    pub crds: Option<PathBuf>,
}

/// Builds (under the cache lock) whatever of `targets` is not cached yet and returns the
/// cached paths in the order of `targets`.
pub(crate) fn ensure_targets(targets: &[Target<'_>]) -> Result<Vec<Built>> {
    let cache = cache_dir()?;
    let bin_dir = cache.join("bin");
    let built: Vec<Built> = targets
        .iter()
        .map(|t| Built {
            binary: bin_dir.join(t.file_name()),
            crds: t
                .crds
                .map(|_| bin_dir.join(format!("{}.crds", t.file_name()))),
        })
        .collect();
    let missing = |b: &Built| !b.binary.is_file() || b.crds.as_ref().is_some_and(|d| !d.is_dir());

    if built.iter().any(missing) {
        fs::create_dir_all(&bin_dir).map_err(|e| Error::io("creating", &bin_dir, e))?;
        let lock = CacheLock::acquire(&cache)?;
        for (target, paths) in targets.iter().zip(&built) {
            // Re-check under the lock: another process may have built it meanwhile.
            if !paths.binary.is_file() {
                build(&cache, target, &paths.binary)?;
            }
            if let (Some(source), Some(dir)) = (target.crds, &paths.crds)
                && !dir.is_dir()
            {
                copy_crds(&cache, target, source, dir)?;
            }
        }
        drop(lock);
    }
    Ok(built)
}
/// Writes the wrapper module to `<cache>/src/<name>-<hash8>` and returns that directory.
pub(crate) fn prepare_src(cache: &Path, wrapper: &Wrapper) -> Result<PathBuf> {
    let src = cache
        .join("src")
        .join(format!("{}-{}", wrapper.name, wrapper.hash8()));
    fs::create_dir_all(&src).map_err(|e| Error::io("creating", &src, e))?;
    for (file, content) in [("go.mod", wrapper.go_mod), ("go.sum", wrapper.go_sum)] {
        let p = src.join(file);
        fs::write(&p, content).map_err(|e| Error::io("writing", &p, e))?;
    }
    Ok(src)
}

/// Copies the CRD YAML files of `source` (from the Go module cache, downloaded if needed)
/// into `dest` (written to a temporary directory, then renamed).
fn copy_crds(cache: &Path, target: &Target<'_>, source: CrdSource, dest: &Path) -> Result<()> {
    let src = prepare_src(cache, target.wrapper)?;
    let module_dir = module_source(&src, source.module, target.wrapper.version)?;
    let crd_dir = module_dir.join(source.dir);
    let files = yaml_files_under(&crd_dir)?;
    if files.is_empty() {
        return Err(Error::GoModule {
            module: format!("{}@{}", source.module, target.wrapper.version),
            message: format!("no *.yaml in {}", crd_dir.display()),
        });
    }
    let tmp = dest.with_file_name(format!(
        ".{}.crds.tmp-{}",
        target.file_name(),
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(|e| Error::io("creating", &tmp, e))?;
    for file in &files {
        let Some(name) = file.file_name() else {
            continue;
        };
        let to = tmp.join(name);
        // The module cache is read-only; copy contents, not permissions.
        let text = fs::read(file).map_err(|e| Error::io("reading", file, e))?;
        fs::write(&to, text).map_err(|e| Error::io("writing", &to, e))?;
    }
    fs::rename(&tmp, dest).map_err(|e| Error::io("renaming CRD directory to", dest, e))?;
    tracing::info!(module = source.module, crds = files.len(), dir = %dest.display(), "cached CRDs");
    Ok(())
}

fn build(cache: &Path, target: &Target<'_>, dest: &Path) -> Result<()> {
    let wrapper = target.wrapper;
    let src = prepare_src(cache, wrapper)?;
    let logs = cache.join("logs");
    fs::create_dir_all(&logs).map_err(|e| Error::io("creating", &logs, e))?;
    let log_path = logs.join(format!("build-{}.log", target.file_name()));
    let log = File::create(&log_path).map_err(|e| Error::io("creating", &log_path, e))?;
    let log_err = log
        .try_clone()
        .map_err(|e| Error::io("opening", &log_path, e))?;
    let tmp = dest.with_file_name(format!(
        ".{}.tmp-{}",
        target.file_name(),
        std::process::id()
    ));

    eprintln!(
        "kurator-testenv: building {} {} (first run only, several minutes)…",
        target.binary, wrapper.version
    );
    tracing::info!(binary = target.binary, version = wrapper.version, src = %src.display(),
        log = %log_path.display(), "building test environment binary");
    let started = Instant::now();

    let go = go_command();
    let mut cmd = Command::new(&go);
    cmd.current_dir(&src)
        .args(["build", "-mod=mod", "-trimpath", "-ldflags"])
        .arg(&wrapper.ldflags)
        .arg("-o")
        .arg(&tmp)
        .arg(target.package)
        .env("CGO_ENABLED", "0")
        .env("GOWORK", "off")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    let status = cmd
        .status()
        .map_err(|source| Error::GoMissing { go, source })?;
    if !status.success() {
        let _ = fs::remove_file(&tmp);
        return Err(Error::Build {
            binary: target.binary.to_string(),
            status: status.to_string(),
            tail: log_tail(&log_path, 30),
            log: log_path,
        });
    }
    fs::rename(&tmp, dest).map_err(|e| Error::io("renaming build output to", dest, e))?;
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(binary = target.binary, seconds = secs, path = %dest.display(), "built");
    eprintln!(
        "kurator-testenv: built {} in {secs:.0}s -> {}",
        target.binary,
        dest.display()
    );
    Ok(())
}

/// The last `lines` lines of a log file (at most 64 KiB are read). Never fails: an unreadable
/// file yields a note instead.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    const MAX: u64 = 64 * 1024;
    let read = || -> std::io::Result<String> {
        let mut f = File::open(path)?;
        let len = f.metadata()?.len();
        if len > MAX {
            f.seek(SeekFrom::Start(len - MAX))?;
        }
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    match read() {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_versioned_and_hashed() {
        let k8s = kubernetes_wrapper();
        let t = Target {
            wrapper: &k8s,
            binary: "kube-apiserver",
            package: "k8s.io/kubernetes/cmd/kube-apiserver",
            crds: None,
        };
        let name = t.file_name();
        assert!(name.starts_with("kube-apiserver-v1.35.4-"), "{name}");
        assert_eq!(name.len(), "kube-apiserver-v1.35.4-".len() + 8);
        assert_ne!(k8s.hash8(), etcd_wrapper().hash8());
        assert!(
            k8s.ldflags
                .contains("k8s.io/component-base/version.gitVersion=v1.35.4")
        );
        assert!(
            k8s.ldflags
                .contains("k8s.io/client-go/pkg/version.gitMinor=35")
        );
    }

    #[test]
    fn embedded_wrappers_pin_the_versions() {
        assert!(K8S_GO_MOD.contains("k8s.io/kubernetes v1.35.4"));
        assert!(ETCD_GO_MOD.contains("go.etcd.io/etcd/server/v3 v3.6.16"));
        assert!(KWOK_GO_MOD.contains(&format!("sigs.k8s.io/kwok {KWOK_VERSION}")));
        assert!(K8S_GO_MOD.contains("k8s.io/kubernetes/cmd/kube-scheduler"));
    }
}
