//! Which URLs the host's own runtime gave an agent, and so which it may call or accept at
//! registration without resolving them; and the URL other agents reach an agent on.

use super::url::{AgentUrl, Owner};
use crate::services::Services;
use crate::store::workspaces::{EXTERNAL_RUNTIME, WorkspaceRow};

/// Whether `url` is the loopback URL the host's own runtime assigned `row`'s agent (the
/// process runtime's port, a Docker agent's published port): the one loopback address the host
/// calls, and accepts at registration, in production.
pub fn runtime_assigned(svc: &Services, row: &WorkspaceRow, url: &str) -> bool {
    row.runtime != EXTERNAL_RUNTIME
        && svc.lifecycle.runtime().is_some()
        && url.starts_with("http://127.0.0.1:")
        && row.url.as_deref() == Some(url)
}

/// The URLs the host's own runtime gives `row`'s agent on its network (a Docker container's
/// name, a Kubernetes Service's names); none for an external agent.
fn runtime_names(svc: &Services, row: &WorkspaceRow) -> Vec<String> {
    match svc.lifecycle.runtime() {
        Some(runtime) if row.runtime != EXTERNAL_RUNTIME => runtime.network_urls(row.id),
        _ => Vec::new(),
    }
}

/// What `url` is to `row`: one of the URLs the host's own runtime gave its agent, or one chosen
/// by someone else.
pub fn url_owner(svc: &Services, row: &WorkspaceRow, url: &str) -> Owner {
    if row.runtime == EXTERNAL_RUNTIME || svc.lifecycle.runtime().is_none() {
        Owner::Foreign
    } else if runtime_assigned(svc, row, url) {
        Owner::RuntimeLoopback
    } else if runtime_names(svc, row).iter().any(|name| name == url) {
        Owner::RuntimeName
    } else {
        Owner::Foreign
    }
}

/// Checks an agent URL given for `row` (`None`: a workspace being created) against the address
/// policy, resolving names that the runtime did not assign (see [`super::url`]).
pub async fn check_url(
    svc: &Services,
    row: Option<&WorkspaceRow>,
    url: &str,
) -> Result<AgentUrl, &'static str> {
    let owner = row.map_or(Owner::Foreign, |row| url_owner(svc, row, url));
    svc.a2a.policy().check(url, owner).await
}

/// The URL another agent reaches `row`'s agent on: the stored URL is the host's view, which the
/// runtime translates for agents on its network (a Docker agent's published loopback port
/// becomes its container's name).
pub fn peer_url(svc: &Services, row: &WorkspaceRow) -> Option<String> {
    let url = row.url.as_deref().filter(|u| !u.is_empty())?;
    Some(match svc.lifecycle.runtime() {
        Some(runtime) if row.runtime != EXTERNAL_RUNTIME => runtime.peer_url(row.id, url),
        _ => url.to_owned(),
    })
}
