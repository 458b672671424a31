//! The `rpc.chat.membership` responder: the broadcaster asks "is user U a member of room R?"
//! before it admits a `chat:<R>` subscription, and never reads MongoDB itself. Every api replica
//! serves the subject in queue group `api`, so each request gets one answer. When the store
//! cannot answer, no reply is sent: the broadcaster's timeout refuses the subscription (fail
//! closed) instead of trusting a guess. Answers go only to a broadcaster's inbox
//! ([`REPLY_PREFIX`]): a request naming any other reply subject is dropped and counted, so a
//! compromised broadcaster cannot make the api publish where it may not publish itself. The api
//! is ready only once nats-server has the subscription (a round trip after subscribing, not just
//! a flush): before that, a question would find no responder and a member's subscription would
//! be refused.

use std::{
    sync::{
        Arc, LazyLock,
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

/// Where answers may go: the broadcasters' reply subjects (`courier_core::config::connect_nats`
/// takes them under `_INBOX.courier-broadcaster.`, the only user allowed to subscribe there).
pub const REPLY_PREFIX: &str = "_INBOX.courier-broadcaster.";

/// Requests dropped for their reply subject (`courier_chat_membership_replies_refused_total`).
pub static REFUSED_REPLIES: LazyLock<prometheus_client::metrics::counter::Counter> =
    LazyLock::new(Default::default);

/// Whether an answer may be published to `reply`: a plain subject under [`REPLY_PREFIX`].
fn may_answer(reply: &str) -> bool {
    reply.strip_prefix(REPLY_PREFIX).is_some_and(|rest| {
        !rest.is_empty()
            && rest.split('.').all(|token| !token.is_empty() && token != "*" && token != ">")
            && !rest.contains(char::is_whitespace)
    })
}

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
                    if !may_answer(&reply_to) {
                        REFUSED_REPLIES.inc();
                        tracing::warn!(reply = %reply_to, "membership question dropped: its reply subject is not a broadcaster's inbox");
                        return;
                    }
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

    #[test]
    fn answers_go_only_to_a_broadcasters_inbox() {
        assert!(may_answer("_INBOX.courier-broadcaster.AbC123.9"));
        for elsewhere in [
            "$JS.API.STREAM.PURGE.EVENTS",
            "events.chat.r1.message",
            "tasks.high.pets.enrich",
            "_INBOX.courier-api.x",
            "_INBOX.courier-broadcaster.",
            "_INBOX.courier-broadcaster",
            "_INBOX.courier-broadcaster.>",
            "_INBOX.courier-broadcaster.a..b",
            "_INBOX.x",
        ] {
            assert!(!may_answer(elsewhere), "{elsewhere}");
        }
    }
}
