//! Chat, live (docs/chat.md), against real nats-server and broadcasters: who may
//! subscribe to `chat:` and `user:` channels, a removed member cut off on every broadcaster,
//! typing across broadcasters (expiry, send, disconnect, rate limit), presence (users not
//! connections, no flap on a quick reconnect, graceful shutdown) and the top-rooms report.
//! The api's side is played by `ChatBackend` (membership answers, events into JetStream).

use std::time::{Duration, Instant};

use courier_core::{ClientFrame, ServerFrame};
use courier_tests::{
    NatsServer, RunningBroadcaster, Stack, WsClient,
    chaos::Metrics,
    chat::{
        ChatBackend, ChatUserToken, assert_none_matching, chat_user, next_matching, object_id,
        wait_for_presence,
    },
    init_test_logging,
};

/// Everything a chat test needs: NATS, the api stand-in and two broadcasters.
struct ChatDeployment {
    nats: NatsServer,
    backend: ChatBackend,
    b1: RunningBroadcaster,
    b2: RunningBroadcaster,
}

impl ChatDeployment {
    async fn start() -> Self {
        init_test_logging();
        let nats = NatsServer::start().await;
        let backend = ChatBackend::start(&nats.url()).await;
        let (b1, b2) = tokio::join!(
            RunningBroadcaster::start(Stack::broadcaster_config(&nats)),
            RunningBroadcaster::start(Stack::broadcaster_config(&nats))
        );
        ChatDeployment { nats, backend, b1, b2 }
    }
}

async fn connect(broadcaster: &RunningBroadcaster) -> WsClient {
    WsClient::connect(&broadcaster.ws_url()).await.expect("websocket connects")
}

/// A connection of `user` subscribed to `room` on `broadcaster`.
async fn member_tab(
    broadcaster: &RunningBroadcaster,
    room: &str,
    user: &ChatUserToken,
) -> WsClient {
    let mut ws = connect(broadcaster).await;
    ws.subscribe(&format!("chat:{room}"), None, Some(user.token.clone()))
        .await
        .unwrap_or_else(|err| panic!("{} joins {room}: {err}", user.username));
    ws
}

fn refusal(outcome: Result<(u64, Option<bool>), courier_tests::ClientError>) -> String {
    match outcome {
        Err(courier_tests::ClientError::Refused { code, .. }) => code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn is_typing(user: &ChatUserToken, active: bool) -> impl FnMut(&ServerFrame) -> bool + '_ {
    move |frame| matches!(frame, ServerFrame::Typing { user: u, active: a, .. } if u.id == user.id && *a == active)
}

fn is_left(user: &ChatUserToken) -> impl FnMut(&ServerFrame) -> bool + '_ {
    move |frame| matches!(frame, ServerFrame::PresenceDiff { left, .. } if left.iter().any(|u| u.id == user.id))
}

fn is_joined(user: &ChatUserToken) -> impl FnMut(&ServerFrame) -> bool + '_ {
    move |frame| matches!(frame, ServerFrame::PresenceDiff { joined, .. } if joined.iter().any(|u| u.id == user.id))
}

fn metrics_url(broadcaster: &RunningBroadcaster) -> String {
    format!("http://{}/metrics", broadcaster.addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_and_user_channels_admit_only_members_and_their_owner_and_fail_closed() {
    let d = ChatDeployment::start().await;
    let (ana, bob, carla) = (chat_user("ana"), chat_user("bob"), chat_user("carla"));
    let room = object_id();
    let channel = format!("chat:{room}");
    d.backend.add_member(&room, &ana);
    d.backend.add_member(&room, &carla);
    let mut ws = connect(&d.b1).await;

    for bare in ["chat", "user"] {
        let code = refusal(ws.subscribe(bare, None, Some(ana.token.clone())).await);
        assert_eq!(code, "bad_channel", "bare '{bare}' would be everyone's events");
    }
    assert_eq!(refusal(ws.subscribe(&channel, None, None).await), "unauthorized");
    assert_eq!(refusal(ws.subscribe(&channel, None, Some("forged".into())).await), "unauthorized");
    assert_eq!(refusal(ws.subscribe(&channel, None, Some(bob.token.clone())).await), "forbidden");
    let checks_before = d.backend.requests();
    ws.subscribe(&channel, None, Some(ana.token.clone())).await.expect("a member joins");
    let mut second_tab = member_tab(&d.b1, &room, &ana).await;
    assert_eq!(
        d.backend.requests(),
        checks_before + 1,
        "the second tab was admitted from the membership cache"
    );

    // user:<id> is its owner's alone, and carries events published for that user.
    let mine = format!("user:{}", ana.id);
    assert_eq!(refusal(ws.subscribe(&mine, None, None).await), "unauthorized");
    let theirs = format!("user:{}", bob.id);
    assert_eq!(refusal(ws.subscribe(&theirs, None, Some(ana.token.clone())).await), "forbidden");
    ws.subscribe(&mine, None, Some(ana.token.clone())).await.expect("my own channel");

    // The api does not answer: refused with `unavailable` once the 2 s are up, not before.
    d.backend.set_silent(true);
    let mut third = connect(&d.b2).await;
    let started = Instant::now();
    let code = refusal(third.subscribe(&channel, None, Some(carla.token.clone())).await);
    let waited = started.elapsed();
    assert_eq!(code, "unavailable");
    assert!(
        waited >= Duration::from_millis(1_900) && waited < Duration::from_secs(4),
        "fail closed after the 2 s timeout: {waited:?}"
    );
    d.backend.set_silent(false);
    third.subscribe(&channel, None, Some(carla.token.clone())).await.expect("retry succeeds");

    let m1 = Metrics::scrape(&metrics_url(&d.b1)).await;
    let m2 = Metrics::scrape(&metrics_url(&d.b2)).await;
    let checks = |m: &Metrics, outcome: &str| {
        m.sum("courier_chat_membership_checks_total", &format!("outcome=\"{outcome}\""))
    };
    assert_eq!((checks(&m1, "member"), checks(&m1, "not_member")), (1.0, 1.0));
    assert_eq!((checks(&m2, "unavailable"), checks(&m2, "member")), (1.0, 1.0));
    assert_eq!(m1.sum("courier_chat_membership_cache_hits_total", ""), 1.0);
    assert_eq!(m1.sum("courier_chat_subscriptions", ""), 2.0);
    assert_eq!(m1.sum("courier_ws_subscriptions", "kind=\"user\""), 1.0);
    second_tab.send(&ClientFrame::Unsubscribe { channel: channel.clone() }).await.unwrap();
    next_matching(&mut second_tab, Duration::from_secs(5), "unsubscribed", |f| {
        matches!(f, ServerFrame::Unsubscribed { reason: None, .. })
    })
    .await;
    courier_tests::wait_until("the chat gauge drops", Duration::from_secs(5), || async {
        Metrics::scrape(&metrics_url(&d.b1)).await.sum("courier_chat_subscriptions", "") == 1.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_is_cut_off_within_2_s_on_each_of_two_broadcasters() {
    let d = ChatDeployment::start().await;
    let (ana, bob) = (chat_user("ana"), chat_user("bob"));
    let room = object_id();
    let channel = format!("chat:{room}");
    d.backend.add_member(&room, &ana);
    d.backend.add_member(&room, &bob);
    let mut ana_tabs =
        vec![member_tab(&d.b1, &room, &ana).await, member_tab(&d.b2, &room, &ana).await];
    let mut bob_tabs =
        vec![member_tab(&d.b1, &room, &bob).await, member_tab(&d.b2, &room, &bob).await];

    let (before, _, _) = d.backend.send_message(&room, &bob, "hello ana").await;
    for ws in ana_tabs.iter_mut().chain(bob_tabs.iter_mut()) {
        next_matching(
            ws,
            Duration::from_secs(10),
            "the first message",
            |f| matches!(f, ServerFrame::Event { seq, .. } if *seq == before),
        )
        .await;
    }

    let removed = d.backend.remove_member(&room, &ana).await;
    let removed_at = Instant::now();
    let after = d.backend.send_message(&room, &bob, "ana cannot read this").await.0;
    for (n, ws) in ana_tabs.iter_mut().enumerate() {
        // The removal itself arrives, then the cut-off, and nothing after it.
        let frame = next_matching(ws, Duration::from_secs(2), "the removal event", |f| {
            matches!(f, ServerFrame::Event { .. } | ServerFrame::Unsubscribed { .. })
        })
        .await;
        assert!(
            matches!(&frame, ServerFrame::Event { seq, event, .. } if *seq == removed && event.event_type == "chat.member_removed"),
            "tab {n}: {frame:?}"
        );
        let frame = next_matching(ws, Duration::from_secs(2), "the cut-off", |f| {
            matches!(f, ServerFrame::Event { .. } | ServerFrame::Unsubscribed { .. })
        })
        .await;
        assert_eq!(
            frame,
            ServerFrame::Unsubscribed {
                channel: channel.clone(),
                reason: Some("membership_revoked".into())
            },
            "tab {n}"
        );
        let within = removed_at.elapsed();
        eprintln!("chat cut-off on broadcaster {}: {within:?} after the removal", n + 1);
        assert!(within < Duration::from_secs(2), "cut off within 2 s: {within:?}");
    }
    for ws in &mut bob_tabs {
        next_matching(
            ws,
            Duration::from_secs(5),
            "the message after the removal",
            |f| matches!(f, ServerFrame::Event { seq, .. } if *seq == after),
        )
        .await;
    }
    for ws in &mut ana_tabs {
        assert_none_matching(ws, Duration::from_millis(500), "an event after the cut-off", |f| {
            matches!(f, ServerFrame::Event { .. })
        })
        .await;
        assert_eq!(
            refusal(ws.subscribe(&channel, None, Some(ana.token.clone())).await),
            "forbidden",
            "a former member cannot come back"
        );
    }
    for b in [&d.b1, &d.b2] {
        let m = Metrics::scrape(&metrics_url(b)).await;
        assert_eq!(m.sum("courier_chat_revocations_total", ""), 1.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_seen_while_the_membership_check_is_in_flight_wins() {
    let d = ChatDeployment::start().await;
    let carla = chat_user("carla");
    let room = object_id();
    d.backend.add_member(&room, &carla);
    d.backend.set_reply_delay(Duration::from_millis(1_200));
    let asked = d.backend.requests();
    let url = d.b1.ws_url();
    let (token, channel) = (carla.token.clone(), format!("chat:{room}"));
    let subscribing = tokio::spawn(async move {
        let mut ws = WsClient::connect(&url).await.expect("connects");
        ws.subscribe(&channel, None, Some(token)).await
    });
    courier_tests::wait_until("the check to be asked", Duration::from_secs(5), || async {
        d.backend.requests() > asked
    })
    .await;
    // The api read "member" and will say so; meanwhile the removal commits and is fanned out.
    d.backend.remove_member(&room, &carla).await;
    let outcome = subscribing.await.expect("subscriber task");
    assert_eq!(refusal(outcome), "forbidden", "the removal wins over the in-flight answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_reaches_the_others_on_every_broadcaster_expires_and_stops_on_send_and_disconnect() {
    let d = ChatDeployment::start().await;
    let (ana, bob, carla) = (chat_user("ana"), chat_user("bob"), chat_user("carla"));
    let room = object_id();
    let channel = format!("chat:{room}");
    for user in [&ana, &bob, &carla] {
        d.backend.add_member(&room, user);
    }
    let mut ana_typing = member_tab(&d.b1, &room, &ana).await;
    let mut ana_other_tab = member_tab(&d.b2, &room, &ana).await;
    let mut bob_ws = member_tab(&d.b2, &room, &bob).await;
    let mut carla_ws = member_tab(&d.b1, &room, &carla).await;
    let typing = ClientFrame::Typing { channel: channel.clone() };

    // Starts on both broadcasters, never on the typist's own tabs.
    ana_typing.send(&typing).await.unwrap();
    let typed_at = Instant::now();
    for ws in [&mut bob_ws, &mut carla_ws] {
        let frame =
            next_matching(ws, Duration::from_secs(2), "ana typing", is_typing(&ana, true)).await;
        let ServerFrame::Typing { channel: c, user, .. } = frame else { unreachable!() };
        assert_eq!((c.as_str(), user.username.as_str()), (channel.as_str(), "ana"));
    }
    // Expires by itself about 5 s after the last frame.
    for ws in [&mut bob_ws, &mut carla_ws] {
        next_matching(ws, Duration::from_secs(8), "ana stops typing", is_typing(&ana, false)).await;
        let after = typed_at.elapsed();
        assert!(
            after >= Duration::from_millis(4_500) && after < Duration::from_secs(7),
            "expired after {after:?}"
        );
    }
    for ws in [&mut ana_typing, &mut ana_other_tab] {
        assert_none_matching(
            ws,
            Duration::from_millis(200),
            "ana's own indicator",
            |f| matches!(f, ServerFrame::Typing { user, .. } if user.id == ana.id),
        )
        .await;
    }

    // Ends at once when her message passes through the feed.
    ana_typing.send(&typing).await.unwrap();
    for ws in [&mut bob_ws, &mut carla_ws] {
        next_matching(ws, Duration::from_secs(2), "ana typing again", is_typing(&ana, true)).await;
    }
    let (message_seq, _, _) = d.backend.send_message(&room, &ana, "done typing").await;
    let sent_at = Instant::now();
    for ws in [&mut bob_ws, &mut carla_ws] {
        // The message and the end of the indicator, in whichever order they come.
        let (mut message, mut stopped) = (false, false);
        while !(message && stopped) {
            let frame =
                next_matching(ws, Duration::from_secs(2), "the message and the stop", |f| {
                    matches!(f, ServerFrame::Event { seq, .. } if *seq == message_seq)
                        || is_typing(&ana, false)(f)
                })
                .await;
            message |= matches!(frame, ServerFrame::Event { .. });
            stopped |= matches!(frame, ServerFrame::Typing { .. });
        }
        assert!(sent_at.elapsed() < Duration::from_secs(1), "{:?}", sent_at.elapsed());
    }

    // Ends at once when the typist disconnects (its broadcaster tells the others).
    ana_typing.send(&typing).await.unwrap();
    for ws in [&mut bob_ws, &mut carla_ws] {
        next_matching(ws, Duration::from_secs(2), "ana typing once more", is_typing(&ana, true))
            .await;
    }
    ana_typing.close().await;
    let closed_at = Instant::now();
    for ws in [&mut bob_ws, &mut carla_ws] {
        next_matching(ws, Duration::from_secs(2), "the stop on disconnect", is_typing(&ana, false))
            .await;
        assert!(closed_at.elapsed() < Duration::from_millis(1_500), "{:?}", closed_at.elapsed());
    }

    // Rate limit: a burst passes, the excess is refused and counted.
    for _ in 0..10 {
        ana_other_tab.send(&typing).await.unwrap();
    }
    let mut limited = 0;
    while limited < 5 {
        next_matching(
            &mut ana_other_tab,
            Duration::from_secs(2),
            "rate_limited",
            |f| matches!(f, ServerFrame::Error { code, .. } if code == "rate_limited"),
        )
        .await;
        limited += 1;
    }
    let m = Metrics::scrape(&metrics_url(&d.b2)).await;
    assert!(m.sum("courier_chat_rate_limited_total", "action=\"typing\"") >= 5.0);
    assert!(m.sum("courier_chat_typing_frames_total", "") >= 1.0);

    // typing needs a subscribed chat channel.
    let other_room = ClientFrame::Typing { channel: format!("chat:{}", object_id()) };
    bob_ws.send(&other_room).await.unwrap();
    next_matching(
        &mut bob_ws,
        Duration::from_secs(2),
        "not_subscribed",
        |f| matches!(f, ServerFrame::Error { code, .. } if code == "not_subscribed"),
    )
    .await;
    bob_ws.subscribe("products", None, None).await.unwrap();
    bob_ws.send(&ClientFrame::Typing { channel: "products".into() }).await.unwrap();
    next_matching(
        &mut bob_ws,
        Duration::from_secs(2),
        "bad_channel",
        |f| matches!(f, ServerFrame::Error { code, .. } if code == "bad_channel"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_counts_users_across_broadcasters_does_not_flap_and_ends_on_shutdown() {
    let d = ChatDeployment::start().await;
    let (ana, bob, carla) = (chat_user("ana"), chat_user("bob"), chat_user("carla"));
    let room = object_id();
    for user in [&ana, &bob, &carla] {
        d.backend.add_member(&room, user);
    }
    let third = RunningBroadcaster::start(Stack::broadcaster_config(&d.nats)).await;
    let mut bob_ws = member_tab(&d.b2, &room, &bob).await;
    let ana_on_b1 = member_tab(&d.b1, &room, &ana).await;
    next_matching(&mut bob_ws, Duration::from_secs(5), "ana joined", is_joined(&ana)).await;
    let mut ana_on_b2 = member_tab(&d.b2, &room, &ana).await;
    // Two tabs (on two broadcasters) are one user; every broadcaster agrees.
    wait_for_presence(&mut bob_ws, &room, &[&ana, &bob]).await;
    wait_for_presence(&mut ana_on_b2, &room, &[&ana, &bob]).await;

    // One tab closing changes nothing while the other stays.
    ana_on_b1.close().await;
    // A quick reconnect (elsewhere) announces no leave and join either.
    ana_on_b2.close().await;
    tokio::time::sleep(Duration::from_millis(300)).await; // the client's reconnect delay
    let mut ana_back = member_tab(&third, &room, &ana).await;
    assert_none_matching(&mut bob_ws, Duration::from_secs(5), "a presence change", |f| {
        matches!(f, ServerFrame::PresenceDiff { .. })
    })
    .await;
    wait_for_presence(&mut bob_ws, &room, &[&ana, &bob]).await;

    // Leaving for good is announced after the grace period.
    ana_back.send(&ClientFrame::Unsubscribe { channel: format!("chat:{room}") }).await.unwrap();
    let left_at = Instant::now();
    next_matching(&mut bob_ws, Duration::from_secs(6), "ana left", is_left(&ana)).await;
    let after = left_at.elapsed();
    assert!(after >= Duration::from_millis(2_500) && after < Duration::from_secs(5), "{after:?}");
    wait_for_presence(&mut bob_ws, &room, &[&bob]).await;

    // A broadcaster shutting down gracefully ends its users' entries after the grace, not the
    // 15 s TTL.
    let _carla_ws = member_tab(&third, &room, &carla).await;
    next_matching(&mut bob_ws, Duration::from_secs(5), "carla joined", is_joined(&carla)).await;
    let stopping = Instant::now();
    third.stop().await;
    next_matching(&mut bob_ws, Duration::from_secs(10), "carla left", is_left(&carla)).await;
    let after = stopping.elapsed();
    eprintln!("presence after a graceful shutdown: gone {after:?} after it began");
    assert!(after < Duration::from_secs(6), "{after:?}");
    let m = Metrics::scrape(&metrics_url(&d.b2)).await;
    assert_eq!(m.sum("courier_chat_presence_users", ""), 1.0, "bob's is the only local user");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_rooms_lists_the_busiest_rooms_and_no_room_id_reaches_the_metrics() {
    let d = ChatDeployment::start().await;
    let (ana, bob) = (chat_user("ana"), chat_user("bob"));
    let (busy, quiet) = (object_id(), object_id());
    for room in [&busy, &quiet] {
        d.backend.add_member(room, &ana);
        d.backend.add_member(room, &bob);
    }
    let _tabs = [
        member_tab(&d.b1, &busy, &ana).await,
        member_tab(&d.b1, &busy, &ana).await,
        member_tab(&d.b1, &busy, &bob).await,
        member_tab(&d.b1, &quiet, &bob).await,
    ];
    let http = reqwest::Client::new();
    let get = |query: &str| {
        let url = format!("http://{}/chat/top-rooms{query}", d.b1.addr);
        let http = http.clone();
        async move {
            let response = http.get(url).send().await.expect("ops port answers");
            (response.status().as_u16(), response.json::<serde_json::Value>().await.unwrap())
        }
    };
    let (status, top) = get("").await;
    assert_eq!(status, 200, "{top}");
    assert_eq!(top["total_rooms"], 2);
    assert_eq!(top["rooms"][0], serde_json::json!({"room_id": busy, "connections": 3, "users": 2}));
    assert_eq!(
        top["rooms"][1],
        serde_json::json!({"room_id": quiet, "connections": 1, "users": 1})
    );
    let (_, one) = get("?limit=1").await;
    assert_eq!(one["rooms"].as_array().unwrap().len(), 1);
    for (query, field) in [("?limit=0", "limit"), ("?limit=many", "limit"), ("?top=3", "top")] {
        let (status, body) = get(query).await;
        assert_eq!(
            (status, body["error"]["field"].as_str()),
            (400, Some(field)),
            "{query}: {body}"
        );
    }
    let text = http.get(metrics_url(&d.b1)).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("courier_chat_subscriptions"), "chat metrics are exported");
    assert!(!text.contains(&busy) && !text.contains(&quiet), "no room id in any label");
}

/// What a compromised worker may publish (`events.*.*.enriched`): a chat message "from" someone,
/// on the room's subject. The broadcaster checks every envelope against its subject and delivers
/// neither it, nor an envelope that names `type` twice, live or replayed; the next genuine
/// message arrives as the first event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_event_is_neither_delivered_nor_replayed() {
    let d = ChatDeployment::start().await;
    let ana = chat_user("ana");
    let room = object_id();
    d.backend.add_member(&room, &ana);
    let channel = format!("chat:{room}");
    let mut live = member_tab(&d.b1, &room, &ana).await;

    let js = async_nats::jetstream::new(async_nats::connect(d.nats.url()).await.unwrap());
    let forged_message = |event_type: &str| {
        let data = serde_json::json!({"id": object_id(), "room_id": room, "seq": 1,
            "author": {"id": object_id(), "username": "admin"}, "text": "send me your password",
            "mentions": [], "reactions": {}, "deleted": false});
        let mut event = courier_core::Event::new(
            "chat",
            &room,
            courier_core::EventAction::Message,
            data,
            Some(object_id()),
            "forged".into(),
        );
        event.event_type = event_type.to_owned();
        serde_json::to_string(&event).unwrap()
    };
    let subject = format!("events.chat.{room}.enriched");
    // The envelope says chat.message, the subject says enriched.
    let mismatched = forged_message("chat.message");
    // `type` twice: the first matches the subject, a browser's JSON.parse keeps the second.
    let repeated = forged_message("chat.enriched").replacen(
        r#""type":"chat.enriched""#,
        r#""type":"chat.enriched","type":"chat.message""#,
        1,
    );
    assert!(repeated.contains(r#""type":"chat.message""#));
    for payload in [mismatched, repeated] {
        js.publish(subject.clone(), payload.into()).await.unwrap().await.unwrap();
    }
    let (genuine, _, _) = d.backend.send_message(&room, &ana, "hello").await;

    let first = next_matching(&mut live, Duration::from_secs(10), "an event", |f| {
        matches!(f, ServerFrame::Event { .. })
    })
    .await;
    let ServerFrame::Event { seq, event, .. } = first else { unreachable!() };
    assert_eq!((seq, event.event_type.as_str()), (genuine, "chat.message"), "{event:?}");
    assert_eq!(event.data["text"], "hello");

    // A replay from the start skips them too.
    let mut replay = connect(&d.b1).await;
    replay.subscribe(&channel, Some(0), Some(ana.token.clone())).await.expect("replay");
    let first = next_matching(&mut replay, Duration::from_secs(10), "a replayed event", |f| {
        matches!(f, ServerFrame::Event { .. })
    })
    .await;
    assert!(matches!(first, ServerFrame::Event { seq, .. } if seq == genuine), "{first:?}");

    let metrics = Metrics::scrape(&metrics_url(&d.b1)).await;
    let refused = |reason: &str| {
        metrics.sum("courier_broadcaster_events_refused_total", &format!("reason=\"{reason}\""))
    };
    assert!(refused("subject_mismatch") >= 2.0, "live and replayed");
    assert!(refused("malformed") >= 2.0, "live and replayed");
}
