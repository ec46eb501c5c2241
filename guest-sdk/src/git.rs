//! Helpers for git-based resolvers: turning `github://` and `git://` locations into clone URLs,
//! and a wanted ref into the exact commit the remote advertises for it.

use crate::types::{FetchError, RemoteRef, Source};

/// A repository named by a source location.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GitRepo {
    /// The HTTPS clone URL the host fetches from, e.g. `https://github.com/acme/tools.git`.
    pub url: String,
    /// The repository name without `.git`, e.g. `tools`: the plugin name when the tree does not
    /// declare one.
    pub name: String,
    /// A directory inside the repository to take instead of the whole tree.
    pub subdir: Option<String>,
}

/// Parses a `github://` location: `owner/repo`, optionally followed by `/path/in/repo` to take
/// only that directory.
///
/// ```
/// let repo = molecule_guest::git::parse_github_spec("acme/tools").unwrap();
/// assert_eq!(repo.url, "https://github.com/acme/tools.git");
/// assert_eq!(repo.name, "tools");
/// ```
pub fn parse_github_spec(location: &str) -> Result<GitRepo, FetchError> {
    let segments = path_segments(location, "github://owner/repo")?;
    let [owner, repo, rest @ ..] = segments.as_slice() else {
        return Err(invalid(format!(
            "`{location}` is not of the form owner/repo"
        )));
    };
    let repo = repo.strip_suffix(".git").unwrap_or(repo);
    if repo.is_empty() {
        return Err(invalid(format!(
            "`{location}` has an empty repository name"
        )));
    }
    Ok(GitRepo {
        url: format!("https://github.com/{owner}/{repo}.git"),
        name: repo.to_owned(),
        subdir: (!rest.is_empty()).then(|| rest.join("/")),
    })
}

/// Parses a `git://` location: `host[:port]/path/to/repo`, fetched over HTTPS. The path has at
/// least two segments (`owner/repo`); deeper paths (`group/subgroup/repo`) name the repository.
///
/// ```
/// let repo = molecule_guest::git::parse_git_spec("git.example.com/team/tools").unwrap();
/// assert_eq!(repo.url, "https://git.example.com/team/tools.git");
/// ```
pub fn parse_git_spec(location: &str) -> Result<GitRepo, FetchError> {
    let (host, path) = location
        .split_once('/')
        .ok_or_else(|| invalid(format!("`{location}` is not of the form host/owner/repo")))?;
    if host.contains('@') {
        return Err(invalid(
            "credentials do not belong in a source: the host attaches them to the request",
        ));
    }
    validate_host(host)?;
    let segments = path_segments(path, "git://host/owner/repo")?;
    if segments.len() < 2 {
        return Err(invalid(format!(
            "`{location}` is not of the form host/owner/repo"
        )));
    }
    let last = segments[segments.len() - 1];
    let name = last.strip_suffix(".git").unwrap_or(last);
    if name.is_empty() {
        return Err(invalid(format!(
            "`{location}` has an empty repository name"
        )));
    }
    let parents = segments[..segments.len() - 1].join("/");
    Ok(GitRepo {
        url: format!("https://{host}/{parents}/{name}.git"),
        name: name.to_owned(),
        subdir: None,
    })
}

/// The pinned reference of `source`, or `Denied` when there is none. The host passes `HEAD`
/// when the operator allows unpinned sources, so a resolver never decides that itself.
pub fn required_reference(source: &Source) -> Result<&str, FetchError> {
    let reference = source
        .reference
        .as_deref()
        .filter(|r| !r.is_empty())
        .ok_or_else(|| {
            FetchError::Denied(format!(
                "a pinned ref is required: use {}://{}#<tag, branch or commit sha>",
                source.scheme, source.location
            ))
        })?;
    validate_reference(reference)?;
    Ok(reference)
}

/// Whether `s` is a full commit id: 40 hex digits (SHA-1) or 64 (SHA-256 repositories).
pub fn is_full_sha(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The commit that `wanted` names among the refs a remote advertises.
///
/// A full sha is taken as it is (lowercased). Otherwise the names are tried in git's own order:
/// `HEAD`, then `wanted` itself if it starts with `refs/`, `refs/tags/<wanted>`,
/// `refs/heads/<wanted>`. For an annotated tag the peeled `^{}` entry wins, so the answer is
/// always the commit, never the tag object.
pub fn pick_revision(refs: &[RemoteRef], wanted: &str) -> Result<String, FetchError> {
    if is_full_sha(wanted) {
        return Ok(wanted.to_ascii_lowercase());
    }
    let candidates = if wanted == "HEAD" || wanted.starts_with("refs/") {
        vec![wanted.to_owned()]
    } else {
        vec![
            format!("refs/tags/{wanted}"),
            format!("refs/heads/{wanted}"),
        ]
    };
    for name in &candidates {
        let peeled = format!("{name}^{{}}");
        let found = refs
            .iter()
            .find(|r| r.name == peeled)
            .or_else(|| refs.iter().find(|r| &r.name == name));
        if let Some(found) = found {
            if !is_full_sha(&found.revision) {
                return Err(FetchError::Upstream(format!(
                    "the remote advertised `{}` for {name}, which is not a commit id",
                    found.revision
                )));
            }
            return Ok(found.revision.to_ascii_lowercase());
        }
    }
    Err(FetchError::NotFound(format!(
        "no tag or branch named `{wanted}` (a commit must be given as its full 40-hex sha)"
    )))
}

/// Refuses references git would read as an option or a range, and anything outside the
/// characters ref names use in practice.
fn validate_reference(reference: &str) -> Result<(), FetchError> {
    let ok = reference.len() <= 255
        && !reference.starts_with('-')
        && !reference.contains("..")
        && reference
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'/' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!("`{reference}` is not a valid git ref")))
    }
}

fn validate_host(host: &str) -> Result<(), FetchError> {
    let (name, port) = match host.split_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 253
        && !name.starts_with(['-', '.'])
        && !name.ends_with(['-', '.'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p != 0));
    if name_ok && port_ok {
        Ok(())
    } else {
        Err(invalid(format!("`{host}` is not a valid host name")))
    }
}

/// Splits a `/`-separated path into segments, refusing empty, `.`-only and option-like ones.
fn path_segments<'a>(path: &'a str, form: &str) -> Result<Vec<&'a str>, FetchError> {
    let segments: Vec<&str> = path.split('/').collect();
    for segment in &segments {
        let ok = !segment.is_empty()
            && !segment.starts_with('-')
            && segment.bytes().any(|b| b != b'.')
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !ok {
            return Err(invalid(format!("`{path}` is not of the form {form}")));
        }
    }
    Ok(segments)
}

fn invalid(message: impl Into<String>) -> FetchError {
    FetchError::InvalidSource(message.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const SHA_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const SHA_C: &str = "cccccccccccccccccccccccccccccccccccccccc";
    const SHA_D: &str = "dddddddddddddddddddddddddddddddddddddddd";

    fn refs() -> Vec<RemoteRef> {
        vec![
            RemoteRef::new("HEAD", SHA_A),
            RemoteRef::new("refs/heads/main", SHA_A),
            RemoteRef::new("refs/heads/v1", SHA_B),
            RemoteRef::new("refs/tags/v1", SHA_C),
            RemoteRef::new("refs/tags/v1^{}", SHA_D),
            RemoteRef::new("refs/tags/light", SHA_B),
        ]
    }

    #[test]
    fn github_spec_becomes_an_https_clone_url() {
        let repo = parse_github_spec("acme/tools").unwrap();
        assert_eq!(
            repo,
            GitRepo {
                url: "https://github.com/acme/tools.git".into(),
                name: "tools".into(),
                subdir: None
            }
        );
        assert_eq!(
            parse_github_spec("acme/tools.git").unwrap().url,
            "https://github.com/acme/tools.git"
        );
    }

    #[test]
    fn github_spec_with_a_path_takes_that_directory() {
        let repo = parse_github_spec("acme/monorepo/plugins/review").unwrap();
        assert_eq!(repo.url, "https://github.com/acme/monorepo.git");
        assert_eq!(repo.name, "monorepo");
        assert_eq!(repo.subdir.as_deref(), Some("plugins/review"));
    }

    #[test]
    fn malformed_github_specs_are_invalid_sources() {
        for bad in [
            "",
            "acme",
            "acme/",
            "/tools",
            "acme//tools",
            "acme/..",
            "../etc/passwd",
            "acme/tools/../x",
            "acme/-x",
            "acme/to ols",
            "acme/.git",
        ] {
            assert!(
                matches!(parse_github_spec(bad), Err(FetchError::InvalidSource(_))),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn git_spec_keeps_host_port_and_nested_groups() {
        let repo = parse_git_spec("git.example.com:8443/group/sub/tools.git").unwrap();
        assert_eq!(repo.url, "https://git.example.com:8443/group/sub/tools.git");
        assert_eq!(repo.name, "tools");
        assert_eq!(
            parse_git_spec("example.org/a/b").unwrap().url,
            "https://example.org/a/b.git"
        );
    }

    #[test]
    fn git_spec_refuses_credentials_and_bad_hosts() {
        for bad in [
            "user:token@example.org/a/b",
            "example.org/a",
            "example.org",
            "-x.org/a/b",
            "example.org:0/a/b",
            "example.org:99999/a/b",
            "exa mple.org/a/b",
            "example.org/a/../b",
        ] {
            assert!(
                matches!(parse_git_spec(bad), Err(FetchError::InvalidSource(_))),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn a_missing_reference_is_denied_with_the_fix_in_the_message() {
        let err = required_reference(&Source::new("github", "acme/tools", None)).unwrap_err();
        let FetchError::Denied(message) = err else {
            panic!("expected denied, got {err:?}")
        };
        assert!(message.contains("a pinned ref is required"), "{message}");
        assert!(message.contains("github://acme/tools#"), "{message}");
        assert!(required_reference(&Source::new("github", "acme/tools", Some(""))).is_err());
    }

    #[test]
    fn option_like_or_range_references_are_invalid() {
        for bad in ["--upload-pack=evil", "a..b", "v1 2", "v1;rm"] {
            assert!(
                matches!(
                    required_reference(&Source::new("git", "h/a/b", Some(bad))),
                    Err(FetchError::InvalidSource(_))
                ),
                "{bad:?} should be refused"
            );
        }
        assert_eq!(
            required_reference(&Source::new("git", "h/a/b", Some("release/1.2"))).unwrap(),
            "release/1.2"
        );
    }

    #[test]
    fn a_full_sha_is_taken_as_is() {
        let upper = SHA_B.to_ascii_uppercase();
        assert_eq!(pick_revision(&[], &upper).unwrap(), SHA_B);
        assert!(is_full_sha(&"0".repeat(64)));
        assert!(!is_full_sha("abc1234"));
    }

    #[test]
    fn tags_win_over_branches_and_annotated_tags_are_peeled() {
        assert_eq!(pick_revision(&refs(), "v1").unwrap(), SHA_D);
        assert_eq!(pick_revision(&refs(), "light").unwrap(), SHA_B);
        assert_eq!(pick_revision(&refs(), "main").unwrap(), SHA_A);
        assert_eq!(pick_revision(&refs(), "refs/heads/v1").unwrap(), SHA_B);
        assert_eq!(pick_revision(&refs(), "HEAD").unwrap(), SHA_A);
    }

    #[test]
    fn unknown_refs_and_short_shas_are_not_found() {
        for wanted in ["v2", "abc1234", "heads/main"] {
            assert!(
                matches!(pick_revision(&refs(), wanted), Err(FetchError::NotFound(_))),
                "{wanted}"
            );
        }
    }

    #[test]
    fn a_ref_pointing_at_garbage_is_an_upstream_error() {
        let refs = [RemoteRef::new("refs/tags/v1", "not-a-sha")];
        assert!(matches!(
            pick_revision(&refs, "v1"),
            Err(FetchError::Upstream(_))
        ));
    }
}
