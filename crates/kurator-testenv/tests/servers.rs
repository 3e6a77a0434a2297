//! The git server and the Helm chart repository on their own (no control planes): a real
//! `git` client clones over smart HTTP, and plain HTTP GETs read the chart repository.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, ensure};
use kurator_testenv::{GitServer, HelmRepo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn scratch(tag: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "kurator-testenv-servers-{tag}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Runs a git client command isolated from the user's configuration.
fn git(args: &[&str]) -> Result<std::process::Output> {
    let out = Command::new("git")
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()?;
    Ok(out)
}

/// `(status, headers, body)` of a plain HTTP/1.0 GET on 127.0.0.1.
async fn http_get(port: u16, path: &str) -> Result<(u16, String, Vec<u8>)> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await?;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no header end")?;
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()?;
    Ok((status, head, buf[split + 4..].to_vec()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_server_serves_commits_over_smart_http() -> Result<()> {
    crate::common::init();
    let dir = scratch("git")?;
    let server = GitServer::start(dir.join("repos"))?;
    let repo = server.create_repo("fleet")?;
    ensure!(repo.url() == format!("{}/fleet.git", server.url()));
    ensure!(repo.head()?.is_none(), "a new repository has no commits");

    let first = repo.commit_files(
        &[
            ("deploy/cm.yaml", "kind: ConfigMap\n"),
            ("README", "hello\n"),
        ],
        "first",
    )?;
    ensure!(first.len() == 40, "{first}");
    ensure!(repo.head()?.as_deref() == Some(first.as_str()));
    let second = repo.delete_files(&["README"], "drop the readme")?;
    ensure!(second != first);

    // ls-remote and a shallow clone (what Flux does) over HTTP.
    let url = repo.url();
    let out = tokio::task::spawn_blocking(move || git(&["ls-remote", &url])).await??;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let refs = String::from_utf8_lossy(&out.stdout);
    ensure!(
        refs.contains(&format!("{second}\trefs/heads/master")),
        "{refs}"
    );

    let clone = dir.join("clone");
    let (url, target) = (repo.url(), clone.display().to_string());
    let out = tokio::task::spawn_blocking(move || {
        git(&[
            "clone",
            "--quiet",
            "--depth=1",
            "--branch=master",
            &url,
            &target,
        ])
    })
    .await??;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(std::fs::read_to_string(clone.join("deploy/cm.yaml"))? == "kind: ConfigMap\n");
    ensure!(!clone.join("README").exists(), "the deletion was committed");

    // Unknown repositories are a 404 (CGI `Status:` line), not a server error.
    let (status, _, _) = http_get(
        server.port(),
        "/missing.git/info/refs?service=git-upload-pack",
    )
    .await?;
    ensure!(status == 404, "status {status}");
    let (status, head, body) = http_get(
        server.port(),
        "/fleet.git/info/refs?service=git-upload-pack",
    )
    .await?;
    ensure!(status == 200, "status {status}");
    ensure!(
        head.contains("application/x-git-upload-pack-advertisement"),
        "{head}"
    );
    ensure!(body.starts_with(b"001e# service=git-upload-pack"));

    ensure!(server.create_repo("fleet").is_err(), "duplicate repository");
    ensure!(server.create_repo("../escape").is_err(), "invalid name");

    // The tests' server refuses pushes; the clone's commit stays local.
    let push = |target: String, file: &'static str| {
        let message = format!("--message=add {file}");
        tokio::task::spawn_blocking(move || -> Result<std::process::Output> {
            std::fs::write(format!("{target}/{file}"), "new\n")?;
            let work = ["-C", target.as_str()];
            for args in [
                &["add", file][..],
                &[
                    "-c",
                    "user.name=t",
                    "-c",
                    "user.email=t@example.invalid",
                    "commit",
                    "--quiet",
                    message.as_str(),
                ],
            ] {
                let out = git(&[&work[..], args].concat())?;
                ensure!(
                    out.status.success(),
                    "git {args:?}: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            git(&[&work[..], &["push", "--quiet", "origin", "master"]].concat())
        })
    };
    let target = clone.display().to_string();
    let out = push(target.clone(), "REFUSED").await??;
    ensure!(!out.status.success(), "the tests' server took a push");
    ensure!(repo.head()?.as_deref() == Some(second.as_str()));

    // The playground's (Push::Allowed) takes it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let playground = tokio::spawn(kurator_testenv::serve_git(
        server.root().to_path_buf(),
        listener,
        kurator_testenv::Push::Allowed,
    ));
    let url = format!("http://127.0.0.1:{port}/fleet.git");
    let out = git(&["-C", &target, "remote", "set-url", "origin", &url])?;
    ensure!(out.status.success());
    let out = push(target.clone(), "PUSHED").await??;
    ensure!(
        out.status.success(),
        "push to the playground's server: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let head = repo.head()?.context("a head after the push")?;
    ensure!(head != second, "the push moved master");
    playground.abort();
    drop(server);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_repo_serves_index_and_charts() -> Result<()> {
    crate::common::init();
    let dir = scratch("helm")?;
    let repo = HelmRepo::start(&dir)?;
    let (status, _, body) = http_get(repo.port(), "/index.yaml").await?;
    ensure!(status == 200);
    ensure!(body == b"apiVersion: v1\nentries: {}\n");

    repo.add_chart(
        "demo",
        "0.1.0",
        &[("templates/cm.yaml", "kind: ConfigMap\n")],
    )?;
    repo.add_chart(
        "demo",
        "0.2.0",
        &[("templates/cm.yaml", "kind: ConfigMap\n")],
    )?;
    let (_, _, body) = http_get(repo.port(), "/index.yaml").await?;
    let index: serde_json::Value = serde_saphyr::from_str(&String::from_utf8(body)?)?;
    let versions: Vec<&str> = index["entries"]["demo"]
        .as_array()
        .context("entries.demo")?
        .iter()
        .filter_map(|e| e["version"].as_str())
        .collect();
    ensure!(versions == ["0.1.0", "0.2.0"], "{versions:?}");

    let (status, _, tgz) = http_get(repo.port(), "/demo-0.2.0.tgz").await?;
    ensure!(
        status == 200 && tgz.starts_with(&[0x1f, 0x8b]),
        "gzip archive expected"
    );
    let (status, _, _) = http_get(repo.port(), "/../etc/passwd").await?;
    ensure!(status == 404);
    drop(repo);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
