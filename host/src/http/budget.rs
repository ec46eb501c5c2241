//! A workspace's budget (read by the workspace or the operator, set by the operator only) and
//! its token usage per month.

use axum::extract::State;
use axum::response::IntoResponse;
use chrono::{DateTime, NaiveDate, TimeZone as _, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, WorkspaceAccess, WorkspaceAuth, WorkspaceIdParam};
use super::fields::{FieldErrorBody, field_error, object};
use super::openapi::ErrorBody;
use super::workspaces::WorkspaceGone;
use crate::agents::budget::Budget;
use crate::events::Invalidation;
use crate::store::usage::{self, UsageRow};
use crate::workspaces::get_live;

/// Months of history `GET /metrics` returns.
const HISTORY_MONTHS: i64 = 12;

/// The largest budget accepted, in cents (ten billion dollars).
const MAX_BUDGET_CENTS: i64 = 1_000_000_000_000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_budget, set_budget))
        .routes(routes!(metrics))
}

/// A month's first instant and the next month's, from its `YYYY-MM`.
fn bounds(period: &str) -> (DateTime<Utc>, DateTime<Utc>) {
    let first = NaiveDate::parse_from_str(&format!("{period}-01"), "%Y-%m-%d")
        .unwrap_or_else(|_| Utc::now().date_naive());
    let next = first
        .checked_add_months(chrono::Months::new(1))
        .unwrap_or(first);
    let midnight = |d: NaiveDate| Utc.from_utc_datetime(&d.and_time(chrono::NaiveTime::MIN));
    (midnight(first), midnight(next))
}

/// A workspace's budget this month. Amounts are US cents.
#[derive(Debug, Serialize, ToSchema)]
struct BudgetBody {
    workspace_id: Uuid,
    /// `null`: no limit.
    budget_limit: Option<i64>,
    /// Spent this month (what the host counted from reported token usage, or what the agent
    /// reported itself, whichever is higher).
    monthly_spend: i64,
    /// `budget_limit - monthly_spend`, never below 0; `null` without a limit.
    budget_remaining: Option<i64>,
    /// Whether calls to the workspace are refused (402) until the month ends or the limit rises.
    exceeded: bool,
    /// The month counted, `YYYY-MM` (UTC).
    period: String,
    period_start: DateTime<Utc>,
    period_end: DateTime<Utc>,
}

impl BudgetBody {
    fn of(workspace_id: Uuid, budget: Budget) -> BudgetBody {
        let (period_start, period_end) = bounds(&budget.period);
        BudgetBody {
            workspace_id,
            budget_limit: budget.budget_limit,
            monthly_spend: budget.monthly_spend,
            budget_remaining: budget.remaining(),
            exceeded: budget.exceeded(),
            period: budget.period,
            period_start,
            period_end,
        }
    }
}

/// The workspace's budget and what it spent this month.
#[utoipa::path(
    get,
    path = "/workspaces/{id}/budget",
    tag = "budget",
    params(WorkspaceIdParam),
    responses(
        (status = 200, body = BudgetBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("admin_token" = []), ("workspace_token" = [])),
)]
async fn get_budget(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
) -> ApiResult<impl IntoResponse> {
    // Usage still in the writer's queue counts.
    state.svc.writes.flush().await;
    let row = get_live(&state.svc, id).await?;
    Ok(axum::Json(BudgetBody::of(id, Budget::of(&row))))
}

/// The body of `PATCH /workspaces/{id}/budget`.
#[derive(Debug, serde::Deserialize, ToSchema)]
#[allow(dead_code)]
struct SetBudgetBody {
    /// Cents, 0 to 10^12; `null` lifts the limit. Required.
    budget_limit: Option<i64>,
}

/// Sets or lifts the workspace's budget (the operator only: a workspace never sets its own).
/// It applies to the next call, on every replica.
#[utoipa::path(
    patch,
    path = "/workspaces/{id}/budget",
    tag = "budget",
    params(WorkspaceIdParam),
    request_body = SetBudgetBody,
    responses(
        (status = 200, body = BudgetBody),
        (status = 400, description = "budget_limit is missing, not an integer, negative or too large; `field` names it", body = FieldErrorBody),
        (status = 401, description = "No credential, or another workspace's", body = ErrorBody),
        (status = 403, description = "The workspace's own token: only the operator sets budgets", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("admin_token" = [])),
)]
async fn set_budget(
    State(state): State<AppState>,
    access: WorkspaceAccess,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<impl IntoResponse> {
    if !access.principal.is_admin() {
        return Err(ApiError::forbidden(
            "only the operator sets budgets; a workspace cannot set its own",
        ));
    }
    let id = access.id;
    let body = object(body)?;
    let limit = match body.get("budget_limit") {
        None => return Err(field_error("budget_limit", "budget_limit is required")),
        Some(Value::Null) => None,
        Some(v) => Some(
            v.as_i64()
                .filter(|c| (0..=MAX_BUDGET_CENTS).contains(c))
                .ok_or_else(|| {
                    field_error(
                        "budget_limit",
                        "budget_limit must be a whole number of cents from 0 to 10^12, or null",
                    )
                })?,
        ),
    };
    get_live(&state.svc, id).await?;
    if !usage::set_limit(&state.svc.db, id, limit).await? {
        // Removed meanwhile: answer as a read now would.
        get_live(&state.svc, id).await?;
    }
    state.svc.events.invalidate(Invalidation::Workspace(id));
    tracing::info!(workspace_id = %id, budget_limit = ?limit, "budget set");
    state.svc.writes.flush().await;
    let row = get_live(&state.svc, id).await?;
    Ok(axum::Json(BudgetBody::of(id, Budget::of(&row))))
}

/// One month's token usage.
#[derive(Debug, Serialize, ToSchema)]
struct MonthUsage {
    /// `YYYY-MM` (UTC).
    period: String,
    input_tokens: i64,
    output_tokens: i64,
    total_tokens: i64,
    /// Answers that reported usage.
    call_count: i64,
    /// At the configured prices, in US dollars.
    estimated_cost_usd: f64,
}

impl MonthUsage {
    fn of(row: &UsageRow) -> MonthUsage {
        MonthUsage {
            period: row.period.clone(),
            input_tokens: row.input_tokens,
            output_tokens: row.output_tokens,
            total_tokens: row.input_tokens.saturating_add(row.output_tokens),
            call_count: row.call_count,
            // Micro-cents to dollars.
            estimated_cost_usd: row.cost_microcents as f64 / 100_000_000.0,
        }
    }

    fn none(period: &str) -> MonthUsage {
        MonthUsage {
            period: period.to_owned(),
            input_tokens: 0,
            output_tokens: 0,
            total_tokens: 0,
            call_count: 0,
            estimated_cost_usd: 0.0,
        }
    }
}

/// Token usage: this month's, the budget, and the last 12 months that had any.
#[derive(Debug, Serialize, ToSchema)]
struct MetricsBody {
    workspace_id: Uuid,
    #[serde(flatten)]
    current: MonthUsage,
    period_start: DateTime<Utc>,
    period_end: DateTime<Utc>,
    monthly_spend: i64,
    budget_limit: Option<i64>,
    /// Newest first, at most 12 months, only months with usage.
    history: Vec<MonthUsage>,
}

/// The workspace's token usage per month (as its agent's answers reported it).
#[utoipa::path(
    get,
    path = "/workspaces/{id}/metrics",
    tag = "budget",
    params(WorkspaceIdParam),
    responses(
        (status = 200, body = MetricsBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("admin_token" = []), ("workspace_token" = [])),
)]
async fn metrics(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
) -> ApiResult<impl IntoResponse> {
    state.svc.writes.flush().await;
    let row = get_live(&state.svc, id).await?;
    let budget = Budget::of(&row);
    let history = usage::history(&state.svc.db, id, HISTORY_MONTHS).await?;
    let current = history
        .iter()
        .find(|m| m.period == budget.period)
        .map_or_else(|| MonthUsage::none(&budget.period), MonthUsage::of);
    let (period_start, period_end) = bounds(&budget.period);
    Ok(axum::Json(MetricsBody {
        workspace_id: id,
        current,
        period_start,
        period_end,
        monthly_spend: budget.monthly_spend,
        budget_limit: budget.budget_limit,
        history: history.iter().map(MonthUsage::of).collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_month_runs_from_its_first_midnight_to_the_next_months() {
        let (start, end) = bounds("2026-12");
        assert_eq!(start.to_rfc3339(), "2026-12-01T00:00:00+00:00");
        assert_eq!(end.to_rfc3339(), "2027-01-01T00:00:00+00:00");
        let (start, end) = bounds("2027-02");
        assert_eq!(start.to_rfc3339(), "2027-02-01T00:00:00+00:00");
        assert_eq!(end.to_rfc3339(), "2027-03-01T00:00:00+00:00");
    }

    #[test]
    fn this_month_has_bounds_around_now() {
        let (start, end) = bounds(&crate::agents::budget::this_month());
        let now = Utc::now();
        assert!(start <= now && now < end);
    }
}
