//! Installing CustomResourceDefinitions and waiting until they are served.

use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{Patch, PatchParams};

use crate::error::{Error, Result};
use crate::wait;

/// Field manager used for server-side apply.
pub const FIELD_MANAGER: &str = "kurator-testenv";

/// Parses YAML text (one or more `---`-separated documents) into CRDs. Empty documents are
/// skipped; any other kind is an error.
pub fn parse_crds(docs: &[String]) -> Result<Vec<CustomResourceDefinition>> {
    let mut crds = Vec::new();
    let mut index = 0;
    for text in docs {
        let values: Vec<Option<serde_json::Value>> =
            serde_saphyr::from_multiple(text).map_err(|e| Error::InvalidCrd {
                index,
                message: e.to_string(),
            })?;
        for value in values.into_iter().flatten() {
            index += 1;
            let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
            if kind != "CustomResourceDefinition" {
                return Err(Error::InvalidCrd {
                    index,
                    message: format!("kind is {kind:?}, expected CustomResourceDefinition"),
                });
            }
            let crd = serde_json::from_value(value).map_err(|e| Error::InvalidCrd {
                index,
                message: e.to_string(),
            })?;
            crds.push(crd);
        }
    }
    Ok(crds)
}

/// Server-side applies the CRDs and waits until each is `Established` and every served
/// version lists the resource in discovery.
pub async fn install_crds(
    client: &kube::Client,
    crds: &[CustomResourceDefinition],
    timeout: Duration,
) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &params, &Patch::Apply(crd))
            .await
            .map_err(|e| Error::kube(format!("applying CRD {name}"), e))?;
    }
    // One deadline for all of them.
    let deadline = Instant::now() + timeout;
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let left = deadline.saturating_duration_since(Instant::now());
        wait::until(
            format!("CRD {name} to be Established and served"),
            left,
            || crd_served(client, &api, crd),
        )
        .await?;
        tracing::debug!(crd = %name, "CRD established and served");
    }
    Ok(())
}

async fn crd_served(
    client: &kube::Client,
    api: &Api<CustomResourceDefinition>,
    crd: &CustomResourceDefinition,
) -> bool {
    let name = crd.metadata.name.as_deref().unwrap_or_default();
    let Ok(Some(live)) = api.get_opt(name).await else {
        return false;
    };
    let established = live
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        });
    if !established {
        return false;
    }
    let plural = &crd.spec.names.plural;
    for version in crd.spec.versions.iter().filter(|v| v.served) {
        let gv = format!("{}/{}", crd.spec.group, version.name);
        match client.list_api_group_resources(&gv).await {
            Ok(list) if list.resources.iter().any(|r| &r.name == plural) => {}
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const CRD: &str = r#"
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  names: {kind: Widget, plural: widgets, singular: widget, listKind: WidgetList}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
---
"#;

    #[test]
    fn parses_multi_document_yaml() {
        let crds = parse_crds(&[CRD.to_string()]).expect("parse");
        assert_eq!(crds.len(), 1);
        assert_eq!(crds[0].spec.names.plural, "widgets");
    }

    #[test]
    fn rejects_other_kinds() {
        let err = parse_crds(&["apiVersion: v1\nkind: ConfigMap\n".to_string()]).unwrap_err();
        assert!(err.to_string().contains("ConfigMap"), "{err}");
    }
}
