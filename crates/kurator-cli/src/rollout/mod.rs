//! `kurator rollout status|promote|pause|resume|abort|undo APP`: the staged rollout of an
//! Application (docs/rollout.md).
//!
//! The Application is read as JSON (`spec.stagedRollout`, `status.stagedRollout`) rather than
//! through the typed `Application`, so the commands do not depend on which API version of the
//! typed struct carries the fields. Requests are annotations the controller reads
//! ([`requests`]); nothing here changes the spec.

pub mod render;
pub mod requests;

use std::{collections::BTreeMap, path::PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DynamicObject, Patch, PatchParams},
};
use kurator_api::{
    Application, AttachedCluster, Cluster, CustomCluster, Fleet, MemberCluster,
    fleet::ClusterKind,
    rollout::{StagedRolloutSpec, StagedRolloutStatus},
};
use kurator_controller::{
    application::targets::{self, ClusterInfo},
    rollout::stages::DestinationCluster,
};

use requests::Verb;

/// The field manager of the request annotations: a GitOps applier of the Application's spec
/// does not own them, so it does not revert them.
pub const FIELD_MANAGER: &str = "kurator-cli";

#[derive(Subcommand, Debug)]
pub enum RolloutCommand {
    /// The run (from → to, stage, why paused), each cluster's revision, state and gates, the
    /// history.
    Status(StatusArgs),
    /// Approve the current stage (its approval gate); only while it awaits approval.
    Promote(Target),
    /// Hold the run where it is.
    Pause(Target),
    /// Continue a paused run (a failed stage is retried).
    Resume(Target),
    /// End the run; every cluster off the stable revision goes back to it.
    Abort(Target),
    /// With no run: roll back to the last run's previous revision, as a new staged run.
    Undo(Target),
}

/// The Application a command is about.
#[derive(Args, Debug)]
pub struct Target {
    pub app: String,
    #[arg(short, long)]
    pub namespace: Option<String>,
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: Target,
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Table,
    /// `status.stagedRollout` as JSON.
    Json,
}

pub async fn run(command: RolloutCommand) -> anyhow::Result<()> {
    let (target, verb) = match command {
        RolloutCommand::Status(args) => return status(args).await,
        RolloutCommand::Promote(t) => (t, Verb::Promote),
        RolloutCommand::Pause(t) => (t, Verb::Pause),
        RolloutCommand::Resume(t) => (t, Verb::Resume),
        RolloutCommand::Abort(t) => (t, Verb::Abort),
        RolloutCommand::Undo(t) => (t, Verb::Undo),
    };
    request(target, verb).await
}

/// An Application's staged rollout as the API server has it.
pub struct Rollout {
    pub namespace: String,
    pub spec: StagedRolloutSpec,
    pub status: Option<StagedRolloutStatus>,
}

fn applications(client: Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client, namespace, &ApiResource::erase::<Application>(&()))
}

/// `spec.stagedRollout` and `status.stagedRollout` of an Application's JSON; `Ok(None)` when it
/// has no `spec.stagedRollout`.
pub fn from_json(
    data: &serde_json::Value,
) -> anyhow::Result<Option<(StagedRolloutSpec, Option<StagedRolloutStatus>)>> {
    let Some(spec) = data.pointer("/spec/stagedRollout").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let spec = serde_json::from_value(spec.clone()).context("reading spec.stagedRollout")?;
    let status = match data
        .pointer("/status/stagedRollout")
        .filter(|v| !v.is_null())
    {
        Some(s) => Some(serde_json::from_value(s.clone()).context("reading status.stagedRollout")?),
        None => None,
    };
    Ok(Some((spec, status)))
}

async fn read(client: Client, target: &Target) -> anyhow::Result<Rollout> {
    let namespace = target
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let app = applications(client, &namespace)
        .get(&target.app)
        .await
        .with_context(|| format!("application {namespace}/{}", target.app))?;
    let Some((spec, status)) =
        from_json(&app.data).with_context(|| format!("application {namespace}/{}", target.app))?
    else {
        anyhow::bail!(
            "application {namespace}/{} has no stagedRollout; it deploys every revision to \
             every cluster at once",
            target.app
        );
    };
    Ok(Rollout {
        namespace,
        spec,
        status,
    })
}

async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let client = crate::client(args.target.kubeconfig.as_ref()).await?;
    let rollout = read(client, &args.target).await?;
    match args.output {
        Output::Table => print!(
            "{}",
            render::status_text(&rollout.spec, rollout.status.as_ref())
        ),
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&rollout.status.unwrap_or_default())?
        ),
    }
    Ok(())
}

async fn request(target: Target, verb: Verb) -> anyhow::Result<()> {
    let client = crate::client(target.kubeconfig.as_ref()).await?;
    let rollout = read(client.clone(), &target).await?;
    let status = rollout.status.unwrap_or_default();
    let nonce = Timestamp::now().to_string();
    let request = requests::build(verb, &target.app, &status, &nonce)
        .with_context(|| format!("{} not requested", verb.as_str()))?;
    applications(client, &rollout.namespace)
        .patch(
            &target.app,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Merge(request.patch()),
        )
        .await
        .with_context(|| {
            format!(
                "writing {} on application {}/{}",
                request.annotation, rollout.namespace, target.app
            )
        })?;
    println!(
        "requested: {} (annotation {}={})\nthe controller acts on it at its next reconcile; \
         follow with: kurator rollout status {} -n {}",
        request.what, request.annotation, request.token, target.app, rollout.namespace
    );
    Ok(())
}

/// The clusters of an Application's destination fleets with their labels, as the controller
/// resolves them (`targets::resolve`: fleet members carrying the fleet's label, filtered by
/// the destination's selector, with a kubeconfig), each once.
pub async fn destination_clusters(
    client: Client,
    namespace: &str,
    app: &Application,
) -> anyhow::Result<Vec<DestinationCluster>> {
    let mut fleet_names: Vec<&str> = app
        .spec
        .sync_policies
        .iter()
        .filter_map(|p| p.destination.as_ref().or(app.spec.destination.as_ref()))
        .map(|d| d.fleet.as_str())
        .collect();
    fleet_names.sort();
    fleet_names.dedup();
    let fleet_api: Api<Fleet> = Api::namespaced(client.clone(), namespace);
    let mut fleets = BTreeMap::new();
    for name in fleet_names {
        if let Some(fleet) = fleet_api
            .get_opt(name)
            .await
            .with_context(|| format!("fleet {namespace}/{name}"))?
        {
            fleets.insert(name.to_string(), fleet);
        }
    }
    let mut members: BTreeMap<(ClusterKind, String), ClusterInfo> = BTreeMap::new();
    collect::<AttachedCluster>(
        &client,
        namespace,
        ClusterKind::AttachedCluster,
        &mut members,
    )
    .await?;
    collect::<Cluster>(&client, namespace, ClusterKind::Cluster, &mut members).await?;
    collect::<CustomCluster>(&client, namespace, ClusterKind::CustomCluster, &mut members).await?;
    let resolved = targets::resolve(
        app,
        |name| fleets.get(name).cloned(),
        |member| members.get(&(member.kind, member.name.clone())).cloned(),
    );
    let mut out: Vec<DestinationCluster> = Vec::new();
    for target in resolved.policies.iter().flat_map(|p| &p.targets) {
        if out.iter().any(|c| c.name == target.cluster_name) {
            continue;
        }
        let labels = members
            .get(&(target.cluster_kind, target.cluster_name.clone()))
            .map(|m| m.labels.clone())
            .unwrap_or_default();
        out.push(DestinationCluster {
            name: target.cluster_name.clone(),
            labels,
        });
    }
    Ok(out)
}

/// Every cluster object of kind `K` in `namespace`, as the controller's stores show it.
async fn collect<K>(
    client: &Client,
    namespace: &str,
    kind: ClusterKind,
    into: &mut BTreeMap<(ClusterKind, String), ClusterInfo>,
) -> anyhow::Result<()>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + MemberCluster
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let list = Api::<K>::namespaced(client.clone(), namespace)
        .list(&Default::default())
        .await
        .with_context(|| format!("listing {kind} in {namespace}"))?;
    for object in list {
        into.insert(
            (kind, object.name_any()),
            ClusterInfo {
                labels: object.labels().clone(),
                kubeconfig: object.kubeconfig_ref(),
                ready: object.readiness().ready,
            },
        );
    }
    Ok(())
}
