//! Kyverno's real Helm charts, `kyverno` and `kyverno-policies`, packaged from the
//! `github.com/kyverno/kyverno` Go module (its `charts/` directory) for [`HelmRepo`].
//!
//! Two module versions are packaged: v1.10.0, whose charts (3.0.0) are Kurator's default,
//! and [`KYVERNO_VERSION`], whose charts ([`KYVERNO_CHART_VERSION`]) match the Kyverno
//! binaries the test environment runs (a Fleet selects them with its chart override). The
//! module source comes from the Go module cache, downloaded through the module proxy like
//! every other pinned source. Packaging follows `helm package`: every file of the chart
//! directory except what its `.helmignore` excludes, under one top-level `<chart>/`
//! directory. The archives are cached in `<cache>/charts/kyverno-<module version>-<recipe>/`,
//! so serving them needs no Go after the first time.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::binaries::{cache_dir, prebuilt_dir, prepare_src};
use crate::error::{Error, Result};
use crate::go_module::{CacheLock, module_source};
use crate::helm_repo::{HelmRepo, chart_archive, chart_metadata, write_atomically, write_index};
use crate::kyverno_binaries::{
    KYVERNO_CHART_VERSION, KYVERNO_MODULE, KYVERNO_VERSION, kyverno_wrapper,
};

/// Chart names, as in the module's `charts/` and Kurator's policy plugin.
pub const KYVERNO_CHART_NAMES: [&str; 2] = ["kyverno", "kyverno-policies"];

/// `(module version, chart version)` of every packaged chart pair: Kurator's default first.
pub const KYVERNO_CHART_RELEASES: [(&str, &str); 2] = [
    ("v1.10.0", "3.0.0"),
    (KYVERNO_VERSION, KYVERNO_CHART_VERSION),
];

/// Directory (inside `KURATOR_TESTENV_BIN_DIR`) holding prebuilt Kyverno chart archives.
pub const PREBUILT_KYVERNO_CHARTS_DIR: &str = "kyverno-charts";

/// Bump when the packaging changes: part of the cache directory name.
const RECIPE: &str = "pkg1";

/// One packaged chart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KyvernoChart {
    pub name: String,
    pub version: String,
    /// `<name>-<version>.tgz` in the cache.
    pub archive: PathBuf,
}

/// Packages (first time only) and returns both charts of every entry of
/// [`KYVERNO_CHART_RELEASES`], in that order, `kyverno` before `kyverno-policies`.
///
/// **Blocking** (Go downloads the module source, ~4 MB, if it is not cached). With
/// `KURATOR_TESTENV_BIN_DIR` set, the archives are taken from its `kyverno-charts/`.
pub fn ensure_kyverno_charts() -> Result<Vec<KyvernoChart>> {
    let prebuilt = prebuilt_dir().map(|dir| dir.join(PREBUILT_KYVERNO_CHARTS_DIR));
    let cache = cache_dir()?;
    let mut charts = Vec::new();
    for (module_version, chart_version) in KYVERNO_CHART_RELEASES {
        let dir = match &prebuilt {
            Some(dir) => dir.clone(),
            None => cache
                .join("charts")
                .join(format!("kyverno-{module_version}-{RECIPE}")),
        };
        if prebuilt.is_none() && !dir.is_dir() {
            let _lock = CacheLock::acquire(&cache)?;
            if !dir.is_dir() {
                package_release(&cache, module_version, chart_version, &dir)?;
            }
        }
        for name in KYVERNO_CHART_NAMES {
            let archive = dir.join(format!("{name}-{chart_version}.tgz"));
            if !archive.is_file() {
                return Err(Error::MissingPrebuilt(archive));
            }
            charts.push(KyvernoChart {
                name: name.to_string(),
                version: chart_version.to_string(),
                archive,
            });
        }
    }
    Ok(charts)
}

/// Copies every Kyverno chart archive into `repo` and regenerates its index once.
///
/// A repository that already holds another archive of the same name and version is refused
/// rather than overwritten. Point Kurator's
/// `--chart-mirror https://kyverno.github.io/kyverno/=<repo url>/` at it.
pub fn add_kyverno_charts(repo: &HelmRepo) -> Result<Vec<KyvernoChart>> {
    write_kyverno_charts(repo.dir())
}

/// Copies every Kyverno chart archive into `dir` (which must exist) and regenerates
/// `<dir>/index.yaml`; for a repository served with [`crate::serve_helm_repo`]. Returns the
/// charts with their archive paths in `dir`.
pub fn write_kyverno_charts(dir: &Path) -> Result<Vec<KyvernoChart>> {
    let mut copied = Vec::new();
    for chart in ensure_kyverno_charts()? {
        let bytes =
            fs::read(&chart.archive).map_err(|e| Error::io("reading", &chart.archive, e))?;
        let archive = dir.join(format!("{}-{}.tgz", chart.name, chart.version));
        if fs::read(&archive).is_ok_and(|existing| existing != bytes) {
            return Err(Error::HelmRepo(format!(
                "{} already holds another {} {}; serve the real charts from their own \
                 repository",
                dir.display(),
                chart.name,
                chart.version
            )));
        }
        write_atomically(&archive, &bytes)?;
        copied.push(KyvernoChart { archive, ..chart });
    }
    write_index(dir)?;
    Ok(copied)
}

/// Packages both charts of the module at `module_version` into `dest` (a temporary
/// directory renamed into place).
fn package_release(
    cache: &Path,
    module_version: &str,
    chart_version: &str,
    dest: &Path,
) -> Result<()> {
    let src = prepare_src(cache, &kyverno_wrapper())?;
    let module = module_source(&src, KYVERNO_MODULE, module_version)?;
    let parent = dest
        .parent()
        .ok_or_else(|| Error::Usage(format!("no parent directory for {}", dest.display())))?;
    fs::create_dir_all(parent).map_err(|e| Error::io("creating", parent, e))?;
    let tmp = parent.join(format!(
        ".kyverno-{module_version}.tmp-{}",
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(|e| Error::io("creating", &tmp, e))?;
    for name in KYVERNO_CHART_NAMES {
        let bytes = package_chart(&module.join("charts").join(name), name, chart_version).map_err(
            |message| Error::GoModule {
                module: format!("{KYVERNO_MODULE}@{module_version}"),
                message: format!("chart {name}: {message}"),
            },
        )?;
        write_atomically(&tmp.join(format!("{name}-{chart_version}.tgz")), &bytes)?;
    }
    fs::rename(&tmp, dest).map_err(|e| Error::io("renaming chart directory to", dest, e))?;
    tracing::info!(module_version, chart_version, dir = %dest.display(), "packaged Kyverno charts");
    Ok(())
}

/// A chart archive of `chart_dir`, as `helm package` would make it, after checking that its
/// `Chart.yaml` names `name` and `version`.
pub(crate) fn package_chart(
    chart_dir: &Path,
    name: &str,
    version: &str,
) -> std::result::Result<Vec<u8>, String> {
    let mut files = BTreeMap::new();
    let walk = ignore::WalkBuilder::new(chart_dir)
        // Only `.helmignore` counts: neither .gitignore rules nor hidden-file filtering apply
        // to charts.
        .standard_filters(false)
        .add_custom_ignore_filename(".helmignore")
        .build();
    for entry in walk {
        let entry = entry.map_err(|e| e.to_string())?;
        if !entry.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        let path = entry.path();
        let relative = path.strip_prefix(chart_dir).map_err(|e| e.to_string())?;
        let bytes = fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        files.insert(relative.to_path_buf(), bytes);
    }
    let archive = chart_archive(name, &files).map_err(|e| e.to_string())?;
    let meta = chart_metadata(&archive)?;
    let field = |k: &str| meta.get(k).and_then(|v| v.as_str()).unwrap_or_default();
    if field("name") != name || field("version") != version {
        return Err(format!(
            "Chart.yaml says {} {}, expected {name} {version}",
            field("name"),
            field("version")
        ));
    }
    Ok(archive)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helmignore_rules_and_chart_yaml_are_honoured() {
        let dir =
            std::env::temp_dir().join(format!("kurator-kyverno-chart-unit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        for (path, text) in [
            ("Chart.yaml", "apiVersion: v2\nname: demo\nversion: 1.2.3\n"),
            (".helmignore", "ci/\nREADME.md.gotmpl\n"),
            ("README.md.gotmpl", "ignored"),
            ("ci/values.yaml", "ignored: true"),
            ("templates/cm.yaml", "kind: ConfigMap"),
            (
                "charts/sub/Chart.yaml",
                "apiVersion: v2\nname: sub\nversion: 0.0.1\n",
            ),
        ] {
            let p = dir.join(path);
            fs::create_dir_all(p.parent().expect("parent")).expect("dir");
            fs::write(p, text).expect("write");
        }
        let archive = package_chart(&dir, "demo", "1.2.3").expect("package");
        let names = crate::helm_repo::tests::archive_entry_names(&archive);
        assert_eq!(
            names,
            [
                "demo/.helmignore",
                "demo/Chart.yaml",
                "demo/charts/sub/Chart.yaml",
                "demo/templates/cm.yaml"
            ]
        );
        let err = package_chart(&dir, "demo", "9.9.9").unwrap_err();
        assert!(err.contains("expected demo 9.9.9"), "{err}");
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
