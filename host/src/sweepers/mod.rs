//! Background loops. Each runs on the host's task tracker, checks the shutdown token before every
//! pass and between passes, and is joined when the host stops.
//!
//! The sweepers here work on the shared database and runtime, so each runs on one replica at a
//! time: a pass runs only while this replica holds the sweeper's lease (`cluster::Leases`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::RuntimeConfig;
use crate::liveness::{Cadence, Liveness};
use crate::services::Services;
use crate::workspaces::lifecycle;

/// Starts every sweeper on `tracker`.
/// How often a replica looks for delayed restarts left by a replica that stopped: the most one
/// can start late.
const DELAYED_RESTART_SWEEP: std::time::Duration = std::time::Duration::from_secs(2);

pub fn spawn_all(svc: &Services, tracker: &TaskTracker, shutdown: &CancellationToken) {
    spawn_sweep(
        svc,
        tracker,
        shutdown,
        "liveness",
        svc.config.liveness.sweep_interval(),
        |svc| async move {
            let stale = crate::workspaces::registry::sweep_liveness(&svc).await?;
            lifecycle::after_heartbeat_loss(&svc, &stale).await;
            Ok(())
        },
    );
    spawn_sweep(
        svc,
        tracker,
        shutdown,
        "delayed-restarts",
        DELAYED_RESTART_SWEEP,
        |svc| async move { lifecycle::start_due(&svc).await.map(|_| ()) },
    );
    spawn_sweep(
        svc,
        tracker,
        shutdown,
        "plugin-drift",
        RuntimeConfig::sweep(svc.config.plugins.drift_interval_secs),
        |svc| async move {
            use crate::plugins::drift::{SweepTrigger, sweep_recorded};
            sweep_recorded(&svc, SweepTrigger::Scheduled)
                .await
                .map(|_| ())
        },
    );
    spawn_sweep(
        svc,
        tracker,
        shutdown,
        "a2a-queue-expiry",
        RuntimeConfig::sweep(svc.config.a2a.queue_expiry_sweep_secs),
        |svc| async move {
            crate::delegation::queue::sweep_expired(&svc).await?;
            // A SQLite host did this at its start, and runs every import there is itself.
            if svc.db.backend() == crate::store::Backend::Postgres {
                crate::org::import::fail_abandoned(&svc, false).await?;
            }
            Ok(())
        },
    );
    spawn_sweep(
        svc,
        tracker,
        shutdown,
        "pending-uploads",
        RuntimeConfig::sweep(svc.config.a2a.queue_expiry_sweep_secs),
        |svc| async move {
            crate::workspaces::uploads::sweep_pending(&svc)
                .await
                .map(|_| ())
        },
    );
    spawn_sweep(
        svc,
        tracker,
        shutdown,
        "kv-expiry",
        RuntimeConfig::sweep(svc.config.kv.expiry_sweep_secs),
        |svc| async move { crate::memory::kv::sweep_expired(&svc).await.map(|_| ()) },
    );
    spawn_scheduler(svc, tracker, shutdown);
    if svc.lifecycle.runtime().is_none() {
        // Without a runtime nothing is started, so nothing can be stuck, gone or orphaned.
        return;
    }
    spawn_sweep(
        svc,
        tracker,
        shutdown,
        "plugin-swap-dirs",
        RuntimeConfig::sweep(svc.config.plugins.swap_sweep_secs),
        |svc| async move {
            crate::plugins::drift::sweep_swap_dirs(&svc)
                .await
                .map(|_| ())
        },
    );
    let settings = &svc.config.runtime;
    spawn_sweep(
        svc,
        tracker,
        shutdown,
        "provision-timeout",
        RuntimeConfig::sweep(settings.provision_timeout_secs.clamp(1, 30)),
        |svc| async move { lifecycle::sweep_provision_timeouts(&svc).await.map(|_| ()) },
    );
    spawn_sweep(
        svc,
        tracker,
        shutdown,
        "health",
        RuntimeConfig::sweep(settings.health_sweep_secs),
        |svc| async move { lifecycle::sweep_health(&svc).await.map(|_| ()) },
    );
    spawn_sweep(
        svc,
        tracker,
        shutdown,
        "orphans",
        RuntimeConfig::sweep(settings.orphan_sweep_secs),
        |svc| async move { lifecycle::sweep_orphans(&svc).await.map(|_| ()) },
    );
    spawn_sweep(
        svc,
        tracker,
        shutdown,
        "hibernation",
        RuntimeConfig::sweep(settings.hibernation_sweep_secs),
        |svc| async move { lifecycle::sweep_idle(&svc).await.map(|_| ()) },
    );
}

/// The scheduler: every `schedules.poll_interval_ms`, while this replica holds the `scheduler`
/// lease, claims the due schedule ticks and starts their fires (beside the pass, bounded; see
/// [`crate::schedules`]). The first pass under the lease repairs rows left unscheduled.
fn spawn_scheduler(svc: &Services, tracker: &TaskTracker, shutdown: &CancellationToken) {
    const NAME: &str = "scheduler";
    let scheduler = crate::schedules::Scheduler::new(svc, tracker, shutdown);
    let svc = svc.clone();
    let repaired = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let interval = svc.config.schedules.poll_interval();
    let supervised = supervision(&svc);
    spawn_loop(supervised, tracker, shutdown, NAME, interval, move || {
        let (svc, scheduler, repaired) = (svc.clone(), scheduler.clone(), repaired.clone());
        async move {
            if !svc.cluster.leases.hold(NAME).await {
                return;
            }
            svc.cluster.leases.count_pass(NAME);
            if !repaired.load(std::sync::atomic::Ordering::Relaxed) {
                match scheduler.repair(&svc).await {
                    Ok(_) => repaired.store(true, std::sync::atomic::Ordering::Relaxed),
                    Err(err) => {
                        tracing::warn!(error = ?err, "repairing schedules failed; retrying")
                    }
                }
            }
            if let Err(err) = scheduler.sweep(&svc).await {
                tracing::warn!(sweeper = NAME, error = ?err, "sweep failed; retrying next interval");
            }
        }
    });
}

/// How often a replica re-reads the extension slots even when no event said they changed (an
/// event lost with a dropped connection is caught here).
const EXTENSION_SYNC_INTERVAL: Duration = Duration::from_secs(30);

/// Keeps this replica's extension slots in line with the database: at once after any
/// `EXTENSION_*` event (from this replica or another), and every [`EXTENSION_SYNC_INTERVAL`].
/// Every replica runs it; it takes no lease.
pub fn spawn_extension_sync(svc: &Services, tracker: &TaskTracker, shutdown: &CancellationToken) {
    const NAME: &str = "extension-sync";
    let (svc, shutdown) = (svc.clone(), shutdown.clone());
    let mut events = svc.events.subscribe();
    svc.liveness
        .register(NAME, Cadence::Every(EXTENSION_SYNC_INTERVAL));
    tracker.spawn(async move {
        let mut ticker = ticker(EXTENSION_SYNC_INTERVAL);
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                _ = ticker.tick() => {}
                event = events.next() => match event {
                    Ok(Some(event)) if event.event.starts_with("EXTENSION_") => {}
                    Ok(Some(_)) => continue,
                    Ok(None) => break,
                    // Fell behind: whatever it missed, a sync now covers it.
                    Err(_) => events = svc.events.subscribe(),
                },
            }
            svc.liveness.tick(NAME);
            if let Err(err) = svc.extensions.sync().await {
                tracing::warn!(error = %err, "syncing extension slots failed; retrying");
            }
        }
    });
}

/// A sweep over the services, run while this replica holds its lease; failures are logged and
/// retried next interval.
fn spawn_sweep<F, Fut>(
    svc: &Services,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
    name: &'static str,
    interval: Duration,
    pass: F,
) where
    F: Fn(Services) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), crate::store::StoreError>> + Send + 'static,
{
    let svc = svc.clone();
    let pass = Arc::new(pass);
    let supervised = supervision(&svc);
    spawn_loop(supervised, tracker, shutdown, name, interval, move || {
        let (svc, pass) = (svc.clone(), pass.clone());
        async move {
            if !svc.cluster.leases.hold(name).await {
                return;
            }
            svc.cluster.leases.count_pass(name);
            if let Err(err) = pass(svc).await {
                tracing::warn!(sweeper = name, error = ?err, "sweep failed; retrying next interval");
            }
        }
    });
}

/// Ticks at once, then every `interval`; a late pass delays the next tick instead of bunching.
fn ticker(interval: Duration) -> tokio::time::Interval {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker
}

/// Runs `pass` every `interval` until `shutdown` is cancelled, telling `liveness` as each pass
/// starts. A pass in progress is finished, never cut off halfway, so a sweep's writes and events
/// always arrive together.
///
/// `stalled` is a fault hook: the loop of that name hangs in its first pass (as a sweep stuck on
/// a lock or a call that never returns would), so a spec sees liveness report it.
pub fn spawn_loop<F, Fut>(
    (liveness, stalled): (Arc<Liveness>, Option<&'static str>),
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
    name: &'static str,
    interval: Duration,
    mut pass: F,
) where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let shutdown = shutdown.clone();
    liveness.register(name, Cadence::Every(interval));
    let stalls = stalled == Some(name);
    tracker.spawn(async move {
        let mut ticker = ticker(interval);
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                _ = ticker.tick() => {}
            }
            liveness.tick(name);
            if stalls {
                tracing::warn!(sweeper = name, "fault hook: this loop's pass hangs");
                shutdown.cancelled().await;
                break;
            }
            pass().await;
        }
        tracing::debug!(sweeper = name, "sweeper stopped");
    });
}

/// What [`spawn_loop`] needs from the services to supervise a loop.
pub fn supervision(svc: &Services) -> (Arc<Liveness>, Option<&'static str>) {
    (svc.liveness.clone(), svc.config.faults.stalled_loop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(start_paused = true)]
    async fn a_loop_runs_each_interval_and_stops_on_shutdown() {
        let tracker = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let passes = Arc::new(AtomicUsize::new(0));
        let counter = passes.clone();
        let liveness = Arc::new(Liveness::new(Duration::from_secs(30)));
        spawn_loop(
            (liveness.clone(), None),
            &tracker,
            &shutdown,
            "test",
            Duration::from_secs(10),
            move || {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
            },
        );
        tokio::time::sleep(Duration::from_secs(35)).await;
        assert_eq!(
            passes.load(Ordering::SeqCst),
            4,
            "at 0, 10, 20 and 30 seconds"
        );
        shutdown.cancel();
        tracker.close();
        tracker.wait().await;
        let after = passes.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(
            passes.load(Ordering::SeqCst),
            after,
            "no pass after shutdown"
        );
    }
}
