//! Group commit for writes that need not be durable before an answer: the activity row an A2A
//! call leaves, the caller's last-outbound stamp, a token's last use.
//!
//! Callers hand a [`Write`] to the [`Writer`] and go on; one task per host stores whatever has
//! queued meanwhile in one transaction (up to [`MAX_BATCH`] writes), so under load many rows
//! share a commit and under no load a row is stored at once. Under load a batch of deferred
//! writes only is held until [`LINGER`] after the previous commit started, so commits come at
//! most that often whatever the rate (each commit rewrites the pages it touched into the WAL,
//! which costs the same for one row as for fifty); a batch somebody waits for is never held.
//! The queue is bounded ([`QUEUE`]): when the database falls behind, callers wait for room
//! instead of the host growing without bound. [`Writer::flush`] waits until everything queued
//! before it is stored (a read of the activity log calls it first, so a caller always reads its
//! own writes), and [`Writer::close`] stores the rest when the host stops.
//!
//! Activity rows that must be durable before an answer (a delegation's row, which its answer
//! names) go through the same batches with [`Writer::store`]: the caller waits until the
//! transaction holding its row commits and gets that row's own result, so under load they share
//! commits too, and a row that fails (a duplicate idempotency key) fails only its own caller.
//!
//! Messages queued for a busy agent ([`Writer::enqueue`]) share the batches the same way: the
//! caller waits for the commit holding its row, and the queue's depth is counted once per
//! workspace and batch, inside the transaction, instead of once per message.
//!
//! Recorded events ([`Writer::record_event`]: the `structure_events` row behind every event the
//! bus announces) share the batches the same way: the caller waits for the commit holding its
//! row before it publishes the event, so an event is never heard before it is in the log.
//!
//! A delegation's status moves and its end ([`Writer::move_delegation`],
//! [`Writer::finish_delegation`]) share them too: the caller
//! waits for the commit that holds its change and gets its own result, and a change queued after
//! another is stored after it (a delegation's `dispatched` never lands after its end).
//!
//! Token usage agents report ([`Write::Usage`]) is summed per workspace and month within a
//! batch, added to `workspace_token_usage` and raises `monthly_spend`; after the commit the
//! writer's spend hook hears which workspaces' spend changed (the host drops them from its
//! routing table on every replica, so a budget check sees the new spend at once).
//!
//! What a crash can lose: a host killed with SIGKILL loses the deferred writes still queued or
//! in the transaction being committed, i.e. those of the last moments before the kill (under
//! load, at most the last [`LINGER`] and one commit's worth: milliseconds). Nothing the waiting
//! calls ([`Writer::store`], [`Writer::enqueue`], [`Writer::record_event`],
//! [`Writer::move_delegation`], [`Writer::finish_delegation`]) answered for is lost, and
//! everything else the host must not lose (restarts, statuses, secrets, tokens) is written
//! synchronously and never goes through here.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::QueryBuilder;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::a2a_queue::{self, NewItem, insert_or_existing, waiting_in};
use super::activity::{self, ActivityRow, Changed, DelegationChange, change_in};
use super::events::{self, EventRow, insert_rows};
use super::usage::{self, Tally};
use super::{Db, MAX_BINDS, StoreError, StoreResult, on_db};

/// The most writes one transaction stores.
pub const MAX_BATCH: usize = 512;
/// The most writes waiting to be stored before callers wait for room.
pub const QUEUE: usize = 8192;
/// Under load (a commit started less than this ago), how long a batch of deferred writes only
/// waits for more before it is stored: commits come at most this often, each with many rows,
/// instead of one per row. An idle writer stores a write at once, and a batch somebody waits
/// for (a durable row, a queued message, an event, a delegation's move, a flush) never waits.
pub const LINGER: Duration = Duration::from_millis(5);

/// One deferred write.
#[derive(Debug, Clone)]
pub enum Write {
    /// An activity row (its `ACTIVITY_LOGGED` event is the caller's to send).
    Activity(Box<ActivityRow>),
    /// `workspaces.last_outbound_at` of a caller.
    Outbound { workspace: Uuid, at: DateTime<Utc> },
    /// `workspace_auth_tokens.last_used_at`.
    WorkspaceTokenUsed { token: Uuid, at: DateTime<Utc> },
    /// `org_api_tokens.last_used_at`.
    OrgTokenUsed { token: Uuid, at: DateTime<Utc> },
    /// Tokens an agent reported using, with their cost, for `period` (`YYYY-MM`).
    Usage {
        workspace: Uuid,
        period: String,
        tally: Tally,
    },
}

/// Hears, after a commit, the workspaces whose spend it changed.
pub type SpendHook = Arc<dyn Fn(&[Uuid]) + Send + Sync>;

/// Where a queued message's id and its queue's depth go.
type QueuedReply = oneshot::Sender<StoreResult<(Uuid, i64)>>;

enum Command {
    Write(Write),
    /// An activity row whose caller waits for it to be stored, with where its result goes.
    Store(Box<ActivityRow>, oneshot::Sender<StoreResult<()>>),
    /// A message for a busy agent's queue, with where its id and the queue's depth go.
    Enqueue(Box<NewItem>, QueuedReply),
    /// An event's log row whose caller waits for it to be stored, with where its result goes.
    Event(Box<EventRow>, oneshot::Sender<StoreResult<()>>),
    /// An activity row and the event announcing it, stored together (the event only with the
    /// row), with where the row's result goes.
    StoreWithEvent(
        Box<ActivityRow>,
        Box<EventRow>,
        oneshot::Sender<StoreResult<()>>,
    ),
    /// A delegation's change whose caller waits for it to be stored, with where its result goes.
    Delegation(Box<DelegationChange>, oneshot::Sender<StoreResult<Changed>>),
    Flush(oneshot::Sender<()>),
    Close(oneshot::Sender<()>),
}

/// The handle callers write through; clones share one queue and one task.
#[derive(Debug, Clone)]
pub struct Writer {
    db: Db,
    queue: mpsc::Sender<Command>,
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
    /// Transactions stored so far.
    commits: Arc<AtomicU64>,
}

impl Writer {
    /// Starts the task that stores writes into `db`.
    pub fn start(db: Db) -> Writer {
        Writer::start_with_spend_hook(db, Arc::new(|_: &[Uuid]| {}))
    }

    /// Starts the task, which calls `on_spend` after each commit that changed a spend.
    pub fn start_with_spend_hook(db: Db, on_spend: SpendHook) -> Writer {
        let (queue, receiver) = mpsc::channel(QUEUE);
        let commits = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(run(db.clone(), receiver, on_spend, commits.clone()));
        Writer {
            db,
            queue,
            task: Arc::new(Mutex::new(Some(task))),
            commits,
        }
    }

    /// Queues `write`, waiting for room when the queue is full. After [`Writer::close`] the
    /// write is dropped with a warning (the host is stopping).
    pub async fn write(&self, write: Write) {
        if self.queue.send(Command::Write(write)).await.is_err() {
            tracing::warn!("a deferred write arrived after the host stopped storing them; dropped");
        }
    }

    /// Stores `row` in the next batch and returns once that batch committed, with this row's own
    /// result (a constraint it breaks fails it alone). After [`Writer::close`] it is stored on
    /// its own, still before this returns.
    pub async fn store(&self, row: ActivityRow) -> StoreResult<()> {
        let (done, stored) = oneshot::channel();
        match self.queue.send(Command::Store(Box::new(row), done)).await {
            // The task stops only with the host; its pools close with it.
            Ok(()) => stored
                .await
                .unwrap_or(Err(StoreError::Database(sqlx::Error::PoolClosed))),
            Err(mpsc::error::SendError(Command::Store(row, _))) => {
                activity::insert(&self.db, &row).await
            }
            Err(_) => unreachable!("a Store command comes back as sent"),
        }
    }

    /// [`Writer::store`] of `row` together with the log row of the event that announces it: both
    /// in one commit, and the event never without the row (when the row fails, the event is not
    /// stored and the row's error is returned). One commit to wait for instead of two in a row.
    pub async fn store_with_event(&self, row: ActivityRow, event: EventRow) -> StoreResult<()> {
        let (done, stored) = oneshot::channel();
        let command = Command::StoreWithEvent(Box::new(row), Box::new(event), done);
        match self.queue.send(command).await {
            Ok(()) => stored
                .await
                .unwrap_or(Err(StoreError::Database(sqlx::Error::PoolClosed))),
            Err(mpsc::error::SendError(Command::StoreWithEvent(row, event, _))) => {
                activity::insert(&self.db, &row).await?;
                events::insert(&self.db, &event).await
            }
            Err(_) => unreachable!("a StoreWithEvent command comes back as sent"),
        }
    }

    /// Stores the log row of an event in the next batch and returns once that batch committed,
    /// with this row's own result. After [`Writer::close`] it is stored on its own, still before
    /// this returns.
    pub async fn record_event(&self, row: EventRow) -> StoreResult<()> {
        let (done, stored) = oneshot::channel();
        match self.queue.send(Command::Event(Box::new(row), done)).await {
            Ok(()) => stored
                .await
                .unwrap_or(Err(StoreError::Database(sqlx::Error::PoolClosed))),
            Err(mpsc::error::SendError(Command::Event(row, _))) => {
                events::insert(&self.db, &row).await
            }
            Err(_) => unreachable!("an Event command comes back as sent"),
        }
    }

    /// Moves a delegation row to a new status unless it is in one of `final_states` (see
    /// [`activity::update_status`]), in the next batch: whether it moved.
    pub async fn move_delegation(
        &self,
        workspace_id: Uuid,
        id: Uuid,
        update: activity::OwnedStatus,
        final_states: &'static [&'static str],
    ) -> StoreResult<bool> {
        let change = DelegationChange::Status {
            workspace_id,
            id,
            update,
            final_states,
        };
        match self.delegation(change).await? {
            Changed::Moved(moved) => Ok(moved),
            Changed::Finished(_) => unreachable!("a status move is answered with Moved"),
        }
    }

    /// Ends a delegation with its result row (see [`activity::finish_delegation`]), in the next
    /// batch.
    pub async fn finish_delegation(
        &self,
        workspace_id: Uuid,
        id: Uuid,
        update: activity::OwnedStatus,
        final_states: &'static [&'static str],
        result: ActivityRow,
    ) -> StoreResult<activity::Finished> {
        let change = DelegationChange::Finish {
            workspace_id,
            id,
            update,
            final_states,
            result: Box::new(result),
        };
        match self.delegation(change).await? {
            Changed::Finished(finished) => Ok(finished),
            Changed::Moved(_) => unreachable!("a finish is answered with Finished"),
        }
    }

    /// Stores a delegation's status move or end in the next batch and returns once that batch
    /// committed, with this change's own result. After [`Writer::close`] it is stored on its
    /// own, still before this returns.
    async fn delegation(&self, change: DelegationChange) -> StoreResult<Changed> {
        let (done, stored) = oneshot::channel();
        match self
            .queue
            .send(Command::Delegation(Box::new(change), done))
            .await
        {
            Ok(()) => stored
                .await
                .unwrap_or(Err(StoreError::Database(sqlx::Error::PoolClosed))),
            Err(mpsc::error::SendError(Command::Delegation(change, _))) => {
                change.store_alone(&self.db).await
            }
            Err(_) => unreachable!("a Delegation command comes back as sent"),
        }
    }

    /// Queues `item` for its workspace's agent in the next batch (see [`a2a_queue::enqueue`])
    /// and returns once that batch committed: the row's id and how many messages wait for the
    /// workspace. After [`Writer::close`] it is stored on its own, still before this returns.
    pub async fn enqueue(&self, item: NewItem) -> StoreResult<(Uuid, i64)> {
        let (done, stored) = oneshot::channel();
        match self
            .queue
            .send(Command::Enqueue(Box::new(item), done))
            .await
        {
            Ok(()) => stored
                .await
                .unwrap_or(Err(StoreError::Database(sqlx::Error::PoolClosed))),
            Err(mpsc::error::SendError(Command::Enqueue(item, _))) => {
                a2a_queue::enqueue(&self.db, &item).await
            }
            Err(_) => unreachable!("an Enqueue command comes back as sent"),
        }
    }

    /// How many batches the writer has stored (each one transaction, or write by write when
    /// the transaction failed).
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Returns once every write queued before this call is stored (or failed and was logged).
    pub async fn flush(&self) {
        let (done, stored) = oneshot::channel();
        if self.queue.send(Command::Flush(done)).await.is_ok() {
            let _ = stored.await;
        }
    }

    /// Stores what is queued and stops the task; later writes are dropped.
    pub async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.queue.send(Command::Close(done)).await.is_ok() {
            let _ = closed.await;
        }
        if let Some(task) = self.task.lock().await.take() {
            let _ = task.await;
        }
    }
}

/// Who waits for an event's log row.
#[derive(Debug)]
enum EventWaiter {
    Caller(oneshot::Sender<StoreResult<()>>),
    /// Stored with the activity row at this index of the batch: only if that row is.
    Row(usize),
}

/// The writes one transaction stores: activity rows in order, stamps coalesced to the latest.
#[derive(Debug, Default)]
struct Batch {
    activity: Vec<ActivityRow>,
    /// Callers waiting for rows of `activity` (by index) to be stored.
    waiting: Vec<(usize, oneshot::Sender<StoreResult<()>>)>,
    /// Messages for busy agents' queues, each with its waiting caller.
    queued: Vec<(NewItem, QueuedReply)>,
    /// Events' log rows, in order, each with its waiting caller.
    events: Vec<EventRow>,
    /// Per event: its waiting caller, or (for an event stored with an activity row) the index
    /// of that row in `activity`, whose caller waits for both.
    event_waiting: Vec<EventWaiter>,
    /// Delegations' changes, in order, each with its waiting caller.
    delegations: Vec<DelegationChange>,
    delegation_waiting: Vec<oneshot::Sender<StoreResult<Changed>>>,
    outbound: HashMap<Uuid, DateTime<Utc>>,
    workspace_tokens: HashMap<Uuid, DateTime<Utc>>,
    org_tokens: HashMap<Uuid, DateTime<Utc>>,
    usage: HashMap<(Uuid, String), Tally>,
    len: usize,
}

impl Batch {
    fn push(&mut self, write: Write) {
        fn latest(map: &mut HashMap<Uuid, DateTime<Utc>>, key: Uuid, at: DateTime<Utc>) {
            let entry = map.entry(key).or_insert(at);
            *entry = (*entry).max(at);
        }
        self.len += 1;
        match write {
            Write::Activity(row) => self.activity.push(*row),
            Write::Outbound { workspace, at } => latest(&mut self.outbound, workspace, at),
            Write::WorkspaceTokenUsed { token, at } => {
                latest(&mut self.workspace_tokens, token, at)
            }
            Write::OrgTokenUsed { token, at } => latest(&mut self.org_tokens, token, at),
            Write::Usage {
                workspace,
                period,
                tally,
            } => self
                .usage
                .entry((workspace, period))
                .or_default()
                .add(tally),
        }
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether a caller waits for this batch's commit.
    fn has_waiters(&self) -> bool {
        !(self.waiting.is_empty()
            && self.queued.is_empty()
            && self.event_waiting.is_empty()
            && self.delegation_waiting.is_empty())
    }

    /// Every coalesced stamp with the `UPDATE` that stores it (`$1` the id, `$2` the time).
    fn stamps(&self) -> impl Iterator<Item = (&'static str, &Uuid, &DateTime<Utc>)> {
        [
            (STAMP_OUTBOUND, &self.outbound),
            (STAMP_WORKSPACE_TOKEN, &self.workspace_tokens),
            (STAMP_ORG_TOKEN, &self.org_tokens),
        ]
        .into_iter()
        .flat_map(|(sql, stamps)| stamps.iter().map(move |(id, at)| (sql, id, at)))
    }
}

/// Adds `$tally` to `$workspace`'s `$period` and raises its spend to the month's total, inside
/// the transaction `$tx`.
macro_rules! add_usage {
    ($tx:expr, $workspace:expr, $period:expr, $tally:expr, $now:expr) => {{
        let total: i64 = sqlx::query_scalar(usage::ADD_USAGE)
            .bind($workspace)
            .bind($period)
            .bind($tally.input_tokens)
            .bind($tally.output_tokens)
            .bind($tally.calls)
            .bind($tally.cost_microcents)
            .bind($now)
            .fetch_one($tx)
            .await?;
        sqlx::query(usage::RAISE_SPEND)
            .bind($workspace)
            .bind($period)
            .bind(total / usage::MICROCENTS_PER_CENT)
            .execute($tx)
            .await?;
    }};
}

async fn run(
    db: Db,
    mut receiver: mpsc::Receiver<Command>,
    on_spend: SpendHook,
    commits: Arc<AtomicU64>,
) {
    let mut closing = None;
    // When the last commit started: under load, a batch nobody waits for is held until
    // LINGER after it, so rows share commits instead of each paying for one.
    let mut last_commit: Option<Instant> = None;
    while let Some(first) = receiver.recv().await {
        let mut batch = Batch::default();
        let mut answered = Vec::new();
        let linger_until = last_commit
            .map(|at| at + LINGER)
            .filter(|until| *until > Instant::now());
        let mut next = Some(first);
        // Everything already waiting joins this transaction, up to MAX_BATCH writes; a flush
        // closes the batch so its caller is answered as soon as what preceded it is stored.
        while let Some(command) = next.take() {
            match command {
                Command::Write(write) => batch.push(write),
                Command::Store(row, done) => {
                    batch.waiting.push((batch.activity.len(), done));
                    batch.push(Write::Activity(row));
                }
                Command::Enqueue(item, done) => {
                    batch.queued.push((*item, done));
                    batch.len += 1;
                }
                Command::Event(row, done) => {
                    batch.events.push(*row);
                    batch.event_waiting.push(EventWaiter::Caller(done));
                    batch.len += 1;
                }
                Command::StoreWithEvent(row, event, done) => {
                    let index = batch.activity.len();
                    batch.waiting.push((index, done));
                    batch.push(Write::Activity(row));
                    batch.events.push(*event);
                    batch.event_waiting.push(EventWaiter::Row(index));
                    batch.len += 1;
                }
                Command::Delegation(change, done) => {
                    batch.delegations.push(*change);
                    batch.delegation_waiting.push(done);
                    batch.len += 1;
                }
                Command::Flush(done) => {
                    answered.push(done);
                    break;
                }
                Command::Close(done) => {
                    // Nothing new gets in; what is already queued is still stored below.
                    receiver.close();
                    closing = Some(done);
                }
            }
            if batch.len >= MAX_BATCH {
                break;
            }
            next = match receiver.try_recv() {
                Ok(command) => Some(command),
                // Nothing more is queued: a batch somebody waits for (or the last one) is
                // stored now; one of deferred writes only waits out the linger for company.
                Err(_) => match linger_until {
                    Some(until) if !batch.has_waiters() && closing.is_none() => {
                        tokio::time::timeout_at(until.into(), receiver.recv())
                            .await
                            .ok()
                            .flatten()
                    }
                    _ => None,
                },
            };
        }
        if !batch.is_empty() {
            last_commit = Some(Instant::now());
            store(&db, &mut batch).await;
            commits.fetch_add(1, Ordering::Relaxed);
            if !batch.usage.is_empty() {
                let spent: Vec<Uuid> = batch.usage.keys().map(|(id, _)| *id).collect();
                on_spend(&spent);
            }
        }
        for done in answered {
            let _ = done.send(());
        }
    }
    if let Some(done) = closing {
        let _ = done.send(());
    }
}

/// Stores `batch` in one transaction; when that fails (a row whose workspace was deleted
/// meanwhile, a duplicate), each write is stored on its own so one bad row loses only itself.
/// Waiting callers get their row's result either way.
async fn store(db: &Db, batch: &mut Batch) {
    let mut waiting: HashMap<usize, oneshot::Sender<StoreResult<()>>> =
        batch.waiting.drain(..).collect();
    let queued = std::mem::take(&mut batch.queued);
    let event_waiting = std::mem::take(&mut batch.event_waiting);
    let delegation_waiting = std::mem::take(&mut batch.delegation_waiting);
    let items: Vec<&NewItem> = queued.iter().map(|(item, _)| item).collect();
    let err = match store_together(db, batch, &items).await {
        Ok((results, changed)) => {
            for (done, changed) in delegation_waiting.into_iter().zip(changed) {
                let _ = done.send(Ok(changed));
            }
            for (_, done) in waiting {
                let _ = done.send(Ok(()));
            }
            for waiter in event_waiting {
                if let EventWaiter::Caller(done) = waiter {
                    let _ = done.send(Ok(()));
                }
            }
            for ((_, done), result) in queued.into_iter().zip(results) {
                let _ = done.send(Ok(result));
            }
            return;
        }
        Err(err) => err,
    };
    tracing::debug!(error = ?err, writes = batch.len, "a batch of deferred writes failed together; storing them one by one");
    // An event that rides with a row is stored right after it, only if the row was.
    let paired: HashMap<usize, &EventRow> = event_waiting
        .iter()
        .zip(&batch.events)
        .filter_map(|(waiter, event)| match waiter {
            EventWaiter::Row(index) => Some((*index, event)),
            EventWaiter::Caller(_) => None,
        })
        .collect();
    for (index, row) in batch.activity.iter().enumerate() {
        let mut stored = activity::insert(db, row).await;
        if stored.is_ok()
            && let Some(event) = paired.get(&index)
        {
            stored = events::insert(db, event).await;
        }
        match waiting.remove(&index) {
            Some(done) => {
                let _ = done.send(stored);
            }
            None => {
                if let Err(err) = stored {
                    tracing::warn!(workspace_id = %row.workspace_id, activity_type = %row.activity_type, error = ?err, "recording activity failed");
                }
            }
        }
    }
    for (sql, id, at) in batch.stamps() {
        let stored: StoreResult<()> = on_db!(db, pool => sqlx::query(sql)
            .bind(id)
            .bind(at)
            .execute(pool)
            .await
            .map(drop)
            .map_err(Into::into));
        if let Err(err) = stored {
            tracing::warn!(%id, error = ?err, "storing a last-use stamp failed");
        }
    }
    for ((workspace, period), tally) in &batch.usage {
        if let Err(err) = add_usage_alone(db, *workspace, period, tally).await {
            tracing::warn!(workspace_id = %workspace, error = ?err, "storing token usage failed");
        }
    }
    for (item, done) in queued {
        let _ = done.send(a2a_queue::enqueue(db, &item).await);
    }
    for (row, waiter) in batch.events.iter().zip(event_waiting) {
        // An event with a row was stored (or not) with it, above.
        if let EventWaiter::Caller(done) = waiter {
            let _ = done.send(events::insert(db, row).await);
        }
    }
    for (change, done) in batch.delegations.iter().zip(delegation_waiting) {
        let _ = done.send(change.store_alone(db).await);
    }
}

/// One workspace's usage of a batch, in a transaction of its own.
async fn add_usage_alone(db: &Db, workspace: Uuid, period: &str, tally: &Tally) -> StoreResult<()> {
    let begin = db.begin_write_sql();
    on_db!(db, pool => {
        let mut tx = super::begin(pool, Some(begin)).await?;
        add_usage!(&mut *tx, workspace, period, tally, Utc::now());
        tx.commit().await?;
        Ok(())
    })
}

// Batches are stored in the order they were queued, so the latest stamp always lands last.
const STAMP_OUTBOUND: &str = "UPDATE workspaces SET last_outbound_at = $2 WHERE id = $1";
const STAMP_WORKSPACE_TOKEN: &str =
    "UPDATE workspace_auth_tokens SET last_used_at = $2 WHERE id = $1";
const STAMP_ORG_TOKEN: &str = "UPDATE org_api_tokens SET last_used_at = $2 WHERE id = $1";

/// Stores `batch` and queues `items` in one transaction: each item's id and its workspace's
/// queue depth at the end of the batch, and how each delegation change went.
async fn store_together(
    db: &Db,
    batch: &Batch,
    items: &[&NewItem],
) -> StoreResult<(Vec<(Uuid, i64)>, Vec<Changed>)> {
    let begin = db.begin_write_sql();
    let now = Utc::now();
    on_db!(db, pool => {
        let mut tx = super::begin(pool, Some(begin)).await?;
        // One multi-row INSERT per chunk, not a statement per row: one round trip to
        // PostgreSQL, or one hand-off to SQLite's thread, for a whole batch. Row counts vary,
        // so no such statement is kept in the statement cache.
        for chunk in batch.activity.chunks(MAX_BINDS / activity::INSERT_COLUMNS) {
            let mut q = QueryBuilder::new(activity::insert_into!());
            q.push_values(chunk, |mut b, row| activity::bind_row!(b, row));
            q.build().persistent(false).execute(&mut *tx).await?;
        }
        insert_rows!(&mut *tx, &batch.events);
        // After the activity rows: a delegation row stored in this batch is there to move.
        let mut changed = Vec::with_capacity(batch.delegations.len());
        for change in &batch.delegations {
            changed.push(change_in!(&mut *tx, change));
        }
        for (sql, id, at) in batch.stamps() {
            sqlx::query(sql).bind(id).bind(at).execute(&mut *tx).await?;
        }
        for ((workspace, period), tally) in &batch.usage {
            add_usage!(&mut *tx, workspace, period, tally, now);
        }
        let mut ids = Vec::with_capacity(items.len());
        for item in items {
            ids.push(insert_or_existing!(&mut *tx, item, now));
        }
        let mut depths: HashMap<Uuid, i64> = HashMap::new();
        for item in items {
            if let std::collections::hash_map::Entry::Vacant(slot) = depths.entry(item.workspace_id) {
                slot.insert(waiting_in!(&mut *tx, item.workspace_id));
            }
        }
        tx.commit().await?;
        Ok((
            ids.into_iter()
                .zip(items)
                .map(|(id, item)| (id, depths[&item.workspace_id]))
                .collect(),
            changed,
        ))
    })
}
