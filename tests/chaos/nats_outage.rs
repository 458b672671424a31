//! Chaos 1: nats-server is killed with SIGKILL in the middle of 2,000 POSTs and restarted;
//! a subscriber that stayed connected and one that reconnected during the outage each get all
//! 2,000 events, once, in order — and the stream holds exactly one event per write.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use courier_tests::{
    NatsServer, StoreServer,
    chaos::{
        api_process, broadcaster_process, fresh_database, post_products, share_machine,
        stored_events,
    },
    init_test_logging, wait_until,
};

use crate::support::{Tail, assert_exactly_once_in_order};

const WRITES: usize = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_killed_during_2000_posts_loses_and_repeats_nothing() {
    let _machine = share_machine().await;
    init_test_logging();
    let (mut nats, store) = tokio::join!(NatsServer::start(), StoreServer::start());
    let api = api_process(&store, &fresh_database(), &nats, &[]).await;
    let broadcaster = broadcaster_process(&nats.url(), &[]).await;

    let stayed = Tail::start(vec![broadcaster.ws_url()], "products").await;
    let reconnected = Tail::start(vec![broadcaster.ws_url()], "products").await;

    let done = Arc::new(AtomicUsize::new(0));
    let writer = tokio::spawn(post_products(api.http_url(""), WRITES, 16, done.clone()));

    wait_until("500 POSTs", Duration::from_secs(60), || async {
        done.load(Ordering::Relaxed) >= 500
    })
    .await;
    nats.kill().await;
    let killed_at = done.load(Ordering::Relaxed);
    reconnected.drop_connection(); // it reconnects and resumes while NATS is still down
    wait_until("700 more POSTs", Duration::from_secs(60), || async {
        done.load(Ordering::Relaxed) >= killed_at + 700
    })
    .await;
    nats.restart().await;
    let restarted_at = done.load(Ordering::Relaxed);

    let writes = writer.await.expect("writer");
    assert_eq!(
        writes.statuses.get(&201),
        Some(&WRITES),
        "every write is accepted, NATS or not: {:?}",
        writes.statuses
    );

    let (stayed, reconnected) = tokio::join!(
        stayed.finish(WRITES, Duration::from_secs(90)),
        reconnected.finish(WRITES, Duration::from_secs(90)),
    );
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.expect("nats"));
    let stored = stored_events(&js, "events.products.>").await;

    eprintln!(
        "chaos 1 (nats kill -9): {WRITES} POSTs, all 201; nats killed after {killed_at}, restarted after {restarted_at}; \
         stream holds {} events",
        stored.len()
    );
    let stored_ids: Vec<String> = stored.iter().map(|(_, e)| e.doc_id.clone()).collect();
    let mut unique = stored_ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        (stored.len(), unique.len()),
        (WRITES, WRITES),
        "exactly one stored event per write"
    );
    for (who, tailed) in [
        ("subscriber that stayed connected", &stayed),
        ("subscriber that reconnected mid-outage", &reconnected),
    ] {
        assert_exactly_once_in_order(who, &tailed.events, &writes.created);
        eprintln!(
            "    connections {}, duplicate frames dropped by the client {}",
            tailed.connects, tailed.duplicates_dropped
        );
        assert_eq!(tailed.duplicates_dropped, 0, "the broadcaster never sends a seq twice");
        let seqs: Vec<u64> = tailed.events.iter().map(|r| r.seq).collect();
        assert_eq!(
            seqs,
            stored.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
            "{who} got the stream, seq for seq"
        );
    }
    assert!(reconnected.connects >= 2, "the second subscriber really reconnected");
}
