//! Session search: words said to an agent, reported as activity or remembered are found in that
//! workspace's results (newest first, each with its kind and a snippet) and in no other's; a
//! deleted memory or activity row is not found any more; the query and the limit are checked.
//! Who may call the route is the route table's spec (`security_routes`).

use std::time::Duration;

use molecule_e2e::{Api, DbBackend, Fault, FaultAgent, TestApp, eventually, on_both_backends};
use molecule_host::store::Db;
use serde_json::{Value, json};

on_both_backends!(
    what_was_said_reported_or_remembered_is_found_in_its_own_workspace_only,
    queries_and_limits_out_of_bounds_are_refused_with_a_reason,
);

fn message(text: &str) -> Value {
    json!({ "jsonrpc": "2.0", "id": 1, "method": "message/send",
        "params": { "message": { "role": "user", "parts": [{ "kind": "text", "text": text }] } } })
}

async fn search(api: &Api, id: &str, query: &str) -> Value {
    api.get(&format!("/workspaces/{id}/session-search?{query}"))
        .await
        .expect(200)
}

/// `(kind, id)` of each result, in order.
fn found(page: &Value) -> Vec<(String, String)> {
    page["results"]
        .as_array()
        .unwrap_or_else(|| panic!("results: {page}"))
        .iter()
        .map(|r| {
            (
                r["kind"].as_str().unwrap().to_owned(),
                r["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Runs `sql` with one bound id against the app's database, as an operator's script would.
async fn execute(app: &TestApp, sql: &str, id: &str) -> u64 {
    let id: uuid::Uuid = id.parse().expect("an id");
    let db = Db::connect(app.database_url(), 1)
        .await
        .expect("the test database");
    let affected = match &db {
        Db::Sqlite(sqlite) => sqlx::query(sql)
            .bind(id)
            .execute(&sqlite.writer)
            .await
            .map(|r| r.rows_affected()),
        Db::Postgres(pool) => sqlx::query(sql)
            .bind(id)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()),
    }
    .expect(sql);
    db.close().await;
    affected
}

async fn what_was_said_reported_or_remembered_is_found_in_its_own_workspace_only(
    backend: DbBackend,
) {
    // Arrange: two workspaces whose agents hear the same phrase; one also reports and remembers.
    let app = TestApp::spawn(backend).await;
    let agent = FaultAgent::start(|_| Fault::Answer).await;
    let (id, token) = app.workspace_at("Archivist", None, &agent.url).await;
    let (other, other_token) = app.workspace_at("Bystander", None, &agent.url).await;
    let phrase = "Where is the aardvark ledger kept";
    for workspace in [&id, &other] {
        app.post(&format!("/workspaces/{workspace}/a2a"), message(phrase))
            .await
            .expect(200);
    }
    app.post(
        &format!("/workspaces/{id}/a2a"),
        message("unrelated chatter"),
    )
    .await
    .expect(200);
    let own = app.with_token(&token);
    own.post(
        &format!("/workspaces/{id}/activity"),
        json!({ "activity_type": "task_update", "summary": "Filed the aardvark ledger under Q3" }),
    )
    .await
    .expect(200);
    let memory = own
        .post(
            &format!("/workspaces/{id}/memories"),
            json!({ "content": "The aardvark ledger lives in the blue cabinet", "scope": "LOCAL" }),
        )
        .await
        .expect(201);
    let memory_id = memory["id"].as_str().expect("a memory id").to_owned();
    app.with_token(&other_token)
        .post(
            &format!("/workspaces/{other}/memories"),
            json!({ "content": "Bystander saw the aardvark ledger too", "scope": "TEAM" }),
        )
        .await
        .expect(201);

    // Act: the workspace searches with its own token (activity is stored off the answer path).
    let page = eventually(Duration::from_secs(10), || async {
        let page = search(&own, &id, "q=aardvark%20LEDGER").await;
        (page["results"].as_array().map(Vec::len) == Some(3)).then_some(page)
    })
    .await;

    // Assert: newest first, its own three; the A2A row is the one that carried the phrase.
    let activity = app.activity(&id, "").await;
    let row_of = |kind: &str| -> String {
        let matching: Vec<&Value> = activity
            .iter()
            .filter(|a| a["activity_type"] == kind)
            .filter(|a| a.to_string().contains("aardvark"))
            .collect();
        assert_eq!(matching.len(), 1, "{kind}: {activity:?}");
        matching[0]["id"].as_str().unwrap().to_owned()
    };
    let (asked, reported) = (row_of("a2a_receive"), row_of("task_update"));
    assert_eq!(
        found(&page),
        [
            ("memory".to_owned(), memory_id.clone()),
            ("activity".to_owned(), reported.clone()),
            ("activity".to_owned(), asked.clone()),
        ],
        "{page}"
    );
    assert_eq!(page["query"], "aardvark LEDGER");
    assert_eq!(page["limit"], 50);
    let results = page["results"].as_array().unwrap();
    assert_eq!(results[0]["scope"], "LOCAL");
    assert_eq!(results[0]["namespace"], "general");
    assert_eq!(results[1]["activity_type"], "task_update");
    assert_eq!(results[2]["activity_type"], "a2a_receive");
    for result in results {
        let snippet = result["snippet"].as_str().unwrap().to_lowercase();
        assert!(snippet.contains("aardvark ledger"), "{result}");
        assert!(result["created_at"].as_str().is_some(), "{result}");
    }
    // The agent's answer is part of the row (the fault agent echoes the phrase back).
    assert!(
        results[2]["snippet"]
            .as_str()
            .unwrap()
            .contains(&format!("echo: {phrase}")),
        "{}",
        results[2]
    );

    // The other workspace finds only its own rows; each workspace's token reads only its own.
    let theirs = search(&app, &other, "q=aardvark+ledger").await;
    let kinds: Vec<String> = found(&theirs).into_iter().map(|(k, _)| k).collect();
    assert_eq!(kinds, ["memory", "activity"], "{theirs}");
    assert!(!theirs.to_string().contains(&memory_id), "{theirs}");
    assert!(!theirs.to_string().contains(&asked), "{theirs}");
    app.with_token(&other_token)
        .get(&format!("/workspaces/{id}/session-search?q=aardvark"))
        .await
        .expect(401);

    // A limit keeps the newest.
    let newest = search(&own, &id, "q=aardvark&limit=1").await;
    assert_eq!(found(&newest), [("memory".to_owned(), memory_id.clone())]);
    assert_eq!(newest["limit"], 1);

    // A deleted memory and a deleted activity row (as a retention purge would) are not found.
    own.delete(&format!("/workspaces/{id}/memories/{memory_id}"))
        .await
        .expect(200);
    assert_eq!(
        execute(&app, "DELETE FROM activity_logs WHERE id = $1", &reported).await,
        1
    );
    let after = search(&own, &id, "q=aardvark+ledger").await;
    assert_eq!(
        found(&after),
        [("activity".to_owned(), asked.clone())],
        "{after}"
    );

    // A removed workspace is gone, and an unknown one was never there.
    app.delete(&format!("/workspaces/{other}"))
        .await
        .expect(200);
    app.get(&format!("/workspaces/{other}/session-search?q=aardvark"))
        .await
        .expect(410);
    app.get(&format!(
        "/workspaces/{}/session-search?q=aardvark",
        uuid::Uuid::new_v4()
    ))
    .await
    .expect(404);
}

async fn queries_and_limits_out_of_bounds_are_refused_with_a_reason(backend: DbBackend) {
    let app = TestApp::spawn(backend).await;
    let id = app.create_workspace("Searcher", None).await;
    let too_long = "a".repeat(501);
    let longest = "a".repeat(500);
    for (query, reason) in [
        ("", "q is required"),
        ("q=%20%20", "must not be blank"),
        (&format!("q={too_long}") as &str, "at most 500 characters"),
        ("q=%21%3F%20-", "a word"),
        ("q=x&limit=0", "limit must be between 1 and 200"),
        ("q=x&limit=201", "limit must be between 1 and 200"),
        ("q=x&limit=ten", "invalid query string"),
    ] {
        let reply = app
            .get(&format!("/workspaces/{id}/session-search?{query}"))
            .await
            .expect(400);
        assert!(
            reply["error"].as_str().unwrap_or_default().contains(reason),
            "{query}: {reply}"
        );
    }
    // The bounds themselves are fine, and nothing matches in an empty workspace.
    for query in [format!("q={longest}"), "q=x&limit=200".to_owned()] {
        let page = search(&app, &id, &query).await;
        assert_eq!(page["results"], json!([]), "{page}");
    }
}
