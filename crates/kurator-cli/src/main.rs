//! The `kurator` binary.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = kurator_cli::Cli::parse();
    kurator_cli::install_crypto_provider();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(kurator_cli::run(cli))
}
