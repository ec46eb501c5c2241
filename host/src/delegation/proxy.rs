//! The A2A proxy between workspaces: [`send`] checks that the caller may reach the target under
//! the org hierarchy, then sends through the agent client ([`crate::agents::client::send`]).

pub use crate::agents::client::{
    Call, Delivery, Message, OnBusy, ProxyError, RESTART_DRAIN_SECS, Sent, delivered,
};
use crate::agents::{Caller, client};
use crate::services::Services;
use crate::workspaces::access;

/// Sends `call` to its target agent when the caller may reach it: a workspace only reaches the
/// workspaces `CanCommunicate` allows (itself included); the canvas and the host reach any.
pub async fn send(svc: &Services, call: Call) -> Result<Sent, ProxyError> {
    if let Caller::Workspace(caller) = call.caller
        && caller != call.target
        && !access::can_communicate(svc, caller, call.target).await?
    {
        return Err(ProxyError::Forbidden);
    }
    client::send(svc, call).await
}
