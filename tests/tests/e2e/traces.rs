//! Traces across delegations: a task handed down three levels of real agents is one trace,
//! continued from the caller's `traceparent`, whose spans cover the host and every agent, kept
//! by the host (`GET /workspaces/{id}/traces`) and exported to an OTLP collector the spec
//! starts. Without a collector the host still keeps them; reads are traced only when asked to;
//! agents' span uploads are filed under their own workspace whatever they claim. Who may call
//! the routes is the route table's spec (`security_routes`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use molecule_e2e::otlp::OtlpReceiver;
use molecule_e2e::{
    DbBackend, Fault, FaultAgent, Runtime, TestApp, eventually, on_both_backends, on_both_runtimes,
};
use reqwest::Method;
use serde_json::{Value, json};

on_both_runtimes!(a_three_level_delegation_is_one_trace_across_the_host_and_its_agents);
on_both_backends!(
    the_host_keeps_traces_without_a_collector_and_traces_reads_only_when_asked,
    an_agents_spans_are_taken_as_otlp_and_filed_under_its_own_workspace
);

const ONLINE: Duration = Duration::from_secs(120);
/// Agents send their spans about once a second.
const SPANS_ARRIVE: Duration = Duration::from_secs(30);

fn message(text: &str) -> Value {
    json!({ "jsonrpc": "2.0", "id": 1, "method": "message/send",
        "params": { "message": { "role": "user", "parts": [{ "kind": "text", "text": text }] } } })
}

async fn wait_online(app: &TestApp, id: &str) {
    eventually(ONLINE, || async {
        let row = app.get(&format!("/workspaces/{id}")).await.body;
        (row["status"] == "online").then_some(())
    })
    .await;
}

/// A fresh trace id and a caller's span id, as hex.
fn caller_context() -> (String, String) {
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let span_id = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
    (trace_id, span_id)
}

async fn trace(app: &TestApp, workspace: &str, trace_id: &str) -> Option<Value> {
    let page = app
        .get(&format!(
            "/workspaces/{workspace}/traces?trace_id={trace_id}"
        ))
        .await
        .expect(200);
    page["traces"].as_array()?.first().cloned()
}

fn spans(trace: &Value) -> &Vec<Value> {
    trace["spans"].as_array().expect("spans")
}

/// How many spans of each name.
fn names(trace: &Value) -> BTreeMap<String, usize> {
    let mut names = BTreeMap::new();
    for span in spans(trace) {
        *names
            .entry(span["name"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    names
}

async fn a_three_level_delegation_is_one_trace_across_the_host_and_its_agents(
    runtime: Runtime,
    backend: DbBackend,
) {
    let collector = OtlpReceiver::start().await;
    let endpoint = collector.endpoint.clone();
    let app = TestApp::spawn_with(backend, |c| {
        runtime.configure(c);
        c.otel.endpoint = Some(endpoint);
    })
    .await;
    let root = app.create_workspace("root", None).await;
    let mid = app.create_workspace("mid", Some(&root)).await;
    let leaf = app.create_workspace("leaf", Some(&mid)).await;
    for id in [&root, &mid, &leaf] {
        wait_online(&app, id).await;
    }
    let (trace_id, caller_span) = caller_context();
    let traceparent = format!("00-{trace_id}-{caller_span}-01");

    let reply = app
        .call(
            Method::POST,
            &format!("/workspaces/{root}/a2a"),
            Some(message(&format!("delegate {mid}: delegate {leaf}: hello"))),
            &[("traceparent", traceparent.as_str())],
        )
        .await;
    assert_eq!(
        reply.headers["x-trace-id"].to_str().unwrap(),
        trace_id,
        "the caller's trace goes on"
    );
    let answer = reply.expect(200);
    assert_eq!(
        answer["result"]["parts"][0]["text"],
        format!("delegated to {mid}: delegated to {leaf}: leaf: hello"),
        "{answer}"
    );

    // The host's own view, once every agent has sent its spans.
    let agents_of = |trace: &Value, name: &str| -> BTreeSet<String> {
        spans(trace)
            .iter()
            .filter(|s| s["reported_by"] == "agent" && s["name"] == name)
            .map(|s| s["workspace_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let everyone: BTreeSet<String> = [&root, &mid, &leaf].into_iter().cloned().collect();
    let seen = eventually(SPANS_ARRIVE, || async {
        let seen = trace(&app, &root, &trace_id).await?;
        let complete = agents_of(&seen, "agent message/send") == everyone
            && agents_of(&seen, "mcp tools/call delegate_task").len() == 2;
        complete.then_some(seen)
    })
    .await;
    let counted = names(&seen);
    let expected: BTreeMap<String, usize> = [
        ("POST /workspaces/{id}/a2a", 1),
        ("a2a.forward", 3),
        ("agent message/send", 3),
        ("mcp tools/call delegate_task", 2),
        ("POST /workspaces/{id}/mcp", 2),
        ("delegation", 2),
    ]
    .into_iter()
    .map(|(n, c)| (n.to_owned(), c))
    .collect();
    assert_eq!(counted, expected, "{seen:#}");
    assert_eq!(seen["trace_id"], trace_id.as_str());
    assert_eq!(seen["error"], false);
    // One tree: the request is the caller's child, every other span the child of a span of it.
    let by_id: BTreeMap<&str, &Value> = spans(&seen)
        .iter()
        .map(|s| (s["span_id"].as_str().unwrap(), s))
        .collect();
    for span in spans(&seen) {
        let parent = span["parent_span_id"]
            .as_str()
            .expect("every span has a parent");
        if span["name"] == "POST /workspaces/{id}/a2a" {
            assert_eq!(parent, caller_span, "{span}");
        } else {
            assert!(
                by_id.contains_key(parent),
                "a parent outside the trace: {span}"
            );
        }
    }
    // Each agent handled its message as the child of the host's call to it.
    for span in spans(&seen)
        .iter()
        .filter(|s| s["name"] == "agent message/send")
    {
        let parent = by_id[span["parent_span_id"].as_str().unwrap()];
        assert_eq!(parent["name"], "a2a.forward", "{span}");
        assert_eq!(parent["workspace_id"], span["workspace_id"]);
        assert_eq!(parent["reported_by"], "host");
    }
    // The leaf took part, so the trace is filed under it too.
    let leafs = trace(&app, &leaf, &trace_id)
        .await
        .expect("filed under the leaf");
    assert_eq!(leafs["span_count"], seen["span_count"]);

    // The collector got the same spans, from the host and from each agent.
    let total = spans(&seen).len();
    let exported = eventually(SPANS_ARRIVE, || async {
        let exported = collector.spans_of(&trace_id);
        (exported.len() >= total).then_some(exported)
    })
    .await;
    assert_eq!(exported.len(), total);
    let agent_workspaces: BTreeSet<String> = exported
        .iter()
        .filter(|s| s.service == "molecule-agent")
        .filter_map(|s| s.workspace_id.clone())
        .collect();
    assert_eq!(agent_workspaces, everyone);
    assert_eq!(
        exported
            .iter()
            .filter(|s| s.service == "molecule-host")
            .count(),
        8
    );
    let exported_ids: BTreeSet<&str> = exported.iter().map(|s| s.span_id.as_str()).collect();
    let kept_ids: BTreeSet<&str> = by_id.keys().copied().collect();
    assert_eq!(exported_ids, kept_ids);
    assert_eq!(collector.refused(), 0);

    // A restart is a trace too: the request, then the cycle that stops and starts the agent.
    let restart = app
        .post(&format!("/workspaces/{leaf}/restart"), json!({}))
        .await;
    let restart_trace = restart.headers["x-trace-id"].to_str().unwrap().to_owned();
    assert!(restart.status.is_success(), "{}", restart.text);
    let cycle = eventually(ONLINE, || async {
        let seen = trace(&app, &leaf, &restart_trace).await?;
        spans(&seen)
            .iter()
            .find(|s| s["name"] == "restart.cycle")
            .cloned()
    })
    .await;
    assert_eq!(cycle["attributes"]["molecule.restarted"], "true", "{cycle}");
    assert_eq!(cycle["workspace_id"], leaf.as_str());
    wait_online(&app, &leaf).await;
}

async fn the_host_keeps_traces_without_a_collector_and_traces_reads_only_when_asked(
    backend: DbBackend,
) {
    let app = TestApp::spawn(backend).await;
    let agent = FaultAgent::start(|n| match n {
        0 => Fault::Answer,
        _ => Fault::Status(500, "{}".into()),
    })
    .await;
    let (ws, _) = app.workspace_at("solo", None, &agent.url).await;

    // A call without a traceparent starts a trace; the agent gets the host's span as parent.
    let reply = app
        .call(
            Method::POST,
            &format!("/workspaces/{ws}/a2a"),
            Some(message("hi")),
            &[],
        )
        .await;
    let trace_id = reply.headers["x-trace-id"].to_str().unwrap().to_owned();
    reply.expect(200);
    let seen = trace(&app, &ws, &trace_id).await.expect("kept");
    assert_eq!(seen["name"], "POST /workspaces/{id}/a2a");
    let server = &spans(&seen)[0];
    let forward = &spans(&seen)[1];
    assert_eq!(server["parent_span_id"], Value::Null);
    assert_eq!(server["kind"], "server");
    assert_eq!(server["attributes"]["http.response.status_code"], "200");
    assert_eq!(forward["name"], "a2a.forward");
    assert_eq!(forward["parent_span_id"], server["span_id"]);
    assert_eq!(forward["status"], "unset");
    let sent = agent.traceparents()[0].clone().expect("a traceparent");
    assert_eq!(
        sent,
        format!("00-{trace_id}-{}-01", forward["span_id"].as_str().unwrap()),
        "the agent's parent is the host's call to it"
    );

    // An agent that answers 500: the call's span says so.
    let failed = app
        .call(
            Method::POST,
            &format!("/workspaces/{ws}/a2a"),
            Some(message("again")),
            &[],
        )
        .await;
    let failed_id = failed.headers["x-trace-id"].to_str().unwrap().to_owned();
    let failed = trace(&app, &ws, &failed_id).await.expect("kept");
    assert_eq!(failed["error"], true, "{failed:#}");
    let listed = app
        .get(&format!("/workspaces/{ws}/traces"))
        .await
        .expect(200);
    let ids: Vec<&str> = listed["traces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["trace_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [failed_id.as_str(), trace_id.as_str()], "newest first");

    // A schedule run is a span of the request that fired it, and its call to the agent a span
    // of the run.
    let schedule = app
        .post(
            &format!("/workspaces/{ws}/schedules"),
            json!({ "name": "nightly", "cron_expr": "0 3 * * *", "prompt": "report" }),
        )
        .await
        .expect(201);
    let fired = app
        .post(
            &format!(
                "/workspaces/{ws}/schedules/{}/run",
                schedule["id"].as_str().unwrap()
            ),
            json!({}),
        )
        .await;
    let fired_id = fired.headers["x-trace-id"].to_str().unwrap().to_owned();
    fired.expect(200);
    let fired = trace(&app, &ws, &fired_id).await.expect("kept");
    let chain: Vec<(&str, Option<&str>)> = spans(&fired)
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["parent_span_id"].as_str()))
        .collect();
    assert_eq!(chain.len(), 3, "{fired:#}");
    assert_eq!(
        chain[0].0,
        "POST /workspaces/{id}/schedules/{schedule_id}/run"
    );
    assert_eq!(chain[1].0, "schedule.run");
    assert_eq!(chain[1].1, spans(&fired)[0]["span_id"].as_str());
    assert_eq!(chain[2].0, "a2a.forward");
    assert_eq!(chain[2].1, spans(&fired)[1]["span_id"].as_str());
    assert_eq!(spans(&fired)[1]["attributes"]["molecule.trigger"], "manual");

    // Reads are traced only when the caller asks with a traceparent.
    let read = app.get(&format!("/workspaces/{ws}")).await;
    assert!(read.headers.get("x-trace-id").is_none());
    let (asked, parent) = caller_context();
    let traced_read = app
        .call(
            Method::GET,
            &format!("/workspaces/{ws}"),
            None,
            &[("traceparent", &format!("00-{asked}-{parent}-01"))],
        )
        .await;
    assert_eq!(traced_read.headers["x-trace-id"].to_str().unwrap(), asked);
    // A malformed traceparent starts a new trace instead.
    let malformed = app
        .call(
            Method::POST,
            &format!("/workspaces/{ws}/a2a"),
            Some(message("third")),
            &[("traceparent", "00-abc-def-01")],
        )
        .await;
    // A trace id of its own: 32 hex digits (so not the caller's `abc`, which is none), not the
    // previous call's. (A substring check for `abc` failed once: a fresh random id may hold it.)
    let fresh = malformed.headers["x-trace-id"].to_str().unwrap();
    assert!(
        fresh.len() == 32 && fresh.bytes().all(|b| b.is_ascii_hexdigit()),
        "a new trace id, got {fresh:?}"
    );
    assert_ne!(fresh, asked, "a new trace, not the previous call's");

    // Paging and bad queries.
    let one = app
        .get(&format!("/workspaces/{ws}/traces?limit=1"))
        .await
        .expect(200);
    assert_eq!(one["traces"].as_array().unwrap().len(), 1);
    for bad in ["limit=0", "limit=51", "trace_id=xyz"] {
        app.get(&format!("/workspaces/{ws}/traces?{bad}"))
            .await
            .expect(400);
    }
    let unknown = uuid::Uuid::new_v4();
    app.get(&format!("/workspaces/{unknown}/traces"))
        .await
        .expect(404);
}

async fn an_agents_spans_are_taken_as_otlp_and_filed_under_its_own_workspace(backend: DbBackend) {
    let app = TestApp::spawn(backend).await;
    let agent = FaultAgent::start(|_| Fault::Answer).await;
    let (ws, token) = app.workspace_at("reporter", None, &agent.url).await;
    let (other, _) = app.workspace_at("other", None, &agent.url).await;
    let (trace_id, _) = caller_context();
    // An export in OTLP JSON that claims to come from another workspace, with one span whose
    // ids are malformed.
    let export = json!({ "resourceSpans": [{
        "resource": { "attributes": [
            { "key": "service.name", "value": { "stringValue": "my-agent" } },
            { "key": "molecule.workspace_id", "value": { "stringValue": other } },
        ] },
        "scopeSpans": [{ "spans": [
            { "traceId": trace_id, "spanId": "00f067aa0ba902b7", "name": "think",
              "kind": 1, "startTimeUnixNano": "1700000000000000000",
              "endTimeUnixNano": "1700000000500000000",
              "attributes": [{ "key": "model", "value": { "stringValue": "echo" } }],
              "status": { "code": 2, "message": "the model refused" } },
            { "traceId": "00", "spanId": "00f067aa0ba902b8", "name": "broken",
              "startTimeUnixNano": "1", "endTimeUnixNano": "2" },
        ] }],
    }] });
    let taken = app
        .with_token(&token)
        .post(&format!("/workspaces/{ws}/traces"), export)
        .await
        .expect(200);
    assert_eq!(taken["partialSuccess"]["rejectedSpans"], 1, "{taken}");
    assert!(trace(&app, &other, &trace_id).await.is_none());
    let seen = trace(&app, &ws, &trace_id)
        .await
        .expect("filed under its sender");
    let span = &spans(&seen)[0];
    assert_eq!(span["name"], "think");
    assert_eq!(span["service"], "my-agent");
    assert_eq!(span["reported_by"], "agent");
    assert_eq!(span["workspace_id"], ws.as_str());
    assert_eq!(span["duration_ms"], 500.0);
    assert_eq!(span["status"], "error");
    assert_eq!(span["status_message"], "the model refused");
    assert_eq!(span["attributes"]["model"], "echo");

    // Protobuf too, as an OpenTelemetry SDK's OTLP exporter sends it.
    let (proto_trace, _) = caller_context();
    let request = opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
        resource_spans: vec![opentelemetry_proto::tonic::trace::v1::ResourceSpans {
            scope_spans: vec![opentelemetry_proto::tonic::trace::v1::ScopeSpans {
                spans: vec![opentelemetry_proto::tonic::trace::v1::Span {
                    trace_id: hex::decode(&proto_trace).unwrap(),
                    span_id: vec![7; 8],
                    name: "tool call".into(),
                    start_time_unix_nano: 10,
                    end_time_unix_nano: 20,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let body = prost::Message::encode_to_vec(&request);
    let sent = reqwest::Client::new()
        .post(app.url(&format!("/workspaces/{ws}/traces")))
        .bearer_auth(&token)
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status().as_u16(), 200);
    let seen = trace(&app, &ws, &proto_trace).await.expect("kept");
    assert_eq!(
        spans(&seen)[0]["service"],
        "molecule-agent",
        "no service.name sent"
    );

    // Neither protobuf nor JSON; not an export at all.
    let text = reqwest::Client::new()
        .post(app.url(&format!("/workspaces/{ws}/traces")))
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body("spans")
        .send()
        .await
        .unwrap();
    assert_eq!(text.status().as_u16(), 415);
    app.with_token(&token)
        .post(
            &format!("/workspaces/{ws}/traces"),
            json!({ "resourceSpans": 5 }),
        )
        .await
        .expect(400);
}
