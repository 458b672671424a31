//! Chat's api half end to end: rooms (group and direct), members and each role's permissions,
//! 404s for non-members, messages with gap-free seqs under concurrency, idempotent retries,
//! history paging, edits, tombstones, reactions, mentions, read markers across two devices,
//! rate limits with `Retry-After`, the `rpc.chat.membership` responder, and every change as an
//! event on `chat:<id>` / `user:<id>` over the broadcaster's WebSocket.

use std::{collections::HashMap, time::Duration};

use futures::StreamExt;

use courier_core::{
    Event,
    chat::{MembershipReply, MembershipRequest},
    protocol::ServerFrame,
    subjects::CHAT_MEMBERSHIP_RPC,
};
use courier_tests::{
    ClientError, NatsServer, RunningApi, RunningBroadcaster, Stack, StoreServer, WsClient,
    services::access_token,
};
use reqwest::{Method, StatusCode, header::HeaderMap};
use serde_json::{Value, json};

/// A signed-in user of a test stack.
#[derive(Clone)]
struct User {
    id: String,
    name: String,
    token: String,
}

async fn sign_in(stack: &Stack, name: &str) -> User {
    let token = stack.token(name).await;
    let (status, _, me) = call(stack, &token, Method::GET, "/api/v1/auth/me", None).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    User { id: me["id"].as_str().unwrap().to_owned(), name: name.to_owned(), token }
}

/// `method path` (relative to the api) as `token`'s user, with an optional JSON body.
async fn call(
    stack: &Stack,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, HeaderMap, Value) {
    let mut request = stack.http.request(method, format!("{}{path}", stack.api.url()));
    if !token.is_empty() {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("the api answers");
    let (status, headers) = (response.status(), response.headers().clone());
    (status, headers, response.json().await.unwrap_or(Value::Null))
}

impl User {
    async fn get(&self, stack: &Stack, path: &str) -> (StatusCode, Value) {
        let (status, _, body) = call(stack, &self.token, Method::GET, path, None).await;
        (status, body)
    }

    async fn send(
        &self,
        stack: &Stack,
        method: Method,
        path: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        let (status, _, body) = call(stack, &self.token, method, path, Some(body)).await;
        (status, body)
    }

    async fn delete(&self, stack: &Stack, path: &str) -> (StatusCode, Value) {
        let (status, _, body) = call(stack, &self.token, Method::DELETE, path, None).await;
        (status, body)
    }

    /// Creates a group room with `members`; its id.
    async fn create_room(&self, stack: &Stack, name: &str, members: &[&User]) -> String {
        let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
        let (status, room) = self
            .send(stack, Method::POST, "/api/v1/chats", json!({"name": name, "members": names}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{room}");
        room["id"].as_str().unwrap().to_owned()
    }

    /// Sends `text` to `room`; the message.
    async fn say(&self, stack: &Stack, room: &str, text: &str) -> Value {
        let (status, message) = self
            .send(
                stack,
                Method::POST,
                &format!("/api/v1/chats/{room}/messages"),
                json!({"text": text}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{message}");
        message
    }

    /// A WebSocket on the stack's broadcaster subscribed to `channel` with my token.
    async fn subscribe(&self, stack: &Stack, channel: &str, since: Option<u64>) -> WsClient {
        let mut ws = stack.ws().await;
        ws.subscribe(channel, since, Some(self.token.clone())).await.expect("subscribed");
        ws
    }
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

fn field_names(body: &Value) -> Vec<String> {
    body["error"]["fields"].as_array().map_or_else(Vec::new, |f| {
        f.iter().map(|f| f["field"].as_str().unwrap().to_owned()).collect()
    })
}

/// Reads event frames until `n` arrived (others skipped), within `timeout`.
async fn events(ws: &mut WsClient, n: usize, timeout: Duration) -> Vec<(u64, Event)> {
    let mut got = Vec::with_capacity(n);
    let deadline = tokio::time::Instant::now() + timeout;
    while got.len() < n {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match ws.next_frame_within(left).await {
            Ok(ServerFrame::Event { seq, event, .. }) => got.push((seq, event)),
            Ok(_) => {}
            Err(ClientError::Timeout) => {
                let types: Vec<&str> = got.iter().map(|(_, e)| e.event_type.as_str()).collect();
                panic!("only {} of {n} events within {timeout:?}: {types:?}", got.len())
            }
            Err(err) => panic!("subscriber failed after {} of {n} events: {err}", got.len()),
        }
    }
    got
}

async fn no_more_events(ws: &mut WsClient, window: Duration) {
    match ws.next_frame_within(window).await {
        Err(ClientError::Timeout) => {}
        Ok(ServerFrame::Event { event, .. }) => {
            panic!("unexpected event {} {}", event.event_type, event.data)
        }
        Ok(other) => panic!("unexpected frame {other:?}"),
        Err(err) => panic!("subscriber failed: {err}"),
    }
}

/// Reads until `n` `chat.message` events arrived. The room's `chat.member_added` events may
/// also show up (they are published right after the room's creation, possibly after the
/// subscription began); anything else fails the test.
async fn messages_only(ws: &mut WsClient, n: usize, timeout: Duration) -> Vec<(u64, Event)> {
    let mut got = Vec::with_capacity(n);
    let deadline = tokio::time::Instant::now() + timeout;
    while got.len() < n {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let (seq, event) = events(ws, 1, left).await.pop().expect("one event");
        match event.event_type.as_str() {
            "chat.message" => got.push((seq, event)),
            "chat.member_added" => {}
            other => panic!("unexpected {other}: {}", event.data),
        }
    }
    got
}

fn types(events: &[(u64, Event)]) -> Vec<&str> {
    events.iter().map(|(_, e)| e.event_type.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_members_and_what_each_role_may_do() {
    let stack = Stack::start().await;
    let (ana, bob, carl, dora, eve) = tokio::join!(
        sign_in(&stack, "ana"),
        sign_in(&stack, "bob"),
        sign_in(&stack, "carl"),
        sign_in(&stack, "dora"),
        sign_in(&stack, "eve"),
    );

    // Signed-in users only.
    let (status, _, body) = call(&stack, "", Method::GET, "/api/v1/chats", None).await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let (status, _, _) =
        call(&stack, "", Method::POST, "/api/v1/chats", Some(json!({"name": "x"}))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Bad input: 422 naming every field, nothing created.
    for (body, fields) in [
        (json!({}), vec!["name"]),
        (json!({"name": ""}), vec!["name"]),
        (json!({"name": "x".repeat(101)}), vec!["name"]),
        (json!({"name": "ok", "topic": "t".repeat(501)}), vec!["topic"]),
        (json!({"name": "ok", "members": "bob"}), vec!["members"]),
        (json!({"name": "ok", "colour": "red"}), vec!["colour"]),
        (json!({"name": "ok", "members": ["nobody-here"]}), vec!["members"]),
        (json!({"direct": "bob", "name": "x"}), vec!["direct"]),
        (json!({"direct": "ana"}), vec!["direct"]),
        (json!({"direct": "nobody-here"}), vec!["direct"]),
        (json!([1, 2]), vec!["(document)"]),
    ] {
        let (status, error) = ana.send(&stack, Method::POST, "/api/v1/chats", body.clone()).await;
        assert_eq!(
            (status, field_names(&error)),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                fields.iter().map(|f| f.to_string()).collect::<Vec<_>>()
            ),
            "{body}"
        );
    }
    let (_, mine) = ana.get(&stack, "/api/v1/chats").await;
    assert_eq!(mine["items"], json!([]), "nothing was created");

    // A group: the creator is owner, the others members.
    let (status, room) = ana
        .send(
            &stack,
            Method::POST,
            "/api/v1/chats",
            json!({"name": " Team ", "topic": "plans", "members": ["Bob", "carl", "bob"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{room}");
    let id = room["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (&room["name"], &room["topic"], &room["kind"], &room["role"], &room["member_count"]),
        (&json!("Team"), &json!("plans"), &json!("group"), &json!("owner"), &json!(3))
    );
    assert_eq!(
        (&room["last_seq"], &room["unread"], &room["mentions"]),
        (&json!(0), &json!(0), &json!(0))
    );
    let room_path = format!("/api/v1/chats/{id}");
    let members_path = format!("{room_path}/members");
    let (status, members) = bob.get(&stack, &members_path).await;
    assert_eq!(status, StatusCode::OK);
    let roles: Vec<(String, String)> = members["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["username"].as_str().unwrap().into(), m["role"].as_str().unwrap().into()))
        .collect();
    assert_eq!(
        roles,
        [
            ("ana".into(), "owner".into()),
            ("bob".into(), "member".into()),
            ("carl".into(), "member".into())
        ]
    );

    // A non-member gets 404 for everything about the room, exactly like for a room that
    // does not exist.
    let ghost = "65f0c0ffee0123456789abcd";
    for room_id in [id.as_str(), ghost] {
        let base = format!("/api/v1/chats/{room_id}");
        for (method, path, body) in [
            (Method::GET, base.clone(), None),
            (Method::PATCH, base.clone(), Some(json!({"name": "mine"}))),
            (Method::GET, format!("{base}/members"), None),
            (Method::POST, format!("{base}/members"), Some(json!({"username": "dora"}))),
            (Method::DELETE, format!("{base}/members/ana"), None),
            (Method::PATCH, format!("{base}/members/ana"), Some(json!({"role": "member"}))),
            (Method::GET, format!("{base}/messages"), None),
            (Method::POST, format!("{base}/messages"), Some(json!({"text": "hi"}))),
            (Method::PATCH, format!("{base}/messages/{ghost}"), Some(json!({"text": "x"}))),
            (Method::DELETE, format!("{base}/messages/{ghost}"), None),
            (Method::PUT, format!("{base}/messages/{ghost}/reactions/👍"), None),
            (Method::POST, format!("{base}/read"), Some(json!({"seq": 0}))),
        ] {
            let (status, _, body) = call(&stack, &eve.token, method.clone(), &path, body).await;
            assert_eq!(
                (status, error_code(&body)),
                (StatusCode::NOT_FOUND, "not_found"),
                "{method} {path}: {body}"
            );
        }
    }
    let (status, body) = eve.get(&stack, "/api/v1/chats/not-an-id").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (_, listed) = eve.get(&stack, "/api/v1/chats").await;
    assert_eq!(listed["items"], json!([]));

    // Members talk but do not manage.
    let (status, body) =
        bob.send(&stack, Method::PATCH, &room_path, json!({"name": "Bob's"})).await;
    assert_eq!((status, error_code(&body)), (StatusCode::FORBIDDEN, "forbidden"));
    let (status, _) =
        bob.send(&stack, Method::POST, &members_path, json!({"username": "dora"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = bob.delete(&stack, &format!("{members_path}/carl")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = bob
        .send(&stack, Method::PATCH, &format!("{members_path}/bob"), json!({"role": "admin"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // The owner makes bob an admin; admins add members and admins, not owners.
    let (status, bob_member) = ana
        .send(&stack, Method::PATCH, &format!("{members_path}/bob"), json!({"role": "admin"}))
        .await;
    assert_eq!((status, &bob_member["role"]), (StatusCode::OK, &json!("admin")), "{bob_member}");
    let (status, _) = bob
        .send(&stack, Method::POST, &members_path, json!({"username": "dora", "role": "owner"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = bob
        .send(&stack, Method::POST, &members_path, json!({"username": "dora", "role": "boss"}))
        .await;
    assert_eq!(
        (status, field_names(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, vec!["role".to_owned()])
    );
    let (status, body) =
        bob.send(&stack, Method::POST, &members_path, json!({"username": "nobody-here"})).await;
    assert_eq!(
        (status, field_names(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, vec!["username".to_owned()])
    );
    let (status, dora_member) =
        bob.send(&stack, Method::POST, &members_path, json!({"username": "dora"})).await;
    assert_eq!(
        (status, &dora_member["role"]),
        (StatusCode::CREATED, &json!("member")),
        "{dora_member}"
    );
    let (status, body) =
        bob.send(&stack, Method::POST, &members_path, json!({"username": "dora"})).await;
    assert_eq!((status, error_code(&body)), (StatusCode::CONFLICT, "conflict"));
    let (status, _) = dora.get(&stack, &room_path).await;
    assert_eq!(status, StatusCode::OK, "an added member sees the room");
    // Admins change the room, but cannot change roles, remove admins or owners.
    let (status, renamed) =
        bob.send(&stack, Method::PATCH, &room_path, json!({"name": "Team 2", "topic": ""})).await;
    assert_eq!(
        (status, &renamed["name"], &renamed["topic"], &renamed["role"]),
        (StatusCode::OK, &json!("Team 2"), &json!(""), &json!("admin"))
    );
    let (status, _) = bob
        .send(&stack, Method::PATCH, &format!("{members_path}/dora"), json!({"role": "admin"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = bob.delete(&stack, &format!("{members_path}/ana")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = ana.send(&stack, Method::PATCH, &room_path, json!({})).await;
    assert_eq!(
        (status, field_names(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, vec!["(document)".to_owned()])
    );
    // An admin removes a member, who then gets 404.
    let (status, _) = bob.delete(&stack, &format!("{members_path}/dora")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = dora.get(&stack, &room_path).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = bob.delete(&stack, &format!("{members_path}/dora")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no longer a member");

    // The only owner cannot step down; leaving hands ownership to the longest-standing admin.
    let (status, body) = ana
        .send(&stack, Method::PATCH, &format!("{members_path}/ana"), json!({"role": "admin"}))
        .await;
    assert_eq!((status, error_code(&body)), (StatusCode::CONFLICT, "conflict"), "{body}");
    let (status, _) = ana.delete(&stack, &format!("{members_path}/ana")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, bob_view) = bob.get(&stack, &room_path).await;
    assert_eq!(
        (&bob_view["role"], &bob_view["member_count"]),
        (&json!("owner"), &json!(2)),
        "{bob_view}"
    );
    let (status, _) = ana.get(&stack, &room_path).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Owners remove anyone; a member may leave.
    let (status, _) = bob
        .send(&stack, Method::POST, &members_path, json!({"username": "eve", "role": "owner"}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = bob.delete(&stack, &format!("{members_path}/eve")).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "an owner removes another owner");
    let (status, _) = carl.delete(&stack, &format!("{members_path}/carl")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    // Archived rooms are read-only until unarchived.
    let (status, archived) =
        bob.send(&stack, Method::PATCH, &room_path, json!({"archived": true})).await;
    assert_eq!((status, &archived["archived"]), (StatusCode::OK, &json!(true)));
    let (status, body) = bob
        .send(&stack, Method::POST, &format!("{room_path}/messages"), json!({"text": "hello?"}))
        .await;
    assert_eq!((status, error_code(&body)), (StatusCode::CONFLICT, "conflict"));
    let (status, _) = bob.send(&stack, Method::PATCH, &room_path, json!({"name": "still"})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) =
        bob.send(&stack, Method::POST, &members_path, json!({"username": "carl"})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, open) =
        bob.send(&stack, Method::PATCH, &room_path, json!({"archived": false})).await;
    assert_eq!((status, &open["archived"]), (StatusCode::OK, &json!(false)));
    bob.say(&stack, &id, "back").await;

    // Direct rooms: one per pair, whoever asks, both owners, members fixed.
    let (status, direct) =
        carl.send(&stack, Method::POST, "/api/v1/chats", json!({"direct": "Dora"})).await;
    assert_eq!(
        (status, &direct["kind"], &direct["role"]),
        (StatusCode::CREATED, &json!("direct"), &json!("owner")),
        "{direct}"
    );
    let (status, again) =
        dora.send(&stack, Method::POST, "/api/v1/chats", json!({"direct": "carl"})).await;
    assert_eq!((status, &again["id"]), (StatusCode::OK, &direct["id"]));
    let (status, again) =
        carl.send(&stack, Method::POST, "/api/v1/chats", json!({"direct": "dora"})).await;
    assert_eq!((status, &again["id"]), (StatusCode::OK, &direct["id"]));
    let pair: Vec<&str> = direct["direct"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(pair, ["carl", "dora"]);
    let direct_members = format!("/api/v1/chats/{}/members", direct["id"].as_str().unwrap());
    let (status, _) =
        carl.send(&stack, Method::POST, &direct_members, json!({"username": "eve"})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = carl.delete(&stack, &format!("{direct_members}/carl")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) =
        eve.get(&stack, &format!("/api/v1/chats/{}", direct["id"].as_str().unwrap())).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Concurrent first requests from both sides still make one room.
    let (x, y) = tokio::join!(
        ana.send(&stack, Method::POST, "/api/v1/chats", json!({"direct": "eve"})),
        eve.send(&stack, Method::POST, "/api/v1/chats", json!({"direct": "ana"})),
    );
    assert_eq!(x.1["id"], y.1["id"], "{} {}", x.1, y.1);
    let mut statuses = [x.0, y.0];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::CREATED]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_history_edits_tombstones_reactions_and_mentions() {
    let stack = Stack::start().await;
    let (ana, bob, carl, dora) = tokio::join!(
        sign_in(&stack, "ana"),
        sign_in(&stack, "bob"),
        sign_in(&stack, "carl"),
        sign_in(&stack, "dora"),
    );
    let room = ana.create_room(&stack, "Talk", &[&bob, &carl]).await;
    let messages = format!("/api/v1/chats/{room}/messages");

    // Text is 1 to 4000 characters; bad input changes nothing.
    for (body, fields) in [
        (json!({}), vec!["text"]),
        (json!({"text": ""}), vec!["text"]),
        (json!({"text": "  "}), vec!["text"]),
        (json!({"text": "é".repeat(4001)}), vec!["text"]),
        (json!({"text": 5}), vec!["text"]),
        (json!({"text": "hi", "client_msg_id": ""}), vec!["client_msg_id"]),
        (json!({"text": "hi", "client_msg_id": "x".repeat(65)}), vec!["client_msg_id"]),
        (json!({"text": "hi", "reply_to": 1}), vec!["reply_to"]),
        (json!({"text": "hi", "reply_to": -1}), vec!["reply_to"]),
        (json!({"text": "hi", "sticker": true}), vec!["sticker"]),
    ] {
        let (status, error) = ana.send(&stack, Method::POST, &messages, body.clone()).await;
        assert_eq!(
            (status, field_names(&error)),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                fields.iter().map(|f| f.to_string()).collect::<Vec<_>>()
            ),
            "{body}"
        );
    }
    let (_, empty) = ana.get(&stack, &messages).await;
    assert_eq!((empty["items"].clone(), empty["next"].clone()), (json!([]), Value::Null));

    let long = "é".repeat(4000);
    let first = ana.say(&stack, &room, &long).await;
    assert_eq!(
        (first["seq"].clone(), first["author"]["username"].clone()),
        (json!(1), json!("ana"))
    );
    // Mentions: members only, never the author, each once; e-mail addresses are not mentions.
    let (status, second) = bob
        .send(
            &stack,
            Method::POST,
            &messages,
            json!({"text": "@ana @Carl, @dora @bob ana@example.com @ana", "reply_to": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    assert_eq!(second["mention_names"], json!(["ana", "carl"]), "{second}");
    assert_eq!(second["mentions"], json!([ana.id, carl.id]));
    assert_eq!((second["seq"].clone(), second["reply_to"].clone()), (json!(2), json!(1)));
    for n in 3..=7 {
        carl.say(&stack, &room, &format!("message {n}")).await;
    }

    // History by seq, in pages.
    let page = |query: &str| {
        let path = format!("{messages}?{query}");
        let ana = ana.clone();
        let stack = &stack;
        async move { ana.get(stack, &path).await.1 }
    };
    let seqs = |page: &Value| -> Vec<u64> {
        page["items"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect()
    };
    let newest = page("limit=3").await;
    assert_eq!((seqs(&newest), newest["next"].clone()), (vec![5, 6, 7], json!(5)));
    let older = page("before=5&limit=3").await;
    assert_eq!((seqs(&older), older["next"].clone()), (vec![2, 3, 4], json!(2)));
    let oldest = page("before=2&limit=3").await;
    assert_eq!((seqs(&oldest), oldest["next"].clone()), (vec![1], Value::Null));
    let forward = page("after=0&limit=4").await;
    assert_eq!((seqs(&forward), forward["next"].clone()), (vec![1, 2, 3, 4], json!(4)));
    let rest = page("after=4&limit=4").await;
    assert_eq!((seqs(&rest), rest["next"].clone()), (vec![5, 6, 7], Value::Null));
    assert_eq!(seqs(&page("").await), (1..=7).collect::<Vec<_>>());
    assert_eq!(page("").await["items"][0]["text"], json!(long));
    for bad in ["before=1&after=2", "limit=0", "limit=101", "before=x", "after=-1", "cursor=1"] {
        let (status, body) = ana.get(&stack, &format!("{messages}?{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }

    // Edits: the author only, with edited_at, mentions recomputed.
    let second_id = second["id"].as_str().unwrap();
    let second_path = format!("{messages}/{second_id}");
    let (status, _) =
        ana.send(&stack, Method::PATCH, &second_path, json!({"text": "mine now"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = bob.send(&stack, Method::PATCH, &second_path, json!({"text": ""})).await;
    assert_eq!(
        (status, field_names(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, vec!["text".to_owned()])
    );
    let (status, edited) =
        bob.send(&stack, Method::PATCH, &second_path, json!({"text": "only @carl"})).await;
    assert_eq!(status, StatusCode::OK, "{edited}");
    assert_eq!(
        (edited["text"].clone(), edited["mention_names"].clone(), edited["seq"].clone()),
        (json!("only @carl"), json!(["carl"]), json!(2))
    );
    assert!(edited["edited_at"].is_string() && second["edited_at"].is_null(), "{edited}");
    let (status, bad) =
        bob.send(&stack, Method::PATCH, &format!("{messages}/nope"), json!({"text": "x"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    let (status, _) = bob
        .send(
            &stack,
            Method::PATCH,
            &format!("{messages}/65f0c0ffee0123456789abcd"),
            json!({"text": "x"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Reactions: one per user per emoji, counted on the message.
    let react = format!("{second_path}/reactions/{}", "%F0%9F%91%8D"); // 👍
    let (status, _, reacted) = call(&stack, &ana.token, Method::PUT, &react, None).await;
    assert_eq!(
        (status, reacted["reactions"].clone()),
        (StatusCode::CREATED, json!({"👍": 1})),
        "{reacted}"
    );
    let (status, _, again) = call(&stack, &ana.token, Method::PUT, &react, None).await;
    assert_eq!((status, again["reactions"].clone()), (StatusCode::OK, json!({"👍": 1})));
    let (status, _, two) = call(&stack, &carl.token, Method::PUT, &react, None).await;
    assert_eq!((status, two["reactions"].clone()), (StatusCode::CREATED, json!({"👍": 2})));
    let (status, _, plus) =
        call(&stack, &carl.token, Method::PUT, &format!("{second_path}/reactions/+1"), None).await;
    assert_eq!(
        (status, plus["reactions"].clone()),
        (StatusCode::CREATED, json!({"+1": 1, "👍": 2}))
    );
    let (status, _, fewer) = call(&stack, &ana.token, Method::DELETE, &react, None).await;
    assert_eq!((status, fewer["reactions"].clone()), (StatusCode::OK, json!({"+1": 1, "👍": 1})));
    let (status, _, same) = call(&stack, &ana.token, Method::DELETE, &react, None).await;
    assert_eq!(
        (status, same["reactions"].clone()),
        (StatusCode::OK, json!({"+1": 1, "👍": 1})),
        "taking back twice changes nothing"
    );
    let (status, _, gone) =
        call(&stack, &carl.token, Method::DELETE, &format!("{second_path}/reactions/+1"), None)
            .await;
    assert_eq!(
        (status, gone["reactions"].clone()),
        (StatusCode::OK, json!({"👍": 1})),
        "a count of 0 disappears"
    );
    for bad in ["a.b", "%24set", "a%20b"] {
        let (status, _, body) =
            call(&stack, &ana.token, Method::PUT, &format!("{second_path}/reactions/{bad}"), None)
                .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    let (_, history) = ana.get(&stack, &format!("{messages}?after=1&limit=1")).await;
    assert_eq!(history["items"][0]["reactions"], json!({"👍": 1}));

    // Deletes: author, admin or owner; a tombstone keeps the seq.
    let third = page("after=2&limit=1").await["items"][0].clone();
    let third_path = format!("{messages}/{}", third["id"].as_str().unwrap());
    let (status, _) = bob.delete(&stack, &third_path).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a member cannot delete others' messages");
    let (status, _) = carl.delete(&stack, &third_path).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "the author can");
    let (status, _) = carl.delete(&stack, &third_path).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "deleting again changes nothing");
    let (status, _) = ana.delete(&stack, &second_path).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "the owner can");
    let all = page("").await;
    assert_eq!(seqs(&all), (1..=7).collect::<Vec<_>>(), "no holes");
    let tombstone = &all["items"][1];
    assert_eq!(
        (
            tombstone["deleted"].clone(),
            tombstone["text"].clone(),
            tombstone["mentions"].clone(),
            tombstone["reactions"].clone()
        ),
        (json!(true), json!(""), json!([]), json!({}))
    );
    let (status, _) =
        bob.send(&stack, Method::PATCH, &second_path, json!({"text": "revived"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "a tombstone cannot be edited");
    let (status, _, _) = call(&stack, &carl.token, Method::PUT, &react, None).await;
    assert_eq!(status, StatusCode::CONFLICT, "nor reacted to");

    // An admin deletes others' messages too; a removed member no longer reaches the room.
    let (status, _) = ana
        .send(
            &stack,
            Method::PATCH,
            &format!("/api/v1/chats/{room}/members/bob"),
            json!({"role": "admin"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let fourth = page("after=3&limit=1").await["items"][0].clone();
    let (status, _) =
        bob.delete(&stack, &format!("{messages}/{}", fourth["id"].as_str().unwrap())).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = dora.get(&stack, &messages).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_send_returns_the_first_message() {
    let stack = Stack::start().await;
    let (ana, bob) = tokio::join!(sign_in(&stack, "ana"), sign_in(&stack, "bob"));
    let room = ana.create_room(&stack, "Retry", &[&bob]).await;
    let messages = format!("/api/v1/chats/{room}/messages");
    let body = json!({"text": "only once", "client_msg_id": "c-1"});

    let (status, first) = ana.send(&stack, Method::POST, &messages, body.clone()).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, retry) = ana.send(&stack, Method::POST, &messages, body.clone()).await;
    assert_eq!((status, &retry), (StatusCode::OK, &first), "the same message, not a copy");
    let (status, changed) = ana
        .send(
            &stack,
            Method::POST,
            &messages,
            json!({"text": "different text", "client_msg_id": "c-1"}),
        )
        .await;
    assert_eq!((status, &changed["id"]), (StatusCode::OK, &first["id"]), "the id decides");

    // Several retries racing each other (a client resending on a flaky network) still make one.
    let racing = json!({"text": "raced", "client_msg_id": "c-2"});
    let answers = futures::future::join_all(
        (0..4).map(|_| ana.send(&stack, Method::POST, &messages, racing.clone())),
    )
    .await;
    let ids: std::collections::BTreeSet<String> =
        answers.iter().map(|(_, m)| m["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids.len(), 1, "{answers:?}");
    assert_eq!(answers.iter().filter(|(s, _)| *s == StatusCode::CREATED).count(), 1, "{answers:?}");

    // The id is per author: bob's "c-1" is his own message.
    let (status, bobs) = bob.send(&stack, Method::POST, &messages, body).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_ne!(bobs["id"], first["id"]);
    let (_, history) = ana.get(&stack, &messages).await;
    let seqs: Vec<u64> =
        history["items"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3], "three messages, no gap for the retries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_concurrent_senders_get_consecutive_seqs_seen_once_in_order_by_every_member() {
    const SENDERS: usize = 8;
    const EACH: usize = 5;
    let stack = Stack::start().await;
    let users = futures::future::join_all((0..SENDERS).map(|i| {
        let stack = &stack;
        async move { sign_in(stack, &format!("sender{i}")).await }
    }))
    .await;
    let others: Vec<&User> = users[1..].iter().collect();
    let room = users[0].create_room(&stack, "Busy", &others).await;
    let channel = format!("chat:{room}");
    let mut sockets = Vec::new();
    for user in &users {
        sockets.push(user.subscribe(&stack, &channel, None).await);
    }

    let sends = users.iter().map(|user| {
        let (stack, room) = (&stack, &room);
        async move {
            let mut seqs = Vec::new();
            for n in 0..EACH {
                let text = format!("{} says {n}", user.name);
                seqs.push(user.say(stack, room, &text).await["seq"].as_u64().unwrap());
            }
            seqs
        }
    });
    let per_sender = futures::future::join_all(sends).await;
    for seqs in &per_sender {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "one sender's messages keep their order: {seqs:?}"
        );
    }
    let mut all: Vec<u64> = per_sender.into_iter().flatten().collect();
    all.sort_unstable();
    let total = (SENDERS * EACH) as u64;
    assert_eq!(all, (1..=total).collect::<Vec<_>>(), "consecutive, no gaps, no duplicates");

    // Every member sees every message once, in seq order, over the WebSocket.
    let (history_status, history) =
        users[3].get(&stack, &format!("/api/v1/chats/{room}/messages?limit=100")).await;
    assert_eq!(history_status, StatusCode::OK);
    let stored: Vec<(u64, String)> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["seq"].as_u64().unwrap(), m["id"].as_str().unwrap().to_owned()))
        .collect();
    for (user, ws) in users.iter().zip(sockets.iter_mut()) {
        let got = messages_only(ws, total as usize, Duration::from_secs(30)).await;
        let seen: Vec<(u64, String)> = got
            .iter()
            .map(|(_, e)| {
                (e.data["seq"].as_u64().unwrap(), e.data["id"].as_str().unwrap().to_owned())
            })
            .collect();
        assert_eq!(seen, stored, "{} saw every message once, in seq order", user.name);
        let stream_seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
        assert!(stream_seqs.windows(2).all(|w| w[0] < w[1]));
        no_more_events(ws, Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_and_mentions_agree_on_two_devices() {
    let stack = Stack::start().await;
    let (ana, bob) = tokio::join!(sign_in(&stack, "ana"), sign_in(&stack, "bob"));
    // Ana's second device: another login, another token.
    let tablet =
        User { token: access_token(&stack.http, &stack.api.url(), "ana").await, ..ana.clone() };
    assert_ne!(tablet.token, ana.token);
    let mut tablet_feed = tablet.subscribe(&stack, &format!("user:{}", ana.id), None).await;

    let room = ana.create_room(&stack, "Counts", &[&bob]).await;
    let added = events(&mut tablet_feed, 1, Duration::from_secs(10)).await;
    assert_eq!(types(&added), ["chat.member_added"]);
    assert_eq!(
        (added[0].1.doc_id.as_str(), &added[0].1.data["role"]),
        (room.as_str(), &json!("owner"))
    );

    let room_path = format!("/api/v1/chats/{room}");
    let summary = |user: User| {
        let (stack, path) = (&stack, room_path.clone());
        async move {
            let (_, room) = user.get(stack, &path).await;
            let (_, list) = user.get(stack, "/api/v1/chats").await;
            let listed = list["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["id"] == room["id"])
                .unwrap()
                .clone();
            assert_eq!(
                (&listed["unread"], &listed["mentions"]),
                (&room["unread"], &room["mentions"]),
                "list and room agree"
            );
            (
                room["unread"].as_u64().unwrap(),
                room["mentions"].as_u64().unwrap(),
                room["last_read_seq"].as_u64().unwrap(),
            )
        }
    };

    bob.say(&stack, &room, "one").await;
    bob.say(&stack, &room, "two @ana").await;
    ana.say(&stack, &room, "my own message does not count").await;
    let four = bob.say(&stack, &room, "four @ana").await;
    bob.say(&stack, &room, "five").await;
    for device in [&ana, &tablet] {
        assert_eq!(summary(device.clone()).await, (4, 2, 0), "4 of bob's unread, 2 mention ana");
    }
    assert_eq!(summary(bob.clone()).await, (1, 0, 0), "bob has only ana's message unread");

    // Reading up to seq 3 on the phone: the tablet hears it and sees the same counts.
    let (status, marker) =
        ana.send(&stack, Method::POST, &format!("{room_path}/read"), json!({"seq": 3})).await;
    assert_eq!(status, StatusCode::OK, "{marker}");
    assert_eq!(marker, json!({"room_id": room, "seq": 3, "unread": 2, "mentions": 1}));
    let read = events(&mut tablet_feed, 1, Duration::from_secs(10)).await;
    assert_eq!(types(&read), ["chat.read"]);
    assert_eq!(read[0].1.data, marker);
    assert_eq!(read[0].1.doc_id, room);
    assert_eq!(summary(tablet.clone()).await, (2, 1, 3));

    // Markers only move forward; beyond the newest message is an error.
    let (status, same) =
        tablet.send(&stack, Method::POST, &format!("{room_path}/read"), json!({"seq": 1})).await;
    assert_eq!((status, same), (StatusCode::OK, marker.clone()), "moving back changes nothing");
    for bad in [json!({"seq": 6}), json!({"seq": -1}), json!({"seq": "3"}), json!({})] {
        let (status, body) =
            tablet.send(&stack, Method::POST, &format!("{room_path}/read"), bad.clone()).await;
        assert_eq!(
            (status, field_names(&body)),
            (StatusCode::UNPROCESSABLE_ENTITY, vec!["seq".to_owned()]),
            "{bad}"
        );
    }
    no_more_events(&mut tablet_feed, Duration::from_millis(300)).await;

    // An unread mention that is edited away or deleted stops counting.
    let four_path = format!("{room_path}/messages/{}", four["id"].as_str().unwrap());
    let (status, _) =
        bob.send(&stack, Method::PATCH, &four_path, json!({"text": "four, nobody"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(summary(ana.clone()).await, (2, 0, 3));
    let (status, _) =
        bob.send(&stack, Method::PATCH, &four_path, json!({"text": "four @ana again"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(summary(ana.clone()).await, (2, 1, 3));
    let (status, _) = bob.delete(&stack, &four_path).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        summary(ana.clone()).await,
        (2, 0, 3),
        "a tombstone keeps its place but mentions nobody"
    );
    // A mention that was already read does not come back as unread with an edit.
    let two = bob.get(&stack, &format!("{room_path}/messages?after=1&limit=1")).await.1["items"][0]
        .clone();
    let two_path = format!("{room_path}/messages/{}", two["id"].as_str().unwrap());
    for text in ["two", "two, @ana!"] {
        let (status, _) = bob.send(&stack, Method::PATCH, &two_path, json!({"text": text})).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(summary(ana.clone()).await, (2, 0, 3), "{text}");
    }

    // Reading everything on the tablet: the phone's view agrees, and the event says so.
    let (status, all_read) =
        tablet.send(&stack, Method::POST, &format!("{room_path}/read"), json!({"seq": 5})).await;
    assert_eq!(
        (status, &all_read["unread"], &all_read["mentions"]),
        (StatusCode::OK, &json!(0), &json!(0))
    );
    assert_eq!(summary(ana.clone()).await, (0, 0, 5));
    let read = events(&mut tablet_feed, 1, Duration::from_secs(10)).await;
    assert_eq!((types(&read), read[0].1.data["seq"].clone()), (vec!["chat.read"], json!(5)));

    // A member added later starts with nothing unread.
    let carl = sign_in(&stack, "carl").await;
    let (status, _) = ana
        .send(&stack, Method::POST, &format!("{room_path}/members"), json!({"username": "carl"}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(summary(carl.clone()).await, (0, 0, 5));
    bob.say(&stack, &room, "hi @carl").await;
    assert_eq!(summary(carl).await, (1, 1, 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_is_an_event_on_the_room_and_the_users_channels() {
    let stack = Stack::start().await;
    let (ana, bob, carl) =
        tokio::join!(sign_in(&stack, "ana"), sign_in(&stack, "bob"), sign_in(&stack, "carl"));
    let mut bob_feed = bob.subscribe(&stack, &format!("user:{}", bob.id), None).await;
    let mut carl_feed = carl.subscribe(&stack, &format!("user:{}", carl.id), None).await;

    let room = ana.create_room(&stack, "Events", &[&bob]).await;
    let room_path = format!("/api/v1/chats/{room}");
    let hello = ana.say(&stack, &room, "hello @bob").await;
    let hello_path = format!("{room_path}/messages/{}", hello["id"].as_str().unwrap());
    ana.send(&stack, Method::PATCH, &hello_path, json!({"text": "hello, @bob"})).await;
    call(&stack, &bob.token, Method::PUT, &format!("{hello_path}/reactions/heart"), None).await;
    call(&stack, &bob.token, Method::DELETE, &format!("{hello_path}/reactions/heart"), None).await;
    ana.delete(&stack, &hello_path).await;
    ana.send(&stack, Method::PATCH, &room_path, json!({"topic": "news"})).await;
    ana.send(
        &stack,
        Method::POST,
        &format!("{room_path}/members"),
        json!({"username": "carl", "role": "admin"}),
    )
    .await;
    ana.send(
        &stack,
        Method::PATCH,
        &format!("{room_path}/members/carl"),
        json!({"role": "member"}),
    )
    .await;
    ana.delete(&stack, &format!("{room_path}/members/carl")).await;

    // The whole history of the room, replayed from the start of the stream, in commit order.
    let mut replay = bob.subscribe(&stack, &format!("chat:{room}"), Some(0)).await;
    let got = events(&mut replay, 11, Duration::from_secs(15)).await;
    assert_eq!(
        types(&got),
        [
            "chat.member_added",
            "chat.member_added",
            "chat.message",
            "chat.message_edited",
            "chat.reaction",
            "chat.reaction",
            "chat.message_deleted",
            "chat.room_updated",
            "chat.member_added",
            "chat.member_updated",
            "chat.member_removed",
        ]
    );
    for (_, event) in &got {
        assert_eq!((event.collection.as_str(), event.doc_id.as_str()), ("chat", room.as_str()));
        let actor = if event.event_type == "chat.reaction" { &bob.id } else { &ana.id };
        assert_eq!(event.actor.as_deref(), Some(actor.as_str()), "{}", event.event_type);
    }
    let data = |i: usize| got[i].1.data.clone();
    assert_eq!(
        (data(0)["username"].clone(), data(0)["role"].clone()),
        (json!("ana"), json!("owner"))
    );
    assert_eq!(
        (data(2)["seq"].clone(), data(2)["mention_names"].clone()),
        (json!(1), json!(["bob"]))
    );
    assert_eq!(
        (data(3)["text"].clone(), data(3)["edited_at"].is_string()),
        (json!("hello, @bob"), true)
    );
    assert_eq!(
        (
            data(4)["emoji"].clone(),
            data(4)["added"].clone(),
            data(4)["count"].clone(),
            data(4)["user_id"].clone()
        ),
        (json!("heart"), json!(true), json!(1), json!(bob.id))
    );
    assert_eq!((data(5)["added"].clone(), data(5)["count"].clone()), (json!(false), json!(0)));
    assert_eq!(
        (data(6)["deleted"].clone(), data(6)["text"].clone(), data(6)["seq"].clone()),
        (json!(true), json!(""), json!(1))
    );
    assert_eq!((data(7)["topic"].clone(), data(7)["id"].clone()), (json!("news"), json!(room)));
    assert_eq!(
        (data(8)["username"].clone(), data(8)["role"].clone()),
        (json!("carl"), json!("admin"))
    );
    assert_eq!(data(9)["role"], json!("member"));
    assert_eq!(
        (data(10)["user_id"].clone(), data(10)["username"].clone()),
        (json!(carl.id), json!("carl"))
    );

    // Per-user channels: bob was added; carl was added, then removed.
    let bob_got = events(&mut bob_feed, 1, Duration::from_secs(10)).await;
    assert_eq!(types(&bob_got), ["chat.member_added"]);
    assert_eq!(
        (bob_got[0].1.data["id"].clone(), bob_got[0].1.data["role"].clone()),
        (json!(room), json!("member"))
    );
    let carl_got = events(&mut carl_feed, 2, Duration::from_secs(10)).await;
    assert_eq!(types(&carl_got), ["chat.member_added", "chat.member_removed"]);
    assert_eq!(carl_got[1].1.data, json!({"room_id": room}));
    no_more_events(&mut carl_feed, Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_membership_responder_answers_the_broadcaster() {
    let stack = Stack::start().await;
    let (ana, bob, eve) =
        tokio::join!(sign_in(&stack, "ana"), sign_in(&stack, "bob"), sign_in(&stack, "eve"));
    let room = ana.create_room(&stack, "Members", &[&bob]).await;
    // As a broadcaster asks: from its own inbox.
    let nats = async_nats::ConnectOptions::new()
        .custom_inbox_prefix("_INBOX.courier-broadcaster")
        .connect(stack.nats.url())
        .await
        .unwrap();
    let ask = |body: Vec<u8>| {
        let nats = nats.clone();
        async move {
            let reply = tokio::time::timeout(
                Duration::from_secs(5),
                nats.request(CHAT_MEMBERSHIP_RPC, body.into()),
            )
            .await
            .expect("answered within 5 s")
            .expect("a reply");
            serde_json::from_slice::<MembershipReply>(&reply.payload).unwrap()
        }
    };
    let request = |user: &User| {
        serde_json::to_vec(&MembershipRequest { room_id: room.clone(), user_id: user.id.clone() })
            .unwrap()
    };
    let owner = ask(request(&ana)).await;
    assert_eq!(serde_json::to_value(owner).unwrap(), json!({"member": true, "role": "owner"}));
    let member = ask(request(&bob)).await;
    assert_eq!(serde_json::to_value(member).unwrap(), json!({"member": true, "role": "member"}));
    let stranger = ask(request(&eve)).await;
    assert_eq!(serde_json::to_value(stranger).unwrap(), json!({"member": false, "role": null}));
    for junk in [b"not json".to_vec(), br#"{"room_id":"x.y","user_id":"*"}"#.to_vec()] {
        assert!(!ask(junk).await.member);
    }
    // A removal is visible to the next question at once.
    let (status, _) = ana.delete(&stack, &format!("/api/v1/chats/{room}/members/bob")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(!ask(request(&bob)).await.member);

    // A question whose reply subject is not a broadcaster's inbox is not answered: the api never
    // publishes where the asker says (a relay to subjects the asker may not publish to).
    let mut elsewhere = nats.subscribe("relayed.>").await.unwrap();
    let mut other_inbox = nats.subscribe("_INBOX.courier-api.relayed").await.unwrap();
    for reply in ["relayed.purge", "_INBOX.courier-api.relayed"] {
        nats.publish_with_reply(CHAT_MEMBERSHIP_RPC, reply, request(&ana).into()).await.unwrap();
    }
    nats.flush().await.unwrap();
    // A genuine question asked after them is answered, so they have been handled.
    assert!(ask(request(&ana)).await.member);
    for subscription in [&mut elsewhere, &mut other_inbox] {
        let relayed = tokio::time::timeout(Duration::from_millis(500), subscription.next()).await;
        assert!(relayed.is_err(), "the api answered to a foreign subject: {relayed:?}");
    }
    let metrics = stack.http.get(format!("{}/metrics", stack.api.url())).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    let refused = metrics
        .lines()
        .find(|l| l.starts_with("courier_chat_membership_replies_refused_total"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .expect("the refusal counter");
    assert!(refused >= 2, "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_answer_429_with_retry_after() {
    courier_tests::init_test_logging();
    let (nats, store) = tokio::join!(NatsServer::start(), StoreServer::start());
    let database = format!("courier_{}", uuid::Uuid::now_v7().simple());
    let mut config = Stack::api_config(&store, &database, &nats);
    config.chat_send_limit = 3;
    config.chat_send_window = Duration::from_secs(60);
    config.chat_room_limit = 2;
    config.chat_room_window = Duration::from_secs(60);
    let api = RunningApi::start(config).await;
    let broadcaster = RunningBroadcaster::start(Stack::broadcaster_config(&nats)).await;
    let stack = Stack { nats, store, api, broadcaster, database, http: reqwest::Client::new() };
    let (ana, bob) = tokio::join!(sign_in(&stack, "ana"), sign_in(&stack, "bob"));

    let room = ana.create_room(&stack, "One", &[&bob]).await;
    let messages = format!("/api/v1/chats/{room}/messages");
    let mut first = Value::Null;
    for n in 0..3 {
        let (status, message) = ana
            .send(
                &stack,
                Method::POST,
                &messages,
                json!({"text": format!("m{n}"), "client_msg_id": format!("m{n}")}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
        if n == 0 {
            first = message;
        }
    }
    let (status, headers, body) =
        call(&stack, &ana.token, Method::POST, &messages, Some(json!({"text": "one too many"})))
            .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"),
        "{body}"
    );
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    // A retry of a message that got through is answered, not limited.
    let (status, again) = ana
        .send(&stack, Method::POST, &messages, json!({"text": "m0", "client_msg_id": "m0"}))
        .await;
    assert_eq!((status, &again), (StatusCode::OK, &first));
    // The limit is per user, and the refused send wrote nothing.
    bob.say(&stack, &room, "bob is fine").await;
    let (_, history) = bob.get(&stack, &messages).await;
    assert_eq!(history["items"].as_array().unwrap().len(), 4);

    // Room creation: the direct room counts as a creation; asking for it again does not.
    let (status, _) =
        ana.send(&stack, Method::POST, "/api/v1/chats", json!({"direct": "bob"})).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, headers, body) =
        call(&stack, &ana.token, Method::POST, "/api/v1/chats", Some(json!({"name": "Three"})))
            .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(headers.contains_key("retry-after"));
    let (status, _) =
        ana.send(&stack, Method::POST, "/api/v1/chats", json!({"direct": "bob"})).await;
    assert_eq!(status, StatusCode::OK, "the existing direct room is no new room");
    let (_, rooms) = ana.get(&stack, "/api/v1/chats").await;
    assert_eq!(rooms["items"].as_array().unwrap().len(), 2);

    let metrics = stack
        .http
        .get(format!("{}/metrics", stack.api.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // The sample of `name` whose labels include `label`.
    let value = |name: &str, label: &str| -> Option<f64> {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    };
    assert_eq!(value("courier_chat_rate_limited_total", "action=\"send\""), Some(1.0), "{metrics}");
    assert_eq!(value("courier_chat_rate_limited_total", "action=\"create_room\""), Some(1.0));
    assert_eq!(value("courier_chat_messages_total", "component=\"api\""), Some(4.0));
    assert_eq!(value("courier_chat_rooms_created_total", "component=\"api\""), Some(2.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn my_rooms_are_listed_by_newest_activity_in_pages() {
    let stack = Stack::start().await;
    let (ana, bob) = tokio::join!(sign_in(&stack, "ana"), sign_in(&stack, "bob"));
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(ana.create_room(&stack, &format!("room {n}"), &[&bob]).await);
    }
    // Activity reorders: a message moves room 1 to the top.
    let said = bob.say(&stack, &ids[1], "bump").await;
    let mut seen: Vec<Value> = Vec::new();
    let mut cursor: Option<String> = None;
    for page_number in 0.. {
        assert!(page_number < 5, "5 rooms in pages of 2 take 3 pages: {seen:?}");
        let path = match &cursor {
            Some(c) => format!("/api/v1/chats?limit=2&cursor={c}"),
            None => "/api/v1/chats?limit=2".to_owned(),
        };
        let (status, page) = ana.get(&stack, &path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().cloned());
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let order: Vec<&str> = seen.iter().map(|r| r["id"].as_str().unwrap()).collect();
    let expected: Vec<&str> = [1, 4, 3, 2, 0].iter().map(|&i| ids[i].as_str()).collect();
    assert_eq!(order, expected);
    assert_eq!((&seen[0]["last_seq"], &seen[0]["unread"]), (&json!(1), &json!(1)));
    assert_eq!(seen[0]["last_activity_at"], said["created_at"]);
    let by_id: HashMap<&str, &Value> =
        seen.iter().map(|r| (r["id"].as_str().unwrap(), r)).collect();
    assert_eq!(by_id[ids[0].as_str()]["unread"], json!(0));
    for bad in ["cursor=garbage", "limit=0", "limit=x", "sort=name"] {
        let (status, _) = ana.get(&stack, &format!("/api/v1/chats?{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    }
}
