//! Abuse limits (docs/security.md, "Abuse limits"): stored field names, crafted cursors, the
//! query time limit, full streams, and the api's request timeout and concurrency limit. Each
//! test drives a real api over HTTP and checks both the answer and that nothing else happened.

use std::{path::PathBuf, time::Duration};

use courier_tests::{NatsServer, RunningApi, Stack, StoreServer, chaos};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A collection whose documents may hold free-form objects and arrays (the shipped ones are
/// closed), with anonymous writes so the tests need no accounts.
const FREEFORM: &str = "  - name: memos
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
  - name: jobs
    schema:
      type: object
      additionalProperties: false
      required: [title]
      properties:
        title: {type: string, minLength: 1, maxLength: 100}
    access:
      read: public
      write: public
    tasks:
      - kind: jobs.run
        on: [create]
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
    let created = api.send(Method::POST, "/api/v1/memos", Some(&json!({"title": "kept"}))).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let id = created.body["id"].as_str().unwrap().to_owned();

    for (body, field) in [
        (json!({"title": "x", "meta": {"$ne": 1}}), "meta.$ne"),
        (json!({"title": "x", "meta": {"owner.name": "a"}}), "meta.owner.name"),
        (json!({"title": "x", "tags": [{"ok": {"$gt": ""}}]}), "tags.0.ok.$gt"),
    ] {
        let answer = api.send(Method::POST, "/api/v1/memos", Some(&body)).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {:?}", answer.body);
        assert_eq!((answer.code(), answer.failing_field()), ("validation_failed", field), "{body}");
        // Replacing and merge-patching the kept note are refused alike.
        let path = format!("/api/v1/memos/{id}");
        for method in [Method::PUT, Method::PATCH] {
            let answer = api.send(method.clone(), &path, Some(&body)).await;
            assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{method} {body}");
            assert_eq!(answer.failing_field(), field, "{method} {body}");
        }
    }
    // Nothing was written: one note, still at its first version and content.
    let list = api.send(Method::GET, "/api/v1/memos", None).await;
    assert_eq!(list.body["items"], json!([{"id": id, "title": "kept"}]));
    // A value that merely looks like an operator is data.
    let fine = json!({"title": "$ne", "meta": {"price": "$1.00", "path": "a.b"}});
    let answer = api.send(Method::POST, "/api/v1/memos", Some(&fine)).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crafted_cursor_is_refused_naming_cursor() {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    use reqwest::Method;
    let api = Api::start(|_| {}).await;
    for n in 0..3 {
        let body = json!({"title": format!("n{n}"), "rank": n});
        assert_eq!(api.send(Method::POST, "/api/v1/memos", Some(&body)).await.status, 201);
    }
    // A genuine cursor pages on.
    let first = api.send(Method::GET, "/api/v1/memos?sort=rank&limit=1", None).await;
    let next = first.body["next"].as_str().expect("a next cursor").to_owned();
    let second = api
        .send(Method::GET, &format!("/api/v1/memos?sort=rank&limit=1&cursor={next}"), None)
        .await;
    assert_eq!(second.body["items"][0]["rank"], 1, "{:?}", second.body);

    let forge = |values: Value| {
        let position = json!({"s": "rank", "v": values, "id": "65f0c0ffee0123456789abcd"});
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&position).unwrap())
    };
    for values in
        [json!([{"$gt": -1}]), json!([{"$ne": null}]), json!([{"$regex": ".*"}]), json!(["1"])]
    {
        let path = format!("/api/v1/memos?sort=rank&cursor={}", forge(values.clone()));
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
        client.database(&database).collection("memos").insert_many(chunk.to_vec()).await.unwrap();
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Stack::api_config(&store, &database, &nats);
    config.collections_file = collections_file(&dir);
    config.mongodb_query_timeout = Duration::from_millis(1);
    let api = RunningApi::start(config).await;
    let api = Api { _nats: nats, _store: store, _dir: dir, api, http: reqwest::Client::new() };

    let answer = api.send(Method::GET, "/api/v1/memos?title=absent&sort=-rank", None).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", answer.body);
    assert_eq!(answer.code(), "query_timeout");
    assert_eq!(answer.retry_after.as_deref(), Some("1"));
}

/// A raw HTTP/1.1 POST whose body never finishes: the api holds it (reading the body) until the
/// test writes the rest or drops the connection.
struct StalledPost {
    stream: tokio::net::TcpStream,
}

impl StalledPost {
    const BODY: &'static str = r#"{"title": "slow"}"#;

    async fn open(api: &RunningApi) -> Self {
        use tokio::io::AsyncWriteExt;
        let mut stream = tokio::net::TcpStream::connect(api.addr).await.expect("connects");
        let head = format!(
            "POST /api/v1/memos HTTP/1.1\r\nhost: courier\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{{",
            Self::BODY.len()
        );
        stream.write_all(head.as_bytes()).await.expect("sends the head");
        StalledPost { stream }
    }

    /// Sends the rest of the body.
    async fn finish(&mut self) {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(&Self::BODY.as_bytes()[1..]).await.expect("sends the rest");
    }

    /// The status line and body of the answer, within `timeout`.
    async fn answer(&mut self, timeout: Duration) -> (String, String) {
        use tokio::io::AsyncReadExt;
        let mut got = Vec::new();
        let read = async {
            let mut buf = [0u8; 4096];
            loop {
                let n = self.stream.read(&mut buf).await.expect("reads the answer");
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got);
                if n == 0 || text.contains("\r\n\r\n") && text.ends_with('}') {
                    return;
                }
            }
        };
        tokio::time::timeout(timeout, read).await.expect("an answer within the timeout");
        let text = String::from_utf8_lossy(&got).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        (head.lines().next().unwrap_or("").to_owned(), body.to_owned())
    }
}

/// A request still running after `COURIER_HTTP_REQUEST_TIMEOUT` is answered 503
/// `request_timeout` with `Retry-After`, and what it carried is not written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_the_timeout_is_answered_503_and_changes_nothing() {
    let (nats, store) = tokio::join!(NatsServer::start(), StoreServer::start());
    let database = chaos::fresh_database();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Stack::api_config(&store, &database, &nats);
    config.collections_file = collections_file(&dir);
    config.http_limits.http_request_timeout = Duration::from_secs(1);
    let api = RunningApi::start(config).await;
    let started = tokio::time::Instant::now();
    let mut stalled = StalledPost::open(&api).await;
    let (status, body) = stalled.answer(Duration::from_secs(10)).await;
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(status, "HTTP/1.1 503 Service Unavailable", "{body}");
    let body: Value = serde_json::from_str(&body).expect("a JSON error body");
    assert_eq!(body["error"]["code"], "request_timeout", "{body}");
    // The stalled request wrote nothing.
    let client = mongodb::Client::with_uri_str(store.uri()).await.unwrap();
    let memos = client.database(&database).collection::<mongodb::bson::Document>("memos");
    assert_eq!(memos.count_documents(mongodb::bson::doc! {}).await.unwrap(), 0);
    drop((nats, dir));
}

/// With `COURIER_HTTP_MAX_CONCURRENT_REQUESTS` requests in flight, the next is answered 503
/// `overloaded` at once with `Retry-After` (the ops endpoints still answer); once they finish,
/// requests are served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_concurrency_limit_are_shed_with_503() {
    use reqwest::Method;
    let api = Api::start(|config| config.http_limits.http_max_concurrent_requests = 2).await;
    let mut held = vec![StalledPost::open(&api.api).await, StalledPost::open(&api.api).await];
    let shed = courier_tests::wait_for("a request to be shed", Duration::from_secs(10), || async {
        let answer = api.send(Method::GET, "/api/v1/memos", None).await;
        if answer.status == StatusCode::SERVICE_UNAVAILABLE {
            Ok(answer)
        } else {
            Err(format!("{}: {:?}", answer.status, answer.body))
        }
    })
    .await;
    assert_eq!(shed.code(), "overloaded", "{:?}", shed.body);
    assert_eq!(shed.retry_after.as_deref(), Some("1"));
    let health = api.http.get(format!("{}/healthz", api.api.url())).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK, "probes are outside the limit");

    for post in &mut held {
        post.finish().await;
        let (status, body) = post.answer(Duration::from_secs(10)).await;
        assert_eq!(status, "HTTP/1.1 201 Created", "{body}");
    }
    courier_tests::wait_until("requests to be served again", Duration::from_secs(10), || async {
        api.send(Method::GET, "/api/v1/memos", None).await.status == StatusCode::OK
    })
    .await;
}

/// The outbox records waiting in `database`.
async fn outbox_len(store: &StoreServer, database: &str) -> u64 {
    let client = mongodb::Client::with_uri_str(store.uri()).await.unwrap();
    let outbox = client.database(database).collection::<mongodb::bson::Document>("_outbox");
    outbox.count_documents(mongodb::bson::doc! {}).await.unwrap()
}

/// POSTs `body` to `collection` until the api refuses one (at most `attempts`): that refusal.
async fn post_until_refused(api: &Api, collection: &str, attempts: usize) -> Answer {
    let path = format!("/api/v1/{collection}");
    for n in 0..attempts {
        let body =
            json!({"title": format!("note number {n} with some padding to fill the stream")});
        let answer = api.send(reqwest::Method::POST, &path, Some(&body)).await;
        if answer.status != StatusCode::CREATED {
            return answer;
        }
    }
    panic!("{attempts} writes to {collection} were all accepted: no stream limit was reached");
}

/// Starts the stack with the given stream limits; waits until the streams carry them.
async fn start_with_stream_limits(events_max_bytes: i64, tasks_max_bytes: i64) -> (Api, String) {
    courier_tests::init_test_logging();
    let (nats, store) = tokio::join!(NatsServer::start(), StoreServer::start());
    let database = chaos::fresh_database();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Stack::api_config(&store, &database, &nats);
    config.collections_file = collections_file(&dir);
    config.nats.events_max_bytes = events_max_bytes;
    config.nats.tasks_max_bytes = tasks_max_bytes;
    config.jetstream_metrics_interval = Duration::from_millis(200);
    let api = RunningApi::start(config).await;
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    courier_tests::wait_until("the streams to carry their limits", Duration::from_secs(10), || {
        let js = js.clone();
        async move {
            let (Ok(mut events), Ok(mut tasks)) =
                (js.get_stream("EVENTS").await, js.get_stream("TASKS").await)
            else {
                return false;
            };
            let (Ok(events), Ok(tasks)) = (events.info().await, tasks.info().await) else {
                return false;
            };
            (events.config.max_bytes, tasks.config.max_bytes) == (events_max_bytes, tasks_max_bytes)
        }
    })
    .await;
    let api = Api { _nats: nats, _store: store, _dir: dir, api, http: reqwest::Client::new() };
    (api, database)
}

/// EVENTS at its `max_bytes`: writes are refused with 503 `stream_full` and `Retry-After`
/// before anything is written, so the outbox stops growing; the byte limit is exported for the
/// alert; once the stream has room (here: purged), writes are accepted again and the few
/// records that were in flight when it filled are relayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_events_stream_refuses_writes_with_503_until_it_has_room() {
    let (api, database) = start_with_stream_limits(4096, 1 << 20).await;
    let refused = post_until_refused(&api, "memos", 200).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", refused.body);
    assert_eq!(refused.code(), "stream_full", "{:?}", refused.body);
    assert_eq!(refused.retry_after.as_deref(), Some("10"));
    assert!(refused.body["error"]["message"].as_str().unwrap().contains("EVENTS"));

    // Refused writes store nothing: the outbox holds only what was in flight when it filled,
    // and does not grow however many writes are tried.
    let waiting = outbox_len(&api._store, &database).await;
    assert!(waiting <= 2, "{waiting} records wait in the outbox");
    for n in 0..20 {
        let body = json!({"title": format!("refused {n}")});
        let answer = api.send(reqwest::Method::POST, "/api/v1/memos", Some(&body)).await;
        assert_eq!(answer.code(), "stream_full", "{:?}", answer.body);
    }
    assert_eq!(outbox_len(&api._store, &database).await, waiting, "the outbox did not grow");
    let listed = api.send(reqwest::Method::GET, "/api/v1/memos?title=refused%200", None).await;
    assert_eq!(listed.body["items"], json!([]), "a refused write stored nothing");

    // The alert's inputs: the stream's bytes and its limit.
    courier_tests::wait_for("the stream limit gauge", Duration::from_secs(10), || async {
        let metrics = api.http.get(format!("{}/metrics", api.api.url())).send().await;
        let text = match metrics {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(err) => return Err(err.to_string()),
        };
        let has = |name: &str, value: Option<&str>| {
            text.lines().any(|line| {
                line.starts_with(&format!("{name}{{"))
                    && line.contains(r#"stream="EVENTS""#)
                    && value.is_none_or(|v| line.ends_with(&format!(" {v}")))
            })
        };
        let wanted = [
            has("courier_jetstream_stream_max_bytes", Some("4096")),
            has("courier_jetstream_stream_bytes", None),
        ];
        if wanted.iter().all(|found| *found) {
            Ok(())
        } else {
            Err(text.lines().filter(|l| l.contains("jetstream")).collect::<Vec<_>>().join("\n"))
        }
    })
    .await;

    // Room again: writes are accepted, and what was waiting is published.
    let js = async_nats::jetstream::new(async_nats::connect(api._nats.url()).await.unwrap());
    js.get_stream("EVENTS").await.unwrap().purge().await.unwrap();
    courier_tests::wait_until("writes to be accepted again", Duration::from_secs(15), || async {
        let body = json!({"title": "after the purge"});
        api.send(reqwest::Method::POST, "/api/v1/memos", Some(&body)).await.status
            == StatusCode::CREATED
    })
    .await;
    courier_tests::wait_until("the outbox to drain", Duration::from_secs(15), || async {
        outbox_len(&api._store, &database).await == 0
    })
    .await;
}

/// TASKS at its `max_bytes` (no worker drains it): writes that enqueue a task are refused with
/// 503 `stream_full`; writes that enqueue none are still accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_tasks_stream_refuses_only_writes_that_enqueue_tasks() {
    let (api, database) = start_with_stream_limits(1 << 20, 2048).await;
    let refused = post_until_refused(&api, "jobs", 200).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", refused.body);
    assert_eq!(refused.code(), "stream_full", "{:?}", refused.body);
    assert!(refused.body["error"]["message"].as_str().unwrap().contains("TASKS"));
    let note =
        api.send(reqwest::Method::POST, "/api/v1/memos", Some(&json!({"title": "fine"}))).await;
    assert_eq!(note.status, StatusCode::CREATED, "{:?}", note.body);
    let waiting = outbox_len(&api._store, &database).await;
    for n in 0..10 {
        let body = json!({"title": format!("refused {n}")});
        let answer = api.send(reqwest::Method::POST, "/api/v1/jobs", Some(&body)).await;
        assert_eq!(answer.code(), "stream_full", "{:?}", answer.body);
    }
    assert!(outbox_len(&api._store, &database).await <= waiting, "the outbox did not grow");
}

/// NATS down: writes still commit and wait in the outbox, but only up to
/// `COURIER_OUTBOX_MAX_PENDING`; past it they are refused with 503 `outbox_full` and the outbox
/// stops growing. NATS back: the backlog is published and writes are accepted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_is_bounded_while_nats_is_down() {
    courier_tests::init_test_logging();
    let (nats, store) = tokio::join!(NatsServer::start(), StoreServer::start());
    let database = chaos::fresh_database();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Stack::api_config(&store, &database, &nats);
    config.collections_file = collections_file(&dir);
    config.outbox_max_pending = 5;
    let api = RunningApi::start(config).await;
    let mut api = Api { _nats: nats, _store: store, _dir: dir, api, http: reqwest::Client::new() };
    let first =
        api.send(reqwest::Method::POST, "/api/v1/memos", Some(&json!({"title": "up"}))).await;
    assert_eq!(first.status, StatusCode::CREATED);

    api._nats.kill().await;
    let refused = post_until_refused(&api, "memos", 2_000).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", refused.body);
    assert_eq!(refused.code(), "outbox_full", "{:?}", refused.body);
    assert_eq!(refused.retry_after.as_deref(), Some("10"));
    let waiting = outbox_len(&api._store, &database).await;
    assert!(waiting > 5, "writes were accepted up to the bound ({waiting} wait)");
    for n in 0..10 {
        let body = json!({"title": format!("refused {n}")});
        let answer = api.send(reqwest::Method::POST, "/api/v1/memos", Some(&body)).await;
        assert_eq!(answer.code(), "outbox_full", "{:?}", answer.body);
    }
    assert_eq!(outbox_len(&api._store, &database).await, waiting, "the outbox did not grow");

    api._nats.restart().await;
    courier_tests::wait_until("the outbox to drain", Duration::from_secs(30), || async {
        outbox_len(&api._store, &database).await == 0
    })
    .await;
    courier_tests::wait_until("writes to be accepted again", Duration::from_secs(15), || async {
        let body = json!({"title": "back"});
        api.send(reqwest::Method::POST, "/api/v1/memos", Some(&body)).await.status
            == StatusCode::CREATED
    })
    .await;
}
