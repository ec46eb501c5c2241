//! What the host does with each answer a component gives across the WIT boundary, as plain
//! functions: the generated value converted into the domain type ([`super::bindings`]) and
//! checked the way a real call's answer is. They need no component, so tests and the fuzz
//! targets (`fuzz/targets/wit_answers.rs`) can hand them hostile answers directly; the calls
//! themselves ([`super::runtime`], the resolver calls of [`super::registry`]) use the same checks.

use super::bindings::classifier::molecule::plugin::types as wit;
use super::policy::Clamp;
use super::reason;
use super::types::{Decision, FetchError, Fetched, Reload, WorkspaceInfo};

/// A classifier's answer as the host keeps it (a cold reason is cut to a bounded length).
pub fn classifier_answer(answer: &Reload) -> Reload {
    Reload::from(wit::Reload::from(answer))
}

/// A restart policy's answer as the host acts on it: converted, then clamped.
pub fn restart_decision(answer: Decision, clamp: &Clamp, workspace: &WorkspaceInfo) -> Decision {
    let generated = match answer {
        Decision::KeepRunning => wit::Decision::KeepRunning,
        Decision::HotReload => wit::Decision::HotReload,
        Decision::RestartNow => wit::Decision::RestartNow,
        Decision::RestartAfterMs(ms) => wit::Decision::RestartAfterMs(ms),
    };
    clamp.apply(workspace, Decision::from(generated))
}

/// A resolver's `fetch` answer as the host acts on it: an error converted and made public
/// (after `redact`, which removes the credentials the host attached), a success converted and
/// checked. `Err(Err(reason))` is an answer the host cannot use.
pub fn fetch_answer(
    answer: Result<Fetched, FetchError>,
    redact: &dyn Fn(&str) -> String,
) -> Result<Fetched, Result<FetchError, &'static str>> {
    match answer {
        Ok(fetched) => {
            let fetched = Fetched::from(wit::Fetched {
                name: fetched.name,
                revision: fetched.revision,
            });
            check_fetched(&fetched).map_err(Err)?;
            Ok(fetched)
        }
        Err(error) => Err(Ok(public_error(guest_error(error), redact))),
    }
}

/// A resolver's `resolve-revision` answer as the host acts on it (see [`fetch_answer`]).
pub fn revision_answer(
    answer: Result<String, FetchError>,
    redact: &dyn Fn(&str) -> String,
) -> Result<String, Result<FetchError, &'static str>> {
    match answer {
        Ok(revision) => {
            check_revision(&revision).map_err(Err)?;
            Ok(revision)
        }
        Err(error) => Err(Ok(public_error(guest_error(error), redact))),
    }
}

/// A guest's error as the generated conversion keeps it (messages cut to a bounded length).
fn guest_error(error: FetchError) -> FetchError {
    FetchError::from(wit::FetchError::from(error))
}

/// A resolver's error message made fit for an error body (see [`reason::public`]).
pub fn public_error(error: FetchError, redact: &dyn Fn(&str) -> String) -> FetchError {
    error.map_message(|m| reason::public(&redact(&m)))
}

/// Whether the host can use what a fetch answered; the reason when not.
pub fn check_fetched(fetched: &Fetched) -> Result<(), &'static str> {
    if !valid_plugin_name(&fetched.name) {
        return Err("a plugin name that is not 1-128 of A-Z a-z 0-9 . _ -");
    }
    check_revision(&fetched.revision)
}

/// Whether the host can record a revision a resolver answered; the reason when not.
pub fn check_revision(revision: &str) -> Result<(), &'static str> {
    if valid_revision(revision) {
        Ok(())
    } else {
        Err("a revision that is not 1-256 printable characters")
    }
}

/// A plugin name the host can use as a directory name: 1-128 of `A-Z a-z 0-9 . _ -`, starting
/// with a letter or digit, no `..` (the rule the guest SDK's `validate_plugin_name` applies).
pub fn valid_plugin_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A revision the host can record: a commit id, a `sha256:` digest or another short token.
pub fn valid_revision(revision: &str) -> bool {
    !revision.is_empty() && revision.len() <= 256 && revision.bytes().all(|b| b.is_ascii_graphic())
}
