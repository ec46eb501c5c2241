//! Extractors that parse and authorise at the edge, so handlers receive typed, checked values.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use utoipa::IntoParams;
use uuid::Uuid;

use super::AppState;
use super::error::ApiError;
use crate::auth::{Credentials, Principal};

/// A JSON body whose rejections are mapped to our error bodies (never axum's plain text, which
/// quotes the offending input).
///
/// Text containing U+0000 is refused here, once for every route: PostgreSQL cannot store it in
/// TEXT or JSONB while SQLite can, so letting it through would make the same request succeed on
/// one backend and fail with a 500 on the other. No field of this API has a use for it (secrets
/// become environment variables, which cannot hold it either).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    /// The body is parsed once, straight into `T` (not into a `Value` first and then into `T`,
    /// which built every body twice); NUL is found in the raw text, where JSON can only carry it
    /// escaped.
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !json_content_type(req.headers()) {
            return Err(ApiError::Status(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "expected Content-Type: application/json",
            ));
        }
        let bytes = match Bytes::from_request(req, state).await {
            Ok(bytes) => bytes,
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(ApiError::Status(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request body too large",
                ));
            }
            Err(_) => return Err(ApiError::bad_request("invalid request body")),
        };
        if escapes_nul(&bytes) {
            return Err(nul_rejection());
        }
        serde_json::from_slice(&bytes)
            .map(ApiJson)
            .map_err(|_| ApiError::bad_request("invalid request body"))
    }
}

/// `Content-Type: application/json`, or any `application/…+json`, as axum's `Json` accepts.
fn json_content_type(headers: &HeaderMap) -> bool {
    let Some(mime) = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
    else {
        return false;
    };
    let Some((kind, subtype)) = mime.trim().split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json")
            || subtype.len() > 5 && subtype[subtype.len() - 5..].eq_ignore_ascii_case("+json"))
}

/// Whether JSON text carries U+0000: in valid JSON it can only be the escape `\u0000` (a raw
/// control character is a syntax error), and an escaped backslash (`\\u0000`) is not one.
fn escapes_nul(json: &[u8]) -> bool {
    let mut at = 0;
    while let Some(found) = json[at..].iter().position(|b| *b == b'\\') {
        let escape = at + found;
        if json.get(escape + 1) == Some(&b'u') && json.get(escape + 2..escape + 6) == Some(b"0000")
        {
            return true;
        }
        at = escape + 2;
        if at >= json.len() {
            return false;
        }
    }
    false
}

/// Whether any string (or object key) in `value` contains U+0000.
pub fn contains_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(contains_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

/// The answer to text carrying U+0000, wherever it came in.
pub fn nul_rejection() -> ApiError {
    ApiError::bad_request("text must not contain NUL characters")
}

/// A query string whose rejections are mapped to our error bodies, like [`ApiJson`]; a NUL
/// (`%00`) is refused for the same reason.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if parts.uri.query().is_some_and(|q| q.contains("%00")) {
            return Err(nul_rejection());
        }
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(ApiQuery(value)),
            Err(_) => Err(ApiError::bad_request("invalid query string")),
        }
    }
}

/// Parses a workspace id from the `id` path segment (lowercase or uppercase UUID).
pub fn parse_workspace_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::bad_request("invalid workspace ID"))
}

/// The `{id}` path segment of workspace routes, as [`WorkspacePath`], [`WorkspaceAuth`] and
/// [`WorkspaceAccess`] read it (handlers name it in `params(...)`).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct WorkspaceIdParam {
    /// Workspace id (a UUID; anything else is a 400).
    #[param(value_type = Uuid)]
    id: String,
}

impl WorkspaceIdParam {
    /// The workspace id of the request's path.
    async fn read(parts: &mut Parts, state: &AppState) -> Result<Uuid, ApiError> {
        let Path(WorkspaceIdParam { id }) = Path::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::bad_request("invalid path"))?;
        parse_workspace_id(&id)
    }
}

/// What the request brings to be authenticated: its bearer, its `Origin` and whether its
/// connection came from loopback. Never fails; the guards decide.
#[derive(Debug, Clone)]
pub struct Creds(pub Credentials);

impl Creds {
    pub fn of(parts: &Parts) -> Credentials {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        Credentials::from_request(&parts.headers, peer)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Creds {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Creds(Creds::of(parts)))
    }
}

/// The `{id}` of a workspace route, after WorkspaceAuth for that workspace passed.
#[derive(Debug, Clone, Copy)]
pub struct WorkspaceAuth(pub Uuid);

impl FromRequestParts<AppState> for WorkspaceAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(WorkspaceAuth(
            WorkspaceAccess::from_request_parts(parts, state).await?.id,
        ))
    }
}

/// [`WorkspaceAuth`] that also says who passed: the operator, or the workspace itself (whose
/// token may do less on some routes).
#[derive(Debug, Clone, Copy)]
pub struct WorkspaceAccess {
    pub id: Uuid,
    pub principal: Principal,
}

impl FromRequestParts<AppState> for WorkspaceAccess {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let id = WorkspaceIdParam::read(parts, state).await?;
        let principal = state.svc.guard.workspace(&Creds::of(parts), id).await?;
        Ok(WorkspaceAccess { id, principal })
    }
}

/// The `{id}` of a workspace route without any auth (open routes and "self" checks).
#[derive(Debug, Clone, Copy)]
pub struct WorkspacePath(pub Uuid);

impl FromRequestParts<AppState> for WorkspacePath {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(WorkspacePath(WorkspaceIdParam::read(parts, state).await?))
    }
}

/// Proof that AdminAuth passed.
#[derive(Debug, Clone, Copy)]
pub struct AdminAuth;

impl FromRequestParts<AppState> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        state.svc.guard.admin(&Creds::of(parts)).await?;
        Ok(AdminAuth)
    }
}

/// Proof that the canvas check passed: the operator's token (or, in development on loopback,
/// an allowed browser `Origin`).
#[derive(Debug, Clone, Copy)]
pub struct CanvasAuth;

impl FromRequestParts<AppState> for CanvasAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        state.svc.guard.canvas(&Creds::of(parts)).await?;
        Ok(CanvasAuth)
    }
}

/// Proof that some live credential was presented (the operator's or any workspace's).
#[derive(Debug, Clone, Copy)]
pub struct AnyAuth;

impl FromRequestParts<AppState> for AnyAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        state.svc.guard.any(&Creds::of(parts)).await?;
        Ok(AnyAuth)
    }
}

/// The optional `X-Workspace-ID` of an agent calling on its own behalf.
#[derive(Debug, Clone, Copy)]
pub enum Caller {
    /// No header: the canvas or an operator.
    Canvas,
    Workspace(Uuid),
}

/// Caller ids with these prefixes belong to the host itself and are refused from outside.
const RESERVED_CALLER_PREFIXES: &[&str] = &["webhook:", "system:", "test:", "channel:"];

impl Caller {
    /// The caller named by `X-Workspace-ID`, if any.
    pub fn from_headers(headers: &HeaderMap) -> Result<Caller, ApiError> {
        let Some(raw) = headers.get("x-workspace-id") else {
            return Ok(Caller::Canvas);
        };
        let raw = raw
            .to_str()
            .map_err(|_| ApiError::bad_request("invalid X-Workspace-ID"))?
            .trim();
        if RESERVED_CALLER_PREFIXES.iter().any(|p| raw.starts_with(p)) {
            return Err(ApiError::forbidden("reserved caller id"));
        }
        Uuid::parse_str(raw)
            .map(Caller::Workspace)
            .map_err(|_| ApiError::bad_request("invalid X-Workspace-ID"))
    }
}

/// `X-Workspace-ID`: the workspace an agent calls on behalf of.
#[derive(Debug, Clone, Copy, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct CallerHeader {
    /// The calling workspace's id; ids of the host's own callers (`system:` ...) are refused.
    #[param(rename = "X-Workspace-ID", value_type = Option<Uuid>)]
    pub caller: Caller,
}

impl<S: Send + Sync> FromRequestParts<S> for CallerHeader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(CallerHeader {
            caller: Caller::from_headers(&parts.headers)?,
        })
    }
}

/// The workspace an agent-facing request acts for: `X-Workspace-ID` (whose own token, or the
/// operator's, must come with it; the workspace must be live), else the workspace whose token is
/// the bearer; `None` when neither names one (the canvas or the operator). A removed workspace is
/// never a caller, whatever credential comes with its id.
pub async fn calling_workspace(
    state: &AppState,
    caller: &Caller,
    creds: &Credentials,
) -> Result<Option<Uuid>, ApiError> {
    match caller {
        Caller::Workspace(id) => {
            state.svc.guard.agent(creds, *id).await?;
            // From the routing table: this runs on every A2A call.
            match crate::workspaces::get_live_routed(&state.svc, *id).await {
                Ok(_) => Ok(Some(*id)),
                Err(crate::workspaces::WorkspaceError::NotFound)
                | Err(crate::workspaces::WorkspaceError::Removed(_)) => Err(ApiError::forbidden(
                    "the calling workspace does not exist or was removed",
                )),
                Err(err) => Err(err.into()),
            }
        }
        Caller::Canvas => match state.svc.guard.bearer_principal(creds).await? {
            Some(Principal::Workspace(id)) => Ok(Some(id)),
            Some(Principal::Admin) | None => Ok(None),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_is_found_only_as_an_escape_of_its_own() {
        assert!(escapes_nul(br#"{"a":"x\u0000y"}"#));
        assert!(escapes_nul(br#"{"a\u0000":1}"#));
        assert!(escapes_nul(br#"["\\\u0000"]"#));
        // An escaped backslash followed by text, other escapes, and a trailing backslash.
        assert!(!escapes_nul(br#"{"a":"\\u0000"}"#));
        assert!(!escapes_nul(br#"{"a":"\u0001\n\"u0000"}"#));
        assert!(!escapes_nul(br"\"));
        assert!(!escapes_nul(b""));
    }

    #[test]
    fn json_content_types_are_recognised() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(
                axum::http::header::CONTENT_TYPE,
                value.parse().expect("a header value"),
            );
            json_content_type(&headers)
        };
        for good in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/vnd.api+json",
        ] {
            assert!(with(good), "{good}");
        }
        for bad in [
            "text/plain",
            "application/jsonx",
            "application/+jso",
            "json",
            "",
        ] {
            assert!(!with(bad), "{bad}");
        }
        assert!(!json_content_type(&HeaderMap::new()));
    }
}
