//! Budgets and token usage: what agents' answers say they used, what it cost, and whether a
//! workspace may still be called.
//!
//! Every answer that passes through the A2A proxy (delegations included) is looked at for
//! `usage {input_tokens, output_tokens}` at its top level or in `result` (OpenAI's
//! `prompt_tokens`/`completion_tokens` are read too). The tokens are priced with
//! `budget.prices` by the model the answer names (`usage.model`, else `model`, else
//! `result.metadata.model`; `budget.default_price` otherwise) and handed to the batched writer,
//! which adds them to the month's `workspace_token_usage` row and raises `monthly_spend`; the
//! answer does not wait for that write. A workspace whose spend this month has reached its
//! `budget_limit` is refused with 402 before its agent is called. Months are UTC calendar
//! months: a spend counted in an earlier month is no spend now, so budgets roll over on the 1st
//! without any sweep.

use chrono::Utc;
use serde_json::Value;
use uuid::Uuid;

use crate::config::BudgetConfig;
use crate::services::Services;
use crate::store::batch::Write;
use crate::store::usage::{self, Tally};
use crate::store::workspaces::WorkspaceRow;

/// The most tokens one answer may report per direction; more is a broken or hostile report and
/// is clamped.
const MAX_TOKENS_PER_ANSWER: i64 = 1_000_000_000;

/// What an answer says it used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub model: Option<String>,
}

impl Usage {
    /// The usage `answer` reports, if any: `usage` at its top level, else in `result`.
    pub fn reported(answer: &Value) -> Option<Usage> {
        let usage = answer
            .get("usage")
            .or_else(|| answer.pointer("/result/usage"))?;
        let tokens = |names: [&str; 2]| {
            names
                .iter()
                .find_map(|n| usage.get(*n).and_then(Value::as_i64))
                .map(|t| t.clamp(0, MAX_TOKENS_PER_ANSWER))
        };
        let input_tokens = tokens(["input_tokens", "prompt_tokens"]);
        let output_tokens = tokens(["output_tokens", "completion_tokens"]);
        if input_tokens.is_none() && output_tokens.is_none() {
            return None;
        }
        let model = [
            usage.get("model"),
            answer.get("model"),
            answer.pointer("/result/metadata/model"),
        ]
        .into_iter()
        .flatten()
        .find_map(Value::as_str)
        .filter(|m| !m.is_empty() && m.len() <= 200)
        .map(str::to_owned);
        Some(Usage {
            input_tokens: input_tokens.unwrap_or(0),
            output_tokens: output_tokens.unwrap_or(0),
            model,
        })
    }

    /// What it costs, in micro-cents (a price in cents per million tokens times tokens).
    pub fn cost_microcents(&self, prices: &BudgetConfig) -> i64 {
        let price = prices.price(self.model.as_deref());
        let part = |tokens: i64, cents_per_million: u64| {
            tokens.saturating_mul(i64::try_from(cents_per_million).unwrap_or(i64::MAX))
        };
        part(self.input_tokens, price.input_cents_per_million)
            .saturating_add(part(self.output_tokens, price.output_cents_per_million))
    }
}

/// This month, as stored (`YYYY-MM`).
pub fn this_month() -> String {
    usage::period_of(Utc::now())
}

/// Whether `row`'s spend this month has reached its budget.
pub fn over_budget(row: &WorkspaceRow) -> bool {
    Budget::of(row).exceeded()
}

/// Counts what `answer` reports against `workspace` (through the batched writer; nothing when
/// it reports nothing).
pub async fn count(svc: &Services, workspace: Uuid, answer: &Value) {
    let Some(used) = Usage::reported(answer) else {
        return;
    };
    let tally = Tally {
        input_tokens: used.input_tokens,
        output_tokens: used.output_tokens,
        calls: 1,
        cost_microcents: used.cost_microcents(&svc.config.budget),
    };
    svc.writes
        .write(Write::Usage {
            workspace,
            period: this_month(),
            tally,
        })
        .await;
}

/// A workspace's budget as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// Cents; `None`: no limit.
    pub budget_limit: Option<i64>,
    /// Cents spent this month.
    pub monthly_spend: i64,
    /// `YYYY-MM`.
    pub period: String,
}

impl Budget {
    pub fn of(row: &WorkspaceRow) -> Budget {
        let period = this_month();
        Budget {
            budget_limit: row.budget_limit,
            monthly_spend: row.spend_in(&period),
            period,
        }
    }

    /// Cents left this month (never below zero); `None` without a limit.
    pub fn remaining(&self) -> Option<i64> {
        self.budget_limit
            .map(|limit| (limit - self.monthly_spend).max(0))
    }

    pub fn exceeded(&self) -> bool {
        self.budget_limit
            .is_some_and(|limit| self.monthly_spend >= limit)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::TokenPrice;

    #[test]
    fn usage_is_read_at_the_top_level_or_in_result_under_either_name() {
        let top = json!({ "usage": { "input_tokens": 10, "output_tokens": 5 } });
        assert_eq!(
            Usage::reported(&top),
            Some(Usage {
                input_tokens: 10,
                output_tokens: 5,
                model: None
            })
        );
        let nested = json!({ "jsonrpc": "2.0", "result": {
            "usage": { "prompt_tokens": 7, "completion_tokens": 3, "model": "m-1" } } });
        assert_eq!(
            Usage::reported(&nested),
            Some(Usage {
                input_tokens: 7,
                output_tokens: 3,
                model: Some("m-1".into())
            })
        );
        let model_elsewhere = json!({ "model": "m-2", "usage": { "output_tokens": 1 } });
        assert_eq!(
            Usage::reported(&model_elsewhere).and_then(|u| u.model),
            Some("m-2".into())
        );
        for nothing in [
            json!({ "result": { "parts": [] } }),
            json!({ "usage": {} }),
            json!({ "usage": { "input_tokens": "many" } }),
            json!([1, 2]),
        ] {
            assert_eq!(Usage::reported(&nothing), None, "{nothing}");
        }
        let huge = json!({ "usage": { "input_tokens": i64::MAX, "output_tokens": -5 } });
        assert_eq!(
            Usage::reported(&huge),
            Some(Usage {
                input_tokens: MAX_TOKENS_PER_ANSWER,
                output_tokens: 0,
                model: None
            })
        );
    }

    #[test]
    fn cost_is_priced_by_model_in_exact_micro_cents() {
        let mut prices = BudgetConfig::default();
        prices.prices.insert(
            "cheap".into(),
            TokenPrice {
                input_cents_per_million: 10,
                output_cents_per_million: 40,
            },
        );
        let used = |model: Option<&str>| Usage {
            input_tokens: 1_000,
            output_tokens: 500,
            model: model.map(str::to_owned),
        };
        // 1,000 × 10 + 500 × 40 micro-cents.
        assert_eq!(used(Some("cheap")).cost_microcents(&prices), 30_000);
        // The default price: 1,000 × 300 + 500 × 1,500.
        assert_eq!(used(Some("other")).cost_microcents(&prices), 1_050_000);
        assert_eq!(used(None).cost_microcents(&prices), 1_050_000);
    }

    #[test]
    fn a_budget_counts_only_this_months_spend() {
        let now = Utc::now();
        let mut row = WorkspaceRow {
            id: Uuid::new_v4(),
            name: "w".into(),
            role: None,
            tier: 1,
            status: crate::store::status::Status::Online,
            agent_card: None,
            url: None,
            parent_id: None,
            forwarded_to: None,
            last_heartbeat_at: None,
            last_error_rate: 0.0,
            last_sample_error: None,
            active_tasks: 0,
            uptime_seconds: 0,
            current_task: None,
            awareness_namespace: None,
            runtime: "none".into(),
            workspace_dir: None,
            workspace_access: "none".into(),
            budget_limit: None,
            monthly_spend: 0,
            spend_period: None,
            last_outbound_at: None,
            max_concurrent_tasks: 1,
            update_tier: "stable".into(),
            removed_at: None,
            created_at: now,
            updated_at: now,
            x: 0.0,
            y: 0.0,
            collapsed: false,
            hibernation_idle_minutes: None,
            delivery_mode: "push".to_owned(),
        };
        row.budget_limit = Some(100);
        row.monthly_spend = 150;
        row.spend_period = Some(this_month());
        assert!(over_budget(&row));
        assert_eq!(Budget::of(&row).remaining(), Some(0));
        row.spend_period = Some("1999-12".into());
        assert!(!over_budget(&row));
        assert_eq!(Budget::of(&row).monthly_spend, 0);
        assert_eq!(Budget::of(&row).remaining(), Some(100));
        row.budget_limit = None;
        row.spend_period = Some(this_month());
        assert!(!Budget::of(&row).exceeded());
        assert_eq!(Budget::of(&row).remaining(), None);
    }
}
