//! A smart-HTTP git server for source-controller: bare repositories under a root directory,
//! served by running `git http-backend` (CGI) once per request.
//!
//! go-git (inside source-controller) speaks smart HTTP only, which `git http-backend`
//! provides, including the shallow clones Flux makes. Pushing over HTTP is off for tests (they
//! commit into the bare repositories on disk with [`GitRepo::commit_files`]); the playground's
//! server takes pushes ([`Push::Allowed`]), so a user can `git push` a new revision.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use http::{HeaderName, HeaderValue, StatusCode};
use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result};
use crate::http_server::BackgroundServer;

/// Largest request body accepted (upload-pack negotiation is tiny; this is a safety cap).
const MAX_REQUEST_BODY: usize = 64 * 1024 * 1024;

/// Branch of every repository made by [`GitServer::create_repo`] (also Flux's default).
pub const GIT_BRANCH: &str = "master";

/// A running git server. Stops when dropped (the repositories stay on disk).
#[derive(Debug)]
pub struct GitServer {
    root: PathBuf,
    server: BackgroundServer,
}

impl GitServer {
    /// Serves the bare repositories under `root` (created if missing) on
    /// `http://127.0.0.1:<free port>/<name>.git`.
    pub fn start(root: impl Into<PathBuf>) -> Result<GitServer> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|e| Error::io("creating", &root, e))?;
        let root = root
            .canonicalize()
            .map_err(|e| Error::io("resolving", &root, e))?;
        let serve_root = root.clone();
        let server = BackgroundServer::start("kurator-git-server", move |l| {
            serve(serve_root, l, Push::Refused)
        })?;
        tracing::info!(url = %server.url(), root = %root.display(), "git server listening");
        Ok(GitServer { root, server })
    }

    /// `http://127.0.0.1:<port>` (no trailing slash).
    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// The directory holding the bare repositories (`<name>.git`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates the bare repository `<root>/<name>.git` (default branch `master`, no commits).
    pub fn create_repo(&self, name: &str) -> Result<GitRepo> {
        GitRepo::init(&self.root, name, &self.url())
    }

    /// A handle on an existing repository `<root>/<name>.git`.
    pub fn repo(&self, name: &str) -> Result<GitRepo> {
        let repo = GitRepo::handle(&self.root, name, &self.url())?;
        if !repo.path.join("HEAD").is_file() {
            return Err(Error::Usage(format!(
                "no bare git repository at {}",
                repo.path.display()
            )));
        }
        Ok(repo)
    }
}

/// One change of a commit.
#[derive(Debug, Clone, Copy)]
pub enum FileChange<'a> {
    /// Create or overwrite `path` (relative, `/`-separated) with `contents`.
    Write { path: &'a str, contents: &'a [u8] },
    /// Delete `path` (a file or a directory tree; an absent path is an error).
    Delete { path: &'a str },
}

/// A bare repository of a [`GitServer`].
#[derive(Debug, Clone)]
pub struct GitRepo {
    name: String,
    path: PathBuf,
    url: String,
}

impl GitRepo {
    fn handle(root: &Path, name: &str, server_url: &str) -> Result<GitRepo> {
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !name.starts_with('.');
        if !valid {
            return Err(Error::Usage(format!(
                "invalid git repository name {name:?} (use [A-Za-z0-9._-], not starting with '.')"
            )));
        }
        let name = name.trim_end_matches(".git").to_string();
        Ok(GitRepo {
            path: root.join(format!("{name}.git")),
            url: format!("{server_url}/{name}.git"),
            name,
        })
    }

    fn init(root: &Path, name: &str, server_url: &str) -> Result<GitRepo> {
        let repo = GitRepo::handle(root, name, server_url)?;
        if repo.path.exists() {
            return Err(Error::Usage(format!(
                "git repository {} already exists",
                repo.path.display()
            )));
        }
        let path = repo.path.display().to_string();
        git(
            None,
            &[
                "init",
                "--quiet",
                "--bare",
                "--initial-branch",
                GIT_BRANCH,
                &path,
            ],
        )?;
        Ok(repo)
    }

    /// Repository name (without `.git`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `http://127.0.0.1:<port>/<name>.git`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The bare repository on disk.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Commits `files` (`(path, contents)`, other files unchanged) on `master` and returns
    /// the new commit sha. Blocking (runs `git` a few times, tens of milliseconds).
    pub fn commit_files(&self, files: &[(&str, &str)], message: &str) -> Result<String> {
        let changes: Vec<FileChange<'_>> = files
            .iter()
            .map(|(path, contents)| FileChange::Write {
                path,
                contents: contents.as_bytes(),
            })
            .collect();
        self.commit(&changes, message)
    }

    /// Commits the deletion of `paths` on `master` and returns the new commit sha.
    pub fn delete_files(&self, paths: &[&str], message: &str) -> Result<String> {
        let changes: Vec<FileChange<'_>> = paths
            .iter()
            .map(|path| FileChange::Delete { path })
            .collect();
        self.commit(&changes, message)
    }

    /// Applies `changes` in a temporary work tree (a clone of the bare repository), commits
    /// them as `kurator-testenv <testenv@kurator.dev>` and pushes to `master`. Every call
    /// makes a commit, even an empty one. Returns the commit sha.
    pub fn commit(&self, changes: &[FileChange<'_>], message: &str) -> Result<String> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let work = std::env::temp_dir().join(format!(
            "kurator-git-work-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let result = self.commit_in(&work, changes, message);
        let _ = std::fs::remove_dir_all(&work);
        result
    }

    fn commit_in(&self, work: &Path, changes: &[FileChange<'_>], message: &str) -> Result<String> {
        let bare = self.path.display().to_string();
        let work_str = work.display().to_string();
        git(None, &["clone", "--quiet", &bare, &work_str])?;
        let w = Some(work);
        let head = format!("refs/heads/{GIT_BRANCH}");
        git(w, &["symbolic-ref", "HEAD", &head])?;
        git(w, &["config", "user.name", "kurator-testenv"])?;
        git(w, &["config", "user.email", "testenv@kurator.dev"])?;
        git(w, &["config", "commit.gpgsign", "false"])?;
        for change in changes {
            match *change {
                FileChange::Write { path, contents } => {
                    let target = work.join(checked_relative(path)?);
                    if let Some(dir) = target.parent() {
                        std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
                    }
                    std::fs::write(&target, contents)
                        .map_err(|e| Error::io("writing", &target, e))?;
                }
                FileChange::Delete { path } => {
                    let target = work.join(checked_relative(path)?);
                    let removed = if target.is_dir() {
                        std::fs::remove_dir_all(&target)
                    } else {
                        std::fs::remove_file(&target)
                    };
                    removed.map_err(|e| Error::io("deleting", &target, e))?;
                }
            }
        }
        git(w, &["add", "--all"])?;
        git(w, &["commit", "--quiet", "--allow-empty", "-m", message])?;
        git(w, &["push", "--quiet", "origin", &format!("HEAD:{head}")])?;
        let sha = git(w, &["rev-parse", "HEAD"])?;
        tracing::debug!(repo = %self.name, %sha, "committed");
        Ok(sha)
    }

    /// The sha `master` points to, `None` before the first commit.
    pub fn head(&self) -> Result<Option<String>> {
        let git_dir = format!("--git-dir={}", self.path.display());
        let head = format!("refs/heads/{GIT_BRANCH}");
        match git(None, &[&git_dir, "rev-parse", "--verify", "--quiet", &head]) {
            Ok(sha) => Ok(Some(sha)),
            Err(Error::Git { stderr, .. }) if stderr.is_empty() => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// `path` as a relative path without `..`, or an error.
fn checked_relative(path: &str) -> Result<&Path> {
    let p = Path::new(path);
    let ok = !path.is_empty()
        && p.components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if ok {
        Ok(p)
    } else {
        Err(Error::Usage(format!(
            "invalid path {path:?} in a commit (must be relative, without `..`)"
        )))
    }
}

/// Variables that would redirect git away from the repository we name.
const GIT_LOCATION_VARS: [&str; 6] = [
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_NAMESPACE",
];

/// Runs `git args` (in `dir`), isolated from system and user configuration; returns trimmed
/// stdout.
fn git(dir: Option<&Path>, args: &[&str]) -> Result<String> {
    let mut cmd = Command::new("git");
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    cmd.args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null());
    for var in GIT_LOCATION_VARS {
        cmd.env_remove(var);
    }
    let describe = || args.join(" ");
    let out = cmd.output().map_err(|e| Error::Git {
        args: describe(),
        status: "not started".into(),
        stderr: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(Error::Git {
            args: describe(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Whether the server takes `git push` (receive-pack).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Push {
    Refused,
    /// Anyone on loopback may push: for the playground only.
    Allowed,
}

struct Served {
    root: PathBuf,
    push: Push,
}

/// Serves the bare repositories under `root` over smart HTTP on `listener` until the
/// future is dropped (or accepting fails). Each request runs `git http-backend`.
///
/// For running the server as a background process of the CLI: bind a
/// [`tokio::net::TcpListener`] and await this.
pub async fn serve(
    root: PathBuf,
    listener: tokio::net::TcpListener,
    push: Push,
) -> std::io::Result<()> {
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(Arc::new(Served { root, push }));
    axum::serve(listener, app).await
}

async fn handle(State(served): State<Arc<Served>>, req: Request) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    match cgi(&served.root, served.push, req).await {
        Ok(resp) => {
            tracing::debug!(%method, %path, status = %resp.status(), "git request");
            resp
        }
        Err(message) => {
            tracing::warn!(%method, %path, %message, "git request failed");
            let mut resp = Response::new(Body::from(message));
            *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            resp
        }
    }
}

/// Runs `git http-backend` for one request and turns its CGI output into a response.
async fn cgi(root: &Path, push: Push, req: Request) -> std::result::Result<Response, String> {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, MAX_REQUEST_BODY)
        .await
        .map_err(|e| format!("reading request body: {e}"))?;
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("SERVER_SOFTWARE", "kurator-testenv")
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("PATH_INFO", parts.uri.path())
        .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
        .env("CONTENT_LENGTH", body.len().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if push == Push::Allowed {
        // http-backend serves receive-pack to authenticated users only; there is no
        // authentication here, the user is named so that it does.
        cmd.env("REMOTE_USER", "playground");
    }
    if let Some(v) = header("content-type") {
        cmd.env("CONTENT_TYPE", v);
    }
    if let Some(v) = header("content-encoding") {
        cmd.env("HTTP_CONTENT_ENCODING", v);
    }
    if let Some(v) = header("git-protocol") {
        cmd.env("HTTP_GIT_PROTOCOL", v);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("spawning git http-backend: {e}"))?;
    let stdin = child.stdin.take();
    let write = async move {
        if let Some(mut stdin) = stdin {
            // A backend that exits early closes the pipe; its output tells why.
            let _ = stdin.write_all(&body).await;
            let _ = stdin.shutdown().await;
        }
    };
    let (_, output) = tokio::join!(write, child.wait_with_output());
    let output = output.map_err(|e| format!("running git http-backend: {e}"))?;
    if !output.stderr.is_empty() {
        tracing::debug!(stderr = %String::from_utf8_lossy(&output.stderr).trim(), "git http-backend");
    }
    parse_cgi_output(&output.stdout).map_err(|e| {
        format!(
            "{e} (exit {}; stderr: {})",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )
    })
}

/// Splits CGI output into headers (with `Status:` as the HTTP status) and body.
fn parse_cgi_output(out: &[u8]) -> std::result::Result<Response, String> {
    let (head_len, sep_len) = match (find(out, b"\r\n\r\n"), find(out, b"\n\n")) {
        (Some(a), Some(b)) if b < a => (b, 2),
        (Some(a), _) => (a, 4),
        (None, Some(b)) => (b, 2),
        (None, None) => return Err("git http-backend printed no CGI header block".into()),
    };
    let head = String::from_utf8_lossy(&out[..head_len]);
    let mut resp = Response::new(Body::from(out[head_len + sep_len..].to_vec()));
    for line in head.lines() {
        let line = line.trim_end_matches('\r');
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().unwrap_or_default();
            *resp.status_mut() = code
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .ok_or_else(|| format!("invalid CGI status {value:?}"))?;
        } else if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value),
        ) {
            resp.headers_mut().append(n, v);
        }
    }
    Ok(resp)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgi_status_and_headers_become_the_response() {
        let out =
            b"Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nRepository not exported.\n";
        let resp = parse_cgi_output(out).expect("parse");
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert_eq!(resp.headers()["content-type"], "text/plain");

        let ok = b"Expires: Fri, 01 Jan 1980 00:00:00 GMT\r\nContent-Type: application/x-git-upload-pack-advertisement\r\n\r\n001e# service=git-upload-pack\n";
        let resp = parse_cgi_output(ok).expect("parse");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            resp.headers()["content-type"],
            "application/x-git-upload-pack-advertisement"
        );
        assert!(parse_cgi_output(b"no header end").is_err());
    }

    #[test]
    fn commit_paths_must_stay_inside_the_work_tree() {
        assert!(checked_relative("deploy/cm.yaml").is_ok());
        for bad in ["", "/etc/passwd", "../x", "a/../../x"] {
            assert!(checked_relative(bad).is_err(), "{bad}");
        }
    }
}
