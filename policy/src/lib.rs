//! The built-in restart policy and the types a restart decision is made over, in one place for
//! both sides of the extension boundary.
//!
//! The guest SDK (`molecule-guest`) re-exports these types as its own and exports [`decide`] as
//! the `default-restart-policy` component; the host runs the same [`decide`] natively as its
//! fallback when a policy component fails or none is active. The host's tests compare the
//! component's answers with this function, so the two cannot drift apart.
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

mod types;

pub use types::{
    Decision, DriftApplied, PluginInstalled, Reload, Trigger, UpdateTier, WorkspaceInfo,
};

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
mod tests;
