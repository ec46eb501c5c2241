//! Events across replicas: the notifier sends this replica's events to [`CHANNEL`] in order; the
//! listener publishes what the other replicas sent, and catches up from `structure_events` after
//! its connection was lost. A replica killed between an event's commit and its notification
//! never sends it: every [`LOG_SWEEP_EVERY`] each replica also reads the last
//! [`LOG_SWEEP_WINDOW`] of the log and publishes what it has not seen, late but not lost.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Event, EventBus, Invalidation};
use crate::liveness::{Cadence, Liveness};
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
/// The relay's name in `/admin/liveness`.
const RELAY: &str = "event-relay";

const RECONNECT_DELAY: Duration = Duration::from_secs(1);
/// How often the log sweep reads the newest events for ones no notification brought.
const LOG_SWEEP_EVERY: Duration = Duration::from_secs(2);
/// How far back the log sweep reads.
const LOG_SWEEP_WINDOW: chrono::Duration = chrono::Duration::seconds(10);
/// Events younger than this are left to their notification (which is usually on its way).
const LOG_SWEEP_GRACE: chrono::Duration = chrono::Duration::seconds(1);
/// How often a listening replica says it is there.
const HELLO_EVERY: Duration = Duration::from_secs(1);
/// How long another replica counts as listening after it was last heard from.
const PEER_TTL: Duration = Duration::from_secs(3);

/// What this replica sends to the others.
#[derive(Debug)]
pub(super) enum Outgoing {
    Recorded(Uuid, Arc<Event>),
    Transient(Arc<Event>),
    /// What the other replicas' caches must forget.
    Invalidate(Invalidation),
    /// "This replica listens."
    Hello(Hello),
}

/// A replica's hello: sent when its relay starts listening (`Joined`), every [`HELLO_EVERY`]
/// after (`Here`), and at once in answer to another's `Joined` (`Welcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Hello {
    Joined,
    Here,
    Welcome,
}

/// When another replica was last heard from: any notification of its own counts. Read on every
/// transient event, so an atomic rather than a lock.
#[derive(Debug)]
pub(super) struct Peers {
    epoch: Instant,
    /// Milliseconds after `epoch` (at least 1) of the last notification from another replica;
    /// 0 while none has been heard.
    last_heard_ms: AtomicU64,
}

impl Default for Peers {
    fn default() -> Self {
        Peers {
            epoch: Instant::now(),
            last_heard_ms: AtomicU64::new(0),
        }
    }
}

impl Peers {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn heard_at(&self, now_ms: u64) {
        self.last_heard_ms
            .fetch_max(now_ms.max(1), Ordering::Relaxed);
    }

    fn present_at(&self, now_ms: u64) -> bool {
        let last = self.last_heard_ms.load(Ordering::Relaxed);
        last != 0 && now_ms.saturating_sub(last) < PEER_TTL.as_millis() as u64
    }

    /// Another replica was heard from just now.
    pub(super) fn heard(&self) {
        self.heard_at(self.now_ms());
    }

    /// Whether another replica was heard from within [`PEER_TTL`].
    pub(super) fn present(&self) -> bool {
        self.present_at(self.now_ms())
    }
}

/// Recorded events already published on this replica, oldest forgotten first.
#[derive(Debug, Default)]
pub(super) struct Seen {
    order: VecDeque<Uuid>,
    ids: HashSet<Uuid>,
    newest: Option<DateTime<Utc>>,
    /// When an id was last forgotten to make room: until the log sweep's window has passed
    /// since, an event it finds may be one published here and forgotten, so it does not sweep.
    last_eviction: Option<Instant>,
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
            self.last_eviction = Some(Instant::now());
        }
        true
    }

    /// Whether every event of the log sweep's window that was published here is still known.
    fn covers_sweep_window(&self) -> bool {
        let window = (LOG_SWEEP_WINDOW + LOG_SWEEP_GRACE)
            .to_std()
            .unwrap_or_default();
        self.last_eviction.is_none_or(|at| at.elapsed() > window)
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
    /// A hello instead of an event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    h: Option<Hello>,
}

/// How every notification of `origin` starts (`o` is [`Wire`]'s first field), so a replica skips
/// its own notifications without parsing them.
fn own_prefix(origin: Uuid) -> String {
    format!("{{\"o\":\"{origin}\"")
}

impl Wire {
    fn bare(origin: Uuid, seq: u64) -> Self {
        Wire {
            o: origin,
            s: seq,
            i: None,
            e: None,
            x: None,
            h: None,
        }
    }
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
                x: Some(*what),
                ..Wire::bare(origin, seq)
            };
            return serde_json::to_string(&wire).ok();
        }
        Outgoing::Hello(hello) => {
            let wire = Wire {
                h: Some(*hello),
                ..Wire::bare(origin, seq)
            };
            return serde_json::to_string(&wire).ok();
        }
    };
    let full = Wire {
        i: id,
        e: Some(WireEvent::of(event)),
        ..Wire::bare(origin, seq)
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
    pub async fn relay(&self, stop: CancellationToken, liveness: Arc<Liveness>) {
        let Db::Postgres(pool) = &self.db else {
            return;
        };
        liveness.register(RELAY, Cadence::OnEvents);
        let (tx, rx) = mpsc::unbounded_channel();
        if self.outbox.set(tx).is_err() {
            return;
        }
        tokio::join!(
            notify_loop(pool.clone(), self.origin, rx, stop.clone()),
            self.listen_loop(pool, stop.clone(), &liveness),
            self.log_sweep_loop(stop)
        );
    }

    /// Every [`LOG_SWEEP_EVERY`], publishes the events of the last [`LOG_SWEEP_WINDOW`] (but the
    /// last [`LOG_SWEEP_GRACE`]) that no notification brought: those of a replica that died
    /// after its commit and before its notification. Out of order by a few seconds, but there.
    /// Only events recorded since this relay started count: older ones are no business of a
    /// replica that just joined (a reconnect's catch-up covers its own gaps).
    async fn log_sweep_loop(&self, stop: CancellationToken) {
        let started = Utc::now();
        let mut tick = tokio::time::interval(LOG_SWEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.sweep_log(started, Utc::now()).await;
        }
    }

    /// One pass of the log sweep at `now`, over events recorded since `floor`; returns how many
    /// it published. Reads page by page, so a burst larger than a page is read whole.
    async fn sweep_log(&self, floor: DateTime<Utc>, now: DateTime<Utc>) -> usize {
        if !self.seen.lock().expect("seen lock").covers_sweep_window() {
            return 0;
        }
        let from = floor.max(now - LOG_SWEEP_WINDOW);
        match self
            .publish_from_log(from, Some(now - LOG_SWEEP_GRACE))
            .await
        {
            Ok(published) => {
                if published > 0 {
                    tracing::info!(
                        published,
                        "events no notification brought were published from the log"
                    );
                }
                published
            }
            Err((published, err)) => {
                tracing::warn!(error = ?err, "reading the newest events for the log sweep failed");
                published
            }
        }
    }

    /// Publishes what the log holds from `from` on (up to `until`, when given) and this replica
    /// has not seen, page by page, so a burst larger than a page is read whole. How many it
    /// published, also when a read failed part-way.
    async fn publish_from_log(
        &self,
        from: DateTime<Utc>,
        until: Option<DateTime<Utc>>,
    ) -> Result<usize, (usize, store::StoreError)> {
        let mut cursor = from;
        let mut published = 0;
        loop {
            let rows = store::events::since(&self.db, cursor, CATCH_UP_PAGE)
                .await
                .map_err(|err| (published, err))?;
            let full = rows.len() as i64 == CATCH_UP_PAGE;
            let mut last = None;
            for row in rows {
                if until.is_some_and(|until| row.created_at > until) {
                    return Ok(published);
                }
                last = Some(row.created_at);
                let id = row.id;
                if self.publish_remote(id, row_event(row)) {
                    published += 1;
                }
            }
            match last {
                // Rows sharing the page's last time are read again (and skipped as seen).
                Some(last) if full && last > cursor => cursor = last,
                _ => return Ok(published),
            }
        }
    }

    async fn listen_loop(&self, pool: &PgPool, stop: CancellationToken, liveness: &Liveness) {
        let own = own_prefix(self.origin);
        let mut listener: Option<PgListener> = None;
        let mut behind = false;
        loop {
            let current = match &mut listener {
                Some(listener) => listener,
                None => match listen(pool).await {
                    Ok(connected) => {
                        liveness.tick(RELAY);
                        // Listening now: the replicas already there answer, so this one
                        // knows within a round trip whether anyone else listens.
                        self.send_out(Outgoing::Hello(Hello::Joined));
                        if behind {
                            self.catch_up().await;
                            behind = false;
                        }
                        listener.insert(connected)
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "the event relay cannot listen; retrying");
                        liveness.down(RELAY, "cannot listen for other replicas' events");
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
                Ok(Some(notification)) => {
                    liveness.tick(RELAY);
                    let payload = notification.payload();
                    // Every notification comes back to its sender too.
                    if !payload.starts_with(&own) {
                        self.receive(payload).await;
                    }
                }
                // The connection was lost and has been re-established (and is listening again):
                // what was sent meanwhile is only in the log.
                Ok(None) => {
                    tracing::warn!(
                        "the event relay lost its connection; reconnected, catching up from the event log"
                    );
                    self.send_out(Outgoing::Hello(Hello::Joined));
                    self.catch_up().await;
                    liveness.tick(RELAY);
                }
                Err(err) => {
                    tracing::warn!(error = %err, "the event relay lost its connection; reconnecting");
                    liveness.down(RELAY, "lost its connection; reconnecting");
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
        self.peers.heard();
        if let Some(hello) = wire.h {
            if hello == Hello::Joined {
                self.send_out(Outgoing::Hello(Hello::Welcome));
            }
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
        let from = newest.unwrap_or_else(Utc::now) - CATCH_UP_MARGIN;
        let published = match self.publish_from_log(from, None).await {
            Ok(published) => published,
            Err((_, err)) => {
                tracing::error!(error = ?err, "catching up from the event log failed; events may be missing");
                return;
            }
        };
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
    let mut hello = tokio::time::interval(HELLO_EVERY);
    hello.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let received = tokio::select! {
            received = rx.recv_many(&mut batch, 256) => received,
            _ = hello.tick() => {
                batch.push(Outgoing::Hello(Hello::Here));
                1
            }
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

    fn test_liveness() -> Arc<Liveness> {
        Arc::new(Liveness::new(Duration::from_secs(30)))
    }
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
    fn every_notification_starts_with_its_senders_prefix() {
        let origin = Uuid::new_v4();
        let outgoing = [
            Outgoing::Recorded(Uuid::new_v4(), event(json!({"a": 1}))),
            Outgoing::Transient(event(json!({}))),
            Outgoing::Invalidate(Invalidation::All),
            Outgoing::Hello(Hello::Joined),
        ];
        for (seq, out) in outgoing.iter().enumerate() {
            let text = encode(origin, seq as u64, out).unwrap();
            assert!(text.starts_with(&own_prefix(origin)), "{text}");
            assert!(!text.starts_with(&own_prefix(Uuid::new_v4())), "{text}");
        }
        let hello: Wire =
            serde_json::from_str(&encode(origin, 9, &Outgoing::Hello(Hello::Here)).unwrap())
                .unwrap();
        assert_eq!(
            (hello.h, hello.e.is_none(), hello.x),
            (Some(Hello::Here), true, None)
        );
    }

    #[test]
    fn a_peer_counts_from_its_last_notification_for_the_ttl() {
        let peers = Peers::default();
        let ttl = PEER_TTL.as_millis() as u64;
        assert!(!peers.present_at(0), "nobody heard yet");
        assert!(!peers.present_at(10 * ttl));
        peers.heard_at(0);
        assert!(peers.present_at(0), "heard at the very start counts");
        assert!(peers.present_at(ttl - 1));
        assert!(!peers.present_at(ttl + 1));
        peers.heard_at(5 * ttl);
        peers.heard_at(2 * ttl); // a late report never moves it back
        assert!(peers.present_at(6 * ttl - 1));
        assert!(!peers.present_at(6 * ttl + 1));
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

    #[test]
    fn the_log_sweep_pauses_while_forgotten_ids_may_still_be_in_its_window() {
        let mut seen = Seen::default();
        assert!(seen.covers_sweep_window(), "nothing forgotten yet");
        for _ in 0..=SEEN_CAPACITY {
            seen.insert(Uuid::new_v4(), Utc::now());
        }
        assert!(
            !seen.covers_sweep_window(),
            "an id forgotten just now could be one of the window's"
        );
    }

    /// A replica killed after its commit and before its notification: the event is only in the
    /// log. The other replica's log sweep publishes it, once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_event_whose_notification_never_came_is_published_from_the_log() {
        let tdb = store::testing::TestDatabase::create(store::Backend::Postgres).await;
        let db = tdb.connect().await;
        let bus = EventBus::new(db.clone(), Uuid::new_v4());
        let stop = CancellationToken::new();
        let relay = {
            let (bus, stop) = (bus.clone(), stop.clone());
            tokio::spawn(async move { bus.relay(stop, test_liveness()).await })
        };
        let mut sub = bus.subscribe();
        // The sweep counts events from its relay's start: wait until it listens.
        let Db::Postgres(pool) = &db else {
            unreachable!()
        };
        while sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'",
        )
        .fetch_one(pool)
        .await
        .unwrap()
            < 1
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let row = store::events::EventRow {
            id: Uuid::now_v7(),
            event_type: "WORKSPACE_ONLINE".into(),
            workspace_id: None,
            payload: Some(json!({ "from": "a replica that died" })),
            created_at: Utc::now(),
        };
        store::events::insert(&db, &row).await.unwrap();
        let event = next(&mut sub).await;
        assert_eq!(
            (event.event.as_str(), &event.payload),
            (
                "WORKSPACE_ONLINE",
                &json!({ "from": "a replica that died" })
            )
        );
        // A later pass finds it again and publishes nothing.
        assert_eq!(bus.sweep_log(row.created_at, Utc::now()).await, 0);

        // A burst larger than a page is read whole (by a bus whose own sweep is not running).
        let quiet = EventBus::new(db.clone(), Uuid::new_v4());
        let burst_at = Utc::now() - chrono::Duration::seconds(5);
        let burst = CATCH_UP_PAGE as usize + 100;
        for n in 0..burst {
            let row = store::events::EventRow {
                id: Uuid::now_v7(),
                event_type: "WORKSPACE_UPDATED".into(),
                workspace_id: None,
                payload: Some(json!({ "n": n })),
                created_at: burst_at + chrono::Duration::microseconds(n as i64),
            };
            store::events::insert(&db, &row).await.unwrap();
        }
        assert_eq!(
            quiet.sweep_log(burst_at, Utc::now()).await,
            burst + 1,
            "the burst and the first event"
        );
        stop.cancel();
        relay.await.unwrap();
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
            tokio::spawn(async move { bus.relay(stop, test_liveness()).await })
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

    /// A bare `LISTEN` connection on the channel: it reads every notification, and plays
    /// another replica by sending a hello of its own.
    struct Observer(PgListener);

    impl Observer {
        async fn next(&mut self) -> Wire {
            let notification = tokio::time::timeout(Duration::from_secs(10), self.0.recv())
                .await
                .expect("a notification in time")
                .unwrap();
            serde_json::from_str(notification.payload()).unwrap()
        }

        /// Reads until a wire `matches`.
        async fn until(&mut self, matches: impl Fn(&Wire) -> bool) {
            while !matches(&self.next().await) {}
        }

        /// The names of the events sent before the event `mark`.
        async fn events_before(&mut self, mark: &str) -> Vec<String> {
            let mut names = Vec::new();
            loop {
                if let Some(event) = self.next().await.e {
                    if event.n == mark {
                        return names;
                    }
                    names.push(event.n);
                }
            }
        }
    }

    /// What a lone replica sends: its recorded events and its hellos, never a transient event
    /// (nobody else would hear it), until another replica says hello; a newcomer's hello is
    /// answered at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn transient_events_are_relayed_only_while_another_replica_listens() {
        let tdb = store::testing::TestDatabase::create(store::Backend::Postgres).await;
        let db = tdb.connect().await;
        let Db::Postgres(pool) = &db else {
            unreachable!()
        };
        let mut observer = Observer(listen(pool).await.unwrap());
        let origin = Uuid::new_v4();
        let bus = EventBus::new(db.clone(), origin);
        let stop = CancellationToken::new();
        let relay = tokio::spawn({
            let (bus, stop) = (bus.clone(), stop.clone());
            async move { bus.relay(stop, test_liveness()).await }
        });
        observer
            .until(|w| w.o == origin && w.h == Some(Hello::Joined))
            .await;

        // The recorded marker follows the transient event through the same ordered outbox.
        bus.broadcast_only("ALONE", None, json!({}));
        bus.record_and_broadcast("MARK1", None, json!({}))
            .await
            .unwrap();
        let alone = observer.events_before("MARK1").await;
        assert!(alone.is_empty(), "a lone replica relayed {alone:?}");

        // Another replica joins: its hello is answered, and transient events cross again.
        let peer = Uuid::new_v4();
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(format!(r#"{{"o":"{peer}","s":1,"h":"joined"}}"#))
            .execute(pool)
            .await
            .unwrap();
        observer
            .until(|w| w.o == origin && w.h == Some(Hello::Welcome))
            .await;
        bus.broadcast_only("SHARED", None, json!({}));
        bus.record_and_broadcast("MARK2", None, json!({}))
            .await
            .unwrap();
        assert_eq!(observer.events_before("MARK2").await, ["SHARED"]);
        stop.cancel();
        relay.await.unwrap();
    }
}
