//! `workspace_token_usage` (tokens and their cost per workspace and month) and the spend columns
//! of `workspaces` (`budget_limit`, `monthly_spend`, `spend_period`).
//!
//! A month is its UTC calendar month as `YYYY-MM`. Costs are kept in micro-cents (a price in
//! cents per million tokens times a token count is exact in integers); `monthly_spend` is whole
//! cents, as the original's.

use chrono::{DateTime, Datelike, Utc};
use uuid::Uuid;

use super::{Db, StoreResult, on_db, on_db_read};

/// Micro-cents in a cent.
pub const MICROCENTS_PER_CENT: i64 = 1_000_000;

/// The month `at` falls in, as stored (`YYYY-MM`).
pub fn period_of(at: DateTime<Utc>) -> String {
    format!("{:04}-{:02}", at.year(), at.month())
}

/// Tokens and cost to add to a workspace's month.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub calls: i64,
    pub cost_microcents: i64,
}

impl Tally {
    pub fn add(&mut self, other: Tally) {
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.calls = self.calls.saturating_add(other.calls);
        self.cost_microcents = self.cost_microcents.saturating_add(other.cost_microcents);
    }
}

/// One month of a workspace's usage.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UsageRow {
    pub period: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub call_count: i64,
    pub cost_microcents: i64,
    pub updated_at: DateTime<Utc>,
}

/// Adds `tally` to the workspace's month and returns the month's cost so far (micro-cents).
/// For the batched writer, inside its transaction.
pub const ADD_USAGE: &str = "INSERT INTO workspace_token_usage
        (workspace_id, period, input_tokens, output_tokens, call_count, cost_microcents, updated_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7)
     ON CONFLICT (workspace_id, period) DO UPDATE SET
         input_tokens = workspace_token_usage.input_tokens + excluded.input_tokens,
         output_tokens = workspace_token_usage.output_tokens + excluded.output_tokens,
         call_count = workspace_token_usage.call_count + excluded.call_count,
         cost_microcents = workspace_token_usage.cost_microcents + excluded.cost_microcents,
         updated_at = excluded.updated_at
     RETURNING cost_microcents";

/// Raises `monthly_spend` of workspace `$1` to `$3` cents for month `$2`: a spend of an earlier
/// month is replaced, a higher one of the same month (an agent's own report) is kept. Both
/// sources estimate the same money, so the larger wins and neither can lower the other.
pub const RAISE_SPEND: &str = "UPDATE workspaces SET
         monthly_spend = CASE WHEN spend_period = $2 AND monthly_spend > $3 THEN monthly_spend ELSE $3 END,
         spend_period = $2
     WHERE id = $1";

/// The workspace's months, newest first, at most `limit`.
pub async fn history(db: &Db, workspace_id: Uuid, limit: i64) -> StoreResult<Vec<UsageRow>> {
    on_db_read!(db, pool => Ok(sqlx::query_as(
        "SELECT period, input_tokens, output_tokens, call_count, cost_microcents, updated_at
         FROM workspace_token_usage WHERE workspace_id = $1 ORDER BY period DESC LIMIT $2",
    )
    .bind(workspace_id)
    .bind(limit)
    .fetch_all(pool)
    .await?))
}

/// Sets (or with `None` lifts) a live workspace's budget; false when there is no such live row.
pub async fn set_limit(db: &Db, workspace_id: Uuid, limit: Option<i64>) -> StoreResult<bool> {
    on_db!(db, pool => Ok(sqlx::query(
        "UPDATE workspaces SET budget_limit = $2, updated_at = $3 WHERE id = $1 AND status <> 'removed'",
    )
    .bind(workspace_id)
    .bind(limit)
    .bind(Utc::now())
    .execute(pool)
    .await?
    .rows_affected()
        > 0))
}

/// Moves a workspace's spend and this month's usage into `period`, as if both had been counted
/// then: how a spec shows a month rolling over without waiting for one.
pub async fn backdate_spend(db: &Db, workspace_id: Uuid, period: &str) -> StoreResult<()> {
    let this_month = period_of(Utc::now());
    let begin = db.begin_write_sql();
    on_db!(db, pool => {
        let mut tx = super::begin(pool, Some(begin)).await?;
        sqlx::query("UPDATE workspaces SET spend_period = $2 WHERE id = $1")
            .bind(workspace_id)
            .bind(period)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE workspace_token_usage SET period = $3 WHERE workspace_id = $1 AND period = $2")
            .bind(workspace_id)
            .bind(&this_month)
            .bind(period)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;

    #[test]
    fn a_month_is_its_utc_calendar_month() {
        let at = |y, m, d, h| Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap();
        assert_eq!(period_of(at(2026, 12, 31, 23)), "2026-12");
        assert_eq!(period_of(at(2027, 1, 1, 0)), "2027-01");
        assert_eq!(period_of(at(999, 3, 1, 0)), "0999-03");
    }

    #[test]
    fn tallies_add_up_and_saturate() {
        let mut t = Tally {
            input_tokens: 1,
            output_tokens: 2,
            calls: 1,
            cost_microcents: i64::MAX - 1,
        };
        t.add(Tally {
            input_tokens: 10,
            output_tokens: 20,
            calls: 1,
            cost_microcents: 5,
        });
        assert_eq!(
            t,
            Tally {
                input_tokens: 11,
                output_tokens: 22,
                calls: 2,
                cost_microcents: i64::MAX,
            }
        );
    }
}
