//! A2A proxy overhead (process runtime, SQLite): `wrk` POSTs one JSON-RPC `message/send` to the
//! same echo agent (the reference agent's default brain) three ways: directly, through nginx
//! (Debian's, started here on 127.0.0.1 with upstream keepalive), and through the host's
//! `POST /workspaces/{id}/a2a`, which also looks up the workspace, checks the caller and records
//! one activity row per call. Each target gets a warm-up run, then a measured one; the table gives
//! p50/p90/p99 and req/s per target and the host/direct and host/nginx ratios.
//!
//! `wrk` and `nginx` come from `make bench-tools` (`make bench` runs it); without them the bench
//! fails rather than skipping. Every child it starts is stopped by a guard, on panic too.

use std::time::{Duration, Instant};

use molecule_e2e::load::{run_wrk, start_nginx, tool, wrk_script};
use molecule_e2e::{ADMIN_TOKEN, DbBackend, Runtime, TestApp, eventually, free_port};
use serde_json::Value;

const BODY: &str = r#"{"jsonrpc":"2.0","id":"1","method":"message/send","params":{"message":{"role":"user","messageId":"bench","parts":[{"kind":"text","text":"ping"}]}}}"#;
const CONNECTIONS: u32 = 16;
const WARMUP: Duration = Duration::from_secs(2);
const MEASURED: Duration = Duration::from_secs(10);
const ONLINE: Duration = Duration::from_secs(60);
/// How long nginx may take to start answering.
const NGINX_READY: Duration = Duration::from_secs(10);

/// One `message/send` through `url`: it must answer 200 with a JSON-RPC result.
async fn check_answers(
    client: &reqwest::Client,
    url: &str,
    auth: Option<&str>,
) -> Result<(), String> {
    let mut request = client
        .post(url)
        .header("Content-Type", "application/json")
        .body(BODY);
    if let Some(token) = auth {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    let text = response.text().await.map_err(|e| e.to_string())?;
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if status.as_u16() == 200 && body["result"].is_object() && body.get("error").is_none() {
        Ok(())
    } else {
        Err(format!("{status}: {text}"))
    }
}

fn ms(micros: f64) -> String {
    format!("{:.2} ms", micros / 1000.0)
}

fn main() {
    // Both tools first: a missing one fails before anything starts.
    let wrk = tool("wrk");
    let nginx = tool("nginx");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (mut app, id, agent_url) = runtime.block_on(async {
        let app = TestApp::spawn_with(DbBackend::Sqlite, |c| Runtime::Process.configure(c)).await;
        let id = app.create_workspace("bench", None).await;
        let url = eventually(ONLINE, || async {
            let row = app.get(&format!("/workspaces/{id}")).await.body;
            (row["status"] == "online")
                .then(|| row["url"].as_str().map(str::to_owned))
                .flatten()
        })
        .await;
        (app, id, url)
    });
    let agent = agent_url
        .strip_prefix("http://")
        .map(|a| a.trim_end_matches('/'))
        .filter(|a| a.starts_with("127.0.0.1:"))
        .unwrap_or_else(|| panic!("the agent's URL {agent_url:?} is not http://127.0.0.1:<port>"))
        .to_owned();
    let direct_url = format!("http://{agent}/");

    let dir = tempfile::tempdir().expect("a temp dir");
    let nginx_port = free_port();
    let mut nginx_guard = start_nginx(&nginx, dir.path(), nginx_port, std::slice::from_ref(&agent));
    let nginx_url = format!("http://127.0.0.1:{nginx_port}/");
    let host_url = app.url(&format!("/workspaces/{id}/a2a"));

    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("a client");
        check_answers(&client, &direct_url, None)
            .await
            .unwrap_or_else(|e| panic!("the agent at {direct_url} does not answer: {e}"));
        let started = Instant::now();
        loop {
            match check_answers(&client, &nginx_url, None).await {
                Ok(()) => break,
                Err(e) => {
                    let log =
                        std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
                    if let Some(status) = nginx_guard.exited() {
                        panic!("nginx exited ({status}) before answering: {log}");
                    }
                    assert!(
                        started.elapsed() < NGINX_READY,
                        "nginx does not answer at {nginx_url}: {e}\n{log}"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        check_answers(&client, &host_url, Some(ADMIN_TOKEN))
            .await
            .unwrap_or_else(|e| panic!("the host's proxy at {host_url} does not answer: {e}"));
    });

    let scripts = [("plain.lua", None), ("host.lua", Some(ADMIN_TOKEN))].map(|(name, auth)| {
        let path = dir.path().join(name);
        std::fs::write(&path, wrk_script("POST", Some(BODY), auth)).expect("writing a wrk script");
        path
    });
    let targets = [
        ("agent direct", &direct_url, &scripts[0]),
        ("nginx -> agent", &nginx_url, &scripts[0]),
        ("host /a2a -> agent", &host_url, &scripts[1]),
    ];
    let mut results = Vec::new();
    for (name, url, script) in targets {
        eprintln!("a2a_proxy: {name} ({url}): {WARMUP:?} warm-up, then {MEASURED:?}");
        run_wrk(&wrk, script, url, WARMUP, CONNECTIONS);
        results.push((name, run_wrk(&wrk, script, url, MEASURED, CONNECTIONS)));
    }
    drop(nginx_guard);
    runtime
        .block_on(app.stop())
        .expect("the host stops cleanly");

    println!(
        "\nA2A message/send, wrk 2 threads x {CONNECTIONS} connections, {}s each after a {}s warm-up",
        MEASURED.as_secs(),
        WARMUP.as_secs()
    );
    println!(
        "{:<20} {:>10} {:>10} {:>10} {:>10} {:>10} {:>9} {:>8}",
        "target", "p50", "p75", "p90", "p99", "req/s", "requests", "errors"
    );
    for (name, s) in &results {
        println!(
            "{:<20} {:>10} {:>10} {:>10} {:>10} {:>10.0} {:>9} {:>8}",
            name,
            ms(s.p50),
            ms(s.p75),
            ms(s.p90),
            ms(s.p99),
            s.rps,
            s.requests,
            s.not_ok() + s.socket_errors
        );
    }
    let (direct, proxied, host) = (&results[0].1, &results[1].1, &results[2].1);
    for (label, base) in [("host/direct", direct), ("host/nginx", proxied)] {
        println!(
            "{label:<12} latency p50 x{:.2}, p99 x{:.2}; throughput x{:.2}",
            host.p50 / base.p50,
            host.p99 / base.p99,
            host.rps / base.rps
        );
    }
    for (name, s) in &results {
        if s.not_ok() + s.socket_errors > 0 {
            println!(
                "{name}: statuses {:?}, socket errors {}",
                s.statuses, s.socket_errors
            );
        }
    }
}
