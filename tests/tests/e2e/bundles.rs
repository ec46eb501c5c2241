//! Bundles: a three-level tree with files imported from a bundle, exported, deleted and imported
//! again gives the same names, config, files and hierarchy; importing twice makes a copy; a
//! refused bundle leaves nothing behind; only the operator exports or imports.

use std::time::Duration;

use molecule_e2e::{DbBackend, TestApp, on_both_backends, process_runtime};
use serde_json::{Value, json};

on_both_backends!(
    a_three_level_tree_round_trips_through_a_bundle_and_a_second_import_is_a_copy,
    a_refused_bundle_leaves_nothing_behind_and_only_the_operator_moves_bundles,
);

fn bundle() -> Value {
    json!({
        "schema": "molecule.bundle/1",
        "author": "qa",
        "version": "1.0.0",
        "name": "Lead",
        "role": "runs the team",
        "tier": 2,
        "system_prompt": "You lead the team.",
        "skills": [{ "id": "triage", "files": {
            "SKILL.md": "---\nname: Triage\ndescription: Sorts reports\n---\n",
            "notes/howto.md": "Sort by severity.",
        } }],
        "files": { "config.yaml": "name: Lead\nrole: lead\n", "notes/plan.md": "# The plan\n" },
        "config": { "team": "alpha" },
        "secret_keys": ["OPENAI_API_KEY"],
        "max_concurrent_tasks": 2,
        "x": 0.0, "y": 0.0,
        "sub_workspaces": [{
            "name": "Dev",
            "tier": 1,
            "max_concurrent_tasks": 1,
            "system_prompt": "You build.",
            "files": { "config.yaml": "name: Dev\n" },
            "x": 0.0, "y": 160.0,
            "sub_workspaces": [{
                "name": "Intern",
                "tier": 1,
                "max_concurrent_tasks": 1,
                "files": { "config.yaml": "name: Intern\n", "todo.md": "- learn\n" },
                "x": 0.0, "y": 320.0,
            }],
        }],
    })
}

/// What must survive a round trip: everything but ids, timestamps and what the running agents
/// changed (their cards).
fn essence(node: &Value) -> Value {
    json!({
        "name": node["name"],
        "role": node["role"],
        "tier": node["tier"],
        "system_prompt": node["system_prompt"],
        "skills": node["skills"],
        "files": node["files"],
        "config": node["config"],
        "max_concurrent_tasks": node["max_concurrent_tasks"],
        "x": node["x"],
        "y": node["y"],
        "sub_workspaces": node["sub_workspaces"]
            .as_array()
            .map(|kids| kids.iter().map(essence).collect::<Vec<_>>())
            .unwrap_or_default(),
    })
}

async fn import(app: &TestApp, bundle: &Value) -> Value {
    app.post("/bundles/import", bundle.clone())
        .await
        .expect(201)
}

/// Waits until every workspace the import created is online and settled.
async fn settle(app: &TestApp, imported: &Value) {
    for w in imported["workspaces"].as_array().unwrap() {
        app.wait_settled(w["id"].as_str().unwrap(), Duration::from_secs(60))
            .await;
    }
}

async fn a_three_level_tree_round_trips_through_a_bundle_and_a_second_import_is_a_copy(
    backend: DbBackend,
) {
    let app = TestApp::spawn_with(backend, process_runtime).await;
    let imported = import(&app, &bundle()).await;
    let names: Vec<&str> = imported["workspaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Lead", "Dev", "Intern"]);
    let root = imported["root_id"].as_str().unwrap().to_owned();
    assert_eq!(
        imported["missing_secrets"],
        json!([{ "workspace_id": root, "keys": ["OPENAI_API_KEY"] }]),
        "the operator is told which secrets to set"
    );
    settle(&app, &imported).await;
    // The hierarchy as the host holds it.
    let listed = app.workspaces().await;
    let find = |name: &str| {
        listed
            .iter()
            .find(|w| w["name"] == name)
            .unwrap_or_else(|| panic!("no {name}"))
            .clone()
    };
    assert_eq!(find("Dev")["parent_id"], root.as_str());
    assert_eq!(find("Intern")["parent_id"], find("Dev")["id"]);

    let reply = app.get(&format!("/bundles/export/{root}")).await;
    assert_eq!(
        reply.headers["content-disposition"],
        "attachment; filename=\"Lead.bundle.json\""
    );
    let exported = reply.expect(200);
    assert_eq!(exported["schema"], "molecule.bundle/1");
    assert_eq!(essence(&exported), essence(&bundle()), "{exported:#}");
    assert!(
        !exported.to_string().contains("auth_token"),
        "the agent's token file travelled"
    );

    // Delete the tree; the bundle brings it back as it was.
    app.delete(&format!("/workspaces/{root}?confirm=true"))
        .await
        .expect(200);
    let again = import(&app, &exported).await;
    settle(&app, &again).await;
    let second_root = again["root_id"].as_str().unwrap().to_owned();
    let re_exported = app
        .get(&format!("/bundles/export/{second_root}"))
        .await
        .expect(200);
    assert_eq!(essence(&re_exported), essence(&exported));

    // The same bundle again, under the restored root: a copy, never a half tree.
    let copy = app
        .post(
            &format!("/bundles/import?parent_id={second_root}"),
            exported.clone(),
        )
        .await
        .expect(201);
    assert_eq!(copy["workspaces"].as_array().unwrap().len(), 3);
    let beside = app
        .post("/bundles/import", exported.clone())
        .await
        .expect(201);
    assert_eq!(beside["workspaces"][0]["name"], "Lead (2)");
    settle(&app, &copy).await;
    settle(&app, &beside).await;
    let listed = app.workspaces().await;
    let copy_root = listed.iter().find(|w| w["id"] == copy["root_id"]).unwrap();
    assert_eq!(copy_root["parent_id"], second_root.as_str());
    assert_eq!(listed.len(), 9, "three trees of three");
}

async fn a_refused_bundle_leaves_nothing_behind_and_only_the_operator_moves_bundles(
    backend: DbBackend,
) {
    let app = TestApp::spawn(backend).await;
    let lead = app.create_workspace("Existing", None).await;
    let token = app.agent_token(&lead).await;
    let before = app.workspaces().await.len();

    let deep = {
        let mut node = json!({ "name": "L17" });
        for level in (1..=16).rev() {
            node = json!({ "name": format!("L{level}"), "sub_workspaces": [node] });
        }
        node["schema"] = json!("molecule.bundle/1");
        node
    };
    let mut escape = bundle();
    escape["sub_workspaces"][0]["sub_workspaces"][0]["files"] =
        json!({ "../../etc/cron.d/x": "* * * * * root sh" });
    let mut twins = bundle();
    twins["sub_workspaces"][0]["sub_workspaces"] = json!([{ "name": "Kid" }, { "name": "Kid" }]);
    let mut token_file = bundle();
    token_file["files"] = json!({ ".auth_token": "stolen" });
    let mut wrong_schema = bundle();
    wrong_schema["schema"] = json!("molecule.bundle/99");
    let mut unknown = bundle();
    unknown["sub_workspaces"][0]["secrets"] = json!({ "K": "v" });
    let mut big = bundle();
    big["files"] = json!({ "big.md": "x".repeat(1024 * 1024 + 1) });
    for (case, body, says) in [
        ("depth", deep, "deeper than 16 levels"),
        ("escape", escape, "is not a relative path"),
        ("twins", twins, "two sub-workspaces are named \"Kid\""),
        ("token file", token_file, ".auth_token"),
        ("schema", wrong_schema, "schema must be"),
        ("unknown field", unknown, "unknown field"),
        ("big file", big, "over 1 MiB"),
        ("not an object", json!([1, 2]), "not a bundle"),
    ] {
        let refused = app.post("/bundles/import", body).await.expect(400);
        let error = refused["error"].as_str().unwrap_or_default();
        assert!(error.contains(says), "{case}: {refused}");
    }
    let unknown_parent = app
        .post(
            &format!("/bundles/import?parent_id={}", uuid::Uuid::new_v4()),
            bundle(),
        )
        .await
        .expect(400);
    assert_eq!(unknown_parent["error"], "parent workspace not found");
    assert_eq!(
        app.workspaces().await.len(),
        before,
        "a refused bundle left rows"
    );

    // The operator only, both ways.
    app.anonymous()
        .post("/bundles/import", bundle())
        .await
        .expect(401);
    app.with_token(&token)
        .post("/bundles/import", bundle())
        .await
        .expect(401);
    app.with_token(&token)
        .get(&format!("/bundles/export/{lead}"))
        .await
        .expect(401);
    app.get(&format!("/bundles/export/{}", uuid::Uuid::new_v4()))
        .await
        .expect(404);
    assert_eq!(app.workspaces().await.len(), before);
    // Without a runtime there are no files, but the rows still travel.
    let exported = app
        .get(&format!("/bundles/export/{lead}"))
        .await
        .expect(200);
    assert_eq!(exported["name"], "Existing");
    assert_eq!(exported.get("files"), None);
}
