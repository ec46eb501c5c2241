//! Org templates: listing, loading (`!include`, `!external`), planning and importing a whole
//! tree of workspaces. Every path from a template goes through [`crate::safefs`].

pub mod env;
pub mod external;
pub mod import;
pub mod plan;
pub mod template;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex};

pub use crate::safefs::RootDir;
use crate::safefs::{RelPath, SafeFsError};
use crate::services::Services;
use crate::store::StoreError;
use env::MissingWorkspaceEnv;
use external::{ExternalReport, ResolverCache};
use template::{EnvRequirement, OrgTemplate};

/// Why a template could not be listed or imported.
#[derive(Debug, thiserror::Error)]
pub enum OrgError {
    #[error("provide 'dir' or 'template'")]
    NoSource,
    #[error("invalid org directory")]
    InvalidDir,
    #[error("org template not found")]
    NotFound,
    #[error("org template expansion failed: {0}")]
    Expansion(String),
    #[error("invalid org template: {0}")]
    Invalid(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Upstream(String),
    #[error("{0}")]
    Cache(String),
    #[error("missing required environment variables")]
    MissingEnv {
        missing_env: Vec<String>,
        missing_workspace_env: Vec<MissingWorkspaceEnv>,
        required_env: Vec<EnvRequirement>,
        template: String,
    },
    #[error("database error")]
    Store(#[from] StoreError),
    #[error("the import stopped unexpectedly")]
    Aborted,
}

/// One entry of `GET /org/templates`.
#[derive(Debug, Clone)]
pub struct TemplateSummary {
    pub dir: String,
    pub name: String,
    pub description: String,
    /// Every workspace entry, `spawning: false` subtrees included.
    pub workspaces: usize,
    pub required_env: Vec<EnvRequirement>,
    pub recommended_env: Vec<EnvRequirement>,
}

/// The org templates directory as a root; `None` when it does not exist.
fn templates_root(svc: &Services) -> Option<RootDir> {
    RootDir::open(&svc.config.org.templates_dir).ok()
}

/// Opens the org directory `dir` (one or more segments) under the templates directory.
fn open_org_dir(svc: &Services, dir: &str) -> Result<RootDir, OrgError> {
    let rel = RelPath::resolve(None, dir).map_err(|_| OrgError::InvalidDir)?;
    if rel
        .as_str()
        .split('/')
        .any(|segment| segment.starts_with('.'))
    {
        return Err(OrgError::InvalidDir);
    }
    let root = templates_root(svc).ok_or(OrgError::NotFound)?;
    root.open_dir(&rel).map_err(|err| match err {
        SafeFsError::NotFound => OrgError::NotFound,
        _ => OrgError::InvalidDir,
    })
}

/// Loads and expands the template in `root` on a blocking thread, with `!external` served by
/// the resolver cache. Returns the template and what happened to each external.
async fn load_dir(
    svc: &Services,
    root: Arc<RootDir>,
) -> Result<(OrgTemplate, Vec<ExternalReport>), OrgError> {
    let extensions = svc.extensions.clone();
    let config = svc.config.clone();
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let cache = ResolverCache {
            root: &root,
            allowlist: &config.org.external_allowlist,
            default_host: &config.org.external_default_host,
            extensions,
            runtime,
            reports: Mutex::new(Vec::new()),
        };
        let template = template::load(&root, &cache)?;
        let reports = cache
            .reports
            .into_inner()
            .unwrap_or_else(|p| p.into_inner());
        Ok((template, reports))
    })
    .await
    .map_err(|_| OrgError::Aborted)?
}

/// Every template directory that loads, sorted by directory; broken ones are logged and
/// skipped.
pub async fn list_templates(svc: &Services) -> Result<Vec<TemplateSummary>, OrgError> {
    let Some(root) = templates_root(svc) else {
        return Ok(Vec::new());
    };
    let mut dirs: Vec<String> = root
        .list(None, 1)
        .map_err(|err| OrgError::Cache(format!("listing org templates: {err}")))?
        .into_iter()
        .filter(|entry| entry.dir && !entry.path.starts_with('.'))
        .map(|entry| entry.path)
        .collect();
    dirs.sort();
    let mut out = Vec::new();
    for dir in dirs {
        let loaded = match open_org_dir(svc, &dir) {
            Ok(org) => load_dir(svc, Arc::new(org)).await,
            Err(err) => Err(err),
        };
        match loaded {
            Ok((template, _)) => {
                let (required_env, recommended_env) = summary_env(&template);
                out.push(TemplateSummary {
                    workspaces: template.total_workspaces(),
                    dir,
                    name: template.name,
                    description: template.description,
                    required_env,
                    recommended_env,
                });
            }
            Err(OrgError::NotFound) => {}
            Err(err) => {
                tracing::warn!(dir, error = %err, "skipping an org template that does not load")
            }
        }
    }
    Ok(out)
}

/// The template's requirements and recommendations over all its workspaces; a recommendation
/// already required is dropped.
fn summary_env(template: &OrgTemplate) -> (Vec<EnvRequirement>, Vec<EnvRequirement>) {
    fn walk(
        list: &[template::OrgWorkspace],
        required: &mut Vec<EnvRequirement>,
        recommended: &mut Vec<EnvRequirement>,
    ) {
        for w in list {
            required.extend(w.required_env.iter().cloned());
            recommended.extend(w.recommended_env.iter().cloned());
            walk(&w.children, required, recommended);
        }
    }
    let mut required = template.required_env.clone();
    let mut recommended = template.recommended_env.clone();
    walk(&template.workspaces, &mut required, &mut recommended);
    let required = env::normalise(&required);
    let recommended = env::normalise(&recommended)
        .into_iter()
        .filter(|r| !required.contains(r))
        .collect();
    (required, recommended)
}
