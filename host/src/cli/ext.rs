//! `molecule ext`: scaffold, build, validate and test extension components locally, and manage
//! them on a running host through its admin API.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use clap::Subcommand;
use serde_json::{Value, json};

use crate::extensions::engine::{self, ExtensionEngine};
use crate::extensions::registry::{Grants, Manifest, Slot, effective_limits};
use crate::extensions::runtime::{Extension, Identity};
use crate::extensions::types::{FileChange, SlotKind, Trigger, WorkspaceInfo};

use super::Remote;

#[derive(Debug, Subcommand)]
pub enum ExtCommand {
    /// Scaffold a new extension crate that builds and passes its own test.
    New {
        /// classifier, restart-policy or resolver
        kind: String,
        /// The crate name (lowercase letters, digits and dashes).
        name: String,
        /// Where the crate is created (default: ./<name>).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The guest SDK to depend on (default: the one this binary was built from).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Build the extension crate in DIR for wasm32-wasip2 and print the component's path.
    Build {
        /// The extension crate's directory (the one holding its Cargo.toml).
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Check a component for a slot exactly as the host does at upload (world, API version,
    /// imports, a self-check call) and print the result as JSON.
    Validate {
        /// The component (.wasm) to check.
        file: PathBuf,
        /// The slot it is meant for: classifier, restart-policy or resolver:<scheme>.
        #[arg(long)]
        slot: String,
    },
    /// Run a component on one input case in the real runtime, with the host's default limits,
    /// and print its answer as JSON. The case is `{"changes": [...]}` for a classifier or
    /// `{"workspace": {...}, "trigger": {...}}` for a restart policy.
    Test {
        /// The component (.wasm) to run.
        file: PathBuf,
        /// A JSON file with the input case.
        #[arg(long)]
        input: PathBuf,
    },
    /// Upload a component to a host (`--manifest` is the manifest JSON file).
    Install {
        /// The component (.wasm) to upload.
        file: PathBuf,
        /// A JSON file: {"name", "version", "slot", "grants"?}.
        #[arg(long)]
        manifest: PathBuf,
        #[command(flatten)]
        remote: Remote,
    },
    /// List the host's extensions and slots.
    List {
        #[command(flatten)]
        remote: Remote,
    },
    /// Make an uploaded version active in its slot.
    Activate {
        /// The extension id (from `molecule ext list` or the install answer).
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Re-activate the previous version of a slot.
    Rollback {
        /// classifier, restart-policy or resolver:<scheme>.
        slot: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Run an uploaded version in shadow beside its slot's active version.
    Shadow {
        /// The extension id to run in shadow.
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Print the shadow report of a slot.
    Report {
        /// classifier, restart-policy or resolver:<scheme>.
        slot: String,
        #[command(flatten)]
        remote: Remote,
    },
}

pub async fn run(command: ExtCommand) -> anyhow::Result<()> {
    match command {
        ExtCommand::New {
            kind,
            name,
            dir,
            sdk,
        } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let sdk =
                sdk.unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk"));
            scaffold(&kind, &name, &dir, &sdk)?;
            super::print_line(&format!(
                "created {} ({kind} extension); build it with `molecule ext build {}`",
                dir.display(),
                dir.display()
            ))?;
        }
        ExtCommand::Build { dir } => super::print_line(&build(&dir)?.display().to_string())?,
        ExtCommand::Validate { file, slot } => {
            let slot = Slot::parse(&slot)
                .context("slot must be classifier, restart-policy or resolver:<scheme>")?;
            let report =
                tokio::task::spawn_blocking(move || validate(&file, slot.kind())).await??;
            super::print_line(&serde_json::to_string_pretty(&report)?)?;
        }
        ExtCommand::Test { file, input } => {
            let answer = tokio::task::spawn_blocking(move || test_case(&file, &input)).await??;
            super::print_line(&serde_json::to_string_pretty(&answer)?)?;
        }
        ExtCommand::Install {
            file,
            manifest,
            remote,
        } => {
            let manifest: Manifest =
                serde_json::from_slice(&std::fs::read(&manifest).context("reading the manifest")?)
                    .context("the manifest must be {name, version, slot, grants?}")?;
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let body = json!({ "manifest": manifest, "component": base64::engine::general_purpose::STANDARD.encode(bytes) });
            remote
                .call(reqwest::Method::POST, "/admin/extensions", Some(body))
                .await?;
        }
        ExtCommand::List { remote } => {
            remote
                .call(reqwest::Method::GET, "/admin/extensions", None)
                .await?
        }
        ExtCommand::Activate { id, remote } => {
            remote
                .call(
                    reqwest::Method::POST,
                    &format!("/admin/extensions/{id}/activate"),
                    Some(json!({})),
                )
                .await?
        }
        ExtCommand::Rollback { slot, remote } => {
            remote
                .call(
                    reqwest::Method::POST,
                    &format!("/admin/extensions/{slot}/rollback"),
                    Some(json!({})),
                )
                .await?
        }
        ExtCommand::Shadow { id, remote } => {
            remote
                .call(
                    reqwest::Method::POST,
                    &format!("/admin/extensions/{id}/shadow"),
                    Some(json!({})),
                )
                .await?
        }
        ExtCommand::Report { slot, remote } => {
            remote
                .call(
                    reqwest::Method::GET,
                    &format!("/admin/extensions/{slot}/shadow-report"),
                    None,
                )
                .await?
        }
    }
    Ok(())
}

/// An engine for one CLI run, with its artefact cache in a temporary directory.
fn local_engine() -> anyhow::Result<(ExtensionEngine, tempfile::TempDir)> {
    let dir = tempfile::tempdir().context("creating a temporary cache")?;
    let engine = ExtensionEngine::new(dir.path())?;
    engine.start_ticker();
    Ok((engine, dir))
}

fn load(engine: &ExtensionEngine, file: &Path, kind: SlotKind) -> anyhow::Result<Extension> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let identity = Identity {
        name: file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        version: "local".into(),
        digest: engine::digest(&bytes),
    };
    Ok(Extension::load(
        engine,
        kind,
        identity,
        &bytes,
        effective_limits(&Grants::default(), None),
    )?)
}

/// What `ext validate` reports.
pub fn validate(file: &Path, kind: SlotKind) -> anyhow::Result<Value> {
    let (engine, _cache) = local_engine()?;
    let ext = load(&engine, file, kind)?;
    let self_check = ext.self_check().context("the self-check call failed")?;
    engine.stop_ticker();
    Ok(json!({
        "valid": true,
        "slot_kind": kind.as_str(),
        "digest": ext.identity.digest,
        "self_check_us": self_check.as_micros(),
        "limits": { "deadline_ms": ext.limits.deadline.as_millis(), "memory_bytes": ext.limits.memory_bytes },
    }))
}

/// What `ext test` prints: the answer of one call on the case in `input`.
pub fn test_case(file: &Path, input: &Path) -> anyhow::Result<Value> {
    let case: Value = serde_json::from_slice(
        &std::fs::read(input).with_context(|| format!("reading {}", input.display()))?,
    )
    .context("the input case must be JSON")?;
    let (engine, _cache) = local_engine()?;
    let started = Instant::now();
    let answer = if let Some(changes) = case.get("changes") {
        let changes: Vec<FileChange> =
            serde_json::from_value(changes.clone()).context("reading `changes`")?;
        let ext = load(&engine, file, SlotKind::Classifier)?;
        json!({ "slot": "classifier", "reload": ext.classify(&changes)? })
    } else if let (Some(workspace), Some(trigger)) = (case.get("workspace"), case.get("trigger")) {
        let workspace: WorkspaceInfo =
            serde_json::from_value(workspace.clone()).context("reading `workspace`")?;
        let trigger: Trigger =
            serde_json::from_value(trigger.clone()).context("reading `trigger`")?;
        let ext = load(&engine, file, SlotKind::RestartPolicy)?;
        json!({ "slot": "restart-policy", "decision": ext.decide(&workspace, &trigger)? })
    } else {
        bail!(
            "the input case needs `changes` (classifier) or `workspace` and `trigger` (restart policy)"
        );
    };
    engine.stop_ticker();
    let mut answer = answer;
    answer["elapsed_us"] = json!(started.elapsed().as_micros());
    Ok(answer)
}

/// `cargo build --target wasm32-wasip2 --release` in `dir`; returns the component's path.
pub fn build(dir: &Path) -> anyhow::Result<PathBuf> {
    let manifest: toml_name::Package = toml_name::read(&dir.join("Cargo.toml"))?;
    let started = Instant::now();
    // cargo's own lines (and its progress bar on a terminal) follow on stderr.
    eprintln!(
        "[1/2] building {} for wasm32-wasip2 (cargo build --release)",
        manifest.name
    );
    let status = std::process::Command::new("cargo")
        .args(["build", "--target", "wasm32-wasip2", "--release"])
        .current_dir(dir)
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("cargo build failed");
    }
    eprintln!("[2/2] locating the component");
    let target = std::process::Command::new("cargo")
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(dir)
        .output()
        .context("running cargo metadata")?;
    let metadata: Value =
        serde_json::from_slice(&target.stdout).context("reading cargo metadata")?;
    let target_dir = metadata["target_directory"]
        .as_str()
        .context("cargo metadata has no target directory")?;
    let wasm = Path::new(target_dir)
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", manifest.name.replace('-', "_")));
    anyhow::ensure!(
        wasm.is_file(),
        "cargo built no component at {}",
        wasm.display()
    );
    let size = std::fs::metadata(&wasm).map_or(0, |m| m.len());
    eprintln!(
        "built {} ({size} bytes) in {:.1} s",
        wasm.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(wasm)
}

/// Reads the package name from a Cargo.toml without a TOML dependency of our own.
mod toml_name {
    use anyhow::Context as _;

    #[derive(Debug)]
    pub struct Package {
        pub name: String,
    }

    pub fn read(path: &std::path::Path) -> anyhow::Result<Package> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut in_package = false;
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                in_package = line == "[package]";
            } else if in_package
                && let Some(value) = line
                    .strip_prefix("name")
                    .map(str::trim)
                    .and_then(|r| r.strip_prefix('='))
            {
                return Ok(Package {
                    name: value.trim().trim_matches('"').to_owned(),
                });
            }
        }
        anyhow::bail!("{} has no [package] name", path.display())
    }
}

/// Writes a crate for `kind` named `name` into `dir`.
pub fn scaffold(kind: &str, name: &str, dir: &Path, sdk: &Path) -> anyhow::Result<()> {
    let valid_name = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    anyhow::ensure!(
        valid_name,
        "the name must be lowercase letters, digits and dashes, starting with a letter"
    );
    let lib = match kind {
        "classifier" => CLASSIFIER_TEMPLATE.to_owned(),
        "restart-policy" => POLICY_TEMPLATE.to_owned(),
        "resolver" => RESOLVER_TEMPLATE.replace("{scheme}", name),
        other => bail!("unknown kind {other:?}: expected classifier, restart-policy or resolver"),
    };
    anyhow::ensure!(!dir.exists(), "{} already exists", dir.display());
    let sdk = sdk
        .canonicalize()
        .with_context(|| format!("the guest SDK is not at {}", sdk.display()))?;
    std::fs::create_dir_all(dir.join("src"))?;
    let cargo = CARGO_TEMPLATE
        .replace("{name}", name)
        .replace("{sdk}", &sdk.display().to_string());
    std::fs::write(dir.join("Cargo.toml"), cargo)?;
    std::fs::write(dir.join("src/lib.rs"), lib)?;
    let slot = if kind == "resolver" {
        format!("resolver:{name}")
    } else {
        kind.to_owned()
    };
    let manifest = json!({
        "name": name,
        "version": "0.1.0",
        "slot": slot,
        "grants": { "deadline_ms": 200, "memory_mb": 32, "allowed_hosts": [], "read_only_dirs": [] },
    });
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_string_pretty(&manifest)? + "\n",
    )?;
    std::fs::write(dir.join(".gitignore"), "/target\n")?;
    Ok(())
}

const CARGO_TEMPLATE: &str = r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"

# A crate of its own, even inside another workspace.
[workspace]

[lib]
crate-type = ["cdylib"]

[dependencies]
molecule-guest = { path = "{sdk}" }

[profile.release]
opt-level = "s"
lto = true
strip = true
codegen-units = 1
panic = "abort"
"#;

const CLASSIFIER_TEMPLATE: &str = r#"//! A hot-reload classifier: can the running agent pick these changes up without a restart?

use molecule_guest::{ChangeKind, Classifier, FileChange, Reload};

pub struct Extension;

impl Classifier for Extension {
    fn classify(changes: &[FileChange]) -> Reload {
        match changes.iter().find(|c| c.kind != ChangeKind::Modified || !c.path.ends_with(".md")) {
            None => Reload::Hot,
            Some(c) => Reload::cold(format!("{} needs a restart", c.path)),
        }
    }
}

molecule_guest::export_classifier!(Extension);

#[cfg(test)]
mod tests {
    use super::*;

    fn change(path: &str, kind: ChangeKind) -> FileChange {
        FileChange { path: path.into(), kind, old_digest: None, new_digest: None }
    }

    #[test]
    fn edited_markdown_is_hot_and_anything_else_is_cold() {
        assert_eq!(Extension::classify(&[change("README.md", ChangeKind::Modified)]), Reload::Hot);
        assert!(matches!(Extension::classify(&[change("run.py", ChangeKind::Modified)]), Reload::Cold(_)));
        assert!(matches!(Extension::classify(&[change("NEW.md", ChangeKind::Added)]), Reload::Cold(_)));
    }
}
"#;

const POLICY_TEMPLATE: &str = r#"//! A restart policy: what to do with a running workspace when something changed.

use molecule_guest::{Decision, RestartPolicy, Trigger, UpdateTier, WorkspaceInfo, default_policy};

pub struct Extension;

impl RestartPolicy for Extension {
    fn decide(workspace: &WorkspaceInfo, trigger: &Trigger) -> Decision {
        match trigger {
            // Configuration changes wait a minute, so bursts of edits cost one restart.
            Trigger::ConfigChanged => Decision::RestartAfterMs(60_000),
            _ => default_policy::decide(workspace, trigger),
        }
    }
}

molecule_guest::export_restart_policy!(Extension);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_changes_are_batched() {
        let ws = WorkspaceInfo {
            id: "id".into(),
            name: "w".into(),
            runtime: "langgraph".into(),
            tier: 3,
            status: "online".into(),
            update_tier: UpdateTier::Production,
            recent_restarts: 0,
        };
        assert_eq!(Extension::decide(&ws, &Trigger::ConfigChanged), Decision::RestartAfterMs(60_000));
    }
}
"#;

const RESOLVER_TEMPLATE: &str = r#"//! A resolver for `{scheme}://` sources: writes the source's files into `/dest`.

use molecule_guest::{FetchError, Fetched, Resolver, Source};

pub struct Extension;

impl Resolver for Extension {
    fn schemes() -> Vec<String> {
        vec!["{scheme}".into()]
    }

    fn fetch(source: &Source) -> Result<Fetched, FetchError> {
        let revision = Self::resolve_revision(source)?;
        std::fs::write("/dest/plugin.yaml", format!("name: {}\n", source.location))
            .map_err(|e| FetchError::Upstream(e.to_string()))?;
        Ok(Fetched { name: source.location.clone(), revision })
    }

    fn resolve_revision(source: &Source) -> Result<String, FetchError> {
        if source.location.is_empty() {
            return Err(FetchError::InvalidSource("a location is required".into()));
        }
        Ok(format!("static:{}", source.location))
    }
}

molecule_guest::export_resolver!(Extension);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_location_is_refused() {
        let source = Source { scheme: "{scheme}".into(), location: String::new(), reference: None };
        assert!(Extension::resolve_revision(&source).is_err());
    }
}
"#;
