//! Private data and live queries end to end: the shipped `notes` collection
//! (`read: [owner, field:shared_with]`) over REST and WebSocket for three users, sharing and
//! unsharing while subscribed, `since` replays under the rule; filtered subscriptions checked
//! against REST lists with the same filter after every event (random changes); and the
//! documented consistent start (subscribe, list, reconcile by version) while writes run.

use std::{collections::BTreeMap, time::Duration};

use courier_core::{Event, protocol::ServerFrame, protocol::ViewChange};
use courier_tests::{ClientError, Stack, WsClient};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

/// One event frame as a filtered subscriber reads it.
#[derive(Debug, Clone)]
struct Seen {
    seq: u64,
    view: Option<ViewChange>,
    event: Event,
}

/// The next event frame (other frames are skipped); panics after [`WAIT`].
async fn next_event(ws: &mut WsClient) -> Seen {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match ws.next_frame_within(left).await {
            Ok(ServerFrame::Event { seq, view, event, .. }) => return Seen { seq, view, event },
            Ok(_) => continue,
            Err(ClientError::Timeout) => panic!("no event within {WAIT:?}"),
            Err(err) => panic!("subscriber failed: {err}"),
        }
    }
}

struct User {
    id: String,
    token: String,
}

async fn user(stack: &Stack, name: &str) -> User {
    let token = stack.token(name).await;
    User { id: stack.user_id(&token).await, token }
}

async fn call(
    stack: &Stack,
    method: Method,
    path: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = stack.http.request(method, format!("{}{path}", stack.api.url()));
    if let Some(body) = body {
        request = request.json(&body);
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("the api answers");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn create_note(stack: &Stack, owner: &User, body: Value) -> String {
    let (status, note) =
        call(stack, Method::POST, "/api/v1/notes", Some(body), Some(&owner.token)).await;
    assert_eq!(status, StatusCode::CREATED, "{note}");
    note["id"].as_str().unwrap().to_owned()
}

async fn patch_note(stack: &Stack, owner: &User, id: &str, patch: Value) {
    let path = format!("/api/v1/notes/{id}");
    let (status, body) = call(stack, Method::PATCH, &path, Some(patch), Some(&owner.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Every page of `GET /api/v1/notes?<query>` as `user`, by id.
async fn list_all(stack: &Stack, user: &User, query: &str) -> BTreeMap<String, (Value, i64)> {
    let mut documents = BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/api/v1/notes?limit=7&{query}");
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let (status, page) = call(stack, Method::GET, &path, None, Some(&user.token)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for item in page["items"].as_array().unwrap() {
            let id = item["id"].as_str().unwrap().to_owned();
            let version = page["versions"][&id].as_i64().expect("every item has its version");
            documents.insert(id, (item.clone(), version));
        }
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return documents,
        }
    }
}

async fn subscribe(
    ws: &mut WsClient,
    user: &User,
    since: Option<u64>,
    filter: Option<Value>,
) -> u64 {
    let (seq, _) = ws
        .subscribe_filtered("notes", since, Some(user.token.clone()), filter)
        .await
        .expect("subscribed");
    seq
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_are_private_to_their_owner_and_the_users_they_are_shared_with() {
    let stack = Stack::start().await;
    let (ana, bob, cid) = tokio::join!(
        user(&stack, "ana-notes"),
        user(&stack, "bob-notes"),
        user(&stack, "cid-notes")
    );
    let mut bob_ws = stack.ws().await;
    let start = subscribe(&mut bob_ws, &bob, None, None).await;
    let mut cid_ws = stack.ws().await;
    subscribe(&mut cid_ws, &cid, None, None).await;

    let private = create_note(&stack, &ana, json!({"title": "mine"})).await;
    let shared = create_note(&stack, &ana, json!({"title": "ours", "shared_with": [bob.id]})).await;

    // REST: each reader lists exactly their notes, paging stays exact, others' are 404.
    let ids = |listed: BTreeMap<String, (Value, i64)>| listed.into_keys().collect::<Vec<_>>();
    let mut both = vec![private.clone(), shared.clone()];
    both.sort();
    assert_eq!(ids(list_all(&stack, &ana, "").await), both);
    assert_eq!(ids(list_all(&stack, &bob, "").await), std::slice::from_ref(&shared));
    assert!(list_all(&stack, &cid, "").await.is_empty());
    let (status, page) =
        call(&stack, Method::GET, "/api/v1/notes?limit=1", None, Some(&bob.token)).await;
    assert_eq!(
        (status, page["items"].as_array().unwrap().len(), &page["next"]),
        (StatusCode::OK, 1, &Value::Null)
    );
    for (who, id) in [(&bob, &private), (&cid, &shared), (&cid, &private)] {
        let path = format!("/api/v1/notes/{id}");
        let (status, body) = call(&stack, Method::GET, &path, None, Some(&who.token)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        let (status, _) =
            call(&stack, Method::PATCH, &path, Some(json!({"title": "x"})), Some(&who.token)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "a change of an unreadable note is a 404 too");
        let (status, _) = call(&stack, Method::DELETE, &path, None, Some(&who.token)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    let path = format!("/api/v1/notes/{shared}");
    let (status, body) = call(&stack, Method::GET, &path, None, Some(&bob.token)).await;
    assert_eq!((status, body["title"].as_str()), (StatusCode::OK, Some("ours")));
    let (status, _) =
        call(&stack, Method::PATCH, &path, Some(json!({"title": "x"})), Some(&bob.token)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "bob reads it, but only ana writes it");
    let (status, _) = call(&stack, Method::GET, "/api/v1/notes", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // WebSocket: bob sees the shared note's creation, not the private one's.
    let created = next_event(&mut bob_ws).await;
    assert_eq!(
        (created.event.doc_id.as_str(), created.view),
        (shared.as_str(), Some(ViewChange::Enter))
    );
    patch_note(&stack, &ana, &shared, json!({"body": "edited"})).await;
    let stay = next_event(&mut bob_ws).await;
    assert_eq!(
        (stay.view, stay.event.data["body"].as_str()),
        (Some(ViewChange::Stay), Some("edited"))
    );
    assert!(stay.event.previous.is_none(), "the previous state never reaches a client");
    patch_note(&stack, &ana, &shared, json!({"shared_with": []})).await;
    let leave = next_event(&mut bob_ws).await;
    assert_eq!(
        (leave.event.doc_id.as_str(), leave.view),
        (shared.as_str(), Some(ViewChange::Leave))
    );
    assert_eq!(
        (leave.event.data.clone(), leave.event.actor.clone()),
        (Value::Null, None),
        "the id and no data"
    );
    // While unshared, nothing of it reaches bob: the next event he gets is the reshare.
    patch_note(&stack, &ana, &shared, json!({"body": "secret draft"})).await;
    patch_note(&stack, &ana, &private, json!({"body": "also secret"})).await;
    patch_note(&stack, &ana, &shared, json!({"shared_with": [bob.id, cid.id]})).await;
    let enter = next_event(&mut bob_ws).await;
    assert_eq!(
        (enter.view, enter.event.data["body"].as_str()),
        (Some(ViewChange::Enter), Some("secret draft"))
    );
    // cid saw nothing until the note was shared with him, too.
    let cid_first = next_event(&mut cid_ws).await;
    assert_eq!((cid_first.seq, cid_first.view), (enter.seq, Some(ViewChange::Enter)));
    let path = format!("/api/v1/notes/{shared}");
    let (status, _) = call(&stack, Method::DELETE, &path, None, Some(&ana.token)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let deleted = next_event(&mut bob_ws).await;
    assert_eq!(
        (deleted.event.event_type.as_str(), deleted.view),
        ("notes.deleted", Some(ViewChange::Leave))
    );
    assert_eq!(
        deleted.event.data["body"], "secret draft",
        "a delete keeps the last state it could read"
    );

    // A `since` replay applies the same rule: exactly what bob received live.
    let live = [created.seq, stay.seq, leave.seq, enter.seq, deleted.seq];
    let mut replay = stack.ws().await;
    subscribe(&mut replay, &bob, Some(start), None).await;
    let mut replayed = Vec::new();
    for _ in live {
        let seen = next_event(&mut replay).await;
        replayed.push((seen.seq, seen.view, seen.event.data.is_null()));
    }
    let expected = [
        (created.seq, Some(ViewChange::Enter), false),
        (stay.seq, Some(ViewChange::Stay), false),
        (leave.seq, Some(ViewChange::Leave), true),
        (enter.seq, Some(ViewChange::Enter), false),
        (deleted.seq, Some(ViewChange::Leave), false),
    ];
    assert_eq!(replayed, expected);

    // A document channel of an unreadable note answers as one that does not exist (admitted,
    // silent): its first event is the one that shares it.
    let mut doc_ws = stack.ws().await;
    let (_, _) = doc_ws
        .subscribe(&format!("notes:{private}"), None, Some(bob.token.clone()))
        .await
        .expect("the same answer as a note that does not exist");
    patch_note(&stack, &ana, &private, json!({"body": "still private"})).await;
    patch_note(&stack, &ana, &private, json!({"shared_with": [bob.id]})).await;
    let first = next_event(&mut doc_ws).await;
    assert_eq!(
        (first.view, first.event.data["body"].as_str()),
        (Some(ViewChange::Enter), Some("still private"))
    );

    // Anonymous readers cannot subscribe; the admin reads everything, unmarked.
    let mut anonymous = stack.ws().await;
    let refused = anonymous.subscribe("notes", None, None).await.unwrap_err();
    assert!(
        matches!(refused, ClientError::Refused { ref code, .. } if code == "unauthorized"),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_filter_is_refused_naming_the_field_and_the_connection_stays_usable() {
    let stack = Stack::start().await;
    let bob = user(&stack, "bob-filters").await;
    let mut ws = stack.ws().await;
    for (filter, field) in [
        (json!({"colour": "red"}), "colour"),
        (json!({"title": {"near": "x"}}), "title"),
        (json!({"pinned": {"gt": true}}), "pinned"),
        (json!({"pinned": "yes"}), "pinned"),
        (json!("pinned"), "filter"),
    ] {
        let frame = subscribe_frame("notes", &bob.token, filter.clone());
        ws.send_raw(tokio_tungstenite::tungstenite::Message::Text(frame.into())).await.unwrap();
        match ws.next_frame_within(WAIT).await.unwrap() {
            ServerFrame::Error { code, field: Some(named), channel, .. } => {
                assert_eq!(
                    (code.as_str(), named.as_str(), channel.as_deref()),
                    ("bad_filter", field, Some("notes")),
                    "{filter}"
                );
            }
            other => panic!("{filter}: {other:?}"),
        }
    }
    let (_, status) =
        call(&stack, Method::GET, "/api/v1/notes?title[near]=x", None, Some(&bob.token)).await;
    assert_eq!(
        (&status["error"]["code"], &status["error"]["fields"][0]["field"]),
        (&json!("invalid_filter"), &json!("title")),
        "the REST list refuses it the same way, naming the field: {status}"
    );
    // Nothing else changed: the connection subscribes and receives.
    subscribe(&mut ws, &bob, None, Some(json!({"pinned": true}))).await;
    let id = create_note(&stack, &bob, json!({"title": "t", "pinned": true})).await;
    assert_eq!(next_event(&mut ws).await.event.doc_id, id);
}

/// A subscribe frame written by hand (a filter that is not an object must reach the server).
fn subscribe_frame(channel: &str, token: &str, filter: Value) -> String {
    json!({"type": "subscribe", "channel": channel, "token": token, "filter": filter}).to_string()
}

/// A small deterministic generator (xorshift64*), seeded per run and printed on failure.
struct Random(u64);

impl Random {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// What a reader holds after applying events: id → (document, version).
type Held = BTreeMap<String, (Value, i64)>;

fn apply(held: &mut Held, seen: &Seen) {
    let version = seen.event.version.expect("document events carry their version");
    match seen.view {
        Some(ViewChange::Enter | ViewChange::Stay) => {
            let newer = held.get(&seen.event.doc_id).is_none_or(|(_, held)| *held < version);
            if newer {
                held.insert(seen.event.doc_id.clone(), (seen.event.data.clone(), version));
            }
        }
        Some(ViewChange::Leave) => {
            if held.get(&seen.event.doc_id).is_some_and(|(_, held)| *held < version) {
                held.remove(&seen.event.doc_id);
            }
        }
        None => panic!("a filtered subscription's events are marked"),
    }
}

fn documents(held: &Held) -> BTreeMap<String, Value> {
    held.iter().map(|(id, (doc, _))| (id.clone(), doc.clone())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_subscription_keeps_a_reader_equal_to_the_rest_list_after_every_event() {
    let stack = Stack::start().await;
    let (ana, bob) = tokio::join!(user(&stack, "ana-prop"), user(&stack, "bob-prop"));
    let seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
            as u64
            | 1;
    let mut random = Random(seed);
    let filter = json!({"pinned": true, "title": {"gte": "m"}});
    let query = "pinned=true&title[gte]=m";
    let mut ws = stack.ws().await;
    subscribe(&mut ws, &bob, None, Some(filter)).await;
    // The test's own model of every note: what bob should see is shared ∧ pinned ∧ title ≥ m.
    let mut notes: BTreeMap<String, Value> = BTreeMap::new();
    let visible = |note: &Value| {
        note["shared_with"].as_array().is_some_and(|s| s.contains(&json!(bob.id)))
            && note["pinned"] == true
            && note["title"].as_str().is_some_and(|t| t >= "m")
    };
    let mut held = Held::new();
    let titles = ["apple", "mango", "zebra", "kiwi", "melon"];
    for step in 0..60 {
        let choice = if notes.is_empty() { 0 } else { random.below(10) };
        let ids: Vec<String> = notes.keys().cloned().collect();
        let (before, after) = if choice < 3 {
            let body = json!({
                "title": titles[random.below(5) as usize],
                "pinned": random.below(2) == 1,
                "shared_with": if random.below(3) > 0 { json!([bob.id]) } else { json!([]) },
            });
            let id = create_note(&stack, &ana, body.clone()).await;
            notes.insert(id.clone(), body.clone());
            (None, Some(body))
        } else if choice < 9 {
            let id = &ids[random.below(ids.len() as u64) as usize];
            let patch = match random.below(3) {
                0 => json!({"pinned": random.below(2) == 1}),
                1 => json!({"title": titles[random.below(5) as usize]}),
                _ => {
                    json!({"shared_with": if random.below(2) == 1 { json!([bob.id]) } else { json!([]) }})
                }
            };
            patch_note(&stack, &ana, id, patch.clone()).await;
            let before = notes[id].clone();
            let mut after = before.clone();
            for (k, v) in patch.as_object().unwrap() {
                after[k] = v.clone();
            }
            notes.insert(id.clone(), after.clone());
            (Some(before), Some(after))
        } else {
            let id = ids[random.below(ids.len() as u64) as usize].clone();
            let (status, _) = call(
                &stack,
                Method::DELETE,
                &format!("/api/v1/notes/{id}"),
                None,
                Some(&ana.token),
            )
            .await;
            assert_eq!(status, StatusCode::NO_CONTENT);
            (notes.remove(&id), None)
        };
        let delivered = before.as_ref().is_some_and(visible) || after.as_ref().is_some_and(visible);
        if delivered {
            // An event the filter should not have let through would arrive here instead.
            let seen = next_event(&mut ws).await;
            apply(&mut held, &seen);
        }
        let listed: BTreeMap<String, Value> = list_all(&stack, &bob, query)
            .await
            .into_iter()
            .map(|(id, (doc, _))| (id, doc))
            .collect();
        assert_eq!(documents(&held), listed, "step {step} (seed {seed})");
    }
    // Nothing unexpected is still on its way: the next event is this marker.
    let marker =
        create_note(&stack, &ana, json!({"title": "zz", "pinned": true, "shared_with": [bob.id]}))
            .await;
    assert_eq!(next_event(&mut ws).await.event.doc_id, marker, "seed {seed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_query_starts_consistently_while_writes_run() {
    let stack = Stack::start().await;
    let (ana, bob) = tokio::join!(user(&stack, "ana-start"), user(&stack, "bob-start"));
    let mut seeded = Vec::new();
    for n in 0..10 {
        seeded.push(
            create_note(
                &stack,
                &ana,
                json!({"title": format!("n{n}"), "pinned": n % 2 == 0, "shared_with": [bob.id]}),
            )
            .await,
        );
    }
    // Writes keep coming while the reader starts: at least 5 before it subscribes and 5 after
    // it listed (the writer reports its count; no timing is assumed).
    let (count_tx, mut count) = tokio::sync::watch::channel(0usize);
    let stop = tokio_util::sync::CancellationToken::new();
    let writer = {
        let (stop, api, http, token, ids) =
            (stop.clone(), stack.api.url(), stack.http.clone(), ana.token.clone(), seeded.clone());
        tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.is_cancelled() {
                let id = &ids[n % ids.len()];
                let body = json!({"pinned": !n.is_multiple_of(3), "body": format!("edit {n}")});
                let url = format!("{api}/api/v1/notes/{id}");
                let response =
                    http.patch(url).bearer_auth(&token).json(&body).send().await.unwrap();
                assert_eq!(response.status(), StatusCode::OK);
                n += 1;
                count_tx.send_replace(n);
            }
            n
        })
    };
    count.wait_for(|n| *n >= 5).await.unwrap();
    // The documented start: subscribe, then list, then apply every event newer than the
    // version listed (docs/protocol.md, "Live queries").
    let mut ws = stack.ws().await;
    subscribe(&mut ws, &bob, None, Some(json!({"pinned": true}))).await;
    let mut held: Held = list_all(&stack, &bob, "pinned=true").await;
    let listed_at = *count.borrow();
    count.wait_for(|n| *n >= listed_at + 5).await.unwrap();
    stop.cancel();
    let writes = writer.await.unwrap();
    // The last write's event ends what the reader must apply: a marker after it.
    let marker = create_note(
        &stack,
        &ana,
        json!({"title": "marker", "pinned": true, "shared_with": [bob.id]}),
    )
    .await;
    loop {
        let seen = next_event(&mut ws).await;
        apply(&mut held, &seen);
        if seen.event.doc_id == marker {
            break;
        }
    }
    let listed = list_all(&stack, &bob, "pinned=true").await;
    assert_eq!(held, listed, "after {writes} concurrent writes");
}
