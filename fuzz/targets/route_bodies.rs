//! Fuzz target `route_bodies`: the JSON bodies of the busiest routes, deserialized into the
//! host's own request types as the handlers do (create workspace, register, heartbeat, a2a,
//! delegate) and passed through their checks. Every body is tried as every type. What a check
//! accepts must be within the limits the check promises.

use molecule_host::agents::client::Message;
use molecule_host::http::bodies::{CreateBody, DelegateBody, HeartbeatBody, RegisterBody};
use molecule_host::workspaces;

pub fn check(data: &[u8]) {
    if let Ok(body) = serde_json::from_slice::<CreateBody>(data) {
        let request = body.into_request();
        if let Ok(access) = workspaces::check(&request) {
            assert!(matches!(
                access.as_str(),
                "none" | "read_only" | "read_write"
            ));
            assert!(!request.name.trim().is_empty() && request.name.chars().count() <= 255);
            assert!((0..=4).contains(&request.tier));
            assert!(request.budget_limit.is_none_or(|b| b >= 0));
            if access != "none" {
                assert!(request.workspace_dir.is_some());
            }
            if let Some(dir) = &request.workspace_dir {
                assert!(dir.starts_with('/') && !dir.split('/').any(|p| p == ".."));
            }
        }
    }
    if let Ok(body) = serde_json::from_slice::<RegisterBody>(data) {
        if let Ok(Some(mode)) = body.delivery_mode() {
            assert!(mode == "push" || mode == "poll");
        }
        let _ = body.check_card();
    }
    if let Ok(body) = serde_json::from_slice::<HeartbeatBody>(data)
        && let Ok(hb) = body.check()
    {
        let report = hb.report;
        assert!((0.0..=1.0).contains(&report.error_rate));
        assert!(report.active_tasks >= 0 && report.uptime_seconds >= 0);
        for text in [&report.sample_error, &report.current_task]
            .into_iter()
            .flatten()
        {
            assert!(text.chars().count() <= 4096);
        }
        assert_ne!(report.current_task.as_deref(), Some(""));
        assert!(
            report
                .monthly_spend
                .is_none_or(|s| s > 0 && s <= 1_000_000_000_000)
        );
    }
    if let Ok(raw) = serde_json::from_slice::<serde_json::Value>(data)
        && let Ok(message) = Message::normalize(raw)
    {
        assert_eq!(message.body["jsonrpc"], "2.0");
    }
    if let Ok(body) = serde_json::from_slice::<DelegateBody>(data) {
        let _ = body.target();
    }
}
