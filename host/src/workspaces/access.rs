//! `CanCommunicate`: which workspaces may reach which, by their place in the org tree.
//!
//! Allowed: self; siblings (same parent, or both roots); parent and child; any ancestor and
//! descendant within 32 levels. Denied: everything else, cousins included.

use uuid::Uuid;

use super::{Status, WorkspaceError, get_live};
use crate::services::Services;
use crate::store::workspaces::WorkspaceRow;
use crate::store::{self, StoreError};

/// How far up the tree ancestor checks look.
pub const MAX_ANCESTOR_DEPTH: i64 = 32;

/// Whether `caller` may talk to `target`. Unknown ids are never allowed (except to themselves).
/// The tree is read from the routing table ([`crate::agents::routes`]), not per call.
pub async fn can_communicate(
    svc: &Services,
    caller: Uuid,
    target: Uuid,
) -> Result<bool, StoreError> {
    if caller == target {
        return Ok(true);
    }
    let depth = MAX_ANCESTOR_DEPTH as usize + 1;
    let routes = svc.a2a.routes();
    let caller_chain = routes.ancestry(&svc.db, caller, depth).await?;
    let target_chain = routes.ancestry(&svc.db, target, depth).await?;
    Ok(allowed(&caller_chain, &target_chain))
}

/// The live workspaces `id` talks to most directly: its parent, its children and its siblings.
pub async fn peers(svc: &Services, id: Uuid) -> Result<Vec<WorkspaceRow>, WorkspaceError> {
    let me = get_live(svc, id).await?;
    let mut peers = Vec::new();
    if let Some(parent) = me.parent_id
        && let Some(row) = store::workspaces::get(&svc.db, parent).await?
        && row.status != Status::Removed
    {
        peers.push(row);
    }
    peers.extend(store::workspaces::live_with_parent(&svc.db, Some(id)).await?);
    peers.extend(
        store::workspaces::live_with_parent(&svc.db, me.parent_id)
            .await?
            .into_iter()
            .filter(|r| r.id != id),
    );
    Ok(peers)
}

/// The rule on two ancestry chains (`(id, parent)`, the workspace itself first).
pub fn allowed(caller: &[(Uuid, Option<Uuid>)], target: &[(Uuid, Option<Uuid>)]) -> bool {
    let (Some(&(caller_id, caller_parent)), Some(&(target_id, target_parent))) =
        (caller.first(), target.first())
    else {
        return false;
    };
    if caller_id == target_id || caller_parent == target_parent {
        return true;
    }
    let within = |chain: &[(Uuid, Option<Uuid>)], id: Uuid| {
        chain
            .iter()
            .skip(1)
            .take(MAX_ANCESTOR_DEPTH as usize)
            .any(|(ancestor, _)| *ancestor == id)
    };
    within(target, caller_id) || within(caller, target_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds the ancestry chain of `leaf` in a tree given as `(id, parent)` pairs.
    fn chain(tree: &[(u128, Option<u128>)], leaf: u128) -> Vec<(Uuid, Option<Uuid>)> {
        let mut out = Vec::new();
        let mut current = Some(leaf);
        while let Some(id) = current {
            let parent = tree.iter().find(|(n, _)| *n == id).and_then(|(_, p)| *p);
            out.push((Uuid::from_u128(id), parent.map(Uuid::from_u128)));
            current = parent;
        }
        out
    }

    #[test]
    fn hierarchy_rules() {
        // 1 ── 2 ── 4
        //  └── 3 ── 5
        // 6 (another root)
        let tree = [
            (1, None),
            (2, Some(1)),
            (3, Some(1)),
            (4, Some(2)),
            (5, Some(3)),
            (6, None),
        ];
        let can = |a, b| allowed(&chain(&tree, a), &chain(&tree, b));
        assert!(can(2, 3), "siblings");
        assert!(can(1, 6), "roots are siblings");
        assert!(can(1, 2) && can(2, 1), "parent and child");
        assert!(can(1, 4) && can(4, 1), "grandparent and grandchild");
        assert!(!can(4, 5), "cousins");
        assert!(!can(4, 3), "aunt");
        assert!(!can(6, 4), "unrelated trees");
        assert!(can(4, 4), "self");
        assert!(!allowed(&[], &chain(&tree, 1)), "unknown caller");
    }

    #[test]
    fn ancestors_beyond_32_levels_are_not_reached() {
        let tree: Vec<(u128, Option<u128>)> = (1..=40u128)
            .map(|i| (i, if i == 1 { None } else { Some(i - 1) }))
            .collect();
        let can = |a, b| allowed(&chain(&tree, a), &chain(&tree, b));
        assert!(can(40, 8), "32 levels up");
        assert!(!can(40, 7), "33 levels up");
    }
}
