//! The workspace lifecycle with real agents: provisioning, restarts through the restart policy,
//! coalescing, pause/resume, the files API and cascade delete, on the process runtime and on a
//! real Docker engine (the `molecule-agent:dev` image `make image` builds).

use std::time::Duration;

use base64::Engine as _;
use molecule_e2e::{
    DbBackend, Runtime, TestApp, agent_pid, builtin_extensions_dir, docker, eventually, id12,
    kill_agent, on_both_backends, on_both_runtimes,
};
use serde_json::{Value, json};

on_both_runtimes!(
    a_tree_provisions_and_every_agent_comes_online_by_its_own_heartbeat,
    a_killed_agent_goes_offline_and_is_restarted_by_the_policy,
    a_file_write_restarts_once_and_a_burst_of_writes_at_most_twice,
    a_policy_that_keeps_running_is_obeyed_and_the_agent_reads_the_new_file,
    pause_cascades_files_persist_while_stopped_and_resume_brings_agents_back,
    cascade_delete_removes_agents_and_their_files,
    agents_of_unknown_workspaces_are_removed_by_the_orphan_sweep,
    the_callers_model_wins_and_a_restart_keeps_the_operators_model,
    a_template_is_delivered_with_inner_symlinks_followed_and_scripts_normalised,
    a_secret_set_during_the_first_start_restarts_once_into_the_new_secret,
);

on_both_backends!(
    without_a_runtime_file_operations_answer_503_and_nothing_is_written,
    bootstrap_failed_moves_a_provisioning_workspace_to_failed_once,
);

/// Long enough for an agent to start, register and heartbeat on a loaded CI machine.
const ONLINE: Duration = Duration::from_secs(60);

async fn spawn(runtime: Runtime, backend: DbBackend) -> TestApp {
    spawn_with(runtime, backend, |_| {}).await
}

async fn spawn_with(
    runtime: Runtime,
    backend: DbBackend,
    tweak: impl FnOnce(&mut molecule_host::config::Config),
) -> TestApp {
    TestApp::spawn_with(backend, |c| {
        runtime.configure(c);
        c.builtin_extensions_dir = Some(builtin_extensions_dir());
        tweak(c);
    })
    .await
}

async fn row(app: &TestApp, id: &str) -> Value {
    app.get(&format!("/workspaces/{id}")).await.expect(200)
}

/// The workspace as the list shows it (the list carries `last_sample_error`).
async fn listed(app: &TestApp, id: &str) -> Value {
    app.workspaces()
        .await
        .iter()
        .find(|w| w["id"] == id)
        .cloned()
        .unwrap_or(Value::Null)
}

async fn wait_status(app: &TestApp, id: &str, status: &str) -> Value {
    eventually(ONLINE, || async {
        let row = listed(app, id).await;
        (row["status"] == status).then_some(row)
    })
    .await
}

/// Online by the agent's own heartbeat: registered, then at least one heartbeat recorded.
async fn wait_online(app: &TestApp, id: &str) -> Value {
    eventually(ONLINE, || async {
        let row = row(app, id).await;
        (row["status"] == "online"
            && row["uptime_seconds"].as_i64().is_some()
            && !row["last_heartbeat_at"].is_null())
        .then_some(row)
    })
    .await
}

async fn activity(app: &TestApp, id: &str, kind: &str) -> Vec<Value> {
    app.get(&format!("/workspaces/{id}/activity?type={kind}&limit=500"))
        .await
        .expect(200)
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn restarts(app: &TestApp, id: &str) -> usize {
    activity(app, id, "restart").await.len()
}

/// Sends `text` to the workspace's agent over A2A and returns the JSON-RPC result.
async fn ask(app: &TestApp, id: &str, text: &str) -> Value {
    let url = row(app, id).await["url"]
        .as_str()
        .expect("an agent url")
        .to_owned();
    let body = json!({
        "jsonrpc": "2.0", "id": 1, "method": "message/send",
        "params": { "message": { "role": "user", "messageId": "m1", "parts": [{ "kind": "text", "text": text }] } },
    });
    let reply: Value = app
        .client
        .post(&url)
        .json(&body)
        .send()
        .await
        .expect("the agent answers")
        .json()
        .await
        .expect("json-rpc");
    reply["result"].clone()
}

fn reply_text(result: &Value) -> String {
    result["parts"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Whether the runtime still holds anything (container, volume, directory) for the workspace.
fn runtime_holds(app: &TestApp, runtime: Runtime, id: &str) -> bool {
    match runtime {
        Runtime::Docker => {
            let name = format!("^ws-{}$", id12(id));
            !docker(&["ps", "-aq", "--filter", &format!("name={name}")]).is_empty()
                || !docker(&[
                    "volume",
                    "ls",
                    "-q",
                    "--filter",
                    &format!("name=ws-{}-configs", id12(id)),
                ])
                .is_empty()
        }
        Runtime::Process => app.data_dir().join(format!("workspaces/{id}")).exists(),
    }
}

/// The agent's environment as the runtime started it.
fn agent_env(app: &TestApp, runtime: Runtime, id: &str) -> Vec<String> {
    match runtime {
        Runtime::Docker => docker(&[
            "inspect",
            "--format",
            "{{range .Config.Env}}{{println .}}{{end}}",
            &format!("ws-{}", id12(id)),
        ])
        .lines()
        .map(str::to_owned)
        .collect(),
        Runtime::Process => {
            let environ =
                std::fs::read(format!("/proc/{}/environ", agent_pid(app, id))).unwrap_or_default();
            environ
                .split(|b| *b == 0)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect()
        }
    }
}

/// A secret set while the first start is still under way: the restart it asks for waits for that
/// start, stops its agent (even one that registered meanwhile) and starts one with the secret;
/// the stop is never taken for a crash (no `agent_exited` decision, no second cycle).
async fn a_secret_set_during_the_first_start_restarts_once_into_the_new_secret(
    runtime: Runtime,
    backend: DbBackend,
) {
    let app = spawn(runtime, backend).await;
    let id = app.create_workspace("Racer", None).await;
    app.post(
        &format!("/workspaces/{id}/secrets"),
        json!({ "key": "RACE_KEY", "value": "race-value-1" }),
    )
    .await
    .expect(200);
    app.wait_settled(&id, ONLINE).await;
    // Several health sweeps (one a second) later, the agent still runs and nothing followed.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let row = app.get(&format!("/workspaces/{id}")).await.expect(200);
    assert_eq!(row["status"], "online", "{row}");
    let decisions = app.activity(&id, "?type=restart_decision&limit=50").await;
    assert!(
        !Value::Array(decisions.clone())
            .to_string()
            .contains("agent_exited"),
        "a restart's stop was taken for a crash: {decisions:?}"
    );
    assert!(app.restart_count(&id).await <= 1);
    assert!(
        agent_env(&app, runtime, &id).contains(&"RACE_KEY=race-value-1".to_owned()),
        "the agent runs without the secret"
    );
}

async fn a_tree_provisions_and_every_agent_comes_online_by_its_own_heartbeat(
    runtime: Runtime,
    backend: DbBackend,
) {
    let app = spawn(runtime, backend).await;
    let root = app.create_workspace("Lead", None).await;
    let child = app.create_workspace("Dev", Some(&root)).await;
    let grandchild = app.create_workspace("QA", Some(&child)).await;
    for id in [&root, &child, &grandchild] {
        let row = wait_online(&app, id).await;
        assert!(
            row["url"]
                .as_str()
                .unwrap()
                .starts_with("http://127.0.0.1:"),
            "{row}"
        );
    }
    // Each agent serves A2A with the deterministic echo brain, named by its generated config.
    let result = ask(&app, &child, "hello").await;
    assert_eq!(reply_text(&result), "Dev: hello");
    // The agent got a fresh token in /configs/.auth_token; the files API never hands it out.
    let listed = app
        .get(&format!("/workspaces/{child}/files?depth=2"))
        .await
        .expect(200);
    let paths: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["path"].as_str())
        .collect();
    assert!(paths.contains(&"config.yaml"), "{paths:?}");
    app.get(&format!("/workspaces/{child}/files/.auth_token"))
        .await
        .expect(403);
    let config = app
        .get(&format!("/workspaces/{child}/files/config.yaml"))
        .await
        .expect(200);
    assert!(config["content"].as_str().unwrap().contains("name: Dev"));
    // Heartbeats keep coming.
    let first = row(&app, &root).await["last_heartbeat_at"].clone();
    eventually(ONLINE, || async {
        (row(&app, &root).await["last_heartbeat_at"] != first).then_some(())
    })
    .await;
}

async fn a_killed_agent_goes_offline_and_is_restarted_by_the_policy(
    runtime: Runtime,
    backend: DbBackend,
) {
    // Without the restart context, so the only message after the restart is the test's own.
    let app = spawn_with(runtime, backend, |c| c.runtime.restart_context = false).await;
    let id = app.create_workspace("Crashy", None).await;
    wait_online(&app, &id).await;
    assert_eq!(restarts(&app, &id).await, 0);
    kill_agent(&app, runtime, &id);
    // The health sweep notices, marks it offline and asks the policy about the exit.
    let decision = eventually(ONLINE, || async {
        activity(&app, &id, "restart_decision")
            .await
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(
        decision["request_body"]["trigger"]["kind"], "agent_exited",
        "{decision}"
    );
    let events = app.get(&format!("/events/{id}")).await.expect(200);
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event_type"] == "WORKSPACE_OFFLINE"),
        "{events}"
    );
    // The default policy restarts a crashed agent (after its back-off); it comes back online.
    eventually(ONLINE, || async {
        (restarts(&app, &id).await == 1).then_some(())
    })
    .await;
    wait_online(&app, &id).await;
    assert_eq!(reply_text(&ask(&app, &id, "again").await), "Crashy: again");
    // With the context on, it is recorded right after the agent is back (see the model spec).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let received = activity(&app, &id, "a2a_receive").await;
    assert!(
        received.is_empty(),
        "no restart context when it is off: {received:?}"
    );
}

async fn a_file_write_restarts_once_and_a_burst_of_writes_at_most_twice(
    runtime: Runtime,
    backend: DbBackend,
) {
    let app = spawn(runtime, backend).await;
    let id = app.create_workspace("Writer", None).await;
    wait_online(&app, &id).await;

    let saved = app
        .put(
            &format!("/workspaces/{id}/files/system-prompt.md"),
            json!({ "content": "You write.\r\n" }),
        )
        .await
        .expect(200);
    assert_eq!(saved["status"], "saved");
    assert_eq!(saved["source"], "container");
    assert_eq!(saved["restart"]["kind"], "restart_now", "{saved}");
    eventually(ONLINE, || async {
        (restarts(&app, &id).await == 1).then_some(())
    })
    .await;
    wait_online(&app, &id).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(restarts(&app, &id).await, 1, "one write, one restart");
    // The agent was told before it was stopped (signals/restart_pending), and said so.
    let told = activity(&app, &id, "agent_log").await;
    assert_eq!(
        told.iter()
            .map(|r| r["summary"].as_str().unwrap_or_default())
            .collect::<Vec<_>>(),
        ["restart pending: idle"],
        "{told:?}"
    );
    let restarted = activity(&app, &id, "restart").await;
    let at = |row: &Value| {
        chrono::DateTime::parse_from_rfc3339(row["created_at"].as_str().expect("created_at"))
            .expect("an RFC 3339 time")
    };
    assert!(
        at(&told[0]) < at(&restarted[0]),
        "the signal came before the stop: {told:?} {restarted:?}"
    );
    let read = app
        .get(&format!("/workspaces/{id}/files/system-prompt.md"))
        .await
        .expect(200);
    assert_eq!(read["content"], "You write.\r\n");

    // Ten concurrent writes: at most two more cycles, and the last content wins.
    let writes = (0..10).map(|n| {
        let app = &app;
        let id = &id;
        async move {
            app.put(
                &format!("/workspaces/{id}/files/notes/n{n}.md"),
                json!({ "content": format!("note {n}") }),
            )
            .await
            .expect(200)
        }
    });
    futures::future::join_all(writes).await;
    // Let any delayed decision (the clamp's back-off) play out before counting.
    let total = settled_restarts(&app, &id, 2, Duration::from_secs(4)).await;
    assert!(
        (2..=3).contains(&total),
        "ten writes caused {} cycles",
        total - 1
    );
    // The agent is told once per run of coalesced cycles, after the last: at least once for the
    // first write and once for the burst, never more often than it was restarted.
    let told = eventually(ONLINE, || async {
        let told = restart_contexts(&app, &id).await;
        (told.len() >= 2).then_some(told)
    })
    .await;
    assert!(
        told.len() <= total,
        "{} messages for {total} cycles",
        told.len()
    );
    assert!(told.iter().all(|row| row["status"] == "ok"), "{told:?}");
    let listed = app
        .get(&format!("/workspaces/{id}/files?path=notes&depth=1"))
        .await
        .expect(200);
    assert_eq!(listed.as_array().unwrap().len(), 10, "{listed}");
    assert_eq!(decisions_with(&app, &id, "files_written").await, 11);
}

/// The `a2a_receive` rows of the restart-context messages `id` was sent.
async fn restart_contexts(app: &TestApp, id: &str) -> Vec<Value> {
    activity(app, id, "a2a_receive")
        .await
        .into_iter()
        .filter(|row| {
            row["request_body"]["params"]["message"]["metadata"]["source"]
                == "system:restart-context"
        })
        .collect()
}

/// The restart cycles once at least `at_least` ran and the workspace stayed online for `quiet`.
async fn settled_restarts(app: &TestApp, id: &str, at_least: usize, quiet: Duration) -> usize {
    eventually(ONLINE, || async {
        (restarts(app, id).await >= at_least).then_some(())
    })
    .await;
    wait_online(app, id).await;
    tokio::time::sleep(quiet).await;
    wait_online(app, id).await;
    restarts(app, id).await
}

async fn decisions_with(app: &TestApp, id: &str, trigger: &str) -> usize {
    activity(app, id, "restart_decision")
        .await
        .iter()
        .filter(|d| d["request_body"]["trigger"]["kind"] == trigger)
        .count()
}

async fn a_policy_that_keeps_running_is_obeyed_and_the_agent_reads_the_new_file(
    runtime: Runtime,
    backend: DbBackend,
) {
    let app = spawn(runtime, backend).await;
    let wasm = builtin_extensions_dir().join("keep_running_policy.wasm");
    let bytes = std::fs::read(&wasm)
        .unwrap_or_else(|e| panic!("{} ({e}): run `make plugins`", wasm.display()));
    let uploaded = app
        .post(
            "/admin/extensions",
            json!({
                "manifest": { "name": "keep-running", "version": "1.0.0", "slot": "restart-policy" },
                "component": base64::engine::general_purpose::STANDARD.encode(bytes),
            }),
        )
        .await
        .expect(201);
    let ext = uploaded["id"].as_str().unwrap();
    app.post(&format!("/admin/extensions/{ext}/activate"), json!({}))
        .await
        .expect(200);

    let id = app.create_workspace("Reader", None).await;
    wait_online(&app, &id).await;
    let skill = "---\nname: Triage\ndescription: sorts bugs\n---\nSort them.\n";
    let saved = app
        .put(
            &format!("/workspaces/{id}/files/skills/triage/SKILL.md"),
            json!({ "content": skill }),
        )
        .await
        .expect(200);
    assert_eq!(saved["restart"]["kind"], "keep_running", "{saved}");
    // The running agent re-reads its skills on each request: no restart needed.
    let result = ask(&app, &id, "which skills?").await;
    let skills = result["metadata"]["skills"].to_string();
    assert!(
        skills.contains("triage") || skills.contains("Triage"),
        "{result}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(restarts(&app, &id).await, 0);
    assert_eq!(row(&app, &id).await["status"], "online");
}

async fn pause_cascades_files_persist_while_stopped_and_resume_brings_agents_back(
    runtime: Runtime,
    backend: DbBackend,
) {
    let app = spawn(runtime, backend).await;
    let root = app.create_workspace("Lead", None).await;
    let child = app.create_workspace("Dev", Some(&root)).await;
    // Settled, not merely online: a pause or restart that lands between restart cycles races them.
    app.wait_settled(&root, ONLINE).await;
    app.wait_settled(&child, ONLINE).await;

    let paused = app
        .post(&format!("/workspaces/{root}/pause"), json!({}))
        .await
        .expect(200);
    assert_eq!(paused, json!({ "status": "paused", "paused_count": 2 }));
    assert_eq!(row(&app, &child).await["status"], "paused");
    // Pausing it again says so (the original answered 404 "workspace not found").
    assert_eq!(
        app.post(&format!("/workspaces/{root}/pause"), json!({}))
            .await
            .expect(409),
        json!({ "error": "workspace is already paused" })
    );
    // Resuming the child under a paused parent is refused; restarting it too.
    let refused = app
        .post(&format!("/workspaces/{child}/resume"), json!({}))
        .await
        .expect(409);
    assert!(
        refused["error"].as_str().unwrap().contains("Lead"),
        "{refused}"
    );
    app.post(&format!("/workspaces/{child}/restart"), json!({}))
        .await
        .expect(409);

    // A stopped workspace's files are written where the agent will read them next start.
    let saved = app
        .put(
            &format!("/workspaces/{child}/files/system-prompt.md"),
            json!({ "content": "paused edit" }),
        )
        .await
        .expect(200);
    assert_eq!(saved["source"], "volume", "{saved}");
    assert_eq!(saved["restart"]["reason"], "paused", "{saved}");

    let resumed = app
        .post(&format!("/workspaces/{root}/resume"), json!({}))
        .await
        .expect(200);
    assert_eq!(
        resumed,
        json!({ "status": "provisioning", "resumed_count": 2 })
    );
    app.wait_settled(&root, ONLINE).await;
    app.wait_settled(&child, ONLINE).await;
    let read = app
        .get(&format!("/workspaces/{child}/files/system-prompt.md"))
        .await
        .expect(200);
    assert_eq!(read["content"], "paused edit");
    // A tier change is a config change: the policy (default: restart now) decides.
    app.patch(&format!("/workspaces/{child}"), json!({ "tier": 3 }))
        .await
        .expect(200);
    eventually(ONLINE, || async {
        (decisions_with(&app, &child, "config_changed").await == 1).then_some(())
    })
    .await;
    eventually(ONLINE, || async {
        (restarts(&app, &child).await == 1).then_some(())
    })
    .await;
    app.wait_settled(&child, ONLINE).await;
    // A manual restart goes through without asking the policy.
    let restarted = app
        .post(&format!("/workspaces/{root}/restart"), json!({}))
        .await
        .expect(200);
    assert_eq!(restarted["status"], "provisioning");
    eventually(ONLINE, || async {
        (restarts(&app, &root).await == 1).then_some(())
    })
    .await;
    wait_online(&app, &root).await;
}

async fn cascade_delete_removes_agents_and_their_files(runtime: Runtime, backend: DbBackend) {
    let app = spawn(runtime, backend).await;
    let root = app.create_workspace("Lead", None).await;
    let child = app.create_workspace("Dev", Some(&root)).await;
    wait_online(&app, &root).await;
    wait_online(&app, &child).await;
    assert!(runtime_holds(&app, runtime, &root));
    let removed = app
        .delete(&format!("/workspaces/{root}?confirm=true"))
        .await
        .expect(200);
    assert_eq!(removed["status"], "removed");
    for id in [&root, &child] {
        assert!(
            !runtime_holds(&app, runtime, id),
            "{id} still has an agent or files"
        );
    }
    // Nothing comes back: the sweeps see removed rows and leave them alone.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!runtime_holds(&app, runtime, &child));
}

async fn agents_of_unknown_workspaces_are_removed_by_the_orphan_sweep(
    runtime: Runtime,
    backend: DbBackend,
) {
    let app = spawn(runtime, backend).await;
    let stray = uuid::Uuid::new_v4().to_string();
    match runtime {
        Runtime::Docker => {
            let label = app
                .config
                .runtime
                .labels
                .get(molecule_e2e::TEST_LABEL)
                .unwrap()
                .clone();
            let created = docker(&[
                "create",
                "--name",
                &format!("ws-{}", id12(&stray)),
                "--label",
                "molecule.platform.managed=true",
                "--label",
                &format!("molecule.workspace.id={stray}"),
                "--label",
                &format!("{}={label}", molecule_e2e::TEST_LABEL),
                molecule_e2e::AGENT_IMAGE,
            ]);
            assert!(!created.is_empty(), "docker create failed");
        }
        Runtime::Process => {
            std::fs::create_dir_all(app.data_dir().join(format!("workspaces/{stray}/configs")))
                .unwrap();
        }
    }
    assert!(runtime_holds(&app, runtime, &stray));
    eventually(ONLINE, || async {
        (!runtime_holds(&app, runtime, &stray)).then_some(())
    })
    .await;
}

async fn the_callers_model_wins_and_a_restart_keeps_the_operators_model(
    runtime: Runtime,
    backend: DbBackend,
) {
    let app = spawn(runtime, backend).await;
    let created = app
        .post(
            "/workspaces",
            json!({ "name": "Modelled", "model": "caller:model-a", "tier": 2 }),
        )
        .await
        .expect(201);
    let id = created["id"].as_str().unwrap().to_owned();
    wait_online(&app, &id).await;
    let env = agent_env(&app, runtime, &id);
    assert!(env.contains(&"MODEL=caller:model-a".to_owned()), "{env:?}");
    assert!(env.contains(&format!("WORKSPACE_ID={id}")));
    assert!(env.contains(&"TIER=2".to_owned()));
    assert!(env.iter().any(|v| v.starts_with("PLATFORM_URL=http://")));

    // The operator sets MODEL; the secret change restarts the agent (policy: restart now) and
    // the restart uses the operator's model, not the one stored at creation.
    app.post(
        &format!("/workspaces/{id}/secrets"),
        json!({ "key": "MODEL", "value": "operator:model-b" }),
    )
    .await
    .expect(200);
    eventually(ONLINE, || async {
        (restarts(&app, &id).await == 1).then_some(())
    })
    .await;
    // The cycle's row is written as it begins: wait until it finished (claim released, the
    // new agent online), not merely until the workspace reads online.
    app.wait_settled(&id, ONLINE).await;
    let env = agent_env(&app, runtime, &id);
    assert!(
        env.contains(&"MODEL=operator:model-b".to_owned()),
        "{env:?}"
    );
    assert_eq!(decisions_with(&app, &id, "secrets_changed").await, 1);

    // Back online, the agent is told it was restarted and which keys it has now: MODEL by
    // name, as set since its previous session, and never its value.
    let context = eventually(ONLINE, || async {
        restart_contexts(&app, &id).await.into_iter().next()
    })
    .await;
    let message = &context["request_body"]["params"]["message"];
    let text = message["parts"][0]["text"].as_str().unwrap_or_default();
    assert!(text.contains("Your workspace was restarted at"), "{text}");
    assert!(text.contains("and was last heard from at"), "{text}");
    assert!(
        text.contains("Set or changed since your previous session started: MODEL"),
        "{text}"
    );
    assert!(
        message["metadata"]["env_keys"]
            .as_array()
            .is_some_and(|keys| keys.contains(&json!("MODEL"))),
        "{context}"
    );
    // MODEL was set during the previous session, which never had it. (MODEL_PROVIDER, set at
    // creation, may be marked too: uptimes are whole seconds, and a key set in the second
    // before a session started is counted as one it lacked.)
    assert!(
        message["metadata"]["changed_env_keys"]
            .as_array()
            .is_some_and(|keys| keys.contains(&json!("MODEL"))),
        "{context}"
    );
    assert_eq!(context["source_id"], Value::Null);
    assert_eq!(
        context["summary"],
        "message/send from system:restart-context → Modelled"
    );
    assert!(
        !context.to_string().contains("operator:model-b"),
        "{context}"
    );
    // The reference agent answers it like any message.
    assert_eq!(context["status"], "ok", "{context}");
}

async fn without_a_runtime_file_operations_answer_503_and_nothing_is_written(backend: DbBackend) {
    let app = TestApp::spawn(backend).await;
    let id = app.create_workspace("Nowhere", None).await;
    let refused = app
        .put(
            &format!("/workspaces/{id}/files/config.yaml"),
            json!({ "content": "name: x" }),
        )
        .await
        .expect(503);
    assert_eq!(
        refused["error"],
        "workspace offline — retry after it starts"
    );
    app.put(
        &format!("/workspaces/{id}/files"),
        json!({ "files": { "a.md": "a" } }),
    )
    .await
    .expect(503);
    // Paths are checked at the edge, before anything else.
    app.put(
        &format!("/workspaces/{id}/files"),
        json!({ "files": { "../escape.md": "a" } }),
    )
    .await
    .expect(400);
    let too_many: serde_json::Map<String, Value> =
        (0..201).map(|n| (format!("f{n}.md"), json!("x"))).collect();
    let refused = app
        .put(
            &format!("/workspaces/{id}/files"),
            json!({ "files": too_many }),
        )
        .await
        .expect(400);
    assert_eq!(refused["error"], "too many files (201), max 200");
    app.get(&format!("/workspaces/{id}/files?depth=9"))
        .await
        .expect(400);
    app.get(&format!("/workspaces/{id}/files?root=/etc"))
        .await
        .expect(400);
    app.post(&format!("/workspaces/{id}/restart"), json!({}))
        .await
        .expect(503);
}

async fn bootstrap_failed_moves_a_provisioning_workspace_to_failed_once(backend: DbBackend) {
    let app = TestApp::spawn(backend).await;
    let id = app.create_workspace("Boot", None).await;
    let path = format!("/admin/workspaces/{id}/bootstrap-failed");
    let body = json!({ "error": "pip install failed\n", "log_tail": "line 1\nline 2" });
    app.anonymous().post(&path, body.clone()).await.expect(401);
    assert_eq!(
        app.post(&path, body.clone()).await.expect(200),
        json!({ "ok": true })
    );
    let row = listed(&app, &id).await;
    assert_eq!(row["status"], "failed");
    assert_eq!(row["last_sample_error"], "pip install failed ");
    assert_eq!(
        app.post(&path, body).await.expect(200),
        json!({ "ok": true, "no_change": true })
    );
    let events = app.get(&format!("/events/{id}")).await.expect(200);
    let failed: Vec<&Value> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_type"] == "WORKSPACE_PROVISION_FAILED")
        .collect();
    assert_eq!(failed.len(), 1, "{events}");
}

async fn a_template_is_delivered_with_inner_symlinks_followed_and_scripts_normalised(
    runtime: Runtime,
    backend: DbBackend,
) {
    let templates = tempfile::tempdir().unwrap();
    let root = templates.path().join("researcher");
    std::fs::create_dir_all(root.join("shared/skills/search")).unwrap();
    std::fs::write(
        root.join("config.yaml"),
        "name: Researcher Bot\r\ndescription: finds things\r\n",
    )
    .unwrap();
    std::fs::write(
        root.join("shared/skills/search/SKILL.md"),
        "---\r\nname: Search\r\n---\r\nLook it up.\r\n",
    )
    .unwrap();
    std::fs::write(root.join("setup.sh"), "echo ready\r\n").unwrap();
    std::os::unix::fs::symlink("shared/skills", root.join("skills")).unwrap();
    let dir = templates.path().to_path_buf();
    let app = TestApp::spawn_with(backend, |c| {
        runtime.configure(c);
        c.runtime.templates_dir = Some(dir);
    })
    .await;
    let created = app
        .post(
            "/workspaces",
            json!({ "name": "R1", "template": "researcher" }),
        )
        .await
        .expect(201);
    let id = created["id"].as_str().unwrap().to_owned();
    wait_online(&app, &id).await;
    assert_eq!(
        reply_text(&ask(&app, &id, "hi").await),
        "Researcher Bot: hi"
    );
    let skill = app
        .get(&format!("/workspaces/{id}/files/skills/search/SKILL.md"))
        .await
        .expect(200);
    assert_eq!(skill["content"], "---\nname: Search\n---\nLook it up.\n");
    let script = app
        .get(&format!("/workspaces/{id}/files/setup.sh"))
        .await
        .expect(200);
    assert_eq!(script["content"], "echo ready\n");

    // A template with a link out of its root is refused, and the workspace fails cleanly.
    let evil = templates.path().join("evil");
    std::fs::create_dir_all(&evil).unwrap();
    std::os::unix::fs::symlink("/etc", evil.join("etc")).unwrap();
    let created = app
        .post("/workspaces", json!({ "name": "E1", "template": "evil" }))
        .await
        .expect(201);
    let bad = created["id"].as_str().unwrap().to_owned();
    let failed = wait_status(&app, &bad, "failed").await;
    assert!(
        failed["last_sample_error"]
            .as_str()
            .unwrap()
            .contains("escapes its root"),
        "{failed}"
    );
}

mod process_only {
    use super::*;
    use molecule_e2e::process_runtime;

    /// Production refuses loopback agent URLs, except the one the host's own runtime assigned:
    /// local agents register there, and A2A reaches them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_production_host_runs_local_agents_on_the_loopback_urls_it_assigned() {
        let app = TestApp::spawn_with(DbBackend::Sqlite, |c| {
            process_runtime(c);
            c.env = molecule_host::config::Environment::Production;
            c.secrets_encryption_key = Some("0123456789abcdef0123456789abcdef".to_owned().into());
        })
        .await;
        let id = app.create_workspace("Local", None).await;
        wait_online(&app, &id).await;
        let assigned = row(&app, &id).await["url"].as_str().unwrap().to_owned();
        assert!(assigned.starts_with("http://127.0.0.1:"), "{assigned}");
        let reply = app
            .post(
                &format!("/workspaces/{id}/a2a"),
                json!({ "params": { "message": { "content": "hello" } } }),
            )
            .await
            .expect(200);
        assert!(
            reply["result"]["parts"][0]["text"]
                .as_str()
                .is_some_and(|t| t.ends_with("hello")),
            "{reply}"
        );

        // Any other loopback URL is still refused.
        let elsewhere = json!({ "id": id, "url": "http://127.0.0.1:9/a2a" });
        let refused = app.post("/registry/register", elsewhere).await.expect(400);
        assert_eq!(
            refused["error"],
            "agent url points at a blocked address range"
        );
        assert_eq!(row(&app, &id).await["url"], assigned.as_str());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_start_failure_marks_the_workspace_failed_with_a_clean_reason() {
        let app = TestApp::spawn_with(DbBackend::Sqlite, |c| {
            process_runtime(c);
            c.runtime.agent_binary = Some("/nonexistent/molecule-agent".into());
        })
        .await;
        let id = app.create_workspace("Doomed", None).await;
        let failed = wait_status(&app, &id, "failed").await;
        let reason = failed["last_sample_error"].as_str().unwrap();
        assert!(reason.starts_with("workspace start failed"), "{reason}");
        let events = app.get(&format!("/events/{id}")).await.expect(200);
        assert!(
            events
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["event_type"] == "WORKSPACE_PROVISION_FAILED")
        );
    }

    /// Writes an executable shell script `name` with `body` into `dir`.
    fn script(dir: &std::path::Path, name: &str, body: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        path
    }

    /// The port the host chose can be taken before the agent binds it (by any program, an
    /// outgoing connection included). The agent then exits at once; the host sees that and
    /// starts it again on another port instead of waiting out the provision timeout.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_agent_whose_port_was_taken_is_started_again_on_another() {
        let bin = tempfile::tempdir().unwrap();
        // The first start fails the way the agent does when its port is taken; later ones
        // run the real agent. The script keeps its notes in the agent's own directory (its
        // working directory, kept across starts): its sandbox allows nothing else.
        let real = molecule_e2e::agent_binary();
        let agent = script(
            bin.path(),
            "agent",
            &format!(
                "echo \"$MOLECULE_AGENT_LISTEN\" >> ports\n\
                 if [ \"$(wc -l < ports)\" -eq 1 ]; then\n\
                 echo \"Error: binding $MOLECULE_AGENT_LISTEN\" >&2\n\
                 echo \"Caused by: Address already in use (os error 98)\" >&2\n\
                 exit 1\nfi\nexec {real}\n",
                real = real.display(),
            ),
        );
        let app = TestApp::spawn_with(DbBackend::Sqlite, |c| {
            process_runtime(c);
            c.runtime.agent_binary = Some(agent);
            // The script runs the real agent, which the sandbox must then let it execute.
            c.runtime.process_readonly_paths = vec![real.parent().unwrap().display().to_string()];
        })
        .await;
        let id = app.create_workspace("Retried", None).await;
        let online = wait_online(&app, &id).await;
        let ports = app
            .data_dir()
            .join(format!("workspaces/{id}/configs/ports"));
        let tried: Vec<String> = std::fs::read_to_string(&ports)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        assert_eq!(tried.len(), 2, "{tried:?}");
        assert_ne!(tried[0], tried[1], "another port the second time");
        assert_eq!(
            online["url"],
            format!("http://{}", tried[1]),
            "the URL is the second port's"
        );
    }

    /// An agent that dies before it listens fails its workspace at once, with its last words,
    /// instead of leaving it `provisioning` until the timeout.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_agent_that_exits_at_start_fails_its_workspace_at_once() {
        let bin = tempfile::tempdir().unwrap();
        let agent = script(
            bin.path(),
            "agent",
            "echo 'config.yaml: no model configured' >&2\nexit 3\n",
        );
        let app = TestApp::spawn_with(DbBackend::Sqlite, |c| {
            process_runtime(c);
            c.runtime.agent_binary = Some(agent);
            c.runtime.provision_timeout_secs = 3600;
        })
        .await;
        let id = app.create_workspace("Doomed", None).await;
        let failed = wait_status(&app, &id, "failed").await;
        let reason = failed["last_sample_error"].as_str().unwrap();
        assert!(
            reason.contains("the agent exited with code 3 before it listened")
                && reason.contains("no model configured"),
            "{reason}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_workspace_whose_agent_never_registers_fails_at_the_provision_timeout() {
        let bin = tempfile::tempdir().unwrap();
        let script = bin.path().join("silent-agent");
        std::fs::write(&script, "#!/bin/sh\nexec sleep 300\n").unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let app = TestApp::spawn_with(DbBackend::Sqlite, |c| {
            process_runtime(c);
            c.runtime.agent_binary = Some(script.clone());
            c.runtime.provision_timeout_secs = 2;
        })
        .await;
        let id = app.create_workspace("Silent", None).await;
        let failed = wait_status(&app, &id, "failed").await;
        assert!(
            failed["last_sample_error"]
                .as_str()
                .unwrap()
                .starts_with("provisioning timed out"),
            "{failed}"
        );
        let events = app.get(&format!("/events/{id}")).await.expect(200);
        let event = events
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["event_type"] == "WORKSPACE_PROVISION_FAILED")
            .cloned()
            .expect("a failure event");
        assert_eq!(
            event["payload"]["source"], "provision_timeout_sweep",
            "{event}"
        );
        assert_eq!(event["payload"]["timeout_secs"], 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn twenty_manual_restarts_at_once_cost_at_most_two_cycles() {
        let app = TestApp::spawn_with(DbBackend::Sqlite, process_runtime).await;
        let id = app.create_workspace("Busy", None).await;
        wait_online(&app, &id).await;
        let requests = (0..20).map(|_| {
            let (app, id) = (&app, &id);
            async move {
                app.post(&format!("/workspaces/{id}/restart"), json!({}))
                    .await
                    .expect(200)
            }
        });
        let answers = futures::future::join_all(requests).await;
        let coalesced = answers.iter().filter(|a| a["coalesced"] == true).count();
        assert!(coalesced >= 18, "{answers:?}");
        let cycles = settled_restarts(&app, &id, 1, Duration::from_secs(2)).await;
        assert!((1..=2).contains(&cycles), "{cycles} cycles");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn host_shutdown_leaves_no_agent_process_behind() {
        let mut app = TestApp::spawn_with(DbBackend::Sqlite, process_runtime).await;
        let id = app.create_workspace("Child", None).await;
        wait_online(&app, &id).await;
        let proc_dir = format!("/proc/{}", agent_pid(&app, &id));
        assert!(std::path::Path::new(&proc_dir).exists());
        app.stop().await.expect("clean stop");
        assert!(
            !std::path::Path::new(&proc_dir).exists(),
            "the agent outlived the host"
        );
    }
}

mod docker_only {
    use super::*;
    use molecule_e2e::docker_runtime;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tier_limits_are_applied_to_the_container() {
        let app = TestApp::spawn_with(DbBackend::Sqlite, docker_runtime).await;
        let t2 = app
            .post("/workspaces", json!({ "name": "T2", "tier": 2 }))
            .await
            .expect(201)["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let t1 = app
            .post("/workspaces", json!({ "name": "T1", "tier": 1 }))
            .await
            .expect(201)["id"]
            .as_str()
            .unwrap()
            .to_owned();
        wait_online(&app, &t2).await;
        wait_online(&app, &t1).await;
        let inspect = |id: &str, format: &str| {
            docker(&["inspect", "--format", format, &format!("ws-{}", id12(id))])
        };
        assert_eq!(
            inspect(&t2, "{{.HostConfig.Memory}}"),
            (512u64 * 1024 * 1024).to_string()
        );
        assert_eq!(inspect(&t2, "{{.HostConfig.NanoCpus}}"), "1000000000");
        assert_eq!(
            inspect(&t1, "{{.HostConfig.Memory}}"),
            (256u64 * 1024 * 1024).to_string()
        );
        assert_eq!(inspect(&t1, "{{.HostConfig.ReadonlyRootfs}}"), "true");
        assert_eq!(inspect(&t2, "{{.HostConfig.RestartPolicy.Name}}"), "no");
        assert_eq!(
            inspect(
                &t2,
                "{{index .Config.Labels \"molecule.platform.managed\"}}"
            ),
            "true"
        );
        assert_eq!(
            inspect(&t2, "{{index .Config.Labels \"molecule.workspace.id\"}}"),
            t2
        );
        let ports = inspect(&t2, "{{json .HostConfig.PortBindings}}");
        assert!(ports.contains("127.0.0.1"), "{ports}");
    }
}
