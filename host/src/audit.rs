//! The audit ledger: security-relevant actions appended to `audit_events` as an HMAC chain.
//!
//! Each row is sealed with HMAC-SHA256 over the previous row's `hmac` and its own fields in a
//! fixed encoding ([`Ledger::seal`]), so changing, inserting or removing any row breaks every
//! link after it, and [`verify`] names the first broken one. The key never enters the database:
//! it is derived from `SECRETS_ENCRYPTION_KEY` (HMAC of a fixed label under that key), which
//! production requires. Without one (development only) a fixed development key seals the chain,
//! which then detects accidents, not an attacker who can read this source; `verify` says which.
//!
//! What is recorded (`event_type`): `token.minted`, `token.revoked`, `org_token.minted`,
//! `org_token.revoked`, `secret.set`, `secret.deleted`, `global_secret.set`,
//! `global_secret.deleted`, `plugin.installed`, `plugin.uninstalled`, `extension.installed`,
//! `extension.activated`, `extension.rolled_back`, `extension.shadowed`,
//! `extension.unshadowed`, `extension.deleted`, `memory.global_written`, `approval.decided`,
//! `workspace.moved`. Never a secret value or a token: names, ids and prefixes only.

use chrono::{SubsecRound as _, Utc};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::{Value, json};
use sha2::Sha256;
use uuid::Uuid;

use crate::auth::Principal;
use crate::services::Services;
use crate::store::audit::{self as rows, AuditRow};
use crate::store::{Db, StoreResult};

type HmacSha256 = Hmac<Sha256>;

/// Where the ledger's key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    /// Derived from `SECRETS_ENCRYPTION_KEY`.
    Derived,
    /// The fixed development key (no encryption key is configured).
    Development,
}

/// The key that seals the chain.
pub struct Ledger {
    key: HmacSha256,
    pub origin: KeyOrigin,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("origin", &self.origin)
            .finish()
    }
}

const KEY_LABEL: &[u8] = b"molecule audit ledger v1";
const DEVELOPMENT_KEY: &[u8] = b"molecule audit ledger: development key, not a secret";

impl Ledger {
    /// The ledger keyed from the secrets encryption key, or the development key without one.
    pub fn new(secrets_key: Option<&SecretString>) -> Ledger {
        let secret = secrets_key
            .map(|k| k.expose_secret().trim())
            .filter(|k| !k.is_empty());
        let (key, origin) = match secret {
            Some(secret) => {
                let mut derive =
                    HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
                derive.update(KEY_LABEL);
                (derive.finalize().into_bytes().to_vec(), KeyOrigin::Derived)
            }
            None => (DEVELOPMENT_KEY.to_vec(), KeyOrigin::Development),
        };
        Ledger {
            key: HmacSha256::new_from_slice(&key).expect("HMAC takes any key"),
            origin,
        }
    }

    /// The `hmac` of `row`: hex HMAC-SHA256 over `prev_hmac`, a newline, and the JSON array
    /// `[seq, id, event_type, actor, workspace_id, target, detail, created_at]` (`created_at` in
    /// RFC 3339 with microseconds, as both backends store it).
    pub fn seal(&self, row: &AuditRow) -> String {
        let fields = json!([
            row.seq,
            row.id,
            row.event_type,
            row.actor,
            row.workspace_id,
            row.target,
            row.detail,
            row.created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        ]);
        let mut mac = self.key.clone();
        mac.update(row.prev_hmac.as_bytes());
        mac.update(b"\n");
        mac.update(fields.to_string().as_bytes());
        hex(&mac.finalize().into_bytes())
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(64), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// Who did it: `admin` (the admin token or an org token) or `workspace:<id>` (a workspace's
/// token).
pub fn actor(principal: Principal) -> String {
    match principal {
        Principal::Admin => "admin".to_owned(),
        Principal::Workspace(id) => format!("workspace:{id}"),
    }
}

/// One action to record.
#[derive(Debug, Clone)]
pub struct Entry {
    pub event_type: &'static str,
    pub actor: String,
    pub workspace_id: Option<Uuid>,
    /// What it was done to: a token id, a secret's key, a plugin or extension name.
    pub target: Option<String>,
    pub detail: Value,
}

impl Entry {
    pub fn new(event_type: &'static str, principal: Principal) -> Entry {
        Entry {
            event_type,
            actor: actor(principal),
            workspace_id: None,
            target: None,
            detail: json!({}),
        }
    }

    pub fn workspace(mut self, id: Uuid) -> Self {
        self.workspace_id = Some(id);
        self
    }

    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    pub fn detail(mut self, detail: Value) -> Self {
        self.detail = detail;
        self
    }
}

/// Appends `entry` to the ledger after the action it records took effect.
pub async fn append(db: &Db, ledger: &Ledger, entry: Entry) -> StoreResult<AuditRow> {
    let row = AuditRow {
        seq: 0,
        id: Uuid::now_v7(),
        event_type: entry.event_type.to_owned(),
        actor: entry.actor,
        workspace_id: entry.workspace_id,
        target: entry.target,
        detail: entry.detail.to_string(),
        created_at: Utc::now().trunc_subsecs(6),
        prev_hmac: String::new(),
        hmac: String::new(),
    };
    rows::append(db, row, |row| ledger.seal(row)).await
}

/// [`append`] for an action already done: a failure is logged (at error: the ledger misses a
/// row), never undoes the action or fails its answer.
pub async fn record(svc: &Services, entry: Entry) {
    let event_type = entry.event_type;
    if let Err(err) = append(&svc.db, &svc.audit, entry).await {
        tracing::error!(event_type, error = ?err, "appending to the audit ledger failed");
    }
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every link holds.
    Intact { rows: u64 },
    /// The first row whose link does not hold, and why.
    Broken {
        rows_checked: u64,
        seq: i64,
        id: Option<Uuid>,
        reason: &'static str,
    },
}

/// How many rows [`verify`] reads at a time.
const VERIFY_PAGE: i64 = 1000;

/// Walks the whole chain from its first row and reports the first broken link: a row whose
/// `hmac` does not match its fields (it was edited), whose `prev_hmac` is not the row before's
/// `hmac`, or a gap in `seq` (a row was removed).
pub async fn verify(db: &Db, ledger: &Ledger) -> StoreResult<Verdict> {
    let (mut after, mut prev, mut checked) = (0i64, String::new(), 0u64);
    loop {
        let page = rows::page(db, after, VERIFY_PAGE).await?;
        if page.is_empty() {
            return Ok(Verdict::Intact { rows: checked });
        }
        for row in page {
            let broken = |reason| Verdict::Broken {
                rows_checked: checked,
                seq: row.seq,
                id: Some(row.id),
                reason,
            };
            if row.seq != after + 1 {
                return Ok(Verdict::Broken {
                    rows_checked: checked,
                    seq: after + 1,
                    id: None,
                    reason: "a row is missing",
                });
            }
            if row.prev_hmac != prev {
                return Ok(broken("prev_hmac is not the previous row's hmac"));
            }
            let expected = ledger.seal(&row);
            let matches: bool =
                subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), row.hmac.as_bytes()).into();
            if !matches {
                return Ok(broken("hmac does not match the row's fields"));
            }
            checked += 1;
            after = row.seq;
            prev = row.hmac;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(prev: &str) -> AuditRow {
        AuditRow {
            seq: 1,
            id: Uuid::from_u128(7),
            event_type: "secret.set".into(),
            actor: "admin".into(),
            workspace_id: Some(Uuid::from_u128(9)),
            target: Some("API_KEY".into()),
            detail: "{}".into(),
            created_at: chrono::DateTime::from_timestamp(1_700_000_000, 123_456_000)
                .expect("a time"),
            prev_hmac: prev.into(),
            hmac: String::new(),
        }
    }

    #[test]
    fn a_seal_covers_every_field_the_previous_link_and_the_key() {
        let ledger = Ledger::new(Some(&SecretString::from("k".repeat(32))));
        assert_eq!(ledger.origin, KeyOrigin::Derived);
        let sealed = ledger.seal(&row(""));
        assert_eq!(sealed.len(), 64);
        assert_eq!(sealed, ledger.seal(&row("")), "the same row seals the same");
        let changes: [fn(&mut AuditRow); 8] = [
            |r| r.seq = 2,
            |r| r.event_type = "secret.deleted".into(),
            |r| r.actor = "workspace:x".into(),
            |r| r.workspace_id = None,
            |r| r.target = Some("OTHER".into()),
            |r| r.detail = r#"{"a":1}"#.into(),
            |r| r.created_at += chrono::Duration::microseconds(1),
            |r| r.prev_hmac = "00".into(),
        ];
        for change in changes {
            let mut changed = row("");
            change(&mut changed);
            assert_ne!(ledger.seal(&changed), sealed);
        }
        let other_key = Ledger::new(Some(&SecretString::from("j".repeat(32))));
        assert_ne!(other_key.seal(&row("")), sealed);
        let development = Ledger::new(None);
        assert_eq!(development.origin, KeyOrigin::Development);
        assert_ne!(development.seal(&row("")), sealed);
    }
}
