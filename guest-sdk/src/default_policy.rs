//! The built-in restart policy, as a pure function.
//!
//! The `default-restart-policy` component exports exactly this, and the host runs the very
//! same code natively as its fallback when a policy component fails: both take it from the
//! `molecule-policy` crate, so there is one implementation. The rules:
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

pub use molecule_policy::{
    CRASH_BACKOFF_BASE_MS, CRASH_BACKOFF_MAX_MS, PRODUCTION_DRIFT_DELAY_MS, after_exit,
    crash_backoff_ms, decide,
};
