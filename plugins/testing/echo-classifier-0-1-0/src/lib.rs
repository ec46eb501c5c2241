//! Test guest: `echo-classifier`'s answer from a component of `molecule:plugin@0.1.0`, the
//! version before `classify-packed`: it exports `classify` and receives a list of records with
//! owned strings. The host must keep calling such components, so its tests check that this one
//! and `echo-classifier` (0.1.1, packed) answer the same for the same changes.

use std::sync::atomic::{AtomicU32, Ordering};

wit_bindgen::generate!({
    path: "../../../wit/v0.1.0",
    world: "classifier",
});

use exports::molecule::plugin::classify::Guest;
use molecule::plugin::types::{ChangeKind, FileChange, Reload};

static CALLS: AtomicU32 = AtomicU32::new(0);

struct Echo;

impl Guest for Echo {
    fn classify(changes: Vec<FileChange>) -> Reload {
        let call = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
        let mut out = format!("call {call}");
        for c in &changes {
            let kind = match c.kind {
                ChangeKind::Added => "added",
                ChangeKind::Removed => "removed",
                ChangeKind::Modified => "modified",
            };
            out.push_str(&format!(
                "\n{kind} {} {} {}",
                c.path,
                c.old_digest.as_deref().unwrap_or("-"),
                c.new_digest.as_deref().unwrap_or("-")
            ));
        }
        Reload::Cold(out)
    }
}

export!(Echo);
