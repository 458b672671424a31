//! Courier's shared foundation: the wire types every service, the CLI and the tests agree on
//! (event envelope, WebSocket protocol frames, NATS subjects and streams), plus the plumbing each
//! service needs once (typed config pieces, telemetry, graceful shutdown, the ops HTTP server).

pub mod auth;
pub mod backoff;
pub mod channel;
pub mod chat;
pub mod chat_live;
pub mod client_addr;
pub mod collection_spec;
pub mod config;
pub mod event;
pub mod file_watch;
pub mod filter;
pub mod jetstream;
pub mod jetstream_metrics;
pub mod ops;
pub mod protocol;
pub mod rate;
pub mod request_telemetry;
pub mod shutdown;
pub mod subjects;
pub mod task;
pub mod task_queue;
pub mod telemetry;
pub mod webhook;

pub use channel::Channel;
pub use event::{Event, EventAction};
pub use protocol::{ClientFrame, ServerFrame};
pub use task::{Priority, Task};
