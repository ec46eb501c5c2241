//! Live tokens held in memory by hash, so a request's credential is not a database read.
//!
//! Only tokens found live are kept (an unknown bearer is always read again: a token issued a
//! moment ago works at once, and a flood of random bearers fills nothing). The event bus keeps
//! the set honest on every replica ([`crate::events::Cache`]): a revoked token, a workspace's
//! rotated or removed tokens, are forgotten as soon as the invalidation arrives, everything
//! when the relay lost its connection; an expired token is refused from its expiry time; and no
//! entry is trusted past the revalidation bound without reading the database again.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::events::held::Held;
use crate::events::{Cache, Invalidation};

/// Entries held at most; past it, stale ones go first, then all of them.
const CAPACITY: usize = 10_000;

/// Whose a live token is, with its id (for its last-use stamp and its revocation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    Org { token: Uuid },
    Workspace { token: Uuid, workspace: Uuid },
}

impl Holder {
    fn token(self) -> Uuid {
        match self {
            Holder::Org { token } | Holder::Workspace { token, .. } => token,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    holder: Holder,
    expires_at: Option<DateTime<Utc>>,
}

/// The live tokens, by SHA-256.
#[derive(Debug)]
pub struct LiveTokens {
    entries: Held<[u8; 32], Entry>,
}

impl LiveTokens {
    pub fn new(revalidate: Duration) -> Self {
        LiveTokens {
            entries: Held::new(revalidate, CAPACITY),
        }
    }

    /// The holder of `hash` when it is held, fresh and not expired.
    pub fn get(&self, hash: &[u8; 32]) -> Option<Holder> {
        self.entries
            .get(hash)
            .filter(|e| e.expires_at.is_none_or(|at| at > Utc::now()))
            .map(|e| e.holder)
    }

    /// Where the invalidation count stands: read it before reading the database, and hand it to
    /// [`LiveTokens::keep`] with what was read.
    pub fn generation(&self) -> u64 {
        self.entries.generation()
    }

    /// Keeps a token read from the database as live, unless an invalidation came in between.
    pub fn keep(
        &self,
        hash: [u8; 32],
        holder: Holder,
        expires_at: Option<DateTime<Utc>>,
        generation: u64,
    ) {
        let entry = Entry { holder, expires_at };
        self.entries.keep(hash, entry, generation);
    }
}

impl Cache for LiveTokens {
    fn forget(&self, what: Invalidation) {
        match what {
            Invalidation::Token(id) => self.entries.forget_where(|e| e.holder.token() == id),
            Invalidation::Workspace(id) => self.entries.forget_where(
                |e| matches!(e.holder, Holder::Workspace { workspace, .. } if workspace == id),
            ),
            Invalidation::All => self.entries.clear(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_tokens_are_forgotten_by_id_by_workspace_at_expiry_and_past_the_bound() {
        let tokens = LiveTokens::new(Duration::from_secs(3600));
        let (org, ws, other) = ([1u8; 32], [2u8; 32], [3u8; 32]);
        let workspace = Uuid::new_v4();
        let org_holder = Holder::Org {
            token: Uuid::new_v4(),
        };
        let ws_holder = Holder::Workspace {
            token: Uuid::new_v4(),
            workspace,
        };
        let other_holder = Holder::Workspace {
            token: Uuid::new_v4(),
            workspace: Uuid::new_v4(),
        };
        let generation = tokens.generation();
        tokens.keep(org, org_holder, None, generation);
        tokens.keep(ws, ws_holder, None, generation);
        tokens.keep(other, other_holder, None, generation);
        assert_eq!(tokens.get(&org), Some(org_holder));

        tokens.forget(Invalidation::Token(org_holder.token()));
        assert_eq!(tokens.get(&org), None);
        assert_eq!(tokens.get(&ws), Some(ws_holder));
        tokens.forget(Invalidation::Workspace(workspace));
        assert_eq!(tokens.get(&ws), None);
        assert_eq!(tokens.get(&other), Some(other_holder));

        // A read that an invalidation overtook is not kept.
        let before = tokens.generation();
        tokens.forget(Invalidation::Token(Uuid::new_v4()));
        tokens.keep(ws, ws_holder, None, before);
        assert_eq!(tokens.get(&ws), None);

        // An expired token is refused from its expiry, whatever the bound.
        let expired = Utc::now() - chrono::Duration::seconds(1);
        tokens.keep(ws, ws_holder, Some(expired), tokens.generation());
        assert_eq!(tokens.get(&ws), None);

        tokens.forget(Invalidation::All);
        assert_eq!(tokens.get(&other), None);

        let brief = LiveTokens::new(Duration::from_millis(10));
        brief.keep(org, org_holder, None, brief.generation());
        assert_eq!(brief.get(&org), Some(org_holder));
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(brief.get(&org), None, "past the bound it is read again");
    }
}
