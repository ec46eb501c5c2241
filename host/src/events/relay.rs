//! Events across replicas: the notifier sends this replica's events to [`CHANNEL`] in order; the
//! listener publishes what the other replicas sent, and catches up from `structure_events` after
//! its connection was lost.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Event, EventBus, Invalidation};
use crate::store::{self, Db};

/// The notification channel every replica listens on.
pub const CHANNEL: &str = "molecule_events";
/// Notification payloads stay well below PostgreSQL's limit of 8000 bytes; a larger event is sent
/// by id.
const MAX_NOTIFY_BYTES: usize = 7000;
/// How many recorded event ids a replica remembers having published.
const SEEN_CAPACITY: usize = 16_384;
/// How far before the newest event it had seen a catch-up starts reading: other replicas' events
/// commit slightly out of timestamp order, and their clocks differ a little.
const CATCH_UP_MARGIN: chrono::Duration = chrono::Duration::seconds(30);
const CATCH_UP_PAGE: i64 = 500;
/// Pause before reconnecting after the database refused the relay.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// What this replica sends to the others.
#[derive(Debug)]
pub(super) enum Outgoing {
    Recorded(Uuid, Arc<Event>),
    Transient(Arc<Event>),
    /// What the other replicas' caches must forget.
    Invalidate(Invalidation),
}

/// Recorded events already published on this replica, oldest forgotten first.
#[derive(Debug, Default)]
pub(super) struct Seen {
    order: VecDeque<Uuid>,
    ids: HashSet<Uuid>,
    newest: Option<DateTime<Utc>>,
}

impl Seen {
    /// Remembers `id`; false when it was already there.
    pub(super) fn insert(&mut self, id: Uuid, at: DateTime<Utc>) -> bool {
        self.newest = Some(self.newest.map_or(at, |n| n.max(at)));
        if !self.ids.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > SEEN_CAPACITY
            && let Some(old) = self.order.pop_front()
        {
            self.ids.remove(&old);
        }
        true
    }

    fn contains(&self, id: Uuid) -> bool {
        self.ids.contains(&id)
    }
}

/// A notification's payload. Short keys: every byte counts against the notify limit.
#[derive(Debug, Serialize, Deserialize)]
struct Wire {
    /// The replica that published it.
    o: Uuid,
    /// The sender's sequence number (also keeps identical payloads distinct, which PostgreSQL
    /// would otherwise fold into one notification within a transaction).
    s: u64,
    /// The recorded event's id; none for a transient event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    i: Option<Uuid>,
    /// The event itself; none when it was too large (read it back by id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    e: Option<WireEvent>,
    /// An invalidation instead of an event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    x: Option<Invalidation>,
}

#[derive(Debug, Serialize, Deserialize)]
struct WireEvent {
    n: String,
    w: Option<Uuid>,
    t: DateTime<Utc>,
    p: Value,
}

impl WireEvent {
    fn of(event: &Event) -> Self {
        WireEvent {
            n: event.event.clone(),
            w: event.workspace_id,
            t: event.timestamp,
            p: event.payload.clone(),
        }
    }

    fn into_event(self) -> Event {
        Event {
            event: self.n,
            workspace_id: self.w,
            timestamp: self.t,
            payload: self.p,
        }
    }
}

/// The payload for `outgoing`, or `None` for a transient event too large to send.
fn encode(origin: Uuid, seq: u64, outgoing: &Outgoing) -> Option<String> {
    let (id, event) = match outgoing {
        Outgoing::Recorded(id, event) => (Some(*id), event),
        Outgoing::Transient(event) => (None, event),
        Outgoing::Invalidate(what) => {
            let wire = Wire {
                o: origin,
                s: seq,
                i: None,
                e: None,
                x: Some(*what),
            };
            return serde_json::to_string(&wire).ok();
        }
    };
    let full = Wire {
        o: origin,
        s: seq,
        i: id,
        e: Some(WireEvent::of(event)),
        x: None,
    };
    let text = serde_json::to_string(&full).ok()?;
    if text.len() <= MAX_NOTIFY_BYTES {
        return Some(text);
    }
    match id {
        Some(_) => serde_json::to_string(&Wire { e: None, ..full }).ok(),
        None => {
            tracing::debug!(event = %event.event, bytes = text.len(), "a transient event too large to relay stays on this replica");
            None
        }
    }
}

fn row_event(row: store::events::EventRow) -> Event {
    Event {
        event: row.event_type,
        workspace_id: row.workspace_id,
        timestamp: row.created_at,
        payload: row.payload.unwrap_or(Value::Null),
    }
}

impl EventBus {
    /// Relays events between this replica and the others until `stop` is cancelled. Returns at
    /// once on SQLite (one replica) or when a relay already runs.
    pub async fn relay(&self, stop: CancellationToken) {
        let Db::Postgres(pool) = &self.db else {
            return;
        };
        let (tx, rx) = mpsc::unbounded_channel();
        if self.outbox.set(tx).is_err() {
            return;
        }
        tokio::join!(
            notify_loop(pool.clone(), self.origin, rx, stop.clone()),
            self.listen_loop(pool, stop)
        );
    }

    async fn listen_loop(&self, pool: &PgPool, stop: CancellationToken) {
        let mut listener: Option<PgListener> = None;
        let mut behind = false;
        loop {
            let current = match &mut listener {
                Some(listener) => listener,
                None => match listen(pool).await {
                    Ok(connected) => {
                        if behind {
                            self.catch_up().await;
                            behind = false;
                        }
                        listener.insert(connected)
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "the event relay cannot listen; retrying");
                        behind = true;
                        tokio::select! {
                            () = stop.cancelled() => return,
                            () = tokio::time::sleep(RECONNECT_DELAY) => continue,
                        }
                    }
                },
            };
            let next = tokio::select! {
                () = stop.cancelled() => return,
                next = current.try_recv() => next,
            };
            match next {
                Ok(Some(notification)) => self.receive(notification.payload()).await,
                // The connection was lost and has been re-established (and is listening again):
                // what was sent meanwhile is only in the log.
                Ok(None) => {
                    tracing::warn!(
                        "the event relay lost its connection; reconnected, catching up from the event log"
                    );
                    self.catch_up().await;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "the event relay lost its connection; reconnecting");
                    listener = None;
                    behind = true;
                }
            }
        }
    }

    /// Publishes one notification from another replica.
    async fn receive(&self, payload: &str) {
        let wire: Wire = match serde_json::from_str(payload) {
            Ok(wire) => wire,
            Err(err) => {
                tracing::warn!(error = %err, "an unreadable event notification was ignored");
                return;
            }
        };
        if wire.o == self.origin {
            return;
        }
        if let Some(what) = wire.x {
            self.forget_here(what);
            return;
        }
        let Some(id) = wire.i else {
            if let Some(event) = wire.e {
                self.publish(Arc::new(event.into_event()));
            }
            return;
        };
        if self.seen.lock().expect("seen lock").contains(id) {
            return;
        }
        let event = match wire.e {
            Some(event) => event.into_event(),
            None => match store::events::get(&self.db, id).await {
                Ok(Some(row)) => row_event(row),
                Ok(None) => {
                    tracing::warn!(%id, "a notified event is not in the log");
                    return;
                }
                Err(err) => {
                    tracing::warn!(%id, error = ?err, "reading a notified event failed");
                    return;
                }
            },
        };
        self.publish_remote(id, event);
    }

    /// Publishes an event recorded elsewhere unless it was published here already.
    fn publish_remote(&self, id: Uuid, event: Event) -> bool {
        let new = self
            .seen
            .lock()
            .expect("seen lock")
            .insert(id, event.timestamp);
        if new {
            self.publish(Arc::new(event));
        }
        new
    }

    /// Publishes what the log holds from a little before the newest event seen here and was not
    /// published here yet.
    async fn catch_up(&self) {
        // Invalidations sent meanwhile are lost for good: nothing cached can be trusted.
        self.forget_here(Invalidation::All);
        let newest = self.seen.lock().expect("seen lock").newest;
        let mut cursor = newest.unwrap_or_else(Utc::now) - CATCH_UP_MARGIN;
        let mut published = 0usize;
        loop {
            let rows = match store::events::since(&self.db, cursor, CATCH_UP_PAGE).await {
                Ok(rows) => rows,
                Err(err) => {
                    tracing::error!(error = ?err, "catching up from the event log failed; events may be missing");
                    return;
                }
            };
            let full = rows.len() as i64 == CATCH_UP_PAGE;
            let last = rows.last().map(|r| r.created_at);
            for row in rows {
                let id = row.id;
                if self.publish_remote(id, row_event(row)) {
                    published += 1;
                }
            }
            match last {
                Some(last) if full && last > cursor => cursor = last,
                _ => break,
            }
        }
        tracing::info!(published, "event relay caught up");
    }
}

async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// Sends this replica's events, in the order they were published, until `stop`; what is queued
/// then is still sent.
async fn notify_loop(
    pool: PgPool,
    origin: Uuid,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    stop: CancellationToken,
) {
    let mut seq = 0u64;
    let mut batch = Vec::new();
    loop {
        let received = tokio::select! {
            received = rx.recv_many(&mut batch, 256) => received,
            () = stop.cancelled() => 0,
        };
        if received == 0 {
            while let Ok(outgoing) = rx.try_recv() {
                batch.push(outgoing);
            }
        }
        let payloads: Vec<String> = batch
            .drain(..)
            .filter_map(|outgoing| {
                seq += 1;
                encode(origin, seq, &outgoing)
            })
            .collect();
        if !payloads.is_empty() {
            send(&pool, &payloads).await;
        }
        if received == 0 {
            return;
        }
    }
}

/// One statement for a batch: notifications of one transaction arrive in the order sent.
async fn send(pool: &PgPool, payloads: &[String]) {
    for attempt in 1..=3 {
        match sqlx::query("SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS t(payload)")
            .bind(CHANNEL)
            .bind(payloads)
            .execute(pool)
            .await
        {
            Ok(_) => return,
            Err(err) if attempt < 3 => {
                tracing::warn!(error = %err, attempt, "sending events to other replicas failed; retrying");
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
            Err(err) => {
                tracing::error!(error = %err, count = payloads.len(), "events were not sent to other replicas");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(payload: Value) -> Arc<Event> {
        Arc::new(Event {
            event: "WORKSPACE_UPDATED".into(),
            workspace_id: Some(Uuid::new_v4()),
            timestamp: Utc::now(),
            payload,
        })
    }

    #[test]
    fn large_recorded_events_travel_by_id_and_large_transient_ones_stay() {
        let origin = Uuid::new_v4();
        let id = Uuid::new_v4();
        let small = encode(origin, 1, &Outgoing::Recorded(id, event(json!({"a": 1})))).unwrap();
        let wire: Wire = serde_json::from_str(&small).unwrap();
        assert_eq!((wire.o, wire.s, wire.i), (origin, 1, Some(id)));
        assert_eq!(wire.e.unwrap().p, json!({"a": 1}));

        let big = json!({ "text": "x".repeat(10_000) });
        let by_id = encode(origin, 2, &Outgoing::Recorded(id, event(big.clone()))).unwrap();
        assert!(by_id.len() < 200, "{by_id}");
        let wire: Wire = serde_json::from_str(&by_id).unwrap();
        assert_eq!(wire.i, Some(id));
        assert!(wire.e.is_none());

        assert!(encode(origin, 3, &Outgoing::Transient(event(big))).is_none());
        let transient = encode(origin, 4, &Outgoing::Transient(event(json!({})))).unwrap();
        assert!(
            serde_json::from_str::<Wire>(&transient)
                .unwrap()
                .i
                .is_none()
        );
    }

    #[test]
    fn seen_ids_are_bounded_and_track_the_newest_time() {
        let mut seen = Seen::default();
        let t0 = Utc::now();
        let first = Uuid::new_v4();
        assert!(seen.insert(first, t0));
        assert!(!seen.insert(first, t0 - chrono::Duration::seconds(5)));
        assert_eq!(seen.newest, Some(t0));
        for _ in 0..SEEN_CAPACITY {
            seen.insert(Uuid::new_v4(), t0);
        }
        assert!(!seen.contains(first));
        assert_eq!(seen.ids.len(), SEEN_CAPACITY);
    }

    async fn next(sub: &mut super::super::Subscription) -> Arc<Event> {
        tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("an event in time")
            .unwrap()
            .unwrap()
    }

    /// Two replicas' buses on one PostgreSQL database: each sees the other's events once, a
    /// large one by id, and after the relay's connection is cut, what only the log holds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_cross_replicas_once_and_a_reconnect_catches_up_from_the_log() {
        let tdb = store::testing::TestDatabase::create(store::Backend::Postgres).await;
        let db = tdb.connect().await;
        let (a, b) = (
            EventBus::new(db.clone(), Uuid::new_v4()),
            EventBus::new(db.clone(), Uuid::new_v4()),
        );
        let stop = CancellationToken::new();
        let relays = [a.clone(), b.clone()].map(|bus| {
            let stop = stop.clone();
            tokio::spawn(async move { bus.relay(stop).await })
        });
        let (mut on_a, mut on_b) = (a.subscribe(), b.subscribe());
        let listening = || async {
            let Db::Postgres(pool) = &db else {
                unreachable!()
            };
            sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'",
            )
            .fetch_one(pool)
            .await
            .unwrap()
        };
        while listening().await < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        a.record_and_broadcast("ONE", None, json!({"n": 1}))
            .await
            .unwrap();
        let big = json!({ "text": "y".repeat(20_000) });
        a.record_and_broadcast("BIG", None, big.clone())
            .await
            .unwrap();
        assert_eq!(next(&mut on_b).await.event, "ONE");
        let got = next(&mut on_b).await;
        assert_eq!((got.event.as_str(), &got.payload), ("BIG", &big));
        b.broadcast_only("BEAT", None, json!({"n": 2}));
        assert_eq!(next(&mut on_b).await.event, "BEAT");
        assert_eq!(next(&mut on_a).await.event, "ONE");
        assert_eq!(next(&mut on_a).await.event, "BIG");
        assert_eq!(
            next(&mut on_a).await.event,
            "BEAT",
            "transient events cross too"
        );

        // A third replica recorded an event whose notification never arrived: only the log has it.
        let lost = store::events::EventRow {
            id: Uuid::new_v4(),
            event_type: "LOST".into(),
            workspace_id: None,
            payload: Some(json!({})),
            created_at: Utc::now(),
        };
        store::events::insert(&db, &lost).await.unwrap();
        // Cut both relays' connections: each reconnects and reads the log.
        let Db::Postgres(pool) = &db else {
            unreachable!()
        };
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND query LIKE 'LISTEN%'",
        )
        .execute(pool)
        .await
        .unwrap();
        assert_eq!(next(&mut on_a).await.event, "LOST");
        assert_eq!(next(&mut on_b).await.event, "LOST");
        a.record_and_broadcast("AFTER", None, json!({}))
            .await
            .unwrap();
        assert_eq!(
            next(&mut on_b).await.event,
            "AFTER",
            "nothing replayed twice, and the relay listens again"
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(500), on_b.next())
                .await
                .is_err(),
            "no duplicate follows"
        );
        stop.cancel();
        for relay in relays {
            relay.await.unwrap();
        }
    }
}
