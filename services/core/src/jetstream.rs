//! The JetStream streams Courier relies on (`EVENTS`, `TASKS`, `DLQ`) and their one definition.
//! Every service ensures them at start-up, so start order never matters: the api owns them
//! (creates them, or updates them to this definition); the broadcaster and the worker only
//! create the ones they use when missing and never change an existing one, so their NATS users
//! need no permission to update or delete streams (docs/security.md).

use std::time::Duration;

use async_nats::jetstream::{
    self,
    stream::{Config, DiscardPolicy, RetentionPolicy, StorageType},
};

use crate::subjects::{DLQ_ALL, DLQ_STREAM, EVENTS_ALL, EVENTS_STREAM, TASKS_ALL, TASKS_STREAM};

/// How long events stay replayable: resume works for clients away less than this.
pub const EVENTS_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);
/// Window in which a re-published event id is recognised and dropped by the server.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(5 * 60);
/// Dead letters are kept for inspection and retry this long.
pub const DLQ_MAX_AGE: Duration = Duration::from_secs(14 * 24 * 60 * 60);

pub fn events_stream_config(replicas: usize) -> Config {
    Config {
        name: EVENTS_STREAM.to_owned(),
        description: Some("Every committed change, deduplicated by event id".to_owned()),
        subjects: vec![EVENTS_ALL.to_owned()],
        retention: RetentionPolicy::Limits,
        storage: StorageType::File,
        max_age: EVENTS_MAX_AGE,
        duplicate_window: DUPLICATE_WINDOW,
        discard: DiscardPolicy::Old,
        num_replicas: replicas,
        allow_direct: true,
        ..Default::default()
    }
}

pub fn tasks_stream_config(replicas: usize) -> Config {
    Config {
        name: TASKS_STREAM.to_owned(),
        description: Some("Work queue for Courier workers".to_owned()),
        subjects: vec![TASKS_ALL.to_owned()],
        retention: RetentionPolicy::WorkQueue,
        storage: StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        num_replicas: replicas,
        ..Default::default()
    }
}

pub fn dlq_stream_config(replicas: usize) -> Config {
    Config {
        name: DLQ_STREAM.to_owned(),
        description: Some(
            "Tasks that exhausted their deliveries or could not be decoded".to_owned(),
        ),
        subjects: vec![DLQ_ALL.to_owned()],
        retention: RetentionPolicy::Limits,
        storage: StorageType::File,
        max_age: DLQ_MAX_AGE,
        num_replicas: replicas,
        ..Default::default()
    }
}

/// Creates the three streams, or updates them to this definition.
pub async fn ensure_streams(
    js: &jetstream::Context,
    replicas: usize,
) -> Result<(), async_nats::Error> {
    for config in StreamUse::Owner.configs(replicas) {
        let name = config.name.clone();
        js.create_or_update_stream(config)
            .await
            .map_err(|err| format!("ensuring stream {name}: {err}"))?;
    }
    Ok(())
}

/// Which streams a component ensures, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamUse {
    /// The api: all three, created or updated to this definition.
    Owner,
    /// The broadcaster: `EVENTS`, created when missing, never updated.
    Events,
    /// The worker: `TASKS`, `DLQ` and `EVENTS` (its results' events), created when missing.
    Work,
}

impl StreamUse {
    fn configs(self, replicas: usize) -> Vec<Config> {
        match self {
            StreamUse::Owner => vec![
                events_stream_config(replicas),
                tasks_stream_config(replicas),
                dlq_stream_config(replicas),
            ],
            StreamUse::Events => vec![events_stream_config(replicas)],
            StreamUse::Work => vec![
                tasks_stream_config(replicas),
                dlq_stream_config(replicas),
                events_stream_config(replicas),
            ],
        }
    }
}

/// Ensures the streams `usage` needs: [`ensure_streams`] for the owner, else each one created
/// only if it does not exist yet (an existing stream is left exactly as the api defined it).
pub async fn ensure_streams_for(
    js: &jetstream::Context,
    replicas: usize,
    usage: StreamUse,
) -> Result<(), async_nats::Error> {
    if usage == StreamUse::Owner {
        return ensure_streams(js, replicas).await;
    }
    for config in usage.configs(replicas) {
        let name = config.name.clone();
        js.get_or_create_stream(config)
            .await
            .map_err(|err| format!("ensuring stream {name} exists: {err}"))?;
    }
    Ok(())
}

/// Retries [`ensure_streams`] until it succeeds or `shutdown` fires.
pub async fn ensure_streams_with_retry(
    js: &jetstream::Context,
    replicas: usize,
    shutdown: &tokio_util::sync::CancellationToken,
) -> bool {
    ensure_streams_for_with_retry(js, replicas, StreamUse::Owner, shutdown).await
}

/// Retries [`ensure_streams_for`] until it succeeds or `shutdown` fires.
pub async fn ensure_streams_for_with_retry(
    js: &jetstream::Context,
    replicas: usize,
    usage: StreamUse,
    shutdown: &tokio_util::sync::CancellationToken,
) -> bool {
    crate::shutdown::retry_until_ok(
        "ensuring the JetStream streams",
        Duration::from_secs(2),
        shutdown,
        || ensure_streams_for(js, replicas, usage),
    )
    .await
}
