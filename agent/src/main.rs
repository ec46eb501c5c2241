//! The `molecule-agent` binary: environment in, signals handled, [`molecule_agent::run`] does
//! the rest. It may run as PID 1 in a container, where SIGTERM has no default action, so both
//! SIGTERM and SIGINT are handled explicitly.

use std::process::ExitCode;

use anyhow::Context as _;
use molecule_agent::config::Config;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match start().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("molecule-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn start() -> anyhow::Result<()> {
    let config = Config::from_env().context("reading the environment")?;
    let shutdown = CancellationToken::new();
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
            () = on_signal.cancelled() => return,
        };
        tracing::info!(signal = name, "shutting down");
        on_signal.cancel();
    });
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let result = molecule_agent::run(config, listener, shutdown.clone()).await;
    shutdown.cancel();
    result
}
