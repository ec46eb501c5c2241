//! Component bytes kept by digest (this replica's cache, the database for the others) and the
//! loading of stored versions into slots.

use std::path::PathBuf;
use std::sync::Arc;

use uuid::Uuid;

use super::super::engine;
use super::super::runtime::{Extension, Identity};
use super::{ExtensionHost, Grants, Loaded, Manifest, RegistryError, Slot, effective_limits};
use crate::store::{self, extensions::ExtensionRow};

impl ExtensionHost {
    /// Writes a component's bytes under its digest (write, then rename), unless already there.
    pub(super) async fn store_component(
        &self,
        digest: &str,
        bytes: &[u8],
    ) -> Result<(), RegistryError> {
        let path = self.component_path(digest);
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Ok(());
        }
        let tmp = path.with_extension(format!("tmp-{}", Uuid::new_v4().simple()));
        tokio::fs::write(&tmp, bytes)
            .await
            .map_err(RegistryError::Io)?;
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(RegistryError::Io)
    }

    /// A component's bytes: from this replica's cache, else from the database (stored by
    /// another replica), checked against the digest and cached.
    async fn component_bytes(&self, digest: &str) -> Result<Vec<u8>, RegistryError> {
        match tokio::fs::read(self.component_path(digest)).await {
            Ok(bytes) => Ok(bytes),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let bytes = store::extensions::get_blob(&self.db, digest)
                    .await?
                    .ok_or(RegistryError::Io(err))?;
                if engine::digest(&bytes) != digest {
                    return Err(RegistryError::InvalidManifest(
                        "stored component does not match its digest",
                    ));
                }
                self.store_component(digest, &bytes).await?;
                Ok(bytes)
            }
            Err(err) => Err(RegistryError::Io(err)),
        }
    }

    /// Copies into the database the bytes of versions stored before it kept them, so other
    /// replicas can load them.
    pub(super) async fn backfill_blobs(&self) -> Result<(), RegistryError> {
        for digest in store::extensions::digests_without_blob(&self.db).await? {
            match tokio::fs::read(self.component_path(&digest)).await {
                Ok(bytes) => store::extensions::put_blob(&self.db, &digest, &bytes).await?,
                Err(err) => {
                    tracing::warn!(%digest, error = %err, "a stored extension's component is missing here")
                }
            }
        }
        Ok(())
    }

    /// Brings this replica's slots in line with the database after another replica activated,
    /// rolled back, shadowed or deleted a version: each slot whose stored active or shadow id
    /// differs from the loaded one loads the stored version by digest and swaps it in. Returns
    /// how many swaps it made.
    pub async fn sync(&self) -> Result<usize, RegistryError> {
        let mut swapped = 0;
        for row in store::extensions::slots(&self.db).await? {
            let Some(slot) = Slot::parse(&row.slot) else {
                continue;
            };
            let state = self.slot(&slot);
            for (want, shadow) in [(row.active_id, false), (row.shadow_id, true)] {
                let cell = if shadow { &state.shadow } else { &state.active };
                if cell.load().as_ref().map(|l| l.id) == want {
                    continue;
                }
                match want {
                    None => cell.store(None),
                    Some(id) => match self.load_by_id(id).await {
                        Ok(loaded) => cell.store(Some(loaded)),
                        Err(err) => {
                            tracing::error!(slot = slot.as_str(), %id, error = %err, "cannot load the version another replica chose; the slot keeps its current one");
                            continue;
                        }
                    },
                }
                swapped += 1;
                tracing::info!(slot = slot.as_str(), id = ?want, shadow, "extension slot follows the database");
            }
        }
        Ok(swapped)
    }

    pub(super) fn component_path(&self, digest: &str) -> PathBuf {
        self.components_dir
            .join(format!("{}.wasm", digest.trim_start_matches("sha256:")))
    }

    pub(super) async fn load_by_id(&self, id: Uuid) -> Result<Arc<Loaded>, RegistryError> {
        let row = store::extensions::get(&self.db, id)
            .await?
            .ok_or(RegistryError::NotFound)?;
        self.load_row(&row).await
    }

    pub(super) async fn load_row(&self, row: &ExtensionRow) -> Result<Arc<Loaded>, RegistryError> {
        let slot = Slot::parse(&row.slot).ok_or(RegistryError::InvalidManifest("unknown slot"))?;
        let manifest: Manifest = serde_json::from_value(row.manifest.clone())
            .map_err(|_| RegistryError::InvalidManifest("stored manifest unreadable"))?;
        let confirmed: Option<Grants> = row
            .manifest
            .get("confirmed")
            .and_then(|c| serde_json::from_value(c.clone()).ok());
        let bytes = self.component_bytes(&row.digest).await?;
        let identity = Identity {
            name: row.name.clone(),
            version: row.version.clone(),
            digest: row.digest.clone(),
        };
        let limits = effective_limits(&manifest.grants, confirmed.as_ref());
        let access = self.resolver_access(&manifest.grants, confirmed.as_ref());
        let engine = self.engine.clone();
        let ext = tokio::task::spawn_blocking(move || {
            Extension::load_with_access(&engine, slot.kind(), identity, &bytes, limits, access)
        })
        .await
        .map_err(|_| RegistryError::Unsupported("loading was aborted"))??;
        Ok(Arc::new(Loaded {
            id: row.id,
            ext: Arc::new(ext),
        }))
    }
}
