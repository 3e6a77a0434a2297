//! The real bitnami charts of the metric and grafana plugins, read from `../shared/charts/`
//! (never copied into the repository): found, checked, served by the test Helm repository
//! with generated index entries, downloaded byte for byte as source-controller fetches them;
//! a missing or wrong archive is an error naming its path. Which values the product sets is
//! checked against these charts in kurator-controller's `plugins_flux::values`, and what they
//! render through real Flux in `plugins_flux::metric_and_grafana_…`.

use std::path::PathBuf;

use anyhow::{Context, Result, ensure};
use kurator_testenv::{
    HelmRepo, PLUGIN_CHARTS, PLUGIN_CHARTS_ENV, add_plugin_charts, plugin_chart_archives,
    plugin_chart_archives_in, plugin_charts_dir, write_chart,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn scratch(tag: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "kurator-testenv-plugin-charts-{tag}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn yaml(text: &str) -> Result<serde_json::Value> {
    Ok(serde_saphyr::from_str(text)?)
}

fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `GET path` from the repository: the response body (after a 200).
async fn download(repo: &HelmRepo, path: &str) -> Result<Vec<u8>> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", repo.port())).await?;
    let request = format!("GET /{path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    ensure!(head.contains(" 200 "), "GET {path}: {head}");
    Ok(response[split + 4..].to_vec())
}

#[tokio::test]
async fn the_real_charts_are_served_with_generated_index_entries() -> Result<()> {
    let source = plugin_charts_dir();
    let archives = plugin_chart_archives()?;
    ensure!(archives.len() == PLUGIN_CHARTS.len());
    let dir = scratch("index")?;
    let repo = HelmRepo::start(&dir)?;
    let copies = add_plugin_charts(&repo)?;

    let index = yaml(&std::fs::read_to_string(dir.join("index.yaml"))?)?;
    let entries = index["entries"].as_object().context("entries")?;
    ensure!(entries.len() == PLUGIN_CHARTS.len(), "{entries:?}");
    for ((name, version), copy) in PLUGIN_CHARTS.iter().zip(&copies) {
        let original = std::fs::read(source.join(format!("{name}-{version}.tgz")))?;
        ensure!(std::fs::read(copy)? == original, "{name}: copy differs");
        let entry = &entries[*name][0];
        ensure!(entry["version"] == *version, "{name}: {entry}");
        ensure!(entry["apiVersion"] == "v2", "{name}: {entry}");
        ensure!(entry["digest"] == sha256_hex(&original), "{name}: {entry}");
        let description = entry["description"].as_str().unwrap_or_default();
        ensure!(!description.contains("Stand-in"), "{name}: {description}");
        let url = entry["urls"][0].as_str().context("url")?;
        ensure!(
            download(&repo, url).await? == original,
            "{name}: served bytes differ"
        );
    }
    drop(repo);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn a_missing_or_wrong_archive_is_named_with_its_path() -> Result<()> {
    let absent = std::env::temp_dir().join("kurator-no-such-charts-dir");
    let err = plugin_chart_archives_in(&absent).unwrap_err().to_string();
    ensure!(
        err.contains(&absent.display().to_string()) && err.contains(PLUGIN_CHARTS_ENV),
        "{err}"
    );

    let dir = scratch("wrong")?;
    let err = plugin_chart_archives_in(&dir).unwrap_err().to_string();
    let thanos = dir.join("thanos-12.5.1.tgz");
    ensure!(err.contains(&thanos.display().to_string()), "{err}");

    // An archive under the right file name holding another chart is refused.
    let other = write_chart(&dir, "other", "12.5.1", &[])?;
    std::fs::rename(other, &thanos)?;
    let err = plugin_chart_archives_in(&dir).unwrap_err().to_string();
    ensure!(
        err.contains("says other 12.5.1, expected thanos 12.5.1"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
