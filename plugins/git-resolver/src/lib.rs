//! The `github` and `git` resolver. `github://owner/repo#ref` is fetched from
//! `https://github.com/owner/repo.git`, `git://host/owner/repo#ref` from
//! `https://host/owner/repo.git`. The ref (tag, branch or full commit sha) is required; it is
//! resolved to a commit with the host's `list-refs`, and the host checks that commit out into
//! `/dest`. The guest never opens a socket or sees a credential: the host checks the URL
//! against this extension's granted hosts and attaches credentials itself.

use std::path::Path;

use molecule_guest::git::{
    GitRepo, is_full_sha, parse_git_spec, parse_github_spec, pick_revision, required_reference,
};
use molecule_guest::tree::declared_name;
use molecule_guest::{DEST, FetchError, Fetched, RemoteRef, Resolver, Source, log, remote};

/// Exported as the component's `schemes`, `fetch` and `resolve-revision`.
#[derive(Debug)]
pub struct GitResolver;

impl Resolver for GitResolver {
    fn schemes() -> &'static [&'static str] {
        &["github", "git"]
    }

    fn fetch(source: &Source) -> Result<Fetched, FetchError> {
        let fetched = fetch(&HostRemote, Path::new(DEST), source)?;
        log::info(format!(
            "fetched {source} as {} at {}",
            fetched.name, fetched.revision
        ));
        Ok(fetched)
    }

    fn resolve_revision(source: &Source) -> Result<String, FetchError> {
        let (repo, reference) = target(source)?;
        revision(&HostRemote, &repo, reference)
    }
}

molecule_guest::export_resolver!(GitResolver);

/// What the resolver needs from the host, as a trait so the logic runs natively in tests
/// against a fake remote.
pub trait Remote {
    fn list_refs(&self, url: &str) -> Result<Vec<RemoteRef>, FetchError>;
    fn checkout(&self, url: &str, revision: &str, subdir: Option<&str>) -> Result<(), FetchError>;
}

/// The host's `remote` interface.
#[derive(Debug)]
struct HostRemote;

impl Remote for HostRemote {
    fn list_refs(&self, url: &str) -> Result<Vec<RemoteRef>, FetchError> {
        remote::list_refs(url)
    }

    fn checkout(&self, url: &str, revision: &str, subdir: Option<&str>) -> Result<(), FetchError> {
        remote::checkout(url, revision, subdir)
    }
}

/// The repository and the pinned ref a source names.
pub fn target(source: &Source) -> Result<(GitRepo, &str), FetchError> {
    let repo = match source.scheme.as_str() {
        "github" => parse_github_spec(&source.location)?,
        "git" => parse_git_spec(&source.location)?,
        other => {
            return Err(FetchError::InvalidSource(format!(
                "this resolver serves github:// and git://, not {other}://"
            )));
        }
    };
    Ok((repo, required_reference(source)?))
}

/// The commit `reference` names in `repo`: a full sha as it is, anything else through the
/// refs the remote advertises.
pub fn revision(
    remote: &impl Remote,
    repo: &GitRepo,
    reference: &str,
) -> Result<String, FetchError> {
    if is_full_sha(reference) {
        return Ok(reference.to_ascii_lowercase());
    }
    let refs = remote.list_refs(&repo.url)?;
    pick_revision(&refs, reference)
}

/// Resolves the source's ref, has the host check that commit out into `dest`, and names the
/// result: `plugin.yaml`'s `name:` if the tree declares one, else the repository name.
pub fn fetch(remote: &impl Remote, dest: &Path, source: &Source) -> Result<Fetched, FetchError> {
    let (repo, reference) = target(source)?;
    let sha = revision(remote, &repo, reference)?;
    remote.checkout(&repo.url, &sha, repo.subdir.as_deref())?;
    let name = declared_name(dest)?.unwrap_or(repo.name);
    Ok(Fetched {
        name,
        revision: sha,
    })
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::fs;

    use super::*;

    const V1: &str = "1111111111111111111111111111111111111111";
    const MAIN: &str = "2222222222222222222222222222222222222222";

    /// A remote with fixed refs whose checkout writes the files it was given into `dest`.
    struct FakeRemote<'a> {
        dest: &'a Path,
        files: Vec<(&'static str, &'static str)>,
        calls: RefCell<Vec<String>>,
    }

    impl<'a> FakeRemote<'a> {
        fn new(dest: &'a Path, files: Vec<(&'static str, &'static str)>) -> Self {
            FakeRemote {
                dest,
                files,
                calls: RefCell::new(Vec::new()),
            }
        }
    }

    impl Remote for FakeRemote<'_> {
        fn list_refs(&self, url: &str) -> Result<Vec<RemoteRef>, FetchError> {
            self.calls.borrow_mut().push(format!("list-refs {url}"));
            Ok(vec![
                RemoteRef::new("HEAD", MAIN),
                RemoteRef::new("refs/heads/main", MAIN),
                RemoteRef::new("refs/tags/v1", V1),
            ])
        }

        fn checkout(
            &self,
            url: &str,
            revision: &str,
            subdir: Option<&str>,
        ) -> Result<(), FetchError> {
            self.calls.borrow_mut().push(format!(
                "checkout {url} {revision} {}",
                subdir.unwrap_or("-")
            ));
            for (path, content) in &self.files {
                fs::write(self.dest.join(path), content).unwrap();
            }
            Ok(())
        }
    }

    #[test]
    fn a_github_tag_is_resolved_then_checked_out() {
        let dest = tempfile::tempdir().unwrap();
        let remote = FakeRemote::new(dest.path(), vec![("README.md", "hi")]);

        let fetched = fetch(
            &remote,
            dest.path(),
            &Source::new("github", "acme/tools", Some("v1")),
        )
        .unwrap();

        assert_eq!(
            fetched,
            Fetched {
                name: "tools".into(),
                revision: V1.into()
            }
        );
        assert_eq!(
            *remote.calls.borrow(),
            [
                "list-refs https://github.com/acme/tools.git".to_owned(),
                format!("checkout https://github.com/acme/tools.git {V1} -"),
            ]
        );
    }

    #[test]
    fn a_git_branch_is_fetched_over_https_and_named_by_plugin_yaml() {
        let dest = tempfile::tempdir().unwrap();
        let remote = FakeRemote::new(dest.path(), vec![("plugin.yaml", "name: team-tools\n")]);

        let fetched = fetch(
            &remote,
            dest.path(),
            &Source::new("git", "git.example.com/team/tools", Some("main")),
        )
        .unwrap();

        assert_eq!(fetched.name, "team-tools");
        assert_eq!(fetched.revision, MAIN);
        assert_eq!(
            remote.calls.borrow().last().unwrap(),
            &format!("checkout https://git.example.com/team/tools.git {MAIN} -")
        );
    }

    #[test]
    fn a_full_sha_is_checked_out_without_listing_refs() {
        let dest = tempfile::tempdir().unwrap();
        let remote = FakeRemote::new(dest.path(), vec![]);
        let sha = "abcdefabcdefabcdefabcdefabcdefabcdefabcd";

        let fetched = fetch(
            &remote,
            dest.path(),
            &Source::new("github", "acme/tools", Some(sha)),
        )
        .unwrap();

        assert_eq!(fetched.revision, sha);
        assert_eq!(
            *remote.calls.borrow(),
            [format!(
                "checkout https://github.com/acme/tools.git {sha} -"
            )]
        );
    }

    #[test]
    fn a_path_after_the_repository_checks_out_only_that_directory() {
        let dest = tempfile::tempdir().unwrap();
        let remote = FakeRemote::new(dest.path(), vec![]);

        fetch(
            &remote,
            dest.path(),
            &Source::new("github", "acme/mono/plugins/review", Some("v1")),
        )
        .unwrap();

        assert_eq!(
            remote.calls.borrow().last().unwrap(),
            &format!("checkout https://github.com/acme/mono.git {V1} plugins/review")
        );
    }

    #[test]
    fn a_missing_ref_is_denied_before_the_host_is_asked_anything() {
        let dest = tempfile::tempdir().unwrap();
        let remote = FakeRemote::new(dest.path(), vec![]);

        let err = fetch(
            &remote,
            dest.path(),
            &Source::new("github", "acme/tools", None),
        )
        .unwrap_err();

        assert!(
            matches!(&err, FetchError::Denied(m) if m.starts_with("a pinned ref is required")),
            "{err:?}"
        );
        assert!(remote.calls.borrow().is_empty());
    }

    #[test]
    fn an_unknown_ref_is_not_found_and_nothing_is_checked_out() {
        let dest = tempfile::tempdir().unwrap();
        let remote = FakeRemote::new(dest.path(), vec![]);

        let err = fetch(
            &remote,
            dest.path(),
            &Source::new("github", "acme/tools", Some("v9")),
        )
        .unwrap_err();

        assert!(matches!(err, FetchError::NotFound(_)), "{err:?}");
        assert_eq!(remote.calls.borrow().len(), 1, "only list-refs ran");
    }

    #[test]
    fn resolve_revision_only_lists_refs() {
        let dest = tempfile::tempdir().unwrap();
        let remote = FakeRemote::new(dest.path(), vec![]);
        let source = Source::new("git", "example.org/a/b", Some("HEAD"));
        let (repo, reference) = target(&source).unwrap();

        assert_eq!(revision(&remote, &repo, reference).unwrap(), MAIN);
        assert_eq!(
            *remote.calls.borrow(),
            ["list-refs https://example.org/a/b.git".to_owned()]
        );
    }

    #[test]
    fn other_schemes_and_malformed_locations_are_invalid() {
        for source in [
            Source::new("local", "tools", Some("v1")),
            Source::new("github", "acme", Some("v1")),
            Source::new("git", "user:pw@example.org/a/b", Some("v1")),
        ] {
            assert!(
                matches!(target(&source), Err(FetchError::InvalidSource(_))),
                "{source}"
            );
        }
    }

    #[test]
    fn a_bad_name_in_the_checked_out_plugin_yaml_fails_the_fetch() {
        let dest = tempfile::tempdir().unwrap();
        let remote = FakeRemote::new(dest.path(), vec![("plugin.yaml", "name: ../../evil\n")]);

        let err = fetch(
            &remote,
            dest.path(),
            &Source::new("github", "acme/tools", Some("v1")),
        )
        .unwrap_err();

        assert!(matches!(err, FetchError::InvalidSource(_)), "{err:?}");
    }
}
