//! The optional semantic ordering of memory search, against a fake OpenAI-compatible
//! embeddings server this test starts on loopback: search follows similarity where full text
//! alone orders differently, unembedded memories come after the embedded ones, a failing (500)
//! or hanging endpoint never fails a write and leaves the search in full-text order, the API key
//! reaches the endpoint only in the `Authorization` header, and secrets are redacted before any
//! text leaves the host.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use molecule_e2e::{DbBackend, TestApp, eventually, on_both_backends};
use molecule_host::store::Db;
use serde_json::{Value, json};

use molecule_e2e::logs;

on_both_backends!(
    search_follows_similarity_and_the_key_stays_in_the_header,
    a_hanging_endpoint_fails_neither_write_nor_search,
);

const OK: u8 = 0;
const FAIL: u8 = 1;
const HANG: u8 = 2;

/// What the fake saw: each request's `Authorization` header and input text.
#[derive(Default)]
struct Fake {
    mode: AtomicU8,
    seen: Mutex<Vec<(String, String)>>,
}

/// A deterministic vector: dimension 0 counts shipping words, 1 food words, 2 weather words;
/// every other word counts nothing (so similarity is about those concepts, not about length).
fn vector(text: &str) -> Vec<f32> {
    let mut v = vec![0.0f32; 8];
    for word in text.split(|c: char| !c.is_alphanumeric()) {
        let dim = match word.to_lowercase().as_str() {
            "deploy" | "release" | "ship" | "rollout" => 0,
            "lunch" | "pizza" | "order" => 1,
            "rain" | "sunny" => 2,
            _ => continue,
        };
        v[dim] += 1.0;
    }
    v
}

async fn embeddings(
    State(fake): State<Arc<Fake>>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let input = body["input"].as_str().unwrap_or_default().to_owned();
    fake.seen.lock().unwrap().push((auth, input.clone()));
    match fake.mode.load(Ordering::SeqCst) {
        FAIL => (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
        HANG => std::future::pending().await,
        _ => axum::Json(json!({
            "object": "list",
            "data": [{ "object": "embedding", "index": 0, "embedding": vector(&input) }],
            "model": body["model"],
        }))
        .into_response(),
    }
}

/// Starts the fake on loopback; its base URL (with `/v1`, as an operator would configure).
async fn start_fake(fake: Arc<Fake>) -> String {
    let app = axum::Router::new()
        .route("/v1/embeddings", axum::routing::post(embeddings))
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/v1")
}

async fn spawn(backend: DbBackend, url: &str, key: &str, timeout_ms: u64) -> TestApp {
    let (url, key) = (url.to_owned(), key.to_owned());
    TestApp::spawn_with(backend, move |c| {
        c.memories.embeddings_url = Some(url);
        c.memories.embeddings_model = "fake-embed".into();
        c.memories.embeddings_api_key = Some(key.into());
        c.memories.embeddings_timeout_ms = timeout_ms;
    })
    .await
}

async fn commit(app: &TestApp, id: &str, content: &str) -> Value {
    app.post(
        &format!("/workspaces/{id}/memories"),
        json!({ "content": content, "scope": "LOCAL" }),
    )
    .await
    .expect(201)
}

/// The contents of a search: `v1` is the (similarity-ordered) search, `v2` the pager, which
/// keeps the full-text order.
async fn search(app: &TestApp, id: &str, path: &str, q: &str) -> Vec<String> {
    let reply = app
        .get(&format!("/workspaces/{id}/{path}?q={q}"))
        .await
        .expect(200);
    let rows = if path == "memories" {
        reply
    } else {
        reply["memories"].clone()
    };
    rows.as_array()
        .expect("a list")
        .iter()
        .map(|r| r["content"].as_str().expect("content").to_owned())
        .collect()
}

/// How many stored memories have an embedding.
async fn embedded(app: &TestApp) -> i64 {
    let db = Db::connect(app.database_url(), 1)
        .await
        .expect("the test database");
    let sql = "SELECT COUNT(*) FROM agent_memories WHERE embedding IS NOT NULL";
    let (n,): (i64,) = match &db {
        Db::Sqlite(sqlite) => sqlx::query_as(sql).fetch_one(&sqlite.reader).await,
        Db::Postgres(pool) => sqlx::query_as(sql).fetch_one(pool).await,
    }
    .expect("counting");
    db.close().await;
    n
}

const SHORT: &str = "deploy";
const FOOD: &str = "deploy the lunch pizza order";
const SHIP: &str = "deploy release ship rollout: the nightly build goes to the production \
                    servers after the integration suite, the canary and the smoke checks pass";

async fn search_follows_similarity_and_the_key_stays_in_the_header(backend: DbBackend) {
    let logs = logs::capture();
    let fake = Arc::new(Fake::default());
    let url = start_fake(fake.clone()).await;
    let key = format!("emb-key-{}", uuid::Uuid::new_v4().simple());
    let app = spawn(backend, &url, &key, 5_000).await;
    let id = app.create_workspace("rememberer", None).await;

    // Two memories embedded (the host embeds right after the write, in the background).
    let mut replies = vec![commit(&app, &id, FOOD).await, commit(&app, &id, SHIP).await];
    eventually(Duration::from_secs(30), || async {
        (embedded(&app).await == 2).then_some(())
    })
    .await;
    // One the endpoint refuses (500): stored all the same, without an embedding.
    fake.mode.store(FAIL, Ordering::SeqCst);
    replies.push(commit(&app, &id, SHORT).await);
    eventually(Duration::from_secs(30), || async {
        (fake.seen.lock().unwrap().len() == 3).then_some(())
    })
    .await;

    // Full text alone ranks the shortest match first (the pager keeps that order); with the
    // endpoint refusing the query's embedding, the search answers in that order too.
    let fts = search(&app, &id, "v2/memories", "deploy").await;
    assert_eq!(fts, [SHORT, FOOD, SHIP], "full-text order");
    assert_eq!(search(&app, &id, "memories", "deploy").await, fts);
    let metrics = app.get("/metrics").await;
    assert!(
        metrics.text.lines().any(
            |l| l.starts_with("molecule_memory_embedding_failures_total ") && !l.ends_with(" 0")
        ),
        "the failures are counted"
    );

    // With the endpoint answering, "ship it" is closest to the shipping memory, then the one
    // that mentions deploying among food; the unembedded one comes after the embedded ones.
    fake.mode.store(OK, Ordering::SeqCst);
    assert_eq!(
        search(&app, &id, "memories", "deploy").await,
        [SHIP, FOOD, SHORT]
    );
    assert_eq!(
        search(&app, &id, "memories", "deploy%20lunch").await,
        [FOOD],
        "the candidates are still the full-text matches"
    );

    // Secrets are redacted before any text leaves the host, query included.
    commit(
        &app,
        &id,
        "rain tomorrow, OPENAI_API_KEY=sk-live-abcdefghijklmnop1234",
    )
    .await;
    search(&app, &id, "memories", "rain%20sk-live-abcdefghijklmnop1234").await;
    eventually(Duration::from_secs(30), || async {
        (embedded(&app).await == 3).then_some(())
    })
    .await;

    // The key went only into the Authorization header: in every request the fake saw, in no
    // input, no response and no log line.
    let seen = fake.seen.lock().unwrap().clone();
    assert!(seen.len() >= 7, "{seen:?}");
    for (auth, input) in &seen {
        assert_eq!(auth, &format!("Bearer {key}"));
        assert!(
            !input.contains(&key) && !input.contains("abcdefghijklmnop1234"),
            "{input}"
        );
    }
    for reply in &replies {
        assert!(!reply.to_string().contains(&key));
    }
    assert!(!metrics.text.contains(&key));
    let log = logs.text();
    assert!(
        log.contains("memory embedding failed"),
        "the failure is logged"
    );
    assert!(!log.contains(&key), "the key is in the log");
}

async fn a_hanging_endpoint_fails_neither_write_nor_search(backend: DbBackend) {
    let fake = Arc::new(Fake::default());
    fake.mode.store(HANG, Ordering::SeqCst);
    let url = start_fake(fake.clone()).await;
    let app = spawn(backend, &url, "hang-key", 300).await;
    let id = app.create_workspace("patient", None).await;

    for content in [SHIP, FOOD, SHORT] {
        let row = commit(&app, &id, content).await;
        assert_eq!(row["content"], content);
    }
    // The query's embedding times out: the search answers in full-text order.
    let fts = search(&app, &id, "v2/memories", "deploy").await;
    assert_eq!(fts, [SHORT, FOOD, SHIP]);
    assert_eq!(search(&app, &id, "memories", "deploy").await, fts);
    // Every call (three writes, one query) reached the fake and timed out: nothing embedded.
    eventually(Duration::from_secs(30), || async {
        (fake.seen.lock().unwrap().len() == 4).then_some(())
    })
    .await;
    eventually(Duration::from_secs(30), || async {
        let text = app.get("/metrics").await.text;
        text.lines()
            .filter_map(|l| l.strip_prefix("molecule_memory_embedding_failures_total "))
            .any(|n| n.parse::<f64>().is_ok_and(|n| n >= 4.0))
            .then_some(())
    })
    .await;
    assert_eq!(embedded(&app).await, 0);
}
