//! A member's Prometheus as the kube-prometheus chart's Prometheus resource would run it,
//! as a local process: its `prometheus.yml` (external labels, the member's own kube-apiserver
//! `/metrics` scraped over https with the cluster's admin client certificate, and any extra
//! plain-HTTP targets, e.g. an application's [`crate::AppExporter`]) and its flags
//! (the 2 h block durations the Prometheus operator sets when a Thanos sidecar uploads blocks,
//! `--web.enable-lifecycle`, a loopback port).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;

use crate::certs::write_file;
use crate::error::{Error, Result};

/// The scrape job of the member's own kube-apiserver.
pub const APISERVER_JOB: &str = "apiserver";

/// The files a member's Prometheus reads, inside its metrics directory.
#[derive(Debug, Clone)]
pub(crate) struct PrometheusFiles {
    pub config: PathBuf,
    pub tsdb: PathBuf,
    ca: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl PrometheusFiles {
    pub fn in_dir(dir: &Path) -> Self {
        PrometheusFiles {
            config: dir.join("prometheus.yml"),
            tsdb: dir.join("prometheus-data"),
            ca: dir.join("apiserver-ca.crt"),
            client_cert: dir.join("scrape-client.crt"),
            client_key: dir.join("scrape-client.key"),
        }
    }
}

/// One more scrape job of a member's Prometheus: plain HTTP `GET /metrics` at `address`
/// (`host:port`), as a ServiceMonitor selecting an application's Pods would add. Its series
/// get the member's external labels like every other (the `cluster` label in Thanos Query).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrapeTarget {
    pub job: String,
    pub address: String,
}

/// What the scrape configuration says.
#[derive(Debug, Clone)]
pub(crate) struct ScrapeSettings<'a> {
    pub external_labels: &'a BTreeMap<String, String>,
    /// `127.0.0.1:<port>` of the member's kube-apiserver.
    pub apiserver: &'a str,
    pub interval: Duration,
    /// Jobs besides the apiserver's.
    pub extra_targets: &'a [ScrapeTarget],
}

/// The `prometheus.yml` text (pure: the certificate files are only named). Job names must
/// be unique (Prometheus refuses the file otherwise).
pub(crate) fn render_config(files: &PrometheusFiles, s: &ScrapeSettings<'_>) -> Result<String> {
    let interval = format!("{}s", s.interval.as_secs().max(1));
    let mut jobs = std::collections::BTreeSet::from([APISERVER_JOB]);
    for target in s.extra_targets {
        if !jobs.insert(target.job.as_str()) {
            return Err(Error::Usage(format!(
                "scrape job {} given twice in a member's Prometheus",
                target.job
            )));
        }
    }
    let extra = s.extra_targets.iter().map(|t| {
        serde_json::json!({
            "job_name": t.job,
            "metrics_path": "/metrics",
            "static_configs": [{ "targets": [t.address] }],
        })
    });
    let mut config = serde_json::json!({
        "global": {
            "scrape_interval": interval,
            "evaluation_interval": interval,
            "external_labels": s.external_labels,
        },
        "scrape_configs": [{
            "job_name": APISERVER_JOB,
            "scheme": "https",
            "metrics_path": "/metrics",
            "tls_config": {
                "ca_file": files.ca,
                "cert_file": files.client_cert,
                "key_file": files.client_key,
            },
            "static_configs": [{ "targets": [s.apiserver] }],
        }],
    });
    if let Some(jobs) = config["scrape_configs"].as_array_mut() {
        jobs.extend(extra);
    }
    serde_saphyr::to_string(&config)
        .map_err(|e| Error::Usage(format!("rendering prometheus.yml: {e}")))
}

/// Writes the CA and the admin client certificate of `kubeconfig_yaml` (inline data, as the
/// test environment writes kubeconfigs) next to the config: Prometheus reads TLS material
/// from files only. The key is written with mode 0600.
pub(crate) fn write_scrape_credentials(
    files: &PrometheusFiles,
    kubeconfig_yaml: &str,
) -> Result<()> {
    let kubeconfig: serde_json::Value = serde_saphyr::from_str(kubeconfig_yaml)
        .map_err(|e| Error::Usage(format!("reading the cluster's kubeconfig: {e}")))?;
    // Never put the data itself in an error: it holds the admin key.
    let field = |path: &[&str], name: &str| -> Result<String> {
        let mut value = &kubeconfig;
        for key in path {
            value = match key.parse::<usize>() {
                Ok(index) => &value[index],
                Err(_) => &value[*key],
            };
        }
        let encoded = value.as_str().ok_or_else(|| {
            Error::Usage(format!("the cluster's kubeconfig has no inline {name}"))
        })?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| Error::Usage(format!("the cluster's kubeconfig: {name} is not base64")))?;
        String::from_utf8(bytes)
            .map_err(|_| Error::Usage(format!("the cluster's kubeconfig: {name} is not PEM")))
    };
    let ca = field(
        &["clusters", "0", "cluster", "certificate-authority-data"],
        "certificate-authority-data",
    )?;
    let cert = field(
        &["users", "0", "user", "client-certificate-data"],
        "client-certificate-data",
    )?;
    let key = field(
        &["users", "0", "user", "client-key-data"],
        "client-key-data",
    )?;
    write_file(&files.ca, &ca, 0o644)?;
    write_file(&files.client_cert, &cert, 0o644)?;
    write_file(&files.client_key, &key, 0o600)
}

/// Prometheus's flags for listening on `127.0.0.1:<port>`.
pub(crate) fn args(files: &PrometheusFiles, port: u16) -> Vec<String> {
    vec![
        format!("--config.file={}", files.config.display()),
        format!("--storage.tsdb.path={}", files.tsdb.display()),
        // As the Prometheus operator runs Prometheus next to a Thanos sidecar: the sidecar
        // uploads only blocks Prometheus never compacts.
        "--storage.tsdb.min-block-duration=2h".into(),
        "--storage.tsdb.max-block-duration=2h".into(),
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--web.enable-lifecycle".into(),
        "--log.level=info".into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_carries_the_external_labels_and_scrapes_the_apiserver_with_the_client_cert() {
        let files = PrometheusFiles::in_dir(Path::new("/state/metrics/member1"));
        let labels = BTreeMap::from([("cluster".to_string(), "member1".to_string())]);
        let text = render_config(
            &files,
            &ScrapeSettings {
                external_labels: &labels,
                apiserver: "127.0.0.1:6443",
                interval: Duration::from_secs(5),
                extra_targets: &[],
            },
        )
        .expect("render");
        let config: serde_json::Value = serde_saphyr::from_str(&text).expect("yaml");
        assert_eq!(config["scrape_configs"].as_array().map(Vec::len), Some(1));
        assert_eq!(config["global"]["external_labels"]["cluster"], "member1");
        assert_eq!(config["global"]["scrape_interval"], "5s");
        let job = &config["scrape_configs"][0];
        assert_eq!(job["job_name"], APISERVER_JOB);
        assert_eq!(job["scheme"], "https");
        assert_eq!(job["static_configs"][0]["targets"][0], "127.0.0.1:6443");
        assert_eq!(
            job["tls_config"]["key_file"],
            "/state/metrics/member1/scrape-client.key"
        );

        let flags = args(&files, 9090);
        for flag in [
            "--storage.tsdb.min-block-duration=2h",
            "--storage.tsdb.max-block-duration=2h",
            "--web.enable-lifecycle",
            "--web.listen-address=127.0.0.1:9090",
            "--storage.tsdb.path=/state/metrics/member1/prometheus-data",
        ] {
            assert!(flags.iter().any(|f| f == flag), "{flag}: {flags:?}");
        }
    }

    #[test]
    fn extra_targets_are_plain_http_jobs_under_the_same_external_labels() {
        let files = PrometheusFiles::in_dir(Path::new("/state/metrics/member1"));
        let labels = BTreeMap::from([("cluster".to_string(), "kurator-member1".to_string())]);
        let app = ScrapeTarget {
            job: "app".into(),
            address: "127.0.0.1:4567".into(),
        };
        let settings = |extra: &[ScrapeTarget]| {
            render_config(
                &files,
                &ScrapeSettings {
                    external_labels: &labels,
                    apiserver: "127.0.0.1:6443",
                    interval: Duration::from_secs(2),
                    extra_targets: extra,
                },
            )
        };
        let text = settings(std::slice::from_ref(&app)).expect("render");
        let config: serde_json::Value = serde_saphyr::from_str(&text).expect("yaml");
        assert_eq!(
            config["global"]["external_labels"]["cluster"],
            "kurator-member1"
        );
        let jobs = config["scrape_configs"].as_array().expect("jobs");
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0]["job_name"], APISERVER_JOB);
        assert_eq!(
            jobs[1],
            serde_json::json!({
                "job_name": "app",
                "metrics_path": "/metrics",
                "static_configs": [{"targets": ["127.0.0.1:4567"]}],
            }),
            "no scheme (http) and no client certificate for the app"
        );

        let twice = settings(&[app.clone(), app]).expect_err("a job twice");
        assert!(
            twice.to_string().contains("scrape job app given twice"),
            "{twice}"
        );
        let apiserver = ScrapeTarget {
            job: APISERVER_JOB.into(),
            address: "127.0.0.1:1".into(),
        };
        assert!(
            settings(&[apiserver]).is_err(),
            "the apiserver's job name is taken"
        );
    }

    #[test]
    fn credentials_come_from_the_inline_kubeconfig_and_never_show_in_errors() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let dir = std::env::temp_dir().join(format!("kurator-testenv-prom-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let files = PrometheusFiles::in_dir(&dir);
        let kubeconfig = format!(
            "clusters:\n- cluster:\n    certificate-authority-data: {}\n    server: https://127.0.0.1:1\n  name: m\nusers:\n- name: admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
            b64("CA PEM"),
            b64("CERT PEM"),
            b64("SECRET KEY PEM")
        );
        write_scrape_credentials(&files, &kubeconfig).expect("write");
        assert_eq!(
            std::fs::read_to_string(&files.client_key).expect("key"),
            "SECRET KEY PEM"
        );
        assert_eq!(std::fs::read_to_string(&files.ca).expect("ca"), "CA PEM");
        let without_key = kubeconfig.replace("client-key-data", "other");
        let err = write_scrape_credentials(&files, &without_key).expect_err("no key");
        assert!(
            err.to_string().contains("no inline client-key-data"),
            "{err}"
        );
        assert!(!err.to_string().contains(&b64("CERT PEM")), "{err}");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
