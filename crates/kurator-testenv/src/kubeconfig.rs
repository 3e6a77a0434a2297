//! Kubeconfig files with inline credentials, and kube clients built from them.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::error::{Error, Result};

/// A kubeconfig for `cluster` with inline `*-data` fields (Flux drops file paths).
/// Cluster and context are named after the cluster, the user `<cluster>-admin`.
pub(crate) fn render(
    cluster: &str,
    server: &str,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> String {
    let b64 = |s: &str| STANDARD.encode(s.as_bytes());
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: {cluster}
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: {cluster}-admin
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
contexts:
- name: {cluster}
  context:
    cluster: {cluster}
    user: {cluster}-admin
current-context: {cluster}
preferences: {{}}
",
        ca = b64(ca_pem),
        cert = b64(cert_pem),
        key = b64(key_pem),
    )
}

/// A kube client for the kubeconfig text.
pub(crate) async fn client(cluster: &str, kubeconfig_yaml: &str) -> Result<kube::Client> {
    let config = config(cluster, kubeconfig_yaml).await?;
    kube::Client::try_from(config)
        .map_err(|e| Error::kube(format!("creating client for {cluster}"), e))
}

/// A kube config for the kubeconfig text, with a short connect timeout (so an outage shows
/// up as an error quickly).
pub(crate) async fn config(cluster: &str, kubeconfig_yaml: &str) -> Result<kube::Config> {
    let kc = Kubeconfig::from_yaml(kubeconfig_yaml).map_err(|source| Error::Kubeconfig {
        cluster: cluster.to_string(),
        source,
    })?;
    let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|source| Error::Kubeconfig {
            cluster: cluster.to_string(),
            source,
        })?;
    config.connect_timeout = Some(Duration::from_secs(5));
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_inline_data_and_context() {
        let yaml = render("member1", "https://127.0.0.1:6443", "CA", "CERT", "KEY");
        let kc = Kubeconfig::from_yaml(&yaml).expect("valid kubeconfig");
        assert_eq!(kc.current_context.as_deref(), Some("member1"));
        let cluster = kc.clusters[0].cluster.as_ref().expect("cluster");
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:6443"));
        assert_eq!(
            cluster.certificate_authority_data.as_deref(),
            Some(STANDARD.encode("CA").as_str())
        );
        assert!(yaml.contains("client-key-data: "));
    }
}
