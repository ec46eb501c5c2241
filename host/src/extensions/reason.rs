//! Remote words made fit for an error body. A resolver's error message is built from the
//! resolver's own text and git's stderr (through the host's `remote` side), both of which the
//! operator needs ("Could not resolve host: github.com") and neither of which the host controls.
//! Before such a message leaves the extension platform it is cut to one line of bounded length
//! with no control characters, the userinfo of any URL in it is dropped, and every local path
//! of the host (an absolute path, a `file://` URL) is replaced by `[local path]`. Credentials
//! are redacted before this by whoever holds them ([`super::remote::Credentials::redact`]).
//!
//! The guest's own mount points (`/dest`, `/registry`) are the guest's view, not the host's
//! filesystem, and are kept: "no plugin registry is granted (/registry is not preopened)" is a
//! useful reason.

use super::runtime::{DEST_MOUNT, REGISTRY_MOUNT};

/// Longest reason passed on (in characters).
pub const MAX_REASON_CHARS: usize = 300;

/// What stands in for a path of the host's filesystem.
pub const LOCAL_PATH: &str = "[local path]";

/// `text` as one line of at most [`MAX_REASON_CHARS`] characters, without control characters,
/// URL userinfo or local paths of the host.
pub fn public(text: &str) -> String {
    let one_line = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>();
    let words = one_line.split_whitespace().collect::<Vec<_>>().join(" ");
    let cleaned = without_local_paths(&without_userinfo(&words));
    if cleaned.chars().count() <= MAX_REASON_CHARS {
        return cleaned;
    }
    let mut cut: String = cleaned.chars().take(MAX_REASON_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// Drops `user[:password]@` after every `scheme://`.
fn without_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        // The authority ends at the first `/`, `?`, `#`, quote or space; userinfo is what comes
        // before its last `@`.
        let end = tail
            .find(|c: char| matches!(c, '/' | '?' | '#' | '\'' | '"' | '`') || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => out.push_str(&authority[at + 1..]),
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Characters that may stand right before a path (a path inside a URL follows `:` or a host
/// and is not one of these).
fn opens_path(previous: Option<char>) -> bool {
    match previous {
        None => true,
        Some(c) => c.is_whitespace() || matches!(c, '\'' | '"' | '`' | '(' | '[' | '<' | '=' | ','),
    }
}

/// Where a path that starts at the beginning of `text` ends.
fn path_len(text: &str) -> usize {
    text.find(|c: char| c.is_whitespace() || matches!(c, '\'' | '"' | '`' | ')' | ']' | '>' | ','))
        .unwrap_or(text.len())
}

/// Whether `path` lies under one of the guest's own mount points.
fn guest_path(path: &str) -> bool {
    [DEST_MOUNT, REGISTRY_MOUNT].iter().any(|mount| {
        path.strip_prefix(mount)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

/// Replaces `file://…` URLs and absolute paths (other than the guest's mounts) by
/// [`LOCAL_PATH`].
fn without_local_paths(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut previous: Option<char> = None;
    let mut index = 0;
    while index < text.len() {
        let rest = &text[index..];
        let starts_path = opens_path(previous)
            && (rest.starts_with('/')
                || rest
                    .get(..7)
                    .is_some_and(|s| s.eq_ignore_ascii_case("file://")));
        if starts_path {
            let len = path_len(rest);
            let path = &rest[..len];
            if guest_path(path) {
                out.push_str(path);
            } else {
                out.push_str(LOCAL_PATH);
            }
            previous = path.chars().last();
            index += len;
            continue;
        }
        let c = rest.chars().next().expect("index is below the length");
        out.push(c);
        previous = Some(c);
        index += c.len_utf8();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_git_failure_keeps_its_host_and_reason() {
        assert_eq!(
            public(
                "listing the refs of https://github.com/acme/x.git failed: Could not resolve host: github.com"
            ),
            "listing the refs of https://github.com/acme/x.git failed: Could not resolve host: github.com"
        );
    }

    #[test]
    fn local_paths_and_file_urls_are_hidden() {
        assert_eq!(
            public("'/tmp/.tmpA1/acme/missing.git' does not appear to be a git repository"),
            "'[local path]' does not appear to be a git repository"
        );
        assert_eq!(
            public("fetching file:///srv/mirror/acme/x.git failed (/var/lib/molecule/data)"),
            "fetching [local path] failed ([local path])"
        );
        assert_eq!(public("/root/secret"), LOCAL_PATH);
        // A URL's path is not a local path.
        assert_eq!(
            public("https://git.example.com/acme/x.git/info/refs"),
            "https://git.example.com/acme/x.git/info/refs"
        );
    }

    #[test]
    fn the_guests_own_mounts_are_kept() {
        assert_eq!(
            public("no plugin registry is granted (/registry is not preopened); wrote /dest/a"),
            "no plugin registry is granted (/registry is not preopened); wrote /dest/a"
        );
        assert_eq!(public("/destroyed/x"), LOCAL_PATH);
    }

    #[test]
    fn userinfo_is_dropped_from_urls() {
        assert_eq!(
            public("unable to access 'https://bot:ghp_s3cret@github.com/acme/x.git/': 403"),
            "unable to access 'https://github.com/acme/x.git/': 403"
        );
        assert_eq!(public("https://token@host"), "https://host");
    }

    #[test]
    fn control_characters_and_lines_become_one_line() {
        assert_eq!(
            public("fatal: first\n\rsecond\t\u{1b}[31mred\u{7}"),
            "fatal: first second [31mred"
        );
    }

    #[test]
    fn long_text_is_cut() {
        let long = "x".repeat(1000);
        let cut = public(&long);
        assert_eq!(cut.chars().count(), MAX_REASON_CHARS);
        assert!(cut.ends_with('…'));
        let wide = "é".repeat(400);
        assert_eq!(public(&wide).chars().count(), MAX_REASON_CHARS);
    }
}
