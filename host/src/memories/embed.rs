//! The optional semantic ordering of memory search: an OpenAI-compatible embeddings endpoint
//! (`memories.embeddings_url`, `POST {url}/embeddings`) turns a memory's redacted content and a
//! search's query into vectors; search orders its full-text candidates by cosine similarity.
//!
//! Off when the URL is unset. Every failure (unreachable, non-2xx, timeout, malformed answer) is
//! a `None`: the write keeps its memory without an embedding and the search keeps its full-text
//! order. The API key goes only into the `Authorization` header; warnings name neither it nor
//! the content. The endpoint is the operator's own choice, so no URL policy narrows it (a
//! loopback or private address is fine); redirects are not followed.

use std::sync::LazyLock;
use std::time::Duration;

use secrecy::ExposeSecret as _;

use crate::config::MemoriesConfig;

/// Embedding calls that failed since the process started: the
/// `molecule_memory_embedding_failures_total` metric (`http::metrics` registers it).
pub static FAILURES: LazyLock<prometheus_client::metrics::counter::Counter> =
    LazyLock::new(Default::default);

static CLIENT: LazyLock<reqwest::Client> = LazyLock::new(|| {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
});

/// The longest vector accepted from an endpoint (text-embedding-3-large has 3072 dimensions).
const MAX_DIMS: usize = 8192;

/// Whether the feature is on.
pub fn enabled(config: &MemoriesConfig) -> bool {
    config
        .embeddings_url
        .as_deref()
        .is_some_and(|u| !u.trim().is_empty())
}

/// The embedding of `text`, or `None` when the feature is off or the call failed (counted and
/// warned about, without the key or the text).
pub async fn embed(config: &MemoriesConfig, text: &str) -> Option<Vec<f32>> {
    let base = config.embeddings_url.as_deref()?.trim();
    if base.is_empty() {
        return None;
    }
    let url = format!("{}/embeddings", base.trim_end_matches('/'));
    let mut request = CLIENT
        .post(&url)
        .timeout(Duration::from_millis(config.embeddings_timeout_ms.max(1)))
        .json(&serde_json::json!({ "model": config.embeddings_model, "input": text }));
    if let Some(key) = &config.embeddings_api_key {
        request = request.bearer_auth(key.expose_secret());
    }
    let outcome = async {
        let response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                "timed out".to_owned()
            } else {
                "unreachable".to_owned()
            }
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("answered {}", status.as_u16()));
        }
        let body: serde_json::Value = response
            .json()
            .await
            .map_err(|_| "answered no JSON".to_owned())?;
        parse(&body).ok_or_else(|| "answered no embedding".to_owned())
    }
    .await;
    match outcome {
        Ok(vector) => Some(vector),
        Err(why) => {
            FAILURES.inc();
            tracing::warn!(endpoint = %url_origin(base), why, "memory embedding failed");
            None
        }
    }
}

/// `data[0].embedding` of an OpenAI-style answer: a non-empty array of finite numbers.
fn parse(body: &serde_json::Value) -> Option<Vec<f32>> {
    let values = body.get("data")?.get(0)?.get("embedding")?.as_array()?;
    if values.is_empty() || values.len() > MAX_DIMS {
        return None;
    }
    values
        .iter()
        .map(|v| v.as_f64().map(|f| f as f32).filter(|f| f.is_finite()))
        .collect()
}

/// Scheme, host and port of the endpoint, for logs (no path, query or userinfo).
fn url_origin(base: &str) -> String {
    reqwest::Url::parse(base)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_else(|_| "invalid url".to_owned())
}

/// The stored form of a vector: a JSON array of numbers (the `embedding` column is JSONB on
/// PostgreSQL and JSON text on SQLite).
pub fn encode(vector: &[f32]) -> String {
    serde_json::to_string(vector).unwrap_or_else(|_| "[]".to_owned())
}

/// A stored vector back; `None` for anything unreadable.
pub fn decode(text: &str) -> Option<Vec<f32>> {
    serde_json::from_str::<Vec<f32>>(text)
        .ok()
        .filter(|v| !v.is_empty())
}

/// Cosine similarity; `None` when the lengths differ or a vector is zero.
pub fn cosine(a: &[f32], b: &[f32]) -> Option<f32> {
    if a.len() != b.len() {
        return None;
    }
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        dot += f64::from(*x) * f64::from(*y);
        na += f64::from(*x) * f64::from(*x);
        nb += f64::from(*y) * f64::from(*y);
    }
    (na > 0.0 && nb > 0.0).then(|| (dot / (na.sqrt() * nb.sqrt())) as f32)
}

/// `candidates` (in full-text order, each with its stored vector if any) reordered for `query`:
/// the embedded ones by similarity, most similar first (ties keep full-text order), then the
/// unembedded ones (or ones of another dimension) in their full-text order.
pub fn order<T>(query: &[f32], candidates: Vec<(T, Option<Vec<f32>>)>) -> Vec<T> {
    let mut scored = Vec::new();
    let mut rest = Vec::new();
    for (item, vector) in candidates {
        match vector.as_deref().and_then(|v| cosine(query, v)) {
            Some(score) => scored.push((score, item)),
            None => rest.push(item),
        }
    }
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored
        .into_iter()
        .map(|(_, item)| item)
        .chain(rest)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similar_first_then_unembedded_in_their_order() {
        let q = [1.0, 0.0];
        let ranked = order(
            &q,
            vec![
                ("far", Some(vec![0.0, 1.0])),
                ("none", None),
                ("near", Some(vec![1.0, 0.1])),
                ("odd", Some(vec![1.0])),
            ],
        );
        assert_eq!(ranked, ["near", "far", "none", "odd"]);
    }

    #[test]
    fn vectors_round_trip_and_bad_answers_are_none() {
        let v = vec![0.5, -1.25, 3.0];
        assert_eq!(decode(&encode(&v)), Some(v));
        assert_eq!(decode("not json"), None);
        assert_eq!(decode("[]"), None);
        let ok = serde_json::json!({"data": [{"embedding": [1, 2.5]}]});
        assert_eq!(parse(&ok), Some(vec![1.0, 2.5]));
        assert_eq!(parse(&serde_json::json!({"data": []})), None);
        assert_eq!(
            parse(&serde_json::json!({"data": [{"embedding": ["x"]}]})),
            None
        );
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), None);
    }

    #[test]
    fn the_log_names_only_the_origin() {
        assert_eq!(
            url_origin("http://user:pw@127.0.0.1:9/v1?k=s"),
            "http://127.0.0.1:9"
        );
    }
}
