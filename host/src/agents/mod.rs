//! The agent client: how the host talks to agents, below both the workspace lifecycle and
//! delegation, which call down into it. `url.rs` is the address policy for agent URLs,
//! `addresses.rs` which URLs the host's own runtime gave an agent, `forward.rs` the streaming
//! forwarder, and `client.rs` sending one JSON-RPC call to an agent (recorded, queued when busy)
//! and the restart signal; `transcript.rs` reads an agent's recent conversation. Nothing here
//! checks the org hierarchy (delegation does, before it calls [`client::send`]) or changes a
//! workspace's status (the [`Supervision`] hooks do).

pub mod addresses;
pub mod budget;
pub mod chat;
pub mod client;
pub mod forward;
pub mod routes;
pub mod transcript;
pub mod url;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::config::Config;
use crate::services::Services;
use crate::store::StoreError;
use crate::store::workspaces::HeartbeatReport;

/// Who is calling an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// The canvas or an operator (no `X-Workspace-ID`).
    Canvas,
    Workspace(Uuid),
    /// The host itself, telling an agent something (e.g. `system:restart-context`).
    System(&'static str),
}

impl Caller {
    pub fn workspace(self) -> Option<Uuid> {
        match self {
            Caller::Canvas | Caller::System(_) => None,
            Caller::Workspace(id) => Some(id),
        }
    }
}

/// What the layers above do when the agent client learns something about an agent. Handed to
/// [`Hub::new`] at start (`services.rs` wires the lifecycle and the queue in), so this layer
/// calls them without importing them.
#[async_trait::async_trait]
pub trait Supervision: Send + Sync + std::fmt::Debug {
    /// An agent did not answer: asks the runtime whether it still runs, and when it stopped,
    /// takes the workspace offline and lets the restart policy decide (the lifecycle).
    async fn check_agent(&self, svc: &Services, id: Uuid) -> Result<AgentCheck, StoreError>;
    /// An agent heartbeat reported `report` with room for `max_concurrent_tasks`: spare
    /// capacity drains a waiting message (the busy queue).
    fn after_heartbeat(
        &self,
        svc: &Services,
        id: Uuid,
        report: &HeartbeatReport,
        max_concurrent_tasks: i32,
    );
    /// A message was queued for a hibernated workspace: starts waking it in the background (the
    /// lifecycle); the queue delivers the message once the agent is back.
    fn wake(&self, svc: &Services, id: Uuid);
}

/// What [`Supervision::check_agent`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentCheck {
    Running,
    /// No runtime, or the runtime could not tell (its error is logged).
    Unknown,
    /// The agent's container or process has stopped. `went_offline`: this check moved the
    /// workspace from online or degraded to offline and asked the restart policy.
    Exited {
        went_offline: bool,
    },
}

/// Shared state of the agent client: the HTTP client agents are called with, the address policy
/// it connects under, the layers above's [`Supervision`], and the background work (delegations,
/// queue drains) that host shutdown stops.
#[derive(Debug, Clone)]
pub struct Hub {
    client: reqwest::Client,
    policy: Arc<url::Policy>,
    supervision: Arc<dyn Supervision>,
    /// The workspace rows every call needs, held in memory (see [`routes`]).
    routes: Arc<routes::Routes>,
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl Hub {
    pub fn new(config: &Config, supervision: Arc<dyn Supervision>) -> anyhow::Result<Self> {
        let policy = Arc::new(url::Policy::new(config)?);
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(config.a2a.connect_timeout_secs.max(1)))
            // Names are resolved where the address policy can refuse the answer (DNS rebinding),
            // and never by a proxy from the environment, which would resolve them itself.
            .dns_resolver(Arc::new(url::Resolver::new(policy.clone())))
            .no_proxy()
            // A redirect could point anywhere; the URL check covers only the agent's own URL.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Hub {
            client,
            policy,
            supervision,
            routes: Arc::new(routes::Routes::new(Duration::from_millis(
                config.cache_revalidate_ms,
            ))),
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
        })
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// The routing table: workspace rows for the A2A path, kept current by the event bus.
    pub fn routes(&self) -> &Arc<routes::Routes> {
        &self.routes
    }

    /// Where agents may be called: registration, creation and the proxy check URLs with it.
    pub fn policy(&self) -> &url::Policy {
        &self.policy
    }

    /// What the layers above do with what the client learns about agents.
    pub fn supervision(&self) -> &dyn Supervision {
        self.supervision.as_ref()
    }

    /// Runs `work` in the background, where a caller that goes away cannot cut it short; host
    /// shutdown waits for it (work watches [`Hub::stopping`] to end early). It stays in the
    /// caller's trace.
    pub fn spawn<F>(&self, work: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks.spawn(crate::traces::in_current(work))
    }

    /// Cancelled when the host stops: background delegations record that they were cut short.
    pub fn stopping(&self) -> &CancellationToken {
        &self.stop
    }

    /// Stops background work: each task sees [`Hub::stopping`] and records how it ended.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}
