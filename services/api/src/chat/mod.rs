//! What chat needs in the api besides its HTTP handlers (`routes/chats`): the per-user rate
//! limits, the chat metrics, and the `rpc.chat.membership` responder the broadcaster asks.

pub mod metrics;
pub mod rpc;

use std::sync::Arc;

use crate::{auth::RateLimiter, config::ApiConfig, error::ApiError};

pub use metrics::ChatMetrics;

/// Chat's shared state: limits and metrics.
pub struct Chat {
    pub sends: RateLimiter,
    pub room_creations: RateLimiter,
    pub metrics: Arc<ChatMetrics>,
}

impl Chat {
    pub fn new(config: &ApiConfig, metrics: Arc<ChatMetrics>) -> Self {
        Chat {
            sends: RateLimiter::new(config.chat_send_limit, config.chat_send_window),
            room_creations: RateLimiter::new(config.chat_room_limit, config.chat_room_window),
            metrics,
        }
    }

    /// Counts a send by `user_id`, or 429 with `Retry-After`.
    pub fn admit_send(&self, user_id: &str) -> Result<(), ApiError> {
        self.sends.admit(user_id).map_err(|wait| {
            self.metrics.rate_limited(metrics::LimitedAction::Send);
            ApiError::too_many("messages", wait)
        })
    }

    /// Counts a room creation by `user_id`, or 429 with `Retry-After`.
    pub fn admit_room_creation(&self, user_id: &str) -> Result<(), ApiError> {
        self.room_creations.admit(user_id).map_err(|wait| {
            self.metrics.rate_limited(metrics::LimitedAction::CreateRoom);
            ApiError::too_many("rooms created", wait)
        })
    }
}
