//! Room creation and consent (docs/chat.md, "Blocking"): the room-creation limit runs before the
//! member lookup that says which usernames exist, and a per-user block list keeps others from
//! starting a direct room with me, adding me to group rooms and messaging me in a direct room.

use courier_tests::{NatsServer, RunningApi, Stack, StoreServer, chaos, services::access_token};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn send(
    http: &reqwest::Client,
    api: &RunningApi,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = http.request(method, format!("{}{path}", api.url())).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("the api answers");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn start(
    tune: impl FnOnce(&mut courier_api::ApiConfig),
) -> (NatsServer, StoreServer, RunningApi) {
    courier_tests::init_test_logging();
    let (nats, store) = tokio::join!(NatsServer::start(), StoreServer::start());
    let mut config = Stack::api_config(&store, &chaos::fresh_database(), &nats);
    tune(&mut config);
    let api = RunningApi::start(config).await;
    (nats, store, api)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_creation_is_limited_before_it_says_which_usernames_exist() {
    let (_nats, _store, api) = start(|config| {
        config.chat_room_limit = 2;
        config.chat_room_window = std::time::Duration::from_secs(60);
    })
    .await;
    let http = reqwest::Client::new();
    let mallory = access_token(&http, &api.url(), "mallory").await;
    access_token(&http, &api.url(), "alice").await;
    // Each probe names who is missing; two probes, then the limit answers before the lookup.
    for n in 1..=2 {
        let probe = json!({"name": "probe", "members": ["alice", format!("zz-none-{n}")]});
        let (status, body) =
            send(&http, &api, Method::POST, "/api/v1/chats", &mallory, Some(probe)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(body.to_string().contains(&format!("zz-none-{n}")), "{body}");
    }
    let probe = json!({"name": "probe", "members": ["alice", "zz-none-3"]});
    let (status, body) =
        send(&http, &api, Method::POST, "/api/v1/chats", &mallory, Some(probe)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(!body.to_string().contains("zz-none-3"), "nothing about the names: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_keeps_someone_from_direct_rooms_group_adds_and_messages() {
    let (_nats, _store, api) = start(|_| {}).await;
    let http = reqwest::Client::new();
    let (ana, bob, carl) = (
        access_token(&http, &api.url(), "ana").await,
        access_token(&http, &api.url(), "bob").await,
        access_token(&http, &api.url(), "carl").await,
    );
    let post = |token: &str, path: &str, body: Value| {
        let (http, token, path) = (http.clone(), token.to_owned(), path.to_owned());
        let api = &api;
        async move { send(&http, api, Method::POST, &path, &token, Some(body)).await }
    };

    // Bob blocks ana (twice is fine) and sees it in his list.
    for _ in 0..2 {
        let (status, body) =
            send(&http, &api, Method::PUT, "/api/v1/chats/blocks/ANA", &bob, None).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    }
    let (_, list) = send(&http, &api, Method::GET, "/api/v1/chats/blocks", &bob, None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["items"][0]["username"], "ana");
    let (status, _) = send(&http, &api, Method::PUT, "/api/v1/chats/blocks/bob", &bob, None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "not oneself");
    let (status, _) =
        send(&http, &api, Method::PUT, "/api/v1/chats/blocks/nobody", &bob, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Ana can neither start a direct room with bob, nor put him in a group, nor add him.
    let (status, body) = post(&ana, "/api/v1/chats", json!({"direct": "bob"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) =
        post(&ana, "/api/v1/chats", json!({"name": "g", "members": ["bob", "carl"]})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("'bob'"), "{body}");
    let (status, group) =
        post(&ana, "/api/v1/chats", json!({"name": "g", "members": ["carl"]})).await;
    assert_eq!(status, StatusCode::CREATED, "{group}");
    let members = format!("/api/v1/chats/{}/members", group["id"].as_str().unwrap());
    let (status, _) = post(&ana, &members, json!({"username": "bob"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Carl, whom bob does not block, may still add him.
    let (status, body) = send(
        &http,
        &api,
        Method::PATCH,
        &format!("{members}/carl"),
        &ana,
        Some(json!({"role": "admin"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = post(&carl, &members, json!({"username": "bob"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // Unblocked: the direct room opens. Blocked again: neither can send in it.
    let (status, _) =
        send(&http, &api, Method::DELETE, "/api/v1/chats/blocks/ana", &bob, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, direct) = post(&ana, "/api/v1/chats", json!({"direct": "bob"})).await;
    assert_eq!(status, StatusCode::CREATED, "{direct}");
    let messages = format!("/api/v1/chats/{}/messages", direct["id"].as_str().unwrap());
    let (status, _) = post(&ana, &messages, json!({"text": "hi"})).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = send(&http, &api, Method::PUT, "/api/v1/chats/blocks/ana", &bob, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for (who, token) in [("ana", &ana), ("bob", &bob)] {
        let (status, body) = post(token, &messages, json!({"text": "still there?"})).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{who}: {body}");
    }
}
