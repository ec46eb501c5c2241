//! `workspace_config`: a free-form JSON object per workspace, merged shallowly on PATCH.

use chrono::Utc;
use serde_json::{Map, Value};
use sqlx::types::Json;
use uuid::Uuid;

use super::{Db, StoreResult, on_db, on_db_read};

pub async fn get(db: &Db, workspace_id: Uuid) -> StoreResult<Option<Value>> {
    on_db_read!(db, pool => Ok(sqlx::query_scalar("SELECT data FROM workspace_config WHERE workspace_id = $1")
        .bind(workspace_id)
        .fetch_optional(pool)
        .await?))
}

/// Merges `patch` into the stored object (top-level keys replace) and returns the result.
///
/// The merge happens in the host inside one transaction rather than in SQL, because the two
/// engines' JSON operators differ (`||` versus `json_patch`, which merges recursively). On
/// PostgreSQL the row is locked for the read-modify-write; SQLite serialises writers anyway.
pub async fn merge(db: &Db, workspace_id: Uuid, patch: &Map<String, Value>) -> StoreResult<Value> {
    let lock = match db.backend() {
        super::Backend::Postgres => " FOR UPDATE",
        super::Backend::Sqlite => "",
    };
    let select = format!("SELECT data FROM workspace_config WHERE workspace_id = $1{lock}");
    let begin = db.begin_write_sql();
    on_db!(db, pool => {
        let mut tx = super::begin(pool, Some(begin)).await?;
        let current: Option<Value> = sqlx::query_scalar(&select).bind(workspace_id).fetch_optional(&mut *tx).await?;
        let mut merged = match current {
            Some(Value::Object(map)) => map,
            _ => Map::new(),
        };
        for (key, value) in patch {
            merged.insert(key.clone(), value.clone());
        }
        let merged = Value::Object(merged);
        sqlx::query(
            "INSERT INTO workspace_config (workspace_id, data, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (workspace_id) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at",
        )
        .bind(workspace_id)
        .bind(Json(&merged))
        .bind(Utc::now())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(merged)
    })
}
