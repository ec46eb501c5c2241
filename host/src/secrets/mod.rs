//! Secrets: AES-256-GCM sealing, workspace and global secret operations, the decrypted bundle.
//!
//! Values only exist in plaintext inside this module's return values; they are never logged,
//! never put in an error and never echoed by the HTTP layer.

use std::collections::BTreeMap;

use aes_gcm::aead::{Aead as _, KeyInit as _};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use rand::RngCore as _;
use secrecy::{ExposeSecret as _, SecretString};
use uuid::Uuid;

use crate::store::{self, Db, StoreError};

/// `encryption_version` of a row sealed with AES-256-GCM.
pub const VERSION_AES_GCM: i32 = 1;
/// `encryption_version` of a plaintext row: only written when no key is configured.
pub const VERSION_PLAINTEXT: i32 = 0;
const NONCE_LEN: usize = 12;

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

    /// Returns the stored bytes and their `encryption_version`.
    pub fn seal(&self, plaintext: &str) -> (Vec<u8>, i32) {
        match &self.key {
            None => (plaintext.as_bytes().to_vec(), VERSION_PLAINTEXT),
            Some(cipher) => {
                let mut nonce = [0u8; NONCE_LEN];
                rand::rngs::OsRng.fill_bytes(&mut nonce);
                let sealed = cipher
                    .encrypt(Nonce::from_slice(&nonce), plaintext.as_bytes())
                    .expect("AES-GCM encryption of an in-memory buffer cannot fail");
                let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
                out.extend_from_slice(&nonce);
                out.extend_from_slice(&sealed);
                (out, VERSION_AES_GCM)
            }
        }
    }

    pub fn open(&self, stored: &[u8], version: i32) -> Result<String, OpenError> {
        match version {
            VERSION_PLAINTEXT => {
                String::from_utf8(stored.to_vec()).map_err(|_| OpenError::WrongKey)
            }
            VERSION_AES_GCM => {
                let cipher = self.key.as_ref().ok_or(OpenError::NoKey)?;
                if stored.len() < NONCE_LEN {
                    return Err(OpenError::WrongKey);
                }
                let (nonce, sealed) = stored.split_at(NONCE_LEN);
                let plain = cipher
                    .decrypt(Nonce::from_slice(nonce), sealed)
                    .map_err(|_| OpenError::WrongKey)?;
                String::from_utf8(plain).map_err(|_| OpenError::WrongKey)
            }
            other => Err(OpenError::UnknownVersion(other)),
        }
    }
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
    let (sealed, version) = cipher.seal(value);
    store::secrets::upsert_workspace(db, workspace_id, key.as_str(), &sealed, version).await
}

pub async fn set_global(
    db: &Db,
    cipher: &Cipher,
    key: &SecretKey,
    value: &str,
) -> Result<(), StoreError> {
    let (sealed, version) = cipher.seal(value);
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
        .map(|row| cipher.open(&row.encrypted_value, row.encryption_version)))
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
    for (rows, scope) in [(global, "global"), (own, "workspace")] {
        for row in rows {
            match cipher.open(&row.encrypted_value, row.encryption_version) {
                Ok(value) => {
                    values.insert(row.key, SecretString::from(value));
                }
                Err(err) => {
                    tracing::warn!(%workspace_id, scope, key = %row.key, error = %err, "secret cannot be decrypted");
                    failed.push(format!("{scope}:{}", row.key));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(raw: &str) -> SecretString {
        SecretString::from(raw.to_owned())
    }

    #[test]
    fn sealing_round_trips_with_a_fresh_nonce_each_time() {
        let cipher = Cipher::new(Some(&key(
            &base64::engine::general_purpose::STANDARD.encode([7u8; 32])
        )))
        .unwrap();
        let (a, version) = cipher.seal("hunter2");
        let (b, _) = cipher.seal("hunter2");
        assert_eq!(version, VERSION_AES_GCM);
        assert_ne!(a, b, "nonces must differ");
        assert!(!a.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(cipher.open(&a, version).unwrap(), "hunter2");
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
        let (sealed, version) = a.seal("value");
        assert!(matches!(b.open(&sealed, version), Err(OpenError::WrongKey)));
        assert!(matches!(
            Cipher::new(None).unwrap().open(&sealed, version),
            Err(OpenError::NoKey)
        ));
        assert!(matches!(
            a.open(&sealed, 7),
            Err(OpenError::UnknownVersion(7))
        ));
    }

    #[test]
    fn without_a_key_values_are_stored_as_version_zero() {
        let plain = Cipher::new(None).unwrap();
        let (stored, version) = plain.seal("v");
        assert_eq!((stored.as_slice(), version), (&b"v"[..], VERSION_PLAINTEXT));
        // A keyed host can still read rows written before it had a key.
        let keyed = Cipher::new(Some(&key("0123456789abcdef0123456789abcdef"))).unwrap();
        assert_eq!(keyed.open(&stored, version).unwrap(), "v");
    }

    #[test]
    fn secret_keys_are_environment_variable_names() {
        assert!(SecretKey::parse("OPENAI_API_KEY").is_some());
        assert!(SecretKey::parse("_x1").is_some());
        for bad in ["", "1ABC", "A-B", "A B", "A\nB", "ÄÖ"] {
            assert!(SecretKey::parse(bad).is_none(), "{bad:?}");
        }
    }
}
