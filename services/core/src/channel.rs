//! WebSocket channel names: `<collection>`, `<collection>:<doc_id>`, `chat:<room_id>` and
//! `user:<user_id>` (the last two never bare: a bare `chat` or `user` would be every room's or
//! every user's events).

use crate::subjects::{is_valid_collection_name, is_valid_doc_id};

/// The collection whose events feed `chat:<room_id>` channels.
pub const CHAT_COLLECTION: &str = "chat";
/// The collection whose events feed `user:<user_id>` channels (one user's own notifications).
pub const USER_COLLECTION: &str = "user";

/// A parsed channel name. Parsing is the only way to build one, so a `Channel` is always valid.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Every document of a collection: `products`.
    Collection(String),
    /// One document: `products:65f0…`; `chat:<room_id>` is the document channel of a room.
    Document { collection: String, doc_id: String },
}

/// Why a channel name was refused (sent back in an `error` frame).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    #[error("channel name is empty")]
    Empty,
    #[error("channel '{0}' has an invalid collection name (lowercase letters, digits, '_')")]
    BadCollection(String),
    #[error("channel '{0}' has an invalid document id (letters, digits, '_' or '-')")]
    BadDocId(String),
    #[error("channel '{0}' needs an id: subscribe to '{0}:<id>'")]
    NeedsId(String),
}

impl Channel {
    pub fn parse(name: &str) -> Result<Self, ChannelError> {
        if name.is_empty() {
            return Err(ChannelError::Empty);
        }
        let (collection, doc_id) = match name.split_once(':') {
            Some((c, d)) => (c, Some(d)),
            None => (name, None),
        };
        if !is_valid_collection_name(collection) {
            return Err(ChannelError::BadCollection(name.to_owned()));
        }
        match doc_id {
            None if collection == CHAT_COLLECTION || collection == USER_COLLECTION => {
                Err(ChannelError::NeedsId(name.to_owned()))
            }
            None => Ok(Channel::Collection(collection.to_owned())),
            Some(d) if is_valid_doc_id(d) => {
                Ok(Channel::Document { collection: collection.to_owned(), doc_id: d.to_owned() })
            }
            Some(_) => Err(ChannelError::BadDocId(name.to_owned())),
        }
    }

    pub fn collection(&self) -> &str {
        match self {
            Channel::Collection(c) => c,
            Channel::Document { collection, .. } => collection,
        }
    }

    /// The room of a `chat:<room_id>` channel.
    pub fn chat_room(&self) -> Option<&str> {
        match self {
            Channel::Document { collection, doc_id } if collection == CHAT_COLLECTION => {
                Some(doc_id)
            }
            _ => None,
        }
    }

    /// The user of a `user:<user_id>` channel.
    pub fn user_id(&self) -> Option<&str> {
        match self {
            Channel::Document { collection, doc_id } if collection == USER_COLLECTION => {
                Some(doc_id)
            }
            _ => None,
        }
    }

    /// The canonical name, as clients write it.
    pub fn name(&self) -> String {
        match self {
            Channel::Collection(c) => c.clone(),
            Channel::Document { collection, doc_id } => format!("{collection}:{doc_id}"),
        }
    }

    /// The NATS subject filter selecting this channel's events (used for replay).
    pub fn subject_filter(&self) -> String {
        match self {
            Channel::Collection(c) => crate::subjects::collection_events_filter(c),
            Channel::Document { collection, doc_id } => {
                crate::subjects::document_events_filter(collection, doc_id)
            }
        }
    }

    /// A bounded label for metrics: the kind of channel, never the id.
    /// Every value [`Channel::kind`] returns (metric labels are initialised from it).
    pub const KINDS: [&'static str; 4] = ["collection", "document", "chat", "user"];

    pub fn kind(&self) -> &'static str {
        match self {
            Channel::Collection(_) => "collection",
            Channel::Document { collection, .. } if collection == CHAT_COLLECTION => "chat",
            Channel::Document { collection, .. } if collection == USER_COLLECTION => "user",
            Channel::Document { .. } => "document",
        }
    }
}

impl std::fmt::Display for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Channel::Collection(c) => f.write_str(c),
            Channel::Document { collection, doc_id } => write!(f, "{collection}:{doc_id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_channel_shapes() {
        assert_eq!(Channel::parse("products"), Ok(Channel::Collection("products".into())));
        let doc = Channel::parse("products:abc123").unwrap();
        assert_eq!(doc.name(), "products:abc123");
        assert_eq!(doc.subject_filter(), "events.products.abc123.*");
        assert_eq!(doc.kind(), "document");
        let room = Channel::parse("chat:room-1").unwrap();
        assert_eq!((room.kind(), room.chat_room(), room.user_id()), ("chat", Some("room-1"), None));
        let user = Channel::parse("user:u1").unwrap();
        assert_eq!((user.kind(), user.chat_room(), user.user_id()), ("user", None, Some("u1")));
        assert_eq!(doc.chat_room(), None);
        assert_eq!(Channel::parse("products").unwrap().subject_filter(), "events.products.>");
    }

    #[test]
    fn refuses_names_that_could_widen_a_subscription() {
        assert_eq!(Channel::parse(""), Err(ChannelError::Empty));
        for bad in [">", "*", "products.>", "Products", "products:", "products:a.b", "products:*"] {
            assert!(Channel::parse(bad).is_err(), "{bad}");
        }
        // Bare chat and user channels would carry every room's or every user's events.
        assert_eq!(Channel::parse("chat"), Err(ChannelError::NeedsId("chat".into())));
        assert_eq!(Channel::parse("user"), Err(ChannelError::NeedsId("user".into())));
        assert!(Channel::parse("chat:").is_err());
    }
}
