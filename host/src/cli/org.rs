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
        /// Wait until every workspace of the template (created now or kept) is online, and fail
        /// naming those that failed, with their reasons.
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
    // Every workspace the template places, created now or kept from before: --wait is about
    // the org being up, not only about what this import created.
    let mut placed: Vec<(String, String)> = Vec::new();
    for w in answer["workspaces"].as_array().into_iter().flatten() {
        let (Some(id), Some(name)) = (w["id"].as_str(), w["name"].as_str()) else {
            continue;
        };
        placed.push((id.to_owned(), name.to_owned()));
        if w["skipped"].as_bool() == Some(true) {
            board.names.insert(id.to_owned(), name.to_owned());
            board.say(format!("        kept     {name} (already there)"));
        } else {
            board.show(Progress::Created {
                id: id.to_owned(),
                name: name.to_owned(),
            });
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
    if wait {
        wait_until_up(remote, &mut board, events.as_mut(), &placed, timeout).await?;
    }
    Ok(board.lines)
}

/// How often `--wait` re-reads the workspaces' statuses, besides following the event stream
/// (which misses what changed before it was opened, and cannot be relied on to stay open).
const WAIT_POLL: Duration = Duration::from_secs(2);

/// What a workspace's status means for `--wait`.
fn settled(status: &str) -> Option<bool> {
    match status {
        "online" | "degraded" => Some(true),
        "failed" | "removed" => Some(false),
        _ => None,
    }
}

/// Waits until every workspace in `placed` is online (or degraded) or failed, printing each as
/// it gets there; fails naming the workspaces that failed, with their reasons, or that were not
/// up in time.
async fn wait_until_up(
    remote: &Remote,
    board: &mut Board,
    mut events: Option<&mut mpsc::UnboundedReceiver<Progress>>,
    placed: &[(String, String)],
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut reasons: HashMap<String, String> = HashMap::new();
    loop {
        // The statuses as the host has them now: kept workspaces may still be starting, and
        // a failure may have happened before the stream opened.
        let (status, listed) = remote
            .request(
                reqwest::Method::GET,
                "/workspaces",
                None,
                Duration::from_secs(30),
            )
            .await
            .context("reading the workspaces' statuses")?;
        if !status.is_success() {
            bail!("the host answered {status} while waiting");
        }
        for w in listed.as_array().into_iter().flatten() {
            let Some(id) = w["id"].as_str() else { continue };
            if !placed.iter().any(|(p, _)| p == id) {
                continue;
            }
            match w["status"].as_str().and_then(settled) {
                Some(true) => board.show(Progress::Online { id: id.to_owned() }),
                Some(false) => {
                    let reason = w["last_sample_error"]
                        .as_str()
                        .filter(|r| !r.is_empty())
                        .unwrap_or("failed")
                        .to_owned();
                    reasons.insert(id.to_owned(), reason.clone());
                    board.show(Progress::Failed {
                        id: id.to_owned(),
                        reason,
                    });
                }
                None => {}
            }
        }
        let pending: Vec<&str> = placed
            .iter()
            .filter(|(id, _)| !board.online.contains(id) && !board.failed.contains(id))
            .map(|(_, name)| name.as_str())
            .collect();
        if pending.is_empty() {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "{} workspace(s) not online after {timeout:?}: {}",
                pending.len(),
                pending.join(", ")
            );
        }
        // Until the next poll, follow the stream.
        let next_poll = (tokio::time::Instant::now() + WAIT_POLL).min(deadline);
        while let Some(rx) = events.as_deref_mut() {
            match tokio::time::timeout_at(next_poll, rx.recv()).await {
                Ok(Some(p)) => {
                    if let Progress::Failed { id, reason } = &p {
                        reasons.insert(id.clone(), reason.clone());
                    }
                    board.show(p);
                }
                Ok(None) => events = None,
                Err(_) => break,
            }
        }
        if events.is_none() {
            tokio::time::sleep_until(next_poll).await;
        }
    }
    let failed: Vec<String> = placed
        .iter()
        .filter(|(id, _)| board.failed.contains(id))
        .map(|(id, name)| {
            let reason = reasons.get(id).map_or("failed", String::as_str);
            format!("{name} ({reason})")
        })
        .collect();
    if !failed.is_empty() {
        bail!(
            "{} workspace(s) failed to start: {}",
            failed.len(),
            failed.join("; ")
        );
    }
    board.say("every workspace is online".to_owned());
    Ok(())
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
