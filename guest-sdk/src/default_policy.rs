//! The built-in restart policy, as a pure function.
//!
//! The `default-restart-policy` component exports exactly this. The host mirrors it natively
//! as its fallback when a policy component fails, and its tests compare the component's answers
//! with that mirror, so a change here must be made there too.
//!
//! | trigger | decision |
//! | --- | --- |
//! | plugin installed, classified hot | hot reload |
//! | plugin installed, classified cold | restart now |
//! | files written, secrets changed, config changed | restart now |
//! | agent exited with code 0 and no recent restarts | restart now |
//! | agent exited otherwise | restart after 1 s × 2^recent restarts, at most 5 min |
//! | drift applied, canary workspace | restart now |
//! | drift applied, production (or unknown tier) workspace | restart after 60 s, so canaries go first |
//!
//! Whether a workspace should be touched at all (paused, hibernated, removed) is the host's
//! lifecycle decision, made before a policy is asked.

use crate::types::{Decision, Reload, Trigger, UpdateTier, WorkspaceInfo};

/// First crash-loop delay.
pub const CRASH_BACKOFF_BASE_MS: u32 = 1_000;
/// Longest crash-loop delay.
pub const CRASH_BACKOFF_MAX_MS: u32 = 5 * 60 * 1_000;
/// How long production workspaces wait when a drift update is applied.
pub const PRODUCTION_DRIFT_DELAY_MS: u32 = 60_000;

/// What the default policy does for `trigger` on `workspace`.
pub fn decide(workspace: &WorkspaceInfo, trigger: &Trigger) -> Decision {
    match trigger {
        Trigger::PluginInstalled(installed) => match installed.reload {
            Reload::Hot => Decision::HotReload,
            Reload::Cold(_) => Decision::RestartNow,
        },
        Trigger::FilesWritten(_) | Trigger::SecretsChanged(_) | Trigger::ConfigChanged => {
            Decision::RestartNow
        }
        Trigger::AgentExited(code) => after_exit(*code, workspace.recent_restarts),
        Trigger::DriftApplied(_) => match workspace.update_tier {
            UpdateTier::Canary => Decision::RestartNow,
            UpdateTier::Production | UpdateTier::Other(_) => {
                Decision::RestartAfterMs(PRODUCTION_DRIFT_DELAY_MS)
            }
        },
    }
}

/// A clean first exit restarts at once; anything else backs off exponentially with the number
/// of recent restarts.
pub fn after_exit(code: i32, recent_restarts: u32) -> Decision {
    if code == 0 && recent_restarts == 0 {
        Decision::RestartNow
    } else {
        Decision::RestartAfterMs(crash_backoff_ms(recent_restarts))
    }
}

/// `1 s × 2^recent_restarts`, capped at 5 minutes.
pub fn crash_backoff_ms(recent_restarts: u32) -> u32 {
    let delay = u64::from(CRASH_BACKOFF_BASE_MS) << recent_restarts.min(32);
    u32::try_from(delay.min(u64::from(CRASH_BACKOFF_MAX_MS))).unwrap_or(CRASH_BACKOFF_MAX_MS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{DriftApplied, PluginInstalled};

    fn workspace(update_tier: UpdateTier, recent_restarts: u32) -> WorkspaceInfo {
        WorkspaceInfo {
            id: "7f9c".into(),
            name: "QA".into(),
            runtime: "langgraph".into(),
            tier: 3,
            status: "online".into(),
            update_tier,
            recent_restarts,
        }
    }

    fn installed(reload: Reload) -> Trigger {
        Trigger::PluginInstalled(PluginInstalled {
            name: "review".into(),
            reload,
        })
    }

    fn drift() -> Trigger {
        Trigger::DriftApplied(DriftApplied {
            plugin: "review".into(),
            already_updated: 2,
        })
    }

    #[test]
    fn a_cold_install_restarts_and_a_hot_one_reloads() {
        let ws = workspace(UpdateTier::Production, 0);
        assert_eq!(
            decide(&ws, &installed(Reload::cold("plugin.yaml changed"))),
            Decision::RestartNow
        );
        assert_eq!(decide(&ws, &installed(Reload::Hot)), Decision::HotReload);
    }

    #[test]
    fn written_files_secrets_and_config_restart_now() {
        let ws = workspace(UpdateTier::Production, 3);
        assert_eq!(
            decide(&ws, &Trigger::FilesWritten(vec!["config.yaml".into()])),
            Decision::RestartNow
        );
        assert_eq!(
            decide(&ws, &Trigger::SecretsChanged(vec!["OPENAI_API_KEY".into()])),
            Decision::RestartNow
        );
        assert_eq!(decide(&ws, &Trigger::ConfigChanged), Decision::RestartNow);
    }

    #[test]
    fn a_clean_first_exit_restarts_now() {
        assert_eq!(
            decide(
                &workspace(UpdateTier::Production, 0),
                &Trigger::AgentExited(0)
            ),
            Decision::RestartNow
        );
    }

    #[test]
    fn crashes_back_off_exponentially_up_to_five_minutes() {
        let delays: Vec<Decision> = (0..12)
            .map(|n| {
                decide(
                    &workspace(UpdateTier::Canary, n),
                    &Trigger::AgentExited(137),
                )
            })
            .collect();
        let expected: Vec<Decision> = [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]
            .into_iter()
            .map(|s| Decision::RestartAfterMs(s * 1_000))
            .collect();
        assert_eq!(delays, expected);
        assert_eq!(
            after_exit(0, 1),
            Decision::RestartAfterMs(2_000),
            "a clean exit in a loop also backs off"
        );
        assert_eq!(crash_backoff_ms(u32::MAX), CRASH_BACKOFF_MAX_MS);
        assert_eq!(after_exit(-1, 0), Decision::RestartAfterMs(1_000));
    }

    #[test]
    fn drift_restarts_canaries_first_and_production_later() {
        assert_eq!(
            decide(&workspace(UpdateTier::Canary, 0), &drift()),
            Decision::RestartNow
        );
        assert_eq!(
            decide(&workspace(UpdateTier::Production, 0), &drift()),
            Decision::RestartAfterMs(PRODUCTION_DRIFT_DELAY_MS)
        );
        assert_eq!(
            decide(&workspace(UpdateTier::Other("beta".into()), 0), &drift()),
            Decision::RestartAfterMs(PRODUCTION_DRIFT_DELAY_MS)
        );
    }
}
