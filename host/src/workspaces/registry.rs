//! The registry of live agents: registration, heartbeats, agent cards and the liveness sweep.

use std::net::IpAddr;

use chrono::Utc;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{Status, WorkspaceError, get_live};
use crate::Services;
use crate::config::Config;
use crate::events::names;
use crate::store::{self, StoreError};

/// Error rate at or above which an online workspace is degraded.
pub const DEGRADED_AT: f64 = 0.5;
/// Error rate below which a degraded workspace is online again.
pub const RECOVERED_BELOW: f64 = 0.1;

/// An agent URL that passed the address guard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentUrl(String);

impl AgentUrl {
    /// Accepts `http(s)://host[:port][/path]` whose host is a name or an address outside the
    /// ranges an agent has no business living in: link-local (cloud metadata), multicast,
    /// unspecified, documentation and carrier-grade NAT ranges. Loopback is accepted outside
    /// production, where agents run as local processes. Names are not resolved here: container
    /// names only resolve inside the container network.
    pub fn parse(raw: &str, config: &Config) -> Result<Self, &'static str> {
        Self::parse_assigned(raw, config, None)
    }

    /// [`AgentUrl::parse`], except that `assigned`, the loopback URL the host's own runtime gave
    /// the workspace's agent (see [`runtime_assigned`]), is accepted in production too: local
    /// agents register there.
    pub fn parse_assigned(
        raw: &str,
        config: &Config,
        assigned: Option<&str>,
    ) -> Result<Self, &'static str> {
        const INVALID: &str = "invalid agent url";
        let rest = raw
            .strip_prefix("http://")
            .or_else(|| raw.strip_prefix("https://"))
            .ok_or(INVALID)?;
        if raw.len() > 2048 || raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(INVALID);
        }
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.is_empty() || authority.contains('@') {
            return Err(INVALID);
        }
        let host = if let Some(bracketed) = authority.strip_prefix('[') {
            bracketed.split(']').next().unwrap_or_default()
        } else {
            authority.rsplit_once(':').map_or(authority, |(h, _)| h)
        };
        if host.is_empty() {
            return Err(INVALID);
        }
        let allow_loopback = !config.is_production() || assigned == Some(raw);
        if let Ok(ip) = host.parse::<IpAddr>() {
            if blocked_ip(ip, allow_loopback) {
                return Err("agent url points at a blocked address range");
            }
        } else if !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err(INVALID);
        } else if host.eq_ignore_ascii_case("localhost") && config.is_production() {
            return Err("agent url points at a blocked address range");
        }
        Ok(AgentUrl(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub(crate) fn blocked_ip(ip: IpAddr, allow_loopback: bool) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            (v4.is_loopback() && !allow_loopback)
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            if let Some(mapped) = v6.to_ipv4_mapped() {
                return blocked_ip(IpAddr::V4(mapped), allow_loopback);
            }
            (v6.is_loopback() && !allow_loopback)
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xffc0) == 0xfe80
                || (first == 0x2001 && v6.segments()[1] == 0x0db8)
        }
    }
}

/// Whether `url` is the loopback URL the host's own runtime assigned `row`'s agent (the
/// process runtime's port, a Docker agent's published port): the one loopback address the host
/// calls, and accepts at registration, in production.
pub fn runtime_assigned(svc: &Services, row: &store::workspaces::WorkspaceRow, url: &str) -> bool {
    row.runtime != super::EXTERNAL_RUNTIME
        && svc.lifecycle.runtime().is_some()
        && url.starts_with("http://127.0.0.1:")
        && row.url.as_deref() == Some(url)
}

/// The URL another agent reaches `row`'s agent on. The stored URL is the host's view: for a
/// Docker agent that is the port published on the host's loopback, which means nothing inside
/// another container, so peers get the container's name on the shared network instead.
pub fn peer_url(svc: &Services, row: &store::workspaces::WorkspaceRow) -> Option<String> {
    let url = row.url.as_deref().filter(|u| !u.is_empty())?;
    let in_container = svc.lifecycle.runtime_name() == "docker"
        && row.runtime != super::EXTERNAL_RUNTIME
        && url.starts_with("http://127.0.0.1:");
    Some(if in_container {
        crate::runtime::docker::network_url(row.id)
    } else {
        url.to_owned()
    })
}

/// Registers an agent for an existing, live workspace (unknown ids are refused, unlike the
/// original, which created a row for any id). Registration never mints a token: the agent
/// already holds its workspace's token, and the caller was checked against it.
pub async fn register(
    svc: &Services,
    id: Uuid,
    url: &AgentUrl,
    agent_card: Option<Value>,
) -> Result<(), WorkspaceError> {
    let before = get_live(svc, id).await?;
    let reg = store::workspaces::Registration {
        url: url.as_str().to_owned(),
        agent_card: agent_card.clone(),
    };
    let Some(stored_url) = store::workspaces::register(&svc.db, id, &reg).await? else {
        return Err(WorkspaceError::NotFound);
    };
    tracing::info!(workspace_id = %id, from = %before.status, to = "online", "workspace registered");
    svc.events
        .emit(
            names::WORKSPACE_ONLINE,
            Some(id),
            json!({ "url": stored_url, "agent_card": agent_card }),
        )
        .await;
    Ok(())
}

/// A heartbeat as the agent sent it, already range-checked.
#[derive(Debug, Clone, Default)]
pub struct Heartbeat {
    pub report: store::workspaces::HeartbeatReport,
    /// `runtime_state: "wedged"` marks the agent degraded whatever its error rate.
    pub wedged: bool,
}

/// Applies a heartbeat: stores the counters, moves the status (provisioning/offline/awaiting →
/// online; error rate ≥ 0.5 or wedged → degraded; < 0.1 → online again) and tells subscribers.
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
    let to = match from {
        Some(Status::Provisioning | Status::Offline | Status::AwaitingAgent) if unhealthy => {
            Some(Status::Degraded)
        }
        Some(Status::Provisioning | Status::Offline | Status::AwaitingAgent) => {
            Some(Status::Online)
        }
        Some(Status::Online) if unhealthy => Some(Status::Degraded),
        Some(Status::Degraded) if healthy => Some(Status::Online),
        _ => None,
    };
    if let (Some(from), Some(to)) = (from, to)
        && store::workspaces::transition(&svc.db, id, &[from.as_str()], to.as_str()).await?
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
    crate::delegation::queue::after_heartbeat(svc, id, &hb.report, before.max_concurrent_tasks);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Environment;

    #[test]
    fn agent_urls_outside_agent_ranges_are_refused() {
        let dev = Config::default();
        let prod = Config {
            env: Environment::Production,
            ..Config::default()
        };
        for ok in [
            "http://127.0.0.1:8000",
            "http://ws-abc:8000/a2a",
            "https://agent.example.com",
            "http://[::1]:9",
        ] {
            assert!(AgentUrl::parse(ok, &dev).is_ok(), "{ok}");
        }
        for bad in [
            "ftp://x",
            "http://",
            "http://169.254.169.254/latest",
            "http://[fe80::1]:80",
            "http://224.0.0.1",
            "http://0.0.0.0:80",
            "http://user@host",
            "http://100.64.0.1",
            "http://bad host",
            "http://[::ffff:169.254.169.254]/",
        ] {
            assert!(AgentUrl::parse(bad, &dev).is_err(), "{bad}");
        }
        assert!(AgentUrl::parse("http://127.0.0.1:8000", &prod).is_err());
        assert!(AgentUrl::parse("http://localhost:8000", &prod).is_err());
        let assigned = Some("http://127.0.0.1:8000");
        assert!(AgentUrl::parse_assigned("http://127.0.0.1:8000", &prod, assigned).is_ok());
        assert!(AgentUrl::parse_assigned("http://127.0.0.1:8001", &prod, assigned).is_err());
        assert!(
            AgentUrl::parse_assigned(
                "http://169.254.169.254/",
                &prod,
                Some("http://169.254.169.254/")
            )
            .is_err()
        );
    }
}
