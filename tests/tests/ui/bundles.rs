//! Bundles in the console: the workspace page exports a bundle and duplicates the workspace
//! with its subtree beside itself; the import page creates a tree from a bundle file and says
//! which secrets to set again, and a refused file says why.

use std::time::Instant;

use molecule_e2e::{ADMIN_TOKEN, DbBackend, TestApp};
use serde_json::json;

use crate::browser::{Browser, report_time};

/// Puts `path` into the page's bundle file input (WebDriver types a path into a file input).
async fn choose_file(browser: &Browser, path: &std::path::Path) {
    browser
        .client
        .find(fantoccini::Locator::Css("#bundle-file"))
        .await
        .expect("the bundle file input")
        .send_keys(path.to_str().expect("a UTF-8 path"))
        .await
        .expect("choosing the file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_is_exported_duplicated_and_a_bundle_file_imported_from_the_console() {
    let started = Instant::now();
    let app = TestApp::spawn(DbBackend::Sqlite).await;
    let lead = app.create_workspace("Lead", None).await;
    app.create_workspace("Dev", Some(&lead)).await;
    let browser = Browser::start(&app.base, "bundles").await;
    browser.sign_in(ADMIN_TOKEN).await;
    browser.open(&format!("#/workspaces/{lead}")).await;

    browser.click("#bundle-export").await;
    browser
        .until_text("#bundle-note", "Saved Lead.bundle.json")
        .await;
    browser.click("#bundle-duplicate").await;
    let said = browser.until_text("#bundle-note", "Created").await;
    assert!(
        said.contains("Created Lead (2) with 1 more workspace."),
        "{said}"
    );
    browser.screenshot("duplicated").await;
    let listed = app.workspaces().await;
    let copy = listed
        .iter()
        .find(|w| w["name"] == "Lead (2)")
        .expect("the copy");
    let copy_id = copy["id"].as_str().unwrap();
    assert!(
        listed
            .iter()
            .any(|w| w["name"] == "Dev" && w["parent_id"] == copy_id),
        "the copy has its child: {listed:?}"
    );
    browser.click("#bundle-copy-link").await;
    browser.until_text("#ws-name", "Lead (2)").await;

    // A bundle file on the import page.
    let dir = tempfile::tempdir().expect("a temp dir");
    let good = dir.path().join("team.bundle.json");
    std::fs::write(
        &good,
        json!({ "schema": "molecule.bundle/1", "name": "Team", "secret_keys": ["OPENAI_API_KEY"],
            "sub_workspaces": [{ "name": "Helper" }] })
        .to_string(),
    )
    .unwrap();
    let bad = dir.path().join("bad.bundle.json");
    std::fs::write(
        &bad,
        json!({ "schema": "molecule.bundle/1", "name": "Bad",
            "sub_workspaces": [{ "name": "Kid" }, { "name": "Kid" }] })
        .to_string(),
    )
    .unwrap();
    browser.open("#/import").await;
    choose_file(&browser, &bad).await;
    browser.click("#bundle-submit").await;
    browser
        .until_text(
            "#bundle-import-note",
            "two sub-workspaces are named \"Kid\"",
        )
        .await;
    choose_file(&browser, &good).await;
    browser.click("#bundle-submit").await;
    let said = browser
        .until_text("#bundle-import-note", "Created Team")
        .await;
    assert!(said.contains("with 1 more workspace"), "{said}");
    assert!(said.contains("set OPENAI_API_KEY on Team"), "{said}");
    browser.screenshot("imported").await;
    let names: Vec<String> = app
        .workspaces()
        .await
        .iter()
        .map(|w| w["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(names.contains(&"Team".to_owned()) && names.contains(&"Helper".to_owned()));
    assert!(
        !names.contains(&"Bad".to_owned()),
        "a refused bundle left a row"
    );
    browser.close().await;
    report_time(started, "bundles");
}
