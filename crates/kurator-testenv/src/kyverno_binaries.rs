//! Building and caching Kyverno's admission controller and reports controller and its CRDs.
//!
//! Same machinery as the other binaries (see `binaries.rs`): the wrapper Go module
//! `tools/testenv/kyverno` is embedded here and built under the cache lock into
//! `<cache>/bin/<binary>-<version>-<hash8>`; the CRDs (`config/crds/**.yaml` of the module,
//! the same the chart installs) are cached next to the admission controller.

use std::fs;
use std::path::{Path, PathBuf};

use crate::binaries::{
    Built, CrdSource, Target, Wrapper, ensure_targets, pick_prebuilt, prebuilt_dir,
};
use crate::error::{Error, Result};

/// The Kyverno release the test environment runs.
///
/// Not v1.10.0 (the appVersion of chart 3.0.0, Kurator's default): v1.10 and v1.11 serve
/// their webhooks on a hard-coded `:9443`, so a second member's Kyverno on the same machine
/// cannot listen and registers webhooks that reach the first member's Kyverno instead.
/// v1.12.0 is the oldest release with `--webhookServerPort`; its charts are 3.2.0.
pub const KYVERNO_VERSION: &str = "v1.12.0";
/// The kyverno and kyverno-policies chart version that matches [`KYVERNO_VERSION`].
pub const KYVERNO_CHART_VERSION: &str = "3.2.0";

/// The Go module holding Kyverno's commands, charts and CRDs.
pub(crate) const KYVERNO_MODULE: &str = "github.com/kyverno/kyverno";

/// Directory (inside `KURATOR_TESTENV_BIN_DIR`) holding prebuilt Kyverno CRD YAML files.
pub const PREBUILT_KYVERNO_CRDS_DIR: &str = "kyverno-crds";

const KYVERNO_GO_MOD: &str = include_str!("../../../tools/testenv/kyverno/go.mod");
const KYVERNO_GO_SUM: &str = include_str!("../../../tools/testenv/kyverno/go.sum");

/// Paths of Kyverno's binaries and CRDs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KyvernoBinaries {
    /// `cmd/kyverno`: the admission controller (webhooks, policy validation).
    pub admission_controller: PathBuf,
    /// `cmd/reports-controller`: turns admission and background scan results into
    /// PolicyReports.
    pub reports_controller: PathBuf,
    /// Directory of CRD YAML files (one CRD per file).
    pub crd_dir: PathBuf,
}

impl KyvernoBinaries {
    /// The CRD YAML texts, sorted by file name (for [`crate::parse_crds`]).
    pub fn crds(&self) -> Result<Vec<String>> {
        let mut files: Vec<PathBuf> = fs::read_dir(&self.crd_dir)
            .map_err(|e| Error::io("reading", &self.crd_dir, e))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| fs::read_to_string(p).map_err(|e| Error::io("reading", p, e)))
            .collect()
    }
}

pub(crate) fn kyverno_wrapper() -> Wrapper {
    Wrapper {
        name: "kyverno",
        go_mod: KYVERNO_GO_MOD,
        go_sum: KYVERNO_GO_SUM,
        version: KYVERNO_VERSION,
        ldflags: "-s -w".to_string(),
    }
}

/// Returns the paths of Kyverno's admission controller, reports controller and CRDs,
/// building missing ones first (cold: about 7 minutes on 2 cores; serialised with the other
/// builds by the cache lock).
///
/// **Blocking**: from async code call it through [`tokio::task::spawn_blocking`].
///
/// With `KURATOR_TESTENV_BIN_DIR` set, `kyverno`, `kyverno-reports-controller` and the CRD
/// directory `kyverno-crds/` are taken from that directory.
pub fn ensure_kyverno_binaries() -> Result<KyvernoBinaries> {
    if let Some(dir) = prebuilt_dir() {
        return prebuilt(&dir);
    }
    let wrapper = kyverno_wrapper();
    let targets = [
        Target {
            wrapper: &wrapper,
            binary: "kyverno",
            package: "github.com/kyverno/kyverno/cmd/kyverno",
            crds: Some(CrdSource {
                module: KYVERNO_MODULE,
                dir: "config/crds",
            }),
        },
        Target {
            wrapper: &wrapper,
            binary: "kyverno-reports-controller",
            package: "github.com/kyverno/kyverno/cmd/reports-controller",
            crds: None,
        },
    ];
    match <[Built; 2]>::try_from(ensure_targets(&targets)?) {
        Ok([admission, reports]) => Ok(KyvernoBinaries {
            admission_controller: admission.binary,
            reports_controller: reports.binary,
            crd_dir: admission.crds.unwrap_or_default(),
        }),
        Err(_) => unreachable!("two targets"),
    }
}

fn prebuilt(dir: &Path) -> Result<KyvernoBinaries> {
    let crd_dir = dir.join(PREBUILT_KYVERNO_CRDS_DIR);
    if !crd_dir.is_dir() {
        return Err(Error::MissingPrebuilt(crd_dir));
    }
    Ok(KyvernoBinaries {
        admission_controller: pick_prebuilt(dir, "kyverno")?,
        reports_controller: pick_prebuilt(dir, "kyverno-reports-controller")?,
        crd_dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_wrapper_pins_the_version_and_copies_kyvernos_replaces() {
        assert!(KYVERNO_GO_MOD.contains("github.com/kyverno/kyverno v1.12.0 "));
        assert!(KYVERNO_GO_MOD.contains("\tgithub.com/kyverno/kyverno/cmd/kyverno\n"));
        assert!(KYVERNO_GO_MOD.contains("\tgithub.com/kyverno/kyverno/cmd/reports-controller\n"));
        // Replaces of a dependency are ignored by Go: v1.12.0's own two must be repeated.
        assert!(KYVERNO_GO_MOD.contains(
            "github.com/sigstore/cosign/v2 v2.2.4 => github.com/kyverno/cosign/v2 v2.2.4-deps-fix"
        ));
        assert!(KYVERNO_GO_MOD.contains(
            "k8s.io/pod-security-admission v0.29.2 => github.com/YTGhost/pod-security-admission"
        ));
    }
}
