//! `courier tail`: prints every event of the given channels as it happens, one readable line
//! each, and keeps going across broadcaster restarts (resuming from the last sequence seen).

use clap::Args;
use owo_colors::{
    OwoColorize,
    Stream::{Stderr, Stdout},
};

use crate::client::{Notice, Received, ResumingSubscriber};

#[derive(Debug, Clone, Args)]
pub struct TailArgs {
    /// Channels: `products`, `products:<id>`, `chat:<room_id>`.
    #[arg(required = true)]
    pub channels: Vec<String>,
    /// Broadcaster WebSocket URL(s); repeat for failover.
    #[arg(long = "url", env = "COURIER_WS_URL", default_value = "ws://127.0.0.1:8765/ws")]
    pub urls: Vec<String>,
    /// Replay every event after this stream sequence before going live.
    #[arg(long)]
    pub since: Option<u64>,
    /// Access token for channels that require one (`--help` never shows its value).
    #[arg(long, env = "COURIER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print each event as one JSON object per line (for scripts) instead of a readable line.
    #[arg(long)]
    pub json: bool,
    /// Stop after this many events.
    #[arg(long)]
    pub count: Option<u64>,
    /// Only events of matching documents, as JSON: `{"species": "Dog", "age": {"gte": 3}}`
    /// (the REST list's filters; docs/protocol.md, "Filtered subscriptions").
    #[arg(long, value_parser = parse_filter)]
    pub filter: Option<serde_json::Value>,
}

fn parse_filter(text: &str) -> Result<serde_json::Value, String> {
    match serde_json::from_str(text) {
        Ok(value @ serde_json::Value::Object(_)) => Ok(value),
        Ok(_) => Err("a filter is a JSON object of field conditions".into()),
        Err(err) => Err(format!("not JSON: {err}")),
    }
}

pub async fn run(args: TailArgs) -> anyhow::Result<()> {
    let mut subscriber = ResumingSubscriber::new(
        args.urls.clone(),
        args.channels.clone(),
        args.since,
        args.token.clone(),
    )
    .with_filter(args.filter.clone());
    let mut printed = 0u64;
    loop {
        let received = tokio::select! {
            received = subscriber.next_event(notice) => received,
            _ = tokio::signal::ctrl_c() => break,
        };
        if args.json {
            let line = serde_json::json!({"channel": received.channel, "seq": received.seq, "match": received.view, "event": received.event});
            println!("{line}");
        } else {
            println!("{}", render(&received));
        }
        printed += 1;
        if args.count.is_some_and(|limit| printed >= limit) {
            break;
        }
    }
    eprintln!(
        "{}",
        format!(
            "resume with --since {}",
            subscriber.positions().values().max().copied().unwrap_or(0)
        )
        .if_supports_color(Stderr, |t| t.dimmed())
    );
    Ok(())
}

fn notice(notice: Notice) {
    let line = match notice {
        Notice::Connected { url, connection_id } => {
            format!("● connected to {url} ({connection_id})")
        }
        Notice::Subscribed { channel, seq, recovered: Some(false) } => {
            format!(
                "● subscribed to {channel} at #{seq} — some history had expired; events were missed"
            )
        }
        Notice::Subscribed { channel, seq, .. } => {
            format!("● subscribed to {channel} after #{seq}")
        }
        Notice::Disconnected { error, retry_in } => {
            format!("○ disconnected: {error}; retrying in {retry_in:?}")
        }
        Notice::ServerError { code, message } => format!("! {code}: {message}"),
    };
    eprintln!("{}", line.if_supports_color(Stderr, |t| t.dimmed()));
}

/// `12:01:02.123  #42  products.created  products:65f0…  {"nombre":"Camiseta",…}`
pub fn render(received: &Received) -> String {
    let event = &received.event;
    let time = event.time.format("%H:%M:%S%.3f").to_string();
    let kind = event.event_type.as_str();
    let coloured_kind = match event.action() {
        Some(courier_core::EventAction::Created) => {
            kind.if_supports_color(Stdout, |t| t.green()).to_string()
        }
        Some(courier_core::EventAction::Updated | courier_core::EventAction::Enriched) => {
            kind.if_supports_color(Stdout, |t| t.yellow()).to_string()
        }
        Some(courier_core::EventAction::Deleted) => {
            kind.if_supports_color(Stdout, |t| t.red()).to_string()
        }
        _ => kind.if_supports_color(Stdout, |t| t.cyan()).to_string(),
    };
    let mut data = match received.view {
        Some(view) => format!("[{}] {}", view.as_str(), event.data),
        None => event.data.to_string(),
    };
    if data.len() > 160 {
        let cut = (0..=157).rev().find(|&i| data.is_char_boundary(i)).unwrap_or(0);
        data.truncate(cut);
        data.push('…');
    }
    format!(
        "{}  {}  {}  {}  {}",
        time.if_supports_color(Stdout, |t| t.dimmed()),
        format!("#{}", received.seq).if_supports_color(Stdout, |t| t.bold()),
        coloured_kind,
        format!("{}:{}", event.collection, event.doc_id).if_supports_color(Stdout, |t| t.blue()),
        data
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use courier_core::{Event, EventAction};

    #[test]
    fn a_line_names_sequence_type_document_and_data() {
        let event = Event::new(
            "products",
            "abc",
            EventAction::Created,
            serde_json::json!({"nombre": "Camiseta"}),
            None,
            "t".into(),
        );
        let line = render(&Received { channel: "products".into(), seq: 42, view: None, event });
        for part in ["#42", "products.created", "products:abc", r#"{"nombre":"Camiseta"}"#] {
            assert!(line.contains(part), "{line} lacks {part}");
        }
    }

    #[test]
    fn long_data_is_cut_on_a_character_boundary() {
        let event = Event::new(
            "p",
            "a",
            EventAction::Created,
            serde_json::json!({"s": "é".repeat(200)}),
            None,
            "t".into(),
        );
        let line = render(&Received { channel: "p".into(), seq: 1, view: None, event });
        assert!(line.ends_with('…'));
    }
}
