//! The Go toolchain as the crate uses it: finding `go`, locating a module's source in the Go
//! module cache (downloading it through the module proxy if needed), and the cache lock that
//! serialises builds between test processes.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::binaries::GO_ENV;
use crate::error::{Error, Result};

/// `$KURATOR_TESTENV_GO`, else `go` from `PATH`, else the standard `/usr/local/go/bin/go`.
pub(crate) fn go_command() -> String {
    if let Some(go) = std::env::var(GO_ENV).ok().filter(|v| !v.is_empty()) {
        return go;
    }
    let on_path = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("go").is_file()));
    let fallback = Path::new("/usr/local/go/bin/go");
    if !on_path && fallback.is_file() {
        return fallback.display().to_string();
    }
    "go".to_string()
}

/// The extracted source of `module@version` in the Go module cache (read-only), downloaded
/// through the module proxy first if missing: `go mod download -json`, run in `module_dir`
/// (a wrapper module, so that its `GOFLAGS`-free environment and go.sum apply).
pub(crate) fn module_source(module_dir: &Path, module: &str, version: &str) -> Result<PathBuf> {
    let module_at = format!("{module}@{version}");
    let fail = |message: String| Error::GoModule {
        module: module_at.clone(),
        message,
    };
    let go = go_command();
    let output = Command::new(&go)
        .current_dir(module_dir)
        .args(["mod", "download", "-json", &module_at])
        .env("GOWORK", "off")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::GoMissing {
            go: go.clone(),
            source,
        })?;
    let info: serde_json::Value = serde_json::from_slice(&output.stdout).map_err(|e| {
        fail(format!(
            "`go mod download -json` printed no JSON ({e}); stderr: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    })?;
    if let Some(err) = info.get("Error").and_then(|e| e.as_str()) {
        return Err(fail(err.to_string()));
    }
    match info.get("Dir").and_then(|d| d.as_str()) {
        Some(dir) => Ok(PathBuf::from(dir)),
        None => Err(fail("`go mod download -json` reported no Dir".into())),
    }
}

/// Holds `<cache>/build.lock` exclusively until dropped, so that concurrent test processes
/// build (or package) each cached artefact once.
pub(crate) struct CacheLock {
    _file: File,
}

impl CacheLock {
    pub fn acquire(cache: &Path) -> Result<CacheLock> {
        fs::create_dir_all(cache).map_err(|e| Error::io("creating", cache, e))?;
        let path = cache.join("build.lock");
        let file = File::create(&path).map_err(|e| Error::io("creating", &path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                eprintln!(
                    "kurator-testenv: waiting for another process to finish building the \
                     test binaries ({})…",
                    path.display()
                );
                file.lock().map_err(|e| Error::io("locking", &path, e))?;
            }
            Err(fs::TryLockError::Error(e)) => return Err(Error::io("locking", &path, e)),
        }
        Ok(CacheLock { _file: file })
    }
}

/// Every file under `dir` whose name ends in `.yaml`, recursively, sorted by path.
pub(crate) fn yaml_files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    // No filters: hidden files and .gitignore rules mean nothing in a module's source.
    for entry in ignore::WalkBuilder::new(dir)
        .standard_filters(false)
        .build()
    {
        let entry = entry.map_err(|e| Error::io("reading", dir, std::io::Error::other(e)))?;
        let path = entry.path();
        if entry.file_type().is_some_and(|t| t.is_file())
            && path.extension().is_some_and(|x| x == "yaml")
        {
            files.push(path.to_path_buf());
        }
    }
    files.sort();
    Ok(files)
}
