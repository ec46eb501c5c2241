//! The calls into resolver slots (fetch, resolve-revision): the access a resolver gets, the
//! pinning of unpinned sources, and the checks on what a resolver answers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::super::boundary::{check_fetched, check_revision, public_error};
use super::super::remote::RemoteHost;
use super::super::runtime::{CallError, Extension, ResolverAccess};
use super::super::types::{FetchError, Fetched, Source};
use super::{ExtensionHost, FetchFailure, Grants, Slot};

impl ExtensionHost {
    /// The host directory a `read_only_dirs` entry names: a grant name this host offers, or the
    /// path of one.
    pub(super) fn grantable_dir(&self, entry: &str) -> Option<&Path> {
        self.grantable_dirs
            .iter()
            .find(|(name, path)| name == entry || Path::new(entry) == path.as_path())
            .map(|(_, path)| path.as_path())
    }

    /// A resolver's effective access: what its manifest asks for, cut down to what the operator
    /// confirmed (when they confirmed anything) and to the directories this host offers.
    pub(super) fn resolver_access(
        &self,
        requested: &Grants,
        confirmed: Option<&Grants>,
    ) -> ResolverAccess {
        let allowed_hosts = requested
            .allowed_hosts
            .iter()
            .filter(|host| {
                confirmed
                    .is_none_or(|c| c.allowed_hosts.iter().any(|h| h.eq_ignore_ascii_case(host)))
            })
            .map(|host| host.to_ascii_lowercase())
            .collect();
        let mut read_only_dirs = Vec::new();
        for entry in &requested.read_only_dirs {
            if confirmed.is_some_and(|c| !c.read_only_dirs.contains(entry)) {
                continue;
            }
            match self.grantable_dir(entry) {
                Some(path) if !read_only_dirs.iter().any(|p: &PathBuf| p == path) => {
                    read_only_dirs.push(path.to_path_buf())
                }
                Some(_) => {}
                None => tracing::warn!(
                    directory = entry,
                    "a stored resolver asks for a directory this host does not offer; it is not mounted"
                ),
            }
        }
        ResolverAccess {
            allowed_hosts,
            read_only_dirs,
            quotas: self.quotas,
            remote: Some(self.remote.clone()),
        }
    }

    /// Runs git for the resolvers (its process counter is what tests read).
    pub fn remote(&self) -> &Arc<RemoteHost> {
        &self.remote
    }

    /// The active resolver of `resolver:<scheme>`. The caller keeps its own reference, so a
    /// swap during the call does not affect it.
    fn resolver(&self, scheme: &str) -> Result<Arc<Extension>, FetchFailure> {
        Slot::parse(&format!("resolver:{scheme}"))
            .and_then(|slot| self.active_extension(&slot))
            .ok_or_else(|| FetchFailure::NoResolver(scheme.to_owned()))
    }

    /// Fetches `source` into `dest` (an existing, empty directory owned by the caller) with the
    /// active resolver of `resolver:<scheme>`. A trap, deadline or memory overrun, or an answer
    /// the host cannot use, fails this fetch: it is logged with the extension's identity and
    /// counted as a fallback. On any error `dest` may hold a partial tree; discard it.
    pub async fn fetch(
        &self,
        scheme: &str,
        source: Source,
        dest: &Path,
    ) -> Result<Fetched, FetchFailure> {
        let ext = self.resolver(scheme)?;
        let source = self.pin(scheme, source);
        let dest = dest.to_path_buf();
        let started = Instant::now();
        let call = ext.clone();
        let result = tokio::task::spawn_blocking(move || call.fetch(&source, &dest))
            .await
            .unwrap_or_else(|join| Err(CallError::Trap(format!("call aborted: {join}"))));
        self.metrics.observe(&ext, &result, started.elapsed());
        let fetched = self.answer(&ext, result, "fetch")?;
        check_fetched(&fetched).map_err(|reason| self.malformed(&ext, reason))?;
        Ok(fetched)
    }

    /// The current upstream revision of `source` according to the active resolver of
    /// `resolver:<scheme>`, for drift detection. Failures are handled as in
    /// [`ExtensionHost::fetch`].
    pub async fn resolve_revision(
        &self,
        scheme: &str,
        source: Source,
    ) -> Result<String, FetchFailure> {
        let ext = self.resolver(scheme)?;
        let source = self.pin(scheme, source);
        let started = Instant::now();
        let call = ext.clone();
        let result = tokio::task::spawn_blocking(move || call.resolve_revision(&source))
            .await
            .unwrap_or_else(|join| Err(CallError::Trap(format!("call aborted: {join}"))));
        self.metrics.observe(&ext, &result, started.elapsed());
        let revision = self.answer(&ext, result, "resolve-revision")?;
        check_revision(&revision).map_err(|reason| self.malformed(&ext, reason))?;
        Ok(revision)
    }

    /// An unpinned remote source means the upstream's `HEAD` when the operator allows unpinned
    /// sources; otherwise it goes to the resolver as it is (and a remote resolver refuses it).
    /// Local sources have no revisions to pin.
    fn pin(&self, scheme: &str, mut source: Source) -> Source {
        if self.allow_unpinned && scheme != "local" && source.reference.is_none() {
            source.reference = Some("HEAD".to_owned());
        }
        source
    }

    /// The resolver's answer, or the failure of its call (logged and counted).
    fn answer<T>(
        &self,
        ext: &Extension,
        result: Result<Result<T, FetchError>, CallError>,
        what: &str,
    ) -> Result<T, FetchFailure> {
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => {
                // The message goes on to an error body: the guest's words and git's, made safe
                // once here for every caller (plugin installs, drift checks, `!external`).
                let error = public_error(error, &|m| self.remote.redact(m));
                tracing::info!(extension = %ext.identity, %error, "resolver {what} answered an error");
                Err(FetchFailure::Fetch(error))
            }
            Err(error) => {
                self.metrics.fallback(ext, &error);
                tracing::warn!(extension = %ext.identity, %error, "resolver {what} failed; the fetch fails");
                Err(FetchFailure::Failed {
                    extension: ext.identity.to_string(),
                    error,
                })
            }
        }
    }

    fn malformed(&self, ext: &Extension, reason: &'static str) -> FetchFailure {
        self.metrics.failed(ext, "malformed");
        tracing::warn!(extension = %ext.identity, reason, "resolver answered something unusable; the fetch fails");
        FetchFailure::Malformed {
            extension: ext.identity.to_string(),
            reason,
        }
    }
}
