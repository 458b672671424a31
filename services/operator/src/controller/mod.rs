//! The two controllers (`Courier` → workloads and status; `Collection` → acceptance status),
//! their shared context (client, reflector stores, backlog source, metrics, Event recorder),
//! the error policy with per-object jittered exponential backoff (`courier_core::backoff`), and
//! wiring them to watches.

mod collection;
mod courier;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use courier_core::backoff::Backoff;
use futures::StreamExt;
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Service, ServiceAccount},
    policy::v1::PodDisruptionBudget,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        events::{Recorder, Reporter},
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

pub use collection::reconcile as reconcile_collection;
pub use courier::reconcile as reconcile_courier;

use crate::{
    Error, Result,
    autoscale::{BacklogSource, Clock, Stabilizer},
    crd::{Collection, Courier},
    metrics::Metrics,
    policy::Policy,
    resources::{Child, MANAGED_BY},
};

/// Timings of the reconcile loop.
#[derive(Debug, Clone)]
pub struct Timings {
    /// Re-reconcile interval of a Courier with worker autoscaling on (backlog polling).
    pub poll_interval: Duration,
    /// Re-reconcile interval otherwise (drift check).
    pub resync_interval: Duration,
    /// Longest first retry delay after an error; doubles per consecutive failure up to
    /// `max_backoff`, each delay jittered into the upper half (see [`Backoff`]).
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            poll_interval: Duration::from_secs(15),
            resync_interval: Duration::from_secs(300),
            min_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(300),
        }
    }
}

/// How the controllers run: who they report as, their timings and the policy for Couriers.
pub struct Settings {
    pub reporter: Reporter,
    pub timings: Timings,
    pub policy: Policy,
}

/// Read-only caches of the watched objects, filled by the controllers' reflectors.
#[derive(Clone)]
pub struct Stores {
    pub collections: Store<Collection>,
    pub deployments: Store<Deployment>,
    pub services: Store<Service>,
    pub budgets: Store<PodDisruptionBudget>,
    pub config_maps: Store<ConfigMap>,
    pub service_accounts: Store<ServiceAccount>,
}

impl Stores {
    /// The hash annotation of the live copy of `child`, `None` when it does not exist.
    pub fn live_hash(&self, child: &Child) -> Option<Option<String>> {
        fn find<K>(store: &Store<K>, child: &Child) -> Option<Option<String>>
        where
            K: Resource<DynamicType = ()> + Clone + 'static,
        {
            let key = ObjectRef::<K>::new(child.name()).within(child.meta().namespace.as_deref()?);
            store
                .get(&key)
                .map(|live| live.annotations().get(crate::resources::HASH_ANNOTATION).cloned())
        }
        match child {
            Child::ServiceAccount(_) => find(&self.service_accounts, child),
            Child::ConfigMap(_) => find(&self.config_maps, child),
            Child::Deployment(_) => find(&self.deployments, child),
            Child::Service(_) => find(&self.services, child),
            Child::PodDisruptionBudget(_) => find(&self.budgets, child),
        }
    }

    /// Waits (bounded) until every store has its initial list, so a reconcile right after start
    /// does not mistake "not listed yet" for "missing" and re-apply everything.
    async fn wait_ready(&self) {
        let all = async {
            let _ = self.collections.wait_until_ready().await;
            let _ = self.deployments.wait_until_ready().await;
            let _ = self.services.wait_until_ready().await;
            let _ = self.budgets.wait_until_ready().await;
            let _ = self.config_maps.wait_until_ready().await;
            let _ = self.service_accounts.wait_until_ready().await;
        };
        if tokio::time::timeout(Duration::from_secs(30), all).await.is_err() {
            tracing::warn!("caches not synced after 30 s; reconciling with what is there");
        }
    }
}

/// Everything a reconcile needs.
pub struct Context {
    pub client: Client,
    pub stores: Stores,
    pub backlog: Arc<dyn BacklogSource>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    pub stabilizer: Stabilizer,
    pub timings: Timings,
    /// What a Courier may run; a Courier breaking it gets nothing applied.
    pub policy: Policy,
    /// Consecutive failures per object, for the error backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        stores: Stores,
        backlog: Arc<dyn BacklogSource>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        settings: Settings,
    ) -> Self {
        let Settings { reporter, timings, policy } = settings;
        Context {
            policy,
            recorder: Recorder::new(client.clone(), reporter),
            client,
            stores,
            backlog,
            clock,
            metrics,
            stabilizer: Stabilizer::default(),
            timings,
            failures: Mutex::default(),
        }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn succeeded(&self, key: &str) {
        self.failures().remove(key);
    }

    /// Records a failure of `key` and returns how long to wait before retrying.
    fn backoff(&self, key: &str) -> Duration {
        let mut failures = self.failures();
        let count = failures.entry(key.to_owned()).or_insert(0);
        let delay = self.retry_backoff().delay_for(*count);
        *count = count.saturating_add(1);
        delay
    }

    fn retry_backoff(&self) -> Backoff {
        Backoff::with_min(self.timings.min_backoff, self.timings.max_backoff)
    }
}

fn object_key<K: Resource>(obj: &K) -> String {
    format!(
        "{}/{}",
        obj.meta().namespace.as_deref().unwrap_or_default(),
        obj.meta().name.as_deref().unwrap_or_default()
    )
}

/// Error policy shared by both controllers: log, count by kind, retry with backoff.
fn error_policy<K: Resource>(
    controller: &'static str,
    obj: &K,
    error: &Error,
    ctx: &Context,
) -> Action {
    let key = object_key(obj);
    ctx.metrics.reconcile_failed(controller, error);
    let delay = ctx.backoff(&key);
    tracing::warn!(controller, object = %key, kind = error.kind(), %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

pub fn courier_error_policy(courier: Arc<Courier>, error: &Error, ctx: Arc<Context>) -> Action {
    error_policy("courier", courier.as_ref(), error, &ctx)
}

pub fn collection_error_policy(
    collection: Arc<Collection>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    error_policy("collection", collection.as_ref(), error, &ctx)
}

/// A reflector over objects of kind `K` carrying the operator's managed-by label (all
/// namespaces), and the store it fills.
fn managed_reflector<K>(
    client: &Client,
) -> (Store<K>, impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static)
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let config = watcher::Config::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1));
    let stream = watcher(Api::<K>::all(client.clone()), config)
        .default_backoff()
        .reflect(writer)
        .touched_objects();
    (store, stream)
}

/// Runs both controllers until `stop` is cancelled, then lets in-flight reconciles finish.
pub async fn run(
    client: Client,
    backlog: Arc<dyn BacklogSource>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    settings: Settings,
    stop: CancellationToken,
) {
    let (deployments, deployment_events) = managed_reflector::<Deployment>(&client);
    let (services, service_events) = managed_reflector::<Service>(&client);
    let (budgets, budget_events) = managed_reflector::<PodDisruptionBudget>(&client);
    let (config_maps, config_map_events) = managed_reflector::<ConfigMap>(&client);
    let (service_accounts, service_account_events) = managed_reflector::<ServiceAccount>(&client);
    let (collections, collections_writer) = reflector::store();
    let collection_events =
        watcher(Api::<Collection>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .reflect(collections_writer)
            .touched_objects();

    let stores =
        Stores { collections, deployments, services, budgets, config_maps, service_accounts };
    let ctx = Arc::new(Context::new(client.clone(), stores, backlog, clock, metrics, settings));

    let couriers = Controller::new(Api::<Courier>::all(client.clone()), watcher::Config::default());
    let courier_store = couriers.store();
    let couriers = couriers
        .owns_stream(deployment_events)
        .owns_stream(service_events)
        .owns_stream(budget_events)
        .owns_stream(config_map_events)
        .owns_stream(service_account_events)
        // Any Collection change re-renders the ConfigMap of every Courier in its namespace
        // (a label change can move it into or out of a selector, so filter in the reconcile).
        .watches_stream(collection_events, move |collection: Collection| {
            let namespace = collection.namespace();
            courier_store
                .state()
                .into_iter()
                .filter(|c| c.namespace() == namespace)
                .map(|c| ObjectRef::from_obj(c.as_ref()))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(stop.clone().cancelled_owned())
        .run(courier::reconcile, courier_error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!(%err, "courier controller event");
            }
        });

    let collections = Controller::new(Api::<Collection>::all(client), watcher::Config::default())
        .graceful_shutdown_on(stop.cancelled_owned())
        .run(collection::reconcile, collection_error_policy, ctx)
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!(%err, "collection controller event");
            }
        });

    tracing::info!("controllers running");
    tokio::join!(couriers, collections);
    tracing::info!("controllers stopped");
}

#[cfg(test)]
mod tests;
