//! `translation-sim`: the simulator binary. Wires settings, logging and signals; the server
//! itself is the `translation_sim` library.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use translation_sim::settings::{Settings, Sources};

/// jemalloc rather than the system allocator: it keeps the pages of a buffer nothing wrote
/// out of the resident set, and each held connection has two such buffers of 8 KiB (hyper's
/// read and write buffers): 11.4 KB of resident memory per held long-poll instead of 14.8 KB
/// (docs/benchmarks.md, held connections).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Simulator of the video-translation backend (see docs/wire.md).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Extra TOML file layered over config/default.toml and config/{SIM_ENV}.toml.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on (overrides server.bind).
    #[arg(long, value_name = "ADDR")]
    bind: Option<SocketAddr>,
    /// Print the effective settings as TOML-like JSON and exit.
    #[arg(long)]
    print_config: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _telemetry = translation_sim::telemetry::init_for_binary("translation-sim", "info")
        .map_err(|e| anyhow::anyhow!("telemetry: {e}"))?;
    let sources = Sources {
        file: args.config,
        bind: args.bind,
        ..Sources::from_process_env()
    };
    let settings = Settings::load(&sources).context("invalid configuration")?;
    if args.print_config {
        println!("{}", serde_json::to_string_pretty(&settings)?);
        return Ok(());
    }
    let state = translation_sim::AppState::new(settings)?;
    let listener = translation_sim::bind(&state.settings().server)?;
    tracing::info!(addr = %listener.local_addr()?, "translation-sim listening");
    translation_sim::run(listener, state, shutdown_signal()).await?;
    tracing::info!("translation-sim stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
