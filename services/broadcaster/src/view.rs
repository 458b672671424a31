//! What a filtered or rule-checked subscription sees of an event. A subscription with a
//! `filter`, or under a per-document read rule (`read: [owner, field:shared_with]`), has a
//! [`View`]: the event is delivered when the document's state before or after it is in view
//! (marked `enter`, `stay` or `leave`), and not at all otherwise. It is decided from the event
//! alone (its `data`, and for an update its `previous`), with no database read: the event is
//! parsed once per broadcaster ([`EventStates`]) and each channel's three possible frames are
//! built once, on first use, and shared by every subscriber that needs them ([`ViewedEvent`]).
//!
//! `previous` never reaches a client: [`EventStates::payload`] is the event without it, and a
//! `leave` after an update carries the id and no data (the reader may no longer see them).

use std::sync::{Arc, OnceLock};

use axum::extract::ws::Utf8Bytes;
use courier_core::{
    collection_spec::Grant,
    filter::Filter,
    protocol::{ViewChange, encode_viewed_event_frame},
};
use serde_json::{Map, Value};

/// A subscription's view: the documents its reader may read (a per-document rule's grant)
/// that its filter matches.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    grant: Option<Grant>,
    filter: Filter,
}

impl View {
    /// The view of a reader under `grant` with `filter`; `None` when neither limits anything
    /// (every event is delivered as it is).
    pub fn new(grant: Option<Grant>, filter: Filter) -> Option<Self> {
        (grant.is_some() || !filter.is_empty()).then_some(View { grant, filter })
    }

    fn sees(&self, document: &Map<String, Value>) -> bool {
        self.grant.as_ref().is_none_or(|grant| grant.admits(document))
            && self.filter.matches(document)
    }

    /// How `event` relates to this view, or `None` when it concerns documents outside it.
    pub fn change(&self, event: &EventStates) -> Option<ViewChange> {
        let before = event.before().is_some_and(|d| self.sees(d));
        let after = event.after().is_some_and(|d| self.sees(d));
        match (before, after) {
            (false, false) => None,
            (false, true) => Some(ViewChange::Enter),
            (true, true) => Some(ViewChange::Stay),
            (true, false) => Some(ViewChange::Leave),
        }
    }
}

/// What kind of change an event records, for its before and after states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `data` is the new document; there was none before.
    Create,
    /// `previous` before, `data` after.
    Update,
    /// `data` is the last state; there is none after.
    Delete,
}

/// One event of a document collection, parsed once: its states before and after, and the
/// payload clients receive.
#[derive(Debug)]
pub struct EventStates {
    kind: Kind,
    /// The envelope without `previous`.
    envelope: Map<String, Value>,
    previous: Option<Map<String, Value>>,
    /// The payload clients receive: the stored event when it had no `previous`, else the
    /// envelope re-serialized without it.
    payload: Arc<str>,
    /// The `leave` payload after an update: the envelope with `data` and `actor` null.
    hidden: OnceLock<Arc<str>>,
}

impl EventStates {
    /// Parses the event at `payload` whose subject says `action`; `None` if it is not a JSON
    /// object (the envelope check has refused such events before this is called).
    pub fn parse(action: &str, payload: &str) -> Option<Self> {
        let mut envelope: Map<String, Value> = serde_json::from_str(payload).ok()?;
        let removed = envelope.remove("previous");
        let had_previous = removed.is_some();
        let previous = match removed {
            Some(Value::Object(previous)) => Some(previous),
            _ => None,
        };
        let kind = match action {
            "created" => Kind::Create,
            "deleted" => Kind::Delete,
            _ => Kind::Update,
        };
        let payload: Arc<str> = if had_previous {
            Arc::from(serde_json::to_string(&envelope).ok()?)
        } else {
            Arc::from(payload)
        };
        Some(EventStates { kind, envelope, previous, payload, hidden: OnceLock::new() })
    }

    /// The event as every client receives it (without `previous`).
    pub fn payload(&self) -> &Arc<str> {
        &self.payload
    }

    fn data(&self) -> Option<&Map<String, Value>> {
        self.envelope.get("data").and_then(Value::as_object)
    }

    fn before(&self) -> Option<&Map<String, Value>> {
        match self.kind {
            Kind::Create => None,
            Kind::Update => self.previous.as_ref(),
            Kind::Delete => self.data(),
        }
    }

    fn after(&self) -> Option<&Map<String, Value>> {
        match self.kind {
            Kind::Delete => None,
            _ => self.data(),
        }
    }

    /// What a `leave` carries: after an update, the event without its data (and actor); a
    /// delete's last state, which the reader could read, as it is.
    fn leave_payload(&self) -> &Arc<str> {
        if self.kind == Kind::Delete {
            return &self.payload;
        }
        self.hidden.get_or_init(|| {
            let mut hidden = self.envelope.clone();
            hidden.insert("data".into(), Value::Null);
            hidden.insert("actor".into(), Value::Null);
            Arc::from(serde_json::to_string(&hidden).expect("JSON values serialize"))
        })
    }
}

/// One channel's delivery of an event to views: the frames for `enter`, `stay` and `leave`,
/// each built the first time a subscriber needs it.
#[derive(Debug)]
pub struct ViewedEvent {
    states: Arc<EventStates>,
    channel: Arc<str>,
    seq: u64,
    frames: [OnceLock<Utf8Bytes>; 3],
}

impl ViewedEvent {
    pub fn new(states: Arc<EventStates>, channel: Arc<str>, seq: u64) -> Self {
        ViewedEvent { states, channel, seq, frames: Default::default() }
    }

    /// The frame `view` gets, if any.
    pub fn frame_for(&self, view: &View) -> Option<Utf8Bytes> {
        let change = view.change(&self.states)?;
        let (slot, payload) = match change {
            ViewChange::Enter => (0, self.states.payload()),
            ViewChange::Stay => (1, self.states.payload()),
            ViewChange::Leave => (2, self.states.leave_payload()),
        };
        let frame = self.frames[slot].get_or_init(|| {
            Utf8Bytes::from(encode_viewed_event_frame(
                &self.channel,
                self.seq,
                Some(change),
                payload,
            ))
        });
        Some(frame.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use courier_core::{ServerFrame, filter::FieldTypes};
    use serde_json::json;

    struct Notes;

    impl FieldTypes for Notes {
        fn field_type(&self, field: &str) -> Option<courier_core::collection_spec::FieldType> {
            use courier_core::collection_spec::FieldType;
            Some(match field {
                "title" | "created_by" => FieldType::String,
                "stars" => FieldType::Integer,
                "shared_with" => FieldType::Other,
                _ => return None,
            })
        }

        fn collection_name(&self) -> &str {
            "notes"
        }
    }

    fn event(action: &str, data: Value, previous: Option<Value>) -> String {
        let mut event = json!({"id": "0190a0a0-0000-7000-8000-000000000000", "type": format!("notes.{action}"), "collection": "notes", "doc_id": "n1", "data": data, "actor": "ana", "time": "2026-12-08T00:00:00.000Z", "trace_id": "t", "version": 2});
        if let Some(previous) = previous {
            event["previous"] = previous;
        }
        event.to_string()
    }

    fn bob() -> Option<View> {
        let grant =
            Grant { user_id: "bob".into(), owner: true, fields: vec!["shared_with".into()] };
        View::new(Some(grant), Filter::default())
    }

    fn frame(
        view: &Option<View>,
        action: &str,
        data: Value,
        previous: Option<Value>,
    ) -> Option<ServerFrame> {
        let states = Arc::new(EventStates::parse(action, &event(action, data, previous)).unwrap());
        let viewed = ViewedEvent::new(states, Arc::from("notes"), 7);
        let frame = viewed.frame_for(view.as_ref().unwrap())?;
        Some(serde_json::from_str(&frame).unwrap())
    }

    fn change(frame: &Option<ServerFrame>) -> Option<(ViewChange, Value, Option<Value>)> {
        match frame {
            Some(ServerFrame::Event { view, event, .. }) => {
                Some((view.unwrap(), event.data.clone(), event.previous.clone()))
            }
            _ => None,
        }
    }

    #[test]
    fn sharing_brings_a_document_into_view_and_unsharing_takes_it_out_without_its_data() {
        let view = bob();
        let private = json!({"id": "n1", "title": "x", "created_by": "ana", "shared_with": []});
        let shared = json!({"id": "n1", "title": "x", "created_by": "ana", "shared_with": ["bob"]});
        assert_eq!(change(&frame(&view, "created", private.clone(), None)), None);
        let (enter, data, previous) =
            change(&frame(&view, "updated", shared.clone(), Some(private.clone()))).unwrap();
        assert_eq!((enter, &data, previous), (ViewChange::Enter, &shared, None), "no previous");
        let edited = json!({"id": "n1", "title": "y", "created_by": "ana", "shared_with": ["bob"]});
        let stay = change(&frame(&view, "updated", edited.clone(), Some(shared.clone()))).unwrap();
        assert_eq!((stay.0, stay.1), (ViewChange::Stay, edited.clone()));
        let left = frame(&view, "updated", private.clone(), Some(edited.clone()));
        let (leave, data, _) = change(&left).unwrap();
        assert_eq!((leave, data), (ViewChange::Leave, Value::Null), "the id and no data");
        let Some(ServerFrame::Event { event, .. }) = left else { unreachable!() };
        assert_eq!((event.doc_id.as_str(), event.actor), ("n1", None));
        assert_eq!(change(&frame(&view, "deleted", private, None)), None, "never seen");
        let (gone, data, _) = change(&frame(&view, "deleted", edited.clone(), None)).unwrap();
        assert_eq!((gone, data), (ViewChange::Leave, edited), "a delete keeps its last state");
    }

    #[test]
    fn a_filter_marks_entering_staying_and_leaving_documents() {
        let filter = Filter::from_json(&Notes, &json!({"stars": {"gte": 3}})).unwrap();
        let view = View::new(None, filter);
        let doc = |stars: i64| json!({"id": "n1", "title": "x", "stars": stars});
        let of = |action: &str, data: Value, previous: Option<Value>| {
            change(&frame(&view, action, data, previous)).map(|c| c.0)
        };
        assert_eq!(of("created", doc(1), None), None);
        assert_eq!(of("created", doc(3), None), Some(ViewChange::Enter));
        assert_eq!(of("updated", doc(4), Some(doc(1))), Some(ViewChange::Enter));
        assert_eq!(of("updated", doc(5), Some(doc(4))), Some(ViewChange::Stay));
        assert_eq!(of("updated", doc(2), Some(doc(5))), Some(ViewChange::Leave));
        assert_eq!(of("updated", doc(1), Some(doc(2))), None);
        assert_eq!(of("deleted", doc(3), None), Some(ViewChange::Leave));
        assert!(View::new(None, Filter::default()).is_none(), "no view limits nothing");
    }

    #[test]
    fn the_payload_loses_previous_and_stays_untouched_without_it() {
        let raw = event("created", json!({"id": "n1"}), None);
        assert_eq!(&**EventStates::parse("created", &raw).unwrap().payload(), raw.as_str());
        let raw = event("updated", json!({"id": "n1"}), Some(json!({"id": "n1", "secret": 1})));
        let states = EventStates::parse("updated", &raw).unwrap();
        assert!(!states.payload().contains("previous") && !states.payload().contains("secret"));
    }
}
