//! What a kubeconfig must look like to be stored in a Secret for the controller: one the
//! controller can use without reading its own files or running commands.
//!
//! The controller checks every kubeconfig Secret with [`check_self_contained`];
//! `kurator attach` reduces a user's kubeconfig to one context with [`reduce`] (which applies
//! the same check) before it writes the Secret. Pure functions: no file is read here.
//!
//! Problems name the entry and the field, never the data: a kubeconfig holds credentials.

use kube::config::{Kubeconfig, NamedAuthInfo, NamedCluster};

/// Why a kubeconfig cannot be used from a Secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KubeconfigProblem {
    /// The parser's own message may quote the input, so only this is said.
    #[error("cannot be parsed as kubeconfig YAML (clusters, users, contexts)")]
    Unparseable,
    #[error("has no current-context; choose one of its contexts ({})", names(.contexts))]
    NoCurrentContext { contexts: Vec<String> },
    #[error("has no context {context:?} (its contexts: {})", names(.contexts))]
    ContextNotFound {
        context: String,
        contexts: Vec<String>,
    },
    #[error("context {context:?} names cluster {cluster:?}, which the kubeconfig does not define")]
    ClusterNotFound { context: String, cluster: String },
    #[error("context {context:?} names user {user:?}, which the kubeconfig does not define")]
    UserNotFound { context: String, user: String },
    /// A field that names a file: the controller would read its own filesystem.
    #[error("{entry} {name:?}: {field} is a file path; {fix}")]
    FilePath {
        entry: Entry,
        name: String,
        field: &'static str,
        fix: &'static str,
    },
    /// `exec` or `auth-provider`: the controller would run a command to get credentials.
    #[error(
        "user {user:?} uses {plugin}, which runs a program to get credentials; use a client \
         certificate (client-certificate-data, client-key-data) or a token (for example a \
         ServiceAccount token) instead"
    )]
    CredentialPlugin { user: String, plugin: &'static str },
}

/// The kind of kubeconfig entry a problem is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    Cluster,
    User,
}

impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Entry::Cluster => "cluster",
            Entry::User => "user",
        })
    }
}

fn names(names: &[String]) -> String {
    if names.is_empty() {
        return "none".into();
    }
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses kubeconfig text (several YAML documents are merged, as kubectl does).
pub fn parse(text: &str) -> Result<Kubeconfig, KubeconfigProblem> {
    Kubeconfig::from_yaml(text).map_err(|_| KubeconfigProblem::Unparseable)
}

/// Every cluster and user must carry its data inline: no file paths, no exec or auth-provider
/// plugins. A kubeconfig in a Secret is used by the controller, whose files and programs are
/// not the user's.
pub fn check_self_contained(kubeconfig: &Kubeconfig) -> Result<(), KubeconfigProblem> {
    kubeconfig.clusters.iter().try_for_each(check_cluster)?;
    kubeconfig.auth_infos.iter().try_for_each(check_user)
}

fn check_cluster(named: &NamedCluster) -> Result<(), KubeconfigProblem> {
    if named
        .cluster
        .as_ref()
        .is_some_and(|c| c.certificate_authority.is_some())
    {
        return Err(KubeconfigProblem::FilePath {
            entry: Entry::Cluster,
            name: named.name.clone(),
            field: "certificate-authority",
            fix: "embed the file's content as certificate-authority-data",
        });
    }
    Ok(())
}

fn check_user(named: &NamedAuthInfo) -> Result<(), KubeconfigProblem> {
    let Some(auth) = &named.auth_info else {
        return Ok(());
    };
    let plugin = |plugin| {
        Err(KubeconfigProblem::CredentialPlugin {
            user: named.name.clone(),
            plugin,
        })
    };
    let file = |field, fix| {
        Err(KubeconfigProblem::FilePath {
            entry: Entry::User,
            name: named.name.clone(),
            field,
            fix,
        })
    };
    if auth.exec.is_some() {
        return plugin("an exec credential plugin (exec)");
    }
    if auth.auth_provider.is_some() {
        return plugin("an auth-provider plugin (auth-provider)");
    }
    if auth.client_certificate.is_some() {
        return file(
            "client-certificate",
            "embed the file's content as client-certificate-data",
        );
    }
    if auth.client_key.is_some() {
        return file("client-key", "embed the file's content as client-key-data");
    }
    if auth.token_file.is_some() {
        return file("tokenFile", "put the token itself in token");
    }
    Ok(())
}

/// The kubeconfig reduced to one context (`context`, else the current context) with its
/// cluster and user, and that context as current; checked with [`check_self_contained`].
/// Other contexts are dropped, so their plugins or files do not matter.
pub fn reduce(
    kubeconfig: &Kubeconfig,
    context: Option<&str>,
) -> Result<Kubeconfig, KubeconfigProblem> {
    let contexts = || kubeconfig.contexts.iter().map(|c| c.name.clone()).collect();
    let name = match context.or(kubeconfig.current_context.as_deref()) {
        Some(name) if !name.is_empty() => name,
        _ => {
            return Err(KubeconfigProblem::NoCurrentContext {
                contexts: contexts(),
            });
        }
    };
    let missing_context = || KubeconfigProblem::ContextNotFound {
        context: name.to_string(),
        contexts: contexts(),
    };
    let named_context = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == name)
        .ok_or_else(missing_context)?;
    let ctx = named_context.context.as_ref().ok_or_else(missing_context)?;
    let cluster = kubeconfig
        .clusters
        .iter()
        .find(|c| c.name == ctx.cluster)
        .ok_or_else(|| KubeconfigProblem::ClusterNotFound {
            context: name.to_string(),
            cluster: ctx.cluster.clone(),
        })?;
    let users = match ctx.user.as_deref() {
        // A context without a user connects anonymously; nothing to copy.
        None | Some("") => vec![],
        Some(user) => vec![
            kubeconfig
                .auth_infos
                .iter()
                .find(|u| u.name == user)
                .ok_or_else(|| KubeconfigProblem::UserNotFound {
                    context: name.to_string(),
                    user: user.to_string(),
                })?
                .clone(),
        ],
    };
    let reduced = Kubeconfig {
        api_version: Some("v1".into()),
        kind: Some("Config".into()),
        clusters: vec![cluster.clone()],
        auth_infos: users,
        contexts: vec![named_context.clone()],
        current_context: Some(name.to_string()),
        ..Kubeconfig::default()
    };
    check_self_contained(&reduced)?;
    Ok(reduced)
}

#[cfg(test)]
mod tests;
