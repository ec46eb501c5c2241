//! The key-value memory of a workspace: JSON values under keys the agent chooses, each with a
//! version that grows on every write (a write may be made conditional on it) and an optional
//! time to live. An expired key is absent for every read at once; the `kv-expiry` sweeper
//! deletes its row later.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::{FieldError, check_name};
use crate::services::Services;
use crate::store::kv::{Condition, KvRow, Write};
use crate::store::{self, StoreError};

/// Longest key, in characters.
pub const MAX_KEY_CHARS: usize = 256;
/// Largest value, in bytes of its JSON text.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Longest time to live: one year.
pub const MAX_TTL_SECONDS: i64 = 365 * 24 * 3600;
/// Expired rows deleted per statement by the sweeper.
const SWEEP_BATCH: i64 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error(transparent)]
    Field(#[from] FieldError),
    #[error("key not found")]
    NotFound,
    /// The write's `if_version` did not match: the live version (`None` when the key is absent).
    #[error("version conflict")]
    Conflict { current: Option<i64> },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A parsed write.
#[derive(Debug, Clone)]
pub struct Put {
    pub key: String,
    pub value: Value,
    pub ttl_seconds: Option<i64>,
    /// `Some(0)`: create only; `Some(n)`: only over version `n`.
    pub if_version: Option<i64>,
}

/// Checks a key from a body or a path.
pub fn check_key(key: &str) -> Result<(), FieldError> {
    check_name("key", key, MAX_KEY_CHARS)
}

/// Writes a key of `workspace_id` (whose liveness the caller checked).
pub async fn put(svc: &Services, workspace_id: Uuid, put: Put) -> Result<KvRow, KvError> {
    check_key(&put.key)?;
    let size = serde_json::to_vec(&put.value).map(|v| v.len()).unwrap_or(0);
    if size > MAX_VALUE_BYTES {
        return Err(FieldError::too_large(
            "value",
            format!("value is {size} bytes of JSON; the limit is {MAX_VALUE_BYTES}"),
        )
        .into());
    }
    if let Some(ttl) = put.ttl_seconds
        && !(1..=MAX_TTL_SECONDS).contains(&ttl)
    {
        return Err(FieldError::new(
            "ttl_seconds",
            format!("ttl_seconds must be between 1 and {MAX_TTL_SECONDS}"),
        )
        .into());
    }
    let condition = match put.if_version {
        None => Condition::Any,
        Some(0) => Condition::Absent,
        Some(v) if v > 0 => Condition::Version(v),
        Some(_) => {
            return Err(FieldError::new("if_version", "if_version must not be negative").into());
        }
    };
    let now = Utc::now();
    let written = store::kv::put(
        &svc.db,
        &Write {
            workspace_id,
            key: &put.key,
            value: &put.value,
            expires_at: put
                .ttl_seconds
                .map(|ttl| now + chrono::Duration::seconds(ttl)),
            condition,
            now,
        },
    )
    .await?;
    match written {
        Some(row) => Ok(row),
        None => {
            let current = store::kv::get(&svc.db, workspace_id, &put.key, Utc::now())
                .await?
                .map(|row| row.version);
            Err(KvError::Conflict { current })
        }
    }
}

pub async fn list(svc: &Services, workspace_id: Uuid) -> Result<Vec<KvRow>, KvError> {
    Ok(store::kv::list(&svc.db, workspace_id, Utc::now()).await?)
}

pub async fn get(svc: &Services, workspace_id: Uuid, key: &str) -> Result<KvRow, KvError> {
    check_key(key)?;
    store::kv::get(&svc.db, workspace_id, key, Utc::now())
        .await?
        .ok_or(KvError::NotFound)
}

pub async fn delete(svc: &Services, workspace_id: Uuid, key: &str) -> Result<(), KvError> {
    check_key(key)?;
    if store::kv::delete(&svc.db, workspace_id, key, Utc::now()).await? {
        Ok(())
    } else {
        Err(KvError::NotFound)
    }
}

/// Deletes every row expired by now, in batches; how many went.
pub async fn sweep_expired(svc: &Services) -> Result<u64, StoreError> {
    let now: DateTime<Utc> = Utc::now();
    let mut total = 0;
    loop {
        let deleted = store::kv::sweep_expired(&svc.db, now, SWEEP_BATCH).await?;
        total += deleted;
        if deleted < SWEEP_BATCH as u64 {
            break;
        }
    }
    if total > 0 {
        tracing::debug!(deleted = total, "expired key-value rows swept");
    }
    Ok(total)
}
