//! Molecule host: the control plane for organisations of AI agents.
//!
//! [`run`] wires configuration, storage, the event bus, background sweepers and the HTTP API, and
//! serves until the shutdown future resolves. `main.rs` only parses arguments and calls it.

pub mod agents;
pub mod approvals;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod delegation;
pub mod events;
pub mod extensions;
pub mod http;
pub mod liveness;
pub mod locks;
pub mod memories;
pub mod memory;
pub mod org;
pub mod plugins;
pub mod runtime;
pub mod safefs;
pub mod schedules;
pub mod secrets;
pub mod services;
pub mod session_search;
pub mod store;
pub mod sweepers;
pub mod traces;
pub mod workspaces;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use crate::config::Config;

/// mimalloc instead of glibc's malloc, for every program the host runs in (the binary, and the
/// tests and benches that start it in-process, so they measure what production runs): under A2A
/// load glibc's allocator (`_int_malloc`, `_int_free`, `malloc_consolidate` across worker
/// threads) took about a quarter of the host's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
pub use crate::services::Services;

/// Imports the configured template in merge mode (idempotent, so every start may do it).
async fn import_on_start(svc: &Services, dir: String) {
    let request = org::import::ImportRequest {
        source: org::import::Source::Dir(dir.clone()),
        mode: org::import::Mode::Merge,
    };
    match org::import::import(svc, request).await {
        Ok(outcome) => tracing::info!(
            template = %outcome.org,
            created = outcome.created_count,
            kept = outcome.skipped_count,
            "org template imported at start"
        ),
        Err(err) => {
            tracing::error!(dir, error = %err, "importing the org template at start failed")
        }
    }
}

/// Serves the host on `listener` until `shutdown` resolves, then drains in-flight requests, ends
/// live streams and stops every background loop before returning.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener
        .local_addr()
        .context("reading the listen address")?;
    if config.is_development() && !addr.ip().is_loopback() {
        anyhow::bail!(
            "MOLECULE_ENV=development opens conveniences (the test-token route, open reads, the \
             canvas recognised by its Origin) and only listens on loopback; {addr} is not: bind \
             127.0.0.1 or use another environment"
        );
    }
    let svc = Services::start(config).await?;
    log_startup(&svc, &listener);
    // Where agents reach the host, before anything can provision one (the sweepers, the import
    // at start, the first request): an agent told a guessed address never registers.
    let agent_listener = agent_facing(&svc, &listener).await?;
    if svc.db.backend() == store::Backend::Sqlite {
        // The only replica: a delegation still being carried out was left by the previous run.
        // (With several replicas the queue-expiry sweep fails them once none can be running.)
        let stranded = delegation::tasks::fail_stranded(&svc, chrono::Utc::now())
            .await
            .context("failing the delegations the previous run left unfinished")?;
        if stranded > 0 {
            tracing::info!(
                stranded,
                "delegations the previous run left unfinished are marked failed"
            );
        }
        // Likewise an org import the previous run was killed in the middle of: its start has
        // no end event (on PostgreSQL the queue-expiry sweep finds them once nobody runs them).
        let abandoned = org::import::fail_abandoned(&svc, true)
            .await
            .context("failing the org imports the previous run left unfinished")?;
        if abandoned > 0 {
            tracing::info!(
                abandoned,
                "org imports the previous run left unfinished are marked failed"
            );
        }
    }

    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let metrics = Arc::new(http::Metrics::new());
    svc.extensions.metrics.register(&mut metrics.registry());
    svc.cluster.leases.register(&mut metrics.registry());
    let state = http::AppState::new(svc.clone(), metrics, stop.clone())?;
    sweepers::spawn_all(&svc, &tracker, &stop);
    sweepers::spawn_extension_sync(&svc, &tracker, &stop);
    svc.traces.spawn_export(&tracker, &stop);
    let (relay, relay_stop, liveness) = (svc.events.clone(), stop.clone(), svc.liveness.clone());
    tracker.spawn(async move { relay.relay(relay_stop, liveness).await });
    if let Some(dir) = svc
        .config
        .org
        .import_on_start
        .clone()
        .filter(|d| !d.trim().is_empty())
    {
        let import_svc = svc.clone();
        tracker.spawn(async move { import_on_start(&import_svc, dir).await });
    }
    let housekeeping = state.clone();
    sweepers::spawn_loop(
        sweepers::supervision(&svc),
        &tracker,
        &stop,
        "rate-limit-housekeeping",
        Duration::from_secs(60),
        move || {
            let state = housekeeping.clone();
            async move { state.housekeep() }
        },
    );

    let router = http::router(state);
    if let Some(agent_listener) = agent_listener {
        let app = router
            .clone()
            .into_make_service_with_connect_info::<SocketAddr>();
        let (stopped, grace_stop) = (stop.clone(), stop.clone());
        let grace = svc.config.shutdown_grace();
        tracker.spawn(async move {
            let serving = axum::serve(agent_listener, app)
                .with_graceful_shutdown(async move { stopped.cancelled().await });
            // Bounded like the main listener: an agent that stopped reading cannot hold the host.
            tokio::select! {
                served = serving.into_future() => {
                    if let Err(err) = served {
                        tracing::error!(error = %err, "the agent listener failed");
                    }
                }
                () = async { grace_stop.cancelled().await; tokio::time::sleep(grace).await } => {}
            }
        });
    }
    let app = router.into_make_service_with_connect_info::<SocketAddr>();
    let signal = stop.clone();
    let serving = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutting down: draining requests and stopping background work");
        // Long-lived streams and sweepers watch this token; requests in flight finish.
        signal.cancel();
    });
    // Draining waits for every connection, and a connection whose client stopped reading never
    // finishes on its own (the response body cannot be written, so its stream is never polled
    // again to notice the shutdown). Past the grace period the host stops without it; the task
    // behind it ends as soon as the client reads or goes away.
    let grace = svc.config.shutdown_grace();
    let grace_over = async {
        stop.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    let served = tokio::select! {
        served = serving.into_future() => served.context("serving http"),
        () = grace_over => {
            tracing::warn!(grace_secs = grace.as_secs(), "connections still open after the shutdown grace period; stopping without them");
            Ok(())
        }
    };
    stop.cancel();
    tracker.close();
    tracker.wait().await;
    svc.a2a.shutdown().await;
    svc.lifecycle.shutdown().await;
    svc.lifecycle.release_claims(&svc.db).await;
    svc.cluster.leases.release().await;
    svc.extensions.stop();
    // Deferred writes are stored before the pools close.
    svc.writes.close().await;
    svc.db.close().await;
    tracing::info!("host stopped");
    served
}

/// Works out the URL agents reach this host on and tells the lifecycle. Agents in containers
/// cannot reach a loopback listener, so with Docker the host also listens on the network's
/// gateway address (only there, not on every interface); that listener is returned.
async fn agent_facing(
    svc: &Services,
    listener: &TcpListener,
) -> anyhow::Result<Option<TcpListener>> {
    let main = listener.local_addr()?;
    let gateway = svc
        .lifecycle
        .runtime()
        .and_then(|runtime| runtime.agent_listen_ip());
    let (url, extra) = match (&svc.config.runtime.platform_url, gateway) {
        (Some(url), _) => (url.clone(), None),
        (None, Some(ip)) if main.ip().is_unspecified() => {
            (format!("http://{ip}:{}", main.port()), None)
        }
        (None, Some(ip)) => {
            // The main port when it is free there, so agents that outlive a host restart
            // still reach the next one; any port otherwise.
            let extra = match TcpListener::bind((ip, main.port())).await {
                Ok(listener) => listener,
                Err(_) => TcpListener::bind((ip, 0))
                    .await
                    .with_context(|| format!("listening for agents on the Docker gateway {ip}"))?,
            };
            let url = format!("http://{ip}:{}", extra.local_addr()?.port());
            (url, Some(extra))
        }
        (None, None) => {
            let ip = if main.ip().is_unspecified() {
                std::net::IpAddr::from([127, 0, 0, 1])
            } else {
                main.ip()
            };
            (format!("http://{}", SocketAddr::new(ip, main.port())), None)
        }
    };
    tracing::info!(platform_url = %url, runtime = svc.lifecycle.runtime_name(), "agents reach the host here");
    svc.lifecycle.set_platform_url(url);
    Ok(extra)
}

fn log_startup(svc: &Services, listener: &TcpListener) {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(
        addr,
        console = %format!("http://{addr}/"),
        database = svc.db.backend().name(),
        replica = %svc.cluster.replica,
        env = ?svc.config.env,
        encryption = svc.cipher.encrypts(),
        "molecule host listening"
    );
    for notice in startup_notices(&svc.config) {
        match notice {
            Notice::Info(message) => tracing::info!("{message}"),
            Notice::Warn(message) => tracing::warn!("{message}"),
        }
    }
}

/// A line operators should find in the boot log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    Info(&'static str),
    Warn(&'static str),
}

/// Test-token route enabled: operators confirm from boot logs which doors are open.
pub const TEST_TOKENS_NOTICE: &str =
    "test-token route enabled: GET /admin/workspaces/:id/test-token mints workspace tokens";

/// Development mode: operators confirm from the boot log which conveniences are on.
pub const DEVELOPMENT_NOTICE: &str = "MOLECULE_ENV=development: for callers on loopback only, \
     the test-token route is open, GET /workspaces/:id and POST /registry/check-access need no \
     token, and a browser Origin from cors_origins is accepted as the canvas";

/// What the boot log says about the doors this configuration leaves open.
pub fn startup_notices(config: &Config) -> Vec<Notice> {
    let mut notices = Vec::new();
    if config.test_tokens_enabled() {
        notices.push(Notice::Info(TEST_TOKENS_NOTICE));
    }
    if config.is_development() {
        notices.push(Notice::Warn(DEVELOPMENT_NOTICE));
    }
    if config.dev_fail_open() {
        notices.push(Notice::Warn(
            "development mode without ADMIN_TOKEN: admin routes and rate limits are open to callers on loopback",
        ));
    } else if config.admin_token().is_none() {
        notices.push(Notice::Warn(
            "no ADMIN_TOKEN configured: admin routes are open until the first credential is issued (once, for good)",
        ));
    }
    notices
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Environment;

    #[test]
    fn the_boot_log_says_when_the_test_token_route_is_open() {
        let says =
            |config: &Config| startup_notices(config).contains(&Notice::Info(TEST_TOKENS_NOTICE));
        assert!(
            !says(&Config::default()),
            "closed when MOLECULE_ENV is unset"
        );
        let production = Config {
            env: Environment::Production,
            ..Config::default()
        };
        assert!(!says(&production), "hidden in production");
        assert!(
            says(&Config {
                enable_test_tokens: true,
                ..production
            }),
            "unless explicitly enabled"
        );
        let development = Config {
            env: Environment::Development,
            ..Config::default()
        };
        assert!(says(&development), "open in development");
        assert!(
            startup_notices(&development).contains(&Notice::Warn(DEVELOPMENT_NOTICE)),
            "development says what it opens"
        );
    }
}
