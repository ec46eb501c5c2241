//! The agent's HTTP surface: shared state and the router that joins the resources.

use std::path::PathBuf;
use std::sync::Arc;

use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::a2a;
use crate::brain::Brain;
use crate::card::{self, Identity};
use crate::loadout::Loadout;
use crate::platform::Platform;
use crate::signals;
use crate::tasks::Tasks;
use crate::trace::Spans;
use crate::transcript::{self, Transcript};

/// What request handlers share. Nothing in it is locked across an `.await`.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    workspace_id: Uuid,
    config_dir: PathBuf,
    identity: Identity,
    brain: Arc<dyn Brain>,
    tasks: Tasks,
    platform: Platform,
    /// Whether messages may carry the delegation and tool directives (the echo brain).
    follows_directives: bool,
    /// The recent conversation (`GET /transcript`).
    transcript: Transcript,
    /// Finished spans waiting to go to the host.
    spans: Spans,
}

impl AppState {
    /// `follows_directives`: whether messages may carry the delegation and tool directives (the echo
    /// brain).
    pub fn new(
        workspace_id: Uuid,
        config_dir: PathBuf,
        identity: Identity,
        brain: Arc<dyn Brain>,
        tasks: Tasks,
        platform: Platform,
        follows_directives: bool,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                workspace_id,
                config_dir,
                identity,
                brain,
                tasks,
                platform,
                follows_directives,
                transcript: Transcript::default(),
                spans: Spans::default(),
            }),
        }
    }

    /// The platform client, when messages may carry the delegation directive.
    pub fn delegator(&self) -> Option<&Platform> {
        self.inner
            .follows_directives
            .then_some(&self.inner.platform)
    }

    pub fn platform(&self) -> &Platform {
        &self.inner.platform
    }

    pub fn workspace_id(&self) -> Uuid {
        self.inner.workspace_id
    }

    pub fn brain(&self) -> &dyn Brain {
        self.inner.brain.as_ref()
    }

    pub fn tasks(&self) -> &Tasks {
        &self.inner.tasks
    }

    pub fn transcript(&self) -> &Transcript {
        &self.inner.transcript
    }

    pub fn spans(&self) -> &Spans {
        &self.inner.spans
    }

    /// Reads skills, plugins and the system prompt afresh, off the async workers.
    pub async fn loadout(&self) -> Loadout {
        let dir = self.inner.config_dir.clone();
        tokio::task::spawn_blocking(move || Loadout::load(&dir))
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "loading skills and plugins panicked");
                Loadout::default()
            })
    }

    /// The agent card with the skills as they are on disk now.
    pub async fn card(&self) -> Value {
        card::card(&self.inner.identity, &self.loadout().await.skills)
    }
}

pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .merge(card::router())
        .merge(a2a::router())
        .merge(signals::router())
        .merge(transcript::router())
        .with_state(state)
}

async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}
