//! Agents handing work to each other through the host: the hierarchy-checked A2A proxy, the busy
//! queue, the delegation lifecycle and the MCP tools agents call. Every path from one agent to
//! another, the MCP tools included, goes through [`proxy::send`], which checks the hierarchy and
//! calls down into the agent client ([`crate::agents`]).

pub mod mcp;
pub mod proxy;
pub mod queue;
pub mod tasks;

pub use crate::agents::{Caller, Hub};
