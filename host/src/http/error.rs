//! The one error type of the HTTP edge and its single mapping to status codes and bodies.
//!
//! Messages are `&'static str`, so no error can echo user input back. A 5xx body only ever says
//! `internal error` (plus a code where the client must react); the cause goes to the log.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

use super::openapi::{ErrorBody, RateLimited};
use crate::auth::AuthError;
use crate::delegation::tasks::DelegationError;
use crate::store::StoreError;
use crate::workspaces::WorkspaceError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{1}")]
    Status(StatusCode, &'static str),
    /// A designed answer whose body carries more than a message (409 confirmation, 410 gone).
    /// Built only by [`ApiError::body`] from a typed DTO.
    #[error("structured error {0}")]
    Body(StatusCode, Value),
    #[error("rate limited")]
    RateLimited { retry_after_secs: u64 },
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn bad_request(message: &'static str) -> Self {
        ApiError::Status(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: &'static str) -> Self {
        ApiError::Status(StatusCode::NOT_FOUND, message)
    }
    pub fn forbidden(message: &'static str) -> Self {
        ApiError::Status(StatusCode::FORBIDDEN, message)
    }
    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        ApiError::Internal(err.into())
    }
    /// A designed answer whose body is a typed DTO. It is kept as a JSON value, so the one error
    /// type stays free of type parameters (and the keys go out sorted, as they always have).
    pub fn body(status: StatusCode, body: impl Serialize) -> Self {
        match serde_json::to_value(body) {
            Ok(value) => ApiError::Body(status, value),
            Err(err) => ApiError::internal(err),
        }
    }
}

/// The 503 answer when the token store cannot be reached: the client should retry.
#[derive(Debug, Serialize)]
struct Unavailable {
    error: &'static str,
    code: &'static str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Status(status, error) => {
                (status, axum::Json(ErrorBody::new(error))).into_response()
            }
            ApiError::Body(status, body) => (status, axum::Json(body)).into_response(),
            ApiError::RateLimited { retry_after_secs } => {
                let mut response = (
                    StatusCode::TOO_MANY_REQUESTS,
                    axum::Json(RateLimited {
                        error: "rate limit exceeded",
                        retry_after: retry_after_secs,
                    }),
                )
                    .into_response();
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
                response
            }
            ApiError::Internal(err) if storage_full(&err) => {
                tracing::error!(error = ?err, "request failed: the database's disk is full");
                (
                    StatusCode::INSUFFICIENT_STORAGE,
                    axum::Json(Unavailable {
                        error: "insufficient storage: the host's database volume is full",
                        code: "storage_full",
                    }),
                )
                    .into_response()
            }
            ApiError::Internal(err) => {
                tracing::error!(error = ?err, "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    axum::Json(ErrorBody::new("internal error")),
                )
                    .into_response()
            }
        }
    }
}

/// Whether the database refused a write for want of space: SQLite's `SQLITE_FULL` (13), which
/// it also answers when a write to its file or log fails with ENOSPC, or PostgreSQL's
/// `disk_full` (53100). The client is told (507), since nothing it retries helps until an
/// operator frees space; reads keep working meanwhile.
fn storage_full(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<sqlx::Error>(),
            Some(sqlx::Error::Database(db)) if matches!(db.code().as_deref(), Some("13" | "53100"))
        )
    })
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        ApiError::Internal(err.into())
    }
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        let status = StatusCode::UNAUTHORIZED;
        match err {
            AuthError::AdminRequired => ApiError::Status(status, "admin auth required"),
            AuthError::InvalidAdmin => ApiError::Status(status, "invalid admin auth token"),
            AuthError::MissingWorkspace => ApiError::Status(status, "missing workspace auth token"),
            AuthError::InvalidWorkspace => ApiError::Status(status, "invalid workspace auth token"),
            AuthError::Required => ApiError::Status(status, "auth required"),
            AuthError::Forbidden(message) => ApiError::forbidden(message),
            AuthError::Unavailable(cause) => {
                tracing::error!(error = ?cause, "auth check could not reach the database");
                ApiError::body(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Unavailable {
                        error: "platform datastore unavailable — retry shortly",
                        code: "platform_unavailable",
                    },
                )
            }
        }
    }
}

impl From<WorkspaceError> for ApiError {
    fn from(err: WorkspaceError) -> Self {
        match err {
            WorkspaceError::NotFound => ApiError::not_found("workspace not found"),
            WorkspaceError::Removed(row) => {
                ApiError::body(StatusCode::GONE, super::workspaces::WorkspaceGone::of(&row))
            }
            WorkspaceError::Invalid(message) => ApiError::bad_request(message),
            WorkspaceError::NameTaken => ApiError::Status(
                StatusCode::CONFLICT,
                "workspace name already in use under this parent",
            ),
            WorkspaceError::ParentNotFound => ApiError::bad_request("parent workspace not found"),
            WorkspaceError::Cycle => {
                ApiError::bad_request("parent_id would make the workspace its own ancestor")
            }
            WorkspaceError::Store(err) => err.into(),
        }
    }
}

impl From<DelegationError> for ApiError {
    fn from(err: DelegationError) -> Self {
        match err {
            DelegationError::SelfDelegation => {
                ApiError::bad_request("self-delegation not permitted")
            }
            DelegationError::Invalid(message) => ApiError::bad_request(message),
            DelegationError::TargetNotFound => ApiError::not_found("target workspace not found"),
            DelegationError::NotFound => ApiError::not_found("delegation not found"),
            DelegationError::AlreadyFinished => {
                ApiError::Status(StatusCode::CONFLICT, "delegation already finished")
            }
            DelegationError::Workspace(err) => err.into(),
            DelegationError::Store(err) => err.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use serde_json::{Value, json};

    use super::ApiError;
    use crate::agents::forward::TransportError;
    use crate::auth::AuthError;
    use crate::delegation::proxy::ProxyError;
    use crate::store::StoreError;

    /// The status and JSON body an error answers with.
    fn answer(err: impl Into<ApiError>) -> (StatusCode, Value) {
        match err.into() {
            ApiError::Body(status, body) => (status, body),
            other => panic!("not a structured answer: {other:?}"),
        }
    }

    /// The typed bodies serialise to exactly the maps the `json!` literals they replaced built
    /// (a `Value` map keeps its keys sorted, so equal values are equal bytes on the wire).
    #[test]
    fn structured_error_bodies_keep_their_shapes() {
        assert_eq!(
            answer(ProxyError::Restarting),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "error": "workspace agent is not running — container restart triggered", "restarting": true, "retry_after": 15 })
            )
        );
        assert_eq!(
            answer(ProxyError::Busy),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "error": "workspace agent busy — retry later", "busy": true, "retry_after": 30 })
            )
        );
        assert_eq!(
            answer(ProxyError::NoUrl {
                status: "offline".to_owned()
            }),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "error": "workspace has no URL", "status": "offline" })
            )
        );
        assert_eq!(
            answer(ProxyError::Unreachable(TransportError::Reset)),
            (
                StatusCode::BAD_GATEWAY,
                json!({ "error": "failed to reach workspace agent", "detail": "the agent reset the connection" })
            )
        );
        assert_eq!(
            answer(ProxyError::BudgetExceeded),
            (
                StatusCode::PAYMENT_REQUIRED,
                json!({ "error": "workspace budget limit exceeded" })
            )
        );
        assert_eq!(
            answer(AuthError::Unavailable(StoreError::Database(
                sqlx::Error::PoolTimedOut
            ))),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "error": "platform datastore unavailable — retry shortly", "code": "platform_unavailable" })
            )
        );
    }

    /// A write SQLite refuses for want of space (a database capped with `max_page_count` fails
    /// exactly as one on a full disk: `SQLITE_FULL`) answers 507 with a message and a code, not
    /// a bare 500; any other database error stays a 500.
    #[tokio::test]
    async fn a_full_database_answers_507_insufficient_storage() {
        use axum::response::IntoResponse as _;
        let pool = sqlx::SqlitePool::connect("sqlite::memory:")
            .await
            .expect("an in-memory database");
        sqlx::query("PRAGMA max_page_count = 8")
            .execute(&pool)
            .await
            .expect("capping the database");
        sqlx::query("CREATE TABLE t (b BLOB)")
            .execute(&pool)
            .await
            .expect("a table");
        let full = sqlx::query("INSERT INTO t VALUES (zeroblob(1000000))")
            .execute(&pool)
            .await
            .expect_err("the capped database is full");
        let response = ApiError::from(StoreError::from(full)).into_response();
        assert_eq!(response.status(), StatusCode::INSUFFICIENT_STORAGE);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("a body");
        let body: Value = serde_json::from_slice(&body).expect("a JSON body");
        assert_eq!(
            body,
            json!({ "error": "insufficient storage: the host's database volume is full", "code": "storage_full" })
        );
        let other = ApiError::from(StoreError::Database(sqlx::Error::PoolTimedOut));
        assert_eq!(
            other.into_response().status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
