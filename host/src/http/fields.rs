//! Reading fields out of a JSON object body, and the one 400/413 shape that names the refused
//! field, for handlers that validate field by field (so a wrong type is reported against its
//! field, not as a generic parse error).
//!
//! Messages are built from static text and field names only, never from the caller's input.

use axum::http::StatusCode;
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::error::{ApiError, ApiResult};
use crate::memory::FieldError;

/// A refused field: 400, or 413 when it is over its size limit.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct FieldErrorBody {
    error: String,
    /// The request field that was refused.
    field: &'static str,
}

/// A 400 naming `field`.
pub(super) fn field_error(field: &'static str, error: impl Into<String>) -> ApiError {
    FieldError::new(field, error).into()
}

impl From<FieldError> for ApiError {
    fn from(err: FieldError) -> Self {
        let status = if err.too_large {
            StatusCode::PAYLOAD_TOO_LARGE
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::body(
            status,
            FieldErrorBody {
                error: err.message,
                field: err.field,
            },
        )
    }
}

/// The body as a JSON object; anything else is a 400.
pub(super) fn object(body: Value) -> ApiResult<Map<String, Value>> {
    match body {
        Value::Object(map) => Ok(map),
        _ => Err(ApiError::bad_request("the body must be a JSON object")),
    }
}

/// A text field: absent or `null` is `None`; anything but a string is a 400 naming it.
pub(super) fn text<'a>(
    body: &'a Map<String, Value>,
    field: &'static str,
) -> ApiResult<Option<&'a str>> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(field_error(field, format!("{field} must be a string"))),
    }
}

/// A text field that must be there.
pub(super) fn required<'a>(
    body: &'a Map<String, Value>,
    field: &'static str,
) -> ApiResult<&'a str> {
    text(body, field)?.ok_or_else(|| field_error(field, format!("{field} is required")))
}

/// A text field, owned.
pub(super) fn owned_text(
    body: &Map<String, Value>,
    field: &'static str,
) -> ApiResult<Option<String>> {
    Ok(text(body, field)?.map(str::to_owned))
}

/// A boolean field: absent or `null` is `None`; anything but a boolean is a 400 naming it.
pub(super) fn flag(body: &Map<String, Value>, field: &'static str) -> ApiResult<Option<bool>> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(field_error(field, format!("{field} must be true or false"))),
    }
}

/// An integer field: absent or `null` is `None`; anything but an integer is a 400 naming it.
pub(super) fn integer(body: &Map<String, Value>, field: &'static str) -> ApiResult<Option<i64>> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| field_error(field, format!("{field} must be an integer"))),
    }
}
