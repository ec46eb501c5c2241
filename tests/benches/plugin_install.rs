//! Plugin install latency (local source, process runtime, SQLite): a reinstall that changes one
//! `SKILL.md`, with the WebAssembly classifier and restart policy active, against the same host
//! with only the resolver installed, so both slots use the host's native fallbacks. Prints the
//! medians and their ratio. Only the install request is timed; a restart the decision causes is
//! waited out between rounds (the native classifier fallback says `cold`, so those rounds
//! restart the agent, and the WASM ones do not).

use std::path::Path;
use std::time::{Duration, Instant};

use molecule_e2e::{DbBackend, Runtime, TestApp, builtin_extensions_dir, write_file};
use serde_json::{Value, json};

/// Rounds with the WebAssembly classifier, which answers hot: nothing restarts.
const ROUNDS: usize = 15;
/// Rounds with the native fallbacks, which answer cold: each round restarts the agent, and the
/// host's restart clamp lets a workspace restart at most 5 times in its window before it holds
/// the next restart for 5 minutes (the first install is one of them).
const COLD_ROUNDS: usize = 4;
const ONLINE: Duration = Duration::from_secs(60);

async fn settle(app: &TestApp, id: &str, before: usize, answer: &Value) {
    if answer["restarting"] == true {
        let deadline = Instant::now() + ONLINE;
        while app.restart_count(id).await <= before {
            assert!(
                Instant::now() < deadline,
                "the restart {answer} announced did not happen within {ONLINE:?}; activity: {:#?}",
                app.activity(id, "?limit=10").await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let deadline = Instant::now() + ONLINE;
    loop {
        let row = app.get(&format!("/workspaces/{id}")).await.body;
        if row["status"] == "online" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the workspace was not online within {ONLINE:?}: {row}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Median install latency over `rounds` SKILL.md-only reinstalls; `extensions` is the
/// directory the host installs its default components from.
async fn reinstall_latency(extensions: &Path, rounds: usize) -> (Duration, String) {
    let registry = tempfile::tempdir().unwrap();
    write_file(
        registry.path(),
        "bench/plugin.yaml",
        "name: bench\nversion: 1\n",
    );
    write_file(registry.path(), "bench/skills/s/SKILL.md", "# S\nround 0\n");
    let (dir, ext) = (registry.path().to_path_buf(), extensions.to_path_buf());
    let app = TestApp::spawn_with(DbBackend::Sqlite, move |c| {
        Runtime::Process.configure(c);
        c.builtin_extensions_dir = Some(ext);
        c.plugins_registry_dir = Some(dir);
    })
    .await;
    let id = app.create_workspace("bench", None).await;
    settle(&app, &id, 0, &json!({})).await;
    let path = format!("/workspaces/{id}/plugins");
    let before = app.restart_count(&id).await;
    let first = app
        .post(&path, json!({ "source": "bench" }))
        .await
        .expect(200);
    settle(&app, &id, before, &first).await;
    let mut samples = Vec::with_capacity(rounds);
    let mut reload = String::new();
    for round in 1..=rounds {
        write_file(
            registry.path(),
            "bench/skills/s/SKILL.md",
            &format!("# S\nround {round}\n"),
        );
        let before = app.restart_count(&id).await;
        let started = Instant::now();
        let answer = app
            .post(&path, json!({ "source": "bench" }))
            .await
            .expect(200);
        samples.push(started.elapsed());
        reload = answer["reload"].as_str().unwrap_or_default().to_owned();
        settle(&app, &id, before, &answer).await;
    }
    samples.sort();
    (samples[samples.len() / 2], reload)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let all = builtin_extensions_dir();
    // Only the local resolver: the classifier and restart-policy slots stay empty.
    let resolver_only = tempfile::tempdir().unwrap();
    std::fs::copy(
        all.join("local_resolver.wasm"),
        resolver_only.path().join("local_resolver.wasm"),
    )
    .expect("make plugins built the local resolver");
    let (wasm, wasm_reload) = runtime.block_on(reinstall_latency(&all, ROUNDS));
    let (native, native_reload) =
        runtime.block_on(reinstall_latency(resolver_only.path(), COLD_ROUNDS));
    println!(
        "plugin reinstall (SKILL.md change, local source), medians: wasm classifier + policy {:.1} ms ({wasm_reload}, {ROUNDS} rounds), native fallbacks {:.1} ms ({native_reload}, {COLD_ROUNDS} rounds), ratio wasm/native {:.2}",
        wasm.as_secs_f64() * 1000.0,
        native.as_secs_f64() * 1000.0,
        wasm.as_secs_f64() / native.as_secs_f64()
    );
}
