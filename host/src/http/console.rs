//! The operator console: static HTML, CSS and JavaScript modules compiled into the binary and
//! served at `/` (the page) and under `/console/` (its assets).
//!
//! The files live in `host/console/` and are embedded with `include_bytes!` through one table,
//! so the binary is the whole deployment and there is no build step. The console talks only to
//! the public HTTP API and `/ws`, with the bearer the operator signs in with; serving it needs
//! no authentication because the files hold no data.

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest as _, Sha256};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::ApiError;
use super::openapi::ErrorBody;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(index))
        .routes(routes!(asset))
}

/// One embedded file.
struct Asset {
    bytes: &'static [u8],
    content_type: &'static str,
    /// A strong validator: the file's SHA-256, quoted.
    etag: HeaderValue,
}

/// Embeds `host/console/<name>` under its name with a content type.
macro_rules! assets {
    ($($name:literal => $type:expr),+ $(,)?) => {
        &[$(($name, include_bytes!(concat!("../../console/", $name)).as_slice(), $type)),+]
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the console. A file not listed here is not served.
const FILES: &[(&str, &[u8], &str)] = assets![
    "index.html" => "text/html; charset=utf-8",
    "style.css" => "text/css; charset=utf-8",
    "favicon.svg" => "image/svg+xml",
    "boot.js" => JS,
    "app.js" => JS,
    "api.js" => JS,
    "events.js" => JS,
    "dom.js" => JS,
    "router.js" => JS,
    "confirm.js" => JS,
    "approvals.js" => JS,
    "bundle.js" => JS,
    "pages/signin.js" => JS,
    "pages/tree.js" => JS,
    "pages/org-graph.js" => JS,
    "pages/org-actions.js" => JS,
    "pages/workspace.js" => JS,
    "pages/workspace-words.js" => JS,
    "pages/workspace-files.js" => JS,
    "pages/workspace-chat.js" => JS,
    "pages/workspace-delegations.js" => JS,
    "pages/workspace-schedules.js" => JS,
    "pages/workspace-budget.js" => JS,
    "pages/workspace-team.js" => JS,
    "pages/workspace-activity.js" => JS,
    "pages/workspace-logs.js" => JS,
    "pages/workspace-terminal.js" => JS,
    "pages/workspace-traces.js" => JS,
    "pages/workspace-audit.js" => JS,
    "pages/import.js" => JS,
    "pages/extensions.js" => JS,
    "pages/drift.js" => JS,
    "pages/plugin-track.js" => JS,
];

static ASSETS: LazyLock<HashMap<&'static str, Asset>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|(name, bytes, content_type)| {
            let digest = hex::encode(Sha256::digest(bytes));
            let etag = HeaderValue::from_str(&format!("\"{}\"", &digest[..32]))
                .expect("a hex digest is a valid header value");
            (
                *name,
                Asset {
                    bytes,
                    content_type,
                    etag,
                },
            )
        })
        .collect()
});

/// The console's page.
#[utoipa::path(
    get,
    path = "/",
    tag = "console",
    responses(
        (status = 200, description = "The console's HTML page", body = String, content_type = "text/html"),
        (status = 304, description = "Unchanged since the `If-None-Match` tag"),
    ),
)]
async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers).unwrap_or_else(IntoResponse::into_response)
}

/// One of the console's files (scripts, styles, icon).
#[utoipa::path(
    get,
    path = "/console/{*path}",
    tag = "console",
    params(("path" = String, Path, description = "The file's path, e.g. `app.js` or `pages/tree.js`")),
    responses(
        (status = 200, description = "The file, with its content type and ETag", content(
            (String = "text/javascript"),
            (String = "text/css"),
            (String = "image/svg+xml"),
            (String = "text/html"),
        )),
        (status = 304, description = "Unchanged since the `If-None-Match` tag"),
        (status = 404, description = "No such console file", body = ErrorBody),
    ),
)]
async fn asset(
    State(state): State<AppState>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    if state.svc.config.faults.console_file_unavailable.as_deref() == Some(path.as_str()) {
        return ApiError::Status(StatusCode::SERVICE_UNAVAILABLE, "console file unavailable")
            .into_response();
    }
    serve(&path, &headers).unwrap_or_else(IntoResponse::into_response)
}

fn serve(name: &str, request: &HeaderMap) -> Result<Response, ApiError> {
    let asset = ASSETS
        .get(name)
        .ok_or(ApiError::not_found("no such console file"))?;
    // File names carry no content hash, so browsers must revalidate every time; the ETag makes
    // that a 304 without a body when nothing changed.
    let cache = HeaderValue::from_static("no-cache");
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .is_some_and(|tags| tags.as_bytes() == asset.etag.as_bytes());
    if fresh {
        return Ok((
            StatusCode::NOT_MODIFIED,
            [
                (header::ETAG, asset.etag.clone()),
                (header::CACHE_CONTROL, cache),
            ],
        )
            .into_response());
    }
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            (header::ETAG, asset.etag.clone()),
            (header::CACHE_CONTROL, cache),
        ],
        asset.bytes,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_file_is_indexed_once_with_a_type() {
        assert_eq!(ASSETS.len(), FILES.len(), "a file is listed twice");
        for (name, asset) in ASSETS.iter() {
            assert!(!asset.bytes.is_empty(), "{name} is empty");
            assert!(asset.content_type.contains('/'), "{name}");
        }
    }

    #[test]
    fn the_page_only_loads_embedded_modules() {
        let page = std::str::from_utf8(ASSETS["index.html"].bytes).expect("utf-8");
        for src in page.split("src=\"").skip(1) {
            let src = src.split('"').next().unwrap_or_default();
            let name = src.strip_prefix("/console/").unwrap_or(src);
            assert!(ASSETS.contains_key(name), "{src} is not embedded");
        }
        assert!(!page.contains("<script>"), "inline scripts break the CSP");
    }
}
