//! Teams: a workspace made from a template that declares `sub_workspaces` expands into that team
//! (only the missing children, each from its own template) and collapses again (only the
//! children expand made are removed; the card is collapsed); only the operator does either.

use molecule_e2e::{DbBackend, TestApp, on_both_backends, write_file};
use serde_json::{Value, json};

on_both_backends!(a_template_team_expands_once_and_collapses_to_what_the_operator_added);

fn children(listed: &[Value], parent: &str) -> Vec<String> {
    let mut names: Vec<String> = listed
        .iter()
        .filter(|w| w["parent_id"] == parent)
        .map(|w| w["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

async fn a_template_team_expands_once_and_collapses_to_what_the_operator_added(backend: DbBackend) {
    let templates = tempfile::tempdir().unwrap();
    write_file(
        templates.path(),
        "lead/config.yaml",
        "name: Lead\ntier: 2\nsub_workspaces:\n  - name: Coder\n    role: writes code\n    template: coder\n  - Reviewer\n",
    );
    write_file(
        templates.path(),
        "coder/config.yaml",
        "name: Coder\nruntime: langgraph\n",
    );
    write_file(templates.path(), "solo/config.yaml", "name: Solo\n");
    let dir = templates.path().to_path_buf();
    let app = TestApp::spawn_with(backend, move |c| c.runtime.templates_dir = Some(dir)).await;
    let lead = app
        .post("/workspaces", json!({ "name": "Lead", "template": "lead" }))
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mine = app.create_workspace("Mine", Some(&lead)).await;

    let expanded = app
        .post(&format!("/workspaces/{lead}/expand"), json!({}))
        .await
        .expect(200);
    let created: Vec<&str> = expanded["created"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(created, ["Coder", "Reviewer"], "{expanded}");
    let listed = app.workspaces().await;
    assert_eq!(children(&listed, &lead), ["Coder", "Mine", "Reviewer"]);
    let coder = listed.iter().find(|w| w["name"] == "Coder").unwrap();
    assert_eq!(coder["role"], "writes code");
    let lead_tier = &listed.iter().find(|w| w["id"] == lead.as_str()).unwrap()["tier"];
    assert_eq!(&coder["tier"], lead_tier, "children take the lead's tier");

    // Again: nothing new.
    let again = app
        .post(&format!("/workspaces/{lead}/expand"), json!({}))
        .await
        .expect(200);
    assert_eq!(again["created"], json!([]));
    assert_eq!(again["existing"], json!(["Coder", "Reviewer"]));

    let collapsed = app
        .post(&format!("/workspaces/{lead}/collapse"), json!({}))
        .await
        .expect(200);
    assert_eq!(
        collapsed["removed"].as_array().unwrap().len(),
        2,
        "{collapsed}"
    );
    let listed = app.workspaces().await;
    assert_eq!(
        children(&listed, &lead),
        ["Mine"],
        "the operator's own child stays"
    );
    let lead_row = listed.iter().find(|w| w["id"] == lead.as_str()).unwrap();
    assert_eq!(lead_row["collapsed"], true);
    assert!(listed.iter().any(|w| w["id"] == mine.as_str()));
    // Expanding again brings the team back and the card opens.
    app.post(&format!("/workspaces/{lead}/expand"), json!({}))
        .await
        .expect(200);
    let listed = app.workspaces().await;
    assert_eq!(children(&listed, &lead), ["Coder", "Mine", "Reviewer"]);
    assert_eq!(
        listed.iter().find(|w| w["id"] == lead.as_str()).unwrap()["collapsed"],
        false
    );

    // No team to expand.
    let solo = app
        .post("/workspaces", json!({ "name": "Solo", "template": "solo" }))
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let refused = app
        .post(&format!("/workspaces/{solo}/expand"), json!({}))
        .await
        .expect(409);
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("declares no sub_workspaces")
    );
    app.post(&format!("/workspaces/{mine}/expand"), json!({}))
        .await
        .expect(409);

    // The operator only.
    let token = app.agent_token(&lead).await;
    app.with_token(&token)
        .post(&format!("/workspaces/{lead}/expand"), json!({}))
        .await
        .expect(401);
    app.with_token(&token)
        .post(&format!("/workspaces/{lead}/collapse"), json!({}))
        .await
        .expect(401);
    app.post(
        &format!("/workspaces/{}/expand", uuid::Uuid::new_v4()),
        json!({}),
    )
    .await
    .expect(404);
}
