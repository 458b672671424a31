//! The JetStream streams Courier relies on (`EVENTS`, `TASKS`, `DLQ`) and their one definition.
//! Every service ensures them at start-up, so start order never matters.

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
    for config in
        [events_stream_config(replicas), tasks_stream_config(replicas), dlq_stream_config(replicas)]
    {
        let name = config.name.clone();
        js.create_or_update_stream(config)
            .await
            .map_err(|err| format!("ensuring stream {name}: {err}"))?;
    }
    Ok(())
}

/// Retries [`ensure_streams`] until it succeeds or `shutdown` fires.
pub async fn ensure_streams_with_retry(
    js: &jetstream::Context,
    replicas: usize,
    shutdown: &tokio_util::sync::CancellationToken,
) -> bool {
    crate::shutdown::retry_until_ok(
        "ensuring the JetStream streams",
        Duration::from_secs(2),
        shutdown,
        || ensure_streams(js, replicas),
    )
    .await
}
