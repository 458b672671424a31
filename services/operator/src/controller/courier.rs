//! Reconciling one `Courier`: aggregate its Collections, decide the worker count (autoscaling),
//! server-side apply the objects whose content changed, publish Events, write status.

use std::sync::Arc;

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Service, ServiceAccount},
    policy::v1::PodDisruptionBudget,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        controller::Action,
        events::{Event, EventType},
        reflector::ObjectRef,
    },
};
use serde::Serialize;
use serde_json::json;

use super::Context;
use crate::{
    Error, Result,
    autoscale::Decision,
    collections,
    crd::{
        Courier,
        courier::{CourierStatus, ScaleDecision},
    },
    metrics::{CourierLabels, ScaleLabels},
    resources::{self, BuildInput, Child, Component, FIELD_MANAGER},
    status::{self, Observation, Scaling},
};

pub async fn reconcile(courier: Arc<Courier>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started("courier");
    ctx.stores.wait_ready().await;
    let key = super::object_key(courier.as_ref());
    if courier.meta().deletion_timestamp.is_some() {
        // Owner references make Kubernetes delete the children; only forget local state.
        ctx.stabilizer.forget(&key);
        return Ok(Action::await_change());
    }
    let action = apply(&courier, &ctx).await?;
    ctx.succeeded(&key);
    Ok(action)
}

async fn apply(courier: &Courier, ctx: &Context) -> Result<Action> {
    let namespace = courier
        .namespace()
        .ok_or_else(|| Error::MissingNamespace { kind: "Courier", name: courier.name_any() })?;
    let name = courier.name_any();
    let key = format!("{namespace}/{name}");
    let labels = CourierLabels { namespace: namespace.clone(), courier: name.clone() };

    // 0. What it asks for must be allowed; otherwise nothing is applied.
    let violations = ctx.policy.violations(courier);
    if !violations.is_empty() {
        return refuse(courier, ctx, &namespace, &name, &violations).await;
    }

    // 1. The collections this Courier serves.
    let selector = courier.spec.collection_selector.clone().unwrap_or_default();
    let selected: Vec<_> = ctx
        .stores
        .collections
        .state()
        .into_iter()
        .filter(|c| {
            c.namespace().as_deref() == Some(namespace.as_str()) && selector.matches(c.labels())
        })
        .collect();
    let aggregate = collections::aggregate(selected.iter().map(Arc::as_ref));

    // 2. Worker replicas: the autoscaler's decision, or the spec.
    let worker_ref =
        ObjectRef::<Deployment>::new(&Component::Worker.object_name(courier)).within(&namespace);
    let live_worker = ctx.stores.deployments.get(&worker_ref);
    let autoscaling = &courier.spec.worker.autoscaling;
    let (scaling, worker_replicas) = if autoscaling.enabled {
        let current = live_worker
            .as_ref()
            .and_then(|d| d.spec.as_ref()?.replicas)
            .or_else(|| courier.status.as_ref().map(|s| s.worker.desired_replicas))
            .unwrap_or(autoscaling.min_replicas)
            .clamp(
                autoscaling.min_replicas,
                autoscaling.max_replicas.max(autoscaling.min_replicas),
            );
        match ctx.backlog.backlog(&courier.spec.nats_url).await {
            Ok(backlog) => {
                let decision = ctx.stabilizer.decide(
                    &key,
                    ctx.clock.now(),
                    backlog.total(),
                    current,
                    autoscaling,
                );
                ctx.metrics
                    .backlog
                    .get_or_create(&labels)
                    .set(i64::try_from(decision.backlog).unwrap_or(i64::MAX));
                (Scaling::Decided(decision), decision.desired)
            }
            Err(err) => {
                tracing::warn!(courier = %key, %err, "task backlog unavailable; keeping the worker count");
                (Scaling::Unavailable(err.to_string()), current)
            }
        }
    } else {
        (Scaling::Disabled, courier.spec.worker.component.replicas)
    };
    ctx.metrics.desired_workers.get_or_create(&labels).set(i64::from(worker_replicas));

    // 3. Apply what changed.
    let children = resources::build(
        courier,
        &BuildInput { collections_yaml: collections::to_yaml(&aggregate.file), worker_replicas },
    )?;
    let mut applied = Vec::new();
    for child in &children {
        let live = ctx.stores.live_hash(child);
        let unchanged =
            matches!(&live, Some(Some(hash)) if Some(hash.as_str()) == child.applied_hash());
        if unchanged {
            continue;
        }
        apply_child(ctx, &namespace, child).await?;
        tracing::info!(courier = %key, object = %child.describe(), existed = live.is_some(), "applied");
        applied.push(child.describe());
    }

    // 4. Events for meaningful changes.
    let reference = courier.object_ref(&());
    if !applied.is_empty() {
        publish(
            ctx,
            &reference,
            EventType::Normal,
            "Applied",
            "Apply",
            format!("applied {}", applied.join(", ")),
        )
        .await?;
    }
    let scale_decision = match &scaling {
        Scaling::Decided(decision) if decision.changed() => Some(
            record_scale(
                ctx,
                &reference,
                &labels,
                decision,
                autoscaling.target_pending_per_replica,
            )
            .await?,
        ),
        _ => None,
    };
    let was_unavailable = courier.status.as_ref().is_some_and(|s| {
        s.conditions.iter().any(|c| c.type_ == "Degraded" && c.reason == "BacklogUnavailable")
    });
    if let (Scaling::Unavailable(reason), false) = (&scaling, was_unavailable) {
        publish(
            ctx,
            &reference,
            EventType::Warning,
            "BacklogUnavailable",
            "Autoscale",
            reason.clone(),
        )
        .await?;
    }

    // 5. Status, patched only when it changed.
    let observations: Vec<Observation> = children
        .iter()
        .filter_map(|child| match child {
            Child::Deployment(d) => Some(d),
            _ => None,
        })
        .zip(Component::ALL)
        .map(|(desired, component)| {
            let live = ctx
                .stores
                .deployments
                .get(&ObjectRef::new(&component.object_name(courier)).within(&namespace));
            let replicas = desired.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
            Observation::of(
                component,
                live.as_deref(),
                replicas,
                applied.contains(&format!("Deployment/{}", component.object_name(courier))),
            )
        })
        .collect();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let new_status = status::compute(status::Input {
        generation: courier.metadata.generation,
        previous: courier.status.as_ref(),
        observations: &observations,
        applied: &applied,
        collections: &aggregate,
        scaling: &scaling,
        scale_decision,
        now: &now,
    });
    if courier.status.as_ref() != Some(&new_status) {
        patch_status(ctx, &namespace, &name, &new_status).await?;
    }

    Ok(Action::requeue(if autoscaling.enabled {
        ctx.timings.poll_interval
    } else {
        ctx.timings.resync_interval
    }))
}

/// A Courier breaking the operator's policy: no object is applied (workloads from an earlier,
/// allowed spec stay as they were), a Warning Event when it becomes refused, and the status says
/// why.
async fn refuse(
    courier: &Courier,
    ctx: &Context,
    namespace: &str,
    name: &str,
    violations: &[String],
) -> Result<Action> {
    tracing::warn!(courier = %format!("{namespace}/{name}"), ?violations, "refused: nothing applied");
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let new_status =
        status::refused(courier.metadata.generation, courier.status.as_ref(), violations, &now);
    let was_refused = courier.status.as_ref().is_some_and(|s| {
        s.conditions.iter().any(|c| c.reason == status::POLICY_VIOLATION && c.type_ == "Ready")
    });
    if !was_refused {
        publish(
            ctx,
            &courier.object_ref(&()),
            EventType::Warning,
            status::POLICY_VIOLATION,
            "Validate",
            format!("nothing applied: {}", violations.join("; ")),
        )
        .await?;
    }
    if courier.status.as_ref() != Some(&new_status) {
        patch_status(ctx, namespace, name, &new_status).await?;
    }
    Ok(Action::requeue(ctx.timings.resync_interval))
}

async fn record_scale(
    ctx: &Context,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    labels: &CourierLabels,
    decision: &Decision,
    target: i32,
) -> Result<ScaleDecision> {
    let direction = if decision.desired > decision.current { "up" } else { "down" };
    let reason = format!(
        "backlog {} at {} per replica recommends {}; scaled {direction} from {} to {}",
        decision.backlog, target, decision.recommended, decision.current, decision.desired
    );
    ctx.metrics
        .scale_decisions
        .get_or_create(&ScaleLabels {
            namespace: labels.namespace.clone(),
            courier: labels.courier.clone(),
            direction,
        })
        .inc();
    publish(ctx, reference, EventType::Normal, "Scaled", "Autoscale", reason.clone()).await?;
    Ok(ScaleDecision {
        time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        from_replicas: decision.current,
        to_replicas: decision.desired,
        backlog: i64::try_from(decision.backlog).unwrap_or(i64::MAX),
        reason,
    })
}

async fn publish(
    ctx: &Context,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) -> Result<()> {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    ctx.recorder.publish(&event, reference).await?;
    Ok(())
}

async fn apply_child(ctx: &Context, namespace: &str, child: &Child) -> Result<()> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let client = ctx.client.clone();
    async fn ssa<K>(api: Api<K>, name: &str, params: &PatchParams, obj: &K) -> Result<()>
    where
        K: Resource + Clone + Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        api.patch(name, params, &Patch::Apply(obj)).await?;
        Ok(())
    }
    match child {
        Child::ServiceAccount(o) => {
            ssa(Api::<ServiceAccount>::namespaced(client, namespace), child.name(), &params, o)
                .await
        }
        Child::ConfigMap(o) => {
            ssa(Api::<ConfigMap>::namespaced(client, namespace), child.name(), &params, o).await
        }
        Child::Deployment(o) => {
            ssa(Api::<Deployment>::namespaced(client, namespace), child.name(), &params, o).await
        }
        Child::Service(o) => {
            ssa(Api::<Service>::namespaced(client, namespace), child.name(), &params, o).await
        }
        Child::PodDisruptionBudget(o) => {
            ssa(Api::<PodDisruptionBudget>::namespaced(client, namespace), child.name(), &params, o)
                .await
        }
    }
}

async fn patch_status(
    ctx: &Context,
    namespace: &str,
    name: &str,
    status: &CourierStatus,
) -> Result<()> {
    let api = Api::<Courier>::namespaced(ctx.client.clone(), namespace);
    let patch = json!({
        "apiVersion": "courier.dev/v1alpha1",
        "kind": "Courier",
        "status": status,
    });
    api.patch_status(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
        .await?;
    Ok(())
}
