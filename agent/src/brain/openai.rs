//! A brain backed by an OpenAI-compatible `/chat/completions` endpoint.

use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use serde_json::{Value, json};

use super::{Answer, Brain, BrainError, Prompt, Usage};
use crate::config::BaseUrl;

#[derive(Debug, Clone)]
pub struct OpenAiBrain {
    http: reqwest::Client,
    endpoint: String,
    model: String,
    api_key: Option<SecretString>,
}

impl OpenAiBrain {
    pub fn new(
        base: BaseUrl,
        model: String,
        api_key: Option<SecretString>,
        timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: reqwest::Client::builder().timeout(timeout).build()?,
            endpoint: base.join("/chat/completions"),
            model,
            api_key,
        })
    }
}

#[async_trait::async_trait]
impl Brain for OpenAiBrain {
    async fn reply(&self, prompt: Prompt) -> Result<Answer, BrainError> {
        let body = json!({
            "model": self.model,
            "messages": [
                { "role": "system", "content": prompt.system },
                { "role": "user", "content": prompt.text },
            ],
        });
        let mut request = self.http.post(&self.endpoint).json(&body);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key.expose_secret());
        }
        let response = request.send().await.map_err(|e| {
            let reason = classify(&e);
            tracing::warn!(error = %e.without_url(), "model endpoint request failed");
            BrainError::Request(reason)
        })?;
        let status = response.status();
        if !status.is_success() {
            // The body is not logged: some providers echo a masked key or the prompt back.
            tracing::warn!(
                status = status.as_u16(),
                "model endpoint refused the request"
            );
            return Err(BrainError::Status(status.as_u16()));
        }
        let reply: Value = response
            .json()
            .await
            .map_err(|e| BrainError::Request(classify(&e)))?;
        let text = reply
            .pointer("/choices/0/message/content")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or(BrainError::MalformedReply)?;
        Ok(Answer {
            text,
            usage: usage(&reply),
        })
    }

    fn describe(&self) -> String {
        format!("openai model {} at {}", self.model, self.endpoint)
    }
}

/// The endpoint's `usage {prompt_tokens, completion_tokens}` and `model`, when it sent them.
fn usage(reply: &Value) -> Option<Usage> {
    let usage = reply.get("usage")?;
    let tokens = |name: &str| usage.get(name).and_then(Value::as_u64);
    let (input, output) = (tokens("prompt_tokens"), tokens("completion_tokens"));
    if input.is_none() && output.is_none() {
        return None;
    }
    Some(Usage {
        input_tokens: input.unwrap_or(0),
        output_tokens: output.unwrap_or(0),
        model: reply
            .get("model")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

fn classify(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_decode() {
        "reply is not valid JSON"
    } else {
        "transport error"
    }
}
