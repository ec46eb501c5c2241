//! Secrets: AES-256-GCM sealing bound to the row, workspace and global secret operations, the
//! decrypted bundle, and re-sealing rows an older host wrote.
//!
//! Values only exist in plaintext inside this module's return values; they are never logged,
//! never put in an error and never echoed by the HTTP layer.
//!
//! Every value is sealed with its row's identity ([`Slot`]) as associated data, so a ciphertext
//! only opens in the row it was sealed for: someone who can write the database cannot move a
//! global secret into a workspace they control, or one workspace's key into another's. Rows an
//! older host sealed without it (version 1), and plaintext rows from before a key was
//! configured (version 0), are re-sealed once at start ([`reseal_legacy`]); after that, reads
//! refuse both, so a legacy ciphertext written into a row later is not accepted either.

use std::collections::BTreeMap;

use aes_gcm::aead::{Aead as _, KeyInit as _, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use rand::RngCore as _;
use secrecy::{ExposeSecret as _, SecretString};
use uuid::Uuid;

use crate::store::{self, Db, StoreError};

/// `encryption_version` of a row sealed with AES-256-GCM, its [`Slot`] as associated data.
pub const VERSION_AES_GCM_BOUND: i32 = 2;
/// `encryption_version` of a row an older host sealed with AES-256-GCM without associated
/// data. Only [`reseal_legacy`] opens it.
pub const VERSION_AES_GCM_UNBOUND: i32 = 1;
/// `encryption_version` of a plaintext row: only written when no key is configured, and read
/// only while none is.
pub const VERSION_PLAINTEXT: i32 = 0;
const NONCE_LEN: usize = 12;

/// The row a secret value belongs to. Its encoding is the associated data the value is sealed
/// with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot<'a> {
    /// `workspace_secrets` row `(workspace_id, key)`.
    Workspace(Uuid, &'a str),
    /// `global_secrets` row `key`.
    Global(&'a str),
}

impl Slot<'_> {
    /// `workspace:<uuid>:<KEY>` or `global:<KEY>`. The scope comes first and a hyphenated uuid
    /// has a fixed length and no `:`, so no two rows share an encoding whatever their keys hold.
    pub fn associated_data(&self) -> Vec<u8> {
        match self {
            Slot::Workspace(id, key) => format!("workspace:{}:{key}", id.hyphenated()),
            Slot::Global(key) => format!("global:{key}"),
        }
        .into_bytes()
    }

    /// `workspace:KEY` or `global:KEY`, as `failed_keys` names a row.
    fn label(&self) -> String {
        match self {
            Slot::Workspace(_, key) => format!("workspace:{key}"),
            Slot::Global(key) => format!("global:{key}"),
        }
    }
}

/// Why a configured key cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("SECRETS_ENCRYPTION_KEY must be base64 of 32 bytes or a raw 32-character string")]
pub struct InvalidKey;

/// Seals and opens secret values. Without a key it stores plaintext with version 0.
#[derive(Clone)]
pub struct Cipher {
    key: Option<Aes256Gcm>,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cipher")
            .field("encrypting", &self.key.is_some())
            .finish()
    }
}

/// Why a stored value could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("value is encrypted but no key is configured")]
    NoKey,
    #[error("value cannot be decrypted with the configured key")]
    WrongKey,
    #[error("unknown encryption version {0}")]
    UnknownVersion(i32),
    /// A version-1 row (sealed without its row's identity) or, with a key configured, a
    /// plaintext one: every such row was re-sealed at start, so this one was written since.
    #[error("legacy encryption version {0} is no longer read; rows are re-sealed at start")]
    Legacy(i32),
}

impl Cipher {
    /// `key`: base64 (standard) of 32 bytes, or a raw 32-character string; `None` for plaintext.
    pub fn new(key: Option<&SecretString>) -> Result<Self, InvalidKey> {
        let Some(key) = key
            .map(|k| k.expose_secret().trim())
            .filter(|k| !k.is_empty())
        else {
            return Ok(Cipher { key: None });
        };
        let bytes = match base64::engine::general_purpose::STANDARD.decode(key) {
            Ok(bytes) if bytes.len() == 32 => bytes,
            _ if key.len() == 32 => key.as_bytes().to_vec(),
            _ => return Err(InvalidKey),
        };
        let cipher = Aes256Gcm::new_from_slice(&bytes).map_err(|_| InvalidKey)?;
        Ok(Cipher { key: Some(cipher) })
    }

    pub fn encrypts(&self) -> bool {
        self.key.is_some()
    }

    /// Seals `plaintext` for `slot`; returns the stored bytes (`nonce || ciphertext || tag`)
    /// and their `encryption_version`.
    pub fn seal(&self, slot: Slot<'_>, plaintext: &str) -> (Vec<u8>, i32) {
        match &self.key {
            None => (plaintext.as_bytes().to_vec(), VERSION_PLAINTEXT),
            Some(cipher) => {
                let mut nonce = [0u8; NONCE_LEN];
                rand::rngs::OsRng.fill_bytes(&mut nonce);
                let aad = slot.associated_data();
                let payload = Payload {
                    msg: plaintext.as_bytes(),
                    aad: &aad,
                };
                let sealed = cipher
                    .encrypt(Nonce::from_slice(&nonce), payload)
                    .expect("AES-GCM encryption of an in-memory buffer cannot fail");
                let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
                out.extend_from_slice(&nonce);
                out.extend_from_slice(&sealed);
                (out, VERSION_AES_GCM_BOUND)
            }
        }
    }

    /// Opens the value stored in `slot`. Bytes sealed for any other row fail as
    /// [`OpenError::WrongKey`]; legacy versions are refused (see [`OpenError::Legacy`]).
    pub fn open(&self, slot: Slot<'_>, stored: &[u8], version: i32) -> Result<String, OpenError> {
        match version {
            VERSION_AES_GCM_BOUND => {
                let cipher = self.key.as_ref().ok_or(OpenError::NoKey)?;
                decrypt(cipher, stored, &slot.associated_data())
            }
            VERSION_PLAINTEXT if self.key.is_none() => {
                String::from_utf8(stored.to_vec()).map_err(|_| OpenError::WrongKey)
            }
            VERSION_PLAINTEXT | VERSION_AES_GCM_UNBOUND => Err(OpenError::Legacy(version)),
            other => Err(OpenError::UnknownVersion(other)),
        }
    }

    /// Opens a row an older host wrote (version 0 or 1, no associated data); only for
    /// re-sealing at start.
    fn open_legacy(&self, stored: &[u8], version: i32) -> Result<String, OpenError> {
        match version {
            VERSION_PLAINTEXT => {
                String::from_utf8(stored.to_vec()).map_err(|_| OpenError::WrongKey)
            }
            VERSION_AES_GCM_UNBOUND => {
                let cipher = self.key.as_ref().ok_or(OpenError::NoKey)?;
                decrypt(cipher, stored, b"")
            }
            other => Err(OpenError::UnknownVersion(other)),
        }
    }
}

/// `nonce || ciphertext || tag` opened with `aad`.
fn decrypt(cipher: &Aes256Gcm, stored: &[u8], aad: &[u8]) -> Result<String, OpenError> {
    if stored.len() < NONCE_LEN {
        return Err(OpenError::WrongKey);
    }
    let (nonce, sealed) = stored.split_at(NONCE_LEN);
    let plain = cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad })
        .map_err(|_| OpenError::WrongKey)?;
    String::from_utf8(plain).map_err(|_| OpenError::WrongKey)
}

/// A secret key name: an environment-variable name, since agents receive secrets as env vars.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SecretKey(String);

impl SecretKey {
    pub fn parse(raw: &str) -> Option<Self> {
        let mut chars = raw.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        (first_ok && rest_ok && raw.len() <= 128).then(|| SecretKey(raw.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Largest secret value accepted, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// The secret that carries a workspace's model choice.
pub const MODEL_KEY: &str = "MODEL_PROVIDER";

/// Where a listed secret comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Workspace,
    Global,
}

/// A secret as listed: its key and timestamps, never its value.
#[derive(Debug, Clone)]
pub struct SecretInfo {
    pub key: String,
    pub scope: Scope,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Workspace secrets plus the global ones they do not shadow, sorted by key.
pub async fn list_for_workspace(
    db: &Db,
    workspace_id: Uuid,
) -> Result<Vec<SecretInfo>, StoreError> {
    let own = store::secrets::list_workspace(db, workspace_id).await?;
    let global = store::secrets::list_global(db).await?;
    let mut out: BTreeMap<String, SecretInfo> = BTreeMap::new();
    for (rows, scope) in [(global, Scope::Global), (own, Scope::Workspace)] {
        for row in rows {
            let info = SecretInfo {
                key: row.key.clone(),
                scope,
                created_at: row.created_at,
                updated_at: row.updated_at,
            };
            out.insert(row.key, info);
        }
    }
    Ok(out.into_values().collect())
}

pub async fn list_global(db: &Db) -> Result<Vec<SecretInfo>, StoreError> {
    Ok(store::secrets::list_global(db)
        .await?
        .into_iter()
        .map(|row| SecretInfo {
            key: row.key,
            scope: Scope::Global,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
        .collect())
}

pub async fn set_workspace(
    db: &Db,
    cipher: &Cipher,
    workspace_id: Uuid,
    key: &SecretKey,
    value: &str,
) -> Result<(), StoreError> {
    let (sealed, version) = cipher.seal(Slot::Workspace(workspace_id, key.as_str()), value);
    store::secrets::upsert_workspace(db, workspace_id, key.as_str(), &sealed, version).await
}

pub async fn set_global(
    db: &Db,
    cipher: &Cipher,
    key: &SecretKey,
    value: &str,
) -> Result<(), StoreError> {
    let (sealed, version) = cipher.seal(Slot::Global(key.as_str()), value);
    store::secrets::upsert_global(db, key.as_str(), &sealed, version).await
}

/// Reads one workspace secret in plaintext.
pub async fn get_workspace_value(
    db: &Db,
    cipher: &Cipher,
    workspace_id: Uuid,
    key: &str,
) -> Result<Option<Result<String, OpenError>>, StoreError> {
    Ok(store::secrets::get_workspace(db, workspace_id, key)
        .await?
        .map(|row| {
            cipher.open(
                Slot::Workspace(workspace_id, &row.key),
                &row.encrypted_value,
                row.encryption_version,
            )
        }))
}

/// The outcome of decrypting a workspace's whole environment.
#[derive(Debug)]
pub enum Bundle {
    /// Every value, global merged with workspace (workspace wins).
    Complete(BTreeMap<String, SecretString>),
    /// Some values could not be opened; none are returned. Entries are `scope:KEY`.
    Refused { failed_keys: Vec<String> },
}

/// Decrypts global and workspace secrets into one environment, all or nothing.
pub async fn bundle(db: &Db, cipher: &Cipher, workspace_id: Uuid) -> Result<Bundle, StoreError> {
    let global = store::secrets::list_global(db).await?;
    let own = store::secrets::list_workspace(db, workspace_id).await?;
    let mut values = BTreeMap::new();
    let mut failed = Vec::new();
    for (rows, global) in [(global, true), (own, false)] {
        for row in rows {
            let slot = if global {
                Slot::Global(&row.key)
            } else {
                Slot::Workspace(workspace_id, &row.key)
            };
            match cipher.open(slot, &row.encrypted_value, row.encryption_version) {
                Ok(value) => {
                    values.insert(row.key, SecretString::from(value));
                }
                Err(err) => {
                    let failed_key = slot.label();
                    tracing::warn!(%workspace_id, key = %failed_key, error = %err, "secret cannot be decrypted");
                    failed.push(failed_key);
                }
            }
        }
    }
    if failed.is_empty() {
        Ok(Bundle::Complete(values))
    } else {
        Ok(Bundle::Refused {
            failed_keys: failed,
        })
    }
}

/// What [`reseal_legacy`] did, in rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resealed {
    pub workspace: usize,
    pub global: usize,
    /// Legacy rows that could not be opened (another key, corrupt): left as they are, and
    /// refused when read like any undecryptable row.
    pub unreadable: usize,
}

/// Re-seals every row an older host left, version 1 and (with a key) version 0, to
/// [`VERSION_AES_GCM_BOUND`], in one transaction. Replicas starting together take turns, and a
/// row changed meanwhile is left to its writer, so running it any number of times is safe.
/// Without a key there is nothing it can do: version 0 is what such a host writes and reads.
pub async fn reseal_legacy(db: &Db, cipher: &Cipher) -> Result<Resealed, StoreError> {
    if !cipher.encrypts() {
        return Ok(Resealed::default());
    }
    let mut unreadable = 0usize;
    let (workspace, global) =
        store::secrets::reseal_below(db, VERSION_AES_GCM_BOUND, &mut |row| {
            let slot = match row.workspace_id {
                Some(id) => Slot::Workspace(id, &row.key),
                None => Slot::Global(&row.key),
            };
            match cipher.open_legacy(&row.encrypted_value, row.encryption_version) {
                Ok(value) => Some(cipher.seal(slot, &value)),
                Err(err) => {
                    unreadable += 1;
                    tracing::warn!(workspace_id = ?row.workspace_id, key = %slot.label(), version = row.encryption_version, error = %err, "a secret written by an older host cannot be re-sealed");
                    None
                }
            }
        })
        .await?;
    let done = Resealed {
        workspace,
        global,
        unreadable,
    };
    if workspace + global > 0 {
        tracing::info!(
            workspace,
            global,
            "secrets written by an older host re-sealed, bound to their rows"
        );
    }
    if unreadable > 0 {
        tracing::warn!(
            unreadable,
            "secrets written by an older host could not be re-sealed and will be refused"
        );
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(raw: &str) -> SecretString {
        SecretString::from(raw.to_owned())
    }

    fn keyed() -> Cipher {
        Cipher::new(Some(&key(
            &base64::engine::general_purpose::STANDARD.encode([7u8; 32])
        )))
        .unwrap()
    }

    const A: Uuid = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
    const B: Uuid = Uuid::from_u128(0xfedc_ba98_7654_3210_fedc_ba98_7654_3210);

    /// What an older host stored: `nonce || AES-GCM(value)` without associated data.
    fn sealed_unbound(cipher: &Cipher, value: &str) -> Vec<u8> {
        let nonce = [3u8; NONCE_LEN];
        let sealed = cipher
            .key
            .as_ref()
            .unwrap()
            .encrypt(Nonce::from_slice(&nonce), value.as_bytes())
            .unwrap();
        [nonce.as_slice(), &sealed].concat()
    }

    #[test]
    fn the_associated_data_names_the_row_unambiguously() {
        assert_eq!(
            Slot::Workspace(A, "API_KEY").associated_data(),
            b"workspace:01234567-89ab-cdef-0123-456789abcdef:API_KEY"
        );
        assert_eq!(Slot::Global("API_KEY").associated_data(), b"global:API_KEY");
        // Keys holding the separator or the other scope's prefix stay distinct.
        let slots = [
            Slot::Workspace(A, "K"),
            Slot::Workspace(B, "K"),
            Slot::Workspace(A, "K2"),
            Slot::Global("K"),
            Slot::Global("workspace:K"),
            Slot::Global(&format!("workspace:{A}:K")),
            Slot::Workspace(A, ":K"),
        ];
        let encoded: std::collections::BTreeSet<Vec<u8>> =
            slots.iter().map(Slot::associated_data).collect();
        assert_eq!(encoded.len(), slots.len(), "every row has its own encoding");
    }

    #[test]
    fn sealing_round_trips_with_a_fresh_nonce_each_time() {
        let cipher = keyed();
        let slot = Slot::Workspace(A, "PASSWORD");
        let (a, version) = cipher.seal(slot, "hunter2");
        let (b, _) = cipher.seal(slot, "hunter2");
        assert_eq!(version, VERSION_AES_GCM_BOUND);
        assert_ne!(a, b, "nonces must differ");
        assert!(!a.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(cipher.open(slot, &a, version).unwrap(), "hunter2");
    }

    #[test]
    fn a_value_opens_only_in_the_row_it_was_sealed_for() {
        let cipher = keyed();
        let rows = [
            Slot::Workspace(A, "API_KEY"),
            Slot::Workspace(B, "API_KEY"),
            Slot::Workspace(A, "OTHER"),
            Slot::Global("API_KEY"),
            Slot::Global("OTHER"),
        ];
        for sealed_for in rows {
            let (bytes, version) = cipher.seal(sealed_for, "value");
            for read_as in rows {
                let opened = cipher.open(read_as, &bytes, version);
                if read_as == sealed_for {
                    assert_eq!(opened.unwrap(), "value");
                } else {
                    assert!(
                        matches!(opened, Err(OpenError::WrongKey)),
                        "{sealed_for:?} read as {read_as:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_raw_32_character_key_is_accepted_and_other_lengths_are_not() {
        assert!(
            Cipher::new(Some(&key("0123456789abcdef0123456789abcdef")))
                .unwrap()
                .encrypts()
        );
        assert!(Cipher::new(Some(&key("too-short"))).is_err());
        assert!(!Cipher::new(None).unwrap().encrypts());
        assert!(!Cipher::new(Some(&key(""))).unwrap().encrypts());
    }

    #[test]
    fn opening_fails_clearly_with_the_wrong_key_or_no_key() {
        let a = Cipher::new(Some(&key("0123456789abcdef0123456789abcdef"))).unwrap();
        let b = Cipher::new(Some(&key("fedcba9876543210fedcba9876543210"))).unwrap();
        let slot = Slot::Global("K");
        let (sealed, version) = a.seal(slot, "value");
        assert!(matches!(
            b.open(slot, &sealed, version),
            Err(OpenError::WrongKey)
        ));
        assert!(matches!(
            Cipher::new(None).unwrap().open(slot, &sealed, version),
            Err(OpenError::NoKey)
        ));
        assert!(matches!(
            a.open(slot, &sealed, 7),
            Err(OpenError::UnknownVersion(7))
        ));
        assert!(matches!(
            a.open(slot, &sealed[..5], version),
            Err(OpenError::WrongKey)
        ));
    }

    #[test]
    fn legacy_rows_are_refused_by_reads_and_opened_only_for_re_sealing() {
        let cipher = keyed();
        let slot = Slot::Workspace(A, "OLD");
        let unbound = sealed_unbound(&cipher, "old value");
        assert!(matches!(
            cipher.open(slot, &unbound, VERSION_AES_GCM_UNBOUND),
            Err(OpenError::Legacy(1))
        ));
        assert_eq!(
            cipher
                .open_legacy(&unbound, VERSION_AES_GCM_UNBOUND)
                .unwrap(),
            "old value"
        );
        // Bound bytes relabelled as version 1 do not open without their associated data.
        let (bound, _) = cipher.seal(slot, "new value");
        assert!(cipher.open_legacy(&bound, VERSION_AES_GCM_UNBOUND).is_err());
        // Plaintext: what a host without a key writes and reads; a keyed host only re-seals it.
        let plain = Cipher::new(None).unwrap();
        let (stored, version) = plain.seal(slot, "v");
        assert_eq!((stored.as_slice(), version), (&b"v"[..], VERSION_PLAINTEXT));
        assert_eq!(plain.open(slot, &stored, version).unwrap(), "v");
        assert!(matches!(
            cipher.open(slot, &stored, version),
            Err(OpenError::Legacy(0))
        ));
        assert_eq!(cipher.open_legacy(&stored, version).unwrap(), "v");
    }

    #[test]
    fn secret_keys_are_environment_variable_names() {
        assert!(SecretKey::parse("OPENAI_API_KEY").is_some());
        assert!(SecretKey::parse("_x1").is_some());
        for bad in ["", "1ABC", "A-B", "A B", "A\nB", "ÄÖ"] {
            assert!(SecretKey::parse(bad).is_none(), "{bad:?}");
        }
    }

    crate::both_backends!(
        legacy_rows_are_resealed_once_bound_to_their_rows_and_concurrent_runs_agree,
        without_a_key_nothing_is_resealed,
    );

    /// A workspace row (any status) for secrets to belong to.
    async fn workspace(db: &Db) -> Uuid {
        let id = Uuid::new_v4();
        let new = store::workspaces::NewWorkspace {
            id,
            name: format!("w-{id}"),
            role: None,
            tier: 3,
            status: store::status::Status::Online,
            runtime: "langgraph".to_owned(),
            url: None,
            parent_id: None,
            workspace_dir: None,
            workspace_access: "none".to_owned(),
            budget_limit: None,
            max_concurrent_tasks: 1,
            hibernation_idle_minutes: None,
            x: 0.0,
            y: 0.0,
        };
        store::workspaces::insert(db, &new, &[], &serde_json::json!({}))
            .await
            .unwrap();
        id
    }

    async fn versions(db: &Db, id: Uuid) -> Vec<(String, i32)> {
        let mut out: Vec<(String, i32)> = store::secrets::list_workspace(db, id)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.key, r.encryption_version))
            .collect();
        out.extend(
            store::secrets::list_global(db)
                .await
                .unwrap()
                .into_iter()
                .map(|r| (format!("global:{}", r.key), r.encryption_version)),
        );
        out
    }

    async fn legacy_rows_are_resealed_once_bound_to_their_rows_and_concurrent_runs_agree(db: Db) {
        let cipher = keyed();
        let other = Cipher::new(Some(&key("fedcba9876543210fedcba9876543210"))).unwrap();
        let (w1, w2) = (workspace(&db).await, workspace(&db).await);
        let put = |id, key: &'static str, bytes: Vec<u8>, version| {
            let db = db.clone();
            async move {
                store::secrets::upsert_workspace(&db, id, key, &bytes, version)
                    .await
                    .unwrap()
            }
        };
        put(w1, "OLD", sealed_unbound(&cipher, "old-1"), 1).await;
        put(w1, "PLAIN", b"plain-1".to_vec(), 0).await;
        put(w2, "OLD", sealed_unbound(&cipher, "old-2"), 1).await;
        put(w2, "FOREIGN", sealed_unbound(&other, "foreign"), 1).await;
        let (bound, version) = cipher.seal(Slot::Workspace(w2, "NEW"), "new-2");
        put(w2, "NEW", bound.clone(), version).await;
        store::secrets::upsert_global(&db, "G", &sealed_unbound(&cipher, "global"), 1)
            .await
            .unwrap();

        // Two replicas starting together.
        let (a, b) = tokio::join!(reseal_legacy(&db, &cipher), reseal_legacy(&db, &cipher));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.workspace + b.workspace, 3, "{a:?} {b:?}");
        assert_eq!(a.global + b.global, 1, "{a:?} {b:?}");
        assert!(
            a.unreadable + b.unreadable >= 1,
            "the foreign row is reported"
        );

        // Everything readable is bound now and reads back in its own row only.
        let env = |bundle: Bundle| match bundle {
            Bundle::Complete(values) => values
                .into_iter()
                .map(|(k, v)| (k, v.expose_secret().to_owned()))
                .collect::<Vec<_>>(),
            Bundle::Refused { failed_keys } => panic!("refused: {failed_keys:?}"),
        };
        assert_eq!(
            env(bundle(&db, &cipher, w1).await.unwrap()),
            vec![
                ("G".to_owned(), "global".to_owned()),
                ("OLD".to_owned(), "old-1".to_owned()),
                ("PLAIN".to_owned(), "plain-1".to_owned()),
            ]
        );
        assert_eq!(
            versions(&db, w1).await,
            vec![
                ("OLD".to_owned(), 2),
                ("PLAIN".to_owned(), 2),
                ("global:G".to_owned(), 2)
            ]
        );
        // The foreign row stays as it was and is refused; the bound row was not touched.
        let w2_rows = store::secrets::list_workspace(&db, w2).await.unwrap();
        let foreign = w2_rows.iter().find(|r| r.key == "FOREIGN").unwrap();
        assert_eq!(foreign.encryption_version, 1);
        assert_eq!(
            w2_rows
                .iter()
                .find(|r| r.key == "NEW")
                .unwrap()
                .encrypted_value,
            bound
        );
        match bundle(&db, &cipher, w2).await.unwrap() {
            Bundle::Refused { failed_keys } => assert_eq!(failed_keys, vec!["workspace:FOREIGN"]),
            Bundle::Complete(_) => panic!("a row sealed with another key must be refused"),
        }

        // Idempotent: nothing left to do but the unreadable row.
        let again = reseal_legacy(&db, &cipher).await.unwrap();
        assert_eq!(
            again,
            Resealed {
                workspace: 0,
                global: 0,
                unreadable: 1
            }
        );
    }

    async fn without_a_key_nothing_is_resealed(db: Db) {
        let id = workspace(&db).await;
        store::secrets::upsert_workspace(&db, id, "PLAIN", b"p", 0)
            .await
            .unwrap();
        let plain = Cipher::new(None).unwrap();
        assert_eq!(
            reseal_legacy(&db, &plain).await.unwrap(),
            Resealed::default()
        );
        assert_eq!(versions(&db, id).await, vec![("PLAIN".to_owned(), 0)]);
    }
}
