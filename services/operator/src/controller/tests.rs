//! Reconcile scenarios against the mock API server: create from scratch, nothing to do, update
//! spec, status patch, deleted child re-created, autoscaling up and down with stabilization,
//! backlog unavailable, invalid Collection, a Courier refused by the operator's policy, and the
//! error policy.

use std::{sync::Arc, time::Duration};

use http::{Method, StatusCode};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus};
use kube::runtime::{
    events::Reporter,
    reflector::{self, store::Writer},
    watcher,
};
use prometheus_client::registry::Registry;
use serde_json::json;

use super::*;
use crate::{
    autoscale::tests::{FixedBacklog, ManualClock},
    collections::tests as samples,
    crd::{CollectionStatus, Condition, ConditionStatus, CourierStatus},
    fixtures::{self, ApiServerVerifier, Expect, Reply, Seen, finish, within},
    policy::Policy,
    resources::{BuildInput, build},
};

const NS: &str = "shop";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/shop/events";

struct Writers {
    collections: Writer<Collection>,
    deployments: Writer<Deployment>,
    services: Writer<Service>,
    budgets: Writer<PodDisruptionBudget>,
    config_maps: Writer<ConfigMap>,
    service_accounts: Writer<ServiceAccount>,
}

struct Env {
    ctx: Arc<Context>,
    verifier: Option<ApiServerVerifier>,
    writers: Writers,
    backlog: Arc<FixedBacklog>,
    clock: Arc<ManualClock>,
    registry: Registry,
}

fn ready_writer<K>() -> (Store<K>, Writer<K>)
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let (store, mut writer) = reflector::store();
    writer.apply_watcher_event(&watcher::Event::Init);
    writer.apply_watcher_event(&watcher::Event::InitDone);
    (store, writer)
}

impl Env {
    fn new() -> Self {
        Self::with_policy(Policy::allowing(&["ghcr.io/example/courier"]))
    }

    fn with_policy(policy: Policy) -> Self {
        let (client, verifier) = fixtures::mock_client();
        let (collections, collections_w) = ready_writer();
        let (deployments, deployments_w) = ready_writer();
        let (services, services_w) = ready_writer();
        let (budgets, budgets_w) = ready_writer();
        let (config_maps, config_maps_w) = ready_writer();
        let (service_accounts, service_accounts_w) = ready_writer();
        let stores =
            Stores { collections, deployments, services, budgets, config_maps, service_accounts };
        let backlog = Arc::new(FixedBacklog::default());
        let clock = Arc::new(ManualClock::new());
        let mut registry = Registry::default();
        let metrics = Arc::new(Metrics::new(&mut registry));
        let reporter =
            Reporter { controller: "courier-operator".into(), instance: Some("test".into()) };
        let ctx = Arc::new(Context::new(
            client,
            stores,
            backlog.clone(),
            clock.clone(),
            metrics,
            Settings { reporter, timings: Timings::default(), policy },
        ));
        let writers = Writers {
            collections: collections_w,
            deployments: deployments_w,
            services: services_w,
            budgets: budgets_w,
            config_maps: config_maps_w,
            service_accounts: service_accounts_w,
        };
        Env { ctx, verifier: Some(verifier), writers, backlog, clock, registry }
    }

    fn serve(&mut self, script: Vec<Expect>) -> tokio::task::JoinHandle<Vec<Seen>> {
        self.verifier.take().expect("one script per Env").run(script)
    }

    /// Puts objects into the stores, as the watches would after they were applied.
    fn observe(&mut self, children: &[Child]) {
        for child in children {
            match child.clone() {
                Child::ServiceAccount(o) => {
                    self.writers.service_accounts.apply_watcher_event(&watcher::Event::Apply(o))
                }
                Child::ConfigMap(o) => {
                    self.writers.config_maps.apply_watcher_event(&watcher::Event::Apply(o))
                }
                Child::Deployment(o) => {
                    self.writers.deployments.apply_watcher_event(&watcher::Event::Apply(o))
                }
                Child::Service(o) => {
                    self.writers.services.apply_watcher_event(&watcher::Event::Apply(o))
                }
                Child::PodDisruptionBudget(o) => {
                    self.writers.budgets.apply_watcher_event(&watcher::Event::Apply(o))
                }
            }
        }
    }

    fn add_collection(&mut self, collection: Collection) {
        self.writers.collections.apply_watcher_event(&watcher::Event::Apply(collection));
    }

    fn metrics_text(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).unwrap();
        text
    }
}

/// A Courier with autoscaling off and no collection selector.
fn plain_courier() -> Courier {
    let mut courier = fixtures::courier();
    courier.spec.worker.autoscaling.enabled = false;
    courier.spec.collection_selector = None;
    courier
}

fn with_status(mut courier: Courier, status: CourierStatus) -> Courier {
    courier.status = Some(status);
    courier
}

fn ssa(path: &str) -> Expect {
    Expect::new(Method::PATCH, path, Reply::Echo)
}

fn all_applies() -> Vec<Expect> {
    vec![
        ssa("/api/v1/namespaces/shop/serviceaccounts/shop"),
        ssa("/api/v1/namespaces/shop/configmaps/shop-collections"),
        ssa("/apis/apps/v1/namespaces/shop/deployments/shop-api"),
        ssa("/apis/apps/v1/namespaces/shop/deployments/shop-broadcaster"),
        ssa("/apis/apps/v1/namespaces/shop/deployments/shop-worker"),
        ssa("/api/v1/namespaces/shop/services/shop-api"),
        ssa("/api/v1/namespaces/shop/services/shop-broadcaster"),
        ssa("/api/v1/namespaces/shop/services/shop-worker"),
        ssa("/apis/policy/v1/namespaces/shop/poddisruptionbudgets/shop-api"),
        ssa("/apis/policy/v1/namespaces/shop/poddisruptionbudgets/shop-broadcaster"),
        ssa("/apis/policy/v1/namespaces/shop/poddisruptionbudgets/shop-worker"),
    ]
}

fn event() -> Expect {
    Expect::new(Method::POST, EVENTS, Reply::Echo)
}

/// A repeated Event (same reason) is patched into a series by the recorder.
fn event_series() -> Expect {
    Expect::new(Method::PATCH, format!("{EVENTS}/*"), Reply::Echo)
}

fn status_patch(courier: &Courier) -> Expect {
    Expect::new(
        Method::PATCH,
        "/apis/courier.dev/v1alpha1/namespaces/shop/couriers/shop/status",
        Reply::MergeInto(serde_json::to_value(courier).unwrap()),
    )
}

fn sent_status(seen: &Seen) -> CourierStatus {
    assert!(seen.path().ends_with("/status"), "{}", seen.uri);
    serde_json::from_value(seen.body["status"].clone()).unwrap()
}

fn condition<'a>(status: &'a CourierStatus, type_: &str) -> &'a Condition {
    status.conditions.iter().find(|c| c.type_ == type_).unwrap()
}

/// What the stores would hold after a reconcile applied `courier` with these inputs.
fn built(courier: &Courier, collections_yaml: &str, worker_replicas: i32) -> Vec<Child> {
    build(courier, &BuildInput { collections_yaml: collections_yaml.into(), worker_replicas })
        .unwrap()
}

fn ready(mut children: Vec<Child>) -> Vec<Child> {
    for child in &mut children {
        if let Child::Deployment(d) = child {
            let replicas = d.spec.as_ref().unwrap().replicas;
            d.metadata.generation = Some(1);
            d.status = Some(DeploymentStatus {
                observed_generation: Some(1),
                replicas,
                ready_replicas: replicas,
                updated_replicas: replicas,
                available_replicas: replicas,
                ..DeploymentStatus::default()
            });
        }
    }
    children
}

fn empty_collections_yaml() -> String {
    crate::collections::to_yaml(&courier_core::collection_spec::CollectionsFile {
        collections: vec![],
    })
}

#[tokio::test]
async fn create_from_scratch_applies_everything_then_reports() {
    let mut env = Env::new();
    let courier = plain_courier();
    env.add_collection(samples::pets());
    let mut script = all_applies();
    script.push(event());
    script.push(status_patch(&courier));
    let server = env.serve(script);

    let action =
        within(courier::reconcile(Arc::new(courier.clone()), env.ctx.clone())).await.unwrap();
    assert_eq!(action, Action::requeue(Timings::default().resync_interval));
    let seen = finish(server).await;

    for apply in &seen[..11] {
        assert!(apply.uri.contains("fieldManager=courier-operator"), "{}", apply.uri);
        assert!(apply.uri.contains("force=true"), "{}", apply.uri);
    }
    let config_map = &seen[1].body;
    let yaml = config_map["data"]["collections.yaml"].as_str().unwrap();
    let parsed = courier_core::collection_spec::CollectionsFile::from_yaml(yaml).unwrap();
    assert_eq!(parsed.collections[0].name, "pets");
    let worker = &seen[4].body;
    assert_eq!(worker["spec"]["replicas"], 2, "autoscaling off: spec.worker.replicas");

    assert_eq!(seen[11].body["reason"], "Applied");
    assert!(seen[11].body["note"].as_str().unwrap().contains("Deployment/shop-api"));
    assert_eq!(seen[11].body["regarding"]["name"], "shop");

    let status = sent_status(&seen[12]);
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(condition(&status, "Ready").reason, "Creating");
    assert_eq!(condition(&status, "Progressing").status, ConditionStatus::True);
    assert_eq!(condition(&status, "Degraded").status, ConditionStatus::False);
    assert_eq!(status.collections, ["pets"]);
    assert_eq!(status.api.desired_replicas, 3);
    assert_eq!(status.worker.desired_replicas, 2);
    assert!(env.metrics_text().contains(
        "courier_operator_worker_desired_replicas{namespace=\"shop\",courier=\"shop\"} 2"
    ));
}

#[tokio::test]
async fn nothing_changed_means_no_requests() {
    let mut env = Env::new();
    let courier = plain_courier();
    env.observe(&ready(built(&courier, &empty_collections_yaml(), 2)));
    // The status a previous round wrote for exactly this state.
    let first = {
        let mut env2 = Env::new();
        env2.observe(&ready(built(&courier, &empty_collections_yaml(), 2)));
        let server = env2.serve(vec![status_patch(&courier)]);
        within(courier::reconcile(Arc::new(courier.clone()), env2.ctx.clone())).await.unwrap();
        sent_status(&finish(server).await[0])
    };
    assert_eq!(condition(&first, "Ready").status, ConditionStatus::True);
    assert_eq!(condition(&first, "Progressing").reason, "Stable");

    let server = env.serve(vec![]);
    within(courier::reconcile(Arc::new(with_status(courier, first)), env.ctx.clone()))
        .await
        .unwrap();
    assert!(finish(server).await.is_empty());
}

#[tokio::test]
async fn spec_update_patches_only_the_changed_objects() {
    let mut env = Env::new();
    let before = plain_courier();
    env.observe(&ready(built(&before, &empty_collections_yaml(), 2)));
    let mut after = before.clone();
    after.spec.api.replicas = 5;
    after.spec.image.tag = "1.2.4".into();
    after.metadata.generation = Some(2);
    // A new image touches all three Deployments; api replicas only the api.
    let server = env.serve(vec![
        ssa("/apis/apps/v1/namespaces/shop/deployments/shop-api"),
        ssa("/apis/apps/v1/namespaces/shop/deployments/shop-broadcaster"),
        ssa("/apis/apps/v1/namespaces/shop/deployments/shop-worker"),
        event(),
        status_patch(&after),
    ]);
    within(courier::reconcile(Arc::new(after), env.ctx.clone())).await.unwrap();
    let seen = finish(server).await;
    assert_eq!(seen[0].body["spec"]["replicas"], 5);
    assert_eq!(
        seen[1].body["spec"]["template"]["spec"]["containers"][0]["image"],
        "ghcr.io/example/courier:1.2.4"
    );
    let status = sent_status(&seen[4]);
    assert_eq!(status.observed_generation, Some(2));
    assert_eq!(
        condition(&status, "Ready").status,
        ConditionStatus::False,
        "the patched Deployments have not rolled out"
    );
    assert_eq!(condition(&status, "Progressing").reason, "Applied");
}

#[tokio::test]
async fn status_follows_the_deployments_readiness() {
    let mut env = Env::new();
    let courier = plain_courier();
    // Children exist (applied earlier) but their pods are not ready yet.
    env.observe(&built(&courier, &empty_collections_yaml(), 2));
    let server = env.serve(vec![status_patch(&courier)]);
    within(courier::reconcile(Arc::new(courier.clone()), env.ctx.clone())).await.unwrap();
    let not_ready = sent_status(&finish(server).await[0]);
    assert_eq!(condition(&not_ready, "Ready").reason, "ReplicasNotReady");
    assert_eq!(condition(&not_ready, "Progressing").reason, "RollingOut");
    assert_eq!(not_ready.api.ready_replicas, 0);

    let mut env = Env::new();
    env.observe(&ready(built(&courier, &empty_collections_yaml(), 2)));
    let previous = with_status(courier.clone(), not_ready.clone());
    let server = env.serve(vec![status_patch(&previous)]);
    within(courier::reconcile(Arc::new(previous), env.ctx.clone())).await.unwrap();
    let now_ready = sent_status(&finish(server).await[0]);
    assert_eq!(condition(&now_ready, "Ready").status, ConditionStatus::True);
    assert_eq!(
        now_ready.api,
        crate::crd::courier::ComponentStatus { desired_replicas: 3, ready_replicas: 3 }
    );
    assert_eq!(
        condition(&now_ready, "Degraded").last_transition_time,
        condition(&not_ready, "Degraded").last_transition_time,
        "an unchanged condition keeps its transition time"
    );
}

#[tokio::test]
async fn a_deleted_child_is_re_created() {
    let mut env = Env::new();
    let courier = plain_courier();
    let children = ready(built(&courier, &empty_collections_yaml(), 2));
    let status = {
        let mut env2 = Env::new();
        env2.observe(&children);
        let server = env2.serve(vec![status_patch(&courier)]);
        within(courier::reconcile(Arc::new(courier.clone()), env2.ctx.clone())).await.unwrap();
        sent_status(&finish(server).await[0])
    };
    let without_service: Vec<Child> =
        children.into_iter().filter(|c| c.describe() != "Service/shop-broadcaster").collect();
    env.observe(&without_service);
    let courier = with_status(courier, status);
    let server = env.serve(vec![
        ssa("/api/v1/namespaces/shop/services/shop-broadcaster"),
        event(),
        status_patch(&courier),
    ]);
    within(courier::reconcile(Arc::new(courier), env.ctx.clone())).await.unwrap();
    let seen = finish(server).await;
    assert_eq!(seen[0].body["spec"]["ports"][0]["port"], 8765);
    assert_eq!(seen[1].body["note"], "applied Service/shop-broadcaster");
    assert_eq!(condition(&sent_status(&seen[2]), "Progressing").reason, "Applied");
}

#[tokio::test]
async fn autoscaling_scales_up_at_once_and_down_after_the_window() {
    let mut env = Env::new();
    // Fixture: autoscaling on, min 1, max 8, 50 per replica, 120 s scale-down window.
    let mut courier = fixtures::courier();
    courier.spec.collection_selector = None;
    env.observe(&ready(built(&courier, &empty_collections_yaml(), 2)));

    // Round 1: backlog 300 → 6 workers now.
    env.backlog.set(300);
    let mut script = vec![
        ssa("/apis/apps/v1/namespaces/shop/deployments/shop-worker"),
        event(),
        event(),
        status_patch(&courier),
    ];
    // Rounds 2 and 3 share the mock server (one Context keeps the stabilization history).
    script.extend([status_patch(&courier)]);
    script.extend([
        ssa("/apis/apps/v1/namespaces/shop/deployments/shop-worker"),
        event_series(),
        event_series(),
        status_patch(&courier),
    ]);
    let server = env.serve(script);

    let action =
        within(courier::reconcile(Arc::new(courier.clone()), env.ctx.clone())).await.unwrap();
    assert_eq!(action, Action::requeue(Timings::default().poll_interval));
    let scaled_up = ready(built(&courier, &empty_collections_yaml(), 6));
    env.observe(&scaled_up);

    // Round 2, 60 s later: backlog gone, but 6 was recommended inside the window → stay at 6.
    env.backlog.set(0);
    env.clock.advance(Duration::from_secs(60));
    within(courier::reconcile(Arc::new(courier.clone()), env.ctx.clone())).await.unwrap();

    // Round 3, 121 s after round 1: the window has passed → down to min (1).
    env.clock.advance(Duration::from_secs(61));
    within(courier::reconcile(Arc::new(courier.clone()), env.ctx.clone())).await.unwrap();

    let seen = finish(server).await;
    assert_eq!(seen[0].body["spec"]["replicas"], 6);
    assert_eq!(seen[1].body["reason"], "Applied");
    assert_eq!(seen[2].body["reason"], "Scaled");
    assert!(
        seen[2].body["note"].as_str().unwrap().contains("from 2 to 6"),
        "{}",
        seen[2].body["note"]
    );
    let up = sent_status(&seen[3]);
    assert_eq!(up.task_backlog, Some(300));
    let decision = up.last_scale_decision.clone().unwrap();
    assert_eq!((decision.from_replicas, decision.to_replicas, decision.backlog), (2, 6, 300));
    assert_eq!(up.worker.desired_replicas, 6);

    let held = sent_status(&seen[4]);
    assert_eq!(held.task_backlog, Some(0));
    assert_eq!(held.worker.desired_replicas, 6, "held by the stabilization window");

    assert_eq!(seen[5].body["spec"]["replicas"], 1);
    let down = sent_status(&seen[8]);
    let decision = down.last_scale_decision.unwrap();
    assert_eq!((decision.from_replicas, decision.to_replicas), (6, 1));
    let text = env.metrics_text();
    assert!(text.contains("courier_operator_scale_decisions_total{namespace=\"shop\",courier=\"shop\",direction=\"up\"} 1"), "{text}");
    assert!(text.contains("courier_operator_scale_decisions_total{namespace=\"shop\",courier=\"shop\",direction=\"down\"} 1"), "{text}");
    assert!(
        text.contains(
            "courier_operator_worker_desired_replicas{namespace=\"shop\",courier=\"shop\"} 1"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn an_unreadable_backlog_keeps_the_workers_and_degrades() {
    let mut env = Env::new();
    let mut courier = fixtures::courier();
    courier.spec.collection_selector = None;
    env.observe(&ready(built(&courier, &empty_collections_yaml(), 3)));
    env.backlog.fail();
    let server = env.serve(vec![event(), status_patch(&courier)]);
    within(courier::reconcile(Arc::new(courier), env.ctx.clone())).await.unwrap();
    let seen = finish(server).await;
    assert_eq!(seen[0].body["reason"], "BacklogUnavailable");
    assert_eq!(seen[0].body["type"], "Warning");
    let status = sent_status(&seen[1]);
    assert_eq!(condition(&status, "Degraded").reason, "BacklogUnavailable");
    assert_eq!(status.worker.desired_replicas, 3, "no backlog, no change");
    assert_eq!(status.task_backlog, None);
}

#[tokio::test]
async fn collections_are_selected_by_label_and_rejected_ones_left_out() {
    let mut env = Env::new();
    let mut courier = plain_courier();
    courier.spec.collection_selector =
        serde_json::from_value(json!({"matchLabels": {"tier": "shop"}})).unwrap();
    let label = |mut c: Collection| {
        c.metadata.labels = Some([("tier".to_owned(), "shop".to_owned())].into());
        c
    };
    env.add_collection(label(samples::pets()));
    env.add_collection(label(samples::collection(
        "broken",
        json!({"schema": {"type": "nonsense"}}),
    )));
    env.add_collection(samples::collection("desks", json!({"schema": {"type": "object"}}))); // not selected
    let mut elsewhere = label(samples::collection("chairs", json!({"schema": {"type": "object"}})));
    elsewhere.metadata.namespace = Some("other".into());
    env.add_collection(elsewhere);
    let mut script = all_applies();
    script.extend([event(), status_patch(&courier)]);
    let server = env.serve(script);
    within(courier::reconcile(Arc::new(courier), env.ctx.clone())).await.unwrap();
    let seen = finish(server).await;
    let yaml = seen[1].body["data"]["collections.yaml"].as_str().unwrap();
    let parsed = courier_core::collection_spec::CollectionsFile::from_yaml(yaml).unwrap();
    let names: Vec<&str> = parsed.collections.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["pets"]);
    let status = sent_status(&seen[12]);
    let degraded = condition(&status, "Degraded");
    assert_eq!(degraded.reason, "CollectionsRejected");
    assert!(
        degraded
            .message
            .contains("broken: collection 'broken': schema must have \"type\": \"object\""),
        "{}",
        degraded.message
    );
}

fn collection_status_patch(collection: &Collection) -> Expect {
    Expect::new(
        Method::PATCH,
        format!(
            "/apis/courier.dev/v1alpha1/namespaces/{NS}/collections/{}/status",
            collection.name_any()
        ),
        Reply::MergeInto(serde_json::to_value(collection).unwrap()),
    )
}

#[tokio::test]
async fn an_invalid_collection_is_marked_not_accepted() {
    let mut env = Env::new();
    let mut bad = samples::collection(
        "broken",
        json!({"schema": {"type": "object", "properties": {"age": {"minimum": "zero"}}}}),
    );
    bad.metadata.generation = Some(4);
    let server = env.serve(vec![collection_status_patch(&bad), event()]);
    let action = within(collection::reconcile(Arc::new(bad), env.ctx.clone())).await.unwrap();
    assert_eq!(action, Action::await_change());
    let seen = finish(server).await;
    let status: CollectionStatus = serde_json::from_value(seen[0].body["status"].clone()).unwrap();
    assert!(!status.accepted);
    assert!(
        status.message.starts_with("collection 'broken': schema does not compile"),
        "{}",
        status.message
    );
    assert_eq!(status.observed_generation, Some(4));
    assert_eq!(seen[1].body["reason"], "Rejected");
    assert_eq!(seen[1].body["type"], "Warning");
}

#[tokio::test]
async fn every_spec_of_the_shared_invalid_table_is_rejected_in_the_status() {
    for entry in courier_core::collection_spec::fixtures::invalid_specs() {
        let mut env = Env::new();
        let bad = samples::collection("fixture", entry.json.clone());
        let server = env.serve(vec![collection_status_patch(&bad), event()]);
        within(collection::reconcile(Arc::new(bad), env.ctx.clone())).await.unwrap();
        let seen = finish(server).await;
        let status: CollectionStatus =
            serde_json::from_value(seen[0].body["status"].clone()).unwrap();
        assert!(!status.accepted, "{}", entry.case);
        let expected = format!("collection '{}': {}", entry.name(), entry.problem);
        assert!(status.message.starts_with(&expected), "{}: {}", entry.case, status.message);
        assert_eq!(seen[1].body["reason"], "Rejected", "{}", entry.case);
    }
}

#[tokio::test]
async fn a_valid_collection_is_accepted_once() {
    let mut env = Env::new();
    let pets = samples::pets();
    let server = env.serve(vec![collection_status_patch(&pets), event()]);
    within(collection::reconcile(Arc::new(pets.clone()), env.ctx.clone())).await.unwrap();
    let seen = finish(server).await;
    assert_eq!(seen[0].body["status"], json!({"accepted": true, "message": "schema compiled"}));
    assert_eq!(seen[1].body["reason"], "Accepted");

    // Already accepted with this status: nothing to write.
    let mut env = Env::new();
    let mut accepted = pets;
    accepted.status = Some(CollectionStatus {
        accepted: true,
        message: "schema compiled".into(),
        observed_generation: None,
    });
    let server = env.serve(vec![]);
    within(collection::reconcile(Arc::new(accepted), env.ctx.clone())).await.unwrap();
    assert!(finish(server).await.is_empty());
}

#[tokio::test]
async fn api_errors_fail_the_reconcile_and_back_off_exponentially() {
    let mut env = Env::new();
    let courier = Arc::new(plain_courier());
    let server = env.serve(vec![Expect::new(
        Method::PATCH,
        "/api/v1/namespaces/shop/serviceaccounts/shop",
        Reply::Status(StatusCode::INTERNAL_SERVER_ERROR),
    )]);
    let err = within(courier::reconcile(courier.clone(), env.ctx.clone())).await.unwrap_err();
    finish(server).await;
    assert_eq!(err.kind(), "kube_api");
    let first = courier_error_policy(courier.clone(), &err, env.ctx.clone());
    let second = courier_error_policy(courier.clone(), &err, env.ctx.clone());
    assert_ne!(first, Action::await_change());
    assert_ne!(second, Action::await_change());
    assert_eq!(env.ctx.failures().get("shop/shop"), Some(&2), "each failure counts");
    // The delays are jittered; the third is drawn below the third ceiling: 2 s, 4 s, 8 s.
    let third = env.ctx.backoff("shop/shop");
    assert!(third >= Duration::from_secs(4) && third <= Duration::from_secs(8), "{third:?}");
    let text = env.metrics_text();
    assert!(
        text.contains(
            "courier_operator_reconcile_errors_total{controller=\"courier\",kind=\"kube_api\"} 2"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn backoff_is_capped() {
    let env = Env::new();
    let delays: Vec<Duration> = (0..12).map(|_| env.ctx.backoff("shop/shop")).collect();
    let ceilings: Vec<Duration> = (0..12).map(|n| env.ctx.retry_backoff().ceiling(n)).collect();
    assert_eq!(ceilings[0], Duration::from_secs(2));
    assert_eq!(ceilings[1], Duration::from_secs(4));
    assert_eq!(ceilings[11], Duration::from_secs(300));
    for (delay, ceiling) in delays.iter().zip(&ceilings) {
        assert!(*delay >= *ceiling / 2 && delay <= ceiling, "{delay:?} outside {ceiling:?}");
    }
    env.ctx.succeeded("shop/shop");
    assert!(env.ctx.backoff("shop/shop") <= Duration::from_secs(2), "a success resets it");
}

#[tokio::test]
async fn a_courier_with_an_image_the_operator_does_not_allow_gets_nothing_and_says_why() {
    let mut env = Env::new();
    let mut courier = plain_courier();
    courier.spec.image.repository = "docker.io/attacker/miner".into();
    // No apply at all: only the Warning Event and the status.
    let server = env.serve(vec![event(), status_patch(&courier)]);
    let action =
        within(courier::reconcile(Arc::new(courier.clone()), env.ctx.clone())).await.unwrap();
    assert_eq!(action, Action::requeue(Timings::default().resync_interval));
    let seen = finish(server).await;
    assert_eq!(seen[0].body["type"], "Warning");
    assert_eq!(seen[0].body["reason"], "PolicyViolation");
    assert!(
        seen[0].body["note"].as_str().unwrap().contains("docker.io/attacker/miner"),
        "{}",
        seen[0].body["note"]
    );
    let status = sent_status(&seen[1]);
    for (type_, expected) in [
        ("Ready", ConditionStatus::False),
        ("Progressing", ConditionStatus::False),
        ("Degraded", ConditionStatus::True),
    ] {
        let c = condition(&status, type_);
        assert_eq!((c.status, c.reason.as_str()), (expected, "PolicyViolation"), "{type_}");
        assert!(c.message.contains("spec.image.repository"), "{}", c.message);
        assert!(c.message.contains("COURIER_OPERATOR_ALLOWED_IMAGES"), "{}", c.message);
    }
    assert_eq!(status.observed_generation, Some(1));

    // Reconciled again while still refused: nothing to send (no Event storm, same status).
    let mut env = Env::new();
    let server = env.serve(vec![]);
    within(courier::reconcile(Arc::new(with_status(courier, status)), env.ctx.clone()))
        .await
        .unwrap();
    assert!(finish(server).await.is_empty());
}

#[tokio::test]
async fn env_value_from_is_refused_unless_the_operator_allows_it() {
    let mut courier = plain_courier();
    courier.spec.api.env = serde_json::from_value(json!([
        {"name": "AWS_SECRET", "valueFrom": {"secretKeyRef": {"name": "cloud", "key": "key"}}}
    ]))
    .unwrap();

    let mut env = Env::new();
    let server = env.serve(vec![event(), status_patch(&courier)]);
    within(courier::reconcile(Arc::new(courier.clone()), env.ctx.clone())).await.unwrap();
    let seen = finish(server).await;
    let ready = condition(&sent_status(&seen[1]), "Ready").clone();
    assert_eq!(ready.reason, "PolicyViolation");
    assert!(
        ready.message.contains("spec.api.env \"AWS_SECRET\" uses valueFrom"),
        "{}",
        ready.message
    );

    // Allowed by the operator: applied as usual, the variable in the api's pod.
    let mut env =
        Env::with_policy(Policy::allowing(&["ghcr.io/example/courier"]).with_env_value_from(true));
    let mut script = all_applies();
    script.extend([event(), status_patch(&courier)]);
    let server = env.serve(script);
    within(courier::reconcile(Arc::new(courier), env.ctx.clone())).await.unwrap();
    let seen = finish(server).await;
    let env_vars = &seen[2].body["spec"]["template"]["spec"]["containers"][0]["env"];
    assert!(env_vars.as_array().unwrap().iter().any(|v| v["name"] == "AWS_SECRET"), "{env_vars}");
}

#[tokio::test]
async fn an_allowed_courier_that_becomes_refused_keeps_its_workloads_untouched() {
    let mut env = Env::new();
    let before = plain_courier();
    env.observe(&ready(built(&before, &empty_collections_yaml(), 2)));
    let mut after = before.clone();
    after.spec.image.repository = "evil.example/courier".into();
    after.metadata.generation = Some(2);
    // No PATCH of any Deployment: the running pods keep the allowed image.
    let server = env.serve(vec![event(), status_patch(&after)]);
    within(courier::reconcile(Arc::new(after), env.ctx.clone())).await.unwrap();
    let seen = finish(server).await;
    assert!(seen.iter().all(|s| !s.path().contains("/deployments/")));
    let status = sent_status(&seen[1]);
    assert_eq!(status.observed_generation, Some(2));
    assert_eq!(condition(&status, "Degraded").reason, "PolicyViolation");
}
