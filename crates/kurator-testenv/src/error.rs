//! Error type of the test environment.

use std::path::PathBuf;

/// Everything that can go wrong while building binaries or running control planes.
///
/// Startup failures name the process and carry the tail of its log, so a failed test shows
/// why kube-apiserver or etcd refused to come up without digging through files.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// No usable cache directory could be determined.
    #[error(
        "cannot determine the testenv cache dir: set KURATOR_TESTENV_CACHE, XDG_CACHE_HOME or HOME"
    )]
    NoCacheDir,

    /// The Go toolchain is missing.
    #[error(
        "cannot run the Go toolchain `{go}` ({source}); install Go >= 1.26 or set \
         KURATOR_TESTENV_BIN_DIR to a directory with prebuilt etcd, kube-apiserver and \
         kube-controller-manager"
    )]
    GoMissing {
        go: String,
        #[source]
        source: std::io::Error,
    },

    /// `go build` failed.
    #[error("building {binary} failed ({status}); full log: {log}\n--- last lines ---\n{tail}")]
    Build {
        binary: String,
        status: String,
        log: PathBuf,
        tail: String,
    },

    /// A Go module's source (CRDs, charts) could not be fetched from the Go module cache or
    /// proxy, or lacks what was expected.
    #[error("Go module {module}: {message}")]
    GoModule { module: String, message: String },

    /// A `git` command failed.
    #[error("`git {args}` failed ({status}): {stderr}")]
    Git {
        args: String,
        status: String,
        stderr: String,
    },

    /// A chart archive or repository index could not be written or read.
    #[error("helm repository: {0}")]
    HelmRepo(String),

    /// The real plugin chart archives (`../shared/charts/`, `KURATOR_PLUGIN_CHARTS`) are
    /// missing or not what they should be; the message names the path.
    #[error("plugin charts: {0}")]
    PluginCharts(String),

    /// A prebuilt binary named by KURATOR_TESTENV_BIN_DIR is missing.
    #[error("KURATOR_TESTENV_BIN_DIR is set but {0} does not exist or is not a file")]
    MissingPrebuilt(PathBuf),

    /// Certificate generation failed.
    #[error("generating certificates: {0}")]
    Certs(#[from] rcgen::Error),

    /// A process could not be spawned.
    #[error("spawning {process} ({program}): {source}")]
    Spawn {
        process: String,
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A process exited or never became ready.
    #[error("{process} failed to start: {reason}; log: {log}\n--- last lines ---\n{tail}")]
    Startup {
        process: String,
        reason: String,
        log: PathBuf,
        tail: String,
    },

    /// Waiting for a condition timed out ([`crate::wait`]); `last` is what was last seen.
    #[error("timed out after {seconds:.1}s waiting for {what}{}", last_observed(.last))]
    Timeout {
        what: String,
        seconds: f64,
        last: Option<String>,
    },

    /// A Kubernetes API call failed.
    #[error("{context}: {source}")]
    Kube {
        context: String,
        #[source]
        source: kube::Error,
    },

    /// A kubeconfig could not be loaded.
    #[error("loading kubeconfig for cluster {cluster}: {source}")]
    Kubeconfig {
        cluster: String,
        #[source]
        source: kube::config::KubeconfigError,
    },

    /// A CRD document could not be parsed.
    #[error("invalid CustomResourceDefinition document #{index}: {message}")]
    InvalidCrd { index: usize, message: String },

    /// The detached state file is invalid.
    #[error("invalid state file {path}: {message}")]
    State { path: PathBuf, message: String },

    /// A caller asked for something that does not exist or is not allowed.
    #[error("{0}")]
    Usage(String),
}

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn kube(context: impl Into<String>, source: kube::Error) -> Self {
        Error::Kube {
            context: context.into(),
            source,
        }
    }
}

fn last_observed(last: &Option<String>) -> String {
    last.as_ref()
        .map(|l| format!("; last observed: {l}"))
        .unwrap_or_default()
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
