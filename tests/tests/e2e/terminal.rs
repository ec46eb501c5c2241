//! The operator's terminal, `GET /workspaces/{id}/terminal`, on Docker and on the process
//! runtime: a shell runs `echo` and its output comes back, a resize reaches the shell's terminal,
//! closing the socket kills the shell and what it started (a background job and a foreground
//! command), the idle timeout closes a silent session, a second terminal past the limit is
//! refused, a workspace token is refused, `…/terminal/diagnose` says why one cannot open, and
//! every session leaves an activity row and an audit row. Who may call the routes is the route
//! table's spec (`security_routes`).

use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use molecule_e2e::{
    ADMIN_TOKEN, Api, DbBackend, Runtime, TestApp, docker, eventually, id12, on_both_runtimes,
};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

on_both_runtimes!(a_terminal_runs_commands_resizes_and_leaves_nothing_behind);

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const ONLINE: Duration = Duration::from_secs(120);
const IDLE_SECS: u64 = 6;

/// Opens `path` as a WebSocket with `token` as the bearer: the socket, or the refusal's status.
async fn open(api: &Api, path: &str, token: Option<&str>) -> Result<Socket, u16> {
    let mut request = api.ws_url(path).into_client_request().unwrap();
    if let Some(token) = token {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(other) => panic!("websocket handshake failed: {other}"),
    }
}

async fn type_line(socket: &mut Socket, line: &str) {
    socket
        .send(Message::Binary(format!("{line}\n").into_bytes().into()))
        .await
        .expect("sending keys");
}

/// Reads the terminal until its output holds `needle`; returns all it read.
async fn read_until(socket: &mut Socket, needle: &str) -> String {
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !seen.contains(needle) {
        let frame = tokio::time::timeout_at(deadline, socket.next())
            .await
            .unwrap_or_else(|_| panic!("{needle:?} never came; the terminal showed {seen:?}"));
        match frame {
            Some(Ok(Message::Binary(bytes))) => seen.push_str(&String::from_utf8_lossy(&bytes)),
            Some(Ok(Message::Text(text))) => {
                panic!("unexpected control frame {text} after {seen:?}")
            }
            Some(Ok(_)) => {}
            other => panic!("the terminal ended ({other:?}) before {needle:?}; it showed {seen:?}"),
        }
    }
    seen
}

/// Whether a process whose command line is `command` runs in the workspace's environment.
fn runs(runtime: Runtime, id: &str, command: &str) -> bool {
    match runtime {
        Runtime::Process => std::fs::read_dir("/proc")
            .expect("/proc")
            .flatten()
            .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
            .any(|cmdline| {
                let line: Vec<u8> = cmdline
                    .iter()
                    .map(|b| if *b == 0 { b' ' } else { *b })
                    .collect();
                String::from_utf8_lossy(&line).trim_end() == command
            }),
        Runtime::Docker => docker(&["exec", &format!("ws-{}", id12(id)), "ps"])
            .lines()
            .any(|line| line.trim_end().ends_with(command)),
    }
}

async fn a_terminal_runs_commands_resizes_and_leaves_nothing_behind(
    runtime: Runtime,
    backend: DbBackend,
) {
    let app = TestApp::spawn_with(backend, |c| {
        runtime.configure(c);
        c.terminal.max_per_workspace = 1;
        c.terminal.idle_timeout_secs = IDLE_SECS;
    })
    .await;
    let id = app.create_workspace("Shell", None).await;
    app.wait_settled(&id, ONLINE).await;
    let path = format!("/workspaces/{id}/terminal");

    let ready = app.get(&format!("{path}/diagnose")).await.expect(200);
    assert_eq!(ready["ready"], true, "{ready}");
    assert_eq!(ready["running"], true, "{ready}");
    let name = match runtime {
        Runtime::Process => "process",
        Runtime::Docker => "docker",
    };
    assert_eq!(ready["runtime"], name, "{ready}");

    // Nobody but the operator: not without a credential, not with the workspace's own token.
    assert_eq!(open(&app, &path, None).await.err(), Some(401));
    let own = app.agent_token(&id).await;
    let refused = open(&app, &path, Some(&own)).await.err();
    assert!(matches!(refused, Some(401 | 403)), "{refused:?}");

    // A command runs and its output (not the echo of what was typed) comes back.
    let mut socket = open(&app, &format!("{path}?cols=100&rows=30"), Some(ADMIN_TOKEN))
        .await
        .expect("the operator opens a terminal");
    type_line(&mut socket, "echo hello-$((6*7))").await;
    read_until(&mut socket, "hello-42").await;
    if runtime == Runtime::Process {
        // The agent's uid (the host runs as root here), never the host's.
        type_line(&mut socket, "echo uid=$(id -u) done-$((4*4))").await;
        let shown = read_until(&mut socket, "done-16").await;
        let uid = shown
            .rsplit("uid=")
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u32>().ok());
        assert!(matches!(uid, Some(n) if n != 0), "{shown:?}");
    }

    // The size it opened with, then a resize, reach the shell's terminal.
    type_line(&mut socket, "stty size; echo size-$((1+1))").await;
    let shown = read_until(&mut socket, "size-2").await;
    assert!(shown.contains("30 100"), "{shown:?}");
    socket
        .send(Message::Text(
            json!({ "type": "resize", "cols": 120, "rows": 40 })
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    type_line(&mut socket, "stty size; echo size-$((2+1))").await;
    let shown = read_until(&mut socket, "size-3").await;
    assert!(shown.contains("40 120"), "{shown:?}");

    // One terminal per workspace here: a second is refused while this one is open.
    let busy = app.get(&format!("{path}/diagnose")).await.expect(200);
    assert_eq!(busy["code"], "too_many_terminals", "{busy}");
    assert_eq!(open(&app, &path, Some(ADMIN_TOKEN)).await.err(), Some(429));

    // A background job and a foreground command, then the client closes: both are killed.
    type_line(&mut socket, "sleep 3013 &").await;
    type_line(&mut socket, "echo started-$((3*3)); sleep 3014").await;
    read_until(&mut socket, "started-9").await;
    eventually(Duration::from_secs(10), || async {
        (runs(runtime, &id, "sleep 3013") && runs(runtime, &id, "sleep 3014")).then_some(())
    })
    .await;
    socket.close(None).await.expect("closing the terminal");
    drop(socket);
    eventually(Duration::from_secs(20), || async {
        (!runs(runtime, &id, "sleep 3013") && !runs(runtime, &id, "sleep 3014")).then_some(())
    })
    .await;

    // The slot is free again; a silent session is closed after the idle timeout.
    let mut idle = eventually(Duration::from_secs(10), || async {
        open(&app, &path, Some(ADMIN_TOKEN)).await.ok()
    })
    .await;
    let closed = tokio::time::timeout(Duration::from_secs(IDLE_SECS * 4), async {
        loop {
            match idle.next().await {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the idle session was not closed");

    // Each session left an activity row (who and how long, no keystrokes) and an audit row.
    let rows = eventually(Duration::from_secs(20), || async {
        let rows = app.activity(&id, "?type=terminal_session").await;
        (rows.len() == 2).then_some(rows)
    })
    .await;
    let summaries: Vec<&str> = rows.iter().filter_map(|r| r["summary"].as_str()).collect();
    assert!(
        summaries.iter().any(|s| s.contains("closed by the client")),
        "{summaries:?}"
    );
    assert!(
        summaries.iter().any(|s| s.contains("idle timeout")),
        "{summaries:?}"
    );
    let text = Value::Array(rows).to_string();
    assert!(
        !text.contains("hello-") && !text.contains("sleep"),
        "{text}"
    );
    let audit = app
        .get(&format!(
            "/workspaces/{id}/audit?event_type=terminal.opened"
        ))
        .await
        .expect(200);
    let opened = audit["events"].as_array().expect("events");
    assert_eq!(opened.len(), 2, "{audit}");
    assert!(opened.iter().all(|e| e["actor"] == "admin"), "{audit}");

    // Bad sizes, and a workspace whose agent the host does not run.
    app.get(&format!("{path}/diagnose")).await.expect(200);
    let bad = open(&app, &format!("{path}?cols=0"), Some(ADMIN_TOKEN)).await;
    assert_eq!(bad.err(), Some(400));
    let (external, _) = app.create_external("Elsewhere", None).await;
    let elsewhere = app
        .get(&format!("/workspaces/{external}/terminal/diagnose"))
        .await
        .expect(200);
    assert_eq!(
        (elsewhere["ready"].clone(), elsewhere["code"].clone()),
        (json!(false), json!("external")),
        "{elsewhere}"
    );
    let refused = open(
        &app,
        &format!("/workspaces/{external}/terminal"),
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(refused.err(), Some(409));
}
