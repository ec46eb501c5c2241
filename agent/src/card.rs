//! The agent card: who this agent is and which skills it has, served at
//! `/.well-known/agent.json` and sent when registering.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::Value;

use crate::server::AppState;
use crate::skills::Skill;

/// The parts of the card fixed at start.
#[derive(Debug, Clone)]
pub struct Identity {
    pub name: String,
    pub description: String,
    pub version: String,
    /// The URL registered with the platform.
    pub url: String,
    /// Informational: `MOLECULE_AGENT_ROLE`, else `role` in `config.yaml`.
    pub role: Option<String>,
    /// Informational: `TIER`, else `tier` in `config.yaml`.
    pub tier: Option<i64>,
}

#[derive(Debug, Serialize)]
struct AgentCard<'a> {
    name: &'a str,
    description: &'a str,
    version: &'a str,
    url: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tier: Option<i64>,
    skills: Vec<CardSkill<'a>>,
    capabilities: Capabilities,
}

#[derive(Debug, Serialize)]
struct CardSkill<'a> {
    id: &'a str,
    name: &'a str,
    description: &'a str,
    tags: &'a [String],
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Capabilities {
    streaming: bool,
    push_notifications: bool,
}

/// The card as JSON.
pub fn card(identity: &Identity, skills: &[Skill]) -> Value {
    let card = AgentCard {
        name: &identity.name,
        description: &identity.description,
        version: &identity.version,
        url: &identity.url,
        role: identity.role.as_deref(),
        tier: identity.tier,
        skills: skills
            .iter()
            .map(|s| CardSkill {
                id: &s.id,
                name: &s.name,
                description: &s.description,
                tags: &s.tags,
            })
            .collect(),
        capabilities: Capabilities {
            streaming: false,
            push_notifications: false,
        },
    };
    serde_json::to_value(card).unwrap_or(Value::Null)
}

pub fn router() -> Router<AppState> {
    Router::new().route("/.well-known/agent.json", get(agent_card))
}

async fn agent_card(State(state): State<AppState>) -> Json<Value> {
    Json(state.card().await)
}
