//! Store behaviour on both backends: the migrator, the constraint names the HTTP layer relies
//! on, and the tree, config, liveness and token queries. Every test runs on a fresh SQLite and
//! a fresh PostgreSQL database (`both_backends!`).

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::activity::ActivityRow;
use super::status::{Cause, Status};
use super::workspaces::{NewWorkspace, SealedSecret, WorkspacePatch};
use super::{Backend, Constraint, Db, StoreError, on_db};

crate::both_backends!(
    migrating_twice_is_harmless_and_creates_every_table_and_index,
    a_live_sibling_name_is_taken_until_the_first_is_removed,
    invalid_fields_map_to_workspace_field_invalid,
    a_missing_parent_maps_to_workspace_parent_missing,
    a_child_row_for_a_missing_workspace_is_workspace_missing,
    a_repeated_activity_idempotency_key_maps_to_activity_duplicate,
    other_unique_violations_carry_their_constraint_name,
    subtree_mark_removed_and_purge_cover_a_three_level_tree,
    workspace_config_merge_is_shallow_and_keeps_json_types,
    mark_stale_offline_only_touches_silent_online_and_degraded_rows,
    idle_candidates_are_running_idle_host_run_rows_that_asked_and_newest_activity_is_the_latest_row,
    tokens_ignore_revoked_tokens_and_removed_workspaces,
    the_install_lock_is_stored_once_and_keeps_its_first_reason,
    the_busy_queue_keeps_one_active_copy_per_message_and_drains_by_priority,
    stranded_delegations_are_the_host_run_ones_left_unfinished_before_the_cutoff,
    a_delegation_ends_with_its_result_row_in_one_transaction_and_only_once,
    a_restart_claim_coalesces_is_renewed_and_passes_on_only_once_expired,
    the_secret_tables_rebuild_keeps_every_row_constraint_and_cascade,
    deferred_writes_are_stored_in_order_with_stamps_coalesced_and_flush_waits_for_them,
    under_load_deferred_writes_share_commits_at_most_one_per_linger,
    stored_rows_are_durable_on_return_share_commits_and_fail_alone,
    a_bad_deferred_row_loses_only_itself,
    queued_messages_share_commits_keep_one_copy_each_and_fail_alone,
    recorded_events_share_commits_are_in_the_log_on_return_and_fail_alone,
    a_row_and_its_event_are_stored_together_and_the_event_never_alone,
    delegation_changes_share_commits_in_the_order_queued_and_end_only_once,
    closing_the_writer_stores_what_is_queued_and_drops_later_writes,
    a_full_write_queue_makes_callers_wait_instead_of_growing,
    a_batch_larger_than_one_statement_lands_whole_or_not_at_all,
    a_due_schedule_tick_is_claimed_by_exactly_one_of_many_concurrent_claims,
    template_schedules_are_upserted_without_touching_runtime_ones,
    the_activity_search_index_follows_inserts_updates_and_deletes_of_its_workspace_only,
    migration_0020_indexes_the_activity_rows_already_stored,
);

fn workspace(name: &str, parent: Option<Uuid>) -> NewWorkspace {
    NewWorkspace {
        id: Uuid::new_v4(),
        name: name.to_owned(),
        role: None,
        tier: 3,
        status: Status::Provisioning,
        runtime: "langgraph".to_owned(),
        url: None,
        parent_id: parent,
        workspace_dir: None,
        workspace_access: "none".to_owned(),
        budget_limit: None,
        max_concurrent_tasks: 1,
        hibernation_idle_minutes: None,
        x: 0.0,
        y: 0.0,
    }
}

/// Inserts a workspace with an empty config and returns its id.
async fn add(db: &Db, name: &str, parent: Option<Uuid>) -> Uuid {
    let ws = workspace(name, parent);
    super::workspaces::insert(db, &ws, &[], &json!({}))
        .await
        .expect("inserting a workspace");
    ws.id
}

/// `SELECT COUNT(*) FROM table WHERE column = $1`.
async fn count(db: &Db, table: &str, column: &str, id: Uuid) -> i64 {
    let sql = format!("SELECT COUNT(*) FROM {table} WHERE {column} = $1");
    on_db!(db, pool => sqlx::query_scalar(&sql).bind(id).fetch_one(pool).await.expect("counting rows"))
}

async fn status_of(db: &Db, id: Uuid) -> String {
    super::workspaces::get(db, id)
        .await
        .expect("reading a workspace")
        .expect("the workspace exists")
        .status
        .to_string()
}

#[track_caller]
fn assert_constraint(result: Result<impl std::fmt::Debug, StoreError>, expected: Constraint) {
    match result {
        Err(StoreError::Constraint(found)) => assert_eq!(found, expected),
        other => panic!("expected {expected:?}, got {other:?}"),
    }
}

/// Names declared in the migrations: `(tables, indexes, constraints)`.
/// The tables, indexes and constraints the migrations declare: those one backend creates, or,
/// with `None`, every one either backend does.
fn declared_names(
    backend: Option<Backend>,
) -> (BTreeSet<String>, BTreeSet<String>, BTreeSet<String>) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations");
    let (mut tables, mut indexes, mut constraints) =
        (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for entry in std::fs::read_dir(dir).expect("the migrations directory") {
        let sql = std::fs::read_to_string(entry.expect("an entry").path()).expect("a migration");
        let sql = match backend {
            Some(backend) => super::migrate::backend_blocks(backend, &sql),
            None => sql,
        };
        let words: Vec<&str> = sql
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .flat_map(str::split_whitespace)
            .collect();
        for window in words.windows(3) {
            let name = |w: &str| {
                w.trim_matches(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .to_owned()
            };
            match window {
                ["CREATE", "TABLE", table] => {
                    tables.insert(name(table));
                }
                ["CREATE", "INDEX", index] | ["UNIQUE", "INDEX", index] => {
                    indexes.insert(name(index));
                }
                ["CONSTRAINT", constraint, _] => {
                    constraints.insert(name(constraint));
                }
                _ => {}
            }
        }
    }
    (tables, indexes, constraints)
}

#[test]
fn every_constraint_in_the_migrations_has_a_name_the_store_knows() {
    let (_, indexes, constraints) = declared_names(None);
    let unique_indexes = indexes.iter().filter(|i| i.ends_with("_uniq"));
    for name in constraints.iter().chain(unique_indexes) {
        assert_ne!(
            Constraint::from_name(name),
            Constraint::Other("unknown"),
            "{name} is neither mapped nor listed in OTHER_CONSTRAINTS"
        );
    }
    for (columns, name) in super::SQLITE_UNIQUE_COLUMNS {
        assert!(
            constraints.contains(*name) || indexes.contains(*name),
            "SQLITE_UNIQUE_COLUMNS maps {columns} to {name}, which the schema does not declare"
        );
    }
}

async fn migrating_twice_is_harmless_and_creates_every_table_and_index(db: Db) {
    // `TestDatabase::connect` migrated once already.
    db.migrate().await.expect("a second migration run");
    db.migrate().await.expect("a third migration run");
    let (tables, indexes, _) = declared_names(Some(db.backend()));
    assert!(tables.contains("workspaces") && tables.contains("workspace_config"));

    let (table_sql, index_sql) = match db.backend() {
        Backend::Sqlite => (
            // `pragma_table_list` tells ordinary tables from FTS5's virtual table and the
            // shadow tables SQLite keeps for it (`agent_memories_fts_data`, ...).
            "SELECT name FROM pragma_table_list WHERE schema = 'main' AND type = 'table' \
             AND name NOT LIKE 'sqlite_%'",
            "SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_%'",
        ),
        Backend::Postgres => (
            "SELECT table_name::TEXT FROM information_schema.tables WHERE table_schema = 'public'",
            "SELECT indexname::TEXT FROM pg_indexes WHERE schemaname = 'public'",
        ),
    };
    let (found_tables, found_indexes): (Vec<String>, Vec<String>) = on_db!(&db, pool => (
        sqlx::query_scalar(table_sql).fetch_all(pool).await.expect("listing tables"),
        sqlx::query_scalar(index_sql).fetch_all(pool).await.expect("listing indexes"),
    ));
    let mut expected = tables.clone();
    expected.insert("schema_migrations".to_owned());
    assert_eq!(found_tables.into_iter().collect::<BTreeSet<_>>(), expected);
    if db.backend() == Backend::Sqlite {
        let virtual_tables: Vec<String> = on_db!(&db, pool => sqlx::query_scalar(
            "SELECT name FROM pragma_table_list WHERE schema = 'main' AND type = 'virtual'"
        ).fetch_all(pool).await.expect("listing virtual tables"));
        assert_eq!(
            virtual_tables.into_iter().collect::<BTreeSet<_>>(),
            BTreeSet::from([
                "activity_search_fts".to_owned(),
                "agent_memories_fts".to_owned()
            ]),
            "the memory and session search indexes"
        );
    }
    let found_indexes: BTreeSet<String> = found_indexes.into_iter().collect();
    for index in &indexes {
        assert!(found_indexes.contains(index), "index {index} missing");
    }
    for table in &tables {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        let rows: i64 = on_db!(&db, pool => sqlx::query_scalar(&sql).fetch_one(pool).await.expect("a readable table"));
        assert_eq!(rows, 0, "{table} starts empty");
    }
    let applied: i64 = on_db!(&db, pool => sqlx::query_scalar("SELECT COUNT(*) FROM schema_migrations").fetch_one(pool).await.expect("the ledger"));
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations"))
        .expect("the migrations directory")
        .count();
    assert_eq!(applied as usize, files, "each migration recorded once");
}

async fn a_live_sibling_name_is_taken_until_the_first_is_removed(db: Db) {
    let first_root = add(&db, "Lead", None).await;
    let twin = workspace("Lead", None);
    assert_constraint(
        super::workspaces::insert(&db, &twin, &[], &json!({})).await,
        Constraint::WorkspaceNameTaken,
    );
    // Names are per parent: the same name below a parent, and below another parent, is free.
    let child = add(&db, "Lead", Some(first_root)).await;
    let other_root = add(&db, "Other", None).await;
    add(&db, "Lead", Some(other_root)).await;
    assert_constraint(
        super::workspaces::insert(&db, &workspace("Lead", Some(first_root)), &[], &json!({})).await,
        Constraint::WorkspaceNameTaken,
    );
    // A rename into a taken name is refused the same way, and changes nothing.
    let rename = WorkspacePatch {
        name: Some("Lead".to_owned()),
        ..WorkspacePatch::default()
    };
    assert_constraint(
        super::workspaces::update(&db, other_root, &rename).await,
        Constraint::WorkspaceNameTaken,
    );
    let other = super::workspaces::get(&db, other_root).await.unwrap();
    assert_eq!(other.expect("still there").name, "Other");

    // Removed rows no longer hold their name.
    super::workspaces::mark_removed(&db, &[first_root, child])
        .await
        .expect("removing");
    super::workspaces::insert(&db, &twin, &[], &json!({}))
        .await
        .expect("the name is free again once the first is removed");
    assert_constraint(
        super::workspaces::insert(&db, &workspace("Lead", None), &[], &json!({})).await,
        Constraint::WorkspaceNameTaken,
    );
}

async fn invalid_fields_map_to_workspace_field_invalid(db: Db) {
    let id = add(&db, "Agent", None).await;
    // The typed API cannot name a status outside the ten; the table refuses one written past it.
    let bogus: Result<(), StoreError> = on_db!(&db, pool => sqlx::query(
        "UPDATE workspaces SET status = 'bogus' WHERE id = $1",
    )
    .bind(id)
    .execute(pool)
    .await
    .map(|_| ())
    .map_err(StoreError::from));
    assert_constraint(bogus, Constraint::WorkspaceFieldInvalid);
    assert_eq!(status_of(&db, id).await, "provisioning", "nothing changed");
    let bad_tier = NewWorkspace {
        tier: 9,
        ..workspace("Tier", None)
    };
    let bad_access = NewWorkspace {
        workspace_access: "everything".to_owned(),
        ..workspace("Access", None)
    };
    let bad_tasks = NewWorkspace {
        max_concurrent_tasks: 0,
        ..workspace("Tasks", None)
    };
    for ws in [bad_tier, bad_access, bad_tasks] {
        assert_constraint(
            super::workspaces::insert(&db, &ws, &[], &json!({})).await,
            Constraint::WorkspaceFieldInvalid,
        );
        assert!(
            super::workspaces::get(&db, ws.id).await.unwrap().is_none(),
            "the failed insert left no row"
        );
    }
    let patch = WorkspacePatch {
        tier: Some(0),
        ..WorkspacePatch::default()
    };
    assert_constraint(
        super::workspaces::update(&db, id, &patch).await,
        Constraint::WorkspaceFieldInvalid,
    );
}

async fn a_missing_parent_maps_to_workspace_parent_missing(db: Db) {
    let orphan = workspace("Orphan", Some(Uuid::new_v4()));
    assert_constraint(
        super::workspaces::insert(&db, &orphan, &[], &json!({})).await,
        Constraint::WorkspaceParentMissing,
    );
    assert!(
        super::workspaces::get(&db, orphan.id)
            .await
            .unwrap()
            .is_none()
    );
    // Re-parenting onto a missing workspace is the same violation.
    let id = add(&db, "Agent", None).await;
    let patch = WorkspacePatch {
        parent_id: Some(Some(Uuid::new_v4())),
        ..WorkspacePatch::default()
    };
    assert_constraint(
        super::workspaces::update(&db, id, &patch).await,
        Constraint::WorkspaceParentMissing,
    );
    let row = super::workspaces::get(&db, id).await.unwrap().unwrap();
    assert_eq!(row.parent_id, None);
}

fn activity(workspace_id: Uuid, key: Option<&str>) -> ActivityRow {
    let mut row = ActivityRow::new(workspace_id, "agent_log");
    row.summary = Some("did a thing".to_owned());
    row.idempotency_key = key.map(str::to_owned);
    row
}

async fn a_child_row_for_a_missing_workspace_is_workspace_missing(db: Db) {
    let ghost = Uuid::new_v4();
    assert_constraint(
        super::activity::insert(&db, &activity(ghost, None)).await,
        Constraint::WorkspaceMissing,
    );
    assert_constraint(
        super::secrets::upsert_workspace(&db, ghost, "KEY", b"sealed", 0).await,
        Constraint::WorkspaceMissing,
    );
    assert_constraint(
        super::tokens::insert_workspace_token(
            &db,
            Uuid::new_v4(),
            ghost,
            &[7; 32],
            "prefix00",
            None,
        )
        .await,
        Constraint::WorkspaceMissing,
    );
}

async fn a_repeated_activity_idempotency_key_maps_to_activity_duplicate(db: Db) {
    let id = add(&db, "Agent", None).await;
    let other = add(&db, "Other", None).await;
    super::activity::insert(&db, &activity(id, Some("delivery-1")))
        .await
        .expect("first delivery");
    assert_constraint(
        super::activity::insert(&db, &activity(id, Some("delivery-1"))).await,
        Constraint::ActivityDuplicate,
    );
    // Keys are per workspace, and rows without a key never collide.
    super::activity::insert(&db, &activity(other, Some("delivery-1")))
        .await
        .expect("same key, other workspace");
    for _ in 0..2 {
        super::activity::insert(&db, &activity(id, None))
            .await
            .expect("no key");
    }
    let rows = super::activity::list(&db, id, None, None, 10)
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
}

async fn other_unique_violations_carry_their_constraint_name(db: Db) {
    let id = add(&db, "Agent", None).await;
    let dup = workspace("Again", None);
    let dup = NewWorkspace { id, ..dup };
    assert_constraint(
        super::workspaces::insert(&db, &dup, &[], &json!({})).await,
        Constraint::Other("workspaces_pkey"),
    );
    let hash = [42u8; 32];
    super::tokens::insert_workspace_token(&db, Uuid::new_v4(), id, &hash, "prefix00", None)
        .await
        .expect("first token");
    assert_constraint(
        super::tokens::insert_workspace_token(&db, Uuid::new_v4(), id, &hash, "prefix00", None)
            .await,
        Constraint::Other("workspace_auth_tokens_hash_uniq"),
    );
    super::tokens::insert_org_token(&db, Uuid::new_v4(), &hash, "prefix00", None, None)
        .await
        .expect("an org token may share nothing with workspace tokens");
    assert_constraint(
        super::tokens::insert_org_token(&db, Uuid::new_v4(), &hash, "prefix00", None, None).await,
        Constraint::Other("org_api_tokens_hash_uniq"),
    );
    // Two secrets of the same key in one insert (the upsert routes never do this).
    let secret = SealedSecret {
        key: "API_KEY".to_owned(),
        ciphertext: b"sealed".to_vec(),
        version: 0,
    };
    let ws = workspace("Secretive", None);
    assert_constraint(
        super::workspaces::insert(&db, &ws, &[secret.clone(), secret], &json!({})).await,
        Constraint::Other("workspace_secrets_workspace_key_uniq"),
    );
    assert!(
        super::workspaces::get(&db, ws.id).await.unwrap().is_none(),
        "the whole insert rolled back"
    );
}

async fn subtree_mark_removed_and_purge_cover_a_three_level_tree(db: Db) {
    // root ── c1 ── g1
    //     └── c2 ── g2
    // bystander (another root), forwarded to g1
    let root = add(&db, "root", None).await;
    let c1 = add(&db, "c1", Some(root)).await;
    let c2 = add(&db, "c2", Some(root)).await;
    let g1 = add(&db, "g1", Some(c1)).await;
    let g2 = add(&db, "g2", Some(c2)).await;
    let bystander = add(&db, "bystander", None).await;
    let tree = [root, c1, c2, g1, g2];
    for (i, id) in tree.iter().chain([&bystander]).enumerate() {
        super::secrets::upsert_workspace(&db, *id, "API_KEY", b"sealed", 0)
            .await
            .unwrap();
        super::tokens::insert_workspace_token(
            &db,
            Uuid::new_v4(),
            *id,
            &[i as u8; 32],
            "prefix00",
            None,
        )
        .await
        .unwrap();
        super::activity::insert(&db, &activity(*id, None))
            .await
            .unwrap();
    }
    on_db!(&db, pool => sqlx::query("UPDATE workspaces SET forwarded_to = $1 WHERE id = $2")
        .bind(g1).bind(bystander).execute(pool).await.unwrap().rows_affected());
    super::tokens::insert_org_token(&db, Uuid::new_v4(), &[99; 32], "prefix00", None, None)
        .await
        .unwrap();
    on_db!(&db, pool => sqlx::query("UPDATE org_api_tokens SET org_id = $1").bind(root).execute(pool).await.unwrap().rows_affected());

    let subtree = super::workspaces::subtree(&db, root).await.unwrap();
    assert_eq!(subtree.len(), 5);
    assert_eq!(subtree[0], root, "root first");
    assert_eq!(
        subtree[1..3].iter().collect::<BTreeSet<_>>(),
        [c1, c2].iter().collect(),
        "children before grandchildren"
    );
    assert_eq!(
        subtree[3..].iter().collect::<BTreeSet<_>>(),
        [g1, g2].iter().collect()
    );
    assert_eq!(super::workspaces::subtree(&db, c1).await.unwrap(), [c1, g1]);
    assert_eq!(super::workspaces::subtree(&db, g2).await.unwrap(), [g2]);
    assert!(
        super::workspaces::subtree(&db, Uuid::new_v4())
            .await
            .unwrap()
            .is_empty()
    );

    // Marking: every row tombstoned, layouts dropped, tokens revoked; the bystander untouched.
    let changed = super::workspaces::mark_removed(&db, &subtree)
        .await
        .unwrap();
    assert_eq!(
        changed.iter().collect::<BTreeSet<_>>(),
        tree.iter().collect()
    );
    for id in tree {
        let row = super::workspaces::get(&db, id).await.unwrap().unwrap();
        assert_eq!(row.status, Status::Removed);
        assert!(row.removed_at.is_some());
        assert_eq!(count(&db, "canvas_layouts", "workspace_id", id).await, 0);
        assert_eq!(
            super::tokens::count_live_workspace_tokens(&db, id)
                .await
                .unwrap(),
            0
        );
    }
    assert_eq!(status_of(&db, bystander).await, "provisioning");
    assert_eq!(
        count(&db, "canvas_layouts", "workspace_id", bystander).await,
        1
    );
    let live: Vec<Uuid> = super::workspaces::list_live(&db)
        .await
        .unwrap()
        .iter()
        .map(|w| w.id)
        .collect();
    assert_eq!(live, [bystander]);
    assert!(
        super::workspaces::mark_removed(&db, &subtree)
            .await
            .unwrap()
            .is_empty(),
        "marking again changes nothing"
    );
    assert_eq!(
        super::workspaces::subtree(&db, root).await.unwrap().len(),
        5,
        "the walk includes removed rows"
    );

    // Purging: the rows and everything hanging off them are gone; outside references cleared.
    assert_eq!(super::workspaces::purge(&db, &subtree).await.unwrap(), 5);
    for id in tree {
        assert!(super::workspaces::get(&db, id).await.unwrap().is_none());
        for table in [
            "workspace_secrets",
            "canvas_layouts",
            "workspace_config",
            "workspace_auth_tokens",
            "activity_logs",
        ] {
            assert_eq!(count(&db, table, "workspace_id", id).await, 0, "{table}");
        }
    }
    let bystander_row = super::workspaces::get(&db, bystander)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bystander_row.forwarded_to, None);
    for table in [
        "workspace_secrets",
        "canvas_layouts",
        "workspace_config",
        "workspace_auth_tokens",
        "activity_logs",
    ] {
        assert_eq!(
            count(&db, table, "workspace_id", bystander).await,
            1,
            "{table}"
        );
    }
    let org_ids: Vec<Option<Uuid>> = on_db!(&db, pool => sqlx::query_scalar("SELECT org_id FROM org_api_tokens").fetch_all(pool).await.unwrap());
    assert_eq!(org_ids, [None], "the org token outlives its org");
    assert_eq!(super::workspaces::purge(&db, &subtree).await.unwrap(), 0);
}

async fn workspace_config_merge_is_shallow_and_keeps_json_types(db: Db) {
    let ws = workspace("Configured", None);
    super::workspaces::insert(&db, &ws, &[], &json!({ "template": "seo" }))
        .await
        .unwrap();
    let patch = |v: Value| -> Map<String, Value> {
        match v {
            Value::Object(map) => map,
            _ => unreachable!("patches are objects"),
        }
    };
    let merged = super::workspace_config::merge(
        &db,
        ws.id,
        &patch(json!({ "model": { "name": "m1", "temperature": 0.5 }, "digits": "123", "n": 123 })),
    )
    .await
    .unwrap();
    assert_eq!(
        merged,
        json!({ "template": "seo", "model": { "name": "m1", "temperature": 0.5 }, "digits": "123", "n": 123 })
    );
    // A nested object in the patch replaces the stored one whole; other keys stay.
    let merged = super::workspace_config::merge(
        &db,
        ws.id,
        &patch(json!({ "model": { "name": "m2" }, "n": null })),
    )
    .await
    .unwrap();
    let expected =
        json!({ "template": "seo", "model": { "name": "m2" }, "digits": "123", "n": null });
    assert_eq!(merged, expected);
    assert_eq!(
        super::workspace_config::get(&db, ws.id).await.unwrap(),
        Some(expected)
    );

    // Without a stored row the patch becomes the config.
    on_db!(&db, pool => sqlx::query("DELETE FROM workspace_config WHERE workspace_id = $1").bind(ws.id).execute(pool).await.unwrap().rows_affected());
    let merged = super::workspace_config::merge(&db, ws.id, &patch(json!({ "a": [1, 2] })))
        .await
        .unwrap();
    assert_eq!(merged, json!({ "a": [1, 2] }));
    assert_eq!(
        super::workspace_config::get(&db, Uuid::new_v4())
            .await
            .unwrap(),
        None
    );
}

/// Sets a row's status and clocks directly, as if time had passed.
async fn age(
    db: &Db,
    id: Uuid,
    status: &str,
    heartbeat: Option<DateTime<Utc>>,
    updated: DateTime<Utc>,
) {
    on_db!(db, pool => sqlx::query(
        "UPDATE workspaces SET status = $2, last_heartbeat_at = $3, updated_at = $4 WHERE id = $1",
    )
    .bind(id)
    .bind(status)
    .bind(heartbeat)
    .bind(updated)
    .execute(pool)
    .await
    .expect("ageing a row")
    .rows_affected());
}

async fn idle_candidates_are_running_idle_host_run_rows_that_asked_and_newest_activity_is_the_latest_row(
    db: Db,
) {
    let mut expected = BTreeSet::new();
    for (name, status, runtime, minutes, active, candidate) in [
        ("online", "online", "langgraph", Some(5), 0, true),
        ("degraded", "degraded", "langgraph", Some(1), 0, true),
        ("never", "online", "langgraph", Some(0), 0, false),
        ("unset", "online", "langgraph", None, 0, false),
        ("busy", "online", "langgraph", Some(5), 2, false),
        ("external", "online", "external", Some(5), 0, false),
        ("paused", "paused", "langgraph", Some(5), 0, false),
        ("hibernated", "hibernated", "langgraph", Some(5), 0, false),
        (
            "provisioning",
            "provisioning",
            "langgraph",
            Some(5),
            0,
            false,
        ),
    ] {
        let mut ws = workspace(name, None);
        ws.runtime = runtime.to_owned();
        ws.hibernation_idle_minutes = minutes;
        super::workspaces::insert(&db, &ws, &[], &json!({}))
            .await
            .unwrap();
        on_db!(&db, pool => sqlx::query("UPDATE workspaces SET status = $2, active_tasks = $3 WHERE id = $1")
            .bind(ws.id).bind(status).bind(active).execute(pool).await.unwrap().rows_affected());
        if candidate {
            expected.insert((ws.id, minutes.unwrap()));
        }
    }
    let found: BTreeSet<(Uuid, i32)> = super::workspaces::idle_candidates(&db)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.id, c.hibernation_idle_minutes))
        .collect();
    assert_eq!(found, expected);

    let (id, _) = *expected.first().unwrap();
    assert_eq!(super::activity::newest_at(&db, id).await.unwrap(), None);
    let now = Utc::now();
    for (kind, at) in [
        ("old", now - Duration::hours(2)),
        ("new", now),
        ("mid", now - Duration::hours(1)),
    ] {
        let mut row = ActivityRow::new(id, kind);
        row.created_at = at;
        super::activity::insert(&db, &row).await.unwrap();
    }
    let newest = super::activity::newest_at(&db, id).await.unwrap().unwrap();
    assert_eq!(newest.timestamp_millis(), now.timestamp_millis());
}

async fn mark_stale_offline_only_touches_silent_online_and_degraded_rows(db: Db) {
    let now = Utc::now();
    let long_ago = now - Duration::minutes(10);
    let cutoff = now - Duration::minutes(3);
    let mut expect_offline = BTreeSet::new();
    let mut unchanged = Vec::new();
    for (name, status, heartbeat, updated, stale) in [
        ("online-silent", "online", Some(long_ago), now, true),
        ("degraded-silent", "degraded", Some(long_ago), now, true),
        ("online-never-beat", "online", None, long_ago, true),
        ("online-recent", "online", Some(now), long_ago, false),
        // A heartbeat just after the cutoff counts; one just before does not.
        (
            "online-edge-after",
            "online",
            Some(cutoff + Duration::milliseconds(1)),
            long_ago,
            false,
        ),
        (
            "online-edge-before",
            "online",
            Some(cutoff - Duration::milliseconds(1)),
            now,
            true,
        ),
        ("degraded-recent", "degraded", Some(now), now, false),
        ("online-fresh", "online", None, now, false),
        ("provisioning-old", "provisioning", None, long_ago, false),
        ("offline-old", "offline", Some(long_ago), long_ago, false),
        ("failed-old", "failed", Some(long_ago), long_ago, false),
        ("paused-old", "paused", Some(long_ago), long_ago, false),
        ("removed-old", "removed", Some(long_ago), long_ago, false),
    ] {
        let id = add(&db, name, None).await;
        age(&db, id, status, heartbeat, updated).await;
        if stale {
            expect_offline.insert(id);
        } else {
            unchanged.push((id, status));
        }
    }
    let changed = super::workspaces::mark_stale_offline(&db, cutoff)
        .await
        .unwrap();
    assert_eq!(changed.into_iter().collect::<BTreeSet<_>>(), expect_offline);
    for id in &expect_offline {
        assert_eq!(status_of(&db, *id).await, "offline");
    }
    for (id, status) in unchanged {
        assert_eq!(status_of(&db, id).await, status);
    }
    assert!(
        super::workspaces::mark_stale_offline(&db, cutoff)
            .await
            .unwrap()
            .is_empty(),
        "a second sweep finds nothing"
    );
}

/// The workspace a token hash belongs to, as the auth check sees it.
async fn token_owner(db: &Db, hash: &[u8]) -> Option<Uuid> {
    super::tokens::workspace_for_token(db, hash)
        .await
        .unwrap()
        .map(|token| token.workspace_id)
}

async fn tokens_ignore_revoked_tokens_and_removed_workspaces(db: Db) {
    assert!(
        !super::tokens::any_token_issued(&db).await.unwrap(),
        "fresh install"
    );
    let id = add(&db, "Agent", None).await;
    let other = add(&db, "Other", None).await;
    let (live, revoked, unknown) = ([1u8; 32], [2u8; 32], [3u8; 32]);
    let live_id = Uuid::new_v4();
    let revoked_id = Uuid::new_v4();
    super::tokens::insert_workspace_token(&db, live_id, id, &live, "live0000", None)
        .await
        .unwrap();
    super::tokens::insert_workspace_token(&db, revoked_id, id, &revoked, "revoked0", None)
        .await
        .unwrap();
    assert!(super::tokens::any_token_issued(&db).await.unwrap());
    assert!(
        super::tokens::revoke_workspace_token(&db, id, revoked_id)
            .await
            .unwrap()
    );
    assert!(
        !super::tokens::revoke_workspace_token(&db, other, live_id)
            .await
            .unwrap(),
        "a token is revoked through its own workspace only"
    );
    assert_eq!(token_owner(&db, &live).await, Some(id));
    assert_eq!(token_owner(&db, &revoked).await, None);
    assert_eq!(token_owner(&db, &unknown).await, None);
    let listed = super::tokens::list_workspace_tokens(&db, id, 10, 0)
        .await
        .unwrap();
    assert_eq!(listed.len(), 1, "revoked tokens are not listed");
    assert_eq!(listed[0].id, live_id);
    assert!(listed[0].last_used_at.is_none(), "a lookup only reads");
    // The guard stamps a use through the deferred writer.
    let writer = super::batch::Writer::start(db.clone());
    writer
        .write(super::batch::Write::WorkspaceTokenUsed {
            token: live_id,
            at: Utc::now(),
        })
        .await;
    writer.close().await;
    let listed = super::tokens::list_workspace_tokens(&db, id, 10, 0)
        .await
        .unwrap();
    assert!(listed[0].last_used_at.is_some(), "the use is stamped");
    assert_eq!(
        super::tokens::count_live_workspace_tokens(&db, id)
            .await
            .unwrap(),
        1
    );

    // An expired token is neither valid, listed nor counted; one expiring later is, and counts
    // as minted (the agent's own rotated token does not).
    let (expired, later) = ([4u8; 32], [5u8; 32]);
    let now = Utc::now();
    super::tokens::insert_workspace_token(
        &db,
        Uuid::new_v4(),
        id,
        &expired,
        "expired0",
        Some(now - chrono::Duration::seconds(1)),
    )
    .await
    .unwrap();
    super::tokens::insert_workspace_token(
        &db,
        Uuid::new_v4(),
        id,
        &later,
        "later000",
        Some(now + chrono::Duration::hours(1)),
    )
    .await
    .unwrap();
    assert_eq!(token_owner(&db, &expired).await, None);
    assert_eq!(token_owner(&db, &later).await, Some(id));
    assert_eq!(
        super::tokens::count_live_workspace_tokens(&db, id)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        super::tokens::count_live_minted_workspace_tokens(&db, id)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        super::tokens::list_workspace_tokens(&db, id, 10, 0)
            .await
            .unwrap()
            .len(),
        2
    );
    // A provision rotates the agent's own token and leaves minted ones alone.
    assert_eq!(
        super::tokens::revoke_rotated_workspace_tokens(&db, id)
            .await
            .unwrap(),
        1
    );
    assert_eq!(token_owner(&db, &live).await, None);
    assert_eq!(token_owner(&db, &later).await, Some(id));

    // A removed workspace's token stops counting even before anything revokes it.
    assert!(
        super::workspaces::transition(&db, id, None, Status::Removed, Cause::Delete)
            .await
            .unwrap()
    );
    assert_eq!(token_owner(&db, &later).await, None);

    // Org tokens are valid until revoked.
    let org = Uuid::new_v4();
    super::tokens::insert_org_token(&db, org, &unknown, "org00000", Some("ci"), None)
        .await
        .unwrap();
    assert_eq!(
        super::tokens::org_token(&db, &unknown).await.unwrap(),
        Some(org)
    );
    assert!(super::tokens::revoke_org_token(&db, org).await.unwrap());
    assert_eq!(super::tokens::org_token(&db, &unknown).await.unwrap(), None);
    assert!(
        super::tokens::any_token_issued(&db).await.unwrap(),
        "issued once is issued for good"
    );
}

async fn the_install_lock_is_stored_once_and_keeps_its_first_reason(db: Db) {
    assert!(!super::settings::install_locked(&db).await.unwrap());
    super::settings::lock_install(&db, "first").await.unwrap();
    super::settings::lock_install(&db, "second").await.unwrap();
    assert!(super::settings::install_locked(&db).await.unwrap());
}

async fn the_busy_queue_keeps_one_active_copy_per_message_and_drains_by_priority(db: Db) {
    use super::a2a_queue::{self, NewItem, Settled};
    let ws = add(&db, "busy", None).await;
    let item = |key: &str, priority: i32, expires_at: Option<DateTime<Utc>>| NewItem {
        workspace_id: ws,
        caller_id: None,
        priority,
        body: json!({ "key": key }),
        method: "message/send".into(),
        idempotency_key: Some(key.into()),
        expires_at,
    };
    let (first, depth) = a2a_queue::enqueue(&db, &item("a", 50, None)).await.unwrap();
    assert_eq!(depth, 1);
    let (again, depth) = a2a_queue::enqueue(&db, &item("a", 50, None)).await.unwrap();
    assert_eq!(
        (again, depth),
        (first, 1),
        "a queued message is not queued twice"
    );
    let (urgent, _) = a2a_queue::enqueue(&db, &item("b", 100, None))
        .await
        .unwrap();
    let past = Some(Utc::now() - Duration::seconds(1));
    let (expired, depth) = a2a_queue::enqueue(&db, &item("c", 100, past))
        .await
        .unwrap();
    assert_eq!(depth, 3);

    // Highest priority first; expired messages are never handed out.
    let claimed = a2a_queue::claim_next(&db, ws)
        .await
        .unwrap()
        .expect("an item");
    assert_eq!(
        (claimed.id, claimed.status.as_str(), claimed.attempts),
        (urgent, "dispatched", 1)
    );
    // While one copy is being delivered, the same message id is still not queued again.
    let (during, _) = a2a_queue::enqueue(&db, &item("b", 50, None)).await.unwrap();
    assert_eq!(during, urgent);
    a2a_queue::settle(&db, urgent, Settled::Retry, Some("busy"))
        .await
        .unwrap();
    let retried = a2a_queue::claim_next(&db, ws)
        .await
        .unwrap()
        .expect("an item");
    assert_eq!((retried.id, retried.attempts), (urgent, 2));
    a2a_queue::settle(&db, urgent, Settled::Completed, None)
        .await
        .unwrap();
    let next = a2a_queue::claim_next(&db, ws)
        .await
        .unwrap()
        .expect("an item");
    assert_eq!(next.id, first);
    assert!(
        a2a_queue::claim_next(&db, ws).await.unwrap().is_none(),
        "only the expired one is left"
    );
    // Once delivered, the same message id may be queued anew.
    let (fresh, _) = a2a_queue::enqueue(&db, &item("b", 50, None)).await.unwrap();
    assert_ne!(fresh, urgent);

    // Expired messages are dropped by the expiry sweep, and only those.
    let swept: Vec<Uuid> = a2a_queue::expire(&db)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(swept, [expired]);
    assert!(a2a_queue::expire(&db).await.unwrap().is_empty());
    // A delivery a stopped host left behind is queued again, once it is older than any
    // delivery still running could be.
    let dispatched_at = a2a_queue::get(&db, ws, first)
        .await
        .unwrap()
        .expect("the row")
        .dispatched_at
        .expect("dispatched");
    assert_eq!(
        a2a_queue::requeue_interrupted(&db, dispatched_at)
            .await
            .unwrap(),
        0,
        "a delivery that may still be running stays dispatched"
    );
    assert_eq!(
        a2a_queue::requeue_interrupted(&db, Utc::now() + Duration::seconds(1))
            .await
            .unwrap(),
        1
    );
    let row = a2a_queue::get(&db, ws, first)
        .await
        .unwrap()
        .expect("the row");
    assert_eq!(row.status, "queued");
    let dropped = a2a_queue::drop_stale(&db, Utc::now() + Duration::seconds(1), Some(ws))
        .await
        .unwrap();
    assert_eq!(
        dropped, 2,
        "first and fresh (the expired one was dropped already)"
    );
    let first_row = a2a_queue::get(&db, ws, first)
        .await
        .unwrap()
        .expect("the row");
    assert_eq!(first_row.status, "dropped");
    assert!(
        a2a_queue::get(&db, Uuid::new_v4(), first)
            .await
            .unwrap()
            .is_none()
    );
}

async fn stranded_delegations_are_the_host_run_ones_left_unfinished_before_the_cutoff(db: Db) {
    let ws = add(&db, "source", None).await;
    let now = Utc::now();
    let insert = async |status: &str, host_run: bool, age_secs: i64| {
        let mut row = ActivityRow::new(ws, "delegation");
        row.method = Some("delegate".into());
        row.status = status.to_owned();
        row.created_at = now - Duration::seconds(age_secs);
        row.request_body = Some(if host_run {
            json!({ "task": "t", "carrier": "host" })
        } else {
            json!({ "task": "t" })
        });
        super::activity::insert(&db, &row).await.unwrap();
        row.id
    };
    let pending = insert("pending", true, 600).await;
    let dispatched = insert("dispatched", true, 300).await;
    let _running = insert("dispatched", true, 10).await;
    let _recorded = insert("dispatched", false, 600).await;
    let _queued = insert("queued", true, 600).await;
    let _failed = insert("failed", true, 600).await;

    let stranded = super::activity::stranded_delegations(&db, now - Duration::seconds(60))
        .await
        .unwrap();

    assert_eq!(stranded, [(ws, pending), (ws, dispatched)], "oldest first");
}

async fn a_delegation_ends_with_its_result_row_in_one_transaction_and_only_once(db: Db) {
    use super::activity::{Finished, StatusUpdate};
    const FINAL: &[&str] = &["completed", "failed"];
    let ws = add(&db, "source", None).await;
    let delegation = async |status: &str| {
        let mut row = ActivityRow::new(ws, "delegation");
        row.method = Some("delegate".into());
        row.status = status.to_owned();
        super::activity::insert(&db, &row).await.unwrap();
        row.id
    };
    let result = |id: Uuid, status: &str| {
        let mut row = ActivityRow::new(ws, "delegation");
        row.method = Some("delegate_result".into());
        row.status = status.to_owned();
        row.idempotency_key = Some(format!("result:{id}"));
        row
    };
    let body = json!({ "text": "done" });
    let done = StatusUpdate {
        status: "completed",
        error_detail: None,
        response_body: Some(&body),
        duration_ms: None,
    };
    let key_rows = async |id: Uuid| {
        super::activity::list(&db, ws, Some("delegation"), None, 50)
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.idempotency_key.as_deref() == Some(&format!("result:{id}")))
            .map(|r| r.status)
            .collect::<Vec<_>>()
    };

    // A dispatched delegation ends: both rows, the result inserted.
    let id = delegation("dispatched").await;
    let finished =
        super::activity::finish_delegation(&db, ws, id, &done, FINAL, &result(id, "completed"))
            .await
            .unwrap();
    assert!(
        matches!(finished, Finished::Written { inserted: Some(_) }),
        "{finished:?}"
    );
    assert_eq!(
        super::activity::get(&db, ws, id)
            .await
            .unwrap()
            .unwrap()
            .status,
        "completed"
    );
    assert_eq!(key_rows(id).await, ["completed"]);

    // Ending it again changes nothing.
    let failed = StatusUpdate {
        status: "failed",
        error_detail: Some("late"),
        response_body: None,
        duration_ms: None,
    };
    let again =
        super::activity::finish_delegation(&db, ws, id, &failed, FINAL, &result(id, "failed"))
            .await
            .unwrap();
    assert!(matches!(again, Finished::AlreadyFinal), "{again:?}");
    assert_eq!(
        super::activity::get(&db, ws, id)
            .await
            .unwrap()
            .unwrap()
            .status,
        "completed"
    );
    assert_eq!(key_rows(id).await, ["completed"]);

    // A queued delegation left a result row: it moves, no second one is written.
    let queued = delegation("queued").await;
    super::activity::insert(&db, &result(queued, "queued"))
        .await
        .unwrap();
    let finished = super::activity::finish_delegation(
        &db,
        ws,
        queued,
        &done,
        FINAL,
        &result(queued, "completed"),
    )
    .await
    .unwrap();
    assert!(
        matches!(finished, Finished::Written { inserted: None }),
        "{finished:?}"
    );
    assert_eq!(key_rows(queued).await, ["completed"]);
}

async fn a_restart_claim_coalesces_is_renewed_and_passes_on_only_once_expired(db: Db) {
    use super::restarts::{self, Claim};
    let ws = add(&db, "restarting", None).await;
    let now = Utc::now();
    let lease = now + Duration::seconds(240);
    assert_eq!(
        restarts::claim(&db, ws, "a/1", now, lease).await.unwrap(),
        Claim::Won
    );
    assert_eq!(
        restarts::claim(&db, ws, "b/1", now, lease).await.unwrap(),
        Claim::Joined
    );
    assert!(restarts::claimed(&db, ws).await.unwrap());
    // The due cycle goes to the holder, then the claim is released.
    assert!(restarts::next_cycle(&db, ws, "a/1", lease).await.unwrap());
    assert!(!restarts::next_cycle(&db, ws, "a/1", lease).await.unwrap());
    assert!(!restarts::claimed(&db, ws).await.unwrap());

    // A renewed claim holds past its first lease; only an expired one passes to another holder.
    let short = now + Duration::seconds(1);
    assert_eq!(
        restarts::claim(&db, ws, "a/2", now, short).await.unwrap(),
        Claim::Won
    );
    assert!(restarts::renew(&db, ws, "a/2", lease).await.unwrap());
    let later = now + Duration::seconds(10);
    assert_eq!(
        restarts::claim(&db, ws, "b/2", later, later + Duration::seconds(240))
            .await
            .unwrap(),
        Claim::Joined
    );
    let expired = lease + Duration::seconds(1);
    assert_eq!(
        restarts::claim(&db, ws, "b/3", expired, expired + Duration::seconds(240))
            .await
            .unwrap(),
        Claim::Won
    );
    // The old holder can no longer renew or run cycles; a replica stopping drops its claims.
    assert!(!restarts::renew(&db, ws, "a/2", lease).await.unwrap());
    assert!(!restarts::next_cycle(&db, ws, "a/2", lease).await.unwrap());
    assert!(restarts::join_running(&db, ws, expired).await.unwrap());
    assert_eq!(restarts::release_all(&db, "b/").await.unwrap(), 1);
    assert!(!restarts::claimed(&db, ws).await.unwrap());
}

/// Migration 0008 rebuilds both secret tables; run again over rows (as on an upgraded
/// database), it keeps every row as it was, and the rebuilt tables keep their constraints.
async fn the_secret_tables_rebuild_keeps_every_row_constraint_and_cascade(db: Db) {
    let id = add(&db, "Keeper", None).await;
    super::secrets::upsert_workspace(&db, id, "OLD", b"sealed-v1", 1)
        .await
        .unwrap();
    super::secrets::upsert_workspace(&db, id, "PLAIN", b"plain", 0)
        .await
        .unwrap();
    super::secrets::upsert_global(&db, "G", b"sealed-g", 1)
        .await
        .unwrap();
    let before_ws = super::secrets::list_workspace(&db, id).await.unwrap();
    let before_global = super::secrets::list_global(&db).await.unwrap();

    // Act: the migrator applies 0008 again over these rows.
    on_db!(&db, pool => sqlx::query("DELETE FROM schema_migrations WHERE version = 8").execute(pool).await.unwrap().rows_affected());
    db.migrate().await.expect("0008 applies over existing rows");

    // Assert: the same rows, byte for byte and with their timestamps.
    let after_ws = super::secrets::list_workspace(&db, id).await.unwrap();
    let after_global = super::secrets::list_global(&db).await.unwrap();
    let shape = |rows: &[super::secrets::SecretRow]| {
        rows.iter()
            .map(|r| {
                (
                    r.key.clone(),
                    r.encrypted_value.clone(),
                    r.encryption_version,
                    r.created_at,
                    r.updated_at,
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(shape(&after_ws), shape(&before_ws));
    assert_eq!(shape(&after_global), shape(&before_global));
    // Version 2 is allowed now, anything else still refused by the named CHECKs.
    super::secrets::upsert_workspace(&db, id, "NEW", b"sealed-v2", 2)
        .await
        .unwrap();
    super::secrets::upsert_global(&db, "G2", b"sealed-v2", 2)
        .await
        .unwrap();
    assert_constraint(
        super::secrets::upsert_workspace(&db, id, "BAD", b"x", 3).await,
        Constraint::Other("workspace_secrets_encryption_version_check"),
    );
    assert_constraint(
        super::secrets::upsert_global(&db, "BAD", b"x", 3).await,
        Constraint::Other("global_secrets_encryption_version_check"),
    );
    // The foreign key still holds and still cascades.
    assert_constraint(
        super::secrets::upsert_workspace(&db, Uuid::new_v4(), "KEY", b"x", 2).await,
        Constraint::WorkspaceMissing,
    );
    let cascaded: u64 = on_db!(&db, pool => {
        sqlx::query("DELETE FROM canvas_layouts WHERE workspace_id = $1").bind(id).execute(pool).await.unwrap();
        sqlx::query("DELETE FROM workspace_config WHERE workspace_id = $1").bind(id).execute(pool).await.unwrap();
        sqlx::query("DELETE FROM workspaces WHERE id = $1").bind(id).execute(pool).await.unwrap().rows_affected()
    });
    assert_eq!(cascaded, 1);
    assert_eq!(count(&db, "workspace_secrets", "workspace_id", id).await, 0);
}

#[tokio::test]
async fn the_sqlite_database_and_its_journal_are_readable_by_the_host_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("molecule.db");
    let db = Db::connect(&format!("sqlite://{}", path.display()), 2)
        .await
        .unwrap();
    db.migrate().await.unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    let wal = dir.path().join("molecule.db-wal");
    if wal.exists() {
        assert_eq!(
            mode(&wal),
            0o600,
            "SQLite gives the journal the database's mode"
        );
    }
    db.close().await;
}

async fn deferred_writes_are_stored_in_order_with_stamps_coalesced_and_flush_waits_for_them(
    db: Db,
) {
    use super::batch::{Write, Writer};
    let id = add(&db, "Agent", None).await;
    let writer = Writer::start(db.clone());
    let start = Utc::now();
    for n in 0..1200 {
        let mut row = activity(id, None);
        row.summary = Some(format!("call {n}"));
        row.created_at = start + Duration::milliseconds(n);
        writer.write(Write::Activity(Box::new(row))).await;
        let at = start + Duration::milliseconds(n);
        writer.write(Write::Outbound { workspace: id, at }).await;
    }
    writer.flush().await;
    assert_eq!(count(&db, "activity_logs", "workspace_id", id).await, 1200);
    let rows = super::activity::list(&db, id, None, None, 3).await.unwrap();
    let newest: Vec<_> = rows.iter().map(|r| r.summary.clone().unwrap()).collect();
    assert_eq!(newest, ["call 1199", "call 1198", "call 1197"]);
    let row = super::workspaces::get(&db, id).await.unwrap().unwrap();
    assert_eq!(
        row.last_outbound_at.map(|t| t.timestamp_millis()),
        Some((start + Duration::milliseconds(1199)).timestamp_millis()),
        "the latest stamp wins"
    );
    writer.close().await;
}

async fn under_load_deferred_writes_share_commits_at_most_one_per_linger(db: Db) {
    use super::batch::{LINGER, Write, Writer};
    const WRITES: u64 = 60;
    let id = add(&db, "Agent", None).await;
    let writer = Writer::start(db.clone());
    let started = std::time::Instant::now();
    // A steady trickle, a write every millisecond or so: without the linger nearly every write
    // would find the writer idle and pay for a commit of its own.
    for n in 0..WRITES {
        let mut row = activity(id, None);
        row.summary = Some(format!("call {n}"));
        writer.write(Write::Activity(Box::new(row))).await;
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    writer.flush().await;
    let elapsed = started.elapsed();
    assert_eq!(
        count(&db, "activity_logs", "workspace_id", id).await,
        WRITES as i64
    );
    // Batches of deferred writes only start at least LINGER apart, whatever the machine's
    // speed; the flush may close one early.
    let bound = (elapsed.as_micros() / LINGER.as_micros()) as u64 + 2;
    let commits = writer.commits();
    assert!(
        commits <= bound,
        "{commits} commits for {WRITES} writes over {elapsed:?}: more than one per {LINGER:?}"
    );
    writer.close().await;
}

async fn a_bad_deferred_row_loses_only_itself(db: Db) {
    use super::batch::{Write, Writer};
    let id = add(&db, "Agent", None).await;
    let writer = Writer::start(db.clone());
    // One transaction would hold all three; the row of a workspace that does not exist (deleted
    // meanwhile) and the repeated idempotency key fail, the others are stored all the same.
    writer
        .write(Write::Activity(Box::new(activity(id, Some("k")))))
        .await;
    writer
        .write(Write::Activity(Box::new(activity(Uuid::new_v4(), None))))
        .await;
    writer
        .write(Write::Activity(Box::new(activity(id, Some("k")))))
        .await;
    writer
        .write(Write::Activity(Box::new(activity(id, None))))
        .await;
    writer.flush().await;
    assert_eq!(count(&db, "activity_logs", "workspace_id", id).await, 2);
    writer.close().await;
}

async fn stored_rows_are_durable_on_return_share_commits_and_fail_alone(db: Db) {
    use super::batch::{Write, Writer};
    let id = add(&db, "Agent", None).await;
    let writer = Writer::start(db.clone());
    // Deferred rows and stored ones in the same batches: each caller of `store` gets its own
    // row's result, the duplicate key alone fails, and the others are there on return.
    for _ in 0..300 {
        writer
            .write(Write::Activity(Box::new(activity(id, None))))
            .await;
    }
    let keyed = |n: usize| activity(id, Some(&format!("key-{}", n % 50)));
    let results = futures::future::join_all((0..100).map(|n| writer.store(keyed(n)))).await;
    let failed: Vec<_> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_err())
        .map(|(n, r)| (n, format!("{r:?}")))
        .collect();
    assert_eq!(failed.len(), 50, "{failed:?}");
    assert!(
        failed
            .iter()
            .all(|(n, e)| *n >= 50 && e.contains("Constraint")),
        "only the second row of each key fails, as a constraint: {failed:?}"
    );
    assert_eq!(
        count(&db, "activity_logs", "workspace_id", id).await,
        350,
        "stored before `store` returned, deferred rows of the same batches included"
    );
    writer.close().await;
    writer
        .store(activity(id, None))
        .await
        .expect("after close a row is stored on its own");
    assert_eq!(count(&db, "activity_logs", "workspace_id", id).await, 351);
}

async fn recorded_events_share_commits_are_in_the_log_on_return_and_fail_alone(db: Db) {
    use super::batch::{Write, Writer};
    use super::events::EventRow;
    let id = add(&db, "Agent", None).await;
    let writer = Writer::start(db.clone());
    let event = |n: usize| EventRow {
        id: Uuid::new_v4(),
        event_type: "TEST_EVENT".to_owned(),
        workspace_id: Some(id),
        payload: Some(serde_json::json!({ "n": n })),
        created_at: chrono::Utc::now(),
    };
    // Events among deferred rows, in the same batches; one event repeats another's id.
    for _ in 0..100 {
        writer
            .write(Write::Activity(Box::new(activity(id, None))))
            .await;
    }
    let mut rows: Vec<EventRow> = (0..200).map(event).collect();
    rows[150].id = rows[10].id;
    let results =
        futures::future::join_all(rows.iter().cloned().map(|row| writer.record_event(row))).await;
    let failed: Vec<usize> = (0..results.len())
        .filter(|n| results[*n].is_err())
        .collect();
    assert_eq!(failed, [150], "only the repeated id fails: {results:?}");
    assert_eq!(
        count(&db, "structure_events", "workspace_id", id).await,
        199,
        "in the log before `record_event` returned"
    );
    writer.close().await;
    writer
        .record_event(event(999))
        .await
        .expect("after close an event is stored on its own");
    assert_eq!(
        count(&db, "structure_events", "workspace_id", id).await,
        200
    );
}

async fn a_row_and_its_event_are_stored_together_and_the_event_never_alone(db: Db) {
    use super::batch::Writer;
    use super::events::EventRow;
    let id = add(&db, "Agent", None).await;
    let writer = Writer::start(db.clone());
    // Ten keys, each used twice: the second row of each key fails, and so its event is not
    // stored either; the batch they share is stored row by row for it.
    let pairs = (0..20).map(|n| {
        let row = activity(id, Some(&format!("key-{}", n % 10)));
        let event = EventRow::new("TEST_SENT", Some(id), serde_json::json!({ "n": n }));
        writer.store_with_event(row, event)
    });
    let results = futures::future::join_all(pairs).await;
    let failed: Vec<usize> = (0..results.len())
        .filter(|n| results[*n].is_err())
        .collect();
    assert_eq!(failed, (10..20).collect::<Vec<_>>(), "{results:?}");
    assert_eq!(count(&db, "activity_logs", "workspace_id", id).await, 10);
    assert_eq!(
        count(&db, "structure_events", "workspace_id", id).await,
        10,
        "one event per stored row, none for a refused one"
    );
    writer.close().await;
    let alone = writer
        .store_with_event(
            activity(id, Some("key-0")),
            EventRow::new("TEST_SENT", Some(id), serde_json::json!({})),
        )
        .await;
    assert!(alone.is_err(), "after close the same rules hold");
    assert_eq!(count(&db, "structure_events", "workspace_id", id).await, 10);
}

async fn delegation_changes_share_commits_in_the_order_queued_and_end_only_once(db: Db) {
    use super::activity::{Finished, OwnedStatus};
    use super::batch::Writer;
    const FINAL: &[&str] = &["completed", "failed"];
    let ws = add(&db, "source", None).await;
    let writer = Writer::start(db.clone());
    let status = |s: &str| OwnedStatus {
        status: s.to_owned(),
        ..OwnedStatus::default()
    };
    let result = |id: Uuid, s: &str| {
        let mut row = ActivityRow::new(ws, "delegation");
        row.method = Some("delegate_result".into());
        row.status = s.to_owned();
        row.idempotency_key = Some(format!("result:{id}"));
        row
    };
    let mut ids = Vec::new();
    for _ in 0..50 {
        let mut row = ActivityRow::new(ws, "delegation");
        row.method = Some("delegate".into());
        row.status = "pending".into();
        writer.store(row.clone()).await.unwrap();
        ids.push(row.id);
    }
    // For every delegation, queued back to back: dispatched, its end, then a late dispatched
    // and a second end. They land in the order queued, so each ends completed, once.
    let changes = ids.iter().map(|id| {
        let writer = writer.clone();
        let (id, status, result) = (*id, &status, &result);
        async move {
            let dispatched = writer.move_delegation(ws, id, status("dispatched"), FINAL);
            let ended = writer.finish_delegation(
                ws,
                id,
                status("completed"),
                FINAL,
                result(id, "completed"),
            );
            let late = writer.move_delegation(ws, id, status("dispatched"), FINAL);
            let again =
                writer.finish_delegation(ws, id, status("failed"), FINAL, result(id, "failed"));
            // Polled in order, so queued in order.
            let (dispatched, ended, late, again) = futures::join!(dispatched, ended, late, again);
            (
                dispatched.unwrap(),
                ended.unwrap(),
                late.unwrap(),
                again.unwrap(),
            )
        }
    });
    for (dispatched, ended, late, again) in futures::future::join_all(changes).await {
        assert!(dispatched, "the dispatched mark moved the pending row");
        assert!(
            matches!(ended, Finished::Written { inserted: Some(_) }),
            "{ended:?}"
        );
        assert!(!late, "a final row does not move back");
        assert!(matches!(again, Finished::AlreadyFinal), "{again:?}");
    }
    for id in &ids {
        let row = super::activity::get(&db, ws, *id).await.unwrap().unwrap();
        assert_eq!(row.status, "completed");
    }
    assert_eq!(
        count(&db, "activity_logs", "workspace_id", ws).await,
        100,
        "each delegation and one result row"
    );
    writer.close().await;
    let id = ids[0];
    assert!(
        matches!(
            writer
                .finish_delegation(ws, id, status("failed"), FINAL, result(id, "failed"))
                .await
                .unwrap(),
            Finished::AlreadyFinal
        ),
        "after close a change is stored on its own, by the same rules"
    );
}

async fn queued_messages_share_commits_keep_one_copy_each_and_fail_alone(db: Db) {
    use super::a2a_queue::NewItem;
    use super::batch::{Write, Writer};
    let (busy, other) = (add(&db, "busy", None).await, add(&db, "other", None).await);
    let writer = Writer::start(db.clone());
    let item = |workspace: Uuid, key: &str| NewItem {
        workspace_id: workspace,
        caller_id: None,
        priority: 50,
        body: json!({ "key": key }),
        method: "message/send".into(),
        idempotency_key: Some(key.into()),
        expires_at: None,
    };
    // Deferred rows ahead of them, so the messages land in shared batches.
    for _ in 0..100 {
        writer
            .write(Write::Activity(Box::new(activity(busy, None))))
            .await;
    }
    // 60 messages for `busy` (each id twice: one copy each), 10 for `other`, and one for a
    // workspace that does not exist (removed meanwhile): only that one fails.
    let mut items: Vec<NewItem> = (0..120)
        .map(|n| item(busy, &format!("m-{}", n % 60)))
        .collect();
    items.extend((0..10).map(|n| item(other, &format!("o-{n}"))));
    items.push(item(Uuid::new_v4(), "gone"));
    let results = futures::future::join_all(items.into_iter().map(|i| writer.enqueue(i))).await;
    let (busy_results, rest) = results.split_at(120);
    let ids: Vec<Uuid> = busy_results.iter().map(|r| r.as_ref().unwrap().0).collect();
    for n in 0..60 {
        assert_eq!(ids[n], ids[n + 60], "message m-{n} is queued once");
    }
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), 60);
    let depths: Vec<i64> = busy_results.iter().map(|r| r.as_ref().unwrap().1).collect();
    assert!(
        depths.iter().all(|d| (1..=60).contains(d)) && depths.contains(&60),
        "each depth counts what waits once its batch committed: {depths:?}"
    );
    assert!(
        rest[..10]
            .iter()
            .all(|r| matches!(r, Ok((_, d)) if (1..=10).contains(d)))
    );
    assert!(
        rest[10].is_err(),
        "the removed workspace's message fails alone"
    );
    assert_eq!(
        super::a2a_queue::waiting(&db, busy).await.unwrap(),
        60,
        "stored before enqueue returned"
    );
    assert_eq!(super::a2a_queue::waiting(&db, other).await.unwrap(), 10);
    writer.flush().await;
    assert_eq!(count(&db, "activity_logs", "workspace_id", busy).await, 100);
    writer.close().await;
    let (_, depth) = writer
        .enqueue(item(other, "after-close"))
        .await
        .expect("after close a message is queued on its own");
    assert_eq!(depth, 11);
}

async fn closing_the_writer_stores_what_is_queued_and_drops_later_writes(db: Db) {
    use super::batch::{Write, Writer};
    let id = add(&db, "Agent", None).await;
    let writer = Writer::start(db.clone());
    for _ in 0..700 {
        writer
            .write(Write::Activity(Box::new(activity(id, None))))
            .await;
    }
    writer.close().await;
    assert_eq!(count(&db, "activity_logs", "workspace_id", id).await, 700);
    writer
        .write(Write::Activity(Box::new(activity(id, None))))
        .await;
    writer.flush().await;
    assert_eq!(count(&db, "activity_logs", "workspace_id", id).await, 700);
}

async fn a_full_write_queue_makes_callers_wait_instead_of_growing(db: Db) {
    use super::batch::{MAX_BATCH, QUEUE, Write, Writer};
    let id = add(&db, "Agent", None).await;
    // Hold the rows' table so the writer's first transaction cannot commit: on SQLite by holding
    // the one writer connection, on PostgreSQL with a lock on the table.
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let (locked, is_locked) = tokio::sync::oneshot::channel::<()>();
    let holder = {
        let db = db.clone();
        tokio::spawn(async move {
            on_db!(&db, pool => {
                let mut tx = super::begin(pool, None).await.unwrap();
                sqlx::query("UPDATE workspaces SET name = name WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                if db.backend() == Backend::Postgres {
                    sqlx::query("LOCK TABLE activity_logs IN EXCLUSIVE MODE")
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                }
                locked.send(()).unwrap();
                released.await.unwrap();
                tx.commit().await.unwrap();
            })
        })
    };
    is_locked.await.unwrap();
    let writer = Writer::start(db.clone());
    // The writer takes a first batch (at most MAX_BATCH writes) and is stuck committing it;
    // the queue then takes QUEUE more, and the write after that waits for room.
    let mut accepted = 0;
    let waiting = loop {
        let mut write = Box::pin(writer.write(Write::Activity(Box::new(activity(id, None)))));
        match tokio::time::timeout(std::time::Duration::from_millis(300), &mut write).await {
            Ok(()) => accepted += 1,
            Err(_) => break write,
        }
        assert!(
            accepted <= MAX_BATCH + QUEUE,
            "the queue grows without bound"
        );
    };
    assert!(
        accepted >= QUEUE,
        "only {accepted} writes were taken before one waited"
    );
    release.send(()).unwrap();
    holder.await.unwrap();
    waiting.await;
    writer.flush().await;
    assert_eq!(
        count(&db, "activity_logs", "workspace_id", id).await,
        i64::try_from(accepted + 1).unwrap(),
        "every write, the waiting one included, is stored"
    );
    writer.close().await;
}

/// More workspaces than one statement binds (15 values each, 32,000 at most): the batch is
/// split into several statements per table, in one transaction.
async fn a_batch_larger_than_one_statement_lands_whole_or_not_at_all(db: Db) {
    use super::workspaces::{BatchItem, NewToken, insert_many};
    let root = workspace("root", None);
    let mut rows = vec![root.clone()];
    rows.extend((0..2_500).map(|n| workspace(&format!("w{n}"), Some(root.id))));
    let config = json!({ "org": { "template": "big" } });
    let secrets = vec![SealedSecret {
        key: "SHARED".to_owned(),
        ciphertext: b"org".to_vec(),
        version: 0,
    }];
    let tokens: Vec<NewToken> = rows
        .iter()
        .map(|row| NewToken {
            id: Uuid::new_v4(),
            hash: *row.id.as_bytes().repeat(2).first_chunk().unwrap(),
            prefix: "prefix00".to_owned(),
        })
        .collect();
    let items: Vec<BatchItem<'_>> = rows
        .iter()
        .zip(&tokens)
        .map(|(row, token)| BatchItem {
            row,
            config: &config,
            secrets: &secrets,
            token: Some(token),
        })
        .collect();

    // A sibling name taken by the last row fails everything, the rows before it included.
    let mut taken = items.clone();
    let twin = NewWorkspace {
        id: Uuid::new_v4(),
        ..workspace("w0", Some(root.id))
    };
    let twin_token = NewToken {
        id: Uuid::new_v4(),
        hash: [7; 32],
        prefix: "twin0000".to_owned(),
    };
    taken.push(BatchItem {
        row: &twin,
        config: &config,
        secrets: &[],
        token: Some(&twin_token),
    });
    assert_constraint(
        insert_many(&db, &taken).await,
        Constraint::WorkspaceNameTaken,
    );
    let tables = [
        "workspaces",
        "canvas_layouts",
        "workspace_config",
        "workspace_secrets",
        "workspace_auth_tokens",
    ];
    for table in tables {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        let n: i64 = on_db!(&db, pool => sqlx::query_scalar(&sql).fetch_one(pool).await.unwrap());
        assert_eq!(n, 0, "{table} after the failed batch");
    }

    insert_many(&db, &items).await.expect("the batch");
    for table in tables {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        let n: i64 = on_db!(&db, pool => sqlx::query_scalar(&sql).fetch_one(pool).await.unwrap());
        assert_eq!(n, 2_501, "{table}");
    }
    assert_eq!(count(&db, "workspaces", "parent_id", root.id).await, 2_500);
}

fn schedule_row(
    workspace_id: Uuid,
    name: &str,
    next: Option<DateTime<Utc>>,
) -> super::schedules::ScheduleRow {
    let now = Utc::now();
    super::schedules::ScheduleRow {
        id: Uuid::new_v4(),
        workspace_id,
        name: name.to_owned(),
        cron_expr: "* * * * * *".to_owned(),
        timezone: "UTC".to_owned(),
        prompt: "go".to_owned(),
        enabled: true,
        source: "runtime".to_owned(),
        last_run_at: None,
        next_run_at: next,
        run_count: 0,
        last_status: None,
        last_error: None,
        consecutive_empty_runs: 0,
        consecutive_failures: 0,
        created_at: now,
        updated_at: now,
    }
}

/// Two replicas that both believe they hold the scheduler's lease read the same due row; the
/// conditional update lets exactly one of them fire it.
async fn a_due_schedule_tick_is_claimed_by_exactly_one_of_many_concurrent_claims(db: Db) {
    use super::schedules;
    let ws = add(&db, "timed", None).await;
    // Whole milliseconds, as a tick read back from either backend compares equal.
    let due = DateTime::from_timestamp(Utc::now().timestamp() - 2, 0).unwrap();
    let row = schedule_row(ws, "every-second", Some(due));
    schedules::insert(&db, &row).await.unwrap();
    let seen = schedules::due(&db, Utc::now(), 10).await.unwrap();
    assert_eq!(seen.len(), 1);
    let read = seen[0].next_run_at.unwrap();
    assert_eq!(read, due);
    let next = Some(due + Duration::seconds(3));
    let claims: Vec<bool> =
        futures::future::join_all((0..8).map(|_| schedules::claim(&db, row.id, read, next)))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    assert_eq!(claims.iter().filter(|c| **c).count(), 1, "{claims:?}");
    assert!(
        schedules::due(&db, due + Duration::seconds(1), 10)
            .await
            .unwrap()
            .is_empty()
    );
    // A disabled schedule is never claimed.
    let off = schedule_row(ws, "off", Some(due));
    schedules::insert(
        &db,
        &super::schedules::ScheduleRow {
            enabled: false,
            ..off.clone()
        },
    )
    .await
    .unwrap();
    assert!(!schedules::claim(&db, off.id, due, next).await.unwrap());
    // Claimed together, each tick gets its own answer in the order given: the one already
    // claimed above and the disabled one are lost, a fresh one is won.
    let fresh = schedule_row(ws, "fresh", Some(due));
    schedules::insert(&db, &fresh).await.unwrap();
    let claim = |id, seen| schedules::Claim { id, seen, next };
    let won = schedules::claim_many(
        &db,
        &[
            claim(row.id, read),
            claim(fresh.id, due),
            claim(off.id, due),
        ],
    )
    .await
    .unwrap();
    assert_eq!(won, [false, true, false]);
    // Removing the workspace disables its schedules.
    super::workspaces::mark_removed(&db, &[ws]).await.unwrap();
    assert!(
        schedules::due(&db, due + Duration::days(1), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        schedules::list(&db, ws)
            .await
            .unwrap()
            .iter()
            .all(|s| !s.enabled && s.next_run_at.is_none())
    );
}

async fn template_schedules_are_upserted_without_touching_runtime_ones(db: Db) {
    use super::schedules;
    let ws = add(&db, "seeded", None).await;
    let runtime = schedule_row(ws, "mine", None);
    schedules::insert(&db, &runtime).await.unwrap();
    let mut template = schedule_row(ws, "nightly", None);
    template.source = "template".into();
    assert!(schedules::upsert_template(&db, &template).await.unwrap());
    let changed = super::schedules::ScheduleRow {
        id: Uuid::new_v4(),
        prompt: "changed".into(),
        ..template.clone()
    };
    assert!(schedules::upsert_template(&db, &changed).await.unwrap());
    let clash = super::schedules::ScheduleRow {
        id: Uuid::new_v4(),
        name: "mine".into(),
        prompt: "overwrite?".into(),
        ..template.clone()
    };
    assert!(
        !schedules::upsert_template(&db, &clash).await.unwrap(),
        "a runtime schedule is left alone"
    );
    let rows = schedules::list(&db, ws).await.unwrap();
    assert_eq!(rows.len(), 2);
    let nightly = rows.iter().find(|r| r.name == "nightly").unwrap();
    assert_eq!(
        (nightly.id, nightly.prompt.as_str(), nightly.source.as_str()),
        (template.id, "changed", "template")
    );
    let mine = rows.iter().find(|r| r.name == "mine").unwrap();
    assert_eq!(
        (mine.prompt.as_str(), mine.source.as_str()),
        ("go", "runtime")
    );
    assert_eq!(
        schedules::template_names(&db, ws).await.unwrap(),
        vec![(template.id, "nightly".to_owned())]
    );
}

/// An A2A `message/send` request body carrying `text`, as the proxy stores it.
fn a2a_request(text: &str) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": "1",
        "method": "message/send",
        "params": { "message": {
            "role": "user",
            "messageId": "m-1",
            "parts": [{ "kind": "text", "text": text }],
        }},
    })
}

/// The ids `search` finds in `workspace` for `q`, newest first.
async fn searched(db: &Db, workspace: Uuid, q: &str) -> Vec<Uuid> {
    super::activity::search(db, workspace, q, 50)
        .await
        .expect("searching")
        .into_iter()
        .map(|hit| hit.id)
        .collect()
}

async fn the_activity_search_index_follows_inserts_updates_and_deletes_of_its_workspace_only(
    db: Db,
) {
    let mine = add(&db, "Searched", None).await;
    let other = add(&db, "Other", None).await;
    let now = Utc::now();
    let mut older = ActivityRow::new(mine, "a2a_receive");
    older.summary = Some("message/send → Searched".to_owned());
    older.request_body = Some(a2a_request("Plan the quokka migration for Tuesday"));
    older.created_at = now - Duration::minutes(2);
    let mut newer = ActivityRow::new(mine, "agent_log");
    newer.error_detail = Some("the quokka pen is empty".to_owned());
    newer.created_at = now - Duration::minutes(1);
    let mut foreign = ActivityRow::new(other, "a2a_receive");
    foreign.request_body = Some(a2a_request("Plan the quokka migration for Tuesday"));
    let mut pending = ActivityRow::new(mine, "delegation");
    pending.status = "pending".to_owned();
    pending.summary = Some("Delegating to Worker".to_owned());
    for row in [&older, &newer, &foreign, &pending] {
        super::activity::insert(&db, row).await.unwrap();
    }

    // Every word, in any order and case, newest first, of this workspace only.
    assert_eq!(searched(&db, mine, "QUOKKA").await, [newer.id, older.id]);
    assert_eq!(searched(&db, mine, "tuesday quokka").await, [older.id]);
    assert_eq!(searched(&db, other, "quokka").await, [foreign.id]);
    assert_eq!(
        searched(&db, mine, "quokka wombat").await,
        Vec::<Uuid>::new()
    );
    // Protocol structure is not text: every A2A body has a `user` role and `text` parts.
    assert_eq!(searched(&db, mine, "user").await, Vec::<Uuid>::new());
    let hit = &super::activity::search(&db, mine, "tuesday", 1)
        .await
        .unwrap()[0];
    assert_eq!(hit.activity_type, "a2a_receive");
    assert_eq!(
        hit.search_text,
        "message/send → Searched Plan the quokka migration for Tuesday"
    );

    // What a status update brings back becomes searchable, and what the row said stays.
    let answer =
        json!({ "result": { "parts": [{ "kind": "text", "text": "wombat census done" }] } });
    let update = super::activity::StatusUpdate {
        status: "completed",
        response_body: Some(&answer),
        ..Default::default()
    };
    assert!(
        super::activity::update_status(&db, mine, pending.id, &update, &[])
            .await
            .unwrap()
    );
    assert_eq!(searched(&db, mine, "wombat census").await, [pending.id]);
    assert_eq!(searched(&db, mine, "delegating worker").await, [pending.id]);

    // A deleted row is gone from the index, also after SQLite renumbers rowids (VACUUM).
    assert!(
        super::activity::delete_if_status(&db, mine, newer.id, "ok")
            .await
            .unwrap()
    );
    if db.backend() == Backend::Sqlite {
        on_db!(&db, pool => { sqlx::query("VACUUM").execute(pool).await.unwrap(); });
    }
    assert_eq!(searched(&db, mine, "quokka").await, [older.id]);
    assert_eq!(searched(&db, mine, "empty pen").await, Vec::<Uuid>::new());

    // A purged workspace takes its rows and their index entries with it.
    assert_eq!(super::workspaces::purge(&db, &[other]).await.unwrap(), 1);
    assert_eq!(searched(&db, other, "quokka").await, Vec::<Uuid>::new());
    if db.backend() == Backend::Sqlite {
        let (keys, entries): (i64, i64) = on_db!(&db, pool => (
            sqlx::query_scalar("SELECT COUNT(*) FROM activity_search_keys").fetch_one(pool).await.unwrap(),
            sqlx::query_scalar("SELECT COUNT(*) FROM activity_search_fts WHERE activity_search_fts MATCH 'quokka OR wombat OR worker'").fetch_one(pool).await.unwrap(),
        ));
        assert_eq!(
            (keys, entries),
            (2, 2),
            "only the two live rows are indexed"
        );
    }
}

async fn migration_0020_indexes_the_activity_rows_already_stored(db: Db) {
    let id = add(&db, "Before", None).await;
    // Arrange: the schema as it was before 0020, with a row written then.
    let undo: &[&str] = match db.backend() {
        Backend::Sqlite => &[
            "DROP TRIGGER activity_search_insert",
            "DROP TRIGGER activity_search_update",
            "DROP TRIGGER activity_search_delete",
            "DROP TABLE activity_search_fts",
            "DROP TABLE activity_search_keys",
            "ALTER TABLE activity_logs DROP COLUMN search_text",
        ],
        Backend::Postgres => &[
            "DROP INDEX activity_logs_search_idx",
            "ALTER TABLE activity_logs DROP COLUMN search_text",
        ],
    };
    let row = Uuid::now_v7();
    let response = json!({ "result": { "kind": "message", "parts": [{ "kind": "text", "text": "the ibis answer" }] } });
    on_db!(&db, pool => {
        for sql in undo {
            sqlx::query(sql).execute(pool).await.expect(sql);
        }
        sqlx::query(
            "INSERT INTO activity_logs (id, workspace_id, activity_type, summary, request_body, response_body, status, created_at)
             VALUES ($1, $2, 'a2a_receive', 'message/send → Before', $3, $4, 'ok', $5)",
        )
        .bind(row)
        .bind(id)
        .bind(sqlx::types::Json(a2a_request("where did the ibis go")))
        .bind(sqlx::types::Json(&response))
        .bind(Utc::now())
        .execute(pool)
        .await
        .expect("a row of the old schema");
        sqlx::query("DELETE FROM schema_migrations WHERE version = 20").execute(pool).await.unwrap();
    });

    // Act: the migrator applies 0020 over it.
    db.migrate().await.expect("0020 applies over existing rows");

    // Assert: its request and its answer are found; structure is not.
    assert_eq!(searched(&db, id, "ibis").await, [row]);
    assert_eq!(searched(&db, id, "ibis answer").await, [row]);
    assert_eq!(searched(&db, id, "jsonrpc").await, Vec::<Uuid>::new());
    let hit = &super::activity::search(&db, id, "ibis", 1).await.unwrap()[0];
    assert!(
        hit.search_text.starts_with("message/send → Before"),
        "{}",
        hit.search_text
    );
    // And rows written after it are indexed as they come.
    let mut later = ActivityRow::new(id, "agent_log");
    later.summary = Some("ibis sighted".to_owned());
    super::activity::insert(&db, &later).await.unwrap();
    assert_eq!(searched(&db, id, "ibis").await, [later.id, row]);
}
