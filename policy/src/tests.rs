//! The default policy's rules, one test per row of the table in the crate docs.

use super::*;

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

/// The host's own test of its native fallback, kept where the code went.
#[test]
fn the_default_policy_follows_the_reload_kind_and_backs_off_crash_loops() {
    let hot = installed(Reload::Hot);
    let cold = installed(Reload::Cold("x".into()));
    let production = |n| workspace(UpdateTier::Production, n);
    assert_eq!(decide(&production(0), &hot), Decision::HotReload);
    assert_eq!(decide(&production(0), &cold), Decision::RestartNow);
    assert_eq!(
        decide(&production(0), &Trigger::AgentExited(0)),
        Decision::RestartNow
    );
    assert_eq!(
        decide(&production(0), &Trigger::AgentExited(1)),
        Decision::RestartAfterMs(1000)
    );
    assert_eq!(
        decide(&production(3), &Trigger::AgentExited(1)),
        Decision::RestartAfterMs(8000)
    );
    assert_eq!(
        decide(&production(40), &Trigger::AgentExited(1)),
        Decision::RestartAfterMs(CRASH_BACKOFF_MAX_MS)
    );
    let drift = Trigger::DriftApplied(DriftApplied {
        plugin: "p".into(),
        already_updated: 0,
    });
    assert_eq!(
        decide(&workspace(UpdateTier::Canary, 0), &drift),
        Decision::RestartNow
    );
    assert_eq!(
        decide(&production(0), &drift),
        Decision::RestartAfterMs(PRODUCTION_DRIFT_DELAY_MS)
    );
}
