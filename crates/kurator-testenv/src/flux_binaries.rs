//! Building and caching the Flux controllers and their CRDs.
//!
//! Same machinery as the control-plane binaries (see `binaries.rs`): one wrapper Go module
//! per controller in `tools/testenv/flux-*`, embedded here, built under the cache lock into
//! `<cache>/bin/<controller>-<version>-<hash8>`. The CRDs of each controller are taken from
//! its module zip (`config/crd/bases/*.yaml`) at build time and cached next to the binary in
//! `<cache>/bin/<controller>-<version>-<hash8>.crds/`, so starting Flux needs no Go.

use std::fs;
use std::path::{Path, PathBuf};

use crate::binaries::{
    Built, CrdSource, Target, Wrapper, ensure_targets, pick_prebuilt, prebuilt_dir,
};
use crate::error::{Error, Result};

/// fluxcd/source-controller release.
pub const FLUX_SOURCE_VERSION: &str = "v1.9.1";
/// fluxcd/kustomize-controller release.
pub const FLUX_KUSTOMIZE_VERSION: &str = "v1.9.4";
/// fluxcd/helm-controller release.
pub const FLUX_HELM_VERSION: &str = "v1.6.3";

/// Directory (inside `KURATOR_TESTENV_BIN_DIR`) holding prebuilt Flux CRD YAML files.
pub const PREBUILT_FLUX_CRDS_DIR: &str = "flux-crds";

const SOURCE_GO_MOD: &str = include_str!("../../../tools/testenv/flux-source/go.mod");
const SOURCE_GO_SUM: &str = include_str!("../../../tools/testenv/flux-source/go.sum");
const KUSTOMIZE_GO_MOD: &str = include_str!("../../../tools/testenv/flux-kustomize/go.mod");
const KUSTOMIZE_GO_SUM: &str = include_str!("../../../tools/testenv/flux-kustomize/go.sum");
const HELM_GO_MOD: &str = include_str!("../../../tools/testenv/flux-helm/go.mod");
const HELM_GO_SUM: &str = include_str!("../../../tools/testenv/flux-helm/go.sum");

/// Paths of the Flux controllers and of their CRDs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FluxBinaries {
    pub source_controller: PathBuf,
    pub kustomize_controller: PathBuf,
    pub helm_controller: PathBuf,
    /// Directories with CRD YAML files (one document per file), source-controller's first.
    pub crd_dirs: Vec<PathBuf>,
}

impl FluxBinaries {
    /// The CRD YAML files, sorted per directory, source-controller's first.
    pub fn crd_files(&self) -> Result<Vec<PathBuf>> {
        let mut all = Vec::new();
        for dir in &self.crd_dirs {
            let mut files: Vec<PathBuf> = fs::read_dir(dir)
                .map_err(|e| Error::io("reading", dir, e))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect();
            files.sort();
            all.extend(files);
        }
        Ok(all)
    }

    /// The CRD YAML texts (see [`FluxBinaries::crd_files`]).
    pub fn crds(&self) -> Result<Vec<String>> {
        self.crd_files()?
            .iter()
            .map(|p| fs::read_to_string(p).map_err(|e| Error::io("reading", p, e)))
            .collect()
    }
}

fn wrapper(
    name: &'static str,
    go_mod: &'static str,
    go_sum: &'static str,
    version: &'static str,
) -> Wrapper {
    Wrapper {
        name,
        go_mod,
        go_sum,
        version,
        ldflags: "-s -w".to_string(),
    }
}

/// Flux keeps its CRDs in the root module zip under `config/crd/bases/`.
fn flux_crds(module: &'static str) -> CrdSource {
    CrdSource {
        module,
        dir: "config/crd/bases",
    }
}

fn wrappers() -> [Wrapper; 3] {
    [
        wrapper(
            "flux-source",
            SOURCE_GO_MOD,
            SOURCE_GO_SUM,
            FLUX_SOURCE_VERSION,
        ),
        wrapper(
            "flux-kustomize",
            KUSTOMIZE_GO_MOD,
            KUSTOMIZE_GO_SUM,
            FLUX_KUSTOMIZE_VERSION,
        ),
        wrapper("flux-helm", HELM_GO_MOD, HELM_GO_SUM, FLUX_HELM_VERSION),
    ]
}

/// Returns the paths of source-, kustomize- and helm-controller and their CRDs, building
/// missing ones first (cold: several minutes each; serialised with [`crate::ensure_binaries`]
/// by the same cache lock).
///
/// **Blocking**: from async code call it through [`tokio::task::spawn_blocking`] (the
/// [`crate::TestEnv`] builder does this when [`crate::TestEnvBuilder::flux`] is on).
///
/// With `KURATOR_TESTENV_BIN_DIR` set, `source-controller`, `kustomize-controller`,
/// `helm-controller` and the CRD directory `flux-crds/` are taken from that directory.
pub fn ensure_flux_binaries() -> Result<FluxBinaries> {
    if let Some(dir) = prebuilt_dir() {
        return prebuilt(&dir);
    }
    let [source, kustomize, helm] = wrappers();
    let targets = [
        Target {
            wrapper: &source,
            binary: "source-controller",
            package: "github.com/fluxcd/source-controller",
            crds: Some(flux_crds("github.com/fluxcd/source-controller")),
        },
        Target {
            wrapper: &kustomize,
            binary: "kustomize-controller",
            package: "github.com/fluxcd/kustomize-controller",
            crds: Some(flux_crds("github.com/fluxcd/kustomize-controller")),
        },
        Target {
            wrapper: &helm,
            binary: "helm-controller",
            package: "github.com/fluxcd/helm-controller",
            crds: Some(flux_crds("github.com/fluxcd/helm-controller")),
        },
    ];
    let built = ensure_targets(&targets)?;
    let crd_dirs = built.iter().filter_map(|b| b.crds.clone()).collect();
    match <[Built; 3]>::try_from(built) {
        Ok([source, kustomize, helm]) => Ok(FluxBinaries {
            source_controller: source.binary,
            kustomize_controller: kustomize.binary,
            helm_controller: helm.binary,
            crd_dirs,
        }),
        Err(_) => unreachable!("three targets"),
    }
}

fn prebuilt(dir: &Path) -> Result<FluxBinaries> {
    let crds = dir.join(PREBUILT_FLUX_CRDS_DIR);
    if !crds.is_dir() {
        return Err(Error::MissingPrebuilt(crds));
    }
    Ok(FluxBinaries {
        source_controller: pick_prebuilt(dir, "source-controller")?,
        kustomize_controller: pick_prebuilt(dir, "kustomize-controller")?,
        helm_controller: pick_prebuilt(dir, "helm-controller")?,
        crd_dirs: vec![crds],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_wrappers_pin_the_versions() {
        let tool = |ctrl: &str| format!("tool github.com/fluxcd/{ctrl}\n");
        assert!(SOURCE_GO_MOD.contains(&tool("source-controller")));
        assert!(SOURCE_GO_MOD.contains("github.com/fluxcd/source-controller v1.9.1 "));
        assert!(KUSTOMIZE_GO_MOD.contains(&tool("kustomize-controller")));
        assert!(KUSTOMIZE_GO_MOD.contains("github.com/fluxcd/kustomize-controller v1.9.4 "));
        assert!(HELM_GO_MOD.contains(&tool("helm-controller")));
        assert!(HELM_GO_MOD.contains("github.com/fluxcd/helm-controller v1.6.3 "));
        // The replace directives upstream needs (one go-digest pin differs per controller).
        assert!(SOURCE_GO_MOD.contains("go-digest v1.0.1-0.20220411205349-bde1400a84be"));
        assert!(KUSTOMIZE_GO_MOD.contains("go-digest v1.0.1-0.20220411205349-bde1400a84be"));
        assert!(
            KUSTOMIZE_GO_MOD
                .contains("sigs.k8s.io/kustomize/api => sigs.k8s.io/kustomize/api v0.21.1")
        );
        assert!(HELM_GO_MOD.contains("go-digest v1.0.1-0.20231025023718-d50d2fec9c98"));
    }

    #[test]
    fn wrappers_hash_differently() {
        let [a, b, c] = wrappers();
        assert_ne!(a.hash8(), b.hash8());
        assert_ne!(b.hash8(), c.hash8());
    }
}
