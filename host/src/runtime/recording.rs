//! A runtime that runs nothing and records what it was asked: for unit tests of the lifecycle
//! (pause cascades, restarts) and for benches that leave container start-up out. Every call
//! succeeds; an agent counts as running from its `start` until its `stop` or `remove`.

use std::collections::HashSet;
use std::sync::Mutex;

use uuid::Uuid;

use super::{
    ContainerRuntime, ExecOutput, FilesChange, Inspection, RuntimeError, StartSpec, Started,
    WriteTarget,
};
use crate::safefs::{FileTree, RelPath, TarEntry};

/// One call the runtime was asked to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Start(Uuid),
    Stop(Uuid),
    Remove(Uuid),
}

/// Records starts, stops and removals; everything else succeeds without doing anything.
#[derive(Debug, Default)]
pub struct RecordingRuntime {
    calls: Mutex<Vec<Call>>,
    running: Mutex<HashSet<Uuid>>,
}

impl RecordingRuntime {
    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("calls").clone()
    }

    /// How many agents were started.
    pub fn starts(&self) -> usize {
        self.calls()
            .iter()
            .filter(|c| matches!(c, Call::Start(_)))
            .count()
    }

    /// Whether the agent of `id` runs now.
    pub fn is_running(&self, id: Uuid) -> bool {
        self.running.lock().expect("running").contains(&id)
    }

    fn record(&self, call: Call) {
        self.calls.lock().expect("calls").push(call);
        let mut running = self.running.lock().expect("running");
        match call {
            Call::Start(id) => running.insert(id),
            Call::Stop(id) | Call::Remove(id) => running.remove(&id),
        };
    }
}

#[async_trait::async_trait]
impl ContainerRuntime for RecordingRuntime {
    fn name(&self) -> &'static str {
        "recording"
    }
    fn agent_listen_ip(&self) -> Option<std::net::IpAddr> {
        None
    }
    async fn start(&self, spec: &StartSpec) -> Result<Started, RuntimeError> {
        self.record(Call::Start(spec.workspace_id));
        Ok(Started {
            url: format!("http://127.0.0.1:{}", spec.port),
        })
    }
    async fn stop(&self, id: Uuid) -> Result<(), RuntimeError> {
        self.record(Call::Stop(id));
        Ok(())
    }
    async fn remove(&self, id: Uuid) -> Result<(), RuntimeError> {
        self.record(Call::Remove(id));
        Ok(())
    }
    async fn inspect(&self, id: Uuid) -> Result<Inspection, RuntimeError> {
        let running = self.is_running(id);
        Ok(Inspection {
            exists: running,
            running,
            exit_code: None,
        })
    }
    async fn write_files(&self, _: Uuid, _: &FileTree) -> Result<WriteTarget, RuntimeError> {
        Ok(WriteTarget::Running)
    }
    async fn archive(
        &self,
        _: Uuid,
        _: &str,
        _: Option<&RelPath>,
    ) -> Result<Vec<TarEntry>, RuntimeError> {
        Ok(Vec::new())
    }
    async fn change_files(&self, _: Uuid, _: FilesChange<'_>) -> Result<WriteTarget, RuntimeError> {
        Ok(WriteTarget::Running)
    }
    async fn exec(&self, _: Uuid, _: &[String]) -> Result<ExecOutput, RuntimeError> {
        Err(RuntimeError::Unavailable("recording runtime".into()))
    }
    async fn logs(&self, _: Uuid, _: usize) -> Result<String, RuntimeError> {
        Ok(String::new())
    }
    async fn managed(&self) -> Result<Vec<Uuid>, RuntimeError> {
        Ok(self
            .running
            .lock()
            .expect("running")
            .iter()
            .copied()
            .collect())
    }
    async fn shutdown(&self) {}
}
