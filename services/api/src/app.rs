//! Building and running the api: connect to MongoDB and NATS (lazily, so the api starts while
//! either is down), bind the listener, serve until shutdown, then drain the outbox fast path.

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::Ordering},
};

use anyhow::Context;
use axum::Router;
use courier_core::{
    auth::JwtKeys, config::connect_nats, jetstream::ensure_streams_with_retry,
    jetstream_metrics::JetStreamMetrics, ops::Readiness, request_telemetry::HttpMetrics,
    shutdown::retry_until_ok,
};
use courier_store::{Outbox, OutboxMetrics, Queues, Scheduler, SchedulerMetrics, Store};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    auth::{Accounts, LoginLimiter, LoginLimits, RateLimiter, bootstrap::BootstrapAdmin},
    collections::{Collections, CollectionsHandle},
    config::ApiConfig,
    state::AppState,
};

/// How often the api looks for tasks left on legacy `tasks.<kind>` subjects (an upgrade).
const LEGACY_TASK_MOVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
    nats: async_nats::Client,
    config: ApiConfig,
    jetstream_metrics: Arc<JetStreamMetrics>,
    bootstrap: Option<BootstrapAdmin>,
    scheduler_metrics: Arc<SchedulerMetrics>,
    /// Set once nats-server has the membership responder's subscription (readiness).
    membership_serving: Arc<std::sync::atomic::AtomicBool>,
}

impl Application {
    pub async fn build(config: ApiConfig) -> anyhow::Result<Self> {
        let collections = Collections::load(&config.collections_file)?;
        let jwt = JwtKeys::from_args(&config.jwt).context("JWT configuration")?;
        anyhow::ensure!(
            jwt.issue("check", "check").is_some(),
            "the api signs tokens: configure a secret or a private key"
        );
        let store = Store::connect(
            &config.mongodb_uri,
            &config.mongodb_database,
            config.mongodb_timeout,
            "courier-api",
        )
        .await
        .context("invalid MongoDB URI")?
        .with_query_timeout(config.mongodb_query_timeout);
        let nats = connect_nats(&config.nats.nats_url, &config.nats.auth, "courier-api")
            .await
            .context("NATS configuration")?;

        let mut registry = courier_core::ops::component_registry("api");
        let metrics = OutboxMetrics::register(&mut registry);
        let http_metrics = HttpMetrics::register(&mut registry);
        let jetstream_metrics = JetStreamMetrics::register(&mut registry);
        let chat_metrics = crate::chat::ChatMetrics::register(&mut registry);
        let scheduler_metrics = SchedulerMetrics::register(&mut registry);
        let web_telemetry = config.web_telemetry.then(|| {
            crate::web_telemetry::WebTelemetry::register(
                &mut registry,
                config.web_telemetry_reports_per_minute,
            )
        });
        let writes = crate::writes::WriteLimits::new(&config, &mut registry);
        let bootstrap = BootstrapAdmin::from_config(&config)?;
        let bootstrapped = bootstrap.as_ref().map(BootstrapAdmin::done_flag);
        let outbox = Outbox::new(store.clone(), nats.clone(), metrics.clone())
            .with_max_pending(config.outbox_max_pending);
        let state = AppState {
            store: store.clone(),
            outbox,
            queues: Queues::new(nats.clone()),
            collections: CollectionsHandle::new(collections),
            metrics,
            max_body_bytes: config.max_body_bytes,
            fault: config.fault,
            accounts: Accounts::new(&store, config.refresh_ttl, config.refresh_absolute_ttl),
            jwt: Arc::new(jwt),
            login_limiter: Arc::new(LoginLimiter::new(LoginLimits {
                failures_per_pair: config.login_max_failures,
                failures_per_user: config.login_max_failures_per_user,
                attempts_per_address: config.login_max_attempts_per_address,
                window: config.login_window,
                failure_delay: config.login_failure_delay,
            })),
            register_limiter: Arc::new(RateLimiter::new(
                config.register_max_per_address,
                config.register_window,
            )),
            password_hashing: Arc::new(tokio::sync::Semaphore::new(usize::from(
                config.password_hash_concurrency,
            ))),
            trusted_proxies: Arc::new(config.trusted_proxies.clone()),
            web: Arc::new(crate::web::WebSettings::from_config(&config)?),
            seed_compat: config.seed_compat,
            web_telemetry,
            bootstrapped: bootstrapped.clone(),
            chat: Arc::new(crate::chat::Chat::new(&config, chat_metrics)),
            writes,
        };
        let membership_serving = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let responder_registered = membership_serving.clone();
        let readiness =
            Readiness::new()
                .with_nats(nats.clone())
                .with_check("mongodb", move || {
                    let store = store.clone();
                    async move {
                        store.ping().await.map_err(|err| format!("mongodb unreachable: {err}"))
                    }
                })
                .with_check("chat membership responder", move || {
                    let serving = responder_registered.load(Ordering::Acquire);
                    async move {
                        if serving {
                            Ok(())
                        } else {
                            Err("not yet subscribed to rpc.chat.membership".into())
                        }
                    }
                })
                .with_check("bootstrap admin", move || {
                    let done = bootstrapped.as_ref().is_none_or(|d| d.load(Ordering::Acquire));
                    async move {
                        if done {
                            Ok(())
                        } else {
                            Err("the bootstrap admin is not set up yet".into())
                        }
                    }
                });
        let router = crate::routes::router(
            state.clone(),
            Arc::new(registry),
            http_metrics,
            readiness,
            &config.http_limits,
        );
        let listener = courier_core::ops::bind(config.listen).await?;
        Ok(Application {
            listener,
            router,
            state,
            nats,
            config,
            jetstream_metrics,
            scheduler_metrics,
            bootstrap,
            membership_serving,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Serves until `shutdown` is cancelled, then finishes in-flight requests and publishes.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Application {
            listener,
            router,
            state,
            nats,
            config,
            jetstream_metrics,
            scheduler_metrics,
            bootstrap,
            membership_serving,
        } = self;
        tracing::info!(addr = %listener.local_addr()?, "api listening");

        let setup = {
            let (store, shutdown) = (state.store.clone(), shutdown.clone());
            let js = async_nats::jetstream::new(nats.clone());
            let replicas = config.nats.streams();
            let collections = state.collections.current();
            let accounts = state.accounts.clone();
            let hashing = state.password_hashing.clone();
            tokio::spawn(async move {
                let indexes_then_admin = async {
                    ensure_indexes_with_retry(&store, &accounts, &collections, &shutdown).await;
                    if let Some(bootstrap) = bootstrap {
                        bootstrap.run(&accounts, &hashing, &shutdown).await;
                    }
                };
                tokio::join!(
                    indexes_then_admin,
                    ensure_streams_with_retry(&js, replicas, &shutdown)
                );
            })
        };
        let watcher = {
            let (store, accounts, shutdown) =
                (state.store.clone(), state.accounts.clone(), shutdown.clone());
            state.collections.clone().watch_file(
                config.collections_file.clone(),
                config.collections_reload_interval,
                shutdown.clone(),
                move |collections| {
                    let (store, accounts, shutdown) =
                        (store.clone(), accounts.clone(), shutdown.clone());
                    async move {
                        ensure_indexes_with_retry(&store, &accounts, &collections, &shutdown).await
                    }
                },
            )
        };
        let watcher = tokio::spawn(watcher);
        if !config.jetstream_metrics_interval.is_zero() {
            let js = async_nats::jetstream::new(nats.clone());
            tokio::spawn(jetstream_metrics.run(
                js,
                config.jetstream_metrics_interval,
                shutdown.clone(),
            ));
        }
        let membership = tokio::spawn(crate::chat::rpc::serve_membership(
            nats.clone(),
            state.store.chat(),
            membership_serving,
            shutdown.clone(),
        ));
        let relay = tokio::spawn(state.outbox.clone().run_relay(
            config.relay_interval,
            config.relay_grace,
            shutdown.clone(),
        ));

        let scheduler = tokio::spawn(
            Scheduler::new(state.store.clone(), state.outbox.clone(), scheduler_metrics)
                .run(config.scheduler_interval, shutdown.clone()),
        );
        let legacy_mover = tokio::spawn(
            state.queues.clone().run_legacy_mover(LEGACY_TASK_MOVE_INTERVAL, shutdown.clone()),
        );

        axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .await
            .context("api server failed")?;
        shutdown.cancel();
        let _ = scheduler.await;
        let _ = legacy_mover.await;
        state.outbox.drain().await;
        let _ = relay.await;
        let _ = membership.await;
        setup.abort();
        let _ = watcher.await;
        // A flush waits for a connection: never let an unreachable NATS block the exit.
        match tokio::time::timeout(std::time::Duration::from_secs(2), nats.flush()).await {
            Ok(Err(err)) => tracing::debug!(%err, "flushing NATS at shutdown failed"),
            Err(_) => tracing::debug!("NATS unreachable at shutdown; not flushed"),
            Ok(Ok(())) => {}
        }
        tracing::info!("api stopped");
        Ok(())
    }
}

/// Creates every index the api needs — the outbox's, chat's, the accounts', and each collection's
/// declared ones — retrying while the store is down.
async fn ensure_indexes_with_retry(
    store: &Store,
    accounts: &Accounts,
    collections: &Collections,
    shutdown: &CancellationToken,
) {
    retry_until_ok(
        "creating MongoDB indexes",
        std::time::Duration::from_secs(5),
        shutdown,
        || async {
            store.ensure_indexes().await?;
            store.chat().ensure_indexes().await?;
            accounts.ensure_indexes().await?;
            for def in collections.all() {
                store.ensure_collection_indexes(&def.spec).await?;
            }
            Ok::<_, mongodb::error::Error>(())
        },
    )
    .await;
}
