//! The default restart policy as a component. All of its logic is
//! [`molecule_guest::default_policy::decide`], which the host also runs natively as the
//! fallback when a policy component fails; this crate only exports it.

use molecule_guest::RestartPolicy;

/// Exported as the component's `decide`; the trait's default method is the default policy.
#[derive(Debug)]
pub struct DefaultRestartPolicy;

impl RestartPolicy for DefaultRestartPolicy {}

molecule_guest::export_restart_policy!(DefaultRestartPolicy);

#[cfg(test)]
mod tests {
    use molecule_guest::{
        Decision, DriftApplied, Trigger, UpdateTier, WorkspaceInfo, default_policy,
    };

    use super::*;

    #[test]
    fn the_component_answers_exactly_what_the_default_policy_answers() {
        let triggers = [
            Trigger::ConfigChanged,
            Trigger::AgentExited(0),
            Trigger::AgentExited(1),
            Trigger::FilesWritten(vec!["config.yaml".into()]),
            Trigger::DriftApplied(DriftApplied {
                plugin: "review".into(),
                already_updated: 0,
            }),
        ];
        for update_tier in [UpdateTier::Canary, UpdateTier::Production] {
            for recent_restarts in [0, 3] {
                let ws = WorkspaceInfo {
                    id: "1".into(),
                    name: "Dev Lead".into(),
                    runtime: "langgraph".into(),
                    tier: 2,
                    status: "online".into(),
                    update_tier: update_tier.clone(),
                    recent_restarts,
                };
                for trigger in &triggers {
                    assert_eq!(
                        <DefaultRestartPolicy as RestartPolicy>::decide(&ws, trigger),
                        default_policy::decide(&ws, trigger)
                    );
                }
            }
        }
        let ws = WorkspaceInfo {
            id: "1".into(),
            name: "QA".into(),
            runtime: "langgraph".into(),
            tier: 3,
            status: "online".into(),
            update_tier: UpdateTier::Production,
            recent_restarts: 2,
        };
        assert_eq!(
            <DefaultRestartPolicy as RestartPolicy>::decide(&ws, &Trigger::AgentExited(9)),
            Decision::RestartAfterMs(4_000)
        );
    }
}
