//! The org page's Create form picks from the workspace template catalogue: it offers each
//! readable template with its name, runtime and description, and creates with the chosen one.

use std::time::Instant;

use molecule_e2e::{ADMIN_TOKEN, DbBackend, TestApp, eventually, write_file};
use serde_json::json;

use crate::browser::{Browser, report_time};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_create_form_offers_the_template_catalogue_and_creates_from_the_chosen_template() {
    let started = Instant::now();
    let templates = tempfile::tempdir().unwrap();
    write_file(
        templates.path(),
        "coder/config.yaml",
        "name: Coder\ndescription: Writes and reviews code.\nruntime: claude-code\n",
    );
    write_file(
        templates.path(),
        "coder/skills/review/SKILL.md",
        "# Review\n",
    );
    write_file(
        templates.path(),
        "scribe/config.yaml",
        "name: Scribe\ndescription: Takes notes.\n",
    );
    write_file(templates.path(), "broken/config.yaml", "name: [unclosed\n");
    let dir = templates.path().to_path_buf();
    // No runtime: the created workspace waits in provisioning, which is all this form needs.
    let app = TestApp::spawn_with(DbBackend::Sqlite, move |c| {
        c.runtime.templates_dir = Some(dir);
    })
    .await;
    let browser = Browser::start(&app.base, "templates").await;
    browser.sign_in(ADMIN_TOKEN).await;
    browser.open("#/").await;

    // The catalogue's readable templates are offered, each with its runtime; the broken one is
    // not.
    let offered = browser
        .until(
            "the template choices",
            "const s = document.querySelector('#create-template'); \
             return s && s.options.length === 3 \
               ? [...s.options].map((o) => [o.value, o.textContent]) : null;",
        )
        .await;
    assert_eq!(
        offered,
        json!([
            ["", "(no template)"],
            ["coder", "Coder (claude-code)"],
            ["scribe", "Scribe"]
        ])
    );

    // Choosing one says what it is.
    browser
        .js(
            "const s = document.querySelector('#create-template'); s.value = 'coder'; \
             s.dispatchEvent(new Event('change')); return true;",
        )
        .await;
    let info = browser.until_text("#create-template-info", "Coder").await;
    assert!(info.contains("Writes and reviews code."), "{info}");
    assert!(info.contains("runtime claude-code"), "{info}");
    assert!(info.contains("1 skill"), "{info}");
    browser.screenshot("1-template-chosen").await;

    // Create: the workspace is created from the chosen template and takes its runtime.
    browser.type_into("#create-name", "Reviewer").await;
    browser.click("#create-form button[type=submit]").await;
    browser.until_text("#tree", "Reviewer").await;
    let row = eventually(std::time::Duration::from_secs(10), || async {
        let list = app.get("/workspaces").await.expect(200);
        list.as_array()?
            .iter()
            .find(|w| w["name"] == "Reviewer")
            .cloned()
    })
    .await;
    assert_eq!(row["runtime"], "claude-code");
    let id = row["id"].as_str().unwrap();
    let config = app
        .get(&format!("/workspaces/{id}/config"))
        .await
        .expect(200);
    assert_eq!(config["data"]["template"], "coder");
    browser.screenshot("2-created").await;
    browser.close().await;
    report_time(started, "the_create_form_offers_the_template_catalogue");
}
