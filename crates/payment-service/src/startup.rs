//! Start-up is a library call: [`Application::build`] wires adapters to use
//! cases from a [`Config`] and binds the listener; [`Application::run_until_stopped`]
//! serves until the shutdown future resolves, then drains in-flight work.
//! `main` and the end-to-end tests go through the same door.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use payment_api::ApiState;
use payment_application::HealthProbe;
use payment_infra::kafka::{BrokerProbe, KafkaSettings};
use payment_infra::mariadb::{self, DatabaseProbe};
use secrecy::ExposeSecret as _;
use sqlx::MySqlPool;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::telemetry;

/// The built service, bound and ready to run.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    pool: MySqlPool,
}

impl Application {
    /// Connects, applies pending migrations, and binds `http.addr`.
    ///
    /// # Errors
    /// When the database cannot be migrated, a client cannot be created or
    /// the address cannot be bound; the message says which.
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        let pool = database_pool(config)?;
        mariadb::migrate(&pool).await?;

        let kafka = KafkaSettings {
            brokers: config.kafka.brokers.clone(),
            client_id: config.kafka.client_id.clone(),
        };
        let probes: Vec<Arc<dyn HealthProbe>> = vec![
            Arc::new(DatabaseProbe::new(pool.clone())),
            Arc::new(BrokerProbe::new(&kafka, Duration::from_secs(2))?),
        ];
        let router = payment_api::router(ApiState {
            probes: probes.into(),
            metrics: telemetry::metrics_handle(),
        });

        let listener = TcpListener::bind(config.http.addr)
            .await
            .with_context(|| format!("bind HTTP listener on {}", config.http.addr))?;
        Ok(Self {
            listener,
            router,
            pool,
        })
    }

    /// The bound port (useful when `http.addr` asked for port 0).
    ///
    /// # Errors
    /// When the OS cannot tell the listener's address.
    pub fn port(&self) -> anyhow::Result<u16> {
        Ok(self
            .listener
            .local_addr()
            .context("listener address")?
            .port())
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets in-flight
    /// requests finish and closes the database pool.
    ///
    /// # Errors
    /// When the server fails.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        tracing::info!(addr = %self.listener.local_addr()?, "payment-service listening");
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
            .context("HTTP server")?;
        self.pool.close().await;
        tracing::info!("payment-service stopped");
        Ok(())
    }
}

/// A lazily connecting pool: the service comes up (not ready) while the
/// database is away, and recovers by itself when it is back.
///
/// # Errors
/// When the URL is malformed.
pub fn database_pool(config: &Config) -> anyhow::Result<MySqlPool> {
    mariadb::connect_lazy(
        config.database.url.expose_secret(),
        config.database.max_connections,
        Duration::from_millis(config.database.acquire_timeout_ms),
    )
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received, shutting down"),
        () = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}
