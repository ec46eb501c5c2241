//! The directives of the echo brain. A message of the form
//!
//! ```text
//! delegate <workspace-id>: <task>
//! ```
//!
//! is not echoed; the agent hands `<task>` to that workspace through the host's MCP endpoint
//! (`delegate_task`, with its own token) and replies `delegated to <workspace-id>: <answer>`.
//! A message of the form
//!
//! ```text
//! tool <name> <JSON object of arguments>
//! ```
//!
//! calls that MCP tool of the host the same way and replies `tool <name>: <answer>`: the way a
//! test drives an agent to remember, recall, ask for approval or read its instructions.
//! Other brains decide for themselves when to delegate or call a tool.

use serde_json::{Map, Value};
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

/// A parsed `tool` directive.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub name: String,
    pub arguments: Value,
}

impl ToolCall {
    /// `Some` when `text` (trimmed) is `tool <name>` followed by a JSON object (or nothing, for a
    /// tool without arguments).
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let (word, rest) = text.split_once(char::is_whitespace)?;
        if !word.eq_ignore_ascii_case("tool") {
            return None;
        }
        let rest = rest.trim_start();
        let (name, arguments) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        let valid_name = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid_name {
            return None;
        }
        let arguments = match arguments.trim() {
            "" => Value::Object(Map::new()),
            json => match serde_json::from_str(json).ok()? {
                object @ Value::Object(_) => object,
                _ => return None,
            },
        };
        Some(Self {
            name: name.to_owned(),
            arguments,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_well_formed_tool_call_is_one() {
        assert_eq!(
            ToolCall::parse(r#" tool commit_memory {"content": "a b", "scope": "LOCAL"} "#),
            Some(ToolCall {
                name: "commit_memory".into(),
                arguments: serde_json::json!({"content": "a b", "scope": "LOCAL"}),
            })
        );
        assert_eq!(
            ToolCall::parse("TOOL get_instructions").map(|c| c.arguments),
            Some(serde_json::json!({}))
        );
        for not in [
            "tool",
            "tool  ",
            "tool a/b {}",
            "tool x [1]",
            "tool x {not json",
            "tools x {}",
        ] {
            assert_eq!(ToolCall::parse(not), None, "{not}");
        }
    }

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
