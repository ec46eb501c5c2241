//! A2A proxy overhead (process runtime; SQLite, then PostgreSQL): `wrk` POSTs one JSON-RPC
//! `message/send` to the same echo agent (the reference agent's default brain) directly, through
//! nginx (Debian's, started here on 127.0.0.1 with upstream keepalive), and through the host's
//! `POST /workspaces/{id}/a2a`, which also checks the caller, looks up the route and records one
//! activity row per call. Two more host paths go through the same table: a message to a busy agent
//! (an external workspace whose agent closes every connection at once, so each call is queued
//! durably and answered 202; every message carries its own id, so none is folded into another),
//! and `POST /workspaces/{id}/delegate` (a delegation row, answered 202, then carried out to the
//! echo agent in the background while the load goes on). Each target gets a warm-up run, then a
//! measured one; the tables give p50/p90/p99 and req/s per target, and each host path's ratios
//! to nginx against the goals (p50 ≤ 1.2×, p99 ≤ 2×, throughput ≥ 0.8×). A last table gives
//! each path's CPU per call, of the proxy (nginx's processes, or the host's: this process) and of
//! the agent, which moves little with how busy the machine is where throughput moves ±20 %. On
//! PostgreSQL the database server's CPU is not counted.
//!
//! Every answer must be 2xx (a fast error is not a result): the bench fails otherwise, after
//! printing its tables. `wrk` and `nginx` come from `make bench-tools` and the PostgreSQL from
//! `make pg` (`make bench` runs both); without them the bench fails rather than skipping. Every
//! child it starts is stopped by a guard, on panic too.

use std::time::{Duration, Instant};

use molecule_e2e::load::{
    EACH_REQUEST, Stats, descendants, process_cpu, run_wrk, start_nginx, tool, total_cpu,
    wrk_script,
};
use molecule_e2e::{ADMIN_TOKEN, DbBackend, Runtime, TestApp, eventually, free_port};
use serde_json::{Value, json};

const BODY: &str = r#"{"jsonrpc":"2.0","id":"1","method":"message/send","params":{"message":{"role":"user","messageId":"bench","parts":[{"kind":"text","text":"ping"}]}}}"#;
/// [`BODY`] with a message id of its own per request (a queued message is idempotent by it).
const BODY_EACH: &str = r#"{"jsonrpc":"2.0","id":"1","method":"message/send","params":{"message":{"role":"user","messageId":"bench-@ID@","parts":[{"kind":"text","text":"ping"}]}}}"#;
const CONNECTIONS: u32 = 16;
const WARMUP: Duration = Duration::from_secs(2);
const MEASURED: Duration = Duration::from_secs(10);
const ONLINE: Duration = Duration::from_secs(60);
/// How long nginx may take to start answering.
const NGINX_READY: Duration = Duration::from_secs(10);

/// The goals, host over nginx: p50, p99 at most, throughput at least.
const GOAL_P50: f64 = 1.2;
const GOAL_P99: f64 = 2.0;
const GOAL_RPS: f64 = 0.8;

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

/// An agent that is always busy: it reads each request and closes the connection without an
/// answer, which the host reads as "busy" and answers by queueing the message. (Closing before
/// reading would make the close a reset that can race the host's write.)
async fn busy_agent() -> String {
    use tokio::io::AsyncReadExt as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding the busy agent");
    let url = format!("http://{}", listener.local_addr().expect("an address"));
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
            });
        }
    });
    url
}

/// One host path measured against nginx.
struct Row {
    name: &'static str,
    stats: Stats,
    /// CPU per call (µs) of what stands between wrk and the agent: nginx's processes, or the
    /// host's (the bench's own process, idle meanwhile); none for the agent direct.
    proxy_cpu: Option<f64>,
    /// CPU per call (µs) of the agent's process.
    agent_cpu: f64,
}

fn main() {
    // Both tools first: a missing one fails before anything starts.
    let wrk = tool("wrk");
    let nginx = tool("nginx");
    assert!(
        molecule_host::config::test_postgres_url().is_some(),
        "MOLECULE_TEST_PG_URL is not set: run `make bench` (it starts the private PostgreSQL)"
    );
    let mut tables = Vec::new();
    for backend in [DbBackend::Sqlite, DbBackend::Postgres] {
        tables.push((backend, measure(&wrk, &nginx, backend)));
    }
    let mut failed = Vec::new();
    for (backend, rows) in &tables {
        let backend = backend.name();
        println!(
            "\nA2A on {backend}, wrk 2 threads x {CONNECTIONS} connections, {}s each after a {}s warm-up",
            MEASURED.as_secs(),
            WARMUP.as_secs()
        );
        println!(
            "{:<24} {:>10} {:>10} {:>10} {:>10} {:>10} {:>9} {:>8}",
            "target", "p50", "p75", "p90", "p99", "req/s", "requests", "non-2xx"
        );
        for Row { name, stats: s, .. } in rows {
            println!(
                "{:<24} {:>10} {:>10} {:>10} {:>10} {:>10.0} {:>9} {:>8}",
                name,
                ms(s.p50),
                ms(s.p75),
                ms(s.p90),
                ms(s.p99),
                s.rps,
                s.requests,
                s.not_ok() + s.socket_errors
            );
            if s.not_ok() + s.socket_errors > 0 {
                failed.push(format!(
                    "{backend} {name}: statuses {:?}, socket errors {}",
                    s.statuses, s.socket_errors
                ));
            }
        }
        let nginx = &rows[1].stats;
        println!(
            "{:<24} {:>16} {:>16} {:>18}",
            "host path / nginx",
            format!("p50 (≤{GOAL_P50})"),
            format!("p99 (≤{GOAL_P99})"),
            format!("req/s (≥{GOAL_RPS})")
        );
        for Row {
            name, stats: host, ..
        } in &rows[2..]
        {
            let verdict = |ratio: f64, met: bool| {
                format!("x{ratio:.2} {}", if met { "met" } else { "MISSED" })
            };
            let (p50, p99, rps) = (
                host.p50 / nginx.p50,
                host.p99 / nginx.p99,
                host.rps / nginx.rps,
            );
            println!(
                "{:<24} {:>16} {:>16} {:>18}",
                name,
                verdict(p50, p50 <= GOAL_P50),
                verdict(p99, p99 <= GOAL_P99),
                verdict(rps, rps >= GOAL_RPS)
            );
        }
        // CPU per call moves little with the machine's speed, unlike throughput.
        let nginx_cpu = rows[1].proxy_cpu.unwrap_or(f64::NAN);
        println!(
            "{:<24} {:>16} {:>16} {:>18}",
            "CPU per call", "proxy", "agent", "proxy / nginx"
        );
        for row in rows {
            let proxy = row.proxy_cpu;
            println!(
                "{:<24} {:>16} {:>16} {:>18}",
                row.name,
                proxy.map_or("-".to_owned(), |us| format!("{us:.0} us")),
                format!("{:.0} us", row.agent_cpu),
                proxy.map_or("-".to_owned(), |us| format!("x{:.2}", us / nginx_cpu)),
            );
        }
    }
    assert!(
        failed.is_empty(),
        "answers other than 2xx make these figures no result:\n{}",
        failed.join("\n")
    );
}

/// The five targets on one backend: the agent directly, nginx, and the host's three paths.
fn measure(wrk: &std::path::Path, nginx: &std::path::Path, backend: DbBackend) -> Vec<Row> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (mut app, id, busy_id, agent_url) = runtime.block_on(async {
        let app = TestApp::spawn_with(backend, |c| Runtime::Process.configure(c)).await;
        let id = app.create_workspace("bench", None).await;
        let url = eventually(ONLINE, || async {
            let row = app.get(&format!("/workspaces/{id}")).await.body;
            (row["status"] == "online")
                .then(|| row["url"].as_str().map(str::to_owned))
                .flatten()
        })
        .await;
        let busy = busy_agent().await;
        let created = app
            .post(
                "/workspaces",
                json!({ "name": "busy", "external": true, "url": busy }),
            )
            .await
            .expect(201);
        let busy_id = created["id"].as_str().expect("an id").to_owned();
        (app, id, busy_id, url)
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
    let mut nginx_guard = start_nginx(nginx, dir.path(), nginx_port, std::slice::from_ref(&agent));
    let nginx_url = format!("http://127.0.0.1:{nginx_port}/");
    let host_url = app.url(&format!("/workspaces/{id}/a2a"));
    let busy_url = app.url(&format!("/workspaces/{busy_id}/a2a"));
    let delegate_url = app.url(&format!("/workspaces/{busy_id}/delegate"));
    let delegate_body = json!({ "target_id": id, "task": "ping" }).to_string();

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

    let script = |name: &str, body: &str, auth: Option<&str>| {
        let path = dir.path().join(name);
        std::fs::write(&path, wrk_script("POST", Some(body), auth)).expect("writing a wrk script");
        path
    };
    assert!(BODY_EACH.contains(EACH_REQUEST));
    let plain = script("plain.lua", BODY, None);
    let host = script("host.lua", BODY, Some(ADMIN_TOKEN));
    let busy = script("busy.lua", BODY_EACH, Some(ADMIN_TOKEN));
    let delegate = script("delegate.lua", &delegate_body, Some(ADMIN_TOKEN));
    let targets = [
        ("agent direct", &direct_url, &plain),
        ("nginx -> agent", &nginx_url, &plain),
        ("host /a2a -> agent", &host_url, &host),
        ("host /a2a, busy: queued", &busy_url, &busy),
        ("host /delegate", &delegate_url, &delegate),
    ];
    // Whose CPU each row counts: nginx's master and workers; the agent (every other child of
    // this process: the host runs in it and starts the agent); the host is this process.
    let me = std::process::id();
    let nginx_pids: Vec<u32> = nginx_guard
        .id()
        .into_iter()
        .flat_map(|pid| std::iter::once(pid).chain(descendants(pid)))
        .collect();
    let agent_pids: Vec<u32> = descendants(me)
        .into_iter()
        .filter(|pid| !nginx_pids.contains(pid))
        .collect();
    assert!(!agent_pids.is_empty(), "the agent's process was not found");
    let cpu = || {
        (
            process_cpu(me).unwrap_or_default(),
            total_cpu(&nginx_pids),
            total_cpu(&agent_pids),
        )
    };
    let mut rows = Vec::new();
    for (index, (name, url, script)) in targets.into_iter().enumerate() {
        eprintln!(
            "a2a_proxy ({}): {name} ({url}): {WARMUP:?} warm-up, then {MEASURED:?}",
            backend.name()
        );
        run_wrk(wrk, script, url, WARMUP, CONNECTIONS);
        let (host_before, nginx_before, agent_before) = cpu();
        let stats = run_wrk(wrk, script, url, MEASURED, CONNECTIONS);
        let (host_after, nginx_after, agent_after) = cpu();
        let per_call = |used: Duration| used.as_secs_f64() * 1e6 / stats.requests.max(1) as f64;
        let proxy_cpu = match index {
            0 => None,
            1 => Some(per_call(nginx_after.saturating_sub(nginx_before))),
            _ => Some(per_call(host_after.saturating_sub(host_before))),
        };
        let agent_cpu = per_call(agent_after.saturating_sub(agent_before));
        rows.push(Row {
            name,
            stats,
            proxy_cpu,
            agent_cpu,
        });
    }
    drop(nginx_guard);
    runtime
        .block_on(app.stop())
        .expect("the host stops cleanly");
    rows
}
