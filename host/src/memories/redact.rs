//! Redaction of secret-looking values from memory content, before it is stored.
//!
//! What the original learned to remove: environment assignments of `*_KEY`, `*_TOKEN`,
//! `*_SECRET` and `*PASSWORD` names, `Bearer` values, `sk-…` API keys, and long high-entropy
//! blobs (40+ characters of token alphabet with more than 4 bits of entropy per character and
//! both letters and digits). Each is replaced by `[REDACTED]`; the count is what the API reports.

use std::sync::LazyLock;

use regex::Regex;

pub const MARK: &str = "[REDACTED]";

static ASSIGNMENT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)\b([A-Z0-9_]*(?:_KEY|_TOKEN|_SECRET|PASSWORD|PASSWD))(\s*[=:]\s*)("[^"\n]*"|'[^'\n]*'|[^\s"']+)"#,
    )
    .expect("a valid pattern")
});
static BEARER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=\-]{8,}").expect("a valid pattern")
});
static SK_KEY: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\bsk-[A-Za-z0-9_\-]{16,}").expect("a valid pattern"));
static BLOB: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[A-Za-z0-9+/=_\-]{40,}").expect("a valid pattern"));

/// Shannon entropy of `s` in bits per character.
fn entropy(s: &str) -> f64 {
    let mut counts = [0u32; 256];
    for b in s.bytes() {
        counts[b as usize] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

fn looks_random(s: &str) -> bool {
    s.bytes().any(|b| b.is_ascii_digit())
        && s.bytes().any(|b| b.is_ascii_alphabetic())
        && entropy(s) > 4.0
}

/// `content` with secret-looking values replaced by [`MARK`], and how many were replaced.
pub fn redact(content: &str) -> (String, usize) {
    let mut count = 0;
    let text = ASSIGNMENT.replace_all(content, |c: &regex::Captures| {
        if &c[3] == MARK {
            return c[0].to_owned();
        }
        count += 1;
        format!("{}{}{MARK}", &c[1], &c[2])
    });
    let text = BEARER.replace_all(&text, |c: &regex::Captures| {
        count += 1;
        format!("{} {MARK}", &c[1])
    });
    let text = SK_KEY.replace_all(&text, |_: &regex::Captures| {
        count += 1;
        MARK.to_owned()
    });
    let text = BLOB.replace_all(&text, |c: &regex::Captures| {
        if looks_random(&c[0]) {
            count += 1;
            MARK.to_owned()
        } else {
            c[0].to_owned()
        }
    });
    (text.into_owned(), count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_of_each_kind_are_redacted_and_counted() {
        let (text, n) = redact(
            "OPENAI_API_KEY=abc123secret and GITHUB_TOKEN: \"ghp value\" db_password='hunter2' \
             Authorization: Bearer eyJhbGciOi.J9xyz123 then sk-proj-ABCDEFGHIJKLMNOPqrstu \
             blob Zx8Qp2Lw9Vb4Nc7Mk1Jh6Gf3Ds5Ae0RtYuIoPaSdFgHjKl done",
        );
        for secret in [
            "abc123secret",
            "ghp value",
            "hunter2",
            "eyJhbGciOi",
            "sk-proj",
            "Zx8Qp2Lw9V",
        ] {
            assert!(!text.contains(secret), "{secret} left in: {text}");
        }
        assert_eq!(n, 6, "{text}");
        assert!(text.starts_with("OPENAI_API_KEY=[REDACTED] and GITHUB_TOKEN: [REDACTED]"));
        assert!(text.contains("Bearer [REDACTED]"), "{text}");
    }

    #[test]
    fn ordinary_text_is_left_alone() {
        let plain = "The deploy key rotation runs on Mondays; see https://example.com/docs/a-long-but-plain-path-name-here and KEY=value";
        assert_eq!(redact(plain), (plain.to_owned(), 0));
        // Already redacted text is not counted again.
        assert_eq!(redact("API_KEY=[REDACTED]").1, 0);
    }
}
