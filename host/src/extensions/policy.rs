//! The safety net around extension answers: the native default restart policy (used when the
//! active policy fails), the classifier's fallback, and the clamp that keeps any policy from
//! causing a restart storm.

use super::types::{Decision, Reload, Trigger, WorkspaceInfo};

/// Longest exponential back-off after repeated crashes.
const MAX_BACKOFF_MS: u32 = 5 * 60 * 1000;
/// How long production workspaces wait during a drift rollout, so canaries go first.
const PRODUCTION_DRIFT_DELAY_MS: u32 = 60 * 1000;

/// The built-in restart policy: the same rules as the `default-restart-policy` component, in
/// native code, so a failing or missing component never leaves the host without an answer.
pub fn default_decide(workspace: &WorkspaceInfo, trigger: &Trigger) -> Decision {
    match trigger {
        Trigger::PluginInstalled {
            reload: Reload::Hot,
            ..
        } => Decision::HotReload,
        Trigger::PluginInstalled {
            reload: Reload::Cold(_),
            ..
        }
        | Trigger::FilesWritten { .. }
        | Trigger::SecretsChanged { .. }
        | Trigger::ConfigChanged => Decision::RestartNow,
        Trigger::AgentExited { code } => {
            if *code == 0 && workspace.recent_restarts == 0 {
                Decision::RestartNow
            } else {
                let exponent = workspace.recent_restarts.min(20);
                Decision::RestartAfterMs(1000u32.saturating_mul(1 << exponent).min(MAX_BACKOFF_MS))
            }
        }
        Trigger::DriftApplied { .. } if workspace.update_tier == "canary" => Decision::RestartNow,
        Trigger::DriftApplied { .. } => Decision::RestartAfterMs(PRODUCTION_DRIFT_DELAY_MS),
    }
}

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

    fn ws(recent_restarts: u32, update_tier: &str) -> WorkspaceInfo {
        WorkspaceInfo {
            id: "id".into(),
            name: "w".into(),
            runtime: "langgraph".into(),
            tier: 3,
            status: "online".into(),
            update_tier: update_tier.into(),
            recent_restarts,
        }
    }

    #[test]
    fn the_default_policy_follows_the_reload_kind_and_backs_off_crash_loops() {
        let hot = Trigger::PluginInstalled {
            name: "p".into(),
            reload: Reload::Hot,
        };
        let cold = Trigger::PluginInstalled {
            name: "p".into(),
            reload: Reload::Cold("x".into()),
        };
        assert_eq!(
            default_decide(&ws(0, "production"), &hot),
            Decision::HotReload
        );
        assert_eq!(
            default_decide(&ws(0, "production"), &cold),
            Decision::RestartNow
        );
        assert_eq!(
            default_decide(&ws(0, "production"), &Trigger::AgentExited { code: 0 }),
            Decision::RestartNow
        );
        assert_eq!(
            default_decide(&ws(0, "production"), &Trigger::AgentExited { code: 1 }),
            Decision::RestartAfterMs(1000)
        );
        assert_eq!(
            default_decide(&ws(3, "production"), &Trigger::AgentExited { code: 1 }),
            Decision::RestartAfterMs(8000)
        );
        assert_eq!(
            default_decide(&ws(40, "production"), &Trigger::AgentExited { code: 1 }),
            Decision::RestartAfterMs(MAX_BACKOFF_MS)
        );
        let drift = Trigger::DriftApplied {
            plugin: "p".into(),
            already_updated: 0,
        };
        assert_eq!(
            default_decide(&ws(0, "canary"), &drift),
            Decision::RestartNow
        );
        assert_eq!(
            default_decide(&ws(0, "production"), &drift),
            Decision::RestartAfterMs(PRODUCTION_DRIFT_DELAY_MS)
        );
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
}
