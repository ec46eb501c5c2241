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
//! removed whatever happens.//!
//! `checks` vets what a resolver asks for and what git lists before anything is written,
//! `git` runs the processes of one operation under its deadline, `tree` checks and copies the
//! checked-out tree with the safefs strict walk.

mod checks;
mod git;
#[cfg(test)]
mod tests;
mod tree;

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
use checks::*;
use git::*;
pub use tree::inspect_tree;
use tree::*;

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
