//! The `courier` command's library: a protocol-v1 WebSocket client that resumes where it left
//! off, and the tail, bench and demo commands built on it. Tests use the client too.

pub mod bench;
pub mod client;
pub mod demo;
pub mod fanout;
pub mod probe;
pub mod tail;
pub mod throughput;
