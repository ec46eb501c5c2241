//! The log output of every host this test process runs in-process.
//!
//! Hosts run in-process, so their `tracing` output goes to the process-wide subscriber; this
//! module installs one that writes into a shared buffer (nextest runs each test in a process of
//! its own). Two uses, whichever comes first in a process deciding the subscriber:
//! - [`capture`]: everything, at every level, from the first call on: specs that assert a secret
//!   value or a token never reaches a log line. They look for strings unique to themselves.
//! - [`diagnostics`]: what the host says at `debug` and up (no library statements), kept within
//!   a bounded tail, so a spec that times out can show what the host did about its workspace
//!   ([`Logs::mentioning`]). Every in-process host ([`crate::TestApp`]) installs it.

use std::sync::{Arc, Mutex, OnceLock};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt as _;

/// What a diagnostics buffer keeps at most; the oldest half goes when it is full.
const DIAGNOSTICS_CAP: usize = 16 << 20;

#[derive(Debug, Clone)]
struct Buffer {
    bytes: Arc<Mutex<Vec<u8>>>,
    /// `None`: keep everything (a [`capture`]).
    cap: Option<usize>,
}

impl std::io::Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut kept = self
            .bytes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(cap) = self.cap
            && kept.len() + bytes.len() > cap
        {
            let cut = kept.len() / 2;
            // From the start of a line, so no line is shown cut.
            let cut = kept[cut..]
                .iter()
                .position(|b| *b == b'\n')
                .map_or(kept.len(), |at| cut + at + 1);
            kept.drain(..cut);
        }
        kept.extend_from_slice(bytes);
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

/// The process's subscriber: its buffer and whether it keeps everything.
static INSTALLED: OnceLock<Buffer> = OnceLock::new();

fn install(filter: &str, cap: Option<usize>) -> &'static Buffer {
    INSTALLED.get_or_init(|| {
        let buffer = Buffer {
            bytes: Arc::default(),
            cap,
        };
        tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new(filter))
            .with_ansi(false)
            .with_writer(buffer.clone())
            .finish()
            .try_init()
            .expect("the log capture is the only global subscriber of the e2e tests");
        buffer
    })
}

/// A handle on what the hosts of this process have logged.
#[derive(Debug, Clone)]
pub struct Logs(Buffer);

/// Starts capturing everything (once per process) and returns a handle on the capture. Call it
/// before the spec starts its host: a process whose host started first has only the
/// diagnostics tail, and a spec reading that could pass for want of the lines it looks for.
pub fn capture() -> Logs {
    // Everything the host crate says, at every level, plus the debug output of the layers and
    // libraries it serves through (tower-http request spans, sqlx statements).
    let buffer = install("debug,molecule_host=trace", None);
    assert!(
        buffer.cap.is_none(),
        "logs::capture() must come before the spec's host starts (it installed the bounded \
         diagnostics capture)"
    );
    Logs(buffer.clone())
}

/// Starts the bounded diagnostics capture unless a capture runs already.
pub fn diagnostics() -> Logs {
    Logs(install("info,molecule_host=debug", Some(DIAGNOSTICS_CAP)).clone())
}

impl Logs {
    pub fn text(&self) -> String {
        let bytes = self
            .0
            .bytes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The last `n` lines that mention `needle` (a workspace id), oldest first.
    pub fn mentioning(&self, needle: &str, n: usize) -> Vec<String> {
        let text = self.text();
        let mut lines: Vec<String> = text
            .lines()
            .rev()
            .filter(|line| line.contains(needle))
            .take(n)
            .map(str::to_owned)
            .collect();
        lines.reverse();
        lines
    }
}
