//! `host_settings`: facts about this installation that are decided once and stored.

use chrono::Utc;

use super::{Db, StoreResult, on_db};

/// The key whose presence means the fresh-install open mode is over.
const INSTALL_LOCKED: &str = "install_locked";

/// Whether the install has been locked (a credential was issued, or an admin token configured).
pub async fn install_locked(db: &Db) -> StoreResult<bool> {
    on_db!(db, pool => Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM host_settings WHERE key = $1)",
    )
    .bind(INSTALL_LOCKED)
    .fetch_one(pool)
    .await?))
}

/// Locks the install for good; `why` says what locked it. Idempotent: the first reason stays.
pub async fn lock_install(db: &Db, why: &str) -> StoreResult<()> {
    on_db!(db, pool => {
        sqlx::query(
            "INSERT INTO host_settings (key, value, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (key) DO NOTHING",
        )
        .bind(INSTALL_LOCKED)
        .bind(why)
        .bind(Utc::now())
        .execute(pool)
        .await?;
        Ok(())
    })
}
