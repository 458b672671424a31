//! The work loop: three durable pull consumers on the `TASKS` work queue, one per priority
//! (`workers-high`, `workers-normal`, `workers-low`, filters `tasks.<priority>.>`), each shared by
//! every worker process (competing consumers). Whenever a slot is free the worker takes its next
//! task from the line [`PullCycle`] names first that has one: high before normal before low, with
//! a share of starts for the lower lines so they never starve (the rule is in [`crate::dispatch`]).
//! Ack only after the handler stored its effect; transient failures are retried with exponential
//! backoff (`nak` with delay); the last failed delivery, permanent failures and undecodable tasks
//! go to the `DLQ` stream (`dlq.<task subject>`, so a retry keeps the priority) and leave the
//! queue.
//!
//! Pulling: a line's tasks are fetched at most as many as there are free slots, without waiting
//! (`no_wait`). A line that answers "nothing" is watched: one long-poll (batch of one) waits at
//! the server, so an arriving task wakes the worker, and until it answers the line counts as
//! empty. A line whose fetched tasks were all started counts as unknown, and the worker asks it
//! before taking a lower line's task. Tasks fetched but not started yet get in-progress acks like
//! running ones, and are handed back (`nak`) when the worker stops.
//!
//! The worker, not the server, enforces `max_deliver`: the consumers redeliver without limit
//! and a delivery past `max_deliver` (earlier attempts died with their worker or overran
//! `ack_wait`) is dead-lettered without running. A server-side limit would instead leave such a
//! task stuck in the work queue forever, neither delivered nor dead-lettered.
//!
//! Tasks of `external: true` triggers wait on `tasks.external.<kind>`, outside every priority's
//! filter: at attach the worker creates (or updates) one durable consumer `external-<kind>` per
//! such kind of its collections file, for workers outside Courier to pull from
//! (docs/workers.md, "External workers"), and never pulls from them itself.
//!
//! Before priorities every worker shared one consumer, `workers`, on `tasks.>`. Work-queue
//! consumers may not overlap, so a worker deletes it before creating the three; its unacknowledged
//! tasks stay in the stream and are delivered again (their effects apply once: task markers), and
//! the api moves tasks left on legacy `tasks.<kind>` subjects to `tasks.normal.<kind>`.

use std::{
    collections::VecDeque,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use async_nats::{
    HeaderMap,
    jetstream::{
        self, AckKind,
        consumer::{AckPolicy, PullConsumer, pull},
        context::ConsumerInfoErrorKind,
        message::PublishMessage,
    },
};
use courier_core::{
    Priority, Task,
    backoff::Backoff,
    subjects::{
        LEGACY_WORKERS_CONSUMER, TASKS_STREAM, TRACE_HEADER, dead_letter_subject,
        external_consumer, external_task_subject, parse_task_subject, priority_tasks_filter,
        workers_consumer,
    },
};
use futures::TryStreamExt;
use tokio::{sync::mpsc, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    config::{Fault, WorkerConfig},
    dispatch::PullCycle,
    handlers::{Handlers, TaskError},
    metrics::WorkerMetrics,
};

pub use courier_core::subjects::dead_letter_header;

/// How long a watch (a long-poll on an empty line) waits at the server before it is renewed.
const WATCH_EXPIRES: Duration = Duration::from_secs(5);
/// How long a failed watch waits before it reports (and the line is asked again).
const WATCH_RETRY_PAUSE: Duration = Duration::from_secs(1);

pub struct WorkLoop {
    pub js: jetstream::Context,
    pub handlers: Handlers,
    pub config: WorkerConfig,
    pub worker_id: String,
    pub metrics: Arc<WorkerMetrics>,
    /// True while attached to the consumers (part of `/readyz`).
    pub attached: Arc<AtomicBool>,
    /// The kinds whose `external-<kind>` consumers this worker creates (never pulls).
    pub external_kinds: Vec<String>,
}

/// The definition of `priority`'s consumer (created, or updated to this, at start-up).
pub fn consumer_config(config: &WorkerConfig, priority: Priority) -> pull::Config {
    pull::Config {
        durable_name: Some(workers_consumer(priority)),
        description: Some(format!("Courier workers, {priority} priority (competing consumers)")),
        filter_subject: priority_tasks_filter(priority),
        ack_policy: AckPolicy::Explicit,
        ack_wait: config.ack_wait,
        // Unlimited on the server: the worker dead-letters (see the module docs).
        max_deliver: -1,
        max_ack_pending: 10_000,
        ..Default::default()
    }
}

/// Consumer metadata key: the deliveries an external worker gives a task before it dead-letters
/// it (the consumer itself redelivers without limit, as the built-in ones do).
pub const EXTERNAL_MAX_DELIVER_KEY: &str = "courier_max_deliver";

/// The definition of the consumer external workers of `kind` share: the built-in consumers'
/// ack wait and redelivery, and the worker's `max_deliver` in its metadata.
pub fn external_consumer_config(config: &WorkerConfig, kind: &str) -> pull::Config {
    pull::Config {
        durable_name: Some(external_consumer(kind)),
        description: Some(format!("External workers of {kind} (docs/workers.md)")),
        filter_subject: external_task_subject(kind),
        ack_policy: AckPolicy::Explicit,
        ack_wait: config.ack_wait,
        max_deliver: -1,
        max_ack_pending: 10_000,
        metadata: [(EXTERNAL_MAX_DELIVER_KEY.to_owned(), config.max_deliver.to_string())].into(),
        ..Default::default()
    }
}

/// One priority's consumer and what the worker knows about it.
struct Lane {
    priority: Priority,
    consumer: PullConsumer,
    /// Fetched, not started yet (at most the free slots of one fetch, plus one from a watch).
    buffer: VecDeque<jetstream::Message>,
    /// A long-poll is waiting: the line had nothing when last asked.
    watching: bool,
}

/// What a watch brought back.
struct Watched {
    lane: usize,
    outcome: Result<Option<jetstream::Message>, String>,
}

impl WorkLoop {
    /// Pulls and processes tasks until `shutdown`; in-flight tasks finish before it returns.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_secs(2));
        while !shutdown.is_cancelled() {
            match self.attach().await {
                Ok(lanes) => {
                    backoff.reset();
                    self.process_until_detached(lanes, &shutdown).await;
                }
                Err(err) => {
                    tracing::warn!(%err, retry_in = ?backoff.next_delay(), "cannot attach to the workers-<priority> consumers");
                    if !backoff.wait(&shutdown).await {
                        break;
                    }
                }
            }
            self.attached.store(false, Ordering::Release);
        }
    }

    async fn attach(&self) -> Result<[Lane; 3], async_nats::Error> {
        let stream = self.js.get_stream(TASKS_STREAM).await?;
        match stream.consumer_info(LEGACY_WORKERS_CONSUMER).await {
            Ok(_) => {
                stream.delete_consumer(LEGACY_WORKERS_CONSUMER).await?;
                tracing::warn!(
                    "deleted the legacy {LEGACY_WORKERS_CONSUMER} consumer (tasks.>): tasks now go through one consumer per priority; its unacknowledged tasks are delivered again"
                );
            }
            Err(err) if err.kind() == ConsumerInfoErrorKind::NotFound => {}
            Err(err) => return Err(err.into()),
        }
        let mut lanes = Vec::with_capacity(3);
        for priority in Priority::ALL {
            let consumer = stream.create_consumer(consumer_config(&self.config, priority)).await?;
            lanes.push(Lane { priority, consumer, buffer: VecDeque::new(), watching: false });
        }
        for kind in &self.external_kinds {
            stream.create_consumer(external_consumer_config(&self.config, kind)).await?;
        }
        Ok(lanes.try_into().unwrap_or_else(|_| unreachable!("one lane per priority")))
    }

    async fn process_until_detached(
        self: &Arc<Self>,
        mut lanes: [Lane; 3],
        shutdown: &CancellationToken,
    ) {
        let concurrency = self.config.concurrency.max(1);
        let (watched_tx, mut watched) = mpsc::unbounded_channel::<Watched>();
        let mut running = JoinSet::new();
        let mut cycle = PullCycle::default();
        let period = (self.config.ack_wait / 2).max(Duration::from_millis(100));
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        self.attached.store(true, Ordering::Release);
        tracing::info!(worker = %self.worker_id, kinds = ?self.handlers.kinds(), "worker attached to workers-high, workers-normal and workers-low");
        'work: loop {
            while running.len() < concurrency && !shutdown.is_cancelled() {
                let free = concurrency - running.len();
                match self.pick(&mut lanes, &cycle, free, &watched_tx).await {
                    Ok(Some((priority, message))) => {
                        cycle.started();
                        let this = self.clone();
                        // Decoded and admitted here, in the order the tasks were taken.
                        let task = serde_json::from_slice::<Task>(&message.payload);
                        let admission = task.as_ref().ok().and_then(|task| {
                            self.handlers.get(&task.kind).and_then(|handler| handler.admit(task))
                        });
                        running.spawn(async move {
                            this.process(message, priority, task).await;
                            drop(admission);
                        });
                    }
                    Ok(None) => break,
                    Err(err) => {
                        tracing::warn!(%err, "pulling tasks failed; attaching again");
                        break 'work;
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => {
                    self.handlers.stopping();
                    break;
                }
                Some(_) = running.join_next(), if !running.is_empty() => {
                    // Reap every task that has finished too, so the next fetch asks for all the
                    // free slots at once rather than one round trip per slot.
                    while running.try_join_next().is_some() {}
                }
                Some(Watched { lane, outcome }) = watched.recv() => {
                    let lane = &mut lanes[lane];
                    lane.watching = false;
                    match outcome {
                        Ok(Some(message)) => lane.buffer.push_back(message),
                        Ok(None) => {}
                        Err(err) => tracing::debug!(%err, priority = %lane.priority, "watch failed"),
                    }
                }
                _ = heartbeat.tick() => {
                    for message in lanes.iter().flat_map(|lane| &lane.buffer) {
                        if let Err(err) = message.ack_with(AckKind::Progress).await {
                            tracing::debug!(%err, "in-progress ack of a fetched task failed");
                        }
                    }
                }
            }
        }
        // Hand fetched tasks back at once (another worker takes them), let started ones finish.
        for message in lanes.iter_mut().flat_map(|lane| lane.buffer.drain(..)) {
            let _ = message.ack_with(AckKind::Nak(None)).await;
        }
        while running.join_next().await.is_some() {}
    }

    /// The next task to start: from the first line in `cycle`'s order that has one, fetching up
    /// to `free` from a line that is neither known to be empty nor holding fetched tasks. `None`
    /// when every line is empty (each is then watched).
    async fn pick(
        &self,
        lanes: &mut [Lane; 3],
        cycle: &PullCycle,
        free: usize,
        watched: &mpsc::UnboundedSender<Watched>,
    ) -> Result<Option<(Priority, jetstream::Message)>, async_nats::Error> {
        for priority in cycle.order() {
            let lane = &mut lanes[priority.index()];
            if let Some(message) = lane.buffer.pop_front() {
                return Ok(Some((priority, message)));
            }
            if lane.watching {
                continue;
            }
            let mut fetched = lane.consumer.fetch().max_messages(free).messages().await?;
            while let Some(message) = fetched.try_next().await? {
                lane.buffer.push_back(message);
            }
            if let Some(message) = lane.buffer.pop_front() {
                return Ok(Some((priority, message)));
            }
            lane.watching = true;
            tokio::spawn(watch(lane.consumer.clone(), priority.index(), watched.clone()));
        }
        Ok(None)
    }

    async fn process(
        &self,
        message: jetstream::Message,
        priority: Priority,
        task: Result<Task, serde_json::Error>,
    ) {
        let info = message.info().ok();
        let delivered = info.as_ref().map_or(1, |i| i.delivered);
        if delivered == 1
            && let Some(info) = &info
            && let Ok(waited) = SystemTime::now().duration_since(SystemTime::from(info.published))
        {
            self.metrics.observe_wait(priority, waited);
        }
        let kind = parse_task_subject(&message.subject)
            .map_or("unknown", |subject| subject.kind)
            .to_owned();
        let lane = Settle { kind, priority };
        let task = match task {
            Ok(task) => task,
            Err(err) => {
                self.dead_letter(
                    &message,
                    &lane,
                    None,
                    &format!("undecodable task: {err}"),
                    delivered,
                )
                .await;
                return;
            }
        };
        let span = tracing::info_span!("task", task_id = %task.id, kind = %lane.kind, %priority, trace_id = %task.trace_id, attempt = delivered);
        self.handle(message, lane, task, delivered).instrument(span).await;
    }

    /// Runs a decoded task and settles its message: ack, nak with backoff, or dead letter.
    async fn handle(&self, message: jetstream::Message, lane: Settle, task: Task, delivered: i64) {
        let kind = lane.kind.as_str();
        let Some(handler) = self.handlers.get(&task.kind).cloned() else {
            self.dead_letter(
                &message,
                &lane,
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
            self.dead_letter(&message, &lane, Some(&task), &reason, delivered - 1).await;
            return;
        }
        let in_flight = self.metrics.in_flight(lane.priority);
        in_flight.inc();
        let started = Instant::now();
        let outcome = self.run_handler(&message, handler.as_ref(), &task).await;
        in_flight.dec();
        self.metrics.observe_duration(kind, lane.priority, started.elapsed());
        match outcome {
            Ok(()) => {
                // Double ack: the server confirms, so a lost ack cannot cause a silent redelivery.
                if let Err(err) = message.double_ack().await {
                    tracing::warn!(%err, task_id = %task.id, "ack failed; the task may be redelivered (effects are idempotent)");
                }
                self.metrics.processed(kind, lane.priority);
                tracing::debug!(task_id = %task.id, kind, "task done");
            }
            Err(TaskError::Permanent(reason)) => {
                self.dead_letter(&message, &lane, Some(&task), &reason, delivered).await;
            }
            Err(TaskError::DeadLetter { reason, attempts }) => {
                self.dead_letter(&message, &lane, Some(&task), &reason, attempts).await;
            }
            Err(TaskError::Transient(reason)) if delivered >= self.config.max_deliver => {
                let reason = format!("gave up after {delivered} attempts: {reason}");
                self.dead_letter(&message, &lane, Some(&task), &reason, delivered).await;
            }
            Err(TaskError::Transient(reason)) => {
                let delay = self.config.backoff(delivered);
                tracing::info!(task_id = %task.id, kind, attempt = delivered, retry_in = ?delay, %reason, "task failed; retrying");
                self.metrics.retried(kind, lane.priority);
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
        let delivered = message.info().map_or(1, |info| info.delivered);
        let work = crate::handlers::with_delivery_attempt(delivered, async {
            if let Some(Fault::Delay(delay)) = self.config.fault {
                tokio::time::sleep(delay).await;
            }
            handler.handle(task).await
        });
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

    /// Moves a task to `dlq.<its subject>` with why and how often it failed, then removes it
    /// from the work queue. If the dead letter cannot be written, the task stays queued (nak).
    async fn dead_letter(
        &self,
        message: &jetstream::Message,
        lane: &Settle,
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
        let subject = dead_letter_subject(&message.subject);
        let stored = match self.js.send_publish(subject, publish).await {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(err) => Err(err.to_string()),
        };
        match stored {
            Ok(()) => {
                if let Err(err) = message.ack_with(AckKind::Term).await {
                    tracing::warn!(%err, "terminating a dead-lettered task failed; it may be redelivered");
                }
                self.metrics.dead_lettered(&lane.kind, lane.priority);
                tracing::warn!(kind = %lane.kind, priority = %lane.priority, attempts, reason, "task dead-lettered");
            }
            Err(err) => {
                tracing::warn!(%err, "writing a dead letter failed; task stays queued");
                let _ = message.ack_with(AckKind::Nak(Some(self.config.backoff(attempts)))).await;
            }
        }
    }
}

/// The labels a task's outcome is counted under.
struct Settle {
    /// From the subject (`unknown` when it names no valid kind).
    kind: String,
    /// The line it came from.
    priority: Priority,
}

/// Waits (one long-poll) for `lane`'s next task and reports it; a task that arrives after the
/// worker stopped listening is handed back at once.
async fn watch(consumer: PullConsumer, lane: usize, report: mpsc::UnboundedSender<Watched>) {
    let outcome = async {
        let mut batch = consumer.batch().max_messages(1).expires(WATCH_EXPIRES).messages().await?;
        batch.try_next().await
    }
    .await
    .map_err(|err| err.to_string());
    if outcome.is_err() {
        // The line is asked again when this is reported: not in a tight loop.
        tokio::time::sleep(WATCH_RETRY_PAUSE).await;
    }
    if let Err(mpsc::error::SendError(Watched { outcome: Ok(Some(message)), .. })) =
        report.send(Watched { lane, outcome })
    {
        let _ = message.ack_with(AckKind::Nak(None)).await;
    }
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let cut = (0..=max).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
    &text[..cut]
}
