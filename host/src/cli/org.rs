//! `molecule org`: list a host's org templates and import one, following each workspace's
//! progress over the host's event stream.

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use super::{Remote, pretty};

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// List the org templates the host offers.
    List {
        #[command(flatten)]
        remote: Remote,
    },
    /// Import an org template: create its missing workspaces and start them, printing each
    /// workspace as it is created (and, with --wait, as it comes online).
    Import {
        /// The template's directory under the host's org templates directory.
        dir: String,
        /// `merge` keeps workspaces the template no longer places; `reconcile` removes the ones
        /// an earlier import of this template created.
        #[arg(long, default_value = "merge", value_parser = ["merge", "reconcile"])]
        mode: String,
        /// Wait until every created workspace is online (or failed).
        #[arg(long)]
        wait: bool,
        /// How long --wait waits, in seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        #[command(flatten)]
        remote: Remote,
    },
}

pub async fn run(command: OrgCommand) -> anyhow::Result<()> {
    match command {
        OrgCommand::List { remote } => {
            remote
                .call(reqwest::Method::GET, "/org/templates", None)
                .await
        }
        OrgCommand::Import {
            dir,
            mode,
            wait,
            timeout,
            remote,
        } => import(&remote, &dir, &mode, wait, Duration::from_secs(timeout))
            .await
            .map(drop),
    }
}

/// One line of progress.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Progress {
    Created { id: String, name: String },
    Online { id: String },
    Failed { id: String, reason: String },
}

/// Progress from one event frame of `/ws`, if it is about a workspace's start.
fn progress(frame: &Value) -> Option<Progress> {
    let id = frame.get("workspace_id")?.as_str()?.to_owned();
    let payload = frame.get("payload").cloned().unwrap_or(Value::Null);
    match frame.get("event")?.as_str()? {
        "WORKSPACE_PROVISIONING" => Some(Progress::Created {
            id,
            name: payload.get("name")?.as_str()?.to_owned(),
        }),
        "WORKSPACE_ONLINE" => Some(Progress::Online { id }),
        "WORKSPACE_PROVISION_FAILED" => Some(Progress::Failed {
            id,
            reason: payload
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("provisioning failed")
                .to_owned(),
        }),
        _ => None,
    }
}

/// Subscribes to the host's event stream; events arrive on the returned channel. `None` when the
/// stream cannot be opened (the import still runs, without live progress).
async fn subscribe(remote: &Remote) -> Option<mpsc::UnboundedReceiver<Progress>> {
    let url = remote
        .url("/ws")
        .replacen("http://", "ws://", 1)
        .replacen("https://", "wss://", 1);
    let mut request = url.into_client_request().ok()?;
    if let Some(token) = remote.token() {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().ok()?);
    }
    let (socket, _) = tokio_tungstenite::connect_async(request).await.ok()?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (_, mut read) = socket.split();
        while let Some(Ok(message)) = read.next().await {
            if let Message::Text(text) = message
                && let Ok(frame) = serde_json::from_str::<Value>(&text)
                && let Some(p) = progress(&frame)
                && tx.send(p).is_err()
            {
                break;
            }
        }
    });
    Some(rx)
}

/// Tracks what was printed so each workspace gets one line per step; keeps the lines.
#[derive(Default)]
struct Board {
    names: HashMap<String, String>,
    created: usize,
    online: HashSet<String>,
    failed: HashSet<String>,
    lines: Vec<String>,
}

impl Board {
    fn say(&mut self, line: String) {
        let _ = writeln!(std::io::stdout().lock(), "{line}");
        self.lines.push(line);
    }

    fn show(&mut self, p: Progress) {
        match p {
            Progress::Created { id, name } => {
                if self.names.insert(id, name.clone()).is_none() {
                    self.created += 1;
                    let line = format!("  [{:>3}] created  {name}", self.created);
                    self.say(line);
                }
            }
            Progress::Online { id } => {
                if self.online.insert(id.clone())
                    && let Some(name) = self.names.get(&id).cloned()
                {
                    self.say(format!("        online   {name}"));
                }
            }
            Progress::Failed { id, reason } => {
                if self.failed.insert(id.clone()) {
                    let name = self.names.get(&id).cloned().unwrap_or(id);
                    self.say(format!("        FAILED   {name}: {reason}"));
                }
            }
        }
    }
}

/// Imports `dir`, printing progress; returns the lines it printed.
pub async fn import(
    remote: &Remote,
    dir: &str,
    mode: &str,
    wait: bool,
    timeout: Duration,
) -> anyhow::Result<Vec<String>> {
    let mut events = subscribe(remote).await;
    if events.is_none() {
        eprintln!("(no event stream: progress is shown when the import returns)");
    }
    let mut board = Board::default();
    board.say(format!("importing {dir} ({mode})"));
    let body = json!({ "dir": dir, "mode": mode });
    let call = remote.request(reqwest::Method::POST, "/org/import", Some(body), timeout);
    tokio::pin!(call);
    let (status, answer) = loop {
        tokio::select! {
            result = &mut call => break result.context("importing")?,
            Some(p) = async { match events.as_mut() { Some(rx) => rx.recv().await, None => None } } => board.show(p),
        }
    };
    // Events that arrived with the answer.
    if let Some(rx) = events.as_mut() {
        while let Ok(p) = rx.try_recv() {
            board.show(p);
        }
    }
    if !status.is_success() {
        eprintln!("{}", pretty(&answer));
        bail!("the host answered {status}");
    }
    let mut pending: HashSet<String> = HashSet::new();
    for w in answer["workspaces"].as_array().into_iter().flatten() {
        let (Some(id), Some(name)) = (w["id"].as_str(), w["name"].as_str()) else {
            continue;
        };
        if w["skipped"].as_bool() == Some(true) {
            board.say(format!("        kept     {name} (already there)"));
        } else {
            board.show(Progress::Created {
                id: id.to_owned(),
                name: name.to_owned(),
            });
            if w["status"].as_str() != Some("online") {
                pending.insert(id.to_owned());
            }
        }
        if let Some(missing) = w["plugins_missing"].as_array().filter(|m| !m.is_empty()) {
            board.say(format!(
                "        warning  {name}: plugins not in the registry: {missing:?}"
            ));
        }
    }
    board.say(format!(
        "{}: {} created, {} kept{}",
        answer["org"].as_str().unwrap_or(dir),
        answer["created_count"],
        answer["skipped_count"],
        match answer["reconcile_removed_count"].as_u64() {
            Some(n) => format!(", {n} removed"),
            None => String::new(),
        }
    ));
    if let Some(error) = answer["error"].as_str() {
        bail!("the import stopped part way: {error}");
    }
    if wait && !pending.is_empty() {
        let Some(rx) = events.as_mut() else {
            bail!("--wait needs the host's event stream, which could not be opened");
        };
        pending.retain(|id| !board.online.contains(id) && !board.failed.contains(id));
        let deadline = tokio::time::Instant::now() + timeout;
        while !pending.is_empty() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(p)) => {
                    if let Progress::Online { id } | Progress::Failed { id, .. } = &p {
                        pending.remove(id);
                    }
                    board.show(p);
                }
                Ok(None) => bail!("the event stream closed while waiting"),
                Err(_) => bail!(
                    "{} workspace(s) not online after {timeout:?}",
                    pending.len()
                ),
            }
        }
        if !board.failed.is_empty() {
            bail!("{} workspace(s) failed to start", board.failed.len());
        }
        board.say("every workspace is online".to_owned());
    }
    Ok(board.lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_frames_become_progress() {
        let created = json!({"event": "WORKSPACE_PROVISIONING", "workspace_id": "a", "payload": {"name": "Dev"}});
        assert_eq!(
            progress(&created),
            Some(Progress::Created {
                id: "a".into(),
                name: "Dev".into()
            })
        );
        let online = json!({"event": "WORKSPACE_ONLINE", "workspace_id": "a", "payload": {}});
        assert_eq!(progress(&online), Some(Progress::Online { id: "a".into() }));
        let other = json!({"event": "WORKSPACE_HEARTBEAT", "workspace_id": "a", "payload": {}});
        assert_eq!(progress(&other), None);
    }
}
