//! The operator's verbs on stored versions: upload (validated and self-checked), activate,
//! roll back, shadow, stop a shadow, delete.

use chrono::Utc;
use serde_json::{Value, json};
use uuid::Uuid;

use super::super::engine;
use super::super::runtime::{Extension, Identity, LoadError};
use super::super::types::SlotKind;
use super::{
    ExtensionHost, Grants, MAX_COMPONENT_BYTES, Manifest, RegistryError, Slot, effective_limits,
};
use crate::store::{self, StoreError, extensions::ExtensionRow};

impl ExtensionHost {
    /// Validates a component (world, API version, imports, a self-check call) and stores it.
    pub async fn upload(
        &self,
        manifest: Manifest,
        bytes: Vec<u8>,
        confirmed: Option<Grants>,
        builtin: bool,
    ) -> Result<ExtensionRow, RegistryError> {
        let slot = Slot::parse(&manifest.slot).ok_or(RegistryError::InvalidManifest(
            "slot must be classifier, restart-policy or resolver:<scheme>",
        ))?;
        let text_ok =
            |s: &str| !s.is_empty() && s.len() <= 100 && s.chars().all(|c| c.is_ascii_graphic());
        if !text_ok(&manifest.name) || !text_ok(&manifest.version) {
            return Err(RegistryError::InvalidManifest(
                "name and version must be 1-100 printable characters",
            ));
        }
        if slot.kind() == SlotKind::Resolver
            && manifest
                .grants
                .read_only_dirs
                .iter()
                .any(|dir| self.grantable_dir(dir).is_none())
        {
            return Err(RegistryError::InvalidManifest(
                "read_only_dirs may only name plugins-registry",
            ));
        }
        if bytes.len() > MAX_COMPONENT_BYTES {
            return Err(RegistryError::InvalidManifest(
                "component larger than 16 MiB",
            ));
        }
        let digest = engine::digest(&bytes);
        if let Some(existing) =
            store::extensions::find_by_digest(&self.db, slot.as_str(), &digest).await?
        {
            return Err(RegistryError::Duplicate(Box::new(existing)));
        }
        let limits = effective_limits(&manifest.grants, confirmed.as_ref());
        let identity = Identity {
            name: manifest.name.clone(),
            version: manifest.version.clone(),
            digest: digest.clone(),
        };
        let engine = self.engine.clone();
        let kind = slot.kind();
        let checked = bytes.clone();
        let scheme = slot.scheme().map(str::to_owned);
        tokio::task::spawn_blocking(move || {
            let ext = Extension::load(&engine, kind, identity, &checked, limits)?;
            match scheme {
                // A resolver's self-check is `schemes`, which must include the slot's scheme.
                Some(scheme) => {
                    let served = ext.schemes().map_err(RegistryError::SelfCheck)?;
                    if !served.contains(&scheme) {
                        return Err(LoadError::WrongScheme { scheme, served }.into());
                    }
                }
                None => {
                    ext.self_check().map_err(RegistryError::SelfCheck)?;
                }
            }
            Ok::<_, RegistryError>(())
        })
        .await
        .map_err(|_| RegistryError::Unsupported("validation was aborted"))??;

        self.store_component(&digest, &bytes).await?;
        store::extensions::put_blob(&self.db, &digest, &bytes).await?;
        let mut stored_manifest = serde_json::to_value(&manifest).unwrap_or(Value::Null);
        if let Some(confirmed) = &confirmed {
            stored_manifest["confirmed"] = serde_json::to_value(confirmed).unwrap_or(Value::Null);
        }
        let row = ExtensionRow {
            id: Uuid::new_v4(),
            name: manifest.name,
            version: manifest.version,
            slot: slot.as_str().to_owned(),
            digest,
            manifest: stored_manifest,
            builtin,
            created_at: Utc::now(),
        };
        if let Err(err) = store::extensions::insert(&self.db, &row).await {
            // The same component stored meanwhile (another replica installing the defaults on
            // the same empty database): theirs is the row.
            if matches!(err, StoreError::Constraint(_))
                && let Some(existing) =
                    store::extensions::find_by_digest(&self.db, &row.slot, &row.digest).await?
            {
                return Err(RegistryError::Duplicate(Box::new(existing)));
            }
            return Err(err.into());
        }
        tracing::info!(extension = %row.name, version = %row.version, slot = %row.slot, digest = %row.digest, "extension stored");
        Ok(row)
    }

    /// Makes `id` the active version of its slot. Calls already running finish on the version
    /// they started with: they hold their own reference to it.
    pub async fn activate(&self, id: Uuid) -> Result<ExtensionRow, RegistryError> {
        self.activate_with(id, "activated").await
    }

    async fn activate_with(&self, id: Uuid, action: &str) -> Result<ExtensionRow, RegistryError> {
        let row = store::extensions::get(&self.db, id)
            .await?
            .ok_or(RegistryError::NotFound)?;
        let loaded = self.load_row(&row).await?;
        let slot = Slot::parse(&row.slot).ok_or(RegistryError::NotFound)?;
        store::extensions::activate(&self.db, slot.as_str(), id, action).await?;
        let state = self.slot(&slot);
        state.active.store(Some(loaded));
        if state.shadow.load().as_ref().is_some_and(|s| s.id == id) {
            state.shadow.store(None);
        }
        tracing::info!(slot = slot.as_str(), extension = %row.name, version = %row.version, digest = %row.digest, action, "extension slot swapped");
        let event = if action == "rolled_back" {
            "EXTENSION_ROLLED_BACK"
        } else {
            "EXTENSION_ACTIVATED"
        };
        self.events
            .emit(event, None, json!({ "slot": slot.as_str(), "id": row.id, "name": row.name, "version": row.version, "digest": row.digest }))
            .await;
        Ok(row)
    }

    /// The version a rollback of `slot` would re-activate: the newest one in its activation
    /// history that is not the current one (deleting a version drops it from the history).
    pub async fn previous(&self, slot: &Slot) -> Result<Option<Uuid>, RegistryError> {
        let history = store::extensions::activation_history(&self.db, slot.as_str()).await?;
        let current = self.slot(slot).active.load().as_ref().map(|l| l.id);
        Ok(history.into_iter().find(|id| Some(*id) != current))
    }

    /// Re-activates the version that was active before the current one.
    pub async fn rollback(&self, slot: &Slot) -> Result<ExtensionRow, RegistryError> {
        let previous = self
            .previous(slot)
            .await?
            .ok_or(RegistryError::NoPrevious)?;
        self.activate_with(previous, "rolled_back").await
    }

    /// Runs `id` in shadow beside its slot's active version.
    pub async fn shadow(&self, id: Uuid) -> Result<ExtensionRow, RegistryError> {
        let row = store::extensions::get(&self.db, id)
            .await?
            .ok_or(RegistryError::NotFound)?;
        let slot = Slot::parse(&row.slot).ok_or(RegistryError::NotFound)?;
        if slot.kind() == SlotKind::Resolver {
            // A shadow fetch would repeat every transfer into a second destination; resolvers
            // are swapped and rolled back, not shadowed.
            return Err(RegistryError::Unsupported(
                "resolver slots do not run shadows",
            ));
        }
        let state = self.slot(&slot);
        if state.active.load().as_ref().is_some_and(|a| a.id == id) {
            return Err(RegistryError::Unsupported(
                "the active version cannot shadow itself",
            ));
        }
        if !store::extensions::set_shadow(&self.db, slot.as_str(), Some(id)).await? {
            return Err(RegistryError::Unsupported(
                "a slot needs an active version before it can run a shadow",
            ));
        }
        state.shadow.store(Some(self.load_row(&row).await?));
        self.events
            .emit("EXTENSION_SHADOWED", None, json!({ "slot": slot.as_str(), "id": row.id, "name": row.name, "version": row.version, "digest": row.digest }))
            .await;
        Ok(row)
    }

    /// Stops `id` running in shadow: the slot's shadow is cleared only while it is still `id`
    /// (one conditional update, so a click on a stale page cannot stop a candidate another
    /// operator set meanwhile). Its shadow results stay with it; shadowing it again starts its
    /// report where it left off. Other replicas follow through `EXTENSION_SHADOW_STOPPED`.
    pub async fn stop_shadow(&self, id: Uuid) -> Result<ExtensionRow, RegistryError> {
        let row = store::extensions::get(&self.db, id)
            .await?
            .ok_or(RegistryError::NotFound)?;
        let slot = Slot::parse(&row.slot).ok_or(RegistryError::NotFound)?;
        if !store::extensions::clear_shadow(&self.db, slot.as_str(), id).await? {
            return Err(RegistryError::NotShadowing);
        }
        let state = self.slot(&slot);
        if state.shadow.load().as_ref().is_some_and(|s| s.id == id) {
            state.shadow.store(None);
        }
        tracing::info!(slot = slot.as_str(), extension = %row.name, version = %row.version, "extension shadow stopped");
        self.events
            .emit("EXTENSION_SHADOW_STOPPED", None, json!({ "slot": slot.as_str(), "id": row.id, "name": row.name, "version": row.version, "digest": row.digest }))
            .await;
        Ok(row)
    }

    /// Deletes a stored version. The active version and the host's built-in ones are kept: a
    /// built-in is the known-good version a slot rolls back to, and the host only puts one back
    /// when its slot is empty at start.
    pub async fn delete(&self, id: Uuid) -> Result<(), RegistryError> {
        let row = store::extensions::get(&self.db, id)
            .await?
            .ok_or(RegistryError::NotFound)?;
        let slot = Slot::parse(&row.slot).ok_or(RegistryError::NotFound)?;
        let state = self.slot(&slot);
        if state.active.load().as_ref().is_some_and(|a| a.id == id) {
            return Err(RegistryError::Active);
        }
        if row.builtin {
            return Err(RegistryError::Builtin);
        }
        if state.shadow.load().as_ref().is_some_and(|s| s.id == id) {
            store::extensions::set_shadow(&self.db, slot.as_str(), None).await?;
            state.shadow.store(None);
        }
        store::extensions::delete(&self.db, id).await?;
        let still_used = store::extensions::list(&self.db)
            .await?
            .iter()
            .any(|r| r.digest == row.digest);
        if !still_used {
            let _ = tokio::fs::remove_file(self.component_path(&row.digest)).await;
            store::extensions::delete_unused_blob(&self.db, &row.digest).await?;
        }
        self.events
            .emit("EXTENSION_DELETED", None, json!({ "slot": slot.as_str(), "id": row.id, "name": row.name, "version": row.version }))
            .await;
        Ok(())
    }
}
