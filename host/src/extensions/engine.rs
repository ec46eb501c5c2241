//! The one wasmtime `Engine`: pooling allocator (on-demand where the address space is short),
//! epoch interruption driven by a background ticker, component-model concurrency off, and a disk
//! cache of compiled artefacts keyed by component digest and engine configuration.

use std::hash::{Hash as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use sha2::{Digest as _, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances; call deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Largest linear memory any guest may have; grants may only lower it.
pub const MAX_GUEST_MEMORY: usize = 256 * 1024 * 1024;

/// Live component instances the pool holds at once (each call holds one while it runs).
const POOLED_COMPONENT_INSTANCES: u32 = 256;

/// Dirty bytes of a linear memory the pool resets in place (back to the component's initial
/// image) when an instance is dropped, instead of handing the pages back to the kernel. Without
/// it every call paid an `madvise` (with its TLB flush) on the way out and a page fault for each
/// page it touched on the way in: two fifths of a trivial call. 1 MiB covers what a call over a
/// thousand changes dirties; a slot that dirtied more has the rest decommitted as before.
const KEEP_RESIDENT_MEMORY: usize = 1 << 20;

/// The same for a core instance's function table (a few KiB in practice).
const KEEP_RESIDENT_TABLE: usize = 64 << 10;

/// Idle slots that keep their affinity (and their resident pages) for the component that used
/// them last. Calls run one per blocking thread, so a few dozen cover every slot and version in
/// use; the bound caps the memory held resident while idle at about this many times
/// [`KEEP_RESIDENT_MEMORY`].
const WARM_SLOTS: u32 = 32;

/// The engine and what it was built with.
#[derive(Clone)]
pub struct ExtensionEngine {
    engine: Engine,
    pooling: bool,
    /// Identifies the configuration compiled artefacts depend on (wasmtime version, settings).
    config_key: String,
    cache_dir: PathBuf,
    ticking: Arc<AtomicBool>,
}

impl std::fmt::Debug for ExtensionEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExtensionEngine")
            .field("pooling", &self.pooling)
            .field("config_key", &self.config_key)
            .finish_non_exhaustive()
    }
}

fn base_config() -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    // Component-model concurrency makes trivial calls several times slower and no world here
    // needs it.
    config.concurrency_support(false);
    config
}

fn pooling_config() -> Config {
    let mut pool = PoolingAllocationConfig::default();
    // A wasip2 guest with std is about three core instances, memories and tables per component.
    pool.total_component_instances(POOLED_COMPONENT_INSTANCES);
    pool.total_core_instances(POOLED_COMPONENT_INSTANCES * 4);
    pool.total_memories(POOLED_COMPONENT_INSTANCES * 2);
    pool.total_tables(POOLED_COMPONENT_INSTANCES * 4);
    pool.max_memory_size(MAX_GUEST_MEMORY);
    // Which pages an instance dirtied comes from the kernel's PAGEMAP_SCAN (Linux 6.7+); only
    // those are copied back from the image or zeroed, so a reused slot holds exactly its
    // pristine initial contents, as with a fresh mapping. Without the scan, keeping memory
    // resident would `memset` it from address 0 (a Rust guest's 1 MiB stack) on every drop,
    // so there the pool keeps decommitting with `madvise`.
    if PoolingAllocationConfig::is_pagemap_scan_available() {
        pool.pagemap_scan(Enabled::Yes);
        pool.linear_memory_keep_resident(KEEP_RESIDENT_MEMORY);
        pool.table_keep_resident(KEEP_RESIDENT_TABLE);
    }
    pool.max_unused_warm_slots(WARM_SLOTS);
    let mut config = base_config();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

impl ExtensionEngine {
    /// Builds the engine, caching compiled artefacts under `cache_dir`.
    pub fn new(cache_dir: &Path) -> anyhow::Result<Self> {
        let (engine, pooling) = match Engine::new(&pooling_config()) {
            Ok(engine) => (engine, true),
            Err(err) => {
                tracing::warn!(error = %err, "pooling allocator unavailable (short address space?); using on-demand allocation");
                (
                    Engine::new(&base_config())
                        .map_err(anyhow::Error::from)
                        .context("creating the wasm engine")?,
                    false,
                )
            }
        };
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let config_key = format!(
            "wasmtime{}-{:016x}",
            env!("CARGO_PKG_VERSION"),
            hasher.finish()
        );
        std::fs::create_dir_all(cache_dir).with_context(|| {
            format!(
                "creating the compiled-extension cache {}",
                cache_dir.display()
            )
        })?;
        Ok(ExtensionEngine {
            engine,
            pooling,
            config_key,
            cache_dir: cache_dir.to_path_buf(),
            ticking: Arc::new(AtomicBool::new(false)),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn uses_pooling(&self) -> bool {
        self.pooling
    }

    /// Starts the epoch ticker on its own thread; it stops when [`ExtensionEngine::stop_ticker`]
    /// is called. A plain thread, not a tokio task, so a busy runtime cannot delay deadlines.
    pub fn start_ticker(&self) {
        if self.ticking.swap(true, Ordering::SeqCst) {
            return;
        }
        let engine = self.engine.clone();
        let ticking = self.ticking.clone();
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while ticking.load(Ordering::SeqCst) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawning the epoch ticker thread");
    }

    pub fn stop_ticker(&self) {
        self.ticking.store(false, Ordering::SeqCst);
    }

    /// Compiles `bytes`, or loads the artefact this host compiled earlier for the same digest and
    /// engine configuration. Returns the component and whether it came from the cache.
    pub fn load(&self, digest: &str, bytes: &[u8]) -> anyhow::Result<(Component, bool)> {
        let path = self.cache_dir.join(format!(
            "{}-{}.cwasm",
            digest.trim_start_matches("sha256:"),
            self.config_key
        ));
        if path.is_file() {
            match self.deserialize(&path) {
                Ok(component) => return Ok((component, true)),
                Err(err) => {
                    tracing::warn!(error = %err, path = %path.display(), "discarding an unusable compiled artefact")
                }
            }
        }
        let component = Component::new(&self.engine, bytes)
            .map_err(anyhow::Error::from)
            .context("compiling the component")?;
        let serialized = component
            .serialize()
            .map_err(anyhow::Error::from)
            .context("serialising the compiled component")?;
        // Write then rename, so a concurrent reader never maps a half-written file.
        let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
        std::fs::write(&tmp, serialized).context("writing the compiled artefact")?;
        std::fs::rename(&tmp, &path).context("publishing the compiled artefact")?;
        Ok((component, false))
    }

    #[allow(unsafe_code)]
    fn deserialize(&self, path: &Path) -> anyhow::Result<Component> {
        // SAFETY: `deserialize_file` trusts its input to be an artefact wasmtime produced. Only
        // this host writes into the cache directory, under names keyed by the component's digest
        // and this engine's configuration, and wasmtime itself rejects artefacts of another
        // version or configuration.
        unsafe { Component::deserialize_file(&self.engine, path) }.map_err(anyhow::Error::from)
    }
}

/// `sha256:<hex>` of a component's bytes: its identity everywhere in the host.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}
