//! Budgets and token usage: the usage an agent's answers report is priced and counted per month,
//! a workspace whose spend reached its budget gets 402 before its agent is called, the operator
//! alone sets the budget, an agent's own spend report can raise the spend but never lower it,
//! and a new month starts from nothing.

use std::time::Duration;

use molecule_e2e::{Api, DbBackend, Fault, FaultAgent, TestApp, eventually, on_both_backends};
use molecule_host::config::TokenPrice;
use serde_json::{Value, json};

on_both_backends!(
    reported_usage_is_counted_and_a_spent_budget_answers_402_until_the_limit_rises,
    only_the_operator_sets_a_budget_and_bad_limits_name_the_field,
    an_agents_spend_report_raises_the_spend_but_never_lowers_it,
    a_new_month_starts_from_nothing,
);

/// One cent per input token and two per output token.
const MODEL: &str = "m-test";

/// An answer reporting 30 input and 20 output tokens of [`MODEL`]: 70 cents.
fn answer_with_usage() -> String {
    json!({
        "jsonrpc": "2.0",
        "id": 1,
        "result": {
            "kind": "message", "role": "agent",
            "parts": [{ "kind": "text", "text": "done" }],
            "usage": { "input_tokens": 30, "output_tokens": 20, "model": MODEL },
        },
    })
    .to_string()
}

async fn host(backend: DbBackend) -> TestApp {
    TestApp::spawn_with(backend, |c| {
        c.budget.prices.insert(
            MODEL.into(),
            TokenPrice {
                input_cents_per_million: 1_000_000,
                output_cents_per_million: 2_000_000,
            },
        );
    })
    .await
}

fn message() -> Value {
    json!({ "jsonrpc": "2.0", "id": 1, "method": "message/send",
        "params": { "message": { "role": "user", "parts": [{ "kind": "text", "text": "work" }] } } })
}

/// Sets the budget as the operator and returns the answer.
async fn set_limit(app: &TestApp, id: &str, limit: Value) -> Value {
    app.api
        .patch(
            &format!("/workspaces/{id}/budget"),
            json!({ "budget_limit": limit }),
        )
        .await
        .expect(200)
}

async fn budget(api: &Api, id: &str) -> Value {
    api.get(&format!("/workspaces/{id}/budget"))
        .await
        .expect(200)
}

async fn a2a(api: &Api, id: &str) -> u16 {
    api.post(&format!("/workspaces/{id}/a2a"), message())
        .await
        .status
        .as_u16()
}

async fn reported_usage_is_counted_and_a_spent_budget_answers_402_until_the_limit_rises(
    backend: DbBackend,
) {
    let app = host(backend).await;
    let agent = FaultAgent::start(|_| Fault::Status(200, answer_with_usage())).await;
    let (id, token) = app.api.workspace_at("Spender", None, &agent.url).await;
    let set = set_limit(&app, &id, json!(100)).await;
    assert_eq!(set["budget_limit"], 100, "{set}");
    assert_eq!(set["monthly_spend"], 0, "{set}");
    assert_eq!(set["budget_remaining"], 100, "{set}");
    assert_eq!(set["exceeded"], false, "{set}");

    // One call: 70 cents. The workspace reads its own budget with its own token.
    assert_eq!(a2a(&app.api, &id).await, 200);
    let own = app.api.with_token(&token);
    let after_one = budget(&own, &id).await;
    assert_eq!(after_one["monthly_spend"], 70, "{after_one}");
    assert_eq!(after_one["budget_remaining"], 30, "{after_one}");
    let metrics = own
        .get(&format!("/workspaces/{id}/metrics"))
        .await
        .expect(200);
    assert_eq!(metrics["input_tokens"], 30, "{metrics}");
    assert_eq!(metrics["output_tokens"], 20, "{metrics}");
    assert_eq!(metrics["total_tokens"], 50, "{metrics}");
    assert_eq!(metrics["call_count"], 1, "{metrics}");
    assert_eq!(metrics["estimated_cost_usd"], 0.7, "{metrics}");
    assert_eq!(metrics["period"], after_one["period"], "{metrics}");
    assert_eq!(metrics["history"].as_array().map(Vec::len), Some(1));

    // A second call still passes (70 < 100) and brings the spend to 140: the third is refused
    // before the agent hears of it.
    assert_eq!(a2a(&app.api, &id).await, 200);
    assert_eq!(budget(&app.api, &id).await["exceeded"], true);
    let refused = app
        .api
        .post(&format!("/workspaces/{id}/a2a"), message())
        .await;
    assert_eq!(refused.status, 402, "{:?}", refused.body);
    assert_eq!(refused.body["error"], "workspace budget limit exceeded");
    assert_eq!(
        agent.requests().len(),
        2,
        "the agent was called over budget"
    );
    // The list shows the same spend.
    let listed = app.api.workspaces().await;
    let row = listed.iter().find(|w| w["id"] == id.as_str()).unwrap();
    assert_eq!(row["monthly_spend"], 140, "{row}");
    assert_eq!(row["budget_limit"], 100, "{row}");

    // Raising the limit lets the next call through at once; lifting it too.
    set_limit(&app, &id, json!(1000)).await;
    assert_eq!(a2a(&app.api, &id).await, 200);
    let lifted = set_limit(&app, &id, json!(null)).await;
    assert_eq!(lifted["budget_limit"], Value::Null, "{lifted}");
    assert_eq!(lifted["budget_remaining"], Value::Null, "{lifted}");
    assert_eq!(lifted["monthly_spend"], 210, "{lifted}");
    assert_eq!(a2a(&app.api, &id).await, 200);
    assert_eq!(agent.requests().len(), 4);
}

async fn only_the_operator_sets_a_budget_and_bad_limits_name_the_field(backend: DbBackend) {
    let app = host(backend).await;
    let agent = FaultAgent::start(|_| Fault::Answer).await;
    let (id, token) = app.api.workspace_at("Guarded", None, &agent.url).await;
    let (other, _) = app.api.workspace_at("Other", None, &agent.url).await;
    let path = format!("/workspaces/{id}/budget");

    // The workspace reads its budget but never sets it; another workspace does neither.
    let own = app.api.with_token(&token);
    assert_eq!(budget(&own, &id).await["budget_limit"], Value::Null);
    own.patch(&path, json!({ "budget_limit": 1_000_000 }))
        .await
        .expect(403);
    own.get(&format!("/workspaces/{other}/budget"))
        .await
        .expect(401);
    app.anonymous()
        .patch(&path, json!({ "budget_limit": 5 }))
        .await
        .expect(401);
    assert_eq!(budget(&app.api, &id).await["budget_limit"], Value::Null);

    for bad in [
        json!({}),
        json!({ "budget_limit": -1 }),
        json!({ "budget_limit": 1.5 }),
        json!({ "budget_limit": "100" }),
        json!({ "budget_limit": 1_000_000_000_001_i64 }),
    ] {
        let reply = app.api.patch(&path, bad.clone()).await.expect(400);
        assert_eq!(reply["field"], "budget_limit", "{bad}: {reply}");
    }
    app.api.patch(&path, json!([1])).await.expect(400);
    // An unknown or removed workspace.
    app.api
        .patch(
            &format!("/workspaces/{}/budget", uuid::Uuid::new_v4()),
            json!({ "budget_limit": 1 }),
        )
        .await
        .expect(404);
    app.api
        .delete(&format!("/workspaces/{other}"))
        .await
        .expect(200);
    app.api
        .patch(
            &format!("/workspaces/{other}/budget"),
            json!({ "budget_limit": 1 }),
        )
        .await
        .expect(410);
    app.api
        .get(&format!("/workspaces/{other}/metrics"))
        .await
        .expect(410);
    // A workspace that reported nothing has an empty month.
    let metrics = app
        .api
        .get(&format!("/workspaces/{id}/metrics"))
        .await
        .expect(200);
    assert_eq!(metrics["total_tokens"], 0, "{metrics}");
    assert_eq!(metrics["history"], json!([]), "{metrics}");
}

async fn an_agents_spend_report_raises_the_spend_but_never_lowers_it(backend: DbBackend) {
    let app = host(backend).await;
    let agent = FaultAgent::start(|_| Fault::Status(200, answer_with_usage())).await;
    let (id, token) = app.api.workspace_at("Reporter", None, &agent.url).await;
    let beat = |spend: i64| json!({ "workspace_id": id, "monthly_spend": spend });
    let own = app.api.with_token(&token);
    own.post("/registry/heartbeat", beat(500)).await.expect(200);
    assert_eq!(budget(&app.api, &id).await["monthly_spend"], 500);
    own.post("/registry/heartbeat", beat(10)).await.expect(200);
    assert_eq!(budget(&app.api, &id).await["monthly_spend"], 500);
    // The host's own count (70 cents) is below the report: the report stands.
    assert_eq!(a2a(&app.api, &id).await, 200);
    assert_eq!(budget(&app.api, &id).await["monthly_spend"], 500);
    set_limit(&app, &id, json!(400)).await;
    assert_eq!(a2a(&app.api, &id).await, 402);
}

async fn a_new_month_starts_from_nothing(backend: DbBackend) {
    let app = host(backend).await;
    let agent = FaultAgent::start(|_| Fault::Status(200, answer_with_usage())).await;
    let (id, _) = app.api.workspace_at("Monthly", None, &agent.url).await;
    set_limit(&app, &id, json!(100)).await;
    assert_eq!(a2a(&app.api, &id).await, 200);
    assert_eq!(a2a(&app.api, &id).await, 200);
    // Spend is stored by the batched writer; reading the budget waits for it.
    assert_eq!(budget(&app.api, &id).await["exceeded"], true);
    assert_eq!(a2a(&app.api, &id).await, 402);

    // What was spent moves to an earlier month, in the database behind the host's back: the
    // routing table trusts its copy for at most `cache_revalidate_ms`, then the new month has
    // no spend and calls pass again.
    let db = molecule_host::store::Db::connect(app.database_url(), 1)
        .await
        .expect("the test database");
    molecule_host::store::usage::backdate_spend(&db, id.parse().unwrap(), "2000-01")
        .await
        .expect("backdating the spend");
    db.close().await;
    let fresh = budget(&app.api, &id).await;
    assert_eq!(fresh["monthly_spend"], 0, "{fresh}");
    assert_eq!(fresh["exceeded"], false, "{fresh}");
    eventually(Duration::from_secs(10), || async {
        (a2a(&app.api, &id).await == 200).then_some(())
    })
    .await;
    let after = budget(&app.api, &id).await;
    assert_eq!(after["monthly_spend"], 70, "{after}");
    let metrics = app
        .api
        .get(&format!("/workspaces/{id}/metrics"))
        .await
        .expect(200);
    let months: Vec<&str> = metrics["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["period"].as_str().unwrap())
        .collect();
    assert_eq!(months, [after["period"].as_str().unwrap(), "2000-01"]);
    assert_eq!(metrics["history"][1]["call_count"], 2, "{metrics}");
}
