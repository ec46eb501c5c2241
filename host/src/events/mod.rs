//! The event bus: one `record_and_broadcast` path that appends to `structure_events` and fans the
//! event out to every subscriber (WebSocket and SSE clients).
//!
//! Publishing one event never waits for subscribers. Each subscriber reads from a bounded
//! broadcast channel; one that falls behind by more than the channel holds is dropped (its stream
//! ends with [`Lagged`]) rather than slowing anyone else down. A publication of many events at
//! once (an org import's announcements) goes out in bursts, giving subscribers a bounded moment
//! to catch up between them.
//!
//! Across replicas (PostgreSQL): each replica publishes to its own subscribers at once and hands
//! the event to its notifier, which sends it, in order, as a `NOTIFY` on [`CHANNEL`]. Every
//! replica's relay ([`EventBus::relay`]) listens there and publishes what other replicas sent. An
//! event too large for a notification travels by id and is read back from `structure_events`.
//! When the relay's connection is lost it reconnects, then replays `structure_events` from a
//! little before the newest event it had seen, skipping every event id it already published, so
//! subscribers see each recorded event once. A transient event (one not in the log: per-call
//! activity, answers for the canvas) is sent only while another replica is known to listen:
//! replicas say hello when their relay starts listening and every second after, and a newcomer's
//! hello is answered at once, so a lone replica does not notify the database, and hear its own
//! notifications back, for every A2A call.
//!
//! The bus also keeps every replica's caches honest ([`Cache`], [`EventBus::invalidate`]): an
//! event about a workspace (other than the per-call noise of [`changes_nothing_cached`]) makes
//! every registered cache forget that workspace, on the replica that published it and on each
//! that relayed it; an explicit invalidation (a revoked token) crosses replicas the same way;
//! and a relay that lost its connection makes them forget everything, since what it missed is
//! unknown.

pub mod activity;
pub mod held;
mod relay;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, watch};
use uuid::Uuid;

use crate::store::{self, Db, StoreError};

pub use relay::CHANNEL;

/// How many events a subscriber may fall behind before it is dropped.
pub const SUBSCRIBER_BUFFER: usize = 256;
/// A many-event publication ([`EventBus::record_and_broadcast_all`]) goes out in bursts of this
/// many, each once subscribers have caught up with the one before, so a whole org import
/// announced at once does not overrun every subscriber's buffer.
const BURST: usize = SUBSCRIBER_BUFFER / 2;
/// How long one publication waits for subscribers in all: past it, one that cannot keep up is
/// dropped as lagging, as always.
const PACING: Duration = Duration::from_secs(1);
const PACING_STEP: Duration = Duration::from_millis(1);

/// Event names the canvas and agents rely on.
pub mod names {
    pub const WORKSPACE_PROVISIONING: &str = "WORKSPACE_PROVISIONING";
    pub const WORKSPACE_AWAITING_AGENT: &str = "WORKSPACE_AWAITING_AGENT";
    pub const WORKSPACE_ONLINE: &str = "WORKSPACE_ONLINE";
    pub const WORKSPACE_OFFLINE: &str = "WORKSPACE_OFFLINE";
    pub const WORKSPACE_DEGRADED: &str = "WORKSPACE_DEGRADED";
    pub const WORKSPACE_REMOVED: &str = "WORKSPACE_REMOVED";
    pub const WORKSPACE_UPDATED: &str = "WORKSPACE_UPDATED";
    pub const WORKSPACE_HEARTBEAT: &str = "WORKSPACE_HEARTBEAT";
    pub const WORKSPACE_RESTART_REQUESTED: &str = "WORKSPACE_RESTART_REQUESTED";
    pub const WORKSPACE_PROVISION_FAILED: &str = "WORKSPACE_PROVISION_FAILED";
    pub const WORKSPACE_PAUSED: &str = "WORKSPACE_PAUSED";
    pub const WORKSPACE_HIBERNATED: &str = "WORKSPACE_HIBERNATED";
    pub const AGENT_CARD_UPDATED: &str = "AGENT_CARD_UPDATED";
    pub const TASK_UPDATED: &str = "TASK_UPDATED";
    pub const AGENT_MESSAGE: &str = "AGENT_MESSAGE";
    pub const ACTIVITY_LOGGED: &str = "ACTIVITY_LOGGED";
    pub const A2A_RESPONSE: &str = "A2A_RESPONSE";
    pub const DELEGATION_SENT: &str = "DELEGATION_SENT";
    pub const DELEGATION_STATUS: &str = "DELEGATION_STATUS";
    pub const DELEGATION_COMPLETE: &str = "DELEGATION_COMPLETE";
    pub const DELEGATION_FAILED: &str = "DELEGATION_FAILED";
    pub const CRON_STARTED: &str = "CRON_STARTED";
    pub const CRON_COMPLETED: &str = "CRON_COMPLETED";
    pub const CRON_FAILED: &str = "CRON_FAILED";
    pub const APPROVAL_REQUESTED: &str = "APPROVAL_REQUESTED";
    pub const APPROVAL_DECIDED: &str = "APPROVAL_DECIDED";
    pub const AGENT_ASSIGNED: &str = "AGENT_ASSIGNED";
    pub const AGENT_REPLACED: &str = "AGENT_REPLACED";
    pub const AGENT_REMOVED: &str = "AGENT_REMOVED";
    pub const AGENT_MOVED: &str = "AGENT_MOVED";
}

/// Events that change nothing a cache holds: the per-call traffic of agents talking (their
/// activity, answers, chat, tasks and delegations). Every other event about a workspace makes
/// the caches forget it: its status, URL, place in the tree, budget or tokens may have changed.
pub fn changes_nothing_cached(event: &str) -> bool {
    use names::*;
    [
        ACTIVITY_LOGGED,
        A2A_RESPONSE,
        AGENT_MESSAGE,
        TASK_UPDATED,
        AGENT_CARD_UPDATED,
        DELEGATION_SENT,
        DELEGATION_STATUS,
        DELEGATION_COMPLETE,
        DELEGATION_FAILED,
        CRON_STARTED,
        CRON_COMPLETED,
        CRON_FAILED,
        APPROVAL_REQUESTED,
        APPROVAL_DECIDED,
    ]
    .contains(&event)
}

/// What a replica's caches must forget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Invalidation {
    /// One workspace: its row (status, URL, parent, budget) and the tokens it holds.
    Workspace(Uuid),
    /// One workspace or org token, by id.
    Token(Uuid),
    /// Everything (the relay may have missed changes).
    All,
}

/// A cache of database state that the bus keeps current ([`EventBus::register_cache`]).
pub trait Cache: Send + Sync + std::fmt::Debug {
    /// Drops what `what` names; the next read goes to the database.
    fn forget(&self, what: Invalidation);
}

/// One event as delivered to subscribers.
#[derive(Debug, Clone)]
pub struct Event {
    pub event: String,
    pub workspace_id: Option<Uuid>,
    pub timestamp: DateTime<Utc>,
    pub payload: Value,
}

impl Event {
    /// The WebSocket frame: `{event, workspace_id, timestamp (RFC 3339), payload}`.
    pub fn ws_frame(&self) -> Value {
        json!({
            "event": self.event,
            "workspace_id": self.workspace_id,
            "timestamp": self.timestamp.to_rfc3339_opts(SecondsFormat::Millis, true),
            "payload": self.payload,
        })
    }

    /// The SSE data line: `{type, timestamp (unix ms), data}`.
    pub fn sse_data(&self) -> Value {
        json!({ "type": self.event, "timestamp": self.timestamp.timestamp_millis(), "data": self.payload })
    }
}

/// The bus. Cloning shares it.
#[derive(Debug, Clone)]
pub struct EventBus {
    db: Db,
    tx: broadcast::Sender<Arc<Event>>,
    /// The replica publishing; notifications from it are its own and not published twice.
    origin: Uuid,
    /// Recorded events already published here, for the relay's catch-up.
    seen: Arc<Mutex<relay::Seen>>,
    /// Where events go to be sent to other replicas, once the relay runs (PostgreSQL only).
    outbox: Arc<OnceLock<mpsc::UnboundedSender<relay::Outgoing>>>,
    /// Whether another replica listens (see [`relay::Peers`]).
    peers: Arc<relay::Peers>,
    /// Workspaces someone waits on for signs of life (see [`EventBus::signs_of_life`]).
    watched: Watched,
    /// The caches this replica keeps current (see [`Cache`]).
    caches: Arc<RwLock<Vec<Arc<dyn Cache>>>>,
    /// The group-commit writer events' log rows go through once the host has one (see
    /// [`EventBus::record_through`]); before that, and without one, each is inserted alone.
    writer: Arc<OnceLock<store::batch::Writer>>,
}

type Watched = Arc<Mutex<HashMap<Uuid, watch::Sender<u64>>>>;

/// Ticks on every event published for one workspace; see [`EventBus::signs_of_life`].
#[derive(Debug)]
pub struct SignsOfLife {
    workspace_id: Uuid,
    rx: Option<watch::Receiver<u64>>,
    watched: Watched,
}

impl SignsOfLife {
    /// Resolves at the workspace's next event (never, once the bus is gone).
    pub async fn next(&mut self) {
        let changed = match self.rx.as_mut() {
            Some(rx) => rx.changed().await.is_ok(),
            None => false,
        };
        if !changed {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for SignsOfLife {
    fn drop(&mut self) {
        drop(self.rx.take());
        let mut watched = self.watched.lock().expect("watched workspaces");
        if watched
            .get(&self.workspace_id)
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            watched.remove(&self.workspace_id);
        }
    }
}

/// A subscriber fell too far behind and was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("subscriber fell behind and was dropped")]
pub struct Lagged;

/// A live subscription; see [`Subscription::next`].
#[derive(Debug)]
pub struct Subscription {
    rx: broadcast::Receiver<Arc<Event>>,
}

impl Subscription {
    /// The next event; `Err(Lagged)` once this subscriber has fallen behind, `Ok(None)` when the
    /// bus is gone.
    pub async fn next(&mut self) -> Result<Option<Arc<Event>>, Lagged> {
        match self.rx.recv().await {
            Ok(event) => Ok(Some(event)),
            Err(broadcast::error::RecvError::Closed) => Ok(None),
            Err(broadcast::error::RecvError::Lagged(_)) => Err(Lagged),
        }
    }
}

impl EventBus {
    /// A bus for the replica `origin`.
    pub fn new(db: Db, origin: Uuid) -> Self {
        let (tx, _) = broadcast::channel(SUBSCRIBER_BUFFER);
        EventBus {
            db,
            tx,
            origin,
            seen: Arc::default(),
            outbox: Arc::default(),
            peers: Arc::default(),
            watched: Arc::default(),
            caches: Arc::default(),
            writer: Arc::default(),
        }
    }

    /// Stores recorded events' log rows through `writer` from here on: under load many share
    /// one commit, and each is still in the log before it is published.
    pub fn record_through(&self, writer: store::batch::Writer) {
        let _ = self.writer.set(writer);
    }

    /// Keeps `cache` current from here on: see [`Cache`].
    pub fn register_cache(&self, cache: Arc<dyn Cache>) {
        self.caches.write().expect("caches").push(cache);
    }

    /// Makes every replica's caches forget `what`: this replica's before this returns, the
    /// others' as soon as the relay delivers it. Should the relay lose it, a replica whose
    /// connection dropped forgets everything on reconnecting, and any other stops trusting what
    /// it holds within `cache_revalidate_ms`.
    pub fn invalidate(&self, what: Invalidation) {
        self.forget_here(what);
        self.send_out(relay::Outgoing::Invalidate(what));
    }

    fn forget_here(&self, what: Invalidation) {
        for cache in self.caches.read().expect("caches").iter() {
            cache.forget(what);
        }
    }

    /// Signs of life of `workspace_id`: every event published for it on this replica (its
    /// own, or relayed from another), heartbeats included. An A2A delivery waiting for the
    /// agent's answer restarts its header and idle timers on each, so an agent that is busy
    /// but alive is not cut off.
    pub fn signs_of_life(&self, workspace_id: Uuid) -> SignsOfLife {
        let mut watched = self.watched.lock().expect("watched workspaces");
        let rx = watched
            .entry(workspace_id)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        SignsOfLife {
            workspace_id,
            rx: Some(rx),
            watched: self.watched.clone(),
        }
    }

    pub fn subscribe(&self) -> Subscription {
        Subscription {
            rx: self.tx.subscribe(),
        }
    }

    /// Appends the event to `structure_events`, then publishes it. If the write fails nothing is
    /// published, so subscribers never see an event the log does not have.
    pub async fn record_and_broadcast(
        &self,
        event: &str,
        workspace_id: Option<Uuid>,
        payload: Value,
    ) -> Result<(), StoreError> {
        let row = store::events::EventRow::new(event, workspace_id, payload);
        match self.writer.get() {
            Some(writer) => writer.record_event(row.clone()).await?,
            None => store::events::insert(&self.db, &row).await?,
        }
        self.publish_recorded(row);
        Ok(())
    }

    /// Records several events in one transaction, then publishes them in order. Used where one
    /// operation produces many events (a cascade delete announces every node it removed).
    pub async fn record_and_broadcast_all(
        &self,
        mut events: Vec<(&str, Option<Uuid>, Value)>,
    ) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        if events.len() == 1
            && let Some((event, workspace_id, payload)) = events.pop()
        {
            // One row needs no transaction of its own.
            return self
                .record_and_broadcast(event, workspace_id, payload)
                .await;
        }
        // One microsecond apart (the precision both databases keep), so the log's order by time
        // is the order they were announced in.
        let start = Utc::now();
        let rows: Vec<store::events::EventRow> = events
            .into_iter()
            .zip(0..)
            .map(
                |((event, workspace_id, payload), i)| store::events::EventRow {
                    id: Uuid::new_v4(),
                    event_type: event.to_owned(),
                    workspace_id,
                    payload: Some(payload),
                    created_at: start + chrono::Duration::microseconds(i),
                },
            )
            .collect();
        store::events::insert_many(&self.db, &rows).await?;
        let mut paced = PACING;
        let mut rows = rows.into_iter().peekable();
        loop {
            for row in rows.by_ref().take(BURST) {
                self.publish_recorded(row);
            }
            if rows.peek().is_none() {
                break;
            }
            paced = self.let_subscribers_catch_up(paced).await;
        }
        Ok(())
    }

    /// Waits, for at most `budget`, until subscribers have read all but a quarter of their
    /// buffer; returns what is left of `budget`. With nobody subscribed nothing is queued and
    /// nothing waits.
    async fn let_subscribers_catch_up(&self, budget: Duration) -> Duration {
        let started = tokio::time::Instant::now();
        while self.tx.len() > SUBSCRIBER_BUFFER / 4 && started.elapsed() < budget {
            tokio::time::sleep(PACING_STEP).await;
        }
        budget.saturating_sub(started.elapsed())
    }

    /// Publishes without recording: for high-frequency or transient events (heartbeats, chat).
    pub fn broadcast_only(&self, event: &str, workspace_id: Option<Uuid>, payload: Value) {
        let event = Arc::new(Event {
            event: event.to_owned(),
            workspace_id,
            timestamp: Utc::now(),
            payload,
        });
        self.send_out(relay::Outgoing::Transient(event.clone()));
        self.publish(event);
    }

    /// Publishes an event whose log row the caller stored (with another write, in one commit:
    /// [`store::batch::Writer::store_with_event`]) here and to the other replicas.
    pub fn publish_stored(&self, row: store::events::EventRow) {
        self.publish_recorded(row);
    }

    /// Publishes a recorded event here and sends it to the other replicas.
    fn publish_recorded(&self, row: store::events::EventRow) {
        self.seen
            .lock()
            .expect("seen lock")
            .insert(row.id, row.created_at);
        let id = row.id;
        let event = Arc::new(Event {
            event: row.event_type,
            workspace_id: row.workspace_id,
            timestamp: row.created_at,
            payload: row.payload.unwrap_or(Value::Null),
        });
        self.send_out(relay::Outgoing::Recorded(id, event.clone()));
        self.publish(event);
    }

    fn send_out(&self, outgoing: relay::Outgoing) {
        if let Some(outbox) = self.outbox.get() {
            // Not in the log, a transient event reaches other replicas only as it happens: with
            // none listening, sending it would only come back to this one.
            if matches!(outgoing, relay::Outgoing::Transient(_)) && !self.peers.present() {
                return;
            }
            // An error only means the relay has stopped (the host is stopping).
            let _ = outbox.send(outgoing);
        }
    }

    fn publish(&self, event: Arc<Event>) {
        if let Some(id) = event.workspace_id {
            // Before anyone hears of the change, nothing cached still says otherwise.
            if !changes_nothing_cached(&event.event) {
                self.forget_here(Invalidation::Workspace(id));
            }
            if let Some(tx) = self.watched.lock().expect("watched workspaces").get(&id) {
                tx.send_modify(|ticks| *ticks = ticks.wrapping_add(1));
            }
        }
        // An error only means nobody is listening right now.
        let _ = self.tx.send(event);
    }

    /// [`EventBus::record_and_broadcast_all`] on a best-effort basis, like [`EventBus::emit`].
    pub async fn emit_all(&self, events: Vec<(&str, Option<Uuid>, Value)>) {
        let count = events.len();
        if let Err(err) = self.record_and_broadcast_all(events).await {
            tracing::error!(count, error = ?err, "recording events failed");
        }
    }

    /// Records an event on a best-effort basis: a failure is logged, not returned. For events
    /// that follow a change already committed, where failing the request would mislead.
    pub async fn emit(&self, event: &str, workspace_id: Option<Uuid>, payload: Value) {
        if let Err(err) = self
            .record_and_broadcast(event, workspace_id, payload)
            .await
        {
            tracing::error!(event, ?workspace_id, error = ?err, "recording event failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::timeout;

    use super::*;
    use crate::store::Backend;
    use crate::store::testing::TestDatabase;

    #[tokio::test]
    async fn signs_of_life_tick_for_their_workspace_only_and_are_forgotten_when_dropped() {
        let database = TestDatabase::create(Backend::Sqlite).await;
        let bus = EventBus::new(database.connect().await, Uuid::new_v4());
        let (busy, other) = (Uuid::new_v4(), Uuid::new_v4());
        let mut alive = bus.signs_of_life(busy);
        let mut also = bus.signs_of_life(busy);

        bus.broadcast_only(names::WORKSPACE_HEARTBEAT, Some(other), json!({}));
        assert!(
            timeout(Duration::from_millis(50), alive.next())
                .await
                .is_err(),
            "another workspace's event is no sign of life"
        );
        bus.broadcast_only(names::WORKSPACE_HEARTBEAT, Some(busy), json!({}));
        timeout(Duration::from_secs(1), alive.next())
            .await
            .expect("a heartbeat is a sign of life");
        timeout(Duration::from_secs(1), also.next())
            .await
            .expect("every watcher sees it");

        drop(alive);
        assert_eq!(bus.watched.lock().unwrap().len(), 1);
        drop(also);
        assert!(
            bus.watched.lock().unwrap().is_empty(),
            "nothing is left behind"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_publication_many_times_a_subscribers_buffer_reaches_a_subscriber_that_reads() {
        let database = TestDatabase::create(Backend::Sqlite).await;
        let bus = EventBus::new(database.connect().await, Uuid::new_v4());
        let count = SUBSCRIBER_BUFFER * 8;
        let mut subscription = bus.subscribe();
        let reader = tokio::spawn(async move {
            let mut read = Vec::new();
            while read.len() < count {
                match subscription.next().await {
                    Ok(Some(event)) => read.push(event.payload["n"].as_u64().unwrap()),
                    other => return Err(other.map(|_| ())),
                }
            }
            Ok(read)
        });

        let events = (0..count)
            .map(|n| (names::WORKSPACE_UPDATED, None, json!({ "n": n })))
            .collect();
        bus.record_and_broadcast_all(events).await.unwrap();

        let read = timeout(Duration::from_secs(10), reader)
            .await
            .expect("the subscriber reads every event")
            .unwrap()
            .expect("the subscriber never lags");
        assert_eq!(read, (0..count as u64).collect::<Vec<_>>());
    }
}
