//! The per-writer limits on writes that produce events (docs/security.md, "Write limits"): one
//! account or one anonymous address that floods documents, seed aliases or chat changes gets 429
//! with `Retry-After`, while everyone else's writes keep working; a collection's own `rate:`
//! applies; a writer past its hourly byte budget is refused.

use std::net::IpAddr;

use courier_core::rate::Rate;
use courier_tests::{NatsServer, RunningApi, Stack, StoreServer, chaos, services::access_token};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// `products` as the seeds write it (anonymous, the default rate), `notes` with its own rate,
/// `logs` open for large documents.
const COLLECTIONS: &str = "collections:
  - {name: products, schema: {type: object}, access: {write: public}}
  - {name: notes, schema: {type: object}, access: {write: authenticated}, rate: 2/min}
  - {name: logs, schema: {type: object}, access: {write: authenticated}}
";

struct Api {
    _nats: NatsServer,
    _store: StoreServer,
    _dir: tempfile::TempDir,
    api: RunningApi,
}

impl Api {
    async fn start(tune: impl FnOnce(&mut courier_api::ApiConfig)) -> Self {
        courier_tests::init_test_logging();
        let (nats, store) = tokio::join!(NatsServer::start(), StoreServer::start());
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("collections.yaml");
        std::fs::write(&file, COLLECTIONS).expect("collections file");
        let mut config = Stack::api_config(&store, &chaos::fresh_database(), &nats);
        config.collections_file = file;
        config.seed_compat = true;
        tune(&mut config);
        let api = RunningApi::start(config).await;
        Api { _nats: nats, _store: store, _dir: dir, api }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api.url())
    }
}

/// A client whose connections come from `address` (any 127.x.y.z reaches a local listener).
fn client_from(address: &str) -> reqwest::Client {
    let address: IpAddr = address.parse().unwrap();
    reqwest::Client::builder().local_address(address).build().unwrap()
}

/// Sends a request; the status, `Retry-After` in seconds and the JSON body.
async fn send(
    client: &reqwest::Client,
    method: Method,
    url: String,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Option<u64>, Value) {
    let mut request = client.request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("the api answers");
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    (status, retry_after, response.json().await.unwrap_or(Value::Null))
}

fn assert_limited((status, retry_after, body): &(StatusCode, Option<u64>, Value), within: u64) {
    assert_eq!(*status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "too_many_requests", "{body}");
    let wait = retry_after.expect("Retry-After");
    assert!((1..=within).contains(&wait), "Retry-After {wait}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_writer_is_limited_while_everyone_else_keeps_writing() {
    let api = Api::start(|config| {
        config.write_rate = Rate::per_minute(4);
        config.chat_write_rate = Rate::per_minute(4);
    })
    .await;
    let http = reqwest::Client::new();
    let ana = access_token(&http, &api.api.url(), "ana").await;
    let bob = access_token(&http, &api.api.url(), "bob").await;

    // One account: 4 writes a minute to `products` (the default rate), then 429. PUT, PATCH and
    // DELETE count like POST.
    let created =
        send(&http, Method::POST, api.url("/api/v1/products"), Some(&ana), Some(json!({"n": 0})))
            .await;
    assert_eq!(created.0, StatusCode::CREATED, "{}", created.2);
    let doc = format!("/api/v1/products/{}", created.2["id"].as_str().unwrap());
    for (method, body) in
        [(Method::PUT, Some(json!({"n": 1}))), (Method::PATCH, Some(json!({"n": 2})))]
    {
        let answer = send(&http, method, api.url(&doc), Some(&ana), body).await;
        assert_eq!(answer.0, StatusCode::OK, "{}", answer.2);
    }
    let answer = send(&http, Method::DELETE, api.url(&doc), Some(&ana), None).await;
    assert_eq!(answer.0, StatusCode::NO_CONTENT);
    let flood =
        send(&http, Method::POST, api.url("/api/v1/products"), Some(&ana), Some(json!({"n": 5})))
            .await;
    assert_limited(&flood, 60);
    // Another account writes on.
    let other =
        send(&http, Method::POST, api.url("/api/v1/products"), Some(&bob), Some(json!({"n": 6})))
            .await;
    assert_eq!(other.0, StatusCode::CREATED, "{}", other.2);

    // One anonymous address, through the seed alias: limited by its address; another address
    // writes on.
    let flooder = client_from("127.0.0.2");
    for n in 0..4 {
        let answer =
            send(&flooder, Method::POST, api.url("/api/product/"), None, Some(json!({"n": n})))
                .await;
        assert_eq!(answer.0, StatusCode::CREATED, "{}", answer.2);
    }
    assert_limited(
        &send(&flooder, Method::POST, api.url("/api/product/"), None, Some(json!({}))).await,
        60,
    );
    assert_limited(
        &send(&flooder, Method::POST, api.url("/api/v1/products"), None, Some(json!({}))).await,
        60,
    );
    let neighbour = client_from("127.0.0.3");
    let answer =
        send(&neighbour, Method::POST, api.url("/api/v1/products"), None, Some(json!({}))).await;
    assert_eq!(answer.0, StatusCode::CREATED, "{}", answer.2);

    // A collection's own `rate: 2/min`, counted apart from the other collections.
    for _ in 0..2 {
        let answer =
            send(&http, Method::POST, api.url("/api/v1/notes"), Some(&bob), Some(json!({}))).await;
        assert_eq!(answer.0, StatusCode::CREATED, "{}", answer.2);
    }
    assert_limited(
        &send(&http, Method::POST, api.url("/api/v1/notes"), Some(&bob), Some(json!({}))).await,
        60,
    );
    let answer =
        send(&http, Method::POST, api.url("/api/v1/logs"), Some(&bob), Some(json!({}))).await;
    assert_eq!(
        answer.0,
        StatusCode::CREATED,
        "bob's other collections are not limited: {}",
        answer.2
    );

    // Chat: every change counts (room, message, edits, reactions), 4 a minute per user.
    let room = send(
        &http,
        Method::POST,
        api.url("/api/v1/chats"),
        Some(&ana),
        Some(json!({"name": "r", "members": ["bob"]})),
    )
    .await;
    assert_eq!(room.0, StatusCode::CREATED, "{}", room.2);
    let room = room.2["id"].as_str().expect("room id").to_owned();
    let sent = send(
        &http,
        Method::POST,
        api.url(&format!("/api/v1/chats/{room}/messages")),
        Some(&ana),
        Some(json!({"text": "hi"})),
    )
    .await;
    assert_eq!(sent.0, StatusCode::CREATED, "{}", sent.2);
    let message = format!("/api/v1/chats/{room}/messages/{}", sent.2["id"].as_str().unwrap());
    for n in 0..2 {
        let answer = send(
            &http,
            Method::PATCH,
            api.url(&message),
            Some(&ana),
            Some(json!({"text": format!("edit {n}")})),
        )
        .await;
        assert_eq!(answer.0, StatusCode::OK, "{}", answer.2);
    }
    assert_limited(
        &send(&http, Method::PATCH, api.url(&message), Some(&ana), Some(json!({"text": "more"})))
            .await,
        60,
    );
    assert_limited(
        &send(&http, Method::PUT, api.url(&format!("{message}/reactions/👍")), Some(&ana), None)
            .await,
        60,
    );
    // Bob, in the same room, still reacts.
    let answer =
        send(&http, Method::PUT, api.url(&format!("{message}/reactions/👍")), Some(&bob), None)
            .await;
    assert_eq!(answer.0, StatusCode::CREATED, "{}", answer.2);

    let metrics = http.get(api.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("courier_writes_limited_total{component=\"api\",limit=\"rate\"} 6"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_past_its_hourly_byte_budget_is_refused_and_others_are_not() {
    let api = Api::start(|config| config.write_bytes_per_hour = 40 * 1024).await;
    let http = reqwest::Client::new();
    let ana = access_token(&http, &api.api.url(), "ana").await;
    let bob = access_token(&http, &api.api.url(), "bob").await;
    // 16 KB documents: the budget is checked before a write and spent after it, so the write
    // that crosses 40 KiB goes through and the next one is refused.
    let big = json!({"text": "🙂".repeat(4000)});
    let mut accepted = 0;
    let refused = loop {
        let answer =
            send(&http, Method::POST, api.url("/api/v1/logs"), Some(&ana), Some(big.clone())).await;
        if answer.0 != StatusCode::CREATED {
            break answer;
        }
        accepted += 1;
        assert!(accepted < 10, "the byte budget never refused");
    };
    assert_eq!(accepted, 3, "16 KB × 3 > 40 KiB");
    assert_limited(&refused, 3600);
    assert!(refused.1.unwrap() > 3500, "the oldest write ages out in about an hour");
    assert!(refused.2["error"]["message"].as_str().unwrap().contains("bytes"), "{}", refused.2);
    // Small writes of the same account are refused too; other accounts write on.
    assert_limited(
        &send(&http, Method::POST, api.url("/api/v1/logs"), Some(&ana), Some(json!({}))).await,
        3600,
    );
    let answer = send(&http, Method::POST, api.url("/api/v1/logs"), Some(&bob), Some(big)).await;
    assert_eq!(answer.0, StatusCode::CREATED, "{}", answer.2);
}
