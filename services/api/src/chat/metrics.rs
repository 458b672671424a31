//! The api's chat metrics (`courier_chat_*`). Labels are bounded words, never a room id.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

/// `change` label of `courier_chat_message_changes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Edit,
    Delete,
}

impl Change {
    pub const ALL: [Change; 2] = [Change::Edit, Change::Delete];

    pub fn as_str(self) -> &'static str {
        match self {
            Change::Edit => "edit",
            Change::Delete => "delete",
        }
    }
}

/// `action` label of `courier_chat_rate_limited_total` (the broadcaster counts `typing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitedAction {
    Send,
    CreateRoom,
}

impl LimitedAction {
    pub const ALL: [LimitedAction; 2] = [LimitedAction::Send, LimitedAction::CreateRoom];

    pub fn as_str(self) -> &'static str {
        match self {
            LimitedAction::Send => "send",
            LimitedAction::CreateRoom => "create_room",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChangeLabels {
    change: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: &'static str,
}

#[derive(Debug, Default)]
pub struct ChatMetrics {
    messages: Counter,
    changes: Family<ChangeLabels, Counter>,
    reactions: Counter,
    rate_limited: Family<ActionLabels, Counter>,
    rooms_created: Counter,
}

impl ChatMetrics {
    pub fn register(registry: &mut Registry) -> std::sync::Arc<Self> {
        let metrics = Self::default();
        // Every label value exists from the start, so rates work before the first event.
        for change in Change::ALL {
            let _ = metrics.changes.get_or_create(&ChangeLabels { change: change.as_str() });
        }
        for action in LimitedAction::ALL {
            let _ = metrics.rate_limited.get_or_create(&ActionLabels { action: action.as_str() });
        }
        registry.register("courier_chat_messages", "Chat messages sent", metrics.messages.clone());
        registry.register(
            "courier_chat_message_changes",
            "Chat messages edited or deleted",
            metrics.changes.clone(),
        );
        registry.register(
            "courier_chat_reactions",
            "Chat reactions added",
            metrics.reactions.clone(),
        );
        registry.register(
            "courier_chat_rate_limited",
            "Chat actions refused by a per-user rate limit",
            metrics.rate_limited.clone(),
        );
        registry.register(
            "courier_chat_rooms_created",
            "Chat rooms created (group and direct)",
            metrics.rooms_created.clone(),
        );
        registry.register(
            "courier_chat_membership_replies_refused",
            "Membership questions dropped unanswered: their reply subject was not a broadcaster's inbox",
            super::rpc::REFUSED_REPLIES.clone(),
        );
        std::sync::Arc::new(metrics)
    }

    pub fn message_sent(&self) {
        self.messages.inc();
    }

    pub fn message_changed(&self, change: Change) {
        self.changes.get_or_create(&ChangeLabels { change: change.as_str() }).inc();
    }

    pub fn reaction_added(&self) {
        self.reactions.inc();
    }

    pub fn rate_limited(&self, action: LimitedAction) {
        self.rate_limited.get_or_create(&ActionLabels { action: action.as_str() }).inc();
    }

    pub fn room_created(&self) {
        self.rooms_created.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels_are_the_documented_ones() {
        let mut registry = Registry::default();
        let metrics = ChatMetrics::register(&mut registry);
        metrics.message_sent();
        metrics.message_changed(Change::Edit);
        metrics.rate_limited(LimitedAction::Send);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "courier_chat_messages_total 1",
            r#"courier_chat_message_changes_total{change="edit"} 1"#,
            r#"courier_chat_message_changes_total{change="delete"} 0"#,
            "courier_chat_reactions_total 0",
            r#"courier_chat_rate_limited_total{action="send"} 1"#,
            r#"courier_chat_rate_limited_total{action="create_room"} 0"#,
            "courier_chat_rooms_created_total 0",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
    }
}
