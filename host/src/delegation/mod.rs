//! Agents handing work to each other through the host: the A2A proxy, the busy queue, the
//! delegation lifecycle and the MCP tools agents call. Every path to another agent, the MCP tools
//! included, goes through [`proxy::send`].

pub mod agent_url;
pub mod forward;
pub mod mcp;
pub mod proxy;
pub mod queue;
pub mod tasks;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::config::Config;

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

/// Shared state of the delegation services: the HTTP client agents are called with, the address
/// policy it connects under, and the background work (delegations, queue drains) that host shutdown stops.
#[derive(Debug, Clone)]
pub struct Hub {
    client: reqwest::Client,
    policy: Arc<agent_url::Policy>,
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl Hub {
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let policy = Arc::new(agent_url::Policy::new(config)?);
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(config.a2a.connect_timeout_secs.max(1)))
            // Names are resolved where the address policy can refuse the answer (DNS rebinding),
            // and never by a proxy from the environment, which would resolve them itself.
            .dns_resolver(Arc::new(agent_url::Resolver::new(policy.clone())))
            .no_proxy()
            // A redirect could point anywhere; the URL check covers only the agent's own URL.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Hub {
            client,
            policy,
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
        })
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Where agents may be called: registration, creation and the proxy check URLs with it.
    pub fn policy(&self) -> &agent_url::Policy {
        &self.policy
    }

    /// Runs `work` in the background, where a caller that goes away cannot cut it short; host
    /// shutdown waits for it (work watches [`Hub::stopping`] to end early).
    pub fn spawn<F>(&self, work: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks.spawn(work)
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
