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
