//! The calls into the classifier and restart-policy slots, each with its fallback, and the
//! shadow candidate run beside the active version on the same input, recorded and reported.

use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{Value, json};
use uuid::Uuid;

use super::super::policy;
use super::super::runtime::CallError;
use super::super::types::{Decision, FileChange, Reload, Trigger, WorkspaceInfo};
use super::{ExtensionHost, Loaded, RegistryError, Slot};
use crate::store;

/// How a slot's shadow candidate compares with its active version.
#[derive(Debug, Clone)]
pub struct ShadowReport {
    pub slot: Slot,
    pub active_id: Option<Uuid>,
    pub candidate_id: Uuid,
    pub agree: i64,
    pub disagree: i64,
    pub candidate_failed: i64,
    /// The latest disagreements (and candidate failures), newest first, at most 20.
    pub recent: Vec<store::extensions::ShadowResultRow>,
}

impl ShadowReport {
    /// Every call compared so far.
    pub fn calls(&self) -> i64 {
        self.agree + self.disagree + self.candidate_failed
    }
}

impl ExtensionHost {
    /// Classifies changes with the active classifier (cold when none is active or it fails),
    /// running the shadow candidate on the same input when one is set.
    pub async fn classify(&self, changes: Vec<FileChange>) -> Reload {
        let slot = Slot("classifier".into());
        let state = self.slot(&slot);
        let Some(active) = state.active.load_full() else {
            return policy::classifier_fallback("no classifier active");
        };
        let started = Instant::now();
        let answer =
            super::super::classify_or_cold(active.ext.clone(), &self.metrics, changes.clone())
                .await;
        let active_time = started.elapsed();
        if let Some(candidate) = state.shadow.load_full() {
            let call = candidate.ext.clone();
            let input = changes.clone();
            let started = Instant::now();
            let result = tokio::task::spawn_blocking(move || call.classify(&input))
                .await
                .unwrap_or_else(|join| Err(CallError::Trap(join.to_string())));
            self.metrics
                .observe(&candidate.ext, &result, started.elapsed());
            let candidate_answer = result.map(|r| json!(r));
            self.record_shadow(
                &slot,
                &active,
                &candidate,
                json!(changes),
                json!(answer),
                candidate_answer,
                active_time,
                started.elapsed(),
            )
            .await;
        }
        answer
    }

    /// Asks the active restart policy (the built-in default when none is active or it fails),
    /// clamped; the shadow candidate sees the same input when one is set.
    pub async fn decide(&self, workspace: WorkspaceInfo, trigger: Trigger) -> Decision {
        let slot = Slot("restart-policy".into());
        let state = self.slot(&slot);
        let active = state.active.load_full();
        let started = Instant::now();
        let answer = super::super::decide_or_default(
            active.as_ref().map(|a| a.ext.clone()),
            &self.metrics,
            &self.clamp,
            workspace.clone(),
            trigger.clone(),
        )
        .await;
        let active_time = started.elapsed();
        if let (Some(active), Some(candidate)) = (active, state.shadow.load_full()) {
            let call = candidate.ext.clone();
            let (ws, tr) = (workspace.clone(), trigger.clone());
            let started = Instant::now();
            let result = tokio::task::spawn_blocking(move || call.decide(&ws, &tr))
                .await
                .unwrap_or_else(|join| Err(CallError::Trap(join.to_string())));
            self.metrics
                .observe(&candidate.ext, &result, started.elapsed());
            let clamped = result.map(|d| json!(self.clamp.apply(&workspace, d)));
            let input = json!({ "workspace": workspace, "trigger": trigger });
            self.record_shadow(
                &slot,
                &active,
                &candidate,
                input,
                json!(answer),
                clamped,
                active_time,
                started.elapsed(),
            )
            .await;
        }
        answer
    }

    #[allow(clippy::too_many_arguments)]
    async fn record_shadow(
        &self,
        slot: &Slot,
        active: &Loaded,
        candidate: &Loaded,
        input: Value,
        active_answer: Value,
        candidate_answer: Result<Value, CallError>,
        active_time: Duration,
        candidate_time: Duration,
    ) {
        let (outcome, candidate_value) = match candidate_answer {
            Ok(value) if value == active_answer => ("agree", Some(value)),
            Ok(value) => ("disagree", Some(value)),
            Err(err) => ("candidate_failed", Some(json!({ "error": err.label() }))),
        };
        let row = store::extensions::ShadowResultRow {
            id: Uuid::new_v4(),
            slot: slot.as_str().to_owned(),
            active_id: active.id,
            candidate_id: candidate.id,
            outcome: outcome.to_owned(),
            input: (outcome != "agree").then_some(input),
            active_answer: Some(active_answer),
            candidate_answer: candidate_value,
            active_us: active_time.as_micros() as i64,
            candidate_us: candidate_time.as_micros() as i64,
            created_at: Utc::now(),
        };
        if let Err(err) = store::extensions::insert_shadow_result(&self.db, &row).await {
            tracing::warn!(error = ?err, "recording a shadow result failed");
        }
    }

    /// The shadow report of a slot's current (or given) candidate.
    pub async fn shadow_report(&self, slot: &Slot) -> Result<ShadowReport, RegistryError> {
        let state = self.slot(slot);
        let active = state.active.load_full();
        let candidate = state.shadow.load_full().ok_or(RegistryError::NotFound)?;
        let counts =
            store::extensions::shadow_counts(&self.db, slot.as_str(), candidate.id).await?;
        let count = |name: &str| {
            counts
                .iter()
                .find(|(o, _)| o == name)
                .map_or(0, |(_, n)| *n)
        };
        let recent =
            store::extensions::shadow_disagreements(&self.db, slot.as_str(), candidate.id, 20)
                .await?;
        Ok(ShadowReport {
            slot: slot.clone(),
            active_id: active.as_ref().map(|a| a.id),
            candidate_id: candidate.id,
            agree: count("agree"),
            disagree: count("disagree"),
            candidate_failed: count("candidate_failed"),
            recent,
        })
    }
}
