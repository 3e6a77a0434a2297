//! `kurator get clusters|fleets`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, Client, Resource,
    api::ListParams,
    runtime::{WatchStreamExt, watcher},
};
use kurator_api::{Application, AttachedCluster, Fleet};
use serde::{Serialize, de::DeserializeOwned};

use crate::tables;

#[derive(Args, Debug)]
pub struct GetArgs {
    /// What to list.
    pub what: What,
    /// Namespace (default: the kubeconfig context's).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// List across all namespaces.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Output format.
    #[arg(short, long, value_enum)]
    pub output: Option<Output>,
    /// After the first listing, print the table again whenever it changes.
    #[arg(short, long)]
    pub watch: bool,
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    #[command(flatten)]
    pub reports: crate::policyreports::PolicyReportArgs,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum What {
    #[value(alias = "cluster", alias = "attachedclusters")]
    Clusters,
    #[value(alias = "fleet")]
    Fleets,
    #[value(alias = "application", alias = "apps", alias = "app")]
    Applications,
    /// A fleet's policy reports (with --fleet NAME).
    #[value(name = "policyreports", alias = "policyreport", alias = "polr")]
    PolicyReports,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Table,
    Wide,
    Yaml,
    Json,
}

pub async fn run(args: GetArgs) -> anyhow::Result<()> {
    let client = crate::client(args.kubeconfig.as_ref()).await?;
    let mut shown = render(&client, &args).await?;
    print!("{shown}");
    if !args.watch {
        return Ok(());
    }
    let mut changes = match args.what {
        What::Clusters => changes(api::<AttachedCluster>(&client, &args)),
        What::Fleets => changes(api::<Fleet>(&client, &args)),
        What::Applications => changes(api::<Application>(&client, &args)),
        What::PolicyReports => changes(api::<Fleet>(&client, &args)),
    };
    while changes.next().await.is_some() {
        let text = render(&client, &args).await?;
        if text != shown {
            println!();
            print!("{text}");
            shown = text;
        }
    }
    Ok(())
}

/// The listing as the chosen output format.
async fn render(client: &Client, args: &GetArgs) -> anyhow::Result<String> {
    let now = Timestamp::now();
    let wide = args.output == Some(Output::Wide);
    Ok(match args.what {
        What::Clusters => {
            let items = list::<AttachedCluster>(client, args).await?;
            structured(&items, args.output)?
                .unwrap_or_else(|| tables::clusters(&items, args.all_namespaces, wide, now))
        }
        What::Fleets => {
            let items = list::<Fleet>(client, args).await?;
            structured(&items, args.output)?
                .unwrap_or_else(|| tables::fleets(&items, args.all_namespaces, wide, now))
        }
        What::Applications => {
            let items = list::<Application>(client, args).await?;
            structured(&items, args.output)?
                .unwrap_or_else(|| tables::applications(&items, args.all_namespaces, wide, now))
        }
        What::PolicyReports => crate::policyreports::render(client, args, now).await?,
    })
}

/// One item per change of any listed object (watch errors are retried with backoff).
fn changes<K>(api: Api<K>) -> futures::stream::BoxStream<'static, ()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher(api, watcher::Config::default())
        .default_backoff()
        .filter_map(|event| async move {
            matches!(
                event,
                Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_))
            )
            .then_some(())
        })
        .boxed()
}

fn api<K>(client: &Client, args: &GetArgs) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    if args.all_namespaces {
        Api::all(client.clone())
    } else {
        let ns = args
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string());
        Api::namespaced(client.clone(), &ns)
    }
}

async fn list<K>(client: &Client, args: &GetArgs) -> anyhow::Result<Vec<K>>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let mut items = api::<K>(client, args)
        .list(&ListParams::default())
        .await?
        .items;
    items.sort_by_key(|o| (o.meta().namespace.clone(), o.meta().name.clone()));
    Ok(items)
}

/// YAML or JSON in kubectl's `List` shape; `None` for table formats.
fn structured<K: Serialize>(items: &[K], output: Option<Output>) -> anyhow::Result<Option<String>> {
    let list = serde_json::json!({ "apiVersion": "v1", "kind": "List", "items": items });
    Ok(match output {
        Some(Output::Json) => Some(serde_json::to_string_pretty(&list)? + "\n"),
        Some(Output::Yaml) => Some(serde_saphyr::to_string(&list)?),
        _ => None,
    })
}
