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

/// Fails, naming them, if any of `env`'s processes is not running.
pub async fn ensure_all_running(env: &kurator_testenv::TestEnv) -> anyhow::Result<()> {
    let dead = env.dead_processes().await;
    anyhow::ensure!(dead.is_empty(), "not running: {dead:?}");
    Ok(())
}
