//! Building blocks for the chaos suite (`tests/chaos`): Courier's services as real processes,
//! a process-wide lock that lets a latency measurement run alone, Prometheus scraping, events
//! published straight into JetStream, concurrent writers that count every answer, reading a
//! stream's contents back.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_nats::{
    HeaderMap,
    jetstream::{
        self,
        consumer::{DeliverPolicy, pull::OrderedConfig},
    },
};
use courier_core::{Event, EventAction, subjects::EVENTS_STREAM};
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::{NatsServer, StoreServer, services::ServiceProcess};

static MACHINE: RwLock<()> = RwLock::const_new(());

/// Held by every chaos test that does not measure latency: many of them run in parallel.
pub async fn share_machine() -> RwLockReadGuard<'static, ()> {
    MACHINE.read().await
}

/// Held by a test that measures latency: no other chaos test runs meanwhile (the CI machine
/// has 2 cores; a neighbour's 2,000 POSTs would otherwise be what gets measured).
pub async fn whole_machine() -> RwLockWriteGuard<'static, ()> {
    MACHINE.write().await
}

/// `courier-broadcaster` as a child process on a port of its own, attached to `nats_url`;
/// `envs` add or override settings (`COURIER_WS_*`). It reads the shipped `collections.yaml`
/// unless `envs` name another file or `COURIER_PUBLIC_CHANNELS`.
pub async fn broadcaster_process(nats_url: &str, envs: &[(&str, String)]) -> ServiceProcess {
    let mut all =
        vec![("COURIER_NATS_URL", nats_url.to_owned()), ("COURIER_LOG_FORMAT", "json".to_owned())];
    let rules_given = envs
        .iter()
        .any(|(k, _)| *k == "COURIER_COLLECTIONS_FILE" || *k == "COURIER_PUBLIC_CHANNELS");
    if !rules_given {
        let shipped = crate::workspace_root().join("collections.yaml");
        all.push(("COURIER_COLLECTIONS_FILE", shipped.display().to_string()));
    }
    all.extend(envs.iter().cloned());
    ServiceProcess::start("courier-broadcaster", &all).await
}

/// The environment of an api process using `database` in `store` and `nats`, with quick outbox
/// relay rounds (as the in-process `Stack` uses).
pub fn api_env(
    store: &StoreServer,
    database: &str,
    nats: &NatsServer,
) -> Vec<(&'static str, String)> {
    vec![
        ("COURIER_MONGODB_URI", store.uri()),
        ("COURIER_MONGODB_DATABASE", database.to_owned()),
        ("COURIER_MONGODB_TIMEOUT", "2s".to_owned()),
        ("COURIER_NATS_URL", nats.url()),
        ("COURIER_OUTBOX_RELAY_INTERVAL", "100ms".to_owned()),
        ("COURIER_OUTBOX_RELAY_GRACE", "500ms".to_owned()),
        ("COURIER_JWT_SECRET", crate::TEST_JWT_SECRET.to_owned()),
        (
            "COURIER_COLLECTIONS_FILE",
            crate::workspace_root().join("collections.yaml").display().to_string(),
        ),
        ("COURIER_LOG_FORMAT", "json".to_owned()),
        // Every test user registers from 127.0.0.1: the per-address limit is the tests' own.
        ("COURIER_REGISTER_MAX_PER_ADDRESS", "100000".to_owned()),
        // Tests write fast from few accounts (the write limits have tests of their own).
        ("COURIER_WRITE_RATE", "1000000/s".to_owned()),
        ("COURIER_CHAT_WRITE_RATE", "1000000/s".to_owned()),
        ("COURIER_WRITE_BYTES_PER_HOUR", "0".to_owned()),
    ]
}

/// `courier-api` as a child process on a port of its own; `envs` add or override settings.
pub async fn api_process(
    store: &StoreServer,
    database: &str,
    nats: &NatsServer,
    envs: &[(&str, String)],
) -> ServiceProcess {
    let mut all = api_env(store, database, nats);
    all.extend(envs.iter().cloned());
    ServiceProcess::start("courier-api", &all).await
}

/// The environment of a `courier-worker` process working on `database` in `store` as worker
/// `id`.
pub fn worker_env(
    store: &StoreServer,
    database: &str,
    nats: &NatsServer,
    id: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("COURIER_NATS_URL", nats.url()),
        ("COURIER_MONGODB_URI", store.uri()),
        ("COURIER_MONGODB_DATABASE", database.to_owned()),
        ("COURIER_WORKER_ID", id.to_owned()),
    ]
}

/// `courier-worker` as a child process (metrics on a port of its own); `envs` add or override
/// settings.
pub async fn worker_process(
    store: &StoreServer,
    database: &str,
    nats: &NatsServer,
    id: &str,
    envs: &[(&str, String)],
) -> ServiceProcess {
    let mut all = worker_env(store, database, nats, id);
    all.extend(envs.iter().cloned());
    ServiceProcess::start("courier-worker", &all).await
}

/// A fresh database name, so tests never see each other's documents.
pub fn fresh_database() -> String {
    format!("courier_{}", uuid::Uuid::now_v7().simple())
}

/// One scrape of a `/metrics` endpoint.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// (`name{labels}` as written, value)
    samples: Vec<(String, f64)>,
}

impl Metrics {
    pub async fn scrape(url: &str) -> Self {
        let text = reqwest::get(url)
            .await
            .and_then(reqwest::Response::error_for_status)
            .unwrap_or_else(|err| panic!("cannot scrape {url}: {err}"))
            .text()
            .await
            .expect("metrics body");
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                Some((series.to_owned(), value.parse().ok()?))
            })
            .collect();
        Metrics { samples }
    }

    /// The sum over every series of metric `name` whose labels contain `label` (e.g.
    /// `reason="slow_consumer"`; empty: all series).
    pub fn sum(&self, name: &str, label: &str) -> f64 {
        self.samples
            .iter()
            .filter(|(series, _)| {
                let (series_name, labels) = series.split_once('{').unwrap_or((series, ""));
                series_name == name && labels.contains(label)
            })
            .map(|(_, value)| value)
            .sum()
    }
}

/// Publishes one synthetic `<collection>.created` event straight into the `EVENTS` stream (as
/// the api's outbox would) and returns its stream sequence.
pub async fn publish_event(
    js: &jetstream::Context,
    collection: &str,
    doc_id: &str,
    data: Value,
) -> u64 {
    let event = Event::new(collection, doc_id, EventAction::Created, data, None, "chaos".into());
    let subject = courier_core::subjects::event_subject(collection, doc_id, EventAction::Created);
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", event.id.to_string().as_str());
    let payload = serde_json::to_vec(&event).expect("events serialize");
    js.publish_with_headers(subject, headers, payload.into())
        .await
        .expect("publish reaches JetStream")
        .await
        .expect("JetStream acknowledges")
        .sequence
}

/// Every event stored in `EVENTS` under `filter` (e.g. `events.products.>`), in stream order.
pub async fn stored_events(js: &jetstream::Context, filter: &str) -> Vec<(u64, Event)> {
    let stream = js.get_stream(EVENTS_STREAM).await.expect("EVENTS exists");
    let mut consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: filter.to_owned(),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .expect("ordered consumer");
    let mut pending = consumer.info().await.expect("consumer info").num_pending;
    let mut events = Vec::new();
    if pending == 0 {
        return events;
    }
    let mut messages = consumer.messages().await.expect("consumer messages");
    while pending > 0 {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("stored events arrive")
            .expect("consumer open")
            .expect("message");
        let info = message.info().expect("JetStream metadata");
        pending = info.pending;
        let seq = info.stream_sequence;
        events.push((
            seq,
            serde_json::from_slice(&message.payload).expect("stored events are Events"),
        ));
    }
    events
}

/// What a batch of concurrent POSTs got back.
#[derive(Debug, Default)]
pub struct Writes {
    /// Ids of the documents answered 201, in the order the answers arrived.
    pub created: Vec<String>,
    /// How many answers of each HTTP status.
    pub statuses: BTreeMap<u16, usize>,
    /// Bodies of the answers other than 201.
    pub refusals: Vec<(u16, Value)>,
    /// Requests that got no HTTP answer at all (connection refused or reset).
    pub transport_errors: usize,
}

/// POSTs `count` products to `api_url` with `concurrency` requests in flight; `done` counts
/// finished requests as they finish (tests use it to inject a fault mid-run).
pub async fn post_products(
    api_url: String,
    count: usize,
    concurrency: usize,
    done: Arc<AtomicUsize>,
) -> Writes {
    let http =
        reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("http client");
    let url = format!("{api_url}/api/v1/products");
    let mut answers = futures::stream::iter(0..count)
        .map(|n| {
            let (http, url, done) = (http.clone(), url.clone(), done.clone());
            async move {
                let answer = match http.post(&url).json(&crate::services::product(n)).send().await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        Some((status, response.json::<Value>().await.unwrap_or(Value::Null)))
                    }
                    Err(_) => None,
                };
                done.fetch_add(1, Ordering::Relaxed);
                answer
            }
        })
        .buffer_unordered(concurrency);
    let mut writes = Writes::default();
    while let Some(answer) = answers.next().await {
        match answer {
            Some((status, body)) => {
                *writes.statuses.entry(status).or_default() += 1;
                if status == 201 {
                    writes.created.push(
                        body["id"].as_str().expect("a created document has an id").to_owned(),
                    );
                } else {
                    writes.refusals.push((status, body));
                }
            }
            None => writes.transport_errors += 1,
        }
    }
    writes
}

/// The api's outbox collection (named here so the harness does not depend on where the api
/// keeps the constant).
const OUTBOX_COLLECTION: &str = "_outbox";

/// Direct reads of a test database, bypassing the api (to check what really got written).
pub struct StoreView {
    db: mongodb::Database,
}

impl StoreView {
    pub async fn open(store: &StoreServer, database: &str) -> Self {
        let client = mongodb::Client::with_uri_str(store.uri()).await.expect("store client");
        StoreView { db: client.database(database) }
    }

    /// The ids (hex) of every document in `collection`.
    pub async fn document_ids(&self, collection: &str) -> Vec<String> {
        let mut cursor = self
            .db
            .collection::<mongodb::bson::Document>(collection)
            .find(mongodb::bson::doc! {})
            .projection(mongodb::bson::doc! {"_id": 1})
            .await
            .expect("find documents");
        let mut ids = Vec::new();
        while let Some(document) = cursor.next().await {
            let document = document.expect("document");
            ids.push(document.get_object_id("_id").expect("ObjectId _id").to_hex());
        }
        ids
    }

    /// Outbox records still waiting to be published.
    pub async fn outbox_len(&self) -> u64 {
        self.db
            .collection::<mongodb::bson::Document>(OUTBOX_COLLECTION)
            .count_documents(mongodb::bson::doc! {})
            .await
            .expect("count outbox")
    }
}
