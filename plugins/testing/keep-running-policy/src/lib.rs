//! Test guest: a restart policy that answers "keep running" for file writes (the agent re-reads
//! its files) and follows the default policy for everything else. The host's lifecycle tests
//! install it to prove that a policy's answer is obeyed.

use molecule_guest::{Decision, RestartPolicy, Trigger, WorkspaceInfo, default_policy};

#[derive(Debug)]
pub struct KeepRunningPolicy;

impl RestartPolicy for KeepRunningPolicy {
    fn decide(workspace: &WorkspaceInfo, trigger: &Trigger) -> Decision {
        match trigger {
            Trigger::FilesWritten(_) => Decision::KeepRunning,
            _ => default_policy::decide(workspace, trigger),
        }
    }
}

molecule_guest::export_restart_policy!(KeepRunningPolicy);

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
    fn file_writes_keep_running_and_crashes_follow_the_default() {
        assert_eq!(
            KeepRunningPolicy::decide(&ws(), &Trigger::FilesWritten(vec!["a".into()])),
            Decision::KeepRunning
        );
        let crash = Trigger::AgentExited(1);
        assert_eq!(
            KeepRunningPolicy::decide(&ws(), &crash),
            default_policy::decide(&ws(), &crash)
        );
    }
}
