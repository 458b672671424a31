//! Abuse limits (docs/security.md, "Abuse limits"): stored field names, crafted cursors, the
//! query time limit, full streams, and the api's request timeout and concurrency limit. Each
//! test drives a real api over HTTP and checks both the answer and that nothing else happened.

use std::{path::PathBuf, time::Duration};

use courier_tests::{NatsServer, RunningApi, Stack, StoreServer, chaos};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A collection whose documents may hold free-form objects and arrays (the shipped ones are
/// closed), with anonymous writes so the tests need no accounts.
const FREEFORM: &str = "  - name: notes
    schema:
      type: object
      additionalProperties: false
      required: [title]
      properties:
        title: {type: string, minLength: 1, maxLength: 100}
        rank: {type: integer}
        meta: {type: object}
        tags: {type: array}
    access:
      read: public
      write: public
";

/// The shipped collections plus [`FREEFORM`], in a temp dir kept alive by the caller.
fn collections_file(dir: &tempfile::TempDir) -> PathBuf {
    let shipped = std::fs::read_to_string(courier_tests::workspace_root().join("collections.yaml"))
        .expect("collections.yaml");
    let path = dir.path().join("collections.yaml");
    std::fs::write(&path, format!("{shipped}\n{FREEFORM}")).expect("writing the test collections");
    path
}

struct Api {
    _nats: NatsServer,
    _store: StoreServer,
    _dir: tempfile::TempDir,
    api: RunningApi,
    http: reqwest::Client,
}

impl Api {
    /// nats-server, the store and one api with the test collections, configured by `tune`.
    async fn start(tune: impl FnOnce(&mut courier_api::ApiConfig)) -> Self {
        courier_tests::init_test_logging();
        let (nats, store) = tokio::join!(NatsServer::start(), StoreServer::start());
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Stack::api_config(&store, &chaos::fresh_database(), &nats);
        config.collections_file = collections_file(&dir);
        tune(&mut config);
        let api = RunningApi::start(config).await;
        Api { _nats: nats, _store: store, _dir: dir, api, http: reqwest::Client::new() }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Answer {
        let mut request = self.http.request(method, format!("{}{path}", self.api.url()));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.expect("the api answers");
        let status = response.status();
        let retry_after =
            response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
        Answer { status, retry_after, body: response.json().await.unwrap_or(Value::Null) }
    }
}

#[derive(Debug)]
struct Answer {
    status: StatusCode,
    retry_after: Option<String>,
    body: Value,
}

impl Answer {
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    fn failing_field(&self) -> &str {
        self.body["error"]["fields"][0]["field"].as_str().unwrap_or("")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_and_dotted_field_names_are_refused_before_anything_is_written() {
    use reqwest::Method;
    let api = Api::start(|_| {}).await;
    let created = api.send(Method::POST, "/api/v1/notes", Some(&json!({"title": "kept"}))).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let id = created.body["id"].as_str().unwrap().to_owned();

    for (body, field) in [
        (json!({"title": "x", "meta": {"$ne": 1}}), "meta.$ne"),
        (json!({"title": "x", "meta": {"owner.name": "a"}}), "meta.owner.name"),
        (json!({"title": "x", "tags": [{"ok": {"$gt": ""}}]}), "tags.0.ok.$gt"),
    ] {
        let answer = api.send(Method::POST, "/api/v1/notes", Some(&body)).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {:?}", answer.body);
        assert_eq!((answer.code(), answer.failing_field()), ("validation_failed", field), "{body}");
        // Replacing and merge-patching the kept note are refused alike.
        let path = format!("/api/v1/notes/{id}");
        for method in [Method::PUT, Method::PATCH] {
            let answer = api.send(method.clone(), &path, Some(&body)).await;
            assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{method} {body}");
            assert_eq!(answer.failing_field(), field, "{method} {body}");
        }
    }
    // Nothing was written: one note, still at its first version and content.
    let list = api.send(Method::GET, "/api/v1/notes", None).await;
    assert_eq!(list.body["items"], json!([{"id": id, "title": "kept"}]));
    // A value that merely looks like an operator is data.
    let fine = json!({"title": "$ne", "meta": {"price": "$1.00", "path": "a.b"}});
    let answer = api.send(Method::POST, "/api/v1/notes", Some(&fine)).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crafted_cursor_is_refused_naming_cursor() {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    use reqwest::Method;
    let api = Api::start(|_| {}).await;
    for n in 0..3 {
        let body = json!({"title": format!("n{n}"), "rank": n});
        assert_eq!(api.send(Method::POST, "/api/v1/notes", Some(&body)).await.status, 201);
    }
    // A genuine cursor pages on.
    let first = api.send(Method::GET, "/api/v1/notes?sort=rank&limit=1", None).await;
    let next = first.body["next"].as_str().expect("a next cursor").to_owned();
    let second = api
        .send(Method::GET, &format!("/api/v1/notes?sort=rank&limit=1&cursor={next}"), None)
        .await;
    assert_eq!(second.body["items"][0]["rank"], 1, "{:?}", second.body);

    let forge = |values: Value| {
        let position = json!({"s": "rank", "v": values, "id": "65f0c0ffee0123456789abcd"});
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&position).unwrap())
    };
    for values in
        [json!([{"$gt": -1}]), json!([{"$ne": null}]), json!([{"$regex": ".*"}]), json!(["1"])]
    {
        let path = format!("/api/v1/notes?sort=rank&cursor={}", forge(values.clone()));
        let answer = api.send(Method::GET, &path, None).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{values}: {:?}", answer.body);
        assert_eq!((answer.code(), answer.failing_field()), ("invalid_parameter", "cursor"));
    }
}

/// A query that outlives `COURIER_MONGODB_QUERY_TIMEOUT` is stopped by the server (maxTimeMS)
/// and answered 503 `query_timeout` with `Retry-After`; a quick one still answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_over_its_time_limit_is_stopped_and_answered_503() {
    use reqwest::Method;
    let (nats, store) = tokio::join!(NatsServer::start(), StoreServer::start());
    let database = chaos::fresh_database();
    // Enough documents that a scan on an unindexed field takes well over a millisecond.
    let client = mongodb::Client::with_uri_str(store.uri()).await.unwrap();
    let docs: Vec<mongodb::bson::Document> = (0..20_000_i64)
        .map(|n| mongodb::bson::doc! {"title": format!("n{n}"), "rank": n, "_v": 1_i64})
        .collect();
    for chunk in docs.chunks(5_000) {
        client.database(&database).collection("notes").insert_many(chunk.to_vec()).await.unwrap();
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Stack::api_config(&store, &database, &nats);
    config.collections_file = collections_file(&dir);
    config.mongodb_query_timeout = Duration::from_millis(1);
    let api = RunningApi::start(config).await;
    let api = Api { _nats: nats, _store: store, _dir: dir, api, http: reqwest::Client::new() };

    let answer = api.send(Method::GET, "/api/v1/notes?title=absent&sort=-rank", None).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", answer.body);
    assert_eq!(answer.code(), "query_timeout");
    assert_eq!(answer.retry_after.as_deref(), Some("1"));
}
