//! Helpers shared by the integration tests.
#![allow(dead_code)]

/// Installs the crypto provider and a test-writer tracing subscriber (`RUST_LOG`, default
/// `kurator_testenv=info`).
pub fn init() {
    kurator_testenv::install_crypto_provider();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("kurator_testenv=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}
