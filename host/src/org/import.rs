//! `POST /org/import`: load → plan → env preflight → place (existing workspaces are kept, the new
//! ones prepared in memory and stored in one transaction) → announce and provision after the
//! commit → in `reconcile` mode remove same-named workspaces the template no longer places →
//! `org.import.started` paired with exactly one `org.import.completed` or `org.import.failed` in
//! `structure_events` (the end event names its start by `import_id`).
//!
//! An import whose host is killed records no end itself: [`fail_abandoned`] records its
//! `org.import.failed` later, at the next start of a SQLite host (the only replica), and on
//! PostgreSQL from the queue-expiry sweep once no replica runs it any more. A running import
//! holds an advisory lock named after its id for as long as it runs, so "no replica runs it" is
//! "its lock is free".

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt as _;
use serde_json::{Value, json};
use uuid::Uuid;

use super::external::ExternalReport;
use super::plan::{self, Plan};
use super::template::{self, OrgTemplate};
use super::{OrgError, RootDir, load_dir, open_org_dir};
use crate::services::Services;
use crate::store::{self, events::EventRow};
use crate::workspaces::{self, Status, WorkspaceError};

/// What to do with workspaces the template no longer places.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Create what is missing, keep everything else.
    #[default]
    Merge,
    /// Merge, then remove live workspaces an import of this template created whose name is in
    /// the template but which the template no longer places.
    Reconcile,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Merge => "merge",
            Mode::Reconcile => "reconcile",
        }
    }
}

/// Where the template comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A directory under the org templates directory.
    Dir(String),
    /// An inline template (no `!include`, `!external`, files or `.env`).
    Inline(serde_yaml_ng::Value),
}

#[derive(Debug, Clone)]
pub struct ImportRequest {
    pub source: Source,
    pub mode: Mode,
}

/// One workspace of the result.
#[derive(Debug, Clone)]
pub struct ImportedWorkspace {
    pub id: Uuid,
    pub name: String,
    pub tier: i64,
    pub status: String,
    pub skipped: bool,
    pub plugins_missing: Vec<String>,
}

/// What an import did. Its workspaces were stored in one transaction: an import that fails
/// returns an error and leaves none of them.
#[derive(Debug, Clone)]
pub struct ImportOutcome {
    pub org: String,
    pub mode: Mode,
    pub workspaces: Vec<ImportedWorkspace>,
    pub count: usize,
    pub created_count: usize,
    pub skipped_count: usize,
    pub reconcile_removed_count: Option<usize>,
    pub reconcile_errors: Option<Vec<String>>,
    pub externals: Vec<ExternalReport>,
    pub duration_ms: u64,
}

pub const STARTED: &str = "org.import.started";
pub const COMPLETED: &str = "org.import.completed";
pub const FAILED: &str = "org.import.failed";

/// Imports a template. The work runs in its own task, so a client that disconnects does not cut
/// an import (and its event pairing) short, and host shutdown waits for it.
pub async fn import(svc: &Services, req: ImportRequest) -> Result<ImportOutcome, OrgError> {
    let task_svc = svc.clone();
    svc.lifecycle
        .run_to_end(async move { run(&task_svc, req).await })
        .await
        .map_err(|_| OrgError::Aborted)?
}

async fn run(svc: &Services, req: ImportRequest) -> Result<ImportOutcome, OrgError> {
    let started = Instant::now();
    let dir = match &req.source {
        Source::Dir(dir) => Some(dir.clone()),
        Source::Inline(_) => None,
    };
    // Errors before the template is parsed record nothing.
    let (template, root, externals) = load(svc, req.source).await?;
    let import_id = Uuid::new_v4();
    // Held until the end event is recorded: while it is, no sweep takes this import for one a
    // dead host left (a database error here only costs that protection, not the import).
    let _running = running_lock(svc, import_id, true).await;
    let label = json!({
        "name": template.name, "dir": dir, "mode": req.mode.as_str(), "import_id": import_id,
    });
    record(svc, import_id, STARTED, label.clone()).await;

    let origin = Origin {
        template: template.name.clone(),
        dir,
    };
    let result = std::panic::AssertUnwindSafe(execute(svc, &template, &origin, root, req.mode))
        .catch_unwind()
        .await
        .unwrap_or_else(|_| {
            tracing::error!(template = %template.name, "org import panicked");
            Err(OrgError::Aborted)
        });
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut payload = label;
    let fields = payload.as_object_mut().expect("an object");
    fields.insert("duration_ms".into(), json!(duration_ms));
    match result {
        Ok(mut outcome) => {
            outcome.duration_ms = duration_ms;
            outcome.externals = externals;
            fields.insert("created_count".into(), json!(outcome.created_count));
            fields.insert("skipped_count".into(), json!(outcome.skipped_count));
            fields.insert(
                "reconcile_removed_count".into(),
                json!(outcome.reconcile_removed_count.unwrap_or(0)),
            );
            fields.insert(
                "reconcile_errors".into(),
                json!(outcome.reconcile_errors.clone().unwrap_or_default()),
            );
            record(svc, Uuid::new_v4(), COMPLETED, payload).await;
            tracing::info!(template = %outcome.org, created = outcome.created_count, skipped = outcome.skipped_count, duration_ms, "org import finished");
            Ok(outcome)
        }
        Err(err) => {
            nothing_done(fields, &err.to_string());
            record(svc, Uuid::new_v4(), FAILED, payload).await;
            Err(err)
        }
    }
}

/// The first key of the advisory locks running imports hold ("MOLI").
const IMPORT_LOCK_CLASS: i32 = 0x4D4F_4C49;
/// Why an import with no end event is marked failed.
pub const ABANDONED: &str = "the host running the import stopped before it finished; the workspaces it had stored are kept, and importing again (merge) completes it";

/// The lock a running import holds on its id (taken waiting, or `None` at once when `wait` is
/// false and some replica holds it). `None` too when the database cannot be asked.
async fn running_lock(
    svc: &Services,
    import_id: Uuid,
    wait: bool,
) -> Option<crate::cluster::KeyGuard> {
    let local = std::sync::Arc::new(tokio::sync::Mutex::new(()));
    let key = import_id.to_string();
    match crate::cluster::lock_key(&svc.db, local, IMPORT_LOCK_CLASS, &key, wait).await {
        Ok(guard) => guard,
        Err(err) => {
            tracing::warn!(%import_id, error = ?err, "taking an org import's lock failed");
            None
        }
    }
}

/// Records `org.import.failed` for every import that started but has no end event and that no
/// host is running any more: a host was killed in the middle of it. `exclusive` says this host
/// is the only one on the database and runs no import yet (a SQLite host starting); otherwise
/// (PostgreSQL) an import counts as abandoned only while nobody holds its lock. Returns how many
/// were marked.
pub async fn fail_abandoned(svc: &Services, exclusive: bool) -> Result<usize, store::StoreError> {
    let mut marked = 0;
    for (import_id, label) in store::events::unfinished_imports(&svc.db, STARTED).await? {
        let guard = if exclusive {
            None
        } else {
            match running_lock(svc, import_id, false).await {
                Some(guard) => Some(guard),
                // Still running somewhere (or the database did not answer): leave it.
                None => continue,
            }
        };
        // It may have ended between the listing and the lock.
        if store::events::import_ended(&svc.db, import_id).await? {
            continue;
        }
        let mut payload = label;
        if let Some(fields) = payload.as_object_mut() {
            nothing_done(fields, ABANDONED);
        }
        tracing::warn!(%import_id, "an org import was left unfinished by a host that stopped; marked failed");
        store::events::insert(&svc.db, &event_row(Uuid::new_v4(), FAILED, payload)).await?;
        drop(guard);
        marked += 1;
    }
    Ok(marked)
}

/// Appends an import event to `structure_events` without broadcasting it.
async fn record(svc: &Services, id: Uuid, kind: &str, payload: Value) {
    if let Err(err) = store::events::insert(&svc.db, &event_row(id, kind, payload)).await {
        tracing::error!(event = kind, error = ?err, "recording an org import event failed");
    }
}

/// An import event's log row, recorded now.
fn event_row(id: Uuid, kind: &str, payload: Value) -> EventRow {
    EventRow {
        id,
        event_type: kind.to_owned(),
        workspace_id: None,
        payload: Some(payload),
        created_at: chrono::Utc::now(),
    }
}

/// The counts and reason of an `org.import.failed` payload: nothing created, skipped or
/// removed, and `error` why.
fn nothing_done(fields: &mut serde_json::Map<String, Value>, error: &str) {
    fields.insert("created_count".into(), json!(0));
    fields.insert("skipped_count".into(), json!(0));
    fields.insert("reconcile_removed_count".into(), json!(0));
    fields.insert("errors".into(), json!([error]));
}

/// The parsed template, the root its files are read from, and what happened to its externals.
async fn load(
    svc: &Services,
    source: Source,
) -> Result<(OrgTemplate, Arc<RootDir>, Vec<ExternalReport>), OrgError> {
    match source {
        Source::Dir(dir) => {
            let root = Arc::new(open_org_dir(svc, &dir)?);
            let (template, externals) = load_dir(svc, root.clone()).await?;
            Ok((template, root, externals))
        }
        Source::Inline(value) => {
            if has_tags(&value) {
                return Err(OrgError::Expansion(
                    "an inline template cannot use !include or !external".to_owned(),
                ));
            }
            let template = template::typed_inline(value)?;
            // An inline template has no files: an empty root makes every file lookup a miss.
            let empty = tempfile::tempdir().map_err(|err| {
                tracing::error!(error = %err, "creating an empty root for an inline template");
                OrgError::Cache("cannot prepare the import".to_owned())
            })?;
            let root = RootDir::open(empty.path())
                .map_err(|_| OrgError::Cache("cannot prepare the import".to_owned()))?;
            // The directory is removed at once; the open handle stays valid and every lookup
            // through it misses.
            drop(empty);
            Ok((template, Arc::new(root), Vec::new()))
        }
    }
}

fn has_tags(value: &serde_yaml_ng::Value) -> bool {
    use serde_yaml_ng::Value as Y;
    match value {
        Y::Tagged(_) => true,
        Y::Mapping(map) => map.iter().any(|(k, v)| has_tags(k) || has_tags(v)),
        Y::Sequence(items) => items.iter().any(has_tags),
        _ => false,
    }
}

/// Which import created a workspace, stored in its config row as `org.template` and `org.dir`;
/// reconcile only ever removes workspaces of the same origin.
#[derive(Debug, Clone)]
struct Origin {
    template: String,
    dir: Option<String>,
}

impl Origin {
    fn of(config: Option<&Value>) -> Option<Origin> {
        let org = config?.get("org")?;
        Some(Origin {
            template: org.get("template")?.as_str()?.to_owned(),
            dir: org.get("dir").and_then(Value::as_str).map(str::to_owned),
        })
    }

    fn same(&self, other: &Origin) -> bool {
        self.template == other.template && self.dir == other.dir
    }
}

async fn execute(
    svc: &Services,
    template: &OrgTemplate,
    origin: &Origin,
    root: Arc<RootDir>,
    mode: Mode,
) -> Result<ImportOutcome, OrgError> {
    let settings = plan::settings(&svc.config);
    let planned = template.clone();
    let plan = tokio::task::spawn_blocking(move || plan::build(&planned, &root, &settings))
        .await
        .map_err(|_| OrgError::Aborted)??;
    for planned in &plan.workspaces {
        if let Some(url) = planned
            .request
            .url
            .as_deref()
            .filter(|_| planned.request.external)
        {
            crate::workspaces::registry::AgentUrl::parse(url, &svc.config).map_err(|why| {
                OrgError::Invalid(format!("workspace {:?}: url: {why}", planned.request.name))
            })?;
        }
    }
    preflight(svc, template, &plan).await?;

    let mut plan = plan;
    for planned in &mut plan.workspaces {
        if let Some(Value::Object(org)) = planned.request.config.get_mut("org") {
            org.insert("dir".to_owned(), json!(origin.dir));
        }
    }
    let placements = place(svc, &plan).await?;

    let mut outcome = ImportOutcome {
        org: template.name.clone(),
        mode,
        workspaces: Vec::with_capacity(plan.workspaces.len()),
        count: 0,
        created_count: 0,
        skipped_count: 0,
        reconcile_removed_count: None,
        reconcile_errors: None,
        externals: Vec::new(),
        duration_ms: 0,
    };
    let mut created = Vec::new();
    let mut schedules = Vec::new();
    // Memories are seeded only onto the workspaces this import creates: a re-import or a
    // reconcile keeps the existing ones and adds none. `global_memories` go to the first root
    // (the plan's first workspace), when it is created here.
    let mut memories = Vec::new();
    if let Some(Placement::Created(first)) = placements.first() {
        let root = first.row.id;
        memories.extend(plan.global_memories.drain(..).map(|seed| (root, seed)));
    }
    for (planned, placement) in plan.workspaces.into_iter().zip(placements) {
        let request = planned.request;
        schedules.push((placement.id(), planned.schedules));
        match placement {
            Placement::Kept { id, status } => {
                outcome.skipped_count += 1;
                tracing::info!(workspace_id = %id, name = request.name, "provision.skip_existing");
                outcome.workspaces.push(ImportedWorkspace {
                    id,
                    name: request.name,
                    tier: request.tier,
                    status: status.to_string(),
                    skipped: true,
                    plugins_missing: Vec::new(),
                });
            }
            Placement::Created(prepared) => {
                outcome.created_count += 1;
                let id = prepared.row.id;
                memories.extend(planned.memories.into_iter().map(|seed| (id, seed)));
                outcome.workspaces.push(ImportedWorkspace {
                    id: prepared.row.id,
                    name: request.name,
                    tier: request.tier,
                    status: prepared.row.status.as_str().to_owned(),
                    skipped: false,
                    plugins_missing: planned.plugins_missing,
                });
                created.push((*prepared, request.seed_files));
            }
        }
    }
    outcome.count = outcome.workspaces.len();
    // Everything is stored: announce it in creation order, then start the provisions.
    workspaces::announce(svc, created).await;
    // Template schedules of every placed workspace, kept or new; reconcile also drops the
    // template schedules the template no longer names. Schedules made through the API stay.
    for (id, definitions) in schedules {
        if definitions.is_empty() && mode != Mode::Reconcile {
            continue;
        }
        crate::schedules::seed_template(svc, id, &definitions, mode == Mode::Reconcile).await?;
    }
    // All of the import's memories in one transaction: all of them or none.
    crate::memories::seed(svc, memories)
        .await
        .map_err(|err| match err {
            crate::memories::MemoryError::Store(err) => OrgError::Store(err),
            other => OrgError::Invalid(format!("seeding memories: {other}")),
        })?;

    if mode == Mode::Reconcile {
        let (removed, errors) = reconcile(svc, template, origin, &outcome).await?;
        outcome.reconcile_removed_count = Some(removed);
        outcome.reconcile_errors = Some(errors);
    }
    Ok(outcome)
}

/// Where a planned workspace ends up.
enum Placement {
    /// A live workspace with the same parent and name was already there (or earlier in the same
    /// template): kept as it is.
    Kept { id: Uuid, status: Status },
    /// New, stored by this import.
    Created(Box<workspaces::Prepared>),
}

impl Placement {
    fn id(&self) -> Uuid {
        match self {
            Placement::Kept { id, .. } => *id,
            Placement::Created(prepared) => prepared.row.id,
        }
    }
}

/// How often placing is tried in all when another import stores some of the same workspaces
/// between this one's read and its write.
const PLACE_ATTEMPTS: usize = 5;

/// Places every planned workspace: one read of the live workspaces bearing the template's
/// names, the new ones prepared in memory (ids, sealed secrets, rows, parents), then all of them
/// stored in one transaction. An import that stored one of the same places first makes that
/// transaction fail on the sibling-name index; placing is then done again and keeps it.
async fn place(svc: &Services, plan: &Plan) -> Result<Vec<Placement>, OrgError> {
    let mut names: Vec<&str> = plan
        .workspaces
        .iter()
        .map(|w| w.request.name.as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    let mut attempt = 1;
    loop {
        let live = store::workspaces::live_named(&svc.db, &names).await?;
        let mut placements = resolve(svc, plan, live).await?;
        if let Some(n) = svc.config.faults.org_import_refused_secret_at {
            refuse_secrets_of(&mut placements, n);
        }
        let new: Vec<&workspaces::Prepared> = placements
            .iter()
            .filter_map(|p| match p {
                Placement::Created(prepared) => Some(&**prepared),
                Placement::Kept { .. } => None,
            })
            .collect();
        match workspaces::store_many(svc, &new).await {
            Ok(()) => return Ok(placements),
            Err(WorkspaceError::NameTaken | WorkspaceError::ParentNotFound)
                if attempt < PLACE_ATTEMPTS =>
            {
                tracing::info!(
                    attempt,
                    "another import changed the places this one fills; placing again"
                );
                attempt += 1;
            }
            Err(WorkspaceError::Store(err)) => return Err(OrgError::Store(err)),
            Err(other) => {
                return Err(OrgError::Invalid(format!(
                    "the workspaces could not be placed: {other}"
                )));
            }
        }
    }
}

/// Matches the plan against the live workspaces (`live`) by parent and name, parents first, and
/// prepares each workspace that is not there yet under its parent's id.
async fn resolve(
    svc: &Services,
    plan: &Plan,
    live: Vec<store::workspaces::LiveName>,
) -> Result<Vec<Placement>, OrgError> {
    let mut at: HashMap<(Option<Uuid>, String), (Uuid, Status)> = live
        .into_iter()
        .map(|row| ((row.parent_id, row.name), (row.id, row.status)))
        .collect();
    let mut placements: Vec<Placement> = Vec::with_capacity(plan.workspaces.len());
    for planned in &plan.workspaces {
        let parent_id = planned.parent.map(|p| placements[p].id());
        let key = (parent_id, planned.request.name.clone());
        if let Some(&(id, status)) = at.get(&key) {
            placements.push(Placement::Kept { id, status });
            continue;
        }
        let mut prepared =
            workspaces::prepare(svc, &planned.request)
                .await
                .map_err(|err| match err {
                    WorkspaceError::Store(err) => OrgError::Store(err),
                    other => OrgError::Invalid(format!("workspace {:?}: {other}", key.1)),
                })?;
        prepared.row.parent_id = parent_id;
        at.insert(key, (prepared.row.id, prepared.row.status));
        placements.push(Placement::Created(Box::new(prepared)));
    }
    Ok(placements)
}

/// The test-only fault [`crate::config::Faults::org_import_refused_secret_at`]: the secrets of
/// the `n`th new workspace carry an encryption version the schema refuses.
fn refuse_secrets_of(placements: &mut [Placement], n: usize) {
    let prepared = placements
        .iter_mut()
        .filter_map(|p| match p {
            Placement::Created(prepared) => Some(prepared),
            Placement::Kept { .. } => None,
        })
        .nth(n);
    for secret in prepared.into_iter().flat_map(|p| p.secrets.iter_mut()) {
        secret.version = -1;
    }
}

/// A creation error as the caller may see it (store details stay in the log).
fn public_error(err: &WorkspaceError) -> String {
    match err {
        WorkspaceError::Store(_) => "internal error".to_owned(),
        other => other.to_string(),
    }
}

/// Refuses the import (412) when a requirement is met neither by a global secret nor by the
/// workspace's own `.env` layers.
async fn preflight(svc: &Services, template: &OrgTemplate, plan: &Plan) -> Result<(), OrgError> {
    let global: HashSet<String> = store::secrets::list_global(&svc.db)
        .await?
        .into_iter()
        .filter(|row| !row.encrypted_value.is_empty())
        .map(|row| row.key)
        .collect();
    let (missing_env, missing_workspace_env) = plan.missing_env(&|name| global.contains(name));
    if missing_env.is_empty() && missing_workspace_env.is_empty() {
        return Ok(());
    }
    Err(OrgError::MissingEnv {
        missing_env,
        missing_workspace_env,
        required_env: plan.all_required(),
        template: template.name.clone(),
    })
}

/// Removes live workspaces that an import of this template (same name, same directory)
/// created, whose name the template still uses, but which this import did not place.
/// Workspaces created by hand or by other templates are never touched. Refuses to act when
/// either set is empty.
async fn reconcile(
    svc: &Services,
    template: &OrgTemplate,
    origin: &Origin,
    outcome: &ImportOutcome,
) -> Result<(usize, Vec<String>), OrgError> {
    let names = template_names(template);
    let placed: HashSet<Uuid> = outcome.workspaces.iter().map(|w| w.id).collect();
    if names.is_empty() || placed.is_empty() {
        tracing::warn!(template = %template.name, "reconcile skipped: nothing to compare against");
        return Ok((0, Vec::new()));
    }
    let mut candidates = Vec::new();
    for row in store::workspaces::list_live(&svc.db).await? {
        if placed.contains(&row.id) || !names.contains(row.name.as_str()) {
            continue;
        }
        let config = store::workspace_config::get(&svc.db, row.id).await?;
        if Origin::of(config.as_ref()).is_some_and(|o| o.same(origin)) {
            candidates.push(row);
        }
    }
    let candidate_ids: HashSet<Uuid> = candidates.iter().map(|r| r.id).collect();
    let parents: HashMap<Uuid, Option<Uuid>> =
        candidates.iter().map(|r| (r.id, r.parent_id)).collect();
    let mut removed = 0;
    let mut errors = Vec::new();
    for row in &candidates {
        // A candidate under another candidate goes with its ancestor's cascade.
        let mut up = parents.get(&row.id).copied().flatten();
        let mut covered = false;
        while let Some(parent) = up {
            if candidate_ids.contains(&parent) {
                covered = true;
                break;
            }
            up = parents.get(&parent).copied().flatten();
        }
        if covered {
            continue;
        }
        match workspaces::cascade_delete(svc, row.id, false).await {
            Ok(result) => {
                removed += 1 + result.descendants_removed;
                tracing::info!(workspace_id = %row.id, name = row.name, "reconcile removed a workspace the template no longer places");
                if !result.stop_failures.is_empty() {
                    errors.push(format!(
                        "{}: {} agent(s) could not be stopped",
                        row.name,
                        result.stop_failures.len()
                    ));
                }
            }
            Err(err) => errors.push(format!("{}: {}", row.name, public_error(&err))),
        }
    }
    Ok((removed, errors))
}

/// Names of the workspaces the template places (its `spawning` entries).
fn template_names(template: &OrgTemplate) -> HashSet<&str> {
    fn walk<'a>(list: &'a [template::OrgWorkspace], out: &mut HashSet<&'a str>) {
        for w in list.iter().filter(|w| w.spawning) {
            out.insert(w.name.trim());
            walk(&w.children, out);
        }
    }
    let mut out = HashSet::new();
    walk(&template.workspaces, &mut out);
    out
}
