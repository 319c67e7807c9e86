//! Running the service: binding the listeners, serving until a shutdown signal, and draining.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::Layer as _;
use tower_http::normalize_path::NormalizePathLayer;

use crate::config::Config;
use crate::db::plugins::PluginRepository;
use crate::dispatch::kafka::KafkaPublisher;
use crate::dispatch::relay::{self, Relay};
use crate::http::{self, AppState, listener, request_id::RequestIdGenerator};
use crate::metrics::Metrics;
use crate::package::{Packager, PackagerSettings};
use crate::registry::artefacts::Artefacts;
use crate::registry::binding::LiveBindings;
use crate::registry::directory::load_directory;
use crate::registry::{self, Registry};
use crate::storage::ObjectStore;
use crate::worker::cleaner::Cleaner;
use export_plugin_host::{ArtefactDir, PluginFailure, PluginHost};

/// Why the service could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listener could not bind its address.
    #[error("cannot listen on {address} ({listener}): {source}")]
    Bind {
        /// Which listener.
        listener: &'static str,
        /// The address it tried.
        address: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The plugins could not be loaded.
    #[error("plugins: {0}")]
    Plugins(String),
    /// The object store could not be set up.
    #[error("object store: {0}")]
    Store(crate::storage::StoreError),
    /// The Kafka client could not be created.
    #[error(transparent)]
    Kafka(crate::dispatch::kafka::KafkaSetupError),
}

/// The service with its listeners bound, ready to serve.
pub struct BoundService {
    public: TcpListener,
    private: TcpListener,
    metrics_listener: TcpListener,
    state: AppState,
    pool: PgPool,
}

impl BoundService {
    /// Binds every listener of `config` and connects the object store. Port 0 picks a free
    /// port (tests use this).
    pub async fn bind(config: Config, pool: PgPool) -> Result<Self, ServeError> {
        let store = ObjectStore::from_config(&config.store, &config.layout)
            .await
            .map_err(ServeError::Store)?;
        let private = bind(
            "internal",
            SocketAddr::new(config.listen_address, config.private_port),
        )
        .await?;
        let public = bind(
            "public",
            SocketAddr::new(config.listen_address, config.public_port),
        )
        .await?;
        let metrics_listener = bind(
            "metrics",
            SocketAddr::new(config.listen_address, config.metrics_port),
        )
        .await?;
        let limits = config.data_path.plugin_limits.clone();
        let ceilings = crate::config::plugin_ceilings(&config);
        let directory = config.data_path.plugins_dir.clone();
        let bindings = tokio::task::spawn_blocking(move || {
            let bindings = LiveBindings::new(Arc::new(PluginHost::new(limits)?), ceilings);
            if let Some(directory) = directory {
                bindings.set_directory(load_directory(&bindings.host, &directory)?);
            }
            Ok::<_, PluginFailure>(bindings)
        })
        .await
        .map_err(|error| ServeError::Plugins(error.to_string()))?
        .map_err(|error| ServeError::Plugins(error.to_string()))?;
        let bindings = Arc::new(bindings);
        let metrics = Metrics::new();
        let repository = PluginRepository::new(pool.clone());
        let artefact_dir = match &config.registry.artefact_dir {
            Some(path) => Some(ArtefactDir::new(path).map_err(|error| {
                ServeError::Plugins(format!("PLUGIN_ARTEFACT_DIR {}: {error}", path.display()))
            })?),
            None => None,
        };
        let artefacts = Artefacts::new(
            repository.artefacts(),
            store.clone(),
            artefact_dir,
            config.registry.max_artefact_bytes(),
            metrics.plugin_loads.clone(),
        );
        let registry = Registry::new(
            repository,
            store.clone(),
            bindings.clone(),
            config.enabled_apps.clone(),
            config.registry.max_component_bytes,
            Arc::new(crate::delivery::trial::PipelineCases),
            artefacts,
        );
        // The bindings in force come back from the database before the first upload (a replica
        // that cannot reach it now keeps trying in the background).
        if let Err(error) = registry::sync::reload(&registry, &metrics).await {
            tracing::warn!(%error, "cannot load the plugin bindings yet; will retry");
        }
        let mut state = AppState::new(Arc::new(config), pool.clone(), store, metrics);
        state.plugins = Some(bindings);
        state.registry = Some(registry);
        Ok(Self {
            public,
            private,
            metrics_listener,
            state,
            pool,
        })
    }

    /// The public API's address.
    pub fn public_addr(&self) -> SocketAddr {
        self.public
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The internal API's address.
    pub fn private_addr(&self) -> SocketAddr {
        self.private
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The metrics listener's address.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests finish
    /// for up to the configured shutdown timeout, and returns.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let config = self.state.config.clone();
        let (stop_sender, stop_receiver) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutdown requested; draining requests");
            let _ = stop_sender.send(true);
        });

        let request_ids = Arc::new(RequestIdGenerator::new(&config.hostname));
        let public_app = NormalizePathLayer::trim_trailing_slash()
            .layer(http::public_router(self.state.clone(), request_ids.clone()));
        let private_app = http::internal_router(self.state.clone(), request_ids);
        let metrics_app = http::probes::router(self.pool.clone(), self.state.metrics.clone());

        tracing::info!(
            public = %self.public_addr(),
            internal = %self.private_addr(),
            metrics = %self.metrics_addr(),
            "export-service listening"
        );
        let limits = config.listener_limits;
        let metrics = &self.state.metrics;
        let public = listener::serve(
            "public",
            self.public,
            public_app,
            limits,
            metrics.clone(),
            stop_receiver.clone(),
        );
        let private = listener::serve(
            "internal",
            self.private,
            private_app,
            limits,
            metrics.clone(),
            stop_receiver.clone(),
        );
        let metrics = listener::serve(
            "metrics",
            self.metrics_listener,
            metrics_app,
            limits,
            metrics.clone(),
            stop_receiver.clone(),
        );
        let workers = spawn_workers(&config, &self.pool, &self.state, &stop_receiver)?;
        let servers = async {
            tokio::join!(public, private, metrics);
        };
        let drained = async {
            servers.await;
            for worker in workers {
                let _ = worker.await;
            }
        };
        tokio::pin!(drained);
        tokio::select! {
            () = &mut drained => {}
            () = stopped(stop_receiver.clone()) => {
                if tokio::time::timeout(config.shutdown_timeout, drained).await.is_err() {
                    tracing::warn!(
                        timeout_ms = config.shutdown_timeout.as_millis(),
                        "shutdown timeout reached; abandoning in-flight work"
                    );
                }
            }
        }
        // Uploads abandoned by the timeout (or whose release is still being retried) would
        // otherwise keep their sources for a whole UPLOAD_LEASE once the process is gone.
        self.state
            .upload_holds
            .release_all(&self.state.sources)
            .await;
        Ok(())
    }
}

/// Starts the background workers: the outbox relay (when Kafka is configured), the backlog
/// monitor, the packager and (when scheduled) the cleaner.
fn spawn_workers(
    config: &Config,
    pool: &PgPool,
    state: &AppState,
    stop: &watch::Receiver<bool>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, ServeError> {
    let metrics = &state.metrics;
    let packager = Packager::new(
        pool.clone(),
        state.store.clone(),
        state.keys.clone(),
        PackagerSettings {
            lease: config.data_path.package_lease,
            compression_level: config.data_path.compression_level,
            poll_interval: Duration::from_secs(1),
            retry_max_delay: config.data_path.package_retry_max_delay,
            max_age: config.data_path.package_max_age,
        },
        metrics.clone(),
    );
    let mut workers = vec![tokio::spawn(relay::monitor_backlog(
        pool.clone(),
        metrics.clone(),
        stop.clone(),
    ))];
    if let Some(registry) = &state.registry {
        workers.push(tokio::spawn(registry::sync::follow_registry(
            registry.clone(),
            pool.clone(),
            metrics.clone(),
            config.registry.resync_interval,
            stop.clone(),
        )));
        workers.push(tokio::spawn(registry::canary::watch_canaries(
            registry.clone(),
            metrics.clone(),
            registry::canary::JUDGE_INTERVAL,
            stop.clone(),
        )));
        if let Some(directory) = &config.data_path.plugins_dir {
            workers.push(tokio::spawn(registry::sync::watch_directory(
                registry.clone(),
                directory.clone(),
                metrics.clone(),
                config.registry.directory_poll_interval,
                stop.clone(),
            )));
        }
    }
    if config.data_path.packaging_worker {
        workers.push(tokio::spawn(packager.run(pool.clone(), stop.clone())));
    }
    if let Some(interval) = config.data_path.cleaner_interval {
        let cleaner = Cleaner::new(
            pool.clone(),
            state.store.clone(),
            state.keys.clone(),
            config.data_path.clone(),
            metrics.clone(),
        );
        workers.push(tokio::spawn(cleaner.run(interval, stop.clone())));
    }
    if config.kafka.brokers.is_some() {
        let publisher = KafkaPublisher::new(&config.kafka, &config.hostname, metrics.clone())
            .map_err(ServeError::Kafka)?;
        let relay = Relay::new(
            pool.clone(),
            publisher,
            config.outbox,
            config.events.clone(),
        );
        workers.push(tokio::spawn(relay.run(pool.clone(), stop.clone())));
    } else {
        tracing::warn!(
            "event dispatch disabled: KAFKA_BROKERS is not set; new exports' events wait in the outbox until it is"
        );
    }
    Ok(workers)
}

async fn bind(listener: &'static str, address: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| ServeError::Bind {
            listener,
            address,
            source,
        })
}

async fn stopped(mut receiver: watch::Receiver<bool>) {
    let _ = receiver.wait_for(|stopped| *stopped).await;
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
