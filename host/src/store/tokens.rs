//! `workspace_auth_tokens` and `org_api_tokens`: only hashes and short prefixes are stored.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Db, StoreResult, on_db, on_db_read};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WorkspaceTokenRow {
    pub id: Uuid,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OrgTokenRow {
    pub id: Uuid,
    pub prefix: String,
    pub name: Option<String>,
    pub org_id: Option<Uuid>,
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// Stores a workspace token; `expires_at` `None` for one that is rotated instead of expiring.
pub async fn insert_workspace_token(
    db: &Db,
    id: Uuid,
    workspace_id: Uuid,
    hash: &[u8],
    prefix: &str,
    expires_at: Option<DateTime<Utc>>,
) -> StoreResult<()> {
    on_db!(db, pool => {
        sqlx::query(
            "INSERT INTO workspace_auth_tokens (id, workspace_id, token_hash, prefix, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(workspace_id)
        .bind(hash)
        .bind(prefix)
        .bind(Utc::now())
        .bind(expires_at)
        .execute(pool)
        .await?;
        Ok(())
    })
}

/// The live (neither revoked nor expired) tokens of one workspace, newest first.
pub async fn list_workspace_tokens(
    db: &Db,
    workspace_id: Uuid,
    limit: i64,
    offset: i64,
) -> StoreResult<Vec<WorkspaceTokenRow>> {
    on_db_read!(db, pool => Ok(sqlx::query_as(
        "SELECT id, prefix, created_at, last_used_at, expires_at FROM workspace_auth_tokens
         WHERE workspace_id = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $4)
         ORDER BY created_at DESC, id LIMIT $2 OFFSET $3",
    )
    .bind(workspace_id)
    .bind(limit)
    .bind(offset)
    .bind(Utc::now())
    .fetch_all(pool)
    .await?))
}

/// Live tokens of one workspace: neither revoked nor expired.
pub async fn count_live_workspace_tokens(db: &Db, workspace_id: Uuid) -> StoreResult<i64> {
    on_db_read!(db, pool => Ok(sqlx::query_scalar(
        "SELECT COUNT(*) FROM workspace_auth_tokens
         WHERE workspace_id = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)",
    )
    .bind(workspace_id)
    .bind(Utc::now())
    .fetch_one(pool)
    .await?))
}

/// Live tokens of one workspace that were minted through the API (the ones that expire).
pub async fn count_live_minted_workspace_tokens(db: &Db, workspace_id: Uuid) -> StoreResult<i64> {
    on_db_read!(db, pool => Ok(sqlx::query_scalar(
        "SELECT COUNT(*) FROM workspace_auth_tokens
         WHERE workspace_id = $1 AND revoked_at IS NULL AND expires_at IS NOT NULL AND expires_at > $2",
    )
    .bind(workspace_id)
    .bind(Utc::now())
    .fetch_one(pool)
    .await?))
}

/// Whether any workspace or org token was ever issued, live or not: an install that issued one
/// has left its fresh-install mode (databases from before that mode was stored).
pub async fn any_token_issued(db: &Db) -> StoreResult<bool> {
    on_db_read!(db, pool => Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM workspace_auth_tokens) OR EXISTS (SELECT 1 FROM org_api_tokens)",
    )
    .fetch_one(pool)
    .await?))
}

/// A live workspace token as the auth check sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct LiveToken {
    pub id: Uuid,
    pub workspace_id: Uuid,
    /// When it stops working (`None`: when the host rotates it).
    pub expires_at: Option<DateTime<Utc>>,
}

/// The live token `hash` (neither revoked nor expired, and its workspace not removed). Marking
/// it used is the caller's (a deferred write).
pub async fn workspace_for_token(db: &Db, hash: &[u8]) -> StoreResult<Option<LiveToken>> {
    on_db_read!(db, pool => Ok(sqlx::query_as(
        "SELECT t.id, t.workspace_id, t.expires_at FROM workspace_auth_tokens t JOIN workspaces w ON w.id = t.workspace_id
         WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > $2)
           AND w.status <> 'removed'",
    )
    .bind(hash)
    .bind(Utc::now())
    .fetch_optional(pool)
    .await?))
}

pub async fn revoke_workspace_token(
    db: &Db,
    workspace_id: Uuid,
    token_id: Uuid,
) -> StoreResult<bool> {
    on_db!(db, pool => Ok(sqlx::query(
        "UPDATE workspace_auth_tokens SET revoked_at = $3 WHERE id = $1 AND workspace_id = $2 AND revoked_at IS NULL",
    )
    .bind(token_id)
    .bind(workspace_id)
    .bind(Utc::now())
    .execute(pool)
    .await?
    .rows_affected() > 0))
}

/// Revokes the workspace's rotated tokens (the agent's own, which do not expire): a fresh one
/// is issued at each provision. Tokens minted through the API live on until they expire or are
/// revoked.
pub async fn revoke_rotated_workspace_tokens(db: &Db, workspace_id: Uuid) -> StoreResult<u64> {
    on_db!(db, pool => Ok(sqlx::query(
        "UPDATE workspace_auth_tokens SET revoked_at = $2
         WHERE workspace_id = $1 AND revoked_at IS NULL AND expires_at IS NULL",
    )
    .bind(workspace_id)
    .bind(Utc::now())
    .execute(pool)
    .await?
    .rows_affected()))
}

/// Revokes every live token of the workspace but the one whose hash is `keep`: what a
/// credential rotation leaves. How many were revoked.
pub async fn revoke_workspace_tokens_except(
    db: &Db,
    workspace_id: Uuid,
    keep: &[u8],
) -> StoreResult<u64> {
    on_db!(db, pool => Ok(sqlx::query(
        "UPDATE workspace_auth_tokens SET revoked_at = $3
         WHERE workspace_id = $1 AND revoked_at IS NULL AND token_hash <> $2",
    )
    .bind(workspace_id)
    .bind(keep)
    .bind(Utc::now())
    .execute(pool)
    .await?
    .rows_affected()))
}

pub async fn insert_org_token(
    db: &Db,
    id: Uuid,
    hash: &[u8],
    prefix: &str,
    name: Option<&str>,
    created_by: Option<&str>,
) -> StoreResult<()> {
    on_db!(db, pool => {
        sqlx::query(
            "INSERT INTO org_api_tokens (id, token_hash, prefix, name, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(hash)
        .bind(prefix)
        .bind(name)
        .bind(created_by)
        .bind(Utc::now())
        .execute(pool)
        .await?;
        Ok(())
    })
}

pub async fn list_org_tokens(db: &Db) -> StoreResult<Vec<OrgTokenRow>> {
    on_db_read!(db, pool => Ok(sqlx::query_as(
        "SELECT id, prefix, name, org_id, created_by, created_at, last_used_at FROM org_api_tokens
         WHERE revoked_at IS NULL ORDER BY created_at DESC, id",
    )
    .fetch_all(pool)
    .await?))
}

/// The id of the live org token `hash`, if it is one. Marking it used is the caller's (a
/// deferred write).
pub async fn org_token(db: &Db, hash: &[u8]) -> StoreResult<Option<Uuid>> {
    on_db_read!(db, pool => Ok(sqlx::query_scalar(
        "SELECT id FROM org_api_tokens WHERE token_hash = $1 AND revoked_at IS NULL",
    )
    .bind(hash)
    .fetch_optional(pool)
    .await?))
}

pub async fn revoke_org_token(db: &Db, id: Uuid) -> StoreResult<bool> {
    on_db!(db, pool => Ok(sqlx::query("UPDATE org_api_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
        .bind(id)
        .bind(Utc::now())
        .execute(pool)
        .await?
        .rows_affected() > 0))
}
