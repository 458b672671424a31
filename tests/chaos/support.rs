//! Shared pieces of the chaos tests: a `courier tail`-style resuming subscriber running in the
//! background and counting what it gets, and the checks every test makes on what arrived.

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use courier_cli::client::{Received, ResumingSubscriber};
use courier_tests::{poll_until, wait_for};
use tokio::{sync::Notify, task::JoinHandle};
use tokio_util::sync::CancellationToken;

/// What a [`Tail`] saw by the time it was stopped.
pub struct Tailed {
    pub events: Vec<Received>,
    pub notices: Vec<String>,
    pub connects: u64,
    pub duplicates_dropped: u64,
    pub last_url: Option<String>,
}

/// A [`ResumingSubscriber`] (the client inside `courier tail`) running in a task.
pub struct Tail {
    count: Arc<AtomicUsize>,
    disconnect: Arc<Notify>,
    stop: CancellationToken,
    task: JoinHandle<Tailed>,
}

impl Tail {
    /// Connects to the first of `urls` and subscribes to `channel` before returning, so every
    /// event published after this call is owed to it.
    pub async fn start(urls: Vec<String>, channel: &str) -> Tail {
        Self::start_with_token(urls, channel, None).await
    }

    /// [`Tail::start`] with an access token sent in every (re)subscribe.
    pub async fn start_with_token(urls: Vec<String>, channel: &str, token: Option<String>) -> Tail {
        Self::start_filtered(urls, channel, token, None).await
    }

    /// [`Tail::start_with_token`] with a `filter` sent in every (re)subscribe.
    pub async fn start_filtered(
        urls: Vec<String>,
        channel: &str,
        token: Option<String>,
        filter: Option<serde_json::Value>,
    ) -> Tail {
        let mut subscriber = ResumingSubscriber::new(urls, vec![channel.to_owned()], None, token)
            .with_filter(filter);
        let mut notices = Vec::new();
        subscriber.connect(|n| notices.push(format!("{n:?}"))).await.expect("subscriber connects");
        let (count, disconnect, stop) =
            (Arc::new(AtomicUsize::new(0)), Arc::new(Notify::new()), CancellationToken::new());
        let task = tokio::spawn({
            let (count, disconnect, stop) = (count.clone(), disconnect.clone(), stop.clone());
            async move {
                let mut events = Vec::new();
                loop {
                    tokio::select! {
                        biased;
                        _ = stop.cancelled() => break,
                        _ = disconnect.notified() => subscriber.disconnect(),
                        received = subscriber.next_event(|n| notices.push(format!("{n:?}"))) => {
                            events.push(received);
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Tailed {
                    events,
                    notices,
                    connects: subscriber.connects(),
                    duplicates_dropped: subscriber.duplicates_dropped(),
                    last_url: subscriber.connected_url().map(str::to_owned),
                }
            }
        });
        Tail { count, disconnect, stop, task }
    }

    pub fn received(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Waits until at least `n` events arrived.
    pub async fn wait_for(&self, n: usize, timeout: Duration) {
        wait_for(&format!("{n} events"), timeout, || async {
            let received = self.received();
            if received >= n { Ok(()) } else { Err(format!("{received} events")) }
        })
        .await;
    }

    /// Drops the current connection; the subscriber reconnects and resumes by itself.
    pub fn drop_connection(&self) {
        self.disconnect.notify_one();
    }

    /// Waits (up to `timeout`) for `n` events, then stops and returns everything seen: the
    /// caller checks what arrived, and reports a shortfall with the details.
    pub async fn finish(self, n: usize, timeout: Duration) -> Tailed {
        poll_until(timeout, || async { self.received() >= n }).await;
        self.stop.cancel();
        self.task.await.expect("tail task")
    }
}

/// Asserts that `events` are exactly one event per id in `created` (no gap, no duplicate),
/// with strictly increasing stream sequences; prints the counts either way.
pub fn assert_exactly_once_in_order(who: &str, events: &[Received], created: &[String]) {
    let mut repeated = 0;
    let mut seen = HashSet::new();
    for received in events {
        if !seen.insert(received.event.doc_id.clone()) {
            repeated += 1;
        }
    }
    let expected: HashSet<&String> = created.iter().collect();
    let missing = expected.iter().filter(|id| !seen.contains(id.as_str())).count();
    let unexpected = seen.iter().filter(|id| !expected.contains(id)).count();
    let out_of_order = events.windows(2).filter(|pair| pair[0].seq >= pair[1].seq).count();
    eprintln!(
        "  {who}: {} events for {} writes: {missing} missing, {repeated} repeated, {unexpected} unexpected, {out_of_order} out of order",
        events.len(),
        created.len()
    );
    assert_eq!(
        (missing, repeated, unexpected, out_of_order),
        (0, 0, 0, 0),
        "{who} must get every write exactly once, in order"
    );
    assert_eq!(events.len(), created.len());
}
