//! What `kurator dev up` puts into the playground: the members' kubeconfig Secrets,
//! examples/quickstart (AttachedClusters, Fleet), a git repository with the brief's layout and
//! the Application that distributes it.

use std::{collections::BTreeMap, path::Path};

use anyhow::Context as _;
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api, Client,
    api::{ObjectMeta, Patch, PatchParams},
};
use kurator_api::labels::FIELD_MANAGER;
use kurator_testenv::{ClusterHandle, GitServer};

use crate::manifest;

pub const NAMESPACE: &str = "default";
pub const FLEET: &str = "quickstart";
pub const APPLICATION: &str = "gitrepo-kustomization-demo";
const REPO: &str = "podinfo";
/// podinfo's Deployment in examples/quickstart/podinfo/deploy/webapp.
pub const PODINFO_DEPLOYMENT: &str = "webapp";

/// The AttachedCluster (and kubeconfig Secret) of the `index`-th member, from 1.
pub fn member_name(index: usize) -> String {
    format!("kurator-member{index}")
}

/// The manifests, compiled in so the binary works from any directory.
const CLUSTERS: &[(&str, &str)] = &[
    (
        "attachedclusters.yaml",
        include_str!("../../../../examples/quickstart/attachedclusters.yaml"),
    ),
    (
        "fleet.yaml",
        include_str!("../../../../examples/quickstart/fleet.yaml"),
    ),
];
const APPLICATION_YAML: &str = include_str!("../../../../examples/quickstart/application.yaml");
/// The staged-rollout example's Application and repository (`dev up --plugins`).
pub const SHOP: &str = "shop";
const SHOP_APPLICATION_YAML: &str =
    include_str!("../../../../examples/quickstart/rollout/application.yaml");
const SHOP_FILES: &[(&str, &str)] = &[(
    "deploy/shop.yaml",
    include_str!("../../../../examples/quickstart/rollout/shop/deploy/shop.yaml"),
)];
/// examples/quickstart/podinfo, committed to the playground's repository.
const REPO_FILES: &[(&str, &str)] = &[
    (
        "deploy/webapp/webapp.yaml",
        include_str!("../../../../examples/quickstart/podinfo/deploy/webapp/webapp.yaml"),
    ),
    (
        "kustomize/kustomization.yaml",
        include_str!("../../../../examples/quickstart/podinfo/kustomize/kustomization.yaml"),
    ),
    (
        "kustomize/configmap.yaml",
        include_str!("../../../../examples/quickstart/podinfo/kustomize/configmap.yaml"),
    ),
];

/// Secrets, AttachedClusters and the Fleet.
pub async fn apply_clusters(client: &Client, members: &[ClusterHandle]) -> anyhow::Result<()> {
    for (index, member) in members.iter().enumerate() {
        kubeconfig_secret(client, index + 1, member).await?;
    }
    for (file, yaml) in CLUSTERS {
        let objects =
            manifest::parse(yaml).with_context(|| format!("examples/quickstart/{file}"))?;
        manifest::apply(client, &objects, NAMESPACE).await?;
    }
    Ok(())
}

/// Creates the repository under `git_root` on first use, then applies the Application
/// pointing at `git_url` (the background git server's address).
pub async fn apply_application(
    client: &Client,
    git_root: &Path,
    git_url: &str,
) -> anyhow::Result<()> {
    let yaml = APPLICATION_YAML.replace("${GIT_SERVER}", git_url);
    apply_with_repo(
        client,
        git_root,
        REPO,
        REPO_FILES,
        &yaml,
        "examples/quickstart/application.yaml",
    )
    .await
}

/// The staged-rollout example (docs/rollout.md's walkthrough): repository `shop` and
/// Application [`SHOP`].
pub async fn apply_shop(client: &Client, git_root: &Path, git_url: &str) -> anyhow::Result<()> {
    let yaml = SHOP_APPLICATION_YAML.replace("${GIT_SERVER}", git_url);
    apply_with_repo(
        client,
        git_root,
        SHOP,
        SHOP_FILES,
        &yaml,
        "examples/quickstart/rollout/application.yaml",
    )
    .await
}

/// Commits `files` to a new repository `repo` (once: a user's pushes are kept), then applies
/// `yaml`.
async fn apply_with_repo(
    client: &Client,
    git_root: &Path,
    repo: &str,
    files: &[(&str, &str)],
    yaml: &str,
    file: &str,
) -> anyhow::Result<()> {
    // A short-lived server over the same root gives us the repository helpers; the
    // background server is the one Flux talks to.
    let local = GitServer::start(git_root).context("opening the playground's git root")?;
    let handle = match local.repo(repo) {
        Ok(handle) => handle,
        Err(_) => local
            .create_repo(repo)
            .with_context(|| format!("creating the {repo} repository"))?,
    };
    if handle.head().context("reading the repository")?.is_none() {
        handle
            .commit_files(files, &format!("{repo}: the example's first revision"))
            .context("committing examples")?;
    }
    let objects = manifest::parse(yaml).context(file.to_string())?;
    manifest::apply(client, &objects, NAMESPACE).await
}

/// The member's kubeconfig, in a Secret named and keyed as the quickstart expects.
async fn kubeconfig_secret(
    client: &Client,
    index: usize,
    member: &ClusterHandle,
) -> anyhow::Result<()> {
    let name = member_name(index);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(NAMESPACE.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            format!("{name}.config"),
            ByteString(member.kubeconfig_yaml().into_bytes()),
        )])),
        ..Default::default()
    };
    let api: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&secret),
    )
    .await
    .with_context(|| format!("creating Secret {name}"))?;
    Ok(())
}
