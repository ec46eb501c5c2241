//! The host as operators deploy it.
//!
//! - The single-machine recipe (`deploy/single-machine`) comes up from the host image
//!   (`make host-image`): the host runs in a container as a non-root user, manages its agents as
//!   sibling containers through the mounted Docker socket, calls them by name on their shared
//!   network and is called back by its service name; the demo org's workspaces come online, an
//!   A2A call reaches one, and the image's health check reports healthy. Torn down with its
//!   volumes and agents.
//! - The Kubernetes Role (`deploy/kubernetes`) grants exactly the verbs the Pod runtime calls,
//!   and nothing the Role in docs/kubernetes.md does not.
//!
//! The recipe runs under a unique Compose project name, network and port; the host container,
//! its network and volume (through a Compose override) and its agents (through `runtime.labels`
//! in the host's config file) carry `molecule.test.host`, so `make test`'s leftover check sees
//! anything this spec fails to remove.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use base64::Engine as _;
use molecule_e2e::{AGENT_IMAGE, Api, TEST_LABEL, docker, free_port};
use serde_json::Value;

/// The image `make host-test-image` builds (make test does): the debug host the suite already
/// built, in the same layout as `make host-image`'s static release build, which the recipe runs
/// by default.
const HOST_IMAGE: &str = "molecule-host:test";
/// The uid the image runs the host as.
const HOST_UID: &str = "10001";
/// The org the recipe imports at start.
const DEMO: &str = "demo";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("the repository root")
}

/// `docker compose` (v2) when the engine's CLI has it, else the `docker-compose` (v1) binary.
fn compose_command() -> Vec<String> {
    let works = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if works("docker", &["compose", "version"]) {
        vec!["docker".into(), "compose".into()]
    } else if works("docker-compose", &["version"]) {
        vec!["docker-compose".into()]
    } else {
        panic!("neither `docker compose` nor `docker-compose` runs; the deploy spec needs one");
    }
}

/// Panics with the way out when an image the recipe needs is missing.
fn require_image(image: &str, make_target: &str) {
    let out = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", image])
        .output()
        .expect("the docker CLI runs; the deploy spec needs Docker");
    assert!(
        out.status.success(),
        "image {image} unavailable ({}): run `make {make_target}` (make test does)",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Polls `check` every `every` until it returns `Some`, or panics after `timeout` with what the
/// last check saw (`describe`).
async fn poll<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("{what}: not reached within {timeout:?}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(every).await,
        }
    }
}

/// One bring-up of the recipe under its own project name; brought down (with its volumes and
/// every agent it started) when dropped, also when the spec fails.
struct Recipe {
    compose: Vec<String>,
    project: String,
    /// The value of `molecule.test.host` on everything this run creates.
    label: String,
    port: u16,
    admin_token: String,
    files: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Recipe {
    fn new() -> Self {
        let run = uuid::Uuid::new_v4().simple().to_string();
        let project = format!("molecule-deploy-{}", &run[..12]);
        let label = uuid::Uuid::new_v4().to_string();
        let port = free_port();
        let admin_token = format!("deploy-admin-{run}");
        let key = [uuid::Uuid::new_v4(), uuid::Uuid::new_v4()]
            .iter()
            .flat_map(|u| u.into_bytes())
            .collect::<Vec<u8>>();
        let files = tempfile::tempdir().expect("a temp dir");

        // What an operator writes into molecule.env.
        let env_file = files.path().join("molecule.env");
        std::fs::write(
            &env_file,
            format!(
                "MOLECULE_ENV=production\nMOLECULE_ADMIN_TOKEN={admin_token}\n\
                 MOLECULE_SECRETS_ENCRYPTION_KEY={}\n",
                base64::engine::general_purpose::STANDARD.encode(&key)
            ),
        )
        .expect("writing the env file");
        // The host's config file: its agents carry this run's label, and the orphan sweep only
        // ever touches containers that do.
        let config_file = files.path().join("host.toml");
        std::fs::write(
            &config_file,
            format!("[runtime.labels]\n\"{TEST_LABEL}\" = \"{label}\"\n"),
        )
        .expect("writing the host config");
        // The host container, its network and its data volume carry the label too.
        let network = format!("{project}-agents");
        std::fs::write(
            files.path().join("labels.yml"),
            format!(
                "services:\n  molecule-host:\n    labels:\n      {TEST_LABEL}: \"{label}\"\n\
                 networks:\n  agents:\n    name: {network}\n    driver: bridge\n    labels:\n      {TEST_LABEL}: \"{label}\"\n\
                 volumes:\n  data:\n    labels:\n      {TEST_LABEL}: \"{label}\"\n"
            ),
        )
        .expect("writing the compose override");

        let socket = Path::new("/var/run/docker.sock");
        let gid = std::fs::metadata(socket)
            .unwrap_or_else(|e| panic!("{}: {e}; the recipe mounts it", socket.display()))
            .gid();
        let path = |p: &Path| p.to_str().expect("a UTF-8 path").to_owned();
        let env = vec![
            ("MOLECULE_HOST_IMAGE".to_owned(), HOST_IMAGE.to_owned()),
            ("MOLECULE_PUBLISH".to_owned(), format!("127.0.0.1:{port}")),
            ("MOLECULE_NETWORK_NAME".to_owned(), network),
            ("DOCKER_GID".to_owned(), gid.to_string()),
            ("MOLECULE_ENV_FILE".to_owned(), path(&env_file)),
            ("MOLECULE_CONFIG_FILE".to_owned(), path(&config_file)),
            ("MOLECULE_IMPORT_ORG".to_owned(), DEMO.to_owned()),
        ];
        Recipe {
            compose: compose_command(),
            project,
            label,
            port,
            admin_token,
            files,
            env,
        }
    }

    /// Runs the Compose CLI on the recipe (and this run's override) with `args`.
    fn compose(&self, args: &[&str]) -> Output {
        let recipe = repo_root().join("deploy/single-machine/docker-compose.yml");
        let labels = self.files.path().join("labels.yml");
        Command::new(&self.compose[0])
            .args(&self.compose[1..])
            .arg("--project-name")
            .arg(&self.project)
            .arg("--file")
            .arg(&recipe)
            .arg("--file")
            .arg(&labels)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("the Compose CLI runs")
    }

    fn up(&self) {
        let out = self.compose(&["up", "--detach", "--no-build"]);
        assert!(
            out.status.success(),
            "compose up failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The id of the host's container.
    fn host_container(&self) -> String {
        let filter = format!("label=com.docker.compose.project={}", self.project);
        let id = docker(&["ps", "-aq", "--filter", &filter]);
        assert!(
            !id.is_empty() && !id.contains(char::is_whitespace),
            "one host container for project {}, found {id:?}",
            self.project
        );
        id
    }

    fn api(&self) -> Api {
        Api::at(
            ([127, 0, 0, 1], self.port).into(),
            Some(&self.admin_token),
            Duration::from_secs(10),
        )
    }

    fn labelled(&self, kind: &[&str]) -> Vec<String> {
        let filter = format!("label={TEST_LABEL}={}", self.label);
        let mut args = kind.to_vec();
        args.extend(["-q", "--filter", &filter]);
        docker(&args)
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }

    /// Stops the host first (so it starts nothing more), removes its agents and their volumes,
    /// then the project with its network and data volume.
    fn down(&self) {
        self.compose(&["stop", "--timeout", "10"]);
        let agents = self.labelled(&["ps", "-a"]);
        if !agents.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(agents.iter().map(String::as_str));
            docker(&args);
        }
        let out = self.compose(&["down", "--volumes", "--remove-orphans", "--timeout", "5"]);
        if !out.status.success() {
            eprintln!(
                "compose down failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let volumes = self.labelled(&["volume", "ls"]);
        if !volumes.is_empty() {
            let mut args = vec!["volume", "rm", "-f"];
            args.extend(volumes.iter().map(String::as_str));
            docker(&args);
        }
    }
}

impl Drop for Recipe {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let out = self.compose(&["logs", "--no-color", "--tail", "80"]);
            eprintln!(
                "--- host logs ({}) ---\n{}{}",
                self.project,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.down();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_single_machine_recipe_runs_the_demo_org_with_a_non_root_host_in_a_container() {
    require_image(HOST_IMAGE, "host-test-image");
    require_image(AGENT_IMAGE, "image");
    let started = Instant::now();
    let recipe = Recipe::new();

    recipe.up();
    let host = recipe.host_container();
    let api = recipe.api();

    // The demo org's every workspace comes online: the host reached the engine through the
    // socket's group, started the agents on the shared network, and they called it back.
    let expected = poll(
        "the demo template listed",
        Duration::from_secs(60),
        Duration::from_millis(500),
        async || {
            let reply = api
                .client
                .get(api.url("/org/templates"))
                .bearer_auth(&recipe.admin_token)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let templates: Value = reply.json().await.map_err(|e| e.to_string())?;
            templates
                .as_array()
                .and_then(|all| all.iter().find(|t| t["dir"] == DEMO))
                .and_then(|demo| demo["workspaces"].as_u64())
                .ok_or_else(|| templates.to_string())
        },
    )
    .await;
    assert!(expected > 0, "the demo org has workspaces");
    let workspaces = poll(
        "every demo workspace online",
        Duration::from_secs(240),
        Duration::from_secs(1),
        async || {
            let all = api.workspaces().await;
            let statuses: Vec<String> = all
                .iter()
                .map(|w| format!("{}={}", w["name"], w["status"]))
                .collect();
            let online = all.iter().filter(|w| w["status"] == "online").count();
            if all.len() as u64 == expected && online == all.len() {
                Ok(all)
            } else {
                Err(statuses.join(", "))
            }
        },
    )
    .await;

    // Reached by name on the network, with no agent port published on the machine.
    for workspace in &workspaces {
        let url = workspace["url"].as_str().unwrap_or_default();
        assert!(
            url.starts_with("http://ws-") && url.ends_with(":8000"),
            "{} is reached by its container's name: {url}",
            workspace["name"]
        );
    }
    let agents: Vec<String> = recipe
        .labelled(&["ps"])
        .into_iter()
        .filter(|id| !host.starts_with(id.as_str()) && !id.starts_with(host.as_str()))
        .collect();
    assert_eq!(
        agents.len(),
        workspaces.len(),
        "one labelled agent container per workspace"
    );
    for agent in &agents {
        let ports = docker(&[
            "inspect",
            "--format",
            "{{json .HostConfig.PortBindings}}",
            agent,
        ]);
        assert!(
            matches!(ports.as_str(), "{}" | "null"),
            "agent {agent} publishes no port: {ports}"
        );
    }

    // The host calls an agent by name through its A2A proxy (production's URL policy admits
    // the runtime's own names on their private network).
    let ceo = workspaces
        .iter()
        .find(|w| w["parent_id"].is_null())
        .expect("a root workspace");
    let id = ceo["id"].as_str().expect("an id");
    let answer = api
        .post(
            &format!("/workspaces/{id}/a2a"),
            serde_json::json!({ "jsonrpc": "2.0", "id": 1, "method": "message/send",
                "params": { "message": { "role": "user",
                    "parts": [{ "kind": "text", "text": "hello from the deploy spec" }] } } }),
        )
        .await
        .expect(200);
    let text = answer["result"]["parts"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(
        text.contains("hello from the deploy spec"),
        "the agent's echo came back: {answer}"
    );

    // The host runs as the image's non-root user, and its health check passes.
    let user = docker(&["inspect", "--format", "{{.Config.User}}", &host]);
    assert_eq!(user, format!("{HOST_UID}:{HOST_UID}"), "the image's user");
    let uid = docker(&["exec", &host, "id", "-u"]);
    assert_eq!(uid, HOST_UID, "the host process is not root");
    poll(
        "the container's health check healthy",
        Duration::from_secs(60),
        Duration::from_secs(1),
        async || {
            let status = docker(&["inspect", "--format", "{{.State.Health.Status}}", &host]);
            if status == "healthy" {
                Ok(())
            } else {
                Err(status)
            }
        },
    )
    .await;

    // Down: nothing of this run is left.
    let network = format!("{}-agents", recipe.project);
    let label = recipe.label.clone();
    drop(recipe);
    let filter = format!("label={TEST_LABEL}={label}");
    assert_eq!(
        docker(&["ps", "-aq", "--filter", &filter]),
        "",
        "containers"
    );
    assert_eq!(
        docker(&["volume", "ls", "-q", "--filter", &filter]),
        "",
        "volumes"
    );
    assert_eq!(
        docker(&["network", "inspect", "--format", "{{.Id}}", &network]),
        "",
        "the agents' network"
    );
    eprintln!(
        "deploy spec: up, online, healthy and down in {:?}",
        started.elapsed()
    );
}

/// The rules of the Role named `molecule-host` in a YAML text written as the manifests write
/// it (flow lists, one `resources:` line and one `verbs:` line per rule): resource → verbs.
fn role_rules(yaml: &str) -> BTreeMap<String, BTreeSet<String>> {
    let list = |line: &str| -> Vec<String> {
        let inner = line
            .split_once('[')
            .and_then(|(_, rest)| rest.rsplit_once(']'))
            .map_or("", |(inner, _)| inner);
        inner
            .split(',')
            .map(|item| item.trim().trim_matches('"').to_owned())
            .filter(|item| !item.is_empty())
            .collect()
    };
    let mut rules: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut in_role = false;
    let mut resources = Vec::new();
    for line in yaml.lines() {
        let trimmed = line.trim_start();
        // A document's own kind starts its line (a roleRef's is indented).
        if line.starts_with("kind:") {
            in_role = line.trim_end() == "kind: Role";
        } else if in_role && trimmed.starts_with("resources:") {
            resources = list(trimmed);
        } else if in_role && trimmed.starts_with("verbs:") {
            for resource in resources.drain(..) {
                rules.entry(resource).or_default().extend(list(trimmed));
            }
        }
    }
    rules
}

#[test]
fn the_kubernetes_role_grants_exactly_what_the_pod_runtime_calls() {
    // What host/src/runtime/kubernetes calls, per resource.
    let calls: &[(&str, &[&str])] = &[
        // create (start, files helper), get (read before watching), watch (until running or
        // gone), list (orphan sweep), delete (stop, restart, helper done)
        ("pods", &["create", "get", "watch", "list", "delete"]),
        // WebSocket exec is a GET; clusters since 1.31 also check create
        ("pods/exec", &["get", "create"]),
        ("pods/log", &["get"]),
        // server-side apply (patch, and create when the object is new), delete on remove
        ("services", &["create", "patch", "delete"]),
        ("configmaps", &["create", "patch", "delete"]),
        ("secrets", &["create", "patch", "delete"]),
        // create (start), get (files of a stopped workspace), list (orphan sweep), delete
        (
            "persistentvolumeclaims",
            &["create", "get", "list", "delete"],
        ),
    ];
    let expected: BTreeMap<String, BTreeSet<String>> = calls
        .iter()
        .map(|(resource, verbs)| {
            (
                (*resource).to_owned(),
                verbs.iter().map(|v| (*v).to_owned()).collect(),
            )
        })
        .collect();
    let root = repo_root();
    let manifest = std::fs::read_to_string(root.join("deploy/kubernetes/10-rbac.yaml"))
        .expect("reading the RBAC manifest");
    let granted = role_rules(&manifest);
    assert_eq!(
        granted, expected,
        "the Role in deploy/kubernetes/10-rbac.yaml"
    );

    // Never more than the Role the Kubernetes guide documents.
    let guide = std::fs::read_to_string(root.join("docs/kubernetes.md")).expect("the guide");
    let documented = role_rules(&guide);
    for (resource, verbs) in &granted {
        let allowed = documented.get(resource).cloned().unwrap_or_default();
        let extra: Vec<_> = verbs.difference(&allowed).collect();
        assert!(
            extra.is_empty(),
            "{resource}: the manifest grants {extra:?} beyond docs/kubernetes.md"
        );
    }
}
