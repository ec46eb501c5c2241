//! The routing table: the workspace rows the A2A path needs on every call (the target's URL,
//! status, runtime and budget; each side's place in the tree for `CanCommunicate`), held in
//! memory instead of read from the database per call.
//!
//! It is kept current by the event bus ([`crate::events::Cache`]): an event about a workspace,
//! published here or relayed from another replica, drops that workspace's row before anyone
//! hears of the change; a relay that lost its connection drops every row. And no row is trusted
//! for longer than the revalidation bound (`cache_revalidate_ms`), so even a change that no event
//! announces is seen within it.

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::events::held::Held;
use crate::events::{Cache, Invalidation};
use crate::store::workspaces::WorkspaceRow;
use crate::store::{self, Db, StoreError};

/// Rows held at most; past it the table starts over (every row is read again once).
const CAPACITY: usize = 65_536;

/// Workspace rows by id.
#[derive(Debug)]
pub struct Routes {
    rows: Held<Uuid, Arc<WorkspaceRow>>,
}

impl Routes {
    pub fn new(revalidate: Duration) -> Self {
        Routes {
            rows: Held::new(revalidate, CAPACITY),
        }
    }

    /// Workspace `id`'s row, removed or not (`None`: no such row), from memory when it is fresh.
    pub async fn row(&self, db: &Db, id: Uuid) -> Result<Option<Arc<WorkspaceRow>>, StoreError> {
        if let Some(row) = self.rows.get(&id) {
            return Ok(Some(row));
        }
        let generation = self.rows.generation();
        let Some(row) = store::workspaces::get(db, id).await?.map(Arc::new) else {
            return Ok(None);
        };
        self.rows.keep(id, row.clone(), generation);
        Ok(Some(row))
    }

    /// `(id, parent_id)` for `id` and its ancestors, nearest first, at most `max_depth` rows:
    /// what [`store::workspaces::ancestry`] answers, from the same rows.
    pub async fn ancestry(
        &self,
        db: &Db,
        id: Uuid,
        max_depth: usize,
    ) -> Result<Vec<(Uuid, Option<Uuid>)>, StoreError> {
        let mut chain = Vec::new();
        let mut next = Some(id);
        while let Some(id) = next.filter(|_| chain.len() < max_depth) {
            let Some(row) = self.row(db, id).await? else {
                break;
            };
            chain.push((row.id, row.parent_id));
            next = row.parent_id;
        }
        Ok(chain)
    }
}

impl Cache for Routes {
    fn forget(&self, what: Invalidation) {
        match what {
            Invalidation::Workspace(id) => self.rows.forget(&id),
            Invalidation::All => self.rows.clear(),
            // A token is no route.
            Invalidation::Token(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Backend;
    use crate::store::testing::TestDatabase;
    use crate::store::workspaces::{NewWorkspace, Status};

    fn workspace(name: &str, parent: Option<Uuid>) -> NewWorkspace {
        NewWorkspace {
            id: Uuid::new_v4(),
            name: name.into(),
            role: None,
            tier: 1,
            status: Status::Online,
            runtime: "external".into(),
            url: Some("http://127.0.0.1:9/".into()),
            parent_id: parent,
            workspace_dir: None,
            workspace_access: "none".into(),
            budget_limit: None,
            max_concurrent_tasks: 1,
            hibernation_idle_minutes: None,
            x: 0.0,
            y: 0.0,
        }
    }

    async fn insert(db: &Db, ws: &NewWorkspace) {
        store::workspaces::insert(db, ws, &[], &serde_json::json!({}))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn rows_come_from_memory_until_forgotten_or_stale_and_ancestry_matches_the_store() {
        let database = TestDatabase::create(Backend::Sqlite).await;
        let db = database.connect().await;
        let root = workspace("root", None);
        let child = workspace("child", Some(root.id));
        let leaf = workspace("leaf", Some(child.id));
        for ws in [&root, &child, &leaf] {
            insert(&db, ws).await;
        }
        let routes = Routes::new(Duration::from_secs(3600));
        let first = routes.row(&db, leaf.id).await.unwrap().unwrap();
        store::workspaces::set_url(&db, leaf.id, Some("http://127.0.0.1:10/"))
            .await
            .unwrap();
        let cached = routes.row(&db, leaf.id).await.unwrap().unwrap();
        assert!(Arc::ptr_eq(&first, &cached), "read from memory");

        routes.forget(Invalidation::Workspace(leaf.id));
        let fresh = routes.row(&db, leaf.id).await.unwrap().unwrap();
        assert_eq!(fresh.url.as_deref(), Some("http://127.0.0.1:10/"));

        for depth in [1, 2, 3, 8] {
            assert_eq!(
                routes.ancestry(&db, leaf.id, depth).await.unwrap(),
                store::workspaces::ancestry(&db, leaf.id, depth as i64)
                    .await
                    .unwrap(),
                "depth {depth}"
            );
        }
        assert!(routes.row(&db, Uuid::new_v4()).await.unwrap().is_none());

        // Past the revalidation bound a row is read again, event or not.
        let brief = Routes::new(Duration::from_millis(20));
        brief.row(&db, root.id).await.unwrap();
        store::workspaces::set_url(&db, root.id, Some("http://127.0.0.1:11/"))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        let reread = brief.row(&db, root.id).await.unwrap().unwrap();
        assert_eq!(reread.url.as_deref(), Some("http://127.0.0.1:11/"));

        routes.forget(Invalidation::All);
        assert!(routes.rows.is_empty());
    }
}
