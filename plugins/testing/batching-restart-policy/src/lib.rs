//! Test guest: a second restart policy for shadow tests. It answers exactly like the default
//! policy except for `config-changed`, where it waits a minute so bursts of edits cost one
//! restart. Shadowed beside the default, it agrees on every trigger but that one.

use molecule_guest::{Decision, RestartPolicy, Trigger, WorkspaceInfo, default_policy};

/// How long a config change waits.
pub const CONFIG_DELAY_MS: u32 = 60_000;

#[derive(Debug)]
pub struct BatchingPolicy;

impl RestartPolicy for BatchingPolicy {
    fn decide(workspace: &WorkspaceInfo, trigger: &Trigger) -> Decision {
        match trigger {
            Trigger::ConfigChanged => Decision::RestartAfterMs(CONFIG_DELAY_MS),
            _ => default_policy::decide(workspace, trigger),
        }
    }
}

molecule_guest::export_restart_policy!(BatchingPolicy);

#[cfg(test)]
mod tests {
    use super::*;
    use molecule_guest::UpdateTier;

    fn ws() -> WorkspaceInfo {
        WorkspaceInfo {
            id: "id".into(),
            name: "w".into(),
            runtime: "langgraph".into(),
            tier: 3,
            status: "online".into(),
            update_tier: UpdateTier::Production,
            recent_restarts: 0,
        }
    }

    #[test]
    fn only_config_changes_differ_from_the_default() {
        assert_eq!(
            BatchingPolicy::decide(&ws(), &Trigger::ConfigChanged),
            Decision::RestartAfterMs(CONFIG_DELAY_MS)
        );
        let crash = Trigger::AgentExited(1);
        assert_eq!(
            BatchingPolicy::decide(&ws(), &crash),
            default_policy::decide(&ws(), &crash)
        );
    }
}
