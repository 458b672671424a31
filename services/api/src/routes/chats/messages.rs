//! Messages: send (the next `seq`, idempotent by `client_msg_id`, rate-limited), history by
//! seq, edit (author), tombstoned delete (author, admin, owner), reactions (one per user per
//! emoji), and my read marker, which only moves forward.

use std::collections::HashMap;

use axum::{
    Extension, Json,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use courier_core::{
    EventAction,
    chat::{self, Message, ReactionChange, ReadMarker},
    request_telemetry::TraceId,
};
use courier_store::chat::{
    ChatStore, HistoryRange, MemberDoc, MessageDoc, ReactionDoc, RoomChange, RoomDoc,
};
use mongodb::bson::{self, oid::ObjectId};
use serde_json::json;

use super::{
    Attempts, Events, Fields, Me, Plan, archived_conflict, invalid, parse_limit, parse_message_id,
    parse_room_id, query_params, room_and_membership, user_counters,
};
use crate::{
    auth::Authenticated, chat::metrics::Change, error::ApiError, extract::JsonBody, state::AppState,
};

const WHAT: &str = "chat message";
const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 100;

fn no_message() -> ApiError {
    ApiError::NotFound("no such message in this room".into())
}

fn deleted_conflict() -> ApiError {
    ApiError::Conflict("the message was deleted".into())
}

/// The members a text mentions (never its author), in order of first mention.
async fn resolve_mentions(
    chat_store: &ChatStore,
    room_id: ObjectId,
    author: ObjectId,
    text: &str,
) -> Result<(Vec<ObjectId>, Vec<String>), ApiError> {
    let candidates = chat::mention_candidates(text);
    let members = chat_store.members_named(room_id, &candidates).await?;
    let (mut ids, mut names) = (Vec::new(), Vec::new());
    for name in &candidates {
        if let Some(m) = members.iter().find(|m| &m.username == name && m.user_id != author)
            && !ids.contains(&m.user_id)
            && ids.len() < chat::MAX_MENTIONS
        {
            ids.push(m.user_id);
            names.push(m.username.clone());
        }
    }
    Ok((ids, names))
}

struct SendInput {
    text: String,
    client_msg_id: Option<String>,
    reply_to: Option<u64>,
}

fn check_text(fields: &mut Fields, text: Option<String>) -> Option<String> {
    let text = fields.required("text", text)?;
    if let Some(problem) = chat::text_problem(&text) {
        fields.problem("text", problem);
        return None;
    }
    Some(text)
}

/// `POST /chats/{id}/messages {text, client_msg_id?, reply_to?}` → 201 with the message, or
/// 200 with the first one when `client_msg_id` was already used by me in this room.
pub async fn send(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    Extension(trace_id): Extension<TraceId>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let me = Me::of(&user)?;
    let room_id = parse_room_id(&id)?;
    let mut fields = Fields::parse(body, WHAT, &["text", "client_msg_id", "reply_to"])?;
    let text = fields.string("text");
    let text = check_text(&mut fields, text);
    let client_msg_id = fields.string("client_msg_id");
    if let Some(cid) = &client_msg_id
        && (cid.is_empty()
            || cid.len() > chat::MAX_CLIENT_MSG_ID_LEN
            || cid.chars().any(char::is_control))
    {
        fields.problem(
            "client_msg_id",
            format!(
                "must be 1 to {} bytes without control characters",
                chat::MAX_CLIENT_MSG_ID_LEN
            ),
        );
    }
    let reply_to = fields.count("reply_to");
    fields.finish()?;
    let input = SendInput { text: text.expect("checked above"), client_msg_id, reply_to };

    let chat_store = state.store.chat();
    // Membership and a retried client_msg_id are answered before the rate limit: a retry of a
    // message that got through is not another message.
    let (room, _) = room_and_membership(&chat_store, room_id, &me).await?;
    if let Some(cid) = &input.client_msg_id
        && let Some(first) = chat_store.message_by_client_id(room_id, me.id, cid).await?
    {
        return Ok((StatusCode::OK, Json(first.to_wire())).into_response());
    }
    state.chat.admit_send(&me.id.to_hex())?;
    // A direct room carries nothing while either of its two has blocked the other.
    if let Some(other) = room.direct.iter().flatten().find(|u| u.id != me.id)
        && chat_store.either_blocked(me.id, other.id).await?
    {
        return Err(ApiError::Forbidden(format!(
            "'{}' and you cannot message each other while one blocks the other",
            other.username
        )));
    }

    let mut attempts = Attempts::admit(&state, &me)?;
    let (status, message) = loop {
        let plan = plan_send(&chat_store, room_id, &me, &input, trace_id.as_str()).await?;
        if let Some(answer) = attempts.commit(&state, plan).await? {
            break answer;
        }
    };
    if status == StatusCode::CREATED {
        state.chat.metrics.message_sent();
    }
    Ok((status, Json(message)).into_response())
}

async fn plan_send(
    chat_store: &ChatStore,
    room_id: ObjectId,
    me: &Me,
    input: &SendInput,
    trace_id: &str,
) -> Result<Plan<(StatusCode, Message)>, ApiError> {
    let (room, _) = room_and_membership(chat_store, room_id, me).await?;
    if let Some(cid) = &input.client_msg_id
        && let Some(first) = chat_store.message_by_client_id(room_id, me.id, cid).await?
    {
        return Ok(Plan::Answer((StatusCode::OK, first.to_wire())));
    }
    if room.archived {
        return Err(archived_conflict());
    }
    if let Some(reply_to) = input.reply_to
        && (reply_to == 0 || reply_to > room.last_seq as u64)
    {
        return Err(invalid(
            WHAT,
            "reply_to",
            format!("no message with seq {reply_to} in this room"),
        ));
    }
    let (mentions, mention_names) =
        resolve_mentions(chat_store, room_id, me.id, &input.text).await?;
    let now = bson::DateTime::now();
    let message = MessageDoc {
        id: ObjectId::new(),
        room_id,
        seq: room.last_seq + 1,
        author: me.stored(),
        text: input.text.clone(),
        client_msg_id: input.client_msg_id.clone(),
        reply_to: input.reply_to.map(|r| r as i64),
        mentions,
        mention_names,
        reactions: Default::default(),
        created_at: now,
        edited_at: None,
        deleted: false,
    };
    let mut writes = vec![
        ChatStore::change_room(
            &room,
            RoomChange { events: 1, message_at: Some(now), ..Default::default() },
        ),
        ChatStore::insert_message(&message),
        ChatStore::count_own_message(room_id, me.id),
    ];
    writes.extend(message.mentions.iter().map(|user| ChatStore::count_new_mention(room_id, *user)));
    let wire = message.to_wire();
    let mut events = Events::new(me, trace_id);
    events.room(room_id, room.ev + 1, EventAction::Message, &wire);
    Ok(Plan::Commit { writes, records: events.into_records(), answer: (StatusCode::CREATED, wire) })
}

/// `GET /chats/{id}/messages?before=SEQ|after=SEQ&limit=N` → `{items, next}` in seq order.
/// Without `before`/`after`: the newest page. `next` is the seq to pass next in the same
/// direction (`before` for the newest and `before` pages, `after` for `after` pages), `null`
/// at the end.
pub async fn history(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let me = Me::of(&user)?;
    let room_id = parse_room_id(&id)?;
    let params = query_params(&query, &["before", "after", "limit"])?;
    let limit = parse_limit(&params, DEFAULT_PAGE, MAX_PAGE)?;
    let seq = |name: &str| {
        params
            .get(name)
            .map(|text| {
                text.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                    ApiError::BadRequest(format!("{name} must be a seq (a whole number ≥ 0)"))
                })
            })
            .transpose()
    };
    let range = match (seq("before")?, seq("after")?) {
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest("give before or after, not both".into()));
        }
        (Some(before), None) => HistoryRange::Before(before),
        (None, Some(after)) => HistoryRange::After(after),
        (None, None) => HistoryRange::Latest,
    };
    let chat_store = state.store.chat();
    room_and_membership(&chat_store, room_id, &me).await?;
    let mut page = chat_store.history(room_id, range, limit + 1).await?;
    let more = page.len() as i64 > limit;
    let next = match range {
        HistoryRange::After(_) => {
            page.truncate(limit as usize);
            more.then(|| page.last().map(|m| m.seq)).flatten()
        }
        HistoryRange::Latest | HistoryRange::Before(_) => {
            if more {
                page.remove(0);
            }
            more.then(|| page.first().map(|m| m.seq)).flatten()
        }
    };
    let items: Vec<Message> = page.iter().map(MessageDoc::to_wire).collect();
    Ok(Json(json!({"items": items, "next": next})))
}

/// The room, my membership and the message, for a change to the message.
async fn message_context(
    chat_store: &ChatStore,
    room_id: ObjectId,
    message_id: ObjectId,
    me: &Me,
) -> Result<(RoomDoc, MemberDoc, MessageDoc), ApiError> {
    let (room, member) = room_and_membership(chat_store, room_id, me).await?;
    let message = chat_store.message(room_id, message_id).await?.ok_or_else(no_message)?;
    Ok((room, member, message))
}

/// Membership counter changes when a message at `seq` stops or starts mentioning people:
/// only members who have not read it yet count it.
async fn mention_adjustments(
    chat_store: &ChatStore,
    room_id: ObjectId,
    seq: i64,
    before: &[ObjectId],
    after: &[ObjectId],
) -> Result<Vec<courier_store::Write>, ApiError> {
    let lost: Vec<ObjectId> = before.iter().filter(|u| !after.contains(u)).copied().collect();
    let gained: Vec<ObjectId> = after.iter().filter(|u| !before.contains(u)).copied().collect();
    let affected: Vec<ObjectId> = lost.iter().chain(&gained).copied().collect();
    let members = chat_store.memberships_by_ids(room_id, &affected).await?;
    Ok(members
        .iter()
        .filter(|m| m.last_read_seq < seq)
        .map(|m| ChatStore::adjust_mentions(m, if gained.contains(&m.user_id) { 1 } else { -1 }))
        .collect())
}

/// `PATCH /chats/{id}/messages/{msg} {text}`: the author only; sets `edited_at`.
pub async fn edit(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    Extension(trace_id): Extension<TraceId>,
    Path((id, msg)): Path<(String, String)>,
    JsonBody(body): JsonBody,
) -> Result<Json<Message>, ApiError> {
    let me = Me::of(&user)?;
    let room_id = parse_room_id(&id)?;
    let message_id = parse_message_id(&msg)?;
    let mut fields = Fields::parse(body, WHAT, &["text"])?;
    let text = fields.string("text");
    let text = check_text(&mut fields, text);
    fields.finish()?;
    let text = text.expect("checked above");

    let chat_store = state.store.chat();
    let mut attempts = Attempts::admit(&state, &me)?;
    let (edited, message) = loop {
        let (room, _, message) = message_context(&chat_store, room_id, message_id, &me).await?;
        if message.author.id != me.id {
            return Err(ApiError::Forbidden("only its author can edit a message".into()));
        }
        if message.deleted {
            return Err(deleted_conflict());
        }
        if room.archived {
            return Err(archived_conflict());
        }
        let plan = if message.text == text {
            Plan::Answer((false, message.to_wire()))
        } else {
            let (mentions, mention_names) =
                resolve_mentions(&chat_store, room_id, me.id, &text).await?;
            let mut writes =
                vec![ChatStore::change_room(&room, RoomChange { events: 1, ..Default::default() })];
            writes.extend(
                mention_adjustments(
                    &chat_store,
                    room_id,
                    message.seq,
                    &message.mentions,
                    &mentions,
                )
                .await?,
            );
            let mut edited = message.clone();
            edited.text = text.clone();
            edited.mentions = mentions;
            edited.mention_names = mention_names;
            edited.edited_at = Some(bson::DateTime::now());
            writes.push(ChatStore::edit_message(&edited));
            let wire = edited.to_wire();
            let mut events = Events::new(&me, trace_id.as_str());
            events.room(room_id, room.ev + 1, EventAction::MessageEdited, &wire);
            Plan::Commit { writes, records: events.into_records(), answer: (true, wire) }
        };
        if let Some(answer) = attempts.commit(&state, plan).await? {
            break answer;
        }
    };
    if edited {
        state.chat.metrics.message_changed(Change::Edit);
    }
    Ok(Json(message))
}

/// `DELETE /chats/{id}/messages/{msg}`: its author, an admin or an owner. The message stays
/// as a tombstone (its seq keeps its place); deleting it again changes nothing.
pub async fn delete(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    Extension(trace_id): Extension<TraceId>,
    Path((id, msg)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let me = Me::of(&user)?;
    let room_id = parse_room_id(&id)?;
    let message_id = parse_message_id(&msg)?;
    let chat_store = state.store.chat();
    let mut attempts = Attempts::admit(&state, &me)?;
    let deleted_now = loop {
        let (room, member, message) =
            message_context(&chat_store, room_id, message_id, &me).await?;
        if message.author.id != me.id && !member.role.manages() {
            return Err(ApiError::Forbidden(
                "only its author, an admin or an owner can delete a message".into(),
            ));
        }
        let plan = if message.deleted {
            Plan::Answer(false)
        } else {
            if room.archived {
                return Err(archived_conflict());
            }
            let now = bson::DateTime::now();
            let mut writes = vec![
                ChatStore::change_room(&room, RoomChange { events: 1, ..Default::default() }),
                ChatStore::tombstone(message.id, me.id, now),
            ];
            writes.extend(
                mention_adjustments(&chat_store, room_id, message.seq, &message.mentions, &[])
                    .await?,
            );
            let mut tombstone = message.clone();
            tombstone.text.clear();
            tombstone.mentions.clear();
            tombstone.mention_names.clear();
            tombstone.reactions.clear();
            tombstone.deleted = true;
            let mut events = Events::new(&me, trace_id.as_str());
            events.room(room_id, room.ev + 1, EventAction::MessageDeleted, tombstone.to_wire());
            Plan::Commit { writes, records: events.into_records(), answer: true }
        };
        if let Some(answer) = attempts.commit(&state, plan).await? {
            break answer;
        }
    };
    if deleted_now {
        state.chat.metrics.message_changed(Change::Delete);
    }
    Ok(StatusCode::NO_CONTENT)
}

fn check_emoji(emoji: &str) -> Result<(), ApiError> {
    match chat::reaction_problem(emoji) {
        Some(problem) => Err(ApiError::BadRequest(format!("reaction '{emoji}' {problem}"))),
        None => Ok(()),
    }
}

/// `PUT /chats/{id}/messages/{msg}/reactions/{emoji}`: 201 when added, 200 when I had already
/// reacted so; answers the message with its counts.
pub async fn react(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    Extension(trace_id): Extension<TraceId>,
    Path((id, msg, emoji)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    change_reaction(state, user, trace_id, (id, msg, emoji), true).await
}

/// `DELETE /chats/{id}/messages/{msg}/reactions/{emoji}`: 200 with the message (also when I
/// had not reacted so).
pub async fn unreact(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    Extension(trace_id): Extension<TraceId>,
    Path((id, msg, emoji)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    change_reaction(state, user, trace_id, (id, msg, emoji), false).await
}

async fn change_reaction(
    state: AppState,
    user: crate::auth::AuthUser,
    trace_id: TraceId,
    (id, msg, emoji): (String, String, String),
    add: bool,
) -> Result<Response, ApiError> {
    let me = Me::of(&user)?;
    let room_id = parse_room_id(&id)?;
    let message_id = parse_message_id(&msg)?;
    check_emoji(&emoji)?;
    let chat_store = state.store.chat();
    let mut attempts = Attempts::admit(&state, &me)?;
    let (status, message) = loop {
        let (room, _, message) = message_context(&chat_store, room_id, message_id, &me).await?;
        if message.deleted {
            return Err(deleted_conflict());
        }
        if room.archived {
            return Err(archived_conflict());
        }
        let mine = chat_store.reaction(message_id, me.id, &emoji).await?;
        let current = message.reactions.get(&emoji).copied().unwrap_or(0);
        let plan = match (add, mine) {
            (true, Some(_)) | (false, None) => Plan::Answer((StatusCode::OK, message.to_wire())),
            (true, None) => {
                if current == 0 && message.reactions.len() >= chat::MAX_REACTIONS_PER_MESSAGE {
                    return Err(ApiError::Conflict(format!(
                        "a message can carry at most {} different reactions",
                        chat::MAX_REACTIONS_PER_MESSAGE
                    )));
                }
                let reaction = ReactionDoc {
                    id: ObjectId::new(),
                    room_id,
                    message_id,
                    user_id: me.id,
                    emoji: emoji.clone(),
                    at: bson::DateTime::now(),
                    version: 1,
                };
                reaction_plan(
                    &room,
                    &message,
                    &me,
                    &trace_id,
                    &emoji,
                    current + 1,
                    ChatStore::insert_reaction(&reaction),
                )
            }
            (false, Some(reaction)) => reaction_plan(
                &room,
                &message,
                &me,
                &trace_id,
                &emoji,
                current - 1,
                ChatStore::delete_reaction(&reaction),
            ),
        };
        if let Some(answer) = attempts.commit(&state, plan).await? {
            break answer;
        }
    };
    if status == StatusCode::CREATED {
        state.chat.metrics.reaction_added();
    }
    Ok((status, Json(message)).into_response())
}

/// Adds (`count` went up) or removes my reaction: the reaction row, the message's count and a
/// `chat.reaction` event.
fn reaction_plan(
    room: &RoomDoc,
    message: &MessageDoc,
    me: &Me,
    trace_id: &TraceId,
    emoji: &str,
    count: i64,
    row: courier_store::Write,
) -> Plan<(StatusCode, Message)> {
    let current = message.reactions.get(emoji).copied().unwrap_or(0);
    let added = count > current;
    let mut updated = message.clone();
    if count > 0 {
        updated.reactions.insert(emoji.to_owned(), count);
    } else {
        updated.reactions.remove(emoji);
    }
    let writes = vec![
        ChatStore::change_room(room, RoomChange { events: 1, ..Default::default() }),
        row,
        ChatStore::count_reaction(message, emoji, if added { 1 } else { -1 }),
    ];
    let change = ReactionChange {
        room_id: room.id.to_hex(),
        message_id: message.id.to_hex(),
        seq: message.seq as u64,
        emoji: emoji.to_owned(),
        user_id: me.id.to_hex(),
        added,
        count: count.max(0) as u64,
    };
    let mut events = Events::new(me, trace_id.as_str());
    events.room(room.id, room.ev + 1, EventAction::Reaction, change);
    let status = if added { StatusCode::CREATED } else { StatusCode::OK };
    Plan::Commit { writes, records: events.into_records(), answer: (status, updated.to_wire()) }
}

/// `POST /chats/{id}/read {seq}`: moves my marker forward to `seq` (never back), recounts
/// `unread` and `mentions`, and tells my other sessions with `chat.read` on `user:<me>`.
pub async fn read(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    Extension(trace_id): Extension<TraceId>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<ReadMarker>, ApiError> {
    let me = Me::of(&user)?;
    let room_id = parse_room_id(&id)?;
    let mut fields = Fields::parse(body, "chat read marker", &["seq"])?;
    let seq = fields.count("seq");
    let seq = fields.required("seq", seq);
    fields.finish()?;
    let seq = i64::try_from(seq.expect("required above")).unwrap_or(i64::MAX);

    let chat_store = state.store.chat();
    let mut attempts = Attempts::admit(&state, &me)?;
    loop {
        let (room, member) = room_and_membership(&chat_store, room_id, &me).await?;
        if seq > room.last_seq {
            return Err(invalid(
                "chat read marker",
                "seq",
                format!("is after the room's newest message (seq {})", room.last_seq),
            ));
        }
        let plan = if seq <= member.last_read_seq {
            Plan::Answer(marker(&room, &member))
        } else {
            let (own, mentions) = chat_store.counts_after(room_id, me.id, seq).await?;
            let mut moved = member.clone();
            moved.last_read_seq = seq;
            moved.own_after_read = own;
            moved.mentions_after_read = mentions;
            let answer = marker(&room, &moved);
            let counters: HashMap<ObjectId, i64> = user_counters(&chat_store, &[me.id]).await?;
            let (counter, version) =
                ChatStore::next_user_event(me.id, counters.get(&me.id).copied());
            let mut events = Events::new(&me, trace_id.as_str());
            events.user(me.id, room_id, version, EventAction::Read, &answer);
            Plan::Commit {
                writes: vec![ChatStore::move_marker(&member, seq, own, mentions), counter],
                records: events.into_records(),
                answer,
            }
        };
        if let Some(marker) = attempts.commit(&state, plan).await? {
            return Ok(Json(marker));
        }
    }
}

fn marker(room: &RoomDoc, member: &MemberDoc) -> ReadMarker {
    ReadMarker {
        room_id: room.id.to_hex(),
        seq: member.last_read_seq as u64,
        unread: member.unread(room.last_seq),
        mentions: member.mentions_after_read as u64,
    }
}
