//! An in-process fake of the Kubernetes API server for the runtime's tests: plain HTTP on
//! 127.0.0.1, objects in memory, a kubelet that acts when a Pod is watched (a Pending Pod runs
//! its init containers and becomes Running, or Failed on request; a Pod being deleted
//! disappears), exec over WebSocket with the v5/v4 channel protocol running the command for real
//! with the Pod's mounts mapped onto temporary directories (with `tty`, on a pty that takes the
//! resizes sent on channel 4), logs, and a record of every request and resize.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

type Params = Vec<(String, String)>;

/// The query parameters a recorded request keeps, in this order.
const RECORDED_PARAMS: &[&str] = &[
    "watch",
    "fieldSelector",
    "labelSelector",
    "container",
    "follow",
    "tailLines",
    "tty",
    "command",
];

#[derive(Default)]
struct Inner {
    objects: BTreeMap<(String, String), Value>,
    version: u64,
    requests: Vec<String>,
    /// Requests answered 500: (method, start of the path after the namespace).
    fail: Option<(String, String)>,
    fail_pods: bool,
    /// Lines the agent of a Pod wrote after the canned ones (see [`FakeApi::write_log`]).
    logs: BTreeMap<String, Vec<String>>,
    /// (Pod, columns, rows) of each resize a `tty` exec applied, in order.
    resizes: Vec<(String, u16, u16)>,
}

struct Shared {
    inner: Mutex<Inner>,
    /// (kind, name, watch event).
    events: broadcast::Sender<(String, String, Value)>,
    /// (Pod, line) as each is written, for followers.
    log_lines: broadcast::Sender<(String, String)>,
    root: tempfile::TempDir,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn emit(&self, kind: &str, name: &str, kind_of_event: &str, object: &Value) {
        let event = json!({ "type": kind_of_event, "object": object });
        // No watcher is fine.
        let _ = self.events.send((kind.to_owned(), name.to_owned(), event));
    }

    /// The kubelet's turn: Pods being deleted disappear, Pending Pods start.
    fn kubelet(&self) {
        let mut inner = self.lock();
        let pods: Vec<String> = inner
            .objects
            .keys()
            .filter(|(kind, _)| kind == "pods")
            .map(|(_, name)| name.clone())
            .collect();
        for name in pods {
            let key = ("pods".to_owned(), name.clone());
            let pod = inner.objects[&key].clone();
            if !pod["metadata"]["deletionTimestamp"].is_null() {
                inner.objects.remove(&key);
                self.emit("pods", &name, "DELETED", &pod);
                continue;
            }
            if pod["status"]["phase"] != "Pending" {
                continue;
            }
            let status = if inner.fail_pods {
                terminated(&pod, 1)
            } else {
                self.start_pod(&inner, &pod)
            };
            inner.version += 1;
            let mut pod = pod;
            pod["metadata"]["resourceVersion"] = json!(inner.version.to_string());
            pod["status"] = status;
            inner.objects.insert(key, pod.clone());
            self.emit("pods", &name, "MODIFIED", &pod);
        }
    }

    /// Runs the init containers; the Pod's status afterwards.
    fn start_pod(&self, inner: &Inner, pod: &Value) -> Value {
        for init in pod["spec"]["initContainers"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let argv = match self.mounts(inner, pod, init) {
                Ok(mounts) => rewrite(&strings(&init["command"]), &mounts),
                Err(why) => return json!({ "phase": "Pending", "message": why }),
            };
            let code = std::process::Command::new(&argv[0])
                .args(&argv[1..])
                .status()
                .map_or(127, |s| s.code().unwrap_or(1));
            if code != 0 {
                return json!({
                    "phase": "Failed",
                    "initContainerStatuses": [container_status(init, json!({
                        "terminated": { "exitCode": code, "reason": "Error" }
                    }))],
                });
            }
        }
        let statuses: Vec<Value> = containers(pod)
            .map(|c| {
                container_status(
                    c,
                    json!({ "running": { "startedAt": "2026-01-01T00:00:00Z" } }),
                )
            })
            .collect();
        json!({ "phase": "Running", "containerStatuses": statuses })
    }

    /// Where each of a container's mounts lives on this machine, longest mount path first.
    fn mounts(
        &self,
        inner: &Inner,
        pod: &Value,
        container: &Value,
    ) -> Result<Vec<(String, PathBuf)>, String> {
        let pod_name = pod["metadata"]["name"].as_str().unwrap_or_default();
        let mut out = Vec::new();
        for mount in container["volumeMounts"].as_array().into_iter().flatten() {
            let name = mount["name"].as_str().unwrap_or_default();
            let volume = pod["spec"]["volumes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|v| v["name"] == name)
                .ok_or_else(|| format!("no volume {name}"))?;
            let dir = if let Some(claim) = volume["persistentVolumeClaim"]["claimName"].as_str() {
                if !inner
                    .objects
                    .contains_key(&("persistentvolumeclaims".into(), claim.into()))
                {
                    return Err(format!("claim {claim} not found"));
                }
                self.root.path().join("claims").join(claim)
            } else {
                let dir = self.root.path().join("volumes").join(pod_name).join(name);
                let source = [
                    ("configmaps", "configMap", "name"),
                    ("secrets", "secret", "secretName"),
                ]
                .into_iter()
                .find_map(|(kind, field, key)| {
                    Some((kind, volume[field][key].as_str()?.to_owned()))
                });
                if let Some((kind, object)) = source {
                    let stored = inner
                        .objects
                        .get(&(kind.into(), object.clone()))
                        .ok_or_else(|| format!("{kind}/{object} not found"))?;
                    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
                    for field in ["data", "binaryData"] {
                        for (key, value) in stored[field].as_object().into_iter().flatten() {
                            let bytes = base64::engine::general_purpose::STANDARD
                                .decode(value.as_str().unwrap_or_default())
                                .map_err(|e| e.to_string())?;
                            std::fs::write(dir.join(key), bytes).map_err(|e| e.to_string())?;
                        }
                    }
                }
                dir
            };
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let path = mount["mountPath"].as_str().unwrap_or_default().to_owned();
            out.push((path, dir));
        }
        out.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
        Ok(out)
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

fn containers(pod: &Value) -> impl Iterator<Item = &Value> {
    pod["spec"]["containers"].as_array().into_iter().flatten()
}

fn container_status(container: &Value, state: Value) -> Value {
    json!({
        "name": container["name"],
        "image": container["image"],
        "imageID": "",
        "ready": state.get("running").is_some(),
        "restartCount": 0,
        "state": state,
    })
}

/// A Pod whose agent exited right away with `code`.
fn terminated(pod: &Value, code: i32) -> Value {
    let statuses: Vec<Value> = containers(pod)
        .map(|c| {
            container_status(
                c,
                json!({ "terminated": { "exitCode": code, "reason": "Error" } }),
            )
        })
        .collect();
    json!({ "phase": "Failed", "containerStatuses": statuses })
}

/// Paths inside the container, rewritten onto the directories that stand in for its mounts.
fn rewrite(argv: &[String], mounts: &[(String, PathBuf)]) -> Vec<String> {
    argv.iter()
        .map(|arg| {
            let mut out = String::new();
            let mut rest = arg.as_str();
            'scan: while !rest.is_empty() {
                for (path, dir) in mounts {
                    if let Some(after) = rest.strip_prefix(path.as_str()) {
                        out.push_str(&dir.to_string_lossy());
                        rest = after;
                        continue 'scan;
                    }
                }
                let next = rest.chars().next().map_or(1, char::len_utf8);
                out.push_str(&rest[..next]);
                rest = &rest[next..];
            }
            out
        })
        .collect()
}

/// A Kubernetes `Status` answer.
fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    (code, axum::Json(body)).into_response()
}

fn not_found(kind: &str, name: &str) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{kind} \"{name}\" not found"),
    )
}

/// `<kind>/<name>…` after `/api/v1/namespaces/<ns>/`.
fn relative(path: &str) -> &str {
    path.strip_prefix("/api/v1/namespaces/")
        .and_then(|rest| rest.split_once('/'))
        .map_or(path, |(_, rest)| rest)
}

async fn record(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let params: Params = Query::try_from_uri(request.uri())
        .map(|Query(params)| params)
        .unwrap_or_default();
    let rest = relative(request.uri().path()).to_owned();
    let query: Vec<String> = RECORDED_PARAMS
        .iter()
        .filter_map(|key| {
            let values: Vec<&str> = params
                .iter()
                .filter(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
                .collect();
            (!values.is_empty()).then(|| format!("{key}={}", values.join(" ")))
        })
        .collect();
    let line = if query.is_empty() {
        format!("{} {rest}", request.method())
    } else {
        format!("{} {rest}?{}", request.method(), query.join("&"))
    };
    let fail = {
        let mut inner = shared.lock();
        inner.requests.push(line);
        inner.fail.as_ref().is_some_and(|(method, prefix)| {
            request.method().as_str() == method && rest.starts_with(prefix.as_str())
        })
    };
    if fail {
        return status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "etcd is on fire",
        );
    }
    next.run(request).await
}

async fn collection(
    State(shared): State<Arc<Shared>>,
    Path((namespace, kind)): Path<(String, String)>,
    Query(params): Query<Params>,
    method: Method,
    body: Bytes,
) -> Response {
    let param = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    if method == Method::POST {
        let Ok(mut object) = serde_json::from_slice::<Value>(&body) else {
            return status(StatusCode::BAD_REQUEST, "BadRequest", "not JSON");
        };
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let mut inner = shared.lock();
        if inner.objects.contains_key(&(kind.clone(), name.clone())) {
            return status(
                StatusCode::CONFLICT,
                "AlreadyExists",
                &format!("{kind} \"{name}\" already exists"),
            );
        }
        inner.version += 1;
        object["metadata"]["resourceVersion"] = json!(inner.version.to_string());
        object["metadata"]["namespace"] = json!(namespace);
        object["metadata"]["uid"] = json!(uuid::Uuid::new_v4().to_string());
        if kind == "pods" {
            object["status"] = json!({ "phase": "Pending" });
        }
        inner
            .objects
            .insert((kind.clone(), name.clone()), object.clone());
        shared.emit(&kind, &name, "ADDED", &object);
        return (StatusCode::CREATED, axum::Json(object)).into_response();
    }
    if param("watch").as_deref() == Some("true") {
        let wanted = param("fieldSelector")
            .and_then(|f| f.strip_prefix("metadata.name=").map(str::to_owned));
        let events = shared.events.subscribe();
        shared.kubelet();
        let stream =
            tokio_stream::wrappers::BroadcastStream::new(events).filter_map(move |event| {
                let line = match event {
                    Ok((k, name, event))
                        if k == kind && wanted.as_ref().is_none_or(|w| *w == name) =>
                    {
                        Some(Ok::<_, std::convert::Infallible>(Bytes::from(format!(
                            "{event}\n"
                        ))))
                    }
                    _ => None,
                };
                std::future::ready(line)
            });
        return Body::from_stream(stream).into_response();
    }
    let selector: Vec<(String, String)> = param("labelSelector")
        .unwrap_or_default()
        .split(',')
        .filter_map(|s| s.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    let inner = shared.lock();
    let items: Vec<&Value> = inner
        .objects
        .iter()
        .filter(|((k, _), object)| {
            *k == kind
                && selector
                    .iter()
                    .all(|(key, value)| object["metadata"]["labels"][key] == value.as_str())
        })
        .map(|(_, object)| object)
        .collect();
    axum::Json(json!({
        "kind": "List", "apiVersion": "v1",
        "metadata": { "resourceVersion": inner.version.to_string() },
        "items": items,
    }))
    .into_response()
}

async fn item(
    State(shared): State<Arc<Shared>>,
    Path((namespace, kind, name)): Path<(String, String, String)>,
    method: Method,
    body: Bytes,
) -> Response {
    let key = (kind.clone(), name.clone());
    let mut inner = shared.lock();
    match method {
        Method::GET => match inner.objects.get(&key) {
            Some(object) => axum::Json(object.clone()).into_response(),
            None => not_found(&kind, &name),
        },
        // Server-side apply: the object becomes exactly the manifest.
        Method::PATCH => {
            let Ok(mut object) = serde_json::from_slice::<Value>(&body) else {
                return status(StatusCode::BAD_REQUEST, "BadRequest", "not JSON");
            };
            inner.version += 1;
            object["metadata"]["resourceVersion"] = json!(inner.version.to_string());
            object["metadata"]["namespace"] = json!(namespace);
            let created = inner.objects.insert(key, object.clone()).is_none();
            let code = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (code, axum::Json(object)).into_response()
        }
        Method::DELETE => {
            let Some(mut object) = inner.objects.remove(&key) else {
                return not_found(&kind, &name);
            };
            if kind == "pods" {
                // Graceful: the Pod terminates until the kubelet's next turn.
                inner.version += 1;
                object["metadata"]["resourceVersion"] = json!(inner.version.to_string());
                object["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
                inner.objects.insert(key, object.clone());
                shared.emit(&kind, &name, "MODIFIED", &object);
            }
            axum::Json(object).into_response()
        }
        _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
}

async fn logs(
    State(shared): State<Arc<Shared>>,
    Path((_, name)): Path<(String, String)>,
    Query(params): Query<Params>,
) -> Response {
    if !shared
        .lock()
        .objects
        .contains_key(&("pods".into(), name.clone()))
    {
        return not_found("pods", &name);
    }
    let param = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let tail: usize = param("tailLines")
        .and_then(|v| v.parse().ok())
        .unwrap_or(usize::MAX);
    // Subscribed before the lines are read, so a line written in between is not lost.
    let later = shared.log_lines.subscribe();
    let mut lines: Vec<String> = (1..=5).map(|i| format!("agent line {i}\n")).collect();
    if let Some(written) = shared.lock().logs.get(&name) {
        lines.extend(written.iter().map(|l| format!("{l}\n")));
    }
    let first = lines[lines.len().saturating_sub(tail)..].concat();
    if param("follow") != Some("true") {
        return first.into_response();
    }
    // Then each line written for this Pod as it comes, until the fake stops.
    let rest = futures::stream::unfold((later, name), |(mut later, pod)| async move {
        loop {
            match later.recv().await {
                Ok((for_pod, line)) if for_pod == pod => {
                    let chunk = Bytes::from(format!("{line}\n"));
                    return Some((Ok::<_, std::io::Error>(chunk), (later, pod)));
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    let stream = futures::stream::once(async move { Ok(Bytes::from(first)) }).chain(rest);
    Body::from_stream(stream).into_response()
}

async fn exec(
    State(shared): State<Arc<Shared>>,
    Path((_, name)): Path<(String, String)>,
    Query(params): Query<Params>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let values = |key: &str| -> Vec<String> {
        params
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    };
    let inner = shared.lock();
    let Some(pod) = inner.objects.get(&("pods".into(), name.clone())) else {
        return not_found("pods", &name);
    };
    if pod["status"]["phase"] != "Running" {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "pod is not running");
    }
    let wanted = values("container").pop().unwrap_or_default();
    let Some(container) = containers(pod).find(|c| c["name"] == wanted.as_str()) else {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "no such container");
    };
    let argv = match shared.mounts(&inner, pod, container) {
        Ok(mounts) => rewrite(&values("command"), &mounts),
        Err(why) => return status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", &why),
    };
    let stdin = values("stdin").iter().any(|v| v == "true");
    let tty = values("tty").iter().any(|v| v == "true");
    let recorder = shared.clone();
    upgrade
        .protocols(["v5.channel.k8s.io", "v4.channel.k8s.io"])
        .on_upgrade(move |socket| async move {
            if tty {
                run_tty(socket, argv, name, recorder).await;
            } else {
                run_exec(socket, argv, stdin).await;
            }
        })
}

/// A frame of the channel protocol: the channel's byte, then the data.
fn frame(channel: u8, data: &[u8]) -> Message {
    let mut bytes = vec![channel];
    bytes.extend_from_slice(data);
    Message::Binary(Bytes::from(bytes))
}

/// The final `Status` of a command that could not start.
fn not_started(err: &dyn std::fmt::Display) -> Value {
    json!({
        "metadata": {}, "status": "Failure", "reason": "InternalError",
        "message": format!("executable file not found: {err}"),
    })
}

/// The final `Status` of a command that exited (`None`: killed by a signal).
fn exited(code: Option<i32>) -> Value {
    match code {
        Some(0) => json!({ "metadata": {}, "status": "Success" }),
        code => {
            let code = code.unwrap_or(137);
            json!({
                "metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
                "message": format!("command terminated with non-zero exit code: exit status {code}"),
                "details": { "causes": [{ "reason": "ExitCode", "message": code.to_string() }] },
            })
        }
    }
}

/// One command over the channel protocol: stdin from channel 0 (255/0 closes it), then its
/// stdout on 1, stderr on 2 and the final `Status` on 3.
async fn run_exec(socket: WebSocket, argv: Vec<String>, stdin: bool) {
    let (mut send, mut receive) = socket.split();
    let spawned = tokio::process::Command::new(argv.first().map_or("", String::as_str))
        .args(argv.iter().skip(1))
        .stdin(if stdin {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let final_status = match spawned {
        Err(err) => not_started(&err),
        Ok(mut child) => {
            let mut writer = child.stdin.take();
            let feeder = tokio::spawn(async move {
                while let Some(Ok(message)) = receive.next().await {
                    let Message::Binary(bytes) = message else {
                        continue;
                    };
                    match bytes.first() {
                        Some(0) => {
                            if let Some(w) = writer.as_mut() {
                                let _ = w.write_all(&bytes[1..]).await;
                            }
                        }
                        Some(255) => writer = None,
                        _ => {}
                    }
                }
            });
            let output = child.wait_with_output().await;
            feeder.abort();
            let Ok(output) = output else { return };
            for (channel, data) in [(1, &output.stdout), (2, &output.stderr)] {
                for chunk in data.chunks(32 * 1024) {
                    if send.send(frame(channel, chunk)).await.is_err() {
                        return;
                    }
                }
            }
            exited(output.status.code())
        }
    };
    let _ = send
        .send(frame(3, final_status.to_string().as_bytes()))
        .await;
    let _ = send.close().await;
}

/// One command on a pty, as a kubelet runs an exec with `tty`: its keyboard from channel 0,
/// resizes (`{"Width":cols,"Height":rows}`) from channel 4, applied to the pty and recorded, the
/// terminal on channel 1 and the final `Status` on 3 once the command exits. Like a container
/// runtime, it leaves the command running when the client goes away (the pty stays open, so no
/// hangup either): only a kill ends it.
async fn run_tty(socket: WebSocket, argv: Vec<String>, pod: String, shared: Arc<Shared>) {
    let (mut send, mut receive) = socket.split();
    let spawned = pty_process::open().and_then(|(pty, pts)| {
        let child = pty_process::Command::new(argv.first().map_or("", String::as_str))
            .args(argv.iter().skip(1))
            .spawn(pts)?;
        Ok((pty, child))
    });
    let (pty, mut child) = match spawned {
        Ok(spawned) => spawned,
        Err(err) => {
            let _ = send
                .send(frame(3, not_started(&err).to_string().as_bytes()))
                .await;
            let _ = send.close().await;
            return;
        }
    };
    let (mut screen, mut keyboard) = pty.into_split();
    let typist = tokio::spawn(async move {
        while let Some(Ok(message)) = receive.next().await {
            let Message::Binary(bytes) = message else {
                continue;
            };
            match bytes.first() {
                Some(0) => {
                    let _ = keyboard.write_all(&bytes[1..]).await;
                }
                Some(4) => {
                    let size: Value = serde_json::from_slice(&bytes[1..]).unwrap_or_default();
                    let cell = |key: &str| size[key].as_u64().and_then(|v| u16::try_from(v).ok());
                    let (Some(cols), Some(rows)) = (cell("Width"), cell("Height")) else {
                        continue;
                    };
                    // Recorded once applied, so a test that saw it can rely on the pty's size.
                    if keyboard.resize(pty_process::Size::new(rows, cols)).is_ok() {
                        shared.lock().resizes.push((pod.clone(), cols, rows));
                    }
                }
                _ => {}
            }
        }
    });
    let mut chunk = vec![0u8; 32 * 1024];
    let mut client = true;
    let status = loop {
        tokio::select! {
            read = screen.read(&mut chunk) => match read {
                Ok(n) if n > 0 => {
                    // Once the client is gone, output is read and dropped; the command runs on.
                    client = client && send.send(frame(1, &chunk[..n])).await.is_ok();
                }
                // Nothing holds the terminal any more.
                _ => break child.wait().await,
            },
            status = child.wait() => break status,
        }
    };
    // What the command wrote before it exited; a background job that keeps the terminal open
    // keeps it from ever ending, so a pause ends it too.
    while let Ok(Ok(n)) =
        tokio::time::timeout(Duration::from_millis(100), screen.read(&mut chunk)).await
        && n > 0
        && client
    {
        client = send.send(frame(1, &chunk[..n])).await.is_ok();
    }
    typist.abort();
    let final_status = exited(status.ok().and_then(|s| s.code()));
    let _ = send
        .send(frame(3, final_status.to_string().as_bytes()))
        .await;
    let _ = send.close().await;
}

/// The fake API server; stops when dropped.
pub(super) struct FakeApi {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: CancellationToken,
}

impl FakeApi {
    pub(super) async fn start() -> Self {
        let (events, _) = broadcast::channel(256);
        let (log_lines, _) = broadcast::channel(256);
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner::default()),
            events,
            log_lines,
            root: tempfile::tempdir().expect("a temporary directory"),
        });
        let app = Router::new()
            .route("/api/v1/namespaces/{ns}/pods/{name}/exec", get(exec))
            .route("/api/v1/namespaces/{ns}/pods/{name}/log", get(logs))
            .route(
                "/api/v1/namespaces/{ns}/{kind}",
                get(collection).post(collection),
            )
            .route(
                "/api/v1/namespaces/{ns}/{kind}/{name}",
                get(item).patch(item).delete(item),
            )
            .layer(middleware::from_fn_with_state(shared.clone(), record))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("the bound address");
        let stop = CancellationToken::new();
        let shutdown = stop.clone().cancelled_owned();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await;
        });
        FakeApi { shared, addr, stop }
    }

    /// A client for this server.
    pub(super) fn client(&self) -> kube::Client {
        let url = format!("http://{}", self.addr).parse().expect("a URL");
        kube::Client::try_from(kube::Config::new(url)).expect("a client")
    }

    /// The requests since the last call, as `METHOD <kind>/<name>[/<sub>][?params]`.
    pub(super) fn take_requests(&self) -> Vec<String> {
        std::mem::take(&mut self.shared.lock().requests)
    }

    /// A stored object.
    pub(super) fn object(&self, kind: &str, name: &str) -> Option<Value> {
        self.shared
            .lock()
            .objects
            .get(&(kind.into(), name.into()))
            .cloned()
    }

    /// Answers 500 to every `method` request whose path (after the namespace) starts so.
    pub(super) fn fail(&self, method: &str, path_prefix: &str) {
        self.shared.lock().fail = Some((method.into(), path_prefix.into()));
    }

    /// `line` written by the agent of Pod `pod`: in its log from now on, and sent to followers.
    pub(super) fn write_log(&self, pod: &str, line: &str) {
        self.shared
            .lock()
            .logs
            .entry(pod.into())
            .or_default()
            .push(line.into());
        let _ = self.shared.log_lines.send((pod.into(), line.into()));
    }

    /// (columns, rows) of each resize a `tty` exec in Pod `pod` applied, in order.
    pub(super) fn resizes(&self, pod: &str) -> Vec<(u16, u16)> {
        self.shared
            .lock()
            .resizes
            .iter()
            .filter(|(p, _, _)| p == pod)
            .map(|&(_, cols, rows)| (cols, rows))
            .collect()
    }

    /// Every Pod started from now on fails: its agent exits with 1.
    pub(super) fn fail_pods(&self) {
        self.shared.lock().fail_pods = true;
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A recorded request with a helper Pod's random suffix as `*`.
pub(super) fn without_helper_suffix(request: &str) -> String {
    let mut out = String::new();
    let mut rest = request;
    while let Some(at) = rest.find("-files-") {
        out.push_str(&rest[..at + "-files-".len()]);
        rest = &rest[at + "-files-".len()..];
        let hex = rest.chars().take_while(char::is_ascii_hexdigit).count();
        if hex == 8 {
            out.push('*');
            rest = &rest[8..];
        }
    }
    out.push_str(rest);
    out
}
