//! Tests of the remote checks, git's summarised reasons and credential redaction.

use super::*;

fn hosts(h: &[&str]) -> Vec<String> {
    h.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn gits_reason_is_kept_without_its_labels_or_the_rewritten_url() {
    assert_eq!(
        summarise(
            "hint: ignored\nfatal: unable to access 'https://mirror.internal/acme/x.git/': \
             Could not resolve host: mirror.internal\n"
        ),
        "Could not resolve host: mirror.internal"
    );
    assert_eq!(
        summarise(
            "fatal: '/srv/git/acme/x.git' does not appear to be a git repository\n\
             fatal: Could not read from remote repository.\n"
        ),
        "'/srv/git/acme/x.git' does not appear to be a git repository / \
         Could not read from remote repository."
    );
    assert_eq!(
        summarise("warning: odd\nsomething else\n"),
        "warning: odd / something else"
    );
    assert_eq!(summarise(""), "git gave no reason");
}

#[test]
fn only_plain_https_urls_of_granted_hosts_are_admitted() {
    let granted = hosts(&["git.test", "Example.org:8443"]);
    assert_eq!(
        admit(&granted, "https://git.test/acme/tools.git")
            .unwrap()
            .authority,
        "git.test"
    );
    assert_eq!(
        admit(&granted, "https://GIT.test:443/a/b.git")
            .unwrap()
            .authority,
        "git.test"
    );
    assert!(admit(&granted, "https://example.org:8443/a/b.git").is_ok());
    for url in [
        "http://git.test/a/b.git",
        "file:///etc/passwd",
        "ssh://git.test/a/b.git",
        "git.test/a/b.git",
        "https://user:pw@git.test/a/b.git",
        "https://git.test@evil.test/a/b.git",
        "https://evil.test/a/b.git",
        "https://example.org/a/b.git",
        "https://git.test.evil.test/a.git",
        "https://git.test/a/../../b.git",
        "https://git.test/a b.git",
        "https://git.test/a.git?x=1",
        "https://git.test",
        "https://-x/a.git",
    ] {
        assert!(
            matches!(admit(&granted, url), Err(FetchError::Denied(_))),
            "{url}"
        );
    }
}

#[test]
fn subdirectories_are_plain_relative_paths() {
    for ok in ["plugins/review", "a", "a.b/c_d-e"] {
        assert!(validate_subdir(ok).is_ok(), "{ok}");
    }
    for bad in [
        "", "/etc", "a/../b", "..", ".", "a//b", ".git", "a/.GIT/x", "-x", "a:b", "a b",
    ] {
        assert!(validate_subdir(bad).is_err(), "{bad}");
    }
}

#[test]
fn tree_listings_are_checked_before_anything_is_written() {
    let quotas = FetchQuotas {
        max_bytes: 100,
        max_files: 2,
        max_depth: 3,
    };
    let entry = |mode: &str, kind: &str, size: &str, path: &str| {
        format!("{mode} {kind} {} {size:>7}\t{path}\0", "a".repeat(40))
    };
    let ok = [
        entry("040000", "tree", "-", "a"),
        entry("100644", "blob", "10", "a/b.txt"),
        entry("100755", "blob", "20", "run.sh"),
    ]
    .concat();
    assert_eq!(check_listing(ok.as_bytes(), &quotas), Ok(()));
    let too_many = [ok.clone(), entry("100644", "blob", "1", "c")].concat();
    assert!(matches!(
        check_listing(too_many.as_bytes(), &quotas),
        Err(FetchError::TooLarge(_))
    ));
    let too_big = entry("100644", "blob", "101", "big");
    assert!(matches!(
        check_listing(too_big.as_bytes(), &quotas),
        Err(FetchError::TooLarge(_))
    ));
    let too_deep = entry("100644", "blob", "1", "a/b/c/d");
    assert!(matches!(
        check_listing(too_deep.as_bytes(), &quotas),
        Err(FetchError::TooLarge(_))
    ));
    for (mode, kind) in [("120000", "blob"), ("160000", "commit")] {
        let listing = entry(mode, kind, "-", "link");
        assert!(matches!(
            check_listing(listing.as_bytes(), &quotas),
            Err(FetchError::Denied(_))
        ));
    }
}

#[test]
fn credentials_are_redacted_and_never_shown_by_debug() {
    let credentials = Credentials::new().with("git.test", "s3cr3t-t0ken");
    assert_eq!(
        credentials.redact("fatal: Authorization: Bearer s3cr3t-t0ken rejected"),
        "fatal: Authorization: Bearer [redacted] rejected"
    );
    let shown = format!("{credentials:?}");
    assert!(
        shown.contains("git.test") && !shown.contains("s3cr3t"),
        "{shown}"
    );
}
