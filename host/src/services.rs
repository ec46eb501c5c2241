//! The domain services every operation needs, built once at start ([`Services::start`]) and
//! handed to every layer by reference.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use secrecy::ExposeSecret as _;

use crate::config::Config;
use crate::events::EventBus;
use crate::secrets::Cipher;
use crate::store::Db;
use crate::store::workspaces::HeartbeatReport;
use crate::{
    agents, auth, cluster, delegation, extensions, plugins, runtime, secrets, store, workspaces,
};
use uuid::Uuid;

/// The domain services every operation needs. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Services {
    pub config: Arc<Config>,
    pub db: Db,
    /// Writes that need not be durable before an answer (activity of A2A calls, last-use
    /// stamps), stored in batches (see [`store::batch`]).
    pub writes: store::batch::Writer,
    pub events: EventBus,
    pub cipher: Cipher,
    pub guard: auth::Guard,
    pub extensions: Arc<extensions::registry::ExtensionHost>,
    pub lifecycle: Arc<workspaces::lifecycle::Lifecycle>,
    /// The A2A client and the delegations and queue drains running in the background.
    pub a2a: agents::Hub,
    /// This replica among those sharing the database: its id and sweeper leases.
    pub cluster: Arc<cluster::Cluster>,
    /// This replica's background loops and when each last started a pass.
    pub liveness: Arc<crate::liveness::Liveness>,
    /// The key that seals the audit ledger (see [`crate::audit`]).
    pub audit: Arc<crate::audit::Ledger>,
    pub traces: Arc<crate::traces::Traces>,
}

impl Services {
    /// Checks the configuration, connects to and migrates the database, starts the extension
    /// platform and the configured runtime.
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        let runtime = runtime::select(&config)
            .await
            .context("starting the workspace runtime")?;
        Self::start_with_runtime(config, runtime).await
    }

    /// [`Services::start`] with the runtime chosen by the caller (`None`: agents are started
    /// elsewhere). Benchmarks use it to leave container start-up out of what they measure.
    pub async fn start_with_runtime(
        config: Config,
        runtime: Option<Arc<dyn runtime::ContainerRuntime>>,
    ) -> anyhow::Result<Self> {
        let cipher = Cipher::new(config.secrets_encryption_key.as_ref())?;
        if config.is_production() && !cipher.encrypts() {
            anyhow::bail!(
                "MOLECULE_ENV=production requires SECRETS_ENCRYPTION_KEY (base64 of 32 bytes)"
            );
        }
        if config.is_production() && config.admin_token().is_none() {
            anyhow::bail!(
                "MOLECULE_ENV=production requires an admin token (ADMIN_TOKEN or MOLECULE_ADMIN_TOKEN): \
                 without one a fresh install would be open to the first caller"
            );
        }
        if !cipher.encrypts() {
            tracing::warn!(
                "no SECRETS_ENCRYPTION_KEY configured: secrets are stored unencrypted (encryption_version 0)"
            );
        }
        let db = Db::connect(&config.database_url(), config.database_max_connections).await?;
        let cluster = Arc::new(cluster::Cluster::join(&db)?);
        db.migrate().await.context("migrating the database")?;
        auth::settle_install_mode(&db, &config)
            .await
            .context("reading the install mode")?;
        // Before anything reads a secret: rows an older host sealed without their row's
        // identity are bound to it now, and refused from here on.
        secrets::reseal_legacy(&db, &cipher)
            .await
            .context("re-sealing secrets written by an older host")?;
        let events = EventBus::new(db.clone(), cluster.replica);
        // A committed spend drops the workspace from every replica's routing table, so the
        // next call's budget check reads the new spend.
        let spent = events.clone();
        let writes = store::batch::Writer::start_with_spend_hook(
            db.clone(),
            Arc::new(move |ids: &[Uuid]| {
                for id in ids {
                    spent.invalidate(crate::events::Invalidation::Workspace(*id));
                }
            }),
        );
        events.record_through(writes.clone());
        let guard = auth::Guard::new(&config, db.clone(), writes.clone());
        events.register_cache(guard.live_tokens());
        let mut resolvers = extensions::registry::ResolverSettings {
            timeout: Duration::from_secs(config.git_timeout_secs.max(1)),
            registry_dir: config.plugins_registry_dir.clone(),
            allow_unpinned: config.allow_unpinned_sources,
            ..Default::default()
        };
        resolvers
            .git_env
            .extend(config.git_env.iter().map(|(k, v)| (k.clone(), v.clone())));
        if let Some(protocols) = &config.git_allowed_protocols {
            resolvers.allowed_protocols = protocols.clone();
        }
        for (host, token) in &config.git_credentials {
            resolvers.credentials.insert(host, token.expose_secret());
        }
        let extensions = extensions::registry::ExtensionHost::start_with(
            db.clone(),
            events.clone(),
            &config.data_dir,
            config.builtin_extensions_dir.as_deref(),
            resolvers,
        )
        .await
        .context("starting the extension platform")?;
        plugins::clear_fetch_staging(&config.data_dir);
        if db.backend() == store::Backend::Sqlite {
            // The only replica: whatever is mid-delivery was left by the previous run. (With
            // several replicas the queue-expiry sweep requeues them once no delivery can still
            // be running.)
            let requeued = store::a2a_queue::requeue_interrupted(&db, chrono::Utc::now()).await?;
            if requeued > 0 {
                tracing::info!(
                    requeued,
                    "messages left mid-delivery by the previous run are queued again"
                );
            }
        }
        let lifecycle = Arc::new(workspaces::lifecycle::Lifecycle::new(
            runtime,
            config.runtime.provision_concurrency,
            cluster.replica,
        ));
        let a2a =
            agents::Hub::new(&config, Arc::new(Supervision)).context("building the A2A client")?;
        events.register_cache(a2a.routes().clone());
        let liveness = Arc::new(crate::liveness::Liveness::new(
            config.supervision.stale_floor(),
        ));
        let audit = Arc::new(crate::audit::Ledger::new(
            config.secrets_encryption_key.as_ref(),
        ));
        let traces = Arc::new(
            crate::traces::Traces::new(&config.otel, cluster.replica)
                .context("setting up traces (otel)")?,
        );
        Ok(Services {
            traces,
            a2a,
            liveness,
            audit,
            config: Arc::new(config),
            db,
            writes,
            events,
            cipher,
            guard,
            extensions,
            lifecycle,
            cluster,
        })
    }
}

/// What the agent client hands up (see [`agents::Supervision`]): an agent that did not answer
/// is checked by the lifecycle, spare capacity reported by a heartbeat drains the busy queue.
#[derive(Debug)]
struct Supervision;

#[async_trait::async_trait]
impl agents::Supervision for Supervision {
    async fn check_agent(
        &self,
        svc: &Services,
        id: Uuid,
    ) -> Result<agents::AgentCheck, store::StoreError> {
        match svc.lifecycle.runtime() {
            Some(runtime) => workspaces::lifecycle::check_agent(svc, runtime.as_ref(), id).await,
            None => Ok(agents::AgentCheck::Unknown),
        }
    }

    fn after_heartbeat(
        &self,
        svc: &Services,
        id: Uuid,
        report: &HeartbeatReport,
        max_concurrent_tasks: i32,
    ) {
        delegation::queue::after_heartbeat(svc, id, report, max_concurrent_tasks);
    }

    fn wake(&self, svc: &Services, id: Uuid) {
        let task_svc = svc.clone();
        svc.a2a.spawn(async move {
            if let Err(err) = workspaces::lifecycle::wake(&task_svc, id).await {
                tracing::warn!(workspace_id = %id, error = ?err, "waking a hibernated workspace failed");
            }
        });
    }
}
