//! Test harness: a fake platform (register + heartbeat) and a fake OpenAI endpoint served by
//! axum on 127.0.0.1, and [`TestAgent`], a real agent started through `molecule_agent::run`.
#![allow(dead_code)] // Each test file uses a different part of the harness.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use molecule_agent::config::{BaseUrl, Config};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Polls `check` every 20 ms until it yields a value, failing the test after 10 s.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One request the fake platform received.
#[derive(Debug, Clone)]
pub struct Received {
    pub bearer: Option<String>,
    pub body: Value,
    pub status: StatusCode,
    pub at: tokio::time::Instant,
}

type RegisterHook = dyn Fn(usize) -> (StatusCode, Value) + Send + Sync;
type HeartbeatHook = dyn Fn(Option<&str>) -> StatusCode + Send + Sync;

struct PlatformState {
    registrations: Mutex<Vec<Received>>,
    heartbeats: Mutex<Vec<Received>>,
    activities: Mutex<Vec<Received>>,
    on_register: Box<RegisterHook>,
    on_heartbeat: Box<HeartbeatHook>,
}

/// The host's registry endpoints, recording every call.
pub struct FakePlatform {
    pub url: BaseUrl,
    state: Arc<PlatformState>,
    shutdown: CancellationToken,
}

impl FakePlatform {
    /// Accepts every registration (issuing no token) and every heartbeat.
    pub async fn start() -> Self {
        Self::with(
            |_| (StatusCode::OK, json!({ "status": "registered" })),
            |_| StatusCode::OK,
        )
        .await
    }

    /// `on_register` gets the 0-based attempt number; `on_heartbeat` the bearer.
    pub async fn with(
        on_register: impl Fn(usize) -> (StatusCode, Value) + Send + Sync + 'static,
        on_heartbeat: impl Fn(Option<&str>) -> StatusCode + Send + Sync + 'static,
    ) -> Self {
        let state = Arc::new(PlatformState {
            registrations: Mutex::default(),
            heartbeats: Mutex::default(),
            activities: Mutex::default(),
            on_register: Box::new(on_register),
            on_heartbeat: Box::new(on_heartbeat),
        });
        let app = axum::Router::new()
            .route("/registry/register", post(register))
            .route("/registry/heartbeat", post(heartbeat))
            .route("/workspaces/{id}/activity", post(activity))
            .with_state(state.clone());
        let (url, shutdown) = serve(app).await;
        Self {
            url: BaseUrl::parse(&url).unwrap(),
            state,
            shutdown,
        }
    }

    pub fn registrations(&self) -> Vec<Received> {
        self.state.registrations.lock().unwrap().clone()
    }

    pub fn heartbeats(&self) -> Vec<Received> {
        self.state.heartbeats.lock().unwrap().clone()
    }

    /// The activity rows reported so far.
    pub fn activities(&self) -> Vec<Received> {
        self.state.activities.lock().unwrap().clone()
    }

    pub async fn first_registration(&self) -> Received {
        eventually("a registration", || async {
            self.registrations()
                .into_iter()
                .find(|r| r.status == StatusCode::OK)
        })
        .await
    }

    /// Waits for an accepted heartbeat that satisfies `pred`.
    pub async fn heartbeat_where(&self, what: &str, pred: impl Fn(&Received) -> bool) -> Received {
        eventually(what, || async {
            self.heartbeats()
                .into_iter()
                .find(|h| h.status == StatusCode::OK && pred(h))
        })
        .await
    }
}

impl Drop for FakePlatform {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::to_owned)
}

async fn register(
    axum::extract::State(state): axum::extract::State<Arc<PlatformState>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let attempt = state.registrations.lock().unwrap().len();
    let (status, reply) = (state.on_register)(attempt);
    state.registrations.lock().unwrap().push(Received {
        bearer: bearer(&headers),
        body,
        status,
        at: tokio::time::Instant::now(),
    });
    (status, Json(reply))
}

async fn heartbeat(
    axum::extract::State(state): axum::extract::State<Arc<PlatformState>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let bearer = bearer(&headers);
    let status = (state.on_heartbeat)(bearer.as_deref());
    state.heartbeats.lock().unwrap().push(Received {
        bearer,
        body,
        status,
        at: tokio::time::Instant::now(),
    });
    (status, Json(json!({ "status": "ok" })))
}

async fn activity(
    axum::extract::State(state): axum::extract::State<Arc<PlatformState>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    state.activities.lock().unwrap().push(Received {
        bearer: bearer(&headers),
        body,
        status: StatusCode::OK,
        at: tokio::time::Instant::now(),
    });
    (StatusCode::OK, Json(json!({ "status": "logged" })))
}

/// Serves `app` on 127.0.0.1; returns its base URL and a token that stops it.
pub async fn serve(app: axum::Router) -> (String, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
            .unwrap();
    });
    (url, shutdown)
}

/// What a fake OpenAI endpoint received.
pub struct FakeOpenAi {
    pub base_url: BaseUrl,
    requests: Arc<Mutex<Vec<Received>>>,
    shutdown: CancellationToken,
}

impl FakeOpenAi {
    /// Answers `/v1/chat/completions` with `status` and a fixed completion.
    pub async fn start(status: StatusCode) -> Self {
        let requests: Arc<Mutex<Vec<Received>>> = Arc::default();
        let recorded = requests.clone();
        let app = axum::Router::new().route(
            "/v1/chat/completions",
            post(move |headers: HeaderMap, Json(body): Json<Value>| async move {
                recorded.lock().unwrap().push(Received {
                    bearer: bearer(&headers),
                    body,
                    status,
                    at: tokio::time::Instant::now(),
                });
                let reply = if status.is_success() {
                    json!({ "model": "gpt-test-0613",
                        "choices": [{ "message": { "role": "assistant", "content": "from the model" } }],
                        "usage": { "prompt_tokens": 120, "completion_tokens": 8, "total_tokens": 128 } })
                } else {
                    json!({ "error": { "message": "Incorrect API key provided: sk-***" } })
                };
                (status, Json(reply))
            }),
        );
        let (url, shutdown) = serve(app).await;
        Self {
            base_url: BaseUrl::parse(&format!("{url}/v1")).unwrap(),
            requests,
            shutdown,
        }
    }

    pub fn requests(&self) -> Vec<Received> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for FakeOpenAi {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A running agent with its own config dir.
pub struct TestAgent {
    pub url: String,
    pub id: Uuid,
    pub dir: tempfile::TempDir,
    http: reqwest::Client,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

/// How to start a [`TestAgent`].
pub struct AgentSetup {
    dir: Option<tempfile::TempDir>,
    files: Vec<(PathBuf, String)>,
    configure: Box<dyn FnOnce(&mut Config)>,
}

pub fn agent() -> AgentSetup {
    AgentSetup {
        dir: None,
        files: Vec::new(),
        configure: Box::new(|_| {}),
    }
}

impl AgentSetup {
    /// Uses `dir` as the config dir (when a fake needs its path before the agent starts).
    pub fn dir(mut self, dir: tempfile::TempDir) -> Self {
        self.dir = Some(dir);
        self
    }

    /// Writes `text` to `path` (relative to the config dir) before the agent starts.
    pub fn file(mut self, path: &str, text: &str) -> Self {
        self.files.push((path.into(), text.into()));
        self
    }

    pub fn configure(mut self, f: impl FnOnce(&mut Config) + 'static) -> Self {
        self.configure = Box::new(f);
        self
    }

    pub async fn start(self, platform: &FakePlatform) -> TestAgent {
        let dir = self.dir.unwrap_or_else(|| tempfile::tempdir().unwrap());
        for (path, text) in &self.files {
            write(&dir.path().join(path), text);
        }
        let id = Uuid::new_v4();
        let mut config = Config::new(id, dir.path().to_owned(), platform.url.clone());
        config.heartbeat_interval = Duration::from_millis(100);
        (self.configure)(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(molecule_agent::run(config, listener, shutdown.clone()));
        TestAgent {
            url,
            id,
            dir,
            http: reqwest::Client::new(),
            shutdown,
            task,
        }
    }
}

pub fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

impl TestAgent {
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, text: &str) {
        write(&self.path(rel), text);
    }

    /// POSTs a raw body to `/`; returns the status and the JSON reply.
    pub async fn rpc_raw(&self, body: impl Into<reqwest::Body>) -> (StatusCode, Value) {
        let response = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    /// Sends `message/send` with one text part; returns the whole JSON-RPC reply.
    pub async fn send(&self, text: &str) -> Value {
        let request = json!({
            "jsonrpc": "2.0",
            "id": 7,
            "method": "message/send",
            "params": { "message": {
                "role": "user",
                "messageId": Uuid::new_v4(),
                "parts": [{ "kind": "text", "text": text }],
            }},
        });
        let (status, reply) = self.rpc_raw(request.to_string()).await;
        assert_eq!(status, StatusCode::OK);
        reply
    }

    /// The text of a successful `message/send` reply.
    pub async fn reply_text(&self, text: &str) -> String {
        let reply = self.send(text).await;
        reply["result"]["parts"][0]["text"]
            .as_str()
            .unwrap_or_else(|| panic!("no reply text in {reply}"))
            .to_owned()
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    pub async fn card(&self) -> Value {
        let (status, card) = self.get("/.well-known/agent.json").await;
        assert_eq!(status, StatusCode::OK);
        card
    }

    /// Starts shutdown without waiting for it.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Shuts down and returns what `run` returned.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await.unwrap()
    }

    /// Waits for `run` to return without cancelling it (it failed on its own).
    pub async fn exit(self) -> anyhow::Result<()> {
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the agent exits")
            .unwrap()
    }
}
