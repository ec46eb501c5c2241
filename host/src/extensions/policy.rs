//! The safety net around extension answers: the default restart policy (used when the active
//! policy fails; the one implementation in `molecule-policy`), the classifier's fallback, and the
//! clamp that keeps any policy from causing a restart storm.

use super::types::{Decision, Reload, WorkspaceInfo};

/// The built-in restart policy, used when the active policy fails or none is active: the
/// guest SDK's `default_policy`, which the `default-restart-policy` component exports, so a
/// failing or missing component never leaves the host without the same answer.
pub use molecule_policy::decide as default_decide;

/// What a classifier failure means: restart, since a cold reload is always safe.
pub fn classifier_fallback(reason: &str) -> Reload {
    Reload::Cold(format!(
        "classifier unavailable ({reason}); restarting to be safe"
    ))
}

/// Limits the host imposes on every restart decision, whoever made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clamp {
    /// A workspace that restarted recently waits at least this long before the next restart.
    pub min_delay_ms: u32,
    /// At most this many restarts in the host's window; past it the restart waits `cooldown_ms`.
    pub max_restarts: u32,
    pub cooldown_ms: u32,
    /// No decision may delay a restart longer than this.
    pub max_delay_ms: u32,
}

impl Default for Clamp {
    fn default() -> Self {
        Clamp {
            min_delay_ms: 1000,
            max_restarts: 5,
            cooldown_ms: 5 * 60 * 1000,
            max_delay_ms: 60 * 60 * 1000,
        }
    }
}

impl Clamp {
    pub fn apply(&self, workspace: &WorkspaceInfo, decision: Decision) -> Decision {
        let delay = match decision {
            Decision::KeepRunning | Decision::HotReload => return decision,
            Decision::RestartNow => 0,
            Decision::RestartAfterMs(ms) => ms,
        };
        let floor = if workspace.recent_restarts >= self.max_restarts {
            self.cooldown_ms
        } else if workspace.recent_restarts > 0 {
            self.min_delay_ms
        } else {
            0
        };
        match delay.max(floor).min(self.max_delay_ms) {
            0 => Decision::RestartNow,
            ms => Decision::RestartAfterMs(ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::extensions::types::{DriftApplied, PluginInstalled, Trigger, UpdateTier};

    fn ws(recent_restarts: u32, update_tier: &str) -> WorkspaceInfo {
        WorkspaceInfo {
            id: "id".into(),
            name: "w".into(),
            runtime: "langgraph".into(),
            tier: 3,
            status: "online".into(),
            update_tier: UpdateTier::parse(update_tier),
            recent_restarts,
        }
    }

    #[test]
    fn the_clamp_stops_restart_storms_whatever_the_policy_says() {
        let clamp = Clamp::default();
        assert_eq!(
            clamp.apply(&ws(0, "production"), Decision::RestartNow),
            Decision::RestartNow
        );
        assert_eq!(
            clamp.apply(&ws(1, "production"), Decision::RestartNow),
            Decision::RestartAfterMs(1000)
        );
        assert_eq!(
            clamp.apply(&ws(5, "production"), Decision::RestartNow),
            Decision::RestartAfterMs(300_000)
        );
        assert_eq!(
            clamp.apply(&ws(0, "production"), Decision::RestartAfterMs(u32::MAX)),
            Decision::RestartAfterMs(3_600_000)
        );
        assert_eq!(
            clamp.apply(&ws(9, "production"), Decision::HotReload),
            Decision::HotReload
        );
    }

    /// The JSON the host reads (`molecule ext test` case files) and writes (shadow reports)
    /// keeps its shape now that the types are the ones the guest SDK uses.
    #[test]
    fn triggers_decisions_and_workspaces_keep_their_json_shape() {
        let triggers = [
            (
                Trigger::FilesWritten(vec!["a.md".into()]),
                json!({ "kind": "files_written", "paths": ["a.md"] }),
            ),
            (
                Trigger::SecretsChanged(vec!["KEY".into()]),
                json!({ "kind": "secrets_changed", "keys": ["KEY"] }),
            ),
            (
                Trigger::PluginInstalled(PluginInstalled {
                    name: "p".into(),
                    reload: Reload::Cold("why".into()),
                }),
                json!({ "kind": "plugin_installed", "name": "p", "reload": { "kind": "cold", "reason": "why" } }),
            ),
            (Trigger::ConfigChanged, json!({ "kind": "config_changed" })),
            (
                Trigger::AgentExited(-1),
                json!({ "kind": "agent_exited", "code": -1 }),
            ),
            (
                Trigger::DriftApplied(DriftApplied {
                    plugin: "p".into(),
                    already_updated: 2,
                }),
                json!({ "kind": "drift_applied", "plugin": "p", "already_updated": 2 }),
            ),
        ];
        for (trigger, expected) in triggers {
            assert_eq!(serde_json::to_value(&trigger).unwrap(), expected);
            assert_eq!(
                serde_json::from_value::<Trigger>(expected).unwrap(),
                trigger
            );
        }
        assert_eq!(
            serde_json::to_value(Decision::RestartAfterMs(5)).unwrap(),
            json!({ "kind": "restart_after_ms", "ms": 5 })
        );
        assert_eq!(
            serde_json::to_value(Decision::HotReload).unwrap(),
            json!({ "kind": "hot_reload" })
        );
        assert_eq!(
            serde_json::to_value(Reload::Hot).unwrap(),
            json!({ "kind": "hot" })
        );
        let beta = json!({ "id": "id", "name": "w", "runtime": "langgraph", "tier": 3, "status": "online", "update_tier": "beta", "recent_restarts": 0 });
        let read: WorkspaceInfo = serde_json::from_value(beta.clone()).unwrap();
        assert_eq!(read.update_tier, UpdateTier::Other("beta".into()));
        assert_eq!(serde_json::to_value(&read).unwrap(), beta);
        assert_eq!(
            serde_json::to_value(ws(0, "canary")).unwrap()["update_tier"],
            json!("canary")
        );
    }
}
