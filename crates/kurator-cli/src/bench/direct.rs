//! The limit the controller is compared with: a client making, on the same API server, the
//! minimum writes that a user creating the Applications and the controller fanning them out
//! must make together. Per Application: the Application itself, its finalizer, one source
//! apply, one server-side apply per Kustomization, one status write; `concurrency` requests
//! in flight in all.
//!
//! The Applications are of a copy of the Application CRD in another group
//! (`bench.kurator.dev`), same schema and validation, so that the running controller does not
//! reconcile them. The source and the status written are copies of what the controller wrote
//! for the scenario just measured, so every write has the size of the controller's.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{
    Api, Client, CustomResourceExt, ResourceExt,
    api::{ApiResource, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams},
};
use kurator_api::{
    Application,
    flux::{
        CrossNamespaceSourceReference, GitRepository, KubeConfigReference, Kustomization,
        KustomizationSpec, SecretKeyReference,
    },
    labels::{APP_FINALIZER, APP_NAME, FIELD_MANAGER, FLEET},
};
use tokio::sync::Semaphore;

const GROUP: &str = "bench.kurator.dev";

/// The Application CRD under [`GROUP`], without categories or short names (so `kubectl get
/// kurator-dev` and `kubectl get app` do not show the benchmark's copies).
pub fn application_crd_yaml() -> String {
    let mut crd = Application::crd();
    crd.spec.group = GROUP.into();
    crd.metadata.name = Some(format!("{}.{GROUP}", crd.spec.names.plural));
    crd.spec.names.categories = None;
    crd.spec.names.short_names = None;
    kurator_api::crds::to_yaml(&crd)
}

fn bench_application() -> ApiResource {
    let mut ar = ApiResource::erase::<Application>(&());
    ar.group = GROUP.into();
    ar.api_version = format!("{GROUP}/{}", ar.version);
    ar
}

/// What the controller wrote for one Application of the measured scenario.
pub struct Template {
    source: GitRepository,
    status: serde_json::Value,
}

impl Template {
    /// The source and the status of the controller's Application `name` in `ns`.
    pub async fn read(client: &Client, ns: &str, name: &str) -> anyhow::Result<Self> {
        let app = Api::<Application>::namespaced(client.clone(), ns)
            .get(name)
            .await?;
        let status = serde_json::to_value(app.status.context("the Application has no status")?)?;
        // The controller names an Application's source after it.
        let mut source = Api::<GitRepository>::namespaced(client.clone(), ns)
            .get(name)
            .await
            .with_context(|| format!("the source of Application {ns}/{name}"))?;
        let meta = &source.metadata;
        source.metadata = ObjectMeta {
            labels: meta.labels.clone(),
            annotations: meta.annotations.clone(),
            owner_references: meta.owner_references.clone(),
            ..ObjectMeta::default()
        };
        source.status = None;
        Ok(Template { source, status })
    }
}

/// Makes the writes of `apps` Applications fanning out to `per_app` clusters each, in the
/// new namespace `ns`; returns how long they took.
pub async fn run(
    client: &Client,
    ns: &str,
    apps: usize,
    per_app: usize,
    concurrency: usize,
    template: &Template,
) -> anyhow::Result<Duration> {
    super::create_namespace(client, ns).await?;
    let writer = Writer {
        client: client.clone(),
        ns: ns.to_string(),
        apps: Api::namespaced_with(client.clone(), ns, &bench_application()),
        permits: Arc::new(Semaphore::new(concurrency.max(1))),
        concurrency: concurrency.max(1),
    };
    let writer = &writer;
    let started = Instant::now();
    stream::iter(0..apps)
        .map(|a| writer.application(format!("app-{a}"), per_app, template))
        .buffer_unordered(concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    Ok(started.elapsed())
}

struct Writer {
    client: Client,
    ns: String,
    apps: Api<DynamicObject>,
    /// One per request in flight.
    permits: Arc<Semaphore>,
    concurrency: usize,
}

impl Writer {
    async fn limited<T>(&self, request: impl Future<Output = T>) -> T {
        let _permit = self.permits.acquire().await.expect("never closed");
        request.await
    }

    async fn application(
        &self,
        name: String,
        per_app: usize,
        template: &Template,
    ) -> anyhow::Result<()> {
        let ar = bench_application();
        // What the user creates.
        let mut app = serde_json::to_value(super::app(&name, &self.ns))?;
        app["apiVersion"] = ar.api_version.clone().into();
        let app: DynamicObject = serde_json::from_value(app)?;
        let app = self
            .limited(self.apps.create(&PostParams::default(), &app))
            .await?;
        let owner = OwnerReference {
            api_version: ar.api_version.clone(),
            kind: ar.kind.clone(),
            name: name.clone(),
            uid: app.uid().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        // What the controller writes: the finalizer first,
        let finalizer = serde_json::json!({"metadata": {"finalizers": [APP_FINALIZER]}});
        self.limited(
            self.apps
                .patch(&name, &PatchParams::default(), &Patch::Merge(&finalizer)),
        )
        .await?;
        // the source,
        let mut source = template.source.clone();
        source.metadata.name = Some(name.clone());
        source.metadata.namespace = Some(self.ns.clone());
        if source.metadata.owner_references.is_some() {
            source.metadata.owner_references = Some(vec![owner.clone()]);
        }
        if let Some(labels) = source.metadata.labels.as_mut()
            && labels.contains_key(APP_NAME)
        {
            labels.insert(APP_NAME.into(), name.clone());
        }
        let sources: Api<GitRepository> = Api::namespaced(self.client.clone(), &self.ns);
        self.limited(sources.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&source),
        ))
        .await?;
        // one Kustomization per cluster,
        let kustomizations: Api<Kustomization> = Api::namespaced(self.client.clone(), &self.ns);
        stream::iter(0..per_app)
            .map(|i| {
                let k = kustomization(&name, i, &owner);
                let kustomizations = &kustomizations;
                async move {
                    self.limited(kustomizations.patch(
                        &k.name_any(),
                        &PatchParams::apply(FIELD_MANAGER).force(),
                        &Patch::Apply(&k),
                    ))
                    .await
                }
            })
            .buffer_unordered(self.concurrency)
            .try_collect::<Vec<_>>()
            .await?;
        // and the status listing them.
        let status = serde_json::json!({
            "apiVersion": ar.api_version,
            "kind": ar.kind,
            "status": template.status,
        });
        self.limited(self.apps.patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&status),
        ))
        .await?;
        Ok(())
    }
}

/// A Kustomization as the controller writes one: a member kubeconfig reference, labels, the
/// desired-state annotation and an ownerReference (the garbage collector tracks every owned
/// object: part of the cost of the write).
fn kustomization(app: &str, i: usize, owner: &OwnerReference) -> Kustomization {
    let spec = KustomizationSpec {
        source_ref: CrossNamespaceSourceReference {
            kind: GitRepository::KIND.as_str().into(),
            name: app.into(),
            ..Default::default()
        },
        ..Default::default()
    };
    let name = format!("{app}-k{i}");
    let mut k = Kustomization::new(&name, spec);
    k.spec.interval = "10m".into();
    k.spec.prune = true;
    k.spec.path = Some("./deploy".into());
    k.spec.kube_config = Some(KubeConfigReference {
        secret_ref: SecretKeyReference {
            name: "member".into(),
            key: Some("value".into()),
        },
    });
    k.metadata.labels = Some(BTreeMap::from([
        (APP_NAME.to_string(), app.to_string()),
        (FLEET.to_string(), "bench".to_string()),
    ]));
    k.metadata.owner_references = Some(vec![owner.clone()]);
    k.metadata.annotations = Some(BTreeMap::from([(
        "apps.kurator.dev/desired-hash".to_string(),
        format!("{i:08x}"),
    )]));
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bench_crd_is_the_application_crd_in_another_group() {
        let yaml = application_crd_yaml();
        assert!(
            yaml.contains("name: applications.bench.kurator.dev"),
            "{yaml}"
        );
        assert!(yaml.contains("group: bench.kurator.dev"), "{yaml}");
        assert!(!yaml.contains("kurator-dev\n"), "no category: {yaml}");
        let original = kurator_api::crds::to_yaml(&Application::crd());
        // Same schema, validation rules included.
        let schema = |y: &str| y[y.find("versions:").unwrap()..].to_string();
        assert_eq!(schema(&yaml), schema(&original));
    }

    #[test]
    fn kustomizations_are_owned_and_labelled() {
        let owner = OwnerReference {
            name: "app-0".into(),
            ..Default::default()
        };
        let k = kustomization("app-0", 3, &owner);
        assert_eq!(k.name_any(), "app-0-k3");
        assert_eq!(k.labels()[APP_NAME], "app-0");
        assert_eq!(k.owner_references()[0].name, "app-0");
        assert_eq!(
            <Kustomization as kube::Resource>::plural(&()),
            "kustomizations"
        );
    }
}
