//! Soak: a `molecule serve` process with many workspaces on the process runtime, under a steady
//! workload for a long time, sampled for leaks.
//!
//! The workload is what a live org does: every agent heartbeats (every 5 s), parents delegate to
//! their children through the reference agent's `delegate_task` tool (A2A into the parent, MCP
//! back into the host, A2A out to the child), and a few "writer" workspaces have files written,
//! each write restarting its agent (a process stopped and started again). Writers are never
//! delegation targets, so no call lands on an agent between restart cycles.
//!
//! Every `SOAK_SAMPLE_SECS` the host's `/metrics` gives its resident memory, open file
//! descriptors and live tokio tasks, and the data dir gives the database's size (file, WAL and
//! shared memory). The samples are printed as a table and drawn as an SVG chart
//! (`target/soak/soak.svg`, or `SOAK_OUT`).
//!
//! `make test` runs the short form (20 workspaces, 60 s); `make campaign-soak` the hour with 200
//! workspaces. Either fails when an operation fails or when descriptors, tasks or memory grow
//! past what a settled process does (see [`assert_flat`]).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use molecule_e2e::replicas::{parse_metric, serve};
use molecule_e2e::{ADMIN_TOKEN, Api, agent_binary, eventually, free_port};
use serde_json::{Value, json};

/// Delegations started each second (one per team, the teams taking turns).
const DELEGATIONS_PER_TICK: usize = 10;

/// The soak's shape, from the environment (defaults: the short form `make test` runs).
#[derive(Debug, Clone, Copy)]
struct Shape {
    workspaces: usize,
    duration: Duration,
    sample_every: Duration,
}

impl Shape {
    fn from_env() -> Self {
        let number = |name: &str, default: u64| -> u64 {
            std::env::var(name)
                .ok()
                .map(|v| {
                    v.parse()
                        .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
                })
                .unwrap_or(default)
        };
        let shape = Shape {
            workspaces: number("SOAK_WORKSPACES", 20) as usize,
            duration: Duration::from_secs(number("SOAK_SECONDS", 60)),
            sample_every: Duration::from_secs(number("SOAK_SAMPLE_SECS", 10)),
        };
        assert!(
            shape.workspaces >= 10,
            "SOAK_WORKSPACES must be at least 10"
        );
        assert!(
            shape.duration >= shape.sample_every * 4,
            "SOAK_SECONDS must cover at least four samples"
        );
        shape
    }
}

/// One reading of the host.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Duration,
    rss_bytes: f64,
    open_fds: f64,
    tasks: f64,
    db_bytes: u64,
    online: usize,
    delegations: u64,
    writes: u64,
}

/// The host process, stopped with SIGTERM (so it stops its agents) when dropped.
struct Host {
    api: Api,
    child: Child,
    data_dir: tempfile::TempDir,
}

impl Host {
    async fn start(workspaces: usize) -> Host {
        let data_dir = tempfile::tempdir().expect("a data dir");
        let port = free_port();
        let config = format!(
            r#"admin_token = "{ADMIN_TOKEN}"
data_dir = "{data}"
bind_addr = "127.0.0.1:{port}"
rate_limit_per_minute = 0

[runtime]
kind = "process"
agent_binary = "{agent}"
heartbeat_interval_secs = 5
provision_concurrency = 8
provision_timeout_secs = {provision_timeout}
stop_timeout_secs = 5
"#,
            data = data_dir.path().display(),
            agent = agent_binary().display(),
            // Two seconds a workspace on two cores is far more than a start takes.
            provision_timeout = 120 + 2 * workspaces,
        );
        let config_path = data_dir.path().join("molecule.toml");
        std::fs::write(&config_path, config).expect("writing the config");
        let child = serve(&config_path, &data_dir.path().join("host.log"), "warn");
        let api = Api::at(
            ([127, 0, 0, 1], port).into(),
            Some(ADMIN_TOKEN),
            Duration::from_secs(60),
        );
        let host = Host {
            api,
            child,
            data_dir,
        };
        let health = host.api.url("/health");
        eventually(Duration::from_secs(60), || async {
            let up = host.api.client.get(&health).send().await;
            up.is_ok_and(|r| r.status().is_success()).then_some(())
        })
        .await;
        host
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.path().join("host.log")).unwrap_or_default()
    }

    /// The SQLite database's bytes on disk: the file, its WAL and its shared-memory index.
    fn db_bytes(&self) -> u64 {
        ["molecule.db", "molecule.db-wal", "molecule.db-shm"]
            .iter()
            .filter_map(|name| std::fs::metadata(self.data_dir.path().join(name)).ok())
            .map(|m| m.len())
            .sum()
    }

    async fn sample(&self, at: Duration, counts: &Counts) -> Sample {
        let text = self.api.anonymous().get("/metrics").await.text;
        let gauge = |name: &str| -> f64 {
            parse_metric(&text, name)
                .into_values()
                .next()
                .unwrap_or_else(|| panic!("{name} is missing from /metrics"))
        };
        let online = self
            .api
            .get("/workspaces")
            .await
            .expect(200)
            .as_array()
            .expect("a list")
            .iter()
            .filter(|w| w["status"] == "online")
            .count();
        Sample {
            at,
            rss_bytes: gauge("molecule_process_resident_memory_bytes"),
            open_fds: gauge("molecule_process_open_fds"),
            tasks: gauge("molecule_tokio_alive_tasks"),
            db_bytes: self.db_bytes(),
            online,
            delegations: counts.delegations,
            writes: counts.writes,
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        // The host stops its agents before it exits; give it the stop timeout and a margin.
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Operations done, and the first few that failed (all must succeed).
#[derive(Debug, Default)]
struct Counts {
    delegations: u64,
    writes: u64,
    failures: Vec<String>,
}

/// The org: teams of a parent and its children, which delegate, and writers, whose files are
/// written (and whose agents restart for it).
struct Org {
    teams: Vec<(String, Vec<String>)>,
    writers: Vec<String>,
}

async fn create_org(api: &Api, workspaces: usize) -> Org {
    // One writer in ten; the rest in teams of one parent and four children.
    let writers_count = (workspaces / 10).max(1);
    let team_members = workspaces - writers_count;
    let mut teams = Vec::new();
    let mut made = 0;
    while made + 2 <= team_members {
        let parent = api
            .create_workspace(&format!("lead-{}", teams.len()), None)
            .await;
        made += 1;
        let size = (team_members - made).min(4);
        let team = teams.len();
        let children = futures::future::join_all((0..size).map(|n| {
            let parent = &parent;
            async move {
                api.create_workspace(&format!("member-{team}-{n}"), Some(parent))
                    .await
            }
        }))
        .await;
        made += size;
        teams.push((parent, children));
    }
    let writers = futures::future::join_all(
        (0..writers_count + team_members - made)
            .map(|n| async move { api.create_workspace(&format!("writer-{n}"), None).await }),
    )
    .await;
    Org { teams, writers }
}

async fn statuses(api: &Api) -> Vec<String> {
    api.get("/workspaces")
        .await
        .expect(200)
        .as_array()
        .expect("a list")
        .iter()
        .map(|w| w["status"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn message(text: &str) -> Value {
    json!({ "jsonrpc": "2.0", "id": 1, "method": "message/send",
        "params": { "message": { "role": "user", "parts": [{ "kind": "text", "text": text }] } } })
}

/// One delegation through the reference agent: the parent is asked to delegate to a child, and
/// answers with the child's answer.
async fn delegate(api: &Api, parent: &str, child: &str, n: u64) -> Result<(), String> {
    let reply = api
        .post(
            &format!("/workspaces/{parent}/a2a"),
            message(&format!("delegate {child}: ping {n}")),
        )
        .await;
    let text = reply.body["result"]["parts"][0]["text"]
        .as_str()
        .unwrap_or_default();
    if reply.status == 200 && text.contains(&format!("ping {n}")) {
        Ok(())
    } else {
        Err(format!(
            "delegation {n} {parent} → {child}: {} {}",
            reply.status, reply.text
        ))
    }
}

/// A file write; the agent restarts for it, and the next write to the same writer waits until
/// it is back online, so writes never pile up on an agent between restart cycles.
async fn write(api: &Api, writer: &str, n: u64) -> Result<(), String> {
    let reply = api
        .put(
            &format!("/workspaces/{writer}/files/notes/soak.md"),
            json!({ "content": format!("write {n}\n") }),
        )
        .await;
    if reply.status == 200 {
        Ok(())
    } else {
        Err(format!(
            "write {n} to {writer}: {} {}",
            reply.status, reply.text
        ))
    }
}

async fn is_online(api: &Api, id: &str) -> bool {
    api.get(&format!("/workspaces/{id}")).await.body["status"] == "online"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_org_keeps_memory_descriptors_and_tasks_flat() {
    let shape = Shape::from_env();
    let host = Host::start(shape.workspaces).await;
    let api = &host.api;

    let org = create_org(api, shape.workspaces).await;
    let online_bound = Duration::from_secs(60 + 2 * shape.workspaces as u64);
    eventually(online_bound, || async {
        let all = statuses(api).await;
        assert!(
            !all.iter().any(|s| s == "failed"),
            "a workspace failed to start: {all:?}\n{}",
            host.log()
        );
        all.iter().all(|s| s == "online").then_some(())
    })
    .await;
    eprintln!(
        "soak: {} workspaces online ({} teams, {} writers); running {:?}, a sample every {:?}",
        shape.workspaces,
        org.teams.len(),
        org.writers.len(),
        shape.duration,
        shape.sample_every
    );

    let mut counts = Counts::default();
    let mut samples = Vec::new();
    let start = Instant::now();
    let mut next_sample = Duration::ZERO;
    let mut next_write = 0usize;
    let mut tick = 0u64;
    while start.elapsed() < shape.duration {
        if start.elapsed() >= next_sample {
            samples.push(host.sample(start.elapsed(), &counts).await);
            next_sample += shape.sample_every;
        }
        let tick_started = Instant::now();
        // Each tick: one delegation in each of up to ten teams (the next ten in turn), at once.
        let teams = org.teams.len();
        let calls = (0..teams.min(DELEGATIONS_PER_TICK)).map(|k| {
            let t = (tick as usize * DELEGATIONS_PER_TICK + k) % teams;
            let (parent, children) = &org.teams[t];
            let child = &children[(tick as usize + t) % children.len()];
            delegate(api, parent, child, tick * 1_000 + t as u64)
        });
        for result in futures::future::join_all(calls).await {
            match result {
                Ok(()) => counts.delegations += 1,
                Err(failure) => counts.failures.push(failure),
            }
        }
        // Every fifth tick: a file write to the next writer that is online.
        if tick.is_multiple_of(5) {
            let writer = &org.writers[next_write % org.writers.len()];
            if is_online(api, writer).await {
                match write(api, writer, tick).await {
                    Ok(()) => counts.writes += 1,
                    Err(failure) => counts.failures.push(failure),
                }
                next_write += 1;
            }
        }
        assert!(
            counts.failures.len() < 10,
            "operations failed: {:#?}\n{}",
            counts.failures,
            host.log()
        );
        tick += 1;
        tokio::time::sleep(Duration::from_secs(1).saturating_sub(tick_started.elapsed())).await;
    }
    samples.push(host.sample(start.elapsed(), &counts).await);

    let table = table(&samples);
    println!("{table}");
    let chart = out_dir().join("soak.svg");
    std::fs::create_dir_all(chart.parent().expect("a parent")).expect("the chart's directory");
    std::fs::write(&chart, svg(&samples, shape)).expect("writing the chart");
    println!("soak: chart written to {}", chart.display());

    assert!(
        counts.failures.is_empty(),
        "operations failed: {:#?}",
        counts.failures
    );
    assert!(counts.delegations > 0 && counts.writes > 0, "{counts:?}");
    // Every agent is still (or again, for a writer just restarted) online.
    eventually(Duration::from_secs(60), || async {
        statuses(api)
            .await
            .iter()
            .all(|s| s == "online")
            .then_some(())
    })
    .await;
    assert_flat(&samples);
}

fn out_dir() -> PathBuf {
    std::env::var_os("SOAK_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/soak"))
}

/// A resource's name, how to read it from a sample, and the growth allowed: a factor and a
/// margin over the first half's peak.
type Flatness = (&'static str, fn(&Sample) -> f64, f64, f64);

/// What "flat" means: after the first sample (taken once every agent is online, before the
/// workload's caches and pools have filled), the second half of the run never goes higher
/// than the first half plus a margin. A leak of one descriptor or task per operation, or of a
/// few hundred bytes per call, grows without bound and fails this on the hour's run; allocator
/// and pool warm-up stay under it.
fn assert_flat(samples: &[Sample]) {
    let settled = &samples[1..];
    let (first, second) = settled.split_at(settled.len() / 2);
    let max = |half: &[Sample], read: fn(&Sample) -> f64| -> f64 {
        half.iter().map(read).fold(f64::MIN, f64::max)
    };
    let checks: [Flatness; 3] = [
        ("open descriptors", |s| s.open_fds, 1.05, 32.0),
        ("tokio tasks", |s| s.tasks, 1.10, 64.0),
        (
            "resident memory",
            |s| s.rss_bytes,
            1.25,
            32.0 * 1024.0 * 1024.0,
        ),
    ];
    for (what, read, factor, margin) in checks {
        let (before, after) = (max(first, read), max(second, read));
        assert!(
            after <= before * factor + margin,
            "{what} grew from {before} to {after} over the run:\n{}",
            table(samples)
        );
    }
}

fn table(samples: &[Sample]) -> String {
    let mut out = String::from(
        "| t (s) | RSS (MiB) | open fds | tokio tasks | DB (MiB) | online | delegations | writes |\n\
         |------:|----------:|---------:|------------:|---------:|-------:|------------:|-------:|\n",
    );
    for s in samples {
        let _ = writeln!(
            out,
            "| {:>5} | {:>9.1} | {:>8} | {:>11} | {:>8.2} | {:>6} | {:>11} | {:>6} |",
            s.at.as_secs(),
            s.rss_bytes / 1_048_576.0,
            s.open_fds,
            s.tasks,
            s.db_bytes as f64 / 1_048_576.0,
            s.online,
            s.delegations,
            s.writes
        );
    }
    out
}

/// Four small line charts, one per resource, each scaled from zero to its own maximum.
fn svg(samples: &[Sample], shape: Shape) -> String {
    const W: f64 = 360.0;
    const H: f64 = 140.0;
    const PAD: f64 = 36.0;
    let series: [(&str, Vec<f64>); 4] = [
        (
            "RSS (MiB)",
            samples.iter().map(|s| s.rss_bytes / 1_048_576.0).collect(),
        ),
        ("open fds", samples.iter().map(|s| s.open_fds).collect()),
        ("tokio tasks", samples.iter().map(|s| s.tasks).collect()),
        (
            "DB (MiB)",
            samples
                .iter()
                .map(|s| s.db_bytes as f64 / 1_048_576.0)
                .collect(),
        ),
    ];
    let end = samples.last().map_or(1.0, |s| s.at.as_secs_f64().max(1.0));
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
<text x="8" y="16" font-size="13">Soak: {n} workspaces, {secs} s, process runtime</text>
"#,
        w = 2.0 * (W + PAD),
        h = 2.0 * (H + PAD) + 24.0,
        n = shape.workspaces,
        secs = shape.duration.as_secs(),
    );
    for (i, (title, values)) in series.iter().enumerate() {
        let (ox, oy) = (
            (i % 2) as f64 * (W + PAD) + PAD,
            (i / 2) as f64 * (H + PAD) + 40.0,
        );
        let top = values.iter().copied().fold(0.0, f64::max).max(1.0) * 1.1;
        let points: Vec<String> = samples
            .iter()
            .zip(values)
            .map(|(s, v)| {
                let x = ox + s.at.as_secs_f64() / end * W;
                let y = oy + H - v / top * H;
                format!("{x:.1},{y:.1}")
            })
            .collect();
        let _ = write!(
            out,
            r##"<text x="{ox}" y="{ty}">{title} (max {top:.1})</text>
<rect x="{ox}" y="{oy}" width="{W}" height="{H}" fill="none" stroke="#999"/>
<polyline fill="none" stroke="#1f6feb" stroke-width="1.5" points="{points}"/>
<text x="{ox}" y="{by}" fill="#666">0 s</text><text x="{ex}" y="{by}" fill="#666" text-anchor="end">{end:.0} s</text>
"##,
            ty = oy - 4.0,
            top = top / 1.1,
            points = points.join(" "),
            by = oy + H + 12.0,
            ex = ox + W,
        );
    }
    out.push_str("</svg>\n");
    out
}
