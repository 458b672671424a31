//! Courier's REST api: declared collections stored in MongoDB, every committed change turned
//! into exactly one JetStream event through the transactional outbox.

pub mod app;
pub mod auth;
pub mod chat;
pub mod collections;
pub mod compat;
pub mod config;
pub mod documents;
pub mod error;
pub mod extract;
pub mod limits;
pub mod openapi;
pub mod query;
pub mod routes;
pub mod state;
pub mod unread_body;
pub mod web;
pub mod web_telemetry;
pub mod writes;

pub use app::Application;
pub use config::ApiConfig;
