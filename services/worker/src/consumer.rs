//! The work loop: one durable pull consumer (`workers`) on the `TASKS` work queue shared by every
//! worker process (competing consumers). Ack only after the handler stored its effect; transient
//! failures are retried with exponential backoff (`nak` with delay); the last failed delivery,
//! permanent failures and undecodable tasks go to the `DLQ` stream and leave the queue.
//!
//! The worker, not the server, enforces `max_deliver`: the consumer redelivers without limit
//! and a delivery past `max_deliver` (earlier attempts died with their worker or overran
//! `ack_wait`) is dead-lettered without running. A server-side limit would instead leave such a
//! task stuck in the work queue forever, neither delivered nor dead-lettered.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use async_nats::{
    HeaderMap,
    jetstream::{
        self, AckKind,
        consumer::{AckPolicy, PullConsumer, pull},
        message::PublishMessage,
    },
};
use courier_core::{
    Task,
    backoff::Backoff,
    subjects::{TASKS_ALL, TASKS_STREAM, TRACE_HEADER, dead_letter_subject},
    task::is_valid_task_kind,
};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    config::{Fault, WorkerConfig},
    handlers::{Handlers, TaskError},
    metrics::WorkerMetrics,
};

pub use courier_core::subjects::{WORKERS_CONSUMER, dead_letter_header};

pub struct WorkLoop {
    pub js: jetstream::Context,
    pub handlers: Handlers,
    pub config: WorkerConfig,
    pub worker_id: String,
    pub metrics: Arc<WorkerMetrics>,
    /// True while attached to the consumer (part of `/readyz`).
    pub attached: Arc<AtomicBool>,
}

/// The consumer definition (created, or updated to this, at start-up).
pub fn consumer_config(config: &WorkerConfig) -> pull::Config {
    pull::Config {
        durable_name: Some(WORKERS_CONSUMER.to_owned()),
        description: Some("Courier workers (competing consumers)".to_owned()),
        filter_subject: TASKS_ALL.to_owned(),
        ack_policy: AckPolicy::Explicit,
        ack_wait: config.ack_wait,
        // Unlimited on the server: the worker dead-letters (see the module docs).
        max_deliver: -1,
        max_ack_pending: 10_000,
        ..Default::default()
    }
}

impl WorkLoop {
    /// Pulls and processes tasks until `shutdown`; in-flight tasks finish before it returns.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_secs(2));
        while !shutdown.is_cancelled() {
            match self.attach().await {
                Ok(consumer) => {
                    backoff.reset();
                    self.process_until_detached(consumer, &shutdown).await;
                }
                Err(err) => {
                    tracing::warn!(%err, retry_in = ?backoff.next_delay(), "cannot attach to the {WORKERS_CONSUMER} consumer");
                    if !backoff.wait(&shutdown).await {
                        break;
                    }
                }
            }
            self.attached.store(false, Ordering::Release);
        }
    }

    async fn attach(&self) -> Result<PullConsumer, async_nats::Error> {
        let stream = self.js.get_stream(TASKS_STREAM).await?;
        Ok(stream.create_consumer(consumer_config(&self.config)).await?)
    }

    async fn process_until_detached(
        self: &Arc<Self>,
        consumer: PullConsumer,
        shutdown: &CancellationToken,
    ) {
        let messages = match consumer.messages().await {
            Ok(messages) => messages,
            Err(err) => {
                tracing::warn!(%err, "cannot pull from the {WORKERS_CONSUMER} consumer");
                return;
            }
        };
        self.attached.store(true, Ordering::Release);
        tracing::info!(worker = %self.worker_id, kinds = ?self.handlers.kinds(), "worker attached to {WORKERS_CONSUMER}");
        // Stop pulling at shutdown; tasks already started run to completion.
        messages
            .take_until(shutdown.clone().cancelled_owned())
            .for_each_concurrent(self.config.concurrency.max(1), |message| {
                let this = self.clone();
                async move {
                    match message {
                        Ok(message) => this.process(message).await,
                        Err(err) => {
                            tracing::debug!(%err, "pull error");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            })
            .await;
    }

    async fn process(&self, message: jetstream::Message) {
        let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
        let kind = message
            .subject
            .strip_prefix("tasks.")
            .filter(|k| is_valid_task_kind(k))
            .unwrap_or("unknown")
            .to_owned();
        let task: Task = match serde_json::from_slice(&message.payload) {
            Ok(task) => task,
            Err(err) => {
                self.dead_letter(
                    &message,
                    &kind,
                    None,
                    &format!("undecodable task: {err}"),
                    delivered,
                )
                .await;
                return;
            }
        };
        let span = tracing::info_span!("task", task_id = %task.id, %kind, trace_id = %task.trace_id, attempt = delivered);
        self.handle(message, kind, task, delivered).instrument(span).await;
    }

    /// Runs a decoded task and settles its message: ack, nak with backoff, or dead letter.
    async fn handle(&self, message: jetstream::Message, kind: String, task: Task, delivered: i64) {
        let Some(handler) = self.handlers.get(&task.kind).cloned() else {
            self.dead_letter(
                &message,
                &kind,
                Some(&task),
                &format!("no handler for task kind '{}'", task.kind),
                delivered,
            )
            .await;
            return;
        };
        if delivered > self.config.max_deliver {
            let reason = format!(
                "no attempt completed in {} deliveries (worker died or exceeded ack_wait)",
                delivered - 1
            );
            self.dead_letter(&message, &kind, Some(&task), &reason, delivered - 1).await;
            return;
        }
        self.metrics.in_flight.inc();
        let started = Instant::now();
        let outcome = self.run_handler(&message, handler.as_ref(), &task).await;
        self.metrics.in_flight.dec();
        self.metrics.observe_duration(&kind, started.elapsed());
        match outcome {
            Ok(()) => {
                // Double ack: the server confirms, so a lost ack cannot cause a silent redelivery.
                if let Err(err) = message.double_ack().await {
                    tracing::warn!(%err, task_id = %task.id, "ack failed; the task may be redelivered (effects are idempotent)");
                }
                self.metrics.processed(&kind);
                tracing::debug!(task_id = %task.id, kind, "task done");
            }
            Err(TaskError::Permanent(reason)) => {
                self.dead_letter(&message, &kind, Some(&task), &reason, delivered).await;
            }
            Err(TaskError::Transient(reason)) if delivered >= self.config.max_deliver => {
                let reason = format!("gave up after {delivered} attempts: {reason}");
                self.dead_letter(&message, &kind, Some(&task), &reason, delivered).await;
            }
            Err(TaskError::Transient(reason)) => {
                let delay = self.config.backoff(delivered);
                tracing::info!(task_id = %task.id, kind, attempt = delivered, retry_in = ?delay, %reason, "task failed; retrying");
                self.metrics.retried(&kind);
                if let Err(err) = message.ack_with(AckKind::Nak(Some(delay))).await {
                    tracing::warn!(%err, "nak failed; the task will be redelivered after ack_wait");
                }
            }
        }
    }

    /// Runs the handler, telling the server every `ack_wait / 2` that the task is still being
    /// worked on, so a slow task is not redelivered to another worker while this one is alive.
    async fn run_handler(
        &self,
        message: &jetstream::Message,
        handler: &dyn crate::handlers::TaskHandler,
        task: &Task,
    ) -> Result<(), TaskError> {
        let work = async {
            if let Some(Fault::Delay(delay)) = self.config.fault {
                tokio::time::sleep(delay).await;
            }
            handler.handle(task).await
        };
        tokio::pin!(work);
        let period = (self.config.ack_wait / 2).max(Duration::from_millis(100));
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            tokio::select! {
                outcome = &mut work => return outcome,
                _ = heartbeat.tick() => {
                    if let Err(err) = message.ack_with(AckKind::Progress).await {
                        tracing::debug!(%err, task_id = %task.id, "in-progress ack failed");
                    }
                }
            }
        }
    }

    /// Moves a task to `dlq.tasks.<kind>` with why and how often it failed, then removes it from
    /// the work queue. If the dead letter cannot be written, the task stays queued (nak).
    async fn dead_letter(
        &self,
        message: &jetstream::Message,
        kind: &str,
        task: Option<&Task>,
        reason: &str,
        attempts: i64,
    ) {
        let mut headers = HeaderMap::new();
        headers.insert(dead_letter_header::REASON, truncate(reason, 1024));
        headers.insert(dead_letter_header::ATTEMPTS, attempts.to_string().as_str());
        headers.insert(dead_letter_header::ORIGINAL_SUBJECT, message.subject.as_str());
        headers.insert(dead_letter_header::WORKER, self.worker_id.as_str());
        // One dead letter per TASKS message (a repeated attempt to dead-letter the same message is
        // dropped), but a task retried from the DLQ and failing again is a new message.
        let sequence = message.info().map(|i| i.stream_sequence).unwrap_or(0);
        let msg_id = format!("dead-tasks-{sequence}");
        if let Some(task) = task {
            headers.insert(dead_letter_header::TASK_ID, task.id.to_string().as_str());
            headers.insert(TRACE_HEADER, task.trace_id.as_str());
        }
        let publish = PublishMessage::build()
            .payload(message.payload.clone())
            .headers(headers)
            .message_id(msg_id);
        let stored = match self.js.send_publish(dead_letter_subject(kind), publish).await {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(err) => Err(err.to_string()),
        };
        match stored {
            Ok(()) => {
                if let Err(err) = message.ack_with(AckKind::Term).await {
                    tracing::warn!(%err, "terminating a dead-lettered task failed; it may be redelivered");
                }
                self.metrics.dead_lettered(kind);
                tracing::warn!(kind, attempts, reason, "task dead-lettered");
            }
            Err(err) => {
                tracing::warn!(%err, "writing a dead letter failed; task stays queued");
                let _ = message.ack_with(AckKind::Nak(Some(self.config.backoff(attempts)))).await;
            }
        }
    }
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let cut = (0..=max).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
    &text[..cut]
}
