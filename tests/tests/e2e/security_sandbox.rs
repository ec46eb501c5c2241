//! Issue 17, item 5: a workspace token must not run commands on the host as the host. On the
//! process runtime an agent is a child process of the host; its own token can rewrite its
//! `config.yaml` to a `command` brain, so whatever that command can do, a token holder can. These
//! specs perform that attack and check what the command could reach; and `runtime.kind = auto`
//! must never fall back to local processes silently in production.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::time::Duration;

use molecule_e2e::{
    DbBackend, TestApp, agent_binary, builtin_extensions_dir, eventually, on_both_backends,
    process_runtime,
};
use molecule_host::Config;
use molecule_host::config::{Environment, RuntimeKind};
use molecule_host::runtime::process::ProcessRuntime;
use molecule_host::runtime::{AgentEnv, ContainerRuntime, StartSpec};
use molecule_host::safefs::{FileTree, RelPath};
use serde_json::json;
use uuid::Uuid;

on_both_backends!(
    a_workspace_token_cannot_make_its_agent_run_commands_as_the_host,
    auto_in_production_refuses_to_start_when_no_docker_engine_answers,
);

/// Long enough for an agent to start, register and heartbeat on a loaded CI machine.
const ONLINE: Duration = Duration::from_secs(60);

/// Whether the test (and so the in-process host) runs as root: the owner of `/proc/self`.
fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").expect("/proc/self").uid() == 0
}

/// A shell script that tries each access and prints one `name=yes|no` line per attempt
/// (`yes`: it succeeded), preceded by `uid=<n>` and `groups=<gid> …`.
fn probe_script(
    reads: &[(&str, &Path)],
    lists: &[(&str, &Path)],
    writes: &[(&str, &Path)],
) -> String {
    let mut script = String::from(
        "r() { if cat \"$2\" >/dev/null 2>&1; then echo \"$1=yes\"; else echo \"$1=no\"; fi; }\n\
         l() { if ls \"$2\" >/dev/null 2>&1; then echo \"$1=yes\"; else echo \"$1=no\"; fi; }\n\
         w() { if (echo pwned > \"$2\") 2>/dev/null; then echo \"$1=yes\"; else echo \"$1=no\"; fi; }\n\
         echo \"uid=$(id -u)\"\n\
         echo \"groups=$(id -G)\"\n",
    );
    for (letter, list) in [("r", reads), ("l", lists), ("w", writes)] {
        for (name, path) in list {
            script.push_str(&format!("{letter} {name} '{}'\n", path.display()));
        }
    }
    script
}

/// The `name=value` lines of a probe's output.
fn parse_probe(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// The SQLite file behind a `sqlite://` URL.
fn sqlite_file(url: &str) -> Option<&Path> {
    url.strip_prefix("sqlite://").map(Path::new)
}

async fn wait_settled(app: &TestApp, id: &str) {
    app.wait_settled(id, ONLINE).await;
}

async fn a_workspace_token_cannot_make_its_agent_run_commands_as_the_host(backend: DbBackend) {
    // Arrange: two agents on the process runtime, and a host file in the data dir.
    let app = TestApp::spawn_with(backend, |c| {
        process_runtime(c);
        c.builtin_extensions_dir = Some(builtin_extensions_dir());
    })
    .await;
    let victim = app.create_workspace("Victim", None).await;
    let neighbour = app.create_workspace("Neighbour", None).await;
    wait_settled(&app, &victim).await;
    wait_settled(&app, &neighbour).await;
    let data = app.data_dir().to_path_buf();
    let workspaces = data.join("workspaces");
    let host_file = data.join("host-secret.txt");
    std::fs::write(&host_file, "host-secret").unwrap();
    // The attacker holds the victim workspace's own token (the agent's `/configs/.auth_token`).
    let token = std::fs::read_to_string(workspaces.join(&victim).join("configs/.auth_token"))
        .expect("the agent's token file")
        .trim()
        .to_owned();
    let stamp = Uuid::new_v4().simple().to_string();
    let neighbour_configs = workspaces.join(&neighbour).join("configs");
    let own_file = format!("own-{stamp}");
    let tmp_file = std::env::temp_dir().join(format!("molecule-pwned-{stamp}"));
    let data_file = data.join(format!("pwned-{stamp}"));
    let neighbour_file = neighbour_configs.join(format!("pwned-{stamp}"));
    let database = sqlite_file(app.database_url()).map(Path::to_path_buf);
    let environ = Path::new("/proc")
        .join(std::process::id().to_string())
        .join("environ");
    let neighbour_config = neighbour_configs.join("config.yaml");
    let mut reads = vec![
        ("host_file", host_file.as_path()),
        ("neighbour_config", neighbour_config.as_path()),
        ("host_environ", environ.as_path()),
        ("own_config", Path::new("config.yaml")),
    ];
    if let Some(db) = &database {
        reads.push(("database", db));
    }
    let lists = [
        ("data_dir", data.as_path()),
        ("workspaces_dir", workspaces.as_path()),
        ("neighbour_dir", neighbour_configs.as_path()),
    ];
    let writes = [
        ("write_data_dir", data_file.as_path()),
        ("write_tmp", tmp_file.as_path()),
        ("write_neighbour", neighbour_file.as_path()),
        ("write_own", Path::new(&own_file)),
    ];
    let script = probe_script(&reads, &lists, &writes);
    let config = format!(
        "name: Victim\nbrain:\n  kind: command\n  timeout_secs: 30\n  command:\n    - sh\n    - -c\n    - |\n{}",
        script
            .lines()
            .map(|line| format!("      {line}\n"))
            .collect::<String>()
    );

    // Act: with its own token, the workspace rewrites its config to a command brain; the write
    // restarts the agent, and an A2A message makes it run the command.
    let saved = app
        .with_token(&token)
        .put(
            &format!("/workspaces/{victim}/files/config.yaml"),
            json!({ "content": config }),
        )
        .await
        .expect(200);
    assert_eq!(saved["restart"]["kind"], "restart_now", "{saved}");
    eventually(ONLINE, || async {
        (app.restart_count(&victim).await >= 1).then_some(())
    })
    .await;
    wait_settled(&app, &victim).await;
    let reply = app
        .post(
            &format!("/workspaces/{victim}/a2a"),
            json!({ "params": { "message": { "content": "probe" } } }),
        )
        .await
        .expect(200);
    let text = reply["result"]["parts"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // Whatever happened, leave nothing behind outside the test's directories.
    let _ = std::fs::remove_file(&tmp_file);
    let _ = std::fs::remove_file(&data_file);
    let _ = std::fs::remove_file(&neighbour_file);

    // Assert: the command ran (its own files are its to use), not as root, and reached nothing
    // of the host's or the neighbour's.
    let mut seen = parse_probe(&text);
    let uid: u32 = seen
        .remove("uid")
        .and_then(|u| u.parse().ok())
        .unwrap_or_else(|| panic!("the command's output names its uid: {reply}"));
    let groups = seen.remove("groups").unwrap_or_default();
    let mut expected: BTreeMap<String, String> = reads
        .iter()
        .map(|(name, _)| name)
        .chain(lists.iter().map(|(name, _)| name))
        .chain(writes.iter().map(|(name, _)| name))
        .map(|name| {
            let allowed = name.starts_with("own_") || name.starts_with("write_own");
            (
                (*name).to_owned(),
                if allowed { "yes" } else { "no" }.to_owned(),
            )
        })
        .collect();
    if running_as_root() {
        // A root host gives each agent an unprivileged uid of its own.
        let root = if uid == 0 { "yes" } else { "no" };
        seen.insert("runs_as_root".into(), root.into());
        expected.insert("runs_as_root".into(), "no".into());
        // Its group is its own, and the host's supplementary groups are gone.
        seen.insert("groups".into(), groups);
        expected.insert("groups".into(), uid.to_string());
    }
    assert_eq!(seen, expected, "what the agent's command could reach");
    assert!(
        workspaces
            .join(&victim)
            .join("configs")
            .join(&own_file)
            .is_file(),
        "the command wrote in its own directory"
    );
}

async fn auto_in_production_refuses_to_start_when_no_docker_engine_answers(backend: DbBackend) {
    let mut app = TestApp::spawn(backend).await;
    app.stop().await.expect("the first host stops");
    let key = Some(base64_key().into());
    let nowhere = "unix:///nonexistent/molecule-test/docker.sock".to_owned();

    let refused = app
        .run_once_with(|c| {
            c.env = Environment::Production;
            c.secrets_encryption_key = key.clone();
            c.runtime.kind = RuntimeKind::Auto;
            c.runtime.docker_host = Some(nowhere.clone());
        })
        .await;
    let err = format!(
        "{:#}",
        refused.expect_err("auto must not fall back to local processes in production")
    );
    assert!(
        err.contains("Docker") && err.contains("runtime.kind = \"process\""),
        "the message says why and what to do: {err}"
    );

    // Chosen explicitly, the process runtime starts in production; and outside production
    // `auto` still falls back to it.
    app.run_once_with(|c| {
        c.env = Environment::Production;
        c.secrets_encryption_key = key.clone();
        c.runtime.kind = RuntimeKind::Process;
        c.runtime.agent_binary = Some(agent_binary());
    })
    .await
    .expect("an explicit process runtime starts in production");
    app.run_once_with(|c| {
        c.runtime.kind = RuntimeKind::Auto;
        c.runtime.docker_host = Some(nowhere.clone());
        c.runtime.agent_binary = Some(agent_binary());
    })
    .await
    .expect("outside production, auto falls back to local processes");
}

/// A valid `SECRETS_ENCRYPTION_KEY` (base64 of 32 bytes).
fn base64_key() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode([7u8; 32])
}

/// Commands the host runs in a workspace's directory (`ContainerRuntime::exec`) are confined
/// like its agent: not root, nothing of the host's data dir, its own directory writable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_the_host_runs_in_a_workspace_are_confined_like_its_agent() {
    let data = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: data.path().to_path_buf(),
        runtime: molecule_host::config::RuntimeConfig {
            kind: RuntimeKind::Process,
            agent_binary: Some(agent_binary()),
            ..Default::default()
        },
        ..Config::default()
    };
    let runtime = ProcessRuntime::new(&config).expect("process runtime");
    std::fs::write(data.path().join("host-secret.txt"), "host-secret").unwrap();
    let id = Uuid::new_v4();
    let mut env = AgentEnv::default();
    env.set("WORKSPACE_ID", id.to_string());
    env.set("PLATFORM_URL", "http://127.0.0.1:9");
    let mut files = FileTree::new();
    files.insert(
        RelPath::parse("config.yaml").unwrap(),
        "name: Exec\n",
        0o644,
    );
    files.insert(RelPath::parse(".auth_token").unwrap(), "token-value", 0o600);
    runtime
        .start(&StartSpec {
            workspace_id: id,
            runtime: "langgraph".into(),
            tier: 2,
            env,
            files,
            port: molecule_host::runtime::free_loopback_port().unwrap(),
        })
        .await
        .expect("the agent starts");
    let run = |script: String| {
        let runtime = &runtime;
        async move {
            runtime
                .exec(id, &["sh".into(), "-c".into(), script])
                .await
                .expect("exec runs")
        }
    };

    let uid = run("id -u".into()).await;
    if running_as_root() {
        assert_ne!(uid.stdout.trim(), "0", "{uid:?}");
    }
    let secret = data.path().join("host-secret.txt");
    let read = run(format!("cat '{}'", secret.display())).await;
    assert_ne!(read.exit_code, 0, "{read:?}");
    assert!(!read.stdout.contains("host-secret"), "{read:?}");
    let outside = data.path().join("pwned-by-exec");
    let write = run(format!("echo x > '{}'", outside.display())).await;
    assert_ne!(write.exit_code, 0, "{write:?}");
    assert!(!outside.exists());
    let own = run("echo mine > own.txt && cat own.txt .auth_token".into()).await;
    assert_eq!(own.exit_code, 0, "{own:?}");
    assert_eq!(own.stdout, "mine\ntoken-value", "{own:?}");
    runtime.remove(id).await.unwrap();
}
