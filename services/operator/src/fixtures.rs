//! Test-only helpers: sample resources and a mock Kubernetes API server (tower-test) that
//! checks each request the reconciler makes and answers it.

use std::{pin::pin, time::Duration};

use http::{Method, Request, Response, StatusCode};
use kube::{Client, client::Body};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tower_test::mock::{self, Handle};

use crate::crd::{Courier, CourierSpec};

/// A Courier with every spec field set to a non-default value.
pub fn courier() -> Courier {
    let spec: CourierSpec = serde_json::from_value(json!({
        "image": {"repository": "ghcr.io/example/courier", "tag": "1.2.3", "pullPolicy": "Always"},
        "natsUrl": "nats://nats.messaging.svc:4222",
        "mongodb": {"uriSecretRef": {"name": "mongo", "key": "uri"}, "database": "shopdb"},
        "jwtSecretRef": {"name": "jwt", "key": "secret"},
        "collectionSelector": {"matchLabels": {"courier.dev/instance": "shop"}},
        "api": {
            "replicas": 3,
            "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
            "env": [{"name": "COURIER_LOG", "value": "debug"}, {"name": "COURIER_LOG_FORMAT", "value": "pretty"}],
            "podAnnotations": {"prometheus.io/scrape": "true"},
            "placement": {
                "nodeSelector": {"pool": "web"},
                "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "web", "effect": "NoSchedule"}],
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "arch", "operator": "In", "values": ["amd64"]}]}]}}},
                "topologySpreadConstraints": [{"maxSkew": 2, "topologyKey": "rack", "whenUnsatisfiable": "DoNotSchedule"}]
            }
        },
        "broadcaster": {"replicas": 4, "placement": {"topologySpreadConstraints": []}},
        "worker": {
            "replicas": 2,
            "autoscaling": {"enabled": true, "minReplicas": 1, "maxReplicas": 8, "targetPendingPerReplica": 50, "scaleDownStabilizationSeconds": 120}
        }
    }))
    .expect("fixture spec is valid");
    let mut courier = Courier::new("shop", spec);
    courier.metadata.namespace = Some("shop".into());
    courier.metadata.uid = Some("5d9b8a1e-0000-4000-8000-000000000001".into());
    courier.metadata.generation = Some(1);
    courier
}

/// A recorded request: method, path with query, and JSON body (Null when empty).
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub uri: String,
    pub body: Value,
}

impl Seen {
    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or_default()
    }
}

/// How the mock answers one expected request.
pub enum Reply {
    /// 200 with the request body (what the API server returns for an apply, near enough).
    Echo,
    /// 200 with this JSON.
    Json(Value),
    /// 200 with this object after the request body's top-level fields are copied over it
    /// (a status apply answered with the whole resource).
    MergeInto(Value),
    /// This status with a Kubernetes `Status` body.
    Status(StatusCode),
}

/// One expected request: method and path (query ignored; a trailing `*` matches any rest)
/// and the reply.
pub struct Expect {
    pub method: Method,
    pub path: String,
    pub reply: Reply,
}

impl Expect {
    pub fn new(method: Method, path: impl Into<String>, reply: Reply) -> Self {
        Expect { method, path: path.into(), reply }
    }
}

type ApiHandle = Handle<Request<Body>, Response<Body>>;

/// The mock API server: a tower-test handle that serves a scripted sequence of requests.
pub struct ApiServerVerifier(ApiHandle);

/// A mock client and its verifier.
pub fn mock_client() -> (Client, ApiServerVerifier) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), ApiServerVerifier(handle))
}

impl ApiServerVerifier {
    /// Serves `script` in order, asserting each request matches; returns what it saw.
    pub fn run(self, script: Vec<Expect>) -> JoinHandle<Vec<Seen>> {
        tokio::spawn(async move {
            let mut handle = pin!(self.0);
            let mut seen = Vec::new();
            for (i, expect) in script.into_iter().enumerate() {
                let (request, send) = handle.next_request().await.unwrap_or_else(|| {
                    panic!("request #{i} ({} {}) never came", expect.method, expect.path)
                });
                let method = request.method().clone();
                let uri = request.uri().to_string();
                let bytes = request.into_body().collect_bytes().await.expect("request body");
                let body: Value = if bytes.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(&bytes).expect("JSON body")
                };
                let record = Seen { method, uri, body };
                let path_matches = match expect.path.strip_suffix('*') {
                    Some(prefix) => record.path().starts_with(prefix),
                    None => record.path() == expect.path,
                };
                assert!(
                    record.method == expect.method && path_matches,
                    "request #{i}: expected {} {}, got {} {}",
                    expect.method,
                    expect.path,
                    record.method,
                    record.uri
                );
                let response = match expect.reply {
                    Reply::Echo => Response::new(Body::from(bytes.to_vec())),
                    Reply::Json(value) => {
                        Response::new(Body::from(serde_json::to_vec(&value).unwrap()))
                    }
                    Reply::MergeInto(mut value) => {
                        if let (Some(target), Some(fields)) =
                            (value.as_object_mut(), record.body.as_object())
                        {
                            for (k, v) in fields {
                                target.insert(k.clone(), v.clone());
                            }
                        }
                        Response::new(Body::from(serde_json::to_vec(&value).unwrap()))
                    }
                    Reply::Status(code) => {
                        let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "mock", "reason": k8s_reason(code), "code": code.as_u16()});
                        Response::builder()
                            .status(code)
                            .body(Body::from(serde_json::to_vec(&status).unwrap()))
                            .unwrap()
                    }
                };
                send.send_response(response);
                seen.push(record);
            }
            seen
        })
    }
}

/// The `reason` the API server puts in a `Status` for this code (kube matches on it).
fn k8s_reason(code: StatusCode) -> &'static str {
    match code.as_u16() {
        404 => "NotFound",
        409 => "Conflict",
        422 => "Invalid",
        _ => "InternalError",
    }
}

/// Awaits the verifier, failing the test if the script was not completed within a second.
pub async fn finish(verifier: JoinHandle<Vec<Seen>>) -> Vec<Seen> {
    tokio::time::timeout(Duration::from_secs(1), verifier)
        .await
        .expect("the mock API server's script was not completed")
        .expect("mock API server assertion failed")
}

/// Runs `fut` (a reconcile) with a deadline, so a request missing from the script (which the
/// mock never answers) fails the test instead of hanging it.
pub async fn within<T>(fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(2), fut)
        .await
        .expect("reconcile hung: it made a request the script did not expect")
}
