//! Test guest: a classifier that answers `cold` with a line per change it received (kind,
//! path, digests) after the number of calls this instance has answered. The host's tests
//! compare its answer with `echo-classifier-0-1-0`'s, which receives the same changes through
//! the 0.1.0 `classify` interface, and check that every call counts 1: a fresh instance per
//! call starts from the component's initial memory, whatever the previous call wrote.

use std::sync::atomic::{AtomicU32, Ordering};

use molecule_guest::{Change, Changes, Classifier, Reload};

static CALLS: AtomicU32 = AtomicU32::new(0);

#[derive(Debug)]
pub struct EchoClassifier;

impl Classifier for EchoClassifier {
    fn classify_changes(changes: Changes<'_>) -> Reload {
        let call = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
        Reload::cold(echo(call, changes.iter()))
    }
}

molecule_guest::export_classifier!(EchoClassifier);

/// `call <n>` and a line per change: `<kind> <path> <old|-> <new|->`.
pub fn echo<'a>(call: u32, changes: impl Iterator<Item = Change<'a>>) -> String {
    let mut out = format!("call {call}");
    for c in changes {
        out.push_str(&format!(
            "\n{} {} {} {}",
            c.kind,
            c.path,
            c.old_digest.unwrap_or("-"),
            c.new_digest.unwrap_or("-")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use molecule_guest::FileChange;

    #[test]
    fn every_change_is_echoed_in_order() {
        let changes = [
            FileChange::modified("a/SKILL.md", "sha256:1", "sha256:2"),
            FileChange::removed("b", "sha256:3"),
        ];
        assert_eq!(
            echo(1, Changes::from(&changes).iter()),
            "call 1\nmodified a/SKILL.md sha256:1 sha256:2\nremoved b sha256:3 -"
        );
    }
}
