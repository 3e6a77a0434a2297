//! Building and caching the `thanos` binary (sidecar, query and store gateway are subcommands
//! of one program) and finding Debian's `prometheus`.
//!
//! Same machinery as the other binaries (see `binaries.rs`): the wrapper Go module
//! `tools/testenv/thanos` is embedded here and `go build` of only `cmd/thanos` runs under the
//! cache lock into `<cache>/bin/thanos-<version>-<hash8>`.

use std::path::{Path, PathBuf};

use crate::binaries::{Built, Target, Wrapper, ensure_targets, pick_prebuilt, prebuilt_dir};
use crate::error::{Error, Result};

/// The Thanos release the test environment runs: the appVersion of the bitnami thanos chart
/// 12.5.1 that Kurator installs. There is no later 0.31.x; 0.31.0 builds with Go 1.26 and
/// runs once one start-up check is raised (see `tools/testenv/thanos/go.mod`).
pub const THANOS_VERSION: &str = "v0.31.0";

/// The Debian package that provides [`prometheus_binary`].
pub const PROMETHEUS_PACKAGE: &str = "prometheus";

const THANOS_GO_MOD: &str = include_str!("../../../tools/testenv/thanos/go.mod");
const THANOS_GO_SUM: &str = include_str!("../../../tools/testenv/thanos/go.sum");

fn thanos_wrapper() -> Wrapper {
    Wrapper {
        name: "thanos",
        go_mod: THANOS_GO_MOD,
        go_sum: THANOS_GO_SUM,
        version: THANOS_VERSION,
        // What Thanos's own release build (promu) stamps, so `thanos --version` is true.
        ldflags: format!(
            "-s -w -X github.com/prometheus/common/version.Version={}",
            THANOS_VERSION.trim_start_matches('v')
        ),
    }
}

/// The path of the `thanos` binary, building it first if missing (cold: several minutes on
/// 2 cores; serialised with the other builds by the cache lock).
///
/// **Blocking**: from async code call it through [`tokio::task::spawn_blocking`].
///
/// With `KURATOR_TESTENV_BIN_DIR` set, `thanos` is taken from that directory.
pub fn ensure_thanos_binary() -> Result<PathBuf> {
    if let Some(dir) = prebuilt_dir() {
        return pick_prebuilt(&dir, "thanos");
    }
    let wrapper = thanos_wrapper();
    let targets = [Target {
        wrapper: &wrapper,
        binary: "thanos",
        package: "github.com/thanos-io/thanos/cmd/thanos",
        crds: None,
    }];
    match <[Built; 1]>::try_from(ensure_targets(&targets)?) {
        Ok([thanos]) => Ok(thanos.binary),
        Err(_) => unreachable!("one target"),
    }
}

/// Debian's `prometheus` (2.42.0 on bookworm): the first `prometheus` on `PATH`, else
/// `/usr/bin/prometheus`, else `KURATOR_TESTENV_BIN_DIR/prometheus`. Not built from source:
/// the Debian package is what CI installs (`scripts/test`).
pub fn prometheus_binary() -> Result<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("prometheus"))
            .find(|p| p.is_file())
    });
    let candidates = on_path
        .into_iter()
        .chain([PathBuf::from("/usr/bin/prometheus")])
        .chain(prebuilt_dir().map(|d| d.join("prometheus")));
    for candidate in candidates {
        if Path::new(&candidate).is_file() {
            return Ok(candidate);
        }
    }
    Err(Error::Usage(format!(
        "prometheus not found on PATH nor at /usr/bin/prometheus: install the Debian package \
         `{PROMETHEUS_PACKAGE}` (apt-get install {PROMETHEUS_PACKAGE})"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_wrapper_pins_the_version_and_copies_thanos_replaces() {
        assert!(THANOS_GO_MOD.contains("github.com/thanos-io/thanos v0.31.0"));
        assert!(THANOS_GO_MOD.contains("tool github.com/thanos-io/thanos/cmd/thanos\n"));
        // Replaces of a dependency are ignored by Go: v0.31.0's own must be repeated (its
        // gRPC pin above all, for weaveworks/common: weaveworks/common#239).
        assert!(THANOS_GO_MOD.contains("google.golang.org/grpc => google.golang.org/grpc v1.45.0"));
        assert!(
            THANOS_GO_MOD
                .contains("k8s.io/klog/v2 => github.com/simonpasquier/klog-gokit/v3 v3.0.0")
        );
        // The one raised module: the 2022 version panics at start-up on Go 1.26.
        assert!(
            THANOS_GO_MOD
                .contains("go4.org/unsafe/assume-no-moving-gc v0.0.0-20231121144256-b99613f794b6")
        );
        assert!(
            thanos_wrapper()
                .ldflags
                .contains("common/version.Version=0.31.0")
        );
    }
}
