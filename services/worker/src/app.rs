//! Building and running a worker process: the work loop plus the ops endpoints.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use anyhow::Context;
use courier_core::{
    backoff::Backoff,
    config::connect_nats,
    jetstream::{StreamUse, ensure_streams_for_with_retry},
    ops::Readiness,
};
use courier_store::{Outbox, OutboxMetrics, Store};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    config::WorkerConfig,
    consumer::WorkLoop,
    handlers::{Handlers, Noop, TaskHandler},
    metrics::WorkerMetrics,
    pets::{PetsEnrich, PetsRecheck},
    webhook::WebhookMetrics,
};

/// Every built-in handler (`pets.enrich`, `pets.recheck`, `system.noop`), writing to the store named in `config`
/// and publishing events on `nats`. The store client connects lazily (a worker starts while
/// MongoDB is down and reports not ready).
pub async fn standard_handlers(
    config: &WorkerConfig,
    nats: async_nats::Client,
) -> anyhow::Result<Handlers> {
    let store = Store::connect(
        &config.mongodb_uri,
        &config.mongodb_database,
        config.mongodb_timeout,
        "courier-worker",
    )
    .await
    .context("invalid MongoDB URI")?
    .with_query_timeout(config.mongodb_query_timeout);
    // The api's relay publishes what the fast path leaves behind; these counters stay local.
    let outbox = Outbox::new(store.clone(), nats, std::sync::Arc::new(OutboxMetrics::default()));
    let pets = PetsEnrich::new(store.clone(), outbox, config.worker_id(), config.fault)
        .context("species data")?;
    let pets = Arc::new(pets);
    let mut handlers = Handlers::new()
        .with(pets.clone())
        .with(Arc::new(PetsRecheck(pets)))
        .with(Arc::new(Noop))
        .with_store(store);
    if let Some(path) = &config.collections_file {
        let metrics = WebhookMetrics::new();
        for webhook in crate::webhook::handlers_from_file(path, config, &metrics)? {
            if handlers.get(webhook.kind()).is_some() {
                anyhow::bail!(
                    "task '{}' is a built-in handler's kind: it cannot be a webhook",
                    webhook.kind()
                );
            }
            tracing::info!(kind = webhook.kind(), "delivering webhook task");
            handlers = handlers.with(webhook);
        }
        handlers = handlers.with_webhook_metrics(metrics);
    }
    Ok(handlers)
}

/// The kinds of the `external: true` tasks in the collections file at `path`, each once.
fn external_kinds(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the collections file {}", path.display()))?;
    let (file, _) = courier_core::collection_spec::CollectionsFile::load_checked(&text)
        .map_err(|err| anyhow::anyhow!("collections file {}: {err}", path.display()))?;
    let mut kinds: Vec<String> = file.external_kinds().map(str::to_owned).collect();
    kinds.sort();
    kinds.dedup();
    for kind in &kinds {
        tracing::info!(%kind, consumer = %courier_core::subjects::external_consumer(kind), "tasks for external workers");
    }
    Ok(kinds)
}

/// Longest wait at shutdown for the handlers' background work.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

pub struct Application {
    listener: TcpListener,
    registry: Arc<Registry>,
    readiness: Readiness,
    work: Arc<WorkLoop>,
    nats: async_nats::Client,
}

impl Application {
    /// The worker as `courier-worker` runs it: the [`standard_handlers`].
    pub async fn build_standard(config: WorkerConfig) -> anyhow::Result<Self> {
        let nats = connect_nats(&config.nats.nats_url, &config.nats.auth, "courier-worker")
            .await
            .context("NATS configuration")?;
        let handlers = standard_handlers(&config, nats.clone()).await?;
        Self::build_with_client(config, nats, handlers).await
    }

    /// A worker serving `handlers`.
    pub async fn build(config: WorkerConfig, handlers: Handlers) -> anyhow::Result<Self> {
        let nats = connect_nats(&config.nats.nats_url, &config.nats.auth, "courier-worker")
            .await
            .context("NATS configuration")?;
        Self::build_with_client(config, nats, handlers).await
    }

    async fn build_with_client(
        config: WorkerConfig,
        nats: async_nats::Client,
        handlers: Handlers,
    ) -> anyhow::Result<Self> {
        let mut registry = courier_core::ops::component_registry("worker");
        let metrics = WorkerMetrics::register(&mut registry, &handlers.kinds());
        if let Some(webhooks) = handlers.webhook_metrics() {
            webhooks.register(&mut registry);
        }
        let attached = Arc::new(AtomicBool::new(false));
        let mut readiness = Readiness::new().with_nats(nats.clone()).with_check("consumer", {
            let attached = attached.clone();
            move || {
                let ok = attached.load(Ordering::Acquire);
                async move {
                    if ok {
                        Ok(())
                    } else {
                        Err("not attached to the workers-<priority> consumers".to_owned())
                    }
                }
            }
        });
        if let Some(store) = handlers.store().cloned() {
            readiness =
                readiness.with_check("mongodb", move || {
                    let store = store.clone();
                    async move {
                        store.ping().await.map_err(|err| format!("mongodb unreachable: {err}"))
                    }
                });
        }
        let external_kinds = match &config.collections_file {
            Some(path) => external_kinds(path)?,
            None => Vec::new(),
        };
        let listener = courier_core::ops::bind(config.metrics_listen).await?;
        let work = Arc::new(WorkLoop {
            js: async_nats::jetstream::new(nats.clone()),
            handlers,
            worker_id: config.worker_id(),
            config,
            metrics,
            attached,
            external_kinds,
        });
        Ok(Application { listener, registry: Arc::new(registry), readiness, work, nats })
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Works until `shutdown`, then lets in-flight tasks finish.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Application { listener, registry, readiness, work, nats } = self;
        tracing::info!(metrics = %listener.local_addr()?, worker = %work.worker_id, "worker starting");
        let replicas = work.config.nats.streams();
        let js = work.js.clone();
        let ops =
            tokio::spawn(courier_core::ops::serve(listener, registry, readiness, shutdown.clone()));
        let indexes = work
            .handlers
            .store()
            .cloned()
            .map(|store| tokio::spawn(ensure_indexes_with_retry(store, shutdown.clone())));
        if ensure_streams_for_with_retry(&js, replicas, StreamUse::Work, &shutdown).await {
            work.clone().run(shutdown.clone()).await;
        }
        // Bounded: with NATS gone, background publishes give up; the api's relay has them.
        if tokio::time::timeout(SHUTDOWN_GRACE, work.handlers.drain()).await.is_err() {
            tracing::warn!(
                "handlers' background work did not finish within {SHUTDOWN_GRACE:?}; the outbox relay will publish what is left"
            );
        }
        if let Some(indexes) = indexes {
            indexes.abort();
        }
        ops.await.context("ops server task failed")?.context("ops server failed")?;
        // A flush waits for a connection: never let an unreachable NATS block the exit.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), nats.flush()).await;
        tracing::info!("worker stopped");
        Ok(())
    }
}

/// Creates the task-result index, retrying while the store is down.
async fn ensure_indexes_with_retry(store: Store, shutdown: CancellationToken) {
    let mut backoff = Backoff::new(std::time::Duration::from_secs(5));
    loop {
        match store.ensure_task_result_indexes().await {
            Ok(()) => return,
            Err(err) => {
                tracing::warn!(%err, retry_in = ?backoff.next_delay(), "creating the task-result index failed")
            }
        }
        if !backoff.wait(&shutdown).await {
            return;
        }
    }
}
