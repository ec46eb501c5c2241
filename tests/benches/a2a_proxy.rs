//! A2A proxy overhead (process runtime, SQLite): `wrk` POSTs one JSON-RPC `message/send` to the
//! same echo agent (the reference agent's default brain) three ways: directly, through nginx
//! (Debian's, started here on 127.0.0.1 with upstream keepalive), and through the host's
//! `POST /workspaces/{id}/a2a`, which also looks up the workspace, checks the caller and records
//! one activity row per call. Each target gets a warm-up run, then a measured one; the table gives
//! p50/p90/p99 and req/s per target and the host/direct and host/nginx ratios.
//!
//! `wrk` and `nginx` come from `make bench-tools` (`make bench` runs it); without them the bench
//! fails rather than skipping. Every child it starts is stopped by a guard, on panic too.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use molecule_e2e::{ADMIN_TOKEN, DbBackend, Runtime, TestApp, eventually, free_port};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

const BODY: &str = r#"{"jsonrpc":"2.0","id":"1","method":"message/send","params":{"message":{"role":"user","messageId":"bench","parts":[{"kind":"text","text":"ping"}]}}}"#;
const THREADS: u32 = 2;
const CONNECTIONS: u32 = 16;
const WARMUP: Duration = Duration::from_secs(2);
const MEASURED: Duration = Duration::from_secs(10);
const ONLINE: Duration = Duration::from_secs(60);
/// How long nginx may take to start answering.
const NGINX_READY: Duration = Duration::from_secs(10);

/// A child process stopped on drop: SIGTERM (nginx's master then stops its workers), then
/// SIGKILL if it is still there after a grace period.
struct ChildGuard {
    name: &'static str,
    child: Option<Child>,
}

impl ChildGuard {
    fn spawn(name: &'static str, command: &mut Command) -> Self {
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        ChildGuard {
            name,
            child: Some(child),
        }
    }

    /// Whether the child has already exited (then it is reaped).
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// Waits for the child to exit by itself and returns what it printed on stdout; panics when
    /// it fails.
    fn finish(mut self) -> String {
        let child = self.child.take().expect("a running child");
        let output = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("waiting for {}: {e}", self.name));
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "{} failed ({}): {stdout}{}",
            self.name,
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} ignored SIGTERM; killing it", self.name);
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// `name` on PATH or in the sbin directories (Debian's nginx is /usr/sbin/nginx, which is not
/// on an unprivileged PATH); panics with the way to install it.
fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("`{name}` is not installed (looked on PATH and in /usr/sbin): run `make bench-tools` (make bench does)")
        })
}

/// A loopback port nobody listens on right now.
/// nginx in the foreground with everything it writes under `dir`: one server on `port` passing
/// every request to the agent at `agent` (`127.0.0.1:<port>`) over kept-alive HTTP/1.1.
fn start_nginx(nginx: &Path, dir: &Path, port: u16, agent: &str) -> ChildGuard {
    let d = dir.display();
    let config = format!(
        r#"worker_processes auto;
error_log {d}/error.log warn;
pid {d}/nginx.pid;

events {{
    worker_connections 1024;
}}

http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;

    upstream agent {{
        server {agent};
        keepalive 32;
    }}

    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://agent;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"#
    );
    std::fs::write(dir.join("nginx.conf"), config).expect("writing nginx.conf");
    ChildGuard::spawn(
        "nginx",
        Command::new(nginx)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null()),
    )
}

/// The wrk script: POST [`BODY`] as JSON (with `auth` as the bearer), and count the answers'
/// statuses across threads, printed as `status <code> <count>` lines after wrk's report.
fn wrk_script(auth: Option<&str>) -> String {
    let mut script = String::from("wrk.method = \"POST\"\n");
    writeln!(script, "wrk.body = [[{BODY}]]").unwrap();
    script.push_str("wrk.headers[\"Content-Type\"] = \"application/json\"\n");
    if let Some(token) = auth {
        writeln!(
            script,
            "wrk.headers[\"Authorization\"] = \"Bearer {token}\""
        )
        .unwrap();
    }
    script.push_str(
        r#"
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  statuses = {}
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for code, count in pairs(thread:get("statuses")) do
      total[code] = (total[code] or 0) + count
    end
  end
  for code, count in pairs(total) do
    io.write(string.format("status %d %d\n", code, count))
  end
end
"#,
    );
    script
}

/// What one measured wrk run reported.
#[derive(Debug)]
struct Stats {
    /// Latency percentiles (50, 75, 90, 99) in microseconds.
    p50: f64,
    p75: f64,
    p90: f64,
    p99: f64,
    rps: f64,
    requests: u64,
    statuses: BTreeMap<u16, u64>,
    socket_errors: u64,
}

impl Stats {
    fn not_ok(&self) -> u64 {
        let ok = self.statuses.get(&200).copied().unwrap_or(0);
        self.statuses.values().sum::<u64>() - ok
    }
}

/// A wrk duration (`394.00us`, `1.20ms`, `2.00s`, `1.00m`) in microseconds.
fn micros(text: &str) -> f64 {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or_else(|| panic!("no unit in wrk duration {text:?}"));
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .unwrap_or_else(|e| panic!("wrk duration {text:?}: {e}"));
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        other => panic!("unknown wrk time unit {other:?} in {text:?}"),
    };
    number * scale
}

/// Parses wrk's `--latency` report and the script's status lines.
fn parse_wrk(output: &str) -> Stats {
    let mut percentiles = BTreeMap::new();
    let (mut rps, mut requests, mut socket_errors) = (None, None, 0);
    let mut statuses = BTreeMap::new();
    let mut in_distribution = false;
    for line in output.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if line.starts_with("Latency Distribution") {
            in_distribution = true;
            continue;
        }
        if in_distribution {
            if let [percent, value] = words[..]
                && let Some(percent) = percent.strip_suffix('%')
            {
                percentiles.insert(percent.to_owned(), micros(value));
                continue;
            }
            in_distribution = false;
        }
        match words[..] {
            ["Requests/sec:", value] => rps = value.parse::<f64>().ok(),
            [count, "requests", "in", ..] => requests = count.parse::<u64>().ok(),
            ["Socket", "errors:", ..] => {
                socket_errors = line
                    .split([',', ' '])
                    .filter_map(|w| w.parse::<u64>().ok())
                    .sum();
            }
            ["status", code, count] => {
                statuses.insert(
                    code.parse().expect("a status code"),
                    count.parse().expect("a count"),
                );
            }
            _ => {}
        }
    }
    let percentile = |p: &str| {
        *percentiles
            .get(p)
            .unwrap_or_else(|| panic!("no {p}% latency in wrk's output:\n{output}"))
    };
    Stats {
        p50: percentile("50"),
        p75: percentile("75"),
        p90: percentile("90"),
        p99: percentile("99"),
        rps: rps.unwrap_or_else(|| panic!("no Requests/sec in wrk's output:\n{output}")),
        requests: requests.unwrap_or_else(|| panic!("no request count in wrk's output:\n{output}")),
        statuses,
        socket_errors,
    }
}

/// Runs wrk against `url` for `duration` and parses its report.
fn run_wrk(wrk: &Path, script: &Path, url: &str, duration: Duration) -> Stats {
    let seconds = duration.as_secs().max(1);
    let guard = ChildGuard::spawn(
        "wrk",
        Command::new(wrk)
            .arg(format!("-t{THREADS}"))
            .arg(format!("-c{CONNECTIONS}"))
            .arg(format!("-d{seconds}s"))
            .arg("--timeout")
            .arg("10s")
            .arg("--latency")
            .arg("-s")
            .arg(script)
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    parse_wrk(&guard.finish())
}

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
    let mut nginx_guard = start_nginx(&nginx, dir.path(), nginx_port, &agent);
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
        std::fs::write(&path, wrk_script(auth)).expect("writing a wrk script");
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
        run_wrk(&wrk, script, url, WARMUP);
        results.push((name, run_wrk(&wrk, script, url, MEASURED)));
    }
    drop(nginx_guard);
    runtime
        .block_on(app.stop())
        .expect("the host stops cleanly");

    println!(
        "\nA2A message/send, wrk {THREADS} threads x {CONNECTIONS} connections, {}s each after a {}s warm-up",
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
