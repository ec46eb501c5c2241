//! The workspace page's budget tab: the operator sets a monthly budget in dollars, sees what the
//! agent's answers spent (priced from the usage they report) and the tokens per month, and is
//! told when the budget is spent and calls are refused.

use std::time::Instant;

use molecule_e2e::{ADMIN_TOKEN, DbBackend, Fault, FaultAgent, TestApp};
use molecule_host::config::TokenPrice;
use serde_json::json;

use crate::browser::{Browser, report_time};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_tab_sets_a_limit_and_shows_the_spend_and_tokens_of_the_month() {
    let started = Instant::now();
    let app = TestApp::spawn_with(DbBackend::Sqlite, |c| {
        // One cent per input token, two per output token.
        c.budget.prices.insert(
            "m-ui".into(),
            TokenPrice {
                input_cents_per_million: 1_000_000,
                output_cents_per_million: 2_000_000,
            },
        );
    })
    .await;
    let answer = json!({ "jsonrpc": "2.0", "id": 1, "result": {
        "kind": "message", "role": "agent", "parts": [{ "kind": "text", "text": "done" }],
        "usage": { "input_tokens": 30, "output_tokens": 20, "model": "m-ui" } } })
    .to_string();
    let agent = FaultAgent::start(move |_| Fault::Status(200, answer.clone())).await;
    let (id, _) = app.workspace_at("Spender", None, &agent.url).await;
    let browser = Browser::start(&app.base, "ws-budget").await;
    browser.sign_in(ADMIN_TOKEN).await;
    browser.open(&format!("#/workspaces/{id}/budget")).await;
    browser.until_text("#budget-limit-shown", "no limit").await;
    browser.until_text("#budget-spent", "$0.00").await;

    browser.type_into("#budget-limit", "1.00").await;
    browser.click("#budget-submit").await;
    browser
        .until_text("#budget-note", "Saved: $1.00 a month.")
        .await;
    browser.until_text("#budget-limit-shown", "$1.00").await;
    let stored = app
        .get(&format!("/workspaces/{id}/budget"))
        .await
        .expect(200);
    assert_eq!(stored["budget_limit"], 100, "{stored}");

    // Two answers of 70 cents each: the page follows the agent's answers.
    let message = json!({ "jsonrpc": "2.0", "id": 1, "method": "message/send",
        "params": { "message": { "role": "user", "parts": [{ "kind": "text", "text": "go" }] } } });
    for _ in 0..2 {
        app.post(&format!("/workspaces/{id}/a2a"), message.clone())
            .await
            .expect(200);
    }
    browser.until_text("#budget-spent", "$1.40").await;
    let left = browser
        .until_text("#budget-remaining", "calls are refused")
        .await;
    assert!(left.starts_with("$0.00"), "{left}");
    browser.until_text("#budget-usage", "60").await;
    let usage = browser
        .js(
            "const r = document.querySelector('#budget-usage tbody tr'); \
             return r ? [...r.cells].map((c) => c.textContent) : null;",
        )
        .await;
    assert_eq!(usage[1], "60", "{usage}");
    assert_eq!(usage[2], "40", "{usage}");
    assert_eq!(usage[3], "2", "{usage}");
    assert_eq!(usage[4], "$1.40", "{usage}");
    browser.screenshot("spent").await;
    app.post(&format!("/workspaces/{id}/a2a"), message.clone())
        .await
        .expect(402);

    // A bad amount is refused in the page; an empty field lifts the limit.
    browser.type_into("#budget-limit", "-3").await;
    browser.click("#budget-submit").await;
    browser.until_text("#budget-note", "0 or more").await;
    browser.type_into("#budget-limit", "").await;
    browser.click("#budget-submit").await;
    browser.until_text("#budget-note", "Saved: no limit.").await;
    app.post(&format!("/workspaces/{id}/a2a"), message)
        .await
        .expect(200);
    browser.close().await;
    report_time(started, "ws-budget");
}
