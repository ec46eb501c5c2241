//! Resolvers through the real runtime: the default `local-resolver` and `git-resolver` and the
//! hostile `escape-resolver` (built by `make plugins`), against real directories and real git.
//! Remote repositories are local bare repositories the tests create, reached through `https://`
//! URLs that `GIT_CONFIG_*` variables in the host's git environment rewrite to `file://` (or to
//! a local HTTP listener), so nothing touches global git configuration or the network.

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::engine as wasm_engine;
use super::remote::{Credentials, RemoteConfig, RemoteHost};
use super::runtime::{CallError, Extension, Identity, Limits, ResolverAccess, import_allowed};
use super::tests::{component, engine};
use super::types::{FetchError, FetchQuotas, Fetched, SlotKind, Source};

/// A credential the tests plant for `git.test` and then look for everywhere it must not be.
const TOKEN: &str = "ghp_PLANTEDt0ken0nlyTHEh0stMAYsee7c1d";

/// A generous deadline: tests share two cores, and only the guest's own time counts.
const DEADLINE: Duration = Duration::from_secs(5);

fn resolver(name: &str, access: ResolverAccess) -> Extension {
    resolver_with(name, access, DEADLINE)
}

fn resolver_with(name: &str, access: ResolverAccess, deadline: Duration) -> Extension {
    let bytes = component(name);
    let identity = Identity {
        name: name.into(),
        version: "0.1.0".into(),
        digest: wasm_engine::digest(&bytes),
    };
    let limits = Limits {
        deadline,
        ..Limits::default()
    };
    Extension::load_with_access(
        engine(),
        SlotKind::Resolver,
        identity,
        &bytes,
        limits,
        access,
    )
    .unwrap_or_else(|e| panic!("{name} loads: {e}"))
}

fn source(raw: &str) -> Source {
    Source::parse(raw).unwrap_or_else(|| panic!("{raw} parses"))
}

fn write(root: &Path, rel: &str, content: &[u8]) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

/// Every file under `root` as (relative path, content), sorted.
fn files(root: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(dir: &Path, prefix: &str, out: &mut Vec<(String, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let meta = std::fs::symlink_metadata(entry.path()).unwrap();
            if meta.is_dir() {
                walk(&entry.path(), &rel, out);
            } else {
                out.push((rel, std::fs::read(entry.path()).unwrap_or_default()));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, "", &mut out);
    out.sort();
    out
}

fn names(root: &Path) -> Vec<String> {
    files(root).into_iter().map(|(name, _)| name).collect()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Log lines captured from the current thread (where a runtime-level call runs everything:
/// the guest, its `log` imports and the host's git).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

fn capture_logs<T>(f: impl FnOnce() -> T) -> (T, String) {
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    (out, text)
}

/// Bare repositories under `<tmp>/repos/<owner>/<name>.git`, made with git isolated from any
/// global or system configuration.
struct Repos {
    dir: tempfile::TempDir,
}

impl Repos {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        std::fs::create_dir_all(dir.path().join("repos")).unwrap();
        Repos { dir }
    }

    fn git(&self, cwd: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .current_dir(cwd)
            .env("HOME", self.dir.path().join("home"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "Test")
            .env("GIT_AUTHOR_EMAIL", "test@example.invalid")
            .env("GIT_COMMITTER_NAME", "Test")
            .env("GIT_COMMITTER_EMAIL", "test@example.invalid")
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Creates `<repo>.git` (e.g. `acme/tools`) with one commit of `files` (a `->` in a
    /// content makes a symbolic link to what follows it), tagged `v1` (lightweight) and `v2`
    /// (annotated). Returns the commit id.
    fn create(&self, repo: &str, files: &[(&str, &str)]) -> String {
        let bare = self.dir.path().join("repos").join(format!("{repo}.git"));
        std::fs::create_dir_all(&bare).unwrap();
        self.git(
            &bare,
            &["init", "--quiet", "--bare", "--initial-branch=main"],
        );
        let work = self.dir.path().join("work").join(repo);
        std::fs::create_dir_all(&work).unwrap();
        self.git(&work, &["init", "--quiet", "--initial-branch=main"]);
        for (path, content) in files {
            match content.strip_prefix("->") {
                Some(target) => {
                    let link = work.join(path);
                    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
                    std::os::unix::fs::symlink(target, link).unwrap();
                }
                None => write(&work, path, content.as_bytes()),
            }
        }
        self.git(&work, &["add", "--all"]);
        self.git(&work, &["commit", "--quiet", "--message", "first"]);
        self.git(&work, &["tag", "v1"]);
        self.git(&work, &["tag", "--annotate", "v2", "--message", "two"]);
        self.git(
            &work,
            &[
                "push",
                "--quiet",
                bare.to_str().unwrap(),
                "HEAD:refs/heads/main",
                "--tags",
            ],
        );
        self.git(&work, &["rev-parse", "HEAD"])
    }

    /// `https://git.test/` and `https://github.com/` rewritten to these repositories.
    fn git_env(&self) -> Vec<(String, String)> {
        let base = format!("file://{}/", self.dir.path().join("repos").display());
        rewrites(&base, &["https://git.test/", "https://github.com/"])
    }

    fn remote(&self, credentials: Credentials) -> Arc<RemoteHost> {
        self.remote_with(credentials, |_| {})
    }

    fn remote_with(
        &self,
        credentials: Credentials,
        adjust: impl FnOnce(&mut RemoteConfig),
    ) -> Arc<RemoteHost> {
        let mut config = RemoteConfig {
            allowed_protocols: "https:file".into(),
            extra_env: self.git_env(),
            ..RemoteConfig::new(self.scratch())
        };
        adjust(&mut config);
        Arc::new(RemoteHost::new(config, credentials).unwrap())
    }

    fn scratch(&self) -> PathBuf {
        self.dir.path().join("scratch")
    }

    fn access(&self, hosts: &[&str], remote: Arc<RemoteHost>) -> ResolverAccess {
        ResolverAccess {
            allowed_hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
            read_only_dirs: Vec::new(),
            quotas: FetchQuotas::default(),
            remote: Some(remote),
        }
    }
}

/// `GIT_CONFIG_*` variables that make git fetch from `base` whatever URL starts with one of
/// `prefixes`.
fn rewrites(base: &str, prefixes: &[&str]) -> Vec<(String, String)> {
    let mut env = vec![("GIT_CONFIG_COUNT".to_owned(), prefixes.len().to_string())];
    for (i, prefix) in prefixes.iter().enumerate() {
        env.push((
            format!("GIT_CONFIG_KEY_{i}"),
            format!("url.{base}.insteadOf"),
        ));
        env.push((format!("GIT_CONFIG_VALUE_{i}"), (*prefix).to_owned()));
    }
    env
}

const PLUGIN_FILES: &[(&str, &str)] = &[
    ("plugin.yaml", "name: team-tools\nversion: 1\n"),
    ("skills/review/SKILL.md", "# Review\nRead the diff.\n"),
    ("rules.md", "be kind\n"),
];

// ---------------------------------------------------------------------------------------------
// local-resolver

fn registry_with_review() -> tempfile::TempDir {
    let registry = tempfile::tempdir().unwrap();
    write(
        registry.path(),
        "review/plugin.yaml",
        b"name: code-review\n",
    );
    write(
        registry.path(),
        "review/skills/review/SKILL.md",
        b"# Review\n",
    );
    write(registry.path(), "review/rules.md", b"be kind\n");
    registry
}

fn local_access(registry: &Path) -> ResolverAccess {
    ResolverAccess {
        read_only_dirs: vec![registry.to_path_buf()],
        ..ResolverAccess::default()
    }
}

#[test]
fn the_local_resolver_copies_a_registry_entry_and_names_its_content_digest() {
    let registry = registry_with_review();
    let ext = resolver("local-resolver", local_access(registry.path()));
    assert_eq!(ext.schemes().unwrap(), ["local"]);
    let dest = tempfile::tempdir().unwrap();

    let fetched = ext.fetch(&source("review"), dest.path()).unwrap().unwrap();

    assert_eq!(fetched.name, "code-review");
    assert!(fetched.revision.starts_with("sha256:"), "{fetched:?}");
    assert_eq!(
        ext.resolve_revision(&source("local://review")).unwrap(),
        Ok(fetched.revision.clone())
    );
    assert_eq!(files(dest.path()), files(&registry.path().join("review")));
    // The registry is read-only to the guest and the copy left it as it was.
    assert_eq!(
        names(registry.path()),
        [
            "review/plugin.yaml",
            "review/rules.md",
            "review/skills/review/SKILL.md"
        ]
    );
    // A changed entry is a new revision.
    write(registry.path(), "review/rules.md", b"be kinder\n");
    let changed = ext.resolve_revision(&source("review")).unwrap().unwrap();
    assert_ne!(changed, fetched.revision);
}

#[test]
fn the_local_resolver_refuses_names_that_could_leave_the_registry() {
    let base = tempfile::tempdir().unwrap();
    let registry = base.path().join("registry");
    write(&registry, "review/rules.md", b"be kind\n");
    write(base.path(), "outside/secret.txt", b"not for guests\n");
    let ext = resolver("local-resolver", local_access(&registry));
    for raw in [
        "local://../outside",
        "local:///etc",
        "local://review/../../outside",
        "local://..",
        "local://review/skills",
    ] {
        let dest = tempfile::tempdir().unwrap();
        let answer = ext.fetch(&source(raw), dest.path()).unwrap();
        assert!(
            matches!(answer, Err(FetchError::InvalidSource(_))),
            "{raw}: {answer:?}"
        );
        assert!(names(dest.path()).is_empty(), "{raw} wrote into dest");
    }
    let missing = ext.fetch(&source("nope"), tempfile::tempdir().unwrap().path());
    assert!(
        matches!(missing, Ok(Err(FetchError::NotFound(_)))),
        "{missing:?}"
    );
    // Without the grant there is no registry at all.
    let ungranted = resolver("local-resolver", ResolverAccess::default());
    let answer = ungranted
        .fetch(&source("review"), tempfile::tempdir().unwrap().path())
        .unwrap();
    assert!(
        matches!(&answer, Err(FetchError::Denied(m)) if m.contains("no plugin registry")),
        "{answer:?}"
    );
}

#[test]
fn a_resolver_that_overruns_its_deadline_is_stopped() {
    let registry = tempfile::tempdir().unwrap();
    // Copying and hashing 32 MiB inside the guest takes far longer than two epoch ticks.
    write(
        registry.path(),
        "big/blob.bin",
        &vec![7u8; 32 * 1024 * 1024],
    );
    let ext = resolver_with(
        "local-resolver",
        local_access(registry.path()),
        Duration::from_millis(1),
    );
    let dest = tempfile::tempdir().unwrap();
    let started = Instant::now();
    assert_eq!(
        ext.fetch(&source("big"), dest.path()),
        Err(CallError::Timeout)
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

// ---------------------------------------------------------------------------------------------
// git-resolver against local bare repositories

#[test]
fn the_git_resolver_fetches_a_tag_through_a_rewritten_https_url() {
    let repos = Repos::new();
    let sha = repos.create("acme/tools", PLUGIN_FILES);
    let remote = repos.remote(Credentials::new());
    let ext = resolver("git-resolver", repos.access(&["git.test"], remote.clone()));
    assert_eq!(ext.schemes().unwrap(), ["github", "git"]);

    for tag in ["v1", "v2"] {
        let dest = tempfile::tempdir().unwrap();
        let raw = format!("git://git.test/acme/tools#{tag}");
        let fetched = ext.fetch(&source(&raw), dest.path()).unwrap().unwrap();

        assert_eq!(
            fetched,
            Fetched {
                name: "team-tools".into(),
                revision: sha.clone()
            },
            "{tag}: an annotated tag resolves to its commit too"
        );
        assert_eq!(
            names(dest.path()),
            ["plugin.yaml", "rules.md", "skills/review/SKILL.md"]
        );
        assert!(!dest.path().join(".git").exists());
        assert_eq!(
            std::fs::read_to_string(dest.path().join("rules.md")).unwrap(),
            "be kind\n"
        );
        assert_eq!(
            ext.resolve_revision(&source(&raw)).unwrap(),
            Ok(sha.clone())
        );
    }
    // The scratch repositories are gone once each operation ends.
    assert_eq!(std::fs::read_dir(repos.scratch()).unwrap().count(), 0);
}

#[test]
fn a_github_source_may_take_one_directory_of_the_repository() {
    let repos = Repos::new();
    let sha = repos.create(
        "acme/mono",
        &[
            ("README.md", "monorepo\n"),
            ("plugins/review/plugin.yaml", "name: review\n"),
            ("plugins/review/SKILL.md", "# Review\n"),
            ("plugins/other/SKILL.md", "# Other\n"),
        ],
    );
    let ext = resolver(
        "git-resolver",
        repos.access(&["github.com"], repos.remote(Credentials::new())),
    );
    let dest = tempfile::tempdir().unwrap();

    let fetched = ext
        .fetch(&source("github://acme/mono/plugins/review#v1"), dest.path())
        .unwrap()
        .unwrap();

    assert_eq!(fetched.name, "review");
    assert_eq!(fetched.revision, sha);
    assert_eq!(names(dest.path()), ["SKILL.md", "plugin.yaml"]);
    let missing = ext
        .fetch(
            &source("github://acme/mono/plugins/nope#v1"),
            tempfile::tempdir().unwrap().path(),
        )
        .unwrap();
    assert!(
        matches!(&missing, Err(FetchError::NotFound(m)) if m.contains("plugins/nope")),
        "{missing:?}"
    );
}

#[test]
fn a_missing_ref_or_repository_is_not_found_and_an_unpinned_source_is_denied() {
    let repos = Repos::new();
    repos.create("acme/tools", PLUGIN_FILES);
    let remote = repos.remote(Credentials::new());
    let ext = resolver("git-resolver", repos.access(&["git.test"], remote.clone()));
    let fetch = |raw: &str| {
        let dest = tempfile::tempdir().unwrap();
        let answer = ext.fetch(&source(raw), dest.path()).unwrap();
        assert!(names(dest.path()).is_empty(), "{raw} wrote into dest");
        answer
    };

    let missing_ref = fetch("git://git.test/acme/tools#v9");
    assert!(
        matches!(&missing_ref, Err(FetchError::NotFound(m)) if m.contains("v9")),
        "{missing_ref:?}"
    );
    let missing_repo = fetch("git://git.test/acme/nope#v1");
    assert!(
        matches!(missing_repo, Err(FetchError::NotFound(_))),
        "{missing_repo:?}"
    );
    let unknown_commit = fetch(&format!("git://git.test/acme/tools#{}", "1".repeat(40)));
    assert!(
        matches!(unknown_commit, Err(FetchError::NotFound(_))),
        "{unknown_commit:?}"
    );
    let processes = remote.git_processes();
    let unpinned = fetch("git://git.test/acme/tools");
    assert!(
        matches!(&unpinned, Err(FetchError::Denied(m)) if m.contains("pinned ref is required")),
        "{unpinned:?}"
    );
    assert_eq!(remote.git_processes(), processes, "refused in the guest");
}

#[test]
fn an_ungranted_host_is_denied_before_any_git_process_starts() {
    let repos = Repos::new();
    repos.create("acme/tools", PLUGIN_FILES);
    let remote = repos.remote(Credentials::new().with("github.com", TOKEN));
    // The rewrite would happily serve github.com; only the grant stands in the way.
    let ext = resolver("git-resolver", repos.access(&["git.test"], remote.clone()));

    for raw in [
        "github://acme/tools#v1",
        "git://git.test:8443/acme/tools#v1",
    ] {
        let dest = tempfile::tempdir().unwrap();
        let answer = ext.fetch(&source(raw), dest.path()).unwrap();
        assert!(
            matches!(&answer, Err(FetchError::Denied(m)) if m.contains("not granted")),
            "{raw}: {answer:?}"
        );
        let revision = ext.resolve_revision(&source(raw)).unwrap();
        assert!(
            matches!(revision, Err(FetchError::Denied(_))),
            "{revision:?}"
        );
    }
    // The host side refuses anything but plain https URLs of granted hosts, also before any
    // process starts.
    let granted = ["git.test".to_owned()];
    for url in [
        "file:///etc",
        "http://git.test/acme/tools.git",
        "ssh://git.test/acme/tools.git",
        "https://user:pw@git.test/acme/tools.git",
        "https://git.test.evil.invalid/acme/tools.git",
        "https://git.test/acme/../../tools.git",
    ] {
        assert!(
            matches!(remote.list_refs(&granted, url), Err(FetchError::Denied(_))),
            "{url}"
        );
    }
    assert_eq!(remote.git_processes(), 0);
    // A resolver with no remote host at all is denied too.
    let detached = resolver(
        "git-resolver",
        ResolverAccess {
            allowed_hosts: vec!["git.test".into()],
            ..ResolverAccess::default()
        },
    );
    let answer = detached
        .fetch(
            &source("git://git.test/acme/tools#v1"),
            tempfile::tempdir().unwrap().path(),
        )
        .unwrap();
    assert!(matches!(answer, Err(FetchError::Denied(_))), "{answer:?}");
}

// ---------------------------------------------------------------------------------------------
// credentials

/// An HTTP listener that records each request's head and answers 404.
struct FakeRemote {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeRemote {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopping) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::SeqCst) {
                let Ok((mut stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                stream.set_nonblocking(false).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                seen.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&head).into_owned());
                let _ = stream.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        FakeRemote {
            port,
            requests,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeRemote {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn a_credential_is_attached_per_request_and_reaches_no_log_line_or_error() {
    let server = FakeRemote::start();
    let scratch = tempfile::tempdir().unwrap();
    let base = format!("http://127.0.0.1:{}/", server.port);
    let remote = Arc::new(
        RemoteHost::new(
            RemoteConfig {
                allowed_protocols: "https:http".into(),
                extra_env: rewrites(&base, &["https://git.test/", "https://other.test/"]),
                ..RemoteConfig::new(scratch.path())
            },
            Credentials::new().with("git.test", TOKEN),
        )
        .unwrap(),
    );
    let access = ResolverAccess {
        allowed_hosts: vec!["git.test".into(), "other.test".into()],
        remote: Some(remote.clone()),
        ..ResolverAccess::default()
    };
    let ext = resolver("git-resolver", access);
    let dest = tempfile::tempdir().unwrap();

    let (answer, logs) = capture_logs(|| {
        ext.fetch(&source("git://git.test/acme/tools#v1"), dest.path())
            .unwrap()
    });

    let error = answer.unwrap_err();
    assert!(matches!(error, FetchError::NotFound(_)), "{error:?}");
    let requests = server.requests.lock().unwrap().clone();
    assert!(
        requests
            .iter()
            .any(|r| r.contains(&format!("Authorization: Bearer {TOKEN}"))),
        "the host attached the credential: {requests:?}"
    );
    assert!(!error.to_string().contains(TOKEN), "{error}");
    assert!(
        logs.contains("git.test"),
        "the call was logged, so the check below means something: {logs}"
    );
    assert!(!logs.contains(TOKEN), "{logs}");
    assert!(names(dest.path()).is_empty());

    // The credential belongs to git.test only: a request to another granted host goes out
    // without it.
    server.requests.lock().unwrap().clear();
    let other = ext
        .fetch(
            &source("git://other.test/acme/tools#v1"),
            tempfile::tempdir().unwrap().path(),
        )
        .unwrap();
    assert!(other.is_err());
    let requests = server.requests.lock().unwrap().clone();
    assert!(!requests.is_empty());
    assert!(
        requests
            .iter()
            .all(|r| !r.contains(TOKEN) && !r.contains("Authorization")),
        "{requests:?}"
    );
}

#[test]
fn a_credentialed_checkout_leaves_the_token_in_no_file_log_line_or_answer() {
    let repos = Repos::new();
    let sha = repos.create("acme/tools", PLUGIN_FILES);
    let remote = repos.remote(Credentials::new().with("git.test", TOKEN));
    let ext = resolver("git-resolver", repos.access(&["git.test"], remote.clone()));
    let dest = tempfile::tempdir().unwrap();

    let (answer, logs) = capture_logs(|| {
        ext.fetch(&source("git://git.test/acme/tools#v1"), dest.path())
            .unwrap()
    });

    assert_eq!(answer.unwrap().revision, sha);
    assert!(!dest.path().join(".git").exists());
    for (path, content) in files(dest.path()) {
        assert!(!contains(&content, TOKEN), "{path}");
    }
    assert!(logs.contains("remote checkout done"), "{logs}");
    assert!(!logs.contains(TOKEN), "{logs}");
    // No scratch repository (and so no .git/config) survives the operation.
    assert_eq!(std::fs::read_dir(repos.scratch()).unwrap().count(), 0);

    // The escape resolver has the host check the repository out, then hunts through /dest,
    // its environment and well-known credential files.
    let escape = resolver("escape-resolver", repos.access(&["git.test"], remote));
    let dest = tempfile::tempdir().unwrap();
    let probe = Source::new(
        "escape",
        "credential",
        Some("https://git.test/acme/tools.git"),
    );
    let (answer, logs) = capture_logs(|| escape.fetch(&probe, dest.path()).unwrap());
    let fetched = answer.unwrap();
    assert_eq!(fetched.name, "saw-nothing", "{}", fetched.revision);
    assert!(
        fetched.revision.contains("done checkout"),
        "the probe really had a checkout to search: {}",
        fetched.revision
    );
    assert!(!fetched.revision.contains(TOKEN) && !fetched.name.contains(TOKEN));
    assert!(!logs.contains(TOKEN), "{logs}");
}

// ---------------------------------------------------------------------------------------------
// escape-resolver

#[test]
fn the_escape_resolver_sees_nothing_outside_its_preopens() {
    let repos = Repos::new();
    repos.create("acme/tools", PLUGIN_FILES);
    let base = tempfile::tempdir().unwrap();
    let registry = base.path().join("registry");
    write(&registry, "review/rules.md", b"be kind\n");
    // Planted next to the preopens, where `..` would lead.
    write(base.path(), "outside", TOKEN.as_bytes());
    write(base.path(), ".git-credentials", TOKEN.as_bytes());
    let remote = repos.remote(Credentials::new().with("git.test", TOKEN));
    let access = ResolverAccess {
        read_only_dirs: vec![registry.clone()],
        ..repos.access(&["git.test"], remote.clone())
    };
    let ext = resolver("escape-resolver", access);

    for probe in [
        Source::new("escape", "etc-passwd", None),
        Source::new("escape", "parent-dir", None),
        Source::new("escape", "registry-escape", None),
        Source::new("escape", "root-dir", None),
        Source::new("escape", "ungranted-host", None),
        Source::new("escape", "credential", None),
        Source::new("escape", "all", None),
    ] {
        let dest = base.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        let fetched = ext.fetch(&probe, &dest).unwrap().unwrap();
        assert_eq!(fetched.name, "saw-nothing", "{probe}: {}", fetched.revision);
        assert!(fetched.revision.contains("blocked"), "{}", fetched.revision);
        assert!(
            !fetched.revision.contains(TOKEN) && !fetched.name.contains(TOKEN),
            "{probe}"
        );
        std::fs::remove_dir_all(&dest).unwrap();
    }
    // Asking for an ungranted host never started git.
    assert_eq!(remote.git_processes(), 0);
    // The probes read; nothing was written outside /dest.
    assert_eq!(names(&registry), ["review/rules.md"]);
    assert_eq!(
        std::fs::read(base.path().join("outside")).unwrap(),
        TOKEN.as_bytes()
    );
}

// ---------------------------------------------------------------------------------------------
// quotas and links

#[test]
fn a_repository_over_the_file_quota_is_too_large_and_nothing_is_written() {
    let repos = Repos::new();
    let many: Vec<(String, &str)> = (0..30)
        .map(|i| (format!("skills/s{i}/SKILL.md"), "# skill\n"))
        .collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(p, c)| (p.as_str(), *c)).collect();
    repos.create("acme/many", &many);
    let remote = repos.remote(Credentials::new());
    let tight = |quotas: FetchQuotas| {
        let access = ResolverAccess {
            quotas,
            ..repos.access(&["git.test"], remote.clone())
        };
        let ext = resolver("git-resolver", access);
        let dest = tempfile::tempdir().unwrap();
        let answer = ext
            .fetch(&source("git://git.test/acme/many#v1"), dest.path())
            .unwrap();
        (answer, names(dest.path()))
    };

    let (answer, written) = tight(FetchQuotas {
        max_files: 20,
        ..FetchQuotas::default()
    });
    assert!(
        matches!(&answer, Err(FetchError::TooLarge(m)) if m.contains("20 files")),
        "{answer:?}"
    );
    assert!(written.is_empty(), "{written:?}");
    let (answer, _) = tight(FetchQuotas {
        max_bytes: 100,
        ..FetchQuotas::default()
    });
    assert!(matches!(answer, Err(FetchError::TooLarge(_))), "{answer:?}");
    let (answer, _) = tight(FetchQuotas {
        max_depth: 2,
        ..FetchQuotas::default()
    });
    assert!(matches!(answer, Err(FetchError::TooLarge(_))), "{answer:?}");
    let (answer, written) = tight(FetchQuotas::default());
    assert!(answer.is_ok(), "{answer:?}");
    assert_eq!(written.len(), 30);
}

#[test]
fn a_repository_holding_a_symbolic_link_is_refused() {
    let repos = Repos::new();
    repos.create(
        "acme/linked",
        &[
            ("plugin.yaml", "name: linked\n"),
            ("skills/passwd", "->/etc/passwd"),
        ],
    );
    let ext = resolver(
        "git-resolver",
        repos.access(&["git.test"], repos.remote(Credentials::new())),
    );
    let dest = tempfile::tempdir().unwrap();

    let answer = ext
        .fetch(&source("git://git.test/acme/linked#v1"), dest.path())
        .unwrap();

    assert!(
        matches!(&answer, Err(FetchError::Denied(m)) if m.contains("skills/passwd") && m.contains("symbolic link")),
        "{answer:?}"
    );
    assert!(names(dest.path()).is_empty());
}

#[test]
fn links_and_over_quota_trees_in_a_destination_are_refused_by_the_host() {
    // Whatever a guest leaves in /dest is checked before it is handed on.
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a/b.txt", b"x");
    assert_eq!(
        super::remote::inspect_tree(dir.path(), &FetchQuotas::default()),
        Ok(())
    );
    std::os::unix::fs::symlink("/etc/passwd", dir.path().join("a/passwd")).unwrap();
    assert!(matches!(
        super::remote::inspect_tree(dir.path(), &FetchQuotas::default()),
        Err(FetchError::Denied(_))
    ));
    std::fs::remove_file(dir.path().join("a/passwd")).unwrap();
    std::fs::hard_link(dir.path().join("a/b.txt"), dir.path().join("c.txt")).unwrap();
    let hard = super::remote::inspect_tree(dir.path(), &FetchQuotas::default());
    assert!(
        matches!(&hard, Err(FetchError::Denied(m)) if m.contains("hard link")),
        "{hard:?}"
    );
    std::fs::remove_file(dir.path().join("c.txt")).unwrap();
    let one_file = FetchQuotas {
        max_files: 0,
        ..FetchQuotas::default()
    };
    assert!(matches!(
        super::remote::inspect_tree(dir.path(), &one_file),
        Err(FetchError::TooLarge(_))
    ));
}

// ---------------------------------------------------------------------------------------------
// time

#[test]
fn time_in_git_does_not_count_against_the_guest_deadline_and_slow_git_is_killed() {
    let repos = Repos::new();
    let sha = repos.create("acme/tools", PLUGIN_FILES);
    // A git that takes 300 ms per process: a fetch runs six of them.
    let slow = repos.dir.path().join("slow-git");
    std::fs::write(&slow, "#!/bin/sh\nsleep 0.3\nexec git \"$@\"\n").unwrap();
    std::fs::set_permissions(&slow, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let remote = repos.remote_with(Credentials::new(), |c| c.git = slow.clone());
    let ext = resolver_with(
        "git-resolver",
        repos.access(&["git.test"], remote),
        Duration::from_millis(200),
    );
    let started = Instant::now();
    let fetched = ext
        .fetch(
            &source("git://git.test/acme/tools#v1"),
            tempfile::tempdir().unwrap().path(),
        )
        .unwrap()
        .unwrap();
    assert_eq!(fetched.revision, sha);
    assert!(
        started.elapsed() > Duration::from_millis(1500),
        "the call spent {:?}, far past the 200 ms guest deadline, in git",
        started.elapsed()
    );

    // A git that hangs is killed at the operation timeout.
    let hung = repos.dir.path().join("hung-git");
    std::fs::write(&hung, "#!/bin/sh\nsleep 30\nexec git \"$@\"\n").unwrap();
    std::fs::set_permissions(&hung, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let remote = repos.remote_with(Credentials::new(), |c| {
        c.git = hung.clone();
        c.timeout = Duration::from_millis(500);
    });
    let ext = resolver("git-resolver", repos.access(&["git.test"], remote));
    let started = Instant::now();
    let answer = ext
        .fetch(
            &source("git://git.test/acme/tools#v1"),
            tempfile::tempdir().unwrap().path(),
        )
        .unwrap();
    assert_eq!(answer, Err(FetchError::Timeout));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// imports

#[test]
fn resolvers_import_only_what_their_slot_allows_and_nothing_network_ish() {
    for name in ["local-resolver", "git-resolver", "escape-resolver"] {
        let bytes = component(name);
        let (compiled, _) = engine().load(&wasm_engine::digest(&bytes), &bytes).unwrap();
        let imports: Vec<String> = compiled
            .component_type()
            .imports(engine().engine())
            .map(|(import, _)| import.to_owned())
            .collect();
        for import in &imports {
            assert!(
                import_allowed(SlotKind::Resolver, import),
                "{name}: {import}"
            );
            assert!(
                !import.starts_with("wasi:sockets") && !import.starts_with("wasi:http"),
                "{name}: {import}"
            );
        }
        assert!(
            imports
                .iter()
                .any(|i| i.starts_with("wasi:filesystem/preopens")),
            "{name}: {imports:?}"
        );
    }
    assert!(!import_allowed(
        SlotKind::Resolver,
        "wasi:sockets/tcp@0.2.6"
    ));
    assert!(!import_allowed(
        SlotKind::Resolver,
        "wasi:sockets/ip-name-lookup@0.2.6"
    ));
    assert!(!import_allowed(
        SlotKind::Resolver,
        "wasi:http/outgoing-handler@0.2.6"
    ));
    assert!(import_allowed(
        SlotKind::Resolver,
        "molecule:plugin/remote@0.1.0"
    ));
    assert!(!import_allowed(
        SlotKind::Classifier,
        "molecule:plugin/remote@0.1.0"
    ));
    assert!(!import_allowed(
        SlotKind::RestartPolicy,
        "molecule:plugin/remote@0.1.0"
    ));
}

// ---------------------------------------------------------------------------------------------
// the resolver slots of the registry

mod registry_specs {
    use std::sync::Arc;

    use super::{Repos, component, names, write};
    use crate::events::EventBus;
    use crate::extensions::registry::{
        ExtensionHost, FetchFailure, Grants, Manifest, RegistryError, ResolverSettings, Slot,
    };
    use crate::extensions::runtime::{CallError, LoadError};
    use crate::extensions::types::{FetchError, Source};
    use crate::store::Db;

    async fn host(db: &Db, settings: ResolverSettings) -> (Arc<ExtensionHost>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let builtin_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../plugins/target/wasm32-wasip2/release");
        let host = ExtensionHost::start_with(
            db.clone(),
            EventBus::new(db.clone(), uuid::Uuid::new_v4()),
            dir.path(),
            Some(&builtin_dir),
            settings,
        )
        .await
        .expect("the extension host starts");
        (host, dir)
    }

    async fn first_start_activates_the_local_and_git_resolvers_with_their_grants(db: Db) {
        let repos = Repos::new();
        repos.create("acme/tools", super::PLUGIN_FILES);
        // git.test is reachable through the git environment but not granted to the default
        // git resolver, which only gets github.com.
        let settings = ResolverSettings {
            git_env: repos.git_env(),
            allowed_protocols: "https:file".into(),
            ..ResolverSettings::default()
        };
        let (host, dir) = host(&db, settings).await;
        let active: Vec<String> = host
            .slot_versions()
            .into_iter()
            .filter(|(_, active, _)| active.is_some())
            .map(|(slot, _, _)| slot.as_str().to_owned())
            .collect();
        for slot in ["resolver:git", "resolver:github", "resolver:local"] {
            assert!(active.iter().any(|s| s == slot), "{slot}: {active:?}");
        }

        // The local resolver reads the config-free registry under the data dir.
        let registry = dir.path().join("plugins-registry");
        write(&registry, "review/plugin.yaml", b"name: code-review\n");
        write(&registry, "review/SKILL.md", b"# Review\n");
        let dest = tempfile::tempdir().unwrap();
        let fetched = host
            .fetch("local", Source::new("local", "review", None), dest.path())
            .await
            .unwrap();
        assert_eq!(fetched.name, "code-review");
        assert_eq!(names(dest.path()), ["SKILL.md", "plugin.yaml"]);
        let revision = host
            .resolve_revision("local", Source::new("local", "review", None))
            .await
            .unwrap();
        assert_eq!(revision, fetched.revision);

        let denied = host
            .fetch(
                "git",
                Source::new("git", "git.test/acme/tools", Some("v1")),
                tempfile::tempdir().unwrap().path(),
            )
            .await;
        assert!(
            matches!(&denied, Err(FetchFailure::Fetch(FetchError::Denied(m))) if m.contains("git.test")),
            "{denied:?}"
        );
        assert_eq!(host.remote().git_processes(), 0);

        let none = host
            .fetch(
                "ftp",
                Source::new("ftp", "x", None),
                tempfile::tempdir().unwrap().path(),
            )
            .await;
        assert_eq!(none, Err(FetchFailure::NoResolver("ftp".into())));
        assert_eq!(
            none.unwrap_err().to_string(),
            "no resolver for scheme `ftp`"
        );
        host.stop();
    }

    async fn an_unpinned_source_is_denied_unless_the_operator_allows_it_and_then_means_head(
        db: Db,
    ) {
        let repos = Repos::new();
        let head = repos.create("acme/tools", super::PLUGIN_FILES);
        let settings = |allow_unpinned| ResolverSettings {
            git_env: repos.git_env(),
            allowed_protocols: "https:file".into(),
            allow_unpinned,
            ..ResolverSettings::default()
        };
        let unpinned = || Source::new("github", "acme/tools", None);

        let (strict, _dir) = host(&db, settings(false)).await;
        let denied = strict
            .fetch("github", unpinned(), tempfile::tempdir().unwrap().path())
            .await;
        assert!(
            matches!(denied, Err(FetchFailure::Fetch(FetchError::Denied(_)))),
            "{denied:?}"
        );
        strict.stop();

        let (relaxed, _dir) = host(&db, settings(true)).await;
        let dest = tempfile::tempdir().unwrap();
        let fetched = relaxed
            .fetch("github", unpinned(), dest.path())
            .await
            .unwrap();
        assert_eq!(fetched.revision, head);
        assert!(dest.path().join("plugin.yaml").is_file());
        assert_eq!(
            relaxed
                .resolve_revision("github", unpinned())
                .await
                .unwrap(),
            head
        );
        relaxed.stop();
    }

    async fn a_resolver_must_serve_its_slot_scheme_and_unusable_answers_fail_the_fetch(db: Db) {
        let (host, _dir) = host(&db, ResolverSettings::default()).await;
        let manifest = |slot: &str| Manifest {
            name: "escape".into(),
            version: "1.0.0".into(),
            slot: slot.into(),
            grants: Grants::default(),
        };
        let wrong = host
            .upload(
                manifest("resolver:local"),
                component("escape-resolver"),
                None,
                false,
            )
            .await;
        assert!(
            matches!(&wrong, Err(RegistryError::Rejected(LoadError::WrongScheme { scheme, .. })) if scheme == "local"),
            "{wrong:?}"
        );
        let mut asks_for_etc = manifest("resolver:escape");
        asks_for_etc.grants.read_only_dirs = vec!["/etc".into()];
        assert!(matches!(
            host.upload(asks_for_etc, component("escape-resolver"), None, false)
                .await,
            Err(RegistryError::InvalidManifest(_))
        ));
        let row = host
            .upload(
                manifest("resolver:escape"),
                component("escape-resolver"),
                None,
                false,
            )
            .await
            .unwrap();
        host.activate(row.id).await.unwrap();
        assert!(matches!(
            host.shadow(row.id).await,
            Err(RegistryError::Unsupported(m)) if m.contains("resolver")
        ));
        let slot = Slot::parse("resolver:escape").unwrap();
        assert!(
            host.slot_versions()
                .iter()
                .any(|(s, active, _)| *s == slot && *active == Some(row.id))
        );

        // The escape resolver answers its transcript as the revision: not something the host
        // can record, so the fetch fails, loudly and counted.
        let dest = tempfile::tempdir().unwrap();
        let answer = host
            .fetch(
                "escape",
                Source::new("escape", "etc-passwd", None),
                dest.path(),
            )
            .await;
        assert!(
            matches!(&answer, Err(FetchFailure::Malformed { reason, .. }) if reason.contains("revision")),
            "{answer:?}"
        );
        // A call that cannot even start (its destination is gone) fails that fetch too.
        let gone = dest.path().join("gone");
        let failed = host
            .fetch("escape", Source::new("escape", "etc-passwd", None), &gone)
            .await;
        assert!(
            matches!(
                &failed,
                Err(FetchFailure::Failed {
                    error: CallError::Instantiate(_),
                    ..
                })
            ),
            "{failed:?}"
        );
        let ext = host_extension(&host, &slot);
        assert_eq!(host.metrics.fallbacks(&ext, "malformed"), 1);
        assert_eq!(host.metrics.fallbacks(&ext, "instantiate"), 1);
        host.stop();
    }

    async fn a_failed_fetch_gives_the_hosts_reason_without_local_paths_or_credentials(db: Db) {
        let repos = Repos::new();
        repos.create("acme/tools", super::PLUGIN_FILES);
        let local = repos.dir.path().display().to_string();
        let credentials = super::Credentials::new().with("github.com", super::TOKEN);
        let reason =
            |failure: &Result<crate::extensions::types::Fetched, FetchFailure>| match failure {
                Err(FetchFailure::Fetch(error)) => error.message().unwrap_or_default().to_owned(),
                other => panic!("a resolver error, not {other:?}"),
            };

        // A repository that does not exist behind a rewrite to local files: git names the
        // rewritten path, the operator reads only that it is not there.
        let settings = ResolverSettings {
            git_env: repos.git_env(),
            allowed_protocols: "https:file".into(),
            credentials: credentials.clone(),
            ..ResolverSettings::default()
        };
        let (files, _dir) = host(&db, settings).await;
        let missing = files
            .fetch(
                "github",
                Source::new("github", "acme/nope", Some("v1")),
                tempfile::tempdir().unwrap().path(),
            )
            .await;
        assert!(
            matches!(missing, Err(FetchFailure::Fetch(FetchError::NotFound(_)))),
            "{missing:?}"
        );
        let text = reason(&missing);
        assert!(
            text.starts_with("listing the refs of https://github.com/acme/nope.git failed: ")
                && text.contains(crate::extensions::reason::LOCAL_PATH)
                && !text.contains(&local)
                && !text.contains("file://")
                && !text.contains('\n'),
            "{text}"
        );
        files.stop();

        // A host that does not resolve: the reason is curl's, once, with the host it tried.
        let settings = ResolverSettings {
            git_env: super::rewrites("https://unreachable.invalid/", &["https://github.com/"]),
            credentials,
            ..ResolverSettings::default()
        };
        let (offline, _dir) = host(&db, settings).await;
        let unreachable = offline
            .fetch(
                "github",
                Source::new("github", "acme/tools", Some("v1")),
                tempfile::tempdir().unwrap().path(),
            )
            .await;
        assert!(
            matches!(
                unreachable,
                Err(FetchFailure::Fetch(FetchError::Upstream(_)))
            ),
            "{unreachable:?}"
        );
        assert_eq!(
            reason(&unreachable),
            "listing the refs of https://github.com/acme/tools.git failed: \
             Could not resolve host: unreachable.invalid"
        );
        assert!(!format!("{unreachable:?}").contains(super::TOKEN));
        offline.stop();
    }

    /// The active extension of a slot, for reading its metrics.
    fn host_extension(
        host: &ExtensionHost,
        slot: &Slot,
    ) -> Arc<crate::extensions::runtime::Extension> {
        host.active_extension(slot)
            .expect("the slot has an active version")
    }

    crate::both_backends!(
        first_start_activates_the_local_and_git_resolvers_with_their_grants,
        an_unpinned_source_is_denied_unless_the_operator_allows_it_and_then_means_head,
        a_resolver_must_serve_its_slot_scheme_and_unusable_answers_fail_the_fetch,
        a_failed_fetch_gives_the_hosts_reason_without_local_paths_or_credentials,
    );
}
