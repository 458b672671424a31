//! Rooms: create (group, or the one direct room of a pair), list mine by newest activity with
//! unread and mention counts, read one, and rename / set the topic / archive (owner or admin).

use axum::{
    Extension, Json,
    extract::{Path, Query, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use courier_core::{
    EventAction,
    chat::{self, MemberChange, Role, RoomKind, RoomSummary},
    request_telemetry::TraceId,
};
use courier_store::chat::{ChatStore, MemberDoc, RoomChange, RoomDoc, StoredUser};
use mongodb::bson::{self, oid::ObjectId};
use serde_json::json;

use super::{
    Attempts, Events, Fields, Me, Plan, archived_conflict, invalid, normalize_username,
    parse_limit, parse_room_id, query_params, room_and_membership, user_counters,
};
use crate::{auth::Authenticated, error::ApiError, extract::JsonBody, state::AppState};

const WHAT: &str = "chat room";
const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 100;

fn created(summary: RoomSummary) -> Response {
    let location = HeaderValue::from_str(&format!("/api/v1/chats/{}", summary.room.id))
        .expect("ids are header-safe");
    let mut response = (StatusCode::CREATED, Json(summary)).into_response();
    response.headers_mut().insert(header::LOCATION, location);
    response
}

/// A trimmed room name, or why not.
fn check_name(fields: &mut Fields, name: Option<String>) -> Option<String> {
    let name = name?.trim().to_owned();
    let chars = name.chars().count();
    if chars == 0 || chars > chat::MAX_NAME_CHARS {
        fields.problem("name", format!("must be 1 to {} characters", chat::MAX_NAME_CHARS));
        return None;
    }
    Some(name)
}

fn check_topic(fields: &mut Fields, topic: Option<String>) -> Option<String> {
    let topic = topic?.trim().to_owned();
    if topic.chars().count() > chat::MAX_TOPIC_CHARS {
        fields.problem("topic", format!("must be at most {} characters", chat::MAX_TOPIC_CHARS));
        return None;
    }
    Some(topic)
}

/// `POST /chats {name, topic?, members?}` or `{direct: username}`.
pub async fn create(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    Extension(trace_id): Extension<TraceId>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let me = Me::of(&user)?;
    let mut fields = Fields::parse(body, WHAT, &["name", "topic", "members", "direct"])?;
    if fields.has("direct") {
        if ["name", "topic", "members"].iter().any(|f| fields.has(f)) {
            fields.problem("direct", "a direct room takes no name, topic or members");
        }
        let direct = fields.string("direct");
        fields.finish()?;
        let direct = direct.expect("present and a string, or finish() refused it");
        return create_direct(&state, &me, &normalize_username(&direct), trace_id.as_str()).await;
    }
    let name = fields.string("name");
    let name = check_name(&mut fields, name);
    let name = fields.required("name", name);
    let topic = fields.string("topic");
    let topic = check_topic(&mut fields, topic).unwrap_or_default();
    let members = fields.strings("members", chat::MAX_INITIAL_MEMBERS).unwrap_or_default();
    fields.finish()?;
    let name = name.expect("required above");
    // The limits first: the member lookup below says which names exist, so it is no free oracle.
    state.chat.admit_room_creation(&me.id.to_hex())?;
    let mut attempts = Attempts::admit(&state, &me)?;

    let mut usernames: Vec<String> = members.iter().map(|m| normalize_username(m)).collect();
    usernames.sort();
    usernames.dedup();
    usernames.retain(|u| *u != me.username);
    let chat_store = state.store.chat();
    let users = chat_store.users_by_usernames(&usernames).await?;
    let unknown: Vec<&String> =
        usernames.iter().filter(|u| !users.iter().any(|found| &found.username == *u)).collect();
    if !unknown.is_empty() {
        let names: Vec<String> = unknown.iter().map(|u| format!("'{u}'")).collect();
        return Err(invalid(WHAT, "members", format!("no user named {}", names.join(", "))));
    }
    super::blocks::refuse_blocked(&state, &me, &users).await?;

    let summary = loop {
        let room = new_room(RoomKind::Group, &name, &topic, &me, &users, None);
        let plan =
            plan_creation(&chat_store, room, &me, &users, Role::Member, trace_id.as_str()).await?;
        if let Some(summary) = attempts.commit(&state, plan).await? {
            break summary;
        }
    };
    state.chat.metrics.room_created();
    tracing::info!(room_id = %summary.room.id, "chat room created");
    Ok(created(summary))
}

fn new_room(
    kind: RoomKind,
    name: &str,
    topic: &str,
    me: &Me,
    others: &[StoredUser],
    direct_key: Option<String>,
) -> RoomDoc {
    let now = bson::DateTime::now();
    let mut member_ids = vec![me.id];
    member_ids.extend(others.iter().map(|u| u.id));
    let direct = (kind == RoomKind::Direct).then(|| {
        let mut pair = vec![me.stored()];
        pair.extend(others.iter().cloned());
        pair
    });
    RoomDoc {
        id: ObjectId::new(),
        kind,
        name: name.to_owned(),
        topic: topic.to_owned(),
        archived: false,
        created_by: me.stored(),
        created_at: now,
        last_seq: 0,
        ev: i64::try_from(member_ids.len()).unwrap_or(i64::MAX),
        last_activity_at: now,
        member_count: i64::try_from(member_ids.len()).unwrap_or(i64::MAX),
        member_ids,
        direct_key,
        direct,
    }
}

/// A new room with me as owner and `others` in `others_role`: one `chat.member_added` per
/// member on the room, and one per member on their own channel.
async fn plan_creation(
    chat_store: &ChatStore,
    room: RoomDoc,
    me: &Me,
    others: &[StoredUser],
    others_role: Role,
    trace_id: &str,
) -> Result<Plan<RoomSummary>, ApiError> {
    let mut members = vec![MemberDoc::new(room.id, &me.stored(), Role::Owner, 0)];
    members.extend(others.iter().map(|u| MemberDoc::new(room.id, u, others_role, 0)));
    let ids: Vec<ObjectId> = members.iter().map(|m| m.user_id).collect();
    let counters = user_counters(chat_store, &ids).await?;

    let mut writes = vec![ChatStore::insert_room(&room)];
    let mut events = Events::new(me, trace_id);
    for (n, member) in members.iter().enumerate() {
        writes.push(ChatStore::insert_member(member));
        let change = MemberChange {
            room_id: room.id.to_hex(),
            user_id: member.user_id.to_hex(),
            username: member.username.clone(),
            role: member.role,
        };
        events.room(room.id, n as i64 + 1, EventAction::MemberAdded, change);
        let (write, version) =
            ChatStore::next_user_event(member.user_id, counters.get(&member.user_id).copied());
        writes.push(write);
        events.user(
            member.user_id,
            room.id,
            version,
            EventAction::MemberAdded,
            member.summary(&room),
        );
    }
    Ok(Plan::Commit { writes, records: events.into_records(), answer: members[0].summary(&room) })
}

/// `POST /chats {direct: username}`: the pair's one room, created on first use (201), the
/// same room afterwards (200), even when both ask at once.
async fn create_direct(
    state: &AppState,
    me: &Me,
    username: &str,
    trace_id: &str,
) -> Result<Response, ApiError> {
    if username == me.username {
        return Err(invalid(WHAT, "direct", "a direct room is with someone else"));
    }
    // Counted before the lookup, which says whether the name exists.
    let mut attempts = Attempts::admit(state, me)?;
    let chat_store = state.store.chat();
    let Some(other) = chat_store.users_by_usernames(&[username.to_owned()]).await?.pop() else {
        return Err(invalid(WHAT, "direct", format!("no user named '{username}'")));
    };
    let key = RoomDoc::direct_key_of(me.id, other.id);
    let chat_ref = &chat_store;
    let existing = |room: RoomDoc| async move {
        let member = chat_ref
            .membership(room.id, me.id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("direct room {} lacks its member {}", room.id, me.id))?;
        Ok::<_, ApiError>((StatusCode::OK, Json(member.summary(&room))).into_response())
    };
    if let Some(room) = chat_store.direct_room(&key).await? {
        return existing(room).await;
    }
    if chat_store.either_blocked(me.id, other.id).await? {
        return Err(ApiError::Forbidden(format!(
            "you cannot start a direct room with '{username}'"
        )));
    }
    state.chat.admit_room_creation(&me.id.to_hex())?;
    loop {
        // Another request may have created it meanwhile (the unique key makes ours lose).
        if let Some(room) = chat_store.direct_room(&key).await? {
            return existing(room).await;
        }
        let room =
            new_room(RoomKind::Direct, "", "", me, std::slice::from_ref(&other), Some(key.clone()));
        let plan = plan_creation(
            &chat_store,
            room,
            me,
            std::slice::from_ref(&other),
            Role::Owner,
            trace_id,
        )
        .await?;
        if let Some(summary) = attempts.commit(state, plan).await? {
            state.chat.metrics.room_created();
            return Ok(created(summary));
        }
    }
}

/// `GET /chats?limit&cursor`: my rooms, newest activity first.
pub async fn list(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let me = Me::of(&user)?;
    let params = query_params(&query, &["limit", "cursor"])?;
    let limit = parse_limit(&params, DEFAULT_PAGE, MAX_PAGE)?;
    let after = params
        .get("cursor")
        .map(|c| ChatStore::decode_room_cursor(c))
        .transpose()
        .map_err(|err| ApiError::invalid_parameter("cursor", err.to_string()))?;
    let chat_store = state.store.chat();
    let mut rooms = chat_store.rooms_of(me.id, after, limit + 1).await?;
    let more = rooms.len() as i64 > limit;
    rooms.truncate(limit as usize);
    let next = more.then(|| rooms.last().map(ChatStore::room_cursor)).flatten();
    let ids: Vec<ObjectId> = rooms.iter().map(|r| r.id).collect();
    let memberships = chat_store.memberships_of(me.id, &ids).await?;
    let items: Vec<RoomSummary> = rooms
        .iter()
        .filter_map(|room| {
            // A room I left between the two reads is simply not listed.
            memberships.iter().find(|m| m.room_id == room.id).map(|m| m.summary(room))
        })
        .collect();
    Ok(Json(json!({"items": items, "next": next})))
}

/// `GET /chats/{id}`.
pub async fn read(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
) -> Result<Json<RoomSummary>, ApiError> {
    let me = Me::of(&user)?;
    let room_id = parse_room_id(&id)?;
    let (room, member) = room_and_membership(&state.store.chat(), room_id, &me).await?;
    Ok(Json(member.summary(&room)))
}

/// `PATCH /chats/{id} {name?, topic?, archived?}`: owner or admin.
pub async fn update(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    Extension(trace_id): Extension<TraceId>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<RoomSummary>, ApiError> {
    let me = Me::of(&user)?;
    let room_id = parse_room_id(&id)?;
    let mut fields = Fields::parse(body, WHAT, &["name", "topic", "archived"])?;
    let name = fields.string("name");
    let name = check_name(&mut fields, name);
    let topic = fields.string("topic");
    let topic = check_topic(&mut fields, topic);
    let archived = fields.boolean("archived");
    if name.is_none() && topic.is_none() && archived.is_none() {
        fields.problem("(document)", "nothing to change: send name, topic or archived");
    }
    fields.finish()?;

    let chat_store = state.store.chat();
    let mut attempts = Attempts::admit(&state, &me)?;
    loop {
        let (room, member) = room_and_membership(&chat_store, room_id, &me).await?;
        if !member.role.manages() {
            return Err(ApiError::Forbidden("only an owner or admin can change the room".into()));
        }
        if room.kind == RoomKind::Direct && name.is_some() {
            return Err(invalid(WHAT, "name", "a direct room has no name"));
        }
        if room.archived && archived != Some(false) {
            return Err(archived_conflict());
        }
        let mut updated = room.clone();
        let change = RoomChange {
            events: 1,
            name: name.clone().filter(|n| *n != room.name),
            topic: topic.clone().filter(|t| *t != room.topic),
            archived: archived.filter(|a| *a != room.archived),
            ..Default::default()
        };
        let plan = if change.name.is_none() && change.topic.is_none() && change.archived.is_none() {
            Plan::Answer(member.summary(&room))
        } else {
            updated.name = change.name.clone().unwrap_or(updated.name);
            updated.topic = change.topic.clone().unwrap_or(updated.topic);
            updated.archived = change.archived.unwrap_or(updated.archived);
            updated.ev += 1;
            let mut events = Events::new(&me, trace_id.as_str());
            events.room(room.id, updated.ev, EventAction::RoomUpdated, updated.to_wire());
            Plan::Commit {
                writes: vec![ChatStore::change_room(&room, change)],
                records: events.into_records(),
                answer: member.summary(&updated),
            }
        };
        if let Some(summary) = attempts.commit(&state, plan).await? {
            return Ok(Json(summary));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let me = Me { id: ObjectId::new(), username: "ana".into() };
        let room = new_room(RoomKind::Group, "r", "", &me, &[], None);
        use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
        let (time, id) = ChatStore::decode_room_cursor(&ChatStore::room_cursor(&room)).unwrap();
        assert_eq!((time, id), (room.last_activity_at, room.id));
        for bad in ["", "!!", "bm9wZQ", &URL_SAFE_NO_PAD.encode("12.nothex")] {
            assert!(ChatStore::decode_room_cursor(bad).is_err(), "{bad}");
        }
    }
}
