//! The chaos suite (issue 6; docs/chaos.md): real nats-server, SecantusDB and Courier processes
//! are killed, restarted, starved and fuzzed while events flow, and every test counts what
//! each client received, prints the counts and asserts no event (or scheduled task) was lost or
//! repeated.

mod api_crash;
mod chat;
mod failover;
mod fuzz;
mod nats_outage;
mod protocol;
mod scheduled;
mod stalled_client;
mod store_outage;
mod support;
