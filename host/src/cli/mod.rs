//! Subcommands of the `molecule` binary other than `serve`, kept in the library so tests can
//! drive them.

pub mod ext;
pub mod org;

use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::Value;

/// Where a host's API is and how to authenticate.
#[derive(Debug, Clone, clap::Args)]
pub struct Remote {
    /// The host's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub host: String,
    /// The admin (or org) token; defaults to MOLECULE_ADMIN_TOKEN, then ADMIN_TOKEN.
    #[arg(long)]
    pub token: Option<String>,
}

impl Remote {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.host.trim_end_matches('/'))
    }

    pub fn token(&self) -> Option<String> {
        self.token.clone().or_else(crate::config::cli_admin_token)
    }

    /// Calls the API and returns the status and the JSON answer (or the text as a JSON string).
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        timeout: Duration,
    ) -> anyhow::Result<(reqwest::StatusCode, Value)> {
        let url = self.url(path);
        let mut request = reqwest::Client::new()
            .request(method, &url)
            .timeout(timeout);
        if let Some(token) = self.token() {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("calling {url}"))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let value = serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text));
        Ok((status, value))
    }

    /// Calls the API, prints the JSON answer, and fails on a non-2xx status.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<()> {
        let (status, value) = self
            .request(method, path, body, Duration::from_secs(120))
            .await?;
        print_line(&pretty(&value))?;
        if !status.is_success() {
            bail!("the host answered {status}");
        }
        Ok(())
    }
}

/// Prints one line of a command's answer on stdout. A reader that went away
/// (`molecule org list | head`) is not an error: the command ends quietly, as Unix tools do,
/// rather than panicking like `println!`.
pub fn print_line(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    match writeln!(std::io::stdout().lock(), "{text}") {
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(err).context("writing to stdout"))
        }
        _ => Ok(()),
    }
}

/// JSON as the CLI prints it.
pub fn pretty(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => serde_json::to_string_pretty(other).unwrap_or_default(),
    }
}
