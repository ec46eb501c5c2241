//! `canvas_viewport`: the one saved camera position of the canvas.

use chrono::Utc;
use uuid::Uuid;

use super::{Db, StoreResult, on_db, on_db_read};

/// The canvas only ever has one viewport row, under this fixed id.
const VIEWPORT_ID: Uuid = Uuid::from_u128(1);

pub async fn viewport(db: &Db) -> StoreResult<Option<(f64, f64, f64)>> {
    on_db_read!(db, pool => Ok(sqlx::query_as("SELECT x, y, zoom FROM canvas_viewport WHERE id = $1")
        .bind(VIEWPORT_ID)
        .fetch_optional(pool)
        .await?))
}

pub async fn save_viewport(db: &Db, x: f64, y: f64, zoom: f64) -> StoreResult<()> {
    on_db!(db, pool => {
        sqlx::query(
            "INSERT INTO canvas_viewport (id, x, y, zoom, saved_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (id) DO UPDATE SET x = excluded.x, y = excluded.y, zoom = excluded.zoom, saved_at = excluded.saved_at",
        )
        .bind(VIEWPORT_ID)
        .bind(x)
        .bind(y)
        .bind(zoom)
        .bind(Utc::now())
        .execute(pool)
        .await?;
        Ok(())
    })
}
