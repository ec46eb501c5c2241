//! Typed, layered configuration: defaults, then an optional TOML file, then the environment.
//!
//! This is the only module that reads environment variables. Everything below `run` receives a
//! `Config` value; tests build one directly instead of setting variables.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use figment::Figment;
use figment::providers::{Env, Format as _, Serialized, Toml};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Deserializer, Serialize};

pub mod faults;
pub use faults::Faults;

/// Deployment environment, from `MOLECULE_ENV`.
///
/// `development`/`dev` (any case) opens the development doors (fail-open auth when no admin
/// token is set, no rate limit); `production`/`prod` closes every test-only door and refuses to
/// start without an encryption key. Anything else is the ordinary self-hosted default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Development,
    #[default]
    Default,
    Production,
}

impl Environment {
    pub fn parse(raw: &str) -> Self {
        match raw.trim().to_ascii_lowercase().as_str() {
            "development" | "dev" => Self::Development,
            "production" | "prod" => Self::Production,
            _ => Self::Default,
        }
    }
}

impl<'de> Deserialize<'de> for Environment {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Ok(Self::parse(&raw))
    }
}

/// Liveness: how long a workspace may go without a heartbeat, and how often that is checked.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LivenessConfig {
    /// Seconds without a heartbeat after which an online workspace is marked offline.
    pub heartbeat_ttl_secs: u64,
    /// Seconds between liveness sweeps.
    pub sweep_interval_secs: u64,
}

impl Default for LivenessConfig {
    fn default() -> Self {
        Self {
            heartbeat_ttl_secs: 180,
            sweep_interval_secs: 15,
        }
    }
}

impl LivenessConfig {
    pub fn heartbeat_ttl(&self) -> Duration {
        Duration::from_secs(self.heartbeat_ttl_secs)
    }
    pub fn sweep_interval(&self) -> Duration {
        Duration::from_millis((self.sweep_interval_secs * 1000).max(100))
    }
}

/// The whole host configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `MOLECULE_ENV` (or the original's `MOLECULE_ENV`).
    pub env: Environment,
    /// Address to listen on: `host` or `host:port` (`BIND_ADDR`, `MOLECULE_BIND_ADDR`).
    pub bind_addr: String,
    /// Port used when `bind_addr` carries none (`PORT`, `MOLECULE_PORT`).
    pub port: u16,
    /// Where the embedded database and other host state live.
    pub data_dir: PathBuf,
    /// `sqlite://...` or `postgres://...`; defaults to a SQLite file under `data_dir`.
    #[serde(skip_serializing)]
    pub database_url: Option<SecretString>,
    /// Upper bound of pooled database connections.
    pub database_max_connections: u32,
    /// `ADMIN_TOKEN`: the operator's bearer for admin routes.
    #[serde(skip_serializing)]
    pub admin_token: Option<SecretString>,
    /// `SECRETS_ENCRYPTION_KEY`: base64 of 32 bytes, or a raw 32-character string.
    #[serde(skip_serializing)]
    pub secrets_encryption_key: Option<SecretString>,
    /// `CORS_ORIGINS`: comma-separated list of allowed browser origins.
    #[serde(deserialize_with = "comma_list")]
    pub cors_origins: Vec<String>,
    /// `MOLECULE_ENABLE_TEST_TOKENS=1` opens the test-token route outside development (it
    /// still demands admin credentials there).
    #[serde(deserialize_with = "loose_bool")]
    pub enable_test_tokens: bool,
    /// Seconds a workspace token minted through the API lives (`POST /workspaces/:id/tokens`,
    /// the test-token route). The tokens the host writes for its own agents are rotated at
    /// every provision instead.
    pub workspace_token_ttl_secs: u64,
    /// `RATE_LIMIT`: requests per minute per client (per live token; per address without one).
    pub rate_limit_per_minute: u32,
    /// Reverse proxies (IP addresses or CIDR blocks) whose `X-Forwarded-For` names the client;
    /// from anyone else the header is ignored. Empty: the TCP peer is always the client.
    #[serde(deserialize_with = "comma_list")]
    pub trusted_proxies: Vec<String>,
    /// Largest request body accepted on any route, in bytes.
    pub max_body_bytes: usize,
    /// The longest (milliseconds) a replica trusts what it keeps in memory of the database (the
    /// A2A routing table, live tokens) without reading it again. Changes announced on the event
    /// bus (statuses, URLs, revoked tokens) are seen at once, on every replica; this bounds how
    /// long any other change can go unseen.
    pub cache_revalidate_ms: u64,
    /// Seconds a shutdown waits for open connections (requests in flight, live streams whose
    /// client stopped reading) before the host stops without them.
    pub shutdown_grace_secs: u64,
    pub liveness: LivenessConfig,
    /// Where the default extension components are found on first start (`make plugins` builds
    /// them there); unset to start without them (slots then use the host's built-in fallbacks).
    pub builtin_extensions_dir: Option<PathBuf>,
    /// Tokens the host attaches to git requests per remote host (`"github.com" = "..."` in the
    /// config file). Resolvers never see them.
    #[serde(skip_serializing)]
    pub git_credentials: std::collections::BTreeMap<String, SecretString>,
    /// The local plugin registry `local://` sources come from; default `<data_dir>/plugins-registry`.
    pub plugins_registry_dir: Option<PathBuf>,
    /// Wall-time limit of one remote git operation, in seconds.
    pub git_timeout_secs: u64,
    /// Allow remote plugin sources without a `#ref` (they then mean the upstream's HEAD).
    #[serde(deserialize_with = "loose_bool")]
    pub allow_unpinned_sources: bool,
    /// Extra environment for the host's git processes, e.g. `GIT_CONFIG_*` URL rewrites that
    /// point a remote host at an internal mirror. Resolvers never see it.
    pub git_env: std::collections::BTreeMap<String, String>,
    /// `GIT_ALLOW_PROTOCOL` for the host's git processes (colon-separated); default `https`.
    pub git_allowed_protocols: Option<String>,
    /// Where workspaces run and how their lifecycle is paced (`MOLECULE_RUNTIME__*`).
    pub runtime: RuntimeConfig,
    /// Org templates and their import (`MOLECULE_ORG__*`).
    pub org: OrgConfig,
    /// Plugin drift detection and rollouts (`MOLECULE_PLUGINS__*`).
    pub plugins: PluginsConfig,
    /// The A2A proxy, delegations, the busy queue and MCP for agents (`MOLECULE_A2A__*`).
    pub a2a: A2aConfig,
    /// The scheduler that fires workspace schedules (`MOLECULE_SCHEDULES__*`).
    pub schedules: SchedulesConfig,
    /// The key-value memory of workspaces (`MOLECULE_KV__*`).
    pub kv: KvConfig,
    /// When a background loop counts as stalled (`MOLECULE_SUPERVISION__*`).
    pub supervision: SupervisionConfig,
    /// Operators' terminals into agents' environments (`MOLECULE_TERMINAL__*`).
    pub terminal: TerminalConfig,
    /// Traces: the OTLP collector spans are exported to, and how many the host keeps
    /// (`MOLECULE_OTEL__*`).
    pub otel: OtelConfig,
    /// Agent memories: the optional embeddings endpoint that orders searches by meaning
    /// (`MOLECULE_MEMORIES__*`).
    pub memories: MemoriesConfig,
    /// What agents' reported token usage costs (`[budget.prices]` in the config file).
    pub budget: BudgetConfig,
    /// Faults injected on purpose, for tests; never read from a file or the environment.
    #[serde(skip)]
    pub faults: Faults,
}

/// Drift detection, rollouts and the swap-directory sweeper.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct PluginsConfig {
    /// Seconds between drift sweeps (each tracked plugin's upstream revision is checked).
    pub drift_interval_secs: u64,
    /// How long a rollout waits for an updated workspace to be online with a fresh heartbeat.
    pub rollout_health_timeout_secs: u64,
    /// Seconds between sweeps of stale `.staging`/`.previous` swap directories.
    pub swap_sweep_secs: u64,
    /// Age after which a swap directory is stale.
    pub swap_dir_max_age_secs: u64,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        Self {
            drift_interval_secs: 3600,
            rollout_health_timeout_secs: 120,
            swap_sweep_secs: 600,
            swap_dir_max_age_secs: 3600,
        }
    }
}

/// The A2A proxy's timeouts, the busy queue and the delegation retry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct A2aConfig {
    /// Seconds to establish the connection to an agent.
    pub connect_timeout_secs: u64,
    /// Seconds to wait for the agent's response headers (an agent thinking counts here);
    /// restarted by every event of the agent's workspace (its heartbeats, for one).
    pub response_header_timeout_secs: u64,
    /// Seconds the agent may stay silent between two pieces of its response body; restarted
    /// like the header timeout.
    pub idle_timeout_secs: u64,
    /// The ceiling for a caller's `X-Timeout` (seconds); larger values are clamped to it.
    pub max_timeout_secs: u64,
    /// Milliseconds a delegation waits before its one retry after a transient failure.
    pub delegation_retry_delay_ms: u64,
    /// The margin past its longest possible run (two deliveries and the retry pause) after which
    /// a delegation still marked running counts as stranded by a host that stopped hard, and
    /// another replica fails it.
    pub stranded_margin_secs: u64,
    /// Attempts after which a queued message is given up (status `failed`).
    pub queue_max_attempts: i32,
    /// Seconds a queued message stays deliverable unless the sender set its own expiry.
    pub queue_ttl_secs: u64,
    /// MCP requests per minute per workspace (0: unlimited).
    pub mcp_per_minute: u32,
    /// Seconds between sweeps that drop expired queued messages (failing their delegations) and
    /// delete acknowledged and expired pending uploads.
    pub queue_expiry_sweep_secs: u64,
    /// Private networks (CIDRs inside 10/8, 172.16/12, 192.168/16, fc00::/7) where agents may
    /// live in production; every other private or loopback agent URL is refused there.
    #[serde(deserialize_with = "comma_list")]
    pub private_agent_networks: Vec<String>,
}

impl Default for A2aConfig {
    fn default() -> Self {
        Self {
            connect_timeout_secs: 10,
            response_header_timeout_secs: 180,
            idle_timeout_secs: 300,
            max_timeout_secs: 1800,
            delegation_retry_delay_ms: 8000,
            stranded_margin_secs: 60,
            queue_max_attempts: 5,
            queue_ttl_secs: 24 * 3600,
            mcp_per_minute: 120,
            queue_expiry_sweep_secs: 60,
            private_agent_networks: Vec::new(),
        }
    }
}

/// The supervision of the host's own background loops (`/admin/liveness`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SupervisionConfig {
    /// The least time a periodic background loop may go without starting a pass before
    /// `/admin/liveness` calls it stale (otherwise three of its intervals).
    pub stale_floor_secs: u64,
}

impl Default for SupervisionConfig {
    fn default() -> Self {
        Self {
            stale_floor_secs: 30,
        }
    }
}

impl SupervisionConfig {
    pub fn stale_floor(&self) -> Duration {
        Duration::from_secs(self.stale_floor_secs.max(1))
    }
}

/// The operator's terminal (`GET /workspaces/{id}/terminal`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct TerminalConfig {
    /// A session with neither a keystroke nor output for this long is closed.
    pub idle_timeout_secs: u64,
    /// Terminals open at once into one workspace, on this host.
    pub max_per_workspace: usize,
}

impl Default for TerminalConfig {
    fn default() -> Self {
        Self {
            idle_timeout_secs: 900,
            max_per_workspace: 2,
        }
    }
}

impl TerminalConfig {
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs.max(1))
    }
}

/// Traces (`GET /workspaces/{id}/traces`) and their export over OTLP/HTTP.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct OtelConfig {
    /// An OTLP/HTTP collector (`http://collector:4318`): spans are POSTed as protobuf to
    /// `<endpoint>/v1/traces`. Unset: nothing is exported; the host keeps its recent traces.
    pub endpoint: Option<String>,
    /// Headers sent with every export (a collector's API key); never logged.
    #[serde(skip_serializing)]
    pub headers: std::collections::BTreeMap<String, SecretString>,
    /// Traces kept in memory per workspace for `GET /workspaces/{id}/traces`.
    pub traces_per_workspace: usize,
}

impl Default for OtelConfig {
    fn default() -> Self {
        Self {
            endpoint: None,
            headers: std::collections::BTreeMap::new(),
            traces_per_workspace: 50,
        }
    }
}

/// The key-value memory: how often expired keys are deleted (they are invisible from the moment
/// they expire; the sweep only reclaims their rows).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct KvConfig {
    /// Seconds between sweeps that delete expired keys.
    pub expiry_sweep_secs: u64,
}

impl Default for KvConfig {
    fn default() -> Self {
        Self {
            expiry_sweep_secs: 60,
        }
    }
}

/// Agent memories' optional semantic ordering: an OpenAI-compatible embeddings endpoint. Unset
/// `embeddings_url` = off (search is full text only).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct MemoriesConfig {
    /// Base URL of an OpenAI-compatible API; the host posts to `{url}/embeddings`, so give the
    /// version in it (`https://api.openai.com/v1`).
    pub embeddings_url: Option<String>,
    /// The `model` sent with every embeddings request.
    pub embeddings_model: String,
    /// The bearer sent to the endpoint; never serialized, logged or returned.
    #[serde(skip_serializing)]
    pub embeddings_api_key: Option<SecretString>,
    /// How long one embeddings call may take before it counts as failed, in milliseconds.
    pub embeddings_timeout_ms: u64,
}

impl Default for MemoriesConfig {
    fn default() -> Self {
        Self {
            embeddings_url: None,
            embeddings_model: "text-embedding-3-small".to_owned(),
            embeddings_api_key: None,
            embeddings_timeout_ms: 2000,
        }
    }
}

/// The price of a model's tokens, in US cents per million.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenPrice {
    pub input_cents_per_million: u64,
    pub output_cents_per_million: u64,
}

/// What the token usage agents report costs: a price per model (the model an answer names in
/// `usage.model` or `model`), and `default_price` for any other.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct BudgetConfig {
    /// By model name, exactly as agents report it.
    pub prices: std::collections::BTreeMap<String, TokenPrice>,
    /// For a model not in `prices`, or an answer that names none. The default is a mid-range
    /// hosted model's list price ($3 in, $15 out per million tokens): set your own.
    pub default_price: TokenPrice,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            prices: Default::default(),
            default_price: TokenPrice {
                input_cents_per_million: 300,
                output_cents_per_million: 1500,
            },
        }
    }
}

impl BudgetConfig {
    /// The price of `model`'s tokens.
    pub fn price(&self, model: Option<&str>) -> TokenPrice {
        model
            .and_then(|m| self.prices.get(m))
            .copied()
            .unwrap_or(self.default_price)
    }
}

/// The scheduler: how often it looks for due schedules, how many fires run at once, and what
/// the health routes call unhealthy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SchedulesConfig {
    /// Milliseconds between looks for due schedules (one indexed query when nothing is due); a
    /// tick fires at most this long after its time.
    pub poll_interval_ms: u64,
    /// Due schedules read per query; a full batch is followed by another at once.
    pub batch: i64,
    /// Fires in flight at once; a due schedule waits for a free one.
    pub max_concurrent_fires: usize,
    /// Seconds one fire may take (the agent's answer included) before it is recorded as failed.
    pub fire_timeout_secs: u64,
    /// Failures in a row after which the health routes list a schedule as failing.
    pub health_failures: i32,
    /// Empty answers in a row after which the health routes list a schedule as empty.
    pub health_empty_runs: i32,
    /// Seconds past its tick after which an unfired schedule is listed as overdue.
    pub overdue_grace_secs: u64,
}

impl Default for SchedulesConfig {
    fn default() -> Self {
        Self {
            poll_interval_ms: 500,
            batch: 500,
            max_concurrent_fires: 16,
            fire_timeout_secs: 300,
            health_failures: 3,
            health_empty_runs: 3,
            overdue_grace_secs: 60,
        }
    }
}

impl SchedulesConfig {
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms.clamp(50, 60_000))
    }
    pub fn fire_timeout(&self) -> Duration {
        Duration::from_secs(self.fire_timeout_secs.max(1))
    }
}

/// Org templates: where they live, what `!external` may fetch, where persona env comes from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct OrgConfig {
    /// The directory whose subdirectories (each with an `org.yaml`) are the org templates.
    pub templates_dir: PathBuf,
    /// `host/owner/repo` entries an `!external` may fetch: an exact match, or a prefix when the
    /// entry ends in `/` (`github.com/acme/`). Empty (the default) refuses every `!external`.
    #[serde(deserialize_with = "comma_list")]
    pub external_allowlist: Vec<String>,
    /// The host of an `!external` without `url`.
    pub external_default_host: String,
    /// Persona env files: `<persona_root>/<files_dir>/env`.
    pub persona_root: PathBuf,
    /// A template (directory name under `templates_dir`) imported in merge mode at every start;
    /// importing is idempotent, so a restart creates nothing twice.
    pub import_on_start: Option<String>,
}

impl Default for OrgConfig {
    fn default() -> Self {
        Self {
            templates_dir: PathBuf::from("org-templates"),
            external_allowlist: Vec::new(),
            external_default_host: "github.com".into(),
            persona_root: PathBuf::from("/etc/molecule-bootstrap/personas"),
            import_on_start: None,
        }
    }
}

/// Which runtime runs the agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// Docker when an engine answers, local processes otherwise.
    Auto,
    Docker,
    Process,
    /// One Pod per workspace in a Kubernetes cluster (`runtime.kubernetes`).
    Kubernetes,
    /// The host starts no agents: workspaces wait in `provisioning` for agents started
    /// elsewhere to register (and fail after the provision timeout).
    None,
}

/// The workspace runtime and lifecycle settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RuntimeConfig {
    pub kind: RuntimeKind,
    /// The Docker engine to use (`unix:///path/docker.sock`, `tcp://host:2375`); unset: the
    /// local engine's socket.
    pub docker_host: Option<String>,
    /// The user-defined Docker network every workspace container joins.
    pub network: String,
    /// The agent image for every runtime name without an entry in `images`.
    pub image: String,
    /// Image per workspace runtime name (`langgraph = "..."`).
    pub images: std::collections::BTreeMap<String, String>,
    /// The agent binary the process runtime starts; default `molecule-agent` beside the host's
    /// own executable, else on `PATH`.
    pub agent_binary: Option<PathBuf>,
    /// The host URL agents are given as `PLATFORM_URL`; default: the Docker network's gateway
    /// (where the host opens an agent listener) or this host's loopback listener.
    pub platform_url: Option<String>,
    /// The host itself runs in a container attached to `network` (the single-machine recipe):
    /// the Docker runtime publishes no agent port and opens no gateway listener; the host calls
    /// agents by container name and agents call it at `platform_url`, which must then be set.
    #[serde(deserialize_with = "loose_bool")]
    pub host_on_network: bool,
    /// Where workspace templates (`<name>/config.yaml`, skills, prompts) are looked up.
    pub templates_dir: Option<PathBuf>,
    /// Provisions that may run at the same time.
    pub provision_concurrency: usize,
    /// A workspace still `provisioning` after this long is marked failed.
    pub provision_timeout_secs: u64,
    /// How often running workspaces are checked against their container or process.
    pub health_sweep_secs: u64,
    /// How often containers of removed or unknown workspaces are removed.
    pub orphan_sweep_secs: u64,
    /// How often the hibernation monitor looks for idle agents to hibernate.
    pub hibernation_sweep_secs: u64,
    /// The heartbeat interval agents are told to use.
    pub heartbeat_interval_secs: u64,
    /// How long a stop waits for the agent before killing it.
    pub stop_timeout_secs: u64,
    /// Tell a restarted agent, once it is back online, when it was restarted and which
    /// environment keys it has (an A2A message from `system:restart-context`).
    #[serde(deserialize_with = "loose_bool")]
    pub restart_context: bool,
    /// Memory limit per tier (1..4) in MiB.
    #[serde(deserialize_with = "comma_u64_list")]
    pub tier_memory_mb: Vec<u64>,
    /// CPU shares per tier (1..4); 1024 shares are one CPU.
    #[serde(deserialize_with = "comma_u64_list")]
    pub tier_cpu_shares: Vec<u64>,
    /// The first uid (and gid) the process runtime gives an agent when the host runs as root:
    /// each workspace gets one of its own from `process_uid_base .. + process_uid_count`.
    pub process_uid_base: u32,
    /// How many uids the process runtime may hand out (one per workspace with files).
    pub process_uid_count: u32,
    /// Directories (absolute) process-runtime agents may read and execute from besides the
    /// system ones (`/usr`, `/bin`, `/lib*`, `/etc`, …), such as `/opt` or `/nix/store`.
    #[serde(deserialize_with = "comma_list")]
    pub process_readonly_paths: Vec<String>,
    /// Extra labels put on every container and volume (tests mark theirs).
    pub labels: std::collections::BTreeMap<String, String>,
    /// The Kubernetes runtime's cluster objects (`MOLECULE_RUNTIME__KUBERNETES__*`).
    pub kubernetes: KubernetesConfig,
}

/// Where and how the Kubernetes runtime creates each workspace's objects. The cluster
/// connection itself comes from kube's inference (`KUBECONFIG`, `~/.kube/config`, or the
/// in-cluster service account).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct KubernetesConfig {
    /// The namespace every workspace's Pod, Service, PVC, Secrets and ConfigMap live in.
    pub namespace: String,
    /// The port the agent listens on inside its Pod (and the Service's port).
    pub agent_port: u16,
    /// The StorageClass of the `/configs` volume claims; unset: the cluster's default.
    pub storage_class: Option<String>,
    /// The size each workspace's `/configs` claim requests (a Kubernetes quantity).
    pub pvc_size: String,
    /// How long a start waits for the Pod to be running (image pulls count).
    pub start_timeout_secs: u64,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            namespace: "molecule".into(),
            agent_port: 8000,
            storage_class: None,
            pvc_size: "1Gi".into(),
            start_timeout_secs: 300,
        }
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            kind: RuntimeKind::Auto,
            docker_host: None,
            network: "molecule-core-net".into(),
            image: "molecule-agent:dev".into(),
            images: std::collections::BTreeMap::new(),
            agent_binary: None,
            platform_url: None,
            host_on_network: false,
            templates_dir: None,
            provision_concurrency: 4,
            provision_timeout_secs: 600,
            health_sweep_secs: 15,
            orphan_sweep_secs: 60,
            hibernation_sweep_secs: 120,
            heartbeat_interval_secs: 30,
            stop_timeout_secs: 10,
            restart_context: true,
            tier_memory_mb: vec![256, 512, 2048, 4096],
            tier_cpu_shares: vec![512, 1024, 2048, 4096],
            process_uid_base: 2_000_000_000,
            process_uid_count: 65_536,
            process_readonly_paths: Vec::new(),
            labels: std::collections::BTreeMap::new(),
            kubernetes: KubernetesConfig::default(),
        }
    }
}

impl RuntimeConfig {
    /// The image for a workspace runtime name.
    pub fn image_for(&self, runtime: &str) -> &str {
        self.images.get(runtime).map_or(&self.image, String::as_str)
    }

    /// Memory (bytes) and CPU (nano-CPUs) limits of a tier; unknown tiers get tier 2's.
    pub fn tier_limits(&self, tier: i32) -> (i64, i64) {
        let pick = |list: &[u64], fallback: u64| {
            usize::try_from(tier - 1)
                .ok()
                .and_then(|i| list.get(i))
                .or_else(|| list.get(1))
                .copied()
                .unwrap_or(fallback)
        };
        let memory = pick(&self.tier_memory_mb, 512).saturating_mul(1024 * 1024);
        let nano_cpus = pick(&self.tier_cpu_shares, 1024).saturating_mul(1_000_000_000) / 1024;
        (
            i64::try_from(memory).unwrap_or(i64::MAX),
            i64::try_from(nano_cpus).unwrap_or(i64::MAX),
        )
    }

    pub fn sweep(secs: u64) -> Duration {
        Duration::from_millis((secs * 1000).max(100))
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            env: Environment::Default,
            bind_addr: "127.0.0.1".into(),
            port: 8080,
            data_dir: PathBuf::from("data"),
            database_url: None,
            database_max_connections: 16,
            admin_token: None,
            secrets_encryption_key: None,
            cors_origins: vec![
                "http://localhost:3000".into(),
                "http://localhost:3001".into(),
            ],
            enable_test_tokens: false,
            workspace_token_ttl_secs: 30 * 24 * 3600,
            rate_limit_per_minute: 600,
            trusted_proxies: Vec::new(),
            max_body_bytes: 1024 * 1024,
            shutdown_grace_secs: 10,
            cache_revalidate_ms: 1000,
            liveness: LivenessConfig::default(),
            builtin_extensions_dir: Some(PathBuf::from("plugins/target/wasm32-wasip2/release")),
            git_credentials: std::collections::BTreeMap::new(),
            plugins_registry_dir: None,
            git_timeout_secs: 60,
            allow_unpinned_sources: false,
            git_env: std::collections::BTreeMap::new(),
            git_allowed_protocols: None,
            runtime: RuntimeConfig::default(),
            org: OrgConfig::default(),
            plugins: PluginsConfig::default(),
            a2a: A2aConfig::default(),
            schedules: SchedulesConfig::default(),
            kv: KvConfig::default(),
            supervision: SupervisionConfig::default(),
            terminal: TerminalConfig::default(),
            otel: OtelConfig::default(),
            memories: MemoriesConfig::default(),
            budget: BudgetConfig::default(),
            faults: Faults::default(),
        }
    }
}

/// Names the original platform's operators know, mapped onto our keys. `MOLECULE_*` variables
/// are read after these, so they win when both are set.
const LEGACY_ENV: &[(&str, &str)] = &[
    ("ADMIN_TOKEN", "admin_token"),
    ("SECRETS_ENCRYPTION_KEY", "secrets_encryption_key"),
    ("CORS_ORIGINS", "cors_origins"),
    ("PORT", "port"),
    ("BIND_ADDR", "bind_addr"),
    ("RATE_LIMIT", "rate_limit_per_minute"),
    ("DATABASE_URL", "database_url"),
];

impl Config {
    /// Defaults, then `file` when given, then the process environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            anyhow::ensure!(
                path.is_file(),
                "config file {} does not exist",
                path.display()
            );
            figment = figment.merge(Toml::file(path));
        }
        let legacy_names: Vec<&str> = LEGACY_ENV.iter().map(|(name, _)| *name).collect();
        figment = figment
            .merge(Env::raw().only(&legacy_names).map(|name| {
                let key = LEGACY_ENV
                    .iter()
                    .find(|(legacy, _)| name.as_str().eq_ignore_ascii_case(legacy))
                    .map_or(name.as_str(), |(_, key)| key);
                key.to_owned().into()
            }))
            .merge(Env::prefixed("MOLECULE_").split("__"));
        let config: Config = figment.extract().context("reading configuration")?;
        Ok(config)
    }

    /// The socket address to bind, combining `bind_addr` and `port`.
    pub fn listen_addr(&self) -> anyhow::Result<SocketAddr> {
        if let Ok(addr) = self.bind_addr.parse::<SocketAddr>() {
            return Ok(addr);
        }
        let host = self.bind_addr.trim_start_matches('[').trim_end_matches(']');
        let ip: std::net::IpAddr = host
            .parse()
            .with_context(|| format!("bind_addr {:?} is not an IP address", self.bind_addr))?;
        Ok(SocketAddr::new(ip, self.port))
    }

    /// The database URL in effect: the configured one, or the embedded SQLite file.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.expose_secret().to_owned(),
            None => format!("sqlite://{}", self.data_dir.join("molecule.db").display()),
        }
    }

    pub fn is_production(&self) -> bool {
        self.env == Environment::Production
    }

    /// Development fail-open (for callers on loopback): development environment and no admin
    /// token configured.
    pub fn dev_fail_open(&self) -> bool {
        self.env == Environment::Development && self.admin_token().is_none()
    }

    pub fn is_development(&self) -> bool {
        self.env == Environment::Development
    }

    /// The admin token, treating an empty value as unset.
    pub fn admin_token(&self) -> Option<&str> {
        self.admin_token
            .as_ref()
            .map(|t| t.expose_secret())
            .filter(|t| !t.is_empty())
    }

    /// How long a shutdown waits for open connections to finish.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    /// Whether `GET /admin/workspaces/:id/test-token` answers at all: in development, or when
    /// explicitly enabled. Forgetting `MOLECULE_ENV` never opens it.
    pub fn test_tokens_enabled(&self) -> bool {
        self.is_development() || self.enable_test_tokens
    }

    /// How long a workspace token minted through the API lives.
    pub fn workspace_token_ttl(&self) -> Duration {
        Duration::from_secs(self.workspace_token_ttl_secs.max(1))
    }
}

/// The admin token `molecule ext` sends to a host's admin API when `--token` is not given:
/// `MOLECULE_ADMIN_TOKEN`, else `ADMIN_TOKEN`.
pub fn cli_admin_token() -> Option<String> {
    ["MOLECULE_ADMIN_TOKEN", "ADMIN_TOKEN"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
}

/// Where integration tests and benchmarks find the private PostgreSQL server `make test` starts.
pub fn test_postgres_url() -> Option<String> {
    std::env::var("MOLECULE_TEST_PG_URL")
        .ok()
        .filter(|url| !url.is_empty())
}

/// The kubeconfig the Kubernetes runtime's tests run against instead of their in-process fake
/// API server (`MOLECULE_TEST_KUBECONFIG`).
pub fn test_kubeconfig() -> Option<PathBuf> {
    std::env::var_os("MOLECULE_TEST_KUBECONFIG")
        .filter(|path| !path.is_empty())
        .map(PathBuf::from)
}

/// The host's `PATH`, handed to agents and commands the process runtime starts.
pub fn inherited_path() -> Option<String> {
    std::env::var("PATH").ok()
}

/// Names a template's `${VAR}` may never read from the host's environment: the host's own
/// configuration and credentials.
const TEMPLATE_HIDDEN_ENV: &[&str] = &[
    "ADMIN_TOKEN",
    "SECRETS_ENCRYPTION_KEY",
    "DATABASE_URL",
    "MOLECULE_TEST_PG_URL",
    "KUBECONFIG",
];

/// A host environment variable for `${VAR}` expansion in an org template (`workspace_dir`).
/// The host's own settings (`MOLECULE_*` and the legacy names) and credentials are never
/// readable this way, so a template cannot copy them into a workspace field.
pub fn template_env_var(name: &str) -> Option<String> {
    let upper = name.to_ascii_uppercase();
    if upper.starts_with("MOLECULE_")
        || TEMPLATE_HIDDEN_ENV.contains(&upper.as_str())
        || LEGACY_ENV.iter().any(|(legacy, _)| *legacy == upper)
    {
        return None;
    }
    std::env::var(name).ok()
}

/// Whether this process runs in CI, where a missing service is a failure rather than a skip.
pub fn running_in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn comma_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        List(Vec<String>),
        Text(String),
    }
    let items = match Raw::deserialize(deserializer)? {
        Raw::List(items) => items,
        Raw::Text(text) => text.split(',').map(str::to_owned).collect(),
    };
    Ok(items
        .into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect())
}

fn comma_u64_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        List(Vec<u64>),
        Text(String),
        One(u64),
    }
    match Raw::deserialize(deserializer)? {
        Raw::List(items) => Ok(items),
        Raw::One(n) => Ok(vec![n]),
        Raw::Text(text) => text
            .split(',')
            .map(|s| s.trim().parse::<u64>().map_err(serde::de::Error::custom))
            .collect(),
    }
}

fn loose_bool<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Bool(bool),
        Int(i64),
        Text(String),
    }
    Ok(match Raw::deserialize(deserializer)? {
        Raw::Bool(b) => b,
        Raw::Int(i) => i != 0,
        Raw::Text(t) => matches!(
            t.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_names_are_case_insensitive() {
        assert_eq!(Environment::parse("DEV"), Environment::Development);
        assert_eq!(Environment::parse("Production"), Environment::Production);
        assert_eq!(Environment::parse("prod"), Environment::Production);
        assert_eq!(Environment::parse("staging"), Environment::Default);
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own large error type
    fn layers_apply_in_order_and_molecule_names_win() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("host.toml", "port = 9000\nrate_limit_per_minute = 5\n")?;
            jail.set_env("PORT", "9100");
            jail.set_env("CORS_ORIGINS", "http://a.test, http://b.test");
            jail.set_env("ADMIN_TOKEN", "legacy");
            jail.set_env("MOLECULE_ADMIN_TOKEN", "modern");
            jail.set_env("MOLECULE_LIVENESS__HEARTBEAT_TTL_SECS", "7");
            jail.set_env("MOLECULE_ENABLE_TEST_TOKENS", "1");
            let config = Config::load(Some(Path::new("host.toml"))).expect("config loads");
            assert_eq!(config.port, 9100);
            assert_eq!(config.rate_limit_per_minute, 5);
            assert_eq!(config.cors_origins, vec!["http://a.test", "http://b.test"]);
            assert_eq!(config.admin_token(), Some("modern"));
            assert_eq!(config.liveness.heartbeat_ttl_secs, 7);
            assert!(config.enable_test_tokens);
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own large error type
    fn git_credentials_come_from_the_config_file_and_never_print() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "host.toml",
                "[git_credentials]\n\"github.com\" = \"ghp-very-secret\"\n",
            )?;
            let config = Config::load(Some(Path::new("host.toml"))).expect("config loads");
            let token = config
                .git_credentials
                .get("github.com")
                .expect("a credential");
            assert_eq!(token.expose_secret(), "ghp-very-secret");
            assert!(!format!("{config:?}").contains("very-secret"));
            Ok(())
        });
    }

    #[test]
    fn bind_addr_takes_a_host_or_a_socket_address() {
        let mut config = Config {
            port: 9001,
            ..Config::default()
        };
        assert_eq!(config.listen_addr().unwrap().to_string(), "127.0.0.1:9001");
        config.bind_addr = "0.0.0.0:7000".into();
        assert_eq!(config.listen_addr().unwrap().to_string(), "0.0.0.0:7000");
        config.bind_addr = "not an address".into();
        assert!(config.listen_addr().is_err());
    }

    /// The operator guide's reference table, one row per documented key: the environment
    /// names and the default cell.
    fn documented_settings() -> std::collections::BTreeMap<String, (Vec<String>, String)> {
        let guide = include_str!("../../../docs/operator-guide.md");
        let table = guide
            .split("| key | environment | default | meaning |")
            .nth(1)
            .expect("the guide has its reference table");
        let mut rows = std::collections::BTreeMap::new();
        for line in table.lines().skip(2).take_while(|l| l.starts_with('|')) {
            let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
            assert_eq!(cells.len(), 4, "a reference row has four cells: {line}");
            let key = cells[0].trim_matches('`').to_owned();
            let env = cells[1]
                .split(", ")
                .filter(|name| name.starts_with('`'))
                .map(|name| name.trim_matches('`').to_owned())
                .collect();
            assert!(
                rows.insert(key.clone(), (env, cells[2].to_owned()))
                    .is_none(),
                "{key} is documented twice"
            );
        }
        rows
    }

    /// Every leaf of the configuration with its default: sections are the non-empty objects
    /// of the serialized defaults; fields kept out of serialization (secrets) are added by name
    /// and proven real by loading them.
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own large error type
    fn configuration_leaves() -> std::collections::BTreeMap<String, serde_json::Value> {
        fn walk(
            prefix: &str,
            value: &serde_json::Value,
            out: &mut std::collections::BTreeMap<String, serde_json::Value>,
        ) {
            match value {
                serde_json::Value::Object(fields) if !fields.is_empty() => {
                    for (name, field) in fields {
                        let key = if prefix.is_empty() {
                            name.clone()
                        } else {
                            format!("{prefix}.{name}")
                        };
                        walk(&key, field, out);
                    }
                }
                leaf => {
                    out.insert(prefix.to_owned(), leaf.clone());
                }
            }
        }
        let mut leaves = std::collections::BTreeMap::new();
        walk(
            "",
            &serde_json::to_value(Config::default()).expect("defaults serialize"),
            &mut leaves,
        );
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "secret.toml",
                "database_url = \"sqlite::memory:\"\nadmin_token = \"a\"\n\
                 secrets_encryption_key = \"k\"\n[git_credentials]\n\"h\" = \"t\"\n\
                 [memories]\nembeddings_api_key = \"e\"\n[otel.headers]\n\"x-api-key\" = \"v\"\n",
            )?;
            let config = Config::load(Some(Path::new("secret.toml"))).expect("config loads");
            assert!(config.database_url.is_some() && config.admin_token.is_some());
            assert!(config.secrets_encryption_key.is_some());
            assert_eq!(config.git_credentials.len(), 1);
            assert!(config.memories.embeddings_api_key.is_some());
            assert_eq!(config.otel.headers.len(), 1);
            Ok(())
        });
        leaves.insert("database_url".into(), serde_json::Value::Null);
        leaves.insert("admin_token".into(), serde_json::Value::Null);
        leaves.insert("secrets_encryption_key".into(), serde_json::Value::Null);
        leaves.insert("git_credentials".into(), serde_json::json!({}));
        leaves.insert("otel.headers".into(), serde_json::json!({}));
        leaves.insert(
            "memories.embeddings_api_key".into(),
            serde_json::Value::Null,
        );
        leaves
    }

    #[test]
    fn the_operator_guide_documents_every_setting() {
        let documented = documented_settings();
        let leaves = configuration_leaves();
        let missing: Vec<_> = leaves
            .keys()
            .filter(|k| !documented.contains_key(*k))
            .collect();
        assert!(
            missing.is_empty(),
            "settings missing from the guide: {missing:?}"
        );
        let unknown: Vec<_> = documented
            .keys()
            .filter(|k| !leaves.contains_key(*k))
            .collect();
        assert!(
            unknown.is_empty(),
            "the guide documents no such settings: {unknown:?}"
        );
        for (key, (env, default_cell)) in &documented {
            let default = &leaves[key];
            // Environment: the MOLECULE_ name of the key, plus the legacy name mapped to it.
            let modern = format!("MOLECULE_{}", key.replace('.', "__").to_ascii_uppercase());
            let is_map = matches!(default, serde_json::Value::Object(_));
            if is_map {
                assert!(env.is_empty(), "{key}: maps are set in the file only");
            } else {
                assert!(env.contains(&modern), "{key}: the guide must name {modern}");
            }
            for name in env.iter().filter(|name| **name != modern) {
                assert!(
                    LEGACY_ENV.contains(&(name.as_str(), key.as_str())),
                    "{key}: {name} is not a name the host reads for it"
                );
            }
            // Default: the literal the code uses, or words for what has none.
            let literal = match default {
                serde_json::Value::String(text) => Some(text.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                serde_json::Value::Bool(b) => Some(b.to_string()),
                serde_json::Value::Array(items) if !items.is_empty() => Some(
                    items
                        .iter()
                        .map(|item| {
                            item.as_str()
                                .map_or_else(|| item.to_string(), str::to_owned)
                        })
                        .collect::<Vec<_>>()
                        .join(","),
                ),
                _ => None,
            };
            match literal {
                Some(literal) => assert!(
                    default_cell.starts_with(&format!("`{literal}`")),
                    "{key}: the default is `{literal}`, the guide says {default_cell}"
                ),
                None if default.is_null() => assert!(
                    default_cell.starts_with("unset"),
                    "{key} has no default; the guide says {default_cell}"
                ),
                None => assert!(
                    default_cell.starts_with("empty"),
                    "{key} is empty by default; the guide says {default_cell}"
                ),
            }
        }
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let config = Config {
            admin_token: Some("very-secret-admin".to_owned().into()),
            secrets_encryption_key: Some("very-secret-key".to_owned().into()),
            ..Config::default()
        };
        let printed = format!("{config:?}");
        assert!(!printed.contains("very-secret"), "{printed}");
    }
}
