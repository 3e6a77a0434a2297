//! Where a fleet's Thanos Query answers: a URL the user gave (`--thanos-url` or
//! `KURATOR_THANOS_URL`), else the Service the metric plugin's thanos release created on the
//! host, reached through the API server's service proxy.
//!
//! The controller installs the bitnami thanos chart through the HelmRelease `thanos` in the
//! Fleet's namespace, into that namespace, without a `releaseName`: Flux names the Helm
//! release `<namespace>-thanos`, and the chart labels the query Service
//! `app.kubernetes.io/instance: <release>` and `app.kubernetes.io/component: query` (its name,
//! `<release>-query`, changes with a `fullnameOverride` in the Fleet's `extraArgs`; the labels
//! do not). The Service is found, in this order:
//! 1. by those two labels;
//! 2. by `app.kubernetes.io/name: thanos` and the component label, if exactly one Service has
//!    them (Flux shortens release names over 53 characters, so the instance label then differs);
//! 3. by its default name, `<namespace>-thanos-query`.

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::Service;
use kube::{Api, Client, ResourceExt, api::ListParams};
use kurator_controller::plugins::render::{component, resource_name, thanos_query_service};

/// The label the bitnami charts set to the Helm release's name.
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
/// The label the bitnami charts set to the chart's name.
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
/// The label the bitnami thanos chart sets to the component (`query`, `storegateway`, …).
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
/// The chart's name for its query component.
pub const QUERY_COMPONENT: &str = "query";
/// The environment variable naming Thanos Query's URL, as `--thanos-url` does (the
/// playground, where the API server cannot proxy to loopback, records it there).
pub const THANOS_URL_ENV: &str = "KURATOR_THANOS_URL";

/// Where the query goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A URL, queried directly.
    Url(String),
    /// A Service on the host, through the API server's service proxy.
    ServiceProxy {
        namespace: String,
        service: String,
        /// The Service port's name (`http` in the chart), else its number.
        port: String,
    },
}

impl Endpoint {
    /// The path prefix, on the host API server, of the proxied Prometheus HTTP API.
    pub fn proxy_prefix(namespace: &str, service: &str, port: &str) -> String {
        format!("/api/v1/namespaces/{namespace}/services/{service}:{port}/proxy")
    }

    /// What to call it in messages (no credentials: URLs with any are refused up front).
    pub fn describe(&self) -> String {
        match self {
            Endpoint::Url(url) => url.clone(),
            Endpoint::ServiceProxy {
                namespace,
                service,
                port,
            } => format!(
                "Service {namespace}/{service} port {port}, through the API server's service proxy"
            ),
        }
    }
}

/// Checks a user-given URL: http or https, with a host, and no user, password or query string
/// in it (they would end up in error messages; the command sends no credentials to Thanos
/// Query).
pub fn checked_url(url: &str) -> anyhow::Result<String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|_| anyhow::anyhow!("--thanos-url is not a URL"))?;
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    if authority.contains('@') {
        bail!("--thanos-url must not hold a user or password");
    }
    // A query string could carry a token too, and the query's own would be appended after it.
    if uri.query().is_some() {
        bail!("--thanos-url must not hold a query string");
    }
    match uri.scheme_str() {
        Some("http" | "https") if !authority.is_empty() => {}
        _ => bail!("--thanos-url {url} is not an http:// or https:// URL with a host"),
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// The Helm release name Flux gives the fleet's thanos HelmRelease.
pub fn thanos_release(namespace: &str) -> String {
    format!("{namespace}-{}", resource_name(component::THANOS, None))
}

/// Finds the fleet's Thanos Query Service in `namespace` (the Fleet's); see the module's
/// documentation for the order.
pub async fn thanos_query(host: &Client, namespace: &str) -> anyhow::Result<Endpoint> {
    let services: Api<Service> = Api::namespaced(host.clone(), namespace);
    let release = thanos_release(namespace);
    let by_instance = format!("{INSTANCE_LABEL}={release},{COMPONENT_LABEL}={QUERY_COMPONENT}");
    let by_chart = format!("{NAME_LABEL}=thanos,{COMPONENT_LABEL}={QUERY_COMPONENT}");
    let list = |selector: String| {
        let services = services.clone();
        async move {
            services
                .list(&ListParams::default().labels(&selector))
                .await
                .with_context(|| format!("listing Services in namespace {namespace}"))
                .map(|l| l.items)
        }
    };
    let mut found = list(by_instance.clone()).await?;
    if found.is_empty() {
        found = list(by_chart).await?;
        if found.len() > 1 {
            let names: Vec<String> = found.iter().map(|s| s.name_any()).collect();
            bail!(
                "Thanos Query of namespace {namespace}: no Service labelled {by_instance}, and several Thanos Query Services ({}): pass --thanos-url",
                names.join(", ")
            );
        }
    }
    if found.is_empty() {
        let name = thanos_query_service(namespace);
        match services.get_opt(&name).await {
            Ok(Some(service)) => found.push(service),
            Ok(None) => bail!(
                "Thanos Query not found: no Service labelled {by_instance} and no Service {name} in namespace {namespace} (the metric plugin's thanos release is not installed yet? see `kurator describe fleet`; or pass --thanos-url)"
            ),
            Err(e) => {
                return Err(e).with_context(|| format!("reading Service {namespace}/{name}"));
            }
        }
    }
    let service = found.remove(0);
    let port = query_port(&service).with_context(|| {
        format!(
            "Thanos Query Service {namespace}/{} has no ports",
            service.name_any()
        )
    })?;
    Ok(Endpoint::ServiceProxy {
        namespace: namespace.to_string(),
        service: service.name_any(),
        port,
    })
}

/// The port to proxy to (the controller's rule, which its metric gates use too).
pub use kurator_controller::plugins::render::thanos_query_port as query_port;

#[cfg(test)]
mod tests {
    use super::*;

    fn service(ports: &[(Option<&str>, i32)]) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "s" },
            "spec": { "ports": ports.iter().map(|(name, port)| serde_json::json!({ "name": name, "port": port })).collect::<Vec<_>>() },
        }))
        .unwrap()
    }

    #[test]
    fn port_by_name_then_number() {
        assert_eq!(
            query_port(&service(&[(Some("grpc"), 10901), (Some("http"), 19090)])),
            Some("http".into())
        );
        assert_eq!(
            query_port(&service(&[(None, 10901), (None, 9090)])),
            Some("9090".into())
        );
        assert_eq!(
            query_port(&service(&[(Some("web"), 8080)])),
            Some("web".into())
        );
        assert_eq!(query_port(&service(&[])), None);
    }

    #[test]
    fn names_and_paths() {
        assert_eq!(thanos_release("kurator"), "kurator-thanos");
        assert_eq!(
            Endpoint::proxy_prefix("kurator", "kurator-thanos-query", "http"),
            "/api/v1/namespaces/kurator/services/kurator-thanos-query:http/proxy"
        );
    }

    #[test]
    fn urls_checked() {
        assert_eq!(
            checked_url("http://127.0.0.1:9090/").unwrap(),
            "http://127.0.0.1:9090"
        );
        assert_eq!(
            checked_url("https://thanos.example.com/prefix").unwrap(),
            "https://thanos.example.com/prefix"
        );
        let refused = checked_url("https://me:hunter2@thanos.example.com")
            .unwrap_err()
            .to_string();
        assert!(!refused.contains("hunter2"), "{refused}");
        let refused = checked_url("https://thanos.example.com/?token=hunter2")
            .unwrap_err()
            .to_string();
        assert!(!refused.contains("hunter2"), "{refused}");
        assert!(checked_url("thanos:9090").is_err());
        assert!(checked_url("ftp://thanos").is_err());
    }
}
