//! The key-value memory of a workspace: written, read, listed and deleted with errors naming
//! their field; versions and `if_version` (two writers on one version: one wins, one gets 409);
//! expiry invisible to reads at once and the row deleted by the sweeper; only the workspace and
//! the operator reach it; the keys and checkpoints of a removed workspace go with it.

use std::time::Duration;

use molecule_e2e::{Api, DbBackend, TestApp, eventually, on_both_backends};
use serde_json::{Value, json};

on_both_backends!(
    keys_are_written_read_listed_and_deleted_with_field_errors,
    two_writers_on_the_same_version_one_wins_and_one_gets_409,
    an_expired_key_is_invisible_at_once_and_the_sweeper_deletes_its_row,
    only_the_workspace_and_the_operator_reach_its_memory,
    a_removed_workspace_loses_its_keys_and_checkpoints,
);

fn memory(id: &str) -> String {
    format!("/workspaces/{id}/memory")
}

async fn refused(api: &Api, id: &str, body: Value, status: u16, field: &str) {
    let reply = api.post(&memory(id), body.clone()).await.expect(status);
    assert_eq!(reply["field"], field, "{body}: {reply}");
    assert!(reply["error"].as_str().unwrap().contains(field), "{reply}");
}

/// The row as stored, expired or not, read from the database itself.
async fn stored(app: &TestApp, id: &str, key: &str) -> Option<i64> {
    let db = molecule_host::store::Db::connect(app.database_url(), 1)
        .await
        .expect("the test database");
    let row = molecule_host::store::kv::stored(&db, id.parse().expect("an id"), key)
        .await
        .expect("reading the row");
    db.close().await;
    row.map(|r| r.version)
}

async fn keys_are_written_read_listed_and_deleted_with_field_errors(backend: DbBackend) {
    let app = TestApp::spawn(backend).await;
    let id = app.create_workspace("keeper", None).await;
    let path = memory(&id);

    let first = app
        .post(
            &path,
            json!({ "key": "plan", "value": { "steps": [1, 2] } }),
        )
        .await
        .expect(200);
    assert_eq!(first["version"], 1);
    assert_eq!(first["expires_at"], Value::Null);
    let second = app
        .post(&path, json!({ "key": "plan", "value": "done" }))
        .await
        .expect(200);
    assert_eq!(second["version"], 2);
    assert_eq!(second["created_at"], first["created_at"]);
    app.post(&path, json!({ "key": "a/b c", "value": null }))
        .await
        .expect(200);

    let one = app.get(&format!("{path}/plan")).await.expect(200);
    assert_eq!(one["value"], "done");
    assert_eq!(one["version"], 2);
    let spaced = app.get(&format!("{path}/a%2Fb%20c")).await.expect(200);
    assert_eq!(spaced["value"], Value::Null);
    let all = app.get(&path).await.expect(200);
    let keys: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["a/b c", "plan"]);

    // Create only: refused while the key lives, with its version.
    let conflict = app
        .post(&path, json!({ "key": "plan", "value": 1, "if_version": 0 }))
        .await
        .expect(409);
    assert_eq!(conflict["current_version"], 2);
    assert_eq!(conflict["field"], "if_version");
    let created = app
        .post(
            &path,
            json!({ "key": "fresh", "value": 1, "if_version": 0 }),
        )
        .await
        .expect(200);
    assert_eq!(created["version"], 1);
    let stale = app
        .post(
            &path,
            json!({ "key": "fresh", "value": 2, "if_version": 7 }),
        )
        .await
        .expect(409);
    assert_eq!(stale["current_version"], 1);
    let absent = app
        .post(
            &path,
            json!({ "key": "nothing", "value": 2, "if_version": 1 }),
        )
        .await
        .expect(409);
    assert_eq!(absent["current_version"], Value::Null);

    refused(&app, &id, json!({ "value": 1 }), 400, "key").await;
    refused(&app, &id, json!({ "key": "", "value": 1 }), 400, "key").await;
    refused(&app, &id, json!({ "key": 5, "value": 1 }), 400, "key").await;
    refused(&app, &id, json!({ "key": "a\nb", "value": 1 }), 400, "key").await;
    refused(
        &app,
        &id,
        json!({ "key": "k".repeat(257), "value": 1 }),
        400,
        "key",
    )
    .await;
    refused(&app, &id, json!({ "key": "k" }), 400, "value").await;
    let big = "x".repeat(64 * 1024);
    refused(&app, &id, json!({ "key": "k", "value": big }), 413, "value").await;
    for ttl in [json!(0), json!(-5), json!(31_536_001), json!("soon")] {
        refused(
            &app,
            &id,
            json!({ "key": "k", "value": 1, "ttl_seconds": ttl }),
            400,
            "ttl_seconds",
        )
        .await;
    }
    refused(
        &app,
        &id,
        json!({ "key": "k", "value": 1, "if_version": -1 }),
        400,
        "if_version",
    )
    .await;
    let bad_key = app.get(&format!("{path}/a%0Ab")).await.expect(400);
    assert_eq!(bad_key["field"], "key");
    assert!(
        stored(&app, &id, "k").await.is_none(),
        "nothing refused was stored"
    );

    app.delete(&format!("{path}/plan")).await.expect(200);
    app.delete(&format!("{path}/plan")).await.expect(404);
    app.get(&format!("{path}/plan")).await.expect(404);
    // A key written after its deletion starts again at version 1.
    let again = app
        .post(&path, json!({ "key": "plan", "value": 3 }))
        .await
        .expect(200);
    assert_eq!(again["version"], 1);
}

async fn two_writers_on_the_same_version_one_wins_and_one_gets_409(backend: DbBackend) {
    let app = TestApp::spawn(backend).await;
    let id = app.create_workspace("racer", None).await;
    let path = memory(&id);
    app.post(&path, json!({ "key": "counter", "value": 0 }))
        .await
        .expect(200);

    let (a, b) = tokio::join!(
        app.post(
            &path,
            json!({ "key": "counter", "value": "a", "if_version": 1 })
        ),
        app.post(
            &path,
            json!({ "key": "counter", "value": "b", "if_version": 1 })
        ),
    );

    let mut statuses = [a.status.as_u16(), b.status.as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{a:?} {b:?}");
    let (winner, loser) = if a.status.as_u16() == 200 {
        (a, b)
    } else {
        (b, a)
    };
    assert_eq!(winner.body["version"], 2);
    assert_eq!(loser.body["current_version"], 2);
    let now = app.get(&format!("{path}/counter")).await.expect(200);
    assert_eq!(now["value"], winner.body["value"]);
    assert_eq!(now["version"], 2);
}

async fn an_expired_key_is_invisible_at_once_and_the_sweeper_deletes_its_row(backend: DbBackend) {
    // The sweeper runs once at start, then not for an hour: whatever expires now stays stored.
    let mut app = TestApp::spawn_with(backend, |c| c.kv.expiry_sweep_secs = 3600).await;
    let id = app.create_workspace("forgetful", None).await;
    let path = memory(&id);
    app.post(&path, json!({ "key": "kept", "value": "forever" }))
        .await
        .expect(200);
    let short = app
        .post(
            &path,
            json!({ "key": "brief", "value": 1, "ttl_seconds": 1 }),
        )
        .await
        .expect(200);
    assert!(short["expires_at"].is_string(), "{short}");
    app.post(
        &path,
        json!({ "key": "brief", "value": 2, "ttl_seconds": 1 }),
    )
    .await
    .expect(200);

    // Gone from every read once its time passed...
    eventually(Duration::from_secs(10), || async {
        (app.get(&format!("{path}/brief")).await.status.as_u16() == 404).then_some(())
    })
    .await;
    let all = app.get(&path).await.expect(200);
    assert_eq!(all.as_array().unwrap().len(), 1, "{all}");
    assert_eq!(all[0]["key"], "kept");
    app.delete(&format!("{path}/brief")).await.expect(404);
    // ...while its row is still stored: no sweep has run since.
    app.post(
        &memory(&id),
        json!({ "key": "brief2", "value": 1, "ttl_seconds": 1 }),
    )
    .await
    .expect(200);
    eventually(Duration::from_secs(10), || async {
        (app.get(&format!("{path}/brief2")).await.status.as_u16() == 404).then_some(())
    })
    .await;
    assert_eq!(
        stored(&app, &id, "brief2").await,
        Some(1),
        "expired, not yet swept"
    );
    // A write over an expired key starts it again at version 1; `if_version: 0` accepts it.
    let revived = app
        .post(
            &path,
            json!({ "key": "brief2", "value": 9, "if_version": 0, "ttl_seconds": 1 }),
        )
        .await
        .expect(200);
    assert_eq!(revived["version"], 1);

    // The sweeper, every second now, deletes the expired rows and nothing else.
    app.restart_with(|c| c.kv.expiry_sweep_secs = 1)
        .await
        .expect("the host restarts");
    eventually(Duration::from_secs(20), || async {
        (stored(&app, &id, "brief2").await.is_none()).then_some(())
    })
    .await;
    assert_eq!(stored(&app, &id, "kept").await, Some(1));
    app.get(&format!("{path}/kept")).await.expect(200);
}

async fn only_the_workspace_and_the_operator_reach_its_memory(backend: DbBackend) {
    let app = TestApp::spawn(backend).await;
    let root = app.create_workspace("root", None).await;
    let child = app.create_workspace("child", Some(&root)).await;
    let own = app.with_token(&app.agent_token(&child).await);
    let parent = app.with_token(&app.agent_token(&root).await);
    let path = memory(&child);

    own.post(&path, json!({ "key": "mine", "value": 1 }))
        .await
        .expect(200);
    own.get(&format!("{path}/mine")).await.expect(200);
    app.get(&format!("{path}/mine")).await.expect(200);

    for api in [&app.anonymous(), &app.with_token("not-a-token"), &parent] {
        let denied = [
            api.get(&path).await,
            api.post(&path, json!({ "key": "theirs", "value": 1 }))
                .await,
            api.get(&format!("{path}/mine")).await,
            api.delete(&format!("{path}/mine")).await,
        ];
        for reply in denied {
            assert!(
                [401, 403].contains(&reply.status.as_u16()),
                "{}",
                reply.text
            );
        }
    }
    let all = own.get(&path).await.expect(200);
    assert_eq!(all.as_array().unwrap().len(), 1, "{all}");
}

async fn a_removed_workspace_loses_its_keys_and_checkpoints(backend: DbBackend) {
    let app = TestApp::spawn(backend).await;
    let removed = app.create_workspace("removed", None).await;
    let purged = app.create_workspace("purged", None).await;
    let bystander = app.create_workspace("bystander", None).await;
    for id in [&removed, &purged, &bystander] {
        app.post(&memory(id), json!({ "key": "k", "value": 1 }))
            .await
            .expect(200);
        app.post(
            &format!("/workspaces/{id}/checkpoints"),
            json!({ "workflow_id": "wf", "step_name": "s", "step_index": 0 }),
        )
        .await
        .expect(200);
    }

    app.delete(&format!("/workspaces/{removed}?confirm=true"))
        .await
        .expect(200);
    app.delete(&format!("/workspaces/{purged}?confirm=true&purge=true"))
        .await
        .expect(200);

    let db = molecule_host::store::Db::connect(app.database_url(), 1)
        .await
        .expect("the test database");
    for (id, left) in [(&removed, 0), (&purged, 0), (&bystander, 1)] {
        let uuid = id.parse().unwrap();
        let key = molecule_host::store::kv::stored(&db, uuid, "k")
            .await
            .unwrap();
        assert_eq!(key.is_some() as i64, left, "{id}");
        let steps = molecule_host::store::checkpoints::count(&db, uuid)
            .await
            .unwrap();
        assert_eq!(steps, left, "{id}");
    }
    db.close().await;
    app.get(&memory(&removed)).await.expect(410);
}
