//! Label, annotation and finalizer names shared with upstream Kurator.

/// Set on every cluster that belongs to a fleet; the value is the fleet's name.
pub const FLEET_NAME: &str = "fleet.kurator.dev/fleet-name";
/// Set on plugin objects; the value is the owning fleet's name.
pub const FLEET: &str = "fleet.kurator.dev/name";
pub const PLUGIN: &str = "fleet.kurator.dev/plugin";
pub const COMPONENT: &str = "fleet.kurator.dev/component";
pub const APP_NAME: &str = "apps.kurator.dev/app-name";
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";

/// Finalizer that removes membership labels before a Fleet goes away.
pub const FLEET_FINALIZER: &str = "fleet.kurator.dev";
/// Finalizer that removes an Application's Flux objects.
pub const APP_FINALIZER: &str = "apps.kurator.dev";

/// Server-side apply field manager for everything the controller writes.
pub const FIELD_MANAGER: &str = "kurator";

/// Field manager of what `kurator attach` writes (Secret, AttachedCluster, fleet entries).
pub const CLI_FIELD_MANAGER: &str = "kurator-cli";
/// `app.kubernetes.io/managed-by` value of the kubeconfig Secrets `kurator attach` creates:
/// `kurator detach` deletes a Secret only when it carries this and [`ATTACHED_CLUSTER`].
pub const MANAGED_BY_CLI: &str = "kurator-cli";
/// Annotation on a Secret `kurator attach` created: the AttachedCluster it was made for.
pub const ATTACHED_CLUSTER: &str = "cluster.kurator.dev/attached-cluster";
/// Annotation the leading controller writes on its leader-election Lease: its version, so
/// that `kurator version` can read it through the host API.
pub const CONTROLLER_VERSION: &str = "kurator.dev/controller-version";
