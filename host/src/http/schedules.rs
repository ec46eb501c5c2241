//! Workspace schedules: list, create, change, delete, fire now, history and health.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{AdminAuth, ApiJson, WorkspaceAuth, WorkspaceIdParam};
use super::fields::{FieldErrorBody, field_error, flag, object, owned_text};
use super::openapi::{ErrorBody, StatusBody};
use super::workspaces::WorkspaceGone;
use crate::schedules::{self, Definition, Patch, ScheduleError, Trigger};
use crate::store;
use crate::store::schedules::{ScheduleRow, Source};
use crate::workspaces::get_live;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(workspace_health))
        .routes(routes!(preview))
        .routes(routes!(update, delete))
        .routes(routes!(run))
        .routes(routes!(history))
        .routes(routes!(admin_health))
}

/// The `{schedule_id}` path segment.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct ScheduleIdParam {
    /// The schedule's id (anything that is not a UUID is not found).
    #[param(value_type = Uuid)]
    schedule_id: String,
}

impl ScheduleIdParam {
    fn id(&self) -> ApiResult<Uuid> {
        Uuid::parse_str(&self.schedule_id).map_err(|_| ApiError::not_found("schedule not found"))
    }
}

impl From<ScheduleError> for ApiError {
    fn from(err: ScheduleError) -> Self {
        match err {
            ScheduleError::Field { field, message } => field_error(field, message),
            ScheduleError::NameTaken => ApiError::Status(
                StatusCode::CONFLICT,
                "a schedule with this name already exists in this workspace",
            ),
            ScheduleError::NotFound => ApiError::not_found("schedule not found"),
            ScheduleError::Store(err) => err.into(),
        }
    }
}

/// A schedule as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
struct Schedule {
    id: Uuid,
    workspace_id: Uuid,
    name: String,
    /// 5 fields, 6 with seconds first, or a macro (`@hourly`, `@daily`, ...).
    cron_expr: String,
    /// IANA zone the expression is read in.
    timezone: String,
    prompt: String,
    enabled: bool,
    last_run_at: Option<DateTime<Utc>>,
    /// The next tick; `null` while disabled.
    next_run_at: Option<DateTime<Utc>>,
    run_count: i64,
    /// `ok`, `empty`, `queued`, `skipped` or `error`.
    last_status: Option<String>,
    last_error: Option<String>,
    /// `template` (written by org imports) or `runtime` (created through the API).
    source: String,
    consecutive_empty_runs: i32,
    consecutive_failures: i32,
    /// The three ticks after the next one's predecessor: `next_run_at` and the two after it.
    upcoming: Vec<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl Schedule {
    fn of(row: ScheduleRow) -> Schedule {
        let upcoming = match (row.enabled, row.next_run_at) {
            (true, Some(next)) => {
                schedules::cron::CronSchedule::parse(&row.cron_expr, &row.timezone)
                    .map(|s| {
                        let mut ticks = vec![next];
                        ticks.extend(s.upcoming(next, 2));
                        ticks
                    })
                    .unwrap_or_default()
            }
            _ => Vec::new(),
        };
        Schedule {
            id: row.id,
            workspace_id: row.workspace_id,
            name: row.name,
            cron_expr: row.cron_expr,
            timezone: row.timezone,
            prompt: row.prompt,
            enabled: row.enabled,
            last_run_at: row.last_run_at,
            next_run_at: row.next_run_at,
            run_count: row.run_count,
            last_status: row.last_status,
            last_error: row.last_error,
            source: row.source,
            consecutive_empty_runs: row.consecutive_empty_runs,
            consecutive_failures: row.consecutive_failures,
            upcoming,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// The workspace's schedules, by name.
#[utoipa::path(
    get,
    path = "/workspaces/{id}/schedules",
    tag = "schedules",
    params(WorkspaceIdParam),
    responses(
        (status = 200, body = Vec<Schedule>),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("workspace_token" = [])),
)]
async fn list(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
) -> ApiResult<impl IntoResponse> {
    get_live(&state.svc, id).await?;
    let rows = store::schedules::list(&state.svc.db, id).await?;
    Ok(axum::Json(
        rows.into_iter().map(Schedule::of).collect::<Vec<_>>(),
    ))
}

/// The body of `POST /workspaces/{id}/schedules`.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
struct CreateSchedule {
    /// Unique within the workspace (default empty).
    name: Option<String>,
    cron_expr: String,
    /// IANA zone (default `UTC`).
    timezone: Option<String>,
    /// Sent to the agent as a text part; carriage returns are dropped.
    prompt: String,
    /// Default true.
    enabled: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
struct Created {
    id: Uuid,
    /// `created`.
    status: &'static str,
    next_run_at: Option<DateTime<Utc>>,
}

/// Creates a schedule (`source: runtime`).
#[utoipa::path(
    post,
    path = "/workspaces/{id}/schedules",
    tag = "schedules",
    params(WorkspaceIdParam),
    request_body = CreateSchedule,
    responses(
        (status = 201, body = Created),
        (status = 400, description = "A field is invalid; `field` names it", body = FieldErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 409, description = "The workspace has a schedule of this name", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("workspace_token" = [])),
)]
async fn create(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<impl IntoResponse> {
    let body = object(body)?;
    let definition = Definition {
        name: owned_text(&body, "name")?.unwrap_or_default(),
        cron_expr: owned_text(&body, "cron_expr")?
            .ok_or_else(|| field_error("cron_expr", "cron_expr is required"))?,
        timezone: owned_text(&body, "timezone")?.unwrap_or_default(),
        prompt: owned_text(&body, "prompt")?
            .ok_or_else(|| field_error("prompt", "prompt is required"))?,
        enabled: flag(&body, "enabled")?.unwrap_or(true),
    };
    get_live(&state.svc, id).await?;
    let row = schedules::create(&state.svc, id, definition, Source::Runtime).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(Created {
            id: row.id,
            status: "created",
            next_run_at: row.next_run_at,
        }),
    ))
}

/// The body of `POST /workspaces/{id}/schedules/preview`.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
struct PreviewBody {
    cron_expr: String,
    /// IANA zone (default `UTC`).
    timezone: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
struct Preview {
    /// The next three ticks from now.
    next_runs: Vec<DateTime<Utc>>,
}

/// Checks an expression and zone without storing anything, and answers their next three ticks
/// (the console's create form validates and previews as the operator types).
#[utoipa::path(
    post,
    path = "/workspaces/{id}/schedules/preview",
    tag = "schedules",
    params(WorkspaceIdParam),
    request_body = PreviewBody,
    responses(
        (status = 200, body = Preview),
        (status = 400, description = "A field is invalid; `field` names it", body = FieldErrorBody),
    ),
    security(("workspace_token" = [])),
)]
async fn preview(
    WorkspaceAuth(_): WorkspaceAuth,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<impl IntoResponse> {
    let body = object(body)?;
    let cron_expr = owned_text(&body, "cron_expr")?
        .ok_or_else(|| field_error("cron_expr", "cron_expr is required"))?;
    let timezone = owned_text(&body, "timezone")?
        .filter(|z| !z.trim().is_empty())
        .unwrap_or_else(|| "UTC".to_owned());
    let schedule = schedules::cron::CronSchedule::parse(&cron_expr, &timezone)
        .map_err(|err| ApiError::from(ScheduleError::from(err)))?;
    Ok(axum::Json(Preview {
        next_runs: schedule.upcoming(Utc::now(), 3),
    }))
}

/// The body of `PATCH .../schedules/{schedule_id}`: any subset.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
struct PatchSchedule {
    name: Option<String>,
    cron_expr: Option<String>,
    timezone: Option<String>,
    prompt: Option<String>,
    enabled: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
struct Updated {
    /// `updated`.
    status: &'static str,
    next_run_at: Option<DateTime<Utc>>,
}

/// Changes a schedule; the next run is recomputed when the expression, zone or `enabled` change.
#[utoipa::path(
    patch,
    path = "/workspaces/{id}/schedules/{schedule_id}",
    tag = "schedules",
    params(WorkspaceIdParam, ScheduleIdParam),
    request_body = PatchSchedule,
    responses(
        (status = 200, body = Updated),
        (status = 400, description = "A field is invalid; `field` names it", body = FieldErrorBody),
        (status = 404, description = "No such schedule", body = ErrorBody),
        (status = 409, description = "The workspace has a schedule of this name", body = ErrorBody),
    ),
    security(("workspace_token" = [])),
)]
async fn update(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
    Path(segment): Path<ScheduleIdParam>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<impl IntoResponse> {
    let schedule_id = segment.id()?;
    let body = object(body)?;
    let patch = Patch {
        name: owned_text(&body, "name")?,
        cron_expr: owned_text(&body, "cron_expr")?,
        timezone: owned_text(&body, "timezone")?,
        prompt: owned_text(&body, "prompt")?,
        enabled: flag(&body, "enabled")?,
    };
    let row = schedules::update(&state.svc, id, schedule_id, patch).await?;
    Ok(axum::Json(Updated {
        status: "updated",
        next_run_at: row.next_run_at,
    }))
}

/// Deletes a schedule and its history.
#[utoipa::path(
    delete,
    path = "/workspaces/{id}/schedules/{schedule_id}",
    tag = "schedules",
    params(WorkspaceIdParam, ScheduleIdParam),
    responses(
        (status = 200, body = StatusBody),
        (status = 404, description = "No such schedule", body = ErrorBody),
    ),
    security(("workspace_token" = [])),
)]
async fn delete(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
    Path(segment): Path<ScheduleIdParam>,
) -> ApiResult<impl IntoResponse> {
    let schedule_id = segment.id()?;
    if !store::schedules::delete(&state.svc.db, id, schedule_id).await? {
        return Err(ApiError::not_found("schedule not found"));
    }
    Ok(axum::Json(StatusBody { status: "deleted" }))
}

#[derive(Debug, Serialize, ToSchema)]
struct RunOutcome {
    /// `ok`, `empty`, `queued`, `skipped` or `error`.
    status: &'static str,
    error: Option<String>,
    duration_ms: i32,
}

#[derive(Debug, Serialize, ToSchema)]
struct FiredNow {
    /// `fired`.
    status: &'static str,
    workspace_id: Uuid,
    prompt: String,
    /// What happened: the prompt was sent by the host (the original only echoed it back).
    run: RunOutcome,
}

/// Fires the schedule now: the host sends its prompt to the agent and answers how that went.
/// The schedule's next tick is unchanged.
#[utoipa::path(
    post,
    path = "/workspaces/{id}/schedules/{schedule_id}/run",
    tag = "schedules",
    params(WorkspaceIdParam, ScheduleIdParam),
    responses(
        (status = 200, body = FiredNow),
        (status = 404, description = "No such schedule", body = ErrorBody),
    ),
    security(("workspace_token" = [])),
)]
async fn run(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
    Path(segment): Path<ScheduleIdParam>,
) -> ApiResult<impl IntoResponse> {
    let schedule_id = segment.id()?;
    let row = store::schedules::get(&state.svc.db, id, schedule_id)
        .await?
        .ok_or_else(|| ApiError::not_found("schedule not found"))?;
    let fired = schedules::fire(&state.svc, &row, Trigger::Manual).await;
    Ok(axum::Json(FiredNow {
        status: "fired",
        workspace_id: id,
        prompt: row.prompt,
        run: RunOutcome {
            status: fired.status,
            error: fired.error,
            duration_ms: fired.duration_ms,
        },
    }))
}

#[derive(Debug, Serialize, ToSchema)]
struct HistoryEntry {
    /// When the fire started.
    timestamp: DateTime<Utc>,
    /// The tick it fired for; `null` for a manual run.
    tick_at: Option<DateTime<Utc>>,
    duration_ms: Option<i32>,
    status: String,
    error_detail: Option<String>,
    /// `{schedule_id, schedule_name, cron_expr, prompt, trigger}`.
    #[schema(value_type = Object)]
    request: Option<Value>,
}

/// The schedule's latest 100 fires, newest first.
#[utoipa::path(
    get,
    path = "/workspaces/{id}/schedules/{schedule_id}/history",
    tag = "schedules",
    params(WorkspaceIdParam, ScheduleIdParam),
    responses(
        (status = 200, body = Vec<HistoryEntry>),
        (status = 404, description = "No such schedule", body = ErrorBody),
    ),
    security(("workspace_token" = [])),
)]
async fn history(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
    Path(segment): Path<ScheduleIdParam>,
) -> ApiResult<impl IntoResponse> {
    let schedule_id = segment.id()?;
    if store::schedules::get(&state.svc.db, id, schedule_id)
        .await?
        .is_none()
    {
        return Err(ApiError::not_found("schedule not found"));
    }
    let rows = store::schedules::history(&state.svc.db, schedule_id, 100).await?;
    Ok(axum::Json(
        rows.into_iter()
            .map(|r| HistoryEntry {
                timestamp: r.started_at,
                tick_at: r.tick_at,
                duration_ms: r.duration_ms,
                status: r.status,
                error_detail: r.error_detail,
                request: r.request,
            })
            .collect::<Vec<_>>(),
    ))
}

/// One schedule in a health report.
#[derive(Debug, Serialize, ToSchema)]
struct Flagged {
    id: Uuid,
    workspace_id: Uuid,
    name: String,
    next_run_at: Option<DateTime<Utc>>,
    last_run_at: Option<DateTime<Utc>>,
    last_status: Option<String>,
    last_error: Option<String>,
    consecutive_failures: i32,
    consecutive_empty_runs: i32,
}

impl Flagged {
    fn of(row: ScheduleRow) -> Flagged {
        Flagged {
            id: row.id,
            workspace_id: row.workspace_id,
            name: row.name,
            next_run_at: row.next_run_at,
            last_run_at: row.last_run_at,
            last_status: row.last_status,
            last_error: row.last_error,
            consecutive_failures: row.consecutive_failures,
            consecutive_empty_runs: row.consecutive_empty_runs,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
struct HealthReport {
    /// `ok` when nothing is flagged, else `degraded`.
    status: &'static str,
    /// The scheduler's last pass on the replica holding its lease (recorded every few seconds).
    scheduler_last_tick_at: Option<DateTime<Utc>>,
    total: i64,
    enabled: i64,
    /// Enabled and past their tick by more than `overdue_grace_secs`.
    overdue: Vec<Flagged>,
    /// Failed `health_failures` times in a row or more.
    failing: Vec<Flagged>,
    /// Answered without text `health_empty_runs` times in a row or more.
    empty: Vec<Flagged>,
}

impl HealthReport {
    fn of(health: schedules::Health) -> HealthReport {
        let flagged =
            |rows: Vec<ScheduleRow>| rows.into_iter().map(Flagged::of).collect::<Vec<_>>();
        let all_clear =
            health.overdue.is_empty() && health.failing.is_empty() && health.empty.is_empty();
        HealthReport {
            status: if all_clear { "ok" } else { "degraded" },
            scheduler_last_tick_at: health.last_tick_at,
            total: health.total,
            enabled: health.enabled,
            overdue: flagged(health.overdue),
            failing: flagged(health.failing),
            empty: flagged(health.empty),
        }
    }
}

/// The workspace's schedules that are overdue, failing or empty, and the scheduler's last pass.
#[utoipa::path(
    get,
    path = "/workspaces/{id}/schedules/health",
    tag = "schedules",
    params(WorkspaceIdParam),
    responses(
        (status = 200, body = HealthReport),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("workspace_token" = [])),
)]
async fn workspace_health(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
) -> ApiResult<impl IntoResponse> {
    get_live(&state.svc, id).await?;
    let health = schedules::health(&state.svc, Some(id)).await?;
    Ok(axum::Json(HealthReport::of(health)))
}

/// Every workspace's schedules that are overdue, failing or empty, and the scheduler's last pass.
#[utoipa::path(
    get,
    path = "/admin/schedules/health",
    tag = "schedules",
    responses((status = 200, body = HealthReport)),
    security(("admin_token" = [])),
)]
async fn admin_health(State(state): State<AppState>, _: AdminAuth) -> ApiResult<impl IntoResponse> {
    let health = schedules::health(&state.svc, None).await?;
    Ok(axum::Json(HealthReport::of(health)))
}
