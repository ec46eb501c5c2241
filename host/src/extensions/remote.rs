//! The host side of the `remote` interface: a resolver names a repository URL, the host checks it
//! against that extension's granted hosts, attaches credentials itself and runs `git`, and
//! checks the requested revision out into the call's destination directory. The guest never
//! opens a socket and never sees a token.
//!
//! Every `git` process runs with an empty environment except what is set here: a fixed `PATH`,
//! an empty temporary `HOME` (so no global configuration is read), `GIT_CONFIG_NOSYSTEM=1`,
//! `GIT_TERMINAL_PROMPT=0`, `GIT_ALLOW_PROTOCOL` (https only unless the operator widens it),
//! the operator's extra environment (e.g. `url.<base>.insteadOf` rewrites through
//! `GIT_CONFIG_COUNT/KEY/VALUE`), and per request the credential for the URL's host as an
//! `http.extraHeader`. The header travels in the process environment (command-line scope of
//! git's configuration, like `git -c`), not in the argument list, because any local user can
//! read another process's arguments but not its environment. It is never in the URL, never
//! written to a `.git/config`, and every error text is redacted of it before it is logged or
//! returned.
//!
//! A checkout runs `git init` in a scratch directory, fetches exactly the requested commit
//! (`--depth 1`), lists its tree to enforce the quotas and refuse links and submodules before
//! anything is written out, checks the tree (or the requested subdirectory) out into the
//! scratch directory, and copies it into the destination without the `.git` directory, refusing
//! symbolic links, hard links and special files again on the way. The scratch directory is
//! removed whatever happens.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use secrecy::{ExposeSecret as _, SecretString};

use super::bindings::resolver::molecule::plugin::remote as wit;
use super::runtime::HostState;
use super::types::{FetchError, FetchQuotas, RemoteRef};

/// Most remote operations (`list-refs` or `checkout`) one resolver call may make; with the
/// per-operation timeout this bounds the wall time a call can spend in the host.
pub const MAX_OPERATIONS_PER_CALL: u32 = 4;
/// Largest `git ls-remote` answer accepted.
const MAX_REFS_OUTPUT: usize = 8 * 1024 * 1024;
/// Largest tree listing accepted (the file-count quota usually stops a checkout long before).
const MAX_TREE_LISTING: usize = 32 * 1024 * 1024;
/// How much of git's stderr is kept for an error message.
const STDERR_TAIL: usize = 8 * 1024;
/// Longest error message built from git's output.
const MAX_ERROR_TEXT: usize = 400;

/// Tokens per remote host, attached by the host to requests for that host only. `Debug` shows
/// the hosts, never a token.
#[derive(Default, Clone)]
pub struct Credentials {
    tokens: HashMap<String, SecretString>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut hosts: Vec<&String> = self.tokens.keys().collect();
        hosts.sort();
        f.debug_struct("Credentials")
            .field("hosts", &hosts)
            .finish()
    }
}

impl Credentials {
    pub fn new() -> Self {
        Credentials::default()
    }

    /// Sets the token for `host` (`github.com`, or `host:port` for a non-default port).
    pub fn insert(&mut self, host: &str, token: impl Into<String>) {
        let token: String = token.into();
        if !token.is_empty() {
            self.tokens
                .insert(host.to_ascii_lowercase(), SecretString::from(token));
        }
    }

    pub fn with(mut self, host: &str, token: impl Into<String>) -> Self {
        self.insert(host, token);
        self
    }

    fn get(&self, authority: &str) -> Option<&SecretString> {
        self.tokens.get(authority)
    }

    /// `text` with every token this host holds replaced by `[redacted]`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for token in self.tokens.values() {
            let token = token.expose_secret();
            if out.contains(token) {
                out = out.replace(token, "[redacted]");
            }
        }
        out
    }
}

/// How the host runs `git` for resolvers.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    /// The git program; looked up in `path` when it is a bare name.
    pub git: PathBuf,
    /// `PATH` for git and its helpers. Fixed rather than inherited: the host's environment
    /// never reaches a git process.
    pub path: OsString,
    /// Where per-operation scratch directories (the temporary repository, `HOME`) are made.
    pub scratch_dir: PathBuf,
    /// Wall-time limit of one remote operation (all of its git processes together); past it
    /// the processes are killed and the operation answers `timeout`.
    pub timeout: Duration,
    /// `GIT_ALLOW_PROTOCOL`: the transports git may use after URL rewriting. Guests can only
    /// name `https://` URLs; widening this matters only for operator rewrites (tests map
    /// `https://git.test/` to `file://` repositories).
    pub allowed_protocols: String,
    /// Extra environment for every git process, set by the operator (or a test). Git
    /// configuration given as `GIT_CONFIG_COUNT`/`GIT_CONFIG_KEY_<n>`/`GIT_CONFIG_VALUE_<n>` is
    /// kept and the host's own entries are appended after it.
    pub extra_env: Vec<(String, String)>,
}

impl RemoteConfig {
    pub fn new(scratch_dir: impl Into<PathBuf>) -> Self {
        RemoteConfig {
            git: PathBuf::from("git"),
            path: OsString::from("/usr/local/bin:/usr/bin:/bin"),
            scratch_dir: scratch_dir.into(),
            timeout: Duration::from_secs(120),
            allowed_protocols: "https".to_owned(),
            extra_env: Vec::new(),
        }
    }
}

/// Runs the remote operations of every resolver call. One per host, shared by all resolvers;
/// what a call may reach comes from that call's grant.
pub struct RemoteHost {
    config: RemoteConfig,
    /// The operator's git configuration, lifted out of `GIT_CONFIG_*` in the extra env.
    git_config: Vec<(String, String)>,
    /// The extra env without the `GIT_CONFIG_*` entries.
    plain_env: Vec<(String, String)>,
    credentials: Credentials,
    processes: AtomicU64,
}

impl std::fmt::Debug for RemoteHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteHost")
            .field("git", &self.config.git)
            .field("timeout", &self.config.timeout)
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

impl RemoteHost {
    /// Checks the configuration and creates the scratch directory.
    pub fn new(config: RemoteConfig, credentials: Credentials) -> anyhow::Result<Self> {
        let is_config_var = |k: &str| {
            k == "GIT_CONFIG_COUNT"
                || k.starts_with("GIT_CONFIG_KEY_")
                || k.starts_with("GIT_CONFIG_VALUE_")
        };
        let vars: HashMap<&str, &str> = config
            .extra_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let count: usize = match vars.get("GIT_CONFIG_COUNT") {
            None => 0,
            Some(n) => n
                .parse()
                .context("GIT_CONFIG_COUNT in the git environment is not a number")?,
        };
        let mut git_config = Vec::with_capacity(count);
        for i in 0..count {
            let key = vars
                .get(format!("GIT_CONFIG_KEY_{i}").as_str())
                .with_context(|| {
                    format!("GIT_CONFIG_KEY_{i} is missing from the git environment")
                })?;
            let value = vars
                .get(format!("GIT_CONFIG_VALUE_{i}").as_str())
                .with_context(|| {
                    format!("GIT_CONFIG_VALUE_{i} is missing from the git environment")
                })?;
            git_config.push(((*key).to_owned(), (*value).to_owned()));
        }
        let plain_env = config
            .extra_env
            .iter()
            .filter(|(k, _)| !is_config_var(k))
            .cloned()
            .collect();
        fs::create_dir_all(&config.scratch_dir).with_context(|| {
            format!(
                "creating the resolver scratch directory {}",
                config.scratch_dir.display()
            )
        })?;
        Ok(RemoteHost {
            config,
            git_config,
            plain_env,
            credentials,
            processes: AtomicU64::new(0),
        })
    }

    /// How many git processes this host has started (or tried to start).
    pub fn git_processes(&self) -> u64 {
        self.processes.load(Ordering::SeqCst)
    }

    /// `text` with every credential redacted.
    pub fn redact(&self, text: &str) -> String {
        self.credentials.redact(text)
    }

    /// The refs the repository at `url` advertises (`git ls-remote`), if its host is granted.
    pub fn list_refs(
        &self,
        allowed_hosts: &[String],
        url: &str,
    ) -> Result<Vec<RemoteRef>, FetchError> {
        let remote = admit(allowed_hosts, url)?;
        let scratch = Scratch::new(&self.config.scratch_dir)?;
        let git = Git::new(self, &scratch, &remote);
        let out = git
            .run(
                &scratch.root,
                &["ls-remote", "--", url],
                true,
                MAX_REFS_OUTPUT,
            )
            .map_err(|e| self.failure("listing the refs of", url, e))?;
        parse_refs(&out)
    }

    /// Fetches exactly `revision` of the repository at `url` and copies its tree (or `subdir`
    /// of it) into `dest`, if the host is granted and the tree fits `quotas`.
    pub fn checkout(
        &self,
        allowed_hosts: &[String],
        quotas: &FetchQuotas,
        dest: &Path,
        url: &str,
        revision: &str,
        subdir: Option<&str>,
    ) -> Result<(), FetchError> {
        let remote = admit(allowed_hosts, url)?;
        if !is_full_sha(revision) {
            return Err(FetchError::InvalidSource(format!(
                "`{}` is not a full commit id: resolve the ref with list-refs first",
                revision.escape_debug()
            )));
        }
        let revision = revision.to_ascii_lowercase();
        if let Some(subdir) = subdir {
            validate_subdir(subdir)?;
        }
        match fs::symlink_metadata(dest) {
            Ok(meta) if meta.is_dir() => {}
            _ => {
                return Err(FetchError::Denied(
                    "this call has no destination directory".into(),
                ));
            }
        }
        let scratch = Scratch::new(&self.config.scratch_dir)?;
        let git = Git::new(self, &scratch, &remote);
        let repo = scratch.root.join("repo");
        let tree = scratch.root.join("tree");
        fs::create_dir(&tree).map_err(|e| scratch_error(&e))?;
        let failed = |what: &'static str| move |e: GitError| self.failure(what, url, e);

        git.run(
            &scratch.root,
            &["init", "--quiet", "--template=", "repo"],
            false,
            0,
        )
        .map_err(failed("preparing a checkout of"))?;
        git.run(
            &repo,
            &[
                "fetch",
                "--quiet",
                "--depth=1",
                "--no-tags",
                "--no-recurse-submodules",
                "--",
                url,
                &revision,
            ],
            true,
            0,
        )
        .map_err(failed("fetching"))?;
        // `^{commit}` makes sure the id names a commit, not a tree or blob someone pushed.
        let treeish = match subdir {
            Some(subdir) => format!("{revision}^{{commit}}:{subdir}"),
            None => format!("{revision}^{{commit}}"),
        };
        let listing = git
            .run(
                &repo,
                &["ls-tree", "-r", "-t", "-l", "-z", "--full-tree", &treeish],
                false,
                MAX_TREE_LISTING,
            )
            .map_err(|e| match (e, subdir) {
                (GitError::Failed { .. }, Some(subdir)) => {
                    FetchError::NotFound(format!("`{subdir}` is not a directory at {revision}"))
                }
                (GitError::TooMuchOutput, _) => {
                    FetchError::TooLarge("the tree listing alone exceeds the host's limit".into())
                }
                (e, _) => self.failure("reading the tree of", url, e),
            })?;
        check_listing(&listing, quotas)?;
        git.run(&repo, &["read-tree", &treeish], false, 0)
            .map_err(failed("reading the tree of"))?;
        let prefix = format!("{}/", tree.display());
        git.run(
            &repo,
            &[
                "checkout-index",
                "--all",
                "--force",
                &format!("--prefix={prefix}"),
            ],
            false,
            0,
        )
        .map_err(failed("checking out"))?;
        copy_tree(&tree, dest, quotas)?;
        Ok(())
    }

    /// The `FetchError` for a failed git run, redacted and cut short.
    fn failure(&self, what: &str, url: &str, err: GitError) -> FetchError {
        let error = match err {
            GitError::Timeout => FetchError::Timeout,
            GitError::Spawn(e) => FetchError::Upstream(format!(
                "git could not be started on the host ({})",
                e.kind()
            )),
            GitError::TooMuchOutput => {
                FetchError::Upstream(format!("{what} {url}: the answer was too large"))
            }
            GitError::Failed { stderr } => {
                let stderr = self.redact(&stderr);
                let detail = summarise(&stderr);
                let lower = stderr.to_ascii_lowercase();
                let message = format!("{what} {url} failed: {detail}");
                if [
                    "not found",
                    "does not exist",
                    "does not appear to be a git repository",
                    "not our ref",
                    "couldn't find remote ref",
                    "no such remote ref",
                    "unadvertised object",
                ]
                .iter()
                .any(|m| lower.contains(m))
                {
                    FetchError::NotFound(message)
                } else if [
                    "authentication failed",
                    "returned error: 401",
                    "returned error: 403",
                    "access denied",
                ]
                .iter()
                .any(|m| lower.contains(m))
                {
                    FetchError::Denied(message)
                } else {
                    FetchError::Upstream(message)
                }
            }
        };
        // Belt and braces: nothing above should carry a token, but the URL and git's words
        // pass through here once more.
        error.map_message(|m| self.redact(&m))
    }
}

/// A URL a resolver may reach: `https://`, no credentials in it, host granted.
struct Admitted {
    /// `host` or `host:port`, lowercased: what grants and credentials are keyed by.
    authority: String,
}

fn admit(allowed_hosts: &[String], url: &str) -> Result<Admitted, FetchError> {
    let denied = |why: &str| FetchError::Denied(format!("{why}: {}", url.escape_debug()));
    if url.len() > 2048 || url.chars().any(|c| !c.is_ascii_graphic()) {
        return Err(denied("not a plain https URL"));
    }
    let Some(rest) = url.strip_prefix("https://") else {
        return Err(denied("only https URLs are fetched"));
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.contains('@') {
        return Err(FetchError::Denied(
            "credentials do not belong in a URL: the host attaches them itself".into(),
        ));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && !host.starts_with(['-', '.'])
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p != 0));
    let path_ok = !path.is_empty()
        && !path.contains(['?', '#', '\\'])
        && path.split('/').all(|segment| segment != "..");
    if !host_ok || !port_ok || !path_ok {
        return Err(denied("not a plain https URL"));
    }
    let authority = match port {
        Some("443") => host.to_ascii_lowercase(),
        _ => authority.to_ascii_lowercase(),
    };
    if !allowed_hosts
        .iter()
        .any(|granted| granted.eq_ignore_ascii_case(&authority))
    {
        return Err(FetchError::Denied(format!(
            "host `{authority}` is not granted to this resolver"
        )));
    }
    Ok(Admitted { authority })
}

fn is_full_sha(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A subdirectory of a repository: `/`-separated plain names, no `.`, `..`, `.git`, or
/// anything git could read as revision syntax.
fn validate_subdir(subdir: &str) -> Result<(), FetchError> {
    let ok = subdir.len() <= 1024
        && subdir.split('/').all(|segment| {
            !segment.is_empty()
                && !segment.starts_with('-')
                && segment.bytes().any(|b| b != b'.')
                && !segment.eq_ignore_ascii_case(".git")
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        });
    if ok {
        Ok(())
    } else {
        Err(FetchError::InvalidSource(format!(
            "`{}` is not a plain relative directory",
            subdir.escape_debug()
        )))
    }
}

/// Parses `git ls-remote` output: `<sha>\t<ref>` per line.
fn parse_refs(out: &[u8]) -> Result<Vec<RemoteRef>, FetchError> {
    let text = std::str::from_utf8(out).map_err(|_| {
        FetchError::Upstream("the remote advertised a ref that is not UTF-8".into())
    })?;
    text.lines()
        .filter(|line| !line.is_empty())
        .map(|line| {
            let (revision, name) = line.split_once('\t').ok_or_else(|| {
                FetchError::Upstream("the remote answered something unreadable".into())
            })?;
            Ok(RemoteRef {
                name: name.to_owned(),
                revision: revision.to_owned(),
            })
        })
        .collect()
}

/// Checks a `git ls-tree -r -t -l -z` listing against the quotas before anything is written:
/// only directories and regular files, no links or submodules, paths git itself would check
/// out safely.
fn check_listing(listing: &[u8], quotas: &FetchQuotas) -> Result<(), FetchError> {
    let mut files = 0u64;
    let mut bytes = 0u64;
    for entry in listing.split(|b| *b == 0).filter(|e| !e.is_empty()) {
        let entry = std::str::from_utf8(entry)
            .map_err(|_| FetchError::Denied("the tree holds a path that is not UTF-8".into()))?;
        let (meta, path) = entry
            .split_once('\t')
            .ok_or_else(|| FetchError::Upstream("git listed the tree unreadably".into()))?;
        let mut fields = meta.split_whitespace();
        let (mode, size) = (fields.next().unwrap_or(""), fields.nth(2).unwrap_or("-"));
        if path
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == ".." || s.eq_ignore_ascii_case(".git"))
        {
            return Err(FetchError::Denied(format!(
                "the tree holds the unsafe path `{}`",
                path.escape_debug()
            )));
        }
        let depth = path.split('/').count();
        if depth > quotas.max_depth {
            return Err(FetchError::TooLarge(format!(
                "`{}` is nested deeper than {} levels",
                path.escape_debug(),
                quotas.max_depth
            )));
        }
        match mode {
            "040000" => {}
            "100644" | "100755" => {
                files += 1;
                bytes = bytes.saturating_add(size.parse::<u64>().unwrap_or(u64::MAX));
                over_quota(files, bytes, quotas)?;
            }
            "120000" => {
                return Err(FetchError::Denied(format!(
                    "`{}` is a symbolic link; links in fetched trees are refused",
                    path.escape_debug()
                )));
            }
            "160000" => {
                return Err(FetchError::Denied(format!(
                    "`{}` is a submodule; submodules are not fetched",
                    path.escape_debug()
                )));
            }
            other => {
                return Err(FetchError::Denied(format!(
                    "`{}` has the unsupported mode {other}",
                    path.escape_debug()
                )));
            }
        }
    }
    Ok(())
}

fn over_quota(files: u64, bytes: u64, quotas: &FetchQuotas) -> Result<(), FetchError> {
    if files > quotas.max_files {
        return Err(FetchError::TooLarge(format!(
            "more than {} files",
            quotas.max_files
        )));
    }
    if bytes > quotas.max_bytes {
        return Err(FetchError::TooLarge(format!(
            "more than {} bytes",
            quotas.max_bytes
        )));
    }
    Ok(())
}

/// Checks the tree under `root` against the quotas: only directories and regular files with a
/// single link each, within the file count, total size and depth.
pub fn inspect_tree(root: &Path, quotas: &FetchQuotas) -> Result<(), FetchError> {
    Walk::new(quotas).dir(root, None, "", 0)
}

/// Copies the tree under `from` into `to` with the checks of [`inspect_tree`]. Nothing in `to`
/// is followed or overwritten: every directory is created and every file created new, so an
/// entry that already exists there (a link the guest made, say) fails the copy.
fn copy_tree(from: &Path, to: &Path, quotas: &FetchQuotas) -> Result<(), FetchError> {
    Walk::new(quotas).dir(from, Some(to), "", 0)
}

struct Walk<'q> {
    quotas: &'q FetchQuotas,
    files: u64,
    bytes: u64,
}

impl<'q> Walk<'q> {
    fn new(quotas: &'q FetchQuotas) -> Self {
        Walk {
            quotas,
            files: 0,
            bytes: 0,
        }
    }

    fn dir(
        &mut self,
        dir: &Path,
        copy_to: Option<&Path>,
        rel: &str,
        depth: usize,
    ) -> Result<(), FetchError> {
        let mut entries = fs::read_dir(dir)
            .and_then(|read| read.collect::<io::Result<Vec<_>>>())
            .map_err(|e| tree_error("listing", rel, &e))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name();
            let shown = name.to_string_lossy();
            let rel = if rel.is_empty() {
                shown.into_owned()
            } else {
                format!("{rel}/{shown}")
            };
            let depth = depth + 1;
            if depth > self.quotas.max_depth {
                return Err(FetchError::TooLarge(format!(
                    "`{rel}` is nested deeper than {} levels",
                    self.quotas.max_depth
                )));
            }
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).map_err(|e| tree_error("reading", &rel, &e))?;
            let kind = meta.file_type();
            if kind.is_symlink() {
                return Err(FetchError::Denied(format!(
                    "`{rel}` is a symbolic link; links in fetched trees are refused"
                )));
            } else if kind.is_dir() {
                let target = match copy_to {
                    Some(to) => {
                        let target = to.join(&name);
                        fs::create_dir(&target).map_err(|e| write_error(&rel, &e))?;
                        Some(target)
                    }
                    None => None,
                };
                self.dir(&path, target.as_deref(), &rel, depth)?;
            } else if kind.is_file() {
                if meta.nlink() > 1 {
                    return Err(FetchError::Denied(format!(
                        "`{rel}` is a hard link; links in fetched trees are refused"
                    )));
                }
                self.files += 1;
                self.bytes = self.bytes.saturating_add(meta.len());
                over_quota(self.files, self.bytes, self.quotas)?;
                if let Some(to) = copy_to {
                    copy_file(&path, &to.join(&name), meta.mode(), &rel)?;
                }
            } else {
                return Err(FetchError::Denied(format!(
                    "`{rel}` is neither a regular file nor a directory"
                )));
            }
        }
        Ok(())
    }
}

fn copy_file(from: &Path, to: &Path, mode: u32, rel: &str) -> Result<(), FetchError> {
    let mut input = fs::File::open(from).map_err(|e| tree_error("reading", rel, &e))?;
    let mut output = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)
        .map_err(|e| write_error(rel, &e))?;
    io::copy(&mut input, &mut output).map_err(|e| write_error(rel, &e))?;
    let mode = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
    output
        .set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| write_error(rel, &e))?;
    Ok(())
}

fn tree_error(what: &str, rel: &str, e: &io::Error) -> FetchError {
    FetchError::Upstream(format!("{what} `{rel}` failed ({})", e.kind()))
}

fn write_error(rel: &str, e: &io::Error) -> FetchError {
    if e.kind() == io::ErrorKind::AlreadyExists {
        FetchError::Denied(format!(
            "`{rel}` already exists in the destination; a checkout never overwrites"
        ))
    } else {
        FetchError::Upstream(format!("writing `{rel}` failed ({})", e.kind()))
    }
}

fn scratch_error(e: &io::Error) -> FetchError {
    tracing::error!(error = %e, "the resolver scratch directory is unusable");
    FetchError::Upstream("the host could not prepare the checkout".into())
}

/// What git said went wrong, on one line and cut short: its first two `fatal:`/`error:` lines,
/// else its last two lines.
fn summarise(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("hint:"))
        .collect();
    let errors: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("fatal:") || l.starts_with("error:"))
        .take(2)
        .map(reason_of)
        .collect();
    let tail = if errors.is_empty() {
        lines[lines.len().saturating_sub(2)..].join(" / ")
    } else {
        errors.join(" / ")
    };
    let tail = if tail.is_empty() {
        "git gave no reason".to_owned()
    } else {
        tail
    };
    if tail.len() <= MAX_ERROR_TEXT {
        return tail;
    }
    let mut end = MAX_ERROR_TEXT;
    while !tail.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &tail[..end])
}

/// git's reason in one of its error lines: without the `fatal:` or `error:` label and without
/// curl's `unable to access '<url>': ` (the caller names the URL it asked for; git would name
/// the one a configured rewrite made of it).
fn reason_of(line: &str) -> &str {
    let line = line
        .strip_prefix("fatal:")
        .or_else(|| line.strip_prefix("error:"))
        .unwrap_or(line)
        .trim_start();
    if let Some(rest) = line.strip_prefix("unable to access '")
        && let Some((_, reason)) = rest.split_once("': ")
    {
        return reason;
    }
    line
}

/// A directory of one remote operation, removed when the operation ends.
struct Scratch {
    root: PathBuf,
    home: PathBuf,
}

impl Scratch {
    fn new(base: &Path) -> Result<Self, FetchError> {
        let root = base.join(format!("op-{}", uuid::Uuid::new_v4().simple()));
        let home = root.join("home");
        fs::create_dir_all(&home).map_err(|e| scratch_error(&e))?;
        Ok(Scratch { root, home })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.root) {
            tracing::warn!(error = %e, dir = %self.root.display(), "removing a resolver scratch directory failed");
        }
    }
}

enum GitError {
    Spawn(io::Error),
    Timeout,
    TooMuchOutput,
    Failed { stderr: String },
}

/// Runs the git processes of one operation under one deadline.
struct Git<'a> {
    host: &'a RemoteHost,
    home: &'a Path,
    deadline: Instant,
    /// The credential for the operation's host, attached only to commands that talk to it.
    token: Option<&'a SecretString>,
}

impl<'a> Git<'a> {
    fn new(host: &'a RemoteHost, scratch: &'a Scratch, remote: &Admitted) -> Self {
        Git {
            host,
            home: &scratch.home,
            deadline: Instant::now() + host.config.timeout,
            token: host.credentials.get(&remote.authority),
        }
    }

    fn command(&self, cwd: &Path, args: &[&str], network: bool) -> Command {
        let config = &self.host.config;
        let mut cmd = Command::new(&config.git);
        cmd.env_clear()
            .env("PATH", &config.path)
            .env("LC_ALL", "C")
            .env("LANG", "C");
        for (key, value) in &self.host.plain_env {
            cmd.env(key, value);
        }
        cmd.env("HOME", self.home)
            .env("XDG_CONFIG_HOME", self.home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ALLOW_PROTOCOL", &config.allowed_protocols);
        let mut git_config: Vec<(&str, &str)> = self
            .host
            .git_config
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        // A redirect could lead to a host outside the grant; the grant is checked only once.
        git_config.push(("http.followRedirects", "false"));
        git_config.push(("init.defaultBranch", "main"));
        let header;
        if let (true, Some(token)) = (network, self.token) {
            header = format!("Authorization: Bearer {}", token.expose_secret());
            git_config.push(("http.extraHeader", &header));
        }
        cmd.env("GIT_CONFIG_COUNT", git_config.len().to_string());
        for (i, (key, value)) in git_config.iter().enumerate() {
            cmd.env(format!("GIT_CONFIG_KEY_{i}"), key)
                .env(format!("GIT_CONFIG_VALUE_{i}"), value);
        }
        cmd.args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a timeout kills git's helpers too.
            .process_group(0);
        cmd
    }

    /// Runs git with `args` in `cwd` and returns its stdout (at most `max_stdout` bytes; more
    /// is an error). `network` says whether the command talks to the remote and so gets the
    /// credential.
    fn run(
        &self,
        cwd: &Path,
        args: &[&str],
        network: bool,
        max_stdout: usize,
    ) -> Result<Vec<u8>, GitError> {
        if Instant::now() >= self.deadline {
            return Err(GitError::Timeout);
        }
        self.host.processes.fetch_add(1, Ordering::SeqCst);
        let mut child = self
            .command(cwd, args, network)
            .spawn()
            .map_err(GitError::Spawn)?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            kill(&mut child);
            return Err(GitError::Spawn(io::Error::other("no pipes")));
        };
        let out = std::thread::spawn(move || read_capped(stdout, max_stdout));
        let err = std::thread::spawn(move || read_tail(stderr, STDERR_TAIL));
        let mut pause = Duration::from_millis(1);
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => {}
                Err(e) => {
                    kill(&mut child);
                    return Err(GitError::Spawn(e));
                }
            }
            let now = Instant::now();
            if now >= self.deadline {
                // The reader threads end when the killed processes' pipes close; they are not
                // waited for.
                kill(&mut child);
                return Err(GitError::Timeout);
            }
            std::thread::sleep(pause.min(self.deadline - now));
            pause = (pause * 2).min(Duration::from_millis(20));
        };
        let (stdout, overflow) = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        if !status.success() {
            return Err(GitError::Failed { stderr });
        }
        if overflow {
            return Err(GitError::TooMuchOutput);
        }
        Ok(stdout)
    }
}

/// Kills the process group of `child` (git and the helpers it started), then `child`.
fn kill(child: &mut Child) {
    let group = format!("-{}", child.id());
    // `kill(1)` rather than a syscall: this crate keeps `unsafe` out and has no signal crate.
    let _ = Command::new("kill")
        .args(["-KILL", "--", &group])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

/// Reads everything, keeping at most `cap` bytes; says whether more came.
fn read_capped(mut pipe: impl Read, cap: usize) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut overflow = false;
    let mut buf = [0u8; 16 * 1024];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                overflow |= n > room;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    (kept, overflow)
}

/// Reads everything, keeping the last `cap` bytes as text.
fn read_tail(mut pipe: impl Read, cap: usize) -> String {
    let mut kept: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8 * 1024];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > cap {
                    kept.drain(..kept.len() - cap);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// The remote access of one resolver call: its grant, its destination (none for
/// `resolve-revision`) and how many operations it has made.
pub(super) struct RemoteCall {
    pub(super) host: Option<Arc<RemoteHost>>,
    pub(super) allowed_hosts: Arc<[String]>,
    pub(super) quotas: FetchQuotas,
    pub(super) dest: Option<PathBuf>,
    pub(super) operations: u32,
}

impl RemoteCall {
    fn admit_operation(&mut self) -> Result<Arc<RemoteHost>, FetchError> {
        let host = self.host.clone().ok_or_else(|| {
            FetchError::Denied("this host runs no remote fetches for resolvers".into())
        })?;
        if self.operations >= MAX_OPERATIONS_PER_CALL {
            return Err(FetchError::Denied(format!(
                "at most {MAX_OPERATIONS_PER_CALL} remote operations per call"
            )));
        }
        self.operations += 1;
        Ok(host)
    }
}

impl HostState {
    /// Runs `op` as a remote operation of this call, counting its time as host time (not part
    /// of the guest's deadline) and logging the outcome without any credential.
    fn remote_op<T>(
        &mut self,
        what: &str,
        url: &str,
        op: impl FnOnce(&mut RemoteCall, &RemoteHost) -> Result<T, FetchError>,
    ) -> Result<T, FetchError> {
        let started = Instant::now();
        let result = match self.remote.as_mut() {
            None => Err(FetchError::Denied(
                "remote access is only for resolvers".into(),
            )),
            Some(call) => {
                // The grant check happens inside `op`, before any process starts; the operation
                // budget is only spent on admitted URLs.
                match admit(&call.allowed_hosts, url) {
                    Err(e) => Err(e),
                    Ok(_) => call.admit_operation().and_then(|host| {
                        let result = op(call, &host);
                        result.map_err(|e| e.map_message(|m| host.redact(&m)))
                    }),
                }
            }
        };
        let elapsed = started.elapsed();
        self.host_time += elapsed;
        let extension = &*self.label;
        match &result {
            Ok(_) => tracing::debug!(extension, url, ?elapsed, "remote {what} done"),
            Err(error) => tracing::info!(extension, url, %error, "remote {what} refused or failed"),
        }
        result
    }
}

impl wit::Host for HostState {
    fn list_refs(&mut self, url: String) -> Result<Vec<wit::RemoteRef>, wit::FetchError> {
        self.remote_op("list-refs", &url, |call, host| {
            host.list_refs(&call.allowed_hosts, &url)
        })
        .map(|refs| refs.into_iter().map(Into::into).collect())
        .map_err(Into::into)
    }

    fn checkout(
        &mut self,
        url: String,
        revision: String,
        subdir: Option<String>,
    ) -> Result<(), wit::FetchError> {
        self.remote_op("checkout", &url, |call, host| {
            let dest = call.dest.clone().ok_or_else(|| {
                FetchError::Denied("resolve-revision has no destination to check out into".into())
            })?;
            host.checkout(
                &call.allowed_hosts,
                &call.quotas,
                &dest,
                &url,
                &revision,
                subdir.as_deref(),
            )
        })
        .map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
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
}
