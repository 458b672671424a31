//! WebSocket channel names: `<collection>`, `<collection>:<doc_id>` and `chat:<room_id>`.

use crate::subjects::{is_valid_collection_name, is_valid_doc_id};

/// The collection whose events feed `chat:<room_id>` channels.
pub const CHAT_COLLECTION: &str = "chat";

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
    pub const KINDS: [&'static str; 3] = ["collection", "document", "chat"];

    pub fn kind(&self) -> &'static str {
        match self {
            Channel::Collection(_) => "collection",
            Channel::Document { collection, .. } if collection == CHAT_COLLECTION => "chat",
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
        assert_eq!(Channel::parse("chat:room-1").unwrap().kind(), "chat");
        assert_eq!(Channel::parse("products").unwrap().subject_filter(), "events.products.>");
    }

    #[test]
    fn refuses_names_that_could_widen_a_subscription() {
        assert_eq!(Channel::parse(""), Err(ChannelError::Empty));
        for bad in [">", "*", "products.>", "Products", "products:", "products:a.b", "products:*"] {
            assert!(Channel::parse(bad).is_err(), "{bad}");
        }
    }
}
