//! Captures the log output of every host this test process runs, so specs can assert that a
//! secret value or a token never reaches a log line.
//!
//! Hosts run in-process, so their `tracing` output goes to the process-wide subscriber; this
//! module installs one that writes into a shared buffer. Every spec that reads it looks for
//! strings unique to itself, so tests running in parallel never confuse each other.

use std::sync::{Arc, Mutex, OnceLock};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt as _;

#[derive(Debug, Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'a self) -> Buffer {
        self.clone()
    }
}

static CAPTURED: OnceLock<Buffer> = OnceLock::new();

/// Everything the hosts of this process have logged, from the first call on.
#[derive(Debug, Clone)]
pub struct Logs(Buffer);

/// Starts capturing (once per process) and returns a handle on the capture.
pub fn capture() -> Logs {
    let buffer = CAPTURED.get_or_init(|| {
        let buffer = Buffer::default();
        // Everything the host crate says, at every level, plus the debug output of the layers
        // and libraries it serves through (tower-http request spans, sqlx statements).
        tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new("debug,molecule_host=trace"))
            .with_ansi(false)
            .with_writer(buffer.clone())
            .finish()
            .try_init()
            .expect("the log capture is the only global subscriber of the e2e tests");
        buffer
    });
    Logs(buffer.clone())
}

impl Logs {
    pub fn text(&self) -> String {
        let bytes = self
            .0
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        String::from_utf8_lossy(&bytes).into_owned()
    }
}
