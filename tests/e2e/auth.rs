//! Accounts end to end: register, login, refresh rotation and reuse detection, `me`, the login
//! rate limit, forged/expired tokens, and collections that need authentication.

use std::time::Duration;

use courier_core::{
    auth::{Claims, JwtKeys, Secret},
    protocol::ServerFrame,
};
use courier_tests::{
    ClientError, NatsServer, RunningBroadcaster, Stack, TEST_JWT_SECRET, WsClient, chaos,
    wait_until,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{collections::call, helpers::collect_events};

async fn post(
    stack: &Stack,
    path: &str,
    body: Value,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let response = stack
        .http
        .post(format!("{}/api/v1/auth/{path}", stack.api.url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    (status, headers, response.json().await.unwrap_or(Value::Null))
}

async fn me(
    stack: &Stack,
    authorization: Option<&str>,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut request = stack.http.get(format!("{}/api/v1/auth/me", stack.api.url()));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let response = request.send().await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    (status, headers, response.json().await.unwrap_or(Value::Null))
}

fn fields(body: &Value) -> Vec<String> {
    body["error"]["fields"].as_array().map_or_else(Vec::new, |f| {
        f.iter().map(|f| f["field"].as_str().unwrap().to_owned()).collect()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_login_me_and_refresh_with_rotation() {
    let stack = Stack::start().await;
    let credentials = json!({"username": "Ana.Lopez", "password": "correct horse battery"});

    let (status, _, user) = post(&stack, "register", credentials.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    assert_eq!(user["username"], "ana.lopez", "usernames are case-insensitive");
    assert!(user.get("password").is_none() && user.get("password_hash").is_none(), "{user}");
    let (status, _, taken) =
        post(&stack, "register", json!({"username": "ana.lopez", "password": "another good one"}))
            .await;
    assert_eq!((status, taken["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("conflict")));

    for (body, expected) in [
        (json!({"username": "ana2", "password": "short"}), vec!["password"]),
        (json!({"username": "x", "password": "correct horse battery"}), vec!["username"]),
        (json!({"username": "ana3", "password": ""}), vec!["password"]),
        (json!({"username": "ana4"}), vec!["password"]),
        (json!({"username": 7, "password": "correct horse battery"}), vec!["username"]),
    ] {
        let (status, _, error) = post(&stack, "register", body.clone()).await;
        assert_eq!(
            (status, fields(&error)),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                expected.iter().map(|s| s.to_string()).collect::<Vec<_>>()
            ),
            "{body}"
        );
    }

    let (status, _, tokens) = post(
        &stack,
        "login",
        json!({"username": "ANA.LOPEZ", "password": "correct horse battery"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 900);
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let (status, _, who) = me(&stack, Some(&format!("Bearer {access}"))).await;
    assert_eq!(
        (status, &who["username"], &who["id"]),
        (StatusCode::OK, &json!("ana.lopez"), &user["id"])
    );

    // Refresh rotates: the new pair works, the used token is dead, and reusing it signs the
    // whole family out (the newer token stops working too).
    let first_refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let (status, _, rotated) =
        post(&stack, "refresh", json!({"refresh_token": first_refresh})).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let second_refresh = rotated["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(second_refresh, first_refresh);
    let (status, _, _) =
        me(&stack, Some(&format!("Bearer {}", rotated["access_token"].as_str().unwrap()))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, reused) =
        post(&stack, "refresh", json!({"refresh_token": first_refresh})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(reused["error"]["message"].as_str().unwrap().contains("already used"), "{reused}");
    let (status, _, _) = post(&stack, "refresh", json!({"refresh_token": second_refresh})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "reuse revoked the family");
    let (status, _, _) = post(&stack, "refresh", json!({"refresh_token": "made-up"})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = post(&stack, "refresh", json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_look_alike_and_repeated_failures_are_rate_limited() {
    let stack = Stack::start().await;
    post(&stack, "register", json!({"username": "ana", "password": "correct horse battery"})).await;

    let (status, headers, wrong_password) =
        post(&stack, "login", json!({"username": "ana", "password": "wrong password!"})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, unknown_user) =
        post(&stack, "login", json!({"username": "nobody", "password": "wrong password!"})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong_password, unknown_user, "the same answer whether or not the user exists");
    assert!(headers.get("www-authenticate").is_some());

    // Default: 5 failures per username and address per window. One so far for "ana"; four more,
    // then 429 (for this address).
    for _ in 0..4 {
        let (status, _, _) =
            post(&stack, "login", json!({"username": "ana", "password": "wrong password!"})).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, headers, limited) =
        post(&stack, "login", json!({"username": "ana", "password": "correct horse battery"}))
            .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{limited}");
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=300).contains(&retry_after), "{retry_after}");
    // Other accounts are not locked out by someone guessing at "ana".
    post(&stack, "register", json!({"username": "bob", "password": "correct horse battery"})).await;
    let (status, _, _) =
        post(&stack, "login", json!({"username": "bob", "password": "correct horse battery"}))
            .await;
    assert_eq!(status, StatusCode::OK);
}

/// A client whose connections come from `address` (any 127.x.y.z reaches a local listener).
fn client_from(address: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(address.parse::<std::net::IpAddr>().ok())
        .build()
        .unwrap()
}

async fn login_from(
    client: &reqwest::Client,
    stack: &Stack,
    password: &str,
) -> (StatusCode, Value) {
    let response = client
        .post(format!("{}/api/v1/auth/login", stack.api.url()))
        .json(&json!({"username": courier_tests::TEST_ADMIN_USERNAME, "password": password}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guesser_is_limited_but_the_owner_still_signs_in_from_another_address() {
    let stack = Stack::start().await;
    stack.admin_token().await;
    let guesser = client_from("127.0.0.2");
    let owner = client_from("127.0.0.3");
    // Five wrong passwords for `admin`, anonymously, from one address: then that address is
    // refused for `admin`, even with the right password.
    for _ in 0..5 {
        let (status, _) = login_from(&guesser, &stack, "wrong password!").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, body) = login_from(&guesser, &stack, courier_tests::TEST_ADMIN_PASSWORD).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    // The owner, from their own address, is not locked out; nor does their success free the
    // guesser.
    let (status, body) = login_from(&owner, &stack, courier_tests::TEST_ADMIN_PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "the owner signs in: {body}");
    assert!(body["access_token"].is_string());
    let (status, _) = login_from(&guesser, &stack, courier_tests::TEST_ADMIN_PASSWORD).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_can_be_answered_with_growing_delays() {
    let (nats, store) = tokio::join!(NatsServer::start(), courier_tests::StoreServer::start());
    let mut config = Stack::api_config(&store, "courier_login_delays", &nats);
    config.login_failure_delay = Duration::from_millis(400);
    let api = courier_tests::RunningApi::start(config).await;
    let http = reqwest::Client::new();
    let attempt = |password: &'static str| {
        let (http, url) = (http.clone(), api.url());
        async move {
            let started = std::time::Instant::now();
            let status = http
                .post(format!("{url}/api/v1/auth/login"))
                .json(
                    &json!({"username": courier_tests::TEST_ADMIN_USERNAME, "password": password}),
                )
                .send()
                .await
                .unwrap()
                .status();
            (status, started.elapsed())
        }
    };
    // Ready means the bootstrap admin exists.
    let (status, first) = attempt("wrong password!").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, second) = attempt("wrong password!").await;
    assert!(first >= Duration::from_millis(400), "{first:?}");
    assert!(second >= Duration::from_millis(800), "{second:?}");
    let (status, fine) = attempt(courier_tests::TEST_ADMIN_PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
    assert!(fine < Duration::from_millis(400), "a correct password is not held back: {fine:?}");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_expired_and_malformed_tokens_are_refused() {
    let stack = Stack::start().await;
    let token = stack.token("ana").await;
    let keys = JwtKeys::hs256(TEST_JWT_SECRET.as_bytes(), Duration::from_secs(900));
    let claims = keys.verify(&token).unwrap();

    let expired = keys
        .sign(&Claims { iat: claims.iat - 3600, exp: claims.iat - 1800, ..claims.clone() })
        .unwrap();
    let forged =
        JwtKeys::hs256(b"an attacker's own secret, 32+ bytes long", Duration::from_secs(900))
            .sign(&claims)
            .unwrap();
    for (authorization, expected) in [
        (format!("Bearer {expired}"), "expired"),
        (format!("Bearer {forged}"), "invalid"),
        (format!("Basic {token}"), "Bearer"),
        ("Bearer ".to_owned(), "Bearer"),
    ] {
        let (status, headers, error) = me(&stack, Some(&authorization)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{authorization}");
        assert!(error["error"]["message"].as_str().unwrap().contains(expected), "{error}");
        assert_eq!(headers["www-authenticate"], r#"Bearer realm="courier", error="invalid_token""#);
    }
    let (status, headers, _) = me(&stack, None).await;
    assert_eq!(
        (status, headers["www-authenticate"].to_str().unwrap()),
        (StatusCode::UNAUTHORIZED, r#"Bearer realm="courier""#)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pets_need_a_token_to_write_and_their_events_carry_no_user_ids() {
    let stack = Stack::start().await;
    let mut ws = stack.ws().await;
    ws.subscribe("pets", None, None).await.unwrap();
    let pet =
        json!({"name": "Rex", "species": "Dog", "age": 3, "vaccinated": false, "owner": "ana"});

    let (status, _, error) =
        call(&stack, Method::POST, "/api/v1/pets", Some(pet.clone()), &[]).await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    let (status, _, _) = call(
        &stack,
        Method::POST,
        "/api/v1/pets",
        Some(pet.clone()),
        &[("authorization", "Bearer garbage")],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let token = stack.token("ana").await;
    let auth = format!("Bearer {token}");
    let (status, _, created) =
        call(&stack, Method::POST, "/api/v1/pets", Some(pet), &[("authorization", &auth)]).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let path = format!("/api/v1/pets/{}", created["id"].as_str().unwrap());
    // Reads are public for pets; writes stay protected on every method.
    let (status, _, _) = call(&stack, Method::GET, &path, None, &[]).await;
    assert_eq!(status, StatusCode::OK);
    for method in [Method::PATCH, Method::PUT, Method::DELETE] {
        let body =
            (method != Method::DELETE).then(|| json!({"name": "X", "species": "Dog", "age": 1}));
        let (status, _, _) = call(&stack, method.clone(), &path, body, &[]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method}");
    }

    let (_, _, who) = me(&stack, Some(&auth)).await;
    assert_eq!(created["created_by"], who["id"], "the document records its creator");
    // Anonymous clients read pets, so its events carry no user ids (tests/e2e/authz.rs shows a
    // collection whose events do).
    let got = collect_events(&mut ws, 1, Duration::from_secs(10)).await;
    assert_eq!(got[0].event.actor, None);
    assert!(got[0].event.data.get("created_by").is_none(), "{}", got[0].event.data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_channels_need_a_valid_token_and_end_when_it_expires() {
    let stack = Stack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("collections.yaml");
    std::fs::write(&file, "collections:\n  - {name: secrets, schema: {type: object}, access: {read: authenticated}}\n  - {name: products, schema: {type: object}}\n").unwrap();
    let mut config = Stack::broadcaster_config(&stack.nats);
    config.collections_file = Some(file);
    config.jwt.secret = Some(Secret(TEST_JWT_SECRET.to_owned()));
    config.ping_interval = Duration::from_millis(200);
    let broadcaster = RunningBroadcaster::start(config).await;
    let mut ws = WsClient::connect(&broadcaster.ws_url()).await.unwrap();

    ws.subscribe("products", None, None).await.expect("public channels need no token");
    let keys = JwtKeys::hs256(TEST_JWT_SECRET.as_bytes(), Duration::from_secs(900));
    let (valid, claims) = keys.issue("u1", "ana").unwrap();
    let expired = keys
        .sign(&Claims { iat: claims.iat - 3600, exp: claims.iat - 1800, ..claims.clone() })
        .unwrap();
    let forged =
        JwtKeys::hs256(b"an attacker's own secret, 32+ bytes long", Duration::from_secs(900))
            .sign(&claims)
            .unwrap();
    for (token, expected) in
        [(None, "requires an access token"), (Some(expired), "expired"), (Some(forged), "invalid")]
    {
        match ws.subscribe("secrets:doc1", None, token).await {
            Err(ClientError::Refused { code, message }) => {
                assert_eq!(code, "unauthorized");
                assert!(message.contains(expected), "{message}");
            }
            other => panic!("expected unauthorized ({expected}), got {other:?}"),
        }
    }
    ws.subscribe("secrets:doc1", None, Some(valid)).await.expect("a valid token admits");

    // A token about to expire admits, and the subscription ends when it does.
    let now = claims.iat;
    let short = keys.sign(&Claims { exp: now + 2, ..claims }).unwrap();
    ws.subscribe("secrets", None, Some(short)).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next_frame().await.expect("the connection stays open") {
                ServerFrame::Error { code, channel, message, .. } => {
                    assert_eq!(
                        (code.as_str(), channel.as_deref()),
                        ("unauthorized", Some("secrets")),
                        "{message}"
                    );
                }
                ServerFrame::Unsubscribed { channel, reason } => {
                    assert_eq!(channel, "secrets");
                    assert_eq!(reason.as_deref(), Some("token_expired"));
                    return;
                }
                _ => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the expired subscription was not ended within 10 s");
    ws.send(&courier_core::ClientFrame::GetStatus {}).await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let ServerFrame::Status(status) = ws.next_frame().await.expect("a status frame") {
                return status;
            }
        }
    })
    .await
    .expect("a status frame within 5 s");
    assert_eq!(status.subscriptions, ["products", "secrets:doc1"], "the others continue");
    broadcaster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broadcaster_follows_read_rule_changes_in_the_collections_file() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("collections.yaml");
    let rules = |read: &str| {
        format!(
            "collections:\n  - {{name: notes, schema: {{type: object}}, access: {{read: {read}}}}}\n"
        )
    };
    std::fs::write(&file, rules("authenticated")).unwrap();
    // A process, so the test can see in its log when it has read (and refused) a file.
    let broadcaster = chaos::broadcaster_process(
        &nats.url(),
        &[
            ("COURIER_COLLECTIONS_FILE", file.display().to_string()),
            ("COURIER_COLLECTIONS_RELOAD_INTERVAL", "100ms".to_owned()),
            ("COURIER_JWT_SECRET", TEST_JWT_SECRET.to_owned()),
        ],
    )
    .await;
    let token = JwtKeys::hs256(TEST_JWT_SECRET.as_bytes(), Duration::from_secs(900))
        .issue("u1", "ana")
        .unwrap()
        .0;
    let unauthorized = |result: Result<(u64, Option<bool>), ClientError>| matches!(result, Err(ClientError::Refused { code, .. }) if code == "unauthorized");
    let mut ws = WsClient::connect(&broadcaster.ws_url()).await.unwrap();
    assert!(unauthorized(ws.subscribe("notes", None, None).await), "protected at first");
    ws.subscribe("notes", None, Some(token.clone())).await.expect("a token admits");

    // An invalid edit keeps the previous rules: the collection stays protected.
    std::fs::write(&file, "collections: [oops").unwrap();
    wait_until("the broadcaster to refuse the invalid file", Duration::from_secs(10), || async {
        broadcaster.log_text().contains("keeping the previous read rules")
    })
    .await;
    assert!(
        unauthorized(ws.subscribe("notes:a", None, None).await),
        "an invalid file changes nothing: notes still needs a token"
    );
    ws.subscribe("notes:a", None, Some(token)).await.expect("and a token still admits");

    // A valid edit applies: the collection becomes public.
    std::fs::write(&file, rules("public")).unwrap();
    let ws = tokio::sync::Mutex::new(ws);
    wait_until("the new read rule to apply", Duration::from_secs(10), || async {
        ws.lock().await.subscribe("notes:b", None, None).await.is_ok()
    })
    .await;
}
