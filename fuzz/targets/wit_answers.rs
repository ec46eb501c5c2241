//! Fuzz target `wit_answers`: what components return across the WIT boundary, as the host
//! converts and checks it ([`molecule_host::extensions::boundary`]): a hostile resolver
//! answering absurd names, revisions and error messages, a classifier with an endless reason, a
//! restart policy asking for any delay. The input is decoded by [`Input`] into one answer (and
//! the workspace and clamp a decision is made for); the host's checks must hold whatever it is.

use molecule_host::extensions::boundary;
use molecule_host::extensions::policy::Clamp;
use molecule_host::extensions::types::{
    Decision, FetchError, Fetched, Reload, UpdateTier, WorkspaceInfo,
};

/// The longest guest text the host keeps, in bytes, with its ellipsis (see `bindings::cut`).
const MAX_KEPT_GUEST_TEXT: usize = 2048 + '…'.len_utf8();
/// A credential the fake redaction removes; it must never reach an error body.
const SECRET: &str = "ghp_s3cr3tT0ken";

pub fn check(data: &[u8]) {
    let mut input = Input(data);
    match input.byte() % 4 {
        0 => classifier(&mut input),
        1 => restart_policy(&mut input),
        2 => fetch(&mut input),
        _ => revision(&mut input),
    }
}

fn classifier(input: &mut Input<'_>) {
    let answer = if input.byte().is_multiple_of(2) {
        Reload::Hot
    } else {
        Reload::Cold(input.text())
    };
    match (boundary::classifier_answer(&answer), answer) {
        (Reload::Hot, Reload::Hot) => {}
        (Reload::Cold(kept), Reload::Cold(given)) => {
            assert!(
                kept.len() <= MAX_KEPT_GUEST_TEXT,
                "a classifier's reason of {} bytes is kept whole",
                kept.len()
            );
            assert!(given.starts_with(kept.trim_end_matches('…')));
        }
        (kept, given) => panic!("{given:?} became {kept:?}"),
    }
}

fn restart_policy(input: &mut Input<'_>) {
    let answer = match input.byte() % 4 {
        0 => Decision::KeepRunning,
        1 => Decision::HotReload,
        2 => Decision::RestartNow,
        _ => Decision::RestartAfterMs(input.u32()),
    };
    let workspace = WorkspaceInfo {
        id: "00000000-0000-0000-0000-000000000000".into(),
        name: "fuzz".into(),
        runtime: "langgraph".into(),
        tier: 3,
        status: "online".into(),
        update_tier: UpdateTier::parse("production"),
        recent_restarts: input.u32(),
    };
    let clamp = if input.byte().is_multiple_of(2) {
        Clamp::default()
    } else {
        Clamp {
            min_delay_ms: input.u32(),
            max_restarts: input.u32(),
            cooldown_ms: input.u32(),
            max_delay_ms: input.u32(),
        }
    };
    let decided = boundary::restart_decision(answer, &clamp, &workspace);
    match (answer, decided) {
        (Decision::KeepRunning | Decision::HotReload, d) => assert_eq!(d, answer),
        (_, Decision::RestartNow) => {}
        (_, Decision::RestartAfterMs(ms)) => {
            assert!(ms > 0 && ms <= clamp.max_delay_ms, "{ms} ms past {clamp:?}");
        }
        (_, other) => panic!("a restart became {other:?}"),
    }
}

fn guest_error(input: &mut Input<'_>) -> FetchError {
    let message = input.text();
    match input.byte() % 6 {
        0 => FetchError::NotFound(message),
        1 => FetchError::InvalidSource(message),
        2 => FetchError::Denied(message),
        3 => FetchError::Upstream(message),
        4 => FetchError::Timeout,
        _ => FetchError::TooLarge(message),
    }
}

fn redact(text: &str) -> String {
    text.replace(SECRET, "[redacted]")
}

fn assert_public(error: &FetchError) {
    if let Some(message) = error.message() {
        assert!(
            message.chars().count() <= molecule_host::extensions::reason::MAX_REASON_CHARS,
            "an error body of {} characters",
            message.chars().count()
        );
        assert!(!message.chars().any(char::is_control), "{message:?}");
        assert!(
            !message.contains(SECRET),
            "{message:?} leaks the credential"
        );
    }
}

fn fetch(input: &mut Input<'_>) {
    let answer = if input.byte().is_multiple_of(2) {
        Ok(Fetched {
            name: input.text(),
            revision: input.text(),
        })
    } else {
        Err(guest_error(input))
    };
    match boundary::fetch_answer(answer, &redact) {
        Ok(fetched) => {
            // The name becomes a directory under the workspace's plugins/.
            let dir = molecule_host::safefs::RelPath::parse(&fetched.name)
                .expect("an accepted plugin name is a path");
            assert!(dir.parent().is_none() && !fetched.name.starts_with('.'));
            assert!(molecule_host::plugins::valid_name(&fetched.name));
            assert_revision(&fetched.revision);
        }
        Err(Ok(error)) => assert_public(&error),
        Err(Err(_malformed)) => {}
    }
}

fn revision(input: &mut Input<'_>) {
    let answer = if input.byte().is_multiple_of(2) {
        Ok(input.text())
    } else {
        Err(guest_error(input))
    };
    match boundary::revision_answer(answer, &redact) {
        Ok(revision) => assert_revision(&revision),
        Err(Ok(error)) => assert_public(&error),
        Err(Err(_malformed)) => {}
    }
}

fn assert_revision(revision: &str) {
    assert!(!revision.is_empty() && revision.len() <= 256);
    assert!(
        revision.bytes().all(|b| b.is_ascii_graphic()),
        "{revision:?}"
    );
}

/// Values taken from the front of the fuzzer's bytes; an exhausted input gives zeros. (The
/// `arbitrary` crate would do this too, but the replay test runs on stable with the host's
/// dev-dependencies only.)
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        *first
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    /// A text of up to 255 bytes repeated up to 1,024 times (so a short input can stand for
    /// the absurdly long answer a hostile guest gives).
    fn text(&mut self) -> String {
        let len = usize::from(self.byte());
        let repeat = usize::from(u16::from_le_bytes([self.byte(), self.byte()])) % 1024 + 1;
        let take = len.min(self.0.len());
        let (chunk, rest) = self.0.split_at(take);
        self.0 = rest;
        String::from_utf8_lossy(chunk).repeat(repeat)
    }
}
