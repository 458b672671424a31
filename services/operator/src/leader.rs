//! Leader election on a `coordination.k8s.io/v1` Lease, so two operator replicas never reconcile
//! at once: acquire (create, or take over an expired lease), renew on an interval, step down
//! (stop the controllers) when renewing fails past the deadline, release on shutdown.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::{SignedDuration, Timestamp},
};
use kube::{Api, api::PostParams};
use tokio_util::sync::CancellationToken;

use crate::{Error, Result, metrics::Metrics};

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub name: String,
    /// Unique per replica (the pod name).
    pub identity: String,
    /// How long a lease is valid after its last renewal; others take over after that.
    pub lease_duration: Duration,
    /// How often the leader renews.
    pub renew_interval: Duration,
    /// Step down when no renewal succeeded for this long (less than `lease_duration`, so the
    /// controllers stop before anyone else may start).
    pub renew_deadline: Duration,
}

/// Outcome of one acquisition attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Leader,
    Follower { holder: String },
}

/// Last time the Kubernetes API answered the lease loop (for `/readyz`).
#[derive(Clone, Default)]
pub struct ApiContact(Arc<Mutex<Option<Instant>>>);

impl ApiContact {
    fn touch(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// Whether the API answered within `within`.
    pub fn recent(&self, within: Duration) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).is_some_and(|at| at.elapsed() <= within)
    }
}

pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    contact: ApiContact,
}

fn is_conflict(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 409)
}

impl LeaderElector {
    pub fn new(api: Api<Lease>, config: LeaseConfig, contact: ApiContact) -> Self {
        LeaderElector { api, config, contact }
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }

    /// Creates, renews or takes over the lease if this replica may hold it.
    pub async fn try_acquire_or_renew(&self) -> Result<Attempt> {
        let now = Timestamp::now();
        let existing = self.api.get_opt(&self.config.name).await?;
        self.contact.touch();
        let Some(mut lease) = existing else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.config.identity.clone()),
                    lease_duration_seconds: Some(self.duration_seconds()),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Leader),
                Err(err) if is_conflict(&err) => {
                    Ok(Attempt::Follower { holder: "(just created by another replica)".into() })
                }
                Err(err) => Err(err.into()),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        if holder == self.config.identity {
            spec.renew_time = Some(MicroTime(now));
            spec.lease_duration_seconds = Some(self.duration_seconds());
        } else {
            let duration = SignedDuration::from_secs(i64::from(
                spec.lease_duration_seconds.unwrap_or(self.duration_seconds()),
            ));
            let expired = spec.renew_time.as_ref().is_none_or(|renewed| renewed.0 + duration < now);
            if !holder.is_empty() && !expired {
                return Ok(Attempt::Follower { holder });
            }
            spec.holder_identity = Some(self.config.identity.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.renew_time = Some(MicroTime(now));
            spec.lease_duration_seconds = Some(self.duration_seconds());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        // `replace` carries the resourceVersion we read: a concurrent writer makes it fail (409).
        match self.api.replace(&self.config.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(Attempt::Leader),
            Err(err) if is_conflict(&err) => {
                Ok(Attempt::Follower { holder: "(changed concurrently)".into() })
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Gives the lease up (if still ours) so a standby takes over without waiting for expiry.
    pub async fn release(&self) -> Result<()> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else { return Ok(()) };
        let Some(spec) = lease.spec.as_mut() else { return Ok(()) };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        self.api.replace(&self.config.name, &PostParams::default(), &lease).await?;
        Ok(())
    }

    /// Waits for leadership, runs `work` while leading, and returns when `stop` fires (after
    /// releasing the lease) or with [`Error::LostLeadership`] when the lease could not be kept.
    /// `work` gets a token cancelled on either and must return once it is.
    pub async fn lead<F, Fut>(
        &self,
        stop: CancellationToken,
        metrics: &Metrics,
        work: F,
    ) -> Result<()>
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()>,
    {
        let mut announced = None;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Leader) => break,
                Ok(Attempt::Follower { holder }) => {
                    if announced.as_ref() != Some(&holder) {
                        tracing::info!(lease = %self.config.name, %holder, "standing by: another replica leads");
                        announced = Some(holder);
                    }
                }
                Err(err) => {
                    tracing::warn!(lease = %self.config.name, %err, "cannot read the leader lease")
                }
            }
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                () = tokio::time::sleep(self.config.renew_interval) => {}
            }
        }
        tracing::info!(lease = %self.config.name, identity = %self.config.identity, "became leader");
        metrics.leader.set(1);
        let leading = stop.child_token();
        let renewing = async {
            let mut last_renewal = Instant::now();
            loop {
                tokio::select! {
                    () = leading.cancelled() => return Ok(()),
                    () = tokio::time::sleep(self.config.renew_interval) => {}
                }
                match self.try_acquire_or_renew().await {
                    Ok(Attempt::Leader) => last_renewal = Instant::now(),
                    Ok(Attempt::Follower { holder }) => {
                        leading.cancel();
                        return Err(format!("now held by {holder}"));
                    }
                    Err(err) if last_renewal.elapsed() < self.config.renew_deadline => {
                        tracing::warn!(%err, "renewing the leader lease failed; retrying");
                    }
                    Err(err) => {
                        leading.cancel();
                        return Err(format!("no renewal for {:?}: {err}", last_renewal.elapsed()));
                    }
                }
            }
        };
        let working = async {
            work(leading.clone()).await;
            leading.cancel();
        };
        let (renewed, ()) = tokio::join!(renewing, working);
        metrics.leader.set(0);
        match renewed {
            Err(reason) if !stop.is_cancelled() => {
                Err(Error::LostLeadership { lease: self.config.name.clone(), reason })
            }
            _ => {
                if let Err(err) = self.release().await {
                    tracing::warn!(%err, "could not release the leader lease; it expires by itself");
                } else {
                    tracing::info!(lease = %self.config.name, "released the leader lease");
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use http::{Method, StatusCode};
    use serde_json::json;

    use super::*;
    use crate::fixtures::{self, Expect, Reply, finish, within};

    const PATH: &str =
        "/apis/coordination.k8s.io/v1/namespaces/courier-system/leases/courier-operator";

    fn elector(client: kube::Client) -> LeaderElector {
        LeaderElector::new(
            Api::namespaced(client, "courier-system"),
            LeaseConfig {
                name: "courier-operator".into(),
                identity: "operator-a".into(),
                lease_duration: Duration::from_secs(15),
                renew_interval: Duration::from_secs(5),
                renew_deadline: Duration::from_secs(10),
            },
            ApiContact::default(),
        )
    }

    fn lease(holder: &str, renewed_secs_ago: i64, transitions: i32) -> serde_json::Value {
        let renewed = Timestamp::now() - SignedDuration::from_secs(renewed_secs_ago);
        json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "courier-operator", "namespace": "courier-system", "resourceVersion": "7"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": MicroTime(renewed), "leaseTransitions": transitions}
        })
    }

    #[tokio::test]
    async fn creates_the_lease_when_there_is_none() {
        let (client, verifier) = fixtures::mock_client();
        let server = verifier.run(vec![
            Expect::new(Method::GET, PATH, Reply::Status(StatusCode::NOT_FOUND)),
            Expect::new(
                Method::POST,
                "/apis/coordination.k8s.io/v1/namespaces/courier-system/leases",
                Reply::Echo,
            ),
        ]);
        let e = elector(client);
        assert_eq!(within(e.try_acquire_or_renew()).await.unwrap(), Attempt::Leader);
        let seen = finish(server).await;
        assert_eq!(seen[1].body["spec"]["holderIdentity"], "operator-a");
        assert_eq!(seen[1].body["spec"]["leaseDurationSeconds"], 15);
        assert!(e.contact.recent(Duration::from_secs(5)));
    }

    #[tokio::test]
    async fn follows_while_another_replica_holds_a_fresh_lease() {
        let (client, verifier) = fixtures::mock_client();
        let server = verifier.run(vec![Expect::new(
            Method::GET,
            PATH,
            Reply::Json(lease("operator-b", 3, 2)),
        )]);
        let attempt = within(elector(client).try_acquire_or_renew()).await.unwrap();
        assert_eq!(attempt, Attempt::Follower { holder: "operator-b".into() });
        assert_eq!(finish(server).await.len(), 1, "no write while following");
    }

    #[tokio::test]
    async fn takes_over_an_expired_lease_with_optimistic_concurrency() {
        let (client, verifier) = fixtures::mock_client();
        let server = verifier.run(vec![
            Expect::new(Method::GET, PATH, Reply::Json(lease("operator-b", 60, 2))),
            Expect::new(Method::PUT, PATH, Reply::Echo),
        ]);
        assert_eq!(within(elector(client).try_acquire_or_renew()).await.unwrap(), Attempt::Leader);
        let put = &finish(server).await[1].body;
        assert_eq!(put["spec"]["holderIdentity"], "operator-a");
        assert_eq!(put["spec"]["leaseTransitions"], 3);
        assert_eq!(put["metadata"]["resourceVersion"], "7");
    }

    #[tokio::test]
    async fn a_conflicting_write_means_someone_else_won() {
        let (client, verifier) = fixtures::mock_client();
        let server = verifier.run(vec![
            Expect::new(Method::GET, PATH, Reply::Json(lease("operator-b", 60, 2))),
            Expect::new(Method::PUT, PATH, Reply::Status(StatusCode::CONFLICT)),
        ]);
        let attempt = within(elector(client).try_acquire_or_renew()).await.unwrap();
        assert!(matches!(attempt, Attempt::Follower { .. }));
        finish(server).await;
    }

    #[tokio::test]
    async fn renews_its_own_lease_and_releases_it() {
        let (client, verifier) = fixtures::mock_client();
        let server = verifier.run(vec![
            Expect::new(Method::GET, PATH, Reply::Json(lease("operator-a", 4, 1))),
            Expect::new(Method::PUT, PATH, Reply::Echo),
            Expect::new(Method::GET, PATH, Reply::Json(lease("operator-a", 1, 1))),
            Expect::new(Method::PUT, PATH, Reply::Echo),
        ]);
        let e = elector(client);
        assert_eq!(within(e.try_acquire_or_renew()).await.unwrap(), Attempt::Leader);
        within(e.release()).await.unwrap();
        let seen = finish(server).await;
        assert_eq!(seen[1].body["spec"]["leaseTransitions"], 1, "a renewal is no transition");
        assert_eq!(seen[3].body["spec"].get("holderIdentity"), None, "released");
    }

    fn metrics() -> Metrics {
        Metrics::new(&mut prometheus_client::registry::Registry::default())
    }

    #[tokio::test(start_paused = true)]
    async fn losing_the_lease_stops_the_work_and_reports_it() {
        let (client, verifier) = fixtures::mock_client();
        let server = verifier.run(vec![
            Expect::new(Method::GET, PATH, Reply::Status(StatusCode::NOT_FOUND)),
            Expect::new(
                Method::POST,
                "/apis/coordination.k8s.io/v1/namespaces/courier-system/leases",
                Reply::Echo,
            ),
            // First renewal: someone else holds it now (e.g. after a network partition).
            Expect::new(Method::GET, PATH, Reply::Json(lease("operator-b", 0, 1))),
        ]);
        let metrics = metrics();
        let e = elector(client);
        let worked = std::sync::atomic::AtomicBool::new(false);
        let result = e
            .lead(CancellationToken::new(), &metrics, |leading| async {
                worked.store(true, std::sync::atomic::Ordering::SeqCst);
                leading.cancelled_owned().await;
            })
            .await;
        finish(server).await;
        assert!(worked.into_inner(), "work ran while leading");
        let err = result.unwrap_err();
        assert_eq!(err.kind(), "lost_leadership", "{err}");
        assert_eq!(metrics.leader.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_stops_the_work_and_releases_the_lease() {
        let (client, verifier) = fixtures::mock_client();
        let server = verifier.run(vec![
            Expect::new(Method::GET, PATH, Reply::Status(StatusCode::NOT_FOUND)),
            Expect::new(
                Method::POST,
                "/apis/coordination.k8s.io/v1/namespaces/courier-system/leases",
                Reply::Echo,
            ),
            Expect::new(Method::GET, PATH, Reply::Json(lease("operator-a", 0, 0))),
            Expect::new(Method::PUT, PATH, Reply::Echo),
        ]);
        let metrics = metrics();
        let stop = CancellationToken::new();
        let e = elector(client);
        let leader_while_working = std::sync::atomic::AtomicI64::new(-1);
        let result = e
            .lead(stop.clone(), &metrics, |leading| async {
                leader_while_working
                    .store(metrics.leader.get(), std::sync::atomic::Ordering::SeqCst);
                stop.cancel(); // SIGTERM while leading
                leading.cancelled_owned().await;
            })
            .await;
        assert_eq!(leader_while_working.into_inner(), 1);
        result.unwrap();
        let seen = finish(server).await;
        assert_eq!(seen[3].body["spec"].get("holderIdentity"), None, "released on shutdown");
        assert_eq!(metrics.leader.get(), 0);
    }
}
