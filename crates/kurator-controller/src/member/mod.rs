//! Access to member clusters: kubeconfig Secrets turned into clients (cached until the
//! Secret's resourceVersion changes) and a bounded health probe.
//!
//! [`lookup`] says which kubeconfig a cluster of any kind has and whether it is ready.
//!
//! Kubeconfig contents never leave this module: error messages name the Secret and the
//! problem, never the data.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{Api, Client, Config, config::KubeConfigOptions};
use kurator_api::{cluster::SecretKeyRef, kubeconfig};

mod lookup;
pub use lookup::{Member, client, find_by_name, lookup};

/// Why a member cluster cannot be reached with its kubeconfig Secret.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("Secret {0} not found")]
    SecretNotFound(String),
    #[error("Secret {secret} has no key {key}")]
    KeyNotFound { secret: String, key: String },
    #[error("Secret {secret} key {key} is not a usable kubeconfig: {problem}")]
    KubeconfigInvalid {
        secret: String,
        key: String,
        problem: String,
    },
    #[error("{0} has no kubeconfig Secret yet")]
    NoKubeconfig(String),
    #[error("reading Secret {0} failed: {1}")]
    Host(String, #[source] kube::Error),
}

/// Why a reachable kubeconfig still fails the health check.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cluster unreachable: {0}")]
    Unreachable(String),
    #[error("credentials rejected (401 Unauthorized): {0}")]
    Unauthorized(String),
    #[error("access denied (403 Forbidden): {0}")]
    Forbidden(String),
}

/// Namespace, Secret name and key of a kubeconfig, and whether the client is for watches.
type SecretKey = (String, String, String, bool);

/// Member clients, keyed by kubeconfig Secret and key, rebuilt when the Secret's
/// resourceVersion changes.
#[derive(Default)]
pub struct MemberClients {
    cache: Mutex<HashMap<SecretKey, (String, Client)>>,
}

impl MemberClients {
    /// Returns a client for the kubeconfig in `namespace/secret_ref`, whose current
    /// resourceVersion is `resource_version` (from the Secret metadata store).
    pub async fn client(
        &self,
        host: &Client,
        namespace: &str,
        secret_ref: &SecretKeyRef,
        resource_version: &str,
        timeout: Duration,
    ) -> Result<Client, AccessError> {
        self.cached(
            host,
            namespace,
            secret_ref,
            resource_version,
            timeout,
            false,
        )
        .await
    }

    /// As [`MemberClients::client`], for long-running watches: no read timeout (a quiet
    /// watch must not be cut every `timeout`); connecting is still bounded.
    pub async fn watch_client(
        &self,
        host: &Client,
        namespace: &str,
        secret_ref: &SecretKeyRef,
        resource_version: &str,
        timeout: Duration,
    ) -> Result<Client, AccessError> {
        self.cached(host, namespace, secret_ref, resource_version, timeout, true)
            .await
    }

    async fn cached(
        &self,
        host: &Client,
        namespace: &str,
        secret_ref: &SecretKeyRef,
        resource_version: &str,
        timeout: Duration,
        watch: bool,
    ) -> Result<Client, AccessError> {
        let key = (
            namespace.to_string(),
            secret_ref.name.clone(),
            secret_ref.key.clone(),
            watch,
        );
        if let Some((rv, client)) = self.cache.lock().expect("member cache poisoned").get(&key)
            && rv == resource_version
        {
            return Ok(client.clone());
        }
        let (rv, client) = read_secret(host, namespace, secret_ref, timeout, !watch).await?;
        self.cache
            .lock()
            .expect("member cache poisoned")
            .insert(key, (rv, client.clone()));
        Ok(client)
    }

    /// Drops cached clients of a Secret (it was deleted).
    pub fn forget_secret(&self, namespace: &str, name: &str) {
        self.cache
            .lock()
            .expect("member cache poisoned")
            .retain(|(ns, n, _, _), _| !(ns == namespace && n == name));
    }
}

/// A client for the kubeconfig in `namespace/secret_ref`, read from the host now (no cache:
/// for one-off commands; the controller uses [`MemberClients`]).
pub async fn client_from_secret(
    host: &Client,
    namespace: &str,
    secret_ref: &SecretKeyRef,
    timeout: Duration,
) -> Result<Client, AccessError> {
    read_secret(host, namespace, secret_ref, timeout, true)
        .await
        .map(|(_, client)| client)
}

/// Reads the kubeconfig Secret and builds a client; returns the Secret's resourceVersion too.
async fn read_secret(
    host: &Client,
    namespace: &str,
    secret_ref: &SecretKeyRef,
    timeout: Duration,
    read_timeout: bool,
) -> Result<(String, Client), AccessError> {
    let secret_name = format!("{namespace}/{}", secret_ref.name);
    let secret = match Api::<Secret>::namespaced(host.clone(), namespace)
        .get_opt(&secret_ref.name)
        .await
    {
        Ok(Some(secret)) => secret,
        Ok(None) => return Err(AccessError::SecretNotFound(secret_name)),
        Err(e) => return Err(AccessError::Host(secret_name, e)),
    };
    let data = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&secret_ref.key))
        .ok_or_else(|| AccessError::KeyNotFound {
            secret: secret_name.clone(),
            key: secret_ref.key.clone(),
        })?;
    let invalid = |problem: String| AccessError::KubeconfigInvalid {
        secret: secret_name.clone(),
        key: secret_ref.key.clone(),
        problem,
    };
    let text = std::str::from_utf8(&data.0).map_err(|_| invalid("not UTF-8 text".into()))?;
    let client = build_client(text, timeout, read_timeout)
        .await
        .map_err(invalid)?;
    let rv = secret.metadata.resource_version.unwrap_or_default();
    Ok((rv, client))
}

/// Builds a client from kubeconfig text. The error is a sanitised description.
pub async fn client_from_kubeconfig(text: &str, timeout: Duration) -> Result<Client, String> {
    build_client(text, timeout, true).await
}

/// As [`client_from_kubeconfig`]; `read_timeout` false leaves reads unbounded (watches).
async fn build_client(text: &str, timeout: Duration, read_timeout: bool) -> Result<Client, String> {
    // A Secret must not make the controller read its own files or run commands: the same
    // rules `kurator attach` applies before it writes one (kurator_api::kubeconfig).
    let kubeconfig = kubeconfig::parse(text).map_err(|p| p.to_string())?;
    kubeconfig::check_self_contained(&kubeconfig).map_err(|p| p.to_string())?;
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| describe_config_error(&e))?;
    config.connect_timeout = Some(timeout);
    config.read_timeout = read_timeout.then_some(timeout);
    config.write_timeout = Some(timeout);
    Client::try_from(config).map_err(|e| format!("cannot build a client: {e}"))
}

fn describe_config_error(e: &kube::config::KubeconfigError) -> String {
    use kube::config::KubeconfigError as K;
    match e {
        // Messages of these variants may include decoded data; keep only what is wrong.
        K::Parse(_) => "cannot be parsed as kubeconfig YAML".into(),
        K::LoadCertificateAuthority(_) => "certificate-authority-data cannot be loaded".into(),
        K::LoadClientCertificate(_) => "client-certificate-data cannot be loaded".into(),
        K::LoadClientKey(_) => "client-key-data cannot be loaded".into(),
        K::ParseCertificates(_) => "certificates are not valid PEM".into(),
        other => other.to_string(),
    }
}

/// Checks that the member answers with these credentials: `/version`, then the
/// `kube-system` namespace (the check upstream Kurator uses). Returns the server version.
pub async fn probe(client: &Client, timeout: Duration) -> Result<String, ProbeError> {
    let check = async {
        let info = client.apiserver_version().await?;
        Api::<Namespace>::all(client.clone())
            .get("kube-system")
            .await?;
        Ok::<_, kube::Error>(info.git_version)
    };
    match tokio::time::timeout(timeout, check).await {
        Err(_) => Err(ProbeError::Unreachable(format!(
            "no answer within {}s",
            timeout.as_secs()
        ))),
        Ok(Ok(version)) => Ok(version),
        Ok(Err(kube::Error::Api(status))) if status.code == 401 => {
            Err(ProbeError::Unauthorized(status.message))
        }
        Ok(Err(kube::Error::Api(status))) if status.code == 403 => {
            Err(ProbeError::Forbidden(status.message))
        }
        Ok(Err(e)) => Err(ProbeError::Unreachable(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET_MARKER: &str = "c3VwZXItc2VjcmV0LWtleS1tYXRlcmlhbA";

    async fn problem(text: &str) -> String {
        match client_from_kubeconfig(text, Duration::from_secs(1)).await {
            Ok(_) => panic!("kubeconfig accepted"),
            Err(problem) => problem,
        }
    }

    fn with_user(user: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: m\n  cluster:\n    server: https://127.0.0.1:1\ncontexts:\n- name: c\n  context:\n    cluster: m\n    user: u\nusers:\n- name: u\n  user:\n{user}"
        )
    }

    #[tokio::test]
    async fn garbage_is_rejected_without_echoing_it() {
        let p = problem(&format!("clusters: [{SECRET_MARKER}")).await;
        assert!(p.contains("cannot be parsed"), "{p}");
        assert!(!p.contains(SECRET_MARKER));
    }

    #[tokio::test]
    async fn bad_key_data_is_rejected_without_echoing_it() {
        let text = with_user(&format!(
            "    client-certificate-data: {SECRET_MARKER}\n    client-key-data: {SECRET_MARKER}\n"
        ));
        let p = problem(&text).await;
        assert!(!p.contains(SECRET_MARKER), "{p}");
    }

    #[tokio::test]
    async fn exec_and_file_paths_are_refused() {
        let exec = with_user(
            "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: /bin/sh\n",
        );
        assert!(problem(&exec).await.contains("exec credential plugin"));
        let file = with_user("    client-certificate: /etc/passwd\n    client-key: /etc/shadow\n");
        assert!(
            problem(&file)
                .await
                .contains("client-certificate is a file path")
        );
    }

    #[tokio::test]
    async fn missing_context_is_named() {
        let p =
            problem("apiVersion: v1\nkind: Config\nclusters: []\nusers: []\ncontexts: []\n").await;
        assert!(p.contains("context"), "{p}");
    }
}
