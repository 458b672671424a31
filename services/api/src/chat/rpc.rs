//! The `rpc.chat.membership` responder: the broadcaster asks "is user U a member of room R?"
//! before it admits a `chat:<R>` subscription, and never reads MongoDB itself. Every api replica
//! serves the subject in queue group `api`, so each request gets one answer. When the store
//! cannot answer, no reply is sent: the broadcaster's timeout refuses the subscription (fail
//! closed) instead of trusting a guess. The api is ready only once nats-server has the
//! subscription (a round trip after subscribing, not just a flush): before that, a question
//! would find no responder and a member's subscription would be refused.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use courier_core::{
    backoff::Backoff,
    chat::{MembershipReply, MembershipRequest},
    subjects::{API_QUEUE_GROUP, CHAT_MEMBERSHIP_RPC},
};
use courier_store::chat::ChatStore;
use futures::StreamExt;
use mongodb::bson::oid::ObjectId;
use tokio_util::sync::CancellationToken;

/// Requests answered at once per replica (more wait in the subscription's buffer).
const CONCURRENT_LOOKUPS: usize = 64;

/// Serves membership requests until `shutdown`; sets `serving` once the server has the
/// subscription.
pub async fn serve_membership(
    nats: async_nats::Client,
    store: ChatStore,
    serving: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_secs(5));
    while !shutdown.is_cancelled() {
        let subscriber = match nats
            .queue_subscribe(CHAT_MEMBERSHIP_RPC, API_QUEUE_GROUP.to_owned())
            .await
        {
            Ok(subscriber) => subscriber,
            Err(err) => {
                tracing::warn!(%err, retry_in = ?backoff.next_delay(), "cannot subscribe to {CHAT_MEMBERSHIP_RPC}");
                if !backoff.wait(&shutdown).await {
                    break;
                }
                continue;
            }
        };
        backoff.reset();
        // The subscription counts once a later request on this connection is answered.
        while let Err(err) = courier_core::jetstream::server_round_trip(&nats).await {
            tracing::debug!(%err, "waiting for nats-server to confirm the {CHAT_MEMBERSHIP_RPC} subscription");
            if !backoff.wait(&shutdown).await {
                return;
            }
        }
        backoff.reset();
        serving.store(true, Ordering::Release);
        tracing::info!("serving {CHAT_MEMBERSHIP_RPC} in queue group {API_QUEUE_GROUP}");
        subscriber
            .take_until(shutdown.cancelled())
            .for_each_concurrent(CONCURRENT_LOOKUPS, |message| {
                let (nats, store) = (nats.clone(), store.clone());
                async move {
                    let Some(reply_to) = message.reply else { return };
                    let Some(reply) = answer(&store, &message.payload).await else { return };
                    let body = serde_json::to_vec(&reply).expect("replies serialize");
                    if let Err(err) = nats.publish(reply_to, body.into()).await {
                        tracing::debug!(%err, "membership reply not sent");
                    }
                }
            })
            .await;
    }
}

/// The request's ids, or `None` if it is malformed (which is answered "not a member").
fn parse(payload: &[u8]) -> Option<(ObjectId, ObjectId)> {
    let request: MembershipRequest = serde_json::from_slice(payload).ok()?;
    Some((ObjectId::parse_str(&request.room_id).ok()?, ObjectId::parse_str(&request.user_id).ok()?))
}

/// The reply to one request; `None` when the store could not say.
pub async fn answer(store: &ChatStore, payload: &[u8]) -> Option<MembershipReply> {
    let Some((room, user)) = parse(payload) else {
        return Some(MembershipReply { member: false, role: None });
    };
    match store.membership(room, user).await {
        Ok(found) => Some(MembershipReply { member: found.is_some(), role: found.map(|m| m.role) }),
        Err(err) => {
            tracing::warn!(%err, "membership lookup failed; not answering (the asker fails closed)");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_requests_name_no_room() {
        for bad in [
            &b"nope"[..],
            br#"{"room_id":"x","user_id":"y"}"#,
            br#"{"room_id":"65f0c0ffee0123456789abcd"}"#,
        ] {
            assert_eq!(parse(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        let good =
            br#"{"room_id":"65f0c0ffee0123456789abcd","user_id":"65f0c0ffee0123456789abce"}"#;
        assert!(parse(good).is_some());
    }
}
