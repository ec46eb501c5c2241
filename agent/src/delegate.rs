//! The delegation directive of the echo brain: a message of the form
//!
//! ```text
//! delegate <workspace-id>: <task>
//! ```
//!
//! is not echoed; the agent hands `<task>` to that workspace through the host's MCP endpoint
//! (`delegate_task`, with its own token) and replies `delegated to <workspace-id>: <answer>`.
//! Other brains decide for themselves when to delegate.

use uuid::Uuid;

/// A parsed directive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub target: Uuid,
    pub task: String,
}

impl Directive {
    /// `Some` when `text` (trimmed) starts with `delegate <uuid>:` followed by a task.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let (word, rest) = text.split_once(char::is_whitespace)?;
        if !word.eq_ignore_ascii_case("delegate") {
            return None;
        }
        let (target, task) = rest.trim_start().split_once(':')?;
        let target = Uuid::parse_str(target.trim()).ok()?;
        let task = task.trim();
        (!task.is_empty()).then(|| Self {
            target,
            task: task.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_well_formed_directive_is_one() {
        let id = Uuid::new_v4();
        assert_eq!(
            Directive::parse(&format!("  Delegate {id}: summarise the report ")),
            Some(Directive {
                target: id,
                task: "summarise the report".into()
            })
        );
        assert_eq!(
            Directive::parse(&format!("delegate {id}:a: b")).map(|d| d.task),
            Some("a: b".into())
        );
        for not in [
            "hello".to_owned(),
            format!("delegate {id}"),
            format!("delegate {id}:   "),
            "delegate not-a-uuid: x".to_owned(),
            format!("please delegate {id}: x"),
        ] {
            assert_eq!(Directive::parse(&not), None, "{not}");
        }
    }
}
