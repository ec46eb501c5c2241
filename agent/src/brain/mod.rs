//! Brains: what turns a user's text into the agent's reply.
//!
//! The kind comes from `brain.kind` in `config.yaml`, overridden by `MOLECULE_AGENT_BRAIN`, and
//! is fixed at start; the prompt material (system prompt, skills, rules) is read per request.

mod command;
mod echo;
mod openai;

use std::sync::Arc;
use std::time::Duration;

use crate::config::{BrainKind, Config, WorkspaceFile};

pub use command::CommandBrain;
pub use echo::EchoBrain;
pub use openai::OpenAiBrain;

/// One request to a brain.
#[derive(Debug, Clone)]
pub struct Prompt {
    /// The user's text.
    pub text: String,
    /// `system-prompt.md`, the skill list and plugin rules.
    pub system: String,
}

/// A brain's reply: its text and, when the model endpoint said, the tokens it used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub text: String,
    pub usage: Option<Usage>,
}

impl From<String> for Answer {
    fn from(text: String) -> Self {
        Answer { text, usage: None }
    }
}

/// Tokens a model endpoint reported for one reply; the agent passes them on in its answer
/// (`result.usage`), where the host counts them against the workspace's budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// The model the endpoint says answered.
    pub model: Option<String>,
}

/// Why a brain produced no reply. Messages are short and never contain credentials: they are
/// returned to the caller and reported in the heartbeat.
#[derive(Debug, thiserror::Error)]
pub enum BrainError {
    #[error("model endpoint request failed: {0}")]
    Request(&'static str),
    #[error("model endpoint returned HTTP {0}")]
    Status(u16),
    #[error("model endpoint reply has no choices[0].message.content")]
    MalformedReply,
    #[error("could not start {program}: {reason}")]
    Spawn { program: String, reason: String },
    #[error("command exited with {status}{}", stderr_suffix(.stderr))]
    Exit { status: String, stderr: String },
    #[error("command timed out after {}s", .0.as_secs_f64())]
    Timeout(Duration),
    #[error("command i/o failed: {0}")]
    Io(String),
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

#[async_trait::async_trait]
pub trait Brain: Send + Sync + std::fmt::Debug {
    async fn reply(&self, prompt: Prompt) -> Result<Answer, BrainError>;

    /// A one-line description for the startup log; never includes credentials.
    fn describe(&self) -> String;
}

/// Why the configured brain cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("the openai brain needs a model: set MODEL or `model` in config.yaml")]
    NoModel,
    #[error("the command brain needs `brain.command` in config.yaml")]
    NoCommand,
    #[error("building the http client: {0}")]
    Client(#[from] reqwest::Error),
}

/// The brain kind in effect: `MOLECULE_AGENT_BRAIN`, else `brain.kind` in `config.yaml`.
pub fn kind(config: &Config, file: &WorkspaceFile) -> BrainKind {
    config.brain_override.unwrap_or(file.brain.kind)
}

/// The brain selected by the environment and `config.yaml`.
pub fn build(config: &Config, file: &WorkspaceFile) -> Result<Arc<dyn Brain>, BuildError> {
    let kind = kind(config, file);
    let timeout = file.brain.timeout();
    Ok(match kind {
        BrainKind::Echo => Arc::new(EchoBrain::new(file.name.clone())),
        BrainKind::OpenAi => {
            let model = config
                .model
                .clone()
                .or_else(|| file.model.clone())
                .ok_or(BuildError::NoModel)?;
            Arc::new(OpenAiBrain::new(
                config.openai_base_url.clone(),
                model,
                config.openai_api_key.clone(),
                timeout,
            )?)
        }
        BrainKind::Command => {
            Arc::new(CommandBrain::new(&file.brain.command, timeout).ok_or(BuildError::NoCommand)?)
        }
    })
}
