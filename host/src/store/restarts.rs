//! `workspace_restarts`: the claim on a workspace's restart cycles, shared by every replica, so
//! requests arriving at any of them coalesce into the cycles one replica runs; and
//! `workspace_restart_due`: delayed restarts, so one survives the replica that decided it.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Db, StoreResult, on_db, on_db_read};

/// What a claim found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Nobody held the workspace's restarts (or their claim had expired): the caller runs them.
    Won,
    /// Another holder is running cycles; one more is now due after its current one.
    Joined,
}

/// Claims the restart cycles of `workspace_id` for `holder` until `lease_until`, or, while
/// someone else's claim holds, marks one more cycle due for them. One statement, so concurrent
/// claims from any number of replicas see each other.
pub async fn claim(
    db: &Db,
    workspace_id: Uuid,
    holder: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> StoreResult<Claim> {
    on_db!(db, pool => {
        let winner: String = sqlx::query_scalar(
            "INSERT INTO workspace_restarts (workspace_id, holder, pending, lease_until)
             VALUES ($1, $2, FALSE, $4)
             ON CONFLICT (workspace_id) DO UPDATE SET
                 holder = CASE WHEN workspace_restarts.lease_until < $3
                               THEN excluded.holder ELSE workspace_restarts.holder END,
                 pending = CASE WHEN workspace_restarts.lease_until < $3
                                THEN FALSE ELSE TRUE END,
                 lease_until = CASE WHEN workspace_restarts.lease_until < $3
                                    THEN excluded.lease_until ELSE workspace_restarts.lease_until END
             RETURNING holder",
        )
        .bind(workspace_id)
        .bind(holder)
        .bind(now)
        .bind(lease_until)
        .fetch_one(pool)
        .await?;
        Ok(if winner == holder { Claim::Won } else { Claim::Joined })
    })
}

/// After a cycle: releases the claim when no cycle is due (`false`), or takes the due cycle and
/// extends the claim (`true`: run one more). A claim lost meanwhile (expired and taken) ends the
/// holder's cycles.
pub async fn next_cycle(
    db: &Db,
    workspace_id: Uuid,
    holder: &str,
    lease_until: DateTime<Utc>,
) -> StoreResult<bool> {
    on_db!(db, pool => {
        let mut tx = super::begin(pool, None).await?;
        let released = sqlx::query(
            "DELETE FROM workspace_restarts WHERE workspace_id = $1 AND holder = $2 AND pending = FALSE",
        )
        .bind(workspace_id)
        .bind(holder)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let again = if released > 0 {
            false
        } else {
            sqlx::query(
                "UPDATE workspace_restarts SET pending = FALSE, lease_until = $3
                 WHERE workspace_id = $1 AND holder = $2",
            )
            .bind(workspace_id)
            .bind(holder)
            .bind(lease_until)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                > 0
        };
        tx.commit().await?;
        Ok(again)
    })
}

/// Extends `holder`'s claim on `workspace_id` to `lease_until` during a long cycle; false once
/// the claim is no longer theirs (released, or expired and taken by another holder).
pub async fn renew(
    db: &Db,
    workspace_id: Uuid,
    holder: &str,
    lease_until: DateTime<Utc>,
) -> StoreResult<bool> {
    on_db!(db, pool => Ok(sqlx::query(
        "UPDATE workspace_restarts SET lease_until = $3 WHERE workspace_id = $1 AND holder = $2",
    ).bind(workspace_id).bind(holder).bind(lease_until).execute(pool).await?.rows_affected() > 0))
}

/// Marks one more cycle due when a claim on `workspace_id` holds at `now`; false when none does.
pub async fn join_running(db: &Db, workspace_id: Uuid, now: DateTime<Utc>) -> StoreResult<bool> {
    on_db!(db, pool => Ok(sqlx::query(
        "UPDATE workspace_restarts SET pending = TRUE WHERE workspace_id = $1 AND lease_until >= $2",
    ).bind(workspace_id).bind(now).execute(pool).await?.rows_affected() > 0))
}

/// Drops every claim whose holder starts with `prefix` (a replica stopping drops its own, so
/// requests elsewhere are not held up until the claims expire).
pub async fn release_all(db: &Db, prefix: &str) -> StoreResult<u64> {
    on_db!(db, pool => Ok(sqlx::query(
        "DELETE FROM workspace_restarts WHERE substr(holder, 1, length($1)) = $1",
    ).bind(prefix).execute(pool).await?.rows_affected()))
}

/// Whether a live claim (its lease holding at `now`) runs `workspace_id`'s restart cycles.
pub async fn cycle_running(db: &Db, workspace_id: Uuid, now: DateTime<Utc>) -> StoreResult<bool> {
    on_db_read!(db, pool => Ok(sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM workspace_restarts WHERE workspace_id = $1 AND lease_until >= $2",
    ).bind(workspace_id).bind(now).fetch_one(pool).await? > 0))
}

/// Whether a claim on `workspace_id`'s restart cycles is open (cycles running or due).
pub async fn claimed(db: &Db, workspace_id: Uuid) -> StoreResult<bool> {
    on_db_read!(db, pool => Ok(sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM workspace_restarts WHERE workspace_id = $1",
    ).bind(workspace_id).fetch_one(pool).await? > 0))
}

/// Records a restart of `workspace_id` due at `due_at` under `ticket`; false when one is already
/// due (the first stands, as a cycle starting then picks up every change made before it).
pub async fn schedule(
    db: &Db,
    workspace_id: Uuid,
    ticket: Uuid,
    due_at: DateTime<Utc>,
) -> StoreResult<bool> {
    on_db!(db, pool => Ok(sqlx::query(
        "INSERT INTO workspace_restart_due (workspace_id, ticket, due_at) VALUES ($1, $2, $3)
         ON CONFLICT (workspace_id) DO NOTHING",
    ).bind(workspace_id).bind(ticket).bind(due_at).execute(pool).await?.rows_affected() > 0))
}

/// Takes the delayed restart `ticket` of `workspace_id`: true when it was still due (not taken
/// by a sweep, nor superseded by a restart that started sooner).
pub async fn take(db: &Db, workspace_id: Uuid, ticket: Uuid) -> StoreResult<bool> {
    on_db!(db, pool => Ok(sqlx::query(
        "DELETE FROM workspace_restart_due WHERE workspace_id = $1 AND ticket = $2",
    ).bind(workspace_id).bind(ticket).execute(pool).await?.rows_affected() > 0))
}

/// Drops `workspace_id`'s delayed restart: one that starts now supersedes it.
pub async fn cancel_due(db: &Db, workspace_id: Uuid) -> StoreResult<()> {
    on_db!(db, pool => {
        sqlx::query("DELETE FROM workspace_restart_due WHERE workspace_id = $1")
            .bind(workspace_id)
            .execute(pool)
            .await?;
        Ok(())
    })
}

/// Takes every delayed restart due at `now` (for the replica that starts them). Reads first, so
/// a sweep that finds nothing writes nothing.
pub async fn take_due(db: &Db, now: DateTime<Utc>) -> StoreResult<Vec<Uuid>> {
    let due: i64 = on_db_read!(db, pool => sqlx::query_scalar(
        "SELECT COUNT(*) FROM workspace_restart_due WHERE due_at <= $1",
    ).bind(now).fetch_one(pool).await?);
    if due == 0 {
        return Ok(Vec::new());
    }
    on_db!(db, pool => Ok(sqlx::query_scalar(
        "DELETE FROM workspace_restart_due WHERE due_at <= $1 RETURNING workspace_id",
    ).bind(now).fetch_all(pool).await?))
}
