//! The CRDs of every kind, as served to `kurator crds` and checked in under `config/crd/`.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::{Application, AttachedCluster, Cluster, CustomCluster, Fleet};

/// Every CRD, in a stable order.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![
        AttachedCluster::crd(),
        Cluster::crd(),
        CustomCluster::crd(),
        Fleet::crd(),
        Application::crd(),
    ]
}

/// File name under `config/crd/` for a CRD, kubebuilder style: `<group>_<plural>.yaml`.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural)
}

/// One CRD as YAML.
pub fn to_yaml(crd: &CustomResourceDefinition) -> String {
    serde_saphyr::to_string(crd).expect("a CRD always serialises")
}

/// All CRDs as one multi-document YAML stream.
pub fn all_yaml() -> String {
    all().iter().map(to_yaml).collect::<Vec<_>>().join("---\n")
}
