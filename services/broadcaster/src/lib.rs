//! Courier's WebSocket broadcaster: one JetStream consumer per process fanned out in-process to
//! every subscribed client (protocol v1, docs/protocol.md), with `since` replay for resume.

pub mod access;
pub mod admission;
pub mod app;
pub mod chat;
pub mod compat;
pub mod config;
pub mod connection;
pub mod feed;
pub mod hub;
pub mod lag_histogram;
pub mod metrics;
pub mod replay;
pub mod ring;
pub mod view;

pub use app::Application;
pub use config::BroadcasterConfig;
