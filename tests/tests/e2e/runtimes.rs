//! The `ContainerRuntime` contract, driven directly on both implementations: files in and out of
//! running and stopped agents, exec, digests, logs, idempotent stop/remove, and the managed list.

use std::sync::Arc;
use std::time::Duration;

use molecule_e2e::{DbBackend, Runtime, TestApp, agent_binary, docker, docker_runtime, eventually};
use molecule_host::Config;
use molecule_host::config::RuntimeKind;
use molecule_host::runtime::docker::DockerRuntime;
use molecule_host::runtime::process::ProcessRuntime;
use molecule_host::runtime::{AgentEnv, ContainerRuntime, RuntimeError, StartSpec, WriteTarget};
use molecule_host::safefs::{FileTree, RelPath};
use serde_json::json;
use uuid::Uuid;

struct Fixture {
    runtime: Arc<dyn ContainerRuntime>,
    kind: Runtime,
    _data: tempfile::TempDir,
    label: Option<String>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(label) = &self.label {
            let filter = format!("label={}={label}", molecule_e2e::TEST_LABEL);
            let ids = docker(&["ps", "-aq", "--filter", &filter]);
            for id in ids.split_whitespace() {
                docker(&["rm", "-f", "-v", id]);
            }
            let volumes = docker(&["volume", "ls", "-q", "--filter", &filter]);
            for volume in volumes.split_whitespace() {
                docker(&["volume", "rm", "-f", volume]);
            }
        }
    }
}

async fn fixture(kind: Runtime) -> Fixture {
    let data = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: data.path().to_path_buf(),
        ..Config::default()
    };
    match kind {
        Runtime::Process => {
            config.runtime.kind = RuntimeKind::Process;
            config.runtime.agent_binary = Some(agent_binary());
            let runtime = ProcessRuntime::new(&config).expect("process runtime");
            Fixture {
                runtime: Arc::new(runtime),
                kind,
                _data: data,
                label: None,
            }
        }
        Runtime::Docker => {
            docker_runtime(&mut config);
            let label = config.runtime.labels.get(molecule_e2e::TEST_LABEL).cloned();
            let runtime = DockerRuntime::connect(&config.runtime)
                .await
                .expect("docker runtime");
            Fixture {
                runtime: Arc::new(runtime),
                kind,
                _data: data,
                label,
            }
        }
    }
}

fn path(raw: &str) -> RelPath {
    RelPath::parse(raw).unwrap()
}

fn spec(id: Uuid) -> StartSpec {
    let mut env = AgentEnv::default();
    env.set("WORKSPACE_ID", id.to_string());
    // Nobody listens there: the agent keeps retrying registration, which is all this needs.
    env.set("PLATFORM_URL", "http://127.0.0.1:9");
    env.set("HEARTBEAT_INTERVAL_SECS", "1");
    env.set("SOME_SECRET", "s3cr3t-value");
    let mut files = FileTree::new();
    files.insert(path("config.yaml"), "name: Direct\n", 0o644);
    files.insert(path("skills/a/SKILL.md"), "---\nname: A\n---\n", 0o644);
    files.insert(path(".auth_token"), "token-value", 0o600);
    StartSpec {
        workspace_id: id,
        runtime: "langgraph".into(),
        tier: 2,
        env,
        files,
        port: molecule_host::runtime::free_loopback_port().unwrap(),
    }
}

macro_rules! on_both {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn process() {
                    super::$name(molecule_e2e::Runtime::Process).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn docker() {
                    super::$name(molecule_e2e::Runtime::Docker).await;
                }
            }
        )+
    };
}

on_both!(
    files_exec_digests_and_logs_work_on_a_running_agent,
    a_stopped_agent_is_written_through_its_stored_files_and_removal_is_idempotent,
);

async fn files_exec_digests_and_logs_work_on_a_running_agent(kind: Runtime) {
    let fx = fixture(kind).await;
    let rt = &fx.runtime;
    let id = Uuid::new_v4();
    let started = rt.start(&spec(id)).await.expect("starts");
    assert!(started.url.starts_with("http://127.0.0.1:"), "{started:?}");
    eventually(Duration::from_secs(30), || async {
        rt.inspect(id).await.unwrap().running.then_some(())
    })
    .await;
    // The agent answers on the URL the runtime reported.
    let health = eventually(Duration::from_secs(30), || async {
        reqwest::get(format!("{}/health", started.url)).await.ok()
    })
    .await;
    assert!(health.status().is_success());

    let mut tree = FileTree::new();
    tree.insert(path("skills/b/SKILL.md"), "b", 0o644);
    assert_eq!(
        rt.write_files(id, &tree).await.unwrap(),
        WriteTarget::Running
    );
    assert_eq!(
        rt.read_file(id, "/configs", &path("skills/b/SKILL.md"))
            .await
            .unwrap(),
        b"b"
    );
    let digests = rt.digests(id, Some(&path("skills"))).await.unwrap();
    assert_eq!(
        digests.keys().collect::<Vec<_>>(),
        ["a/SKILL.md", "b/SKILL.md"]
    );
    assert_eq!(digests["b/SKILL.md"], molecule_host::safefs::digest(b"b"));
    let listed = rt.list_files(id, "/configs", None, 1).await.unwrap();
    let names: Vec<&str> = listed.iter().map(|f| f.path.as_str()).collect();
    assert!(
        names.contains(&"config.yaml") && names.contains(&"skills"),
        "{names:?}"
    );
    assert!(
        !names.contains(&"skills/a"),
        "depth 1 stays at the top: {names:?}"
    );
    assert!(matches!(
        rt.read_file(id, "/configs", &path("missing.md")).await,
        Err(RuntimeError::NotFound)
    ));

    // The token file is private to the agent.
    let argv: Vec<String> = [
        "ls",
        "-l",
        match kind {
            Runtime::Docker => "/configs/.auth_token",
            Runtime::Process => ".auth_token",
        },
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = rt.exec(id, &argv).await.unwrap();
    assert_eq!(out.exit_code, 0, "{out:?}");
    assert!(out.stdout.starts_with("-rw-------"), "{out:?}");
    let failing = rt
        .exec(
            id,
            &["sh".into(), "-c".into(), "echo oops >&2; exit 3".into()],
        )
        .await
        .unwrap();
    assert_eq!(failing.exit_code, 3);
    assert_eq!(failing.stderr.trim(), "oops");

    rt.remove_path(id, &path("skills/b")).await.unwrap();
    assert!(matches!(
        rt.read_file(id, "/configs", &path("skills/b/SKILL.md"))
            .await,
        Err(RuntimeError::NotFound)
    ));

    // The agent logs its registration attempts; no secret value appears in them.
    let logs = eventually(Duration::from_secs(30), || async {
        rt.logs(id, 50).await.ok().filter(|l| !l.is_empty())
    })
    .await;
    assert!(
        !logs.contains("s3cr3t-value") && !logs.contains("token-value"),
        "{logs}"
    );
    assert!(rt.managed().await.unwrap().contains(&id));
    rt.remove(id).await.unwrap();
}

async fn a_stopped_agent_is_written_through_its_stored_files_and_removal_is_idempotent(
    kind: Runtime,
) {
    let fx = fixture(kind).await;
    let rt = &fx.runtime;
    let id = Uuid::new_v4();
    let mut tree = FileTree::new();
    tree.insert(path("late.md"), "late", 0o644);
    // Nothing exists yet: nowhere to write.
    assert!(matches!(
        rt.write_files(id, &tree).await,
        Err(RuntimeError::Offline)
    ));

    rt.start(&spec(id)).await.unwrap();
    rt.stop(id).await.unwrap();
    rt.stop(id).await.unwrap();
    let stopped = rt.inspect(id).await.unwrap();
    assert!(!stopped.running);
    assert_eq!(
        rt.write_files(id, &tree).await.unwrap(),
        WriteTarget::Stored
    );
    assert_eq!(
        rt.read_file(id, "/configs", &path("late.md"))
            .await
            .unwrap(),
        b"late"
    );
    if fx.kind == Runtime::Docker {
        // A command needs a running container.
        assert!(matches!(
            rt.exec(id, &["true".into()]).await,
            Err(RuntimeError::Offline)
        ));
    }

    if fx.kind == Runtime::Docker {
        // With the container gone but its volume kept, files still go where the next start
        // reads them.
        docker(&["rm", "-f", &format!("ws-{}", &id.to_string()[..12])]);
        let mut more = FileTree::new();
        more.insert(path("volume-only.md"), "v", 0o644);
        assert_eq!(
            rt.write_files(id, &more).await.unwrap(),
            WriteTarget::Stored
        );
        rt.remove_path(id, &path("late.md")).await.unwrap();
        rt.start(&spec(id)).await.unwrap();
        assert_eq!(
            rt.read_file(id, "/configs", &path("volume-only.md"))
                .await
                .unwrap(),
            b"v"
        );
        assert!(matches!(
            rt.read_file(id, "/configs", &path("late.md")).await,
            Err(RuntimeError::NotFound)
        ));
    }

    rt.remove(id).await.unwrap();
    rt.remove(id).await.unwrap();
    assert_eq!(rt.inspect(id).await.unwrap(), Default::default());
    assert!(matches!(
        rt.write_files(id, &tree).await,
        Err(RuntimeError::Offline)
    ));
    assert!(!rt.managed().await.unwrap().contains(&id));
}

/// The agent image (one static binary on busybox) resolves host names: here the host is given by
/// a name only the container's `/etc/hosts` knows (as Docker's `--add-host` and Kubernetes'
/// `hostAliases` write it), and the agent registers through it. Kubernetes deployments rely on
/// this to give agents the host's Service name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_image_reaches_a_host_given_by_name() {
    let app = TestApp::spawn_with(DbBackend::Sqlite, docker_runtime).await;
    let label = app.config.runtime.labels[molecule_e2e::TEST_LABEL].clone();
    let network = app.config.runtime.network.clone();
    let gateway = docker(&[
        "network",
        "inspect",
        "-f",
        "{{(index .IPAM.Config 0).Gateway}}",
        &network,
    ]);
    assert!(!gateway.is_empty(), "the runtime created {network}");
    // An external workspace: the host starts nothing for it; this test runs its agent.
    let created = app
        .post("/workspaces", json!({ "name": "Named", "external": true }))
        .await
        .expect(201);
    let id = created["id"].as_str().expect("an id").to_owned();
    let token = created["connection"]["auth_token"]
        .as_str()
        .expect("a token")
        .to_owned();
    let configs = tempfile::tempdir().unwrap();
    std::fs::write(configs.path().join(".auth_token"), &token).unwrap();
    std::fs::write(configs.path().join("config.yaml"), "name: named\n").unwrap();
    // The host listens for agents on the network's gateway at its own port (when free there,
    // which it is unless something else took that port on that address).
    let port = app.api.addr.port();
    let container = format!("named-{}", molecule_e2e::id12(&id));
    let started = std::process::Command::new("docker")
        .args(["run", "-d", "--name", &container, "--network", &network])
        .args(["--label", &format!("{}={label}", molecule_e2e::TEST_LABEL)])
        .args(["--add-host", &format!("molecule-host.test:{gateway}")])
        .args(["-v", &format!("{}:/configs", configs.path().display())])
        .args(["-e", &format!("WORKSPACE_ID={id}")])
        .args([
            "-e",
            &format!("PLATFORM_URL=http://molecule-host.test:{port}"),
        ])
        .arg(molecule_e2e::AGENT_IMAGE)
        .output()
        .expect("docker runs");
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    let online = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let row = app.get(&format!("/workspaces/{id}")).await.expect(200);
            if row["status"] == "online" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let logs = docker(&["logs", &container]);
    assert!(
        online.is_ok(),
        "the agent never registered by name:\n{logs}"
    );
}
