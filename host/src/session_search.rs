//! Session search: the activity rows of one workspace and the memories it wrote that hold every
//! word of a query, through the word indexes of both (migrations 0012 and 0020), merged newest
//! first, each with a short snippet around its first match.
//!
//! Newest first rather than by relevance: the two indexes score differently (and differently per
//! engine), so their scores cannot be merged, while "when was this said" orders both kinds the
//! same way on both engines.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::services::Services;
use crate::store::{self, StoreError};

/// `limit` when none is given, and the largest allowed.
pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 200;
/// The longest query, in characters.
pub const MAX_QUERY_CHARS: usize = 500;
/// A snippet's length, in characters, and how much of it comes before the match.
const SNIPPET_CHARS: usize = 200;
const SNIPPET_BEFORE: usize = 60;

/// A query that passed the checks: not blank, not too long, with a word to look for, and a
/// limit in range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    text: String,
    limit: i64,
}

/// Why a query was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidQuery {
    Blank,
    TooLong,
    NoWord,
    Limit,
}

impl InvalidQuery {
    /// What the caller is told.
    pub fn message(self) -> &'static str {
        match self {
            InvalidQuery::Blank => "q is required and must not be blank",
            InvalidQuery::TooLong => "q must be at most 500 characters",
            InvalidQuery::NoWord => "q must hold a word (letters or digits) to search for",
            InvalidQuery::Limit => "limit must be between 1 and 200",
        }
    }
}

impl std::fmt::Display for InvalidQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for InvalidQuery {}

impl SearchQuery {
    pub fn parse(q: Option<&str>, limit: Option<i64>) -> Result<Self, InvalidQuery> {
        let text = q.map(str::trim).unwrap_or_default();
        if text.is_empty() {
            return Err(InvalidQuery::Blank);
        }
        if text.chars().count() > MAX_QUERY_CHARS {
            return Err(InvalidQuery::TooLong);
        }
        if words(text).next().is_none() {
            return Err(InvalidQuery::NoWord);
        }
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(InvalidQuery::Limit);
        }
        Ok(SearchQuery {
            text: text.to_owned(),
            limit,
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn limit(&self) -> i64 {
        self.limit
    }
}

/// What a hit is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HitKind {
    Activity { activity_type: String },
    Memory { scope: String, namespace: String },
}

/// One result.
#[derive(Debug, Clone)]
pub struct Hit {
    pub kind: HitKind,
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    pub snippet: String,
}

/// The hits of `query` in `workspace`'s activity and own memories, newest first, at most its
/// limit. Activity recorded before the call is searched too: the writer's queue is stored first.
pub async fn search(
    svc: &Services,
    workspace: Uuid,
    query: &SearchQuery,
) -> Result<Vec<Hit>, StoreError> {
    svc.writes.flush().await;
    let (activity, memories) = tokio::join!(
        store::activity::search(&svc.db, workspace, &query.text, query.limit),
        store::memories::search_own(&svc.db, workspace, &query.text, query.limit),
    );
    let wanted: Vec<String> = words(&query.text).map(str::to_lowercase).collect();
    let mut hits: Vec<Hit> = activity?
        .into_iter()
        .map(|row| Hit {
            snippet: snippet(&row.search_text, &wanted),
            kind: HitKind::Activity {
                activity_type: row.activity_type,
            },
            id: row.id,
            created_at: row.created_at,
        })
        .chain(memories?.into_iter().map(|row| Hit {
            snippet: snippet(&row.content, &wanted),
            kind: HitKind::Memory {
                scope: row.scope,
                namespace: row.namespace,
            },
            id: row.id,
            created_at: row.created_at,
        }))
        .collect();
    hits.sort_by_key(|hit| std::cmp::Reverse((hit.created_at, hit.id)));
    hits.truncate(usize::try_from(query.limit).unwrap_or(0));
    Ok(hits)
}

/// The words of `text` (runs of letters and digits, as the indexes' queries split them) with
/// their byte offsets.
fn word_spans(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut rest = text.char_indices().peekable();
    std::iter::from_fn(move || {
        while rest.next_if(|(_, c)| !c.is_alphanumeric()).is_some() {}
        let (start, _) = *rest.peek()?;
        let mut end = start;
        while let Some((at, c)) = rest.next_if(|(_, c)| c.is_alphanumeric()) {
            end = at + c.len_utf8();
        }
        Some((start, &text[start..end]))
    })
}

fn words(text: &str) -> impl Iterator<Item = &str> {
    word_spans(text).map(|(_, word)| word)
}

/// About [`SNIPPET_CHARS`] characters of `text` around its first word that is one of `wanted`
/// (lowercase), or failing that starts with one (PostgreSQL matches stems); its start when no
/// word does. Whitespace runs become one space; `…` marks a cut.
fn snippet(text: &str, wanted: &[String]) -> String {
    let mut prefixed = None;
    let mut exact = None;
    for (at, word) in word_spans(text) {
        let word = word.to_lowercase();
        if wanted.contains(&word) {
            exact = Some(at);
            break;
        }
        if prefixed.is_none() && wanted.iter().any(|w| word.starts_with(w.as_str())) {
            prefixed = Some(at);
        }
    }
    let at = exact.or(prefixed).unwrap_or(0);
    let start = text[..at]
        .char_indices()
        .rev()
        .nth(SNIPPET_BEFORE - 1)
        .map_or(0, |(i, _)| i);
    let rest = &text[start..];
    let cut: String = rest.chars().take(SNIPPET_CHARS).collect();
    let mut out = String::new();
    if start > 0 {
        out.push('…');
    }
    out.push_str(&cut.split_whitespace().collect::<Vec<_>>().join(" "));
    if rest.chars().nth(SNIPPET_CHARS).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_must_be_a_bounded_non_blank_text_with_a_word_and_a_limit_in_range() {
        assert_eq!(SearchQuery::parse(None, None), Err(InvalidQuery::Blank));
        assert_eq!(
            SearchQuery::parse(Some("  \t"), None),
            Err(InvalidQuery::Blank)
        );
        assert_eq!(
            SearchQuery::parse(Some("-*- !"), None),
            Err(InvalidQuery::NoWord)
        );
        let long = "é".repeat(MAX_QUERY_CHARS + 1);
        assert_eq!(
            SearchQuery::parse(Some(&long), None),
            Err(InvalidQuery::TooLong)
        );
        let longest = "é".repeat(MAX_QUERY_CHARS);
        assert!(SearchQuery::parse(Some(&longest), None).is_ok());
        assert_eq!(
            SearchQuery::parse(Some("x"), Some(0)),
            Err(InvalidQuery::Limit)
        );
        assert_eq!(
            SearchQuery::parse(Some("x"), Some(201)),
            Err(InvalidQuery::Limit)
        );
        let query = SearchQuery::parse(Some("  deploy plan "), None).unwrap();
        assert_eq!(
            (query.text(), query.limit()),
            ("deploy plan", DEFAULT_LIMIT)
        );
        assert_eq!(
            SearchQuery::parse(Some("x"), Some(200)).unwrap().limit(),
            200
        );
    }

    #[test]
    fn words_are_runs_of_letters_and_digits_with_their_offsets() {
        let spans: Vec<(usize, &str)> = word_spans("  héllo, w0rld!-x ").collect();
        assert_eq!(spans, [(2, "héllo"), (10, "w0rld"), (17, "x")]);
        assert_eq!(word_spans(" .,; ").count(), 0);
    }

    #[test]
    fn a_snippet_is_cut_around_the_first_match_with_marks_where_it_was_cut() {
        let wanted = vec!["needle".to_owned()];
        let text = format!(
            "{} the Needle is here {}",
            "a ".repeat(100),
            "b ".repeat(100)
        );
        let found = snippet(&text, &wanted);
        assert!(found.starts_with('…') && found.ends_with('…'), "{found}");
        assert!(found.contains("the Needle is here"), "{found}");
        assert!(found.chars().count() <= SNIPPET_CHARS + 2, "{found}");
        let before = found.split("Needle").next().unwrap();
        assert!(before.chars().count() <= SNIPPET_BEFORE + 1, "{found}");

        // A short text comes whole, its whitespace folded; no match starts at the beginning.
        assert_eq!(snippet("one\n\ntwo  needle", &wanted), "one two needle");
        assert_eq!(snippet("nothing here", &wanted), "nothing here");
        // A stem match (PostgreSQL) is found by its prefix when no word is exact.
        let stemmed = format!("{} needles {}", "a ".repeat(100), "b ".repeat(100));
        assert!(snippet(&stemmed, &wanted).contains("needles"));
    }
}
