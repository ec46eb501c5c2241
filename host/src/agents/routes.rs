//! The routing table: the workspace rows the A2A path needs on every call (the target's URL,
//! status, runtime and budget; each side's place in the tree for `CanCommunicate`), held in
//! memory instead of read from the database per call.
//!
//! It is kept current by the event bus ([`crate::events::Cache`]): an event about a workspace,
//! published here or relayed from another replica, drops that workspace's row before anyone
//! hears of the change; a relay that lost its connection drops every row. And no row is trusted
//! for longer than the revalidation bound (`cache_revalidate_ms`), so even a change that no event
//! announces is seen within it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::events::{Cache, Invalidation};
use crate::store::workspaces::WorkspaceRow;
use crate::store::{self, Db, StoreError};

/// Rows held at most; past it the table starts over (every row is read again once).
const CAPACITY: usize = 65_536;

/// Workspace rows by id, each with when it was read.
#[derive(Debug)]
pub struct Routes {
    revalidate: Duration,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    rows: HashMap<Uuid, (Arc<WorkspaceRow>, Instant)>,
    /// Bumped by every invalidation: a row read while one happened is not kept, since it may
    /// predate the change the invalidation announced.
    generation: u64,
}

impl Routes {
    pub fn new(revalidate: Duration) -> Self {
        Routes {
            revalidate,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Workspace `id`'s row, removed or not (`None`: no such row), from memory when it is fresh.
    pub async fn row(&self, db: &Db, id: Uuid) -> Result<Option<Arc<WorkspaceRow>>, StoreError> {
        let generation = {
            let inner = self.lock();
            if let Some((row, at)) = inner.rows.get(&id)
                && at.elapsed() < self.revalidate
            {
                return Ok(Some(row.clone()));
            }
            inner.generation
        };
        let Some(row) = store::workspaces::get(db, id).await?.map(Arc::new) else {
            return Ok(None);
        };
        let mut inner = self.lock();
        if inner.generation == generation {
            if inner.rows.len() >= CAPACITY {
                inner.rows.clear();
            }
            inner.rows.insert(id, (row.clone(), Instant::now()));
        }
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
        let mut inner = self.lock();
        inner.generation = inner.generation.wrapping_add(1);
        match what {
            Invalidation::Workspace(id) => {
                inner.rows.remove(&id);
            }
            Invalidation::All => inner.rows.clear(),
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
        assert!(routes.lock().rows.is_empty());
    }
}
