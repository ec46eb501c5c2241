//! The end-to-end harness: a real host (`molecule_host::run`) on `127.0.0.1:0`, a fresh database on
//! the chosen backend, and an HTTP client with one method per verb.

use std::time::Duration;

use molecule_host::Config;
use molecule_host::config::{RuntimeConfig, RuntimeKind};
use molecule_host::store::Backend;
use molecule_host::store::testing::TestDatabase;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use molecule_host::store::Backend as DbBackend;

/// A client of one running host; cheap to clone, with or without a bearer token.
#[derive(Debug, Clone)]
pub struct Api {
    pub base: String,
    pub addr: std::net::SocketAddr,
    pub client: reqwest::Client,
    /// Sent as the bearer on every request when set.
    pub token: Option<String>,
    /// The workspace tokens creation answers handed out (workspaces whose agent the host does
    /// not start get theirs there), so [`Api::register`] can act as their agent. Shared by every
    /// clone of this client.
    pub agent_tokens: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>,
}

/// A running host and the database it owns. Dereferences to its [`Api`] client.
#[allow(missing_debug_implementations)]
pub struct TestApp {
    pub api: Api,
    pub config: Config,
    db: TestDatabase,
    data_dir: tempfile::TempDir,
    stop: CancellationToken,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

/// A response: status and parsed JSON body (`Value::Null` when the body is not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub body: Value,
}

impl Reply {
    /// Reads a response whole: status, headers, text and the text parsed as JSON.
    pub async fn read(response: reqwest::Response) -> Reply {
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body read");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            text,
            body,
        }
    }

    #[track_caller]
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.text
        );
        self.body
    }
}

/// Where `make plugins` puts the components; for specs that need the defaults installed.
pub fn builtin_extensions_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/target/wasm32-wasip2/release")
}

pub mod faults;
pub mod load;
pub mod logs;
pub mod otlp;
pub mod replicas;

/// A port on 127.0.0.1 that is free right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// The admin token test hosts are configured with; [`TestApp`]'s client sends it by default.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// The configuration every test host starts from: the test admin token, the database at
/// `db_url`, `data_dir`, no rate limit to speak of, no default components and runtime `none`.
pub fn base_config(db_url: &str, data_dir: &std::path::Path) -> Config {
    Config {
        admin_token: Some(ADMIN_TOKEN.to_owned().into()),
        database_url: Some(db_url.to_owned().into()),
        data_dir: data_dir.to_path_buf(),
        rate_limit_per_minute: 1_000_000,
        // Specs that need the default components opt in with `with_builtin_extensions`.
        builtin_extensions_dir: None,
        // Specs that need running agents opt in with `process_runtime` or `docker_runtime`.
        runtime: RuntimeConfig {
            kind: RuntimeKind::None,
            ..RuntimeConfig::default()
        },
        ..Config::default()
    }
}

/// The statically linked agent `make agent` builds; the process runtime starts it and the
/// `molecule-agent:dev` image carries the same binary.
pub fn agent_binary() -> std::path::PathBuf {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/x86_64-unknown-linux-gnu/release/molecule-agent");
    assert!(
        path.is_file(),
        "{} is missing: run `make agent` (make test does)",
        path.display()
    );
    path
}

/// The agent image `make image` builds.
pub const AGENT_IMAGE: &str = "molecule-agent:dev";
/// The label every container a test host creates carries, valued with that host's id.
pub const TEST_LABEL: &str = "molecule.test.host";

/// Runtime pacing shared by the runtime specs: fast heartbeats and sweeps.
fn paced(config: &mut Config) {
    config.runtime.heartbeat_interval_secs = 1;
    config.runtime.health_sweep_secs = 1;
    config.runtime.orphan_sweep_secs = 1;
    config.runtime.stop_timeout_secs = 5;
    config.liveness.sweep_interval_secs = 1;
    config.liveness.heartbeat_ttl_secs = 30;
}

/// A host that runs agents as local processes.
pub fn process_runtime(config: &mut Config) {
    config.runtime.kind = RuntimeKind::Process;
    config.runtime.agent_binary = Some(agent_binary());
    paced(config);
}

/// A host that runs agents as containers of [`AGENT_IMAGE`], labelled so this host's cleanup (and
/// its orphan sweep) only ever touches its own. Panics when no Docker engine answers: the runtime
/// specs need one, in CI and everywhere else.
pub fn docker_runtime(config: &mut Config) {
    let engine = std::process::Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", AGENT_IMAGE])
        .output();
    match engine {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "Docker engine or image {AGENT_IMAGE} unavailable ({}): run `make image` (make test does)",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(err) => panic!("the docker CLI cannot run ({err}); the runtime specs need Docker"),
    }
    config.runtime.kind = RuntimeKind::Docker;
    config
        .runtime
        .labels
        .insert(TEST_LABEL.into(), uuid::Uuid::new_v4().to_string());
    paced(config);
}

/// Which runtime a lifecycle spec runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Process,
    Docker,
}

impl Runtime {
    pub fn configure(self, config: &mut Config) {
        match self {
            Runtime::Process => process_runtime(config),
            Runtime::Docker => docker_runtime(config),
        }
    }
}

/// Runs a docker CLI command and returns its stdout (empty on failure).
pub fn docker(args: &[&str]) -> String {
    std::process::Command::new("docker")
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// Removes every container and volume labelled with `host_label`.
fn remove_labelled(host_label: &str) {
    let filter = format!("label={TEST_LABEL}={host_label}");
    let containers = docker(&["ps", "-aq", "--filter", &filter]);
    let containers: Vec<&str> = containers.split_whitespace().collect();
    if !containers.is_empty() {
        let mut args = vec!["rm", "-f", "-v"];
        args.extend(containers);
        docker(&args);
    }
    let volumes = docker(&["volume", "ls", "-q", "--filter", &filter]);
    let volumes: Vec<&str> = volumes.split_whitespace().collect();
    if !volumes.is_empty() {
        let mut args = vec!["volume", "rm", "-f"];
        args.extend(volumes);
        docker(&args);
    }
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, |_| {}).await
    }

    /// Starts a host whose configuration `tweak` may change.
    pub async fn spawn_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Self {
        // What the host does, for a spec that times out to show (see `wait_settled`).
        logs::diagnostics();
        let db = TestDatabase::create(backend).await;
        let data_dir = tempfile::tempdir().expect("creating a data dir");
        let mut config = base_config(&db.url, data_dir.path());
        tweak(&mut config);
        let token = config.admin_token().map(str::to_owned);
        let mut app = TestApp {
            api: Api {
                base: String::new(),
                addr: "127.0.0.1:0".parse().expect("an address"),
                client: reqwest::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .expect("a client"),
                token,
                agent_tokens: Default::default(),
            },
            config,
            db,
            data_dir,
            stop: CancellationToken::new(),
            handle: None,
        };
        app.start().await.expect("host starts");
        app
    }

    async fn start(&mut self) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        self.api.addr = listener.local_addr()?;
        self.api.base = format!("http://{}", self.api.addr);
        self.stop = CancellationToken::new();
        let stop = self.stop.clone();
        let config = self.config.clone();
        self.handle = Some(tokio::spawn(async move {
            molecule_host::run(config, listener, stop.cancelled_owned()).await
        }));
        // Ready once /health answers (the host migrates before it serves).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self
                .api
                .client
                .get(format!("{}/health", self.api.base))
                .send()
                .await
                && r.status().is_success()
            {
                return Ok(());
            }
            if self.handle.as_ref().is_some_and(|h| h.is_finished()) {
                let result = self.handle.take().expect("handle").await?;
                anyhow::bail!("host exited during start: {result:?}");
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "host did not become healthy"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The URL of this test's database, for specs that must look at what is stored.
    pub fn database_url(&self) -> &str {
        &self.db.url
    }

    /// Stops the host gracefully and returns what `run` returned.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.stop.cancel();
        match self.handle.take() {
            Some(handle) => tokio::time::timeout(Duration::from_secs(30), handle).await??,
            None => Ok(()),
        }
    }

    /// Stops the host and starts it again on the same database with a changed configuration.
    pub async fn restart_with(&mut self, tweak: impl FnOnce(&mut Config)) -> anyhow::Result<()> {
        self.stop().await?;
        tweak(&mut self.config);
        self.start().await
    }

    /// Runs the host with this configuration on the same database and returns its result;
    /// for configurations that must be refused at start.
    pub async fn run_once_with(&self, tweak: impl FnOnce(&mut Config)) -> anyhow::Result<()> {
        let mut config = base_config(&self.db.url, self.data_dir.path());
        tweak(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        tokio::time::timeout(
            Duration::from_secs(30),
            molecule_host::run(config, listener, async {}),
        )
        .await?
    }
}

impl TestApp {
    /// Waits until the agent of `id` is online, has heartbeaten, and no restart is running,
    /// due or still scheduled: a restart would otherwise stop it under the test's next request.
    /// A running cycle holds a claim (`workspace_restarts`) until the cycle a request during it
    /// made due has run too; a restart the policy delayed (`restart_after_ms(n)`) waits in the
    /// host until its time, so the wait also covers the latest such time the `restart_decision`
    /// rows name (and a moment for its cycle to claim).
    pub async fn wait_settled(&self, id: &str, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let row = self.get(&format!("/workspaces/{id}")).await.body;
            let up = row["status"] == "online" && !row["last_heartbeat_at"].is_null();
            let scheduled = self.last_scheduled_restart(id).await;
            let settled =
                scheduled.is_none_or(|at| chrono::Utc::now() > at + Duration::from_millis(500));
            let claimed = restart_claimed(self.database_url(), id).await;
            if up && settled && !claimed {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                // What the workspace showed, so a timeout in a loaded run explains itself.
                let recent: Vec<String> = self
                    .activity(id, "?limit=30")
                    .await
                    .iter()
                    .map(|a| {
                        format!(
                            "{} {} {} {}",
                            a["created_at"].as_str().unwrap_or_default(),
                            a["activity_type"].as_str().unwrap_or_default(),
                            a["status"].as_str().unwrap_or_default(),
                            a["summary"].as_str().unwrap_or_default()
                        )
                    })
                    .collect();
                // A process agent's own output (none for other runtimes).
                let log = std::fs::read_to_string(
                    self.data_dir()
                        .join("workspaces")
                        .join(id)
                        .join("agent.log"),
                )
                .unwrap_or_default();
                let log_tail: Vec<&str> = log.lines().rev().take(20).collect();
                panic!(
                    "workspace {id} not settled within {timeout:?}: status {}, last heartbeat {}, \
                     last error {}, restart due {scheduled:?}, restart claimed {claimed}; \
                     newest activity first:\n{}\nagent log, newest line first:\n{}\n\
                     database sessions not idle:\n{}\nhost log about it, oldest first:\n{}",
                    row["status"],
                    row["last_heartbeat_at"],
                    row["last_sample_error"],
                    recent.join("\n"),
                    log_tail.join("\n"),
                    busy_sessions(self.database_url()).await.join("\n"),
                    logs::diagnostics().mentioning(id, 60).join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The latest time a delayed restart decision of `id` was due.
    async fn last_scheduled_restart(&self, id: &str) -> Option<chrono::DateTime<chrono::Utc>> {
        let decisions = self.activity(id, "?type=restart_decision&limit=50").await;
        decisions
            .iter()
            .filter_map(|row| {
                let ms: i64 = row["summary"]
                    .as_str()?
                    .strip_prefix("restart policy: restart_after_ms(")?
                    .strip_suffix(')')?
                    .parse()
                    .ok()?;
                let at = chrono::DateTime::parse_from_rfc3339(row["created_at"].as_str()?).ok()?;
                Some(at.to_utc() + chrono::Duration::milliseconds(ms))
            })
            .max()
    }

    /// The host's data directory (the process runtime keeps agents' files under it).
    pub fn data_dir(&self) -> &std::path::Path {
        self.data_dir.path()
    }
}

impl std::ops::Deref for TestApp {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Api {
    /// A client of the host at `addr` calling with `token` as the bearer, each request given
    /// `timeout`.
    pub fn at(addr: std::net::SocketAddr, token: Option<&str>, timeout: Duration) -> Api {
        Api {
            base: format!("http://{addr}"),
            addr,
            client: reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .expect("a client"),
            token: token.map(str::to_owned),
            agent_tokens: Default::default(),
        }
    }

    /// The same host, calling without any bearer.
    pub fn anonymous(&self) -> Api {
        Api {
            token: None,
            ..self.clone()
        }
    }

    /// The same host, calling with `token` as the bearer.
    pub fn with_token(&self, token: &str) -> Api {
        Api {
            token: Some(token.to_owned()),
            ..self.clone()
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// A request with the app's bearer (if any) and extra headers.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        Reply::read(request.send().await.expect("request sent")).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, None, &[]).await
    }
    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(body), &[]).await
    }
    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.call(Method::PUT, path, Some(body), &[]).await
    }
    pub async fn patch(&self, path: &str, body: Value) -> Reply {
        self.call(Method::PATCH, path, Some(body), &[]).await
    }
    pub async fn delete(&self, path: &str) -> Reply {
        self.call(Method::DELETE, path, None, &[]).await
    }

    /// Creates a workspace and returns its id (remembering the token its creation answer
    /// carries, for [`Api::register`]).
    pub async fn create_workspace(&self, name: &str, parent: Option<&str>) -> String {
        let mut body = serde_json::json!({ "name": name });
        if let Some(parent) = parent {
            body["parent_id"] = Value::String(parent.to_owned());
        }
        let created = self.post("/workspaces", body).await.expect(201);
        let id = created["id"].as_str().expect("an id").to_owned();
        self.remember_agent_token(&created);
        id
    }

    /// Creates an external workspace (under `parent`, if given) and returns its id with the
    /// credential its creation answer shows once.
    pub async fn create_external(&self, name: &str, parent: Option<&str>) -> (String, String) {
        let mut body = serde_json::json!({ "name": name, "external": true });
        if let Some(parent) = parent {
            body["parent_id"] = Value::String(parent.to_owned());
        }
        let created = self.post("/workspaces", body).await.expect(201);
        let id = created["id"].as_str().expect("an id").to_owned();
        let token = created["connection"]["auth_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no credential at creation: {created}"))
            .to_owned();
        (id, token)
    }

    /// `POST /workspaces/{id}/chat/uploads` with a multipart `form`, with the app's bearer.
    pub async fn upload_chat_files(&self, id: &str, form: reqwest::multipart::Form) -> Reply {
        let mut request = self
            .client
            .post(self.url(&format!("/workspaces/{id}/chat/uploads")))
            .multipart(form);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        Reply::read(request.send().await.expect("the upload is sent")).await
    }

    /// Remembers the workspace token a creation answer carries (`connection.auth_token`).
    pub fn remember_agent_token(&self, created: &Value) {
        if let (Some(id), Some(token)) = (
            created["id"].as_str(),
            created["connection"]["auth_token"].as_str(),
        ) {
            self.agent_tokens
                .lock()
                .expect("agent tokens")
                .insert(id.to_owned(), token.to_owned());
        }
    }

    /// The token the agent of `id` holds: the one its creation answer carried, else one this
    /// client (the operator) mints for it.
    pub async fn agent_token(&self, id: &str) -> String {
        let known = self
            .agent_tokens
            .lock()
            .expect("agent tokens")
            .get(id)
            .cloned();
        match known {
            Some(token) => token,
            None => {
                let minted = self
                    .post(&format!("/workspaces/{id}/tokens"), serde_json::json!({}))
                    .await
                    .expect(201);
                let token = minted["auth_token"].as_str().expect("a token").to_owned();
                self.agent_tokens
                    .lock()
                    .expect("agent tokens")
                    .insert(id.to_owned(), token.clone());
                token
            }
        }
    }

    /// Registers the agent of `id` as that agent would, with its own token, and returns the
    /// token.
    pub async fn register(&self, id: &str) -> Option<String> {
        let token = self.agent_token(id).await;
        let body = serde_json::json!({
            "id": id,
            "url": "http://127.0.0.1:9/a2a",
            "agent_card": { "name": "agent", "skills": [] },
        });
        self.with_token(&token)
            .post("/registry/register", body)
            .await
            .expect(200);
        Some(token)
    }
}

/// Whether the workspace has restart cycles running or due (a claim in `workspace_restarts`),
/// read from the database at `database_url`: a spec that acts on a running agent waits until
/// none is.
pub async fn restart_claimed(database_url: &str, id: &str) -> bool {
    let db = molecule_host::store::Db::connect(database_url, 1)
        .await
        .expect("the test database");
    let id: uuid::Uuid = id.parse().expect("a workspace id");
    let claimed = molecule_host::store::restarts::claimed(&db, id)
        .await
        .expect("reading restart claims");
    db.close().await;
    claimed
}

/// On PostgreSQL, what every other session of the test database is doing unless idle (a
/// statement waiting for a lock, a transaction left open), for a timeout's message; nothing on
/// SQLite.
pub async fn busy_sessions(database_url: &str) -> Vec<String> {
    if !database_url.starts_with("postgres") {
        return Vec::new();
    }
    let Ok(mut conn) = <sqlx::PgConnection as sqlx::Connection>::connect(database_url).await else {
        return vec!["(could not connect to list them)".to_owned()];
    };
    let rows: Vec<SessionRow> = sqlx::query_as(
        "SELECT pid, state, wait_event_type, wait_event,
                    EXTRACT(EPOCH FROM now() - xact_start)::float8, left(query, 300)
             FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()
               AND state IS DISTINCT FROM 'idle'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap_or_default();
    rows.into_iter()
        .map(|(pid, state, wait_type, wait, age, query)| {
            format!(
                "pid {pid} {} waiting on {}:{} for {:.1} s in its transaction: {}",
                state.unwrap_or_default(),
                wait_type.unwrap_or_default(),
                wait.unwrap_or_default(),
                age.unwrap_or_default(),
                query.unwrap_or_default().replace('\n', " ")
            )
        })
        .collect()
}

/// A row of `pg_stat_activity` as [`busy_sessions`] reads it: pid, state, wait event type and
/// name, seconds in the transaction, the last statement.
type SessionRow = (
    i32,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<f64>,
    Option<String>,
);

/// Polls `check` until it returns `Some`, or panics after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
        // Containers outlive a host by design; a test's must not outlive the test.
        if let Some(label) = self.config.runtime.labels.get(TEST_LABEL) {
            remove_labelled(label);
        }
    }
}

/// Defines one test per runtime from `async fn name(runtime: Runtime, backend: Backend)`: the
/// process runtime on SQLite (the zero-setup default) and Docker on PostgreSQL (production).
#[macro_export]
macro_rules! on_both_runtimes {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn process() {
                    super::$name($crate::Runtime::Process, $crate::DbBackend::Sqlite).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn docker() {
                    super::$name($crate::Runtime::Docker, $crate::DbBackend::Postgres).await;
                }
            }
        )+
    };
}

/// Defines one test per backend from `async fn name(backend: Backend)`:
/// `on_both_backends!(creates_a_workspace);` gives `creates_a_workspace::sqlite` and `::postgres`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::DbBackend::Sqlite).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::DbBackend::Postgres).await;
                }
            }
        )+
    };
}

/// Runs git with no user or system configuration (tests build their upstream repositories).
pub fn git(cwd: &std::path::Path, args: &[&str]) {
    let status = std::process::Command::new("git")
        .args(args)
        .current_dir(cwd)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .status()
        .expect("git runs");
    assert!(status.success(), "git {args:?}");
}

/// Makes the host's git fetch `https://github.com/<path>` from `file://<root>/<path>`: the
/// resolvers and the host's git side run for real against local bare repositories.
pub fn serve_github_from(config: &mut Config, root: &std::path::Path) {
    let rewrite = format!("file://{}/", root.display());
    config.git_allowed_protocols = Some("https:file".into());
    config.git_env = [
        ("GIT_CONFIG_COUNT".to_owned(), "1".to_owned()),
        (
            "GIT_CONFIG_KEY_0".to_owned(),
            format!("url.{rewrite}.insteadOf"),
        ),
        (
            "GIT_CONFIG_VALUE_0".to_owned(),
            "https://github.com/".to_owned(),
        ),
    ]
    .into_iter()
    .collect();
}

/// A work repository with `files` committed and tagged `v1`, and its bare clone at
/// `<root>/<repo>.git` (set as the work repository's `origin`), which
/// [`serve_github_from`]`(config, root)` serves as `https://github.com/<repo>.git`. Returns the
/// work repository.
pub fn upstream_repo(
    root: &std::path::Path,
    repo: &str,
    files: &[(&str, &str)],
) -> std::path::PathBuf {
    let work = root.join(format!("{}.work", repo.replace('/', "__")));
    for (path, content) in files {
        write_file(&work, path, content);
    }
    git(&work, &["init", "-q", "-b", "main"]);
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "v1"]);
    git(&work, &["tag", "v1"]);
    let bare = root.join(format!("{repo}.git"));
    let (work_str, bare_str) = (work.to_str().expect("utf-8"), bare.to_str().expect("utf-8"));
    git(root, &["clone", "-q", "--bare", work_str, bare_str]);
    git(&work, &["remote", "add", "origin", bare_str]);
    work
}

/// Writes `content` to `root/rel`, creating parent directories (template and plugin fixtures).
pub fn write_file(root: &std::path::Path, rel: &str, content: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("creating a directory");
    std::fs::write(path, content).expect("writing a file");
}

impl Api {
    /// `GET /workspaces`, expecting 200: every workspace the caller may list.
    pub async fn workspaces(&self) -> Vec<Value> {
        self.get("/workspaces")
            .await
            .expect(200)
            .as_array()
            .expect("a list")
            .clone()
    }

    /// `GET /workspaces/:id/activity<query>` (`query` empty or `?type=...&...`), expecting 200.
    pub async fn activity(&self, id: &str, query: &str) -> Vec<Value> {
        self.get(&format!("/workspaces/{id}/activity{query}"))
            .await
            .expect(200)
            .as_array()
            .expect("a list")
            .clone()
    }

    /// How many restart cycles the workspace has been through (its `restart` activity rows).
    pub async fn restart_count(&self, id: &str) -> usize {
        self.get(&format!("/workspaces/{id}/activity?type=restart&limit=500"))
            .await
            .expect(200)
            .as_array()
            .map_or(0, Vec::len)
    }
}

/// How a [`FaultAgent`] answers one request (numbered from 0).
#[derive(Debug, Clone)]
pub enum Fault {
    /// A complete JSON-RPC answer whose text is `echo: <the message text>`.
    Answer,
    /// `200` headers that promise more, part of the answer, then a connection reset.
    PartialThenReset,
    /// This status with this body.
    Status(u16, String),
    /// Waits this long, then answers like [`Fault::Answer`].
    Slow(Duration),
    /// Reads the request and closes the connection without an answer: what the host reads as
    /// a busy agent.
    Close,
    /// `200` with a JSON content type and a body that is not JSON at all.
    Garbage,
}

/// Each request a [`FaultAgent`] received: its JSON body and `traceparent` header.
type Received = std::sync::Arc<std::sync::Mutex<Vec<(Value, Option<String>)>>>;

/// An A2A agent on `127.0.0.1` that misbehaves on purpose, speaking raw HTTP/1.1 so it can break
/// off a response halfway. `script(n)` says how to answer request `n`; every request body is kept.
#[derive(Debug, Clone)]
pub struct FaultAgent {
    pub url: String,
    requests: Received,
    stop: CancellationToken,
}

impl FaultAgent {
    pub async fn start(script: impl Fn(usize) -> Fault + Send + Sync + 'static) -> Self {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding a fault agent");
        let url = format!("http://{}", listener.local_addr().expect("an address"));
        let requests = Received::default();
        let stop = CancellationToken::new();
        let script = std::sync::Arc::new(script);
        let (seen, stopped) = (requests.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let mut stream = tokio::select! {
                    () = stopped.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => continue,
                    },
                };
                let (seen, script) = (seen.clone(), script.clone());
                tokio::spawn(async move {
                    // One request per connection: read the head, then Content-Length bytes.
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 8192];
                    let (body, traceparent) = loop {
                        let Ok(n) = stream.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let length: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + length {
                            let traceparent = head
                                .lines()
                                .find_map(|l| l.strip_prefix("traceparent:"))
                                .map(|v| v.trim().to_owned());
                            break (buf[end + 4..end + 4 + length].to_vec(), traceparent);
                        }
                    };
                    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let n = {
                        let mut seen = seen.lock().expect("requests");
                        seen.push((request.clone(), traceparent));
                        seen.len() - 1
                    };
                    let text = request
                        .pointer("/params/message/parts/0/text")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    let answer = serde_json::json!({
                        "jsonrpc": "2.0",
                        "id": request.get("id").cloned().unwrap_or(Value::Null),
                        "result": { "kind": "message", "role": "agent",
                            "parts": [{ "kind": "text", "text": format!("echo: {text}") }] },
                    })
                    .to_string();
                    let respond = |status: u16, body: &str| {
                        format!(
                            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                    };
                    let out = match script(n) {
                        Fault::Close => return,
                        Fault::Answer => respond(200, &answer),
                        Fault::Slow(delay) => {
                            tokio::time::sleep(delay).await;
                            respond(200, &answer)
                        }
                        Fault::Status(status, body) => respond(status, &body),
                        Fault::Garbage => respond(200, "<html>\u{0}\u{7f} not an answer"),
                        Fault::PartialThenReset => {
                            let head = format!(
                                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                                answer.len() + 100
                            );
                            let _ = stream.write_all(head.as_bytes()).await;
                            let _ = stream
                                .write_all(&answer.as_bytes()[..answer.len() / 2])
                                .await;
                            let _ = stream.flush().await;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            // SO_LINGER 0: closing sends a reset instead of a clean end.
                            let _ = stream.set_zero_linger();
                            return;
                        }
                    };
                    let _ = stream.write_all(out.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        FaultAgent {
            url,
            requests,
            stop,
        }
    }

    /// The JSON bodies received so far, in order.
    pub fn requests(&self) -> Vec<Value> {
        let requests = self.requests.lock().expect("requests");
        requests.iter().map(|(body, _)| body.clone()).collect()
    }

    /// The `traceparent` header of each request received so far, in order.
    pub fn traceparents(&self) -> Vec<Option<String>> {
        let requests = self.requests.lock().expect("requests");
        requests.iter().map(|(_, t)| t.clone()).collect()
    }
}

impl Drop for FaultAgent {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Api {
    /// Creates a workspace and registers an agent at `url` for it; returns the id and the
    /// workspace token minted at registration.
    pub async fn workspace_at(
        &self,
        name: &str,
        parent: Option<&str>,
        url: &str,
    ) -> (String, String) {
        let id = self.create_workspace(name, parent).await;
        let token = self.agent_token(&id).await;
        let body = serde_json::json!({ "id": id, "url": url, "agent_card": { "name": name, "skills": [] } });
        self.with_token(&token)
            .post("/registry/register", body)
            .await
            .expect(200);
        (id, token)
    }

    /// Opens the canvas event stream (`/ws` with this client's bearer).
    pub async fn events(&self) -> EventStream {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
        let mut request = self
            .ws_url("/ws")
            .into_client_request()
            .expect("a websocket request");
        if let Some(token) = &self.token {
            request.headers_mut().insert(
                "authorization",
                format!("Bearer {token}").parse().expect("a header value"),
            );
        }
        let (ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("the event stream opens");
        EventStream(ws)
    }
}

/// The canvas's view of the event bus: every frame, in order.
#[allow(missing_debug_implementations)]
pub struct EventStream(
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
);

impl EventStream {
    /// The next event frame (`{event, workspace_id, timestamp, payload}`); panics after 30 s.
    pub async fn next(&mut self) -> Value {
        use futures::StreamExt as _;
        use tokio_tungstenite::tungstenite::Message;
        loop {
            let message = tokio::time::timeout(Duration::from_secs(30), self.0.next())
                .await
                .expect("an event within 30 s")
                .expect("the stream is open")
                .expect("a readable frame");
            if let Message::Text(text) = message {
                return serde_json::from_str(&text).expect("a JSON frame");
            }
        }
    }

    /// Reads until `event` arrives and returns the names of every event read, that one last.
    pub async fn until(&mut self, event: &str) -> Vec<(String, Value)> {
        let mut seen = Vec::new();
        loop {
            let frame = self.next().await;
            let name = frame["event"].as_str().unwrap_or_default().to_owned();
            let done = name == event;
            seen.push((name, frame));
            if done {
                return seen;
            }
        }
    }
}

/// The first 12 characters of a workspace id, as in container names (`ws-<id12>`).
pub fn id12(id: &str) -> &str {
    &id[..12]
}

/// The pid of a workspace's agent on the process runtime, from its pid file.
pub fn agent_pid(app: &TestApp, id: &str) -> String {
    std::fs::read_to_string(app.data_dir().join(format!("workspaces/{id}/agent.pid")))
        .expect("a pid file")
        .trim()
        .to_owned()
}

/// Kills the agent the hard way (SIGKILL), as a crash would, and returns once it is dead: a
/// signal is delivered asynchronously, and a process closes its sockets before its exit can be
/// observed, so a spec acting at once could find the agent refusing connections while its
/// runtime still reports it running (a dying agent, not the dead one the spec means).
pub fn kill_agent(app: &TestApp, runtime: Runtime, id: &str) {
    let dead: Box<dyn Fn() -> bool> = match runtime {
        Runtime::Docker => {
            let name = format!("ws-{}", id12(id));
            // By id: a restart may remove the container and create another of the same name.
            let container = docker(&["inspect", "-f", "{{.Id}}", &name]);
            docker(&["kill", &name]);
            Box::new(move || docker(&["inspect", "-f", "{{.State.Running}}", &container]) != "true")
        }
        Runtime::Process => {
            let pid = agent_pid(app, id);
            let status = std::process::Command::new("kill")
                .args(["-9", &pid])
                .status()
                .expect("kill runs");
            assert!(status.success());
            // Gone, or a zombie waiting for the host to reap it (state `Z`, after the name).
            Box::new(move || {
                std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
                    stat.rsplit_once(')')
                        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
                })
            })
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !dead() {
        assert!(
            std::time::Instant::now() < deadline,
            "the killed agent of {id} is still running after 30 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
