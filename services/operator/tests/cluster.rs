//! Against a real cluster (ignored by default): installs the CRDs, runs the controllers in this
//! process and checks that a Courier's workloads appear, status is written, Collections are
//! judged and a deleted child comes back. Run with a throwaway cluster as current context:
//!
//! ```sh
//! kind create cluster --name courier-test
//! cargo test -p courier-operator --test cluster -- --ignored --nocapture
//! ```

use std::{sync::Arc, time::Duration};

use courier_operator::{
    autoscale::{NatsBacklog, SystemClock},
    controller::{self, Timings},
    crd::{Collection, Courier},
    metrics::Metrics,
    policy::Policy,
};
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{Namespace, Secret, Service},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, CustomResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
    runtime::{conditions, events::Reporter, wait::await_condition},
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const NS: &str = "courier-operator-test";

async fn wait_for<F, Fut, T>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    for _ in 0..120 {
        if let Some(value) = probe().await {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster (kind) as the current kube context"]
async fn workloads_status_and_recreation_on_a_real_cluster() {
    let client = Client::try_default().await.expect("a kube context");
    let apply = PatchParams::apply("courier-operator-test").force();

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in [Courier::crd(), Collection::crd()] {
        let name = crd.metadata.name.clone().unwrap();
        crds.patch(&name, &apply, &Patch::Apply(&crd)).await.unwrap();
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(crds.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .expect("CRD established")
        .unwrap();
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let _ = namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap(),
        )
        .await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    for (name, key, value) in [
        ("courier-mongodb", "uri", "mongodb://mongo:27017"),
        ("courier-jwt", "secret", "test-secret"),
    ] {
        let secret: Secret = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": {key: value}})).unwrap();
        secrets.patch(name, &apply, &Patch::Apply(&secret)).await.unwrap();
    }

    let stop = CancellationToken::new();
    let mut registry = prometheus_client::registry::Registry::default();
    let controllers = tokio::spawn(controller::run(
        client.clone(),
        Arc::new(NatsBacklog::default()),
        Arc::new(SystemClock),
        Arc::new(Metrics::new(&mut registry)),
        controller::Settings {
            reporter: Reporter {
                controller: "courier-operator".into(),
                instance: Some("cluster-test".into()),
            },
            timings: Timings { poll_interval: Duration::from_secs(5), ..Timings::default() },
            policy: Policy::allowing(&["ghcr.io/courier-dev/courier"]),
        },
        stop.clone(),
    ));

    let couriers: Api<Courier> = Api::namespaced(client.clone(), NS);
    let collections: Api<Collection> = Api::namespaced(client.clone(), NS);
    let courier: Courier = serde_json::from_value(json!({
        "apiVersion": "courier.dev/v1alpha1", "kind": "Courier", "metadata": {"name": "courier"},
        "spec": {
            "image": {"repository": "ghcr.io/courier-dev/courier", "tag": "0.1.0"},
            "natsUrl": "nats://nats.courier-operator-test.svc:4222",
            "mongodb": {"uriSecretRef": {"name": "courier-mongodb", "key": "uri"}},
            "jwtSecretRef": {"name": "courier-jwt", "key": "secret"},
            "worker": {"autoscaling": {"enabled": true, "minReplicas": 1, "maxReplicas": 3}}
        }
    }))
    .unwrap();
    couriers.patch("courier", &apply, &Patch::Apply(&courier)).await.unwrap();
    let good: Collection = serde_json::from_value(json!({
        "apiVersion": "courier.dev/v1alpha1", "kind": "Collection", "metadata": {"name": "desks"},
        "spec": {"schema": {"type": "object", "properties": {"width": {"type": "number"}}}}
    }))
    .unwrap();
    let bad: Collection = serde_json::from_value(json!({
        "apiVersion": "courier.dev/v1alpha1", "kind": "Collection", "metadata": {"name": "broken"},
        "spec": {"schema": {"type": "object", "properties": {"width": {"type": "no-such-type"}}}}
    }))
    .unwrap();
    collections.patch("desks", &apply, &Patch::Apply(&good)).await.unwrap();
    collections.patch("broken", &apply, &Patch::Apply(&bad)).await.unwrap();

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    for name in ["courier-api", "courier-broadcaster", "courier-worker"] {
        wait_for(name, || async { deployments.get_opt(name).await.unwrap() }).await;
    }
    let status = wait_for("Courier status listing desks", || async {
        let c = couriers.get_status("courier").await.unwrap();
        c.status.filter(|s| s.collections == ["desks"])
    })
    .await;
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Degraded"
                && c.status == courier_operator::crd::ConditionStatus::True)
    );
    let verdict = wait_for("broken rejected", || async {
        collections.get_status("broken").await.unwrap().status
    })
    .await;
    assert!(!verdict.accepted, "{verdict:?}");

    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    services.delete("courier-broadcaster", &DeleteParams::default()).await.unwrap();
    wait_for("Service re-created", || async {
        services
            .get_opt("courier-broadcaster")
            .await
            .unwrap()
            .filter(|s| s.metadata.deletion_timestamp.is_none())
    })
    .await;

    stop.cancel();
    controllers.await.unwrap();
    let _ = namespaces.delete(NS, &DeleteParams::default()).await;
}
