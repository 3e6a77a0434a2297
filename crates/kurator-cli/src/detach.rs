//! `kurator detach NAME`: the AttachedCluster leaves every fleet that lists it, is deleted,
//! and so is the kubeconfig Secret `kurator attach` made for it (never a Secret it did not
//! make).

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Args;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams},
};
use kurator_api::{AttachedCluster, Fleet};

use crate::{
    attach::{created_by_attach, secret_name},
    fleet_edit,
};

#[derive(Args, Debug)]
pub struct DetachArgs {
    /// Name of the AttachedCluster.
    pub name: String,
    /// Namespace on the host (default: the host kubeconfig context's).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Keep the kubeconfig Secret.
    #[arg(long)]
    pub keep_secret: bool,
    /// Kubeconfig of the host cluster (default: KUBECONFIG, ~/.kube/config, or in-cluster);
    /// --host-kubeconfig works too, as for attach.
    #[arg(
        long,
        env = "KUBECONFIG",
        value_name = "FILE",
        visible_alias = "host-kubeconfig"
    )]
    pub kubeconfig: Option<PathBuf>,
}

pub async fn run(args: DetachArgs) -> anyhow::Result<()> {
    let (host, ns) =
        crate::host_and_namespace(args.kubeconfig.as_ref(), args.namespace.as_ref()).await?;
    let name = &args.name;
    let mut found = false;

    let fleets: Api<Fleet> = Api::namespaced(host.clone(), &ns);
    let listing = fleets
        .list(&ListParams::default())
        .await
        .with_context(|| format!("listing Fleets in {ns}"))?;
    for fleet in listing.items.iter().filter(|f| fleet_edit::lists(f, name)) {
        let fleet = fleet.name_any();
        if fleet_edit::remove(&fleets, &fleet, name).await? {
            println!("Fleet {ns}/{fleet}: {name} removed");
            found = true;
        }
    }

    let clusters: Api<AttachedCluster> = Api::namespaced(host.clone(), &ns);
    let secret = match clusters
        .get_opt(name)
        .await
        .with_context(|| format!("reading AttachedCluster {ns}/{name}"))?
    {
        Some(ac) => {
            clusters
                .delete(name, &DeleteParams::default())
                .await
                .with_context(|| format!("deleting AttachedCluster {ns}/{name}"))?;
            println!("AttachedCluster {ns}/{name} deleted");
            found = true;
            ac.spec.kubeconfig.name
        }
        None => secret_name(name),
    };

    if !args.keep_secret {
        let secrets: Api<Secret> = Api::namespaced(host.clone(), &ns);
        match secrets
            .get_opt(&secret)
            .await
            .with_context(|| format!("reading Secret {ns}/{secret}"))?
        {
            Some(s) if created_by_attach(&s, name) => {
                secrets
                    .delete(&secret, &DeleteParams::default())
                    .await
                    .with_context(|| format!("deleting Secret {ns}/{secret}"))?;
                println!("Secret {ns}/{secret} deleted");
                found = true;
            }
            Some(_) => println!("Secret {ns}/{secret} kept: kurator attach did not create it"),
            None => {}
        }
    }

    if !found {
        bail!("nothing to detach: no AttachedCluster {ns}/{name}, and no fleet in {ns} lists it");
    }
    Ok(())
}
