//! The OpenAPI entries of `/api/v1/chats` (merged into `/openapi.json` by `crate::openapi`):
//! every path, its parameters, bodies and status codes, and the chat schemas.

use courier_core::chat;
use serde_json::{Map, Value, json};

use crate::openapi::{OBJECT_ID_PATTERN, WHITESPACE};

/// A string with something besides whitespace in it (the api trims names and texts).
fn not_blank() -> String {
    format!("[^{WHITESPACE}]")
}

/// `schema`, or `null` (the chat endpoints read an optional field's `null` as absent).
fn or_null(schema: Value) -> Value {
    json!({"anyOf": [schema, {"type": "null"}]})
}

fn describe(code: &str) -> &'static str {
    match code {
        "400" => "Malformed id, query parameter, cursor or reaction name",
        "401" => "Missing or invalid access token",
        "403" => "A member, but this role may not do this",
        "404" => "No such room, or not a member of it (the same answer, so rooms stay private)",
        "409" => {
            "Conflicts with the room's state: archived, direct, deleted message, last owner, already a member, or too busy (retry)"
        }
        "413" => "Body over the size limit",
        "415" => "Body is not JSON",
        "422" => "Invalid body (every failing field listed)",
        "429" => "Per-user rate limit; retry after Retry-After seconds",
        "503" => "The database is unavailable; nothing was written",
        _ => "Error",
    }
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn content(schema: Value) -> Value {
    json!({"application/json": {"schema": schema}})
}

fn responses(successes: &[(&str, &str, Option<Value>)], errors: &[&str]) -> Value {
    let mut all = Map::new();
    for code in errors {
        let mut body =
            json!({"description": describe(code), "content": content(schema_ref("Error"))});
        if *code == "429" {
            body["headers"] = json!({"Retry-After": {"schema": {"type": "integer", "minimum": 1}}});
        }
        all.insert((*code).to_owned(), body);
    }
    for (code, description, schema) in successes {
        let mut body = json!({"description": description});
        if let Some(schema) = schema {
            body["content"] = content(schema.clone());
        }
        all.insert((*code).to_owned(), body);
    }
    Value::Object(all)
}

fn body(schema: Value) -> Value {
    json!({"required": true, "content": content(schema)})
}

fn operation(summary: &str, responses: Value) -> Value {
    json!({"tags": ["chat"], "summary": summary, "security": [{"bearerAuth": []}], "responses": responses})
}

fn with_body(mut operation: Value, schema: Value) -> Value {
    operation["requestBody"] = body(schema);
    operation
}

fn with_query(mut operation: Value, parameters: Value) -> Value {
    operation["parameters"] = parameters;
    operation
}

fn path_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}, "description": description})
}

fn id_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string", "pattern": OBJECT_ID_PATTERN}, "description": description})
}

fn page_of(item: &str, next: Value) -> Value {
    json!({"type": "object", "required": ["items", "next"], "properties": {
        "items": {"type": "array", "items": schema_ref(item)}, "next": next}})
}

/// The chat schemas, named `Chat*`.
pub fn schemas() -> Map<String, Value> {
    let id = json!({"type": "string", "pattern": "^[0-9a-f]{24}$"});
    let time = json!({"type": "string", "format": "date-time"});
    let user = json!({"type": "object", "required": ["id", "username"], "properties": {"id": id, "username": {"type": "string"}}});
    let role = json!({"enum": ["owner", "admin", "member"]});
    let mut schemas = Map::new();
    schemas.insert("ChatUser".into(), user);
    schemas.insert(
        "ChatRoom".into(),
        json!({"type": "object", "required": ["id", "kind", "name", "topic", "archived", "created_by", "created_at", "last_seq", "last_activity_at", "member_count", "direct"],
               "properties": {
                   "id": id, "kind": {"enum": ["group", "direct"]}, "name": {"type": "string", "maxLength": chat::MAX_NAME_CHARS},
                   "topic": {"type": "string", "maxLength": chat::MAX_TOPIC_CHARS}, "archived": {"type": "boolean", "description": "Read-only while true"},
                   "created_by": schema_ref("ChatUser"), "created_at": time, "last_seq": {"type": "integer", "description": "Seq of the newest message (0: none)"},
                   "last_activity_at": time, "member_count": {"type": "integer"},
                   "direct": {"type": ["array", "null"], "items": schema_ref("ChatUser"), "description": "The two people of a direct room"}}}),
    );
    schemas.insert(
        "ChatRoomSummary".into(),
        json!({"allOf": [schema_ref("ChatRoom"), {"type": "object", "required": ["role", "last_read_seq", "unread", "mentions"], "properties": {
            "role": role, "last_read_seq": {"type": "integer"},
            "unread": {"type": "integer", "description": "Others' messages after my read marker"},
            "mentions": {"type": "integer", "description": "Unread messages that mention me"}}}]}),
    );
    schemas.insert(
        "ChatMessage".into(),
        json!({"type": "object", "required": ["id", "room_id", "seq", "author", "text", "reply_to", "mentions", "mention_names", "reactions", "created_at", "edited_at", "deleted"],
               "properties": {
                   "id": id, "room_id": id, "seq": {"type": "integer", "minimum": 1, "description": "The room's order: 1, 2, 3… without gaps"},
                   "author": schema_ref("ChatUser"), "text": {"type": "string", "maxLength": chat::MAX_TEXT_CHARS, "description": "Empty when deleted"},
                   "reply_to": {"type": ["integer", "null"]}, "mentions": {"type": "array", "items": id},
                   "mention_names": {"type": "array", "items": {"type": "string"}},
                   "reactions": {"type": "object", "additionalProperties": {"type": "integer"}},
                   "created_at": time, "edited_at": {"type": ["string", "null"], "format": "date-time"}, "deleted": {"type": "boolean"}}}),
    );
    schemas.insert(
        "ChatMember".into(),
        json!({"type": "object", "required": ["user_id", "username", "role", "joined_at"], "properties": {
            "user_id": id, "username": {"type": "string"}, "role": role, "joined_at": time}}),
    );
    schemas.insert(
        "ChatReadMarker".into(),
        json!({"type": "object", "required": ["room_id", "seq", "unread", "mentions"], "properties": {
            "room_id": id, "seq": {"type": "integer"}, "unread": {"type": "integer"}, "mentions": {"type": "integer"}}}),
    );
    schemas
}

/// Every `/api/v1/chats…` path.
pub fn paths() -> Map<String, Value> {
    let room = id_param("id", "The room id");
    let message = id_param("msg", "The message id");
    let username = path_param("username", "A member's username");
    let mut emoji = path_param(
        "emoji",
        "An emoji (percent-encoded) or a short code such as +1: 1 to 64 bytes, no whitespace, control characters or ASCII punctuation but ':', '+', '-' and '_'",
    );
    emoji["schema"] = json!({"type": "string", "minLength": 1, "maxLength": chat::MAX_REACTION_BYTES,
        "pattern": format!("^[^{WHITESPACE}\\u0000-\\u001f\\u007f-\\u009f!-*,./;-@\\[-^`{{-~]+$")});
    let name = json!({"type": "string", "maxLength": chat::MAX_NAME_CHARS, "pattern": not_blank(), "description": "Trimmed"});
    let topic =
        json!({"type": "string", "maxLength": chat::MAX_TOPIC_CHARS, "description": "Trimmed"});
    let text = json!({"type": "string", "maxLength": chat::MAX_TEXT_CHARS, "pattern": not_blank(), "description": "@username mentions of members are parsed"});
    let role = json!({"enum": ["owner", "admin", "member"]});
    let summary = schema_ref("ChatRoomSummary");
    let message_schema = schema_ref("ChatMessage");
    let member = schema_ref("ChatMember");
    let limit = |default: u32| json!({"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": default}});
    let seq_param = |name: &str, description: &str| json!({"name": name, "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": i64::MAX}, "description": description});
    let mut paths = Map::new();
    paths.insert(
        "/api/v1/chats".into(),
        json!({
            "get": with_query(operation("My rooms, newest activity first, with last_seq, unread and mentions",
                    responses(&[("200", "A page of rooms", Some(page_of("ChatRoomSummary", json!({"type": ["string", "null"], "description": "Cursor of the next page"}))))], &["400", "401", "503"])),
                    json!([limit(50), {"name": "cursor", "in": "query", "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"}, "description": "The 'next' of the previous page (an opaque token: any other value is a 400)"}])),
            "post": with_body(operation("Create a group room (I am its owner), or get the one direct room with someone; emits chat.member_added per member",
                    responses(&[("201", "Created", Some(summary.clone())), ("200", "The existing direct room of this pair", Some(summary.clone()))], &["400", "401", "413", "415", "422", "429", "503"])),
                    json!({"oneOf": [
                        {"type": "object", "required": ["name"], "additionalProperties": false, "properties": {
                            "name": name, "topic": or_null(topic.clone()),
                            "members": or_null(json!({"type": "array", "maxItems": chat::MAX_INITIAL_MEMBERS, "items": {"type": "string"}, "description": "Usernames of existing users, added as members"})),
                            "direct": {"type": "null"}}},
                        {"type": "object", "required": ["direct"], "additionalProperties": false, "properties": {
                            "direct": {"type": "string", "description": "The other person's username"},
                            "name": {"type": "null"}, "topic": {"type": "null"}, "members": {"type": "null"}}}]})),
        }),
    );
    paths.insert(
        "/api/v1/chats/{id}".into(),
        json!({
            "parameters": [room],
            "get": operation("A room with my state in it", responses(&[("200", "The room", Some(summary.clone()))], &["400", "401", "404", "503"])),
            "patch": with_body(operation("Rename, set the topic, archive or unarchive (owner or admin); emits chat.room_updated",
                    responses(&[("200", "The room", Some(summary.clone()))], &["400", "401", "403", "404", "409", "413", "415", "422", "429", "503"])),
                    json!({"type": "object", "additionalProperties": false, "properties": {
                        "name": or_null(name.clone()), "topic": or_null(topic.clone()), "archived": or_null(json!({"type": "boolean"}))},
                        "description": "At least one of name, topic and archived (null counts as absent)",
                        "anyOf": [
                            {"required": ["name"], "properties": {"name": {"type": "string"}}},
                            {"required": ["topic"], "properties": {"topic": {"type": "string"}}},
                            {"required": ["archived"], "properties": {"archived": {"type": "boolean"}}}]})),
        }),
    );
    paths.insert(
        "/api/v1/chats/{id}/members".into(),
        json!({
            "parameters": [room],
            "get": operation("The members, longest-standing first", responses(&[("200", "Every member", Some(json!({"type": "object", "required": ["items"], "properties": {"items": {"type": "array", "items": member}}})))], &["400", "401", "404", "503"])),
            "post": with_body(operation("Add a member (owner or admin; only owners grant owner); emits chat.member_added on the room and on the user's channel",
                    responses(&[("201", "Added", Some(member.clone()))], &["400", "401", "403", "404", "409", "413", "415", "422", "429", "503"])),
                    json!({"type": "object", "required": ["username"], "additionalProperties": false, "properties": {
                        "username": {"type": "string", "description": "An existing user's"}, "role": or_null(json!({"enum": ["owner", "admin", "member"], "default": "member"}))}})),
        }),
    );
    paths.insert(
        "/api/v1/chats/{id}/members/{username}".into(),
        json!({
            "parameters": [room, username],
            "patch": with_body(operation("Change a member's role (owners only; the last owner cannot step down); emits chat.member_updated",
                    responses(&[("200", "The member", Some(member))], &["400", "401", "403", "404", "409", "413", "415", "422", "429", "503"])),
                    json!({"type": "object", "required": ["role"], "additionalProperties": false, "properties": {"role": role}})),
            "delete": operation("Leave (anyone) or remove a member (owners anyone, admins members); the last owner's leaving makes the longest-standing admin (else member) owner; emits chat.member_removed on the room and the user's channel",
                    responses(&[("204", "Removed", None)], &["400", "401", "403", "404", "409", "429", "503"])),
        }),
    );
    paths.insert(
        "/api/v1/chats/{id}/messages".into(),
        json!({
            "parameters": [room],
            "get": with_query(operation("History in seq order: the newest page, or before/after a seq",
                    responses(&[("200", "A page of messages", Some(page_of("ChatMessage", json!({"type": ["integer", "null"], "description": "The seq to pass next in the same direction (before for the newest and before pages, after for after pages)"}))))], &["400", "401", "404", "503"])),
                    json!([seq_param("before", "Messages before this seq (not with after)"), seq_param("after", "Messages after this seq (not with before)"), limit(50)])),
            "post": with_body(operation("Send a message: the room's next seq; emits chat.message",
                    responses(&[("201", "Sent", Some(message_schema.clone())), ("200", "This client_msg_id was already sent by me here: the first message", Some(message_schema.clone()))], &["400", "401", "404", "409", "413", "415", "422", "429", "503"])),
                    json!({"type": "object", "required": ["text"], "additionalProperties": false, "properties": {
                        "text": text,
                        "client_msg_id": or_null(json!({"type": "string", "minLength": 1, "maxLength": chat::MAX_CLIENT_MSG_ID_LEN, "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$", "description": "Makes retries safe: 1 to 64 bytes, no control characters"})),
                        "reply_to": or_null(json!({"type": "integer", "minimum": 1, "maximum": u64::MAX, "description": "The seq answered (a message of this room)"}))}})),
        }),
    );
    paths.insert(
        "/api/v1/chats/{id}/messages/{msg}".into(),
        json!({
            "parameters": [room, message],
            "patch": with_body(operation("Edit my message (its author only); sets edited_at; emits chat.message_edited",
                    responses(&[("200", "The message", Some(message_schema.clone()))], &["400", "401", "403", "404", "409", "413", "415", "422", "429", "503"])),
                    json!({"type": "object", "required": ["text"], "additionalProperties": false, "properties": {"text": text}})),
            "delete": operation("Delete a message (author, admin or owner): a tombstone keeps its seq; emits chat.message_deleted",
                    responses(&[("204", "Deleted (also when it already was)", None)], &["400", "401", "403", "404", "409", "429", "503"])),
        }),
    );
    paths.insert(
        "/api/v1/chats/{id}/messages/{msg}/reactions/{emoji}".into(),
        json!({
            "parameters": [room, message, emoji],
            "put": operation("React (one per user per emoji); emits chat.reaction",
                    responses(&[("201", "Added: the message with its counts", Some(message_schema.clone())), ("200", "I had already reacted so", Some(message_schema.clone()))], &["400", "401", "404", "409", "429", "503"])),
            "delete": operation("Take my reaction back; emits chat.reaction",
                    responses(&[("200", "The message with its counts", Some(message_schema))], &["400", "401", "404", "409", "429", "503"])),
        }),
    );
    paths.insert(
        "/api/v1/chats/{id}/read".into(),
        json!({
            "parameters": [room],
            "post": with_body(operation("Move my read marker forward (never back); emits chat.read on user:<me>",
                    responses(&[("200", "Where my marker is now, with the counts", Some(schema_ref("ChatReadMarker")))], &["400", "401", "404", "413", "415", "422", "429", "503"])),
                    json!({"type": "object", "required": ["seq"], "additionalProperties": false, "properties": {"seq": {"type": "integer", "minimum": 0, "maximum": u64::MAX, "description": "At most the room's last_seq"}}})),
        }),
    );
    let blocked = json!({"type": "object", "required": ["user_id", "username", "since"], "properties": {
        "user_id": {"type": "string"}, "username": {"type": "string"}, "since": {"type": "string", "format": "date-time"}}});
    paths.insert(
        "/api/v1/chats/blocks".into(),
        json!({
            "get": operation("My block list, oldest first. Someone I block can neither start a direct room with me nor add me to a group room; in a direct room we share, neither of us can send",
                    responses(&[("200", "Whom I block", Some(json!({"type": "object", "required": ["items"], "properties": {"items": {"type": "array", "items": blocked}}})))], &["401", "503"])),
        }),
    );
    paths.insert(
        "/api/v1/chats/blocks/{username}".into(),
        json!({
            "parameters": [{"name": "username", "in": "path", "required": true, "schema": {"type": "string"}}],
            "put": operation(&format!("Block a user (no event; at most {} on a list)", super::blocks::MAX_BLOCKS),
                    responses(&[("204", "Blocked (also when already)", None)], &["401", "404", "409", "422", "429", "503"])),
            "delete": operation("Unblock a user",
                    responses(&[("204", "Not blocked (also when it was not)", None)], &["401", "429", "503"])),
        }),
    );
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_chat_route_is_documented_with_its_status_codes() {
        let paths = paths();
        let expect = [
            ("/api/v1/chats", "get", vec!["200", "400", "401"]),
            ("/api/v1/chats", "post", vec!["200", "201", "401", "422", "429"]),
            ("/api/v1/chats/{id}", "get", vec!["200", "404"]),
            ("/api/v1/chats/{id}", "patch", vec!["200", "403", "404", "409", "422"]),
            ("/api/v1/chats/{id}/members", "get", vec!["200", "404"]),
            ("/api/v1/chats/{id}/members", "post", vec!["201", "403", "404", "409", "422"]),
            ("/api/v1/chats/{id}/members/{username}", "patch", vec!["200", "403", "409"]),
            ("/api/v1/chats/{id}/members/{username}", "delete", vec!["204", "403", "404", "409"]),
            ("/api/v1/chats/{id}/messages", "get", vec!["200", "400", "404"]),
            ("/api/v1/chats/{id}/messages", "post", vec!["200", "201", "404", "409", "422", "429"]),
            ("/api/v1/chats/{id}/messages/{msg}", "patch", vec!["200", "403", "409", "422"]),
            ("/api/v1/chats/{id}/messages/{msg}", "delete", vec!["204", "403", "404"]),
            (
                "/api/v1/chats/{id}/messages/{msg}/reactions/{emoji}",
                "put",
                vec!["200", "201", "400", "409"],
            ),
            (
                "/api/v1/chats/{id}/messages/{msg}/reactions/{emoji}",
                "delete",
                vec!["200", "400", "429"],
            ),
            ("/api/v1/chats/{id}/read", "post", vec!["200", "404", "422", "429"]),
            ("/api/v1/chats/blocks", "get", vec!["200", "401"]),
            ("/api/v1/chats/blocks/{username}", "put", vec!["204", "404", "422", "429"]),
            ("/api/v1/chats/blocks/{username}", "delete", vec!["204", "429"]),
        ];
        for (path, method, codes) in expect {
            let op = &paths[path][method];
            assert_eq!(op["security"], json!([{"bearerAuth": []}]), "{method} {path}");
            for code in codes {
                assert!(op["responses"][code].is_object(), "{method} {path} lacks {code}");
            }
        }
        assert_eq!(paths.len(), 10, "one entry per route");
        let limited = &paths["/api/v1/chats/{id}/messages"]["post"]["responses"]["429"];
        assert!(limited["headers"]["Retry-After"].is_object());
        // Every schema referenced exists.
        let schemas = schemas();
        let text = serde_json::to_string(&paths).unwrap();
        for name in
            text.split("#/components/schemas/").skip(1).map(|s| s.split('"').next().unwrap())
        {
            assert!(name == "Error" || schemas.contains_key(name), "{name}");
        }
    }
}
