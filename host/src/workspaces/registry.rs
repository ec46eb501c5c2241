//! The registry of live agents: registration, heartbeats, agent cards and the liveness sweep.

use chrono::Utc;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{Status, WorkspaceError, get_live};
use crate::events::names;
use crate::services::Services;
use crate::store::status::Cause;
use crate::store::{self, StoreError};

/// Error rate at or above which an online workspace is degraded.
pub const DEGRADED_AT: f64 = 0.5;
/// Error rate below which a degraded workspace is online again.
pub const RECOVERED_BELOW: f64 = 0.1;

pub use crate::agents::addresses::{check_url, peer_url};
pub use crate::agents::url::AgentUrl;

/// Registers an agent for an existing, live workspace (unknown ids are refused, unlike the
/// original, which created a row for any id). Registration never mints a token: the agent
/// already holds its workspace's token, and the caller was checked against it. A poll-mode
/// agent (`delivery_mode: poll`) may serve no URL. Returns the delivery mode now in force.
pub async fn register(
    svc: &Services,
    id: Uuid,
    url: Option<&AgentUrl>,
    agent_card: Option<Value>,
    delivery_mode: Option<&'static str>,
) -> Result<String, WorkspaceError> {
    let before = get_live(svc, id).await?;
    let reg = store::workspaces::Registration {
        url: url.map(|u| u.as_str().to_owned()),
        agent_card: agent_card.clone(),
        delivery_mode,
    };
    let Some((stored_url, mode)) = store::workspaces::register(&svc.db, id, &reg).await? else {
        return Err(WorkspaceError::NotFound);
    };
    tracing::info!(workspace_id = %id, from = %before.status, to = "online", delivery_mode = %mode, "workspace registered");
    svc.events
        .emit(
            names::WORKSPACE_ONLINE,
            Some(id),
            json!({ "url": stored_url, "agent_card": agent_card, "delivery_mode": mode }),
        )
        .await;
    Ok(mode)
}

/// A heartbeat as the agent sent it, already range-checked.
#[derive(Debug, Clone, Default)]
pub struct Heartbeat {
    pub report: store::workspaces::HeartbeatReport,
    /// `runtime_state: "wedged"` marks the agent degraded whatever its error rate.
    pub wedged: bool,
}

/// Applies a heartbeat: stores the counters, moves the status (offline/awaiting → online; error
/// rate ≥ 0.5 or wedged → degraded; < 0.1 → online again; provisioning only by registration)
/// and tells subscribers.
pub async fn heartbeat(svc: &Services, id: Uuid, hb: &Heartbeat) -> Result<(), WorkspaceError> {
    let Some(before) = store::workspaces::record_heartbeat(&svc.db, id, &hb.report).await? else {
        return Err(match store::workspaces::get(&svc.db, id).await? {
            Some(row) => WorkspaceError::Removed(Box::new(row)),
            None => WorkspaceError::NotFound,
        });
    };
    let unhealthy = hb.wedged || hb.report.error_rate >= DEGRADED_AT;
    let healthy = !hb.wedged && hb.report.error_rate < RECOVERED_BELOW;
    let from = Status::parse(&before.status_before);
    // A provisioning workspace comes online when its new agent registers, never by a
    // heartbeat: during a restart cycle the old agent may still heartbeat (it is told first and
    // stopped after), and that must not make the workspace look back before the new one is.
    let to = match from {
        Some(Status::Offline | Status::AwaitingAgent) if unhealthy => Some(Status::Degraded),
        Some(Status::Offline | Status::AwaitingAgent) => Some(Status::Online),
        Some(Status::Online) if unhealthy => Some(Status::Degraded),
        Some(Status::Degraded) if healthy => Some(Status::Online),
        _ => None,
    };
    if let (Some(from), Some(to)) = (from, to)
        && store::workspaces::transition(&svc.db, id, Some(from), to, Cause::Heartbeat).await?
    {
        tracing::info!(workspace_id = %id, from = from.as_str(), to = to.as_str(), "workspace status changed");
        match to {
            Status::Degraded => {
                svc.events
                    .emit(
                        names::WORKSPACE_DEGRADED,
                        Some(id),
                        json!({ "error_rate": hb.report.error_rate, "sample_error": hb.report.sample_error }),
                    )
                    .await
            }
            _ => svc.events.emit(names::WORKSPACE_ONLINE, Some(id), json!({})).await,
        }
    }
    if before.task_before != hb.report.current_task {
        svc.events
            .emit(
                names::TASK_UPDATED,
                Some(id),
                json!({ "current_task": hb.report.current_task.clone().unwrap_or_default(), "active_tasks": hb.report.active_tasks }),
            )
            .await;
    }
    svc.a2a
        .supervision()
        .after_heartbeat(svc, id, &hb.report, before.max_concurrent_tasks);
    svc.events.broadcast_only(
        names::WORKSPACE_HEARTBEAT,
        Some(id),
        json!({ "active_tasks": hb.report.active_tasks, "uptime_seconds": hb.report.uptime_seconds }),
    );
    Ok(())
}

/// Replaces a live workspace's agent card.
pub async fn update_card(svc: &Services, id: Uuid, card: Value) -> Result<(), WorkspaceError> {
    get_live(svc, id).await?;
    if !store::workspaces::update_card(&svc.db, id, &card).await? {
        return Err(WorkspaceError::NotFound);
    }
    svc.events
        .emit(
            names::AGENT_CARD_UPDATED,
            Some(id),
            json!({ "agent_card": card }),
        )
        .await;
    Ok(())
}

/// One liveness pass: online or degraded workspaces silent for longer than the heartbeat TTL go
/// offline. Returns the ids it changed.
pub async fn sweep_liveness(svc: &Services) -> Result<Vec<Uuid>, StoreError> {
    let ttl = chrono::Duration::from_std(svc.config.liveness.heartbeat_ttl())
        .unwrap_or(chrono::Duration::MAX);
    let cutoff = Utc::now() - ttl;
    let stale = store::workspaces::mark_stale_offline(&svc.db, cutoff).await?;
    for id in &stale {
        tracing::info!(workspace_id = %id, to = "offline", "heartbeat expired");
        svc.events
            .emit(names::WORKSPACE_OFFLINE, Some(*id), json!({}))
            .await;
    }
    Ok(stale)
}
