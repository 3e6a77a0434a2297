//! Kurator's controllers. Each one is a pipeline: dereference (read inputs from the shared
//! stores) → validate → build (pure) → apply (server-side apply, field manager `kurator`) →
//! status (written only when it changed).

pub mod application;
pub mod cluster;
pub mod context;
pub mod error;
mod finalizer;
pub mod fleet;
pub mod index;
pub mod leader;
pub mod member;
pub mod metrics;
pub mod plugins;
pub mod requests;
pub mod rollout;
pub mod runtime;
pub mod server;
mod status;
pub mod triggers;
pub mod watch;

pub use context::{Context, Settings};
pub use error::Error;
