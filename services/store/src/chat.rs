//! Chat in MongoDB: rooms, memberships, messages, reactions and per-user event counters. Every
//! chat query lives here, typed; so do the guarded writes that keep a room's `seq` and its event
//! order gap-free (callers plan a change from what they read, commit it with [`ChatStore::commit`]
//! and re-plan when [`Commit::Raced`] says another change got in first).
//!
//! Invariants the writes keep:
//! - `room.last_seq` is the seq of the newest message; a send guards on it and on `room.ev`.
//! - `room.ev` counts the room's events; every change that emits one guards on it and adds the
//!   number it emits, so room events get distinct, increasing outbox versions.
//! - a membership's `own_after_read` / `mentions_after_read` count my messages / unread messages
//!   mentioning me after `last_read_seq`: sends increment them, edits and deletes adjust them,
//!   moving the marker recomputes them. Each such change bumps the membership's `_v`.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use courier_core::chat::{self, Role, RoomKind, UserRef};
use futures::TryStreamExt;
use mongodb::{
    Collection, IndexModel,
    bson::{self, Bson, Document, doc, oid::ObjectId},
    error::TRANSIENT_TRANSACTION_ERROR,
    options::IndexOptions,
};
use serde::{Deserialize, Serialize};

use crate::{
    documents::VERSION_FIELD,
    outbox::OutboxRecord,
    store::{Store, StoreError, Write, is_unavailable},
    task_results::is_duplicate_key,
};

pub const ROOMS: &str = "_chat_rooms";
pub const MEMBERS: &str = "_chat_members";
pub const MESSAGES: &str = "_chat_messages";
pub const REACTIONS: &str = "_chat_reactions";
/// `{_id: user id, ev}`: the counter ordering a user's own events (`user/<id>` outbox key).
pub const USER_COUNTERS: &str = "_chat_users";
/// The accounts' users (written by the api's accounts module); chat only looks names up.
pub const USERS: &str = "_users";
/// `{user_id, blocked_id, blocked_username, created_at}`: whom each user has blocked.
pub const BLOCKS: &str = "_chat_blocks";

/// One entry of a user's block list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockDoc {
    /// Who blocked.
    pub user_id: ObjectId,
    /// Whom.
    pub blocked_id: ObjectId,
    pub blocked_username: String,
    pub created_at: bson::DateTime,
}

/// A user as stored inside chat documents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredUser {
    pub id: ObjectId,
    pub username: String,
}

impl StoredUser {
    pub fn to_wire(&self) -> UserRef {
        UserRef { id: self.id.to_hex(), username: self.username.clone() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoomDoc {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    pub kind: RoomKind,
    pub name: String,
    pub topic: String,
    pub archived: bool,
    pub created_by: StoredUser,
    pub created_at: bson::DateTime,
    pub last_seq: i64,
    /// Events emitted on the room so far (the outbox version of the last one).
    pub ev: i64,
    pub last_activity_at: bson::DateTime,
    /// Who is in the room (for "my rooms by activity"); left out of ordinary reads.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub member_ids: Vec<ObjectId>,
    pub member_count: i64,
    /// `<smaller user id>:<larger user id>` of a direct room (unique).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct: Option<Vec<StoredUser>>,
}

impl RoomDoc {
    pub fn to_wire(&self) -> chat::Room {
        chat::Room {
            id: self.id.to_hex(),
            kind: self.kind,
            name: self.name.clone(),
            topic: self.topic.clone(),
            archived: self.archived,
            created_by: self.created_by.to_wire(),
            created_at: chrono_time(self.created_at),
            last_seq: count(self.last_seq),
            last_activity_at: chrono_time(self.last_activity_at),
            member_count: count(self.member_count),
            direct: self.direct.as_ref().map(|d| d.iter().map(StoredUser::to_wire).collect()),
        }
    }

    /// The key of the direct room of `a` and `b` (the same whichever order they come in).
    pub fn direct_key_of(a: ObjectId, b: ObjectId) -> String {
        let (low, high) = if a.bytes() <= b.bytes() { (a, b) } else { (b, a) };
        format!("{}:{}", low.to_hex(), high.to_hex())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberDoc {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    pub room_id: ObjectId,
    pub user_id: ObjectId,
    pub username: String,
    pub role: Role,
    pub joined_at: bson::DateTime,
    pub last_read_seq: i64,
    /// My own messages after `last_read_seq`.
    pub own_after_read: i64,
    /// Others' messages after `last_read_seq` that mention me (tombstones excluded).
    pub mentions_after_read: i64,
    #[serde(rename = "_v")]
    pub version: i64,
}

impl MemberDoc {
    pub fn new(room_id: ObjectId, user: &StoredUser, role: Role, last_read_seq: i64) -> Self {
        MemberDoc {
            id: ObjectId::new(),
            room_id,
            user_id: user.id,
            username: user.username.clone(),
            role,
            joined_at: bson::DateTime::now(),
            last_read_seq,
            own_after_read: 0,
            mentions_after_read: 0,
            version: 1,
        }
    }

    pub fn to_wire(&self) -> chat::Member {
        chat::Member {
            user_id: self.user_id.to_hex(),
            username: self.username.clone(),
            role: self.role,
            joined_at: chrono_time(self.joined_at),
        }
    }

    /// Others' messages after my marker, given the room's newest seq.
    pub fn unread(&self, last_seq: i64) -> u64 {
        count(last_seq - self.last_read_seq - self.own_after_read)
    }

    pub fn summary(&self, room: &RoomDoc) -> chat::RoomSummary {
        chat::RoomSummary {
            room: room.to_wire(),
            role: self.role,
            last_read_seq: count(self.last_read_seq),
            unread: self.unread(room.last_seq),
            mentions: count(self.mentions_after_read),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessageDoc {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    pub room_id: ObjectId,
    pub seq: i64,
    pub author: StoredUser,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_msg_id: Option<String>,
    #[serde(default)]
    pub reply_to: Option<i64>,
    /// Mentioned members other than the author.
    pub mentions: Vec<ObjectId>,
    pub mention_names: Vec<String>,
    #[serde(default)]
    pub reactions: BTreeMap<String, i64>,
    pub created_at: bson::DateTime,
    #[serde(default)]
    pub edited_at: Option<bson::DateTime>,
    pub deleted: bool,
}

impl MessageDoc {
    pub fn to_wire(&self) -> chat::Message {
        chat::Message {
            id: self.id.to_hex(),
            room_id: self.room_id.to_hex(),
            seq: count(self.seq),
            author: self.author.to_wire(),
            text: self.text.clone(),
            reply_to: self.reply_to.map(count),
            mentions: self.mentions.iter().map(|m| m.to_hex()).collect(),
            mention_names: self.mention_names.clone(),
            reactions: self.reactions.iter().map(|(k, v)| (k.clone(), count(*v))).collect(),
            created_at: chrono_time(self.created_at),
            edited_at: self.edited_at.map(chrono_time),
            deleted: self.deleted,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReactionDoc {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    pub room_id: ObjectId,
    pub message_id: ObjectId,
    pub user_id: ObjectId,
    pub emoji: String,
    pub at: bson::DateTime,
    #[serde(rename = "_v")]
    pub version: i64,
}

/// Which page of a room's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryRange {
    /// The newest messages.
    Latest,
    /// Messages with a smaller seq.
    Before(i64),
    /// Messages with a greater seq.
    After(i64),
}

/// What a room change does besides counting its events (see [`ChatStore::change_room`]).
#[derive(Debug, Clone, Default)]
pub struct RoomChange {
    /// Events the change emits on the room (added to `ev`).
    pub events: i64,
    /// A message is sent at this time: `last_seq` + 1 and the room's activity time.
    pub message_at: Option<bson::DateTime>,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub archived: Option<bool>,
    pub add_member: Option<ObjectId>,
    pub remove_member: Option<ObjectId>,
}

/// The outcome of [`ChatStore::commit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    Done,
    /// A concurrent change invalidated what the plan was based on (a guard matched nothing,
    /// or a unique key was taken meanwhile): read again and re-plan.
    Raced,
}

/// Chat's view of the store.
#[derive(Clone)]
pub struct ChatStore {
    store: Store,
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn chrono_time(time: bson::DateTime) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(time.timestamp_millis()).unwrap_or_default()
}

fn index(keys: Document, name: &str, unique: bool) -> IndexModel {
    IndexModel::builder()
        .keys(keys)
        .options(IndexOptions::builder().name(name.to_owned()).unique(unique).build())
        .build()
}

fn to_document<T: Serialize>(value: &T) -> Document {
    bson::to_document(value).expect("chat documents always serialize")
}

/// Reads of a room leave its member list out (up to [`chat::MAX_MEMBERS`] ids).
fn room_projection() -> Document {
    doc! {"member_ids": 0}
}

impl Store {
    pub fn chat(&self) -> ChatStore {
        ChatStore { store: self.clone() }
    }
}

impl ChatStore {
    fn rooms(&self) -> Collection<RoomDoc> {
        self.store.collection(ROOMS).clone_with_type()
    }

    fn members(&self) -> Collection<MemberDoc> {
        self.store.collection(MEMBERS).clone_with_type()
    }

    fn messages(&self) -> Collection<MessageDoc> {
        self.store.collection(MESSAGES).clone_with_type()
    }

    fn reactions(&self) -> Collection<ReactionDoc> {
        self.store.collection(REACTIONS).clone_with_type()
    }

    /// Creates the indexes chat's queries use (idempotent).
    pub async fn ensure_indexes(&self) -> mongodb::error::Result<()> {
        let messages = self.store.collection(MESSAGES);
        messages
            .create_index(index(doc! {"room_id": 1, "seq": 1}, "room_seq_unique", true))
            .await?;
        let idempotency = IndexOptions::builder()
            .name("room_author_client_msg_id_unique".to_owned())
            .unique(true)
            .partial_filter_expression(doc! {"client_msg_id": {"$type": "string"}})
            .build();
        messages
            .create_index(
                IndexModel::builder()
                    .keys(doc! {"room_id": 1, "author.id": 1, "client_msg_id": 1})
                    .options(idempotency)
                    .build(),
            )
            .await?;
        messages
            .create_index(index(
                doc! {"room_id": 1, "author.id": 1, "seq": 1},
                "room_author_seq",
                false,
            ))
            .await?;
        messages
            .create_index(index(
                doc! {"room_id": 1, "mentions": 1, "seq": 1},
                "room_mentions_seq",
                false,
            ))
            .await?;

        let members = self.store.collection(MEMBERS);
        members
            .create_index(index(doc! {"room_id": 1, "user_id": 1}, "room_user_unique", true))
            .await?;
        members
            .create_index(index(doc! {"room_id": 1, "username": 1}, "room_username_unique", true))
            .await?;
        members
            .create_index(index(doc! {"room_id": 1, "joined_at": 1}, "room_joined", false))
            .await?;
        members.create_index(index(doc! {"user_id": 1, "room_id": 1}, "user_room", false)).await?;

        let rooms = self.store.collection(ROOMS);
        rooms
            .create_index(index(
                doc! {"member_ids": 1, "last_activity_at": -1, "_id": -1},
                "member_activity",
                false,
            ))
            .await?;
        let direct = IndexOptions::builder()
            .name("direct_key_unique".to_owned())
            .unique(true)
            .partial_filter_expression(doc! {"direct_key": {"$type": "string"}})
            .build();
        rooms
            .create_index(
                IndexModel::builder().keys(doc! {"direct_key": 1}).options(direct).build(),
            )
            .await?;

        self.store
            .collection(REACTIONS)
            .create_index(index(
                doc! {"message_id": 1, "user_id": 1, "emoji": 1},
                "message_user_emoji_unique",
                true,
            ))
            .await?;

        let blocks = self.store.collection(BLOCKS);
        blocks
            .create_index(index(doc! {"user_id": 1, "blocked_id": 1}, "user_blocked_unique", true))
            .await?;
        blocks
            .create_index(index(doc! {"blocked_id": 1, "user_id": 1}, "blocked_user", false))
            .await?;
        Ok(())
    }

    // ---- block lists (no events: a block is the blocker's own business) -----------------

    fn blocks(&self) -> Collection<BlockDoc> {
        self.store.collection(BLOCKS).clone_with_type()
    }

    /// `user`'s block list, oldest first (at most `limit`).
    pub async fn blocks_of(
        &self,
        user: ObjectId,
        limit: i64,
    ) -> mongodb::error::Result<Vec<BlockDoc>> {
        self.blocks()
            .find(doc! {"user_id": user})
            .sort(doc! {"created_at": 1, "_id": 1})
            .limit(limit)
            .max_time(self.store.query_timeout())
            .await?
            .try_collect()
            .await
    }

    pub async fn block_count(&self, user: ObjectId) -> mongodb::error::Result<u64> {
        self.blocks()
            .count_documents(doc! {"user_id": user})
            .max_time(self.store.query_timeout())
            .await
    }

    /// `user` blocks `other`; `false` when it already had.
    pub async fn block(&self, user: ObjectId, other: &StoredUser) -> mongodb::error::Result<bool> {
        let entry = BlockDoc {
            user_id: user,
            blocked_id: other.id,
            blocked_username: other.username.clone(),
            created_at: bson::DateTime::now(),
        };
        match self.blocks().insert_one(&entry).await {
            Ok(_) => Ok(true),
            Err(err) if is_duplicate_key(&err) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// `user` unblocks `other`; `false` when it had not blocked them.
    pub async fn unblock(&self, user: ObjectId, other: ObjectId) -> mongodb::error::Result<bool> {
        let deleted = self.blocks().delete_one(doc! {"user_id": user, "blocked_id": other}).await?;
        Ok(deleted.deleted_count > 0)
    }

    /// Which of `others` have blocked `user`.
    pub async fn blocked_by(
        &self,
        user: ObjectId,
        others: &[ObjectId],
    ) -> mongodb::error::Result<Vec<ObjectId>> {
        if others.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<BlockDoc> = self
            .blocks()
            .find(doc! {"blocked_id": user, "user_id": {"$in": others}})
            .max_time(self.store.query_timeout())
            .await?
            .try_collect()
            .await?;
        Ok(rows.into_iter().map(|b| b.user_id).collect())
    }

    /// Whether `a` has blocked `b` or `b` has blocked `a`.
    pub async fn either_blocked(&self, a: ObjectId, b: ObjectId) -> mongodb::error::Result<bool> {
        let found = self
            .blocks()
            .find_one(doc! {"$or": [
                {"user_id": a, "blocked_id": b},
                {"user_id": b, "blocked_id": a},
            ]})
            .max_time(self.store.query_timeout())
            .await?;
        Ok(found.is_some())
    }

    // ---- reads -------------------------------------------------------------------------

    /// Users by (lowercase) username; unknown names are simply absent.
    pub async fn users_by_usernames(
        &self,
        usernames: &[String],
    ) -> mongodb::error::Result<Vec<StoredUser>> {
        if usernames.is_empty() {
            return Ok(Vec::new());
        }
        #[derive(Deserialize)]
        struct Row {
            #[serde(rename = "_id")]
            id: ObjectId,
            username: String,
        }
        let rows: Vec<Row> = self
            .store
            .collection(USERS)
            .clone_with_type::<Row>()
            .find(doc! {"username": {"$in": usernames}})
            .max_time(self.store.query_timeout())
            .projection(doc! {"_id": 1, "username": 1})
            .limit(i64::try_from(usernames.len()).unwrap_or(i64::MAX))
            .await?
            .try_collect()
            .await?;
        Ok(rows.into_iter().map(|r| StoredUser { id: r.id, username: r.username }).collect())
    }

    pub async fn room(&self, id: ObjectId) -> mongodb::error::Result<Option<RoomDoc>> {
        self.rooms()
            .find_one(doc! {"_id": id})
            .max_time(self.store.query_timeout())
            .projection(room_projection())
            .await
    }

    pub async fn direct_room(&self, key: &str) -> mongodb::error::Result<Option<RoomDoc>> {
        self.rooms()
            .find_one(doc! {"direct_key": key})
            .max_time(self.store.query_timeout())
            .projection(room_projection())
            .await
    }

    pub async fn membership(
        &self,
        room_id: ObjectId,
        user_id: ObjectId,
    ) -> mongodb::error::Result<Option<MemberDoc>> {
        self.members()
            .find_one(doc! {"room_id": room_id, "user_id": user_id})
            .max_time(self.store.query_timeout())
            .await
    }

    pub async fn membership_by_username(
        &self,
        room_id: ObjectId,
        username: &str,
    ) -> mongodb::error::Result<Option<MemberDoc>> {
        self.members()
            .find_one(doc! {"room_id": room_id, "username": username})
            .max_time(self.store.query_timeout())
            .await
    }

    /// The members among `usernames` (for `@mentions`).
    pub async fn members_named(
        &self,
        room_id: ObjectId,
        usernames: &[String],
    ) -> mongodb::error::Result<Vec<MemberDoc>> {
        if usernames.is_empty() {
            return Ok(Vec::new());
        }
        self.members()
            .find(doc! {"room_id": room_id, "username": {"$in": usernames}})
            .max_time(self.store.query_timeout())
            .await?
            .try_collect()
            .await
    }

    pub async fn memberships_by_ids(
        &self,
        room_id: ObjectId,
        user_ids: &[ObjectId],
    ) -> mongodb::error::Result<Vec<MemberDoc>> {
        if user_ids.is_empty() {
            return Ok(Vec::new());
        }
        self.members()
            .find(doc! {"room_id": room_id, "user_id": {"$in": user_ids}})
            .max_time(self.store.query_timeout())
            .await?
            .try_collect()
            .await
    }

    /// Every member of a room, longest-standing first.
    pub async fn room_members(&self, room_id: ObjectId) -> mongodb::error::Result<Vec<MemberDoc>> {
        self.members()
            .find(doc! {"room_id": room_id})
            .max_time(self.store.query_timeout())
            .sort(doc! {"joined_at": 1, "_id": 1})
            .limit(chat::MAX_MEMBERS as i64)
            .await?
            .try_collect()
            .await
    }

    /// Who becomes owner when the last one leaves: the longest-standing admin, else the
    /// longest-standing member, never `leaving`.
    pub async fn successor(
        &self,
        room_id: ObjectId,
        leaving: ObjectId,
    ) -> mongodb::error::Result<Option<MemberDoc>> {
        for role in [Role::Admin, Role::Member] {
            let found = self
                .members()
                .find_one(
                    doc! {"room_id": room_id, "role": role.as_str(), "user_id": {"$ne": leaving}},
                )
                .max_time(self.store.query_timeout())
                .sort(doc! {"joined_at": 1, "_id": 1})
                .await?;
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    /// How many owners a room has (up to 2: the callers only need "is there another").
    pub async fn owner_count(&self, room_id: ObjectId) -> mongodb::error::Result<u64> {
        let owners: Vec<Document> = self
            .store
            .collection(MEMBERS)
            .find(doc! {"room_id": room_id, "role": Role::Owner.as_str()})
            .max_time(self.store.query_timeout())
            .projection(doc! {"_id": 1})
            .limit(2)
            .await?
            .try_collect()
            .await?;
        Ok(owners.len() as u64)
    }

    /// The opaque room-list cursor after `room`: its activity time and id.
    pub fn room_cursor(room: &RoomDoc) -> String {
        use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
        URL_SAFE_NO_PAD.encode(format!(
            "{}.{}",
            room.last_activity_at.timestamp_millis(),
            room.id.to_hex()
        ))
    }

    /// Decodes a client's room-list cursor (like every cursor, checked in the store before any
    /// query: a whole number of milliseconds and an `ObjectId`, nothing else).
    pub fn decode_room_cursor(
        text: &str,
    ) -> Result<(bson::DateTime, ObjectId), crate::query::CursorError> {
        use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
        let malformed = crate::query::CursorError::Malformed;
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| malformed.clone())?;
        let text = String::from_utf8(bytes).map_err(|_| malformed.clone())?;
        let (millis, id) = text.split_once('.').ok_or(malformed.clone())?;
        let millis: i64 = millis.parse().map_err(|_| malformed.clone())?;
        let id = ObjectId::parse_str(id).map_err(|_| malformed)?;
        Ok((bson::DateTime::from_millis(millis), id))
    }

    /// My rooms, newest activity first, after the `(last_activity_at, id)` position `after`.
    pub async fn rooms_of(
        &self,
        user_id: ObjectId,
        after: Option<(bson::DateTime, ObjectId)>,
        limit: i64,
    ) -> mongodb::error::Result<Vec<RoomDoc>> {
        let mut filter = doc! {"member_ids": user_id};
        if let Some((time, id)) = after {
            filter.insert(
                "$or",
                vec![
                    Bson::Document(doc! {"last_activity_at": {"$lt": time}}),
                    Bson::Document(doc! {"last_activity_at": time, "_id": {"$lt": id}}),
                ],
            );
        }
        self.rooms()
            .find(filter)
            .max_time(self.store.query_timeout())
            .sort(doc! {"last_activity_at": -1, "_id": -1})
            .projection(room_projection())
            .limit(limit)
            .await?
            .try_collect()
            .await
    }

    /// My memberships in `room_ids`.
    pub async fn memberships_of(
        &self,
        user_id: ObjectId,
        room_ids: &[ObjectId],
    ) -> mongodb::error::Result<Vec<MemberDoc>> {
        if room_ids.is_empty() {
            return Ok(Vec::new());
        }
        self.members()
            .find(doc! {"user_id": user_id, "room_id": {"$in": room_ids}})
            .max_time(self.store.query_timeout())
            .await?
            .try_collect()
            .await
    }

    pub async fn message(
        &self,
        room_id: ObjectId,
        id: ObjectId,
    ) -> mongodb::error::Result<Option<MessageDoc>> {
        self.messages()
            .find_one(doc! {"_id": id, "room_id": room_id})
            .max_time(self.store.query_timeout())
            .await
    }

    pub async fn message_by_client_id(
        &self,
        room_id: ObjectId,
        author: ObjectId,
        client_msg_id: &str,
    ) -> mongodb::error::Result<Option<MessageDoc>> {
        self.messages()
            .find_one(
                doc! {"room_id": room_id, "author.id": author, "client_msg_id": client_msg_id},
            )
            .max_time(self.store.query_timeout())
            .await
    }

    /// Up to `limit` messages of `range`, in seq order.
    pub async fn history(
        &self,
        room_id: ObjectId,
        range: HistoryRange,
        limit: i64,
    ) -> mongodb::error::Result<Vec<MessageDoc>> {
        let (filter, order) = match range {
            HistoryRange::Latest => (doc! {"room_id": room_id}, -1),
            HistoryRange::Before(seq) => (doc! {"room_id": room_id, "seq": {"$lt": seq}}, -1),
            HistoryRange::After(seq) => (doc! {"room_id": room_id, "seq": {"$gt": seq}}, 1),
        };
        let mut page: Vec<MessageDoc> = self
            .messages()
            .find(filter)
            .max_time(self.store.query_timeout())
            .sort(doc! {"seq": order})
            .limit(limit)
            .await?
            .try_collect()
            .await?;
        if order < 0 {
            page.reverse();
        }
        Ok(page)
    }

    /// `(my messages, others' messages mentioning me)` with a seq after `seq`: a membership's
    /// counters for a marker at `seq`.
    pub async fn counts_after(
        &self,
        room_id: ObjectId,
        user_id: ObjectId,
        seq: i64,
    ) -> mongodb::error::Result<(i64, i64)> {
        let messages = self.store.collection(MESSAGES);
        let own = messages
            .count_documents(doc! {"room_id": room_id, "author.id": user_id, "seq": {"$gt": seq}})
            .max_time(self.store.query_timeout())
            .await?;
        let mentions = messages
            .count_documents(doc! {"room_id": room_id, "mentions": user_id, "seq": {"$gt": seq}})
            .max_time(self.store.query_timeout())
            .await?;
        Ok((i64::try_from(own).unwrap_or(i64::MAX), i64::try_from(mentions).unwrap_or(i64::MAX)))
    }

    pub async fn reaction(
        &self,
        message_id: ObjectId,
        user_id: ObjectId,
        emoji: &str,
    ) -> mongodb::error::Result<Option<ReactionDoc>> {
        self.reactions()
            .find_one(doc! {"message_id": message_id, "user_id": user_id, "emoji": emoji})
            .max_time(self.store.query_timeout())
            .await
    }

    /// The current event counters of `users` (absent: no event yet).
    pub async fn user_counters(
        &self,
        users: &[ObjectId],
    ) -> mongodb::error::Result<HashMap<ObjectId, i64>> {
        #[derive(Deserialize)]
        struct Counter {
            #[serde(rename = "_id")]
            id: ObjectId,
            ev: i64,
        }
        if users.is_empty() {
            return Ok(HashMap::new());
        }
        let rows: Vec<Counter> = self
            .store
            .collection(USER_COUNTERS)
            .clone_with_type::<Counter>()
            .find(doc! {"_id": {"$in": users}})
            .max_time(self.store.query_timeout())
            .await?
            .try_collect()
            .await?;
        Ok(rows.into_iter().map(|c| (c.id, c.ev)).collect())
    }

    // ---- writes (planned from what was read; guards make stale plans fail) ---------------

    pub fn insert_room(room: &RoomDoc) -> Write {
        Write::Insert { collection: ROOMS.to_owned(), document: to_document(room) }
    }

    /// Applies `change` to `room` as read: fails (→ [`Commit::Raced`]) if the room emitted an
    /// event, or got a message, since.
    pub fn change_room(room: &RoomDoc, change: RoomChange) -> Write {
        let mut filter = doc! {"_id": room.id, "ev": room.ev};
        let mut inc = doc! {"ev": change.events};
        let mut set = Document::new();
        if let Some(at) = change.message_at {
            filter.insert("last_seq", room.last_seq);
            inc.insert("last_seq", 1_i64);
            set.insert("last_activity_at", at);
        }
        if let Some(name) = change.name {
            set.insert("name", name);
        }
        if let Some(topic) = change.topic {
            set.insert("topic", topic);
        }
        if let Some(archived) = change.archived {
            set.insert("archived", archived);
        }
        let mut update = doc! {};
        if let Some(user) = change.add_member {
            update.insert("$push", doc! {"member_ids": user});
            inc.insert("member_count", 1_i64);
        }
        if let Some(user) = change.remove_member {
            update.insert("$pull", doc! {"member_ids": user});
            inc.insert("member_count", -1_i64);
        }
        update.insert("$inc", inc);
        if !set.is_empty() {
            update.insert("$set", set);
        }
        Write::Update { collection: ROOMS.to_owned(), filter, update }
    }

    pub fn insert_member(member: &MemberDoc) -> Write {
        Write::Insert { collection: MEMBERS.to_owned(), document: to_document(member) }
    }

    pub fn delete_member(member: &MemberDoc) -> Write {
        Write::Delete {
            collection: MEMBERS.to_owned(),
            id: member.id,
            expected_version: member.version,
        }
    }

    pub fn set_role(member: &MemberDoc, role: Role) -> Write {
        Write::Update {
            collection: MEMBERS.to_owned(),
            filter: doc! {"_id": member.id},
            update: doc! {"$set": {"role": role.as_str()}, "$inc": {VERSION_FIELD: 1_i64}},
        }
    }

    /// A new message by `user` (after every marker, so no guard is needed): `own_after_read` +1.
    pub fn count_own_message(room_id: ObjectId, user_id: ObjectId) -> Write {
        Write::Update {
            collection: MEMBERS.to_owned(),
            filter: doc! {"room_id": room_id, "user_id": user_id},
            update: doc! {"$inc": {"own_after_read": 1_i64, VERSION_FIELD: 1_i64}},
        }
    }

    /// A new message mentions `user`: `mentions_after_read` +1.
    pub fn count_new_mention(room_id: ObjectId, user_id: ObjectId) -> Write {
        Write::Update {
            collection: MEMBERS.to_owned(),
            filter: doc! {"room_id": room_id, "user_id": user_id},
            update: doc! {"$inc": {"mentions_after_read": 1_i64, VERSION_FIELD: 1_i64}},
        }
    }

    /// An edit or delete changed whether an unread message mentions `member` (as read).
    pub fn adjust_mentions(member: &MemberDoc, delta: i64) -> Write {
        Write::Update {
            collection: MEMBERS.to_owned(),
            filter: doc! {"_id": member.id, VERSION_FIELD: member.version},
            update: doc! {"$inc": {"mentions_after_read": delta, VERSION_FIELD: 1_i64}},
        }
    }

    /// Moves `member`'s marker (as read) to `seq` with the counters recounted for it.
    pub fn move_marker(member: &MemberDoc, seq: i64, own: i64, mentions: i64) -> Write {
        Write::Update {
            collection: MEMBERS.to_owned(),
            filter: doc! {"_id": member.id, VERSION_FIELD: member.version},
            update: doc! {
                "$set": {"last_read_seq": seq, "own_after_read": own, "mentions_after_read": mentions},
                "$inc": {VERSION_FIELD: 1_i64},
            },
        }
    }

    pub fn insert_message(message: &MessageDoc) -> Write {
        Write::Insert { collection: MESSAGES.to_owned(), document: to_document(message) }
    }

    /// The edited text and its mentions.
    pub fn edit_message(message: &MessageDoc) -> Write {
        Write::Update {
            collection: MESSAGES.to_owned(),
            filter: doc! {"_id": message.id, "deleted": false},
            update: doc! {"$set": {
                "text": &message.text,
                "mentions": &message.mentions,
                "mention_names": &message.mention_names,
                "edited_at": message.edited_at,
            }},
        }
    }

    /// Turns a message into its tombstone (text, mentions and reactions cleared).
    pub fn tombstone(message_id: ObjectId, by: ObjectId, at: bson::DateTime) -> Write {
        Write::Update {
            collection: MESSAGES.to_owned(),
            filter: doc! {"_id": message_id, "deleted": false},
            update: doc! {"$set": {
                "text": "", "mentions": [], "mention_names": [], "reactions": {},
                "deleted": true, "deleted_at": at, "deleted_by": by,
            }},
        }
    }

    /// The message's count of `emoji` goes from `current` by `delta` (removed at 0).
    pub fn count_reaction(message: &MessageDoc, emoji: &str, delta: i64) -> Write {
        let current = message.reactions.get(emoji).copied().unwrap_or(0);
        let field = format!("reactions.{emoji}");
        let update = if current + delta <= 0 {
            doc! {"$unset": {field: ""}}
        } else {
            doc! {"$inc": {field: delta}}
        };
        Write::Update {
            collection: MESSAGES.to_owned(),
            filter: doc! {"_id": message.id, "deleted": false},
            update,
        }
    }

    pub fn insert_reaction(reaction: &ReactionDoc) -> Write {
        Write::Insert { collection: REACTIONS.to_owned(), document: to_document(reaction) }
    }

    pub fn delete_reaction(reaction: &ReactionDoc) -> Write {
        Write::Delete {
            collection: REACTIONS.to_owned(),
            id: reaction.id,
            expected_version: reaction.version,
        }
    }

    /// The next event of `user`, whose counter was `current` when read: the write and the
    /// outbox version it gives the event.
    pub fn next_user_event(user: ObjectId, current: Option<i64>) -> (Write, i64) {
        match current {
            None => (
                Write::Insert {
                    collection: USER_COUNTERS.to_owned(),
                    document: doc! {"_id": user, "ev": 1_i64},
                },
                1,
            ),
            Some(ev) => (
                Write::Update {
                    collection: USER_COUNTERS.to_owned(),
                    filter: doc! {"_id": user, "ev": ev},
                    update: doc! {"$inc": {"ev": 1_i64}},
                },
                ev + 1,
            ),
        }
    }

    /// Commits a planned change. A guard that no longer holds, a unique key taken since the
    /// plan was read (the same message, direct room or counter created concurrently), or a
    /// write conflict with a concurrent transaction is [`Commit::Raced`]: nothing was written.
    pub async fn commit(
        &self,
        writes: &[Write],
        outbox: &[OutboxRecord],
    ) -> Result<Commit, StoreError> {
        match self.store.commit(writes, outbox).await {
            Ok(()) => Ok(Commit::Done),
            Err(StoreError::VersionConflict) => Ok(Commit::Raced),
            Err(StoreError::Mongo(err)) if is_duplicate_key(&err) => Ok(Commit::Raced),
            // Write conflicts that outlasted the transaction's own retries: concurrent
            // changes to the same room; planning again from fresh reads resolves them.
            Err(StoreError::Mongo(err))
                if err.contains_label(TRANSIENT_TRANSACTION_ERROR) && !is_unavailable(&err) =>
            {
                tracing::debug!(%err, "chat commit conflicted with a concurrent one");
                Ok(Commit::Raced)
            }
            Err(err) => Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_has_one_direct_key_whatever_the_order() {
        let (a, b) = (ObjectId::new(), ObjectId::new());
        assert_eq!(RoomDoc::direct_key_of(a, b), RoomDoc::direct_key_of(b, a));
        assert_ne!(RoomDoc::direct_key_of(a, b), RoomDoc::direct_key_of(a, ObjectId::new()));
    }

    #[test]
    fn unread_counts_others_messages_after_the_marker() {
        let user = StoredUser { id: ObjectId::new(), username: "ana".into() };
        let mut member = MemberDoc::new(ObjectId::new(), &user, Role::Member, 4);
        member.own_after_read = 2;
        assert_eq!(member.unread(10), 4, "seqs 5..=10 less my two");
        member.own_after_read = 9;
        assert_eq!(member.unread(10), 0, "never negative");
    }

    #[test]
    fn sends_guard_on_the_seq_and_the_event_counter() {
        let room = RoomDoc {
            id: ObjectId::new(),
            kind: RoomKind::Group,
            name: "r".into(),
            topic: String::new(),
            archived: false,
            created_by: StoredUser { id: ObjectId::new(), username: "ana".into() },
            created_at: bson::DateTime::now(),
            last_seq: 7,
            ev: 12,
            last_activity_at: bson::DateTime::now(),
            member_ids: vec![],
            member_count: 2,
            direct_key: None,
            direct: None,
        };
        let change =
            RoomChange { events: 1, message_at: Some(bson::DateTime::now()), ..Default::default() };
        let Write::Update { filter, update, .. } = ChatStore::change_room(&room, change) else {
            panic!("a guarded update");
        };
        assert_eq!(filter, doc! {"_id": room.id, "ev": 12_i64, "last_seq": 7_i64});
        assert_eq!(update.get_document("$inc").unwrap(), &doc! {"ev": 1_i64, "last_seq": 1_i64});
    }
}
