//! Members: list, add (owner or admin), change a role (owner), remove (owner or admin) or
//! leave. A room always keeps an owner: when its last owner leaves, the longest-standing admin
//! (else member) becomes owner; when its last member leaves, it is archived.

use axum::{
    Extension, Json,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use courier_core::{
    EventAction,
    chat::{self, Member, MemberChange, RemovedFromRoom, Role, RoomKind},
    request_telemetry::TraceId,
};
use courier_store::chat::{ChatStore, MemberDoc, RoomChange, RoomDoc};
use serde_json::json;

use super::{
    Attempts, Events, Fields, Me, Plan, archived_conflict, invalid, normalize_username,
    parse_room_id, room_and_membership, user_counters,
};
use crate::{auth::Authenticated, error::ApiError, extract::JsonBody, state::AppState};

const WHAT: &str = "chat member";

fn direct_conflict() -> ApiError {
    ApiError::Conflict("a direct room always has exactly its two people".into())
}

fn no_member(username: &str) -> ApiError {
    ApiError::NotFound(format!("'{username}' is not a member of this room"))
}

fn change(room: &RoomDoc, member: &MemberDoc, role: Role) -> MemberChange {
    MemberChange {
        room_id: room.id.to_hex(),
        user_id: member.user_id.to_hex(),
        username: member.username.clone(),
        role,
    }
}

fn parse_role(fields: &mut Fields) -> Option<Role> {
    let word = fields.string("role")?;
    let role = Role::parse(&word);
    if role.is_none() {
        fields.problem("role", "must be 'owner', 'admin' or 'member'");
    }
    role
}

/// `GET /chats/{id}/members`: everyone, longest-standing first.
pub async fn list(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let me = Me::of(&user)?;
    let room_id = parse_room_id(&id)?;
    let chat_store = state.store.chat();
    room_and_membership(&chat_store, room_id, &me).await?;
    let members: Vec<Member> =
        chat_store.room_members(room_id).await?.iter().map(MemberDoc::to_wire).collect();
    Ok(Json(json!({"items": members})))
}

/// `POST /chats/{id}/members {username, role?}`: owners add anyone in any role, admins add
/// admins and members.
pub async fn add(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    Extension(trace_id): Extension<TraceId>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let me = Me::of(&user)?;
    let room_id = parse_room_id(&id)?;
    let mut fields = Fields::parse(body, WHAT, &["username", "role"])?;
    let username = fields.string("username");
    let username = fields.required("username", username).map(|u| normalize_username(&u));
    let role = parse_role(&mut fields).unwrap_or(Role::Member);
    fields.finish()?;
    let username = username.expect("required above");

    let chat_store = state.store.chat();
    let mut attempts = Attempts::admit(&state, &me)?;
    let member = loop {
        let (room, mine) = room_and_membership(&chat_store, room_id, &me).await?;
        if !mine.role.manages() {
            return Err(ApiError::Forbidden("only an owner or admin can add members".into()));
        }
        if role == Role::Owner && mine.role != Role::Owner {
            return Err(ApiError::Forbidden("only an owner can make someone an owner".into()));
        }
        if room.kind == RoomKind::Direct {
            return Err(direct_conflict());
        }
        if room.archived {
            return Err(archived_conflict());
        }
        let Some(target) =
            chat_store.users_by_usernames(std::slice::from_ref(&username)).await?.pop()
        else {
            return Err(invalid(WHAT, "username", format!("no user named '{username}'")));
        };
        super::blocks::refuse_blocked(&state, &me, std::slice::from_ref(&target)).await?;
        if chat_store.membership(room_id, target.id).await?.is_some() {
            return Err(ApiError::Conflict(format!("'{username}' is already a member")));
        }
        if room.member_count >= chat::MAX_MEMBERS as i64 {
            return Err(ApiError::Conflict(format!(
                "a room holds at most {} members",
                chat::MAX_MEMBERS
            )));
        }
        // New members start with everything so far read: no backlog of unread.
        let member = MemberDoc::new(room_id, &target, role, room.last_seq);
        let counters = user_counters(&chat_store, &[target.id]).await?;
        let (counter, user_version) =
            ChatStore::next_user_event(target.id, counters.get(&target.id).copied());
        let mut joined = room.clone();
        joined.ev += 1;
        joined.member_count += 1;
        let mut events = Events::new(&me, trace_id.as_str());
        events.room(room_id, joined.ev, EventAction::MemberAdded, change(&room, &member, role));
        events.user(
            target.id,
            room_id,
            user_version,
            EventAction::MemberAdded,
            member.summary(&joined),
        );
        let writes = vec![
            ChatStore::change_room(
                &room,
                RoomChange { events: 1, add_member: Some(target.id), ..Default::default() },
            ),
            ChatStore::insert_member(&member),
            counter,
        ];
        let plan =
            Plan::Commit { writes, records: events.into_records(), answer: member.to_wire() };
        if let Some(member) = attempts.commit(&state, plan).await? {
            break member;
        }
    };
    Ok((StatusCode::CREATED, Json(member)).into_response())
}

/// `PATCH /chats/{id}/members/{username} {role}`: owners only; the last owner cannot step down
/// (make another owner first).
pub async fn update(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    Extension(trace_id): Extension<TraceId>,
    Path((id, username)): Path<(String, String)>,
    JsonBody(body): JsonBody,
) -> Result<Json<Member>, ApiError> {
    let me = Me::of(&user)?;
    let room_id = parse_room_id(&id)?;
    let username = normalize_username(&username);
    let mut fields = Fields::parse(body, WHAT, &["role"])?;
    let role = parse_role(&mut fields);
    let role = fields.required("role", role);
    fields.finish()?;
    let role = role.expect("required above");

    let chat_store = state.store.chat();
    let mut attempts = Attempts::admit(&state, &me)?;
    loop {
        let (room, mine) = room_and_membership(&chat_store, room_id, &me).await?;
        if mine.role != Role::Owner {
            return Err(ApiError::Forbidden("only an owner can change roles".into()));
        }
        let target = chat_store
            .membership_by_username(room_id, &username)
            .await?
            .ok_or_else(|| no_member(&username))?;
        if room.kind == RoomKind::Direct {
            return Err(direct_conflict());
        }
        if room.archived {
            return Err(archived_conflict());
        }
        let mut updated = target.clone();
        updated.role = role;
        let plan = if target.role == role {
            Plan::Answer(updated.to_wire())
        } else {
            if target.role == Role::Owner && chat_store.owner_count(room_id).await? < 2 {
                return Err(ApiError::Conflict(
                    "a room always keeps an owner: make another member owner first".into(),
                ));
            }
            let mut events = Events::new(&me, trace_id.as_str());
            events.room(
                room_id,
                room.ev + 1,
                EventAction::MemberUpdated,
                change(&room, &target, role),
            );
            Plan::Commit {
                writes: vec![
                    ChatStore::change_room(&room, RoomChange { events: 1, ..Default::default() }),
                    ChatStore::set_role(&target, role),
                ],
                records: events.into_records(),
                answer: updated.to_wire(),
            }
        };
        if let Some(member) = attempts.commit(&state, plan).await? {
            return Ok(Json(member));
        }
    }
}

/// `DELETE /chats/{id}/members/{username}`: leave (anyone), or remove someone: owners remove
/// anyone, admins remove members.
pub async fn remove(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    Extension(trace_id): Extension<TraceId>,
    Path((id, username)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let me = Me::of(&user)?;
    let room_id = parse_room_id(&id)?;
    let username = normalize_username(&username);
    let chat_store = state.store.chat();
    let mut attempts = Attempts::admit(&state, &me)?;
    loop {
        let (room, mine) = room_and_membership(&chat_store, room_id, &me).await?;
        let target = if username == me.username {
            mine.clone()
        } else {
            let target = chat_store
                .membership_by_username(room_id, &username)
                .await?
                .ok_or_else(|| no_member(&username))?;
            match (mine.role, target.role) {
                (Role::Owner, _) | (Role::Admin, Role::Member) => {}
                (Role::Admin, _) => {
                    return Err(ApiError::Forbidden(
                        "an admin can remove members, not admins or owners".into(),
                    ));
                }
                (Role::Member, _) => {
                    return Err(ApiError::Forbidden(
                        "only an owner or admin can remove others (anyone can leave)".into(),
                    ));
                }
            }
            target
        };
        if room.kind == RoomKind::Direct {
            return Err(direct_conflict());
        }
        if room.archived && target.user_id != me.id {
            // Leaving an archived room is fine; changing who is in it is not.
            return Err(archived_conflict());
        }

        let mut events = Events::new(&me, trace_id.as_str());
        let mut writes = vec![ChatStore::delete_member(&target)];
        let mut ev = room.ev + 1;
        events.room(room_id, ev, EventAction::MemberRemoved, change(&room, &target, target.role));
        let mut archive = None;
        if target.role == Role::Owner && chat_store.owner_count(room_id).await? < 2 {
            match chat_store.successor(room_id, target.user_id).await? {
                Some(heir) => {
                    ev += 1;
                    events.room(
                        room_id,
                        ev,
                        EventAction::MemberUpdated,
                        change(&room, &heir, Role::Owner),
                    );
                    writes.push(ChatStore::set_role(&heir, Role::Owner));
                }
                None if !room.archived => {
                    // The last member left: nobody can reach the room any more; archive it.
                    let mut archived = room.clone();
                    archived.archived = true;
                    archived.member_count -= 1;
                    ev += 1;
                    archived.ev = ev;
                    events.room(room_id, ev, EventAction::RoomUpdated, archived.to_wire());
                    archive = Some(true);
                }
                None => {}
            }
        }
        let counters = user_counters(&chat_store, &[target.user_id]).await?;
        let (counter, user_version) =
            ChatStore::next_user_event(target.user_id, counters.get(&target.user_id).copied());
        writes.push(counter);
        events.user(
            target.user_id,
            room_id,
            user_version,
            EventAction::MemberRemoved,
            RemovedFromRoom { room_id: room_id.to_hex() },
        );
        writes.insert(
            0,
            ChatStore::change_room(
                &room,
                RoomChange {
                    events: ev - room.ev,
                    remove_member: Some(target.user_id),
                    archived: archive,
                    ..Default::default()
                },
            ),
        );
        let plan = Plan::Commit { writes, records: events.into_records(), answer: () };
        if attempts.commit(&state, plan).await?.is_some() {
            tracing::info!(%room_id, user_id = %target.user_id, by = %me.id, "chat member removed");
            return Ok(StatusCode::NO_CONTENT);
        }
    }
}
