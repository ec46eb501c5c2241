//! What an upload says about itself: the slot it fills, the grants it asks for, and the limits
//! those grants come to once the operator's confirmation and the host's maximum cut them down.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::super::engine::MAX_GUEST_MEMORY;
use super::super::runtime::Limits;
use super::super::types::SlotKind;

/// Largest deadline any grant may give a call. For a resolver it counts the guest's own time;
/// the git work it asks of the host is bounded by [`super::ResolverSettings::timeout`].
const MAX_DEADLINE: Duration = Duration::from_secs(5);

/// A slot name: `classifier`, `restart-policy` or `resolver:<scheme>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Slot(pub(super) String);

impl Slot {
    pub fn parse(raw: &str) -> Option<Slot> {
        let valid = match raw.strip_prefix("resolver:") {
            Some(scheme) => {
                !scheme.is_empty()
                    && scheme.len() <= 32
                    && scheme
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            }
            None => matches!(raw, "classifier" | "restart-policy"),
        };
        valid.then(|| Slot(raw.to_owned()))
    }

    pub fn kind(&self) -> SlotKind {
        match self.0.as_str() {
            "classifier" => SlotKind::Classifier,
            "restart-policy" => SlotKind::RestartPolicy,
            _ => SlotKind::Resolver,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The scheme of a `resolver:<scheme>` slot.
    pub fn scheme(&self) -> Option<&str> {
        self.0.strip_prefix("resolver:")
    }
}

/// What an extension asks for; the operator's confirmation and the host's maximum cut it down.
/// Serialised with the stored version's manifest (the upload body has its own DTO in `http`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Grants {
    pub deadline_ms: Option<u64>,
    pub memory_mb: Option<u64>,
    /// Resolvers only: hosts (`name` or `name:port`) `remote` calls may reach.
    pub allowed_hosts: Vec<String>,
    /// Resolvers only: directories mounted read-only, by the name the host offers them under
    /// (`plugins-registry`) or by their path.
    pub read_only_dirs: Vec<String>,
}

/// The manifest uploaded with a component. Serialised into the stored version's row and read
/// from a file by `molecule ext install` (the upload body has its own DTO in `http`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub slot: String,
    #[serde(default)]
    pub grants: Grants,
}

/// The intersection of what the manifest requests, what the operator confirmed and the host max.
pub fn effective_limits(requested: &Grants, confirmed: Option<&Grants>) -> Limits {
    let defaults = Limits::default();
    let pick = |req: Option<u64>, conf: Option<u64>, default: u64, max: u64| {
        let mut value = req.unwrap_or(default);
        if let Some(conf) = conf {
            value = value.min(conf);
        }
        value.min(max)
    };
    let deadline_ms = pick(
        requested.deadline_ms,
        confirmed.and_then(|c| c.deadline_ms),
        defaults.deadline.as_millis() as u64,
        MAX_DEADLINE.as_millis() as u64,
    );
    let memory_mb = pick(
        requested.memory_mb,
        confirmed.and_then(|c| c.memory_mb),
        (defaults.memory_bytes / (1024 * 1024)) as u64,
        (MAX_GUEST_MEMORY / (1024 * 1024)) as u64,
    );
    Limits {
        deadline: Duration::from_millis(deadline_ms.max(1)),
        memory_bytes: (memory_mb.max(1) as usize) * 1024 * 1024,
    }
}
