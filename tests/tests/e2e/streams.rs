//! The live streams: the `/ws` WebSocket (canvas and workspace clients), the per-workspace SSE
//! stream, what each is allowed to see, how they end at shutdown and how slow readers are dropped.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt as _;
use futures::stream::BoxStream;
use molecule_e2e::{ADMIN_TOKEN, Api, DbBackend, TestApp, on_both_backends};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

on_both_backends!(
    a_canvas_client_receives_every_workspace_event_as_a_frame,
    a_workspace_client_only_receives_events_it_may_communicate_with,
    the_websocket_refuses_bad_tokens_origins_and_reserved_callers,
    the_websocket_admits_the_hosts_own_origin_and_still_refuses_foreign_ones,
    the_websocket_is_open_on_a_fresh_install_and_locked_once_a_token_exists,
    the_sse_stream_pings_then_sends_only_its_workspace_events,
    stopping_the_host_ends_live_streams_promptly,
    stopping_the_host_does_not_wait_for_clients_that_stopped_reading,
    a_slow_subscriber_is_dropped_without_blocking_publishers,
);

/// How long a single read from a stream may take before the test fails.
const READ_DEADLINE: Duration = Duration::from_secs(15);

type Ws = WebSocketStream<TcpStream>;

/// Opens `/ws...` with extra headers. `Err(status)` when the host refused the upgrade.
async fn ws_connect(api: &Api, path: &str, headers: &[(&str, &str)]) -> Result<Ws, u16> {
    ws_connect_with(api, path, headers, None).await
}

/// Like [`ws_connect`]; `recv_buffer` pins the client socket's receive buffer, so a client that
/// does not read stops the host's writes after a bounded number of bytes.
async fn ws_connect_with(
    api: &Api,
    path: &str,
    headers: &[(&str, &str)],
    recv_buffer: Option<u32>,
) -> Result<Ws, u16> {
    let mut request = api
        .ws_url(path)
        .into_client_request()
        .expect("a websocket request");
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("a header name");
        let value = HeaderValue::from_str(value).expect("a header value");
        request.headers_mut().insert(name, value);
    }
    let socket = TcpSocket::new_v4().expect("a socket");
    if let Some(size) = recv_buffer {
        socket
            .set_recv_buffer_size(size)
            .expect("setting SO_RCVBUF");
    }
    let stream = socket
        .connect(api.addr)
        .await
        .expect("connecting to the host");
    match tokio_tungstenite::client_async(request, stream).await {
        Ok((ws, _)) => Ok(ws),
        Err(WsError::Http(response)) => Err(response.status().as_u16()),
        Err(other) => panic!("websocket handshake failed: {other}"),
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The next text frame as JSON; panics if the stream ends or stays silent too long.
async fn next_frame(ws: &mut Ws) -> Value {
    loop {
        let message = tokio::time::timeout(READ_DEADLINE, ws.next())
            .await
            .expect("a frame within the deadline")
            .expect("the stream is still open")
            .expect("a readable frame");
        match message {
            Message::Text(text) => return serde_json::from_str(&text).expect("a JSON frame"),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected websocket message: {other:?}"),
        }
    }
}

/// Reads frames until one of `event` for `workspace_id` arrives; returns it and every frame read
/// before it.
async fn frame_for(ws: &mut Ws, event: &str, workspace_id: &str) -> (Value, Vec<Value>) {
    let mut before = Vec::new();
    loop {
        let frame = next_frame(ws).await;
        if frame["event"] == event && frame["workspace_id"] == workspace_id {
            return (frame, before);
        }
        before.push(frame);
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_millis() as i64
}

/// Checks the frame's shape and that its RFC 3339 timestamp lies within `[from, to]` (unix ms).
#[track_caller]
fn assert_ws_frame(frame: &Value, from: i64, to: i64) {
    let mut keys: Vec<&str> = frame
        .as_object()
        .expect("a frame object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["event", "payload", "timestamp", "workspace_id"],
        "{frame}"
    );
    let stamp = frame["timestamp"].as_str().expect("a timestamp string");
    let parsed = chrono::DateTime::parse_from_rfc3339(stamp)
        .unwrap_or_else(|e| panic!("{stamp} is not RFC 3339: {e}"))
        .timestamp_millis();
    assert!(
        (from..=to).contains(&parsed),
        "timestamp {stamp} outside the request"
    );
}

async fn a_canvas_client_receives_every_workspace_event_as_a_frame(backend: DbBackend) {
    let app = TestApp::spawn(backend).await;
    let admin = bearer(ADMIN_TOKEN);
    let mut by_header = ws_connect(&app, "/ws", &[("authorization", admin.as_str())])
        .await
        .expect("the admin bearer opens the canvas stream");
    let mut by_query = ws_connect(&app.anonymous(), &format!("/ws?token={ADMIN_TOKEN}"), &[])
        .await
        .expect("?token= opens the canvas stream");

    let from = now_ms();
    let alpha = app.create_workspace("Alpha", None).await;
    let beta = app.create_workspace("Beta", None).await;
    let to = now_ms();
    for ws in [&mut by_header, &mut by_query] {
        let (frame, _) = frame_for(ws, "WORKSPACE_PROVISIONING", &alpha).await;
        assert_ws_frame(&frame, from, to);
        assert_eq!(frame["payload"]["name"], "Alpha");
        let (frame, _) = frame_for(ws, "WORKSPACE_PROVISIONING", &beta).await;
        assert_eq!(frame["payload"]["name"], "Beta");
    }

    let token = app.register(&alpha).await.expect("a minted token");
    let agent = app.with_token(&token);
    let from = now_ms();
    agent
        .post(
            "/registry/heartbeat",
            json!({ "workspace_id": alpha, "active_tasks": 2, "uptime_seconds": 7 }),
        )
        .await
        .expect(200);
    app.patch(&format!("/workspaces/{beta}"), json!({ "name": "Beta 2" }))
        .await
        .expect(200);
    app.delete(&format!("/workspaces/{beta}")).await.expect(200);
    let to = now_ms();
    for ws in [&mut by_header, &mut by_query] {
        let (online, _) = frame_for(ws, "WORKSPACE_ONLINE", &alpha).await;
        assert_eq!(online["payload"]["url"], "http://127.0.0.1:9/a2a");
        let (beat, _) = frame_for(ws, "WORKSPACE_HEARTBEAT", &alpha).await;
        assert_ws_frame(&beat, from, to);
        assert_eq!(beat["payload"]["active_tasks"], 2);
        assert_eq!(beat["payload"]["uptime_seconds"], 7);
        let (updated, _) = frame_for(ws, "WORKSPACE_UPDATED", &beta).await;
        assert_eq!(updated["payload"]["name"], "Beta 2");
        frame_for(ws, "WORKSPACE_REMOVED", &beta).await;
    }

    // Heartbeats are broadcast only: the history never records them.
    let history = app.get(&format!("/events/{alpha}")).await.expect(200);
    let kinds: Vec<&str> = history
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|e| e["event_type"].as_str())
        .collect();
    assert!(kinds.contains(&"WORKSPACE_ONLINE"), "{kinds:?}");
    assert!(!kinds.contains(&"WORKSPACE_HEARTBEAT"), "{kinds:?}");
}

async fn a_workspace_client_only_receives_events_it_may_communicate_with(backend: DbBackend) {
    // root ── a ── a1, a2
    //      └─ b ── b1
    let app = TestApp::spawn(backend).await;
    let root = app.create_workspace("root", None).await;
    let a = app.create_workspace("a", Some(&root)).await;
    let b = app.create_workspace("b", Some(&root)).await;
    let a1 = app.create_workspace("a1", Some(&a)).await;
    let a2 = app.create_workspace("a2", Some(&a)).await;
    let b1 = app.create_workspace("b1", Some(&b)).await;
    let token = app.register(&a1).await.expect("a minted token");

    let admin = bearer(ADMIN_TOKEN);
    let mut canvas = ws_connect(&app, "/ws", &[("authorization", admin.as_str())])
        .await
        .expect("canvas stream");
    let own = bearer(&token);
    let mut by_header = ws_connect(
        &app.anonymous(),
        "/ws",
        &[
            ("x-workspace-id", a1.as_str()),
            ("authorization", own.as_str()),
        ],
    )
    .await
    .expect("a1 opens its stream with its token");
    let mut by_query = ws_connect(
        &app.anonymous(),
        &format!("/ws?token={token}"),
        &[("x-workspace-id", a1.as_str())],
    )
    .await
    .expect("a1 opens its stream with ?token=");

    // Cousin and aunt first, then parent, sibling, grandparent and finally a1 itself as the
    // marker: frames arrive in publish order, so once the marker is in, anything forbidden that
    // was going to be delivered already would have been.
    for id in [&b1, &b, &a, &a2, &root, &a1] {
        app.patch(&format!("/workspaces/{id}"), json!({ "role": "renamed" }))
            .await
            .expect(200);
    }

    for ws in [&mut by_header, &mut by_query] {
        let (_, before) = frame_for(ws, "WORKSPACE_UPDATED", &a1).await;
        let seen: HashSet<&str> = before
            .iter()
            .filter_map(|f| f["workspace_id"].as_str())
            .collect();
        for allowed in [&a, &a2, &root] {
            assert!(
                seen.contains(allowed.as_str()),
                "{allowed} missing: {before:?}"
            );
        }
        for forbidden in [&b, &b1] {
            assert!(
                !seen.contains(forbidden.as_str()),
                "{forbidden} leaked to a1"
            );
        }
    }
    // The canvas saw the events a1 did not, so they really happened.
    let (_, before) = frame_for(&mut canvas, "WORKSPACE_UPDATED", &a1).await;
    let seen: HashSet<&str> = before
        .iter()
        .filter_map(|f| f["workspace_id"].as_str())
        .collect();
    assert!(seen.contains(b.as_str()) && seen.contains(b1.as_str()));
}

async fn the_websocket_refuses_bad_tokens_origins_and_reserved_callers(backend: DbBackend) {
    let app = TestApp::spawn(backend).await;
    let id = app.create_workspace("Agent", None).await;
    let token = app.register(&id).await.expect("a minted token");
    let anon = app.anonymous();
    let admin = bearer(ADMIN_TOKEN);
    let wrong = bearer("not-the-token-of-this-workspace-000000000000");

    // A workspace that holds tokens must present one of its own; the canvas needs admin auth.
    let cases = [
        (
            "wrong workspace token",
            "/ws".to_owned(),
            vec![
                ("x-workspace-id", id.as_str()),
                ("authorization", wrong.as_str()),
            ],
            401,
        ),
        (
            "no workspace token",
            "/ws".to_owned(),
            vec![("x-workspace-id", id.as_str())],
            401,
        ),
        (
            "wrong ?token=",
            "/ws?token=wrong".to_owned(),
            vec![("x-workspace-id", id.as_str())],
            401,
        ),
        ("canvas without admin auth", "/ws".to_owned(), vec![], 401),
        (
            "canvas with a workspace token",
            format!("/ws?token={token}"),
            vec![],
            401,
        ),
        (
            "canvas with a wrong admin token",
            "/ws".to_owned(),
            vec![("authorization", wrong.as_str())],
            401,
        ),
        (
            "disallowed origin",
            "/ws".to_owned(),
            vec![
                ("origin", "http://evil.example"),
                ("authorization", admin.as_str()),
            ],
            403,
        ),
        (
            "reserved caller id",
            "/ws".to_owned(),
            vec![
                ("x-workspace-id", "system:x"),
                ("authorization", admin.as_str()),
            ],
            403,
        ),
        (
            "reserved webhook caller id",
            "/ws".to_owned(),
            vec![("x-workspace-id", "webhook:github")],
            403,
        ),
    ];
    for (what, path, headers, status) in cases {
        assert_eq!(
            ws_connect(&anon, &path, &headers).await.err(),
            Some(status),
            "{what}"
        );
    }

    // The same requests with the right credentials and an allowed origin are let in.
    let own = bearer(&token);
    ws_connect(
        &anon,
        "/ws",
        &[
            ("x-workspace-id", id.as_str()),
            ("authorization", own.as_str()),
        ],
    )
    .await
    .expect("own token");
    ws_connect(
        &anon,
        "/ws",
        &[
            ("origin", "http://localhost:3000"),
            ("authorization", admin.as_str()),
        ],
    )
    .await
    .expect("allowed origin");
}

/// The console the host serves opens `/ws` from the host's own origin, which is in no CORS list:
/// an origin whose host:port is the request's `Host` is admitted, any other is still refused.
async fn the_websocket_admits_the_hosts_own_origin_and_still_refuses_foreign_ones(
    backend: DbBackend,
) {
    let app = TestApp::spawn(backend).await;
    let anon = app.anonymous();
    let own_origin = app.base.clone();
    assert!(
        !app.config.cors_origins.contains(&own_origin),
        "the test needs an origin outside the CORS list"
    );
    let query = format!("/ws?token={ADMIN_TOKEN}");
    let port = app.addr.port();
    let foreign = [
        "http://evil.example".to_owned(),
        // Same host, another port; and the host's authority smuggled into a longer one.
        format!("http://127.0.0.1:{}", port.wrapping_add(1)),
        format!("http://127.0.0.1:{port}@evil.example"),
        format!("http://127.0.0.1:{port}.evil.example"),
        format!("ftp://127.0.0.1:{port}"),
        "null".to_owned(),
    ];
    for origin in &foreign {
        assert_eq!(
            ws_connect(&anon, &query, &[("origin", origin)]).await.err(),
            Some(403),
            "{origin}"
        );
    }
    // The own origin still needs a token.
    assert_eq!(
        ws_connect(&anon, "/ws", &[("origin", &own_origin)])
            .await
            .err(),
        Some(401)
    );
    // With the browser's `?token=` it is let in and receives events.
    let mut socket = ws_connect(&anon, &query, &[("origin", &own_origin)])
        .await
        .expect("the host's own origin");
    let id = app.create_workspace("Seen", None).await;
    let (frame, _) = frame_for(&mut socket, "WORKSPACE_PROVISIONING", &id).await;
    assert_eq!(frame["workspace_id"], id.as_str());
}

async fn the_websocket_is_open_on_a_fresh_install_and_locked_once_a_token_exists(
    backend: DbBackend,
) {
    let app = TestApp::spawn_with(backend, |c| c.admin_token = None).await;
    let mut canvas = ws_connect(&app, "/ws", &[])
        .await
        .expect("a fresh install has nothing to protect yet");
    // Creating a workspace whose agent starts elsewhere issues its token: the install locks.
    let id = app.create_workspace("First", None).await;
    frame_for(&mut canvas, "WORKSPACE_PROVISIONING", &id).await;
    let token = app.register(&id).await.expect("the workspace's token");
    assert_eq!(ws_connect(&app, "/ws", &[]).await.err(), Some(401));
    assert_eq!(
        ws_connect(&app, &format!("/ws?token={token}"), &[])
            .await
            .err(),
        Some(401),
        "a workspace token is not an admin token"
    );
}

/// An SSE response body split into blocks (the text between blank lines).
struct SseReader {
    body: BoxStream<'static, reqwest::Result<Vec<u8>>>,
    buffer: String,
}

impl SseReader {
    fn new(response: reqwest::Response) -> Self {
        SseReader {
            body: response
                .bytes_stream()
                .map(|c| c.map(|b| b.to_vec()))
                .boxed(),
            buffer: String::new(),
        }
    }

    /// The next block, or `None` once the body has ended.
    async fn next_block(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block = self.buffer[..end].to_owned();
                self.buffer.drain(..end + 2);
                return Some(block);
            }
            let chunk = tokio::time::timeout(READ_DEADLINE, self.body.next())
                .await
                .expect("the SSE stream answers within the deadline")?;
            let chunk = chunk.expect("a readable SSE chunk");
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8 text"));
        }
    }

    /// The next `data:` payload, skipping comments (keep-alives).
    async fn next_data(&mut self) -> Value {
        loop {
            let block = self.next_block().await.expect("the stream is still open");
            if let Some(data) = block.strip_prefix("data: ") {
                return serde_json::from_str(data).expect("JSON data");
            }
            assert!(block.starts_with(':'), "unexpected SSE block {block:?}");
        }
    }
}

async fn open_sse(app: &Api, id: &str) -> reqwest::Response {
    app.client
        .get(app.url(&format!("/workspaces/{id}/events/stream")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("the SSE request is answered")
}

async fn the_sse_stream_pings_then_sends_only_its_workspace_events(backend: DbBackend) {
    let app = TestApp::spawn(backend).await;
    let id = app.create_workspace("Streamed", None).await;
    let other = app.create_workspace("Other", None).await;

    let response = open_sse(&app, &id).await;
    assert_eq!(response.status(), 200);
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert!(header("content-type").starts_with("text/event-stream"));
    assert_eq!(header("cache-control"), "no-cache");
    assert_eq!(header("x-accel-buffering"), "no");
    let mut sse = SseReader::new(response);
    assert_eq!(sse.next_block().await.as_deref(), Some(": ping"));

    let from = now_ms();
    app.patch(
        &format!("/workspaces/{other}"),
        json!({ "name": "Other 2" }),
    )
    .await
    .expect(200);
    app.patch(&format!("/workspaces/{id}"), json!({ "name": "Renamed" }))
        .await
        .expect(200);
    app.register(&id).await.expect("a minted token");
    let to = now_ms();

    // The other workspace's event was published first; the first data line is ours.
    let updated = sse.next_data().await;
    assert_eq!(updated["type"], "WORKSPACE_UPDATED", "{updated}");
    assert_eq!(updated["data"], json!({ "name": "Renamed" }));
    let stamp = updated["timestamp"].as_i64().expect("unix milliseconds");
    assert!(
        (from..=to).contains(&stamp),
        "{stamp} outside [{from}, {to}]"
    );
    let mut keys: Vec<&String> = updated.as_object().expect("an object").keys().collect();
    keys.sort_unstable();
    assert_eq!(keys, ["data", "timestamp", "type"]);
    let online = sse.next_data().await;
    assert_eq!(online["type"], "WORKSPACE_ONLINE", "{online}");

    let unknown = open_sse(&app, "6f1c1d7e-0000-4000-8000-000000000000").await;
    assert_eq!(unknown.status(), 404);
    app.delete(&format!("/workspaces/{other}"))
        .await
        .expect(200);
    assert_eq!(open_sse(&app, &other).await.status(), 404, "removed");
}

async fn stopping_the_host_ends_live_streams_promptly(backend: DbBackend) {
    let mut app = TestApp::spawn(backend).await;
    let id = app.create_workspace("Streamed", None).await;
    let admin = bearer(ADMIN_TOKEN);
    let mut ws = ws_connect(&app, "/ws", &[("authorization", admin.as_str())])
        .await
        .expect("canvas stream");
    let mut sse = SseReader::new(open_sse(&app, &id).await);
    assert_eq!(sse.next_block().await.as_deref(), Some(": ping"));
    // Both streams are live: each has delivered an event.
    app.patch(&format!("/workspaces/{id}"), json!({ "name": "Live" }))
        .await
        .expect(200);
    frame_for(&mut ws, "WORKSPACE_UPDATED", &id).await;
    assert_eq!(sse.next_data().await["type"], "WORKSPACE_UPDATED");

    let stopped = tokio::time::timeout(Duration::from_secs(5), app.stop()).await;
    assert!(
        matches!(stopped, Ok(Ok(()))),
        "stop did not return promptly: {stopped:?}"
    );

    // The WebSocket client is told the host is going away; the SSE body ends.
    let close = tokio::time::timeout(READ_DEADLINE, ws.next())
        .await
        .expect("the socket ends within the deadline");
    match close {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("expected a close frame, got {other:?}"),
    }
    assert_eq!(sse.next_block().await, None, "the SSE body ended");
}

/// Publishes `count` agent-card updates of `size` bytes each for `id`, every one within 5 s.
async fn flood(app: &Api, id: &str, count: usize, size: usize) {
    let blob = "x".repeat(size);
    for seq in 0..count {
        let card = json!({ "workspace_id": id, "agent_card": { "name": "chatty", "seq": seq, "blob": blob } });
        let reply = tokio::time::timeout(
            Duration::from_secs(5),
            app.post("/registry/update-card", card),
        )
        .await
        .expect("a publishing request never waits for subscribers");
        reply.expect(200);
    }
}

/// Reads whatever `stream` still delivers until it ends; panics if it stays open.
async fn read_to_end(stream: &mut TcpStream) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = tokio::time::timeout(READ_DEADLINE, stream.read(&mut buffer))
            .await
            .expect("the connection ends rather than hangs");
        match read {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

async fn stopping_the_host_does_not_wait_for_clients_that_stopped_reading(backend: DbBackend) {
    let mut app = TestApp::spawn_with(backend, |c| c.shutdown_grace_secs = 1).await;
    let id = app.create_workspace("Chatty", None).await;
    let admin = bearer(ADMIN_TOKEN);
    // A WebSocket client and a raw SSE client, both with small receive buffers, that never read.
    let ws = ws_connect_with(
        &app,
        "/ws",
        &[("authorization", admin.as_str())],
        Some(16 * 1024),
    )
    .await
    .expect("websocket client connects");
    let socket = TcpSocket::new_v4().expect("a socket");
    socket
        .set_recv_buffer_size(16 * 1024)
        .expect("setting SO_RCVBUF");
    let mut sse = socket.connect(app.addr).await.expect("connecting");
    let request = format!(
        "GET /workspaces/{id}/events/stream HTTP/1.1\r\nHost: {}\r\nAuthorization: {admin}\r\n\r\n",
        app.addr
    );
    sse.write_all(request.as_bytes())
        .await
        .expect("sending the SSE request");
    // Once the ping arrived the subscription exists; from here on the client does not read.
    let mut head = vec![0u8; 4096];
    let mut seen = String::new();
    while !seen.contains(": ping") {
        let n = tokio::time::timeout(READ_DEADLINE, sse.read(&mut head))
            .await
            .expect("the SSE head arrives")
            .expect("readable");
        assert!(n > 0, "the SSE stream ended early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&head[..n]));
    }
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");

    // Far more than both sockets buffer: the host's writes to both clients block.
    flood(&app, &id, 800, 16 * 1024).await;

    let stopped = tokio::time::timeout(Duration::from_secs(6), app.stop()).await;
    assert!(
        matches!(stopped, Ok(Ok(()))),
        "stop waited for clients that do not read beyond its grace period: {stopped:?}"
    );
    // Both connections end for the clients once they read again.
    read_to_end(&mut sse).await;
    let mut ws = ws;
    loop {
        let next = tokio::time::timeout(READ_DEADLINE, ws.next())
            .await
            .expect("the socket ends rather than hangs");
        if !matches!(
            next,
            Some(Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_)))
        ) {
            break;
        }
    }
}

async fn a_slow_subscriber_is_dropped_without_blocking_publishers(backend: DbBackend) {
    // Each event carries 16 KiB; the slow client's socket buffers only hold a few hundred of them
    // (a pinned 16 KiB receive buffer, at most 4 MiB on the host's side), so 800 of them put it far
    // more than the 256-event subscriber buffer behind.
    const EVENTS: usize = 800;
    const PAYLOAD: usize = 16 * 1024;
    let app = TestApp::spawn(backend).await;
    let id = app.create_workspace("Chatty", None).await;
    let admin = bearer(ADMIN_TOKEN);
    let mut slow = ws_connect_with(
        &app,
        "/ws",
        &[("authorization", admin.as_str())],
        Some(16 * 1024),
    )
    .await
    .expect("slow client connects");
    let reader = ws_connect(&app, "/ws", &[("authorization", admin.as_str())])
        .await
        .expect("reading client connects");
    // The reading client drains its socket all along and reports the last sequence number seen.
    let target = id.clone();
    let reading = tokio::spawn(async move {
        let mut reader = reader;
        let mut last = None;
        loop {
            let frame = next_frame(&mut reader).await;
            if frame["event"] == "AGENT_CARD_UPDATED" && frame["workspace_id"] == target.as_str() {
                let seq = frame["payload"]["agent_card"]["seq"]
                    .as_u64()
                    .expect("a seq");
                assert!(
                    last.is_none_or(|l| seq == l + 1),
                    "the reading client missed events"
                );
                last = Some(seq);
                if seq as usize == EVENTS - 1 {
                    return (reader, seq);
                }
            }
        }
    });

    let started = tokio::time::Instant::now();
    flood(&app, &id, EVENTS, PAYLOAD).await;
    let publishing = started.elapsed();
    assert!(
        publishing < Duration::from_secs(60),
        "publishing took {publishing:?}"
    );

    let (mut reader, last) = tokio::time::timeout(Duration::from_secs(60), reading)
        .await
        .expect("the reading client keeps up")
        .expect("the reading task");
    assert_eq!(last as usize, EVENTS - 1);

    // Only now does the slow client read: it finds what its buffers held, then the end.
    let mut received = 0usize;
    let ended = loop {
        let next = tokio::time::timeout(READ_DEADLINE, slow.next())
            .await
            .expect("the slow client's stream ends rather than hangs");
        match next {
            Some(Ok(Message::Text(text))) => {
                let frame: Value = serde_json::from_str(&text).expect("JSON");
                if frame["event"] == "AGENT_CARD_UPDATED" {
                    received += 1;
                }
            }
            Some(Ok(Message::Close(frame))) => break format!("close {frame:?}"),
            Some(Ok(_)) => {}
            Some(Err(err)) => break format!("error {err}"),
            None => break "end of stream".to_owned(),
        }
    };
    assert!(
        received < EVENTS,
        "the slow client got all {received} events and was not dropped ({ended})"
    );

    // The reading client is still served after the slow one was dropped.
    app.patch(&format!("/workspaces/{id}"), json!({ "name": "After" }))
        .await
        .expect(200);
    frame_for(&mut reader, "WORKSPACE_UPDATED", &id).await;
    let _ = reader.close(None).await;
}
