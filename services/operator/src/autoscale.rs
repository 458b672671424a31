//! Backlog-driven worker autoscaling (KEDA-like, built in): reading the JetStream backlog of every
//! priority (the `workers-high`, `workers-normal` and `workers-low` consumers, through
//! `courier_core::task_queue`) behind a trait, the replica formula, and the scale-down
//! stabilization window.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::{Duration, Instant},
};

use async_nats::jetstream;
use courier_core::task_queue::{Detail, read_backlog};
use futures::future::BoxFuture;

use crate::crd::courier::AutoscalingSpec;
use crate::error::{Error, Result};

/// How long one backlog read may take before the reconcile gives up on it.
const READ_TIMEOUT: Duration = Duration::from_secs(3);

/// Tasks waiting for a worker and tasks delivered but not yet acknowledged, every priority
/// together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backlog {
    pub pending: u64,
    pub ack_pending: u64,
}

impl Backlog {
    pub fn total(&self) -> u64 {
        self.pending.saturating_add(self.ack_pending)
    }
}

impl From<&courier_core::task_queue::TaskBacklog> for Backlog {
    fn from(queue: &courier_core::task_queue::TaskBacklog) -> Self {
        let in_flight: u64 = queue.lanes.iter().map(|lane| lane.in_flight()).sum();
        Backlog { pending: queue.total().saturating_sub(in_flight), ack_pending: in_flight }
    }
}

/// Where the autoscaler reads the backlog; tests inject fixed values.
pub trait BacklogSource: Send + Sync {
    fn backlog<'a>(&'a self, nats_url: &'a str) -> BoxFuture<'a, Result<Backlog>>;
}

/// Reads consumer info from NATS, one cached client per URL, logged in as the operator's own
/// NATS user (which may only read the `TASKS` stream and `workers` consumer info).
#[derive(Default)]
pub struct NatsBacklog {
    clients: tokio::sync::Mutex<HashMap<String, async_nats::Client>>,
    auth: courier_core::config::NatsAuthArgs,
}

impl NatsBacklog {
    pub fn new(auth: courier_core::config::NatsAuthArgs) -> Self {
        NatsBacklog { clients: Default::default(), auth }
    }

    async fn client(&self, url: &str) -> Result<async_nats::Client> {
        let mut clients = self.clients.lock().await;
        if let Some(client) = clients.get(url) {
            return Ok(client.clone());
        }
        let client = courier_core::config::connect_nats(url, &self.auth, "courier-operator")
            .await
            .map_err(|err| backlog_error(url, err))?;
        clients.insert(url.to_owned(), client.clone());
        Ok(client)
    }

    async fn read(&self, url: &str) -> Result<Backlog> {
        let js = jetstream::new(self.client(url).await?);
        // A priority whose consumer no worker has created yet (e.g. scaled to zero) counts every
        // task on its subjects as pending, and so do tasks on legacy subjects.
        let backlog = read_backlog(&js, Detail::Counts)
            .await
            .map_err(|err| backlog_error(url, err))?
            .ok_or_else(|| backlog_error(url, "stream TASKS does not exist yet"))?;
        Ok(Backlog::from(&backlog))
    }
}

fn backlog_error(url: &str, err: impl std::fmt::Display) -> Error {
    Error::Backlog { url: url.to_owned(), message: err.to_string() }
}

impl BacklogSource for NatsBacklog {
    fn backlog<'a>(&'a self, nats_url: &'a str) -> BoxFuture<'a, Result<Backlog>> {
        Box::pin(async move {
            tokio::time::timeout(READ_TIMEOUT, self.read(nats_url)).await.map_err(|_| {
                backlog_error(nats_url, format!("no answer within {READ_TIMEOUT:?}"))
            })?
        })
    }
}

/// Time source for the stabilization window; tests use a manual clock.
pub trait Clock: Send + Sync {
    fn now(&self) -> Instant;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// clamp(ceil(backlog / target), min, max).
pub fn recommend(backlog: u64, policy: &AutoscalingSpec) -> i32 {
    let target = u64::try_from(policy.target_pending_per_replica.max(1)).unwrap_or(1);
    let wanted = i32::try_from(backlog.div_ceil(target)).unwrap_or(i32::MAX);
    let min = policy.min_replicas.max(0);
    wanted.clamp(min, policy.max_replicas.max(min))
}

/// One autoscaling decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub backlog: u64,
    /// What the formula asks for right now.
    pub recommended: i32,
    /// What the window allows: the replicas to run.
    pub desired: i32,
    pub current: i32,
}

impl Decision {
    pub fn changed(&self) -> bool {
        self.desired != self.current
    }
}

/// Recommendation history per Courier (HPA-style): scaling up follows the recommendation at
/// once; scaling down goes only as low as the highest recommendation inside the window.
#[derive(Default)]
pub struct Stabilizer {
    history: Mutex<HashMap<String, VecDeque<(Instant, i32)>>>,
}

impl Stabilizer {
    /// Decides for the Courier `key` given its `current` worker replicas.
    pub fn decide(
        &self,
        key: &str,
        now: Instant,
        backlog: u64,
        current: i32,
        policy: &AutoscalingSpec,
    ) -> Decision {
        let recommended = recommend(backlog, policy);
        let window = Duration::from_secs(
            u64::try_from(policy.scale_down_stabilization_seconds.max(0)).unwrap_or(0),
        );
        let mut all = self.history.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let history = all.entry(key.to_owned()).or_default();
        if history.is_empty() {
            // First look since the operator started: count the running replicas as a recent
            // recommendation, so a restart never skips the window and scales down at once.
            history.push_back((now, current));
        }
        history.push_back((now, recommended));
        while let Some(&(at, _)) = history.front() {
            if now.saturating_duration_since(at) > window && history.len() > 1 {
                history.pop_front();
            } else {
                break;
            }
        }
        let highest = history.iter().map(|&(_, r)| r).max().unwrap_or(recommended);
        let desired = if recommended >= current {
            recommended
        } else {
            highest
                .min(current)
                .clamp(policy.min_replicas.max(0), policy.max_replicas.max(policy.min_replicas))
        };
        Decision { backlog, recommended, desired, current }
    }

    /// Drops a deleted Courier's history.
    pub fn forget(&self, key: &str) {
        self.history.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(key);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A backlog source answering from a settable value (or an error).
    #[derive(Default)]
    pub(crate) struct FixedBacklog(pub Mutex<Option<Backlog>>);

    impl FixedBacklog {
        pub(crate) fn set(&self, total: u64) {
            *self.0.lock().unwrap() = Some(Backlog { pending: total, ack_pending: 0 });
        }
        pub(crate) fn fail(&self) {
            *self.0.lock().unwrap() = None;
        }
    }

    impl BacklogSource for FixedBacklog {
        fn backlog<'a>(&'a self, nats_url: &'a str) -> BoxFuture<'a, Result<Backlog>> {
            let value = *self.0.lock().unwrap();
            Box::pin(
                async move { value.ok_or_else(|| backlog_error(nats_url, "connection refused")) },
            )
        }
    }

    pub(crate) struct ManualClock(pub Mutex<Instant>);

    impl ManualClock {
        pub(crate) fn new() -> Self {
            ManualClock(Mutex::new(Instant::now()))
        }
        pub(crate) fn advance(&self, by: Duration) {
            *self.0.lock().unwrap() += by;
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> Instant {
            *self.0.lock().unwrap()
        }
    }

    fn policy(min: i32, max: i32, target: i32, window_secs: i32) -> AutoscalingSpec {
        AutoscalingSpec {
            enabled: true,
            min_replicas: min,
            max_replicas: max,
            target_pending_per_replica: target,
            scale_down_stabilization_seconds: window_secs,
        }
    }

    #[test]
    fn recommendation_is_ceil_of_backlog_over_target_clamped() {
        let p = policy(1, 10, 100, 300);
        assert_eq!(recommend(0, &p), 1);
        assert_eq!(recommend(100, &p), 1);
        assert_eq!(recommend(101, &p), 2);
        assert_eq!(recommend(950, &p), 10);
        assert_eq!(recommend(1_000_000, &p), 10);
        assert_eq!(recommend(0, &policy(0, 3, 10, 0)), 0, "scale to zero when min is 0");
        assert_eq!(recommend(u64::MAX, &policy(0, 3, 1, 0)), 3);
    }

    #[test]
    fn backlog_counts_pending_and_in_flight() {
        assert_eq!(Backlog { pending: 7, ack_pending: 3 }.total(), 10);
    }

    #[test]
    fn backlog_counts_every_priority() {
        use courier_core::task_queue::{Lane, TaskBacklog};
        let waiting = |queued| Lane { consumer: None, queued, oldest_pending: None };
        let queue = TaskBacklog {
            lanes: [waiting(4), waiting(10), waiting(1_000)],
            legacy_queued: 6,
            ..Default::default()
        };
        let backlog = Backlog::from(&queue);
        assert_eq!(backlog, Backlog { pending: 1_020, ack_pending: 0 });
    }

    #[test]
    fn scale_up_is_immediate_and_scale_down_waits_for_the_window() {
        let p = policy(1, 10, 100, 60);
        let s = Stabilizer::default();
        let t0 = Instant::now();
        let d = s.decide("ns/c", t0, 450, 2, &p);
        assert_eq!((d.recommended, d.desired), (5, 5), "up at once");
        let d = s.decide("ns/c", t0 + Duration::from_secs(10), 50, 5, &p);
        assert_eq!((d.recommended, d.desired), (1, 5), "held by the recommendation 10 s ago");
        let d = s.decide("ns/c", t0 + Duration::from_secs(50), 250, 5, &p);
        assert_eq!(d.desired, 5);
        // 70 s: the 5 from t0 left the window; 3 (from t0+50) is the highest left.
        let d = s.decide("ns/c", t0 + Duration::from_secs(70), 50, 5, &p);
        assert_eq!((d.desired, d.changed()), (3, true));
        let d = s.decide("ns/c", t0 + Duration::from_secs(200), 50, 3, &p);
        assert_eq!(d.desired, 1);
    }

    #[test]
    fn first_decision_after_a_restart_does_not_skip_the_window() {
        let p = policy(1, 10, 100, 60);
        let s = Stabilizer::default();
        let t0 = Instant::now();
        assert_eq!(s.decide("ns/c", t0, 0, 6, &p).desired, 6);
        assert_eq!(s.decide("ns/c", t0 + Duration::from_secs(61), 0, 6, &p).desired, 1);
        s.forget("ns/c");
        assert_eq!(s.decide("ns/c", t0 + Duration::from_secs(62), 0, 4, &p).desired, 4);
    }

    #[test]
    fn zero_window_scales_down_at_once() {
        let p = policy(1, 10, 100, 0);
        let s = Stabilizer::default();
        let t0 = Instant::now();
        s.decide("ns/c", t0, 900, 1, &p);
        assert_eq!(s.decide("ns/c", t0 + Duration::from_secs(1), 0, 9, &p).desired, 1);
    }
}
