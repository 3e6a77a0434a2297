//! The `kurator` binary.

use clap::Parser;

// jemalloc rather than glibc's malloc: at 20,000 Flux objects the controller's peak RSS is
// 140 MB instead of 160 MB for the same heap (less fragmentation across threads), and it
// is faster (docs/benchmarks.md). mimalloc was measured too: 192 MB.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read once at start-up: freed pages go back to the system after 1 s
/// (default 10 s) from a background thread, so bursts (a list of 20,000 objects, statuses of
/// 1,000 entries) do not stay resident. (jemalloc reads the symbol as a `const char *`: the
/// slice's first word.)
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static MALLOC_CONF: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

fn main() -> std::process::ExitCode {
    let cli = kurator_cli::Cli::parse();
    kurator_cli::install_crypto_provider();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(kurator_cli::run(cli)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The cause chain on one line, kubectl style; no backtrace for user errors.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
