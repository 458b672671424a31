//! courier-operator: the `Courier` and `Collection` CRDs and the controller that turns them into
//! api, broadcaster and worker workloads, scales workers on the JetStream backlog, and reports
//! status. `main.rs` only parses flags and calls into here.

pub mod app;
pub mod autoscale;
pub mod collections;
pub mod config;
pub mod controller;
pub mod crd;
pub mod error;
pub mod leader;
pub mod metrics;
pub mod policy;
pub mod render;
pub mod resources;
pub mod status;
pub mod yaml;

#[cfg(test)]
pub(crate) mod fixtures;

pub use error::{Error, Result};
