//! The runtime against an in-process fake of the Kubernetes API server, or against a real
//! cluster when `MOLECULE_TEST_KUBECONFIG` names a kubeconfig (then the exact request
//! sequences are not checked; everything else is). The fake keeps objects in memory, plays
//! the kubelet when a Pod is watched (a Pending Pod runs its init container and becomes
//! Running; a deleted Pod disappears), runs exec commands for real against per-claim
//! directories, and records every request.

use tokio::io::AsyncWriteExt as _;

use super::fake::{self, FakeApi};
use super::*;
use crate::runtime::AgentEnv;

/// What a test runs against.
struct Harness {
    runtime: KubernetesRuntime,
    fake: Option<FakeApi>,
}

impl Harness {
    async fn new() -> Self {
        let mut settings = RuntimeConfig {
            stop_timeout_secs: 2,
            ..RuntimeConfig::default()
        };
        settings.kubernetes.start_timeout_secs = 120;
        if let Some(path) = crate::config::test_kubeconfig() {
            let kubeconfig = kube::config::Kubeconfig::read_from(&path)
                .expect("MOLECULE_TEST_KUBECONFIG names a readable kubeconfig");
            let config = kube::Config::from_custom_kubeconfig(
                kubeconfig,
                &kube::config::KubeConfigOptions::default(),
            )
            .await
            .expect("the kubeconfig is usable");
            // Each test's objects carry its own label, so parallel runs never meet.
            settings.labels.insert(
                "molecule.test.run".into(),
                Uuid::new_v4().simple().to_string(),
            );
            let client = Client::try_from(config).expect("a client for the cluster");
            return Harness {
                runtime: KubernetesRuntime::with_client(client, &settings),
                fake: None,
            };
        }
        let fake = FakeApi::start().await;
        Harness {
            runtime: KubernetesRuntime::with_client(fake.client(), &settings),
            fake: Some(fake),
        }
    }

    /// Asserts the requests since the last call, in order (fake only).
    fn expect_requests(&self, expected: &[String]) {
        if let Some(fake) = &self.fake {
            assert_eq!(fake.take_requests(), expected);
        }
    }

    /// Forgets the requests so far (fake only).
    fn forget_requests(&self) {
        if let Some(fake) = &self.fake {
            fake.take_requests();
        }
    }
}

fn spec(id: Uuid, tier: i32) -> StartSpec {
    let mut env = AgentEnv::default();
    env.set("WORKSPACE_ID", id.to_string());
    env.set("ANTHROPIC_API_KEY", "sk-very-secret-value");
    let mut files = FileTree::new();
    files.insert(
        RelPath::parse("config.yaml").unwrap(),
        crate::workspaces::lifecycle::generated_config("kube", None, tier, "langgraph", None),
        0o644,
    );
    files.insert(RelPath::parse("skills/a/SKILL.md").unwrap(), "# A\n", 0o644);
    files.insert(
        RelPath::parse(".auth_token").unwrap(),
        "token-very-secret-value",
        0o600,
    );
    StartSpec {
        workspace_id: id,
        runtime: "langgraph".into(),
        tier,
        env,
        files,
        port: 0,
    }
}

fn path(raw: &str) -> RelPath {
    RelPath::parse(raw).unwrap()
}

/// The requests of a start of a workspace with no Pod yet.
fn first_start(n: &str) -> Vec<String> {
    vec![
        format!("DELETE pods/{n}"),
        "POST persistentvolumeclaims".into(),
        format!("PATCH secrets/{n}-env"),
        format!("PATCH secrets/{n}-files"),
        format!("PATCH configmaps/{n}-files"),
        format!("PATCH services/{n}"),
        "POST pods".into(),
        format!("GET pods?watch=true&fieldSelector=metadata.name={n}"),
    ]
}

/// Stopping a Pod that exists: delete, read (still terminating), watch until it is gone.
fn pod_deletion(n: &str) -> Vec<String> {
    vec![
        format!("DELETE pods/{n}"),
        format!("GET pods/{n}"),
        format!("GET pods?watch=true&fieldSelector=metadata.name={n}"),
    ]
}

#[tokio::test]
async fn start_creates_the_objects_in_order_and_waits_for_the_pod_to_run() {
    let h = Harness::new().await;
    let id = Uuid::new_v4();
    let n = pod_name(id);

    let started = h.runtime.start(&spec(id, 2)).await.expect("start");

    assert_eq!(started.url, format!("http://{n}.molecule.svc:8000"));
    h.expect_requests(&first_start(&n));
    let state = h.runtime.inspect(id).await.unwrap();
    assert_eq!(
        state,
        Inspection {
            exists: true,
            running: true,
            exit_code: None
        }
    );
    h.expect_requests(&[format!("GET pods/{n}")]);
    // The init step laid the first-start files (public and private) over /configs.
    let token = h
        .runtime
        .read_file(id, CONFIGS_ROOT, &path(".auth_token"))
        .await;
    assert_eq!(token.unwrap(), b"token-very-secret-value");
    h.runtime.remove(id).await.unwrap();
}

#[tokio::test]
async fn the_pod_spec_carries_labels_env_from_the_secret_tier_resources_and_the_init_step() {
    let h = Harness::new().await;
    let Some(fake) = &h.fake else {
        return; // Reads the fake's stored objects; the behaviour is covered by the others.
    };
    let id = Uuid::new_v4();
    let n = pod_name(id);
    h.runtime.start(&spec(id, 1)).await.expect("start");

    let pod = fake.object("pods", &n).expect("the pod");
    let labels = &pod["metadata"]["labels"];
    assert_eq!(labels[crate::runtime::MANAGED_LABEL], "true");
    assert_eq!(labels[WORKSPACE_LABEL], id.to_string());
    assert_eq!(labels[AGENT_POD_LABEL], "true");
    let agent = &pod["spec"]["containers"][0];
    assert_eq!(agent["name"], AGENT_CONTAINER);
    assert_eq!(agent["image"], "molecule-agent:dev");
    assert_eq!(agent["envFrom"][0]["secretRef"]["name"], format!("{n}-env"));
    assert!(agent.get("env").is_none(), "no plain env values: {agent}");
    // Tier 1: 256 MiB and half a CPU (512 shares), memory requested in full, a quarter of
    // the CPU; a read-only root with a memory /tmp.
    assert_eq!(
        agent["resources"],
        json!({
            "limits": { "memory": "256Mi", "cpu": "500m" },
            "requests": { "memory": "256Mi", "cpu": "125m" },
        })
    );
    assert_eq!(agent["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(pod["spec"]["restartPolicy"], "Never");
    let init = &pod["spec"]["initContainers"][0];
    assert_eq!(init["name"], "seed");
    assert!(
        init["command"][2]
            .as_str()
            .unwrap()
            .contains("tar -x -f /seed/public/files.tar -C /configs"),
        "{init}"
    );
    let service = fake.object("services", &n).expect("the service");
    assert_eq!(service["spec"]["selector"][AGENT_POD_LABEL], "true");
    assert_eq!(service["spec"]["ports"][0]["port"], 8000);
    // No secret value in the Pod or the ConfigMap; the token file went to the Secret.
    let map = fake.object("configmaps", &format!("{n}-files")).unwrap();
    for (what, object) in [("pod", &pod), ("configmap", &map)] {
        let text = decoded(object);
        assert!(
            !text.contains("very-secret"),
            "a secret value in the {what}"
        );
    }
    assert!(decoded(&map).contains("skills/a/SKILL.md"));
    let private = fake.object("secrets", &format!("{n}-files")).unwrap();
    assert!(decoded(&private).contains("token-very-secret-value"));
    let env = fake.object("secrets", &format!("{n}-env")).unwrap();
    assert!(decoded(&env).contains("sk-very-secret-value"));

    // Tier 3 gets tier 3's limits.
    let other = Uuid::new_v4();
    h.runtime.start(&spec(other, 3)).await.expect("start");
    let pod = fake.object("pods", &pod_name(other)).unwrap();
    assert_eq!(
        pod["spec"]["containers"][0]["resources"]["limits"],
        json!({ "memory": "2048Mi", "cpu": "2000m" })
    );
}

/// An object's JSON with every base64 value decoded, so a secret cannot hide in encoding.
fn decoded(object: &serde_json::Value) -> String {
    use base64::Engine as _;
    let mut text = object.to_string();
    for field in ["data", "binaryData"] {
        for value in object[field]
            .as_object()
            .into_iter()
            .flat_map(|m| m.values())
        {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(value.as_str().unwrap_or_default())
                .unwrap_or_default();
            text.push_str(&String::from_utf8_lossy(&raw));
        }
    }
    text
}

#[tokio::test]
async fn a_second_start_replaces_the_pod_and_keeps_the_files() {
    let h = Harness::new().await;
    let id = Uuid::new_v4();
    let n = pod_name(id);
    h.runtime.start(&spec(id, 2)).await.unwrap();
    h.runtime
        .write_files(id, &{
            let mut more = FileTree::new();
            more.insert(path("notes/kept.md"), "kept", 0o644);
            more
        })
        .await
        .unwrap();
    h.forget_requests();

    h.runtime.start(&spec(id, 2)).await.expect("restart");

    let mut expected = pod_deletion(&n);
    expected.extend(first_start(&n).into_iter().skip(1));
    h.expect_requests(&expected);
    let kept = h
        .runtime
        .read_file(id, CONFIGS_ROOT, &path("notes/kept.md"))
        .await;
    assert_eq!(kept.unwrap(), b"kept");
    h.runtime.remove(id).await.unwrap();
}

#[tokio::test]
async fn stop_deletes_the_pod_and_waits_until_it_is_gone() {
    let h = Harness::new().await;
    let id = Uuid::new_v4();
    let n = pod_name(id);
    h.runtime.start(&spec(id, 2)).await.unwrap();
    h.forget_requests();

    h.runtime.stop(id).await.expect("stop");

    h.expect_requests(&pod_deletion(&n));
    assert_eq!(h.runtime.inspect(id).await.unwrap(), Inspection::default());
    // Stopping again is a success that changes nothing.
    h.forget_requests();
    h.runtime.stop(id).await.expect("second stop");
    h.expect_requests(&[format!("DELETE pods/{n}")]);
    h.runtime.remove(id).await.unwrap();
}

#[tokio::test]
async fn remove_deletes_every_object_and_a_second_remove_is_a_no_op() {
    let h = Harness::new().await;
    let id = Uuid::new_v4();
    let n = pod_name(id);
    h.runtime.start(&spec(id, 2)).await.unwrap();
    assert!(h.runtime.managed().await.unwrap().contains(&id));
    h.forget_requests();

    h.runtime.remove(id).await.expect("remove");

    let deletes = vec![
        format!("DELETE services/{n}"),
        format!("DELETE configmaps/{n}-files"),
        format!("DELETE secrets/{n}-files"),
        format!("DELETE secrets/{n}-env"),
        format!("DELETE persistentvolumeclaims/{n}-configs"),
    ];
    let mut expected = pod_deletion(&n);
    expected.extend(deletes.iter().cloned());
    h.expect_requests(&expected);

    h.runtime.remove(id).await.expect("second remove");

    let mut again = vec![format!("DELETE pods/{n}")];
    again.extend(deletes);
    h.expect_requests(&again);
    assert_eq!(h.runtime.inspect(id).await.unwrap(), Inspection::default());
    let offline = h
        .runtime
        .read_file(id, CONFIGS_ROOT, &path("config.yaml"))
        .await;
    assert!(matches!(offline, Err(RuntimeError::Offline)), "{offline:?}");
}

#[tokio::test]
async fn exec_runs_in_the_agent_container_and_reports_exit_code_and_output() {
    let h = Harness::new().await;
    let id = Uuid::new_v4();
    let n = pod_name(id);
    h.runtime.start(&spec(id, 2)).await.unwrap();
    h.forget_requests();

    let argv: Vec<String> = ["sh", "-c", "echo out; echo err >&2; exit 3"]
        .map(str::to_owned)
        .into();
    let out = h.runtime.exec(id, &argv).await.expect("exec");

    assert_eq!(
        out,
        ExecOutput {
            exit_code: 3,
            stdout: "out\n".into(),
            stderr: "err\n".into()
        }
    );
    h.expect_requests(&[
        format!("GET pods/{n}"),
        format!("GET pods/{n}/exec?container=agent&command=sh -c echo out; echo err >&2; exit 3"),
    ]);
    let ok = h.runtime.exec(id, &["true".to_owned()]).await.unwrap();
    assert_eq!(ok.exit_code, 0);

    h.runtime.stop(id).await.unwrap();
    let offline = h.runtime.exec(id, &["true".to_owned()]).await;
    assert!(matches!(offline, Err(RuntimeError::Offline)), "{offline:?}");
    h.runtime.remove(id).await.unwrap();
}

#[tokio::test]
async fn files_go_in_and_out_of_a_running_agent_and_the_plugin_swap_renames() {
    let h = Harness::new().await;
    let id = Uuid::new_v4();
    h.runtime.start(&spec(id, 2)).await.unwrap();
    let mut files = FileTree::new();
    files.insert(path("plugins/.staging/p.1/plugin.yaml"), "name: p\n", 0o644);
    files.insert(path("plugins/.staging/p.1/rules.md"), "be kind\n", 0o644);

    let target = h.runtime.write_files(id, &files).await.expect("write");
    assert_eq!(target, WriteTarget::Running);
    h.runtime
        .rename_path(id, &path("plugins/.staging/p.1"), &path("plugins/p"))
        .await
        .expect("rename");

    let digests = h
        .runtime
        .digests(id, Some(&path("plugins/p")))
        .await
        .unwrap();
    assert_eq!(
        digests,
        BTreeMap::from([
            ("plugin.yaml".to_owned(), safefs::digest(b"name: p\n")),
            ("rules.md".to_owned(), safefs::digest(b"be kind\n")),
        ])
    );
    let listed = h
        .runtime
        .list_files(id, CONFIGS_ROOT, Some(&path("plugins")), 1)
        .await;
    let listed: Vec<String> = listed.unwrap().into_iter().map(|f| f.path).collect();
    assert_eq!(listed, ["plugins/.staging", "plugins/p"]);
    let target = h.runtime.remove_path(id, &path("plugins/.staging")).await;
    assert_eq!(target.unwrap(), WriteTarget::Running);
    let missing = h
        .runtime
        .read_file(id, CONFIGS_ROOT, &path("plugins/.staging/p.1/rules.md"))
        .await;
    assert!(matches!(missing, Err(RuntimeError::NotFound)));
    let escape = h.runtime.read_file(id, "/etc", &path("passwd")).await;
    assert!(matches!(escape, Err(RuntimeError::InvalidPath)));
    h.runtime.remove(id).await.unwrap();
}

#[tokio::test]
async fn a_stopped_agents_files_are_read_and_written_through_a_helper_pod() {
    let h = Harness::new().await;
    let id = Uuid::new_v4();
    let n = pod_name(id);
    h.runtime.start(&spec(id, 2)).await.unwrap();
    h.runtime.stop(id).await.unwrap();
    h.forget_requests();

    let config = h
        .runtime
        .read_file(id, CONFIGS_ROOT, &path("config.yaml"))
        .await;

    assert!(
        String::from_utf8(config.expect("read"))
            .unwrap()
            .contains("tier: 2")
    );
    if let Some(fake) = &h.fake {
        let requests: Vec<String> = fake
            .take_requests()
            .into_iter()
            .map(|r| fake::without_helper_suffix(&r))
            .collect();
        assert_eq!(
            requests,
            [
                format!("GET pods/{n}"),
                format!("GET persistentvolumeclaims/{n}-configs"),
                "POST pods".into(),
                format!("GET pods?watch=true&fieldSelector=metadata.name={n}-files-*"),
                format!(
                    "GET pods/{n}-files-*/exec?container=files&command=sh -c \
                     [ -f \"$1\" ] || exit 44; exec cat \"$1\" sh /configs/config.yaml"
                ),
                format!("DELETE pods/{n}-files-*"),
            ]
        );
    }
    let mut files = FileTree::new();
    files.insert(path("later.md"), "later", 0o644);
    assert_eq!(
        h.runtime.write_files(id, &files).await.unwrap(),
        WriteTarget::Stored
    );
    h.runtime.start(&spec(id, 2)).await.unwrap();
    let later = h
        .runtime
        .read_file(id, CONFIGS_ROOT, &path("later.md"))
        .await;
    assert_eq!(later.unwrap(), b"later");
    h.runtime.remove(id).await.unwrap();
}

#[tokio::test]
async fn logs_come_from_the_log_subresource_with_tail_lines() {
    let h = Harness::new().await;
    let id = Uuid::new_v4();
    let n = pod_name(id);
    h.runtime.start(&spec(id, 2)).await.unwrap();
    h.forget_requests();

    let logs = h.runtime.logs(id, 2).await.expect("logs");

    assert!(logs.lines().count() <= 2, "{logs}");
    h.expect_requests(&[format!("GET pods/{n}/log?container=agent&tailLines=2")]);
    if h.fake.is_some() {
        assert_eq!(logs, "agent line 4\nagent line 5\n");
    }
    h.runtime.remove(id).await.unwrap();
    assert!(matches!(
        h.runtime.logs(id, 2).await,
        Err(RuntimeError::NotFound)
    ));
}

/// Reads `stream` into `seen` until it holds `needle`.
async fn read_until(stream: &mut crate::runtime::LogStream, seen: &mut String, needle: &str) {
    while !seen.contains(needle) {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap_or_else(|_| panic!("{needle:?} never came; seen {seen:?}"))
            .expect("the stream stays open")
            .expect("a chunk");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn a_followed_log_gives_the_tail_then_each_new_line() {
    let h = Harness::new().await;
    let Some(fake) = &h.fake else {
        // A real cluster's agent writes what it writes; the fake lets the test write a line.
        return;
    };
    let id = Uuid::new_v4();
    let n = pod_name(id);
    h.runtime.start(&spec(id, 2)).await.unwrap();
    h.forget_requests();

    let mut stream = h.runtime.follow_logs(id, 2).await.expect("a log stream");
    let mut seen = String::new();
    read_until(&mut stream, &mut seen, "agent line 5\n").await;
    assert_eq!(seen, "agent line 4\nagent line 5\n");
    h.expect_requests(&[format!(
        "GET pods/{n}/log?container=agent&follow=true&tailLines=2"
    )]);
    fake.write_log(&n, "written later");
    read_until(&mut stream, &mut seen, "written later\n").await;
    drop(stream);
    h.runtime.remove(id).await.unwrap();
    assert!(matches!(
        h.runtime.follow_logs(id, 2).await.err(),
        Some(RuntimeError::NotFound)
    ));
}

/// The processes whose environment holds `marker` as one whole entry, as (pid, command name):
/// on this machine with the fake (it runs execs here), else in the agent's container.
async fn marked(h: &Harness, id: Uuid, marker: &str) -> Vec<(u32, String)> {
    if h.fake.is_some() {
        return marked_here(marker);
    }
    let find = r#"for p in /proc/[0-9]*; do
  if tr '\0' '\n' < "$p/environ" 2>/dev/null | grep -qxF "$1"; then
    echo "${p#/proc/} $(cat "$p/comm")"
  fi
done"#;
    let out = h
        .runtime
        .exec(id, &script(find, &[marker.to_owned()]))
        .await
        .expect("listing the session's processes");
    out.stdout
        .lines()
        .filter_map(|line| {
            let (pid, comm) = line.split_once(' ')?;
            Some((pid.parse().ok()?, comm.to_owned()))
        })
        .collect()
}

/// Waits until the session's processes are as `done` wants, reading them every 50 ms for at most
/// 10 s: a process in the middle of an `execve` shows an empty environment for a moment, and
/// SIGKILL is sent, not awaited.
async fn wait_marked(
    h: &Harness,
    id: Uuid,
    marker: &str,
    what: &str,
    done: impl Fn(&[(u32, String)]) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let found = marked(h, id, marker).await;
        if done(&found) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}; the session's processes: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn marked_here(marker: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        // A process that exited meanwhile (or a zombie, whose environment is gone) is skipped.
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        if environ
            .split(|b| *b == 0)
            .any(|var| var == marker.as_bytes())
        {
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            found.push((pid, comm.trim().to_owned()));
        }
    }
    found
}

/// Kills, when dropped, what a failed terminal test left on this machine (`None`: nothing to
/// do, the processes are in a real cluster's Pod).
struct KillMarked(Option<String>);

impl Drop for KillMarked {
    fn drop(&mut self) {
        for (pid, _) in self.0.as_deref().map(marked_here).unwrap_or_default() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Has the shell wait until its terminal is `rows cols`, then say so; the resize travels apart
/// from the keyboard, so the shell may see a keystroke sent after it first.
async fn expect_size(terminal: &mut Terminal, seen: &mut String, rows: u16, cols: u16) {
    let wait = format!(
        "until [ \"$(stty size)\" = \"{rows} {cols}\" ]; do sleep 0.05; done; echo \"size:$(stty size).\"\n"
    );
    terminal.input.write_all(wait.as_bytes()).await.unwrap();
    read_until(&mut terminal.output, seen, &format!("size:{rows} {cols}.")).await;
}

/// Reads the terminal until its output matches `pattern`; the first capture.
async fn read_capture(terminal: &mut Terminal, seen: &mut String, pattern: &str) -> String {
    let pattern = regex::Regex::new(pattern).unwrap();
    loop {
        if let Some(found) = pattern.captures(seen) {
            return found[1].to_owned();
        }
        let chunk = tokio::time::timeout(Duration::from_secs(10), terminal.output.next())
            .await
            .unwrap_or_else(|_| panic!("{pattern} never matched; seen {seen:?}"))
            .expect("the terminal stays open")
            .expect("a chunk");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
}

/// Reads the terminal to its end, which must come within 10 s.
async fn expect_end(terminal: &mut Terminal, why: &str) {
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        while terminal.output.next().await.is_some() {}
    });
    drained
        .await
        .unwrap_or_else(|_| panic!("the terminal's output did not end {why}"));
}

#[tokio::test]
async fn a_terminal_is_a_tty_shell_in_the_agent_container_and_close_ends_all_it_started() {
    let h = Harness::new().await;
    assert!(h.runtime.has_terminal());
    let id = Uuid::new_v4();
    let n = pod_name(id);
    h.runtime.start(&spec(id, 2)).await.unwrap();
    h.forget_requests();
    let session = Uuid::new_v4();
    let marker = format!("{TERMINAL_MARKER}={session}");
    let _cleanup = KillMarked(h.fake.is_some().then(|| marker.clone()));

    let size = TermSize { cols: 80, rows: 24 };
    let mut terminal = h.runtime.open_terminal(id, session, size).await.unwrap();

    h.expect_requests(&[
        format!("GET pods/{n}"),
        format!(
            "GET pods/{n}/exec?container=agent&tty=true&command=sh -c \
             export TERM=xterm-256color \"$1\"; exec /bin/sh sh {marker}"
        ),
    ]);
    let mut seen = String::new();
    terminal
        .input
        .write_all(b"echo hi-$((40+2))\n")
        .await
        .unwrap();
    read_until(&mut terminal.output, &mut seen, "hi-42").await;
    // The first size, then a resize, reach the shell's terminal.
    expect_size(&mut terminal, &mut seen, 24, 80).await;
    let resized = TermSize {
        cols: 100,
        rows: 30,
    };
    terminal.control.resize(resized).await.expect("resize");
    expect_size(&mut terminal, &mut seen, 30, 100).await;
    if let Some(fake) = &h.fake {
        assert_eq!(fake.resizes(&n), [(80, 24), (100, 30)]);
    }
    // A job that outlives its shell unless the close finds it.
    terminal
        .input
        .write_all(b"sleep 1000 & echo \"job=$!;\"\n")
        .await
        .unwrap();
    let job: u32 = read_capture(&mut terminal, &mut seen, r"job=(\d+);")
        .await
        .parse()
        .unwrap();
    wait_marked(
        &h,
        id,
        &marker,
        "the shell and its job carry the marker",
        |found| found.contains(&(job, "sleep".to_owned())) && found.len() >= 2,
    )
    .await;
    h.forget_requests();

    terminal.control.close().await;

    if let Some(fake) = &h.fake {
        let kill = format!("sh -c {KILL_MARKED} sh {marker}");
        assert_eq!(
            fake.take_requests(),
            [format!("GET pods/{n}/exec?container=agent&command={kill}")]
        );
    }
    let gone = |found: &[(u32, String)]| found.is_empty();
    wait_marked(&h, id, &marker, "processes outlived the close", gone).await;
    expect_end(&mut terminal, "after the close").await;
    // A second close is harmless.
    terminal.control.close().await;

    // A shell that exits ends the output by itself.
    let mut second = h
        .runtime
        .open_terminal(id, Uuid::new_v4(), size)
        .await
        .unwrap();
    second.input.write_all(b"exit\n").await.unwrap();
    expect_end(&mut second, "after the shell exited").await;
    second.control.close().await;

    h.runtime.stop(id).await.unwrap();
    let offline = h.runtime.open_terminal(id, Uuid::new_v4(), size).await;
    assert!(matches!(offline, Err(RuntimeError::Offline)), "{offline:?}");
    h.runtime.remove(id).await.unwrap();
}

#[tokio::test]
async fn managed_lists_workspaces_by_the_hosts_labels() {
    let h = Harness::new().await;
    let id = Uuid::new_v4();
    h.runtime.start(&spec(id, 2)).await.unwrap();
    h.forget_requests();

    let managed = h.runtime.managed().await.expect("managed");

    assert!(managed.contains(&id), "{managed:?}");
    let selector = managed_selectors(&h.runtime.settings).join(",");
    h.expect_requests(&[
        format!("GET pods?labelSelector={selector}"),
        format!("GET persistentvolumeclaims?labelSelector={selector}"),
    ]);
    h.runtime.remove(id).await.unwrap();
    assert!(!h.runtime.managed().await.unwrap().contains(&id));
}

#[tokio::test]
async fn an_api_server_error_is_a_clear_failure() {
    let h = Harness::new().await;
    let Some(fake) = &h.fake else {
        return; // A real cluster cannot be made to fail on cue.
    };
    let id = Uuid::new_v4();
    fake.fail("PATCH", "services");

    let err = h
        .runtime
        .start(&spec(id, 2))
        .await
        .expect_err("start fails");

    let message = err.to_string();
    assert!(
        message.contains("writing the agent Service")
            && message.contains("500")
            && message.contains("etcd is on fire"),
        "{message}"
    );
    assert!(!message.contains("very-secret"));
    fake.fail("PATCH", "secrets/");
    let err = h
        .runtime
        .start(&spec(id, 2))
        .await
        .expect_err("start fails");
    assert!(err.to_string().contains("environment Secret"), "{err}");
    assert!(
        !err.to_string().contains("etcd"),
        "a Secret's error text is not passed on"
    );
}

#[tokio::test]
async fn a_pod_that_fails_is_removed_and_reported() {
    let h = Harness::new().await;
    let Some(fake) = &h.fake else {
        return; // A real cluster's Pods fail only when the image does.
    };
    let id = Uuid::new_v4();
    let n = pod_name(id);
    fake.fail_pods();

    let err = h
        .runtime
        .start(&spec(id, 2))
        .await
        .expect_err("start fails");

    assert!(
        err.to_string().contains(&format!(
            "pod {n} failed to start: container agent exited with 1"
        )),
        "{err}"
    );
    let mut expected = first_start(&n);
    expected.extend(pod_deletion(&n));
    h.expect_requests(&expected);
    assert_eq!(h.runtime.inspect(id).await.unwrap(), Inspection::default());
}

#[test]
fn owner_only_files_are_kept_out_of_the_config_map() {
    let mut files = FileTree::new();
    files.insert(path("config.yaml"), "a", 0o644);
    files.insert(path(".auth_token"), "t", 0o600);
    let (public, private) = split_private(&files);
    assert_eq!(public.paths(), ["config.yaml"]);
    assert_eq!(private.paths(), [".auth_token"]);
}

#[test]
fn an_exec_status_maps_to_an_exit_code() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Status, StatusCause, StatusDetails};
    let success = Status {
        status: Some("Success".into()),
        ..Status::default()
    };
    assert_eq!(exit_code(Some(success)).unwrap(), 0);
    let failed = Status {
        status: Some("Failure".into()),
        reason: Some("NonZeroExitCode".into()),
        details: Some(StatusDetails {
            causes: Some(vec![StatusCause {
                reason: Some("ExitCode".into()),
                message: Some("7".into()),
                ..StatusCause::default()
            }]),
            ..StatusDetails::default()
        }),
        ..Status::default()
    };
    assert_eq!(exit_code(Some(failed)).unwrap(), 7);
    let broken = Status {
        status: Some("Failure".into()),
        message: Some("executable file not found".into()),
        ..Status::default()
    };
    assert!(
        exit_code(Some(broken))
            .unwrap_err()
            .to_string()
            .contains("not found")
    );
    assert!(exit_code(None).is_err());
}
