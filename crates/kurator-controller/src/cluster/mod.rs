//! AttachedCluster controller: reads the kubeconfig Secret, checks the member's health, and
//! reports it as `status.ready`, `status.version` and a `Ready` condition. Health is checked
//! again every `health_interval`, and at once when the Secret changes.

mod status;

use std::sync::Arc;

use k8s_openapi::{
    api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp,
};
use kube::{
    Api, ResourceExt,
    core::PartialObjectMeta,
    runtime::{controller::Action, reflector::ObjectRef},
};
use kurator_api::AttachedCluster;
use tracing::instrument;

pub use status::{Health, build_status, reason};

use crate::{
    context::Context,
    error::Error,
    member::{AccessError, ProbeError, probe},
    status::{apply_status, publish_ready_transition},
};

pub const CONTROLLER: &str = "attachedcluster";

#[instrument(skip_all, fields(cluster = %ac.name_any(), namespace = ac.namespace().unwrap_or_default()))]
pub async fn reconcile(ac: Arc<AttachedCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.stores.wait_until_ready().await;
    let _measure = ctx.metrics.reconcile(CONTROLLER);
    let namespace = ac.namespace().unwrap_or_default();
    let health = check_health(&ac, &namespace, &ctx).await?;

    let now = Time(Timestamp::now());
    let status = build_status(&ac, &health, now);
    let api: Api<AttachedCluster> = Api::namespaced(ctx.client.clone(), &namespace);
    let previous = ac.status.as_ref();
    if apply_status(&ctx, &api, &ac, previous, &status).await? {
        let before = previous
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default();
        publish_ready_transition(&ctx, ac.as_ref(), before, &status.conditions, "HealthCheck")
            .await;
    }
    Ok(Action::requeue(ctx.settings.health_interval))
}

/// Dereference + probe: everything that talks to the Secret and the member.
async fn check_health(
    ac: &AttachedCluster,
    namespace: &str,
    ctx: &Context,
) -> Result<Health, Error> {
    let secret_ref = &ac.spec.kubeconfig;
    let secret_key =
        ObjectRef::<PartialObjectMeta<Secret>>::new(&secret_ref.name).within(namespace);
    let Some(secret_meta) = ctx.stores.secrets.get(&secret_key) else {
        ctx.members.forget_secret(namespace, &secret_ref.name);
        return Ok(Health::unhealthy(
            reason::SECRET_NOT_FOUND,
            format!(
                "kubeconfig Secret {namespace}/{} not found",
                secret_ref.name
            ),
        ));
    };
    let rv = secret_meta
        .metadata
        .resource_version
        .clone()
        .unwrap_or_default();
    let timeout = ctx.settings.probe_timeout;
    let client = match ctx
        .members
        .client(&ctx.client, namespace, secret_ref, &rv, timeout)
        .await
    {
        Ok(client) => client,
        Err(AccessError::SecretNotFound(s)) => {
            return Ok(Health::unhealthy(
                reason::SECRET_NOT_FOUND,
                format!("kubeconfig Secret {s} not found"),
            ));
        }
        Err(e @ AccessError::KeyNotFound { .. }) => {
            return Ok(Health::unhealthy(reason::KEY_NOT_FOUND, e.to_string()));
        }
        Err(e @ AccessError::KubeconfigInvalid { .. }) => {
            return Ok(Health::unhealthy(reason::KUBECONFIG_INVALID, e.to_string()));
        }
        Err(e @ AccessError::NoKubeconfig(_)) => {
            return Ok(Health::unhealthy(reason::SECRET_NOT_FOUND, e.to_string()));
        }
        Err(AccessError::Host(_, e)) => return Err(Error::Kube(e)),
    };
    Ok(match probe(&client, timeout).await {
        Ok(version) => Health::Healthy { version },
        Err(e @ ProbeError::Unreachable(_)) => {
            Health::unhealthy(reason::UNREACHABLE, e.to_string())
        }
        Err(e @ ProbeError::Unauthorized(_)) => {
            Health::unhealthy(reason::UNAUTHORIZED, e.to_string())
        }
        Err(e @ ProbeError::Forbidden(_)) => Health::unhealthy(reason::FORBIDDEN, e.to_string()),
    })
}
