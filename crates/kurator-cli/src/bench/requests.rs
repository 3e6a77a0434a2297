//! The benchmarked controller's own request counters (`kurator_api_requests_total` on its
//! `/metrics`), scraped before and after a scenario: how many writes it needed.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use anyhow::{Context as _, bail};
use kube::Resource;
use kurator_api::{
    Application,
    flux::{GitRepository, HelmRelease, HelmRepository, Kustomization, OCIRepository},
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const METRIC: &str = "kurator_api_requests_total";
const WRITE_VERBS: [&str; 4] = ["create", "update", "patch", "delete"];

/// Requests by (verb, group, resource), every response code together: a rejected write
/// (a conflict, say) loads the API server too.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RequestCounts(BTreeMap<(String, String, String), f64>);

impl RequestCounts {
    /// Parses the Prometheus text format; other metrics are ignored.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut counts = BTreeMap::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(METRIC).and_then(|r| r.strip_prefix('{')) else {
                continue;
            };
            let (labels, value) = rest
                .rsplit_once('}')
                .with_context(|| format!("malformed metric line {line:?}"))?;
            let value: f64 = value
                .trim()
                .parse()
                .with_context(|| format!("malformed value in {line:?}"))?;
            let label = |name: &str| -> String {
                // Our label values never hold quotes or commas.
                labels
                    .split(',')
                    .find_map(|pair| pair.strip_prefix(name)?.strip_prefix("=\""))
                    .map(|v| v.trim_end_matches('"').to_string())
                    .unwrap_or_default()
            };
            *counts
                .entry((label("verb"), label("group"), label("resource")))
                .or_default() += value;
        }
        Ok(Self(counts))
    }

    /// What happened between `before` and `self`.
    pub fn since(&self, before: &RequestCounts) -> RequestCounts {
        RequestCounts(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), v - before.0.get(k).copied().unwrap_or(0.0)))
                .filter(|(_, v)| *v != 0.0)
                .collect(),
        )
    }

    fn sum(&self, wanted: impl Fn(&str, &str, &str) -> bool) -> f64 {
        self.0
            .iter()
            .filter(|((verb, group, resource), _)| wanted(verb, group, resource))
            .map(|(_, v)| v)
            .sum()
    }

    /// Creates, updates, patches and deletes of the five Flux kinds (not their status).
    pub fn flux_writes(&self) -> f64 {
        let flux = flux_resources();
        self.sum(|verb, group, resource| {
            WRITE_VERBS.contains(&verb) && flux.iter().any(|(g, r)| g == group && r == resource)
        })
    }

    /// Creates, updates, patches and deletes of `resource` (`plural` or `plural/subresource`)
    /// in `group` (empty for the core group).
    pub fn writes_of(&self, group: &str, resource: &str) -> f64 {
        self.sum(|verb, g, r| WRITE_VERBS.contains(&verb) && g == group && r == resource)
    }

    /// Every create, update, patch and delete, of any resource.
    pub fn all_writes(&self) -> f64 {
        self.sum(|verb, _, _| WRITE_VERBS.contains(&verb))
    }

    /// Patches and updates of `applications/status`.
    pub fn application_status_writes(&self) -> f64 {
        let group = Application::group(&());
        let status = format!("{}/status", Application::plural(&()));
        self.sum(|verb, g, resource| {
            matches!(verb, "patch" | "update") && g == group && resource == status
        })
    }
}

fn flux_resources() -> [(String, String); 5] {
    fn of<K: Resource<DynamicType = ()>>() -> (String, String) {
        (K::group(&()).into_owned(), K::plural(&()).into_owned())
    }
    [
        of::<GitRepository>(),
        of::<HelmRepository>(),
        of::<OCIRepository>(),
        of::<Kustomization>(),
        of::<HelmRelease>(),
    ]
}

/// The controller's counters now.
pub async fn scrape(addr: SocketAddr) -> anyhow::Result<RequestCounts> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to the controller's /metrics on {addr}"))?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("malformed HTTP response from /metrics")?;
    if head.split_whitespace().nth(1) != Some("200") {
        bail!(
            "/metrics answered {}",
            head.lines().next().unwrap_or_default()
        );
    }
    RequestCounts::parse(body)
}

/// The counters once the scenario's writes have stopped: a status write (or an Event) may land
/// just after the observer saw the result. Waits until the writes hold still for 0.5 s (at
/// most 10 s).
pub async fn settled(addr: SocketAddr) -> anyhow::Result<RequestCounts> {
    let key = |c: &RequestCounts| c.all_writes();
    let mut last = scrape(addr).await?;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = scrape(addr).await?;
        if key(&now) == key(&last) {
            return Ok(now);
        }
        last = now;
    }
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP kurator_api_requests Requests to the host API server
# TYPE kurator_api_requests counter
kurator_api_requests_total{verb="patch",group="kustomize.toolkit.fluxcd.io",resource="kustomizations",code="2xx"} 10
kurator_api_requests_total{verb="patch",group="kustomize.toolkit.fluxcd.io",resource="kustomizations",code="4xx"} 2
kurator_api_requests_total{verb="list",group="kustomize.toolkit.fluxcd.io",resource="kustomizations",code="2xx"} 1
kurator_api_requests_total{verb="patch",group="source.toolkit.fluxcd.io",resource="gitrepositories",code="2xx"} 1
kurator_api_requests_total{verb="patch",group="kustomize.toolkit.fluxcd.io",resource="kustomizations/status",code="2xx"} 7
kurator_api_requests_total{verb="patch",group="apps.kurator.dev",resource="applications/status",code="2xx"} 3
kurator_api_requests_total{verb="patch",group="apps.kurator.dev",resource="applications",code="2xx"} 1
kurator_api_requests_total{verb="get",group="",resource="",code="2xx"} 4
kurator_reconcile_total{controller="application"} 5
# EOF
"#;

    #[test]
    fn sums_flux_and_status_writes() {
        let counts = RequestCounts::parse(TEXT).unwrap();
        assert_eq!(counts.flux_writes(), 13.0);
        assert_eq!(counts.application_status_writes(), 3.0);
        assert_eq!(
            counts.writes_of("kustomize.toolkit.fluxcd.io", "kustomizations/status"),
            7.0
        );
        assert_eq!(counts.all_writes(), 13.0 + 7.0 + 3.0 + 1.0);
        let before = RequestCounts::parse(&TEXT.replace("} 10\n", "} 4\n")).unwrap();
        let during = counts.since(&before);
        assert_eq!(during.flux_writes(), 6.0);
        assert_eq!(during.application_status_writes(), 0.0);
    }

    #[test]
    fn malformed_lines_are_errors() {
        assert!(RequestCounts::parse("kurator_api_requests_total{verb=\"get\" 1").is_err());
        assert!(RequestCounts::parse("kurator_api_requests_total{verb=\"get\"} x").is_err());
        assert_eq!(RequestCounts::parse("").unwrap(), RequestCounts::default());
    }
}
