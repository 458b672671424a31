//! The JetStream streams Courier relies on (`EVENTS`, `TASKS`, `DLQ`) and their one definition.
//! Every service ensures them at start-up, so start order never matters: the api owns them
//! (creates them, or updates them to this definition); the broadcaster and the worker only
//! create the ones they use when missing and never change an existing one, so their NATS users
//! need no permission to update or delete streams (docs/security.md).
//!
//! EVENTS and TASKS are bounded in bytes (`COURIER_EVENTS_MAX_BYTES`, `COURIER_TASKS_MAX_BYTES`)
//! and discard *new* messages when full (DLQ is bounded by `COURIER_DLQ_MAX_BYTES` and drops its
//! oldest dead letters instead): JetStream then refuses a publish rather than silently
//! dropping replayable events or unprocessed tasks, and the store refuses new writes headed for a
//! full stream (`courier_store::admission`) instead of letting the outbox grow. The api's
//! settings are the ones applied (it updates the streams); the others only matter when they
//! create a missing stream first, so every component should get the same values.

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
/// The default byte limit of `DLQ` (`COURIER_DLQ_MAX_BYTES`).
pub const DLQ_MAX_BYTES: i64 = 64 << 20;

/// How the streams are created: replicas and the byte limits (`NatsArgs::streams`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSettings {
    pub replicas: usize,
    pub events_max_bytes: i64,
    pub tasks_max_bytes: i64,
    pub dlq_max_bytes: i64,
}

impl StreamSettings {
    /// `replicas` replicas and the default limits (tests, tools).
    pub fn with_replicas(replicas: usize) -> Self {
        StreamSettings {
            replicas,
            events_max_bytes: 1 << 30,
            tasks_max_bytes: 256 << 20,
            dlq_max_bytes: DLQ_MAX_BYTES,
        }
    }
}

pub fn events_stream_config(settings: &StreamSettings) -> Config {
    Config {
        name: EVENTS_STREAM.to_owned(),
        description: Some("Every committed change, deduplicated by event id".to_owned()),
        subjects: vec![EVENTS_ALL.to_owned()],
        retention: RetentionPolicy::Limits,
        storage: StorageType::File,
        max_age: EVENTS_MAX_AGE,
        max_bytes: settings.events_max_bytes,
        duplicate_window: DUPLICATE_WINDOW,
        // Full: refuse the publish (writes answer 503) rather than drop replayable events.
        discard: DiscardPolicy::New,
        num_replicas: settings.replicas,
        allow_direct: true,
        ..Default::default()
    }
}

pub fn tasks_stream_config(settings: &StreamSettings) -> Config {
    Config {
        name: TASKS_STREAM.to_owned(),
        description: Some("Work queue for Courier workers".to_owned()),
        subjects: vec![TASKS_ALL.to_owned()],
        retention: RetentionPolicy::WorkQueue,
        storage: StorageType::File,
        max_bytes: settings.tasks_max_bytes,
        // Full: refuse the publish rather than drop tasks nobody has worked on.
        discard: DiscardPolicy::New,
        duplicate_window: DUPLICATE_WINDOW,
        num_replicas: settings.replicas,
        ..Default::default()
    }
}

pub fn dlq_stream_config(settings: &StreamSettings) -> Config {
    Config {
        name: DLQ_STREAM.to_owned(),
        description: Some(
            "Tasks that exhausted their deliveries or could not be decoded".to_owned(),
        ),
        subjects: vec![DLQ_ALL.to_owned()],
        retention: RetentionPolicy::Limits,
        storage: StorageType::File,
        max_age: DLQ_MAX_AGE,
        // Bounded too: a flood of failing tasks must not fill the NATS volume. Full: the oldest
        // dead letters go, so a worker can always dead-letter (and never stalls on it).
        max_bytes: settings.dlq_max_bytes,
        discard: DiscardPolicy::Old,
        num_replicas: settings.replicas,
        ..Default::default()
    }
}

/// Creates the three streams, or updates them to this definition.
pub async fn ensure_streams(
    js: &jetstream::Context,
    settings: StreamSettings,
) -> Result<(), async_nats::Error> {
    for config in StreamUse::Owner.configs(&settings) {
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
    fn configs(self, settings: &StreamSettings) -> Vec<Config> {
        match self {
            StreamUse::Owner => vec![
                events_stream_config(settings),
                tasks_stream_config(settings),
                dlq_stream_config(settings),
            ],
            StreamUse::Events => vec![events_stream_config(settings)],
            StreamUse::Work => vec![
                tasks_stream_config(settings),
                dlq_stream_config(settings),
                events_stream_config(settings),
            ],
        }
    }
}

/// Ensures the streams `usage` needs: [`ensure_streams`] for the owner, else each one created
/// only if it does not exist yet (an existing stream is left exactly as the api defined it).
pub async fn ensure_streams_for(
    js: &jetstream::Context,
    settings: StreamSettings,
    usage: StreamUse,
) -> Result<(), async_nats::Error> {
    if usage == StreamUse::Owner {
        return ensure_streams(js, settings).await;
    }
    for config in usage.configs(&settings) {
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
    settings: StreamSettings,
    shutdown: &tokio_util::sync::CancellationToken,
) -> bool {
    ensure_streams_for_with_retry(js, settings, StreamUse::Owner, shutdown).await
}

/// Retries [`ensure_streams_for`] until it succeeds or `shutdown` fires.
pub async fn ensure_streams_for_with_retry(
    js: &jetstream::Context,
    settings: StreamSettings,
    usage: StreamUse,
    shutdown: &tokio_util::sync::CancellationToken,
) -> bool {
    crate::shutdown::retry_until_ok(
        "ensuring the JetStream streams",
        Duration::from_secs(2),
        shutdown,
        || ensure_streams_for(js, settings, usage),
    )
    .await
}

/// Returns once nats-server has read everything `client` sent before this call, its
/// subscriptions included. `flush` alone does not: it only writes the client's buffer to the
/// socket, and the server reads each connection on its own, so a publish from another connection
/// can be handled before this one's `SUB` and reach no subscriber. The server answers a request
/// only after reading all that came before it on the same connection. The request is a read-only
/// JetStream query (`STREAM.INFO` of EVENTS) that every Courier NATS user may send; its answer,
/// "no such stream" included, does not matter.
pub async fn server_round_trip(
    client: &async_nats::Client,
) -> Result<(), async_nats::RequestError> {
    client.request(format!("$JS.API.STREAM.INFO.{EVENTS_STREAM}"), "".into()).await.map(drop)
}

/// Whether a JetStream publish error means the stream (or the server's JetStream storage) is
/// full: `maximum bytes exceeded` / `maximum messages exceeded` (a stream limit with discard
/// new), or the server out of storage (`insufficient resources`, `storage resources exceeded`).
pub fn is_stream_full_error(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    [
        "maximum bytes exceeded",
        "maximum messages exceeded",
        "insufficient resources",
        "resources exceeded",
    ]
    .iter()
    .any(|needle| message.contains(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_and_tasks_are_bounded_and_refuse_new_messages_when_full() {
        let settings = StreamSettings {
            replicas: 3,
            events_max_bytes: 4096,
            tasks_max_bytes: 2048,
            dlq_max_bytes: 1024,
        };
        let events = events_stream_config(&settings);
        assert_eq!(
            (events.max_bytes, events.discard, events.num_replicas),
            (4096, DiscardPolicy::New, 3)
        );
        let tasks = tasks_stream_config(&settings);
        assert_eq!((tasks.max_bytes, tasks.discard), (2048, DiscardPolicy::New));
        let dlq = dlq_stream_config(&settings);
        assert_eq!((dlq.max_bytes, dlq.discard), (1024, DiscardPolicy::Old), "DLQ is bounded");
        assert_eq!(dlq_stream_config(&StreamSettings::with_replicas(1)).max_bytes, DLQ_MAX_BYTES);
        assert!(is_stream_full_error(
            "publish failed: maximum bytes exceeded (code 503, error code 10077)"
        ));
        assert!(is_stream_full_error("insufficient resources"));
        assert!(!is_stream_full_error("timed out: didn't receive ack in time"));
    }
}
