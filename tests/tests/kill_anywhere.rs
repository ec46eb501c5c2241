//! Kill anywhere (issue 26): a driver runs a real workload against one `molecule serve` process
//! (org imports of a couple of hundred workspaces, plugin installs, delegations between real
//! agents, file writes, secrets, restarts), SIGKILLs it at a random moment, starts it again on
//! the same data directory and database, and checks what must hold after any crash, through the
//! API and in the database directly:
//!
//! - every `org.import.started` is paired with one `org.import.completed` or `org.import.failed`
//!   (the start of the next host, or on PostgreSQL the queue-expiry sweep, fails an import its
//!   host died running);
//! - an import stored all of its workspaces or none, and one acknowledged stored all;
//! - no live plugin directory of a workspace lacks its `.complete` marker;
//! - no delegation the host carries out is still `pending`/`dispatched` past the longest a
//!   delivery can take (`a2a.stranded_margin_secs` and the timeouts are set small here);
//! - no workspace is still `provisioning`/`hibernating` past the provision timeout and its sweep;
//! - every queued A2A message is delivered or failed within its bound;
//! - every acknowledged secret is still there, and every workspace's secrets decrypt;
//! - the event log is readable and ordered. Events have no sequence number: their ids are
//!   UUIDv7 (time-ordered, random in the low bits) and `org.import.*` ones are UUIDv4, so there
//!   are no "gaps" to look for. What can be checked honestly is that every row decodes, that each
//!   UUIDv7 id carries the row's own `created_at` (to the millisecond, give or take the moment
//!   between the two clock reads), that id order and time order agree, and that no event of a
//!   later run sorts before an event of an earlier one.
//!
//! Both backends. `KILL_CAMPAIGN_KILLS` sets the number of kills (3 by default: the version `make
//! test` runs; `make campaign-kill` runs 50), `KILL_CAMPAIGN_SEED` the seed (printed; random by
//! default), and `KILL_CAMPAIGN_ONLY=<index>` replays one kill of that seed: the set-up, then that
//! kill's own workload and kill moment (each kill draws from an RNG seeded by the seed and its
//! index).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use molecule_e2e::replicas::{Agents, ReplicaSet};
use molecule_e2e::{Api, DbBackend, write_file};
use molecule_host::store::Db;
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

molecule_e2e::on_both_backends!(
    killing_the_host_anywhere_breaks_no_invariant,
    an_import_a_killed_host_left_unfinished_is_marked_failed_once_nobody_runs_it,
    a_plugin_swap_a_killed_host_left_half_done_is_rolled_back,
);

/// The bulk of each cycle's import: one root, `TEAMS` teams of `MEMBERS` members, all
/// external (nobody provisions two hundred agents on two cores), stored in one transaction.
const TEAMS: usize = 10;
const MEMBERS: usize = 19;
const BULK: usize = 1 + TEAMS + TEAMS * MEMBERS;
/// The real agents (process runtime), imported from a template directory.
const REAL: [&str; 3] = ["Base Lead", "Base Worker 1", "Base Worker 2"];
/// The longest a kill waits after the workload starts.
const KILL_WINDOW_MS: u64 = 1500;
const PROVISION_TIMEOUT_SECS: u64 = 20;
const SECRETS_KEY: &str = "kill-anywhere-key-0123456789abcd";

/// The timeouts a delegation's longest run is made of (`delegation::tasks::longest_run`).
const CONNECT_TIMEOUT_SECS: u64 = 2;
const MAX_TIMEOUT_SECS: u64 = 5;
const RETRY_DELAY_MS: u64 = 200;
const STRANDED_MARGIN_SECS: u64 = 1;

/// How long after its moment each kind of stuck item becomes a violation: the host's own bound
/// plus the sweep interval and a margin for a loaded machine.
fn bound(kind: Kind) -> Duration {
    let slack = Duration::from_secs(5);
    match kind {
        Kind::ImportUnpaired | Kind::PluginIncomplete => slack,
        Kind::DelegationStuck => {
            Duration::from_secs(
                2 * (CONNECT_TIMEOUT_SECS + MAX_TIMEOUT_SECS) + STRANDED_MARGIN_SECS,
            ) + Duration::from_millis(RETRY_DELAY_MS)
                + slack
        }
        // Provisioning fails after the timeout, swept every min(timeout, 30 s).
        Kind::TransientStatus => Duration::from_secs(2 * PROVISION_TIMEOUT_SECS) + slack,
        // A dispatched delivery a dead host left is queued again once older than any delivery
        // can last (connect + max timeout + 60 s); a queued one goes at the next heartbeat with
        // spare capacity.
        Kind::QueueStuck => {
            Duration::from_secs(CONNECT_TIMEOUT_SECS + MAX_TIMEOUT_SECS + 60) + slack * 2
        }
        _ => Duration::ZERO,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    ImportUnpaired,
    ImportPartial,
    PluginIncomplete,
    DelegationStuck,
    TransientStatus,
    QueueStuck,
    SecretLost,
    SecretUnreadable,
    EventUnreadable,
    EventOrder,
}

/// One thing found wrong: what, about which item, and since when (for the bounded kinds).
#[derive(Debug, Clone)]
struct Finding {
    kind: Kind,
    item: String,
    since: Option<DateTime<Utc>>,
}

/// A small deterministic generator (SplitMix64): each kill draws from its own, seeded by the
/// campaign's seed and its index, so one kill can be replayed alone.
struct Rng(u64);

impl Rng {
    fn for_kill(seed: u64, index: usize) -> Rng {
        Rng(seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// What the driver was told succeeded, to hold the restarted host to it.
#[derive(Default)]
struct Acknowledged {
    /// Cycle index -> whether its bulk import answered 201.
    imports: BTreeMap<usize, bool>,
    /// (workspace, key) -> value of every secret write answered 200.
    secrets: BTreeMap<(String, String), String>,
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

async fn killing_the_host_anywhere_breaks_no_invariant(backend: DbBackend) {
    let kills = env_number("KILL_CAMPAIGN_KILLS").unwrap_or(3) as usize;
    let seed = env_number("KILL_CAMPAIGN_SEED").unwrap_or_else(rand_seed);
    let only = env_number("KILL_CAMPAIGN_ONLY").map(|i| i as usize);
    let started = Instant::now();
    let backend_name = backend.name();
    println!("kill campaign on {backend_name}: seed {seed} (replay: KILL_CAMPAIGN_SEED={seed})");

    let templates = tempfile::tempdir().expect("a templates dir");
    write_file(
        templates.path(),
        "base/org.yaml",
        "name: Kill Base\nworkspaces:\n  - name: Base Lead\n    children:\n      - name: Base Worker 1\n      - name: Base Worker 2\n",
    );
    let mut hosts = ReplicaSet::new(backend, Agents::Process, templates.path()).await;
    hosts.settings = format!("secrets_encryption_key = \"{SECRETS_KEY}\"");
    hosts.a2a_settings = format!(
        "connect_timeout_secs = {CONNECT_TIMEOUT_SECS}\nmax_timeout_secs = {MAX_TIMEOUT_SECS}\n\
         delegation_retry_delay_ms = {RETRY_DELAY_MS}\nstranded_margin_secs = {STRANDED_MARGIN_SECS}\n"
    );
    hosts.provision_timeout_secs = PROVISION_TIMEOUT_SECS;
    let host = hosts.spawn().await;
    let db = Db::connect(hosts.database_url(), 2)
        .await
        .expect("the campaign's database");

    // The real agents, online before the first kill.
    let base = hosts[host]
        .api
        .post("/org/import", json!({ "dir": "base" }))
        .await
        .expect(201);
    let real: Vec<String> = base["workspaces"]
        .as_array()
        .expect("workspaces")
        .iter()
        .map(|w| w["id"].as_str().expect("an id").to_owned())
        .collect();
    assert_eq!(real.len(), REAL.len(), "{base}");
    wait_online(&hosts[host].api, &real).await;

    let mut acknowledged = Acknowledged::default();
    let mut kill_times: Vec<(usize, DateTime<Utc>)> = Vec::new();
    let mut answers: BTreeMap<String, usize> = BTreeMap::new();
    let mut found: BTreeMap<(Kind, String), (usize, Finding)> = BTreeMap::new();
    let indexes: Vec<usize> = match only {
        Some(i) => vec![i],
        None => (0..kills).collect(),
    };
    for &index in &indexes {
        let mut rng = Rng::for_kill(seed, index);
        let plugin_version = index + 1;
        write_file(
            hosts.registry_dir(),
            "kp/plugin.yaml",
            &format!("name: kp\nversion: {plugin_version}.0.0\nskills: [s{plugin_version}]\n"),
        );
        write_file(
            hosts.registry_dir(),
            &format!("kp/skills/s{plugin_version}/SKILL.md"),
            &format!("# Skill {plugin_version}\n"),
        );
        let api = hosts[host].api.clone();
        let (mut tasks, results) = workload(&api, &real, &acknowledged, index, &mut rng);
        let kill_after = Duration::from_millis(rng.below(KILL_WINDOW_MS));
        tokio::time::sleep(kill_after).await;
        hosts[host].kill();
        let killed_at = Utc::now();
        kill_times.push((index, killed_at));
        tasks.abort_all();
        drop(tasks);
        for outcome in results.lock().expect("results").drain(..) {
            match outcome {
                Outcome::Import(i, ok) => {
                    acknowledged.imports.insert(i, ok);
                }
                Outcome::Secret(ws, key, value) => {
                    acknowledged.secrets.insert((ws, key), value);
                }
                Outcome::Answer(what, status) => {
                    *answers.entry(format!("{what} {status}")).or_insert(0) += 1;
                }
            }
        }
        acknowledged.imports.entry(index).or_insert(false);
        hosts.restart(host).await;
        let api = hosts[host].api.clone();
        let now = Utc::now();
        for finding in check(&db, &api, hosts[host].data_dir(), &acknowledged).await {
            if is_due(&finding, now) {
                found
                    .entry((finding.kind, finding.item.clone()))
                    .or_insert((index, finding));
            }
        }
        println!(
            "[{backend_name}] kill {index}: after {} ms of workload; {} violation(s) so far",
            kill_after.as_millis(),
            found.len()
        );
    }

    // What remains unresolved must resolve within its bound; wait for that, no longer.
    let api = hosts[host].api.clone();
    let deadline = Instant::now() + bound(Kind::QueueStuck);
    let remaining = loop {
        let findings = check(&db, &api, hosts[host].data_dir(), &acknowledged).await;
        let now = Utc::now();
        if findings.is_empty() || Instant::now() > deadline {
            break findings
                .into_iter()
                .filter(|f| is_due(f, now))
                .collect::<Vec<_>>();
        }
        if findings.iter().all(|f| is_due(f, now)) {
            break findings;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    for finding in remaining {
        // Attribute a late one to the kill it followed.
        let index = finding
            .since
            .and_then(|at| {
                kill_times
                    .iter()
                    .rev()
                    .find(|(_, killed)| *killed <= at + chrono::Duration::seconds(1))
                    .map(|(i, _)| *i)
            })
            .unwrap_or(*indexes.last().unwrap_or(&0));
        found
            .entry((finding.kind, finding.item.clone()))
            .or_insert((index, finding));
    }
    db.close().await;

    println!("[{backend_name}] workload answers before the kills (0: cut off): {answers:?}");
    println!(
        "[{backend_name}] {} kills, {} invariant violations (seed {seed}, {:.0?})",
        indexes.len(),
        found.len(),
        started.elapsed()
    );
    for ((kind, item), (index, finding)) in &found {
        println!(
            "[{backend_name}]   {kind:?} {item} since {:?}: replay with KILL_CAMPAIGN_SEED={seed} KILL_CAMPAIGN_ONLY={index}",
            finding.since
        );
    }
    assert!(
        found.is_empty(),
        "{} invariant violation(s) on {backend_name}, seed {seed}; host log:\n{}",
        found.len(),
        tail(&hosts[host].log(), 60)
    );
}

fn rand_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ u64::from(std::process::id()).rotate_left(32)
}

fn tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Whether a finding is a violation at `now`: unbounded kinds at once, bounded ones once the
/// item has been stuck longer than its bound.
fn is_due(finding: &Finding, now: DateTime<Utc>) -> bool {
    match finding.since {
        None => true,
        Some(at) => now - at > chrono::Duration::from_std(bound(finding.kind)).expect("a bound"),
    }
}

async fn wait_online(api: &Api, ids: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut all = true;
        for id in ids {
            let row = api.get(&format!("/workspaces/{id}")).await.body;
            all &= row["status"] == "online";
        }
        if all {
            return;
        }
        assert!(Instant::now() < deadline, "the real agents came online");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

enum Outcome {
    Import(usize, bool),
    Secret(String, String, String),
    /// A workload request and its status (0: no answer, the host died first).
    Answer(&'static str, u16),
}

type Results = std::sync::Arc<std::sync::Mutex<Vec<Outcome>>>;

/// A request that may find the host dead: the status and body, or `None` when it got no answer.
async fn try_call(
    api: &Api,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Option<(u16, Value)> {
    let mut request = api.client.request(method, api.url(path));
    if let Some(token) = &api.token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.ok()?;
    let status = response.status().as_u16();
    let text = response.text().await.ok()?;
    Some((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// [`try_call`], noting the answer's status under `what`.
async fn noted(
    results: &Results,
    what: &'static str,
    api: &Api,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Option<(u16, Value)> {
    let reply = try_call(api, method, path, body).await;
    let status = reply.as_ref().map_or(0, |(status, _)| *status);
    results
        .lock()
        .expect("results")
        .push(Outcome::Answer(what, status));
    reply
}

/// One cycle's workload, started at once and at random offsets: the bulk import, the base
/// import again (merge), a plugin install, delegations, file writes, secrets and a restart.
fn workload(
    api: &Api,
    real: &[String],
    acknowledged: &Acknowledged,
    index: usize,
    rng: &mut Rng,
) -> (tokio::task::JoinSet<()>, Results) {
    let results = Results::default();
    let mut tasks = tokio::task::JoinSet::new();
    let offset = |rng: &mut Rng| Duration::from_millis(rng.below(400));
    let pick = |rng: &mut Rng| real[rng.below(real.len() as u64) as usize].clone();

    // The bulk import.
    {
        let (api, results, delay) = (api.clone(), results.clone(), offset(rng));
        tasks.spawn(async move {
            tokio::time::sleep(delay).await;
            let reply = noted(
                &results,
                "bulk import",
                &api,
                Method::POST,
                "/org/import",
                Some(json!({ "template": bulk(index) })),
            )
            .await;
            let ok = matches!(reply, Some((201, _)));
            results
                .lock()
                .expect("results")
                .push(Outcome::Import(index, ok));
        });
    }
    // The plain calls: the base org again (a merge that creates nothing, or finishes what a
    // kill cut short), a plugin install (a new version each cycle, so it swaps), delegations
    // from the lead to its workers (carried out by the host), file writes and a restart.
    let mut calls: Vec<(&'static str, Method, String, Value)> = vec![
        (
            "base import",
            Method::POST,
            "/org/import".into(),
            json!({ "dir": "base", "mode": "merge" }),
        ),
        (
            "plugin install",
            Method::POST,
            format!("/workspaces/{}/plugins", pick(rng)),
            json!({ "source": "kp" }),
        ),
    ];
    for n in 0..3 {
        calls.push((
            "delegate",
            Method::POST,
            format!("/workspaces/{}/delegate", real[0]),
            json!({ "target_id": real[1 + n % 2], "task": format!("task {index}-{n}") }),
        ));
    }
    for n in 0..2 {
        calls.push((
            "file write",
            Method::PUT,
            format!("/workspaces/{}/files/notes/k{index}-{n}.md", pick(rng)),
            json!({ "content": format!("note {index}-{n}\n") }),
        ));
    }
    calls.push((
        "restart",
        Method::POST,
        format!("/workspaces/{}/restart", pick(rng)),
        json!({}),
    ));
    for (what, method, path, body) in calls {
        let (api, results, delay) = (api.clone(), results.clone(), offset(rng));
        tasks.spawn(async move {
            tokio::time::sleep(delay).await;
            noted(&results, what, &api, method, &path, Some(body)).await;
        });
    }
    // Secrets: on a real agent (whose restart policy then acts) and on an imported external.
    let mut owners = vec![pick(rng)];
    let earlier: Vec<&usize> = acknowledged
        .imports
        .iter()
        .filter(|(_, ok)| **ok)
        .map(|(i, _)| i)
        .collect();
    if !earlier.is_empty() {
        owners.push(format!(
            "bulk:{}",
            earlier[rng.below(earlier.len() as u64) as usize]
        ));
    }
    for (n, owner) in owners.into_iter().enumerate() {
        let (api, results, delay) = (api.clone(), results.clone(), offset(rng));
        let value = format!("{:016x}", rng.next());
        tasks.spawn(async move {
            tokio::time::sleep(delay).await;
            let id = match owner.strip_prefix("bulk:") {
                Some(cycle) => {
                    let Some((200, list)) = try_call(&api, Method::GET, "/workspaces", None).await
                    else {
                        return;
                    };
                    let root = format!("K{cycle} Root");
                    let Some(id) = list.as_array().and_then(|l| {
                        l.iter()
                            .find(|w| w["name"] == root.as_str())
                            .and_then(|w| w["id"].as_str())
                            .map(str::to_owned)
                    }) else {
                        return;
                    };
                    id
                }
                None => owner,
            };
            let key = format!("KILL_{index}_{n}");
            let body = json!({ "key": key, "value": value });
            if let Some((200, _)) = noted(
                &results,
                "secret",
                &api,
                Method::POST,
                &format!("/workspaces/{id}/secrets"),
                Some(body),
            )
            .await
            {
                results
                    .lock()
                    .expect("results")
                    .push(Outcome::Secret(id, key, value));
            }
        });
    }
    (tasks, results)
}

/// The inline template of cycle `index`: `BULK` external workspaces named `K<index> ...`.
fn bulk(index: usize) -> Value {
    let teams: Vec<Value> = (0..TEAMS)
        .map(|t| {
            let members: Vec<Value> = (0..MEMBERS)
                .map(|m| json!({ "name": format!("K{index} Member {t}-{m}"), "external": true }))
                .collect();
            json!({ "name": format!("K{index} Team {t}"), "external": true, "children": members })
        })
        .collect();
    json!({
        "name": format!("Kill Bulk {index}"),
        "workspaces": [{ "name": format!("K{index} Root"), "external": true, "children": teams }],
    })
}

macro_rules! read {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            Db::Sqlite(sqlite) => {
                let $pool = &sqlite.reader;
                $body
            }
            Db::Postgres(pg) => {
                let $pool = pg;
                $body
            }
        }
    };
}

type EventRow = (Uuid, String, Option<String>, DateTime<Utc>);
/// `(id, status, enqueued_at, dispatched_at)` of an a2a_queue row.
type QueueRow = (Uuid, String, DateTime<Utc>, Option<DateTime<Utc>>);

/// Everything that is wrong now (bounded kinds carry the moment they became stuck).
async fn check(db: &Db, api: &Api, data_dir: &Path, acknowledged: &Acknowledged) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut add = |kind: Kind, item: String, since: Option<DateTime<Utc>>| {
        findings.push(Finding { kind, item, since });
    };

    // The event log: every row decodes (payload read as text, then parsed).
    let events: Vec<EventRow> = read!(db, pool => sqlx::query_as(
        "SELECT id, event_type, CAST(payload AS TEXT), created_at FROM structure_events",
    )
    .fetch_all(pool)
    .await)
    .expect("reading structure_events");
    let mut imports: HashMap<Uuid, DateTime<Utc>> = HashMap::new();
    let mut finished: BTreeMap<String, usize> = BTreeMap::new();
    let mut v7: Vec<&EventRow> = Vec::new();
    for row in &events {
        let (id, kind, payload, created_at) = row;
        let payload: Value = match payload.as_deref().map(serde_json::from_str) {
            Some(Ok(value)) => value,
            None => Value::Null,
            Some(Err(err)) => {
                add(
                    Kind::EventUnreadable,
                    format!("event {id} ({kind}): {err}"),
                    None,
                );
                continue;
            }
        };
        match kind.as_str() {
            "org.import.started" => {
                imports.insert(*id, *created_at);
            }
            "org.import.completed" | "org.import.failed" => {
                let key = payload["import_id"].as_str().unwrap_or("(none)").to_owned();
                *finished.entry(key).or_default() += 1;
            }
            _ => {}
        }
        if id.get_version_num() == 7 {
            v7.push(row);
        }
    }
    for (id, at) in &imports {
        match finished.get(&id.to_string()).copied().unwrap_or(0) {
            1 => {}
            0 => add(
                Kind::ImportUnpaired,
                format!("import {id} has no end event"),
                Some(*at),
            ),
            n => add(
                Kind::ImportUnpaired,
                format!("import {id} has {n} end events"),
                None,
            ),
        }
    }
    if let Some(n) = finished.get("(none)") {
        add(
            Kind::ImportUnpaired,
            format!("{n} import end event(s) name no import"),
            None,
        );
    }
    // Each UUIDv7 id carries its row's time; in id order the times never go back by more than
    // the moment between the id and the timestamp being read (a busy machine: 1 s).
    v7.sort_by_key(|row| row.0);
    let slack = chrono::Duration::seconds(1);
    let mut newest: Option<DateTime<Utc>> = None;
    for (id, kind, _, created_at) in v7 {
        let (secs, nanos) = id.get_timestamp().expect("a v7 timestamp").to_unix();
        let stamped = DateTime::from_timestamp(secs as i64, nanos).expect("a time");
        if (stamped - *created_at).abs() > slack {
            add(
                Kind::EventOrder,
                format!("event {id} ({kind}) id time {stamped} vs created_at {created_at}"),
                None,
            );
        }
        if let Some(newest) = newest
            && *created_at + slack < newest
        {
            add(
                Kind::EventOrder,
                format!("event {id} ({kind}) at {created_at} sorts after one at {newest}"),
                None,
            );
        }
        newest = Some(newest.map_or(*created_at, |n| n.max(*created_at)));
    }

    // Imports are all or nothing, and an acknowledged one is all.
    let names: Vec<(String,)> = read!(db, pool => sqlx::query_as(
        "SELECT name FROM workspaces WHERE name LIKE 'K%' AND status <> 'removed'",
    )
    .fetch_all(pool)
    .await)
    .expect("reading workspaces");
    let mut per_cycle: BTreeMap<usize, usize> = BTreeMap::new();
    for (name,) in names {
        if let Some(cycle) = name
            .strip_prefix('K')
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
        {
            *per_cycle.entry(cycle).or_default() += 1;
        }
    }
    for (cycle, ok) in &acknowledged.imports {
        let stored = per_cycle.get(cycle).copied().unwrap_or(0);
        if stored != BULK && (stored != 0 || *ok) {
            add(
                Kind::ImportPartial,
                format!("import of cycle {cycle} (acknowledged: {ok}) stored {stored} of {BULK}"),
                None,
            );
        }
    }

    // Live plugin directories carry their marker.
    if let Ok(workspaces) = std::fs::read_dir(data_dir.join("workspaces")) {
        for ws in workspaces.flatten() {
            let Ok(plugins) = std::fs::read_dir(ws.path().join("configs/plugins")) else {
                continue;
            };
            for plugin in plugins.flatten() {
                let name = plugin.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') || !plugin.path().is_dir() {
                    continue;
                }
                if !plugin.path().join(".complete").is_file() {
                    let since = plugin
                        .metadata()
                        .and_then(|m| m.modified())
                        .ok()
                        .map(DateTime::<Utc>::from);
                    add(
                        Kind::PluginIncomplete,
                        format!(
                            "{}/configs/plugins/{name} has no .complete",
                            ws.file_name().to_string_lossy()
                        ),
                        since,
                    );
                }
            }
        }
    }

    // Delegations the host carries out end.
    let open: Vec<(Uuid, String, DateTime<Utc>)> = read!(db, pool => sqlx::query_as(
        "SELECT id, status, created_at FROM activity_logs
         WHERE activity_type = 'delegation' AND method = 'delegate'
           AND status IN ('pending', 'dispatched')",
    )
    .fetch_all(pool)
    .await)
    .expect("reading delegations");
    for (id, status, at) in open {
        add(
            Kind::DelegationStuck,
            format!("delegation {id} still {status}"),
            Some(at),
        );
    }

    // Nothing stays in a transient status.
    let transient: Vec<(Uuid, String, DateTime<Utc>)> = read!(db, pool => sqlx::query_as(
        "SELECT id, status, updated_at FROM workspaces WHERE status IN ('provisioning', 'hibernating')",
    )
    .fetch_all(pool)
    .await)
    .expect("reading statuses");
    for (id, status, at) in transient {
        add(
            Kind::TransientStatus,
            format!("workspace {id} still {status}"),
            Some(at),
        );
    }

    // Queued A2A messages are delivered or given up.
    let queued: Vec<QueueRow> = read!(db, pool => sqlx::query_as(
        "SELECT id, status, enqueued_at, dispatched_at FROM a2a_queue WHERE status IN ('queued', 'dispatched')",
    )
    .fetch_all(pool)
    .await)
    .expect("reading the queue");
    for (id, status, enqueued, dispatched) in queued {
        add(
            Kind::QueueStuck,
            format!("queued message {id} still {status}"),
            Some(dispatched.unwrap_or(enqueued)),
        );
    }

    // Secrets: every acknowledged one is there, and every workspace's decrypt.
    let mut expected: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
    for ((ws, key), value) in &acknowledged.secrets {
        expected.entry(ws).or_default().push((key, value));
    }
    let with_secrets: Vec<(Uuid,)> = read!(db, pool => sqlx::query_as(
        "SELECT DISTINCT s.workspace_id FROM workspace_secrets s JOIN workspaces w ON w.id = s.workspace_id
         WHERE w.status <> 'removed'",
    )
    .fetch_all(pool)
    .await)
    .expect("reading secrets");
    let mut owners: BTreeSet<String> = with_secrets.iter().map(|(id,)| id.to_string()).collect();
    owners.extend(expected.keys().map(|k| (*k).to_owned()));
    for ws in owners {
        match try_call(
            api,
            Method::GET,
            &format!("/workspaces/{ws}/secrets/values"),
            None,
        )
        .await
        {
            Some((200, values)) => {
                for (key, value) in expected.get(ws.as_str()).into_iter().flatten() {
                    if values[*key] != *value {
                        add(
                            Kind::SecretLost,
                            format!("secret {key} of {ws}: {}", values[*key]),
                            None,
                        );
                    }
                }
            }
            other => add(
                Kind::SecretUnreadable,
                format!("secrets of {ws}: {other:?}"),
                None,
            ),
        }
    }
    findings
}

/// The regression the campaign found: a host killed during an org import left its
/// `org.import.started` without an end event for ever. The orphan is written here as such a host
/// leaves it; a second one's lock is held, as a live replica running it holds it (PostgreSQL).
async fn an_import_a_killed_host_left_unfinished_is_marked_failed_once_nobody_runs_it(
    backend: DbBackend,
) {
    let templates = tempfile::tempdir().expect("a templates dir");
    let mut hosts = ReplicaSet::new(backend, Agents::None, templates.path()).await;
    let host = hosts.spawn().await;
    hosts[host].kill();
    let db = Db::connect(hosts.database_url(), 2)
        .await
        .expect("the database");
    let (orphan, running) = (Uuid::new_v4(), Uuid::new_v4());
    for id in [orphan, running] {
        let row = molecule_host::store::events::EventRow {
            id,
            event_type: "org.import.started".to_owned(),
            workspace_id: None,
            payload: Some(
                json!({ "name": "Cut Short", "dir": null, "mode": "merge", "import_id": id }),
            ),
            created_at: Utc::now(),
        };
        molecule_host::store::events::insert(&db, &row)
            .await
            .expect("an orphan start");
    }
    // On PostgreSQL, a replica still running `running` holds its lock.
    let holder = match &db {
        Db::Postgres(pool) => {
            let mut conn = pool.acquire().await.expect("a connection");
            let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
                .bind(0x4D4F_4C49_i32)
                .bind(fnv1a(&running.to_string()))
                .fetch_one(&mut *conn)
                .await
                .expect("taking the import's lock");
            assert!(taken);
            Some(conn)
        }
        Db::Sqlite(_) => None,
    };
    hosts.restart(host).await;

    let ends = |id: Uuid| {
        let db = db.clone();
        async move {
            let rows: Vec<(String,)> = read!(&db, pool => sqlx::query_as(
                "SELECT CAST(payload AS TEXT) FROM structure_events
                 WHERE event_type IN ('org.import.completed', 'org.import.failed')",
            )
            .fetch_all(pool)
            .await)
            .expect("reading end events");
            rows.into_iter()
                .filter_map(|(p,)| serde_json::from_str::<Value>(&p).ok())
                .filter(|p| p["import_id"] == id.to_string())
                .collect::<Vec<_>>()
        }
    };
    let failed = molecule_e2e::eventually(Duration::from_secs(10), || async {
        let ends = ends(orphan).await;
        (!ends.is_empty()).then_some(ends)
    })
    .await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["name"], "Cut Short");
    assert!(
        failed[0]["errors"][0]
            .as_str()
            .is_some_and(|e| e.contains("stopped before it finished")),
        "{failed:?}"
    );
    if let Some(holder) = holder {
        // Several sweeps pass; the import whose lock is held is left alone until it is free.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(
            ends(running).await.is_empty(),
            "a running import was failed"
        );
        holder.close().await.expect("releasing the lock");
        molecule_e2e::eventually(Duration::from_secs(10), || async {
            (ends(running).await.len() == 1).then_some(())
        })
        .await;
    } else {
        // SQLite: the start fails every unfinished import (nothing else can be running one).
        assert_eq!(ends(running).await.len(), 1);
    }
    assert_eq!(ends(orphan).await.len(), 1, "marked failed once");
    db.close().await;
}

/// The advisory-lock key of a name (`cluster::lease_key`: FNV-1a, stable across builds).
fn fnv1a(name: &str) -> i32 {
    let hash = name.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    i32::from_ne_bytes(hash.to_ne_bytes())
}

/// The regression the campaign found on PostgreSQL (seed 1796588009406435366, kill 6): a host
/// killed between a plugin swap's rename and its `.complete` marker left `plugins/kp` unmarked
/// (so the agent loaded no version at all) and its previous version in `plugins/.previous`,
/// where the swap-dir sweep deleted it a day later. Both half-done states are set up here as a
/// killed host leaves them; the sweep puts the previous version back.
async fn a_plugin_swap_a_killed_host_left_half_done_is_rolled_back(backend: DbBackend) {
    let templates = tempfile::tempdir().expect("a templates dir");
    let mut hosts = ReplicaSet::new(backend, Agents::Process, templates.path()).await;
    let host = hosts.spawn().await;
    let api = hosts[host].api.clone();
    let ids = [
        api.create_workspace("Swapped", None).await,
        api.create_workspace("Snapshotted", None).await,
    ];
    wait_online(&api, &ids).await;
    write_file(
        hosts.registry_dir(),
        "kp/plugin.yaml",
        "name: kp\nversion: 1.0.0\n",
    );
    write_file(hosts.registry_dir(), "kp/skills/one/SKILL.md", "# One\n");
    for id in &ids {
        api.post(
            &format!("/workspaces/{id}/plugins"),
            json!({ "source": "kp" }),
        )
        .await
        .expect(200);
    }
    let plugins = |id: &str| {
        hosts[host]
            .data_dir()
            .join(format!("workspaces/{id}/configs/plugins"))
    };
    let stamp = (Utc::now() - chrono::Duration::seconds(5)).format("%Y%m%dT%H%M%S%.6fZ");
    for (n, id) in ids.iter().enumerate() {
        let dir = plugins(id);
        std::fs::create_dir_all(dir.join(".previous")).expect("a .previous dir");
        std::fs::rename(dir.join("kp"), dir.join(format!(".previous/kp.{stamp}")))
            .expect("snapshotting the live copy");
        if n == 0 {
            // Killed after the swap, before the marker: the new tree, unmarked.
            write_file(&dir, "kp/plugin.yaml", "name: kp\nversion: 2.0.0\n");
            write_file(&dir, "kp/skills/two/SKILL.md", "# Two\n");
        }
        // n == 1: killed after the snapshot, before the swap: nothing live.
    }
    molecule_e2e::eventually(Duration::from_secs(20), || async {
        ids.iter()
            .all(|id| plugins(id).join("kp/.complete").is_file())
            .then_some(())
    })
    .await;
    for id in &ids {
        let dir = plugins(id);
        assert!(
            dir.join("kp/skills/one/SKILL.md").is_file(),
            "the previous version is back"
        );
        assert!(!dir.join("kp/skills/two").exists());
        let left = std::fs::read_dir(dir.join(".previous")).map_or(0, |d| d.count());
        assert_eq!(left, 0, "the snapshot became the live copy");
    }
}
