//! Reconciling one `Collection`: check it (the api's rules) and record the verdict in
//! its status, with an Event when acceptance changes. The Courier controller picks up the
//! change through its watch and re-renders the ConfigMap.

use std::sync::Arc;

use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        controller::Action,
        events::{Event, EventType},
    },
};
use serde_json::json;

use super::Context;
use crate::{
    Error, Result,
    collections::{self, ACCEPTED_MESSAGE},
    crd::{Collection, CollectionStatus},
    resources::FIELD_MANAGER,
};

pub async fn reconcile(collection: Arc<Collection>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started("collection");
    let namespace = collection.namespace().ok_or_else(|| Error::MissingNamespace {
        kind: "Collection",
        name: collection.name_any(),
    })?;
    let name = collection.name_any();
    let verdict = collections::validate(&collection);
    let status = CollectionStatus {
        accepted: verdict.is_ok(),
        message: match &verdict {
            Ok(_) => ACCEPTED_MESSAGE.to_owned(),
            Err(reason) => reason.clone(),
        },
        observed_generation: collection.metadata.generation,
    };
    if collection.status.as_ref() != Some(&status) {
        let api = Api::<Collection>::namespaced(ctx.client.clone(), &namespace);
        let patch =
            json!({"apiVersion": "courier.dev/v1alpha1", "kind": "Collection", "status": status});
        api.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
            .await?;
        let previous = collection.status.as_ref();
        if previous.map(|s| (s.accepted, &s.message)) != Some((status.accepted, &status.message)) {
            let (type_, reason) = if status.accepted {
                (EventType::Normal, "Accepted")
            } else {
                (EventType::Warning, "Rejected")
            };
            tracing::info!(collection = %format!("{namespace}/{name}"), accepted = status.accepted, message = %status.message, "collection checked");
            let event = Event {
                type_,
                reason: reason.into(),
                note: Some(status.message.clone()),
                action: "Validate".into(),
                secondary: None,
            };
            ctx.recorder.publish(&event, &collection.object_ref(&())).await?;
        }
    }
    ctx.succeeded(&super::object_key(collection.as_ref()));
    Ok(Action::await_change())
}
