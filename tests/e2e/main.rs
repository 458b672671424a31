//! End-to-end tests: real nats-server and SecantusDB, Courier's services in-process or as
//! processes, driven over HTTP and WebSocket like a user would.

mod api_errors;
mod api_limits;
mod auth;
mod authz;
mod bench;
mod broadcaster_limits;
mod chat;
mod chat_blocks;
mod chat_live;
mod collections;
mod compat;
mod delivery;
mod external_workers;
mod help;
mod helpers;
mod live_queries;
mod nats_permissions;
mod observability;
mod priorities;
mod protocol;
mod queues;
mod web_app;
mod webhooks;
mod worker;
mod write_limits;
