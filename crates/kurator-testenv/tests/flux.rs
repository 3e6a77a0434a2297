//! End to end: host + two members, Flux source-, kustomize- and helm-controller against the
//! host, a smart-HTTP git server and a Helm chart repository on loopback. Workloads land as
//! objects in the members (no pods run).
//!
//! One environment is shared by the steps (starting it is the expensive part on a 2-core
//! machine); each step polls its condition with a deadline.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Api, Client};
use kurator_testenv::wait;
use kurator_testenv::{GitRepo, GitServer, HelmRepo, TestEnv};
use serde_json::{Value, json};

/// Flux polls and retries with backoff; allow for a busy 2-core machine.
const WAIT: Duration = Duration::from_secs(120);
const NS: &str = "default";
const MANAGER: &str = "kurator-testenv-tests";

fn config_map_yaml(greeting: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-git\n  namespace: default\n\
         data:\n  greeting: {greeting}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flux_delivers_git_and_helm_to_members() -> Result<()> {
    crate::common::init();
    // Binaries first (no-ops once cached), so the start time below is the warm start.
    let build = Instant::now();
    let (binaries, flux) = tokio::task::spawn_blocking(|| {
        Ok::<_, kurator_testenv::Error>((
            kurator_testenv::ensure_binaries()?,
            kurator_testenv::ensure_flux_binaries()?,
        ))
    })
    .await??;
    eprintln!(
        "ensure_binaries + ensure_flux_binaries: {:.1}s",
        build.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    let env = TestEnv::builder()
        .members(2)
        .binaries(binaries)
        .flux(true)
        .flux_binaries(flux)
        .start()
        .await?;
    eprintln!(
        "warm start of host + 2 members + flux: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    ensure!(env.flux_running(), "flux controllers must run");

    // Fixtures live in the state dir (removed with the environment, kept on failure).
    let fixtures = env.state_dir().join("fixtures");
    let git = GitServer::start(fixtures.join("git"))?;
    let charts = HelmRepo::start(fixtures.join("charts"))?;
    let host = env.host().client().await?;
    for member in env.members() {
        kubeconfig_secret(&host, member.name(), &member.kubeconfig_yaml()).await?;
    }

    let t = Instant::now();
    let repo = git.create_repo("fleet")?;
    let sha = repo.commit_files(&[("deploy/cm.yaml", &config_map_yaml("v1"))], "v1")?;
    git_repository_becomes_ready(&host, &repo, &sha).await?;
    eprintln!("GitRepository ready: {:.1}s", t.elapsed().as_secs_f64());

    let t = Instant::now();
    kustomization_reaches_member1(&env, &host, &repo).await?;
    eprintln!(
        "Kustomization applied to member1 and updated: {:.1}s",
        t.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    helm_release_reaches_member2(&env, &host, &charts).await?;
    eprintln!(
        "HelmRelease installed in member2: {:.1}s",
        t.elapsed().as_secs_f64()
    );
    ensure!(env.flux_running(), "no flux controller may have crashed");
    Ok(())
}

/// `kind` with its plural, e.g. `("GitRepository", "gitrepositories")`.
fn flux_api(client: &Client, group: &str, version: &str, kind: (&str, &str)) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(group, version, kind.0);
    let ar = ApiResource::from_gvk_with_plural(&gvk, kind.1);
    Api::namespaced_with(client.clone(), NS, &ar)
}

fn git_repositories(client: &Client) -> Api<DynamicObject> {
    flux_api(
        client,
        "source.toolkit.fluxcd.io",
        "v1",
        ("GitRepository", "gitrepositories"),
    )
}

/// Server-side applies a Flux object given as JSON.
async fn apply(api: &Api<DynamicObject>, object: Value) -> Result<()> {
    let name = object["metadata"]["name"]
        .as_str()
        .context("object without a name")?
        .to_string();
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&object),
    )
    .await
    .with_context(|| format!("applying {name}"))?;
    Ok(())
}

/// `Ok(true)` once Flux reports `Ready=True` for the object's current generation (and `extra`
/// holds); otherwise an error describing the status, which `wait::until` reports on timeout.
/// The rule is kurator-api's `flux::readiness` (this crate does not depend on kurator-api): a
/// status without `observedGeneration`, or with an older one, is not about the current spec,
/// nor is a Ready condition whose own `observedGeneration` is older.
async fn ready(
    api: &Api<DynamicObject>,
    name: &str,
    extra: impl Fn(&Value) -> bool,
) -> Result<bool> {
    let obj = api.get(name).await?;
    let status = obj.data.get("status").cloned().unwrap_or(Value::Null);
    let generation = obj.metadata.generation;
    let observed = |v: &Value| v["observedGeneration"].as_i64();
    let current = generation.is_none() || observed(&status) >= generation;
    let is_ready = current
        && status["conditions"].as_array().is_some_and(|cs| {
            cs.iter().any(|c| {
                c["type"] == "Ready"
                    && c["status"] == "True"
                    && (observed(c).is_none() || observed(c) >= generation)
            })
        });
    if is_ready && extra(&status) {
        Ok(true)
    } else {
        Err(anyhow!("{name} not there yet; status: {status}"))
    }
}

async fn kubeconfig_secret(host: &Client, cluster: &str, kubeconfig: &str) -> Result<()> {
    let secrets: Api<Secret> = Api::namespaced(host.clone(), NS);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(format!("{cluster}-kubeconfig")),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([(
            "value".to_string(),
            kubeconfig.to_string(),
        )])),
        ..Default::default()
    };
    secrets
        .patch(
            &format!("{cluster}-kubeconfig"),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await?;
    Ok(())
}

async fn git_repository_becomes_ready(host: &Client, repo: &GitRepo, sha: &str) -> Result<()> {
    let api = git_repositories(host);
    apply(
        &api,
        json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1",
            "kind": "GitRepository",
            "metadata": {"name": "fleet", "namespace": NS},
            "spec": {"url": repo.url(), "interval": "1m", "ref": {"branch": "master"}}
        }),
    )
    .await?;
    wait::until(
        "GitRepository fleet to be Ready at the commit",
        WAIT,
        || async {
            ready(&api, "fleet", |s| {
                s["artifact"]["revision"]
                    .as_str()
                    .is_some_and(|r| r.contains(sha))
            })
            .await
        },
    )
    .await?;
    Ok(())
}

async fn member_greeting(client: &Client, ns: &str, name: &str) -> Result<Option<String>> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    Ok(cms
        .get_opt(name)
        .await?
        .and_then(|cm| cm.data)
        .and_then(|d| d.get("greeting").cloned()))
}

async fn kustomization_reaches_member1(env: &TestEnv, host: &Client, repo: &GitRepo) -> Result<()> {
    let member1 = env.members()[0].client().await?;
    let kustomizations = flux_api(
        host,
        "kustomize.toolkit.fluxcd.io",
        "v1",
        ("Kustomization", "kustomizations"),
    );
    apply(
        &kustomizations,
        json!({
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
            "kind": "Kustomization",
            "metadata": {"name": "fleet-member1", "namespace": NS},
            "spec": {
                "interval": "1m",
                "sourceRef": {"kind": "GitRepository", "name": "fleet"},
                "path": "./deploy",
                "prune": true,
                "wait": false,
                "kubeConfig": {"secretRef": {"name": "member1-kubeconfig"}}
            }
        }),
    )
    .await?;
    let greeting = |want: &'static str| {
        let member1 = member1.clone();
        let kustomizations = kustomizations.clone();
        async move {
            match member_greeting(&member1, NS, "from-git").await? {
                Some(g) if g == want => Ok(true),
                seen => {
                    let status = kustomizations
                        .get("fleet-member1")
                        .await
                        .map(|k| k.data["status"].to_string())
                        .unwrap_or_default();
                    Err(anyhow!(
                        "member1 greeting {seen:?}, want {want:?}; kustomization status: {status}"
                    ))
                }
            }
        }
    };
    wait::until("ConfigMap from git in member1", WAIT, || greeting("v1")).await?;
    // The host must not get it: the Kustomization targets member1.
    ensure!(member_greeting(host, NS, "from-git").await?.is_none());

    // A new commit reaches member1; ask source-controller to fetch now.
    let sha = repo.commit_files(&[("deploy/cm.yaml", &config_map_yaml("v2"))], "v2")?;
    // A merge patch: re-applying only metadata would drop our applied spec.
    let requested = json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": sha}}});
    git_repositories(host)
        .patch("fleet", &PatchParams::default(), &Patch::Merge(&requested))
        .await?;
    wait::until("updated ConfigMap in member1", WAIT, || greeting("v2")).await?;
    Ok(())
}

const GREETER_TEMPLATE: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: greeter
data:
  greeting: {{ .Values.greeting | quote }}
  release: {{ .Release.Name | quote }}
"#;

async fn helm_release_reaches_member2(
    env: &TestEnv,
    host: &Client,
    charts: &HelmRepo,
) -> Result<()> {
    charts.add_chart(
        "greeter",
        "0.1.0",
        &[
            ("templates/cm.yaml", GREETER_TEMPLATE),
            ("values.yaml", "greeting: default\n"),
        ],
    )?;
    let member2 = env.members()[1].client().await?;
    apply(
        &flux_api(
            host,
            "source.toolkit.fluxcd.io",
            "v1",
            ("HelmRepository", "helmrepositories"),
        ),
        json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1",
            "kind": "HelmRepository",
            "metadata": {"name": "charts", "namespace": NS},
            "spec": {"url": charts.url(), "interval": "1m"}
        }),
    )
    .await?;
    let releases = flux_api(
        host,
        "helm.toolkit.fluxcd.io",
        "v2",
        ("HelmRelease", "helmreleases"),
    );
    apply(
        &releases,
        json!({
            "apiVersion": "helm.toolkit.fluxcd.io/v2",
            "kind": "HelmRelease",
            "metadata": {"name": "greeter", "namespace": NS},
            "spec": {
                "interval": "1m",
                "chart": {"spec": {
                    "chart": "greeter",
                    "version": "0.1.0",
                    "sourceRef": {"kind": "HelmRepository", "name": "charts"}
                }},
                "values": {"greeting": "hello from helm"},
                "targetNamespace": "apps",
                "install": {"createNamespace": true, "disableWait": true},
                "upgrade": {"disableWait": true},
                "kubeConfig": {"secretRef": {"name": "member2-kubeconfig"}}
            }
        }),
    )
    .await?;
    wait::until("ConfigMap rendered by the chart in member2", WAIT, || {
        let member2 = member2.clone();
        let releases = releases.clone();
        async move {
            match member_greeting(&member2, "apps", "greeter").await {
                Ok(Some(g)) if g == "hello from helm" => Ok(true),
                seen => {
                    let status = releases
                        .get("greeter")
                        .await
                        .map(|r| r.data["status"].to_string())
                        .unwrap_or_default();
                    Err(anyhow!(
                        "member2 greeting {seen:?}; helmrelease status: {status}"
                    ))
                }
            }
        }
    })
    .await?;
    wait::until("HelmRelease greeter to be Ready", WAIT, || {
        ready(&releases, "greeter", |_| true)
    })
    .await?;
    // member1 did not get it.
    ensure!(
        member_greeting(&env.members()[0].client().await?, "apps", "greeter")
            .await?
            .is_none()
    );
    Ok(())
}
