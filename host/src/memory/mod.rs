//! What agents keep and are told across restarts: the key-value memory of a workspace
//! ([`kv`]), the operator's platform instructions ([`instructions`]) and workflow checkpoints
//! ([`checkpoints`]).

pub mod checkpoints;
pub mod instructions;
pub mod kv;

/// A request field that was refused: which one and why (a 400, or a 413 when `too_large`).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
    /// The field is over its size limit (413 rather than 400).
    pub too_large: bool,
}

impl FieldError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        FieldError {
            field,
            message: message.into(),
            too_large: false,
        }
    }

    pub fn too_large(field: &'static str, message: impl Into<String>) -> Self {
        FieldError {
            field,
            message: message.into(),
            too_large: true,
        }
    }
}

/// A name a caller chooses (a key, a workflow id, a step name): non-empty, at most `max`
/// characters, no control characters (they would corrupt logs and the console).
pub fn check_name(field: &'static str, value: &str, max: usize) -> Result<(), FieldError> {
    if value.is_empty() {
        return Err(FieldError::new(field, format!("{field} must not be empty")));
    }
    if value.chars().count() > max {
        return Err(FieldError::new(
            field,
            format!("{field} is longer than {max} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            format!("{field} must not contain control characters"),
        ));
    }
    Ok(())
}
