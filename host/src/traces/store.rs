//! The recent traces this host has seen, in memory, filed under every workspace one of their
//! spans names: what `GET /workspaces/{id}/traces` reads with no collector at all.
//!
//! Bounded three ways: traces per workspace ([`Store::new`]'s `per_workspace`), spans per trace
//! ([`MAX_SPANS_PER_TRACE`]) and spans in all ([`MAX_SPANS`]); the oldest trace goes first.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use uuid::Uuid;

/// Spans kept of one trace; later ones are counted, not kept.
pub const MAX_SPANS_PER_TRACE: usize = 512;
/// Spans kept in all (a few tens of MiB at most); the oldest traces are dropped to stay below.
pub const MAX_SPANS: usize = 50_000;
/// Attributes kept per span, and the longest value kept (longer ones are cut).
pub const MAX_ATTRIBUTES: usize = 32;
pub const MAX_VALUE_CHARS: usize = 256;

/// Who reported a span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// This host (every replica reports its own).
    Host,
    /// The agent of the span's workspace (`POST /workspaces/{id}/traces`).
    Agent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanStatus {
    Unset,
    Ok,
    Error,
}

/// One finished span, as kept.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    pub trace_id: u128,
    pub span_id: u64,
    pub parent_span_id: Option<u64>,
    pub name: String,
    /// `server`, `client`, `internal`, `producer` or `consumer`.
    pub kind: &'static str,
    /// The reporter's `service.name`.
    pub service: String,
    pub source: Source,
    /// The workspace the span is about: a host span's `molecule.workspace_id`, or for an
    /// agent's span the workspace whose token sent it.
    pub workspace_id: Option<Uuid>,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    pub status: SpanStatus,
    pub status_message: Option<String>,
    pub attributes: Vec<(String, String)>,
}

/// One trace as kept: its spans in the order they finished.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    pub trace_id: u128,
    pub spans: Vec<SpanRecord>,
    /// Spans that arrived after [`MAX_SPANS_PER_TRACE`].
    pub dropped_spans: u32,
    /// The workspaces it is filed under.
    pub workspaces: Vec<Uuid>,
}

#[derive(Debug, Default)]
struct Inner {
    traces: HashMap<u128, Trace>,
    /// Trace ids in the order they were first seen (ids of traces already gone are skipped).
    order: VecDeque<u128>,
    /// Per workspace, the ids of its traces, oldest first.
    by_workspace: HashMap<Uuid, VecDeque<u128>>,
    spans: usize,
}

#[derive(Debug)]
pub struct Store {
    per_workspace: usize,
    max_spans: usize,
    inner: Mutex<Inner>,
}

impl Store {
    pub fn new(per_workspace: usize) -> Self {
        Self::with_limits(per_workspace, MAX_SPANS)
    }

    fn with_limits(per_workspace: usize, max_spans: usize) -> Self {
        Store {
            per_workspace: per_workspace.max(1),
            max_spans: max_spans.max(1),
            inner: Mutex::default(),
        }
    }

    /// Files `span` under its trace, and the trace under the span's workspace.
    pub fn add(&self, span: SpanRecord) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *inner;
        let trace_id = span.trace_id;
        let workspace = span.workspace_id;
        if !inner.traces.contains_key(&trace_id) {
            inner.order.push_back(trace_id);
        }
        let trace = inner.traces.entry(trace_id).or_insert_with(|| Trace {
            trace_id,
            ..Trace::default()
        });
        if trace.spans.len() < MAX_SPANS_PER_TRACE {
            trace.spans.push(span);
            inner.spans += 1;
        } else {
            trace.dropped_spans = trace.dropped_spans.saturating_add(1);
        }
        if let Some(workspace) = workspace
            && !trace.workspaces.contains(&workspace)
        {
            trace.workspaces.push(workspace);
            let filed = inner.by_workspace.entry(workspace).or_default();
            filed.push_back(trace_id);
            if filed.len() > self.per_workspace
                && let Some(old) = filed.pop_front()
            {
                inner.unfile(old, workspace);
            }
        }
        while inner.spans > self.max_spans {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            inner.remove(oldest);
        }
        // Ids of traces that went because no workspace listed them any more stay in `order`
        // until they are reached; compacted once they are most of it, so it stays bounded.
        if inner.order.len() > 2 * inner.traces.len() + 64 {
            let traces = &inner.traces;
            inner.order.retain(|id| traces.contains_key(id));
        }
    }

    /// The newest traces filed under `workspace` (newest first), at most `limit`.
    pub fn list(&self, workspace: Uuid, limit: usize) -> Vec<Trace> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Some(filed) = inner.by_workspace.get(&workspace) else {
            return Vec::new();
        };
        filed
            .iter()
            .rev()
            .filter_map(|id| inner.traces.get(id))
            .take(limit)
            .cloned()
            .collect()
    }

    /// One trace, if it is filed under `workspace`.
    pub fn get(&self, workspace: Uuid, trace_id: u128) -> Option<Trace> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .traces
            .get(&trace_id)
            .filter(|t| t.workspaces.contains(&workspace))
            .cloned()
    }
}

impl Inner {
    /// Takes `trace_id` off `workspace`'s list; a trace no workspace lists any more goes.
    fn unfile(&mut self, trace_id: u128, workspace: Uuid) {
        let Some(trace) = self.traces.get_mut(&trace_id) else {
            return;
        };
        trace.workspaces.retain(|w| *w != workspace);
        if trace.workspaces.is_empty() {
            self.remove(trace_id);
        }
    }

    /// Drops a trace and its entries in the workspace lists.
    fn remove(&mut self, trace_id: u128) {
        let Some(trace) = self.traces.remove(&trace_id) else {
            return;
        };
        self.spans -= trace.spans.len();
        for workspace in trace.workspaces {
            if let Some(filed) = self.by_workspace.get_mut(&workspace) {
                filed.retain(|id| *id != trace_id);
                if filed.is_empty() {
                    self.by_workspace.remove(&workspace);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(trace_id: u128, span_id: u64, workspace: Option<Uuid>) -> SpanRecord {
        SpanRecord {
            trace_id,
            span_id,
            parent_span_id: None,
            name: format!("span {span_id}"),
            kind: "internal",
            service: "molecule-host".into(),
            source: Source::Host,
            workspace_id: workspace,
            start_unix_nanos: 1,
            end_unix_nanos: 2,
            status: SpanStatus::Unset,
            status_message: None,
            attributes: Vec::new(),
        }
    }

    #[test]
    fn a_trace_is_filed_under_every_workspace_its_spans_name() {
        let store = Store::new(10);
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        store.add(span(7, 1, Some(a)));
        store.add(span(7, 2, Some(b)));
        store.add(span(7, 3, None));
        for ws in [a, b] {
            let listed = store.list(ws, 10);
            assert_eq!(listed.len(), 1);
            assert_eq!(listed[0].spans.len(), 3);
        }
        assert!(store.list(c, 10).is_empty());
        assert!(store.get(a, 7).is_some());
        assert!(store.get(c, 7).is_none(), "not filed under c");
    }

    #[test]
    fn each_workspace_keeps_its_newest_traces_and_shared_ones_stay_while_listed() {
        let store = Store::new(2);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        store.add(span(1, 1, Some(a)));
        store.add(span(1, 2, Some(b)));
        store.add(span(2, 3, Some(a)));
        store.add(span(3, 4, Some(a)));
        let ids: Vec<u128> = store.list(a, 10).iter().map(|t| t.trace_id).collect();
        assert_eq!(ids, [3, 2], "newest first, trace 1 pushed out of a's list");
        // b still lists trace 1, so it is kept.
        assert_eq!(store.list(b, 10)[0].trace_id, 1);
        assert!(store.get(a, 1).is_none());
        store.add(span(4, 5, Some(b)));
        store.add(span(5, 6, Some(b)));
        assert!(
            !store.inner.lock().unwrap().traces.contains_key(&1),
            "unlisted everywhere: gone"
        );
    }

    #[test]
    fn the_oldest_traces_go_when_too_many_spans_are_kept() {
        let store = Store::with_limits(100, 3);
        let a = Uuid::new_v4();
        store.add(span(1, 1, Some(a)));
        store.add(span(1, 2, Some(a)));
        store.add(span(2, 3, Some(a)));
        store.add(span(3, 4, Some(a)));
        let ids: Vec<u128> = store.list(a, 10).iter().map(|t| t.trace_id).collect();
        assert_eq!(ids, [3, 2]);
        assert_eq!(store.inner.lock().unwrap().spans, 2);
    }

    #[test]
    fn a_trace_keeps_a_bounded_number_of_spans_and_counts_the_rest() {
        let store = Store::new(1);
        let a = Uuid::new_v4();
        for i in 0..(MAX_SPANS_PER_TRACE as u64 + 5) {
            store.add(span(9, i, Some(a)));
        }
        let trace = store.get(a, 9).unwrap();
        assert_eq!(trace.spans.len(), MAX_SPANS_PER_TRACE);
        assert_eq!(trace.dropped_spans, 5);
    }

    #[test]
    fn ids_of_traces_that_went_do_not_pile_up() {
        let store = Store::new(2);
        let a = Uuid::new_v4();
        for i in 0..10_000u128 {
            store.add(span(i, 1, Some(a)));
        }
        let inner = store.inner.lock().unwrap();
        assert_eq!(inner.traces.len(), 2);
        assert!(inner.order.len() <= 2 * 2 + 64 + 1, "{}", inner.order.len());
    }
}
