//! Computing a Courier's status from what was observed and decided: per-component replicas,
//! the `Ready` / `Progressing` / `Degraded` conditions (transition times kept while a
//! condition's status holds), backlog and the last scale decision.

use k8s_openapi::api::apps::v1::Deployment;

use crate::autoscale::Decision;
use crate::collections::Aggregate;
use crate::crd::{
    Condition, ConditionStatus,
    courier::{ComponentStatus, CourierStatus, ScaleDecision},
};
use crate::resources::Component;

/// One workload as seen in the Deployment store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    pub component: Component,
    pub exists: bool,
    pub desired: i32,
    pub ready: i32,
    /// Its Deployment finished rolling out the spec the operator wants (and was not just patched).
    pub rolled_out: bool,
}

impl Observation {
    pub fn of(
        component: Component,
        deployment: Option<&Deployment>,
        desired: i32,
        just_applied: bool,
    ) -> Self {
        let Some(deployment) = deployment else {
            return Observation { component, exists: false, desired, ready: 0, rolled_out: false };
        };
        let status = deployment.status.clone().unwrap_or_default();
        let ready = status.ready_replicas.unwrap_or(0);
        let current_generation = status.observed_generation >= deployment.metadata.generation;
        let rolled_out = !just_applied
            && current_generation
            && status.updated_replicas.unwrap_or(0) >= desired
            && status.available_replicas.unwrap_or(0) >= desired
            && ready >= desired;
        Observation { component, exists: true, desired, ready, rolled_out }
    }
}

/// What happened to the backlog read this round.
#[derive(Debug, Clone, PartialEq)]
pub enum Scaling {
    /// Autoscaling is off; `spec.worker.replicas` applies.
    Disabled,
    Decided(Decision),
    /// The backlog could not be read; the worker count was left as it was.
    Unavailable(String),
}

pub struct Input<'a> {
    pub generation: Option<i64>,
    pub previous: Option<&'a CourierStatus>,
    pub observations: &'a [Observation],
    /// `Kind/name` of every object patched this round.
    pub applied: &'a [String],
    pub collections: &'a Aggregate,
    pub scaling: &'a Scaling,
    /// Set when the worker count changed this round.
    pub scale_decision: Option<ScaleDecision>,
    /// RFC 3339 now.
    pub now: &'a str,
}

/// Reason of the conditions of a Courier the operator refuses (`policy.rs`).
pub const POLICY_VIOLATION: &str = "PolicyViolation";

/// The status of a refused Courier: not ready, not progressing, degraded, each saying why;
/// the rest (replica counts, collections, backlog) kept from the previous status.
pub fn refused(
    generation: Option<i64>,
    previous: Option<&CourierStatus>,
    violations: &[String],
    now: &str,
) -> CourierStatus {
    let message = format!("not applied: {}", violations.join("; "));
    let condition = |type_: &str, status: ConditionStatus| Condition {
        type_: type_.to_owned(),
        status,
        reason: POLICY_VIOLATION.to_owned(),
        message: message.clone(),
        last_transition_time: previous
            .and_then(|p| p.conditions.iter().find(|c| c.type_ == type_))
            .filter(|c| c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| now.to_owned()),
        observed_generation: generation,
    };
    CourierStatus {
        observed_generation: generation,
        conditions: vec![
            condition("Ready", ConditionStatus::False),
            condition("Progressing", ConditionStatus::False),
            condition("Degraded", ConditionStatus::True),
        ],
        ..previous.cloned().unwrap_or_default()
    }
}

pub fn compute(input: Input<'_>) -> CourierStatus {
    let previous = input.previous;
    let component_status = |component: Component| {
        input
            .observations
            .iter()
            .find(|o| o.component == component)
            .map(|o| ComponentStatus { desired_replicas: o.desired, ready_replicas: o.ready })
            .unwrap_or_default()
    };
    let summary = input
        .observations
        .iter()
        .map(|o| format!("{} {}/{}", o.component.as_str(), o.ready, o.desired))
        .collect::<Vec<_>>()
        .join(", ");
    let condition = |type_: &str, status: ConditionStatus, reason: &str, message: String| {
        let last_transition_time = previous
            .and_then(|p| p.conditions.iter().find(|c| c.type_ == type_))
            .filter(|c| c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| input.now.to_owned());
        Condition {
            type_: type_.to_owned(),
            status,
            reason: reason.to_owned(),
            message,
            last_transition_time,
            observed_generation: input.generation,
        }
    };

    let ready = if input.observations.iter().any(|o| !o.exists) {
        condition(
            "Ready",
            ConditionStatus::False,
            "Creating",
            format!("creating workloads ({summary} ready)"),
        )
    } else if input.observations.iter().all(|o| o.rolled_out) {
        condition("Ready", ConditionStatus::True, "AllReplicasReady", format!("{summary} ready"))
    } else {
        condition("Ready", ConditionStatus::False, "ReplicasNotReady", format!("{summary} ready"))
    };

    let rolling: Vec<&str> =
        input.observations.iter().filter(|o| !o.rolled_out).map(|o| o.component.as_str()).collect();
    let progressing = if !input.applied.is_empty() {
        condition(
            "Progressing",
            ConditionStatus::True,
            "Applied",
            format!("applied {}", input.applied.join(", ")),
        )
    } else if !rolling.is_empty() {
        condition(
            "Progressing",
            ConditionStatus::True,
            "RollingOut",
            format!("waiting for {}", rolling.join(", ")),
        )
    } else {
        condition(
            "Progressing",
            ConditionStatus::False,
            "Stable",
            "every workload is rolled out".to_owned(),
        )
    };

    let degraded = if let Scaling::Unavailable(reason) = input.scaling {
        condition(
            "Degraded",
            ConditionStatus::True,
            "BacklogUnavailable",
            format!("worker autoscaling paused: {reason}"),
        )
    } else if !input.collections.rejected.is_empty() {
        let list = input
            .collections
            .rejected
            .iter()
            .map(|(name, reason)| format!("{name}: {reason}"))
            .collect::<Vec<_>>()
            .join("; ");
        condition(
            "Degraded",
            ConditionStatus::True,
            "CollectionsRejected",
            format!("not served: {list}"),
        )
    } else {
        condition(
            "Degraded",
            ConditionStatus::False,
            "AsExpected",
            "nothing is degraded".to_owned(),
        )
    };

    CourierStatus {
        observed_generation: input.generation,
        conditions: vec![ready, progressing, degraded],
        api: component_status(Component::Api),
        broadcaster: component_status(Component::Broadcaster),
        worker: component_status(Component::Worker),
        task_backlog: match input.scaling {
            Scaling::Decided(d) => Some(i64::try_from(d.backlog).unwrap_or(i64::MAX)),
            _ => None,
        },
        collections: input.collections.file.collections.iter().map(|c| c.name.clone()).collect(),
        last_scale_decision: input
            .scale_decision
            .or_else(|| previous.and_then(|p| p.last_scale_decision.clone())),
    }
}

#[cfg(test)]
mod tests {
    use courier_core::collection_spec::CollectionsFile;

    use super::*;

    fn obs(component: Component, ready: i32, rolled_out: bool) -> Observation {
        Observation { component, exists: true, desired: 2, ready, rolled_out }
    }

    fn empty() -> Aggregate {
        Aggregate { file: CollectionsFile { collections: vec![] }, rejected: vec![] }
    }

    fn status_of(c: &CourierStatus, type_: &str) -> (ConditionStatus, String, String) {
        let c = c.conditions.iter().find(|c| c.type_ == type_).unwrap();
        (c.status, c.reason.clone(), c.last_transition_time.clone())
    }

    #[test]
    fn all_rolled_out_is_ready_and_stable() {
        let observations = [
            obs(Component::Api, 2, true),
            obs(Component::Broadcaster, 2, true),
            obs(Component::Worker, 2, true),
        ];
        let status = compute(Input {
            generation: Some(3),
            previous: None,
            observations: &observations,
            applied: &[],
            collections: &empty(),
            scaling: &Scaling::Disabled,
            scale_decision: None,
            now: "2026-01-01T00:00:00Z",
        });
        assert_eq!(status_of(&status, "Ready").0, ConditionStatus::True);
        assert_eq!(status_of(&status, "Progressing").1, "Stable");
        assert_eq!(status_of(&status, "Degraded").0, ConditionStatus::False);
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(status.api, ComponentStatus { desired_replicas: 2, ready_replicas: 2 });
    }

    #[test]
    fn transition_time_is_kept_while_the_status_holds() {
        let observations = [
            obs(Component::Api, 1, false),
            obs(Component::Broadcaster, 2, true),
            obs(Component::Worker, 2, true),
        ];
        let first = compute(Input {
            generation: Some(1),
            previous: None,
            observations: &observations,
            applied: &[],
            collections: &empty(),
            scaling: &Scaling::Unavailable("nats down".into()),
            scale_decision: None,
            now: "2026-01-01T00:00:00Z",
        });
        assert_eq!(status_of(&first, "Ready").1, "ReplicasNotReady");
        assert_eq!(status_of(&first, "Degraded").1, "BacklogUnavailable");
        let second = compute(Input {
            generation: Some(1),
            previous: Some(&first),
            observations: &observations,
            applied: &[],
            collections: &empty(),
            scaling: &Scaling::Unavailable("nats down".into()),
            scale_decision: None,
            now: "2026-01-01T00:05:00Z",
        });
        assert_eq!(second, first, "nothing changed, so nothing to patch");
        let all_ready = [
            obs(Component::Api, 2, true),
            obs(Component::Broadcaster, 2, true),
            obs(Component::Worker, 2, true),
        ];
        let third = compute(Input {
            generation: Some(1),
            previous: Some(&second),
            observations: &all_ready,
            applied: &[],
            collections: &empty(),
            scaling: &Scaling::Unavailable("nats down".into()),
            scale_decision: None,
            now: "2026-01-01T00:06:00Z",
        });
        assert_eq!(status_of(&third, "Ready").2, "2026-01-01T00:06:00Z");
        assert_eq!(status_of(&third, "Degraded").2, "2026-01-01T00:00:00Z");
    }
}
