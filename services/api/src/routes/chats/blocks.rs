//! My block list: `GET /chats/blocks`, `PUT` and `DELETE /chats/blocks/{username}`. Someone I
//! block can neither start a direct room with me nor add me to a group room (nor create one with
//! me in it), and in a direct room we share neither of us can send while the block lasts. A
//! block is private: it emits no event.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use serde_json::json;

use super::{Me, invalid, normalize_username};
use crate::{auth::Authenticated, error::ApiError, state::AppState, writes::Writer};

const WHAT: &str = "chat block";

/// Entries a block list may hold.
pub const MAX_BLOCKS: u64 = 1000;

/// `GET /chats/blocks`: whom I block, oldest first.
pub async fn list(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
) -> Result<Json<serde_json::Value>, ApiError> {
    let me = Me::of(&user)?;
    let blocks = state.store.chat().blocks_of(me.id, MAX_BLOCKS as i64).await?;
    let items: Vec<_> = blocks
        .iter()
        .map(|b| {
            json!({
                "user_id": b.blocked_id.to_hex(),
                "username": b.blocked_username,
                "since": b.created_at.try_to_rfc3339_string().unwrap_or_default(),
            })
        })
        .collect();
    Ok(Json(json!({"items": items})))
}

/// `PUT /chats/blocks/{username}`: 204, also when already blocked.
pub async fn block(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    Path(username): Path<String>,
) -> Result<StatusCode, ApiError> {
    let me = Me::of(&user)?;
    // Counted first, like every chat change: the lookup below must not be a free name oracle.
    state.writes.admit_chat(&Writer::user(&me.id.to_hex()))?;
    let username = normalize_username(&username);
    if username == me.username {
        return Err(invalid(WHAT, "username", "you cannot block yourself"));
    }
    let chat_store = state.store.chat();
    let Some(other) = chat_store.users_by_usernames(std::slice::from_ref(&username)).await?.pop()
    else {
        return Err(ApiError::NotFound(format!("no user named '{username}'")));
    };
    if chat_store.block_count(me.id).await? >= MAX_BLOCKS {
        return Err(ApiError::Conflict(format!(
            "a block list holds at most {MAX_BLOCKS} users; unblock someone first"
        )));
    }
    if chat_store.block(me.id, &other).await? {
        tracing::info!(user_id = %me.id, blocked = %other.id, "user blocked");
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /chats/blocks/{username}`: 204, also when not blocked.
pub async fn unblock(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    Path(username): Path<String>,
) -> Result<StatusCode, ApiError> {
    let me = Me::of(&user)?;
    state.writes.admit_chat(&Writer::user(&me.id.to_hex()))?;
    let username = normalize_username(&username);
    let chat_store = state.store.chat();
    if let Some(other) = chat_store.users_by_usernames(std::slice::from_ref(&username)).await?.pop()
    {
        chat_store.unblock(me.id, other.id).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// 403 naming the users among `others` who have blocked `me` (adding them is refused).
pub(super) async fn refuse_blocked(
    state: &AppState,
    me: &Me,
    others: &[courier_store::chat::StoredUser],
) -> Result<(), ApiError> {
    let ids: Vec<_> = others.iter().map(|u| u.id).collect();
    let blocking = state.store.chat().blocked_by(me.id, &ids).await?;
    if blocking.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = others
        .iter()
        .filter(|u| blocking.contains(&u.id))
        .map(|u| format!("'{}'", u.username))
        .collect();
    Err(ApiError::Forbidden(format!("{} cannot be added by you", names.join(", "))))
}
