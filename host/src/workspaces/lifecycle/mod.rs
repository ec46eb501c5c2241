//! The workspace lifecycle: provisioning agents through the runtime, restarts (coalesced, asked of
//! the restart policy), pause and resume, and the sweeps that keep the database honest about what
//! is running.
//!
//! The states and the steps between them:
//!
//! ```text
//! create ─► provisioning ─(agent registers)─► online ◄──────────────┐
//! provisioning ─(start error | timeout | bootstrap-failed)─► failed  │
//! online/degraded ─(agent gone | heartbeat lost)─► offline ─(policy: restart)─► provisioning
//! any live ─(pause, cascades)─► paused ─(resume)─► provisioning
//! online/degraded ─(hibernate: manual or idle)─► hibernating ─(agent stopped)─► hibernated
//! hibernated ─(wake: A2A message, schedule, resume, restart)─► provisioning
//! ```
//!
//! Every step is idempotent: a stop of a stopped agent succeeds, a transition whose source status
//! no longer holds does nothing, and every change is logged as `old -> new`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::restart_context::{self, Restart, Session};
use super::{Status, WorkspaceError, get_live};
use crate::events::{Invalidation, names};
use crate::extensions::types::{Decision, Trigger, WorkspaceInfo};
use crate::runtime::{AgentEnv, ContainerRuntime, RuntimeError, StartSpec};
use crate::safefs::{self, FileTree, RelPath};
use crate::services::Services;
use crate::store::activity::ActivityRow;
use crate::store::status::Cause;
use crate::store::{self, StoreError, workspaces::WorkspaceRow};

/// How far back restarts count towards a policy's `recent_restarts`.
const RESTART_WINDOW: Duration = Duration::from_secs(10 * 60);
/// How long a restart cycle waits for the agent to come back before the next cycle may run.
const CYCLE_ONLINE_WAIT: Duration = Duration::from_secs(120);
/// How long a provision waits for the host to know the URL its agents reach it on (it is set as
/// soon as the listeners are, before anything provisions; this only bounds a host that never
/// serves).
const PLATFORM_URL_PATIENCE: Duration = Duration::from_secs(60);
/// The longest `last_sample_error` the host stores.
const MAX_SAMPLE_ERROR: usize = 500;

/// Holds the runtime and the lifecycle's own state: provision slots, restart coalescing, the
/// restart history policies see, and the tasks it spawned.
#[derive(Debug)]
pub struct Lifecycle {
    replica: Uuid,
    runtime: Option<Arc<dyn ContainerRuntime>>,
    provision_slots: Semaphore,
    /// Per workspace, held while its agent is being started and, by a restart cycle, from the
    /// moment it marks the workspace until its new agent is started: a first provision and a
    /// cycle never start two agents at once, nor one over the other's.
    starting: crate::locks::KeyedLocks<Uuid>,
    /// The URL agents reach the host on, once the host knows its listeners. Provisions wait for
    /// it: an agent told a guessed address never registers.
    platform_url: tokio::sync::watch::Sender<Option<String>>,
    tasks: TaskTracker,
    stop: CancellationToken,
    cycles: AtomicU64,
    tickets: AtomicU64,
}

/// What a restart request led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestartOutcome {
    /// A cycle started.
    Started,
    /// A cycle was running; one more will follow it.
    Coalesced,
    /// The policy answered; what it said, after clamping.
    Decided(Decision),
    /// The workspace is not restarted (removed, paused, external, no runtime...).
    Skipped(&'static str),
}

impl Lifecycle {
    /// `replica` names this host process in the restart claims it takes.
    pub fn new(
        runtime: Option<Arc<dyn ContainerRuntime>>,
        concurrency: usize,
        replica: Uuid,
    ) -> Self {
        Lifecycle {
            replica,
            runtime,
            provision_slots: Semaphore::new(concurrency.max(1)),
            starting: crate::locks::KeyedLocks::default(),
            platform_url: tokio::sync::watch::Sender::new(None),
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
            cycles: AtomicU64::new(0),
            tickets: AtomicU64::new(0),
        }
    }

    pub fn runtime(&self) -> Option<&Arc<dyn ContainerRuntime>> {
        self.runtime.as_ref()
    }

    pub fn runtime_name(&self) -> &'static str {
        self.runtime.as_ref().map_or("none", |r| r.name())
    }

    /// Sets the URL agents are given to reach the host (once, when the host knows its listeners;
    /// later calls change nothing).
    pub fn set_platform_url(&self, url: String) {
        self.platform_url.send_if_modified(|current| {
            if current.is_some() {
                return false;
            }
            *current = Some(url);
            true
        });
    }

    /// The URL agents reach the host on: waits until the host has set it, at most `patience`.
    /// Nothing that provisions may use a guessed address (the original fell back to
    /// `127.0.0.1:8080`, so agents provisioned at start on another port never registered).
    pub async fn platform_url(&self, patience: Duration) -> Option<String> {
        let mut known = self.platform_url.subscribe();
        match tokio::time::timeout(patience, known.wait_for(Option::is_some)).await {
            Ok(Ok(url)) => url.clone(),
            _ => None,
        }
    }

    /// Restart cycles run since the host started.
    pub fn cycles(&self) -> u64 {
        self.cycles.load(Ordering::Relaxed)
    }

    /// Stops every provision and restart task, waits for them, then lets the runtime clean up
    /// (the process runtime stops its children; containers keep running).
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        if let Some(runtime) = &self.runtime {
            runtime.shutdown().await;
        }
    }

    /// Runs `work` to its end in the background: a caller that goes away cannot cut it short,
    /// and host shutdown waits for it before the runtime stops (an org import, which
    /// provisions as it goes).
    pub fn run_to_end<F>(&self, work: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks.spawn(work)
    }

    fn spawn<F>(&self, fut: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        if self.stop.is_cancelled() {
            return;
        }
        let stop = self.stop.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = fut => {}
            }
        });
    }

    /// A holder name for one claim on a workspace's restarts: this replica and a ticket, so two
    /// requests on the same replica are two claimants like requests on two replicas.
    fn claimant(&self) -> String {
        format!(
            "{}/{}",
            self.replica,
            self.tickets.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Drops this replica's claims on restart cycles (it is stopping, so its cycles stop too).
    pub async fn release_claims(&self, db: &store::Db) {
        match store::restarts::release_all(db, &format!("{}/", self.replica)).await {
            Ok(0) => {}
            Ok(released) => tracing::info!(released, "restart claims released on shutdown"),
            Err(err) => {
                tracing::warn!(error = ?err, "releasing restart claims failed; they expire")
            }
        }
    }
}

/// Drops a workspace's delayed restart (it was removed, or its agent stops on purpose), so no
/// replica starts it again.
async fn forget_delayed_restart(svc: &Services, id: Uuid) {
    if let Err(err) = store::restarts::cancel_due(&svc.db, id).await {
        tracing::warn!(workspace_id = %id, error = ?err, "dropping a delayed restart failed");
    }
}

/// Moves `id` to `to` for `cause` (from any status the transition table allows for it, or only
/// from `from`), clearing the URL when the agent stops running and recording `sample_error`;
/// logs `old -> new` when it moved.
async fn transition(
    svc: &Services,
    id: Uuid,
    from: Option<Status>,
    to: Status,
    cause: Cause,
    sample_error: Option<&str>,
) -> Result<bool, StoreError> {
    // With several possible sources, read which one holds, for the `old -> new` log line.
    let old = match from {
        Some(from) => Some(from),
        None => store::workspaces::get(&svc.db, id)
            .await?
            .map(|row| row.status),
    };
    // `hibernating` too: nothing is proxied to an agent that is being stopped (a message then
    // waits in the queue for the wake).
    let clears_url = matches!(
        to,
        Status::Offline
            | Status::Paused
            | Status::Failed
            | Status::Provisioning
            | Status::Hibernating
            | Status::Hibernated
    );
    let moved = if clears_url {
        store::workspaces::transition_stopped(&svc.db, id, from, to, cause, sample_error).await?
    } else {
        store::workspaces::transition(&svc.db, id, from, to, cause).await?
    };
    if moved {
        // Whatever event follows, no replica's routing table keeps the old status or URL.
        svc.events.invalidate(Invalidation::Workspace(id));
        let old = old.map_or("?", Status::as_str);
        tracing::info!(workspace_id = %id, ?cause, "workspace {old} -> {to}");
    }
    Ok(moved)
}

/// Keeps an error fit for the canvas: no control characters, no secret values, bounded length.
fn sanitize(message: &str, secrets: &[String]) -> String {
    let mut text: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    for secret in secrets.iter().filter(|s| s.len() >= 4) {
        text = text.replace(secret.as_str(), "[redacted]");
    }
    text.chars().take(MAX_SAMPLE_ERROR).collect()
}

async fn record_activity(
    svc: &Services,
    id: Uuid,
    activity_type: &str,
    summary: String,
    body: Value,
) {
    let mut row = ActivityRow::new(id, activity_type);
    row.summary = Some(summary);
    row.request_body = Some(body);
    if let Err(err) = store::activity::insert(&svc.db, &row).await {
        tracing::warn!(workspace_id = %id, error = ?err, "recording lifecycle activity failed");
    }
}

/// Marks a provision failed (only from `provisioning`) and tells subscribers.
async fn fail_provision(svc: &Services, id: Uuid, error: &str, extra: Value) {
    match transition(
        svc,
        id,
        None,
        Status::Failed,
        Cause::ProvisionFailed,
        Some(error),
    )
    .await
    {
        Ok(true) => {
            let mut payload = json!({ "error": error });
            if let (Some(obj), Value::Object(more)) = (payload.as_object_mut(), extra) {
                obj.extend(more);
            }
            svc.events
                .emit(names::WORKSPACE_PROVISION_FAILED, Some(id), payload)
                .await;
        }
        Ok(false) => {}
        Err(err) => tracing::error!(workspace_id = %id, error = ?err, "marking a provision failed"),
    }
}

/// Errors of lifecycle operations the HTTP layer maps.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("parent workspace {0:?} is paused — resume it first")]
    AncestorPaused(String),
    #[error("{0}")]
    Conflict(&'static str),
    #[error("provisioner not available")]
    NoRuntime,
    #[error("workspace is busy — pass ?force=true to hibernate anyway")]
    Busy { active_tasks: i32 },
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
}

impl From<StoreError> for LifecycleError {
    fn from(err: StoreError) -> Self {
        LifecycleError::Workspace(WorkspaceError::Store(err))
    }
}

mod hibernate;
mod pause;
mod provision;
mod restart;
mod sweeps;

pub use hibernate::*;
pub use pause::*;
pub use provision::*;
pub use restart::*;
pub use sweeps::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_errors_lose_secrets_control_characters_and_length() {
        let clean = sanitize(
            "start failed: token abcd1234 bad\nnext",
            &["abcd1234".into(), "ab".into()],
        );
        assert_eq!(clean, "start failed: token [redacted] bad next");
        assert_eq!(sanitize(&"x".repeat(2000), &[]).len(), MAX_SAMPLE_ERROR);
    }

    mod with_a_recording_runtime {
        use std::sync::Arc;

        use crate::config::{Config, RuntimeKind};
        use crate::runtime::recording::{Call, RecordingRuntime};
        use crate::services::Services;
        use crate::store::testing::TestDatabase;
        use crate::store::{self, Backend};
        use crate::workspaces::{self, CreateRequest, Status};
        use uuid::Uuid;

        async fn services() -> (
            Services,
            Arc<RecordingRuntime>,
            TestDatabase,
            tempfile::TempDir,
        ) {
            services_with(crate::config::Faults::default()).await
        }

        async fn services_with(
            faults: crate::config::Faults,
        ) -> (
            Services,
            Arc<RecordingRuntime>,
            TestDatabase,
            tempfile::TempDir,
        ) {
            let db = TestDatabase::create(Backend::Sqlite).await;
            let data = tempfile::tempdir().expect("a data dir");
            let mut config = Config {
                database_url: Some(db.url.clone().into()),
                data_dir: data.path().to_path_buf(),
                builtin_extensions_dir: None,
                faults,
                ..Config::default()
            };
            config.runtime.kind = RuntimeKind::None;
            let runtime = Arc::new(RecordingRuntime::default());
            let svc = Services::start_with_runtime(config, Some(runtime.clone()))
                .await
                .expect("services start");
            svc.lifecycle
                .set_platform_url("http://127.0.0.1:8080".to_owned());
            (svc, runtime, db, data)
        }

        async fn create(svc: &Services, name: &str, parent: Option<Uuid>) -> Uuid {
            let request = CreateRequest {
                name: name.to_owned(),
                tier: 2,
                parent_id: parent,
                max_concurrent_tasks: 1,
                ..CreateRequest::default()
            };
            workspaces::create(svc, request).await.expect("created").id
        }

        async fn status(svc: &Services, id: Uuid) -> Status {
            store::workspaces::get(&svc.db, id)
                .await
                .unwrap()
                .unwrap()
                .status
        }

        async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
            for _ in 0..200 {
                if done().await {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            }
            panic!("waited 5 s for {what}");
        }

        #[tokio::test]
        async fn a_pause_stops_every_agent_below_and_a_resume_starts_them_again() {
            let (svc, runtime, _db, _data) = services().await;
            let root = create(&svc, "Root", None).await;
            let child = create(&svc, "Child", Some(root)).await;
            let leaf = create(&svc, "Leaf", Some(child)).await;
            until("three starts", async || runtime.starts() == 3).await;

            assert_eq!(super::super::pause(&svc, root).await.unwrap(), 3);
            for id in [root, child, leaf] {
                assert_eq!(status(&svc, id).await, Status::Paused);
                assert!(!runtime.is_running(id), "the agent of {id} still runs");
                assert!(runtime.calls().contains(&Call::Stop(id)));
            }
            // Pausing again is refused, and stops nothing more.
            let stops = runtime.calls().len();
            assert!(super::super::pause(&svc, root).await.is_err());
            assert_eq!(runtime.calls().len(), stops);

            assert_eq!(super::super::resume(&svc, root).await.unwrap(), 3);
            until("three more starts", async || runtime.starts() == 6).await;
            for id in [root, child, leaf] {
                assert_eq!(status(&svc, id).await, Status::Provisioning);
                assert!(runtime.is_running(id));
            }
        }

        /// Plays the agents: every workspace in `ids` whose agent the runtime started and that
        /// is still provisioning registers (goes online, `WORKSPACE_ONLINE`), as a real agent
        /// does once it is up.
        fn agents_register(
            svc: &Services,
            runtime: &Arc<RecordingRuntime>,
            ids: Vec<Uuid>,
        ) -> tokio::task::JoinHandle<()> {
            let (svc, runtime) = (svc.clone(), runtime.clone());
            tokio::spawn(async move {
                loop {
                    for id in &ids {
                        if runtime.is_running(*id)
                            && store::workspaces::transition(
                                &svc.db,
                                *id,
                                Some(Status::Provisioning),
                                Status::Online,
                                crate::store::status::Cause::Registration,
                            )
                            .await
                            .unwrap()
                        {
                            svc.events
                                .emit(
                                    crate::events::names::WORKSPACE_ONLINE,
                                    Some(*id),
                                    serde_json::json!({}),
                                )
                                .await;
                        }
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            })
        }

        fn stops(runtime: &RecordingRuntime, id: Uuid) -> usize {
            runtime
                .calls()
                .iter()
                .filter(|c| **c == Call::Stop(id))
                .count()
        }

        #[tokio::test]
        async fn a_burst_of_restart_requests_runs_at_most_two_cycles() {
            let (svc, runtime, _db, _data) = services().await;
            let id = create(&svc, "Busy", None).await;
            let registering = agents_register(&svc, &runtime, vec![id]);
            until("online", async || status(&svc, id).await == Status::Online).await;
            // The restarted agent does not register until the whole burst is in, as a real
            // agent takes longer to start than ten requests take to arrive: the first cycle
            // is still waiting for it when the other nine come (on a loaded machine too).
            registering.abort();

            for n in 0..10 {
                let trigger = super::super::Trigger::FilesWritten(vec![format!("file-{n}.md")]);
                super::super::request_restart(&svc, id, trigger)
                    .await
                    .unwrap();
            }
            let registering = agents_register(&svc, &runtime, vec![id]);
            until("the cycles to end", async || {
                status(&svc, id).await == Status::Online
                    && !store::restarts::claimed(&svc.db, id).await.unwrap()
                    && stops(&runtime, id) > 0
            })
            .await;
            let cycles = stops(&runtime, id);
            assert!(
                (1..=2).contains(&cycles),
                "ten requests ran {cycles} cycles"
            );
            assert_eq!(
                runtime.starts(),
                1 + cycles,
                "every cycle started the agent again"
            );
            assert!(runtime.is_running(id));
            registering.abort();
        }

        #[tokio::test]
        async fn a_crashing_agent_is_restarted_after_a_delay_that_doubles() {
            let (svc, runtime, _db, _data) = services().await;
            let id = create(&svc, "Crashy", None).await;
            let registering = agents_register(&svc, &runtime, vec![id]);
            until("online", async || status(&svc, id).await == Status::Online).await;

            let exited = super::super::Trigger::AgentExited(1);
            let asked = std::time::Instant::now();
            let first = super::super::request_restart(&svc, id, exited.clone())
                .await
                .unwrap();
            assert!(
                matches!(
                    first,
                    super::super::RestartOutcome::Decided(super::super::Decision::RestartAfterMs(
                        1_000
                    ))
                ),
                "{first:?}"
            );
            until("the delayed restart", async || stops(&runtime, id) == 1).await;
            assert!(
                asked.elapsed() >= std::time::Duration::from_secs(1),
                "restarted before the delay"
            );
            until("the agent back", async || {
                status(&svc, id).await == Status::Online
            })
            .await;
            // One restart in the window: the next crash waits twice as long.
            let second = super::super::request_restart(&svc, id, exited)
                .await
                .unwrap();
            assert!(
                matches!(
                    second,
                    super::super::RestartOutcome::Decided(super::super::Decision::RestartAfterMs(
                        2_000
                    ))
                ),
                "{second:?}"
            );
            registering.abort();
        }

        #[tokio::test]
        async fn a_delayed_restart_left_by_a_replica_that_died_is_started_by_the_sweep() {
            let (svc, runtime, _db, _data) = services().await;
            let id = create(&svc, "Orphaned", None).await;
            let registering = agents_register(&svc, &runtime, vec![id]);
            until("online", async || status(&svc, id).await == Status::Online).await;
            // What a replica killed while waiting leaves behind: a due time, and no timer.
            let due = chrono::Utc::now() + chrono::Duration::milliseconds(300);
            let ticket = Uuid::new_v4();
            assert!(
                store::restarts::schedule(&svc.db, id, ticket, due)
                    .await
                    .unwrap()
            );
            assert_eq!(
                super::super::start_due(&svc).await.unwrap(),
                0,
                "not yet due"
            );
            tokio::time::sleep(std::time::Duration::from_millis(400)).await;
            assert_eq!(super::super::start_due(&svc).await.unwrap(), 1);
            until("the restart", async || stops(&runtime, id) == 1).await;
            assert_eq!(
                super::super::start_due(&svc).await.unwrap(),
                0,
                "taken once"
            );
            assert!(
                !store::restarts::take(&svc.db, id, ticket).await.unwrap(),
                "the timer of the replica that died would find it gone"
            );
            until("online again", async || {
                status(&svc, id).await == Status::Online
            })
            .await;

            // A restart that starts sooner supersedes a delayed one.
            let later = chrono::Utc::now() - chrono::Duration::seconds(1);
            assert!(
                store::restarts::schedule(&svc.db, id, Uuid::new_v4(), later)
                    .await
                    .unwrap()
            );
            super::super::restart_now(&svc, id).await;
            assert_eq!(super::super::start_due(&svc).await.unwrap(), 0);
            registering.abort();
        }

        async fn busy(svc: &Services, id: Uuid, active_tasks: i32) {
            let report = store::workspaces::HeartbeatReport {
                active_tasks,
                ..Default::default()
            };
            store::workspaces::record_heartbeat(&svc.db, id, &report)
                .await
                .unwrap();
        }

        #[tokio::test]
        async fn a_hibernate_stops_only_the_agent_and_a_wake_starts_it_again() {
            let (svc, runtime, _db, _data) = services().await;
            let root = create(&svc, "Root", None).await;
            let child = create(&svc, "Child", Some(root)).await;
            let registering = agents_register(&svc, &runtime, vec![root, child]);
            until("online", async || {
                status(&svc, root).await == Status::Online
                    && status(&svc, child).await == Status::Online
            })
            .await;
            store::workspaces::set_url(&svc.db, root, Some("http://127.0.0.1:9"))
                .await
                .unwrap();

            super::super::hibernate(&svc, root, false).await.unwrap();
            let row = store::workspaces::get(&svc.db, root)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(row.status, Status::Hibernated);
            assert_eq!(row.url, None, "a hibernated workspace keeps no URL");
            assert!(!runtime.is_running(root));
            // Not cascading: a hibernated parent leaves its children running, and they restart.
            assert!(runtime.is_running(child));
            assert_eq!(status(&svc, child).await, Status::Online);
            assert!(matches!(
                super::super::manual_restart(&svc, child).await,
                Ok(super::super::RestartOutcome::Started)
            ));
            // Hibernating again is refused; the sweeps and automatic restarts leave it alone.
            assert!(matches!(
                super::super::hibernate(&svc, root, false).await,
                Err(super::super::LifecycleError::Conflict(_))
            ));
            assert!(
                !store::workspaces::restartable_ids(&svc.db)
                    .await
                    .unwrap()
                    .contains(&root)
            );
            assert!(super::super::sweep_health(&svc).await.unwrap().is_empty());
            assert_eq!(status(&svc, root).await, Status::Hibernated);
            let skipped =
                super::super::request_restart(&svc, root, super::super::Trigger::AgentExited(1))
                    .await
                    .unwrap();
            assert_eq!(skipped, super::super::RestartOutcome::Skipped("hibernated"));

            let starts = runtime.starts();
            assert!(super::super::wake(&svc, root).await.unwrap());
            assert!(
                !super::super::wake(&svc, root).await.unwrap(),
                "woken twice"
            );
            until("the agent started again", async || {
                runtime.starts() > starts && runtime.is_running(root)
            })
            .await;
            until("online again", async || {
                status(&svc, root).await == Status::Online
            })
            .await;
            registering.abort();
        }

        #[tokio::test]
        async fn a_busy_agent_hibernates_only_when_forced_and_resume_or_restart_wake_it() {
            let (svc, runtime, _db, _data) = services().await;
            let id = create(&svc, "Busy", None).await;
            let registering = agents_register(&svc, &runtime, vec![id]);
            until("online", async || status(&svc, id).await == Status::Online).await;
            busy(&svc, id, 2).await;
            let refused = super::super::hibernate(&svc, id, false).await;
            assert!(
                matches!(
                    refused,
                    Err(super::super::LifecycleError::Busy { active_tasks: 2 })
                ),
                "{refused:?}"
            );
            assert!(runtime.is_running(id));
            super::super::hibernate(&svc, id, true).await.unwrap();
            assert_eq!(status(&svc, id).await, Status::Hibernated);
            assert!(!runtime.is_running(id));

            // Resume wakes it.
            assert_eq!(super::super::resume(&svc, id).await.unwrap(), 1);
            until("online", async || status(&svc, id).await == Status::Online).await;
            busy(&svc, id, 0).await;
            // So does a restart.
            super::super::hibernate(&svc, id, false).await.unwrap();
            let starts = runtime.starts();
            assert!(matches!(
                super::super::manual_restart(&svc, id).await,
                Ok(super::super::RestartOutcome::Started)
            ));
            until("started again", async || runtime.starts() > starts).await;
            until("online", async || status(&svc, id).await == Status::Online).await;
            registering.abort();
        }

        #[tokio::test]
        async fn only_a_running_workspace_hibernates() {
            let (svc, runtime, _db, _data) = services().await;
            let id = create(&svc, "Starting", None).await;
            until("started", async || runtime.starts() == 1).await;
            // Still provisioning: nothing to hibernate.
            assert!(matches!(
                super::super::hibernate(&svc, id, true).await,
                Err(super::super::LifecycleError::Conflict(_))
            ));
            assert!(!super::super::wake(&svc, id).await.unwrap());
            assert_eq!(status(&svc, id).await, Status::Provisioning);
        }

        #[tokio::test]
        async fn the_idle_monitor_hibernates_only_idle_agents_that_asked_for_it() {
            let faults = crate::config::Faults {
                hibernation_minute: Some(std::time::Duration::from_secs(2)),
                ..Default::default()
            };
            let (svc, runtime, _db, _data) = services_with(faults).await;
            let idle = create(&svc, "Idle", None).await;
            let working = create(&svc, "Working", None).await;
            let never = create(&svc, "Never", None).await;
            let patch = |minutes| workspaces::PatchRequest {
                hibernation_idle_minutes: Some(minutes),
                ..Default::default()
            };
            workspaces::patch(&svc, idle, patch(Some(1))).await.unwrap();
            workspaces::patch(&svc, working, patch(Some(1)))
                .await
                .unwrap();
            workspaces::patch(&svc, never, patch(Some(0)))
                .await
                .unwrap();
            let registering = agents_register(&svc, &runtime, vec![idle, working, never]);
            until("online", async || {
                for id in [idle, working, never] {
                    if status(&svc, id).await != Status::Online {
                        return false;
                    }
                }
                true
            })
            .await;
            busy(&svc, working, 1).await;
            // A fresh activity row keeps the idle one awake for one (two-second) minute.
            let mut row = crate::store::activity::ActivityRow::new(idle, "agent_log");
            row.summary = Some("working".into());
            store::activity::insert(&svc.db, &row).await.unwrap();
            assert!(super::super::sweep_idle(&svc).await.unwrap().is_empty());

            until("the idle one hibernated", async || {
                super::super::sweep_idle(&svc).await.unwrap() == vec![idle]
            })
            .await;
            assert_eq!(status(&svc, idle).await, Status::Hibernated);
            assert!(!runtime.is_running(idle));
            assert_eq!(status(&svc, working).await, Status::Online);
            assert_eq!(status(&svc, never).await, Status::Online);
            registering.abort();
        }

        #[tokio::test]
        async fn a_manual_restart_is_refused_under_a_paused_ancestor() {
            let (svc, runtime, _db, _data) = services().await;
            let root = create(&svc, "Root", None).await;
            let child = create(&svc, "Child", Some(root)).await;
            until("two starts", async || runtime.starts() == 2).await;
            super::super::pause(&svc, root).await.unwrap();
            let refused = super::super::manual_restart(&svc, child).await;
            assert!(
                matches!(refused, Err(super::super::LifecycleError::AncestorPaused(ref name)) if name == "Root"),
                "{refused:?}"
            );
            assert_eq!(runtime.starts(), 2, "nothing was started");
        }
    }
}
