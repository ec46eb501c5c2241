//! `molecule-agent`: the reference agent that runs inside a Molecule workspace.
//!
//! It reads the workspace's config dir, registers with the platform and heartbeats, and answers
//! A2A `message/send` with a pluggable brain. [`run`] is the whole agent; `main` only reads the
//! environment, binds and handles signals.

mod a2a;
pub mod brain;
mod card;
pub mod config;
mod delegate;
mod loadout;
mod platform;
mod plugins;
mod server;
mod signals;
mod skills;
mod tasks;
mod token;
mod trace;
mod transcript;

use std::future::IntoFuture as _;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::card::Identity;
use crate::config::{Config, WorkspaceFile};
use crate::platform::Platform;
use crate::server::AppState;
use crate::tasks::Tasks;
use crate::token::TokenStore;

/// How long in-flight requests may take to finish once shutdown starts.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Runs the agent on `listener` until `shutdown` is cancelled, then stops accepting, lets
/// in-flight requests finish for up to [`SHUTDOWN_GRACE`] and returns.
///
/// Fails before serving if `config.yaml` is malformed or the configured brain cannot be built.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let file = WorkspaceFile::load(&config.config_dir, config.workspace_id)?;
    let brain = brain::build(&config, &file).context("setting up the brain")?;
    let follows_directives = brain::kind(&config, &file) == config::BrainKind::Echo;
    let bound = listener.local_addr().context("reading the bound address")?;
    let url = config.registered_url(bound);
    let identity = Identity {
        name: file.name,
        description: file.description,
        version: file.version,
        url: url.clone(),
        role: config.role.clone().or(file.role),
        tier: config.tier.or(file.tier),
    };
    let tokens = TokenStore::new(&config.config_dir);
    let has_token = tokens.read().await.is_some();
    tracing::info!(
        workspace_id = %config.workspace_id,
        listen = %bound,
        url,
        platform = %config.platform_url,
        brain = brain.describe(),
        has_token,
        "starting molecule-agent"
    );

    let tasks = Tasks::new();
    let platform = Platform::new(config.platform_url.clone(), config.workspace_id, tokens)
        .context("building the platform client")?;
    // The echo brain follows the `delegate <id>: <task>` directive through the host.
    let state = AppState::new(
        config.workspace_id,
        config.config_dir.clone(),
        identity,
        brain,
        tasks.clone(),
        platform.clone(),
        follows_directives,
    );
    let card = state.card().await;
    let span_export = tokio::spawn(trace::export(
        platform.clone(),
        state.spans().clone(),
        shutdown.child_token(),
    ));
    let platform_loop = tokio::spawn(platform::run(
        platform,
        url,
        card,
        tasks,
        config.heartbeat_interval,
        shutdown.child_token(),
    ));

    let serve = axum::serve(listener, server::app(state))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .into_future();
    let mut server = tokio::spawn(serve);
    let served = tokio::select! {
        result = &mut server => Some(result),
        () = shutdown.cancelled() => None,
    };
    let served = match served {
        Some(result) => Some(result),
        None => match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
            Ok(result) => Some(result),
            Err(_) => {
                tracing::warn!("in-flight requests did not finish within the grace period");
                server.abort();
                None
            }
        },
    };
    shutdown.cancel();
    if let Err(e) = platform_loop.await {
        tracing::error!(error = %e, "the platform loop panicked");
    }
    if let Err(e) = span_export.await {
        tracing::error!(error = %e, "the span export panicked");
    }
    if let Some(result) = served {
        result
            .context("the http server task failed")?
            .context("serving http")?;
    }
    tracing::info!("molecule-agent stopped");
    Ok(())
}
