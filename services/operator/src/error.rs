//! The crate's one error type, with a short `kind` label per variant for the error metric.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes api: {0}")]
    Kube(#[from] kube::Error),

    #[error("{kind} {name} has no namespace")]
    MissingNamespace { kind: &'static str, name: String },

    #[error("serializing {what}: {source}")]
    Serialize { what: String, source: serde_json::Error },

    #[error("reading {path}: {source}")]
    ReadFile { path: PathBuf, source: std::io::Error },

    #[error("{path}: {message}")]
    Manifest { path: PathBuf, message: String },

    #[error("reading the task backlog from {url}: {message}")]
    Backlog { url: String, message: String },

    #[error("lost the leader lease {lease}: {reason}")]
    LostLeadership { lease: String, reason: String },

    #[error("ops server: {0}")]
    Io(#[from] std::io::Error),

    #[error(transparent)]
    AllowList(#[from] crate::policy::BadAllowListEntry),

    #[error("Courier {courier} is refused: {}", reasons.join("; "))]
    Refused { courier: String, reasons: Vec<String> },
}

impl Error {
    /// Stable, low-cardinality label for `courier_operator_reconcile_errors_total{kind}`.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(_)) => "kube_api",
            Error::Kube(_) => "kube_client",
            Error::MissingNamespace { .. } => "missing_namespace",
            Error::Serialize { .. } => "serialize",
            Error::ReadFile { .. } => "read_file",
            Error::Manifest { .. } => "manifest",
            Error::Backlog { .. } => "backlog",
            Error::LostLeadership { .. } => "lost_leadership",
            Error::Io(_) => "io",
            Error::AllowList(_) => "allow_list",
            Error::Refused { .. } => "refused",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
