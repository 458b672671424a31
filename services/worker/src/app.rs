//! Building and running a worker process: the work loop plus the ops endpoints.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use anyhow::Context;
use courier_core::{config::connect_nats, jetstream::ensure_streams_with_retry, ops::Readiness};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{config::WorkerConfig, consumer::WorkLoop, handlers::Handlers, metrics::WorkerMetrics};

pub struct Application {
    listener: TcpListener,
    registry: Arc<Registry>,
    readiness: Readiness,
    work: Arc<WorkLoop>,
    nats: async_nats::Client,
}

impl Application {
    pub async fn build(config: WorkerConfig, handlers: Handlers) -> anyhow::Result<Self> {
        let nats = connect_nats(&config.nats.nats_url, "courier-worker").await.context("invalid NATS URL")?;
        let mut registry = Registry::default();
        let metrics = WorkerMetrics::register(&mut registry);
        let attached = Arc::new(AtomicBool::new(false));
        let readiness = Readiness::new().with_nats(nats.clone()).with_check("consumer", {
            let attached = attached.clone();
            move || {
                let ok = attached.load(Ordering::Acquire);
                async move { if ok { Ok(()) } else { Err("not attached to the workers consumer".to_owned()) } }
            }
        });
        let listener = courier_core::ops::bind(config.metrics_listen).await?;
        let work = Arc::new(WorkLoop {
            js: async_nats::jetstream::new(nats.clone()),
            handlers,
            worker_id: config.worker_id(),
            config,
            metrics,
            attached,
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
        let replicas = work.config.nats.stream_replicas;
        let js = work.js.clone();
        let ops = tokio::spawn(courier_core::ops::serve(listener, registry, readiness, shutdown.clone()));
        if ensure_streams_with_retry(&js, replicas, &shutdown).await {
            work.run(shutdown.clone()).await;
        }
        ops.await.context("ops server task failed")?.context("ops server failed")?;
        let _ = nats.flush().await;
        tracing::info!("worker stopped");
        Ok(())
    }
}
