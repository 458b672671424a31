//! `/api/v1/chats`: rooms, members, messages, reactions and read markers. Every endpoint needs
//! a signed-in user, and a room is 404 to anyone who is not in it. Each change is planned from
//! what the store holds, committed with its events through the outbox, and re-planned when a
//! concurrent change got in first (the store's guards say so), so a room's `seq` and its event
//! order have no gaps however many people write at once.

mod blocks;
mod members;
mod messages;
pub(crate) mod openapi;
mod rooms;

use axum::{
    Router,
    routing::{get, post, put},
};
use courier_core::{Event, EventAction, backoff::Backoff, chat::CHAT_COLLECTION, subjects};
use courier_store::{
    OutboxRecord, Write,
    chat::{ChatStore, Commit, MemberDoc, RoomDoc},
};
use mongodb::bson::oid::ObjectId;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::{
    auth::AuthUser,
    error::{ApiError, FieldError},
    state::AppState,
    writes::Writer,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/chats", get(rooms::list).post(rooms::create))
        .route("/chats/{id}", get(rooms::read).patch(rooms::update))
        .route("/chats/{id}/members", get(members::list).post(members::add))
        .route(
            "/chats/{id}/members/{username}",
            axum::routing::patch(members::update).delete(members::remove),
        )
        .route("/chats/{id}/messages", get(messages::history).post(messages::send))
        .route(
            "/chats/{id}/messages/{msg}",
            axum::routing::patch(messages::edit).delete(messages::delete),
        )
        .route(
            "/chats/{id}/messages/{msg}/reactions/{emoji}",
            put(messages::react).delete(messages::unreact),
        )
        .route("/chats/{id}/read", post(messages::read))
        .route("/chats/blocks", get(blocks::list))
        .route("/chats/blocks/{username}", put(blocks::block).delete(blocks::unblock))
}

/// How many times a change is re-planned after losing a race before the api gives up (409).
const ATTEMPTS: u32 = 60;

/// The signed-in caller as chat uses them.
#[derive(Debug, Clone)]
pub(super) struct Me {
    pub id: ObjectId,
    pub username: String,
}

impl Me {
    fn of(user: &AuthUser) -> Result<Self, ApiError> {
        let id = ObjectId::parse_str(&user.id).map_err(|_| ApiError::Unauthorized {
            message: "the access token does not name a user".into(),
            invalid_token: true,
        })?;
        Ok(Me { id, username: user.username.clone() })
    }

    fn stored(&self) -> courier_store::chat::StoredUser {
        courier_store::chat::StoredUser { id: self.id, username: self.username.clone() }
    }
}

fn parse_room_id(id: &str) -> Result<ObjectId, ApiError> {
    ObjectId::parse_str(id).map_err(|_| {
        ApiError::BadRequest(format!("'{id}' is not a valid room id (24 hexadecimal characters)"))
    })
}

fn parse_message_id(id: &str) -> Result<ObjectId, ApiError> {
    ObjectId::parse_str(id).map_err(|_| {
        ApiError::BadRequest(format!(
            "'{id}' is not a valid message id (24 hexadecimal characters)"
        ))
    })
}

/// The same answer for "no such room" and "not your room", so existence is not revealed.
fn room_not_found() -> ApiError {
    ApiError::NotFound("no such chat room".into())
}

/// A username as typed in a path or body: trimmed and lowercased (usernames are lowercase).
fn normalize_username(name: &str) -> String {
    name.trim().to_lowercase()
}

/// The room and my membership in it, or 404.
async fn room_and_membership(
    chat: &ChatStore,
    room_id: ObjectId,
    me: &Me,
) -> Result<(RoomDoc, MemberDoc), ApiError> {
    // The room first: a change committed after this read moves its event counter, which the
    // commit's guard notices, so what is read next is consistent with it.
    let room = chat.room(room_id).await?.ok_or_else(room_not_found)?;
    let member = chat.membership(room_id, me.id).await?.ok_or_else(room_not_found)?;
    Ok((room, member))
}

fn archived_conflict() -> ApiError {
    ApiError::Conflict("the room is archived (read-only); unarchive it first".into())
}

/// What a planning round decided.
pub(super) enum Plan<T> {
    /// Nothing to write (the change is already there): answer at once.
    Answer(T),
    Commit {
        writes: Vec<Write>,
        records: Vec<OutboxRecord>,
        answer: T,
    },
}

/// Commits plans, pacing and counting the re-plans after lost races, and spending the writer's
/// byte budget on what they commit.
pub(super) struct Attempts {
    backoff: Backoff,
    left: u32,
    writer: Writer,
}

impl Attempts {
    /// Counts a chat change by `me` against the write limits (429 past them), then the attempts
    /// to commit it with. Every chat change goes through here.
    pub fn admit(state: &AppState, me: &Me) -> Result<Self, ApiError> {
        let writer = Writer::user(&me.id.to_hex());
        state.writes.admit_chat(&writer)?;
        Ok(Attempts {
            backoff: Backoff::with_min(
                std::time::Duration::from_millis(2),
                std::time::Duration::from_millis(100),
            ),
            left: ATTEMPTS,
            writer,
        })
    }

    /// `Some(answer)` once the plan is committed (its events handed to the outbox), `None`
    /// when it lost a race: plan again.
    pub async fn commit<T>(
        &mut self,
        state: &AppState,
        plan: Plan<T>,
    ) -> Result<Option<T>, ApiError> {
        let (writes, records, answer) = match plan {
            Plan::Answer(answer) => return Ok(Some(answer)),
            Plan::Commit { writes, records, answer } => (writes, records, answer),
        };
        match state.store.chat().commit(&writes, &records).await? {
            Commit::Done => {
                state.writes.charge(&self.writer, &records);
                state.outbox.publish_after_commit(records);
                Ok(Some(answer))
            }
            Commit::Raced if self.left == 0 => {
                Err(ApiError::Conflict("the room is changing too fast to apply this; retry".into()))
            }
            Commit::Raced => {
                tracing::debug!(left = self.left, "chat change lost a race; planning again");
                self.left -= 1;
                self.backoff.sleep().await;
                Ok(None)
            }
        }
    }
}

/// The outbox records of one change.
pub(super) struct Events<'a> {
    actor: &'a Me,
    trace_id: &'a str,
    records: Vec<OutboxRecord>,
}

impl<'a> Events<'a> {
    pub fn new(actor: &'a Me, trace_id: &'a str) -> Self {
        Events { actor, trace_id, records: Vec::new() }
    }

    /// A room event (`events.chat.<room>.<action>`) with outbox version `version` (the room's
    /// event counter after it).
    pub fn room(
        &mut self,
        room_id: ObjectId,
        version: i64,
        action: EventAction,
        data: impl Serialize,
    ) {
        let room = room_id.to_hex();
        let event = self.event(&room, action, data);
        self.records.push(OutboxRecord::for_event(
            &event,
            subjects::chat_event_subject(&room, action),
            version,
        ));
    }

    /// A per-user event (`events.user.<user>.<action>`) about `room_id`, ordered by the user's
    /// own counter (`version`).
    pub fn user(
        &mut self,
        user_id: ObjectId,
        room_id: ObjectId,
        version: i64,
        action: EventAction,
        data: impl Serialize,
    ) {
        let user = user_id.to_hex();
        let event = self.event(&room_id.to_hex(), action, data);
        let mut record =
            OutboxRecord::for_event(&event, subjects::user_event_subject(&user, action), version);
        record.doc_key = format!("{}/{user}", courier_core::chat::USER_COLLECTION);
        self.records.push(record);
    }

    fn event(&self, room: &str, action: EventAction, data: impl Serialize) -> Event {
        let data = serde_json::to_value(data).expect("chat payloads serialize");
        Event::new(
            CHAT_COLLECTION,
            room,
            action,
            data,
            Some(self.actor.id.to_hex()),
            self.trace_id.to_owned(),
        )
    }

    pub fn into_records(self) -> Vec<OutboxRecord> {
        self.records
    }
}

/// A JSON object body read field by field, collecting every problem for one 422.
pub(super) struct Fields {
    what: &'static str,
    object: Map<String, Value>,
    problems: Vec<FieldError>,
}

impl Fields {
    /// `body` must be an object with no fields outside `allowed`.
    pub fn parse(body: Value, what: &'static str, allowed: &[&str]) -> Result<Self, ApiError> {
        let Value::Object(object) = body else {
            return Err(ApiError::validation(
                what,
                vec![FieldError {
                    field: "(document)".into(),
                    reason: "must be a JSON object".into(),
                }],
            ));
        };
        let problems = object
            .keys()
            .filter(|k| !allowed.contains(&k.as_str()))
            .map(|k| FieldError {
                field: k.clone(),
                reason: format!("is not a known field (known: {})", allowed.join(", ")),
            })
            .collect();
        Ok(Fields { what, object, problems })
    }

    pub fn has(&self, name: &str) -> bool {
        self.object.get(name).is_some_and(|v| !v.is_null())
    }

    pub fn problem(&mut self, field: &str, reason: impl Into<String>) {
        self.problems.push(FieldError { field: field.to_owned(), reason: reason.into() });
    }

    /// An optional string (`null` counts as absent).
    pub fn string(&mut self, name: &str) -> Option<String> {
        match self.object.remove(name) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(_) => {
                self.problem(name, "must be a string");
                None
            }
        }
    }

    /// An optional whole number ≥ 0 (`3.0` is one too, as JSON Schema's `integer` says).
    pub fn count(&mut self, name: &str) -> Option<u64> {
        match self.object.remove(name) {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64(),
            Some(Value::Number(n))
                if n.as_f64()
                    .is_some_and(|f| f.fract() == 0.0 && (0.0..u64::MAX as f64).contains(&f)) =>
            {
                n.as_f64().map(|f| f as u64)
            }
            Some(_) => {
                self.problem(name, "must be a whole number ≥ 0");
                None
            }
        }
    }

    pub fn boolean(&mut self, name: &str) -> Option<bool> {
        match self.object.remove(name) {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(b),
            Some(_) => {
                self.problem(name, "must be true or false");
                None
            }
        }
    }

    /// An optional list of at most `max` strings.
    pub fn strings(&mut self, name: &str, max: usize) -> Option<Vec<String>> {
        match self.object.remove(name) {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) if items.len() > max => {
                self.problem(name, format!("may list at most {max} entries"));
                None
            }
            Some(Value::Array(items)) => {
                let strings: Vec<String> =
                    items.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect();
                if strings.len() != items.len() {
                    self.problem(name, "must be a list of strings");
                    return None;
                }
                Some(strings)
            }
            Some(_) => {
                self.problem(name, "must be a list of strings");
                None
            }
        }
    }

    pub fn required<T>(&mut self, name: &str, value: Option<T>) -> Option<T> {
        if value.is_none() && !self.problems.iter().any(|p| p.field == name) {
            self.problem(name, "is required");
        }
        value
    }

    /// 422 with every problem found, if any.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(ApiError::validation(self.what, self.problems))
        }
    }
}

/// A single-field 422.
fn invalid(what: &'static str, field: &str, reason: impl Into<String>) -> ApiError {
    ApiError::validation(what, vec![FieldError { field: field.to_owned(), reason: reason.into() }])
}

/// Query parameters: only `allowed` names, each at most once.
fn query_params(
    query: &[(String, String)],
    allowed: &[&str],
) -> Result<std::collections::HashMap<String, String>, ApiError> {
    let mut params = std::collections::HashMap::new();
    for (key, value) in query {
        if !allowed.contains(&key.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "unknown query parameter '{key}' (known: {})",
                allowed.join(", ")
            )));
        }
        if params.insert(key.clone(), value.clone()).is_some() {
            return Err(ApiError::BadRequest(format!("query parameter '{key}' is given twice")));
        }
    }
    Ok(params)
}

/// `limit`: 1 to `max`, `default` when absent.
fn parse_limit(
    params: &std::collections::HashMap<String, String>,
    default: i64,
    max: i64,
) -> Result<i64, ApiError> {
    match params.get("limit") {
        None => Ok(default),
        Some(text) => text.parse::<i64>().ok().filter(|n| (1..=max).contains(n)).ok_or_else(|| {
            ApiError::BadRequest(format!("limit must be a whole number from 1 to {max}"))
        }),
    }
}

/// The per-user event counters of `users`, for planning their events.
async fn user_counters(
    chat: &ChatStore,
    users: &[ObjectId],
) -> Result<std::collections::HashMap<ObjectId, i64>, ApiError> {
    Ok(chat.user_counters(users).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_take_integral_numbers_in_either_json_spelling() {
        let body = serde_json::json!({"a": 7, "b": 7.0, "c": 7.5, "d": -1, "e": "7", "f": null});
        let mut fields = Fields::parse(body, "test", &["a", "b", "c", "d", "e", "f"]).unwrap();
        assert_eq!(fields.count("a"), Some(7));
        assert_eq!(fields.count("b"), Some(7));
        for name in ["c", "d", "e"] {
            assert_eq!(fields.count(name), None, "{name}");
        }
        assert_eq!(fields.count("f"), None);
        let problems: Vec<String> = fields.problems.iter().map(|p| p.field.clone()).collect();
        assert_eq!(problems, ["c", "d", "e"]);
    }
}
