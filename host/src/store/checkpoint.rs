//! The SQLite checkpointer: WAL frames are copied back into the database by a background task on
//! a connection of its own, so no committing request pays for a checkpoint and the WAL stays
//! short under a steady write load.
//!
//! A `PASSIVE` checkpoint never waits for the writer or the readers: it copies what it can and
//! the next writer starts the WAL from the beginning once every frame is in the database. When
//! the host stops, one `TRUNCATE` checkpoint leaves an empty WAL behind.

use std::time::Duration;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions as _, Connection as _, SqliteConnection};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often the WAL is checkpointed.
pub const INTERVAL: Duration = Duration::from_millis(500);
/// `wal_autocheckpoint` (pages): the commit-time checkpoint SQLite runs only should the
/// background one fall this far behind (about 40 MB of 4 KiB pages).
pub const AUTOCHECKPOINT_PAGES: u32 = 10_000;

#[derive(Debug)]
pub struct Checkpointer {
    stop: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Checkpointer {
    /// Starts checkpointing the database `options` opens (nothing for an in-memory one).
    pub fn start(options: SqliteConnectOptions) -> Checkpointer {
        let stop = CancellationToken::new();
        let file = options.get_filename();
        let task = (!file.as_os_str().is_empty() && file.as_os_str() != ":memory:")
            .then(|| tokio::spawn(run(options, stop.clone())));
        Checkpointer {
            stop,
            task: Mutex::new(task),
        }
    }

    /// Stops the task after a last, truncating checkpoint.
    pub async fn stop(&self) {
        self.stop.cancel();
        if let Some(task) = self.task.lock().await.take() {
            let _ = task.await;
        }
    }
}

async fn run(options: SqliteConnectOptions, stop: CancellationToken) {
    let mut connection: Option<SqliteConnection> = None;
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let last = tokio::select! {
            _ = tick.tick() => false,
            () = stop.cancelled() => true,
        };
        if connection.is_none() {
            match options.connect().await {
                Ok(opened) => connection = Some(opened),
                Err(err) => {
                    tracing::warn!(error = %err, "opening the checkpoint connection failed; retrying");
                    if last {
                        return;
                    }
                    continue;
                }
            }
        }
        let Some(open) = connection.as_mut() else {
            continue;
        };
        let sql = if last {
            "PRAGMA wal_checkpoint(TRUNCATE)"
        } else {
            "PRAGMA wal_checkpoint(PASSIVE)"
        };
        if let Err(err) = sqlx::query(sql).execute(&mut *open).await {
            tracing::warn!(error = %err, "checkpointing the SQLite WAL failed");
            // A connection in a bad state is opened afresh next time.
            if let Some(broken) = connection.take() {
                let _ = broken.close().await;
            }
        }
        if last {
            if let Some(open) = connection.take() {
                let _ = open.close().await;
            }
            return;
        }
    }
}
