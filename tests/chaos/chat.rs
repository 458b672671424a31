//! Chaos 7 (chat): broadcaster processes killed with SIGKILL while a room is live. The killed
//! broadcaster's presence entries and typing indicators end on the others by themselves (TTL,
//! no goodbye), and a member's client resumes on another broadcaster with `since`: every
//! message once, in order. The api's side is played by `ChatBackend`.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use courier_core::{ClientFrame, ServerFrame};
use courier_tests::{
    NatsServer, TEST_JWT_SECRET, WsClient,
    chaos::{broadcaster_process, share_machine},
    chat::{ChatBackend, ChatUserToken, chat_user, next_matching, object_id, wait_for_presence},
    init_test_logging,
    services::ServiceProcess,
    workspace_root,
};

use crate::support::Tail;

const MESSAGES: usize = 400;

async fn chat_broadcaster(nats_url: &str) -> ServiceProcess {
    let collections = workspace_root().join("collections.yaml").display().to_string();
    broadcaster_process(
        nats_url,
        &[
            ("COURIER_JWT_SECRET", TEST_JWT_SECRET.to_owned()),
            ("COURIER_COLLECTIONS_FILE", collections),
        ],
    )
    .await
}

async fn member_tab(process: &ServiceProcess, room: &str, user: &ChatUserToken) -> WsClient {
    let mut ws = WsClient::connect(&process.ws_url()).await.expect("websocket connects");
    ws.subscribe(&format!("chat:{room}"), None, Some(user.token.clone()))
        .await
        .unwrap_or_else(|err| panic!("{} joins: {err}", user.username));
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_broadcasters_presence_and_typing_expire_on_the_others() {
    let _machine = share_machine().await;
    init_test_logging();
    let nats = NatsServer::start().await;
    let backend = ChatBackend::start(&nats.url()).await;
    let nats_url = nats.url();
    let (mut doomed, survivor) =
        tokio::join!(chat_broadcaster(&nats_url), chat_broadcaster(&nats_url));
    let (ana, bob) = (chat_user("ana"), chat_user("bob"));
    let room = object_id();
    backend.add_member(&room, &ana);
    backend.add_member(&room, &bob);

    let mut bob_ws = member_tab(&survivor, &room, &bob).await;
    let mut ana_tab = member_tab(&doomed, &room, &ana).await;
    let _ana_second_tab = member_tab(&doomed, &room, &ana).await;
    wait_for_presence(&mut bob_ws, &room, &[&ana, &bob]).await;
    ana_tab.send(&ClientFrame::Typing { channel: format!("chat:{room}") }).await.unwrap();
    next_matching(
        &mut bob_ws,
        Duration::from_secs(3),
        "ana typing",
        |f| matches!(f, ServerFrame::Typing { user, active: true, .. } if user.id == ana.id),
    )
    .await;

    doomed.kill9().await;
    let killed_at = Instant::now();
    next_matching(
        &mut bob_ws,
        Duration::from_secs(8),
        "the indicator ending",
        |f| matches!(f, ServerFrame::Typing { user, active: false, .. } if user.id == ana.id),
    )
    .await;
    let typing_ended = killed_at.elapsed();
    next_matching(&mut bob_ws, Duration::from_secs(30), "ana's presence expiring", |f| {
        matches!(f, ServerFrame::PresenceDiff { left, .. } if left.iter().any(|u| u.id == ana.id))
    })
    .await;
    let presence_ended = killed_at.elapsed();
    eprintln!(
        "chaos 7 (chat, kill -9): the dead broadcaster's typing indicator ended after {typing_ended:?}, \
         its user's presence after {presence_ended:?} (TTL 15 s, bound 30 s)"
    );
    assert!(presence_ended <= Duration::from_secs(30));
    wait_for_presence(&mut bob_ws, &room, &[&bob]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_resumes_on_another_broadcaster_after_a_kill_losing_and_repeating_nothing() {
    let _machine = share_machine().await;
    init_test_logging();
    let nats = NatsServer::start().await;
    let backend = Arc::new(ChatBackend::start(&nats.url()).await);
    let nats_url = nats.url();
    let (mut first, second) =
        tokio::join!(chat_broadcaster(&nats_url), chat_broadcaster(&nats_url));
    let (ana, bob) = (chat_user("ana"), chat_user("bob"));
    let room = object_id();
    backend.add_member(&room, &ana);
    backend.add_member(&room, &bob);

    let tail = Tail::start_with_token(
        vec![first.ws_url(), second.ws_url()],
        &format!("chat:{room}"),
        Some(ana.token.clone()),
    )
    .await;
    let writer = tokio::spawn({
        let (backend, room, bob) = (backend.clone(), room.clone(), bob.clone());
        async move {
            let mut sent = Vec::with_capacity(MESSAGES);
            for n in 0..MESSAGES {
                let (_, id, _) = backend.send_message(&room, &bob, &format!("message {n}")).await;
                sent.push(id);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            sent
        }
    });
    tail.wait_for(MESSAGES / 4, Duration::from_secs(60)).await;
    first.kill9().await;
    let killed_after = tail.received();
    let sent = writer.await.expect("writer");
    let tailed = tail.finish(MESSAGES, Duration::from_secs(60)).await;

    let got: Vec<String> = tailed
        .events
        .iter()
        .map(|r| r.event.data["id"].as_str().expect("a message id").to_owned())
        .collect();
    let mut unique = got.clone();
    unique.sort();
    unique.dedup();
    let missing = sent.iter().filter(|id| !got.contains(id)).count();
    eprintln!(
        "chaos 7 (chat, kill -9 mid-conversation): {MESSAGES} messages, killed after {killed_after}; \
         received {}, {missing} missing, {} repeated, duplicate frames dropped {}, now on {}",
        got.len(),
        got.len() - unique.len(),
        tailed.duplicates_dropped,
        tailed.last_url.as_deref().unwrap_or("nothing")
    );
    assert!(killed_after < MESSAGES, "the kill happened mid-conversation");
    assert_eq!(got, sent, "every message once, in the order sent");
    assert!(tailed.events.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(tailed.duplicates_dropped, 0, "the resume starts after the last seq");
    assert_eq!(tailed.last_url.as_deref(), Some(second.ws_url().as_str()));
    let resumed = tailed
        .notices
        .iter()
        .filter(|n| n.contains("Subscribed") && n.contains("recovered: Some(true)"))
        .count();
    assert_eq!(resumed, 1, "one resume with since, fully recovered: {:#?}", tailed.notices);
}
