//! Limits on the writes that produce events, so that no single writer can fill the streams (a
//! full EVENTS stream refuses every write on the platform). A writer is the signed-in user, else
//! the client address. Each write of a document (the seed aliases forward to those routes) counts
//! against the collection's `rate:` (default `COURIER_WRITE_RATE`), each chat change against
//! `COURIER_CHAT_WRITE_RATE`, and everything a writer's writes put in the streams against one
//! budget of `COURIER_WRITE_BYTES_PER_HOUR`. The counting is `auth::limiter::WriteLimiter`'s.

use std::{
    convert::Infallible,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
};

use axum::{
    extract::{ConnectInfo, FromRequestParts},
    http::request::Parts,
};
use courier_core::rate::Rate;
use courier_store::OutboxRecord;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

use crate::{
    auth::{Caller, WriteLimiter, WriteRefusal},
    collections::CollectionDef,
    config::ApiConfig,
    error::ApiError,
    state::AppState,
};

/// The bucket of chat changes (no collection may be named `chat`).
const CHAT_BUCKET: &str = "chat";

/// The client address rate limits apply to (`courier_core::client_addr`: the peer, or the
/// `X-Forwarded-For` entry the trusted proxies vouch for); unspecified when the request carries
/// no peer (a router called without a socket, in tests).
pub struct ClientAddress(pub IpAddr);

impl FromRequestParts<AppState> for ClientAddress {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Infallible> {
        let address = match parts.extensions.get::<ConnectInfo<SocketAddr>>() {
            Some(ConnectInfo(peer)) => state.trusted_proxies.client_of(peer.ip(), &parts.headers),
            None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        };
        Ok(ClientAddress(address))
    }
}

/// The caller of a write (401 for a bad token, as [`Caller`]) and whom the write counts against.
pub struct Writing {
    pub caller: Caller,
    pub writer: Writer,
}

impl FromRequestParts<AppState> for Writing {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let Ok(ClientAddress(address)) = ClientAddress::from_request_parts(parts, state).await;
        let writer = Writer::of(&caller, address);
        Ok(Writing { caller, writer })
    }
}

/// Whom a write counts against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Writer(String);

impl Writer {
    /// The signed-in caller, else the client address.
    pub fn of(caller: &Caller, address: IpAddr) -> Self {
        match &caller.0 {
            Some(user) => Writer::user(&user.id),
            None => Writer(format!("address:{address}")),
        }
    }

    pub fn user(id: &str) -> Self {
        Writer(format!("user:{id}"))
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: &'static str,
}

/// The write limits with their settings and refusal counter.
pub struct WriteLimits {
    limiter: WriteLimiter,
    default_rate: Rate,
    chat_rate: Rate,
    refused: Family<LimitLabels, Counter>,
}

impl WriteLimits {
    pub fn new(config: &ApiConfig, registry: &mut Registry) -> Arc<Self> {
        let refused = Family::<LimitLabels, Counter>::default();
        for limit in ["rate", "bytes"] {
            let _ = refused.get_or_create(&LimitLabels { limit });
        }
        registry.register(
            "courier_writes_limited",
            "Writes refused with 429 by the per-writer write limits (limit: rate or bytes)",
            refused.clone(),
        );
        Arc::new(WriteLimits {
            limiter: WriteLimiter::new(config.write_bytes_per_hour),
            default_rate: config.write_rate,
            chat_rate: config.chat_write_rate,
            refused,
        })
    }

    /// Counts a write of `def`'s documents by `writer`, or 429 with `Retry-After`.
    pub fn admit_document(&self, def: &CollectionDef, writer: &Writer) -> Result<(), ApiError> {
        let rate = def.rate().unwrap_or(self.default_rate);
        self.admit(def.name(), rate, writer, "writes to this collection")
    }

    /// Counts a chat change (a message, an edit, a reaction, a member or room change, a read
    /// marker) by `writer`, or 429 with `Retry-After`.
    pub fn admit_chat(&self, writer: &Writer) -> Result<(), ApiError> {
        self.admit(CHAT_BUCKET, self.chat_rate, writer, "chat changes")
    }

    fn admit(
        &self,
        bucket: &str,
        rate: Rate,
        writer: &Writer,
        what: &'static str,
    ) -> Result<(), ApiError> {
        self.limiter.admit(bucket, rate, &writer.0).map_err(|refusal| {
            let (limit, what, wait) = match refusal {
                WriteRefusal::Rate(wait) => ("rate", what, wait),
                WriteRefusal::Bytes(wait) => ("bytes", "bytes of events this hour", wait),
            };
            self.refused.get_or_create(&LimitLabels { limit }).inc();
            tracing::info!(writer = %writer.0, bucket, limit, "write refused by the write limits");
            ApiError::too_many(what, wait)
        })
    }

    /// Spends `writer`'s byte budget on what a committed write put in the streams.
    pub fn charge(&self, writer: &Writer, records: &[OutboxRecord]) {
        let bytes: usize = records.iter().map(|r| r.payload.len()).sum();
        self.limiter.charge(&writer.0, bytes as u64);
    }
}
