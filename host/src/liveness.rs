//! Which background loops of this replica are alive: each loop says when a pass starts
//! ([`Liveness::tick`]); a periodic loop whose last pass started more than
//! [`stale_after`] its interval ago is stalled (a pass that hangs, a loop that died), and so is a
//! loop that reports itself down (the event relay while it cannot listen). `GET /admin/liveness`
//! lists them and `GET /health` says `degraded` while any is stale.
//!
//! A pass that a replica skips because another one holds the sweeper's lease still counts as a
//! tick: the loop is alive, whichever replica does the work.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

/// How a loop is expected to show signs of life.
#[derive(Debug, Clone, Copy)]
pub enum Cadence {
    /// A pass at least every `interval`.
    Every(Duration),
    /// Driven by what arrives (the event relay): alive unless it reports itself down.
    OnEvents,
}

#[derive(Debug)]
struct Entry {
    cadence: Cadence,
    registered: Instant,
    last_tick: Option<(Instant, DateTime<Utc>)>,
    /// Why the loop cannot work right now, as it reported.
    down: Option<String>,
}

/// The loops of this replica and their last ticks.
#[derive(Debug)]
pub struct Liveness {
    loops: Mutex<BTreeMap<&'static str, Entry>>,
    /// The least time before a periodic loop is stale (`supervision.stale_floor_secs`).
    floor: Duration,
}

/// The longest a periodic loop may go without starting a pass before it is stale: three
/// intervals, and never less than `floor` (a pass may legitimately take a while).
pub fn stale_after(interval: Duration, floor: Duration) -> Duration {
    (interval * 3).max(floor)
}

/// One loop's state.
#[derive(Debug, Clone)]
pub struct Subsystem {
    /// When its last pass started (`null`: none yet).
    pub last_tick_at: Option<DateTime<Utc>>,
    /// Seconds since then (since the loop started, when it has not ticked yet).
    pub seconds_ago: u64,
    /// Its interval, for periodic loops; `null` for loops driven by events.
    pub interval_secs: Option<u64>,
    /// Whether it is overdue (or reports itself down).
    pub stale: bool,
    /// Why it reports itself down.
    pub down: Option<String>,
}

impl Liveness {
    pub fn new(floor: Duration) -> Liveness {
        Liveness {
            loops: Mutex::default(),
            floor,
        }
    }

    /// Adds a loop (again: its record starts over).
    pub fn register(&self, name: &'static str, cadence: Cadence) {
        self.lock().insert(
            name,
            Entry {
                cadence,
                registered: Instant::now(),
                last_tick: None,
                down: None,
            },
        );
    }

    /// `name` started a pass (or, for a loop driven by events, handled one and is up).
    pub fn tick(&self, name: &'static str) {
        if let Some(entry) = self.lock().get_mut(name) {
            entry.last_tick = Some((Instant::now(), Utc::now()));
            entry.down = None;
        }
    }

    /// `name` cannot work right now, for `reason`, until its next tick.
    pub fn down(&self, name: &'static str, reason: &str) {
        if let Some(entry) = self.lock().get_mut(name) {
            entry.down = Some(reason.to_owned());
        }
    }

    /// Every loop, by name.
    pub fn report(&self) -> BTreeMap<&'static str, Subsystem> {
        let now = Instant::now();
        self.lock()
            .iter()
            .map(|(name, entry)| {
                let since = entry.last_tick.map_or(entry.registered, |(at, _)| at);
                let ago = now.saturating_duration_since(since);
                let (interval, overdue) = match entry.cadence {
                    Cadence::Every(interval) => {
                        (Some(interval), ago > stale_after(interval, self.floor))
                    }
                    Cadence::OnEvents => (None, false),
                };
                let subsystem = Subsystem {
                    last_tick_at: entry.last_tick.map(|(_, at)| at),
                    seconds_ago: ago.as_secs(),
                    interval_secs: interval.map(|i| i.as_secs()),
                    stale: overdue || entry.down.is_some(),
                    down: entry.down.clone(),
                };
                (*name, subsystem)
            })
            .collect()
    }

    /// The names of the stale loops.
    pub fn stale(&self) -> Vec<&'static str> {
        self.report()
            .into_iter()
            .filter(|(_, s)| s.stale)
            .map(|(name, _)| name)
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, Entry>> {
        self.loops.lock().expect("liveness lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_loop_is_stale_once_overdue_and_fresh_after_its_next_tick() {
        let liveness = Liveness::new(Duration::from_secs(30));
        liveness.register("sweep", Cadence::Every(Duration::from_secs(20)));
        liveness.register("relay", Cadence::OnEvents);
        assert!(liveness.stale().is_empty(), "nothing is overdue at start");
        assert_eq!(liveness.report()["sweep"].last_tick_at, None);

        liveness.tick("sweep");
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(
            liveness.stale().is_empty(),
            "three intervals have not passed"
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(liveness.stale(), ["sweep"]);
        let report = liveness.report();
        assert_eq!(report["sweep"].seconds_ago, 61);
        assert_eq!(report["sweep"].interval_secs, Some(20));
        assert!(report["sweep"].last_tick_at.is_some());
        // A loop driven by events is never overdue, only down when it says so.
        assert!(!report["relay"].stale);

        liveness.tick("sweep");
        liveness.down("relay", "cannot listen");
        assert_eq!(liveness.stale(), ["relay"]);
        assert_eq!(
            liveness.report()["relay"].down.as_deref(),
            Some("cannot listen")
        );
        liveness.tick("relay");
        assert!(liveness.stale().is_empty());
    }

    #[test]
    fn short_intervals_get_a_floor() {
        let floor = Duration::from_secs(30);
        assert_eq!(stale_after(Duration::from_secs(1), floor), floor);
        assert_eq!(
            stale_after(Duration::from_secs(60), floor),
            Duration::from_secs(180)
        );
    }
}
