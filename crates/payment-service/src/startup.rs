//! Start-up is a library call: [`Application::build`] wires adapters to use
//! cases from a [`Config`] and binds the listener; [`Application::run_until_stopped`]
//! serves HTTP, consumes and relays until the shutdown future resolves, then
//! stops in order: no new requests or messages, in-flight work finished,
//! offsets committed, producer flushed, pool closed. `main` and the
//! end-to-end tests go through the same door.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use payment_api::{
    ApiState, AuthSettings, Authenticator, CancelState, WidgetRedirects, WidgetState,
};
use payment_application::{
    CancelPayment, CancelSettings, ConfirmPayment, CreatePayment, ExpirePayments, GatewayNotice,
    HealthProbe, IdempotencyKeys as _, Reconciler, ReconcilerSettings, RecordFailedAttempt,
    SagaPayments, SagaTopics, StoreError, Topics,
};
use payment_infra::fake_gateway::FakeGateway;
use payment_infra::gateway::ConfiguredGateway;
use payment_infra::kafka::{
    self, dlq_topic, AndTopic, BrokerProbe, ConsumerHealth, KafkaSettings, OrderPlacedHandler,
    RefundRequestedHandler, SagaRequestHandler, TopicRouter,
};
use payment_infra::mariadb::{
    self, DatabaseProbe, MariaDbBookings, MariaDbIdempotencyKeys, MariaDbPaymentRepository,
    OutboxPruner, OutboxTable,
};
use payment_infra::outbox::{OutboxRelay, RelaySettings};
use payment_infra::toss::{TossGateway, TossSettings};
use secrecy::ExposeSecret as _;
use sqlx::MySqlPool;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config, GatewayKind, OutboxRelay as RelayKind};
use crate::telemetry;

/// The built service, bound and ready to run.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    /// Health and metrics on `http.ops_addr`, when set.
    ops: Option<(TcpListener, axum::Router)>,
    pool: MySqlPool,
    workers: Workers,
}

/// The background work `run_until_stopped` starts.
#[derive(Debug)]
struct Workers {
    kafka: KafkaSettings,
    provision: Option<Provision>,
    inbound: InboundWorker,
    relay: Option<OutboxRelay>,
    /// Deletes old `outbox_log` rows and, in debezium mode only, the outbox
    /// rows Debezium has long captured.
    prune_outbox: Vec<Periodic<OutboxPruner>>,
    reconciler: Periodic<Reconciler<MariaDbPaymentRepository, ConfiguredGateway>>,
    expiry: Periodic<ExpirePayments<MariaDbPaymentRepository>>,
    prune: Periodic<PruneKeys>,
    prune_inbox: Periodic<PruneInbox>,
    saga_answers: Periodic<SagaAnswers>,
}

/// The booking saga's participant as wired here.
type Saga = SagaPayments<MariaDbPaymentRepository, MariaDbBookings, ConfiguredGateway>;

/// Answers the bookings whose payment was settled elsewhere.
#[derive(Debug)]
struct SagaAnswers {
    saga: Saga,
    batch: u32,
}

/// Deletes HTTP idempotency keys past their retention.
#[derive(Debug)]
struct PruneKeys {
    keys: MariaDbIdempotencyKeys,
    retention: Duration,
}

impl PruneKeys {
    async fn run_once(&self) -> Result<usize, StoreError> {
        let retention = chrono::Duration::from_std(self.retention).unwrap_or_default();
        let pruned = self.keys.prune(chrono::Utc::now() - retention).await?;
        Ok(usize::try_from(pruned).unwrap_or(usize::MAX))
    }
}

/// Deletes inbox records past their retention.
#[derive(Debug)]
struct PruneInbox {
    repository: MariaDbPaymentRepository,
    retention: Duration,
}

impl PruneInbox {
    async fn run_once(&self) -> Result<usize, StoreError> {
        let retention = chrono::Duration::from_std(self.retention).unwrap_or_default();
        let pruned = self
            .repository
            .prune_inbox(chrono::Utc::now() - retention)
            .await?;
        Ok(usize::try_from(pruned).unwrap_or(usize::MAX))
    }
}

/// A job run every `interval`.
#[derive(Debug)]
struct Periodic<J> {
    job: J,
    interval: Duration,
}

#[derive(Debug)]
struct Provision {
    topics: Vec<String>,
    partitions: i32,
    replication: i32,
}

/// The commerce platform's two inbound topics.
type CommerceRouter = TopicRouter<
    OrderPlacedHandler<MariaDbPaymentRepository>,
    RefundRequestedHandler<MariaDbPaymentRepository, ConfiguredGateway>,
>;

/// The consumer of every inbound topic.
#[derive(Debug)]
struct InboundWorker {
    topics: Vec<String>,
    handler: AndTopic<
        CommerceRouter,
        SagaRequestHandler<MariaDbPaymentRepository, MariaDbBookings, ConfiguredGateway>,
    >,
    health: ConsumerHealth,
}

impl Application {
    /// Connects, applies pending migrations, wires everything and binds
    /// `http.addr`. Nothing is consumed or relayed until
    /// [`Application::run_until_stopped`].
    ///
    /// # Errors
    /// When the database cannot be migrated, a client cannot be created or
    /// the address cannot be bound; the message says which.
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        let auth = authenticator(&config.auth)?;
        let pool = database_pool(config)?;
        mariadb::migrate(&pool).await?;

        let kafka = kafka_settings(config);
        let outbox_committed = Arc::new(Notify::new());
        let repository =
            MariaDbPaymentRepository::new(pool.clone()).notifying(Arc::clone(&outbox_committed));
        let gateway = gateway(config)?;
        let topics = &config.topics;
        let announced = announced_topics(config);

        let saga = SagaPayments::new(
            repository.clone(),
            MariaDbBookings::new(pool.clone()).notifying(Arc::clone(&outbox_committed)),
            gateway.clone(),
            announced.clone(),
            SagaTopics {
                initiated: topics.saga_payment_initiated.clone(),
                completed: topics.saga_payment_completed.clone(),
                failed: topics.saga_payment_failed.clone(),
            },
            topics.saga_request_payment.clone(),
        );
        let saga_answers = Periodic {
            job: SagaAnswers {
                saga: saga.clone(),
                batch: config.saga.answer_batch,
            },
            interval: Duration::from_millis(config.saga.answer_interval_ms),
        };
        let inbound = InboundWorker {
            topics: vec![
                topics.order_placed.clone(),
                topics.order_refund_requested.clone(),
                topics.saga_request_payment.clone(),
            ],
            handler: AndTopic {
                topic: topics.saga_request_payment.clone(),
                handler: SagaRequestHandler::new(saga),
                rest: TopicRouter {
                    first_topic: topics.order_placed.clone(),
                    first: OrderPlacedHandler::new(CreatePayment::new(
                        repository.clone(),
                        announced.clone(),
                        topics.order_placed.clone(),
                    )),
                    second_topic: topics.order_refund_requested.clone(),
                    second: RefundRequestedHandler::new(
                        repository.clone(),
                        CancelPayment::new(repository.clone(), gateway.clone(), announced.clone())
                            .with_settings(reconciler_settings(config).cancels),
                    ),
                },
            },
            health: ConsumerHealth::default(),
        };
        let read_model = repository.clone();
        let keys = MariaDbIdempotencyKeys::new(
            pool.clone(),
            Duration::from_secs(config.idempotency.in_flight_lease_secs),
        );
        let cancel = CancelState {
            cancel: CancelPayment::new(repository.clone(), gateway.clone(), announced.clone())
                .with_settings(reconciler_settings(config).cancels),
            keys: keys.clone(),
        };
        let prune = Periodic {
            job: PruneKeys {
                keys,
                retention: Duration::from_secs(config.idempotency.retention_hours * 3_600),
            },
            interval: Duration::from_secs(config.idempotency.prune_interval_secs),
        };
        let prune_inbox = Periodic {
            job: PruneInbox {
                repository: repository.clone(),
                retention: Duration::from_secs(config.inbox.retention_hours * 3_600),
            },
            interval: Duration::from_secs(config.inbox.prune_interval_secs),
        };
        let widget = WidgetState {
            confirm: ConfirmPayment::new(repository.clone(), gateway.clone(), announced.clone()),
            failed_attempt: RecordFailedAttempt::new(repository.clone()),
            redirects: WidgetRedirects {
                success_url: config.toss.success_redirect_url.clone(),
                fail_url: config.toss.fail_redirect_url.clone(),
            },
        };
        let notice = GatewayNotice::new(repository.clone(), gateway.clone(), announced.clone());
        let reconciling = &config.reconciler;
        let reconciler = Periodic {
            job: Reconciler::new(
                repository.clone(),
                gateway,
                announced.clone(),
                reconciler_settings(config),
            ),
            interval: Duration::from_millis(reconciling.interval_ms),
        };
        let expiry = Periodic {
            job: ExpirePayments::new(
                repository,
                announced,
                Duration::from_secs(config.expiry.ttl_secs),
                config.expiry.batch,
            ),
            interval: Duration::from_millis(config.expiry.interval_ms),
        };
        let relay = match config.outbox.relay {
            RelayKind::Embedded => Some(OutboxRelay::new(
                pool.clone(),
                kafka.producer()?,
                RelaySettings {
                    batch_size: config.outbox.batch_size,
                    poll_interval: Duration::from_millis(config.outbox.poll_interval_ms),
                },
                outbox_committed,
            )),
            RelayKind::Debezium => None,
        };
        let log_retention = config.outbox.log_retention_hours.saturating_mul(3_600);
        let mut prune_outbox = vec![(OutboxTable::Log, log_retention)];
        if config.outbox.relay == RelayKind::Debezium {
            prune_outbox.push((OutboxTable::Outbox, config.outbox.retention_secs));
        }
        let prune_outbox = prune_outbox
            .into_iter()
            .map(|(table, retention_secs)| Periodic {
                job: OutboxPruner::new(
                    pool.clone(),
                    table,
                    Duration::from_secs(retention_secs),
                    config.outbox.prune_batch,
                ),
                interval: Duration::from_secs(config.outbox.prune_interval_secs),
            })
            .collect();
        let provision = config.kafka.create_topics.then(|| Provision {
            topics: vec![
                topics.order_placed.clone(),
                dlq_topic(&topics.order_placed),
                topics.order_refund_requested.clone(),
                dlq_topic(&topics.order_refund_requested),
                topics.payment_created.clone(),
                topics.payment_completed.clone(),
                topics.payment_failed.clone(),
                topics.payment_canceled.clone(),
                topics.payment_cancel_failed.clone(),
                topics.saga_request_payment.clone(),
                dlq_topic(&topics.saga_request_payment),
                topics.saga_payment_initiated.clone(),
                topics.saga_payment_completed.clone(),
                topics.saga_payment_failed.clone(),
            ],
            partitions: config.kafka.topic_partitions,
            replication: config.kafka.topic_replication,
        });

        let probes: Vec<Arc<dyn HealthProbe>> = vec![
            Arc::new(DatabaseProbe::new(pool.clone())),
            Arc::new(BrokerProbe::new(&kafka, Duration::from_secs(2))?),
            Arc::new(inbound.health.clone()),
        ];
        let ops_state = ApiState {
            probes: probes.into(),
            metrics: telemetry::metrics_handle(),
        };
        let (public_ops, ops) = match config.http.ops_addr {
            None => (Some(ops_state), None),
            Some(addr) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("bind ops listener on {addr}"))?;
                (None, Some((listener, payment_api::ops_router(ops_state))))
            }
        };
        let router = payment_api::router(public_ops, auth, read_model, widget, cancel, notice);

        let listener = TcpListener::bind(config.http.addr)
            .await
            .with_context(|| format!("bind HTTP listener on {}", config.http.addr))?;
        Ok(Self {
            listener,
            router,
            ops,
            pool,
            workers: Workers {
                kafka,
                provision,
                inbound,
                relay,
                prune_outbox,
                reconciler,
                expiry,
                prune,
                prune_inbox,
                saga_answers,
            },
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

    /// The bound port of `http.ops_addr`, when set.
    ///
    /// # Errors
    /// When the OS cannot tell the listener's address.
    pub fn ops_port(&self) -> anyhow::Result<Option<u16>> {
        self.ops
            .as_ref()
            .map(|(listener, _)| {
                Ok(listener
                    .local_addr()
                    .context("ops listener address")?
                    .port())
            })
            .transpose()
    }

    /// Serves until `shutdown` resolves, then stops everything gracefully.
    ///
    /// # Errors
    /// When the server or a worker fails.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stop = CancellationToken::new();
        let mut workers = self.workers.spawn(&stop);
        if let Some((listener, router)) = self.ops {
            tracing::info!(addr = %listener.local_addr()?, "ops endpoints listening");
            let stopped = stop.clone().cancelled_owned();
            workers.spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(stopped)
                    .await
                    .context("ops HTTP server")
            });
        }
        let stopping = stop.clone();
        tokio::spawn(async move {
            shutdown.await;
            stopping.cancel();
        });

        tracing::info!(addr = %self.listener.local_addr()?, "payment-service listening");
        let served = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .await
            .context("HTTP server");
        stop.cancel(); // the server may also have stopped on its own
        let mut outcome = served;
        while let Some(finished) = workers.join_next().await {
            let worker = finished
                .context("worker panicked")
                .and_then(|result| result);
            if let Err(error) = worker {
                tracing::error!(error = format!("{error:#}"), "worker failed");
                outcome = outcome.and(Err(error));
            }
        }
        self.pool.close().await;
        tracing::info!("payment-service stopped");
        outcome
    }
}

impl Workers {
    fn spawn(self, stop: &CancellationToken) -> JoinSet<anyhow::Result<()>> {
        let mut set = JoinSet::new();
        let Self {
            kafka,
            provision,
            inbound,
            relay,
            prune_outbox,
            reconciler,
            expiry,
            prune,
            prune_inbox,
            saga_answers,
        } = self;
        let answers = Arc::new(saga_answers.job);
        spawn_periodic(
            &mut set,
            stop,
            "saga-answers",
            saga_answers.interval,
            move || {
                let job = Arc::clone(&answers);
                async move { job.saga.answer_settled(job.batch).await }
            },
        );
        let prune_job = Arc::new(prune.job);
        spawn_periodic(
            &mut set,
            stop,
            "idempotency-prune",
            prune.interval,
            move || {
                let job = Arc::clone(&prune_job);
                async move { job.run_once().await }
            },
        );
        let prune_inbox_job = Arc::new(prune_inbox.job);
        spawn_periodic(
            &mut set,
            stop,
            "inbox-prune",
            prune_inbox.interval,
            move || {
                let job = Arc::clone(&prune_inbox_job);
                async move { job.run_once().await }
            },
        );
        let reconciler_job = Arc::new(reconciler.job);
        spawn_periodic(
            &mut set,
            stop,
            "reconciler",
            reconciler.interval,
            move || {
                let job = Arc::clone(&reconciler_job);
                async move { job.run_once().await }
            },
        );
        let expiry_job = Arc::new(expiry.job);
        spawn_periodic(&mut set, stop, "expiry", expiry.interval, move || {
            let job = Arc::clone(&expiry_job);
            async move { job.run_once().await }
        });
        for prune_outbox in prune_outbox {
            let job = Arc::new(prune_outbox.job);
            spawn_periodic(
                &mut set,
                stop,
                "outbox-prune",
                prune_outbox.interval,
                move || {
                    let job = Arc::clone(&job);
                    async move { job.prune_once().await }
                },
            );
        }
        if let Some(relay) = relay {
            let stop = stop.clone();
            set.spawn(async move {
                relay.run(stop).await;
                Ok(())
            });
        }
        let stop = stop.clone();
        set.spawn(async move {
            if let Some(provision) = provision {
                if !provision_topics(&kafka, &provision, &stop).await {
                    return Ok(());
                }
            }
            let dlq = kafka.producer()?;
            kafka::run_consumer(
                &kafka,
                &inbound.topics,
                inbound.handler,
                dlq,
                inbound.health,
                stop,
            )
            .await
        });
        set
    }
}

/// Runs `job` every `interval` until `stop`; a failed round is logged and
/// the next one tries again.
fn spawn_periodic<F, Fut>(
    set: &mut JoinSet<anyhow::Result<()>>,
    stop: &CancellationToken,
    name: &'static str,
    interval: Duration,
    job: F,
) where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = Result<usize, StoreError>> + Send,
{
    let stop = stop.clone();
    set.spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                () = tokio::time::sleep(interval) => {}
            }
            match job().await {
                Ok(0) => {}
                Ok(done) => tracing::info!(job = name, done, "periodic job round"),
                Err(error) => tracing::warn!(
                    job = name,
                    error = format!("{error:#}"),
                    "periodic job round failed"
                ),
            }
        }
    });
}

/// Where the commerce integration events go (`topics.*`).
pub(crate) fn announced_topics(config: &Config) -> Topics {
    let topics = &config.topics;
    Topics {
        payment_created: topics.payment_created.clone(),
        payment_completed: topics.payment_completed.clone(),
        payment_failed: topics.payment_failed.clone(),
        payment_canceled: topics.payment_canceled.clone(),
        payment_cancel_failed: topics.payment_cancel_failed.clone(),
    }
}

/// The reconciler's settings from `reconciler.*`.
pub(crate) fn reconciler_settings(config: &Config) -> ReconcilerSettings {
    let reconciling = &config.reconciler;
    ReconcilerSettings {
        min_age: Duration::from_millis(reconciling.min_age_ms),
        confirm_window: Duration::from_secs(reconciling.confirm_window_secs),
        first_backoff: Duration::from_millis(reconciling.first_backoff_ms),
        max_backoff: Duration::from_millis(reconciling.max_backoff_ms),
        batch: reconciling.batch,
        concurrency: reconciling.concurrency,
        cancels: CancelSettings {
            idempotency_window: Duration::from_secs(reconciling.cancel_idempotency_window_secs),
            safety_margin: Duration::from_secs(reconciling.cancel_safety_margin_secs),
            resend_for: Duration::from_secs(reconciling.cancel_resend_for_secs),
            settle_within: Duration::from_secs(reconciling.cancel_settle_within_secs),
        },
    }
}

/// What `/api/v1/**` requires of callers; no key and not disabled is refused.
fn authenticator(auth: &config::AuthConfig) -> anyhow::Result<Authenticator> {
    if auth.disabled {
        tracing::warn!(
            "AUTHENTICATION IS DISABLED (auth.disabled / PAYMENT__AUTH__DISABLED): anyone may \
             read and cancel any payment. Development only: never run like this with real \
             payments or outside a developer's machine."
        );
        return Ok(Authenticator::disabled());
    }
    Ok(Authenticator::new(AuthSettings {
        hs256_secret: auth
            .hs256_secret
            .as_ref()
            .map(|secret| secret.expose_secret().as_bytes()),
        public_keys_file: auth.public_keys_file.as_deref(),
        issuer: auth.issuer.clone(),
        audience: auth.audience.clone(),
    })?)
}

/// The broker settings the configuration asks for.
pub(crate) fn kafka_settings(config: &Config) -> KafkaSettings {
    KafkaSettings {
        brokers: config.kafka.brokers.clone(),
        client_id: config.kafka.client_id.clone(),
        group_id: config.kafka.group_id.clone(),
        session_timeout: Duration::from_millis(config.kafka.session_timeout_ms),
        debug: config.kafka.debug.clone(),
    }
}

/// The payment gateway the configuration asks for.
pub(crate) fn gateway(config: &Config) -> anyhow::Result<ConfiguredGateway> {
    Ok(match config.gateway {
        GatewayKind::Toss => {
            let secret_key = config
                .toss
                .secret_key
                .clone()
                .context("toss.secret_key (PAYMENT__TOSS__SECRET_KEY) is required")?;
            ConfiguredGateway::Toss(TossGateway::new(&TossSettings {
                base_url: config.toss.base_url.clone(),
                secret_key,
                connect_timeout: Duration::from_millis(config.toss.connect_timeout_ms),
                read_timeout: Duration::from_millis(config.toss.read_timeout_ms),
            })?)
        }
        GatewayKind::Fake => ConfiguredGateway::Fake(FakeGateway::new(config.fake.clone())?),
    })
}

/// Creates the topics, retrying while the broker is away. Answers `false`
/// when shutdown came first.
async fn provision_topics(
    kafka: &KafkaSettings,
    provision: &Provision,
    stop: &CancellationToken,
) -> bool {
    let mut backoff = Duration::from_millis(200);
    loop {
        let attempt = tokio::select! {
            () = stop.cancelled() => return false,
            attempt = kafka.ensure_topics(&provision.topics, provision.partitions, provision.replication) => attempt,
        };
        match attempt {
            Ok(()) => return true,
            Err(error) => tracing::warn!(error = format!("{error:#}"), "cannot create topics yet"),
        }
        tokio::select! {
            () = stop.cancelled() => return false,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
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
