//! Everything the agent is told from outside: the environment contract and `config.yaml`.
//!
//! This is the only module that reads environment variables. Tests build a [`Config`] value
//! directly, or feed [`Config::from_lookup`] a map, instead of touching the process environment.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
use uuid::Uuid;

/// The file in the config dir that describes the workspace.
pub const CONFIG_FILE: &str = "config.yaml";

const DEFAULT_CONFIG_DIR: &str = "/configs";
const DEFAULT_LISTEN: &str = "0.0.0.0:8000";
const DEFAULT_HEARTBEAT_SECS: f64 = 30.0;
const DEFAULT_OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
const DEFAULT_VERSION: &str = "1.0.0";
const DEFAULT_BRAIN_TIMEOUT: Duration = Duration::from_secs(120);

/// Why the agent cannot start with the configuration it was given.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} is required")]
    Missing { name: &'static str },
    #[error("{name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
    // The cause is part of the message (not a `source`) so one line says everything, without
    // being repeated when the error is printed with its chain.
    #[error("malformed {}: {reason}", path.display())]
    Malformed {
        path: PathBuf,
        reason: serde_yaml_ng::Error,
    },
    #[error("reading {}: {reason}", path.display())]
    Unreadable {
        path: PathBuf,
        reason: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Unusable { path: PathBuf, reason: String },
}

/// An `http(s)://` base URL without a trailing slash, to which API paths are appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl(String);

impl BaseUrl {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let url = reqwest::Url::parse(raw).map_err(|e| e.to_string())?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("the scheme must be http or https".into());
        }
        if url.host_str().is_none() {
            return Err("the url has no host".into());
        }
        Ok(Self(raw.trim_end_matches('/').to_owned()))
    }

    /// `path` starts with `/`.
    pub fn join(&self, path: &str) -> String {
        format!("{}{path}", self.0)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The host if it is an IP literal; used to find the interface that reaches it.
    fn ip(&self) -> Option<std::net::IpAddr> {
        let url = reqwest::Url::parse(&self.0).ok()?;
        let host = url.host_str()?;
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()
    }
}

impl fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which brain answers `message/send`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BrainKind {
    #[default]
    Echo,
    OpenAi,
    Command,
}

impl BrainKind {
    fn parse(raw: &str) -> Option<Self> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "echo" => Some(Self::Echo),
            "openai" => Some(Self::OpenAi),
            "command" => Some(Self::Command),
            _ => None,
        }
    }
}

/// The environment contract set by the host's provisioner.
#[derive(Debug, Clone)]
pub struct Config {
    pub workspace_id: Uuid,
    pub config_dir: PathBuf,
    pub platform_url: BaseUrl,
    pub listen: SocketAddr,
    /// The URL registered with the platform; derived from the bound address when absent.
    pub agent_url: Option<String>,
    pub heartbeat_interval: Duration,
    pub role: Option<String>,
    pub tier: Option<i64>,
    /// `MOLECULE_AGENT_BRAIN`: wins over `brain.kind` in `config.yaml`.
    pub brain_override: Option<BrainKind>,
    /// `MODEL`: wins over `model` in `config.yaml`.
    pub model: Option<String>,
    pub openai_base_url: BaseUrl,
    pub openai_api_key: Option<SecretString>,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads variables through `get`; empty values count as unset.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let invalid = |name: &'static str, reason: String| ConfigError::Invalid { name, reason };

        let workspace_id = get("WORKSPACE_ID").ok_or(ConfigError::Missing {
            name: "WORKSPACE_ID",
        })?;
        let workspace_id = Uuid::parse_str(workspace_id.trim())
            .map_err(|e| invalid("WORKSPACE_ID", format!("not a UUID ({e})")))?;
        let platform_url = get("PLATFORM_URL").ok_or(ConfigError::Missing {
            name: "PLATFORM_URL",
        })?;
        let platform_url =
            BaseUrl::parse(platform_url.trim()).map_err(|e| invalid("PLATFORM_URL", e))?;
        let listen = get("MOLECULE_AGENT_LISTEN")
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned())
            .trim()
            .parse()
            .map_err(|e| {
                invalid(
                    "MOLECULE_AGENT_LISTEN",
                    format!("not a socket address ({e})"),
                )
            })?;
        let agent_url = get("MOLECULE_AGENT_URL")
            .map(|raw| {
                BaseUrl::parse(raw.trim())
                    .map(|_| raw.trim().to_owned())
                    .map_err(|e| invalid("MOLECULE_AGENT_URL", e))
            })
            .transpose()?;
        let heartbeat_interval = match get("HEARTBEAT_INTERVAL_SECS") {
            None => Duration::from_secs_f64(DEFAULT_HEARTBEAT_SECS),
            Some(raw) => raw
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s > 0.0 && *s <= 86_400.0)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| {
                    invalid(
                        "HEARTBEAT_INTERVAL_SECS",
                        "expected a number of seconds between 0 and 86400".into(),
                    )
                })?,
        };
        let tier = get("TIER")
            .map(|raw| {
                raw.trim()
                    .parse::<i64>()
                    .map_err(|_| invalid("TIER", "expected an integer".into()))
            })
            .transpose()?;
        let brain_override = get("MOLECULE_AGENT_BRAIN")
            .map(|raw| {
                BrainKind::parse(&raw).ok_or_else(|| {
                    invalid(
                        "MOLECULE_AGENT_BRAIN",
                        "expected echo, openai or command".into(),
                    )
                })
            })
            .transpose()?;
        let openai_base_url = BaseUrl::parse(
            get("OPENAI_BASE_URL")
                .as_deref()
                .unwrap_or(DEFAULT_OPENAI_BASE_URL)
                .trim(),
        )
        .map_err(|e| invalid("OPENAI_BASE_URL", e))?;

        Ok(Self {
            workspace_id,
            config_dir: get("WORKSPACE_CONFIG_PATH")
                .map_or_else(|| PathBuf::from(DEFAULT_CONFIG_DIR), PathBuf::from),
            platform_url,
            listen,
            agent_url,
            heartbeat_interval,
            role: get("MOLECULE_AGENT_ROLE"),
            tier,
            brain_override,
            model: get("MODEL").map(|m| m.trim().to_owned()),
            openai_base_url,
            openai_api_key: get("OPENAI_API_KEY").map(|k| SecretString::from(k.trim().to_owned())),
        })
    }

    /// A configuration for tests and embedding: defaults everywhere except what must be given.
    pub fn new(workspace_id: Uuid, config_dir: PathBuf, platform_url: BaseUrl) -> Self {
        Self {
            workspace_id,
            config_dir,
            platform_url,
            listen: DEFAULT_LISTEN
                .parse()
                .expect("the default listen address parses"),
            agent_url: None,
            heartbeat_interval: Duration::from_secs_f64(DEFAULT_HEARTBEAT_SECS),
            role: None,
            tier: None,
            brain_override: None,
            model: None,
            openai_base_url: BaseUrl::parse(DEFAULT_OPENAI_BASE_URL)
                .expect("the default OpenAI url parses"),
            openai_api_key: None,
        }
    }

    /// The URL to register: `MOLECULE_AGENT_URL`, else `http://<address>:<bound port>` where the
    /// address is the bound one if specific, else the first non-loopback IPv4 found, else
    /// `127.0.0.1`.
    pub fn registered_url(&self, bound: SocketAddr) -> String {
        if let Some(url) = &self.agent_url {
            return url.clone();
        }
        let ip = if bound.ip().is_unspecified() {
            self.outward_ipv4()
                .map_or_else(|| "127.0.0.1".to_owned(), |ip| ip.to_string())
        } else {
            bound.ip().to_string()
        };
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip
        };
        format!("http://{host}:{}", bound.port())
    }

    /// The local IPv4 address of the interface that routes to the platform (or, failing that,
    /// to the default route). Connecting a UDP socket only consults the routing table; no packet
    /// is sent. Without `getifaddrs` (no unsafe code here) this is the portable way to ask.
    fn outward_ipv4(&self) -> Option<std::net::Ipv4Addr> {
        let probe = |target: std::net::IpAddr| -> Option<std::net::Ipv4Addr> {
            let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
            socket.connect((target, 9)).ok()?;
            match socket.local_addr().ok()?.ip() {
                std::net::IpAddr::V4(v4) if !v4.is_loopback() && !v4.is_unspecified() => Some(v4),
                _ => None,
            }
        };
        self.platform_url
            .ip()
            .filter(std::net::IpAddr::is_ipv4)
            .and_then(probe)
            // Any routable address works: the kernel picks the default-route interface.
            .or_else(|| probe(std::net::Ipv4Addr::new(192, 0, 2, 1).into()))
    }
}

/// `brain:` in `config.yaml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct BrainSection {
    pub kind: BrainKind,
    pub command: Vec<String>,
    pub timeout_secs: Option<u64>,
}

impl BrainSection {
    pub fn timeout(&self) -> Duration {
        self.timeout_secs
            .filter(|s| *s > 0)
            .map_or(DEFAULT_BRAIN_TIMEOUT, Duration::from_secs)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RuntimeConfigSection {
    model: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawWorkspaceFile {
    name: Option<Scalar>,
    description: Option<Scalar>,
    role: Option<Scalar>,
    version: Option<Scalar>,
    tier: Option<i64>,
    model: Option<Scalar>,
    runtime_config: Option<RuntimeConfigSection>,
    brain: Option<BrainSection>,
}

/// A YAML scalar read as text, so that `version: 1.0` or `name: 42` are not type errors.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Scalar {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Scalar {
    fn into_text(self) -> Option<String> {
        let text = match self {
            Self::Text(s) => s,
            Self::Int(i) => i.to_string(),
            // `version: 1.0` should read as "1.0", not "1".
            Self::Float(f) if f.fract() == 0.0 => format!("{f:.1}"),
            Self::Float(f) => f.to_string(),
            Self::Bool(b) => b.to_string(),
        };
        let text = text.trim().to_owned();
        (!text.is_empty()).then_some(text)
    }
}

/// `config.yaml` after defaults are applied. Unknown keys are ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceFile {
    pub name: String,
    pub description: String,
    pub role: Option<String>,
    pub version: String,
    pub tier: Option<i64>,
    pub model: Option<String>,
    pub brain: BrainSection,
}

impl WorkspaceFile {
    /// Reads `<dir>/config.yaml`; a missing file means defaults, with the workspace id as name.
    pub fn load(dir: &Path, workspace_id: Uuid) -> Result<Self, ConfigError> {
        let path = dir.join(CONFIG_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(reason) => return Err(ConfigError::Unreadable { path, reason }),
        };
        Self::parse(&text, &path, workspace_id)
    }

    /// `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path, workspace_id: Uuid) -> Result<Self, ConfigError> {
        // An empty or comment-only document is YAML null: treat it as "no settings".
        let raw: Option<RawWorkspaceFile> =
            serde_yaml_ng::from_str(text).map_err(|reason| ConfigError::Malformed {
                path: path.to_owned(),
                reason,
            })?;
        let raw = raw.unwrap_or_default();
        let brain = raw.brain.unwrap_or_default();
        if brain.kind == BrainKind::Command && brain.command.is_empty() {
            return Err(ConfigError::Unusable {
                path: path.to_owned(),
                reason: "brain.kind is command but brain.command is empty".into(),
            });
        }
        let text = |s: Option<Scalar>| s.and_then(Scalar::into_text);
        Ok(Self {
            name: text(raw.name).unwrap_or_else(|| workspace_id.to_string()),
            description: text(raw.description).unwrap_or_default(),
            role: text(raw.role),
            version: text(raw.version).unwrap_or_else(|| DEFAULT_VERSION.to_owned()),
            tier: raw.tier,
            model: text(raw.model).or_else(|| raw.runtime_config.and_then(|r| text(r.model))),
            brain,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn lookup_from<'a>(vars: &'a HashMap<&str, &str>) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| vars.get(name).map(|v| (*v).to_owned())
    }

    const ID: &str = "6f1d3c1e-58a4-4a8e-9b0f-0c6f7f1d2a11";

    fn id() -> Uuid {
        ID.parse().unwrap()
    }

    fn env<'a>(extra: &[(&'a str, &'a str)]) -> HashMap<&'a str, &'a str> {
        let mut vars = HashMap::from([
            ("WORKSPACE_ID", ID),
            ("PLATFORM_URL", "http://127.0.0.1:8080/"),
        ]);
        vars.extend(extra.iter().copied());
        vars
    }

    #[test]
    fn defaults_apply_when_only_the_required_variables_are_set() {
        let config = Config::from_lookup(lookup_from(&env(&[]))).unwrap();
        assert_eq!(config.workspace_id, id());
        assert_eq!(config.config_dir, PathBuf::from("/configs"));
        assert_eq!(
            config.platform_url.join("/registry/register"),
            "http://127.0.0.1:8080/registry/register"
        );
        assert_eq!(config.listen, "0.0.0.0:8000".parse().unwrap());
        assert_eq!(config.heartbeat_interval, Duration::from_secs(30));
        assert_eq!(config.openai_base_url.as_str(), "https://api.openai.com/v1");
        assert!(config.brain_override.is_none());
    }

    #[test]
    fn a_missing_or_malformed_workspace_id_is_named() {
        let mut vars = env(&[]);
        vars.remove("WORKSPACE_ID");
        let err = Config::from_lookup(lookup_from(&vars)).unwrap_err();
        assert_eq!(err.to_string(), "WORKSPACE_ID is required");
        let err = Config::from_lookup(lookup_from(&env(&[("WORKSPACE_ID", "nope")]))).unwrap_err();
        assert!(
            err.to_string().starts_with("WORKSPACE_ID is invalid"),
            "{err}"
        );
    }

    #[test]
    fn overrides_are_parsed_and_bad_values_refused() {
        let config = Config::from_lookup(lookup_from(&env(&[
            ("HEARTBEAT_INTERVAL_SECS", "1"),
            ("MOLECULE_AGENT_BRAIN", "OpenAI"),
            ("TIER", "3"),
            ("MOLECULE_AGENT_URL", "http://10.0.0.5:8000"),
        ])))
        .unwrap();
        assert_eq!(config.heartbeat_interval, Duration::from_secs(1));
        assert_eq!(config.brain_override, Some(BrainKind::OpenAi));
        assert_eq!(config.tier, Some(3));
        assert_eq!(
            config.registered_url("0.0.0.0:8000".parse().unwrap()),
            "http://10.0.0.5:8000"
        );

        for (name, value) in [
            ("HEARTBEAT_INTERVAL_SECS", "0"),
            ("MOLECULE_AGENT_BRAIN", "gpt"),
            ("PLATFORM_URL", "ftp://x"),
            ("MOLECULE_AGENT_LISTEN", "nowhere"),
        ] {
            let err = Config::from_lookup(lookup_from(&env(&[(name, value)]))).unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn the_registered_url_uses_a_specific_bound_address_and_port() {
        let config = Config::from_lookup(lookup_from(&env(&[]))).unwrap();
        assert_eq!(
            config.registered_url("127.0.0.1:4321".parse().unwrap()),
            "http://127.0.0.1:4321"
        );
        let derived = config.registered_url("0.0.0.0:8000".parse().unwrap());
        assert!(
            derived.starts_with("http://") && derived.ends_with(":8000"),
            "{derived}"
        );
    }

    #[test]
    fn the_api_key_is_not_printed_by_debug() {
        let config =
            Config::from_lookup(lookup_from(&env(&[("OPENAI_API_KEY", "sk-secret-value")])))
                .unwrap();
        assert!(!format!("{config:?}").contains("sk-secret-value"));
    }

    #[test]
    fn a_missing_config_file_means_defaults_named_after_the_workspace() {
        let dir = tempfile::tempdir().unwrap();
        let file = WorkspaceFile::load(dir.path(), id()).unwrap();
        assert_eq!(file.name, ID);
        assert_eq!(file.version, "1.0.0");
        assert_eq!(file.brain.kind, BrainKind::Echo);
    }

    #[test]
    fn config_yaml_is_read_leniently_and_unknown_keys_are_ignored() {
        let yaml = "name: dev\ndescription: builds things\nversion: 1.0\ntier: 2\nruntime: langgraph\n\
                    runtime_config:\n  model: gpt-x\nbrain:\n  kind: command\n  command: [sh, -c, cat]\n  timeout_secs: 5\n";
        let file = WorkspaceFile::parse(yaml, Path::new("/c/config.yaml"), id()).unwrap();
        assert_eq!(file.name, "dev");
        assert_eq!(file.version, "1.0");
        assert_eq!(file.tier, Some(2));
        assert_eq!(file.model.as_deref(), Some("gpt-x"));
        assert_eq!(file.brain.kind, BrainKind::Command);
        assert_eq!(file.brain.command, ["sh", "-c", "cat"]);
        assert_eq!(file.brain.timeout(), Duration::from_secs(5));
        let empty =
            WorkspaceFile::parse("# nothing yet\n", Path::new("config.yaml"), id()).unwrap();
        assert_eq!(empty.name, ID);
    }

    #[test]
    fn a_malformed_config_names_the_file_and_the_line() {
        let err = WorkspaceFile::parse(
            "name: dev\ntier: [1,\n",
            Path::new("/configs/config.yaml"),
            id(),
        )
        .unwrap_err();
        let message = err.to_string();
        assert!(message.contains("/configs/config.yaml"), "{message}");
        assert!(message.contains("line"), "{message}");

        let err = WorkspaceFile::parse(
            "brain:\n  kind: telepathy\n",
            Path::new("/configs/config.yaml"),
            id(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("/configs/config.yaml"), "{err}");
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn a_command_brain_needs_a_command() {
        let err = WorkspaceFile::parse("brain: {kind: command}\n", Path::new("config.yaml"), id())
            .unwrap_err();
        assert!(err.to_string().contains("brain.command"), "{err}");
    }
}
