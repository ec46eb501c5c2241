//! The audit ledger: security-relevant actions (here secrets, tokens, a move in the hierarchy)
//! are appended with who did them and never a secret value; a workspace's rows page newest
//! first and filter by type; `GET /admin/audit/verify` finds the chain intact, and after one row
//! is edited in the database it names that row. Who may call the routes is the route table's
//! spec (`security_routes`).

use molecule_e2e::{DbBackend, TestApp, on_both_backends};
use molecule_host::store::Db;
use serde_json::{Value, json};

on_both_backends!(actions_are_chained_paged_and_an_edited_row_is_found);

async fn actions_are_chained_paged_and_an_edited_row_is_found(backend: DbBackend) {
    // With an encryption key, as production requires: the ledger's key derives from it.
    let app = TestApp::spawn_with(backend, |c| {
        c.secrets_encryption_key = Some("0123456789abcdef0123456789abcdef".to_owned().into());
    })
    .await;
    let org = app.create_workspace("Audited Org", None).await;
    let id = app.create_workspace("Audited", Some(&org)).await;
    let secret_value = "sk-audit-value-7f3a91";

    // The operator sets a secret; the workspace mints and revokes a token of its own.
    app.post(
        &format!("/workspaces/{id}/secrets"),
        json!({ "key": "AUDITED_KEY", "value": secret_value }),
    )
    .await
    .expect(200);
    let own = app.with_token(&app.agent_token(&id).await);
    let minted = own
        .post(&format!("/workspaces/{id}/tokens"), json!({}))
        .await
        .expect(201);
    let tokens = app
        .get(&format!("/workspaces/{id}/tokens"))
        .await
        .expect(200);
    let newest = tokens["tokens"]
        .as_array()
        .and_then(|t| {
            t.iter().find(|t| {
                minted["auth_token"]
                    .as_str()
                    .unwrap()
                    .starts_with(t["prefix"].as_str().unwrap())
            })
        })
        .cloned()
        .unwrap_or_else(|| panic!("the minted token is listed: {tokens}"));
    let token_id = newest["id"].as_str().expect("a token id").to_owned();
    own.delete(&format!("/workspaces/{id}/tokens/{token_id}"))
        .await
        .expect(200);
    app.patch(&format!("/workspaces/{id}"), json!({ "parent_id": null }))
        .await
        .expect(200);

    // Newest first, with who did what; no secret value or token anywhere.
    let page = app
        .get(&format!("/workspaces/{id}/audit"))
        .await
        .expect(200);
    let text = page.to_string();
    assert!(!text.contains(secret_value), "{text}");
    assert!(
        !text.contains(minted["auth_token"].as_str().unwrap()),
        "{text}"
    );
    let events = page["events"].as_array().expect("events");
    let kinds: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["event_type"].as_str().unwrap(),
                e["actor"].as_str().unwrap(),
            )
        })
        .collect();
    let own_actor = format!("workspace:{id}");
    assert_eq!(
        kinds,
        [
            ("workspace.moved", "admin"),
            ("token.revoked", own_actor.as_str()),
            ("token.minted", own_actor.as_str()),
            ("secret.set", "admin"),
        ],
        "{page}"
    );
    assert_eq!(events[1]["target"], token_id.as_str());
    assert_eq!(events[3]["target"], "AUDITED_KEY");
    assert_eq!(
        events[2]["target"],
        &minted["auth_token"].as_str().unwrap()[..8],
        "a token is named by its prefix"
    );
    assert_eq!(events[0]["detail"], json!({ "parent_id": null }));
    for pair in events.windows(2) {
        assert!(pair[0]["seq"].as_i64() > pair[1]["seq"].as_i64(), "{page}");
        assert_eq!(pair[0]["hmac"].as_str().unwrap().len(), 64);
    }
    assert_eq!(page["next_cursor"], Value::Null);

    // Paged by the cursor it gives, and filtered by type.
    let first = app
        .get(&format!("/workspaces/{id}/audit?limit=2"))
        .await
        .expect(200);
    assert_eq!(first["events"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"].as_str().expect("a cursor");
    let second = app
        .get(&format!("/workspaces/{id}/audit?limit=2&cursor={cursor}"))
        .await
        .expect(200);
    assert_eq!(second["events"][0]["event_type"], "token.minted");
    assert_eq!(second["events"][0]["seq"], events[2]["seq"]);
    let minted_only = app
        .get(&format!("/workspaces/{id}/audit?event_type=token.minted"))
        .await
        .expect(200);
    assert_eq!(minted_only["events"].as_array().unwrap().len(), 1);
    app.get(&format!("/workspaces/{id}/audit?limit=0"))
        .await
        .expect(400);
    app.get(&format!("/workspaces/{id}/audit?cursor=abc"))
        .await
        .expect(400);

    // The chain holds...
    let verdict = app.get("/admin/audit/verify").await.expect(200);
    assert_eq!(verdict["ok"], true, "{verdict}");
    assert!(verdict["rows_checked"].as_u64().unwrap() >= 4, "{verdict}");
    assert_eq!(verdict["key"], "derived", "{verdict}");

    // ...until someone rewrites a row where the database keeps it.
    let edited = events[2]["seq"].as_i64().expect("a seq");
    let db = Db::connect(app.database_url(), 1)
        .await
        .expect("the test database");
    let sql = "UPDATE audit_events SET actor = 'admin' WHERE seq = $1";
    let changed = match &db {
        Db::Sqlite(sqlite) => sqlx::query(sql)
            .bind(edited)
            .execute(&sqlite.writer)
            .await
            .map(|r| r.rows_affected()),
        Db::Postgres(pool) => sqlx::query(sql)
            .bind(edited)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()),
    }
    .expect("editing a row");
    assert_eq!(changed, 1);
    db.close().await;
    let verdict = app.get("/admin/audit/verify").await.expect(200);
    assert_eq!(verdict["ok"], false, "{verdict}");
    assert_eq!(verdict["broken"]["seq"], edited, "{verdict}");
    assert_eq!(verdict["broken"]["id"], events[2]["id"], "{verdict}");
    assert_eq!(
        verdict["broken"]["reason"], "hmac does not match the row's fields",
        "{verdict}"
    );
    assert_eq!(verdict["rows_checked"], edited - 1, "{verdict}");
}
