//! The deterministic brain: replies `"<name>: <text>"`. Tests and smoke checks rely on it.

use super::{Answer, Brain, BrainError, Prompt};

#[derive(Debug, Clone)]
pub struct EchoBrain {
    name: String,
}

impl EchoBrain {
    pub fn new(name: String) -> Self {
        Self { name }
    }
}

#[async_trait::async_trait]
impl Brain for EchoBrain {
    async fn reply(&self, prompt: Prompt) -> Result<Answer, BrainError> {
        Ok(format!("{}: {}", self.name, prompt.text).into())
    }

    fn describe(&self) -> String {
        format!("echo as {:?}", self.name)
    }
}
